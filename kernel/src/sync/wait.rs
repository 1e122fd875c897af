//! How the kernel waits for grace periods, readers and callbacks: spin a
//! little, then sleep until woken or until the next tick.
//!
//! Most of these waits end within microseconds (an idle machine answers a
//! grace-period IPI in tens of them; SRCU readers leave short sections), so
//! a waiter first spins for a budget its caller chooses, testing its
//! condition. Past the budget, a waiter that may sleep
//! ([`sched::can_sleep`]) sleeps on one shared wait queue. Events that can
//! end a wait call [`wake_waiters`] (a grace period reported, rcu callbacks
//! run, an SRCU grace period ended, a percpu_ref switch landed or a release
//! returned); conditions that change silently (an SRCU reader leaving its
//! section) are re-tested every millisecond, the sleep's timeout
//! ([`RECHECK`]; sleeps end at their deadline, not at a tick). A waiter
//! that may not sleep (interrupts off, a spin lock held, an interrupt
//! handler, before the scheduler runs) keeps spinning.

use core::sync::atomic::{fence, AtomicUsize, Ordering};
use core::time::Duration;

use crate::arch::{percpu, time};
use crate::sched::{self, WaitQueue};

/// Sleeping waiters, all conditions together.
static WAITERS: WaitQueue = WaitQueue::new();
/// How many threads are in (or entering) [`WAITERS`]: lets
/// [`wake_waiters`] cost one load when nobody sleeps.
static SLEEPING: AtomicUsize = AtomicUsize::new(0);

/// How often a sleeping waiter tests its condition again without being
/// woken (for conditions that change silently).
pub const RECHECK: Duration = Duration::from_millis(1);

/// Waits until `done` returns true: spins for up to `spin` first, then
/// sleeps if the caller may (see the module documentation).
pub fn wait_until(spin: Duration, done: impl FnMut() -> bool) {
    wait_until_rechecking(spin, RECHECK, done);
}

/// As [`wait_until`], testing the condition again every `recheck` while
/// asleep.
fn wait_until_rechecking(spin: Duration, recheck: Duration, mut done: impl FnMut() -> bool) {
    if done() {
        return;
    }
    let may_sleep = sched::can_sleep();
    let budget = time::now_ns().saturating_add(spin.as_nanos() as u64);
    loop {
        if done() {
            return;
        }
        // Past the budget, or as soon as the rcu callback thread has been
        // woken to run on this CPU: the callback (a percpu_ref switch
        // landing, a release) is likely what this waits for, and the
        // thread cannot run while this one spins.
        if may_sleep
            && (time::now_ns() >= budget || super::rcu::callback_thread_wants(percpu::cpu_id()))
        {
            break;
        }
        // Many of these waits are for a `call_sched` callback (a
        // percpu_ref switch landing, a release): keep its expedited grace
        // period moving (one load when none is in flight).
        super::rcu::poll_expedited();
        core::hint::spin_loop();
    }
    // SeqCst (a locked RMW, a full barrier): the count is visible before
    // `done` is tested again (inside the wait, after queueing), and a
    // waker fences between its event and its load of the count. So either
    // the waker sees the count and wakes the queue, or this thread's test
    // sees the event.
    SLEEPING.fetch_add(1, Ordering::SeqCst);
    while !WAITERS.wait_until_timeout(&mut done, recheck) {}
    SLEEPING.fetch_sub(1, Ordering::SeqCst);
}

/// Wakes every sleeping waiter to test its condition again. Callable from
/// any context, interrupt handlers included; one fence and one load when
/// nobody sleeps.
pub fn wake_waiters() {
    // SeqCst: orders the caller's event (its earlier stores) before the
    // load of the count; pairs with the increment in `wait_until`.
    fence(Ordering::SeqCst);
    if SLEEPING.load(Ordering::Relaxed) != 0 {
        WAITERS.wake_all();
    }
}

crate::ktest! {
    /// A waiter that runs out of spin budget sleeps and is woken by
    /// `wake_waiters` from another CPU, long before its own re-check (5 s
    /// here) would find the event; one whose condition changes silently is
    /// still woken, by the re-check. (The bound is loose on purpose: under
    /// TCG on a shared host a cross-CPU wakeup usually takes tens of
    /// microseconds but was seen at 3.3 ms, and a vCPU the host leaves
    /// unrun wakes later still.)
    #[smp(2)]
    fn waiters_sleep_and_are_woken() {
        use alloc::sync::Arc;
        use core::sync::atomic::{AtomicBool, AtomicU64};
        // The event comes 10 ms after the setter starts; a host that does
        // not run this vCPU that long makes the waiter find it at its first
        // look, without sleeping: then try again (3 times at most). A
        // waiter that never sleeps fails every time.
        for attempt in 1.. {
            let flag = Arc::new(AtomicBool::new(false));
            let set_at = Arc::new(AtomicU64::new(0));
            let (f, s) = (flag.clone(), set_at.clone());
            let setter = crate::sched::spawn_on(1, move || {
                crate::sched::sleep(Duration::from_millis(10));
                s.store(time::now_ns(), Ordering::SeqCst);
                f.store(true, Ordering::SeqCst);
                wake_waiters();
            });
            let switches = sched::context_switches(0);
            wait_until_rechecking(Duration::from_micros(20), Duration::from_secs(5), || flag.load(Ordering::SeqCst));
            let woken_after = time::now_ns() - set_at.load(Ordering::SeqCst);
            setter.join();
            if sched::context_switches(0) > switches {
                // The re-check would take up to 5 s.
                assert!(woken_after < 1_000_000_000, "woken {woken_after} ns after the event: not by wake_waiters");
                break;
            }
            assert!(attempt < 3, "the waiter never slept (3 tries)");
        }
        // Silent: no wake_waiters; the one-tick timeout finds it.
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let setter = crate::sched::spawn_on(1, move || {
            crate::sched::sleep(Duration::from_millis(10));
            f.store(true, Ordering::SeqCst);
        });
        wait_until(Duration::from_micros(20), || flag.load(Ordering::SeqCst));
        setter.join();
    }
}
