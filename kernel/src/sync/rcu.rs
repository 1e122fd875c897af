//! rcu-sched grace periods.
//!
//! A read-side section here is a stretch of code with local interrupts off
//! (an [`IrqGuard`](crate::arch::percpu::IrqGuard)) or a single instruction;
//! the fast paths of percpu_ref and SRCU-fast are exactly that. So a CPU
//! that takes an interrupt is, at that moment, in no section, and every
//! section it was in before has ended. Two ways to wait for that on every
//! CPU:
//!
//! - [`synchronize_sched`]: an IPI to every other CPU, waiting until each
//!   has run the handler (`on_each_cpu`). Microseconds, not a tick.
//! - [`call_sched`]: queue a callback with a snapshot of every CPU's
//!   timer-tick count; once each CPU has taken a tick after the snapshot
//!   the callback is ready. No IPIs; one or two ticks.
//!
//! Ordering: the caller's writes before the grace period are ordered
//! before the snapshot by a `SeqCst` fence; a CPU's section that starts
//! after the tick (or IPI) that ends the wait begins after an `iret`, which
//! is serialising on x86, so the tick's counter store is visible before
//! the section's first load and the section sees the caller's writes.
//!
//! Ready callbacks run from [`poll_callbacks`], which idle CPUs call after
//! every wakeup (and [`smp::wait_for`] calls, so a single-CPU system makes
//! progress too): never from an interrupt handler and never from inside
//! the caller, so a callback may take locks, spin or wait for another grace
//! period. One CPU drains at a time, so callbacks run in queue order.
//! (Kernel threads, a later step, will give them a worker of their own.)

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use spin::Mutex;

use crate::arch::percpu::{possible_cpus, IrqGuard};
use crate::arch::smp;

crate::percpu! {
    /// Timer ticks taken (each one a quiescent state of this CPU).
    static QUIESCENT: PerCpu<u64> = 0;
    /// Grace periods this CPU has served (synchronous IPIs answered and,
    /// on the boot CPU, callbacks completed).
    pub static GP_SERVED: PerCpu<u64> = 0;
}

struct Waiting {
    snapshot: Vec<u64>,
    callback: Box<dyn FnOnce() + Send>,
}

static QUEUE: Mutex<VecDeque<Waiting>> = Mutex::new(VecDeque::new());

/// Waits until every CPU has left every read-side section it was in when
/// the call began.
pub fn synchronize_sched() {
    // SeqCst: the caller's writes are globally visible before any CPU runs
    // the IPI handler that ends its old sections.
    fence(Ordering::SeqCst);
    smp::on_each_cpu(&|| GP_SERVED.add(1));
    // SeqCst: the sections' writes (published by the handlers' Release
    // decrements, acquired by on_each_cpu) come before what follows.
    fence(Ordering::SeqCst);
}

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

/// Called from every CPU's timer tick.
pub fn tick() {
    QUIESCENT.add(1);
}

/// Held by the CPU draining ready callbacks, so they run in order.
static DRAIN: Mutex<()> = Mutex::new(());

/// Callbacks waiting for their grace period.
pub fn pending() -> usize {
    let _irq = IrqGuard::new();
    QUEUE.lock().len()
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
    /// A synchronous grace period waits for a section that is in progress
    /// on another CPU, and every CPU counts it as served.
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
        for (i, cpu) in smp::online().enumerate() {
            assert!(GP_SERVED.read_remote(cpu) > served_before[i], "cpu {cpu} served no grace period");
        }
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
