//! Spillway's control plane: the state every host must agree on, kept in a
//! Raft log (openraft).
//!
//! ```text
//!  ControlCommand ──Raft log (LogStore: redb, fsync on commit)──▶ StateMachine ──▶ ControlState
//!                                                                  └─ snapshots (file, atomic)
//! ```
//!
//! - [`ControlState`] is the pure core: artifacts, functions and residency,
//!   changed only by [`ControlCommand`]s through [`ControlState::apply`].
//! - [`LogStore`] and [`StateMachine`] are openraft's storage traits over
//!   durable files; both pass openraft's storage conformance suite.
//! - [`TypeConfig`] ties the types together for openraft, whose API is
//!   unstable: it stays behind this crate.
//!
//! What it is not (yet): the network. Raft RPCs over QUIC, join tickets and
//! membership changes come with the sidecar's QUIC endpoint.

mod command;
mod error;
mod log_store;
mod state;
mod state_machine;
mod types;

pub use command::{ControlCommand, ControlResponse};
pub use error::OpenError;
pub use log_store::LogStore;
pub use state::{ArtifactEntry, ControlState, FunctionEntry, ResidencyStatus};
pub use state_machine::StateMachine;
pub use types::{Member, TypeConfig};
