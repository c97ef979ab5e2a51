//! `spillway artifact`: upload (optionally signed) and list artifacts.

use super::{client, print_json};
use crate::Target;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ArtifactCommand {
    /// Upload an artifact under a name: a component (binary `.wasm` or
    /// text `.wat`), a kernel pack (`.json`) or weights (`.safetensors`),
    /// streamed from the file with a progress bar on a terminal.
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

/// The BLAKE3 digest of the file at `path`, read in chunks.
fn digest_of(path: &std::path::Path) -> anyhow::Result<spillway_proto::Digest> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(spillway_proto::Digest(*hasher.finalize().as_bytes()))
}

pub(crate) async fn artifact(cmd: ArtifactCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ArtifactCommand::Push {
            name,
            file,
            sign,
            target,
        } => {
            let signature = match sign {
                Some(key) => {
                    let digest = digest_of(&file)?;
                    Some(crate::publisher::sign_artifact(&key, &digest, &name)?)
                }
                None => None,
            };
            let size = std::fs::metadata(&file)
                .with_context(|| format!("reading {}", file.display()))?
                .len();
            let bar = indicatif::ProgressBar::new(size).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(format!("uploading {name}"));
            let sent = {
                let bar = bar.clone();
                move |n: u64| bar.inc(n)
            };
            // A repeat after a rate limit starts the count again.
            let restart = {
                let bar = bar.clone();
                move |n: u64| {
                    if bar.position() >= size {
                        bar.set_position(0);
                    }
                    sent(n);
                }
            };
            let stored = client(&target)?
                .put_artifact_file(&name, &file, signature.as_deref(), restart)
                .await;
            bar.finish_and_clear();
            print_json(&stored?)
        }
        ArtifactCommand::Ls { target } => print_json(&client(&target)?.artifacts().await?),
    }
}
