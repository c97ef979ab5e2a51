//! A weights artifact: a safetensors file, checked in full when it is
//! stored and then mapped read-only, so a job reads its tensors where they
//! lie on disk (through the page cache) and a file of many GiB is never
//! read into memory.
//!
//! What is checked (`safetensors`, the format's reference parser, then
//! here): the header's length, UTF-8 and JSON; every tensor's dtype, shape
//! and byte range, the ranges in order, without gaps or overlap, covering
//! the file exactly; each tensor's dtype one a `gpu` buffer holds (`f32`,
//! `bf16`, `f16`); each tensor at most `u32::MAX` elements (a buffer's
//! length is a `u32`); at least one tensor. A file that fails is refused
//! with the reason, naming the tensor where there is one.
//!
//! What it is not: where tensors are loaded onto a GPU (that is per
//! device, with its own budget) or who may open them (a job opens only the
//! weights its function names, resolved within its tenant when the
//! function was registered).

use spillway_kernels::DType;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

// Tensors are little-endian in the file and read as they lie.
#[cfg(target_endian = "big")]
compile_error!("weights are read in place as little-endian: build for a little-endian host");

/// A tensor's little-endian bytes as elements of `T` (`f32`, or `u16` for
/// the 16-bit types): in place when the file aligns them (safetensors
/// writers pad the header to 8 bytes), else copied.
pub(crate) fn elements<T: bytemuck::Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(in_place) => Cow::Borrowed(in_place),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

/// Why bytes are not weights this node takes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WeightsError {
    /// Not a safetensors file, or a damaged one: the reason says where.
    #[error("not a valid safetensors file: {0}")]
    Format(#[from] safetensors::SafeTensorError),
    /// A tensor of a type no `gpu` buffer holds.
    #[error("tensor `{tensor}` is {dtype:?}; weights hold f32, bf16 or f16 tensors")]
    Dtype {
        tensor: String,
        dtype: safetensors::Dtype,
    },
    /// A tensor longer than one buffer may be.
    #[error(
        "tensor `{tensor}` has {elements} elements; a buffer holds at most {}",
        u32::MAX
    )]
    TooLong { tensor: String, elements: u64 },
    /// A header that names no tensor.
    #[error("the file holds no tensors")]
    Empty,
    /// The stored file could not be opened or mapped.
    #[error("cannot read the weights file: {0}")]
    Io(#[from] std::io::Error),
}

/// One tensor of a weights file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<u64>,
    /// Its bytes, as a range of the whole file.
    pub(crate) bytes: Range<usize>,
}

/// Where a weights file's bytes are.
#[derive(Debug)]
enum Backing {
    /// The stored file, mapped read-only.
    Mapped(memmap2::Mmap),
    /// Bytes given in memory (an in-process caller's).
    Memory(Vec<u8>),
}

/// A checked weights file and the index of its tensors.
#[derive(Debug)]
pub(crate) struct Weights {
    backing: Backing,
    tensors: BTreeMap<String, TensorInfo>,
    /// The header's `__metadata__` text pairs.
    metadata: BTreeMap<String, String>,
}

/// What a weights file's header says: its tensors and its metadata.
type Index = (BTreeMap<String, TensorInfo>, BTreeMap<String, String>);

impl Weights {
    /// Checks `bytes` as a whole safetensors file and indexes its tensors.
    pub(crate) fn index(bytes: &[u8]) -> Result<Index, WeightsError> {
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(bytes)?;
        let pairs = metadata
            .metadata()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let data_start = 8 + header_len;
        let mut tensors = BTreeMap::new();
        for (name, info) in metadata.tensors() {
            let dtype = match info.dtype {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::BF16 => DType::Bf16,
                safetensors::Dtype::F16 => DType::F16,
                other => {
                    return Err(WeightsError::Dtype {
                        tensor: name,
                        dtype: other,
                    });
                }
            };
            let shape: Vec<u64> = info.shape.iter().map(|d| *d as u64).collect();
            let elements: u64 = shape.iter().product();
            if elements > u64::from(u32::MAX) {
                return Err(WeightsError::TooLong {
                    tensor: name,
                    elements,
                });
            }
            let (start, end) = info.data_offsets;
            let bytes = data_start + start..data_start + end;
            tensors.insert(
                name,
                TensorInfo {
                    dtype,
                    shape,
                    bytes,
                },
            );
        }
        if tensors.is_empty() {
            return Err(WeightsError::Empty);
        }
        Ok((tensors, pairs))
    }

    /// Maps the stored file at `path` and checks it.
    pub(crate) fn open(path: &Path) -> Result<Self, WeightsError> {
        let file = std::fs::File::open(path)?;
        // SAFETY: the file is this node's own stored copy: written once,
        // atomically renamed into the owner-only artifact folder under its
        // digest, and never written again (a damaged copy is unlinked,
        // which leaves an existing mapping intact). Only a process of the
        // node's own user could truncate it under the mapping.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let (tensors, metadata) = Self::index(&map)?;
        Ok(Self {
            backing: Backing::Mapped(map),
            tensors,
            metadata,
        })
    }

