//! SRCU on the kernel backend, on every CPU: readers on all application
//! processors while the boot CPU updates.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use core::time::Duration;

use refcnt::srcu::{Checked, Fast, Flavour, Kind, Normal, Srcu, SrcuError, SrcuPtr};
use refcnt::Backend;

use super::backend::Kernel;
use crate::arch::{smp, time};

/// A value that remembers whether it was dropped: readers check it.
struct Tracked {
    generation: u64,
    alive: Arc<AtomicBool>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.alive.store(false, SeqCst);
    }
}

fn readers_and_updater(flavour: Flavour) {
    let srcu = Arc::new(Srcu::<Kernel>::with_flavour(flavour).unwrap());
    let first = Arc::new(AtomicBool::new(true));
    let ptr = Arc::new(SrcuPtr::new(
        &srcu,
        Tracked {
            generation: 0,
            alive: first,
        },
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let use_after_free = Arc::new(AtomicUsize::new(0));
    let me = crate::arch::cpu_id();
    let readers: Vec<_> = smp::online()
        .filter(|&c| c != me)
        .map(|cpu| {
            let (srcu, ptr, stop) = (srcu.clone(), ptr.clone(), stop.clone());
            let (reads, uaf) = (reads.clone(), use_after_free.clone());
            crate::sched::spawn_job(cpu, move || {
                let mut n = 0u64;
                while !stop.load(SeqCst) {
                    let guard = srcu.read_lock();
                    let value = ptr.read(&guard);
                    let seen = value.generation;
                    // Hold the object a while, as a reader that sleeps
                    // would; it must stay alive until we unlock.
                    if n % 64 == 0 {
                        time::delay_us(200);
                    }
                    if !value.alive.load(SeqCst) || value.generation != seen {
                        uaf.fetch_add(1, SeqCst);
                    }
                    drop(guard);
                    n += 1;
                }
                reads.fetch_add(n, SeqCst);
            })
        })
        .collect();
    // The updater: replace the object over and over; each replace waits for
    // a grace period, so a stream of readers must not starve it. At least
    // 300 ms, and until 5 updates are done or 5 s have gone: with 8 vCPUs
    // on 2 host cores a grace period that needs every CPU's answer can take
    // tens of milliseconds (the host runs each vCPU a quarter of the
    // time), and a starved updater makes no progress at all.
    let started = time::now_ns();
    let mut updates = 0;
    loop {
        let elapsed = time::now_ns() - started;
        if elapsed >= 5_000_000_000 || (elapsed >= 300_000_000 && updates >= 5) {
            break;
        }
        updates += 1;
        let old = ptr
            .replace(Tracked {
                generation: updates,
                alive: Arc::new(AtomicBool::new(true)),
            })
            .expect("replace outside any read section");
        drop(old);
    }
    let completed_before = srcu.completed();
    srcu.synchronize().unwrap();
    assert!(srcu.completed() > completed_before);
    stop.store(true, SeqCst);
    for r in &readers {
        assert!(r.join(10_000), "a reader did not stop");
    }
    assert_eq!(
        use_after_free.load(SeqCst),
        0,
        "a reader saw its object freed"
    );
    assert!(
        updates >= 5,
        "the updater starved: {updates} updates in 5 s"
    );
    crate::println!(
        "srcu {flavour:?}: {updates} updates, {} read sections on {} readers",
        reads.load(SeqCst),
        readers.len()
    );
}

crate::ktest! {
    /// Readers on every other CPU hold objects across delays while the boot
    /// CPU replaces and frees them through synchronize: no reader ever sees
    /// its object freed, and the updater is not starved.
    #[smp(2, 8)]
    #[timeout(120)]
    fn srcu_readers_on_all_cpus_never_see_freed_objects() {
        readers_and_updater(Flavour::Normal);
    }
}

crate::ktest! {
    /// The same with the fast flavour (no full barrier in readers; the
    /// updater pays with rcu-sched grace periods).
    #[smp(2, 8)]
    #[timeout(120)]
    fn srcu_fast_readers_on_all_cpus_never_see_freed_objects() {
        readers_and_updater(Flavour::Fast);
    }
}

crate::ktest! {
    /// Callbacks all run exactly once, after a grace period; barrier waits
    /// for every callback queued before it; synchronize inside a read
    /// section of a checked domain is refused with an error instead of
    /// deadlocking.
    #[smp(1, 8)]
    fn srcu_call_barrier_and_misuse() {
        let srcu = Srcu::<Kernel, Checked<Normal>>::new().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let runs = runs.clone();
            srcu.call(move || {
                runs.fetch_add(1, SeqCst);
            });
        }
        srcu.barrier().unwrap();
        assert_eq!(runs.load(SeqCst), 100);
        time::delay_us(20_000);
        assert_eq!(runs.load(SeqCst), 100, "a callback ran twice");
        let guard = srcu.read_lock();
        assert!(matches!(srcu.synchronize(), Err(SrcuError::SyncInReadSection { .. })));
        drop(guard);
        srcu.synchronize().unwrap();
        let cookie = srcu.start_poll();
        assert!(smp::wait_for(2000, || srcu.poll_state(cookie)));
        assert!(srcu.cleanup().is_ok());
    }
}

/// A reader thread inside a section, started by [`sleeping_reader`].
struct SleepingReader {
    thread: crate::sched::JoinHandle<()>,
    /// [`INSIDE`], [`ASLEEP`] or [`DONE`].
    state: Arc<AtomicU8>,
    /// Completing it starts the reader's 30 ms sleep.
    go: Arc<crate::sched::Completion>,
}

/// A [`SleepingReader`] is in its section, waiting for `go`.
const INSIDE: u8 = 1;
/// It is in its section, in (or about to start) its 30 ms sleep.
const ASLEEP: u8 = 2;
/// It has woken and is about to unlock.
const DONE: u8 = 3;

/// Starts a thread on `cpu` that enters a read section of `srcu`, waits
/// for `go`, sleeps 30 ms, then leaves; returns once it is inside. It
/// stays inside until `go` whatever the host does, so the caller cannot
/// miss the section, nor start its wait after the sleep, because its own
/// vCPU was not run for a while.
fn sleeping_reader<K: Kind>(srcu: &Arc<Srcu<Kernel, K>>, cpu: usize) -> SleepingReader {
    let state = Arc::new(AtomicU8::new(0));
    let go = Arc::new(crate::sched::Completion::new());
    let (s, st, g) = (srcu.clone(), state.clone(), go.clone());
    let thread = crate::sched::spawn_on(cpu, move || {
        let guard = s.read_lock();
        st.store(INSIDE, SeqCst);
        g.wait_for_completion();
        st.store(ASLEEP, SeqCst);
        crate::sched::sleep(Duration::from_millis(30));
        st.store(DONE, SeqCst);
        drop(guard);
    });
    assert!(
        smp::wait_for(1000, || state.load(SeqCst) == INSIDE),
        "the reader never entered its section"
    );
    SleepingReader { thread, state, go }
}

crate::ktest! {
    /// A reader that really sleeps inside its read section (a kernel thread
    /// blocked in `sched::sleep`, its CPU idle meanwhile) holds up
    /// `synchronize` on another CPU until it wakes and unlocks.
    #[smp(2, 8)]
    fn srcu_reader_sleeping_in_its_section_holds_up_synchronize() {
        let srcu = Arc::new(Srcu::<Kernel>::new().unwrap());
        let reader = sleeping_reader(&srcu, 1);
        let t0 = time::now_ns();
        // The reader's 30 ms sleep starts after `t0`.
        reader.go.complete();
        srcu.synchronize().unwrap();
        assert_eq!(reader.state.load(SeqCst), DONE, "synchronize returned while the reader slept in its section");
        assert!(time::now_ns() - t0 >= 30_000_000, "synchronize did not wait for the sleeper");
        reader.thread.join();
    }
}

crate::ktest! {
    /// An updater on the same CPU as a reader that sleeps inside its read
    /// section: `synchronize` is not mistaken for a call from inside the
    /// section (the per-CPU counts include the sleeper's lock; the
    /// per-thread count does not), waits for the reader, and waits by
    /// sleeping (its CPU, with both threads asleep, halts while it waits,
    /// instead of the updater spinning).
    #[smp(1, 2)]
    fn srcu_updater_sleeps_beside_a_sleeping_reader_of_its_cpu() {
        let cpu = smp::online().last().unwrap();
        let srcu = Arc::new(Srcu::<Kernel, Checked<Normal>>::new().unwrap());
        // The updater starts its wait while the reader sleeps. Waiting by
        // sleeping, it leaves the CPU with nothing to run, and the CPU
        // halts in its idle loop; a spinning updater keeps it busy. A host
        // that does not run this vCPU for the reader's 30 ms can make the
        // updater start after the reader woke, or find it woken at its
        // first check: then try again (5 times at most).
        let mut waits = 0;
        for attempt in 1.. {
            let reader = sleeping_reader(&srcu, cpu);
            let (s, st, go) = (srcu.clone(), reader.state.clone(), reader.go.clone());
            let updater = crate::sched::spawn_on(cpu, move || {
                go.complete();
                while st.load(SeqCst) == INSIDE {
                    crate::sched::sleep(Duration::from_millis(1));
                }
                let idle = crate::arch::percpu::idle_seq(cpu);
                let before = st.load(SeqCst);
                let result = s.synchronize();
                let seen = st.load(SeqCst);
                (before, result, seen, crate::arch::percpu::idle_seq(cpu) != idle)
            });
            let (before, result, seen, idled) = updater.join();
            reader.thread.join();
            assert_eq!(result, Ok(()), "synchronize beside a sleeping reader was refused");
            assert_eq!(seen, DONE, "synchronize returned while the reader slept in its section");
            if before == ASLEEP {
                waits += 1;
                if idled {
                    break;
                }
            }
            assert!(
                attempt < 5,
                "the updater spun instead of sleeping: cpu {cpu} never went idle in {waits} waits (of 5 tries) that started while the reader slept"
            );
        }
        // The same thread inside its own section is still refused.
        let guard = srcu.read_lock();
        assert!(matches!(srcu.synchronize(), Err(SrcuError::SyncInReadSection { .. })));
        drop(guard);
    }
}

crate::ktest! {
    /// Issue 18, item 5: a thread inside a section of domain E waits for
    /// domain D while another thread of the same CPU sleeps inside a
    /// section of D. The wait is legal (the waiter holds no section of D)
    /// and must not be refused: the per-CPU counts of D show the other
    /// thread's section, the waiter's own record does not.
    #[smp(1, 2)]
    fn srcu_wait_inside_another_domain_beside_a_reader_of_its_cpu() {
        let cpu = smp::online().last().unwrap();
        let d = Arc::new(Srcu::<Kernel, Checked<Normal>>::new().unwrap());
        let e = Arc::new(Srcu::<Kernel, Checked<Fast>>::new().unwrap());
        let reader = sleeping_reader(&d, cpu);
        let (d2, e2, st, go) = (d.clone(), e.clone(), reader.state.clone(), reader.go.clone());
        let waiter = crate::sched::spawn_on(cpu, move || {
            let _in_e = e2.read_lock();
            go.complete();
            let result = d2.synchronize();
            (result, st.load(SeqCst))
        });
        let (result, seen) = waiter.join();
        reader.thread.join();
        assert_eq!(result, Ok(()), "a legal wait inside another domain's section was refused");
        assert_eq!(seen, DONE, "synchronize returned while the reader slept in its section");
        // Inside its own section of D, the same wait is refused.
        let (d3, e3) = (d.clone(), e.clone());
        let refused = crate::sched::spawn_on(cpu, move || {
            let _in_e = e3.read_lock();
            let _in_d = d3.read_lock();
            d3.synchronize()
        })
        .join();
        assert_eq!(refused, Err(SrcuError::SyncInReadSection { domain: d.id() }));
    }
}

crate::ktest! {
    /// Issue 18, item 7: domains are independent. A reader sleeps inside
    /// a section of `slow`, and `slow`'s callback worker waits for it. On
    /// the same CPU, another domain's callback, a percpu_ref kill and its
    /// release still complete; and the reader itself may wait for that
    /// other domain's callback without deadlocking (the grace-period
    /// worker of `slow` must not hold a worker that others queue behind).
    #[smp(1, 2)]
    #[timeout(60)]
    fn srcu_slow_reader_delays_only_its_domain() {
        use crate::sched::Completion;
        use refcnt::percpu_ref::{Flags, PercpuRef};
        let cpu = smp::online().last().unwrap();
        let slow = Arc::new(Srcu::<Kernel>::new().unwrap());
        let other = Arc::new(Srcu::<Kernel>::new().unwrap());
        let slow_done = Arc::new(Completion::new());
        let other_done = Arc::new(Completion::new());
        let released = Arc::new(Completion::new());
        let inside = Arc::new(AtomicU8::new(0));
        // The reader, on `cpu`: inside `slow`, queue `slow`'s callback
        // (its worker now waits for us), then queue `other`'s and wait for
        // it from inside the section.
        let (s, o, sd, od, st) =
            (slow.clone(), other.clone(), slow_done.clone(), other_done.clone(), inside.clone());
        let reader = crate::sched::spawn_on(cpu, move || {
            let guard = s.read_lock();
            s.call(move || sd.complete());
            crate::sched::sleep(Duration::from_millis(10));
            let od2 = od.clone();
            o.call(move || od2.complete());
            st.store(1, SeqCst);
            let ok = od.wait_for_completion_timeout(Duration::from_secs(5));
            drop(guard);
            ok
        });
        assert!(smp::wait_for(2000, || inside.load(SeqCst) == 1));
        // A percpu_ref killed meanwhile on the same CPU is released.
        let r = released.clone();
        let killed = crate::sched::spawn_on(cpu, move || {
            let r = PercpuRef::<Kernel>::new(move || r.complete(), Flags::empty()).unwrap();
            r.kill();
            r
        })
        .join();
        assert!(
            released.wait_for_completion_timeout(Duration::from_secs(5)),
            "a kill waited behind another domain's slow reader"
        );
        drop(killed);
        assert!(reader.join(), "the reader's wait for another domain deadlocked");
        assert!(
            slow_done.wait_for_completion_timeout(Duration::from_secs(5)),
            "slow's callback never ran"
        );
    }
}

crate::ktest! {
    /// The checking configuration (issue 21): this kernel builds `refcnt`
    /// without the feature `checks`, so a domain not typed `Checked<_>`
    /// leaves the task's record of SRCU sections alone (its reader touches
    /// only its counters: the bench's SRCU rows), while a `Checked<_>`
    /// one records every section and refuses a wait inside it. Whatever the
    /// configuration, the flavour in the type is the domain's.
    #[smp(1)]
    fn srcu_checks_only_where_configured() {
        let depth = || Kernel::with_task_sections(|t| t.depth()).unwrap();
        let plain = Srcu::<Kernel, Fast>::new().unwrap();
        let dynamic = Srcu::<Kernel>::new_fast().unwrap();
        let checked = Srcu::<Kernel, Checked<Fast>>::new().unwrap();
        assert_eq!(plain.flavour(), Flavour::Fast);
        assert_eq!(dynamic.flavour(), Flavour::Fast);
        assert_eq!(checked.flavour(), Flavour::Fast);
        let before = depth();
        {
            let _p = plain.read_lock();
            let _d = dynamic.read_lock();
            let unchecked = if refcnt::srcu::CHECKS { 2 } else { 0 };
            assert_eq!(depth(), before + unchecked, "an unchecked domain recorded its section");
            let _c = checked.read_lock();
            assert_eq!(depth(), before + unchecked + 1, "a checked domain did not record its section");
            assert_eq!(
                checked.synchronize(),
                Err(SrcuError::SyncInReadSection { domain: checked.id() })
            );
            assert_eq!(plain.readers(), 1);
        }
        assert_eq!(depth(), before);
        assert_eq!(plain.readers(), 0);
        plain.synchronize().unwrap();
        checked.synchronize().unwrap();
    }
}

/// An SRCU-fast read section with the flavour in the type, entered and
/// left, out of line for `boot/tests/disassembly.rs`: without the feature
/// `checks` it is two `add gs:[...]` and no interrupts-off window or call
/// (issue 21).
#[inline(never)]
fn srcu_probe_fast_read_section(srcu: &Srcu<Kernel, Fast>) {
    drop(core::hint::black_box(srcu.read_lock()));
}

/// Keeps the probe in the image (nothing else calls it).
#[used]
static SRCU_PROBES: [fn(&Srcu<Kernel, Fast>); 1] = [srcu_probe_fast_read_section];
