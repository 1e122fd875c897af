//! percpu_ref's switches land in the context a backend's
//! `call_sched_atomic` gives them (in our kernel: the interrupt of the CPU
//! whose report ends the grace period). A one-CPU backend here queues the
//! callbacks and runs them when the test says, so each test decides what
//! the landing finds: nothing in the way, the control lock held by the
//! code the "interrupt" landed in, or a further grace period owed.
#![cfg(all(feature = "std", not(loom)))]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use refcnt::percpu_ref::{Flags, PercpuRef};
use refcnt::{AllocError, Backend, CallbackContext, Misuse, Report};

type Queued = (bool, Box<dyn FnOnce(CallbackContext) + Send>);

thread_local! {
    /// Callbacks waiting for their grace period: (atomic, callback).
    static QUEUE: RefCell<VecDeque<Queued>> = const { RefCell::new(VecDeque::new()) };
    /// The next `now_ns` is an interrupt that ends a grace period: it runs
    /// the queued atomic callbacks where it lands.
    static INTERRUPT_IN_NOW: Cell<bool> = const { Cell::new(false) };
    /// The contexts the callbacks ran in, in order.
    static RAN: RefCell<Vec<CallbackContext>> = const { RefCell::new(Vec::new()) };
    static MISUSES: Cell<usize> = const { Cell::new(0) };
    /// Grace periods end as soon as they start: `call_sched_atomic` runs
    /// its callback at once, in atomic context (what a kernel does when
    /// the caller is preempted right after starting one, or when every
    /// other CPU is idle and the caller answers for its own).
    static IMMEDIATE: Cell<bool> = const { Cell::new(false) };
}

/// One CPU, no interrupts but the ones a test asks for.
struct Uni;

impl Report for Uni {
    fn report(_m: Misuse) {
        MISUSES.with(|m| m.set(m.get() + 1));
    }
}

// SAFETY: one CPU (each test is one thread), so every add is whole and
// every section has ended by the time a queued callback runs (the tests
// run callbacks only outside the ref's calls, or from `now_ns`, which the
// ref calls outside any read-side section).
unsafe impl Backend for Uni {
    type PerCpu = Box<[AtomicUsize]>;
    type ReadGuard = ();
    fn alloc_percpu(slots: usize) -> Result<Self::PerCpu, AllocError> {
        Ok((0..slots).map(|_| AtomicUsize::new(0)).collect())
    }
    fn this_cpu_add(p: &Self::PerCpu, slot: usize, delta: usize) {
        p[slot].fetch_add(delta, Relaxed);
    }
    fn sum(p: &Self::PerCpu, slot: usize) -> usize {
        p[slot].load(Relaxed)
    }
    fn read_lock_sched() {}
    fn synchronize_sched() {}
    fn call_sched(f: Box<dyn FnOnce() + Send>) {
        QUEUE.with(|q| q.borrow_mut().push_back((false, Box::new(move |_| f()))));
    }
    fn call_sched_atomic(f: Box<dyn FnOnce(CallbackContext) + Send>) {
        if IMMEDIATE.with(Cell::get) {
            RAN.with(|r| r.borrow_mut().push(CallbackContext::Atomic));
            f(CallbackContext::Atomic);
        } else {
            QUEUE.with(|q| q.borrow_mut().push_back((true, f)));
        }
    }
    fn now_ns() -> u64 {
        if INTERRUPT_IN_NOW.with(|i| i.replace(false)) {
            run_atomic();
        }
        0
    }
}

/// Runs the queued callbacks from the head while they are atomic ones, in
/// atomic context (what the kernel's round end does).
fn run_atomic() {
    while let Some(f) = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        if q.front().is_some_and(|c| c.0) {
            q.pop_front().map(|c| c.1)
        } else {
            None
        }
    }) {
        RAN.with(|r| r.borrow_mut().push(CallbackContext::Atomic));
        f(CallbackContext::Atomic);
    }
}

/// Runs every queued callback in the worker (what the callback thread
/// does), those queued meanwhile included.
fn run_worker() {
    while let Some((_, f)) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
        RAN.with(|r| r.borrow_mut().push(CallbackContext::Worker));
        f(CallbackContext::Worker);
    }
}

fn ran() -> Vec<CallbackContext> {
    RAN.with(|r| r.borrow().clone())
}

/// A ref whose release and kill confirmation write to one log.
fn logged(flags: Flags) -> (PercpuRef<Uni>, Arc<Mutex<Vec<&'static str>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let r = PercpuRef::<Uni>::new(move || l.lock().unwrap().push("release"), flags).unwrap();
    (r, log)
}

