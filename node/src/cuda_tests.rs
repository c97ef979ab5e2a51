//! The CUDA backend against the CPU reference, through the `gpu` host
//! functions. Each test skips (saying so) on a machine without a CUDA driver
//! or GPU; on a GPU host they all run.
//!
//! Method (see the device notes): fresh random inputs for every check,
//! outputs poisoned with NaN before each launch and checked to be fully
//! written, relative L2 error against the f64-accumulating reference within
//! 1e-5 (f32 arithmetic; cuBLAS without TF32).

use crate::bindings::gpu::{Dtype, ErrorCode, GpuError, Host as _, HostBuffer as _, KernelArg};
use crate::cuda::CudaBackend;
use crate::host_gpu::Buffer;
use crate::state::GuestState;
use spillway_kernels::DType;
use std::sync::OnceLock;
use wasmtime::component::Resource;

const TOLERANCE: f64 = 1e-5;

fn backend() -> Option<&'static CudaBackend> {
    static BACKEND: OnceLock<Option<CudaBackend>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("spillway-ptx-test-{}", std::process::id()));
            let options = crate::cuda::GpuOptions {
                // Tests run in parallel, and one holds two streams.
                slots: 16,
                compiler: spillway_compiler(),
                ..Default::default()
            };
            CudaBackend::open(&dir, &options).expect("a present GPU must open")
        })
        .as_ref()
}

/// The `spillway` binary's `compile-kernel`, found beside this test
/// executable or one folder up.
pub(crate) fn spillway_compiler() -> Option<spillway_kernels::nvrtc::Compiler> {
    spillway_kernels::nvrtc::Compiler::spillway_near(&std::env::current_exe().ok()?)
}

/// A job state on a GPU, or `None` (and a printed reason) without one.
fn gpu_state(test: &str) -> Option<GuestState> {
    let Some(backend) = backend() else {
        eprintln!("skipped {test}: no CUDA driver or GPU on this machine");
        return None;
    };
    let lease = backend
        .lease(&spillway_proto::TenantId::admin(), None)
        .expect("a free stream");
    Some(GuestState::for_test(1 << 30, Some(lease)))
}

struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        Self(t.as_nanos() as u64 | 1)
    }

    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }
}

fn upload(s: &mut GuestState, data: &[f32]) -> Resource<Buffer> {
    let b = s.create(data.len() as u32).unwrap();
    s.write(Resource::new_borrow(b.rep()), 0, data.to_vec())
        .unwrap();
    b
}

fn poisoned(s: &mut GuestState, n: usize) -> Resource<Buffer> {
    upload(s, &vec![f32::NAN; n])
}

fn arg(b: &Resource<Buffer>) -> KernelArg {
    KernelArg::Buf(Resource::new_borrow(b.rep()))
}

fn download(s: &mut GuestState, b: &Resource<Buffer>, n: usize) -> Vec<f32> {
    s.read(Resource::new_borrow(b.rep()), 0, n as u32).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_within(what, got, want, TOLERANCE);
}

/// Relative L2 error of `got` against `want` within `tolerance`, with
/// every element written.
fn assert_within(what: &str, got: &[f32], want: &[f32], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: an element was not written (NaN left)"
    );
    let (mut err, mut norm) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        err += (f64::from(*g) - f64::from(*w)).powi(2);
        norm += f64::from(*w).powi(2);
    }
    let rel = (err / norm.max(f64::MIN_POSITIVE)).sqrt();
    assert!(
        rel <= tolerance,
        "{what}: relative error {rel:e} > {tolerance:e}"
    );
    eprintln!("{what}: relative error {rel:.2e} (limit {tolerance:.0e})");
}

/// The L2 error of `got` against `want` relative to the L2 size of
/// `terms` (the magnitudes summed into each element) within `tolerance`.
fn assert_within_terms(what: &str, got: &[f32], want: &[f32], terms: &[f32], tolerance: f64) {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - f64::from(*w)).powi(2))
        .sum();
    let size: f64 = terms.iter().map(|t| f64::from(*t).powi(2)).sum();
    let rel = (err / size.max(f64::MIN_POSITIVE)).sqrt();
    assert!(
        rel <= tolerance,
        "{what}: error {rel:e} of the terms' size > {tolerance:e}"
    );
    eprintln!("{what}: error {rel:.2e} of the terms' size (limit {tolerance:.0e})");
}

