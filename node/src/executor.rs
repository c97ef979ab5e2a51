//! Runs one job: instantiate from the pool, call `run`, classify the outcome.
//!
//! The executor is synchronous on purpose: a job runs on the calling thread
//! (the server gives each one a blocking thread) and is interrupted by the
//! epoch callback, which checks the job's cancel flag and deadline once per
//! tick. Everything a job can end in is a [`Completion`] or a typed
//! [`Failure`].

use crate::artifacts::ArtifactCache;
use crate::bindings::JobGuest;
use crate::cuda::CudaBackend;
use crate::engine::{self, EpochTicker};
use crate::journal::ExecutionJournal;
use crate::limits::{GuestLimits, LimitExceeded};
use crate::state::{GuestState, JobPack};
use crate::tenant_gpu::{TenantGpuAccount, TenantGpuLedger};
use crate::{NodeConfig, NodeError};
use spillway_proto::{
    Accelerator, Backend, Capabilities, Completion, Digest, Failure, JobId, JobSpec, Refusal,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// How the outside world steers a running job.
pub struct JobControl {
    /// Set to interrupt the job; it ends with `cancelled` within one tick.
    pub cancel: Arc<AtomicBool>,
    /// Receives each chunk the guest emits, with its sequence number.
    pub emit: Box<dyn FnMut(u32, Vec<u8>) + Send>,
}

impl std::fmt::Debug for JobControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobControl")
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

impl JobControl {
    /// A control that is never cancelled and drops emitted chunks.
    pub fn detached() -> Self {
        Self {
            cancel: Arc::new(AtomicBool::new(false)),
            emit: Box::new(|_, _| {}),
        }
    }
}

/// Why the epoch callback stopped a guest.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Interrupted {
    #[error("job cancelled")]
    Cancelled,
    #[error("job deadline reached")]
    Deadline,
}

/// The node's job runner: engine, linker, artifact cache, epoch ticker.
#[derive(Debug)]
pub struct Executor {
    config: NodeConfig,
    engine: Engine,
    cache: ArtifactCache,
    cuda: Option<Arc<CudaBackend>>,
    journal: Option<ExecutionJournal>,
    /// `gpu` buffer bytes each tenant's running jobs hold here.
    tenant_gpu: Arc<TenantGpuLedger>,
    _ticker: EpochTicker,
}

