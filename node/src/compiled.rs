//! Compiled components kept on disk, so a component is compiled once per
//! host: not again after a node restart, nor by a second job.
//!
//! A compiled component lives at `dir/compiled/<digest>.<engine>.cwasm`:
//! `<digest>` is the component's BLAKE3 digest, `<engine>` a hash of the
//! engine's compatibility key (Wasmtime's version and every setting that
//! changes code), so a new build or another configuration never loads old
//! code; it compiles afresh and replaces it. The file holds Wasmtime's
//! serialized component followed by the BLAKE3 hash of those bytes.
//!
//! Loading compiled code is trusting it: Wasmtime maps it executable. The
//! node only loads files it wrote itself, in its own state directory, and
//! checks their hash before use: a file damaged on disk (or cut short by a
//! crash, though writes are atomic) is removed and the component compiled
//! again. Bytes from the network are never deserialized; they are compiled.
//!
//! What it is not: the artifact store (`artifacts`), which keeps the
//! component's own bytes; this is only a cache of their compiled form and
//! may be deleted at any time.

use spillway_proto::Digest;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const HASH_LEN: usize = blake3::OUT_LEN;

/// How a component was made ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Loaded from this cache.
    Disk,
    /// Compiled now (and stored, when the cache is on).
    Compiled,
}

/// The node's compiled-code directory, for one engine configuration.
#[derive(Debug)]
pub(crate) struct CompiledCache {
    /// `None`: off; every load compiles.
    dir: Option<PathBuf>,
    engine_key: String,
}

impl CompiledCache {
    /// The cache under `state_dir/compiled`, or one that always compiles.
    pub(crate) fn open(state_dir: &Path, engine: &Engine, on: bool) -> std::io::Result<Self> {
        let dir = match on {
            true => {
                let dir = state_dir.join("compiled");
                crate::owner_only_dir(&dir)?;
                Some(dir)
            }
            false => None,
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, dir: &Path, digest: &Digest) -> PathBuf {
        dir.join(format!("{}.{}.cwasm", digest.to_hex(), self.engine_key))
    }

    /// `digest`'s compiled component: from disk if this engine compiled it
    /// before, else compiled from `bytes` now and stored.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        digest: &Digest,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Source)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, Source::Compiled));
        };
        let path = self.path(dir, digest);
        if let Some(component) = self.load(engine, &path) {
            return Ok((component, Source::Disk));
        }
        let component = Component::new(engine, bytes)?;
        match component.serialize() {
            Ok(code) => {
                if let Err(e) = store(&path, &code) {
                    tracing::warn!(path = %path.display(), "cannot store compiled code (will compile again next time): {e}");
                }
                self.forget_others(dir, digest, &path);
            }
            Err(e) => tracing::warn!(%digest, "cannot serialize compiled code: {e:#}"),
        }
        Ok((component, Source::Compiled))
    }

    /// The component stored at `path`, if it is there, whole and loads.
    fn load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let file = std::fs::read(path).ok()?;
        let checked = file.len().checked_sub(HASH_LEN).and_then(|at| {
            let (code, hash) = file.split_at(at);
            (blake3::hash(code).as_bytes() == hash).then_some(code)
        });
        let Some(code) = checked else {
            tracing::warn!(path = %path.display(), "compiled code damaged on disk; compiling again");
            let _ = std::fs::remove_file(path);
            return None;
        };
        // SAFETY: `code` is exactly what `Component::serialize` produced in
        // this node's own state directory (its hash, written beside it by
        // `store`, matches), for an engine with this compatibility key;
        // Wasmtime also checks the version and configuration it embeds.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, code) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "compiled code does not load ({e:#}); compiling again");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Removes `digest`'s compiled code for other engine configurations.
    fn forget_others(&self, dir: &Path, digest: &Digest, keep: &Path) {
        let prefix = format!("{}.", digest.to_hex());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path != keep && name.to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Drops `digest`'s compiled code (its artifact was discarded).
    pub(crate) fn forget(&self, digest: &Digest) {
        if let Some(dir) = &self.dir {
            self.forget_others(dir, digest, Path::new(""));
        }
    }
}

/// Writes `code` and its hash to a temporary file, syncs it and renames it
/// into place.
fn store(path: &Path, code: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(code)?;
    file.write_all(blake3::hash(code).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: &str = r#"(component (core module (func (export "f"))))"#;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    #[test]
    fn compiled_once_then_loaded_and_a_damaged_file_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let bytes = wat::parse_str(GUEST).unwrap();
        let digest = Digest::of(&bytes);
        let cache = CompiledCache::open(dir.path(), &engine, true).unwrap();
        let (_, first) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(first, Source::Compiled);
        // A second cache over the same directory (a restarted node).
        let cache = CompiledCache::open(dir.path(), &engine, true).unwrap();
        let (_, again) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(again, Source::Disk);

        let path = cache.path(&dir.path().join("compiled"), &digest);
        let mut file = std::fs::read(&path).unwrap();
        file[10] ^= 0xff;
        std::fs::write(&path, &file).unwrap();
        let (_, damaged) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(damaged, Source::Compiled);
        let (_, repaired) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(repaired, Source::Disk);

        cache.forget(&digest);
        assert!(!path.exists());
    }

    #[test]
    fn another_engine_configuration_compiles_afresh_and_replaces_the_old_code() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = wat::parse_str(GUEST).unwrap();
        let digest = Digest::of(&bytes);
        let a = engine();
        let cache_a = CompiledCache::open(dir.path(), &a, true).unwrap();
        cache_a.component(&a, &digest, &bytes).unwrap();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let b = Engine::new(&config).unwrap();
        let cache_b = CompiledCache::open(dir.path(), &b, true).unwrap();
        assert_ne!(cache_a.engine_key, cache_b.engine_key);
        let (_, source) = cache_b.component(&b, &digest, &bytes).unwrap();
        assert_eq!(source, Source::Compiled);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
    }

    #[test]
    fn off_always_compiles_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let bytes = wat::parse_str(GUEST).unwrap();
        let digest = Digest::of(&bytes);
        let cache = CompiledCache::open(dir.path(), &engine, false).unwrap();
        for _ in 0..2 {
            let (_, source) = cache.component(&engine, &digest, &bytes).unwrap();
            assert_eq!(source, Source::Compiled);
        }
        assert!(!dir.path().join("compiled").exists());
    }
}
