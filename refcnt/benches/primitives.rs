//! The kernel bench's read-side pairs, on the host backend (no QEMU), with
//! divan: `cargo bench -p refcnt --bench primitives`.
//!
//! Every pair runs on 1, 2 and 4 threads hammering at once: divan starts
//! the threads of a sample together on a barrier and times each thread's
//! loop of `SAMPLE_SIZE` pairs; the figure is ns per pair per thread
//! (median over samples and threads). A sample is long (100 000 pairs,
//! 0.2 ms and up), so the threads of a sample really overlap rather than
//! running one after another while the others wake from the barrier.
//! Threads are pool threads that live for the whole run, so each keeps its
//! [`Host`] CPU slot.
//!
//! Then latencies (`latency`): SRCU `synchronize` idle and with a reader
//! thread hammering the domain, the host's `synchronize_sched`, and
//! percpu_ref `switch_to_atomic_sync`.
//!
//! With more threads than cores (4 threads on a 2-core machine) the
//! threads time-share: a row whose sample outlasts a scheduler slice (a
//! few ms) then shows the sharing as a higher per-thread figure.
//! Figures move by up to ~1.5 ns between process runs of the same code
//! (ASLR changes which addresses alias modulo 4 KiB); compare rows within
//! one run, or medians over several.
//!
//! Names start with their row number so that divan's alphabetical order is
//! the kernel table's order. `cargo test -p refcnt --benches` runs every
//! benchmark once, as a smoke test.
// A `#[thread_local]` static is the host's `gs:` per-CPU variable: one
// `fs:`-relative instruction, with no accessor function the optimiser
// might leave out of line (as it sometimes does `LocalKey::with` here).
#![feature(thread_local)]

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};

use divan::Bencher;
use refcnt::host::{Host, HostPerCpu};
use refcnt::kref::Kref;
use refcnt::percpu_ref::{Flags, Mode, PercpuRef};
use refcnt::srcu::Srcu;
use refcnt::Backend;

fn main() {
    println!(
        "host backend: {}",
        if refcnt::host::uses_membarrier() {
            "membarrier (readers have compiler fences only)"
        } else {
            "SeqCst fences on both sides (no membarrier)"
        }
    );
    // Measure on a spawned thread rather than on `main`'s: its stack is
    // page-aligned, while the main stack starts at a random offset within
    // a page, which moves the loops' stack slots against the section
    // words modulo 4 KiB from one process run to the next (4K aliasing
    // made the 1-thread rows vary by up to 3x between runs).
    std::thread::Builder::new()
        .name("bench".into())
        .spawn(divan::main)
        .unwrap()
        .join()
        .unwrap();
}

/// A value alone on its cache lines (128 bytes: adjacent-line prefetch).
#[repr(align(128))]
struct Padded<T>(T);

/// Everything the pairs touch, built once.
struct World {
    shared: Padded<AtomicUsize>,
    arc: Arc<u64>,
    kref: Kref,
    percpu: PercpuRef<Host>,
    atomic: PercpuRef<Host>,
    dynamic: PercpuRef<Host>,
    srcu: Srcu<Host>,
    srcu_fast: Srcu<Host>,
    rwlock: spin::RwLock<u64>,
    mutex: spin::Mutex<u64>,
    counters: HostPerCpu,
    bound: Bound,
}

/// A mode word and per-CPU counters, laid out as a percpu_ref's are, for
/// the `bound` row.
struct Bound {
    mode: AtomicUsize,
    counters: HostPerCpu,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let dynamic = PercpuRef::<Host>::new(|| {}, Flags::DYNAMIC).unwrap();
    // Make it hot so it switches itself, as the 2013 patch would.
    for _ in 0..100_000 {
        dynamic.get_many(1);
        dynamic.put_many(1);
    }
    assert_eq!(
        dynamic.stats().mode,
        Mode::PerCpu,
        "the dynamic ref did not switch to per-CPU"
    );
    let kref = Kref::new();
    kref.get(); // a reference the bench never drops
    World {
        shared: Padded(AtomicUsize::new(0)),
        arc: Arc::new(0),
        kref,
        percpu: PercpuRef::new(|| {}, Flags::empty()).unwrap(),
        atomic: PercpuRef::new(|| {}, Flags::INIT_ATOMIC).unwrap(),
        dynamic,
        srcu: Srcu::new().unwrap(),
        srcu_fast: Srcu::new_fast().unwrap(),
        rwlock: spin::RwLock::new(0),
        mutex: spin::Mutex::new(0),
        counters: Host::alloc_percpu(2).unwrap(),
        bound: Bound {
            mode: AtomicUsize::new(0),
            counters: Host::alloc_percpu(1).unwrap(),
        },
    }
});

