//! Runs one job: take a warm instance or instantiate from the pool, call
//! `run`, classify the outcome, answer, then free what the job held.
//!
//! The executor is synchronous on purpose: a job runs on the calling thread
//! (the server gives each one a blocking thread) and is interrupted by the
//! epoch callback, which checks the job's cancel flag and deadline once per
//! tick. Everything a job can end in is a [`Completion`] or a typed
//! [`Failure`].

use crate::artifacts::ArtifactCache;
use crate::bindings::JobGuest;
use crate::cpu_speed::CpuSpeed;
use crate::cuda::CudaBackend;
use crate::engine::{self, EpochTicker};
use crate::guest_log::{LogBudget, SharedLog};
use crate::incoming::{Incoming, Received};
use crate::journal::ExecutionJournal;
use crate::limits::{GuestLimits, LimitExceeded};
use crate::sandbox::{Sandbox, WaitInterrupted};
use crate::state::{GuestState, Interrupted, JobControl, JobPack, JobWeights};
use crate::tenant_gpu::{TenantGpuAccount, TenantGpuLedger};
use crate::warm::WarmPool;
use crate::watchdog::{GpuWatchdog, Overrun, WatchFlags};
use crate::{NodeConfig, NodeError};
use spillway_kernels::KernelPack;
use spillway_proto::{
    Accelerator, Backend, Capabilities, Completion, Digest, Failure, JobId, JobSpec, Refusal,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;

/// How jobs got their instances (see [`Executor::instance_starts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceStarts {
    /// Jobs that started in an instance made ahead of them.
    pub warm: u64,
    /// Jobs that instantiated their own.
    pub cold: u64,
    /// Warm instances ready now.
    pub ready: u32,
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
    /// Instances made ahead of their jobs.
    warm: WarmPool,
    /// Jobs between the start of `run_then` and the end of their teardown.
    in_flight: AtomicU32,
    /// A job asks for a warm instance for the next one only while at most
    /// this many jobs are in flight, itself included: one fewer than the
    /// slots or the cores, whichever is less, but at least 1. A busier
    /// node has no spare core to make it on, and making it on a core a job
    /// needs costs more than it saves (measured: 15% of the no-op
    /// throughput on 2 cores).
    warm_upto: u32,
    /// How fast the CPU backend multiplies here (see `cpu_speed`).
    cpu_speed: CpuSpeed,
    /// Ends the node when a job's GPU work outlives its deadline (GPU
    /// hosts only; see `watchdog`).
    watchdog: Option<GpuWatchdog>,
    _ticker: EpochTicker,
}

