//! The node's error type, for failures of the node itself (not of a job:
//! those are [`spillway_proto::Failure`]s sent back to the sidecar).

/// Why the node could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unusable; fix the named value.
    #[error("invalid node configuration: {0}")]
    Config(#[from] crate::ConfigError),
    /// Wasmtime refused the engine configuration (e.g. the pooling allocator
    /// could not reserve its address space; lower `slots` or memory).
    #[error("could not create the Wasmtime engine: {0}")]
    Engine(String),
    /// The state directory was written by a later build: run that build,
    /// or restore the copy taken before the upgrade.
    #[error(
        "{path} was written by a newer Spillway (format {found}; this build reads up to {supported}): run the newer build, or restore the copy taken before upgrading"
    )]
    NewerFormat {
        path: std::path::PathBuf,
        found: u32,
        supported: u32,
    },
    /// The state directory or socket could not be used.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
