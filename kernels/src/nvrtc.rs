//! Compiling the built-in CUDA kernels with NVRTC, cached on disk.
//!
//! The PTX for a device is named by the BLAKE3 digest of the source, the
//! compiler options and the target architecture, so a changed kernel or a
//! different GPU never picks up a stale file. Compilation happens at first
//! use on a host; later starts load the cached PTX.
//!
//! A tenant's kernel-pack source is not compiled in the node's process:
//! [`tenant_ptx`] runs NVRTC in a child ([`Compiler`]: the `spillway`
//! binary's hidden `compile-kernel` command, whose body is [`child_main`])
//! under CPU-time, address-space and wall-clock limits, in an empty working
//! directory, with no include path, and returns at most
//! [`MAX_LOG_LINES`] lines of its log. (The source may not name a file to
//! read at all: `KernelPack::parse` refuses `#include` and its kin.)
//!
//! What it is not: a loader. Turning PTX into a module on a context is the
//! node's job (it owns the contexts).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// The compiler process could not run or ended without an answer
    /// (killed at a limit, or crashed); the reason says which.
    #[error("the kernel compiler process {0}")]
    Child(String),
}

/// How a tenant's source is compiled: `program` with `args`, then
/// `--arch <arch>`, the source on its standard input, the PTX on its
/// standard output, the log on its standard error (see [`child_main`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiler {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Compiler {
    /// The `spillway` binary at `program`: its hidden `compile-kernel`.
    pub fn spillway(program: PathBuf) -> Self {
        Self {
            program,
            args: vec!["compile-kernel".to_owned()],
        }
    }

    /// The `spillway` binary beside `exe` or one folder up (for a test
    /// executable in `target/<profile>/deps`, `target/<profile>/spillway`),
    /// if there is one.
    pub fn spillway_near(exe: &Path) -> Option<Self> {
        exe.ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join("spillway"))
            .find(|p| p.is_file())
            .map(Self::spillway)
    }
}

/// Limits one compile of a tenant's source runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// Wall-clock time before the child is killed.
    pub wall: Duration,
    /// CPU seconds (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Address space (`RLIMIT_AS`).
    pub address_space_bytes: u64,
}

/// The limits a node compiles packs under: a minute of wall time, 30 CPU
/// seconds and 4 GiB of address space (NVRTC and its headers map about
/// 300 MiB; a pathological template may take more and fails instead).
pub const CHILD_LIMITS: ChildLimits = ChildLimits {
    wall: Duration::from_secs(60),
    cpu_seconds: 30,
    address_space_bytes: 4 << 30,
};

/// Lines of the compiler's log returned to the uploader, at most.
pub const MAX_LOG_LINES: usize = 30;
/// Bytes of the compiler's log returned to the uploader, at most.
const MAX_LOG_BYTES: usize = 4096;
/// PTX bytes a child may return (a larger answer is refused).
const MAX_PTX_BYTES: u64 = 64 << 20;
/// Exit codes of [`child_main`].
const CHILD_REJECTED: i32 = 1;
const CHILD_NO_NVRTC: i32 = 3;
const CHILD_BAD_INPUT: i32 = 4;

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
/// else compiled with NVRTC in this process and stored there: for the
/// built-in kernels, whose source is Spillway's own.
pub fn ptx(source: &str, arch: &str, cache_dir: &Path) -> Result<String, CompileError> {
    cached(source, arch, cache_dir, || compile(source, arch))
}

/// [`ptx`] for a tenant's source: compiled in a child process by
/// `compiler` under `limits` (see the module's documentation).
pub fn tenant_ptx(
    source: &str,
    arch: &str,
    cache_dir: &Path,
    compiler: &Compiler,
    limits: ChildLimits,
) -> Result<String, CompileError> {
    cached(source, arch, cache_dir, || {
        compile_in_child(source, arch, cache_dir, compiler, limits)
    })
}

fn cached(
    source: &str,
    arch: &str,
    cache_dir: &Path,
    compile: impl FnOnce() -> Result<String, CompileError>,
) -> Result<String, CompileError> {
    let path = cache_dir.join(format!("{}.ptx", cache_key(source, arch)));
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        return Ok(ptx);
    }
    let ptx = compile()?;
    let cache = |source| CompileError::Cache {
        path: path.clone(),
        source,
    };
    owner_only_dir(cache_dir).map_err(cache)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(cache)?;
    file.write_all(ptx.as_bytes()).map_err(cache)?;
    file.sync_all().map_err(cache)?;
    std::fs::rename(&tmp, &path).map_err(cache)?;
    Ok(ptx)
}