impl Executor {
    /// Builds the engine and opens the artifact cache under `config.dir`.
    pub fn new(config: NodeConfig) -> Result<Self, NodeError> {
        let config = config.validate()?;
        if let Some(from) = crate::state_format::open_state_dir(&config.dir)? {
            tracing::info!(
                dir = %config.dir.display(),
                from,
                to = crate::state_format::NODE_FORMAT,
                "node state migrated to this build's format"
            );
        }
        let engine = engine::build(&config)?;
        let mut linker = Linker::<GuestState>::new(&engine);
        JobGuest::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |s| s)
            .and_then(|()| crate::sandbox::add_to_linker(&mut linker, config.epoch_tick))
            .map_err(|e| NodeError::Engine(format!("{e:?}")))?;
        let cache = ArtifactCache::open(
            &config.dir,
            config.own_dir(),
            engine.clone(),
            linker,
            config.compiled_cache,
        )?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        let waiting = GuestLimits::new(
            config.max_memory_bytes as usize,
            config.max_table_elements as usize,
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let warm_upto = config.slots.min(cores).saturating_sub(1).max(1);
        let warm = WarmPool::start(
            engine.clone(),
            config.warm_instances as usize,
            Box::new(move |engine| job_store(engine, GuestState::waiting(waiting))),
        );
        let cuda = open_cuda(&config).map(Arc::new);
        let watchdog = cuda.as_ref().map(|_| {
            GpuWatchdog::start(Arc::new(|overrun: Overrun| {
                tracing::error!(job = %overrun.job, "exiting to stop the job's GPU work");
                crate::end_process_now(spillway_proto::EXIT_GPU_OVERRUN)
            }))
        });
        let cpu_speed = match config.cpu_macs_per_ms {
            Some(n) => CpuSpeed::fixed(n),
            None => {
                let speed = CpuSpeed::measured();
                tracing::debug!(macs_per_ms = speed.macs_per_ms(), "CPU backend measured");
                speed
            }
        };
        let journal = match config.execution_journal {
            true => {
                let journal =
                    ExecutionJournal::open(config.own_dir()).map_err(|source| NodeError::Io {
                        what: "cannot open the execution journal in",
                        path: config.own_dir().to_path_buf(),
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
            warm,
            in_flight: AtomicU32::new(0),
            warm_upto,
            cpu_speed,
            watchdog,
            _ticker: ticker,
        })
    }

    /// What to do when a job's GPU work is still running past its deadline
    /// (see `watchdog`). Only ending the process stops its kernels; the
    /// default exits with [`spillway_proto::EXIT_GPU_OVERRUN`] at once, and
    /// the server answers the job first. Runs on the watchdog's thread.
    pub fn on_gpu_overrun(&self, f: impl Fn(Overrun) + Send + Sync + 'static) {
        if let Some(dog) = &self.watchdog {
            dog.on_overrun(Arc::new(f));
        }
    }

    /// `gpu` buffer bytes each tenant's running jobs hold here.
    /// The frame that reports each tenant's GPU bytes held here, and what
    /// its cap refused.
    pub fn tenant_gpu(&self) -> spillway_proto::FromNode {
        spillway_proto::FromNode::TenantGpu {
            held: self.tenant_gpu.snapshot(),
            refused: self.tenant_gpu.refused(),
        }
    }

    /// Resolves after a job next takes GPU memory.
    pub async fn tenant_gpu_charged(&self) {
        self.tenant_gpu.charged().await;
    }

    /// Jobs that started in a warm instance and jobs that instantiated
    /// their own, since the node started, and the instances ready now.
    pub fn instance_starts(&self) -> InstanceStarts {
        let starts = self.warm.starts();
        InstanceStarts {
            warm: starts.warm.load(Ordering::Relaxed),
            cold: starts.cold.load(Ordering::Relaxed),
            ready: self.warm.held() as u32,
        }
    }

    /// Tensors of weights loaded onto this node's GPUs so far, and the
    /// bytes resident now (both 0 on a CPU-only node, whose jobs read
    /// weights where their files are mapped).
    pub fn resident_weights(&self) -> (u64, u64) {
        self.cuda
            .as_ref()
            .map_or((0, 0), |c| (c.resident_loads(), c.resident_bytes()))
    }

    /// The weights resident on each of this node's GPUs (none on a
    /// CPU-only node), for its load reports.
    pub fn gpu_weights(&self) -> Vec<spillway_proto::GpuWeights> {
        self.cuda
            .as_ref()
            .map_or_else(Vec::new, |c| c.resident_weights())
    }

    /// Each GPU's memory now (empty on the CPU backend).
    pub fn gpu_memory(&self) -> Vec<spillway_proto::GpuMemory> {
        self.cuda.as_ref().map_or_else(Vec::new, |c| c.memory())
    }

    /// Each GPU's memory as the driver said it at most 200 ms ago, for the
    /// load reports sent at each job's start and end (asking the driver
    /// takes a call per GPU and two per tenant's pool).
    pub fn recent_gpu_memory(&self) -> Vec<spillway_proto::GpuMemory> {
        self.cuda
            .as_ref()
            .map_or_else(Vec::new, |c| c.recent_memory())
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
            sharing: self.cuda.as_ref().map(|c| c.sharing()).unwrap_or_default(),
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
        self.cache
            .put(bytes, |digest, pack| self.check_pack(digest, pack))
    }

    /// Begins receiving an artifact in chunks (see `incoming`).
    pub(crate) fn begin_upload(&self, digest: Digest, size: u64) -> Result<Incoming, Failure> {
        self.cache.begin_upload(digest, size)
    }

    /// [`Executor::put_artifact`] for an artifact received in chunks.
    pub(crate) fn put_received(&self, received: Received) -> Result<Digest, Failure> {
        self.cache
            .put_received(received, |digest, pack| self.check_pack(digest, pack))
    }

    fn check_pack(&self, digest: &Digest, pack: &KernelPack) -> Result<(), Failure> {
        match &self.cuda {
            Some(gpus) => gpus
                .load_pack(digest, pack)
                .map_err(|e| Failure::InvalidArtifact { reason: e.message }),
            None => Ok(()),
        }
    }

    /// At most `ARTIFACT_CHUNK` bytes of a stored artifact from `offset`,
    /// and its size; at offset 0 the whole stored copy is checked against
    /// its digest first (a damaged one is discarded).
    pub fn artifact_chunk(&self, digest: &Digest, offset: u64) -> Result<(u64, Vec<u8>), Failure> {
        if offset == 0 {
            self.cache.verify(digest)?;
        }
        self.cache.read_chunk(digest, offset)
    }

    /// Artifacts held on disk.
    pub fn resident(&self) -> Vec<Digest> {
        self.cache.resident()
    }

    /// Runs a job to its end on this thread and returns its outcome.
    pub fn run(
        &self,
        job: JobId,
        spec: &JobSpec,
        input: Vec<u8>,
        remaining_ms: u64,
        control: JobControl,
    ) -> Result<Completion, Failure> {
        let mut outcome = None;
        self.run_then(job, spec, input, remaining_ms, control, |o| {
            outcome = Some(o);
        });
        outcome.expect("run_then delivers every outcome")
    }

    /// Runs a job to its end on this thread, hands its outcome to `deliver`
    /// as soon as it is known, and only then frees what the job held (its
    /// instance, buffers, stream, tenant bytes), before returning. The
    /// answer does not wait for the teardown; whoever counts slots should
    /// count this one taken until `run_then` returns.
    pub fn run_then(
        &self,
        job: JobId,
        spec: &JobSpec,
        input: Vec<u8>,
        remaining_ms: u64,
        control: JobControl,
        deliver: impl FnOnce(Result<Completion, Failure>),
    ) {
        let _span = tracing::info_span!("guest", job = %job, function = %spec.function).entered();
        let _in_flight = InFlight::enter(&self.in_flight);
        // Watched to the end of its teardown: a stream's synchronize there
        // waits on the GPU too.
        let watch = match (&self.watchdog, spec.accelerator) {
            (Some(dog), Accelerator::Required | Accelerator::Preferred) => {
                let remaining = Duration::from_millis(remaining_ms);
                Some(dog.watch(job, remaining, spec.deadline_ms))
            }
            _ => None,
        };
        let flags = watch.as_ref().map(|w| w.flags());
        let (outcome, teardown) = match self.start(job, spec, input, remaining_ms, control, flags) {
            Ok(Started::Guest(started)) => self.finish(job, spec, started),
            Ok(Started::Done(outcome)) => (outcome, None),
            Err(failure) => (Err(failure), None),
        };
        deliver(outcome);
        if let Some(w) = &watch {
            w.answered();
        }
        self.warm.wake();
        drop(teardown);
        drop(watch);
    }

    /// Everything up to a guest ready to call: its stream, artifacts,
    /// state, and instance (warm, or made now).
    fn start(
        &self,
        job: JobId,
        spec: &JobSpec,
        input: Vec<u8>,
        remaining_ms: u64,
        control: JobControl,
        gpu_watch: Option<Arc<WatchFlags>>,
    ) -> Result<Started, Failure> {
        let tenant_gpu = TenantGpuAccount::open(
            self.tenant_gpu.clone(),
            spec.tenant.clone(),
            spec.tenant_gpu_bytes,
        );
        // Required: a GPU stream now, or the job is refused. Preferred: a
        // stream at the job's first `gpu` call if one is free, else the CPU
        // (so a job that never calls `gpu` holds no GPU and says `cpu`).
        let (cuda, gpu_pool) = match (spec.accelerator, &self.cuda) {
            (Accelerator::None, _) | (Accelerator::Preferred, None) => (None, None),
            (Accelerator::Required, None) => return Err(Refusal::NoAccelerator.into()),
            (Accelerator::Required, Some(gpus)) => {
                let lease = gpus
                    .lease_for(&tenant_gpu)
                    .ok_or(Refusal::SlotsExhausted { retry_after_ms: 10 })?;
                if let Some(watch) = &gpu_watch {
                    watch.on_gpu();
                }
                (Some(lease), None)
            }
            (Accelerator::Preferred, Some(gpus)) => (None, Some(gpus.clone())),
        };
        if remaining_ms == 0 {
            return Err(Failure::DeadlineExceeded {
                deadline_ms: spec.deadline_ms,
            });
        }
        let prepared = self
            .cache
            .get(&spec.digest)
            .inspect_err(|_| self.warm.forget(&spec.digest))?;
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
        let weights = spec
            .weights
            .iter()
            .map(|w| {
                Ok(JobWeights {
                    name: w.name.clone(),
                    digest: w.digest,
                    weights: self.cache.weights(&w.digest)?,
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
            return Ok(Started::Done(crate::synthetic::serve(
                job,
                input,
                service,
                Duration::from_millis(remaining_ms),
                spec.deadline_ms,
                &control.cancel,
                self.config.epoch_tick,
            )));
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
            limits: GuestLimits::new(
                memory_limit as usize,
                self.config.max_table_elements as usize,
            ),
            control,
            started,
            deadline: started + Duration::from_millis(remaining_ms),
            emitted: 0,
            max_output: self.config.max_output_bytes,
            chunks: 0,
            table: ResourceTable::new(),
            log: SharedLog::new(
                job,
                LogBudget {
                    lines: self.config.guest_log_lines,
                    bytes: self.config.guest_log_bytes,
                },
            ),
            sandbox: Sandbox::new(),
            tenant_gpu,
            gpu_pool,
            cuda,
            packs,
            weights,
            weights_loaded: 0,
            device_fault: None,
            gpu_watch,
            cpu_speed: self.cpu_speed,
        };
        let (mut store, guest, waiting) =
            match self
                .warm
                .take(&spec.digest, &prepared, memory_limit as usize, {
                    self.in_flight.load(Ordering::Relaxed) <= self.warm_upto
                }) {
                Some(warm) => {
                    let mut store = warm.store;
                    // The job's state goes in before any guest code runs;
                    // the memories instantiation made still count against it.
                    let linear_bytes = store.data().limits.linear_bytes;
                    let waiting = std::mem::replace(store.data_mut(), state);
                    store.data_mut().limits.linear_bytes = linear_bytes;
                    (store, Ok(warm.guest), Some(waiting))
                }
                None => {
                    let mut store = job_store(&self.engine, state);
                    let guest = prepared.pre.instantiate(&mut store);
                    (store, guest, None)
                }
            };
        store.set_epoch_deadline(1);
        Ok(Started::Guest(Box::new(Running {
            store,
            guest,
            input,
            started,
            memory_limit,
            waiting,
        })))
    }

    /// Calls the guest, settles its stream and classifies the outcome;
    /// returns it with what the job holds, to free after the answer.
    fn finish(
        &self,
        job: JobId,
        spec: &JobSpec,
        running: Box<Running>,
    ) -> (Result<Completion, Failure>, Option<Teardown>) {
        let Running {
            mut store,
            guest,
            input,
            started,
            memory_limit,
            waiting,
        } = *running;
        let outcome = guest.and_then(|guest| guest.call_run(&mut store, &input));
        let dropped = store.data().log.finish();
        if dropped > 0 {
            tracing::warn!(job = %job, dropped, "guest log lines dropped over the job's budget");
        }
        // `exit(ok)` (code 0) ends the job as if `run` returned nothing
        // more than what it emitted.
        let outcome = match outcome {
            Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|exit| exit.0 == 0) => {
                Ok(Ok(Vec::new()))
            }
            other => other,
        };
        let state = store.data_mut();
        if let Some(lease) = &state.cuda
            && let Err(e) = lease.synchronize()
            && e.poisoned
        {
            state.device_fault.get_or_insert(e.message);
        }
        let exec_us = started.elapsed().as_micros() as u64;
        let state = store.data();
        let result = if let Some(message) = state.device_fault.clone() {
            Err(Failure::DeviceFault { message })
        } else {
            match outcome {
                Ok(Ok(output)) if state.emitted + output.len() as u64 > state.max_output => {
                    Err(Failure::Trap {
                        reason: format!(
                            "output of {} bytes exceeds the limit of {} bytes",
                            state.emitted + output.len() as u64,
                            state.max_output
                        ),
                    })
                }
                Ok(Ok(output)) => Ok(Completion {
                    job,
                    output,
                    exec_us,
                    backend: state.gpu_backend(),
                    gpu: state.cuda.as_ref().map(|lease| lease.device().index),
                    weights_loaded_bytes: state.weights_loaded,
                    fetched_bytes: 0,
                }),
                Ok(Err(message)) => Err(Failure::GuestError { message }),
                Err(e) => Err(classify(&e, spec, memory_limit)),
            }
        };
        let teardown = Teardown {
            _store: store,
            _waiting: waiting,
        };
        (result, Some(teardown))
    }
}

/// Counts a job in flight until dropped.
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How far [`Executor::start`] got.
enum Started {
    /// A guest ready to call.
    Guest(Box<Running>),
    /// Served without a guest (benchmark mode).
    Done(Result<Completion, Failure>),
}

/// What a finished job holds until its answer is out. Dropping it frees
/// the instance, the job's buffers, its stream and its tenant bytes.
struct Teardown {
    // The store first: buffers go before anything they were charged to.
    _store: Store<GuestState>,
    _waiting: Option<GuestState>,
}

/// A job's store and instance, between instantiation and the call.
struct Running {
    store: Store<GuestState>,
    guest: wasmtime::Result<JobGuest>,
    input: Arc<Vec<u8>>,
    started: Instant,
    memory_limit: u64,
    /// The state a warm instance waited in, dropped with the rest.
    waiting: Option<GuestState>,
}

/// A store for one job (or a warm instance waiting for one): its limits,
/// and the epoch callback that ends it on cancel or deadline.
fn job_store(engine: &Engine, state: GuestState) -> Store<GuestState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| match ctx.data().interruption() {
        Some(why) => Err(wasmtime::Error::new(why)),
        None => Ok(UpdateDeadline::Continue(1)),
    });
    store
}

/// Opens the GPUs the configuration allows; any failure leaves the node
/// CPU-only, loudly.
fn open_cuda(config: &NodeConfig) -> Option<CudaBackend> {
    if config.gpus.as_ref().is_some_and(Vec::is_empty) {
        return None;
    }
    let ptx_dir = config.dir.join("ptx");
    let options = crate::cuda::GpuOptions {
        slots: config.slots,
        only: config.gpus.clone(),
        test_kernels: config.test_kernels,
        compiler: config.kernel_compiler.clone(),
        weights_budget: config.weights_budget_bytes,
    };
    match CudaBackend::open(&ptx_dir, &options) {
        Ok(backend) => backend,
        Err(e) => {
            tracing::error!("GPUs present but unusable, running CPU-only: {e}");
            None
        }
    }
}

/// Turns a Wasmtime error from instantiate or call into a typed failure.
fn classify(e: &wasmtime::Error, spec: &JobSpec, memory_limit: u64) -> Failure {
    let interrupted = e.downcast_ref::<Interrupted>().copied().or_else(|| {
        e.downcast_ref::<WaitInterrupted>().map(|w| match w {
            WaitInterrupted::Cancelled => Interrupted::Cancelled,
            WaitInterrupted::Deadline => Interrupted::Deadline,
        })
    });
    if let Some(i) = interrupted {
        return match i {
            Interrupted::Cancelled => Failure::Cancelled,
            Interrupted::Deadline => Failure::DeadlineExceeded {
                deadline_ms: spec.deadline_ms,
            },
        };
    }
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Failure::GuestExit { code: exit.0 };
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
