//! Placement and admission as pure functions.
//!
//! For now: local admission. [`admit`] decides, from the job and the local
//! load, whether a job runs now, waits in the bounded queue, or is refused
//! with a typed [`Refusal`](spillway_proto::Refusal). Peer placement (burst)
//! will join it as `place(&JobSpec, &ClusterView, &LocalLoad, now)`.
//!
//! No I/O, no clocks, no async: the sidecar feeds it and carries the
//! decision out, and tests are tables.

mod admission;

pub use admission::{Admission, AdmissionPolicy, LocalLoad, admit};
