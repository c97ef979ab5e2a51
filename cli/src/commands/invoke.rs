//! `spillway invoke`: run a function, input from a file or stdin.

use super::client;
use crate::Target;
use crate::client::InvokeOptions;
use anyhow::Context;
use std::io::{Read, Write};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct InvokeArgs {
    name: String,
    /// Read the input from this file ("-": standard input, the default).
    #[arg(long, default_value = "-")]
    input: String,
    /// Print the receipt (and output) as JSON instead of the raw output.
    #[arg(long)]
    json: bool,
    /// Shorten the function's deadline (ms).
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// A repeat with the same key gets the first outcome instead of
    /// running again.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Run on the host asked (queue there when full), never on a peer.
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let input = if args.input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        buf
    } else {
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input))?
    };
    let answer = client(&args.target)
        .invoke(
            &args.name,
            input,
            &InvokeOptions {
                deadline_ms: args.deadline_ms,
                idempotency_key: args.idempotency_key.clone(),
                here_only: args.local,
            },
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer.receipt())?);
    } else if answer.status.is_success() {
        std::io::stdout().write_all(&answer.body)?;
        std::io::stdout().flush()?;
    } else {
        eprintln!(
            "{} {}",
            answer.status.as_u16(),
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(if answer.status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