/// Creates `dir` and its missing parents readable by their owner only.
fn owner_only_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
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
            log: match e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                    log.to_string_lossy().into_owned()
                }
                other => format!("{other:?}"),
            },
        })
}

/// At most [`MAX_LOG_LINES`] lines and 4 KiB of a compiler log, saying how
/// much was left out.
pub fn trim_log(log: &str) -> String {
    let lines: Vec<&str> = log.trim_end().lines().collect();
    let mut out = String::new();
    let mut kept = 0;
    for line in &lines {
        if kept == MAX_LOG_LINES || out.len() + line.len() + 1 > MAX_LOG_BYTES {
            break;
        }
        out.push_str(line);
        out.push('\n');
        kept += 1;
    }
    if kept < lines.len() {
        out.push_str(&format!(
            "… ({} more lines of the log left out)",
            lines.len() - kept
        ));
    }
    out.trim_end().to_owned()
}

/// Runs `compiler` on `source` and waits for it under `limits`.
fn compile_in_child(
    source: &str,
    arch: &str,
    cache_dir: &Path,
    compiler: &Compiler,
    limits: ChildLimits,
) -> Result<String, CompileError> {
    let failed = |what: &str, e: std::io::Error| CompileError::Child(format!("{what}: {e}"));
    // An empty directory of its own, so nothing is found relative to it.
    let cwd = cache_dir.join("compile-cwd");
    owner_only_dir(&cwd).map_err(|e| failed("has no working directory", e))?;
    let mut command = Command::new(&compiler.program);
    command
        .args(&compiler.args)
        .args(["--arch", arch])
        .args(["--cpu-seconds", &limits.cpu_seconds.to_string()])
        .args(["--address-space", &limits.address_space_bytes.to_string()])
        .current_dir(&cwd)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Only what finds the CUDA libraries passes through.
    for (key, value) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text == "LD_LIBRARY_PATH" || key_text == "PATH" || key_text.starts_with("CUDA") {
            command.env(key, value);
        }
    }
    let mut child = command.spawn().map_err(|e| failed("cannot start", e))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = source.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut ptx = Vec::new();
        let read = (&mut stdout).take(MAX_PTX_BYTES + 1).read_to_end(&mut ptx);
        read.map(|_| ptx)
    });
    let mut stderr = child.stderr.take().expect("piped");
    let logger = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut log);
        String::from_utf8_lossy(&log).into_owned()
    });
    let began = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if began.elapsed() >= limits.wall => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CompileError::Child(format!(
                    "was killed after {} s of wall time",
                    limits.wall.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(failed("could not be waited for", e)),
        }
    };
    let _ = writer.join();
    let ptx = reader.join().expect("the reader does not panic");
    let log = trim_log(&logger.join().expect("the logger does not panic"));
    match status.code() {
        Some(0) => {
            let ptx = ptx.map_err(|e| failed("output unreadable", e))?;
            if ptx.len() as u64 > MAX_PTX_BYTES {
                return Err(CompileError::Child(format!(
                    "returned more than {MAX_PTX_BYTES} bytes of PTX"
                )));
            }
            String::from_utf8(ptx)
                .map_err(|_| CompileError::Child("returned PTX that is not UTF-8".into()))
        }
        Some(CHILD_REJECTED) => Err(CompileError::Compile {
            arch: arch.to_owned(),
            log,
        }),
        Some(CHILD_NO_NVRTC) => Err(CompileError::NvrtcMissing),
        _ => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status.signal() {
                Some(24) => "exceeded its CPU-time limit".to_owned(),
                Some(signal) => {
                    format!("was killed by signal {signal} (its memory limit, or a crash)")
                }
                None => format!("ended with {status}"),
            };
            Err(CompileError::Child(format!("{how}: {log}")))
        }
    }
}

