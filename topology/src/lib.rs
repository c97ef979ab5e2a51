//! What a Spillway cluster looks like to one host's scheduler: every member
//! with what it offers (GPUs, labels), whether it takes work, its latest
//! gossiped load and the measured round trip to it, gathered into a
//! [`ClusterView`].
//!
//! Pure data and pure functions: time is passed in, so freshness (a load
//! report older than the stale bound counts as unknown) is decided the same
//! way in tests and in production. What it is not: the source of truth for
//! membership (the Raft log) or the transport for load (the sidecar gossips
//! it over QUIC datagrams and fills [`LoadSample`]s in).

mod host;
mod load;
mod view;

pub use host::HostView;
pub use load::{LOADED_WEIGHTS, LoadGossip, LoadSample, LoadedWeights};
pub use view::ClusterView;
