//! The content-addressed artifact cache.
//!
//! Artifacts live on disk as `dir/artifacts/<blake3 hex>.wasm` (components),
//! `.pack` (kernel packs) or `.safetensors` (weights) and survive restarts. A component's compiled
//! code is kept beside them (`compiled`), so it is compiled once per host.
//! In memory the cache keeps each component pre-instantiated
//! (`InstancePre`, imports already resolved against the host), so a job
//! pays only for instantiation, never for compilation or linking after the
//! first use, and each kernel pack parsed. Jobs that need a component not
//! yet loaded wait for one load: the first compiles, the rest use it.
//!
//! A component is accepted only if it compiles and fits the `job-guest`
//! world: every import one the node provides (`imports`; else
//! `unsupported_import` naming it), the rest typed as the host's, and `run`
//! exported with the right type. A kernel pack only if its manifest is
//! valid ([`KernelPack::parse`]); on a GPU host the executor also compiles
//! it before saying yes. Weights only if they are a whole, valid
//! safetensors file of `f32`, `bf16` or `f16` tensors (`weights`), checked
//! and then kept mapped, never read into memory. Anything else is
//! `invalid_artifact` with the reason.

use crate::NodeError;
use crate::bindings::JobGuestPre;
use crate::compiled::{self, CompiledCache};
use crate::incoming::{Incoming, Received};
use crate::state::GuestState;
use crate::weights::Weights;
use spillway_kernels::KernelPack;
use spillway_proto::{ARTIFACT_CHUNK, ArtifactKind, Digest, Failure};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasmtime::Engine;
use wasmtime::component::Linker;

pub(crate) struct ArtifactCache {
    /// Where this process's uploads arrive (its own folder: executors
    /// sharing the store each clear only theirs at start).
    own_dir: PathBuf,
    dir: PathBuf,
    engine: Engine,
    linker: Linker<GuestState>,
    compiled: CompiledCache,
    loaded: Mutex<HashMap<Digest, Loaded>>,
    /// One lock per artifact being loaded, so concurrent first uses load
    /// (compile) it once.
    loading: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

/// An artifact ready for use.
#[derive(Clone)]
enum Loaded {
    Component(Prepared),
    Pack(Arc<KernelPack>),
    Weights(Arc<Weights>),
}

impl Loaded {
    fn kind(&self) -> ArtifactKind {
        match self {
            Loaded::Component(_) => ArtifactKind::Component,
            Loaded::Pack(_) => ArtifactKind::KernelPack,
            Loaded::Weights(_) => ArtifactKind::Weights,
        }
    }
}

/// A component ready to instantiate.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) pre: JobGuestPre<GuestState>,
    /// Instantiating it runs no guest code, so an instance may be made
    /// before its job (see `warm`).
    pub(crate) warmable: bool,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded = self.loaded.lock().map(|l| l.len()).unwrap_or(0);
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .field("loaded", &loaded)
            .finish()
    }
}

fn invalid(what: &str, e: wasmtime::Error) -> Failure {
    Failure::InvalidArtifact {
        reason: format!("{what}: {e:#}"),
    }
}

impl ArtifactCache {
    pub(crate) fn open(
        state_dir: &Path,
        own_dir: &Path,
        engine: Engine,
        linker: Linker<GuestState>,
        keep_compiled: bool,
    ) -> Result<Self, NodeError> {
        let dir = state_dir.join("artifacts");
        crate::owner_only_dir(&dir).map_err(|source| NodeError::Io {
            what: "cannot create the artifact cache",
            path: dir.clone(),
            source,
        })?;
        let compiled =
            CompiledCache::open(state_dir, &engine, keep_compiled).map_err(|source| {
                NodeError::Io {
                    what: "cannot create the compiled-code cache in",
                    path: state_dir.to_path_buf(),
                    source,
                }
            })?;
        crate::incoming::clear(own_dir).map_err(|source| NodeError::Io {
            what: "cannot clear the incoming artifact folder in",
            path: own_dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            own_dir: own_dir.to_path_buf(),
            dir,
            engine,
            linker,
            compiled,
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
        })
    }

    fn path_for(&self, digest: &Digest, kind: ArtifactKind) -> PathBuf {
        let extension = match kind {
            ArtifactKind::Component => "wasm",
            ArtifactKind::KernelPack => "pack",
            ArtifactKind::Weights => "safetensors",
        };
        self.dir.join(format!("{}.{extension}", digest.to_hex()))
    }

