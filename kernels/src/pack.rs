//! Kernel packs: a tenant's own CUDA kernels, published as an artifact.
//!
//! A pack is one JSON document: the CUDA C source (compiled by NVRTC on each
//! host for its GPU, cached like the built-in kernels) or ready PTX, and a
//! manifest that declares every kernel's parameters, how many elements
//! each buffer parameter must hold and how many threads a launch runs, as
//! products of the kernel's `u32` parameters:
//!
//! ```json
//! {
//!   "format": "spillway-kernel-pack/1",
//!   "cuda": "extern \"C\" __global__ void scale(const float* x, float* out, unsigned n, float a) { ... }",
//!   "kernels": [{
//!     "name": "scale",
//!     "params": [
//!       {"name": "x", "type": "buffer", "elements": "n", "access": "read"},
//!       {"name": "out", "type": "buffer", "elements": "n"},
//!       {"name": "n", "type": "u32"},
//!       {"name": "a", "type": "f32"}
//!     ],
//!     "threads": "n",
//!     "block": 256
//!   }]
//! }
//! ```
//!
//! Before a launch the node checks the arguments against the declared
//! parameters (kind, and a buffer's element type, `f32` unless `"dtype"`
//! says `bf16` or `f16`) and every buffer against its `elements`; a tensor
//! of weights (read-only) only where `"access": "read"` says the kernel
//! only reads (`read_write` is the default); the grid is
//! `ceil(threads / block)` blocks of `block` threads, so a kernel guards its
//! own index (`if (i < n)`). This module is pure: parsing and those checks.
//! What it is not: a sandbox. A pack's code runs natively on the GPU, in the
//! context the host's jobs share, which is why packs must be signed by a
//! publisher the tenant trusts; a kernel that faults takes the node down
//! and the sidecar restarts it (`device_fault`).

use crate::{DType, KernelError, Param};
use serde::Deserialize;

/// The `format` a pack must declare.
pub const PACK_FORMAT: &str = "spillway-kernel-pack/1";
/// Kernels in one pack at most.
const MAX_KERNELS: usize = 64;
/// Parameters of one kernel at most.
const MAX_PARAMS: usize = 32;
/// Source (or PTX) bytes at most.
pub(crate) const MAX_SOURCE: usize = 4 << 20;

/// Why bytes are not a kernel pack. The message names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel pack: {0}")]
pub struct PackError(String);

fn bad(message: impl Into<String>) -> PackError {
    PackError(message.into())
}

/// What the device runs: CUDA C for NVRTC, or PTX for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackSource {
    Cuda(String),
    Ptx(String),
}

/// A validated kernel pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPack {
    pub source: PackSource,
    pub kernels: Vec<PackKernel>,
}

/// One kernel of a pack, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackKernel {
    /// The entry point's name in the source (`extern "C"`).
    pub name: String,
    pub params: Vec<PackParam>,
    /// Threads a launch runs.
    pub threads: Extent,
    /// Threads per block (a multiple of 32, at most 1024).
    pub block: u32,
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackParam {
    pub name: String,
    pub kind: Param,
    /// A buffer's element type.
    pub dtype: DType,
    /// A buffer's required elements.
    pub elements: Option<Extent>,
    /// A buffer the kernel only reads (`"access": "read"`), so a tensor of
    /// weights may be passed there. The manifest says so; the code is the
    /// pack's, vouched for by its signer (a kernel that wrote one anyway
    /// would change only its own tenant's resident copy).
    pub read_only: bool,
}

/// A count: the product of integer constants and `u32` parameters (by
/// position), e.g. `rows*cols` or `4*n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    text: String,
    constant: u64,
    params: Vec<usize>,
}

