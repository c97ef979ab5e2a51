//! `spillway artifact`: upload (optionally signed) and list artifacts.

use super::{client, print_json};
use crate::Target;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ArtifactCommand {
    /// Upload a component (binary `.wasm` or text `.wat`) under a name.
    Push {
        name: String,
        file: PathBuf,
        /// Sign it with this publisher key (from `spillway keygen`).
        #[arg(long)]
        sign: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List artifacts.
    Ls {
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn artifact(cmd: ArtifactCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ArtifactCommand::Push {
            name,
            file,
            sign,
            target,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let signature = match sign {
                Some(key) => Some(crate::publisher::sign_artifact(&key, &bytes, &name)?),
                None => None,
            };
            print_json(
                &client(&target)
                    .put_artifact(&name, bytes, signature.as_deref())
                    .await?,
            )
        }
        ArtifactCommand::Ls { target } => print_json(&client(&target).artifacts().await?),
    }
}