    /// Where `digest` is stored, whichever kind it is.
    fn path(&self, digest: &Digest) -> PathBuf {
        [ArtifactKind::KernelPack, ArtifactKind::Weights]
            .into_iter()
            .map(|kind| self.path_for(digest, kind))
            .find(|path| path.exists())
            .unwrap_or_else(|| self.path_for(digest, ArtifactKind::Component))
    }

    /// Begins receiving an artifact of `size` bytes hashing to `digest`
    /// (see [`Incoming`]); [`Self::put_received`] stores it once whole.
    pub(crate) fn begin_upload(&self, digest: Digest, size: u64) -> Result<Incoming, Failure> {
        Incoming::begin(&self.own_dir, digest, size)
    }

    /// Checks the stored copy of `digest` against it, reading it in
    /// chunks; its size if whole. A file damaged on disk is never handed
    /// out: it is discarded (see [`Self::discard`]).
    pub(crate) fn verify(&self, digest: &Digest) -> Result<u64, Failure> {
        let mut file = std::fs::File::open(self.path(digest))
            .map_err(|_| Failure::UnknownArtifact { digest: *digest })?;
        let mut hasher = blake3::Hasher::new();
        let size = std::io::copy(&mut file, &mut hasher).map_err(|e| Failure::Internal {
            message: format!("cannot read {digest}: {e}"),
        })?;
        if Digest(*hasher.finalize().as_bytes()) != *digest {
            return Err(self.discard(digest));
        }
        Ok(size)
    }

