//! Misuse: what it is, how it is counted, what it says.
//!
//! Misuse never causes undefined behaviour and never a second release: the
//! code that detects it repairs what it can (an underflowing put is undone,
//! a repeated zero does not release again), bumps the per-kind counter
//! returned by [`misuse_count`], and hands the kind to the backend's
//! [`Report::report`]. Linux warns in the same places;
//! we also count, so tests can assert on it.

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use alloc::vec::Vec;

use crate::backend::Report;
use crate::sync::Mutex;

/// A kind of misuse. More kinds (for SRCU) will be added; match with a
/// wildcard arm.
///
/// # Examples
///
/// ```
/// use refcnt::Misuse;
/// let m = Misuse::DoubleKill;
/// assert!(m.to_string().contains("kill"));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Misuse {
    /// `kill` on a ref that was already dead.
    DoubleKill,
    /// A put took the count below zero. Found at once in atomic mode,
    /// where the put is ignored; found only at the next switch to atomic
    /// in per-CPU mode (only the sum over CPUs means anything), where the
    /// count stays below zero and the ref is never released: a leak,
    /// rather than a release under a holder whose reference the extra put
    /// took (Linux warns and leaks the same way).
    Underflow,
    /// get, put or tryget on a ref after `exit`.
    GetAfterExit,
    /// `get` on a ref whose count was already zero (use after release).
    GetOnZero,
    /// The count reached zero again in a life that was already released;
    /// release was not run a second time.
    RepeatedZero,
    /// `resurrect` on a ref that was not dead.
    ResurrectLive,
    /// `reinit` on a ref whose count was not zero; nothing was changed.
    ReinitNonZero,
    /// A [`Kref`](crate::kref::Kref) overflowed and is now saturated.
    KrefSaturated,
    /// A [`Kref`](crate::kref::Kref) was incremented or decremented at zero.
    KrefUseAfterZero,
    /// An SRCU grace-period wait (`synchronize`, `barrier`, ...) inside a
    /// read section of the same domain; refused, since it would deadlock.
    SrcuSyncInReadSection,
    /// SRCU `read_unlock` of an index that no section entered with
    /// `read_lock_raw` holds, or `up_read` of one that no section entered
    /// with `down_read` holds; ignored.
    SrcuBadUnlock,
    /// SRCU `cleanup` while readers or callbacks remain; refused.
    SrcuCleanupBusy,
    /// SRCU read sections nested deeper than
    /// [`MAX_NESTING`](crate::srcu::MAX_NESTING) in one task.
    SrcuNestingOverflow,
    /// SRCU `read_unlock` of a section that another task entered (with
    /// `read_lock_raw`); the section was left, but the task that entered
    /// it still counts as inside for the grace-period misuse check.
    SrcuUnlockOtherTask,
}

impl Misuse {
    /// Every kind, in counter order.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(refcnt::Misuse::ALL.contains(&refcnt::Misuse::Underflow));
    /// ```
    pub const ALL: [Misuse; 14] = [
        Misuse::DoubleKill,
        Misuse::Underflow,
        Misuse::GetAfterExit,
        Misuse::GetOnZero,
        Misuse::RepeatedZero,
        Misuse::ResurrectLive,
        Misuse::ReinitNonZero,
        Misuse::KrefSaturated,
        Misuse::KrefUseAfterZero,
        Misuse::SrcuSyncInReadSection,
        Misuse::SrcuBadUnlock,
        Misuse::SrcuCleanupBusy,
        Misuse::SrcuNestingOverflow,
        Misuse::SrcuUnlockOtherTask,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Misuse::DoubleKill => {
                "percpu_ref: kill on a ref that is already dead; \
                 kill once per life (kill returns whether this call killed)"
            }
            Misuse::Underflow => {
                "refcount: more puts than gets took the count below zero; \
                 an atomic count ignored the put, a per-CPU one (found at the switch \
                 to atomic) is leaked and never released: pair every put with a get"
            }
            Misuse::GetAfterExit => {
                "percpu_ref: used after exit; exit only once nobody can reach the ref"
            }
            Misuse::GetOnZero => {
                "percpu_ref: get on a ref whose count is zero (use after release); \
                 use tryget, or resurrect/reinit first"
            }
            Misuse::RepeatedZero => {
                "percpu_ref: count hit zero again in a life already released; \
                 release was not run twice: look for an extra put"
            }
            Misuse::ResurrectLive => {
                "percpu_ref: resurrect on a ref that is not dead; kill it first"
            }
            Misuse::ReinitNonZero => {
                "percpu_ref: reinit while references are held; \
                 wait for release (wait_for_release) first"
            }
            Misuse::KrefSaturated => {
                "kref: count overflowed and is saturated; the object is leaked, \
                 never freed: look for a missing put"
            }
            Misuse::KrefUseAfterZero => {
                "kref: get or put on a count of zero (use after free); \
                 use get_unless_zero when the object may be dying"
            }
            Misuse::SrcuSyncInReadSection => {
                "srcu: synchronize/barrier inside a read section of the same domain \
                 would deadlock; refused: leave the section first, or use call()"
            }
            Misuse::SrcuBadUnlock => {
                "srcu: unlock of an index no open section of that kind holds; ignored: \
                 pass the index read_lock_raw returned to read_unlock, or the one \
                 down_read returned to up_read, once (a guard's section ends when \
                 the guard is dropped)"
            }
            Misuse::SrcuCleanupBusy => {
                "srcu: cleanup while read sections are open or callbacks pending; \
                 refused: unlock every index and call barrier() first"
            }
            Misuse::SrcuNestingOverflow => {
                "srcu: read sections nested too deep in one task; \
                 a guard or raw index was probably leaked: drop every guard and \
                 unlock every index you enter, once"
            }
            Misuse::SrcuUnlockOtherTask => {
                "srcu: read_unlock of a section another task entered; it was left, but \
                 hand sections between tasks with down_read/up_read instead of \
                 read_lock_raw/read_unlock"
            }
        })
    }
}

