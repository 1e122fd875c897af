//! In-kernel benchmarks of the read-side primitives (`--mode bench`).
//!
//! Measured the way Linux's refscale measures, so the rows compare with
//! its figures: `n` CPUs (1, 2, 4, 8, ... up to the CPUs online) start
//! together on a barrier; each times its own loop of `loops` pairs with
//! interrupts off, on the TSC; a run's figure is the readers' summed time
//! divided by readers x loops, in ns per pair. Each configuration runs
//! `runs` times; the table shows the minimum and the median.
//!
//! Then latencies, as p50/p99/max over many samples: the rcu-sched grace
//! period, percpu_ref `switch_to_atomic_sync` and kill-to-release (plain
//! and confirmed), SRCU `synchronize` and `synchronize_expedited`, idle and
//! with readers hammering on every other CPU.
//!
//! Then the cost of many refs (issue 21): bytes per ref (shared heap and
//! per-CPU, by kind) and the time to create and destroy one as the number
//! of live refs grows, on lines of their own (`refmem:` and
//! `refalloc:`, each with a `-table:` form).
//!
//! Every loop body goes through `black_box`, and the `floor` row (a per-CPU
//! inc+dec through GS) is checked to be above zero by the bench test, so an
//! optimised-away loop would show.
#![deny(unsafe_code)]

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use refcnt::kref::Kref;
use refcnt::percpu_ref::{Flags, Mode, PercpuRef};

use crate::arch::percpu::{self, IrqGuard};
use crate::arch::{smp, time};
use crate::println;
use crate::sync::backend::Kernel;

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long each reader's loop runs.
    pub length: Length,
    /// Runs per configuration.
    pub runs: usize,
}

/// How long each reader's timed loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// This many pairs, whatever they cost (smoke tests, short runs).
    Loops(u64),
    /// About this many milliseconds: the pairs per run are calibrated for
    /// every case and CPU count. With a fixed pair count a cheap case runs
    /// shorter than an expensive one, and under TCG with more vCPUs than
    /// host cores a longer loop is more often descheduled by the host
    /// mid-run, which the TSC counts: rows would then be inflated
    /// unevenly. Equal durations inflate them alike, as refscale's
    /// calibrated runs inflate Linux's.
    Millis(u64),
}

/// Pairs of a calibration run (well under a run's length: 0.1 to 10 ms).
const CALIBRATION_LOOPS: u64 = 10_000;

impl Length {
    /// Pairs per reader per run for `case` on `cpus` CPUs.
    fn loops(self, world: &Arc<World>, case: fn(&World, u64), cpus: usize) -> u64 {
        match self {
            Length::Loops(n) => n,
            Length::Millis(ms) => {
                let ns = run_once(world, case, cpus, CALIBRATION_LOOPS).max(0.1);
                ((ms as f64 * 1e6 / ns) as u64).max(CALIBRATION_LOOPS)
            }
        }
    }
}

/// Shared state of every case, built once.
struct World {
    floor: percpu::PercpuAlloc,
    shared: AtomicU64,
    /// One counter per CPU, each on its own cache line.
    private: Vec<Padded>,
    kref: Kref,
    pcpu: PercpuRef<Kernel>,
    atomic: PercpuRef<Kernel>,
    dynamic: PercpuRef<Kernel>,
    /// The flavours as type parameters (the flavour test compiles away);
    /// unchecked, as every kernel domain but the misuse tests' (see
    /// `refcnt::srcu::Kind`).
    srcu: refcnt::srcu::Srcu<Kernel, refcnt::srcu::Normal>,
    srcu_fast: refcnt::srcu::Srcu<Kernel, refcnt::srcu::Fast>,
    spin: spin::Mutex<u64>,
    rwlock: spin::RwLock<u64>,
    plain: AtomicU64,
}

#[repr(align(64))]
struct Padded(AtomicU64);

