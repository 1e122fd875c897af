//! A sleeping mutex: a thread that finds it held waits on a wait queue
//! instead of spinning, and may itself sleep while holding it.
//!
//! The data sits behind a `spin::Mutex` that is only ever *tried*: a
//! locker that fails the `try_lock` waits on the queue until the lock looks
//! free, then tries again. Unlocking drops the inner guard, then wakes one
//! waiter. A waiter tests "is it free?" after queueing itself (see the
//! lost-wakeup argument in [`super`]), so an unlock between its failed try
//! and its sleep is never missed; a woken waiter may lose the race to a
//! newcomer and then simply waits again (no fairness is promised).

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU64, Ordering};

use super::WaitQueue;

/// A mutual-exclusion lock whose waiters sleep.
pub struct SleepMutex<T> {
    inner: spin::Mutex<T>,
    waiters: WaitQueue,
    /// Times a locker had to sleep (statistics).
    contended: AtomicU64,
}

/// Proof of holding a [`SleepMutex`]; unlocks (and wakes a waiter) on drop.
#[must_use = "dropping the guard unlocks at once"]
pub struct SleepMutexGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    mutex: &'a SleepMutex<T>,
}

impl<T> SleepMutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Self {
        SleepMutex {
            inner: spin::Mutex::new(value),
            waiters: WaitQueue::new(),
            contended: AtomicU64::new(0),
        }
    }

    /// Locks, sleeping while another thread holds it.
    ///
    /// # Panics
    /// When the caller may not sleep (interrupts off, an interrupt handler,
    /// a read-side section) and the lock is held.
    #[track_caller]
    pub fn lock(&self) -> SleepMutexGuard<'_, T> {
        loop {
            if let Some(guard) = self.inner.try_lock() {
                return SleepMutexGuard {
                    guard: Some(guard),
                    mutex: self,
                };
            }
            // Relaxed: a statistic.
            self.contended.fetch_add(1, Ordering::Relaxed);
            self.waiters.wait_until(|| !self.inner.is_locked());
        }
    }

    /// Locks if free, without sleeping.
    pub fn try_lock(&self) -> Option<SleepMutexGuard<'_, T>> {
        self.inner.try_lock().map(|guard| SleepMutexGuard {
            guard: Some(guard),
            mutex: self,
        })
    }

    /// How many times a locker had to sleep.
    pub fn contended(&self) -> u64 {
        self.contended.load(Ordering::Relaxed)
    }
}

impl<T> Deref for SleepMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_deref().expect("held until drop")
    }
}

impl<T> DerefMut for SleepMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_deref_mut().expect("held until drop")
    }
}

impl<T> Drop for SleepMutexGuard<'_, T> {
    fn drop(&mut self) {
        // Unlock first, then wake: the woken waiter's test must see it free.
        drop(self.guard.take());
        self.mutex.waiters.wake_one();
    }
}

crate::ktest! {
    /// Threads on every CPU take one sleeping mutex 2000 times each, some
    /// of them sleeping while they hold it: the counter is exact and
    /// contended lockers slept rather than spun.
    #[smp(1, 2, 8)]
    #[timeout(120)]
    fn sleep_mutex_keeps_a_counter_exact_under_contention_from_all_cpus() {
        use alloc::sync::Arc;
        use alloc::vec::Vec;
        use core::time::Duration;
        const PER_THREAD: u64 = 2000;
        let mutex = Arc::new(SleepMutex::new(0u64));
        let cpus: Vec<usize> = crate::arch::smp::online().collect();
        let threads: Vec<_> = cpus
            .iter()
            .flat_map(|&cpu| [cpu, cpu])
            .enumerate()
            .map(|(i, cpu)| {
                let mutex = mutex.clone();
                super::spawn_on(cpu, move || {
                    for n in 0..PER_THREAD {
                        let mut guard = mutex.lock();
                        let seen = *guard;
                        if n % 500 == 0 && i % 2 == 0 {
                            super::sleep(Duration::from_millis(1)); // sleep holding it
                        } else if n % 7 == 0 {
                            super::yield_now();
                        }
                        *guard = seen + 1;
                    }
                })
            })
            .collect();
        let count = threads.len() as u64;
        for t in threads {
            t.join();
        }
        assert_eq!(*mutex.lock(), count * PER_THREAD, "an increment was lost");
        assert!(mutex.contended() > 0, "{count} threads never met at the lock");
        assert!(mutex.try_lock().is_some());
    }
}
