//! The version of the node's state directory (`DIR/node/format`): its
//! artifact files (`artifacts/<digest>.<kind>`), named by content, and the
//! caches beside them (compiled code and PTX, each keyed by what made it,
//! so a new build never reads an old entry as its own).
//!
//! Version 0 is a directory written before versioning (no `format` file,
//! the same layout): opening it writes the version. A directory of a later
//! version is refused (`NodeError::NewerFormat`) rather than guessed at.
//!
//! What it is not: the control state's versions (`spillway-consensus`,
//! `format.rs`), or the artifacts' own formats (checked at upload).

use crate::NodeError;
use std::path::Path;

/// The node directory's format in this build.
pub const NODE_FORMAT: u32 = 1;

/// What opening a node directory must do about its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// This build's already.
    Current,
    /// A new directory: write the version.
    Stamp,
    /// An earlier version: bring it to this build's (0 to 1: the layout is
    /// the same; the version is written).
    Migrate { from: u32 },
    /// A later version than this build reads.
    Newer { found: u32 },
}

/// Decides from the `format` file's contents (`None`: no file) and whether
/// the directory held artifacts already.
pub(crate) fn step(found: Option<&str>, had_artifacts: bool) -> Result<Step, String> {
    let Some(text) = found else {
        return Ok(if had_artifacts {
            Step::Migrate { from: 0 }
        } else {
            Step::Stamp
        });
    };
    let version: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("not a format version: {:?}", text.trim()))?;
    Ok(match version {
        v if v == NODE_FORMAT => Step::Current,
        v if v < NODE_FORMAT => Step::Migrate { from: v },
        v => Step::Newer { found: v },
    })
}

/// Checks (and if need be migrates) the node directory `dir`; the version
/// it was migrated from, if it was. The node does this at start; a host
/// does it before it spawns its node, so that a directory it cannot use
/// stops the host rather than a node it would restart.
pub fn open_state_dir(dir: &Path) -> Result<Option<u32>, NodeError> {
    let path = dir.join("format");
    let io = |what: &'static str| {
        let path = path.clone();
        move |source| NodeError::Io { what, path, source }
    };
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("cannot read")(e)),
    };
    let had_artifacts = dir.join("artifacts").exists();
    let step = step(found.as_deref(), had_artifacts).map_err(|reason| NodeError::Io {
        what: "a damaged format file:",
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
    })?;
    match step {
        Step::Current => Ok(None),
        Step::Newer { found } => Err(NodeError::NewerFormat {
            path,
            found,
            supported: NODE_FORMAT,
        }),
        Step::Stamp | Step::Migrate { .. } => {
            crate::owner_only_dir(dir).map_err(io("cannot create"))?;
            std::fs::write(&path, format!("{NODE_FORMAT}\n")).map_err(io("cannot write"))?;
            Ok(match step {
                Step::Migrate { from } => Some(from),
                _ => None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_decides_what_opening_does() {
        let cases: [(Option<&str>, bool, Result<Step, String>); 7] = [
            (None, false, Ok(Step::Stamp)),
            (None, true, Ok(Step::Migrate { from: 0 })),
            (Some("0\n"), true, Ok(Step::Migrate { from: 0 })),
            (Some("1\n"), true, Ok(Step::Current)),
            (Some(" 1 "), false, Ok(Step::Current)),
            (Some("2\n"), true, Ok(Step::Newer { found: 2 })),
            (
                Some("one"),
                true,
                Err("not a format version: \"one\"".into()),
            ),
        ];
        for (found, had, want) in cases {
            assert_eq!(step(found, had), want, "{found:?} {had}");
        }
    }

    #[test]
    fn opening_stamps_migrates_and_refuses_a_newer_directory() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node");
        assert_eq!(open_state_dir(&node).unwrap(), None);
        assert_eq!(std::fs::read_to_string(node.join("format")).unwrap(), "1\n");
        std::fs::remove_file(node.join("format")).unwrap();
        std::fs::create_dir(node.join("artifacts")).unwrap();
        assert_eq!(open_state_dir(&node).unwrap(), Some(0));
        assert_eq!(open_state_dir(&node).unwrap(), None);
        std::fs::write(node.join("format"), "7\n").unwrap();
        let err = open_state_dir(&node).unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::NewerFormat {
                    found: 7,
                    supported: NODE_FORMAT,
                    ..
                }
            ),
            "{err}"
        );
    }
}