#[test]
fn elementwise_kernels_match_the_reference() {
    let Some(mut s) = gpu_state("elementwise_kernels_match_the_reference") else {
        return;
    };
    let mut rng = Rng::new();
    for n in [1usize, 1000, (1 << 20) + 3] {
        let (x, y) = (rng.f32s(n), rng.f32s(n));
        let (bx, by, out) = (upload(&mut s, &x), upload(&mut s, &y), poisoned(&mut s, n));
        s.launch(
            "vector_add".into(),
            vec![arg(&bx), arg(&by), arg(&out), KernelArg::U32(n as u32)],
        )
        .unwrap()
        .unwrap();
        let mut want = vec![0.0; n];
        spillway_kernels::vector_add(&x, &y, &mut want, &mut spillway_kernels::Meter::unbounded())
            .unwrap();
        assert_close(
            &format!("vector_add n={n}"),
            &download(&mut s, &out, n),
            &want,
        );

        let alpha = rng.f32s(1)[0];
        s.launch(
            "saxpy".into(),
            vec![
                KernelArg::F32(alpha),
                arg(&bx),
                arg(&by),
                KernelArg::U32(n as u32),
            ],
        )
        .unwrap()
        .unwrap();
        let mut want = y.clone();
        spillway_kernels::saxpy(
            alpha,
            &x,
            &mut want,
            &mut spillway_kernels::Meter::unbounded(),
        )
        .unwrap();
        assert_close(&format!("saxpy n={n}"), &download(&mut s, &by, n), &want);

        let sum = poisoned(&mut s, 1);
        s.launch(
            "reduce_sum".into(),
            vec![arg(&bx), arg(&sum), KernelArg::U32(n as u32)],
        )
        .unwrap()
        .unwrap();
        let want =
            spillway_kernels::reduce_sum(&x, &mut spillway_kernels::Meter::unbounded()).unwrap();
        let got = download(&mut s, &sum, 1)[0];
        // A sum's error grows with n; relative to Σ|x|, not to the sum.
        let scale: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
        let err = (f64::from(got) - f64::from(want)).abs() / scale;
        assert!(
            err <= TOLERANCE,
            "reduce_sum n={n}: {got} vs {want} (error {err:e} of Σ|x|)"
        );
        for b in [bx, by, out, sum] {
            s.drop(b).unwrap();
        }
    }
}

#[test]
fn row_kernels_match_the_reference() {
    let Some(mut s) = gpu_state("row_kernels_match_the_reference") else {
        return;
    };
    let mut rng = Rng::new();
    for (rows, cols) in [(1usize, 1usize), (7, 33), (300, 1000), (4, 5000)] {
        let n = rows * cols;
        let x: Vec<f32> = rng.f32s(n).iter().map(|v| v * 8.0).collect();
        let w = rng.f32s(cols);
        let (bx, bw, out) = (upload(&mut s, &x), upload(&mut s, &w), poisoned(&mut s, n));
        let (r, c) = (KernelArg::U32(rows as u32), KernelArg::U32(cols as u32));
        s.launch("softmax".into(), vec![arg(&bx), arg(&out), r, c])
            .unwrap()
            .unwrap();
        let mut want = vec![0.0; n];
        spillway_kernels::softmax(
            &x,
            rows,
            cols,
            &mut want,
            &mut spillway_kernels::Meter::unbounded(),
        )
        .unwrap();
        assert_close(
            &format!("softmax {rows}x{cols}"),
            &download(&mut s, &out, n),
            &want,
        );

        let out2 = poisoned(&mut s, n);
        let (r, c) = (KernelArg::U32(rows as u32), KernelArg::U32(cols as u32));
        let args = vec![arg(&bx), arg(&bw), arg(&out2), r, c, KernelArg::F32(1e-5)];
        s.launch("rmsnorm".into(), args).unwrap().unwrap();
        spillway_kernels::rmsnorm(
            &x,
            &w,
            rows,
            cols,
            1e-5,
            &mut want,
            &mut spillway_kernels::Meter::unbounded(),
        )
        .unwrap();
        assert_close(
            &format!("rmsnorm {rows}x{cols}"),
            &download(&mut s, &out2, n),
            &want,
        );
        for b in [bx, bw, out, out2] {
            s.drop(b).unwrap();
        }
    }
}

#[test]
fn gemm_on_cublas_matches_the_reference() {
    let Some(mut s) = gpu_state("gemm_on_cublas_matches_the_reference") else {
        return;
    };
    let mut rng = Rng::new();
    for (m, n, k) in [
        (1usize, 1usize, 1usize),
        (3, 5, 7),
        (64, 48, 80),
        (257, 129, 255),
    ] {
        let (a, b) = (rng.f32s(m * k), rng.f32s(k * n));
        let c0 = rng.f32s(m * n);
        let (ba, bb, bc) = (upload(&mut s, &a), upload(&mut s, &b), upload(&mut s, &c0));
        let (alpha, beta) = (1.5f32, -0.5f32);
        s.gemm(
            m as u32,
            n as u32,
            k as u32,
            alpha,
            Resource::new_borrow(ba.rep()),
            Resource::new_borrow(bb.rep()),
            beta,
            Resource::new_borrow(bc.rep()),
        )
        .unwrap()
        .unwrap();
        let mut want = c0.clone();
        spillway_kernels::gemm(
            m,
            n,
            k,
            alpha,
            &a,
            &b,
            beta,
            &mut want,
            &mut spillway_kernels::Meter::unbounded(),
        )
        .unwrap();
        assert_close(
            &format!("gemm {m}x{n}x{k}"),
            &download(&mut s, &bc, m * n),
            &want,
        );
        for buf in [ba, bb, bc] {
            s.drop(buf).unwrap();
        }
    }
}

