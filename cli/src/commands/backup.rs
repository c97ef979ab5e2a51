//! `spillway backup` and `spillway restore`: a backup of the control state
//! (online from any member, or offline from a stopped host's directory),
//! and a new cluster founded from one.

use super::client;
use crate::Target;
use anyhow::{Context, bail};
use spillway_consensus::{ArtifactEntry, Backup};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Where to write it (created 0600: it holds the tokens' hashes).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Take it offline from a stopped host's state directory (its `--dir`)
    /// instead of asking a member: the way back when quorum is lost.
    #[arg(long, value_name = "DIR")]
    from_dir: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let backup = match &args.from_dir {
        Some(dir) => offline(dir).await?,
        None => {
            let bytes = client(&args.target)?.backup().await?;
            Backup::decode(&bytes).context("the host's answer")?
        }
    };
    spillway_sidecar::owner_only::write(&args.out, &backup.encode())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let c = &backup.contents;
    println!(
        "backup of cluster {} at index {}, term {}: {} tenants, {} tokens, {} functions, {} artifact records -> {}",
        backup.cluster_id,
        backup.index,
        backup.term,
        c.tenants.len(),
        c.tokens.len(),
        c.functions.len(),
        c.artifacts.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A backup read from a stopped host's state directory.
async fn offline(dir: &Path) -> anyhow::Result<Backup> {
    let sidecar = dir.join("sidecar");
    let membership: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sidecar.join("membership.json"))
            .with_context(|| format!("{} holds no host's state", dir.display()))?,
    )
    .context("its membership.json")?;
    let host = membership["id"].as_u64().unwrap_or(0);
    Backup::read_offline(&sidecar.join("raft"), host, unix_ms())
        .await
        .with_context(|| {
            format!(
                "reading {} (is its host stopped? its log is locked while it runs)",
                dir.display()
            )
        })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup (`spillway backup --out FILE`).
    file: PathBuf,
    /// A folder with the old hosts' artifacts (a host's state directory,
    /// its `node`, or `node/artifacts`; repeatable): each the backup names
    /// is copied in, checked against its digest. Others must be uploaded
    /// again.
    #[arg(long, value_name = "DIR")]
    artifacts_from: Vec<PathBuf>,
    #[command(flatten)]
    host: crate::serve::HostArgs,
}

pub(crate) async fn restore(mut args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let backup = Backup::decode(&bytes).with_context(|| args.file.display().to_string())?;
    let dir = args.host.dir().to_owned();
    if dir.join("sidecar/membership.json").exists() {
        bail!(
            "{} belongs to a cluster already: restore into a new, empty directory",
            dir.display()
        );
    }
    let artifacts = dir.join("node/artifacts");
    spillway_sidecar::owner_only::create_dir(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    let records: Vec<&ArtifactEntry> = backup.contents.artifacts.values().collect();
    let mut copied = 0;
    for record in &records {
        if copy_artifact(record, &args.artifacts_from, &artifacts)? {
            copied += 1;
        }
    }
    println!(
        "restoring cluster {} (index {}, term {}) as a new cluster; {copied} of {} artifacts copied{}",
        backup.cluster_id,
        backup.index,
        backup.term,
        records.len(),
        if copied < records.len() {
            ": upload the others again"
        } else {
            ""
        }
    );
    args.host.restore = Some(Box::new(backup));
    crate::serve::host(args.host).await
}

/// Copies the artifact `record` names from the first of `from` that has
/// it, if its bytes match its digest; whether it was copied.
fn copy_artifact(record: &ArtifactEntry, from: &[PathBuf], to: &Path) -> anyhow::Result<bool> {
    let hex = record.digest.to_hex();
    for root in from {
        let dirs = [
            root.join("node/artifacts"),
            root.join("artifacts"),
            root.clone(),
        ];
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.split_once('.').map(|(stem, _)| stem) != Some(hex.as_str()) {
                    continue;
                }
                // Hashed as it is read: weights run to many GiB.
                let mut hasher = blake3::Hasher::new();
                hasher.update_reader(std::fs::File::open(entry.path())?)?;
                if spillway_proto::Digest(*hasher.finalize().as_bytes()) != record.digest {
                    eprintln!(
                        "warning: {} does not match its digest; not copied",
                        entry.path().display()
                    );
                    continue;
                }
                let target = to.join(name);
                std::fs::copy(entry.path(), &target)
                    .with_context(|| format!("copying {}", entry.path().display()))?;
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
                return Ok(true);
            }
        }
    }
    Ok(false)
}
