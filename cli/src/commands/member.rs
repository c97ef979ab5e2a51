//! `spillway member`: drain, undrain or remove hosts.

use super::{client, print_json};
use crate::Target;
use crate::client::MemberChange;
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
    /// Bring a drained host back (after its upgrade, say): it takes work
    /// again and may be promoted to voter.
    Undrain {
        /// The host: `n2` or `2`.
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
    let (id, change, target) = match cmd {
        MemberCommand::Drain { id, target } => (id, MemberChange::Drain, target),
        MemberCommand::Undrain { id, target } => (id, MemberChange::Undrain, target),
        MemberCommand::Remove { id, target } => (id, MemberChange::Remove, target),
    };
    print_json(&client(&target)?.member(id.0, change).await?)
}