/// How many reports one object keeps for [`ReportLog::take`]; later ones
/// are still counted and reported to the backend.
const LOG_MAX: usize = 64;

/// How many times a report tries the log's lock before it gives up on
/// logging (see `ReportLog::report`): some tens of microseconds.
const LOG_TRIES: usize = 1 << 14;

/// The misuse reports of one object (a percpu_ref or an SRCU domain),
/// whichever thread made them (a release or a confirmation that runs on a
/// worker, say), for the object's `take_reports`.
pub(crate) struct ReportLog(Mutex<Vec<Misuse>>);

impl ReportLog {
    pub(crate) fn new() -> Self {
        ReportLog(Mutex::new(Vec::new()))
    }

    /// Logs `m` here (up to [`LOG_MAX`]), then counts it and hands it to
    /// `R` as [`report`] does. The log's lock is tried a bounded number of
    /// times ([`LOG_TRIES`]), not waited for: a misuse made in an interrupt
    /// handler that landed on another report of the same object (whose
    /// lock the interrupted code holds) would otherwise spin for ever.
    /// Such a report is counted and handed to `R`, not logged. Another CPU
    /// holds the lock only for a push, well within the tries.
    pub(crate) fn report<R: Report>(&self, m: Misuse) {
        let mut tries = 0;
        let log = loop {
            if let Some(log) = self.0.try_lock() {
                break Some(log);
            }
            tries += 1;
            // Under loom a spin would only multiply the interleavings.
            if cfg!(loom) || tries >= LOG_TRIES {
                break None;
            }
            core::hint::spin_loop();
        };
        if let Some(mut log) = log {
            if log.len() < LOG_MAX {
                log.push(m);
            }
        }
        report::<R>(m);
    }

    /// The reports logged since the last call, oldest first.
    pub(crate) fn take(&self) -> Vec<Misuse> {
        core::mem::take(&mut *self.0.lock())
    }
}

static COUNTS: [AtomicUsize; Misuse::ALL.len()] =
    [const { AtomicUsize::new(0) }; Misuse::ALL.len()];

/// How many times `kind` was reported since boot (or process start).
///
/// # Examples
///
/// ```
/// use refcnt::misuse::misuse_count;
/// let _n = misuse_count(refcnt::Misuse::Underflow);
/// ```
pub fn misuse_count(kind: Misuse) -> usize {
    // Relaxed: a statistic; nothing is published through it.
    COUNTS[kind.index()].load(Ordering::Relaxed)
}

/// Counts `m` and hands it to `R`.
pub(crate) fn report<R: Report>(m: Misuse) {
    // Relaxed: a statistic; nothing is published through it.
    COUNTS[m.index()].fetch_add(1, Ordering::Relaxed);
    R::report(m);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    static HANDED: AtomicUsize = AtomicUsize::new(0);
    struct Sink;
    impl Report for Sink {
        fn report(_m: Misuse) {
            HANDED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A report made while the object's log is held (an interrupt handler
    /// that landed on another report of the same object, on its CPU)
    /// returns instead of spinning for ever: it is counted and handed to
    /// the backend, and only the log misses it.
    #[test]
    fn a_report_while_the_log_is_held_is_counted_not_stuck() {
        let log = ReportLog::new();
        let (handed, counted) = (
            HANDED.load(Ordering::Relaxed),
            misuse_count(Misuse::Underflow),
        );
        let held = log.0.lock();
        log.report::<Sink>(Misuse::Underflow);
        drop(held);
        assert_eq!(HANDED.load(Ordering::Relaxed), handed + 1);
        assert!(misuse_count(Misuse::Underflow) > counted);
        assert!(log.take().is_empty());
        log.report::<Sink>(Misuse::Underflow);
        assert_eq!(log.take(), [Misuse::Underflow]);
    }
}
