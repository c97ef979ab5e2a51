//! `spillway ticket`: join tickets.

use super::{client, parse_ttl};
use crate::Target;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TicketCommand {
    /// Make a one-time join ticket (a secret: hand it only to the new host).
    Create {
        /// How long it stays valid: seconds, or with a unit (90s, 30m, 2h, 1d).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn ticket(cmd: TicketCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TicketCommand::Create { ttl, target } => {
            let answer = client(&target)?.create_ticket(ttl).await?;
            println!("{}", answer["ticket"].as_str().unwrap_or_default());
            eprintln!(
                "one-time ticket for {}, valid {ttl} s; on the new host: spillway join <ticket>",
                answer["cluster_id"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