/// The floor's counter: this thread's own memory, reached through the
/// thread pointer (fs:), as a kernel's per-CPU data is through gs:.
#[thread_local]
static FLOOR: Cell<usize> = Cell::new(0);

/// A counter on a line no other thread writes.
#[thread_local]
static PRIVATE: Padded<AtomicUsize> = Padded(AtomicUsize::new(0));

/// Read-side pairs at 1, 2 and 4 threads; ns per pair per thread.
#[divan::bench_group(threads = [1, 2, 4], sample_size = 1_000_000, sample_count = 20)]
mod pair {
    use super::*;

    /// Plain inc+dec of this thread's own counter: the floor.
    #[divan::bench(name = "01 floor: per-thread inc+dec (fs:)")]
    fn floor(b: Bencher) {
        b.bench(|| {
            let c = black_box(&FLOOR);
            c.set(c.get().wrapping_add(1));
            // Opaque: the decrement cannot be folded into the increment.
            let c = black_box(&FLOOR);
            c.set(c.get().wrapping_sub(1));
        });
    }

    /// `lock xadd` +1 then -1 on one line every thread writes (kref's cost).
    #[divan::bench(name = "02 lock xadd pair, shared line")]
    fn xadd_shared(b: Bencher) {
        let c = &WORLD.shared.0;
        b.bench(|| {
            // Relaxed: the cost of the locked read-modify-write is measured.
            black_box(c.fetch_add(1, Relaxed));
            black_box(c.fetch_sub(1, Relaxed));
        });
    }

    /// The same on a line of the thread's own.
    #[divan::bench(name = "03 lock xadd pair, private line")]
    fn xadd_private(b: Bencher) {
        b.bench(|| {
            let c = &PRIVATE.0;
            // Relaxed: as above, on a line no other thread touches.
            black_box(c.fetch_add(1, Relaxed));
            black_box(c.fetch_sub(1, Relaxed));
        });
    }

    /// `Arc` clone+drop, the std shared count.
    #[divan::bench(name = "04 Arc clone+drop")]
    fn arc(b: Bencher) {
        let a = &WORLD.arc;
        b.bench(|| drop(black_box(black_box(a).clone())));
    }

    /// Kref get+put (with a reference held throughout).
    #[divan::bench(name = "05 kref get+put")]
    fn kref(b: Bencher) {
        let k = &WORLD.kref;
        b.bench(|| {
            black_box(k).get();
            black_box(k).put(|| unreachable!("the bench holds a reference"));
        });
    }

    /// percpu_ref get+put in per-CPU mode.
    #[divan::bench(name = "06 percpu_ref get+put, per-CPU")]
    fn percpu_ref_percpu(b: Bencher) {
        let r = &WORLD.percpu;
        b.bench(|| {
            black_box(r).get_many(1);
            black_box(r).put_many(1);
        });
    }

    /// What every percpu_ref get+put must do at least: test the mode word,
    /// then add to this CPU's counter; here with no read-side section, so
    /// not a correct fast path (a grace period cannot tell that a thread
    /// is between its test and its add). The gap between this row and
    /// row 01 is what any design pays over the floor, whatever keeps the
    /// grace period informed (a section, rseq, a signal).
    #[divan::bench(name = "06b bound: mode test + add, no section (not a correct fast path)")]
    fn bound(b: Bencher) {
        let r = &WORLD.bound;
        b.bench(|| {
            for d in [1, usize::MAX] {
                let r = black_box(r);
                // Relaxed: only the instructions' cost is measured.
                if r.mode.load(Relaxed) & 1 == 0 {
                    Host::this_cpu_add(&r.counters, 0, d);
                }
            }
        });
    }

    /// percpu_ref get+put in atomic mode.
    #[divan::bench(name = "07 percpu_ref get+put, atomic")]
    fn percpu_ref_atomic(b: Bencher) {
        let r = &WORLD.atomic;
        b.bench(|| {
            black_box(r).get_many(1);
            black_box(r).put_many(1);
        });
    }

    /// percpu_ref get+put in dynamic mode, after it switched to per-CPU.
    #[divan::bench(name = "08 percpu_ref get+put, dynamic (switched)")]
    fn percpu_ref_dynamic(b: Bencher) {
        let r = &WORLD.dynamic;
        b.bench(|| {
            black_box(r).get_many(1);
            black_box(r).put_many(1);
        });
    }

