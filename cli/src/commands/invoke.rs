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
    /// Print the receipt (and output) as JSON instead of the raw output
    /// (the output then comes whole, at the end; without it the output is
    /// printed as the guest emits it).
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
    /// Answer at once with the job's id and run it on; `spillway job get`,
    /// `wait` and `cancel` follow it.
    #[arg(long = "async", conflicts_with_all = ["json", "idempotency_key"])]
    run_async: bool,
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
    let options = InvokeOptions {
        deadline_ms: args.deadline_ms,
        idempotency_key: args.idempotency_key.clone(),
        here_only: args.local,
    };
    if args.run_async {
        let view = client(&args.target)?
            .invoke_async(&args.name, input, &options)
            .await?;
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        return streamed(&args, input, &options).await;
    }
    let answer = client(&args.target)?
        .invoke(&args.name, input, &options)
        .await?;
    println!("{}", serde_json::to_string_pretty(&answer.receipt())?);
    Ok(if answer.status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The output printed as the guest emits it; a failure after the first
/// chunk (from the answer's trailers) printed to standard error.
async fn streamed(
    args: &InvokeArgs,
    input: Vec<u8>,
    options: &InvokeOptions,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let answer = client(&args.target)?
        .invoke_streaming(&args.name, input, options, |chunk| {
            out.write_all(chunk)?;
            Ok(out.flush()?)
        })
        .await?;
    if !answer.status.is_success() {
        eprintln!(
            "{} {}",
            answer.status.as_u16(),
            String::from_utf8_lossy(&answer.body)
        );
        return Ok(ExitCode::FAILURE);
    }
    if let Some((code, message)) = answer.failure() {
        eprintln!("the job failed after its first output: {code}: {message}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
