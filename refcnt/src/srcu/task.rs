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

/// The SRCU read sections one task is inside, by domain
/// ([`Srcu::id`](super::Srcu::id)), most recent last.
///
/// A backend only stores it (one per task) and lends it out; the
/// sections of checked SRCU domains record themselves in it (see
/// [`Kind`](super::Kind)). Sections left in any order are
/// found. Sections handed between tasks
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
    /// The domains of the first `min(depth, TASK_SECTIONS)` open sections.
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
        if self.recorded().contains(&id) {
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

    /// Records a section of domain `id`; returns the new depth.
    pub(crate) fn enter(&mut self, id: usize) -> usize {
        match self.ids.get_mut(self.depth) {
            Some(slot) => *slot = id,
            None => self.lost = true,
        }
        self.depth += 1;
        self.depth
    }

    /// Forgets the most recent section of domain `id`. False if the task
    /// holds none (it is leaving a section another task entered); a
    /// section that was never recorded is taken to be the one left.
    pub(crate) fn exit(&mut self, id: usize) -> bool {
        let n = self.depth.min(TASK_SECTIONS);
        if let Some(i) = self.ids[..n].iter().rposition(|&d| d == id) {
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
        assert_eq!(t.enter(1), 1);
        assert_eq!(t.enter(2), 2);
        assert_eq!(t.enter(1), 3);
        assert!(t.exit(1));
        assert_eq!(t.holds(1), Some(true));
        assert!(t.exit(1));
        assert_eq!(t.holds(1), Some(false));
        assert_eq!(t.holds(2), Some(true));
        assert!(!t.exit(3));
        assert!(t.exit(2));
        assert_eq!(t, TaskSections::new());
    }

    #[test]
    fn too_deep_is_unknown_not_refused() {
        let mut t = TaskSections::new();
        for _ in 0..TASK_SECTIONS {
            t.enter(1);
        }
        assert_eq!(t.holds(2), Some(false));
        t.enter(2);
        assert_eq!(t.holds(2), None);
        assert_eq!(t.holds(1), Some(true));
        // Leaving a recorded one while too deep: its place is not reused.
        assert!(t.exit(1));
        assert_eq!(t.holds(1), Some(true));
        assert!(t.exit(1));
        // Leaving the unrecorded section: taken as one of those left.
        assert!(t.exit(2));
        for _ in 2..TASK_SECTIONS {
            assert_eq!(t.holds(1), Some(true));
            assert!(t.exit(1));
        }
        assert_eq!(t.depth(), 0);
        assert_eq!(t.holds(1), Some(false));
    }
}
