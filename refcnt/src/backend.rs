//! What a kernel (or a test harness) must provide for the counters to work.
//!
//! The trait is made of associated functions only, so a kernel implements it
//! on a zero-sized type and every call is static: the per-CPU fast path of
//! [`PercpuRef`](crate::percpu_ref::PercpuRef) compiles to a guard, one load
//! and one [`Backend::this_cpu_add`]. Nothing here is x86-specific, and
//! nothing needs `std`; `Box` comes from `alloc`.
//!
//! The same operations are enough for SRCU later: it needs four per-CPU
//! slots (lock and unlock counts for two indexes), [`Backend::sum`] for its
//! scans, and the rcu-sched grace period for its fast flavour.

use alloc::boxed::Box;
use core::fmt;

use crate::misuse::Misuse;

/// The per-CPU allocator had no memory left.
///
/// # Examples
///
/// ```
/// let e = refcnt::AllocError;
/// assert_eq!(e.to_string(), "per-CPU allocation failed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError;

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("per-CPU allocation failed")
    }
}

/// Where misuse reports go. Every [`Backend`] is one; [`Kref`](crate::kref::Kref)
/// needs only this part.
///
/// The per-kind counters ([`misuse_count`](crate::misuse::misuse_count)) are
/// bumped by the crate before `report` is called, so an implementation only
/// has to tell a human (the kernel prints to the serial console).
///
/// # Examples
///
/// ```
/// use refcnt::{Misuse, Report};
/// struct Quiet;
/// impl Report for Quiet {
///     fn report(_m: Misuse) {}
/// }
/// Quiet::report(Misuse::DoubleKill);
/// ```
pub trait Report: 'static {
    /// Tells someone that `m` happened. Must not block and must not call
    /// back into the object that reported it.
    fn report(m: Misuse);
}

/// The environment the counters run in.
///
/// # Safety
///
/// The algorithms trust these promises; a backend that breaks them can make
/// a release callback run while references are still held, and callers may
/// free memory in that callback.
///
/// 1. [`this_cpu_add`](Backend::this_cpu_add) changes only the calling
///    CPU's slot, is never split by anything else running on that CPU
///    (interrupts included), and is never lost.
/// 2. [`sum`](Backend::sum) reads every CPU's slot that any CPU could ever
///    have written.
/// 3. [`synchronize_sched`](Backend::synchronize_sched) returns only after
///    every read-side section (a live [`ReadGuard`](Backend::ReadGuard))
///    that began before the call has ended, and everything those sections
///    wrote is visible to the caller when it returns. Conversely a section
///    that begins after the call started sees everything the caller wrote
///    before the call (the usual RCU guarantee).
/// 4. [`call_sched`](Backend::call_sched) runs its callback exactly once,
///    after such a grace period, and never from inside the call itself.
///
/// # Examples
///
/// A single-CPU backend, enough to show the shape (interrupts do not exist
/// here, so a read-side section is empty and a grace period is immediate):
///
/// ```
/// use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
/// use refcnt::{AllocError, Backend, Misuse, Report};
///
/// struct Uni;
/// impl Report for Uni {
///     fn report(m: Misuse) {
///         eprintln!("{m}");
///     }
/// }
/// // SAFETY: there is one CPU and no interrupts, so every add is whole and
/// // every section has ended by the time anyone else runs.
/// unsafe impl Backend for Uni {
///     type PerCpu = Box<[AtomicUsize]>;
///     type ReadGuard = ();
///     fn alloc_percpu(slots: usize) -> Result<Self::PerCpu, AllocError> {
///         Ok((0..slots).map(|_| AtomicUsize::new(0)).collect())
///     }
///     fn this_cpu_add(p: &Self::PerCpu, slot: usize, delta: usize) {
///         p[slot].fetch_add(delta, Relaxed);
///     }
///     fn sum(p: &Self::PerCpu, slot: usize) -> usize {
///         p[slot].load(Relaxed)
///     }
///     fn read_lock_sched() {}
///     fn synchronize_sched() {}
///     fn call_sched(f: Box<dyn FnOnce() + Send>) {
///         // A real backend defers; this toy one has nothing to wait for.
///         f()
///     }
///     fn now_ns() -> u64 {
///         0
///     }
/// }
///
/// let r = refcnt::percpu_ref::PercpuRef::<Uni>::new(|| {}, Default::default()).unwrap();
/// r.get_many(2);
/// r.put_many(2);
/// assert!(r.kill());
/// assert!(r.is_zero());
/// ```
#[allow(unsafe_code)] // declaring the contract is not unsafe code; implementing it is
pub unsafe trait Backend: Report {
    /// One per-CPU allocation of `slots` counters, all zero, at the same
    /// offset on every CPU (in a kernel). Freed when dropped.
    type PerCpu: Send + Sync;

    /// Proof of being inside a read-side section; the section ends when it
    /// is dropped. Sections nest. In a kernel: interrupts off, restored on
    /// drop.
    type ReadGuard;

    /// Allocates `slots` zeroed counters on every possible CPU.
    fn alloc_percpu(slots: usize) -> Result<Self::PerCpu, AllocError>;

    /// Adds `delta` (wrapping) to counter `slot` of the calling CPU.
    /// In a kernel: one `add qword gs:[off], reg`.
    fn this_cpu_add(p: &Self::PerCpu, slot: usize, delta: usize);

    /// Wrapping sum of counter `slot` over all possible CPUs. The read is
    /// racy; the result is exact only when no CPU can still be adding, which
    /// callers ensure with a grace period.
    fn sum(p: &Self::PerCpu, slot: usize) -> usize;

    /// Enters a read-side section that [`Backend::synchronize_sched`] waits
    /// for.
    fn read_lock_sched() -> Self::ReadGuard;

    /// Waits for a grace period: every read-side section that began before
    /// the call has ended (rcu-sched).
    fn synchronize_sched();

    /// Runs `f` after a grace period, from a context that may block (a
    /// worker), never from inside this call.
    fn call_sched(f: Box<dyn FnOnce() + Send>);

    /// Monotonic time in nanoseconds; only the dynamic mode's rate
    /// measurement uses it.
    fn now_ns() -> u64;

    /// The calling CPU's counter `slot`, if this backend can read it.
    /// Only misuse checks use it (SRCU: a grace-period wait inside a read
    /// section, nesting depth); the default, `None`, turns them off. A
    /// backend whose tasks may migrate while inside an SRCU read section
    /// should keep the default (see [`srcu`](crate::srcu), "Misuse").
    fn this_cpu_read(_p: &Self::PerCpu, _slot: usize) -> Option<usize> {
        None
    }

    /// As [`this_cpu_add`](Backend::this_cpu_add), and the add is itself a
    /// read-side section for [`synchronize_sched`](Backend::synchronize_sched)
    /// (promise 3 applies to it). SRCU's fast flavour counts readers with
    /// it. The default wraps the add in [`read_lock_sched`](Backend::read_lock_sched);
    /// a kernel whose grace period cannot split one instruction may
    /// override it with the bare `add gs:[off]`.
    #[inline]
    fn this_cpu_add_sched(p: &Self::PerCpu, slot: usize, delta: usize) {
        let _section = Self::read_lock_sched();
        Self::this_cpu_add(p, slot, delta);
    }

    /// Called in every spin-wait loop of the crate (waiting for a release,
    /// for a switch in flight). The default is a CPU pause hint; a backend
    /// with a scheduler may yield instead.
    fn relax() {
        core::hint::spin_loop()
    }
}
