//! get+put pair cost on the host: per-CPU mode, atomic mode, `Arc`
//! clone+drop, and a plain per-slot inc+dec (the floor), on 1 and 2 threads.
//! A small harness of its own (`harness = false`), no dependencies:
//! `cargo bench -p refcnt --bench pair`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use refcnt::host::Host;
use refcnt::percpu_ref::{Flags, PercpuRef};

#[path = "support/harness.rs"]
mod harness;
use harness::{run, Slot};

fn main() {
    let percpu = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    let atomic = PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap();
    let arc = Arc::new(0u64);
    let slots: Vec<Slot> = (0..2).map(|_| Slot(AtomicUsize::new(0))).collect();
    println!(
        "host: {} membarrier",
        if refcnt::host::uses_membarrier() {
            "with"
        } else {
            "without"
        }
    );
    println!(
        "{:<28} {:>10} {:>10}",
        "ns per get+put pair", "1 thread", "2 threads"
    );
    let row = |name: &str, f: &(dyn Fn(usize) + Sync)| {
        let one = run(1, f);
        let two = run(2, f);
        println!("{name:<28} {one:>10.2} {two:>10.2}");
    };
    row("plain per-slot inc+dec", &|t| {
        let c = &black_box(&slots[t]).0;
        c.store(c.load(Relaxed) + 1, Relaxed);
        let c = &black_box(&slots[t]).0;
        c.store(c.load(Relaxed) - 1, Relaxed);
    });
    row("percpu_ref per-CPU mode", &|_| {
        drop(black_box(&percpu).get())
    });
    row("percpu_ref atomic mode", &|_| {
        drop(black_box(&atomic).get())
    });
    row("Arc clone+drop", &|_| drop(black_box(&arc).clone()));
}
