//! `Kref`: one atomic count with the rules of Linux `refcount_t`.
//!
//! Overflow does not wrap to zero (which would free a live object): the
//! count saturates at a value in the upper half of the range and stays
//! there, leaking the object instead; this is reported once, as
//! [`Misuse::KrefSaturated`]. Incrementing or decrementing a count of zero
//! is a use after free; it is reported ([`Misuse::KrefUseAfterZero`]) and
//! the count saturates too, so the release can never run again.
//!
//! Kref needs no per-CPU memory or grace periods; it only needs somewhere to
//! report misuse, a [`Report`] (every [`Backend`](crate::Backend) is one).

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{
    fence, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::backend::Report;
use crate::misuse::{self, Misuse};

/// A [`Report`] that only counts (see
/// [`misuse_count`](crate::misuse::misuse_count)); the default for [`Kref`].
///
/// # Examples
///
/// ```
/// use refcnt::{kref::CountOnly, Report};
/// CountOnly::report(refcnt::Misuse::KrefSaturated);
/// ```
#[derive(Debug)]
pub struct CountOnly;

impl Report for CountOnly {
    fn report(_m: Misuse) {}
}

/// Values above this are "saturated or corrupt": never released.
const LIMIT: usize = usize::MAX / 2;
/// Where a saturated count is parked: far from both LIMIT and the top, so
/// racing increments and decrements cannot bring it back into range.
const SATURATED: usize = LIMIT + LIMIT / 2;

/// An atomic reference count that saturates instead of overflowing.
///
/// # Examples
///
/// ```
/// use refcnt::kref::Kref;
/// let k = Kref::new();
/// k.get();
/// assert!(!k.put(|| unreachable!()));
/// let mut freed = false;
/// assert!(k.put(|| freed = true));
/// assert!(freed);
/// ```
pub struct Kref<R: Report = CountOnly> {
    count: AtomicUsize,
    _r: PhantomData<fn() -> R>,
}

impl Kref {
    /// A count of one, reporting misuse only to the counters.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(refcnt::kref::Kref::new().read(), 1);
    /// ```
    pub const fn new() -> Self {
        Self::with_report()
    }
}

impl Default for Kref {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Report> Kref<R> {
    /// A count of one, reporting misuse to `R`.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{kref::Kref, Misuse, Report};
    /// struct Loud;
    /// impl Report for Loud {
    ///     fn report(m: Misuse) {
    ///         eprintln!("{m}")
    ///     }
    /// }
    /// let k = Kref::<Loud>::with_report();
    /// assert_eq!(k.read(), 1);
    /// ```
    pub const fn with_report() -> Self {
        Self {
            count: AtomicUsize::new(1),
            _r: PhantomData,
        }
    }

    fn saturate(&self) {
        // Relaxed: a saturated count publishes nothing; it only stops frees.
        self.count.store(SATURATED, Relaxed);
    }

    /// Takes a reference. On overflow the count saturates (reported once);
    /// at zero it reports a use after free and saturates.
    ///
    /// # Examples
    ///
    /// ```
    /// let k = refcnt::kref::Kref::new();
    /// k.get();
    /// assert_eq!(k.read(), 2);
    /// ```
    pub fn get(&self) {
        // Relaxed: the caller already holds a reference (as Arc::clone).
        let old = self.count.fetch_add(1, Relaxed);
        if old == 0 {
            self.saturate();
            misuse::report::<R>(Misuse::KrefUseAfterZero);
        } else if old >= LIMIT {
            self.saturate();
            if old == LIMIT {
                misuse::report::<R>(Misuse::KrefSaturated);
            }
        }
    }

    /// Takes a reference unless the count is zero; a saturated count stays
    /// saturated and succeeds.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::kref::Kref;
    /// let k = Kref::new();
    /// assert!(k.get_unless_zero());
    /// k.put(|| {});
    /// k.put(|| {});
    /// assert!(!k.get_unless_zero());
    /// ```
    pub fn get_unless_zero(&self) -> bool {
        let mut cur = self.count.load(Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            if cur >= LIMIT {
                return true;
            }
            // Acquire on success: the object was found by lookup; order its
            // use after the increment (as Weak::upgrade). Relaxed on retry.
            match self
                .count
                .compare_exchange_weak(cur, cur + 1, Acquire, Relaxed)
            {
                Ok(_) => {
                    if cur + 1 == LIMIT {
                        misuse::report::<R>(Misuse::KrefSaturated);
                    }
                    return true;
                }
                Err(c) => cur = c,
            }
        }
    }

    /// Drops a reference; runs `release` and returns true if it was the
    /// last. A saturated count never releases; a put at zero is reported.
    ///
    /// # Examples
    ///
    /// ```
    /// let k = refcnt::kref::Kref::new();
    /// assert!(k.put(|| {}));
    /// ```
    pub fn put(&self, release: impl FnOnce()) -> bool {
        // Release: this holder's use of the object happens before the
        // release; pairs with the Acquire fence below.
        let old = self.count.fetch_sub(1, Release);
        if old == 1 {
            fence(Acquire);
            release();
            return true;
        }
        if old == 0 {
            self.saturate();
            misuse::report::<R>(Misuse::KrefUseAfterZero);
        } else if old > LIMIT {
            self.saturate();
        }
        false
    }

    /// The current count (racy; for diagnostics and tests).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(refcnt::kref::Kref::new().read(), 1);
    /// ```
    pub fn read(&self) -> usize {
        // Relaxed: diagnostics.
        self.count.load(Relaxed)
    }

    /// Whether the count is saturated (the object will never be released).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!refcnt::kref::Kref::new().is_saturated());
    /// ```
    pub fn is_saturated(&self) -> bool {
        self.read() >= LIMIT
    }

    #[cfg(test)]
    fn set_for_test(&self, v: usize) {
        self.count.store(v, Relaxed);
    }
}

impl<R: Report> fmt::Debug for Kref<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kref").field("count", &self.read()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::misuse::misuse_count;

    #[test]
    fn release_once() {
        let k = Kref::new();
        k.get();
        let mut n = 0;
        assert!(!k.put(|| n += 1));
        assert!(k.put(|| n += 1));
        assert_eq!(n, 1);
    }

    #[test]
    fn overflow_saturates() {
        let k = Kref::new();
        k.set_for_test(LIMIT - 1);
        let before = misuse_count(Misuse::KrefSaturated);
        k.get();
        k.get();
        assert!(k.is_saturated());
        assert!(misuse_count(Misuse::KrefSaturated) > before);
        for _ in 0..10 {
            assert!(!k.put(|| panic!("saturated count released")));
        }
        assert!(k.is_saturated());
        assert!(k.get_unless_zero());
    }

    #[test]
    fn use_after_zero() {
        let k = Kref::new();
        assert!(k.put(|| {}));
        let before = misuse_count(Misuse::KrefUseAfterZero);
        assert!(!k.get_unless_zero());
        k.get();
        assert!(misuse_count(Misuse::KrefUseAfterZero) > before);
        assert!(k.is_saturated());
        assert!(!k.put(|| panic!("released twice")));
        let k2 = Kref::new();
        assert!(k2.put(|| {}));
        assert!(!k2.put(|| panic!("released twice")));
        assert!(k2.is_saturated());
    }
}