type Case = (&'static str, fn(&World, u64));

/// Runs `pair` `n` times: the timed loop of every case, one copy per case
/// (`pair` is inlined into it), each starting on a 4 KiB page of its own.
/// Under TCG a loop whose code crosses a page boundary cannot chain its
/// translation blocks directly, and every iteration then goes through
/// QEMU's block lookup: the same loop measured 17 or 54 ns a pair
/// depending on where the linker happened to put it. A page-aligned loop
/// of a few hundred bytes stays on one page.
#[rustc_align(4096)]
#[inline(never)]
fn looped<F: Fn(&World)>(w: &World, n: u64, pair: F) {
    for _ in 0..n {
        pair(w);
    }
}

/// The cases, in table order: name and a loop of `n` pairs.
const CASES: &[Case] = &[
    ("plain load (refscale jiffies)", |w, n| {
        looped(w, n, |w| {
            // Relaxed: one plain load, the cheapest read there is.
            black_box(w.plain.load(Ordering::Relaxed));
        })
    }),
    ("floor: per-CPU inc+dec (gs)", |w, n| {
        let off = w.floor.offset();
        looped(w, n, |_| {
            #[allow(unsafe_code)]
            // SAFETY: the word of `w.floor`, which lives as long as `w`.
            unsafe {
                percpu::gs_add(black_box(off), 1);
                percpu::gs_add(black_box(off), u64::MAX);
            }
        })
    }),
    ("lock xadd pair, shared line", |w, n| {
        looped(w, n, |w| {
            // Relaxed: the cost of the locked RMW is what is measured.
            black_box(w.shared.fetch_add(1, Ordering::Relaxed));
            black_box(w.shared.fetch_sub(1, Ordering::Relaxed));
        })
    }),
    ("lock xadd pair, private line", |w, n| {
        let c = &w.private[percpu::cpu_id()].0;
        looped(w, n, |_| {
            black_box(c.fetch_add(1, Ordering::Relaxed));
            black_box(c.fetch_sub(1, Ordering::Relaxed));
        })
    }),
    ("kref get+put", |w, n| {
        looped(w, n, |w| {
            black_box(&w.kref).get();
            black_box(&w.kref).put(|| unreachable!("the bench holds a reference"));
        })
    }),
    ("percpu_ref get+put, per-CPU", |w, n| {
        looped(w, n, |w| {
            black_box(&w.pcpu).get_many(1);
            black_box(&w.pcpu).put_many(1);
        })
    }),
    ("percpu_ref get+put, atomic", |w, n| {
        looped(w, n, |w| {
            black_box(&w.atomic).get_many(1);
            black_box(&w.atomic).put_many(1);
        })
    }),
    ("percpu_ref get+put, dynamic (switched)", |w, n| {
        looped(w, n, |w| {
            black_box(&w.dynamic).get_many(1);
            black_box(&w.dynamic).put_many(1);
        })
    }),
    ("SRCU read_lock+unlock", |w, n| {
        looped(w, n, |w| drop(black_box(black_box(&w.srcu).read_lock())))
    }),
    ("SRCU-fast read_lock+unlock", |w, n| {
        looped(w, n, |w| {
            drop(black_box(black_box(&w.srcu_fast).read_lock()))
        })
    }),
    ("spin::RwLock read+unlock", |w, n| {
        looped(w, n, |w| {
            black_box(*w.rwlock.read());
        })
    }),
    ("spin::Mutex lock+unlock", |w, n| {
        looped(w, n, |w| {
            black_box(*w.spin.lock());
        })
    }),
    ("rcu-sched read lock+unlock (gs inc/dec)", |w, n| {
        looped(w, n, |_| drop(black_box(percpu::sched_read_lock())))
    }),
    ("irq off+on (pushf/cli, popf)", |w, n| {
        looped(w, n, |_| drop(black_box(IrqGuard::new())))
    }),
];

/// One row of results.
pub struct Row {
    /// Case name.
    pub name: &'static str,
    /// CPUs hammering at once.
    pub cpus: usize,
    /// Minimum over runs, ns per pair.
    pub min_ns: f64,
    /// Median over runs, ns per pair.
    pub median_ns: f64,
}

/// Runs `case` on CPUs `0..cpus` at once; returns ns per pair per reader.
fn run_once(world: &Arc<World>, case: fn(&World, u64), cpus: usize, loops: u64) -> f64 {
    let ready = Arc::new(AtomicUsize::new(0));
    let total_ticks = Arc::new(AtomicU64::new(0));
    let body = {
        let (world, ready, total) = (world.clone(), ready.clone(), total_ticks.clone());
        move || {
            // AcqRel/Acquire: a barrier; every reader starts when all are in.
            ready.fetch_add(1, Ordering::AcqRel);
            while ready.load(Ordering::Acquire) < cpus {
                core::hint::spin_loop();
            }
            let irq = IrqGuard::new();
            let start = time::rdtsc_ordered();
            case(&world, loops);
            let ticks = time::rdtsc_ordered() - start;
            drop(irq);
            total.fetch_add(ticks, Ordering::AcqRel);
        }
    };
    let workers: Vec<_> = smp::online()
        .skip(1)
        .take(cpus - 1)
        .map(|c| crate::sched::spawn_job(c, body.clone()))
        .collect();
    body();
    for w in workers {
        assert!(w.join(600_000), "a bench reader did not finish");
    }
    let ns = time::ticks_to_ns(total_ticks.load(Ordering::Acquire));
    ns as f64 / (cpus as f64 * loops as f64)
}

fn build_world() -> World {
    let cpus = percpu::possible_cpus();
    let dynamic = PercpuRef::<Kernel>::new(|| {}, Flags::DYNAMIC).expect("per-CPU memory");
    // Make it hot so it switches itself, as the seed's patch would.
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
        floor: percpu::alloc_percpu(8).expect("per-CPU memory"),
        shared: AtomicU64::new(0),
        private: (0..cpus).map(|_| Padded(AtomicU64::new(0))).collect(),
        kref,
        pcpu: PercpuRef::new(|| {}, Flags::empty()).expect("per-CPU memory"),
        atomic: PercpuRef::new(|| {}, Flags::INIT_ATOMIC).expect("per-CPU memory"),
        dynamic,
        srcu: refcnt::srcu::Srcu::new().expect("per-CPU memory"),
        srcu_fast: refcnt::srcu::Srcu::new().expect("per-CPU memory"),
        spin: spin::Mutex::new(0),
        rwlock: spin::RwLock::new(0),
        plain: AtomicU64::new(0),
    }
}

