//! Synchronisation services built on the arch layer: the rcu-sched grace
//! period ([`rcu`]), the preemption-disabling [`SpinLock`] (defined at the
//! bottom, in `arch::lock`, so the scheduler can take it too; re-exported
//! here) and the kernel's backend for the `refcnt` crate ([`backend`]). No
//! unsafe code here: everything unsafe is in `arch`.
#![deny(unsafe_code)]

pub mod backend;
pub mod rcu;
mod srcu_tests;
pub mod wait;

pub use crate::arch::lock::{SpinLock, SpinLockGuard};

use core::sync::atomic::{AtomicUsize, Ordering};

/// Takes one unit from `counter` if it holds any (a decrement that never
/// goes below zero); true when one was taken. Used to hand references
/// between CPUs: one CPU counts a reference in, whichever CPU takes it puts
/// it.
pub fn take_one(counter: &AtomicUsize) -> bool {
    // SeqCst: the handed-over reference was taken before the count went up
    // (SeqCst increment); the taker's put must come after that.
    let mut n = counter.load(Ordering::SeqCst);
    while n > 0 {
        match counter.compare_exchange_weak(n, n - 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(seen) => n = seen,
        }
    }
    false
}
