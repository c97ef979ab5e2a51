//! What waking a thread that waits on a condition variable costs the
//! waker (lock, notify_one), against the lock alone, and a clock read.
//! Build and run: `rustc -O scripts/notify_cost.rs -o /tmp/notify-cost && /tmp/notify-cost`.
//! docs/benchmarks.md ("Session 20: the watchdog's wake-up") reads it.
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};
fn main() {
    let s = Arc::new((Mutex::new(0u64), Condvar::new()));
    let s2 = s.clone();
    let started = Arc::new(Barrier::new(2));
    let waiter_started = started.clone();
    std::thread::spawn(move || {
        let mut g = s2.0.lock().unwrap();
        waiter_started.wait();
        loop {
            g = s2.1.wait_timeout(g, Duration::from_secs(1)).unwrap().0;
        }
    });
    // The waiter holds the lock until it waits, so the first notify finds
    // it waiting.
    started.wait();
    for round in 0..3 {
        let mut v = Vec::new();
        for _ in 0..20000 {
            // let the waiter go back to sleep
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_micros(20) {}
            let t = Instant::now();
            {
                let mut g = s.0.lock().unwrap();
                *g += 1;
            }
            s.1.notify_one();
            v.push(t.elapsed().as_nanos() as u64);
        }
        v.sort();
        let mut w = Vec::new();
        for _ in 0..20000 {
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_micros(20) {}
            let t = Instant::now();
            {
                let mut g = s.0.lock().unwrap();
                *g += 1;
            }
            w.push(t.elapsed().as_nanos() as u64);
        }
        w.sort();
        println!(
            "round {round}: lock+notify p50 {} ns p90 {}; lock only p50 {} ns",
            v[10000], v[18000], w[10000]
        );
    }
    let t = Instant::now();
    let mut x = 0u128;
    for _ in 0..1_000_000 {
        x += Instant::now().elapsed().as_nanos();
    }
    println!(
        "Instant::now+elapsed: {} ns ({x})",
        t.elapsed().as_nanos() / 1_000_000
    );
}
