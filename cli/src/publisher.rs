//! Publisher keys: `spillway keygen` makes an ed25519 key (ring, PKCS#8,
//! stored as hex in a file only its owner may read), and `spillway artifact
//! push --sign` signs an artifact's digest and name with it
//! (`spillway_proto::signing`).

use anyhow::{Context, bail};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use spillway_proto::Digest;
use spillway_proto::signing::artifact_message;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key (refused if the file exists).
    #[arg(long)]
    out: PathBuf,
}

/// Writes a new key to `--out` (mode 0600) and prints its public key.
pub(crate) fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("cannot generate a key"))?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("cannot read the generated key"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    file.write_all(hex::encode(pkcs8.as_ref()).as_bytes())?;
    println!("{}", hex::encode(key.public_key().as_ref()));
    eprintln!(
        "private key in {}; trust the public key above with `spillway tenant create NAME --trust <key>`",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The `spillway-signature` header value for publishing the artifact whose
/// digest is `digest` as `name`.
pub(crate) fn sign_artifact(
    key_file: &Path,
    digest: &Digest,
    name: &str,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let Ok(pkcs8) = hex::decode(text.trim()) else {
        bail!("{} is not a key from `spillway keygen`", key_file.display());
    };
    let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|_| anyhow::anyhow!("{} is not an ed25519 key", key_file.display()))?;
    let signature = key.sign(&artifact_message(digest, name));
    Ok(format!(
        "{}:{}",
        hex::encode(key.public_key().as_ref()),
        hex::encode(signature.as_ref())
    ))
}
