//! The type parameter of [`Srcu`](super::Srcu) and the checking
//! configuration; documented at [`Kind`].

use core::marker::PhantomData;

use super::Flavour;

mod sealed {
    pub trait Sealed {}
}

/// Whether the crate was built with the feature `checks`, which makes
/// every domain checked (see [`Kind`], "Checks").
///
/// # Examples
///
/// ```
/// // The host tests run with default features, which include `checks`.
/// assert_eq!(refcnt::srcu::CHECKS, cfg!(feature = "checks"));
/// ```
pub const CHECKS: bool = cfg!(feature = "checks");

/// The type parameter of [`Srcu`](super::Srcu): which flavour a domain
/// has, whether that is known at compile time, and whether its read
/// sections are checked.
///
/// A reader's lock and unlock test the flavour (a fence or not). With
/// [`Dynamic`], the default, the flavour is a field of the domain and each
/// side loads and tests it; with [`Normal`] or [`Fast`] it is a constant
/// and the test compiles away.
///
/// # Checks
///
/// A *checked* domain records every read section its readers enter in the
/// entering task's record ([`TaskSections`](super::TaskSections), through
/// [`Backend::with_task_sections`](crate::Backend::with_task_sections)),
/// which is what lets a grace-period wait inside the caller's own section
/// be refused ([`Misuse::SrcuSyncInReadSection`](crate::Misuse)), a
/// `read_unlock` of another task's section be reported, and too deep a
/// nesting be reported. Recording costs each lock and unlock a visit to
/// that record: in this workspace's kernel an interrupts-off window and
/// an out-of-line call on each side, which made an SRCU-fast lock+unlock
/// 99 ns against 18 ns without it (15 ns with the flavour in the type;
/// per-CPU inc+dec, the floor, 4.5 ns; 1 CPU under QEMU TCG). So, as
/// Linux keeps these checks in lockdep, they are a configuration:
///
/// * with the cargo feature `checks` (on by default, with `std`), every
///   domain is checked;
/// * without it (a kernel that turns default features off), only domains
///   whose type says so, [`Checked<K>`], are; the others' readers touch
///   nothing but their counters.
///
/// What an unchecked domain still checks: `read_unlock` of an index that
/// is not locked (that check runs in `read_unlock` itself, not in a
/// guard's drop), `cleanup` while busy, and, on a backend without per-task
/// records that can read its CPU's counters, a wait inside a section
/// counted on the caller's CPU (the per-CPU fallback, read only by the
/// wait; off for good after the domain's first `down_read`, whose section
/// may end on another CPU and leave the counts off). What it does not: a wait
/// inside the caller's own section on a backend with per-task records
/// (the wait never ends, as in Linux without lockdep), an unlock of
/// another task's section, nesting deeper than
/// [`MAX_NESTING`](super::MAX_NESTING).
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Checked, Fast, Flavour, Srcu}};
/// let fast = Srcu::<Host, Fast>::new().unwrap();
/// assert_eq!(fast.flavour(), Flavour::Fast);
/// let checked = Srcu::<Host, Checked<Fast>>::new().unwrap();
/// let g = checked.read_lock();
/// assert!(checked.synchronize().is_err()); // refused: checked in every configuration
/// drop(g);
/// ```
///
/// The trait is sealed: [`Dynamic`], [`Normal`], [`Fast`] and
/// [`Checked`] of one of them are its types.
///
/// ```
/// use refcnt::srcu::{Checked, Fast, Flavour, Kind, Normal};
/// assert_eq!(Fast::FLAVOUR, Some(Flavour::Fast));
/// assert_eq!(Checked::<Normal>::FLAVOUR, Some(Flavour::Normal));
/// assert!(Checked::<Fast>::CHECKED);
/// ```
pub trait Kind: sealed::Sealed + Send + Sync + 'static {
    /// The flavour, when the type fixes it; `None`: read from the domain.
    const FLAVOUR: Option<Flavour>;
    /// Whether domains of this type record their sections (always true
    /// with the feature `checks`).
    const CHECKED: bool;
}

/// The default: the flavour is chosen when the domain is made
/// ([`Srcu::new_fast`](super::Srcu::new_fast),
/// [`Srcu::with_flavour`](super::Srcu::with_flavour)) and read by every
/// lock and unlock. Checked only with the feature `checks`.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Dynamic, Flavour, Srcu}};
/// let s: Srcu<Host, Dynamic> = Srcu::new_fast().unwrap();
/// assert_eq!(s.flavour(), Flavour::Fast);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dynamic;

/// The normal flavour, fixed by the type (readers fence). Checked only
/// with the feature `checks`.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Flavour, Normal, Srcu}};
/// assert_eq!(Srcu::<Host, Normal>::new().unwrap().flavour(), Flavour::Normal);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Normal;

/// The fast flavour, fixed by the type (readers do not fence; updaters
/// wait for rcu-sched grace periods). Checked only with the feature
/// `checks`.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Fast, Flavour, Srcu}};
/// let s = Srcu::<Host, Fast>::new().unwrap();
/// drop(s.read_lock());
/// s.synchronize().unwrap();
/// assert_eq!(s.flavour(), Flavour::Fast);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fast;

/// `K`'s flavour, checked in every configuration (with or without the
/// feature `checks`): for tests, and for domains whose misuse would be
/// worth the readers' extra cost.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Checked, Normal, Srcu}};
/// let s = Srcu::<Host, Checked<Normal>>::new().unwrap();
/// let g = s.read_lock();
/// assert!(s.synchronize().is_err());
/// drop(g);
/// s.synchronize().unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked<K>(PhantomData<K>);

impl sealed::Sealed for Dynamic {}
impl sealed::Sealed for Normal {}
impl sealed::Sealed for Fast {}
impl<K: Kind> sealed::Sealed for Checked<K> {}

impl Kind for Dynamic {
    const FLAVOUR: Option<Flavour> = None;
    const CHECKED: bool = CHECKS;
}

impl Kind for Normal {
    const FLAVOUR: Option<Flavour> = Some(Flavour::Normal);
    const CHECKED: bool = CHECKS;
}

impl Kind for Fast {
    const FLAVOUR: Option<Flavour> = Some(Flavour::Fast);
    const CHECKED: bool = CHECKS;
}

impl<K: Kind> Kind for Checked<K> {
    const FLAVOUR: Option<Flavour> = K::FLAVOUR;
    const CHECKED: bool = true;
}