    /// Checks weights given in memory.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Result<Self, WeightsError> {
        let (tensors, metadata) = Self::index(&bytes)?;
        Ok(Self {
            backing: Backing::Memory(bytes),
            tensors,
            metadata,
        })
    }

    /// The whole file.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped(map) => map,
            Backing::Memory(bytes) => bytes,
        }
    }

    /// The BLAKE3 digest of the whole file (read through the mapping).
    pub(crate) fn digest(&self) -> spillway_proto::Digest {
        spillway_proto::Digest::of(self.bytes())
    }

    /// The header's `__metadata__`, sorted by key.
    pub(crate) fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tensor `name` and its little-endian bytes.
    pub(crate) fn tensor(&self, name: &str) -> Option<(&TensorInfo, &[u8])> {
        let info = self.tensors.get(name)?;
        Some((info, &self.bytes()[info.bytes.clone()]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A safetensors file of `tensors` (name, dtype as the format names
    /// it, shape, little-endian bytes), written by the format's own crate.
    pub(crate) fn safetensors_file(tensors: &[(&str, &str, &[u64], Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                let dtype: safetensors::Dtype =
                    serde_json::from_value(serde_json::Value::String((*dtype).into())).unwrap();
                let shape = shape.iter().map(|d| *d as usize).collect();
                let view = safetensors::tensor::TensorView::new(dtype, shape, bytes).unwrap();
                ((*name).to_owned(), view)
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    /// `file` with `from` replaced by `to` (as long) in its header: a
    /// damaged file the writer would not make.
    pub(crate) fn patched(mut file: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = file
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .expect("in the header");
        file[at..at + to.len()].copy_from_slice(to.as_bytes());
        file
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn tensors_are_indexed_with_their_type_shape_and_bytes() {
        let file = safetensors_file(&[
            ("embed", "F32", &[2, 2], f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
            ("norm", "BF16", &[3], vec![0x80, 0x3f, 0, 0x40, 0x40, 0x40]),
            ("scalar", "F16", &[], vec![0, 0x3c]),
        ]);
        assert_eq!(
            spillway_proto::ArtifactKind::of(&file),
            spillway_proto::ArtifactKind::Weights
        );
        let w = Weights::from_bytes(file).unwrap();
        let (info, bytes) = w.tensor("embed").unwrap();
        assert_eq!(
            (info.dtype, info.shape.as_slice()),
            (DType::F32, &[2, 2][..])
        );
        assert_eq!(bytes, f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
        let (info, bytes) = w.tensor("norm").unwrap();
        assert_eq!((info.dtype, info.shape.as_slice()), (DType::Bf16, &[3][..]));
        assert_eq!(
            DType::Bf16.widen(&[0x3f80, 0x4000, 0x4040]),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(bytes.len(), 6);
        assert!(w.tensor("scalar").unwrap().0.shape.is_empty());
        assert!(w.tensor("missing").is_none());
        assert_eq!(w.tensors.len(), 3);
    }

    #[test]
    fn a_bad_file_is_refused_with_what_is_wrong() {
        let good = safetensors_file(&[("w", "F32", &[2], f32_bytes(&[1.0, 2.0]))]);
        let reason = |bytes: &[u8]| Weights::index(bytes).unwrap_err().to_string();
        // Truncated: the header promises more bytes than there are.
        assert!(
            reason(&good[..good.len() - 1]).contains("not fully covered"),
            "{}",
            reason(&good[..good.len() - 1])
        );
        // One byte too many.
        let mut long = good.clone();
        long.push(0);
        assert!(
            reason(&long).contains("not fully covered"),
            "{}",
            reason(&long)
        );
        // A header that is not JSON.
        let mut broken = good.clone();
        broken[9] = b'!';
        assert!(
            reason(&broken).contains("invalid JSON"),
            "{}",
            reason(&broken)
        );
        // A shape that does not match the bytes.
        let wrong_shape = patched(good.clone(), "[2]", "[3]");
        assert!(
            reason(&wrong_shape).starts_with("not a valid safetensors file"),
            "{}",
            reason(&wrong_shape)
        );
        // A type no buffer holds, named with its tensor.
        let ints = safetensors_file(&[("ids", "I64", &[1], vec![0; 8])]);
        assert_eq!(
            reason(&ints),
            "tensor `ids` is I64; weights hold f32, bf16 or f16 tensors"
        );
        // No tensors at all.
        let empty = safetensors_file(&[]);
        assert_eq!(reason(&empty), "the file holds no tensors");
        // Too short to have a header.
        assert!(
            reason(b"\x02\0\0").contains("header too small"),
            "{}",
            reason(b"\x02\0\0")
        );
    }

    #[test]
    fn elements_are_read_in_place_when_aligned_and_copied_when_not() {
        let values = [1.5f32, -2.0];
        let aligned: &[u8] = bytemuck::cast_slice(&values);
        assert!(matches!(elements::<f32>(aligned), Cow::Borrowed(_)));
        assert_eq!(elements::<f32>(aligned).as_ref(), values);
        // The same bytes one byte into a 4-aligned buffer.
        let mut words = [0u32; 3];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[1..9].copy_from_slice(aligned);
        let misaligned = &bytemuck::cast_slice::<u32, u8>(&words)[1..9];
        assert!(matches!(elements::<f32>(misaligned), Cow::Owned(_)));
        assert_eq!(elements::<f32>(misaligned).as_ref(), values);
        assert_eq!(elements::<u16>(&[0x80, 0x3f]).as_ref(), [0x3f80]);
    }

    #[test]
    fn a_stored_file_is_mapped_and_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let values: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        std::fs::write(
            &path,
            safetensors_file(&[("v", "F32", &[10, 100], f32_bytes(&values))]),
        )
        .unwrap();
        let w = Weights::open(&path).unwrap();
        let (info, bytes) = w.tensor("v").unwrap();
        assert_eq!(info.shape, [10, 100]);
        assert_eq!(bytes, f32_bytes(&values));
        assert!(matches!(w.backing, Backing::Mapped(_)));
        assert!(matches!(
            Weights::open(&dir.path().join("none")),
            Err(WeightsError::Io(_))
        ));
    }
}
