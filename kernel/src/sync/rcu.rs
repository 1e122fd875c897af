//! rcu-sched grace periods.
//!
//! A read-side section is a [`SchedGuard`](crate::arch::percpu::SchedGuard)
//! (a per-CPU nesting count, interrupts left on), a stretch with local
//! interrupts off, or a single instruction; the fast paths of percpu_ref
//! and SRCU-fast are such sections. A grace period asks every CPU for a
//! *quiescent state*: a moment in none of its sections. A CPU asked while
//! in no section reports at once; asked inside one, it reports when the
//! outermost section ends (see `arch::percpu::quiescent_state`). A CPU with
//! interrupts off is not asked until they are back on.
//!
//! - [`synchronize_sched`]: bumps the grace-period number and sends every
//!   other CPU the grace-period IPI; each records the number it saw when it
//!   reports; the caller waits until every online CPU has recorded its
//!   number or a later one. Microseconds when the CPUs are idle or outside
//!   sections, not a tick.
//! - [`call_sched`]: queues a callback with a snapshot of every CPU's
//!   quiescent-state count, which the timer tick also advances (through the
//!   same report). Once every CPU has reported after the snapshot, the
//!   callback is ready. No IPIs; one or two ticks.
//!
//! Ordering: the caller's writes are ordered before the new number (and
//! before the snapshot) by a `SeqCst` fence, and the IPI is sent after that.
//! A report loads the number with `Acquire`, so a CPU that recorded number
//! `n` reported after the writes that preceded `n`, and its sections that
//! begin later see them (on x86 the interrupt return in between is
//! serialising as well). A CPU's section writes precede its report in its
//! own program order, and x86 keeps stores in order, so a waiter that sees
//! the report sees the writes; the waiter's final `SeqCst` fence orders them
//! before what it does next.
//!
//! Ready callbacks run from [`poll_callbacks`], which idle CPUs call after
//! every wakeup (and wait points call, so a single-CPU system makes
//! progress too): never from an interrupt handler and never from inside
//! the caller, so a callback may take locks, spin or wait for another grace
//! period. One CPU drains at a time, so callbacks run in queue order.
//! (Kernel threads exist now (`crate::sched`); a per-CPU work-queue thread
//! for these callbacks is a later step.)

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU64, Ordering};

use spin::Mutex;

use crate::arch::apic::{self, Delivery, Dest};
use crate::arch::percpu::{self, cpu_id, possible_cpus, IrqGuard};
use crate::arch::smp;

crate::percpu! {
    /// Quiescent states reported by this CPU (ticks outside sections and
    /// answered grace-period requests).
    static QUIESCENT: PerCpu<u64> = 0;
    /// The latest grace-period number this CPU has reported for.
    static GP_SEEN: PerCpu<u64> = 0;
    /// Grace periods this CPU has served (reports that advanced `GP_SEEN`).
    pub static GP_SERVED: PerCpu<u64> = 0;
}

/// Number of the latest grace period started.
static GP_SEQ: AtomicU64 = AtomicU64::new(0);

/// This CPU is in no read-side section: say so.
fn report_quiescent() {
    QUIESCENT.add(1);
    // Acquire: pairs with the SeqCst increment in `synchronize_sched`; the
    // writes before that grace period are visible from here on.
    let seq = GP_SEQ.load(Ordering::Acquire);
    if seq > GP_SEEN.get() {
        GP_SEEN.set(seq);
        GP_SERVED.add(1);
    }
}

/// The grace-period IPI handler.
pub fn gp_ipi() {
    percpu::quiescent_state(report_quiescent);
}

/// Called from every CPU's timer tick: a quiescent state, now or at the
/// end of the section the tick interrupted.
pub fn tick() {
    percpu::quiescent_state(report_quiescent);
}

