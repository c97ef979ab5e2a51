//! Warm instances: fresh, never-run instances of recently used components,
//! made on a background thread before the jobs that will take them.
//!
//! A job of component `D` takes a ready instance of `D` if there is one
//! (and asks for another), or instantiates its own and asks for one, so the
//! next job of `D` finds one ready. Instantiating (pool slots, memory and
//! table set-up, data segments) is then off the job's path: for the
//! smallest GPU job on the CPU backend it was 1.3 of 3.9 µs on the build
//! machine.
//!
//! Isolation is what it is without them: every job still runs in an
//! instance no other job has run in. Only components whose instantiation
//! runs no guest code (no core or component start function; see
//! `start_code::runs_no_code_at_instantiation`) are warmed, so an instance made early
//! is the instance its job would have made. A job gets its own state put in
//! the instance's store before any guest code runs, and an instance whose
//! initial memory is larger than the job's memory limit is not used (the
//! job instantiates cold and fails as it would have).
//!
//! What the pool holds is bounded: at most `budget` instances across all
//! components; the least recently used component gives one up to a newer
//! one, and a component no job has used for [`IDLE`] loses all of its.
//!
//! Not: a cache of instances that ran (an instance is used once), nor a
//! way around the pool's instance limits (the engine is sized for the
//! warm instances as well as the slots).

use crate::artifacts::Prepared;
use crate::bindings::{JobGuest, JobGuestPre};
use crate::state::GuestState;
use spillway_proto::Digest;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store};

/// A component no job used for this long loses its warm instances.
pub(crate) const IDLE: Duration = Duration::from_secs(60);

/// An instance made before its job, with the store it lives in.
pub(crate) struct WarmInstance {
    pub(crate) store: Store<GuestState>,
    pub(crate) guest: JobGuest,
}

impl std::fmt::Debug for WarmInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmInstance")
            .field("initial_memory", &self.initial_memory())
            .finish_non_exhaustive()
    }
}

impl WarmInstance {
    /// The linear memory instantiation created, in bytes, all memories
    /// together.
    pub(crate) fn initial_memory(&self) -> usize {
        self.store.data().limits.linear_bytes
    }
}

/// How many jobs started in a warm instance and how many instantiated
/// their own, since the node started.
#[derive(Debug, Default)]
pub(crate) struct Starts {
    pub(crate) warm: AtomicU64,
    pub(crate) cold: AtomicU64,
}

/// Makes the store a warm instance lives in, before its job is known.
pub(crate) type MakeStore = Box<dyn Fn(&Engine) -> Store<GuestState> + Send + Sync>;

/// The warm instances of a node, and the thread that makes them.
pub(crate) struct WarmPool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state.lock().expect("warm pool lock");
        f.debug_struct("WarmPool")
            .field("budget", &self.shared.budget)
            .field("held", &state.held)
            .field("components", &state.ready.len())
            .finish()
    }
}

struct Shared {
    budget: usize,
    state: Mutex<State>,
    wake: Condvar,
    starts: Starts,
    /// Set (under the lock) while the warmer waits for wishes.
    waiting: AtomicBool,
    /// `state.wanted.len()` and `state.held`, published under the lock
    /// after each change, for [`WarmPool::wake`] and the load reports to
    /// read without it.
    pending: AtomicUsize,
    held: AtomicUsize,
}

impl Shared {
    fn publish(&self, state: &State) {
        self.pending.store(state.wanted.len(), Ordering::Release);
        self.held.store(state.held, Ordering::Release);
    }
}

#[derive(Default)]
struct State {
    ready: HashMap<Digest, Ready>,
    /// Instances asked for, oldest first.
    wanted: VecDeque<(Digest, JobGuestPre<GuestState>)>,
    /// Instances ready, across components.
    held: usize,
    stop: bool,
}

struct Ready {
    instances: Vec<WarmInstance>,
    last_used: Instant,
}