/// CPU counts measured: 1, 2, 4, 8, ... and the number online.
fn cpu_counts() -> Vec<usize> {
    let online = smp::online_cpus();
    let mut counts: Vec<usize> = core::iter::successors(Some(1), |n| Some(n * 2))
        .take_while(|&n| n <= online)
        .collect();
    if counts.last() != Some(&online) {
        counts.push(online);
    }
    counts
}

/// The latency row of an asynchronous grace period with a waiter (the
/// runner's targets find it by this name).
const CALL_SCHED_ROW: &str = "rcu-sched call_sched -> callback, a waiter sleeping on it";

/// Waits until a callback sets `flag`, sleeping as a real waiter would (a
/// spin would hold this CPU from the callback thread on CPU 0, which then
/// runs only when the tick preempts the spin); panics naming `what` after
/// 10 s.
fn sleep_until_set(flag: &core::sync::atomic::AtomicBool, what: &str) {
    let deadline = time::now_ns() + 10_000_000_000;
    crate::sync::wait::wait_until(core::time::Duration::from_micros(100), || {
        flag.load(Ordering::SeqCst) || time::now_ns() > deadline
    });
    assert!(flag.load(Ordering::SeqCst), "{what}: not done in 10 s");
}

/// Percentiles of `samples`, as (p50, p99, max); zeros when there are
/// none. Also the io run's summary's.
pub(crate) fn percentiles(mut samples: Vec<u64>) -> (u64, u64, u64) {
    samples.sort_unstable();
    let at = |q: usize| {
        samples
            .get((samples.len() * q / 100).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    (at(50), at(99), samples.last().copied().unwrap_or(0))
}

/// Times `op` `n` times (ns each).
fn time_each(n: usize, mut op: impl FnMut()) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let t0 = time::now_ns();
            op();
            time::now_ns() - t0
        })
        .collect()
}