fn confirm_into(log: &Arc<Mutex<Vec<&'static str>>>) -> impl FnOnce() + Send + 'static {
    let l = log.clone();
    move || l.lock().unwrap().push("confirm")
}

/// With nothing in the way, a kill lands in the atomic callback itself:
/// fold, confirmation, then release, and no worker is asked for.
#[test]
fn a_kill_lands_in_atomic_context() {
    let (r, log) = logged(Flags::empty());
    assert!(r.kill_and_confirm(confirm_into(&log)));
    assert!(
        log.lock().unwrap().is_empty(),
        "landed before its grace period"
    );
    run_atomic();
    assert_eq!(*log.lock().unwrap(), ["confirm", "release"]);
    assert_eq!(ran(), [CallbackContext::Atomic]);
    assert_eq!(
        QUEUE.with(|q| q.borrow().len()),
        0,
        "a worker was asked for"
    );
    assert!(r.is_zero());
    assert_eq!(MISUSES.with(Cell::get), 0);
}

/// The grace period ends while the code it interrupted holds the ref's
/// control lock (a dynamic ref's resurrect reads the clock under it): the
/// landing must not spin on the lock (on a kernel CPU, that is a
/// deadlock), so it hands itself to the worker, which lands once, the
/// confirmation before the release.
#[test]
fn an_atomic_landing_that_finds_the_lock_held_goes_to_the_worker() {
    let (r, log) = logged(Flags::DYNAMIC);
    let held = r.get();
    assert!(r.kill_and_confirm(confirm_into(&log)));
    INTERRUPT_IN_NOW.with(|i| i.set(true));
    assert!(r.resurrect());
    assert!(
        !INTERRUPT_IN_NOW.with(Cell::get),
        "resurrect no longer reads the clock under the lock: the test lost its window"
    );
    assert_eq!(ran(), [CallbackContext::Atomic]);
    assert!(log.lock().unwrap().is_empty(), "landed under a held lock");
    run_worker();
    assert_eq!(ran(), [CallbackContext::Atomic, CallbackContext::Worker]);
    assert_eq!(*log.lock().unwrap(), ["confirm"]);
    // The new life: the held reference and its own initial one.
    assert_eq!(r.count_atomic(), 2);
    drop(held);
    assert!(r.kill());
    run_worker();
    assert_eq!(*log.lock().unwrap(), ["confirm", "release"]);
    assert_eq!(MISUSES.with(Cell::get), 0);
}

/// A kill asked for while a switch to atomic is in flight needs a further
/// grace period (readers that began after the first one started may not
/// have seen the DEAD bit): the atomic landing of the first round queues
/// the second instead of waiting, and the kill confirms, then releases,
/// only when that one lands.
#[test]
fn a_kill_during_a_flight_lands_after_a_further_atomic_round() {
    let (r, log) = logged(Flags::empty());
    let switched = Arc::new(AtomicUsize::new(0));
    let s = switched.clone();
    r.switch_to_atomic(move || {
        s.fetch_add(1, SeqCst);
    });
    assert!(r.kill_and_confirm(confirm_into(&log)));
    // The first round: the switch's confirmation only.
    let first = QUEUE
        .with(|q| q.borrow_mut().pop_front())
        .expect("the switch's callback");
    assert!(
        first.0,
        "the switch's landing was not offered atomic context"
    );
    first.1(CallbackContext::Atomic);
    assert_eq!(switched.load(SeqCst), 1);
    assert!(
        log.lock().unwrap().is_empty(),
        "the kill confirmed within the grace period that began before it"
    );
    run_atomic();
    assert_eq!(*log.lock().unwrap(), ["confirm", "release"]);
    assert_eq!(QUEUE.with(|q| q.borrow().len()), 0);
    assert_eq!(MISUSES.with(Cell::get), 0);
}

/// One put too many in per-CPU mode, with a holder: the kill's fold finds
/// the count below zero, reports it, and the ref leaks rather than
/// releasing under the holder, however soon the kill's switch lands. Here
/// its grace period ends inside `kill` itself, before `kill` has dropped
/// the initial reference: that drop must already be counted when the
/// fold runs (Linux drops it under the switch lock, before the grace
/// period can end), else the fold adds the negative per-CPU sum to a count
/// that still holds the initial reference, finds no underflow, and the
/// initial reference's put then releases.
#[test]
fn an_over_put_leaks_even_when_the_kill_lands_at_once() {
    for confirm in [false, true] {
        let (r, log) = logged(Flags::empty());
        let holder = r.get();
        r.put_many(2); // the holder's put, and one more: misuse
        IMMEDIATE.with(|i| i.set(true));
        let killed = if confirm {
            r.kill_and_confirm(confirm_into(&log))
        } else {
            r.kill()
        };
        IMMEDIATE.with(|i| i.set(false));
        assert!(killed);
        assert_eq!(
            ran(),
            [CallbackContext::Atomic],
            "the kill did not land at once"
        );
        let log = log.lock().unwrap().clone();
        assert!(
            !log.contains(&"release"),
            "released while a holder still holds (confirm: {confirm}): {log:?}"
        );
        assert!(
            MISUSES.with(Cell::get) >= 1,
            "the underflow was not reported"
        );
        holder.leak();
        RAN.with(|r| r.borrow_mut().clear());
        MISUSES.with(|m| m.set(0));
    }
}
