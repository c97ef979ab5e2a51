//! Idempotency keys: a request that repeats a key gets the first request's
//! outcome instead of running the job again.
//!
//! A key is scoped to its tenant and remembered on the host that received
//! it (the origin) for a time-to-live, within a byte budget (oldest
//! forgotten first). Each key is bound to a fingerprint of what it was
//! first used for (function and input); the same key for something else is
//! a conflict, never a silent replay. A repeat that arrives while the first
//! is still running waits for it; if the first gives up without an outcome
//! (its client went away, or it never ran), the key is free again and one
//! waiter runs the job.
//!
//! What it is not: cluster-wide. A client that repeats a key at another
//! host is not deduplicated there; clients retry against the same host.
//! This module holds no I/O: the caller decides what an outcome is and
//! whether it is worth remembering.

use spillway_proto::TenantId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The longest key accepted (bytes).
pub(crate) const MAX_KEY_LEN: usize = 255;

/// A key as the client gave it, within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) tenant: TenantId,
    pub(crate) key: String,
}

/// What a key was first used for: a digest of the function and input.
pub(crate) type Fingerprint = [u8; 32];

/// The fingerprint of one request.
pub(crate) fn fingerprint(function: &str, input: &[u8]) -> Fingerprint {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(function.len() as u64).to_le_bytes());
    hasher.update(function.as_bytes());
    hasher.update(input);
    *hasher.finalize().as_bytes()
}

/// Whether `key` is acceptable as an idempotency key: 1 to 255 visible
/// ASCII characters.
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Remembered outcomes, by key.
#[derive(Debug)]
pub(crate) struct Outcomes<T> {
    ttl: Duration,
    max_bytes: usize,
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    entries: HashMap<Key, Entry<T>>,
    /// Finished entries in the order they finished (oldest first), with
    /// the generation that finished, so a stale line is skipped.
    finished: VecDeque<(Key, u64)>,
    bytes: usize,
    next_generation: u64,
}

#[derive(Debug)]
struct Entry<T> {
    fingerprint: Fingerprint,
    generation: u64,
    state: EntryState<T>,
}

#[derive(Debug)]
enum EntryState<T> {
    /// The first request is running; repeats wait on this.
    Running(watch::Receiver<Option<T>>),
    Finished {
        outcome: T,
        weight: usize,
        expires: Instant,
    },
}

/// What a request with a key does.
#[derive(Debug)]
pub(crate) enum Claim<T> {
    /// It is the first: run the job, then `finish` (or drop to give up).
    Run(Running<T>),
    /// The first is still running: wait for its outcome with [`wait`].
    Wait(watch::Receiver<Option<T>>),
    /// The first finished: answer with its outcome.
    Replay(T),
    /// The key was first used for a different function or input.
    Conflict,
}

impl<T: Clone> Outcomes<T> {
    /// Outcomes kept `ttl` after they finish, at most `max_bytes` of them
    /// (as weighed by the caller).
    pub(crate) fn new(ttl: Duration, max_bytes: usize) -> Self {
        Self {
            ttl,
            max_bytes,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                finished: VecDeque::new(),
                bytes: 0,
                next_generation: 0,
            }),
        }
    }

    /// Claims `key` for a request with `fingerprint`.
    pub(crate) fn claim(
        self: &Arc<Self>,
        key: Key,
        fingerprint: Fingerprint,
        now: Instant,
    ) -> Claim<T> {
        let mut inner = self.inner.lock().expect("outcomes lock");
        inner.expire(now);
        if let Some(entry) = inner.entries.get(&key) {
            if entry.fingerprint != fingerprint {
                return Claim::Conflict;
            }
            return match &entry.state {
                EntryState::Running(rx) => Claim::Wait(rx.clone()),
                EntryState::Finished { outcome, .. } => Claim::Replay(outcome.clone()),
            };
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let (tx, rx) = watch::channel(None);
        inner.entries.insert(
            key.clone(),
            Entry {
                fingerprint,
                generation,
                state: EntryState::Running(rx),
            },
        );
        Claim::Run(Running {
            outcomes: Arc::clone(self),
            key,
            generation,
            tx: Some(tx),
        })
    }

    /// Keys remembered (running or finished).
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().expect("outcomes lock").entries.len()
    }
}