/// Grace-period and shutdown latencies, idle and with readers on every
/// other CPU; printed as p50/p99/max in microseconds.
pub fn latencies(samples: usize) {
    use crate::sync::rcu;
    use core::sync::atomic::AtomicBool;
    let n = samples.max(3);
    let mut rows: Vec<(&str, (u64, u64, u64))> = Vec::new();
    rows.push((
        "rcu-sched synchronize_sched, idle",
        percentiles(time_each(n, rcu::synchronize_sched)),
    ));
    let r = PercpuRef::<Kernel>::new(|| {}, Flags::empty()).expect("per-CPU memory");
    rows.push((
        "percpu_ref switch_to_atomic_sync",
        percentiles(time_each(n, || {
            r.switch_to_atomic_sync();
            r.switch_to_percpu();
        })),
    ));
    for (name, confirm) in [
        ("percpu_ref kill -> release (kill)", false),
        ("percpu_ref kill -> release (kill_and_confirm)", true),
    ] {
        let released = Arc::new(AtomicBool::new(false));
        let flag = released.clone();
        let r =
            PercpuRef::<Kernel>::new(move || flag.store(true, Ordering::SeqCst), Flags::empty())
                .expect("per-CPU memory");
        let few = (n / 10).max(3);
        let times = time_each(few, || {
            released.store(false, Ordering::SeqCst);
            if confirm {
                r.kill_and_confirm(|| {});
            } else {
                r.kill();
            }
            sleep_until_set(&released, name);
            r.resurrect();
        });
        rows.push((name, percentiles(times)));
    }
    // An asynchronous grace period that a waiter sleeps on (issue 21): from
    // `call_sched` to the waiter woken by its callback.
    let fired = Arc::new(AtomicBool::new(false));
    let times = time_each((n / 10).max(3), || {
        fired.store(false, Ordering::SeqCst);
        let f = fired.clone();
        <Kernel as refcnt::Backend>::call_sched(alloc::boxed::Box::new(move || {
            f.store(true, Ordering::SeqCst);
            <Kernel as refcnt::Backend>::wake_waiters();
        }));
        sleep_until_set(&fired, CALL_SCHED_ROW);
    });
    rows.push((CALL_SCHED_ROW, percentiles(times)));
    let srcu = refcnt::srcu::Srcu::<Kernel>::new().expect("per-CPU memory");
    rows.push((
        "SRCU synchronize, idle",
        percentiles(time_each(n, || srcu.synchronize().unwrap())),
    ));
    rows.push((
        "SRCU synchronize_expedited, idle",
        percentiles(time_each(n, || srcu.synchronize_expedited().unwrap())),
    ));
    // Readers on every other CPU, back to back. The rows are timed only
    // once every reader runs: measured right after the spawns, they caught
    // the readers starting or not, run to run (SRCU p50 4 us in one run,
    // 15 ms in the next, on one kernel).
    let srcu = Arc::new(srcu);
    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(core::sync::atomic::AtomicUsize::new(0));
    let readers: Vec<_> = smp::online()
        .skip(1)
        .map(|cpu| {
            let (srcu, stop, running) = (srcu.clone(), stop.clone(), running.clone());
            crate::sched::spawn_job(cpu, move || {
                // Relaxed: only counted, then waited for below.
                running.fetch_add(1, Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) {
                    drop(black_box(srcu.read_lock()));
                }
            })
        })
        .collect();
    let want = readers.len();
    assert!(
        smp::wait_for(10_000, || running.load(Ordering::Relaxed) == want),
        "bench: only {} of {want} readers started in 10 s",
        running.load(Ordering::Relaxed)
    );
    rows.push((
        "SRCU synchronize, readers on every CPU",
        percentiles(time_each(n, || srcu.synchronize().unwrap())),
    ));
    rows.push((
        "rcu-sched synchronize_sched, readers on every CPU",
        percentiles(time_each(n, rcu::synchronize_sched)),
    ));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join(10_000), "a reader did not stop");
    }
    println!("latency-table: | latency (us) | p50 | p99 | max |");
    println!("latency-table: |---|---:|---:|---:|");
    for (name, (p50, p99, max)) in rows {
        println!(
            "latency: {name} | p50={:.1} | p99={:.1} | max={:.1}",
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            max as f64 / 1e3
        );
        println!(
            "latency-table: | {name} | {:.1} | {:.1} | {:.1} |",
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            max as f64 / 1e3
        );
    }
}