/// bf16 and f16 operands on the tensor cores (`cublasGemmEx`, f32
/// accumulation), C in f32 or the operands' type. Two references: the
/// product of the rounded operands in f64 (what the device must compute, up
/// to f32 accumulation and C's one rounding), and the product of the
/// unrounded f32 inputs (what a user gets, within METHOD.md's 1e-2 for bf16).
#[test]
fn gemm_16_bit_on_tensor_cores_matches_the_reference() {
    let Some(mut s) = gpu_state("gemm_16_bit_on_tensor_cores_matches_the_reference") else {
        return;
    };
    let mut rng = Rng::new();
    for t in [Dtype::Bf16, Dtype::F16] {
        let d = match t {
            Dtype::Bf16 => DType::Bf16,
            _ => DType::F16,
        };
        // C's rounding: one ulp of C's type at most (2^-7 relative for
        // bf16, 2^-10 for f16). Half an ulp is not enough: the device's
        // f32 sum can land on the other side of a tie from the reference's,
        // and with one element that one ulp is the whole error (seen on an
        // H100 for a 1×1×1 product).
        let (rounded_c, user) = match d {
            DType::Bf16 => (8e-3, 1e-2),
            _ => (1e-3, 2e-3),
        };
        for (m, n, k) in [
            (1usize, 1usize, 1usize),
            (3, 5, 7),
            (64, 48, 80),
            (257, 129, 255),
            (512, 384, 1024),
        ] {
            let (a, b) = (rng.f32s(m * k), rng.f32s(k * n));
            let (ra, rb) = (d.widen(&d.narrow(&a)), d.widen(&d.narrow(&b)));
            let ba = s.create_typed(t, (m * k) as u32).unwrap();
            let bb = s.create_typed(t, (k * n) as u32).unwrap();
            s.write(Resource::new_borrow(ba.rep()), 0, a.clone())
                .unwrap();
            s.write(Resource::new_borrow(bb.rep()), 0, b.clone())
                .unwrap();
            for c_type in [Dtype::F32, t] {
                let c_16 = !matches!(c_type, Dtype::F32);
                // beta = 0 on a poisoned C, then beta = -0.5 on random C.
                for (alpha, beta) in [(1.0f32, 0.0f32), (1.5, -0.5)] {
                    let c0 = if beta == 0.0 {
                        vec![f32::NAN; m * n]
                    } else {
                        rng.f32s(m * n)
                    };
                    let bc = s.create_typed(c_type, (m * n) as u32).unwrap();
                    s.write(Resource::new_borrow(bc.rep()), 0, c0.clone())
                        .unwrap();
                    let c_start = if c_16 {
                        d.widen(&d.narrow(&c0))
                    } else {
                        c0.clone()
                    };
                    s.gemm(
                        m as u32,
                        n as u32,
                        k as u32,
                        alpha,
                        Resource::new_borrow(ba.rep()),
                        Resource::new_borrow(bb.rep()),
                        beta,
                        Resource::new_borrow(bc.rep()),
                    )
                    .unwrap()
                    .unwrap();
                    let got = download(&mut s, &bc, m * n);
                    let what = format!(
                        "{} gemm {m}x{n}x{k} C {} beta {beta}",
                        d.name(),
                        if c_16 { d.name() } else { "f32" }
                    );
                    let mut want = c_start.clone();
                    spillway_kernels::gemm(
                        m,
                        n,
                        k,
                        alpha,
                        &ra,
                        &rb,
                        beta,
                        &mut want,
                        &mut spillway_kernels::Meter::unbounded(),
                    )
                    .unwrap();
                    let tight = if c_16 { rounded_c } else { 1e-4 };
                    assert_within(&format!("{what} vs rounded operands"), &got, &want, tight);
                    // Against the f32 inputs the 16-bit rounding of A and
                    // B shows, relative to the size of the terms summed
                    // (|α|·|A|·|B| + |β|·|C|), not of a result that may
                    // cancel to near zero (a 1×1×1 product with β = -0.5
                    // failed a result-relative bound now and then).
                    let mut want = c_start.clone();
                    let mut terms: Vec<f32> = c_start.iter().map(|v| v.abs()).collect();
                    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
                    for (a, b, alpha, beta, out) in [
                        (a.clone(), b.clone(), alpha, beta, &mut want),
                        (abs(&a), abs(&b), alpha.abs(), beta.abs(), &mut terms),
                    ] {
                        spillway_kernels::gemm(
                            m,
                            n,
                            k,
                            alpha,
                            &a,
                            &b,
                            beta,
                            out,
                            &mut spillway_kernels::Meter::unbounded(),
                        )
                        .unwrap();
                    }
                    assert_within_terms(
                        &format!("{what} vs f32 inputs"),
                        &got,
                        &want,
                        &terms,
                        user,
                    );
                    s.drop(bc).unwrap();
                }
            }
            s.drop(ba).unwrap();
            s.drop(bb).unwrap();
        }
    }
    assert!(s.device_fault.is_none());
}