impl WarmPool {
    /// A pool of at most `budget` instances (0: none, no thread).
    pub(crate) fn start(engine: Engine, budget: usize, make_store: MakeStore) -> Self {
        let shared = Arc::new(Shared {
            budget,
            state: Mutex::default(),
            wake: Condvar::new(),
            starts: Starts::default(),
            waiting: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
        });
        let thread = (budget > 0).then(|| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("instance-warmer".into())
                .spawn(move || warmer(&shared, &engine, &make_store))
                .expect("spawn the instance warmer thread")
        });
        Self { shared, thread }
    }

    /// Jobs started warm and cold so far.
    pub(crate) fn starts(&self) -> &Starts {
        &self.shared.starts
    }

    /// Instances ready now, across components.
    pub(crate) fn held(&self) -> usize {
        self.shared.held.load(Ordering::Acquire)
    }

    /// Takes a ready instance of `digest` whose initial memory fits
    /// `memory_limit`, and if `wish`, asks for the next one (made once
    /// [`Self::wake`] is called, after the job's answer). `None`: the job
    /// instantiates its own (counted as a cold start).
    pub(crate) fn take(
        &self,
        digest: &Digest,
        prepared: &Prepared,
        memory_limit: usize,
        wish: bool,
    ) -> Option<WarmInstance> {
        let pre = &prepared.pre;
        if self.shared.budget == 0 || !prepared.warmable {
            self.shared.starts.cold.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut state = self.shared.state.lock().expect("warm pool lock");
        let taken = state.ready.get_mut(digest).and_then(|r| {
            r.last_used = Instant::now();
            r.instances.pop()
        });
        if taken.is_some() {
            state.held -= 1;
            self.shared.publish(&state);
        }
        if wish {
            // Bounded: a warmer that cannot keep up drops the oldest wishes.
            if state.wanted.len() >= self.shared.budget {
                state.wanted.pop_front();
            }
            state.wanted.push_back((*digest, pre.clone()));
            self.shared.publish(&state);
        }
        drop(state);
        match taken {
            Some(w) if w.initial_memory() <= memory_limit => {
                self.shared.starts.warm.fetch_add(1, Ordering::Relaxed);
                Some(w)
            }
            // Too large for this job: its own instantiation will say so.
            _ => {
                self.shared.starts.cold.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Lets the warmer make what was asked for. Called off the job's path.
    /// Waking a thread costs a system call, so this is a no-op while the
    /// warmer is at work (it looks again before it waits) or nothing is
    /// asked for (as on a busy node); it takes no lock.
    pub(crate) fn wake(&self) {
        if self.shared.waiting.load(Ordering::Acquire)
            && self.shared.pending.load(Ordering::Acquire) > 0
        {
            self.shared.wake.notify_one();
        }
    }

    /// Drops every instance of `digest` (its artifact is gone).
    pub(crate) fn forget(&self, digest: &Digest) {
        let mut state = self.shared.state.lock().expect("warm pool lock");
        state.wanted.retain(|(d, _)| d != digest);
        self.shared.publish(&state);
        if let Some(ready) = state.ready.remove(digest) {
            state.held -= ready.instances.len();
            self.shared.publish(&state);
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.shared.state.lock().expect("warm pool lock").stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The warmer thread: makes the instances asked for, within the budget,
/// and drops those of components left idle.
fn warmer(shared: &Shared, engine: &Engine, make_store: &MakeStore) {
    let mut state = shared.state.lock().expect("warm pool lock");
    loop {
        if state.stop {
            return;
        }
        let idle = expire_idle(&mut state);
        if !idle.is_empty() {
            shared.publish(&state);
            drop(state);
            drop(idle);
            state = shared.state.lock().expect("warm pool lock");
            continue;
        }
        let Some((digest, pre)) = state.wanted.pop_front() else {
            shared.waiting.store(true, Ordering::Release);
            state = shared
                .wake
                .wait_timeout(state, IDLE / 4)
                .expect("warm pool lock")
                .0;
            shared.waiting.store(false, Ordering::Release);
            continue;
        };
        shared.publish(&state);
        let evicted = match state.held < shared.budget {
            true => None,
            false => match evict_least_recent(&mut state, &digest) {
                Some(w) => {
                    shared.publish(&state);
                    Some(w)
                }
                // Everything held is this component's: it has enough.
                None => continue,
            },
        };
        drop(state);
        drop(evicted);
        let made = make(engine, make_store, &pre);
        state = shared.state.lock().expect("warm pool lock");
        match made {
            Ok(instance) if !state.stop && state.held < shared.budget => {
                let ready = state.ready.entry(digest).or_insert_with(|| Ready {
                    instances: Vec::new(),
                    last_used: Instant::now(),
                });
                ready.instances.push(instance);
                state.held += 1;
                shared.publish(&state);
            }
            Ok(_) => {}
            Err(e) => {
                // The job that instantiates it will fail the same way;
                // stop asking for this component.
                tracing::debug!(%digest, "warm instantiation failed: {e:#}");
                state.wanted.retain(|(d, _)| *d != digest);
                shared.publish(&state);
            }
        }
    }
}

fn make(
    engine: &Engine,
    make_store: &MakeStore,
    pre: &JobGuestPre<GuestState>,
) -> wasmtime::Result<WarmInstance> {
    let mut store = make_store(engine);
    let guest = pre.instantiate(&mut store)?;
    Ok(WarmInstance { store, guest })
}

/// Removes the instances of components unused for [`IDLE`].
fn expire_idle(state: &mut State) -> Vec<Ready> {
    let now = Instant::now();
    let idle: Vec<Digest> = state
        .ready
        .iter()
        .filter(|(_, r)| now.duration_since(r.last_used) >= IDLE)
        .map(|(d, _)| *d)
        .collect();
    let gone: Vec<Ready> = idle.iter().filter_map(|d| state.ready.remove(d)).collect();
    state.held -= gone.iter().map(|r| r.instances.len()).sum::<usize>();
    gone
}

/// Takes one instance from the least recently used component other than
/// `keep`, if any.
fn evict_least_recent(state: &mut State, keep: &Digest) -> Option<WarmInstance> {
    let victim = *state
        .ready
        .iter()
        .filter(|(d, r)| *d != keep && !r.instances.is_empty())
        .min_by_key(|(_, r)| r.last_used)?
        .0;
    let ready = state.ready.get_mut(&victim)?;
    let instance = ready.instances.pop();
    if ready.instances.is_empty() {
        state.ready.remove(&victim);
    }
    state.held -= usize::from(instance.is_some());
    instance
}