    /// At most [`ARTIFACT_CHUNK`] stored bytes of `digest` from `offset`,
    /// and its whole size. Not checked here: a reader checks the whole
    /// copy first ([`Self::verify`]) and its receiver checks the digest.
    pub(crate) fn read_chunk(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<(u64, Vec<u8>), Failure> {
        use std::io::{Read, Seek};
        let failed = |e: std::io::Error| Failure::Internal {
            message: format!("cannot read {digest}: {e}"),
        };
        let mut file = std::fs::File::open(self.path(digest))
            .map_err(|_| Failure::UnknownArtifact { digest: *digest })?;
        let size = file.metadata().map_err(failed)?.len();
        file.seek(std::io::SeekFrom::Start(offset.min(size)))
            .map_err(failed)?;
        let mut bytes =
            Vec::with_capacity(ARTIFACT_CHUNK.min((size.saturating_sub(offset)) as usize));
        file.take(ARTIFACT_CHUNK as u64)
            .read_to_end(&mut bytes)
            .map_err(failed)?;
        Ok((size, bytes))
    }

    /// Forgets a damaged artifact: its file and its compiled component go,
    /// so this node no longer holds it (a later upload or fetch stores it
    /// afresh). The answer says what happened.
    fn discard(&self, digest: &Digest) -> Failure {
        let path = self.path(digest);
        let removed = std::fs::remove_file(&path).is_ok();
        self.loaded.lock().expect("cache lock").remove(digest);
        self.compiled.forget(digest);
        tracing::error!(%digest, path = %path.display(), removed, "the stored copy of an artifact is damaged; discarded");
        Failure::InvalidArtifact {
            reason: format!(
                "the stored copy of {digest} was damaged (digest mismatch) and is discarded"
            ),
        }
    }

    /// The digests stored on disk.
    pub(crate) fn resident(&self) -> Vec<Digest> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let stem = [".wasm", ".pack", ".safetensors"]
                    .into_iter()
                    .find_map(|extension| name.strip_suffix(extension))?;
                stem.parse().ok()
            })
            .collect()
    }

    /// Validates `bytes` (whose digest is `digest`) as the kind they claim
    /// to be; weights are validated from their file instead (see
    /// [`Self::store`]).
    fn load(&self, digest: &Digest, bytes: &[u8]) -> Result<Loaded, Failure> {
        match ArtifactKind::of(bytes) {
            ArtifactKind::Component => self.prepare(digest, bytes).map(Loaded::Component),
            ArtifactKind::KernelPack => KernelPack::parse(bytes)
                .map(|p| Loaded::Pack(Arc::new(p)))
                .map_err(|e| Failure::InvalidArtifact {
                    reason: e.to_string(),
                }),
            ArtifactKind::Weights => Weights::from_bytes(bytes.to_vec())
                .map(|w| Loaded::Weights(Arc::new(w)))
                .map_err(invalid_weights),
        }
    }

    /// Compiles (or loads the compiled code of) `bytes` and links it
    /// against the job world.
    fn prepare(&self, digest: &Digest, bytes: &[u8]) -> Result<Prepared, Failure> {
        let started = std::time::Instant::now();
        let (component, source) = self
            .compiled
            .component(&self.engine, digest, bytes)
            .map_err(|e| invalid("not a valid component", e))?;
        let component_type = component.component_type();
        let names: Vec<&str> = component_type
            .imports(&self.engine)
            .map(|(name, _)| name)
            .collect();
        if let Some(import) = crate::imports::first_unsupported(names.iter().copied()) {
            self.compiled.forget(digest);
            return Err(Failure::UnsupportedImport {
                import: import.to_owned(),
            });
        }
        match source {
            compiled::Source::Compiled => {
                tracing::info!(%digest, bytes = bytes.len(), ms = started.elapsed().as_millis() as u64, "component compiled")
            }
            compiled::Source::Disk => {
                tracing::debug!(%digest, ms = started.elapsed().as_millis() as u64, "compiled component loaded from disk")
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid("imports do not match spillway:runtime/job-guest", e))?;
        let pre = JobGuestPre::new(pre)
            .map_err(|e| invalid("exports do not match spillway:runtime/job-guest", e))?;
        Ok(Prepared {
            pre,
            warmable: crate::start_code::runs_no_code_at_instantiation(bytes),
        })
    }

    /// Validates and stores an artifact, returning its digest. A kernel
    /// pack must also pass `check_pack` (compiling it for the host's GPUs)
    /// before it is stored. Storing the same bytes again is a cheap no-op.
    pub(crate) fn put(
        &self,
        bytes: &[u8],
        check_pack: impl FnOnce(&Digest, &KernelPack) -> Result<(), Failure>,
    ) -> Result<Digest, Failure> {
        let digest = Digest::of(bytes);
        self.store(&digest, Arriving::Given(bytes), check_pack)
    }

    /// Like [`Self::put`], for an artifact the sidecar handed over in
    /// chunks: its file is moved into the store rather than written again.
    pub(crate) fn put_received(
        &self,
        received: Received,
        check_pack: impl FnOnce(&Digest, &KernelPack) -> Result<(), Failure>,
    ) -> Result<Digest, Failure> {
        let digest = received.digest;
        self.store(&digest, Arriving::Received(received), check_pack)
    }

    /// Validates `arriving` (whose digest is `digest`) unless the artifact
    /// is loaded already, then places it in the store and keeps it loaded.
    /// Concurrent stores of one digest validate once.
    fn store(
        &self,
        digest: &Digest,
        arriving: Arriving<'_>,
        check_pack: impl FnOnce(&Digest, &KernelPack) -> Result<(), Failure>,
    ) -> Result<Digest, Failure> {
        if self.is_loaded(digest) {
            return Ok(*digest);
        }
        let lock = self.loading_lock(digest);
        let _loading = lock.lock().unwrap_or_else(|e| e.into_inner());
        // A concurrent upload of the same bytes may have stored them.
        if self.is_loaded(digest) {
            return Ok(*digest);
        }
        let unreadable = |e: std::io::Error| Failure::Internal {
            message: format!("cannot read the received {digest}: {e}"),
        };
        let loaded = match &arriving {
            // Weights are checked where they lie, never read whole.
            Arriving::Received(received)
                if received.kind().map_err(unreadable)? == ArtifactKind::Weights =>
            {
                Weights::open(received.path())
                    .map(|w| Loaded::Weights(Arc::new(w)))
                    .map_err(invalid_weights)?
            }
            _ => self.load(digest, &arriving.bytes().map_err(unreadable)?)?,
        };
        if let Loaded::Pack(pack) = &loaded {
            check_pack(digest, pack)?;
        }
        let path = self.path_for(digest, loaded.kind());
        arriving.place(&path).map_err(|e| Failure::Internal {
            message: format!("cannot write {}: {e}", path.display()),
        })?;
        self.loaded
            .lock()
            .expect("cache lock")
            .insert(*digest, loaded);
        Ok(*digest)
    }

    fn is_loaded(&self, digest: &Digest) -> bool {
        self.loaded.lock().expect("cache lock").contains_key(digest)
    }

    /// The lock that makes concurrent loads of `digest` one load.
    fn loading_lock(&self, digest: &Digest) -> Arc<Mutex<()>> {
        let mut loading = self.loading.lock().expect("cache lock");
        // Locks nobody holds or waits for are dropped as we go.
        loading.retain(|_, lock| Arc::strong_count(lock) > 1);
        loading.entry(*digest).or_default().clone()
    }

    /// `digest` ready for use, loaded from disk on first use after a
    /// restart (its compiled code too, where this node compiled it before).
    fn loaded(&self, digest: &Digest) -> Result<Loaded, Failure> {
        if let Some(l) = self.loaded.lock().expect("cache lock").get(digest) {
            return Ok(l.clone());
        }
        let lock = self.loading_lock(digest);
        let _loading = lock.lock().unwrap_or_else(|e| e.into_inner());
        // Whoever held the lock before us may have loaded it.
        if let Some(l) = self.loaded.lock().expect("cache lock").get(digest) {
            return Ok(l.clone());
        }
        let path = self.path(digest);
        let loaded = if path.extension().is_some_and(|e| e == "safetensors") {
            // Mapped, hashed in place and checked: never read whole.
            let weights =
                Weights::open(&path).map_err(|_| Failure::UnknownArtifact { digest: *digest })?;
            if weights.digest() != *digest {
                return Err(self.discard(digest));
            }
            Loaded::Weights(Arc::new(weights))
        } else {
            let bytes =
                std::fs::read(&path).map_err(|_| Failure::UnknownArtifact { digest: *digest })?;
            if Digest::of(&bytes) != *digest {
                return Err(self.discard(digest));
            }
            self.load(digest, &bytes)?
        };
        self.loaded
            .lock()
            .expect("cache lock")
            .insert(*digest, loaded.clone());
        Ok(loaded)
    }

    /// The pre-instantiated component for `digest`.
    pub(crate) fn get(&self, digest: &Digest) -> Result<Prepared, Failure> {
        match self.loaded(digest)? {
            Loaded::Component(prepared) => Ok(prepared),
            other => Err(wrong_kind(digest, &other, ArtifactKind::Component)),
        }
    }

    /// The kernel pack `digest`.
    pub(crate) fn pack(&self, digest: &Digest) -> Result<Arc<KernelPack>, Failure> {
        match self.loaded(digest)? {
            Loaded::Pack(pack) => Ok(pack),
            other => Err(wrong_kind(digest, &other, ArtifactKind::KernelPack)),
        }
    }

    /// The weights `digest`, mapped.
    pub(crate) fn weights(&self, digest: &Digest) -> Result<Arc<Weights>, Failure> {
        match self.loaded(digest)? {
            Loaded::Weights(weights) => Ok(weights),
            other => Err(wrong_kind(digest, &other, ArtifactKind::Weights)),
        }
    }
}

