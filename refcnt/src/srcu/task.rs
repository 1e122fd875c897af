//! Which SRCU read sections a task holds, for the misuse check of
//! [`Srcu::synchronize`](super::Srcu::synchronize) and friends.
//!
//! Per-CPU counters cannot answer "is the caller inside a section of this
//! domain?": on a CPU that runs several tasks they also count the sections
//! of tasks that were switched out inside one, and a section handed to
//! another task is counted where it was entered. So a backend whose tasks
//! share CPUs keeps one [`TaskSections`] per task (the kernel swaps it at
//! every context switch, the host keeps one per thread) and hands it out
//! through [`Backend::with_task_sections`](crate::Backend::with_task_sections).
//! It is what Linux's lockdep does for `srcu_read_lock`: a per-task list of
//! held locks.

/// How many sections a [`TaskSections`] records by domain. A task that
/// nests deeper is still counted; while it does, the check can no longer
/// say which domains it is in and lets waits through (it never refuses a
/// wait that may be legal).
///
/// # Examples
///
/// ```
/// assert!(refcnt::srcu::TASK_SECTIONS >= 8);
/// ```
pub const TASK_SECTIONS: usize = 16;

/// Marks an entry of `TaskSections::ids` that names no section (domain
/// ids count up from 0 and never reach it).
const VACANT: usize = usize::MAX;

/// An entry of `TaskSections::ids`: the domain, and whether the section
/// is a raw one (`read_lock_raw`, left by `read_unlock`) rather than a
/// guard's, in the low bit, so that an unlock forgets only a section of
/// its own kind.
fn entry(id: usize, raw: bool) -> usize {
    id << 1 | raw as usize
}

/// The SRCU read sections one task is inside, by domain
/// ([`Srcu::id`](super::Srcu::id)), most recent last.
///
/// A backend only stores it (one per task) and lends it out; the
/// sections of checked SRCU domains record themselves in it (see
/// [`Kind`](super::Kind)). Sections left in any order are
/// found, and guards' sections are told from raw ones
/// ([`Srcu::read_lock_raw`](super::Srcu::read_lock_raw)), so a
/// `read_unlock` of a section another task entered never takes away the
/// record of the unlocking task's own guard. Sections handed between tasks
/// ([`Srcu::down_read`](super::Srcu::down_read)) are not recorded.
///
/// # Examples
///
/// ```
/// use refcnt::srcu::TaskSections;
/// let t = TaskSections::new();
/// assert_eq!(t.depth(), 0);
/// assert_eq!(t.holds(7), Some(false));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSections {
    /// Sections open, recorded or not.
    depth: usize,
    /// Set when a section could not be recorded (the task was already
    /// `TASK_SECTIONS` deep); cleared when the task leaves its last one.
    lost: bool,
    /// The first `min(depth, TASK_SECTIONS)` open sections ([`entry`]:
    /// domain and kind), or `VACANT` where one was left while others
    /// stayed unrecorded.
    ids: [usize; TASK_SECTIONS],
}

impl Default for TaskSections {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskSections {
    /// A task in no section.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(refcnt::srcu::TaskSections::new(), Default::default());
    /// ```
    pub const fn new() -> Self {
        TaskSections {
            depth: 0,
            lost: false,
            ids: [VACANT; TASK_SECTIONS],
        }
    }

    /// How many sections the task is inside, all domains together.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu, Backend};
    /// let s = Srcu::<Host>::new().unwrap();
    /// let _g = s.read_lock();
    /// assert_eq!(Host::with_task_sections(|t| t.depth()), Some(1));
    /// ```
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Whether the task is inside a section of domain `id`: `None` when it
    /// cannot tell (too deep to have recorded every section).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu, Backend};
    /// let (a, b) = (Srcu::<Host>::new().unwrap(), Srcu::<Host>::new().unwrap());
    /// let _g = a.read_lock();
    /// assert_eq!(Host::with_task_sections(|t| t.holds(a.id())), Some(Some(true)));
    /// assert_eq!(Host::with_task_sections(|t| t.holds(b.id())), Some(Some(false)));
    /// ```
    pub fn holds(&self, id: usize) -> Option<bool> {
        let held = |&e: &usize| e != VACANT && e >> 1 == id;
        if self.recorded().iter().any(held) {
            Some(true)
        } else if self.lost {
            None
        } else {
            Some(false)
        }
    }

    fn recorded(&self) -> &[usize] {
        &self.ids[..self.depth.min(TASK_SECTIONS)]
    }

    /// Records a section of domain `id`, raw or a guard's; returns the
    /// new depth.
    pub(crate) fn enter(&mut self, id: usize, raw: bool) -> usize {
        match self.ids.get_mut(self.depth) {
            Some(slot) => *slot = entry(id, raw),
            None => self.lost = true,
        }
        self.depth += 1;
        self.depth
    }

    /// Forgets the most recent section of domain `id` of the kind given
    /// (raw or a guard's). False if the task holds none (it is leaving a
    /// section another task entered); a section that was never recorded
    /// is taken to be the one left.
    pub(crate) fn exit(&mut self, id: usize, raw: bool) -> bool {
        let n = self.depth.min(TASK_SECTIONS);
        let e = entry(id, raw);
        if let Some(i) = self.ids[..n].iter().rposition(|&d| d == e) {
            self.ids.copy_within(i + 1..n, i);
            // The freed place stays empty even while unrecorded sections
            // remain (their domains are unknown).
            self.ids[n - 1] = VACANT;
        } else if !self.lost {
            return false;
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.lost = false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_any_order() {
        let mut t = TaskSections::new();
        assert_eq!(t.enter(1, false), 1);
        assert_eq!(t.enter(2, false), 2);
        assert_eq!(t.enter(1, false), 3);
        assert!(t.exit(1, false));
        assert_eq!(t.holds(1), Some(true));
        assert!(t.exit(1, false));
        assert_eq!(t.holds(1), Some(false));
        assert_eq!(t.holds(2), Some(true));
        assert!(!t.exit(3, false));
        assert!(t.exit(2, false));
        assert_eq!(t, TaskSections::new());
    }

    #[test]
    fn an_unlock_forgets_only_its_own_kind() {
        let mut t = TaskSections::new();
        t.enter(1, false); // a guard
        assert!(!t.exit(1, true), "a raw unlock took the guard's record");
        assert_eq!(t.holds(1), Some(true));
        t.enter(1, true);
        assert!(t.exit(1, true));
        assert_eq!(t.holds(1), Some(true), "the guard's record is gone");
        assert!(t.exit(1, false));
        assert_eq!(t, TaskSections::new());
    }

    #[test]
    fn too_deep_is_unknown_not_refused() {
        let mut t = TaskSections::new();
        for _ in 0..TASK_SECTIONS {
            t.enter(1, false);
        }
        assert_eq!(t.holds(2), Some(false));
        t.enter(2, false);
        assert_eq!(t.holds(2), None);
        assert_eq!(t.holds(1), Some(true));
        // Leaving a recorded one while too deep: its place is not reused.
        assert!(t.exit(1, false));
        assert_eq!(t.holds(1), Some(true));
        assert!(t.exit(1, false));
        // Leaving the unrecorded section: taken as one of those left.
        assert!(t.exit(2, false));
        for _ in 2..TASK_SECTIONS {
            assert_eq!(t.holds(1), Some(true));
            assert!(t.exit(1, false));
        }
        assert_eq!(t.depth(), 0);
        assert_eq!(t.holds(1), Some(false));
    }
}
