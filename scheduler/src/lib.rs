//! Placement and admission as pure functions.
//!
//! [`place`] decides where a job runs: here, on a peer (burst), in the
//! local queue, or nowhere, with a typed [`Refusal`](spillway_proto::Refusal).
//! [`admit`] is its local part: from the job and the local load, run now,
//! wait in the bounded queue, or refuse; a peer that receives a burst job
//! uses it too.
//!
//! No I/O, no clocks, no async: the sidecar feeds it and carries the
//! decision out, and tests are tables.

mod admission;
mod placement;

pub use admission::{Admission, AdmissionPolicy, LocalLoad, admit};
pub use placement::{
    ArtifactFacts, Decision, Fallback, PlacementPolicy, TenantRoom, WeightsFacts, place,
};