impl Extent {
    fn parse(text: &str, params: &[RawParam]) -> Result<Self, PackError> {
        let mut constant = 1u64;
        let mut used = Vec::new();
        for factor in text.split('*').map(str::trim) {
            if let Ok(c) = factor.parse::<u64>() {
                constant = constant
                    .checked_mul(c)
                    .ok_or_else(|| bad(format!("`{text}` overflows")))?;
                continue;
            }
            let at = params
                .iter()
                .position(|p| p.name == factor)
                .ok_or_else(|| {
                    bad(format!(
                        "`{text}`: `{factor}` is neither a number nor a parameter"
                    ))
                })?;
            if params[at].ty != "u32" {
                return Err(bad(format!("`{text}`: `{factor}` is not a u32 parameter")));
            }
            used.push(at);
        }
        Ok(Self {
            text: text.to_owned(),
            constant,
            params: used,
        })
    }

    /// The count for a launch's arguments (`u32` values by parameter
    /// position; others are ignored).
    pub fn eval(&self, args: &[Option<u32>]) -> Result<u64, KernelError> {
        self.params.iter().try_fold(self.constant, |acc, &i| {
            let v = args.get(i).copied().flatten().unwrap_or(0);
            acc.checked_mul(u64::from(v))
                .ok_or_else(|| KernelError::Shape(format!("`{}` overflows", self.text)))
        })
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    format: String,
    cuda: Option<String>,
    ptx: Option<String>,
    kernels: Vec<RawKernel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    name: String,
    params: Vec<RawParam>,
    threads: String,
    block: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    dtype: Option<String>,
    elements: Option<String>,
    access: Option<String>,
}

/// A C identifier of at most 64 characters.
fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

impl KernelPack {
    /// Whether `bytes` look like a pack (a JSON object) rather than a
    /// WebAssembly component; [`KernelPack::parse`] decides if it is one.
    pub fn looks_like(bytes: &[u8]) -> bool {
        bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{')
    }

    /// Parses and validates a pack.
    pub fn parse(bytes: &[u8]) -> Result<Self, PackError> {
        let raw: RawPack =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a valid manifest: {e}")))?;
        if raw.format != PACK_FORMAT {
            return Err(bad(format!(
                "format is `{}`, expected `{PACK_FORMAT}`",
                raw.format
            )));
        }
        let source = match (raw.cuda, raw.ptx) {
            (Some(c), None) => PackSource::Cuda(c),
            (None, Some(p)) => PackSource::Ptx(p),
            _ => return Err(bad("give exactly one of `cuda` (source) and `ptx`")),
        };
        let text = match &source {
            PackSource::Cuda(s) | PackSource::Ptx(s) => s,
        };
        if text.trim().is_empty() || text.len() > MAX_SOURCE {
            return Err(bad(format!(
                "the source must be 1 to {MAX_SOURCE} bytes, not {}",
                text.len()
            )));
        }
        if let PackSource::Cuda(cuda) = &source
            && let Some(found) = crate::includes::file_directive(cuda)
        {
            return Err(bad(format!(
                "the CUDA source may not make the compiler read files: {} on line {} (a pack is one self-contained source; NVRTC's own headers need no include)",
                found.what, found.line
            )));
        }
        if raw.kernels.is_empty() || raw.kernels.len() > MAX_KERNELS {
            return Err(bad(format!(
                "a pack declares 1 to {MAX_KERNELS} kernels, not {}",
                raw.kernels.len()
            )));
        }
        let mut kernels: Vec<PackKernel> = Vec::new();
        for k in raw.kernels {
            if !identifier(&k.name) {
                return Err(bad(format!("`{}` is not a C identifier", k.name)));
            }
            if kernels.iter().any(|seen| seen.name == k.name) {
                return Err(bad(format!("kernel `{}` is declared twice", k.name)));
            }
            kernels.push(PackKernel::validate(k)?);
        }
        Ok(Self { source, kernels })
    }

    /// The kernel declared as `name`.
    pub fn kernel(&self, name: &str) -> Option<&PackKernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}

impl PackKernel {
    fn validate(k: RawKernel) -> Result<Self, PackError> {
        let name = k.name;
        let at = |what: String| bad(format!("kernel `{name}`: {what}"));
        if k.params.len() > MAX_PARAMS {
            return Err(at(format!("more than {MAX_PARAMS} parameters")));
        }
        for (i, p) in k.params.iter().enumerate() {
            if !identifier(&p.name) || k.params[..i].iter().any(|q| q.name == p.name) {
                return Err(at(format!(
                    "parameter `{}` is not a unique C identifier",
                    p.name
                )));
            }
        }
        let mut params: Vec<PackParam> = Vec::new();
        for p in &k.params {
            let kind = match p.ty.as_str() {
                "buffer" => Param::Buffer,
                "f32" => Param::F32,
                "u32" => Param::U32,
                other => {
                    return Err(at(format!(
                        "parameter `{}` has type `{other}`; use buffer, f32 or u32",
                        p.name
                    )));
                }
            };
            let dtype = match (kind, p.dtype.as_deref()) {
                (Param::Buffer, None | Some("f32")) => DType::F32,
                (Param::Buffer, Some("bf16")) => DType::Bf16,
                (Param::Buffer, Some("f16")) => DType::F16,
                (Param::Buffer, Some(other)) => {
                    return Err(at(format!(
                        "buffer `{}` has dtype `{other}`; use f32, bf16 or f16",
                        p.name
                    )));
                }
                (_, None) => DType::F32,
                (_, Some(_)) => {
                    return Err(at(format!("scalar `{}` takes no dtype", p.name)));
                }
            };
            let elements = match (kind, &p.elements) {
                (Param::Buffer, Some(e)) => Some(
                    Extent::parse(e, &k.params)
                        .map_err(|e| at(format!("buffer `{}` elements {}", p.name, e.0)))?,
                ),
                (Param::Buffer, None) => {
                    return Err(at(format!(
                        "buffer `{}` must declare its `elements`",
                        p.name
                    )));
                }
                (_, Some(_)) => {
                    return Err(at(format!("scalar `{}` takes no `elements`", p.name)));
                }
                (_, None) => None,
            };
            let read_only = match (kind, p.access.as_deref()) {
                (Param::Buffer, Some("read")) => true,
                (Param::Buffer, None | Some("read_write")) => false,
                (Param::Buffer, Some(other)) => {
                    return Err(at(format!(
                        "buffer `{}` has access `{other}`; use read or read_write",
                        p.name
                    )));
                }
                (_, None) => false,
                (_, Some(_)) => {
                    return Err(at(format!("scalar `{}` takes no `access`", p.name)));
                }
            };
            params.push(PackParam {
                name: p.name.clone(),
                kind,
                dtype,
                elements,
                read_only,
            });
        }
        let threads =
            Extent::parse(&k.threads, &k.params).map_err(|e| at(format!("threads {}", e.0)))?;
        let block = k.block.unwrap_or(256);
        if block == 0 || block > 1024 || !block.is_multiple_of(32) {
            return Err(at(format!(
                "block is {block}; use a multiple of 32 up to 1024"
            )));
        }
        Ok(Self {
            name,
            params,
            threads,
            block,
        })
    }