impl Executor {
    /// Builds the engine and opens the artifact cache under `config.dir`.
    pub fn new(config: NodeConfig) -> Result<Self, NodeError> {
        let config = config.validate()?;
        let engine = engine::build(&config)?;
        let mut linker = Linker::<GuestState>::new(&engine);
        JobGuest::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |s| s)
            .map_err(|e| NodeError::Engine(format!("{e:?}")))?;
        let cache = ArtifactCache::open(&config.dir, engine.clone(), linker)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        let cuda = open_cuda(&config).map(Arc::new);
        let journal = match config.execution_journal {
            true => {
                let journal =
                    ExecutionJournal::open(&config.dir).map_err(|source| NodeError::Io {
                        what: "cannot open the execution journal in",
                        path: config.dir.clone(),
                        source,
                    })?;
                tracing::info!(path = %journal.path().display(), "execution journal on");
                Some(journal)
            }
            false => None,
        };
        Ok(Self {
            config,
            engine,
            cache,
            cuda,
            journal,
            tenant_gpu: Arc::default(),
            _ticker: ticker,
        })
    }

    /// `gpu` buffer bytes each tenant's running jobs hold here.
    pub fn tenant_gpu_held(&self) -> Vec<(spillway_proto::TenantId, u64)> {
        self.tenant_gpu.snapshot()
    }

    /// Resolves after a job next takes GPU memory.
    pub async fn tenant_gpu_charged(&self) {
        self.tenant_gpu.charged().await;
    }

    /// What this node offers, for its `Hello`.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            slots: self.config.slots,
            backends: match self.cuda {
                Some(_) => vec![Backend::Cuda, Backend::Cpu],
                None => vec![Backend::Cpu],
            },
            gpus: self.cuda.as_ref().map(|c| c.devices()).unwrap_or_default(),
            max_memory_bytes: self.config.max_memory_bytes,
            epoch_tick_ms: self.config.epoch_tick.as_millis() as u32,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Validates and stores an artifact (see the artifact cache). On a GPU
    /// host a kernel pack is compiled and loaded on every GPU first, so one
    /// that does not build is refused with the compiler's reason.
    pub fn put_artifact(&self, bytes: &[u8]) -> Result<Digest, Failure> {
        self.cache.put(bytes, |digest, pack| match &self.cuda {
            Some(gpus) => gpus
                .load_pack(digest, pack)
                .map_err(|e| Failure::InvalidArtifact { reason: e.message }),
            None => Ok(()),
        })
    }

    /// The bytes of a stored artifact, checked against its digest.
    pub fn artifact_bytes(&self, digest: &Digest) -> Result<Vec<u8>, Failure> {
        self.cache.read(digest)
    }

    /// Artifacts held on disk.
    pub fn resident(&self) -> Vec<Digest> {
        self.cache.resident()
    }

    /// Runs a job to its end on this thread.
    pub fn run(
        &self,
        job: JobId,
        spec: &JobSpec,
        input: Vec<u8>,
        remaining_ms: u64,
        control: JobControl,
    ) -> Result<Completion, Failure> {
        let _span = tracing::info_span!("guest", job = %job, function = %spec.function).entered();
        // Required: a GPU stream now, or the job is refused. Preferred: a
        // stream at the job's first `gpu` call if one is free, else the CPU
        // (so a job that never calls `gpu` holds no GPU and says `cpu`).
        let (cuda, gpu_pool) = match (spec.accelerator, &self.cuda) {
            (Accelerator::None, _) | (Accelerator::Preferred, None) => (None, None),
            (Accelerator::Required, None) => return Err(Refusal::NoAccelerator.into()),
            (Accelerator::Required, Some(gpus)) => {
                let lease = gpus
                    .lease()
                    .ok_or(Refusal::SlotsExhausted { retry_after_ms: 10 })?;
                (Some(lease), None)
            }
            (Accelerator::Preferred, Some(gpus)) => (None, Some(gpus.clone())),
        };
        if remaining_ms == 0 {
            return Err(Failure::DeadlineExceeded {
                deadline_ms: spec.deadline_ms,
            });
        }
        let pre = self.cache.get(&spec.digest)?;
        let packs = spec
            .kernel_packs
            .iter()
            .map(|p| {
                let pack = self.cache.pack(&p.digest)?;
                Ok(JobPack {
                    name: p.name.clone(),
                    digest: p.digest,
                    pack,
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        if let Some(journal) = &self.journal {
            journal
                .record(job, spec, &input)
                .map_err(|e| Failure::Internal {
                    message: format!("the execution journal cannot be written: {e}"),
                })?;
        }
        if let Some(service) = self.config.synthetic_service {
            return crate::synthetic::serve(
                job,
                input,
                service,
                Duration::from_millis(remaining_ms),
                spec.deadline_ms,
                &control.cancel,
                self.config.epoch_tick,
            );
        }
        let memory_limit = match spec.memory_limit_bytes {
            0 => self.config.max_memory_bytes,
            n => n.min(self.config.max_memory_bytes),
        };
        let input = Arc::new(input);
        let started = Instant::now();
        let state = GuestState {
            job,
            input: input.clone(),
            limits: GuestLimits {
                memory_bytes: memory_limit as usize,
                table_elements: self.config.max_table_elements as usize,
            },
            control,
            started,
            deadline: started + Duration::from_millis(remaining_ms),
            emitted: 0,
            max_output: self.config.max_output_bytes,
            chunks: 0,
            table: ResourceTable::new(),
            gpu_bytes: 0,
            gpu_limit: memory_limit,
            tenant_gpu: TenantGpuAccount::open(
                self.tenant_gpu.clone(),
                spec.tenant.clone(),
                spec.tenant_gpu_bytes,
            ),
            gpu_pool,
            cuda,
            packs,
            device_fault: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let s = ctx.data();
            if s.control.cancel.load(Ordering::Relaxed) {
                return Err(wasmtime::Error::new(Interrupted::Cancelled));
            }
            if Instant::now() >= s.deadline {
                return Err(wasmtime::Error::new(Interrupted::Deadline));
            }
            Ok(UpdateDeadline::Continue(1))
        });

        let outcome = pre
            .instantiate(&mut store)
            .and_then(|guest| guest.call_run(&mut store, &input));
        let state = store.data_mut();
        if let Some(lease) = &state.cuda
            && let Err(e) = lease.synchronize()
            && e.poisoned
        {
            state.device_fault.get_or_insert(e.message);
        }
        let exec_us = started.elapsed().as_micros() as u64;
        if let Some(message) = state.device_fault.clone() {
            return Err(Failure::DeviceFault { message });
        }
        let state = store.data();
        match outcome {
            Ok(Ok(output)) => {
                if state.emitted + output.len() as u64 > state.max_output {
                    return Err(Failure::Trap {
                        reason: format!(
                            "output of {} bytes exceeds the limit of {} bytes",
                            state.emitted + output.len() as u64,
                            state.max_output
                        ),
                    });
                }
                Ok(Completion {
                    job,
                    output,
                    exec_us,
                    backend: state.gpu_backend(),
                    gpu: state.cuda.as_ref().map(|lease| lease.device().index),
                })
            }
            Ok(Err(message)) => Err(Failure::GuestError { message }),
            Err(e) => Err(classify(&e, spec, memory_limit)),
        }
    }
}

/// Opens the GPUs the configuration allows; any failure leaves the node
/// CPU-only, loudly.
fn open_cuda(config: &NodeConfig) -> Option<CudaBackend> {
    if config.gpus.as_ref().is_some_and(Vec::is_empty) {
        return None;
    }
    let ptx_dir = config.dir.join("ptx");
    let only = config.gpus.as_deref();
    match CudaBackend::open(&ptx_dir, config.slots, only, config.test_kernels) {
        Ok(backend) => backend,
        Err(e) => {
            tracing::error!("GPUs present but unusable, running CPU-only: {e}");
            None
        }
    }
}

/// Turns a Wasmtime error from instantiate or call into a typed failure.
fn classify(e: &wasmtime::Error, spec: &JobSpec, memory_limit: u64) -> Failure {
    if let Some(i) = e.downcast_ref::<Interrupted>() {
        return match i {
            Interrupted::Cancelled => Failure::Cancelled,
            Interrupted::Deadline => Failure::DeadlineExceeded {
                deadline_ms: spec.deadline_ms,
            },
        };
    }
    if e.downcast_ref::<LimitExceeded>().is_some() {
        return Failure::MemoryLimit {
            limit_bytes: memory_limit,
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return Failure::Trap {
            reason: trap.to_string(),
        };
    }
    Failure::Trap {
        reason: format!("{e:#}"),
    }
}
