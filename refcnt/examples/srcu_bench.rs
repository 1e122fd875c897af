//! SRCU cost on the host: the read_lock+read_unlock pair (normal and fast
//! flavours) against a plain per-slot inc+dec and the backend's per-CPU
//! inc+dec, on 1 and 2 threads; then synchronize latency, idle and with a
//! reader thread hammering the domain. No dependencies:
//! `cargo run --release -p refcnt --example srcu_bench`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use refcnt::host::Host;
use refcnt::srcu::Srcu;
use refcnt::Backend;

#[path = "../benches/support/harness.rs"]
mod harness;
use harness::{run, Slot};

/// Median synchronize latency in microseconds over `n` calls.
fn sync_latency(srcu: &Srcu<Host>, n: usize) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            srcu.synchronize().unwrap();
            t0.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

fn main() {
    let normal = Srcu::<Host>::new().unwrap();
    let fast = Srcu::<Host>::new_fast().unwrap();
    let slots: Vec<Slot> = (0..2).map(|_| Slot(AtomicUsize::new(0))).collect();
    let percpu = Host::alloc_percpu(2).unwrap();

    println!("host: membarrier = {}", refcnt::host::uses_membarrier());
    println!("{:<34} {:>9} {:>9}", "pair (ns)", "1 thread", "2 threads");
    let row = |name: &str, f: &(dyn Fn(usize) + Sync)| {
        println!("{:<34} {:>9.2} {:>9.2}", name, run(1, f), run(2, f));
    };
    row("plain slot inc+dec (floor)", &|t| {
        let c = &slots[t].0;
        c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
        black_box(c);
        c.store(c.load(Relaxed).wrapping_sub(1), Relaxed);
    });
    row("Host::this_cpu_add +1/-1", &|_| {
        Host::this_cpu_add(&percpu, 0, 1);
        black_box(&percpu);
        Host::this_cpu_add(&percpu, 1, 1);
    });
    row("srcu normal read_lock+unlock", &|_| {
        let g = normal.read_lock();
        black_box(&g);
    });
    row("srcu fast read_lock+unlock", &|_| {
        let g = fast.read_lock();
        black_box(&g);
    });

    for (name, srcu) in [("normal", &normal), ("fast", &fast)] {
        let idle = sync_latency(srcu, 200);
        let stop = Arc::new(AtomicBool::new(false));
        let busy = std::thread::scope(|s| {
            let stop2 = stop.clone();
            s.spawn(move || {
                while !stop2.load(Relaxed) {
                    let g = srcu.read_lock();
                    black_box(&g);
                }
            });
            let r = sync_latency(srcu, 200);
            stop.store(true, Relaxed);
            r
        });
        println!(
            "synchronize {name:<6} median: idle {idle:>8.1} us, with a reader thread {busy:>8.1} us"
        );
    }
}