    /// The grid for a launch with these `u32` arguments (by parameter
    /// position): `ceil(threads / block)` blocks, at least one thread.
    pub fn grid(&self, args: &[Option<u32>]) -> Result<u32, KernelError> {
        let threads = self.threads.eval(args)?;
        if threads == 0 {
            return Err(KernelError::Shape(format!(
                "`{}`: threads `{}` is 0",
                self.name,
                self.threads.text()
            )));
        }
        u32::try_from(threads.div_ceil(u64::from(self.block)))
            .ok()
            .filter(|g| *g <= i32::MAX as u32)
            .ok_or_else(|| {
                KernelError::Shape(format!(
                    "`{}`: {threads} threads is more than one launch takes",
                    self.name
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCALE: &str = r#"{
      "format": "spillway-kernel-pack/1",
      "cuda": "extern \"C\" __global__ void scale(const float* x, float* out, unsigned n, float a) {}",
      "kernels": [{
        "name": "scale",
        "params": [
          {"name": "x", "type": "buffer", "elements": "n", "access": "read"},
          {"name": "out", "type": "buffer", "elements": "rows*n*2", "access": "read_write"},
          {"name": "n", "type": "u32"},
          {"name": "rows", "type": "u32"},
          {"name": "a", "type": "f32"},
          {"name": "h", "type": "buffer", "dtype": "bf16", "elements": "1"}
        ],
        "threads": "n",
        "block": 128
      }]
    }"#;

    #[test]
    fn a_pack_parses_and_its_extents_follow_the_arguments() {
        assert!(KernelPack::looks_like(b"  \n{"));
        assert!(!KernelPack::looks_like(b"\0asm"));
        let pack = KernelPack::parse(SCALE.as_bytes()).unwrap();
        assert!(matches!(pack.source, PackSource::Cuda(_)));
        let k = pack.kernel("scale").unwrap();
        assert_eq!(k.block, 128);
        assert_eq!(k.params[5].dtype, DType::Bf16);
        let read_only: Vec<bool> = k.params.iter().map(|p| p.read_only).collect();
        assert_eq!(read_only, [true, false, false, false, false, false]);
        let args = [None, None, Some(1000), Some(3), None, None];
        assert_eq!(k.params[0].elements.as_ref().unwrap().eval(&args), Ok(1000));
        assert_eq!(k.params[1].elements.as_ref().unwrap().eval(&args), Ok(6000));
        assert_eq!(k.grid(&args), Ok(8)); // ceil(1000 / 128)
        let zero = [None, None, Some(0), Some(3), None, None];
        assert!(matches!(k.grid(&zero), Err(KernelError::Shape(_))));
        let huge = [None, None, Some(u32::MAX), Some(u32::MAX), None, None];
        assert!(k.params[1].elements.as_ref().unwrap().eval(&huge).is_err()); // 2^65
        assert!(pack.kernel("nope").is_none());
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let cases = [
            (
                SCALE.replace("/1\"", "/9\""),
                "expected `spillway-kernel-pack/1`",
            ),
            (
                SCALE.replace("\"cuda\"", "\"ptx\": \"x\", \"cuda\""),
                "exactly one of",
            ),
            (
                SCALE.replace("\"elements\": \"n\"", "\"elements\": \"m\""),
                "`m` is neither",
            ),
            (
                SCALE.replace("\"elements\": \"n\"", "\"elements\": \"a\""),
                "`a` is not a u32",
            ),
            (
                SCALE.replace(", \"elements\": \"1\"", ""),
                "must declare its `elements`",
            ),
            (
                SCALE.replace("\"block\": 128", "\"block\": 100"),
                "multiple of 32",
            ),
            (
                SCALE.replace("\"a\", \"type\": \"f32\"", "\"a\", \"type\": \"f64\""),
                "use buffer, f32 or u32",
            ),
            (SCALE.replace("\"bf16\"", "\"f8\""), "use f32, bf16 or f16"),
            (
                SCALE.replace("\"access\": \"read\"", "\"access\": \"write\""),
                "use read or read_write",
            ),
            (
                SCALE.replace(
                    "\"type\": \"f32\"}",
                    "\"type\": \"f32\", \"access\": \"read\"}",
                ),
                "scalar `a` takes no `access`",
            ),
            (
                SCALE.replace("\"extern", "\"#include \\\"/etc/hostname\\\"\\nextern"),
                "may not make the compiler read files: `#include` on line 1",
            ),
            (
                SCALE.replace("\"name\": \"scale\"", "\"name\": \"2x\""),
                "not a C identifier",
            ),
            (
                SCALE.replace("\"name\": \"rows\"", "\"name\": \"n\""),
                "not a unique C identifier",
            ),
            (
                SCALE.replace("\"threads\"", "\"thread\""),
                "not a valid manifest",
            ),
            (
                SCALE.replace("\"kernels\": [{", "\"kernels\": [], \"x\": [{"),
                "not a valid manifest",
            ),
        ];
        for (text, want) in cases {
            let e = KernelPack::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let twice = SCALE.replace(
            "}]\n    }",
            "}, {\"name\": \"scale\", \"params\": [], \"threads\": \"1\"}]\n    }",
        );
        let e = KernelPack::parse(twice.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("declared twice"), "{e}");
    }
}
