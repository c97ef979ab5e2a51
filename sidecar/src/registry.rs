//! Artifacts and functions this host knows, persisted as one JSON file.
//!
//! Names map to digests (artifacts) and to job templates (functions). The
//! file is rewritten atomically on every change. When the control plane
//! arrives this state moves into the Raft log, so any host can serve any
//! function; the shapes here are the ones the log will hold.

use crate::SidecarError;
use serde::{Deserialize, Serialize};
use spillway_proto::{Accelerator, Digest};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub name: String,
    pub digest: String,
    pub size: u64,
}

/// A registered function: what to run and under which limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    /// The artifact as given at creation (a name or a digest).
    pub artifact: String,
    pub digest: String,
    pub accelerator: AcceleratorName,
    pub deadline_ms: u64,
    pub memory_limit_bytes: u64,
    pub idempotent: bool,
}

/// `accelerator` as it appears in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceleratorName {
    None,
    #[default]
    Preferred,
    Required,
}

impl From<AcceleratorName> for Accelerator {
    fn from(a: AcceleratorName) -> Self {
        match a {
            AcceleratorName::None => Accelerator::None,
            AcceleratorName::Preferred => Accelerator::Preferred,
            AcceleratorName::Required => Accelerator::Required,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    artifacts: BTreeMap<String, ArtifactRecord>,
    functions: BTreeMap<String, FunctionRecord>,
}

#[derive(Debug)]
pub(crate) struct Registry {
    path: PathBuf,
    contents: Mutex<Contents>,
}

/// A name clients may use: 1 to 64 of `a-z 0-9 - _ .`, starting with a
/// letter or digit.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

impl Registry {
    pub(crate) fn open(dir: &Path) -> Result<Self, SidecarError> {
        let path = dir.join("registry.json");
        let contents = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SidecarError::Registry {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(source) => {
                return Err(SidecarError::Io {
                    what: "cannot read",
                    path,
                    source,
                });
            }
        };
        Ok(Self {
            path,
            contents: Mutex::new(contents),
        })
    }

    fn save(&self, contents: &Contents) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(contents).expect("registry serialises"))?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }

    pub(crate) fn put_artifact(&self, record: ArtifactRecord) -> std::io::Result<()> {
        let mut c = self.contents.lock().expect("registry lock");
        c.artifacts.insert(record.name.clone(), record);
        self.save(&c)
    }

    pub(crate) fn put_function(&self, record: FunctionRecord) -> std::io::Result<()> {
        let mut c = self.contents.lock().expect("registry lock");
        c.functions.insert(record.name.clone(), record);
        self.save(&c)
    }

    pub(crate) fn function(&self, name: &str) -> Option<FunctionRecord> {
        self.contents
            .lock()
            .expect("registry lock")
            .functions
            .get(name)
            .cloned()
    }

    pub(crate) fn functions(&self) -> Vec<FunctionRecord> {
        self.contents
            .lock()
            .expect("registry lock")
            .functions
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn artifacts(&self) -> Vec<ArtifactRecord> {
        self.contents
            .lock()
            .expect("registry lock")
            .artifacts
            .values()
            .cloned()
            .collect()
    }

    /// Resolves an artifact reference: a known name, or the digest of a
    /// stored artifact.
    pub(crate) fn resolve_artifact(&self, reference: &str) -> Option<Digest> {
        let c = self.contents.lock().expect("registry lock");
        if let Some(a) = c.artifacts.get(reference) {
            return a.digest.parse().ok();
        }
        let digest: Digest = reference.parse().ok()?;
        let hex = digest.to_string();
        c.artifacts
            .values()
            .any(|a| a.digest == hex)
            .then_some(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["echo", "gemm-2", "a.b_c", "9lives"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Echo", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn survives_reopen_and_resolves_by_name_or_digest() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of(b"x");
        {
            let r = Registry::open(dir.path()).unwrap();
            r.put_artifact(ArtifactRecord {
                name: "x".into(),
                digest: digest.to_string(),
                size: 1,
            })
            .unwrap();
        }
        let r = Registry::open(dir.path()).unwrap();
        assert_eq!(r.resolve_artifact("x"), Some(digest));
        assert_eq!(r.resolve_artifact(&digest.to_string()), Some(digest));
        assert_eq!(r.resolve_artifact("y"), None);
        assert_eq!(r.resolve_artifact(&Digest::of(b"y").to_string()), None);
    }
}