fn wrong_kind(digest: &Digest, loaded: &Loaded, wanted: ArtifactKind) -> Failure {
    let noun = |kind| match kind {
        ArtifactKind::Component => "a component",
        ArtifactKind::KernelPack => "a kernel pack",
        ArtifactKind::Weights => "weights",
    };
    Failure::InvalidArtifact {
        reason: format!("{digest} is {}, not {}", noun(loaded.kind()), noun(wanted)),
    }
}

fn invalid_weights(e: crate::weights::WeightsError) -> Failure {
    Failure::InvalidArtifact {
        reason: e.to_string(),
    }
}

/// An artifact on its way into the store.
enum Arriving<'a> {
    /// Bytes in memory (a caller in this process).
    Given(&'a [u8]),
    /// A file the sidecar's chunks were written to.
    Received(Received),
}

impl Arriving<'_> {
    fn bytes(&self) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Arriving::Given(bytes) => Ok((*bytes).into()),
            Arriving::Received(received) => received.read().map(Into::into),
        }
    }

    /// Puts it at `path`, atomically: a crash never leaves half an
    /// artifact under its digest.
    fn place(self, path: &Path) -> std::io::Result<()> {
        match self {
            Arriving::Given(bytes) => write_atomically(path, bytes),
            Arriving::Received(received) => received.persist(path),
        }
    }
}

/// Writes `bytes` to a temporary file, syncs it and renames it into place, so
/// a crash never leaves a half-written artifact under its digest.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