impl<T> Inner<T> {
    /// Forgets finished entries past their time, oldest first.
    fn expire(&mut self, now: Instant) {
        while let Some((key, generation)) = self.finished.front() {
            match self.entries.get(key) {
                Some(Entry {
                    generation: g,
                    state: EntryState::Finished { expires, .. },
                    ..
                }) if g == generation => {
                    if *expires > now {
                        break;
                    }
                    self.forget_oldest();
                }
                // Stale line: that entry is gone or was claimed again.
                _ => {
                    self.finished.pop_front();
                }
            }
        }
    }

    /// Forgets the oldest finished entry (if its line is current).
    fn forget_oldest(&mut self) {
        let Some((key, generation)) = self.finished.pop_front() else {
            return;
        };
        if let Some(entry) = self.entries.get(&key)
            && entry.generation == generation
            && let EntryState::Finished { weight, .. } = entry.state
        {
            self.bytes -= weight;
            self.entries.remove(&key);
        }
    }
}

/// The first request's claim on a key. Dropping it without `finish` frees
/// the key (and wakes the waiters, one of which runs the job).
#[derive(Debug)]
pub(crate) struct Running<T> {
    outcomes: Arc<Outcomes<T>>,
    key: Key,
    generation: u64,
    tx: Option<watch::Sender<Option<T>>>,
}

impl<T: Clone> Running<T> {
    /// Records the outcome (weighing `weight` bytes) and hands it to the
    /// waiters.
    pub(crate) fn finish(mut self, outcome: T, weight: usize, now: Instant) {
        let tx = self.tx.take().expect("finished once");
        let outcomes = &self.outcomes;
        let mut inner = outcomes.inner.lock().expect("outcomes lock");
        if let Some(entry) = inner.entries.get_mut(&self.key)
            && entry.generation == self.generation
        {
            entry.state = EntryState::Finished {
                outcome: outcome.clone(),
                weight,
                expires: now + outcomes.ttl,
            };
            inner.bytes += weight;
            inner
                .finished
                .push_back((self.key.clone(), self.generation));
            while inner.bytes > outcomes.max_bytes && !inner.finished.is_empty() {
                inner.forget_oldest();
            }
        }
        drop(inner);
        tx.send_replace(Some(outcome));
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        if self.tx.is_none() {
            return; // finished
        }
        let mut inner = self.outcomes.inner.lock().expect("outcomes lock");
        if inner
            .entries
            .get(&self.key)
            .is_some_and(|e| e.generation == self.generation)
        {
            inner.entries.remove(&self.key);
        }
        // Dropping `tx` now tells the waiters the key is free.
    }
}