/// The child's side of [`tenant_ptx`] (the body of `spillway
/// compile-kernel`): sets its own limits, reads the source from standard
/// input, compiles it for `arch` and writes the PTX to standard output or
/// the log to standard error. Returns the process's exit code.
pub fn child_main(arch: &str, cpu_seconds: u64, address_space_bytes: u64) -> i32 {
    use rlimit::Resource;
    let limits = [
        (Resource::CPU, cpu_seconds),
        (Resource::AS, address_space_bytes),
        (Resource::CORE, 0),
    ];
    for (resource, limit) in limits {
        if let Err(e) = resource.set(limit, limit) {
            eprintln!("cannot set {resource:?} to {limit}: {e}");
            return CHILD_BAD_INPUT;
        }
    }
    let mut source = String::new();
    let read = std::io::stdin()
        .take(crate::pack::MAX_SOURCE as u64 + 1)
        .read_to_string(&mut source);
    if let Err(e) = read {
        eprintln!("the source is not readable UTF-8: {e}");
        return CHILD_BAD_INPUT;
    }
    if source.len() > crate::pack::MAX_SOURCE {
        eprintln!("the source exceeds {} bytes", crate::pack::MAX_SOURCE);
        return CHILD_BAD_INPUT;
    }
    if let Some(found) = crate::includes::file_directive(&source) {
        eprintln!(
            "{} on line {}: a pack may not read files",
            found.what, found.line
        );
        return CHILD_REJECTED;
    }
    match compile(&source, arch) {
        Ok(ptx) => match std::io::stdout().write_all(ptx.as_bytes()) {
            Ok(()) => 0,
            Err(_) => CHILD_BAD_INPUT,
        },
        Err(CompileError::NvrtcMissing) => CHILD_NO_NVRTC,
        Err(CompileError::Compile { log, .. }) => {
            eprint!("{log}");
            CHILD_REJECTED
        }
        Err(e) => {
            eprint!("{e}");
            CHILD_REJECTED
        }
    }
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

    /// A stand-in compiler: a shell script in the child's place.
    fn shell(script: &str) -> Compiler {
        Compiler {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into(), "compile-kernel".into()],
        }
    }

    fn limits(wall_ms: u64) -> ChildLimits {
        ChildLimits {
            wall: Duration::from_millis(wall_ms),
            ..CHILD_LIMITS
        }
    }

    #[test]
    fn a_child_compiles_under_limits_and_its_failures_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let compile = |source: &str, script: &str, wall_ms| {
            compile_in_child(
                source,
                "compute_90",
                dir.path(),
                &shell(script),
                limits(wall_ms),
            )
        };
        // The source arrives on stdin, the PTX leaves on stdout, and the
        // child is told its arch and limits.
        let ptx = compile("// src", r#"printf '%s|' "$@"; cat"#, 10_000).unwrap();
        assert_eq!(
            ptx,
            "--arch|compute_90|--cpu-seconds|30|--address-space|4294967296|// src"
        );
        // It runs in an empty directory of its own, and of the parent's
        // environment it gets only what finds the CUDA libraries (the
        // shell adds PWD, SHLVL and _).
        let script = "pwd; ls -A; env | cut -d= -f1 \
            | grep -v -e '^PATH$' -e '^LD_LIBRARY_PATH$' -e '^CUDA' -e '^PWD$' -e '^SHLVL$' -e '^_$'; true";
        let seen = compile("", script, 10_000).unwrap();
        let cwd = dir.path().join("compile-cwd");
        assert_eq!(
            seen,
            format!("{}\n", cwd.display()),
            "nothing else listed or inherited"
        );
        // A rejected source: the compiler's log, trimmed.
        let e = compile("", "seq 1 100 >&2; exit 1", 10_000).unwrap_err();
        let CompileError::Compile { log, .. } = e else {
            panic!("{e:?}");
        };
        assert_eq!(log.lines().count(), MAX_LOG_LINES + 1, "{log}");
        assert!(
            log.ends_with("… (70 more lines of the log left out)"),
            "{log}"
        );
        // Killed at the wall-clock limit, or by its CPU-time limit.
        let e = compile("", "sleep 5", 200).unwrap_err();
        assert!(
            matches!(&e, CompileError::Child(m) if m.contains("killed after")),
            "{e:?}"
        );
        let e = compile("", "kill -XCPU $$", 10_000).unwrap_err();
        assert!(
            matches!(&e, CompileError::Child(m) if m.contains("CPU-time limit")),
            "{e:?}"
        );
        let e = compile("", "exit 3", 10_000).unwrap_err();
        assert!(matches!(e, CompileError::NvrtcMissing), "{e:?}");
    }

    #[test]
    fn logs_are_trimmed_by_lines_and_bytes() {
        assert_eq!(trim_log("a\nb\n"), "a\nb");
        let long = "x".repeat(1000);
        let log = [long.as_str(); 10].join("\n");
        let trimmed = trim_log(&log);
        assert_eq!(
            trimmed.lines().count(),
            5,
            "4 lines fit in 4 KiB, then the note"
        );
        assert!(trimmed.ends_with("(6 more lines of the log left out)"));
    }

    #[test]
    fn cached_ptx_is_used_without_compiling() {
        let dir = tempfile::tempdir().unwrap();
        let key = cache_key("src", "compute_90");
        std::fs::write(dir.path().join(format!("{key}.ptx")), "// cached").unwrap();
        assert_eq!(ptx("src", "compute_90", dir.path()).unwrap(), "// cached");
    }
}
