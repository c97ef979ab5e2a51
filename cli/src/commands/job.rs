//! `spillway job`: follow an async job (`spillway invoke --async`).

use super::{client, print_json};
use crate::Target;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum JobCommand {
    /// How the job stands (its receipt and output, or its error, once it
    /// ended).
    Get {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Wait until the job ends, then print it as `get` does (exit 1 if it
    /// did not succeed).
    Wait {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel the job wherever it runs (if it still runs).
    Cancel {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn job(cmd: JobCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobCommand::Get { id, target } => print_json(&client(&target)?.job(&id, false).await?),
        JobCommand::Cancel { id, target } => print_json(&client(&target)?.job(&id, true).await?),
        JobCommand::Wait {
            id,
            timeout_s,
            target,
        } => {
            let client = client(&target)?;
            let until = Instant::now() + Duration::from_secs(timeout_s);
            loop {
                let view = client.job(&id, false).await?;
                if view["status"] != "running" {
                    let ok = view["status"] == "succeeded";
                    print_json(&view)?;
                    return Ok(if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
                if Instant::now() >= until {
                    anyhow::bail!("job {id} still runs after {timeout_s} s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