#[test]
fn device_memory_is_accounted_and_checked_before_launch() {
    let Some(mut s) = gpu_state("device_memory_is_accounted_and_checked_before_launch") else {
        return;
    };
    s.limits.memory_bytes = 4096;
    let a = s.create(512).unwrap();
    let e = s.create(1024).unwrap_err();
    assert!(matches!(e.code, ErrorCode::OutOfMemory), "{}", e.message);
    // A launch whose shape exceeds a buffer is refused before it runs.
    let e = s
        .launch(
            "reduce_sum".into(),
            vec![arg(&a), arg(&a), KernelArg::U32(513)],
        )
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e.code, ErrorCode::InvalidArgument),
        "{}",
        e.message
    );
    let info = s.device_info();
    assert!(matches!(info.backend, crate::bindings::gpu::Backend::Cuda));
    assert!(info.memory_bytes > 0 && info.compute_capability.is_some());
    s.drop(a).unwrap();
    assert_eq!(s.limits.gpu_bytes, 0);
    assert!(s.device_fault.is_none());
}

/// Kernel packs on the device: `examples/kernels/ops.json` from CUDA source
/// (NVRTC) and the same kernels as PTX, launched through `gpu.launch` and
/// checked against the CPU; packs that do not build are refused by
/// `load_pack` with the reason, before any job could use them.
#[test]
fn kernel_packs_compile_launch_and_match_the_reference() {
    let Some(mut s) = gpu_state("kernel_packs_compile_launch_and_match_the_reference") else {
        return;
    };
    use crate::state::JobPack;
    use spillway_kernels::{KernelPack, PackSource};
    let ops = crate::host_gpu::pack::tests::ops();
    let PackSource::Cuda(source) = &ops.pack.source else {
        panic!("ops.json carries CUDA source");
    };
    let cc = s.cuda.as_ref().unwrap().device().compute_capability;
    let dir = tempfile::tempdir().unwrap();
    let compiler = spillway_compiler().expect("the spillway binary beside the tests");
    let arch = spillway_kernels::nvrtc::arch_for(cc);
    let limits = spillway_kernels::nvrtc::CHILD_LIMITS;
    let ptx = spillway_kernels::nvrtc::tenant_ptx(source, &arch, dir.path(), &compiler, limits)
        .expect("NVRTC compiles ops.json in a child process");
    let ptx_pack = KernelPack {
        source: PackSource::Ptx(ptx),
        kernels: ops.pack.kernels.clone(),
    };
    let ptx_ops = JobPack {
        name: "ptx".into(),
        digest: spillway_proto::Digest::of(b"ops as ptx"),
        pack: std::sync::Arc::new(ptx_pack),
    };
    s.packs = vec![ops.clone(), ptx_ops];
    let mut rng = Rng::new();
    for n in [1usize, 1000, (1 << 20) + 3] {
        let x = rng.f32s(n);
        let (a, b) = (rng.f32s(1)[0], rng.f32s(1)[0]);
        let bx = upload(&mut s, &x);
        for (kernel, scalar, want) in [
            (
                "ops/scale",
                a,
                x.iter().map(|v| a * v).collect::<Vec<f32>>(),
            ),
            ("ptx/scale", a, x.iter().map(|v| a * v).collect()),
            ("ops/square_plus", b, x.iter().map(|v| v * v + b).collect()),
            ("ptx/square_plus", b, x.iter().map(|v| v * v + b).collect()),
        ] {
            let out = poisoned(&mut s, n);
            let args = vec![
                arg(&bx),
                arg(&out),
                KernelArg::U32(n as u32),
                KernelArg::F32(scalar),
            ];
            s.launch(kernel.into(), args).unwrap().unwrap();
            assert_close(
                &format!("{kernel} n={n}"),
                &download(&mut s, &out, n),
                &want,
            );
            s.drop(out).unwrap();
        }
        // An extent past a buffer is refused before launch.
        let short = poisoned(&mut s, n);
        let args = vec![
            arg(&bx),
            arg(&short),
            KernelArg::U32(n as u32 + 1),
            KernelArg::F32(a),
        ];
        let e = s.launch("ops/scale".into(), args).unwrap().unwrap_err();
        assert!(
            matches!(e.code, ErrorCode::InvalidArgument),
            "{}",
            e.message
        );
        s.drop(short).unwrap();
        s.drop(bx).unwrap();
    }
    assert!(s.device_fault.is_none());

    let backend = backend().unwrap();
    let broken = |text: String| KernelPack::parse(text.as_bytes()).unwrap();
    let json =
        String::from_utf8(include_bytes!("../../examples/kernels/ops.json").to_vec()).unwrap();
    let e = backend
        .load_pack(
            &spillway_proto::Digest::of(b"syntax"),
            &broken(json.replace("out[i] = a * x[i];", "out[i] = a * ;")),
        )
        .unwrap_err();
    assert!(e.message.contains("NVRTC"), "{}", e.message);
    assert!(e.message.lines().count() <= 1 + spillway_kernels::nvrtc::MAX_LOG_LINES);
    eprintln!(
        "a pack that does not compile: {}",
        e.message.lines().next().unwrap_or("")
    );
    let e = backend
        .load_pack(
            &spillway_proto::Digest::of(b"missing"),
            &broken(json.replace("\"name\": \"scale\"", "\"name\": \"scale2\"")),
        )
        .unwrap_err();
    assert!(
        e.message
            .contains("kernel `scale2` is declared but not in the module"),
        "{}",
        e.message
    );
}

