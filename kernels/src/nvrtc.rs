//! Compiling the built-in CUDA kernels with NVRTC, cached on disk.
//!
//! The PTX for a device is named by the BLAKE3 digest of the source, the
//! compiler options and the target architecture, so a changed kernel or a
//! different GPU never picks up a stale file. Compilation happens at first
//! use on a host; later starts load the cached PTX.
//!
//! What it is not: a loader. Turning PTX into a module on a context is the
//! node's job (it owns the contexts).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The CUDA C source of the built-in kernels.
pub const BUILTIN_SOURCE: &str = include_str!("../cuda/builtin.cu");

/// Kernels that exist to test fault handling (loaded only on request).
pub const TESTING_SOURCE: &str = include_str!("../cuda/testing.cu");

/// The fault-test kernel a guest may launch on a node started with test
/// kernels: `test_oob_write(buf, n: u32)` writes far out of bounds.
pub const TEST_OOB_WRITE: &str = "test_oob_write";

/// The watchdog-test kernel: `test_spin(ms: u32)` runs one thread for `ms`
/// milliseconds whatever its job's deadline.
pub const TEST_SPIN: &str = "test_spin";

/// Options every built-in kernel is compiled with.
const OPTIONS: &[&str] = &["--std=c++17"];

/// Why PTX could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// NVRTC is not installed (libnvrtc not found); the host can only use the
    /// CPU backend.
    #[error("NVRTC is not available on this host")]
    NvrtcMissing,
    /// The compiler rejected the source; the log says why.
    #[error("NVRTC failed for {arch}: {log}")]
    Compile { arch: String, log: String },
    /// The cache directory is unusable.
    #[error("PTX cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The architecture flag NVRTC takes for a compute capability, e.g. (9, 0)
/// → `compute_90`. (PTX for the virtual architecture: the driver finishes
/// it for the exact chip.)
pub fn arch_for(compute_capability: (u32, u32)) -> String {
    format!("compute_{}{}", compute_capability.0, compute_capability.1)
}

/// The cache key of `source` compiled for `arch`.
pub fn cache_key(source: &str, arch: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(source.as_bytes());
    for o in OPTIONS {
        h.update(b"\0");
        h.update(o.as_bytes());
    }
    h.update(b"\0arch=");
    h.update(arch.as_bytes());
    h.finalize().to_hex().to_string()
}

/// Returns the PTX of `source` for `arch`, from `cache_dir` when present,
/// else compiled with NVRTC and stored there.
pub fn ptx(source: &str, arch: &str, cache_dir: &Path) -> Result<String, CompileError> {
    let path = cache_dir.join(format!("{}.ptx", cache_key(source, arch)));
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        return Ok(ptx);
    }
    let ptx = compile(source, arch)?;
    let cache = |source| CompileError::Cache {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(cache_dir).map_err(cache)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(cache)?;
    file.write_all(ptx.as_bytes()).map_err(cache)?;
    file.sync_all().map_err(cache)?;
    std::fs::rename(&tmp, &path).map_err(cache)?;
    Ok(ptx)
}

/// Whether libnvrtc can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    #[allow(unsafe_code)]
    unsafe {
        cudarc::nvrtc::sys::is_culib_present()
    }
}

fn compile(source: &str, arch: &str) -> Result<String, CompileError> {
    if !nvrtc_present() {
        return Err(CompileError::NvrtcMissing);
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: OPTIONS
            .iter()
            .map(|s| (*s).to_owned())
            .chain([format!("--gpu-architecture={arch}")])
            .collect(),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(source, opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| CompileError::Compile {
            arch: arch.to_owned(),
            log: format!("{e:?}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_change_with_source_and_arch() {
        let a = cache_key(BUILTIN_SOURCE, "compute_90");
        assert_eq!(a, cache_key(BUILTIN_SOURCE, "compute_90"));
        assert_ne!(a, cache_key(BUILTIN_SOURCE, "compute_80"));
        assert_ne!(a, cache_key("// other", "compute_90"));
        assert_eq!(arch_for((9, 0)), "compute_90");
    }

    #[test]
    fn the_source_defines_every_launchable_kernel() {
        for k in crate::Kernel::ALL {
            if k != crate::Kernel::Gemm {
                let decl = format!("void {}(", k.name());
                assert!(BUILTIN_SOURCE.contains(&decl), "{decl}");
            }
        }
    }

    #[test]
    fn cached_ptx_is_used_without_compiling() {
        let dir = tempfile::tempdir().unwrap();
        let key = cache_key("src", "compute_90");
        std::fs::write(dir.path().join(format!("{key}.ptx")), "// cached").unwrap();
        assert_eq!(ptx("src", "compute_90", dir.path()).unwrap(), "// cached");
    }
}
