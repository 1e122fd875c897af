//! A spin lock that disables preemption while held.

use core::ops::{Deref, DerefMut};

use crate::arch::percpu::{sched_read_lock, SchedGuard};

/// A spin lock whose holder cannot be preempted: locking enters an
/// rcu-sched read-side section ([`SchedGuard`]) before spinning, and the
/// section ends after the unlock. So a holder is never switched out for a
/// thread of the same CPU that would then spin on the lock, and sleeping
/// while holding it is caught ("scheduling while atomic"). Interrupts stay
/// on: a lock that interrupt handlers take must be taken with an
/// [`IrqGuard`](crate::arch::percpu::IrqGuard) held instead (or be an
/// [`IrqSpinLock`](crate::arch::lock::IrqSpinLock), the interrupts-off
/// lock the arch layer uses).
///
/// Like Linux's `spin_lock`, holding it is an rcu-sched reader:
/// `synchronize_sched` must not be called with it held (it would wait for
/// the caller; it panics instead).
pub struct SpinLock<T> {
    inner: spin::Mutex<T>,
}

/// Access to the data of a locked [`SpinLock`]; unlocks on drop.
#[must_use = "dropping the guard unlocks at once"]
pub struct SpinLockGuard<'a, T> {
    // Field order is drop order: the lock is released before the section
    // ends, so the holder cannot be preempted while it still holds it.
    guard: spin::MutexGuard<'a, T>,
    _section: SchedGuard,
}

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    pub const fn new(value: T) -> Self {
        SpinLock {
            inner: spin::Mutex::new(value),
        }
    }

    /// Disables preemption, then spins until the lock is free.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let section = sched_read_lock();
        SpinLockGuard {
            guard: self.inner.lock(),
            _section: section,
        }
    }

    /// Locks if free, without spinning.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        let section = sched_read_lock();
        self.inner.try_lock().map(|guard| SpinLockGuard {
            guard,
            _section: section,
        })
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.inner.try_lock() {
            Some(v) => f.debug_tuple("SpinLock").field(&*v).finish(),
            None => f.write_str("SpinLock(<locked>)"),
        }
    }
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}
