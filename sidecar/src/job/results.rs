//! Async jobs' records, on the host that accepted them (their origin,
//! which their id names: see [`origin_of`]): running (with the handle that
//! cancels the job), then done (its view kept for a time-to-live within a
//! byte budget, oldest first out), then expired (a tombstone, so a late
//! reader hears "expired", not "unknown").
//!
//! Records live in the origin sidecar's memory. Any host answers for one
//! by asking the origin over QUIC (`PeerRequest::AsyncJob`), so a result
//! is readable at every host while its origin is up; if the origin's
//! sidecar restarts, its records (and the jobs it was running) are gone.
//!
//! Time is passed in; what a view holds is the HTTP side's (`http::jobs`).

pub(crate) use crate::peer::JobMiss;
use serde_json::Value;
use spillway_proto::{JobId, TenantId};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bits of a job id that name the host that accepted it.
const ORIGIN_BITS: u32 = 24;

/// A new job id for a job accepted by host `origin`: the host in its top
/// 24 bits, 104 random bits below.
pub(crate) fn new_job_id(origin: u64) -> JobId {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    let random = u128::from_le_bytes(bytes) & ((1u128 << (128 - ORIGIN_BITS)) - 1);
    let origin = u128::from(origin) & ((1u128 << ORIGIN_BITS) - 1);
    JobId((origin << (128 - ORIGIN_BITS)) | random)
}

/// The host that accepted `job`.
pub(crate) fn origin_of(job: JobId) -> u64 {
    (job.0 >> (128 - ORIGIN_BITS)) as u64
}

enum State {
    Running {
        view: Value,
        cancel: tokio::task::AbortHandle,
    },
    Done {
        view: Value,
        bytes: usize,
        at: Instant,
    },
    Expired,
}

struct Record {
    tenant: TenantId,
    state: State,
}

/// Tombstones kept at most (the oldest forgotten first).
const MAX_TOMBSTONES: usize = 100_000;

#[derive(Default)]
struct Store {
    records: HashMap<JobId, Record>,
    /// Done jobs, oldest first.
    done: VecDeque<JobId>,
    tombstones: VecDeque<JobId>,
    bytes: usize,
}

/// This host's async jobs.
pub(crate) struct Results {
    store: Mutex<Store>,
    ttl: Duration,
    max_bytes: usize,
}

