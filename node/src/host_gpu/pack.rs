//! `gpu.launch("<pack>/<kernel>", args)`: a kernel from one of the job's
//! kernel packs. The arguments are checked against the pack's manifest
//! before anything runs, as for the built-in kernels: their number and
//! kinds, each buffer's element type, and each buffer's length against the
//! extent the manifest declares for the scalar arguments given. Packs run
//! only on CUDA; on the CPU backend a valid launch fails with `device`.
//! What it is not: a check of what the kernel's code does (see
//! `spillway_kernels::KernelPack`).

use super::{error, kind_matches};
use crate::bindings::gpu::{ErrorCode, GpuError, KernelArg};
use crate::state::GuestState;

impl GuestState {
    pub(super) fn launch_from_pack(
        &mut self,
        pack_name: &str,
        kernel: &str,
        args: &[KernelArg],
    ) -> Result<(), GpuError> {
        let Some(job_pack) = self.packs.iter().find(|p| p.name == pack_name).cloned() else {
            let known: Vec<&str> = self.packs.iter().map(|p| p.name.as_str()).collect();
            return Err(error(
                ErrorCode::UnknownKernel,
                format!("no kernel pack `{pack_name}` for this function (it has: {known:?})"),
            ));
        };
        let Some(k) = job_pack.pack.kernel(kernel) else {
            return Err(error(
                ErrorCode::UnknownKernel,
                format!("kernel pack `{pack_name}` has no kernel `{kernel}`"),
            ));
        };
        if args.len() != k.params.len() {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!(
                    "{pack_name}/{kernel} takes {} arguments, got {}",
                    k.params.len(),
                    args.len()
                ),
            ));
        }
        let scalars: Vec<Option<u32>> = args
            .iter()
            .map(|a| match a {
                KernelArg::U32(v) => Some(*v),
                _ => None,
            })
            .collect();
        for (index, (arg, param)) in args.iter().zip(&k.params).enumerate() {
            if !kind_matches(arg, param.kind) {
                return Err(error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{pack_name}/{kernel} argument {index} (`{}`): expected {:?}",
                        param.name, param.kind
                    ),
                ));
            }
            let (KernelArg::Buf(handle), Some(extent)) = (arg, &param.elements) else {
                continue;
            };
            let buffer = self.buffer(handle)?;
            // A tensor of weights only where the manifest says the kernel
            // only reads.
            if !buffer.writable() && !param.read_only {
                return Err(super::read_only(&format!(
                    "{pack_name}/{kernel} argument `{}`: the kernel may write it (its manifest declares `\"access\": \"read\"` for a buffer it only reads)",
                    param.name
                )));
            }
            if buffer.dtype != param.dtype {
                return Err(error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{pack_name}/{kernel} argument `{}` must be a {} buffer, not {}",
                        param.name,
                        param.dtype.name(),
                        buffer.dtype.name()
                    ),
                ));
            }
            let need = extent.eval(&scalars)?;
            if (buffer.len() as u64) < need {
                return Err(error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{pack_name}/{kernel} argument `{}` holds {} elements but `{}` requires {need}",
                        param.name,
                        buffer.len(),
                        extent.text()
                    ),
                ));
            }
        }
        let grid = k.grid(&scalars)?;
        let Some(lease) = &self.cuda else {
            return Err(error(
                ErrorCode::Device,
                format!(
                    "{pack_name}/{kernel}: kernel packs run only on CUDA and this job runs on the CPU backend"
                ),
            ));
        };
        let launch_args = self.launch_args(lease, args);
        let outcome = lease.launch_pack(&job_pack.digest, &job_pack.pack, k, &launch_args, grid);
        outcome.map_err(|e| self.device_error(e))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bindings::gpu::{Dtype, Host as _, HostBuffer as _};
    use crate::state::JobPack;
    use spillway_kernels::KernelPack;
    use spillway_proto::Digest;
    use wasmtime::component::Resource;

    /// `examples/kernels/ops.json` as job pack `ops`.
    pub(crate) fn ops() -> JobPack {
        let bytes = include_bytes!("../../../examples/kernels/ops.json");
        JobPack {
            name: "ops".into(),
            digest: Digest::of(bytes),
            pack: std::sync::Arc::new(KernelPack::parse(bytes).unwrap()),
        }
    }

    fn buf(h: &Resource<super::super::Buffer>) -> KernelArg {
        KernelArg::Buf(Resource::new_borrow(h.rep()))
    }

    #[test]
    fn pack_launches_are_checked_against_the_manifest_before_the_backend() {
        let mut s = GuestState::for_test(1 << 20, None);
        s.packs = vec![ops()];
        let (x, out) = (s.create(8).unwrap(), s.create(4).unwrap());
        let half = s.create_typed(Dtype::Bf16, 8).unwrap();
        let launch = |s: &mut GuestState, name: &str, args: Vec<KernelArg>| {
            let (pack, kernel) = name.split_once('/').unwrap();
            s.launch_from_pack(pack, kernel, &args).unwrap_err()
        };
        let args = |x: &Resource<_>, out: &Resource<_>, n: u32| {
            vec![buf(x), buf(out), KernelArg::U32(n), KernelArg::F32(2.0)]
        };
        let cases = [
            (
                "nope/scale",
                args(&x, &out, 4),
                ErrorCode::UnknownKernel,
                "no kernel pack `nope`",
            ),
            (
                "ops/nope",
                args(&x, &out, 4),
                ErrorCode::UnknownKernel,
                "has no kernel `nope`",
            ),
            (
                "ops/scale",
                args(&x, &out, 4).into_iter().take(3).collect(),
                ErrorCode::InvalidArgument,
                "takes 4 arguments, got 3",
            ),
            (
                "ops/scale",
                vec![buf(&x), buf(&out), KernelArg::F32(1.0), KernelArg::F32(2.0)],
                ErrorCode::InvalidArgument,
                "argument 2 (`n`): expected U32",
            ),
            (
                "ops/scale",
                args(&half, &out, 4),
                ErrorCode::InvalidArgument,
                "`x` must be a f32 buffer, not bf16",
            ),
            (
                "ops/scale",
                args(&x, &out, 5),
                ErrorCode::InvalidArgument,
                "`out` holds 4 elements but `n` requires 5",
            ),
            (
                "ops/scale",
                args(&x, &out, 0),
                ErrorCode::InvalidArgument,
                "threads `n` is 0",
            ),
            (
                "ops/scale",
                args(&x, &out, 4),
                ErrorCode::Device,
                "kernel packs run only on CUDA",
            ),
        ];
        for (name, a, code, want) in cases {
            let e = launch(&mut s, name, a);
            assert_eq!(e.code, code, "{name}: {}", e.message);
            assert!(e.message.contains(want), "{name}: {}", e.message);
        }
    }

    /// `ops/scale` declares `x` `"access": "read"` and `out` read-write.
    #[test]
    fn a_tensor_of_weights_goes_only_where_the_manifest_says_read() {
        let mut s = GuestState::for_test(1 << 20, None);
        s.packs = vec![ops()];
        s.weights = vec![crate::state::JobWeights::for_test(
            "lm",
            &[1.0, 2.0, 3.0, 4.0],
        )];
        let w = s.weights("lm".into(), "w".into()).unwrap();
        let other = s.create(4).unwrap();
        let args = |x: &Resource<_>, out: &Resource<_>| {
            vec![buf(x), buf(out), KernelArg::U32(4), KernelArg::F32(2.0)]
        };
        // As `x` it passes every check (here the CPU backend then says
        // packs need CUDA; on a GPU it runs: cuda_tests).
        let e = s
            .launch_from_pack("ops", "scale", &args(&w, &other))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Device, "{}", e.message);
        // As `out` it is refused before anything runs.
        let e = s
            .launch_from_pack("ops", "scale", &args(&other, &w))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(
            e.message
                .contains("argument `out`: the kernel may write it"),
            "{}",
            e.message
        );
        assert!(e.message.contains("read-only"), "{}", e.message);
    }
}
