//! `spillway fn`: register and list functions.

use super::{client, print_json};
use crate::Target;
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum FunctionCommand {
    /// Register a function that runs an artifact.
    Create {
        name: String,
        /// Artifact name or digest.
        #[arg(long)]
        artifact: String,
        /// none | preferred | required
        #[arg(long, default_value = "preferred")]
        accelerator: String,
        #[arg(long)]
        deadline_ms: Option<u64>,
        #[arg(long)]
        memory_limit_bytes: Option<u64>,
        #[arg(long)]
        idempotent: bool,
        /// A kernel pack (name or digest) the guest may launch from as
        /// `<name>/<kernel>`; repeat for several. Needs `--accelerator
        /// required`.
        #[arg(long = "kernel-pack")]
        kernel_packs: Vec<String>,
        /// Weights (name or digest) the guest may open with `gpu.weights`;
        /// repeat for several.
        #[arg(long)]
        weights: Vec<String>,
        /// Serve it under this model name on the OpenAI-compatible API
        /// (`/v1/chat/completions`, `/v1/completions`).
        #[arg(long)]
        openai_model: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List functions.
    Ls {
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn function(cmd: FunctionCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FunctionCommand::Create {
            name,
            artifact,
            accelerator,
            deadline_ms,
            memory_limit_bytes,
            idempotent,
            kernel_packs,
            weights,
            openai_model,
            target,
        } => {
            let spec = json!({
                "name": name, "artifact": artifact, "accelerator": accelerator,
                "deadline_ms": deadline_ms, "memory_limit_bytes": memory_limit_bytes,
                "idempotent": idempotent, "kernel_packs": kernel_packs, "weights": weights,
                "openai_model": openai_model,
            });
            print_json(&client(&target)?.create_function(&spec).await?)
        }
        FunctionCommand::Ls { target } => print_json(&client(&target)?.functions().await?),
    }
}