/// Waits until every CPU has left every read-side section it was in when
/// the call began.
///
/// # Panics
/// Inside a read-side section of this CPU: the grace period would wait for
/// the caller itself, forever.
pub fn synchronize_sched() {
    assert!(
        percpu::sched_depth() == 0,
        "synchronize_sched inside an rcu-sched read-side section on cpu {} would wait for itself; end the section (drop the guard) first",
        cpu_id()
    );
    // SeqCst: the caller's writes are visible before the new number is.
    fence(Ordering::SeqCst);
    let seq = GP_SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    let me = cpu_id();
    let others: Vec<usize> = smp::online().filter(|&c| c != me).collect();
    if !others.is_empty() {
        apic::send_ipi(Dest::AllButSelf, Delivery::Fixed(smp::GP_VECTOR));
    }
    for cpu in others {
        while GP_SEEN.read_remote(cpu) < seq {
            // Another CPU may be waiting for us with interrupts off; we are
            // in no section, so answer for ourselves.
            // Interrupts off: the report's read-modify-write of this
            // CPU's words must not interleave with the tick's or with
            // another thread's on this CPU.
            let irq = IrqGuard::new();
            if GP_SEEN.get() < GP_SEQ.load(Ordering::Relaxed) {
                report_quiescent();
            }
            drop(irq);
            core::hint::spin_loop();
        }
    }
    // SeqCst: the ended sections' writes come before what the caller does.
    fence(Ordering::SeqCst);
}

struct Waiting {
    snapshot: Vec<u64>,
    callback: Box<dyn FnOnce() + Send>,
}

static QUEUE: Mutex<VecDeque<Waiting>> = Mutex::new(VecDeque::new());

/// Runs `callback` after a grace period, from an idle CPU or a wait point.
pub fn call_sched(callback: Box<dyn FnOnce() + Send>) {
    // SeqCst: see the module documentation; the snapshot is taken after the
    // caller's writes are visible.
    fence(Ordering::SeqCst);
    let snapshot = (0..possible_cpus())
        .map(|c| QUIESCENT.read_remote(c))
        .collect();
    let _irq = IrqGuard::new();
    QUEUE.lock().push_back(Waiting { snapshot, callback });
}

/// Held by the CPU draining ready callbacks, so they run in order.
static DRAIN: Mutex<()> = Mutex::new(());

/// Callbacks waiting for their grace period.
pub fn pending() -> usize {
    let _irq = IrqGuard::new();
    // A named guard, dropped before `_irq` (a temporary in the tail
    // expression would outlive it, holding the lock with interrupts on).
    let queue = QUEUE.lock();
    queue.len()
}

/// Runs the callbacks whose grace period has ended, unless another CPU is
/// already at it. Call with interrupts on and no locks held.
pub fn poll_callbacks() {
    let Some(_drain) = DRAIN.try_lock() else {
        return;
    };
    loop {
        let ready = {
            let _irq = IrqGuard::new();
            let mut queue = QUEUE.lock();
            let done = queue.front().is_some_and(|w| {
                // Only online CPUs run ticks; offline ones are in no section.
                smp::online().all(|c| QUIESCENT.read_remote(c) > w.snapshot[c])
            });
            if done {
                queue.pop_front()
            } else {
                None
            }
        };
        let Some(waiting) = ready else { return };
        // SeqCst: the ended sections' writes come before the callback.
        fence(Ordering::SeqCst);
        GP_SERVED.add(1);
        (waiting.callback)();
    }
}

