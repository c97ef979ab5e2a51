//! The execution journal: one line per job the node starts, written before
//! the guest gets control. Off unless `NodeConfig::execution_journal` is set.
//!
//! It answers "did this job run here, and how often?" after the fact: an
//! operator auditing a job id, and the chaos harness checking that no
//! job that was not idempotent ran twice anywhere in the cluster. A line is
//! `unix_ms job tenant function input_blake3`, separated by spaces; the
//! file is opened in append mode, so a line written survives the node
//! being killed a moment later. It is not a result log: it records starts,
//! never outcomes.

use spillway_proto::{Digest, JobId, JobSpec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The journal's file name in the node's directory.
pub const JOURNAL_FILE: &str = "executions.log";

/// An open journal.
#[derive(Debug)]
pub(crate) struct ExecutionJournal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl ExecutionJournal {
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(JOURNAL_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Records that `job` starts now. A job whose start cannot be recorded
    /// must not run: the caller fails it instead.
    pub(crate) fn record(&self, job: JobId, spec: &JobSpec, input: &[u8]) -> std::io::Result<()> {
        let line = format!(
            "{} {job} {} {} {}\n",
            unix_ms(),
            spec.tenant,
            spec.function,
            Digest::of(input).to_hex()
        );
        let mut file = self.file.lock().expect("journal lock");
        file.write_all(line.as_bytes())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