/// Runs every case at every CPU count and prints the table.
pub fn run(config: Config) -> Vec<Row> {
    let world = Arc::new(build_world());
    let counts = cpu_counts();
    let length = match config.length {
        Length::Loops(n) => alloc::format!("{n} pairs"),
        Length::Millis(ms) => {
            alloc::format!("about {ms} ms (pairs calibrated per case and CPU count)")
        }
    };
    println!(
        "bench: {length} per reader per run, {} runs per setting, cases round-robin; clock: TSC calibrated against the PIT ({} kHz); ns per pair per reader",
        config.runs,
        time::tsc_khz()
    );
    let mut rows = Vec::new();
    for &cpus in &counts {
        // Round-robin: run r of every case, then run r + 1 of every case.
        // A slow spell of the host (other vCPUs, other tenants) then lands
        // on several rows' samples rather than on all of one row's, so the
        // medians of rows measured side by side stay comparable.
        let loops: Vec<u64> = CASES
            .iter()
            .map(|&(_, case)| config.length.loops(&world, case, cpus))
            .collect();
        let mut samples: Vec<Vec<f64>> = (0..CASES.len()).map(|_| Vec::new()).collect();
        for _ in 0..config.runs.max(1) {
            for ((&(_, case), s), &n) in CASES.iter().zip(&mut samples).zip(&loops) {
                s.push(run_once(&world, case, cpus, n));
            }
        }
        for (&(name, _), mut s) in CASES.iter().zip(samples) {
            s.sort_by(f64::total_cmp);
            let row = Row {
                name,
                cpus,
                min_ns: s[0],
                median_ns: s[s.len() / 2],
            };
            println!(
                "bench: {name} | cpus={cpus} | min={:.2} | median={:.2}",
                row.min_ns, row.median_ns
            );
            rows.push(row);
        }
    }
    print_table(&rows, &counts);
    latencies(config.runs * 40);
    ref_memory();
    // A fixed, short pair count is a smoke run (the runner's own tests):
    // up to a thousand live refs there, the whole ladder otherwise.
    ref_alloc_cost(match config.length {
        Length::Loops(_) => 1_000,
        Length::Millis(_) => 100_000,
    });
    rows
}

/// The kinds of ref measured by [`ref_memory`] and [`ref_alloc_cost`].
const KINDS: [(&str, Flags); 3] = [
    ("per-CPU", Flags::empty()),
    ("atomic (INIT_ATOMIC)", Flags::INIT_ATOMIC),
    ("idle DYNAMIC", Flags::DYNAMIC),
];