/// Runs the built-in `kernel` on the GPU (`s`) and on the CPU backend with
/// the same buffers (uploaded in order, buffer arguments first) and
/// `scalars` after them, and returns buffer `out` as each left it.
fn on_both(
    s: &mut GuestState,
    kernel: &str,
    buffers: &[&[f32]],
    scalars: &[KernelArg],
    out: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut cpu = GuestState::for_test(1 << 30, None);
    let run = |state: &mut GuestState| {
        let handles: Vec<_> = buffers.iter().map(|b| upload(state, b)).collect();
        let mut args: Vec<KernelArg> = handles.iter().map(arg).collect();
        args.extend(scalars.iter().map(|a| match a {
            KernelArg::F32(v) => KernelArg::F32(*v),
            KernelArg::U32(v) => KernelArg::U32(*v),
            KernelArg::Buf(_) => unreachable!("scalars only"),
        }));
        state.launch(kernel.into(), args).unwrap().unwrap();
        let got = download(state, &handles[out], buffers[out].len());
        for h in handles {
            state.drop(h).unwrap();
        }
        got
    };
    (run(s), run(&mut cpu))
}

/// The kernels the example language model needs, on shapes like its own
/// and larger ones: every output element written and within the tolerance
/// of the CPU reference.
#[test]
fn transformer_kernels_match_the_reference() {
    let Some(mut s) = gpu_state("transformer_kernels_match_the_reference") else {
        return;
    };
    let mut rng = Rng::new();
    let u = KernelArg::U32;
    for (rows, vocab, dim) in [(1u32, 256u32, 64u32), (37, 1000, 300)] {
        let table = rng.f32s((vocab * dim) as usize);
        let mut ids: Vec<f32> = (0..rows).map(|r| ((r * 7919) % vocab) as f32).collect();
        ids[0] = (vocab - 1) as f32;
        let poison = vec![f32::NAN; (rows * dim) as usize];
        let scalars = [u(rows), u(vocab), u(dim)];
        let (gpu, cpu) = on_both(&mut s, "embedding", &[&table, &ids, &poison], &scalars, 2);
        assert_eq!(
            gpu, cpu,
            "embedding {rows}x{dim} of {vocab}: a copy is exact"
        );
        assert!(gpu.iter().all(|v| v.is_finite()));
    }
    for (rows, heads, head_dim, pos0) in
        [(1u32, 4u32, 16u32, 0u32), (5, 8, 64, 100), (3, 2, 256, 7)]
    {
        let x = rng.f32s((rows * heads * head_dim) as usize);
        let scalars = [
            u(rows),
            u(heads),
            u(head_dim),
            u(pos0),
            KernelArg::F32(10_000.0),
        ];
        let (gpu, cpu) = on_both(&mut s, "rope", &[&x], &scalars, 0);
        assert_close(
            &format!("rope {rows}x{heads}x{head_dim} at {pos0}"),
            &gpu,
            &cpu,
        );
    }
    for n in [1usize, 1000, (1 << 20) + 3] {
        let (gate, up) = (rng.f32s(n), rng.f32s(n));
        let poison = vec![f32::NAN; n];
        let (gpu, cpu) = on_both(&mut s, "swiglu", &[&gate, &up, &poison], &[u(n as u32)], 2);
        assert_close(&format!("swiglu n={n}"), &gpu, &cpu);
    }
    // (rows, kv_len, heads, kv_heads, head_dim, pos0): a prompt, one
    // decoded token late in a cache, grouped heads, the longest head, and
    // the most keys a row may see.
    for (rows, kv_len, heads, kv_heads, head_dim, pos0) in [
        (7u32, 16u32, 4u32, 2u32, 16u32, 0u32),
        (1, 128, 4, 2, 16, 100),
        (4, 300, 8, 8, 64, 290),
        (2, 40, 2, 1, 256, 10),
        (1, 8192, 2, 1, 32, 8191),
    ] {
        let q = rng.f32s((rows * heads * head_dim) as usize);
        let (k, v) = (
            rng.f32s((kv_len * kv_heads * head_dim) as usize),
            rng.f32s((kv_len * kv_heads * head_dim) as usize),
        );
        let poison = vec![f32::NAN; q.len()];
        let scale = 1.0 / (head_dim as f32).sqrt();
        let scalars = [
            u(rows),
            u(kv_len),
            u(heads),
            u(kv_heads),
            u(head_dim),
            u(pos0),
            KernelArg::F32(scale),
        ];
        let (gpu, cpu) = on_both(&mut s, "attention", &[&q, &k, &v, &poison], &scalars, 3);
        assert_close(
            &format!(
                "attention {rows} rows over {kv_len} keys, {heads}/{kv_heads} heads of {head_dim} at {pos0}"
            ),
            &gpu,
            &cpu,
        );
    }
    let (src, dst) = (rng.f32s(1000), rng.f32s(5000));
    let (gpu, cpu) = on_both(&mut s, "copy", &[&src, &dst], &[u(700), u(300), u(4100)], 1);
    assert_eq!(gpu, cpu, "copy: exact");
    assert_eq!(&gpu[4100..4800], &src[300..1000]);
}