/// Waits for the first request's outcome: `Some` when it finished, `None`
/// when it gave up (claim the key again).
pub(crate) async fn wait<T: Clone>(mut rx: watch::Receiver<Option<T>>) -> Option<T> {
    loop {
        if let Some(outcome) = rx.borrow_and_update().clone() {
            return Some(outcome);
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        Key {
            tenant: TenantId::admin(),
            key: k.into(),
        }
    }

    fn outcomes(ttl_ms: u64, max_bytes: usize) -> Arc<Outcomes<&'static str>> {
        Arc::new(Outcomes::new(Duration::from_millis(ttl_ms), max_bytes))
    }

    fn run(claim: Claim<&'static str>) -> Running<&'static str> {
        match claim {
            Claim::Run(r) => r,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn a_repeat_after_the_first_finished_replays_its_outcome() {
        let o = outcomes(60_000, 1 << 20);
        let now = Instant::now();
        let fp = fingerprint("f", b"in");
        run(o.claim(key("a"), fp, now)).finish("first", 5, now);
        assert!(matches!(o.claim(key("a"), fp, now), Claim::Replay("first")));
        // Another key runs.
        assert!(matches!(o.claim(key("b"), fp, now), Claim::Run(_)));
    }

    #[test]
    fn the_same_key_for_other_input_or_function_is_a_conflict() {
        let o = outcomes(60_000, 1 << 20);
        let now = Instant::now();
        run(o.claim(key("a"), fingerprint("f", b"in"), now)).finish("x", 1, now);
        assert!(matches!(
            o.claim(key("a"), fingerprint("f", b"other"), now),
            Claim::Conflict
        ));
        assert!(matches!(
            o.claim(key("a"), fingerprint("g", b"in"), now),
            Claim::Conflict
        ));
        // Length-prefixed: "fi"+"n" is not "f"+"in".
        assert_ne!(fingerprint("fi", b"n"), fingerprint("f", b"in"));
    }

    #[test]
    fn keys_belong_to_their_tenant() {
        let o = outcomes(60_000, 1 << 20);
        let now = Instant::now();
        let fp = fingerprint("f", b"");
        run(o.claim(key("a"), fp, now)).finish("admin's", 1, now);
        let other = Key {
            tenant: TenantId("t2".into()),
            key: "a".into(),
        };
        assert!(matches!(o.claim(other, fp, now), Claim::Run(_)));
    }

    #[test]
    fn outcomes_expire_after_their_ttl() {
        let o = outcomes(1_000, 1 << 20);
        let now = Instant::now();
        let fp = fingerprint("f", b"");
        run(o.claim(key("a"), fp, now)).finish("old", 1, now);
        let later = now + Duration::from_millis(999);
        assert!(matches!(o.claim(key("a"), fp, later), Claim::Replay("old")));
        let expired = now + Duration::from_millis(1_000);
        assert!(matches!(o.claim(key("a"), fp, expired), Claim::Run(_)));
    }

    #[test]
    fn the_byte_budget_forgets_the_oldest_first() {
        let o = outcomes(60_000, 10);
        let now = Instant::now();
        let fp = fingerprint("f", b"");
        for (k, out) in [("a", "1"), ("b", "2"), ("c", "3")] {
            run(o.claim(key(k), fp, now)).finish(out, 4, now);
        }
        // 12 bytes > 10: "a" went.
        assert_eq!(o.len(), 2);
        assert!(matches!(o.claim(key("b"), fp, now), Claim::Replay("2")));
        assert!(matches!(o.claim(key("c"), fp, now), Claim::Replay("3")));
        assert!(matches!(o.claim(key("a"), fp, now), Claim::Run(_)));
    }

    #[tokio::test]
    async fn a_repeat_while_running_waits_for_the_first_outcome() {
        let o = outcomes(60_000, 1 << 20);
        let now = Instant::now();
        let fp = fingerprint("f", b"");
        let first = run(o.claim(key("a"), fp, now));
        let Claim::Wait(rx) = o.claim(key("a"), fp, now) else {
            panic!("expected Wait");
        };
        let waiter = tokio::spawn(wait(rx));
        first.finish("done", 1, now);
        assert_eq!(waiter.await.unwrap(), Some("done"));
    }

    #[tokio::test]
    async fn a_first_that_gives_up_frees_the_key_for_a_waiter() {
        let o = outcomes(60_000, 1 << 20);
        let now = Instant::now();
        let fp = fingerprint("f", b"");
        let first = run(o.claim(key("a"), fp, now));
        let Claim::Wait(rx) = o.claim(key("a"), fp, now) else {
            panic!("expected Wait");
        };
        let waiter = tokio::spawn(wait(rx));
        drop(first);
        assert_eq!(waiter.await.unwrap(), None);
        // The waiter claims again and runs it.
        let second = run(o.claim(key("a"), fp, now));
        second.finish("second", 1, now);
        assert!(matches!(
            o.claim(key("a"), fp, now),
            Claim::Replay("second")
        ));
    }

    #[test]
    fn a_stale_claim_does_not_touch_a_newer_entry() {
        let o = outcomes(1_000, 1 << 20);
        let now = Instant::now();
        let fp = fingerprint("f", b"");
        run(o.claim(key("a"), fp, now)).finish("old", 1, now);
        let later = now + Duration::from_secs(2);
        let newer = run(o.claim(key("a"), fp, later));
        // Expiring the old line again must not remove the running entry.
        assert!(matches!(o.claim(key("a"), fp, later), Claim::Wait(_)));
        newer.finish("new", 1, later);
        assert!(matches!(o.claim(key("a"), fp, later), Claim::Replay("new")));
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255_bytes() {
        assert!(valid_key("order-42"));
        assert!(valid_key(&"k".repeat(255)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(!valid_key("has space"));
        assert!(!valid_key("naïve"));
    }
}