impl std::fmt::Debug for Results {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Results")
            .field("ttl", &self.ttl)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl Results {
    pub(crate) fn new(ttl: Duration, max_bytes: usize) -> Self {
        Self {
            store: Mutex::default(),
            ttl,
            max_bytes,
        }
    }

    /// Records a job that started: `view` is what a reader sees while it
    /// runs, `cancel` stops it.
    pub(crate) fn start(
        &self,
        job: JobId,
        tenant: TenantId,
        view: Value,
        cancel: tokio::task::AbortHandle,
    ) {
        let mut store = self.store.lock().expect("results lock");
        store.records.insert(
            job,
            Record {
                tenant,
                state: State::Running { view, cancel },
            },
        );
    }

    /// Records a job's end (unless it was cancelled first).
    pub(crate) fn finish(&self, job: JobId, view: Value, now: Instant) {
        let mut store = self.store.lock().expect("results lock");
        let bytes = view.to_string().len();
        let Some(record) = store.records.get_mut(&job) else {
            return;
        };
        if !matches!(record.state, State::Running { .. }) {
            return;
        }
        record.state = State::Done {
            view,
            bytes,
            at: now,
        };
        store.done.push_back(job);
        store.bytes += bytes;
        self.purge(&mut store, now);
    }

    /// What `tenant` may see of `job`.
    pub(crate) fn get(
        &self,
        job: JobId,
        tenant: &TenantId,
        now: Instant,
    ) -> Result<Value, JobMiss> {
        let mut store = self.store.lock().expect("results lock");
        self.purge(&mut store, now);
        match store.records.get(&job) {
            Some(r) if r.tenant == *tenant => match &r.state {
                State::Running { view, .. } | State::Done { view, .. } => Ok(view.clone()),
                State::Expired => Err(JobMiss::Expired),
            },
            _ => Err(JobMiss::Unknown),
        }
    }

    /// Cancels `job` for `tenant` if it still runs (its task is aborted,
    /// which cancels it wherever it runs; its view becomes `"status":
    /// "cancelled"` with a `cancelled` error, finished at `now_unix_ms`);
    /// what it is now.
    pub(crate) fn cancel(
        &self,
        job: JobId,
        tenant: &TenantId,
        (now, now_unix_ms): (Instant, u64),
    ) -> Result<Value, JobMiss> {
        let mut store = self.store.lock().expect("results lock");
        let running = match store.records.get(&job) {
            Some(r) if r.tenant == *tenant => matches!(r.state, State::Running { .. }),
            _ => return Err(JobMiss::Unknown),
        };
        if running {
            let record = store.records.get_mut(&job).expect("looked up");
            let State::Running { cancel, view } = &record.state else {
                unreachable!("checked running");
            };
            cancel.abort();
            let mut cancelled = view.clone();
            cancelled["status"] = "cancelled".into();
            cancelled["finished_unix_ms"] = now_unix_ms.into();
            cancelled["error"] = serde_json::json!({
                "code": "cancelled",
                "message": "the job was cancelled by a DELETE of it",
                "may_have_run": true,
            });
            let bytes = cancelled.to_string().len();
            record.state = State::Done {
                view: cancelled,
                bytes,
                at: now,
            };
            store.done.push_back(job);
            store.bytes += bytes;
        }
        drop(store);
        self.get(job, tenant, now)
    }

    /// The answer about `job` to `tenant` (this host's routes, and a peer
    /// that asks): its view, after cancelling it when `cancel`.
    pub(crate) fn answer(
        &self,
        job: JobId,
        tenant: &TenantId,
        cancel: bool,
    ) -> Result<Value, JobMiss> {
        let now = Instant::now();
        match cancel {
            true => self.cancel(job, tenant, (now, crate::now_unix_ms())),
            false => self.get(job, tenant, now),
        }
    }

    /// Expires what is past its time or over the budget (oldest first) and
    /// forgets the oldest tombstones past their number.
    fn purge(&self, store: &mut Store, now: Instant) {
        while let Some(&oldest) = store.done.front() {
            let Some(Record {
                state: State::Done { at, bytes, .. },
                ..
            }) = store.records.get(&oldest)
            else {
                store.done.pop_front();
                continue;
            };
            let (at, bytes) = (*at, *bytes);
            if now.duration_since(at) < self.ttl && store.bytes <= self.max_bytes {
                break;
            }
            store.done.pop_front();
            store.bytes -= bytes;
            if let Some(record) = store.records.get_mut(&oldest) {
                record.state = State::Expired;
            }
            store.tombstones.push_back(oldest);
        }
        while store.tombstones.len() > MAX_TOMBSTONES {
            if let Some(gone) = store.tombstones.pop_front() {
                store.records.remove(&gone);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn handle() -> tokio::task::AbortHandle {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { tokio::spawn(std::future::pending::<()>()).abort_handle() })
    }

    #[test]
    fn a_job_id_names_its_origin() {
        for origin in [1, 2, 77, (1 << 24) - 1] {
            let a = new_job_id(origin);
            assert_eq!(origin_of(a), origin);
            assert_ne!(a, new_job_id(origin));
        }
    }

    #[test]
    fn a_result_is_kept_for_its_time_then_expired_and_only_its_tenant_sees_it() {
        let results = Results::new(Duration::from_secs(10), 1 << 20);
        let (job, acme, other) = (JobId(1), TenantId::admin(), TenantId("acme".into()));
        let t0 = Instant::now();
        results.start(job, acme.clone(), json!({"status": "running"}), handle());
        assert_eq!(results.get(job, &acme, t0).unwrap()["status"], "running");
        assert_eq!(results.get(job, &other, t0), Err(JobMiss::Unknown));
        assert_eq!(results.get(JobId(2), &acme, t0), Err(JobMiss::Unknown));
        results.finish(job, json!({"status": "succeeded"}), t0);
        let later = t0 + Duration::from_secs(9);
        assert_eq!(
            results.get(job, &acme, later).unwrap()["status"],
            "succeeded"
        );
        let expired = t0 + Duration::from_secs(10);
        assert_eq!(results.get(job, &acme, expired), Err(JobMiss::Expired));
        assert_eq!(results.get(job, &other, expired), Err(JobMiss::Unknown));
    }

    #[test]
    fn the_budget_pushes_out_the_oldest_results_first() {
        let view = |n: usize| json!({"output": "x".repeat(n)});
        let one = view(100).to_string().len();
        let results = Results::new(Duration::from_secs(3600), 2 * one);
        let (t, now) = (TenantId::admin(), Instant::now());
        for i in 1..=3 {
            results.start(JobId(i), t.clone(), json!({}), handle());
            results.finish(JobId(i), view(100), now);
        }
        assert_eq!(results.get(JobId(1), &t, now), Err(JobMiss::Expired));
        assert!(results.get(JobId(2), &t, now).is_ok());
        assert!(results.get(JobId(3), &t, now).is_ok());
    }

    #[test]
    fn a_cancel_stops_a_running_job_and_leaves_a_done_one() {
        let results = Results::new(Duration::from_secs(60), 1 << 20);
        let (t, now) = (TenantId::admin(), Instant::now());
        let running = handle();
        results.start(
            JobId(1),
            t.clone(),
            json!({"status": "running"}),
            running.clone(),
        );
        let v = results.cancel(JobId(1), &t, (now, 5)).unwrap();
        assert_eq!(v["status"], "cancelled");
        assert_eq!(v["error"]["code"], "cancelled");
        assert_eq!(v["finished_unix_ms"], 5);
        // The task's end after the cancel does not overwrite it.
        results.finish(JobId(1), json!({"status": "failed"}), now);
        assert_eq!(
            results.get(JobId(1), &t, now).unwrap()["status"],
            "cancelled"
        );
        results.start(JobId(2), t.clone(), json!({}), handle());
        results.finish(JobId(2), json!({"status": "succeeded"}), now);
        let v = results.cancel(JobId(2), &t, (now, 5)).unwrap();
        assert_eq!(v["status"], "succeeded");
        let other = TenantId("acme".into());
        assert_eq!(
            results.cancel(JobId(2), &other, (now, 5)),
            Err(JobMiss::Unknown)
        );
    }
}