/// A kernel pack reads a tensor of weights where it lies on the GPU, at a
/// parameter its manifest declares `"access": "read"` (`ops/scale`'s `x`).
#[test]
fn a_pack_reads_a_resident_tensor_in_place() {
    let Some(mut s) = gpu_state("a_pack_reads_a_resident_tensor_in_place") else {
        return;
    };
    s.packs = vec![crate::host_gpu::pack::tests::ops()];
    let values = Rng::new().f32s(1000);
    s.weights = vec![crate::state::JobWeights::for_test("lm", &values)];
    let w = s.weights("lm".into(), "w".into()).unwrap();
    assert!(!s.writable(Resource::new_borrow(w.rep())));
    let out = poisoned(&mut s, 1000);
    let args = vec![
        arg(&w),
        arg(&out),
        KernelArg::U32(1000),
        KernelArg::F32(3.0),
    ];
    s.launch("ops/scale".into(), args).unwrap().unwrap();
    let want: Vec<f32> = values.iter().map(|v| 3.0 * v).collect();
    assert_close(
        "ops/scale of a resident tensor",
        &download(&mut s, &out, 1000),
        &want,
    );
    assert!(s.weights_loaded > 0, "the tensor was loaded onto the GPU");
    assert!(s.device_fault.is_none());
}

/// A·B (row-major, `m`×`k` by `k`×`n`) through the job's `gemm`.
fn product(s: &mut GuestState, (m, n, k): (usize, usize, usize), a: &[f32], b: &[f32]) -> Vec<f32> {
    let (ba, bb) = (upload(s, a), upload(s, b));
    let bc = poisoned(s, m * n);
    s.gemm(
        m as u32,
        n as u32,
        k as u32,
        1.0,
        Resource::new_borrow(ba.rep()),
        Resource::new_borrow(bb.rep()),
        0.0,
        Resource::new_borrow(bc.rep()),
    )
    .unwrap()
    .unwrap();
    download(s, &bc, m * n)
}

/// A·B on the CPU reference.
fn reference_product((m, n, k): (usize, usize, usize), a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut want = vec![0.0; m * n];
    spillway_kernels::gemm(
        m,
        n,
        k,
        1.0,
        a,
        b,
        0.0,
        &mut want,
        &mut spillway_kernels::Meter::unbounded(),
    )
    .unwrap();
    want
}

/// `tenant`'s pool on the GPU of job state `s`, as the node reports it.
fn pool_of(backend: &CudaBackend, s: &GuestState, tenant: &str) -> spillway_proto::TenantGpuPool {
    let gpu = s.cuda.as_ref().unwrap().device().index;
    let memory = backend.memory();
    let pools = &memory.iter().find(|g| g.gpu == gpu).unwrap().tenants;
    pools.iter().find(|p| p.tenant.0 == tenant).unwrap().clone()
}

/// A job state of `tenant` (with GPU memory `cap`) on a GPU, as the
/// executor makes it: the tenant's pool enforces the cap, its account
/// counts.
fn tenant_state(tenant: &str, cap: Option<u64>) -> Option<GuestState> {
    tenant_state_in(&std::sync::Arc::default(), tenant, cap)
}

/// [`tenant_state`] charging the node's ledger `ledger`.
fn tenant_state_in(
    ledger: &std::sync::Arc<crate::tenant_gpu::TenantGpuLedger>,
    tenant: &str,
    cap: Option<u64>,
) -> Option<GuestState> {
    let backend = backend()?;
    let tenant = spillway_proto::TenantId(tenant.into());
    let account = crate::tenant_gpu::TenantGpuAccount::open(ledger.clone(), tenant, cap);
    let lease = backend.lease_for(&account).expect("a free stream");
    assert_eq!(lease.capped_pool(), cap.is_some());
    let mut s = GuestState::for_test(1 << 30, Some(lease));
    s.tenant_gpu = account;
    Some(s)
}

