//! `spillway member`: drain or remove hosts.

use super::{client, print_json};
use crate::Target;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum MemberCommand {
    /// Stop giving a host new work and never promote it to voter; a
    /// voter hands its vote to a caught-up learner.
    Drain {
        /// The host: `n2` (as `spillway status` shows it) or `2`.
        id: spillway_proto::NodeId,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a host from the cluster: its key is no longer accepted, and
    /// a learner replaces it if it was a voter.
    Remove {
        /// The host: `n2` or `2`.
        id: spillway_proto::NodeId,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn member(cmd: MemberCommand) -> anyhow::Result<ExitCode> {
    let (id, remove, target) = match cmd {
        MemberCommand::Drain { id, target } => (id, false, target),
        MemberCommand::Remove { id, target } => (id, true, target),
    };
    print_json(&client(&target)?.member(id.0, remove).await?)
}
