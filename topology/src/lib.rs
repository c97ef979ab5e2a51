//! What a Spillway cluster is made of, as the scheduler and the status API
//! see it: hosts with their capabilities and latest load, gathered into a
//! [`ClusterView`] snapshot.
//!
//! Pure data and pure functions: time is passed in, so health (a host whose
//! load report is too old is unhealthy) is decided the same way in tests and
//! in production. What it is not: the source of truth for membership (that
//! will be the Raft log) or a transport for load (the sidecar gossips it).

mod host;
mod view;

pub use host::{HostState, HostView, Role};
pub use view::ClusterView;