    /// SRCU read_lock+unlock, normal flavour (a fence in each).
    #[divan::bench(name = "09 SRCU read_lock+unlock")]
    fn srcu(b: Bencher) {
        let s = &WORLD.srcu;
        b.bench(|| drop(black_box(black_box(s).read_lock())));
    }

    /// SRCU read_lock+unlock, fast flavour (rcu-sched sections instead).
    #[divan::bench(name = "10 SRCU-fast read_lock+unlock")]
    fn srcu_fast(b: Bencher) {
        let s = &WORLD.srcu_fast;
        b.bench(|| drop(black_box(black_box(s).read_lock())));
    }

    /// `spin::RwLock` read lock+unlock.
    #[divan::bench(name = "11 spin::RwLock read+unlock")]
    fn rwlock(b: Bencher) {
        let l = &WORLD.rwlock;
        b.bench(|| black_box(*l.read()));
    }

    /// `spin::Mutex` lock+unlock.
    #[divan::bench(name = "12 spin::Mutex lock+unlock")]
    fn mutex(b: Bencher) {
        let l = &WORLD.mutex;
        b.bench(|| black_box(*l.lock()));
    }

    /// The host backend's read-side section alone (what the kernel's
    /// rcu-sched `gs:` inc/dec is).
    #[divan::bench(name = "13 Host read_lock_sched+drop")]
    fn host_section(b: Bencher) {
        b.bench(|| drop(black_box(Host::read_lock_sched())));
    }

    /// The host backend's `this_cpu_add`, +1 then -1, without a section.
    #[divan::bench(name = "14 Host this_cpu_add +1, -1")]
    fn host_add(b: Bencher) {
        let p = &WORLD.counters;
        b.bench(|| {
            Host::this_cpu_add(black_box(p), 0, 1);
            Host::this_cpu_add(black_box(p), 0, usize::MAX);
        });
    }
}

/// Grace-period latencies on one thread.
#[divan::bench_group(sample_count = 200)]
mod latency {
    use super::*;

    /// SRCU `synchronize`, no reader anywhere.
    #[divan::bench(name = "srcu synchronize, idle")]
    fn srcu_idle(b: Bencher) {
        let s = &WORLD.srcu;
        b.bench_local(|| s.synchronize().unwrap());
    }

    /// SRCU-fast `synchronize` (an rcu-sched grace period per scan), idle.
    #[divan::bench(name = "srcu-fast synchronize, idle")]
    fn srcu_fast_idle(b: Bencher) {
        let s = &WORLD.srcu_fast;
        b.bench_local(|| s.synchronize().unwrap());
    }

    /// Runs `f` while another thread enters and leaves read sections of
    /// `s` in a loop.
    fn with_reader(s: &Srcu<Host>, f: impl FnOnce()) {
        let stop = AtomicBool::new(false);
        std::thread::scope(|t| {
            t.spawn(|| {
                // Relaxed: a stop flag; nothing is published through it.
                while !stop.load(Relaxed) {
                    drop(black_box(s.read_lock()));
                }
            });
            f();
            stop.store(true, Relaxed);
        });
    }

    /// SRCU `synchronize` with a reader thread hammering the domain.
    #[divan::bench(name = "srcu synchronize, a reader thread")]
    fn srcu_busy(b: Bencher) {
        let s = &WORLD.srcu;
        with_reader(s, || b.bench_local(|| s.synchronize().unwrap()));
    }

    /// SRCU-fast `synchronize` with a reader thread hammering the domain.
    #[divan::bench(name = "srcu-fast synchronize, a reader thread")]
    fn srcu_fast_busy(b: Bencher) {
        let s = &WORLD.srcu_fast;
        with_reader(s, || b.bench_local(|| s.synchronize().unwrap()));
    }

    /// The host backend's grace period (membarrier, then a scan).
    #[divan::bench(name = "Host synchronize_sched, idle")]
    fn sched_idle() {
        Host::synchronize_sched();
    }

    /// percpu_ref `switch_to_atomic_sync` (a grace period and a fold),
    /// then back to per-CPU.
    #[divan::bench(name = "percpu_ref switch_to_atomic_sync + switch_to_percpu")]
    fn switch(b: Bencher) {
        let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
        b.bench_local(|| {
            r.switch_to_atomic_sync();
            r.switch_to_percpu();
        });
    }
}