/// Hard caps: a tenant's buffers come from its own driver memory pool,
/// whose maximum is its cap. Past the cap the node's ledger refuses first
/// (to the byte) and the guest gets `out-of-memory`; asked directly, past
/// the ledger, the driver's pool refuses too. Another tenant's job on the
/// same GPU, at the same time, allocates past that cap and computes on.
/// The node's report shows each pool.
#[test]
fn a_tenant_past_its_cap_is_refused_by_its_pool_while_another_runs_on() {
    const TEST: &str = "a_tenant_past_its_cap_is_refused_by_its_pool_while_another_runs_on";
    let Some(backend) = backend() else {
        eprintln!("skipped {TEST}: no CUDA driver or GPU on this machine");
        return;
    };
    const MIB: u64 = 1 << 20;
    const CAP: u64 = 64 * MIB;
    let sixteen_mib = (16 * MIB / 4) as u32; // f32 elements
    let mut acme = tenant_state("acme-cap", Some(CAP)).unwrap();
    let mut globex = tenant_state("globex-uncapped", None).unwrap();
    // Another tenant's job is running: it holds a buffer with data in it.
    let values = Rng::new().f32s(1 << 16);
    let kept = upload(&mut globex, &values);

    let mut held = Vec::new();
    let refused = loop {
        match acme.create(sixteen_mib) {
            Ok(b) => held.push(b),
            Err(e) => break e,
        }
        assert!(held.len() <= 4, "a 64 MiB cap let a fifth 16 MiB buffer in");
    };
    assert_out_of_memory(
        &refused,
        &[
            "exceeds tenant acme-cap's GPU memory on this host",
            "67108864",
        ],
    );
    assert_eq!(held.len(), 4, "16 MiB buffers in a 64 MiB cap");
    // The driver's pool holds the same line under the ledger: 64 MiB is
    // a whole number of its chunks.
    let lease = acme.cuda.as_ref().unwrap();
    let past = lease.alloc::<f32>(sixteen_mib as usize).unwrap_err();
    assert!(past.out_of_memory && past.over_cap, "{}", past.message);
    assert!(
        past.message
            .contains("tenant acme-cap's GPU memory cap of 67108864 bytes")
            && past.message.contains("the driver refused"),
        "{}",
        past.message
    );
    assert!(acme.device_fault.is_none());

    // The other tenant, at the same time, on the same GPU: past acme's
    // cap, and its earlier data intact.
    let mut big = Vec::new();
    for _ in 0..8 {
        big.push(globex.create(sixteen_mib).unwrap());
    }
    assert_close(
        "the other tenant's buffer",
        &download(&mut globex, &kept, values.len()),
        &values,
    );
    let square = &values[..64 * 64];
    let dims = (64, 64, 64);
    assert_close(
        "the other tenant's gemm",
        &product(&mut globex, dims, square, square),
        &reference_product(dims, square, square),
    );

    // The node's report: acme's pool at its cap, globex's without one.
    let acme_pool = pool_of(backend, &acme, "acme-cap");
    assert_eq!(acme_pool.cap_bytes, Some(CAP));
    assert!(
        acme_pool.used_bytes >= held.len() as u64 * 16 * MIB,
        "{acme_pool:?}"
    );
    assert!(acme_pool.reserved_bytes <= CAP, "{acme_pool:?}");
    let globex_pool = pool_of(backend, &globex, "globex-uncapped");
    assert_eq!(globex_pool.cap_bytes, None);
    // Its 8 buffers, and the 32 MiB cuBLAS workspace its gemm took from
    // its pool.
    assert!(
        globex_pool.used_bytes >= 8 * 16 * MIB + 32 * MIB,
        "{globex_pool:?}"
    );

    // Freed, the room comes back to acme.
    for b in held.drain(..) {
        acme.drop(b).unwrap();
    }
    acme.cuda.as_ref().unwrap().synchronize().unwrap();
    for _ in 0..4 {
        held.push(acme.create(sixteen_mib).unwrap());
    }
    assert!(acme.device_fault.is_none() && globex.device_fault.is_none());
}

/// A tenant's products get their cuBLAS workspace from its pool when its
/// cap has room, and run without one (same results) when it has not.
#[test]
fn a_gemm_takes_its_workspace_from_the_tenants_pool_or_goes_without() {
    const TEST: &str = "a_gemm_takes_its_workspace_from_the_tenants_pool_or_goes_without";
    let Some(backend) = backend() else {
        eprintln!("skipped {TEST}: no CUDA driver or GPU on this machine");
        return;
    };
    let mut rng = Rng::new();
    let dims @ (m, n, k) = (96usize, 80usize, 112usize);
    let (a, b) = (rng.f32s(m * k), rng.f32s(k * n));
    let want = reference_product(dims, &a, &b);
    for (tenant, cap, workspace) in [
        ("tiny-cap", Some(4u64 << 20), false),
        ("wide-cap", Some(256u64 << 20), true),
    ] {
        let mut s = tenant_state(tenant, cap).unwrap();
        assert_close(tenant, &product(&mut s, dims, &a, &b), &want);
        let pool = pool_of(backend, &s, tenant);
        assert_eq!(pool.used_bytes >= 32 << 20, workspace, "{tenant}: {pool:?}");
        assert!(s.device_fault.is_none());
    }
}

