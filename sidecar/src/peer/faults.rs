//! Packet faults for chaos tests: a UDP socket wrapped around the QUIC
//! endpoint's real one that drops, duplicates, delays and so reorders the
//! datagrams this host sends. `tc netem` is not available on the machines
//! Spillway is tested on, so the faults live here, compiled in and off
//! unless configured ([`Faults`], `spillway host --chaos-faults`).
//!
//! Only sends are faulted: every host of a chaos run wraps its own socket,
//! so each direction of each link sees its sender's faults. The random
//! choices come from a seeded generator, so a run can be repeated (up to the
//! timing of the tasks that send delayed datagrams).
//!
//! What it is not: a network partition (that is done with namespaces and
//! routes), or anything a production host should run with.

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// What to do to the datagrams a host sends.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Chance (0 to 1) that a datagram is dropped.
    pub loss: f64,
    /// Chance (0 to 1) that a datagram is sent twice.
    pub duplicate: f64,
    /// Every datagram waits this long before it leaves…
    pub delay: Duration,
    /// …plus a random share of this, which reorders datagrams.
    pub jitter: Duration,
    /// Seed of the random choices.
    pub seed: u64,
}

/// A fault specification that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad fault spec {spec:?}: {why} (expected e.g. loss=0.1,dup=0.05,delay=2ms,jitter=5ms,seed=7)"
)]
pub struct FaultsError {
    spec: String,
    why: String,
}

impl FromStr for Faults {
    type Err = FaultsError;

    /// `loss=0.1,dup=0.05,delay=2ms,jitter=5ms,seed=7`; any part may be left
    /// out.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| FaultsError {
            spec: spec.to_owned(),
            why,
        };
        let mut faults = Faults::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
            let chance = || -> Result<f64, FaultsError> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| bad(format!("{key} must be a chance from 0 to 1")))
            };
            let millis = || -> Result<Duration, FaultsError> {
                value
                    .strip_suffix("ms")
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|ms| *ms <= 10_000)
                    .map(Duration::from_millis)
                    .ok_or_else(|| bad(format!("{key} must be whole milliseconds, e.g. 5ms")))
            };
            match key {
                "loss" => faults.loss = chance()?,
                "dup" => faults.duplicate = chance()?,
                "delay" => faults.delay = millis()?,
                "jitter" => faults.jitter = millis()?,
                "seed" => {
                    faults.seed = value
                        .parse()
                        .map_err(|_| bad("seed must be a whole number".into()))?;
                }
                other => return Err(bad(format!("unknown fault {other:?}"))),
            }
        }
        Ok(faults)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss={},dup={},delay={}ms,jitter={}ms,seed={}",
            self.loss,
            self.duplicate,
            self.delay.as_millis(),
            self.jitter.as_millis(),
            self.seed
        )
    }
}

/// Datagrams a faulty socket dropped, duplicated and delayed.
#[derive(Debug, Default)]
pub struct FaultStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub delayed: AtomicU64,
}

/// The real socket with [`Faults`] applied to what it sends.
#[derive(Debug)]
pub(crate) struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    faults: Faults,
    rng: AtomicU64,
    stats: Arc<FaultStats>,
}

impl FaultySocket {
    pub(crate) fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        faults: Faults,
        stats: Arc<FaultStats>,
    ) -> Self {
        Self {
            inner,
            faults,
            // xorshift must not start at 0.
            rng: AtomicU64::new(faults.seed ^ 0x9e37_79b9_7f4a_7c15),
            stats,
        }
    }

    /// A uniform draw from [0, 1).
    fn roll(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        loop {
            let mut next = x;
            next ^= next << 13;
            next ^= next >> 7;
            next ^= next << 17;
            match self
                .rng
                .compare_exchange_weak(x, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (next >> 11) as f64 / (1u64 << 53) as f64,
                Err(current) => x = current,
            }
        }
    }

    /// Sends one copy now or after its delay (a delayed copy that cannot be
    /// sent then is lost, as on a congested link).
    fn send_copy(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let wait = self.faults.delay + self.faults.jitter.mul_f64(self.roll());
        if wait.is_zero() {
            return self.inner.try_send(transmit);
        }
        self.stats.delayed.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        let (destination, ecn, src_ip, segment_size) = (
            transmit.destination,
            transmit.ecn,
            transmit.src_ip,
            transmit.segment_size,
        );
        let contents = transmit.contents.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = inner.try_send(&Transmit {
                destination,
                ecn,
                contents: &contents,
                segment_size,
                src_ip,
            });
        });
        Ok(())
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        if self.roll() < self.faults.loss {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.send_copy(transmit)?;
        if self.roll() < self.faults.duplicate {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            let _ = self.send_copy(transmit);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One datagram per send, so each is dropped or delayed on its own.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        let f: Faults = "loss=0.1,dup=0.05,delay=2ms,jitter=5ms,seed=7"
            .parse()
            .unwrap();
        assert_eq!(
            f,
            Faults {
                loss: 0.1,
                duplicate: 0.05,
                delay: Duration::from_millis(2),
                jitter: Duration::from_millis(5),
                seed: 7,
            }
        );
        assert_eq!(f.to_string().parse::<Faults>().unwrap(), f);
        assert_eq!("".parse::<Faults>().unwrap(), Faults::default());
        for bad in ["loss=2", "dup=x", "delay=5", "jitter=5s", "burst=1", "loss"] {
            assert!(bad.parse::<Faults>().is_err(), "{bad}");
        }
    }
}
