//! The kernel's spin locks: [`IrqSpinLock`], held with interrupts off, and
//! [`SpinLock`], held with preemption off.
//!
//! Arch code that serialises on shared state (the page tables, the stack
//! pool, the fw_cfg device, a context's stack) takes an [`IrqSpinLock`].
//! Holding it keeps interrupts off on this CPU, so its holder is neither
//! interrupted nor switched out (a thread switch needs an interrupt or a
//! call from the holder), and an interrupt handler on this CPU can never
//! spin on a lock its own CPU holds. An interrupts-off stretch is also an
//! rcu-sched read-side section, as any preemption-disabled one is.
//!
//! The kernel's general lock, [`SpinLock`], keeps interrupts on and
//! disables preemption only: its holder is in an rcu-sched read-side
//! section (`percpu::sched_read_lock`), which the scheduler honours (no
//! switch inside one; the section's end is a preemption point, through a
//! hook the scheduler registers). Both live here, at the bottom, so that
//! every layer above (the scheduler included) can take them; `sync`
//! re-exports `SpinLock`. The sections arch protects are short (a
//! page-table edit, a push onto a free list), so keeping interrupts off
//! there costs nothing measurable.

use core::ops::{Deref, DerefMut};

use super::percpu::{sched_read_lock, IrqGuard, SchedGuard};

/// A spin lock whose holder runs with interrupts off (see the module
/// documentation). Locking disables interrupts before spinning; unlocking
/// releases the lock and then restores the previous interrupt state.
///
/// Do not wait for another CPU while holding it (for an IPI to be served,
/// say): that CPU may be spinning on this lock with interrupts off.
pub struct IrqSpinLock<T> {
    inner: spin::Mutex<T>,
}

/// Access to the data of a locked [`IrqSpinLock`]; unlocks on drop.
#[must_use = "dropping the guard unlocks at once"]
pub struct IrqSpinLockGuard<'a, T> {
    // Field order is drop order: the lock is released before interrupts
    // come back on, so an interrupt handler on this CPU never finds it
    // held by the code it interrupted.
    guard: spin::MutexGuard<'a, T>,
    _irq: IrqGuard,
}

impl<T> IrqSpinLock<T> {
    /// A new, unlocked lock.
    pub const fn new(value: T) -> Self {
        IrqSpinLock {
            inner: spin::Mutex::new(value),
        }
    }

    /// Disables interrupts, then spins until the lock is free.
    pub fn lock(&self) -> IrqSpinLockGuard<'_, T> {
        let irq = IrqGuard::new();
        IrqSpinLockGuard {
            guard: self.inner.lock(),
            _irq: irq,
        }
    }

    /// Locks if free, without spinning (interrupts are as they were when
    /// it returns `None`). Usable on a fault path that must not wait.
    pub fn try_lock(&self) -> Option<IrqSpinLockGuard<'_, T>> {
        let irq = IrqGuard::new();
        self.inner
            .try_lock()
            .map(|guard| IrqSpinLockGuard { guard, _irq: irq })
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for IrqSpinLock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.try_lock() {
            Some(v) => f.debug_tuple("IrqSpinLock").field(&*v).finish(),
            None => f.write_str("IrqSpinLock(<locked>)"),
        }
    }
}

impl<T> Deref for IrqSpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for IrqSpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A spin lock whose holder cannot be preempted: locking enters an
/// rcu-sched read-side section ([`SchedGuard`]) before spinning, and the
/// section ends after the unlock. So a holder is never switched out for a
/// thread of the same CPU that would then spin on the lock, and sleeping
/// while holding it is caught ("scheduling while atomic"). Interrupts stay
/// on: a lock that interrupt handlers take must be taken with an
/// [`IrqGuard`] held instead (or be an
/// [`IrqSpinLock`], the interrupts-off
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

crate::ktest! {
    /// Holding the lock keeps interrupts off; dropping the guard unlocks
    /// and brings back the state from before, also when nested in an
    /// interrupts-off stretch.
    fn irq_spin_lock_keeps_interrupts_off_while_held() {
        use ::x86_64::instructions::interrupts::are_enabled;
        static LOCK: IrqSpinLock<u32> = IrqSpinLock::new(0);
        assert!(are_enabled(), "kernel tests run with interrupts on");
        {
            let mut value = LOCK.lock();
            assert!(!are_enabled(), "interrupts on while the lock is held");
            assert!(LOCK.try_lock().is_none(), "a held lock was taken twice");
            *value += 1;
        }
        assert!(are_enabled(), "interrupts stayed off after the unlock");
        let irq = IrqGuard::new();
        drop(LOCK.lock());
        assert!(!are_enabled(), "the unlock turned interrupts on inside an IrqGuard");
        drop(irq);
        assert_eq!(*LOCK.try_lock().expect("the lock is free"), 1);
    }
}