/// A tenant's bytes in two of its pools (here, pools made for two caps:
/// a job under an earlier cap still runs while one under the new cap
/// starts; on a node with several GPUs, its pools on each) together stay
/// within the cap: the node's ledger refuses what would take the sum past
/// it, though the new pool has room in the driver.
#[test]
fn a_tenants_pools_together_stay_within_its_cap() {
    const TEST: &str = "a_tenants_pools_together_stay_within_its_cap";
    if backend().is_none() {
        eprintln!("skipped {TEST}: no CUDA driver or GPU on this machine");
        return;
    }
    const MIB: u64 = 1 << 20;
    let sixteen_mib = (16 * MIB / 4) as u32; // f32 elements
    let ledger = std::sync::Arc::default();
    let mut earlier = tenant_state_in(&ledger, "acme-two-pools", Some(64 * MIB)).unwrap();
    let mut later = tenant_state_in(&ledger, "acme-two-pools", Some(48 * MIB)).unwrap();
    let _held = [
        earlier.create(sixteen_mib).unwrap(),
        earlier.create(sixteen_mib).unwrap(),
    ];
    // 32 MiB in the earlier pool; the later one has room for 48 in the
    // driver, but the tenant for only 16 more.
    let _one = later.create(sixteen_mib).unwrap();
    let refused = later.create(sixteen_mib).unwrap_err();
    assert_out_of_memory(
        &refused,
        &["exceeds tenant acme-two-pools's GPU memory on this host"],
    );
    assert!(later.device_fault.is_none());
}

/// `refused` is `out-of-memory` and its message says each of `says`.
fn assert_out_of_memory(refused: &GpuError, says: &[&str]) {
    assert!(
        matches!(refused.code, ErrorCode::OutOfMemory),
        "{}",
        refused.message
    );
    for words in says {
        assert!(refused.message.contains(words), "{}", refused.message);
    }
}

/// A job's cuBLAS workspace is charged to its tenant on the node's ledger
/// as well as in its pool, so the cap holds across pools (a node's GPUs):
/// with room, the first product charges it; where the tenant's other pool
/// leaves no room under the cap, the product runs without one, correctly.
#[test]
fn a_tenants_cublas_workspace_is_charged_to_its_ledger() {
    const TEST: &str = "a_tenants_cublas_workspace_is_charged_to_its_ledger";
    if backend().is_none() {
        eprintln!("skipped {TEST}: no CUDA driver or GPU on this machine");
        return;
    }
    const MIB: u64 = 1 << 20;
    let workspace = crate::cuda::CUBLAS_WORKSPACE_BYTES as u64;
    let product = |s: &mut GuestState| {
        let (a, b) = (
            upload(s, &[1.0, 2.0, 3.0, 4.0]),
            upload(s, &[5.0, 6.0, 7.0, 8.0]),
        );
        let c = poisoned(s, 4);
        s.gemm(2, 2, 2, 1.0, borrow(&a), borrow(&b), 0.0, borrow(&c))
            .unwrap()
            .unwrap();
        assert_eq!(download(s, &c, 4), [19.0, 22.0, 43.0, 50.0]);
        [a, b, c]
    };
    let tenant = spillway_proto::TenantId("acme-workspace".into());
    let ledger = std::sync::Arc::default();
    let mut roomy = tenant_state_in(&ledger, "acme-workspace", Some(64 * MIB)).unwrap();
    let _held = product(&mut roomy);
    assert_eq!(ledger.held(&tenant), 3 * 16 + workspace);
    drop(roomy);
    assert_eq!(ledger.held(&tenant), 0, "given back with the job");

    // 32 MiB in a pool made for a 64 MiB cap; under a 48 MiB cap the
    // later job's pool has room for a workspace, the tenant does not.
    let sixteen_mib = (16 * MIB / 4) as u32;
    let mut earlier = tenant_state_in(&ledger, "acme-workspace", Some(64 * MIB)).unwrap();
    let _earlier = [
        earlier.create(sixteen_mib).unwrap(),
        earlier.create(sixteen_mib).unwrap(),
    ];
    let mut later = tenant_state_in(&ledger, "acme-workspace", Some(48 * MIB)).unwrap();
    let _later = product(&mut later);
    assert_eq!(ledger.held(&tenant), 32 * MIB + 3 * 16);
    assert!(later.device_fault.is_none());
}

fn borrow(b: &Resource<Buffer>) -> Resource<Buffer> {
    Resource::new_borrow(b.rep())
}