crate::ktest! {
    /// A synchronous grace period waits for a section (interrupts off) that
    /// is in progress on another CPU, and every other CPU counts it served.
    #[smp(2, 8)]
    fn synchronize_sched_waits_for_sections_in_progress() {
        use alloc::sync::Arc;
        use core::sync::atomic::{AtomicBool, AtomicU8};
        let served_before: Vec<u64> = smp::online().map(|c| GP_SERVED.read_remote(c)).collect();
        // 0: not started, 1: in the section, 2: section over.
        let state = Arc::new(AtomicU8::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let (s, r) = (state.clone(), release.clone());
        let job = smp::spawn_on(1, move || {
            let guard = IrqGuard::new();
            s.store(1, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            crate::arch::time::delay_us(20_000);
            s.store(2, Ordering::SeqCst);
            drop(guard);
        });
        assert!(smp::wait_for(1000, || state.load(Ordering::SeqCst) == 1));
        release.store(true, Ordering::SeqCst);
        synchronize_sched();
        assert_eq!(state.load(Ordering::SeqCst), 2, "returned while the section was still running");
        assert!(job.join(1000));
        for (i, cpu) in smp::online().enumerate().skip(1) {
            assert!(GP_SERVED.read_remote(cpu) > served_before[i], "cpu {cpu} served no grace period");
        }
    }
}

crate::ktest! {
    /// The same with interrupts on inside the section (a `SchedGuard`):
    /// timer ticks and grace-period IPIs arrive inside it and are deferred
    /// to its end, for synchronous and asynchronous grace periods alike.
    #[smp(2, 8)]
    fn grace_periods_wait_for_sched_guard_sections() {
        use alloc::sync::Arc;
        use core::sync::atomic::{AtomicBool, AtomicU8};
        let state = Arc::new(AtomicU8::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let (s, r) = (state.clone(), release.clone());
        let job = smp::spawn_on(1, move || {
            let outer = percpu::sched_read_lock();
            let inner = percpu::sched_read_lock(); // nested
            s.store(1, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            crate::arch::time::delay_us(30_000); // several ticks, inside
            drop(inner);
            s.store(2, Ordering::SeqCst);
            drop(outer);
        });
        assert!(smp::wait_for(1000, || state.load(Ordering::SeqCst) == 1));
        let callback_saw = Arc::new(AtomicU8::new(0));
        let (st, saw) = (state.clone(), callback_saw.clone());
        call_sched(Box::new(move || saw.store(st.load(Ordering::SeqCst) + 10, Ordering::SeqCst)));
        release.store(true, Ordering::SeqCst);
        synchronize_sched();
        assert_eq!(state.load(Ordering::SeqCst), 2, "returned while the section was still running");
        assert!(job.join(1000));
        assert!(smp::wait_for(2000, || callback_saw.load(Ordering::SeqCst) != 0));
        assert_eq!(callback_saw.load(Ordering::SeqCst), 12, "the callback ran before the section ended");
    }
}

crate::ktest! {
    /// Asynchronous callbacks run once each, in order, after ticks on every
    /// CPU.
    #[smp(1, 8)]
    fn call_sched_runs_callbacks_once_in_order() {
        use alloc::sync::Arc;
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..10 {
            let log = log.clone();
            call_sched(Box::new(move || log.lock().push(i)));
        }
        assert!(smp::wait_for(2000, || log.lock().len() == 10), "ran {} of 10", log.lock().len());
        crate::arch::time::delay_us(20_000);
        assert_eq!(*log.lock(), (0..10).collect::<Vec<_>>());
        assert_eq!(pending(), 0);
    }
}

crate::ktest! {
    /// The read-side count and the owed report: a tick inside nested
    /// sections is not a quiescent state; the outermost exit reports it,
    /// once, and leaves the count at zero.
    #[smp(1)]
    fn tick_inside_a_section_is_reported_at_the_outermost_exit() {
        let _no_real_ticks = IrqGuard::new();
        let before = QUIESCENT.get();
        let outer = percpu::sched_read_lock();
        let inner = percpu::sched_read_lock();
        tick(); // as the timer interrupt would, between two instructions
        tick(); // a second request while one is owed changes nothing
        assert_eq!(QUIESCENT.get(), before, "reported inside a section");
        assert_eq!(percpu::sched_depth(), 2);
        drop(inner);
        assert_eq!(QUIESCENT.get(), before, "reported at an inner exit");
        let again = percpu::sched_read_lock(); // a fresh nested section
        drop(again);
        assert_eq!(QUIESCENT.get(), before);
        drop(outer);
        assert_eq!(QUIESCENT.get(), before + 1, "the outermost exit reports once");
        assert_eq!(percpu::sched_depth(), 0);
        tick();
        assert_eq!(QUIESCENT.get(), before + 2, "outside a section a tick reports at once");
    }
}