/// Bytes per ref of each kind: 1000 refs are made and the kernel heap's
/// and the per-CPU region's usage read before and after (the handles sit
/// in a vector reserved beforehand, so their own bytes are added from
/// their size). The heap's figure leaves out per-CPU chunks backed during
/// the measurement. Per-CPU bytes are per CPU; the total multiplies by
/// the CPUs that have an area.
pub fn ref_memory() {
    const M: usize = 1000;
    let cpus = percpu::possible_cpus();
    let handle = size_of::<PercpuRef<Kernel>>();
    println!("refmem-table: | ref kind ({cpus} CPUs) | shared bytes (heap + handle) | per-CPU bytes, each CPU | per-CPU bytes, all CPUs | total bytes per ref |");
    println!("refmem-table: |---|---:|---:|---:|---:|");
    for (name, flags) in KINDS {
        let mut refs: Vec<PercpuRef<Kernel>> = Vec::with_capacity(M);
        let (heap0, _) = crate::mem::heap::usage();
        let pc0 = percpu::usage();
        for _ in 0..M {
            refs.push(PercpuRef::new(|| {}, flags).expect("per-CPU memory"));
        }
        let (heap1, _) = crate::mem::heap::usage();
        let pc1 = percpu::usage();
        let chunks = (pc1.size - pc0.size) * cpus;
        let shared = (heap1 - heap0 - chunks) as f64 / M as f64 + handle as f64;
        let each = (pc1.used - pc0.used) as f64 / M as f64;
        let all = each * cpus as f64;
        println!(
            "refmem: {name} | cpus={cpus} | shared={shared:.1} | percpu_each={each:.1} | percpu_all={all:.1} | total={:.1}",
            shared + all
        );
        println!(
            "refmem-table: | {name} | {shared:.0} | {each:.0} | {all:.0} | {:.0} |",
            shared + all
        );
        drop(refs);
    }
}

/// Create + destroy of one ref (ns, p50 and mean of 2000) with 10, 10^3,
/// 10^4 and 10^5 refs of the same kind alive: the per-CPU allocator's cost
/// must not grow with the number of refs. The live refs are made in one
/// go (so the allocators' free lists hold no holes between them); the
/// `fragmented` column is the same after every other live ref is dropped,
/// which leaves a hole per dropped ref in both allocators (first-fit over
/// an address-ordered hole list). Counts above `most` are left out.
pub fn ref_alloc_cost(most: usize) {
    const SAMPLES: usize = 2000;
    let kinds = [KINDS[0], KINDS[2]];
    println!("refalloc-table: | live refs | per-CPU ref p50 (ns) | mean | fragmented p50 | mean | idle DYNAMIC ref p50 | mean | fragmented p50 | mean |");
    println!("refalloc-table: |---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for live in [10usize, 1_000, 10_000, 100_000]
        .into_iter()
        .filter(|&n| n <= most)
    {
        let mut cells = alloc::format!("| {live} |");
        for (name, flags) in kinds {
            let mut refs: Vec<PercpuRef<Kernel>> = (0..live)
                .map(|_| PercpuRef::new(|| {}, flags).expect("per-CPU memory"))
                .collect();
            let one = || {
                drop(black_box(
                    PercpuRef::<Kernel>::new(|| {}, flags).expect("per-CPU memory"),
                ))
            };
            // Warm up (a first growth of the region is not what we time).
            (0..100).for_each(|_| one());
            let mut cols = Vec::new();
            for fragmented in [false, true] {
                if fragmented {
                    let mut i = 0;
                    refs.retain(|_| {
                        i += 1;
                        i % 2 == 0
                    });
                }
                let t = time_each(SAMPLES, one);
                let mean = t.iter().sum::<u64>() as f64 / t.len() as f64;
                let (p50, _, _) = percentiles(t);
                println!(
                    "refalloc: {name} create+destroy | live={} | fragmented={fragmented} | p50={p50} | mean={mean:.0}",
                    refs.len()
                );
                cols.push((p50, mean));
            }
            for (p50, mean) in cols {
                let _ = write!(cells, " {p50} | {mean:.0} |");
            }
            drop(refs);
        }
        println!("refalloc-table: {cells}");
    }
}

fn print_table(rows: &[Row], counts: &[usize]) {
    let mut header = String::from("| primitive (median ns per pair) |");
    let mut rule = String::from("|---|");
    for c in counts {
        let _ = write!(header, " {c} cpu{} |", if *c == 1 { "" } else { "s" });
        rule.push_str("---:|");
    }
    println!("bench-table: {header}");
    println!("bench-table: {rule}");
    for &(name, _) in CASES {
        let mut line = alloc::format!("| {name} |");
        for &c in counts {
            if let Some(r) = rows.iter().find(|r| r.name == name && r.cpus == c) {
                let _ = write!(line, " {:.1} |", r.median_ns);
            }
        }
        println!("bench-table: {line}");
    }
}
