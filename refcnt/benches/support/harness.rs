//! The timing loop shared by the host benchmarks (`benches/pair.rs` and
//! `examples/srcu_bench.rs`), included by both with `#[path]`.

use std::sync::atomic::AtomicUsize;
use std::sync::Barrier;
use std::time::Instant;

/// Calls per thread per measurement.
pub const ITERS: u64 = 20_000_000;

/// A counter alone on its cache lines (128 bytes: adjacent-line prefetch).
#[repr(align(128))]
pub struct Slot(pub AtomicUsize);

/// Runs `f(thread_index)` ITERS times on `threads` threads started
/// together (after a warm-up); the slowest thread's ns per call.
pub fn run(threads: usize, f: impl Fn(usize) + Sync) -> f64 {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    for _ in 0..1000 {
                        f(t);
                    }
                    barrier.wait();
                    let t0 = Instant::now();
                    for _ in 0..ITERS {
                        f(t);
                    }
                    t0.elapsed().as_nanos() as f64 / ITERS as f64
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .fold(0.0, f64::max)
    })
}
