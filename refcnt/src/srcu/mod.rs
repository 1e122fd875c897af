//! SRCU: sleepable read-copy-update.
//!
//! A domain ([`Srcu`]) lets readers enter and leave read-side sections
//! almost for free, and sleep inside them (block on a lock, wait for I/O);
//! an updater can wait for every section that was already running when it
//! asked ([`Srcu::synchronize`]), or queue a callback to run after that
//! ([`Srcu::call`]). [`SrcuPtr`] packages the common use: readers borrow the
//! current value for as long as they hold a section, an updater swaps in a
//! new value and gets the old one back, or has it dropped, only once no
//! reader can still be looking at it.
//!
//! Unlike rcu-sched ([`Backend::synchronize_sched`]), sections here are not
//! "interrupts off": they are counted, so they may last as long as they
//! like, and a slow reader in one domain delays only that domain's updaters.
//!
//! # Counters
//!
//! Each domain owns four per-CPU counters: `lock[0]`, `lock[1]`,
//! `unlock[0]`, `unlock[1]`, plus a shared word `idx` whose low bit names
//! the *active* index. A reader reads `idx`, adds one to its CPU's
//! `lock[i]`, and remembers `i`; when it leaves it adds one to (whatever
//! CPU it is on then) `unlock[i]`. Counters only ever grow (wrapping), each
//! CPU writes only its own, and a reader never does a read-modify-write on
//! a shared line. The number of readers inside on index `i` is
//! `sum(lock[i]) - sum(unlock[i])` over all CPUs; single CPUs' values mean
//! nothing, since a sleeping reader may wake up on another CPU.
//!
//! # A grace period
//!
//! An updater (one at a time; the others share its result, see below):
//!
//! 1. *scan 1*: waits until index `!active` has no readers;
//! 2. *flip*: makes `!active` the active index;
//! 3. *scan 2*: waits until the old active index has no readers.
//!
//! A scan of index `i` reads `S_u = sum(unlock[i])`, then an ordering point
//! (a full fence in the normal flavour, a whole rcu-sched grace period in
//! the fast one), then `S_l = sum(lock[i])`, and is satisfied when
//! `S_l == S_u`. Until it is, it retries, waiting in between
//! ([`Backend::wait_until`]: a kernel backend sleeps there).
//!
//! # Why a reader can never be missed
//!
//! Call the updater's earlier writes (say, storing a new pointer) `W`.
//! Take any reader `R`, on index `i`, and a scan of `i`.
//!
//! *Counting is sound.* Every reader increments `lock[i]` before
//! `unlock[i]`, with an ordering point in between (the reader's fence
//! before its unlock in the normal flavour; the rcu-sched grace period
//! around the scan's middle in the fast one). The scan reads unlocks first
//! and locks second, with its own ordering point in between. So every
//! unlock that the scan counted belongs to a reader whose lock it also
//! counted: the unlocks seen are a subset of the readers whose locks were
//! seen. If the two sums are equal, that subset is the whole set: every
//! reader whose lock the scan saw has also left. (Counters are a machine
//! word wide: a wrap would need 2^64 sections to start during one scan.)
//!
//! *A reader the scan did not see is harmless.* If the scan's lock sum
//! missed `R`'s increment, then `R`'s increment came after the scan's
//! ordering point in the global order of fences (normal: `R` has a full
//! fence right after its increment; fast: `R`'s increment is itself an
//! rcu-sched section, which began after the scan's grace period began).
//! Either way `R`'s section sees everything the updater wrote before the
//! scan, `W` included, and so it never saw the old value that is about to
//! be freed.
//!
//! *Why two scans and a flip.* Reading `idx` and incrementing `lock[idx]`
//! are two steps. A reader may read the active index, be delayed, and
//! increment it much later, after another updater flipped: it then sits on
//! the index that is now inactive, having started long after that
//! updater's scan. Scan 1 catches exactly these late readers before the
//! flip turns their index active again. After the flip, new readers go to
//! the new index, so scan 2 waits only for readers that started before it:
//! a steady stream of new readers cannot starve the updater. Scan 1 waits
//! only for the few readers that read `idx` before the previous flip (at
//! most one per task that was between its two steps), so it cannot be
//! starved either.
//!
//! *The flip itself.* A reader that reads the new `idx` must also see `W`:
//! the updater's fence before the flip pairs with the reader's fence after
//! its increment (normal), or scan 1's rcu-sched grace period, which ended
//! before the flip, orders it (fast). The fence after the flip makes a
//! reader whose unlock scan 2 missed pick the new index at its next lock,
//! so at most one stale increment per task can land on an old index.
//!
//! *After the grace period.* The scan that saw a reader's unlock is ordered
//! after that reader's whole section (same pairing as above), so freeing
//! after [`Srcu::synchronize`] returns happens after every pre-existing
//! reader's last access.
//!
//! # Two flavours: normal and fast
//!
//! * **Normal** ([`Srcu::new`]): a reader pays one full memory fence on
//!   lock and one on unlock; an updater's scan pays a fence. Pick it when
//!   updates are frequent or latency-sensitive (idle `synchronize` takes
//!   microseconds), or when readers run where an rcu-sched read-side
//!   section is not available.
//! * **Fast** ([`Srcu::new_fast`]): the reader's increments carry no fence,
//!   only a compiler barrier, and run as (tiny) rcu-sched read-side
//!   sections ([`Backend::this_cpu_add_sched`]); every scan instead waits for
//!   an rcu-sched grace period ([`Backend::synchronize_sched`]). Pick it
//!   when reads vastly outnumber updates: the read pair costs about what a
//!   per-CPU increment and decrement do, and `synchronize` costs at least
//!   two rcu-sched grace periods.
//!
//! A domain has one flavour for its whole life, chosen at construction:
//! by the constructor for `Srcu<B>` (its type parameter is [`Dynamic`]:
//! each lock and unlock loads and tests the flavour), or by the type,
//! `Srcu<B, Normal>` or `Srcu<B, Fast>` (the test compiles away; see
//! [`Kind`]).
//!
//! # Sharing grace periods
//!
//! A sequence word counts grace-period starts and ends (odd while one runs).
//! A caller takes a *cookie*: the value the word will have once a grace
//! period that starts after this moment has ended. Whoever holds the
//! updater lock runs grace periods until the word reaches the oldest cookie
//! it serves; everybody else waits until the word passes their cookie. So
//! any number of concurrent `synchronize` calls cost at most two grace
//! periods. [`Srcu::get_state`], [`Srcu::start_poll`] and
//! [`Srcu::poll_state`] expose cookies directly.
//!
//! # Callbacks
//!
//! [`Srcu::call`] queues a callback with a cookie, in one FIFO per domain
//! (so callbacks run in the order they were queued, on every CPU). A worker
//! scheduled through [`Backend::queue_work`] runs grace periods and then the
//! callbacks whose cookie has passed; it never runs in the caller's context.
//!
//! # Misuse
//!
//! Reported through the backend ([`Misuse`]) and returned as an
//! [`SrcuError`], never undefined behaviour:
//!
//! * waiting for a grace period (`synchronize*`, `barrier`,
//!   [`SrcuPtr::replace`]) inside a read section of the same domain, which
//!   would wait for itself forever ([`Misuse::SrcuSyncInReadSection`]);
//! * [`Srcu::read_unlock`] of an index that no [`Srcu::read_lock_raw`]
//!   section holds, or [`Srcu::up_read`] of one that no [`Srcu::down_read`]
//!   section holds (each ends only its own kind, as in Linux, where
//!   lockdep tells them apart); a guard's section cannot be ended either
//!   way, so no grace period ends under a live guard
//!   ([`Misuse::SrcuBadUnlock`]);
//! * [`Srcu::cleanup`] while readers are inside or callbacks are pending
//!   ([`Misuse::SrcuCleanupBusy`]);
//! * more than [`MAX_NESTING`] sections open at once in one task
//!   ([`Misuse::SrcuNestingOverflow`]);
//! * [`Srcu::read_unlock`] of a section another task entered
//!   ([`Misuse::SrcuUnlockOtherTask`]; the section is left all the same).
//!
//! The first, fourth and fifth need every section recorded as it is
//! entered, which costs the readers (in this workspace's kernel, 5x the
//! rest of an SRCU-fast lock+unlock), so they are a *checking
//! configuration*, as Linux keeps them in lockdep: they run in every
//! domain when the crate is built with the feature `checks` (a default
//! feature: the host tests, loom and Miri run with it), and otherwise only
//! in domains of type `Srcu<B, Checked<_>>`. An unchecked domain's reader
//! touches only its counters; a wait inside its own section then waits
//! forever (on a backend without per-task records the per-CPU fallback
//! below still refuses it), as Linux's does without lockdep. [`Kind`]
//! lists what is and is not checked.
//!
//! The read-section check asks the calling task's record of its open
//! sections ([`TaskSections`], through [`Backend::with_task_sections`]):
//! it refuses only a wait for a domain whose section the caller itself
//! entered and has not left, whatever other tasks of the same CPU hold.
//! A backend without per-task records falls back to the calling CPU's
//! counters ([`Backend::this_cpu_read`]), exact only when each CPU runs
//! one task (the loom backend) and no section changes CPUs; one that can
//! read neither turns the check off rather than risk a false alarm.
//! Sections entered with [`Srcu::down_read`] may change tasks and are not
//! recorded, so the check cannot see them (nor can Linux's lockdep); as
//! they may also end on another CPU, leaving both CPUs' counts off, a
//! domain's first `down_read` turns the per-CPU fallback off for good.
//!
//! # Examples
//!
//! ```
//! use refcnt::{host::Host, srcu::Srcu};
//! let srcu = Srcu::<Host>::new().unwrap();
//! {
//!     let _g = srcu.read_lock();
//!     // ... read, sleep, read ...
//! }
//! srcu.synchronize().unwrap();
//! ```
//!
//! Differences from Linux: `read_unlock` validates its index and returns a
//! `Result`; the guard type unlocks on drop; `cleanup` consumes the domain
//! and gives it back on failure; callbacks are boxed closures.

mod kind;
mod ptr;
mod task;

pub use kind::{Checked, Dynamic, Fast, Kind, Normal, CHECKS};
pub use ptr::SrcuPtr;
pub use task::{TaskSections, TASK_SECTIONS};

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::compiler_fence;

use crate::backend::{AllocError, Backend};
use crate::misuse::{Misuse, ReportLog};
use crate::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use crate::sync::Mutex;

/// Puts an SRCU sequence back to the even value it had before a grace
/// period that a panic abandoned (see `Inner::one_gp`); forgotten when the
/// grace period ends normally.
struct Abandoned<'a> {
    seq: &'a AtomicUsize,
    back_to: usize,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        // Relaxed: written under `gp_lock`, which the unwinding caller
        // still holds; waiters only compare it with their targets, and an
        // even value below them keeps them waiting.
        self.seq.store(self.back_to, Ordering::Relaxed);
    }
}

/// Takes one away from `n` unless it is zero; whether it did. Acquire on
/// success (see `Srcu::check_unlock`). A compare-exchange loop, which
/// loom's atomics model too.
fn take_one(n: &AtomicUsize) -> bool {
    // Relaxed: the value only decides whether to try; the exchange orders.
    let mut cur = n.load(Ordering::Relaxed);
    while cur != 0 {
        match n.compare_exchange_weak(cur, cur - 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}

/// Per-CPU counter slots of a domain.
/// The per-CPU slot counting lock operations on index `idx` (0 or 1).
/// Arithmetic, not a table: no load and no bounds check on the fast path.
#[inline(always)]
const fn lock_slot(idx: usize) -> usize {
    idx & 1
}

/// The per-CPU slot counting unlock operations on index `idx`.
#[inline(always)]
const fn unlock_slot(idx: usize) -> usize {
    2 + (idx & 1)
}

const SLOTS: usize = 4;

/// How many read sections one task may hold open at once (all domains;
/// for a backend without per-task records, one domain's on one CPU) before
/// [`Misuse::SrcuNestingOverflow`] is reported (once, when the depth
/// reaches it; checked domains only, see [`Kind`]). Deeper nesting keeps working (counters are a machine word);
/// the report says that a guard or a raw index was probably leaked.
///
/// # Examples
///
/// ```
/// assert!(refcnt::srcu::MAX_NESTING >= 1 << 16);
/// ```
pub const MAX_NESTING: usize = 1 << 20;

/// How many times an expedited wait re-scans with a pause hint before it
/// falls back to [`Backend::wait_until`].
const EXPEDITED_SPINS: u32 = 1000;

/// Which reader/updater trade-off a domain makes (see the
/// [module documentation](self)).
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Flavour, Srcu}};
/// assert_eq!(Srcu::<Host>::new_fast().unwrap().flavour(), Flavour::Fast);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Readers fence; updaters scan with fences.
    Normal,
    /// Readers do not fence; updaters scan with rcu-sched grace periods.
    Fast,
}

/// Why an SRCU operation was refused. Each is also reported as a
/// [`Misuse`] through the backend.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Srcu, SrcuError}};
/// let srcu = Srcu::<Host>::new().unwrap();
/// let err = srcu.read_unlock(7).unwrap_err();
/// assert_eq!(err, SrcuError::BadUnlock { domain: srcu.id(), index: 7 });
/// assert!(err.to_string().contains("not locked"));
/// // An error type: `?` carries it into a `Box<dyn Error>`.
/// let boxed: Box<dyn std::error::Error> = err.into();
/// assert!(boxed.to_string().contains("not locked"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcuError {
    /// A grace-period wait was asked for inside a read section of the same
    /// domain, where it would wait for itself forever. Nothing was waited
    /// for.
    SyncInReadSection {
        /// [`Srcu::id`] of the domain.
        domain: usize,
    },
    /// `read_unlock` of an index that no section entered with
    /// `read_lock_raw` holds, `up_read` of one that no section entered
    /// with `down_read` holds, or an index that is not 0 or 1. No counter
    /// was changed.
    BadUnlock {
        /// [`Srcu::id`] of the domain.
        domain: usize,
        /// The index that was passed.
        index: usize,
    },
    /// `cleanup` while read sections were still open.
    ReadersActive {
        /// [`Srcu::id`] of the domain.
        domain: usize,
        /// How many sections were open.
        readers: usize,
    },
    /// `cleanup` while callbacks queued by [`Srcu::call`] had not all run.
    CallbacksPending {
        /// [`Srcu::id`] of the domain.
        domain: usize,
        /// How many had not run.
        callbacks: usize,
    },
}

impl core::error::Error for SrcuError {}

impl fmt::Display for SrcuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SrcuError::SyncInReadSection { domain } => write!(
                f,
                "srcu domain {domain}: grace-period wait inside a read section of the same \
                 domain would deadlock; leave the section first or use call()"
            ),
            SrcuError::BadUnlock { domain, index } => write!(
                f,
                "srcu domain {domain}: read_unlock({index}) or up_read({index}) of an index \
                 that is not locked by an open section of its kind (read_unlock ends read_lock_raw \
                 sections, up_read ends down_read sections; a guard's section ends when the \
                 guard is dropped)"
            ),
            SrcuError::ReadersActive { domain, readers } => write!(
                f,
                "srcu domain {domain}: cleanup with {readers} read section(s) still open; \
                 end them first (drop every guard, read_unlock or up_read every index)"
            ),
            SrcuError::CallbacksPending { domain, callbacks } => write!(
                f,
                "srcu domain {domain}: cleanup with {callbacks} callback(s) not yet run; \
                 call barrier() first"
            ),
        }
    }
}

/// A grace-period cookie from [`Srcu::get_state`] or [`Srcu::start_poll`],
/// for [`Srcu::poll_state`]. Meaningful only for the domain that made it.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::Srcu};
/// let srcu = Srcu::<Host>::new().unwrap();
/// let a = srcu.get_state();
/// let b = srcu.get_state();
/// assert_eq!(a, b); // no grace period started in between
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cookie(usize);

/// Whether sequence value `seq` has reached cookie `target`, allowing for
/// wrap-around.
fn seq_done(seq: usize, target: usize) -> bool {
    (seq.wrapping_sub(target) as isize) >= 0
}

/// The sequence value at which a grace period that starts after a caller
/// saw `seq` will have ended: the next start if idle (even), the one after
/// the running one if busy (odd).
fn seq_snap(seq: usize) -> usize {
    seq.wrapping_add(3) & !1
}

/// Identifies domains in reports; unique for the life of the program.
/// Plain core atomic: a statistic, not part of any model.
static NEXT_ID: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);

type Callback = Box<dyn FnOnce() + Send>;

struct Callbacks {
    /// In queueing order; cookies never decrease along the queue.
    queue: VecDeque<(usize, Callback)>,
    /// A `start_poll` asked for a grace period ending at this cookie.
    poll_target: Option<usize>,
    /// The worker has been handed to `B::queue_work` and has not yet found
    /// the queue empty.
    worker_scheduled: bool,
}

/// The shared part of a domain: [`SrcuPtr`]s and the callback worker keep
/// it alive.
struct Inner<B: Backend> {
    percpu: B::PerCpu,
    /// Flip counter; the active index is its low bit. Written only under
    /// `gp_lock`.
    idx: AtomicUsize,
    /// What readers load instead of `idx`: [`reader_word`] of the active
    /// index (the per-CPU offset of its lock counter, with the index in
    /// bit 0), so that a reader finds both the index and where to add in
    /// one load, and its unlock needs no load at all (Linux's SRCU-fast
    /// reads one pointer, `srcu_ctrp`, the same way). Stored right after
    /// `idx`, under `gp_lock`.
    readers_at: AtomicUsize,
    /// Grace-period sequence: odd while one runs. Written only under
    /// `gp_lock`.
    seq: AtomicUsize,
    gp_lock: Mutex<()>,
    callbacks: Mutex<Callbacks>,
    /// Callbacks queued so far (written under `callbacks`).
    queued: AtomicUsize,
    /// Callbacks that have returned.
    invoked: AtomicUsize,
    flavour: Flavour,
    id: usize,
    /// This domain's misuse reports ([`Srcu::take_reports`]).
    log: ReportLog,
    /// Open sections entered with `read_lock_raw` or `down_read`, per
    /// index: what `read_unlock` and `up_read` may end. A raw unlock first
    /// takes one away (never below zero) and is refused when there is
    /// none, so it can never end a guard's section: the counters a grace
    /// period scans always include every live guard, which is what lets
    /// [`SrcuPtr::read`] hand out borrows in safe code. (Without it, an
    /// extra `read_unlock(g.index())` balanced the counters under a live
    /// guard, a grace period ended, and `SrcuPtr::replace` freed what
    /// the guard's borrow still pointed into.) Only `read_lock_raw` and
    /// `read_unlock` touch it; guards do not.
    raw_open: [AtomicUsize; 2],
    /// The same for sections entered with `down_read`, which only
    /// `up_read` ends. Kept apart so that each unlock ends only its own
    /// kind: an `up_read` of a `read_lock_raw` section would leave the
    /// entering task's record saying it is inside for ever (its waits
    /// refused), and a `read_unlock` of a `down_read` section would take
    /// away a record the task made for another of its sections (its wait
    /// inside that one let through, to wait for itself).
    handoff_open: [AtomicUsize; 2],
    /// Set by the first `down_read`. A section handed between tasks may
    /// end on another CPU than it began on, which leaves the per-CPU
    /// counts of both CPUs off by one for good: the misuse check's per-CPU
    /// fallback (backends without per-task records) cannot tell from then
    /// on, and lets waits through rather than refuse a legal one.
    handed: AtomicBool,
}

/// Who holds a read section, for the calling task's record (checked
/// domains) and for which unlock may end it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// A guard of [`Srcu::read_lock`]: recorded, left by its drop.
    Guard,
    /// [`Srcu::read_lock_raw`]: recorded, left by [`Srcu::read_unlock`].
    Raw,
    /// [`Srcu::down_read`]: any task may leave it, with [`Srcu::up_read`];
    /// not recorded.
    Handoff,
}

/// An SRCU domain (see the [module documentation](self)).
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::Srcu};
/// let srcu = Srcu::<Host>::new().unwrap();
/// let g = srcu.read_lock();
/// assert!(g.index() < 2);
/// drop(g);
/// srcu.synchronize().unwrap();
/// srcu.cleanup().map_err(|e| e.error).unwrap();
/// ```
pub struct Srcu<B: Backend, K: Kind = Dynamic> {
    inner: Arc<Inner<B>>,
    _kind: PhantomData<K>,
}

impl<B: Backend, K: Kind> fmt::Debug for Srcu<B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srcu")
            .field("id", &self.inner.id)
            .field("flavour", &self.inner.flavour)
            .field("completed", &self.completed())
            .finish()
    }
}

/// A read section of a domain; leaves it when dropped. Not `Send`: a
/// section is left on the thread that entered it (see [`Srcu::read_unlock`]
/// for the raw form, which has no such rule).
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::Srcu};
/// let srcu = Srcu::<Host>::new().unwrap();
/// let outer = srcu.read_lock();
/// let inner = srcu.read_lock(); // sections nest
/// drop(inner);
/// drop(outer);
/// ```
#[must_use = "dropping the guard leaves the read section at once"]
pub struct SrcuReadGuard<'a, B: Backend, K: Kind = Dynamic> {
    srcu: &'a Srcu<B, K>,
    /// The section's reader word ([`reader_word`]): its index and where
    /// its unlock adds, with no load.
    word: usize,
    _not_send: PhantomData<*const ()>,
}

impl<B: Backend, K: Kind> SrcuReadGuard<'_, B, K> {
    /// The index this section counted itself on (0 or 1), as Linux's
    /// `srcu_read_lock` returns it.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// assert!(srcu.read_lock().index() <= 1);
    /// ```
    pub fn index(&self) -> usize {
        word_index(self.word)
    }

    /// The domain this section belongs to.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// assert_eq!(srcu.read_lock().srcu().id(), srcu.id());
    /// ```
    pub fn srcu(&self) -> &Srcu<B, K> {
        self.srcu
    }
}

impl<B: Backend, K: Kind> Drop for SrcuReadGuard<'_, B, K> {
    #[inline]
    fn drop(&mut self) {
        // The guard is not `Send`: the task that entered leaves.
        self.srcu.unlock(self.word, Holder::Guard);
    }
}

impl<B: Backend, K: Kind> fmt::Debug for SrcuReadGuard<'_, B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrcuReadGuard")
            .field("domain", &self.srcu.inner.id)
            .field("index", &self.index())
            .finish()
    }
}

/// [`Srcu::cleanup`] refused; the domain is handed back.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, srcu::{Srcu, SrcuError}};
/// let srcu = Srcu::<Host>::new().unwrap();
/// let idx = srcu.read_lock_raw();
/// let failed = srcu.cleanup().unwrap_err();
/// assert!(matches!(failed.error, SrcuError::ReadersActive { readers: 1, .. }));
/// let srcu = failed.srcu;
/// srcu.read_unlock(idx).unwrap();
/// srcu.cleanup().map_err(|e| e.error).unwrap();
/// ```
pub struct CleanupError<B: Backend, K: Kind = Dynamic> {
    /// The domain, unchanged.
    pub srcu: Srcu<B, K>,
    /// Why cleanup was refused.
    pub error: SrcuError,
}

impl<B: Backend, K: Kind> fmt::Debug for CleanupError<B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanupError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<B: Backend, K: Kind> fmt::Display for CleanupError<B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

/// A reader's word for index `idx` of counters whose key is `key`: the
/// offset of the index's lock counter (`key + 8 * idx`, bit 0 clear, as
/// keys are 8-aligned offsets: backend promise 7 and the slots' size) with
/// `idx` in bit 0.
const fn reader_word(key: usize, idx: usize) -> usize {
    key.wrapping_add(8 * (idx & 1)) | (idx & 1)
}

/// The index a reader's word names.
const fn word_index(word: usize) -> usize {
    word & 1
}

/// The key a reader's word was made from (exactly: `word & !1` is
/// `key + 8 * idx`, so a kernel's `key + 8 * slot` folds back to one
/// `and` of the word).
const fn word_key(word: usize) -> usize {
    (word & !1).wrapping_sub(8 * word_index(word))
}

impl<B: Backend> Inner<B> {
    fn new(flavour: Flavour) -> Result<Self, AllocError> {
        let percpu = B::alloc_percpu(SLOTS)?;
        let key = B::key(&percpu);
        Ok(Inner {
            percpu,
            readers_at: AtomicUsize::new(reader_word(key, 0)),
            idx: AtomicUsize::new(0),
            seq: AtomicUsize::new(0),
            gp_lock: Mutex::new(()),
            callbacks: Mutex::new(Callbacks {
                queue: VecDeque::new(),
                poll_target: None,
                worker_scheduled: false,
            }),
            queued: AtomicUsize::new(0),
            invoked: AtomicUsize::new(0),
            flavour,
            // Relaxed: only uniqueness matters.
            id: NEXT_ID.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            log: ReportLog::new(),
            raw_open: [AtomicUsize::new(0), AtomicUsize::new(0)],
            handoff_open: [AtomicUsize::new(0), AtomicUsize::new(0)],
            handed: AtomicBool::new(false),
        })
    }

    // ---- readers ---------------------------------------------------------

    /// Enters a section; in a checked domain (`K`), records it as the
    /// calling task's unless `holder` hands it between tasks
    /// ([`Srcu::down_read`]).
    #[inline]
    #[allow(unsafe_code)] // the fast flavour's unchecked add, see SAFETY
    fn lock<K: Kind>(&self, holder: Holder) -> usize {
        // Relaxed: a stale index is allowed; scan 1 of the next grace
        // period exists to catch it (module docs, "two scans"). The index
        // and the offset come from one load, so they agree.
        let word = self.readers_at.load(Ordering::Relaxed);
        let idx = word_index(word);
        // A constant unless `K` is `Dynamic`: then one load of the field.
        match K::FLAVOUR.unwrap_or(self.flavour) {
            Flavour::Normal => {
                B::this_cpu_add(&self.percpu, lock_slot(idx), 1);
                // Reader fence B. Closes the race "the scan misses this
                // increment, yet this section reads the old value": if the
                // scan's lock sum misses the increment, this fence comes
                // after the scan's fence in the global fence order, so the
                // section sees every write the updater made before it. It
                // also pairs with the fence before the flip: a reader that
                // read the new index sees the updater's earlier writes.
                fence(Ordering::SeqCst);
            }
            Flavour::Fast => {
                // The increment is an rcu-sched section of its own; the
                // scan's grace period does what fence B does above.
                // SAFETY: `word_key(word)` is the key of `self.percpu`
                // (`readers_at` holds only `reader_word(B::key(&self.percpu), _)`),
                // which has four slots; `lock_slot` is below 2.
                unsafe {
                    B::this_cpu_add_sched_unchecked(&self.percpu, word_key(word), lock_slot(idx), 1)
                };
                // Keeps the compiler from hoisting the section's loads
                // above the increment; the CPU side is the grace period's.
                compiler_fence(Ordering::SeqCst);
            }
        }
        // A constant: an unchecked domain's reader ends here.
        if K::CHECKED && holder != Holder::Handoff {
            self.record_enter(idx, holder == Holder::Raw);
        }
        word
    }

    /// Leaves a section; in a checked domain (`K`), unless `holder` hands
    /// sections between tasks, also forgets it in the calling task's
    /// record and returns false if the task held no section of this
    /// domain and kind there (another task entered it). Otherwise true.
    #[inline]
    #[allow(unsafe_code)] // the fast flavour's unchecked add, see SAFETY
    fn unlock<K: Kind>(&self, word: usize, holder: Holder) -> bool {
        let idx = word_index(word);
        match K::FLAVOUR.unwrap_or(self.flavour) {
            Flavour::Normal => {
                // Reader fence C. Closes the race "the scan counts this
                // unlock while the section's accesses are still in flight":
                // a scan that sees the unlock increment has its own fence
                // ordered after this one, so every access of the section
                // happens before whatever the updater does after the scan
                // (freeing the old value). It also makes the lock increment
                // visible no later than the unlock one, which the counting
                // argument needs.
                fence(Ordering::SeqCst);
                B::this_cpu_add(&self.percpu, unlock_slot(idx), 1);
            }
            Flavour::Fast => {
                // The compiler must not sink the section's accesses below
                // the increment; the scan's grace period orders the CPU.
                compiler_fence(Ordering::SeqCst);
                // SAFETY: as in `lock`: `word` came from `lock` (or from
                // `reader_word` of that key), so `word_key(word)` is the
                // key of `self.percpu`; `unlock_slot` is 2 or 3, of four.
                unsafe {
                    B::this_cpu_add_sched_unchecked(
                        &self.percpu,
                        word_key(word),
                        unlock_slot(idx),
                        1,
                    )
                };
            }
        }
        // A backend without per-task records cannot tell: not reported.
        !(K::CHECKED && holder != Holder::Handoff)
            || B::with_task_sections(|t| t.exit(self.id, holder == Holder::Raw)).unwrap_or(true)
    }

    /// Records the new section as the calling task's (if the backend keeps
    /// per-task records) and reports, once at the threshold, a
    /// suspiciously deep nesting (the task's, all domains together; else
    /// this domain's on this CPU).
    #[inline]
    fn record_enter(&self, idx: usize, raw: bool) {
        let depth = B::with_task_sections(|t| t.enter(self.id, raw)).or_else(|| {
            let l = B::this_cpu_read(&self.percpu, lock_slot(idx))?;
            let u = B::this_cpu_read(&self.percpu, unlock_slot(idx))?;
            Some(l.wrapping_sub(u))
        });
        if depth == Some(MAX_NESTING) {
            self.log.report::<B>(Misuse::SrcuNestingOverflow);
        }
    }

    /// Open sections counted on this CPU, if the backend can tell.
    fn this_cpu_depth(&self) -> Option<isize> {
        let mut depth = 0usize;
        for i in 0..2 {
            let l = B::this_cpu_read(&self.percpu, lock_slot(i))?;
            let u = B::this_cpu_read(&self.percpu, unlock_slot(i))?;
            depth = depth.wrapping_add(l.wrapping_sub(u));
        }
        Some(depth as isize)
    }

    /// Refuses a grace-period wait from inside this domain's read section
    /// (one the calling task entered and has not left). Never refuses a
    /// wait it cannot prove illegal: a caller that frees on success must
    /// not be sent down an error path for a section that is not its own.
    fn check_not_reader(&self) -> Result<(), SrcuError> {
        let inside = match B::with_task_sections(|t| t.holds(self.id)) {
            // Recorded per task: exact, or unknown when nested too deep.
            Some(held) => held == Some(true),
            // Per-CPU counts: exact when each CPU runs one task and no
            // section has changed CPUs. Relaxed: a `down_read` whose
            // section could have moved here reached this CPU through
            // whatever carried its index, which carries the flag too.
            None => {
                !self.handed.load(Ordering::Relaxed) && self.this_cpu_depth().is_some_and(|d| d > 0)
            }
        };
        if inside {
            self.log.report::<B>(Misuse::SrcuSyncInReadSection);
            return Err(SrcuError::SyncInReadSection { domain: self.id });
        }
        Ok(())
    }

    /// The open-section counts of raw sections entered as `holder`.
    fn open_of(&self, holder: Holder) -> &[AtomicUsize; 2] {
        match holder {
            Holder::Handoff => &self.handoff_open,
            Holder::Raw | Holder::Guard => &self.raw_open,
        }
    }

    fn readers(&self) -> usize {
        (0..2)
            .map(|i| {
                B::sum(&self.percpu, lock_slot(i))
                    .wrapping_sub(B::sum(&self.percpu, unlock_slot(i)))
            })
            .fold(0, usize::wrapping_add)
    }

    // ---- grace periods ---------------------------------------------------

    /// True once no reader counted on `idx` remains (see the module docs for
    /// why unlocks are read first).
    fn scan(&self, idx: usize) -> bool {
        let unlocks = B::sum(&self.percpu, unlock_slot(idx));
        match self.flavour {
            // Updater fence A, partner of reader fences B and C: an unlock
            // counted above implies its lock is counted below, a lock
            // missed below implies that reader sees our earlier writes, and
            // a reader whose unlock we counted finished all its accesses
            // before whatever follows this fence.
            Flavour::Normal => fence(Ordering::SeqCst),
            // Fast readers have no fences; a whole rcu-sched grace period
            // stands in for fence A. Every increment is its own rcu-sched
            // section, so each one either ended before this returns (and is
            // visible to the lock sum, with the section's earlier accesses
            // ordered before us), or began after the grace period began
            // (and its section sees our earlier writes).
            Flavour::Fast => B::synchronize_sched(),
        }
        let locks = B::sum(&self.percpu, lock_slot(idx));
        locks == unlocks
    }

    fn wait_readers(&self, idx: usize, expedited: bool) {
        if expedited {
            for _ in 0..EXPEDITED_SPINS {
                if self.scan(idx) {
                    return;
                }
                core::hint::spin_loop();
            }
        }
        B::wait_until(&mut || self.scan(idx));
    }

    /// Runs one grace period. Caller holds `gp_lock`.
    fn one_gp(&self, expedited: bool) {
        // Relaxed: only holders of gp_lock write seq and idx, and the lock
        // orders them.
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // If a panic leaves this grace period half done (the backend's
        // `synchronize_sched` refusing a caller inside an rcu-sched
        // section, say), the sequence must not stay odd: every later grace
        // period would then read "idle" as "running" and end the waits of
        // callers that snapped during it one grace period early, under
        // their readers. Put back, it says this grace period never
        // happened, which is true; the next one scans both indexes from
        // whichever is active, as any does.
        let abandoned = Abandoned {
            seq: &self.seq,
            back_to: s,
        };
        // Closes the race "a caller snapshotted the sequence before this
        // grace period started, yet the scans miss its earlier writes": the
        // caller fenced before reading the (even) sequence, this fence
        // follows our odd store, so the caller's fence precedes ours and
        // everything the caller wrote is ordered before our scans.
        fence(Ordering::SeqCst);
        let cur = self.idx.load(Ordering::Relaxed);
        // Scan 1: late readers still counting themselves on the inactive
        // index (they read idx before the previous flip).
        self.wait_readers((cur.wrapping_add(1)) & 1, expedited);
        // Fence D1, partner of reader fence B: a reader that reads the
        // flipped index sees what we wrote before it (fast flavour: scan
        // 1's rcu-sched grace period already ordered it).
        fence(Ordering::SeqCst);
        self.idx.store(cur.wrapping_add(1), Ordering::Relaxed);
        // Relaxed, as `idx`: the readers' copy, ordered by the same fences.
        self.readers_at.store(
            reader_word(B::key(&self.percpu), cur.wrapping_add(1)),
            Ordering::Relaxed,
        );
        // Fence D2: a reader whose unlock scan 2 misses will read the new
        // index at its next lock, so no task piles increments onto the old
        // index while we wait for it.
        fence(Ordering::SeqCst);
        // Scan 2: every reader on the old active index.
        self.wait_readers(cur & 1, expedited);
        core::mem::forget(abandoned);
        // Release: pairs with the Acquire load in `wait_for`/`poll_state`;
        // a waiter that sees the end sees what the scans established.
        self.seq.store(s.wrapping_add(2), Ordering::Release);
        B::wake_waiters();
    }

    /// A cookie for a grace period that starts after the caller's earlier
    /// writes.
    fn snap(&self) -> usize {
        // Pairs with the fence after the odd store in `one_gp` (see there).
        fence(Ordering::SeqCst);
        seq_snap(self.seq.load(Ordering::Relaxed))
    }

    fn done(&self, target: usize) -> bool {
        // Acquire: pairs with the Release that ended the grace period.
        let d = seq_done(self.seq.load(Ordering::Acquire), target);
        if d {
            // The caller may free what readers used: order that after the
            // grace period's scans even for a caller that did not run it.
            fence(Ordering::SeqCst);
        }
        d
    }

    /// Waits until the sequence reaches `target`, running grace periods
    /// when nobody else is.
    fn wait_for(&self, target: usize, expedited: bool) {
        loop {
            if self.done(target) {
                return;
            }
            if let Some(g) = self.gp_lock.try_lock() {
                while !seq_done(self.seq.load(Ordering::Relaxed), target) {
                    self.one_gp(expedited);
                }
                fence(Ordering::SeqCst);
                drop(g);
                // Waiters on the lock (below) may take it now.
                B::wake_waiters();
                return;
            }
            // Another updater runs grace periods: wait until ours has
            // passed or the lock is free (it may stop short of our target).
            B::wait_until(&mut || self.done(target) || self.gp_lock.try_lock().is_some());
        }
    }

    // ---- callbacks -------------------------------------------------------

    fn schedule_worker(self: &Arc<Self>) {
        let me = Arc::clone(self);
        B::queue_work(Box::new(move || me.work()));
    }

    fn request_worker(self: &Arc<Self>, q: &mut Callbacks) -> bool {
        !core::mem::replace(&mut q.worker_scheduled, true)
    }

    /// The callback worker: runs grace periods and ripe callbacks until
    /// there is nothing left to do.
    fn work(self: &Arc<Self>) {
        loop {
            let target = {
                let mut q = self.callbacks.lock();
                let last = q.queue.back().map(|e| e.0);
                match (last, q.poll_target) {
                    (None, None) => {
                        q.worker_scheduled = false;
                        return;
                    }
                    (Some(t), None) | (None, Some(t)) => t,
                    (Some(a), Some(b)) => {
                        if seq_done(a, b) {
                            a
                        } else {
                            b
                        }
                    }
                }
            };
            self.wait_for(target, false);
            let ready: Vec<Callback> = {
                let mut q = self.callbacks.lock();
                // Relaxed: wait_for returned after an Acquire load and a
                // fence; the value only grows.
                let seq = self.seq.load(Ordering::Relaxed);
                if q.poll_target.is_some_and(|t| seq_done(seq, t)) {
                    q.poll_target = None;
                }
                let n = q
                    .queue
                    .iter()
                    .take_while(|(c, _)| seq_done(seq, *c))
                    .count();
                q.queue.drain(..n).map(|(_, f)| f).collect()
            };
            for f in ready {
                f();
                // Release: pairs with the Acquire in `barrier`; whoever sees
                // the count sees the callback's effects.
                self.invoked.fetch_add(1, Ordering::Release);
            }
            // `barrier` may be waiting for these.
            B::wake_waiters();
        }
    }
}

impl<B: Backend> Srcu<B, Dynamic> {
    /// A new domain of the fast flavour (readers do not fence; updaters pay
    /// with rcu-sched grace periods), like Linux's SRCU-fast. The flavour
    /// is read by each lock and unlock; [`Srcu<B, Fast>`](Fast) fixes it
    /// in the type instead.
    ///
    /// # Errors
    ///
    /// [`AllocError`] if the per-CPU counters cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new_fast().unwrap();
    /// drop(srcu.read_lock());
    /// srcu.synchronize().unwrap();
    /// ```
    pub fn new_fast() -> Result<Self, AllocError> {
        Self::with_flavour(Flavour::Fast)
    }

    /// A new domain of the given flavour.
    ///
    /// # Errors
    ///
    /// [`AllocError`] if the per-CPU counters cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Flavour, Srcu}};
    /// let srcu = Srcu::<Host>::with_flavour(Flavour::Fast).unwrap();
    /// assert_eq!(srcu.flavour(), Flavour::Fast);
    /// ```
    pub fn with_flavour(flavour: Flavour) -> Result<Self, AllocError> {
        Self::make(flavour)
    }
}

impl<B: Backend, K: Kind> Srcu<B, K> {
    /// A new domain, like Linux's `init_srcu_struct`: of `K`'s flavour,
    /// or of the normal one (readers fence; see the
    /// [module documentation](self)) when `K` is [`Dynamic`].
    ///
    /// # Errors
    ///
    /// [`AllocError`] if the per-CPU counters cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Fast, Flavour, Srcu}};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// assert_eq!(srcu.flavour(), Flavour::Normal);
    /// assert_eq!(Srcu::<Host, Fast>::new().unwrap().flavour(), Flavour::Fast);
    /// ```
    pub fn new() -> Result<Self, AllocError> {
        Self::make(K::FLAVOUR.unwrap_or(Flavour::Normal))
    }

    fn make(flavour: Flavour) -> Result<Self, AllocError> {
        Ok(Srcu {
            inner: Arc::new(Inner::new(flavour)?),
            _kind: PhantomData,
        })
    }

    /// Enters a section and returns its reader word (see [`Inner::lock`]).
    #[inline(always)]
    fn lock(&self, holder: Holder) -> usize {
        self.inner.lock::<K>(holder)
    }

    /// Leaves the section of reader word `word` (see [`Inner::unlock`]).
    #[inline(always)]
    fn unlock(&self, word: usize, holder: Holder) -> bool {
        self.inner.unlock::<K>(word, holder)
    }

    /// Leaves a section entered on index `idx` (0 or 1) by a raw lock.
    fn unlock_index(&self, idx: usize, holder: Holder) -> bool {
        self.unlock(reader_word(B::key(&self.inner.percpu), idx), holder)
    }

    /// This domain's flavour.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::{Flavour, Srcu}};
    /// assert_eq!(Srcu::<Host>::new().unwrap().flavour(), Flavour::Normal);
    /// ```
    pub fn flavour(&self) -> Flavour {
        self.inner.flavour
    }

    /// A number naming this domain in reports and errors, unique for the
    /// life of the program.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let a = Srcu::<Host>::new().unwrap();
    /// let b = Srcu::<Host>::new().unwrap();
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn id(&self) -> usize {
        self.inner.id
    }

    /// Enters a read section; it lasts until the guard is dropped. May be
    /// nested, and the holder may sleep. Never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let g = srcu.read_lock();
    /// std::thread::sleep(std::time::Duration::from_millis(1)); // allowed
    /// drop(g);
    /// ```
    #[inline]
    pub fn read_lock(&self) -> SrcuReadGuard<'_, B, K> {
        SrcuReadGuard {
            word: self.lock(Holder::Guard),
            srcu: self,
            _not_send: PhantomData,
        }
    }

    /// Enters a read section and returns its index, for [`read_unlock`]
    /// (Linux's `srcu_read_lock`). Prefer [`read_lock`], whose guard cannot
    /// be unlocked twice. The section belongs to the calling task, which
    /// must also leave it (the misuse check of `synchronize` knows it as
    /// this task's); to hand a section to another task, use
    /// [`down_read`] and [`up_read`].
    ///
    /// [`read_lock`]: Srcu::read_lock
    /// [`read_unlock`]: Srcu::read_unlock
    /// [`down_read`]: Srcu::down_read
    /// [`up_read`]: Srcu::up_read
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let idx = srcu.read_lock_raw();
    /// srcu.read_unlock(idx).unwrap();
    /// ```
    #[inline]
    pub fn read_lock_raw(&self) -> usize {
        self.open_raw(self.lock(Holder::Raw), Holder::Raw)
    }

    /// Leaves a read section entered with [`read_lock_raw`] by the calling
    /// task (Linux's `srcu_read_unlock`). Leaving a section another task
    /// entered still leaves it (no grace period is held up), but, in a
    /// checked domain ([`Kind`]), is reported as
    /// [`Misuse::SrcuUnlockOtherTask`]: the task that entered still counts
    /// as inside for the misuse check (use
    /// [`down_read`](Srcu::down_read) and [`up_read`](Srcu::up_read) for
    /// sections that change hands).
    ///
    /// # Errors
    ///
    /// [`SrcuError::BadUnlock`] (and [`Misuse::SrcuBadUnlock`]) if `idx` is
    /// not 0 or 1, or if no section entered with `read_lock_raw` holds
    /// `idx`; no counter changes. A section entered with
    /// [`down_read`](Srcu::down_read) is left with
    /// [`up_read`](Srcu::up_read), not here. A guard's section
    /// ([`read_lock`](Srcu::read_lock)) is left only by dropping the
    /// guard: an unlock of its index is refused, in every flavour, so that
    /// no grace period can end while a guard (and a borrow from
    /// [`SrcuPtr::read`]) is alive.
    ///
    /// [`read_lock_raw`]: Srcu::read_lock_raw
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let idx = srcu.read_lock_raw();
    /// srcu.read_unlock(idx).unwrap();
    /// assert!(srcu.read_unlock(idx).is_err()); // not locked any more
    /// let g = srcu.read_lock();
    /// assert!(srcu.read_unlock(g.index()).is_err()); // a guard's section
    /// drop(g);
    /// let handed = srcu.down_read();
    /// assert!(srcu.read_unlock(handed).is_err()); // up_read's to end
    /// srcu.up_read(handed).unwrap();
    /// ```
    pub fn read_unlock(&self, idx: usize) -> Result<(), SrcuError> {
        self.check_unlock(idx, Holder::Raw)?;
        if !self.unlock_index(idx, Holder::Raw) {
            self.inner.log.report::<B>(Misuse::SrcuUnlockOtherTask);
        }
        Ok(())
    }

    /// Enters a read section that may be left by another task, with
    /// [`up_read`](Srcu::up_read) (Linux's `srcu_down_read`): for a
    /// section that spans a hand-off, such as I/O submitted by one task and
    /// completed by another. It is not recorded as the calling task's, so
    /// a `synchronize` of this domain by a task that holds one is not
    /// refused: it waits for itself forever, as in Linux. Returns the index
    /// to pass to `up_read`.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = std::sync::Arc::new(Srcu::<Host>::new().unwrap());
    /// let idx = srcu.down_read();
    /// let s = srcu.clone();
    /// std::thread::spawn(move || s.up_read(idx).unwrap()).join().unwrap();
    /// assert_eq!(srcu.readers(), 0);
    /// ```
    #[inline]
    pub fn down_read(&self) -> usize {
        // Relaxed: see `Inner::handed`. Loaded first, so that the shared
        // line is written once, not at every hand-off.
        if !self.inner.handed.load(Ordering::Relaxed) {
            self.inner.handed.store(true, Ordering::Relaxed);
        }
        self.open_raw(self.lock(Holder::Handoff), Holder::Handoff)
    }

    /// Counts a section just entered by a raw call (`raw_open` or
    /// `handoff_open`, by `holder`) and returns its index.
    fn open_raw(&self, word: usize, holder: Holder) -> usize {
        let idx = word_index(word);
        // Release: the section's lock count (added just before) happens
        // before any unlock that takes this one away (Acquire in
        // `check_unlock`), as a section's lock precedes its unlock.
        self.inner.open_of(holder)[idx].fetch_add(1, Ordering::Release);
        idx
    }

    /// Leaves a section entered with [`down_read`](Srcu::down_read), on
    /// any task (Linux's `srcu_up_read`).
    ///
    /// # Errors
    ///
    /// As [`read_unlock`](Srcu::read_unlock): [`SrcuError::BadUnlock`] for
    /// an index that no `down_read` section holds; nothing changes. A
    /// section entered with [`read_lock_raw`](Srcu::read_lock_raw) belongs
    /// to its task and is left with `read_unlock`, not here.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let idx = srcu.down_read();
    /// srcu.up_read(idx).unwrap();
    /// assert!(srcu.up_read(idx).is_err());
    /// let own = srcu.read_lock_raw();
    /// assert!(srcu.up_read(own).is_err()); // read_unlock's to end
    /// srcu.read_unlock(own).unwrap();
    /// ```
    pub fn up_read(&self, idx: usize) -> Result<(), SrcuError> {
        self.check_unlock(idx, Holder::Handoff)?;
        self.unlock_index(idx, Holder::Handoff);
        Ok(())
    }

    /// Takes away one open section of `idx` entered as `holder` says
    /// (`raw_open` or `handoff_open`), or refuses the unlock if there is
    /// none (see `read_unlock`).
    fn check_unlock(&self, idx: usize, holder: Holder) -> Result<(), SrcuError> {
        let inner = &*self.inner;
        // Acquire on success: pairs with the Release increment in
        // `open_raw`, so the section's lock count happens before the
        // unlock count added next. Relaxed on failure: nothing is done.
        let bad = idx > 1 || !take_one(&inner.open_of(holder)[idx]);
        if bad {
            self.inner.log.report::<B>(Misuse::SrcuBadUnlock);
            return Err(SrcuError::BadUnlock {
                domain: inner.id,
                index: idx,
            });
        }
        Ok(())
    }

    /// Waits until every read section that was open when it was called has
    /// been left (Linux's `synchronize_srcu`). Sleeps through
    /// [`Backend::wait_until`] while readers remain. Concurrent callers share
    /// grace periods.
    ///
    /// # Errors
    ///
    /// [`SrcuError::SyncInReadSection`] (and
    /// [`Misuse::SrcuSyncInReadSection`]) if the caller is inside a read
    /// section of this domain: the wait would never end. Detected in a
    /// checked domain (the feature `checks`, or `Srcu<B, Checked<_>>`),
    /// and on a backend without per-task records that can read its CPU's
    /// counters, until the domain's first `down_read`; see [`Kind`].
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// srcu.synchronize().unwrap();
    /// let g = srcu.read_lock();
    /// assert!(srcu.synchronize().is_err()); // would deadlock
    /// drop(g);
    /// ```
    pub fn synchronize(&self) -> Result<(), SrcuError> {
        self.inner.check_not_reader()?;
        self.inner.wait_for(self.inner.snap(), false);
        Ok(())
    }

    /// As [`synchronize`](Srcu::synchronize), but re-scans with a pause
    /// hint before sleeping, trading CPU time for latency (Linux's
    /// `synchronize_srcu_expedited`).
    ///
    /// # Errors
    ///
    /// As [`synchronize`](Srcu::synchronize).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let before = srcu.completed();
    /// srcu.synchronize_expedited().unwrap();
    /// assert!(srcu.completed() > before);
    /// ```
    pub fn synchronize_expedited(&self) -> Result<(), SrcuError> {
        self.inner.check_not_reader()?;
        self.inner.wait_for(self.inner.snap(), true);
        Ok(())
    }

    /// Queues `f` to run once every read section open now has been left
    /// (Linux's `call_srcu`). `f` runs on a worker (the domain's grace-period
    /// work, through [`Backend::queue_work`]), never inside this call; callbacks of one
    /// domain run in the order they were queued. May be called inside a
    /// read section.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// use std::sync::{atomic::{AtomicBool, Ordering}, Arc};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let r = ran.clone();
    /// srcu.call(move || r.store(true, Ordering::Release));
    /// srcu.barrier().unwrap();
    /// assert!(ran.load(Ordering::Acquire));
    /// ```
    pub fn call(&self, f: impl FnOnce() + Send + 'static) {
        self.inner.call(Box::new(f));
    }

    /// Waits until every callback queued by [`call`](Srcu::call) before this
    /// call has run (Linux's `srcu_barrier`).
    /// Not from inside one of this domain's callbacks: it would wait for
    /// itself.
    ///
    /// # Errors
    ///
    /// [`SrcuError::SyncInReadSection`] inside a read section of this
    /// domain (the callbacks wait for that section), where detected, as
    /// for [`synchronize`](Srcu::synchronize).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// srcu.call(|| {});
    /// srcu.barrier().unwrap();
    /// srcu.cleanup().map_err(|e| e.error).unwrap();
    /// ```
    pub fn barrier(&self) -> Result<(), SrcuError> {
        let inner = &*self.inner;
        inner.check_not_reader()?;
        let n = {
            let _q = inner.callbacks.lock();
            // Relaxed: read under the lock every increment is made under.
            inner.queued.load(Ordering::Relaxed)
        };
        // Acquire: pairs with the Release after each callback returns.
        B::wait_until(&mut || {
            (inner.invoked.load(Ordering::Acquire).wrapping_sub(n) as isize) >= 0
        });
        Ok(())
    }

    /// A cookie for a grace period that begins after this call, without
    /// starting one (Linux's `get_state_synchronize_srcu`). Some later
    /// `synchronize`, `call` worker or [`start_poll`](Srcu::start_poll)
    /// must run it.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let c = srcu.get_state();
    /// assert!(!srcu.poll_state(c));
    /// srcu.synchronize().unwrap();
    /// assert!(srcu.poll_state(c));
    /// ```
    pub fn get_state(&self) -> Cookie {
        Cookie(self.inner.snap())
    }

    /// As [`get_state`](Srcu::get_state), and makes sure a grace period
    /// will run without anybody waiting for it (Linux's
    /// `start_poll_synchronize_srcu`): the callback worker runs it.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let c = srcu.start_poll();
    /// while !srcu.poll_state(c) {
    ///     std::thread::yield_now();
    /// }
    /// ```
    pub fn start_poll(&self) -> Cookie {
        let inner = &self.inner;
        let target = inner.snap();
        let schedule = {
            let mut q = inner.callbacks.lock();
            q.poll_target = Some(match q.poll_target {
                Some(t) if seq_done(t, target) => t,
                _ => target,
            });
            inner.request_worker(&mut q)
        };
        if schedule {
            inner.schedule_worker();
        }
        Cookie(target)
    }

    /// Whether the grace period of `cookie` has ended (Linux's
    /// `poll_state_synchronize_srcu`). When it returns true, every read
    /// section that was open when the cookie was taken has been left, and
    /// the caller is ordered after them.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let c = srcu.get_state();
    /// srcu.synchronize().unwrap();
    /// assert!(srcu.poll_state(c));
    /// ```
    pub fn poll_state(&self, cookie: Cookie) -> bool {
        self.inner.done(cookie.0)
    }

    /// How many grace periods this domain has completed.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// assert_eq!(srcu.completed(), 0);
    /// srcu.synchronize().unwrap();
    /// assert_eq!(srcu.completed(), 1);
    /// ```
    pub fn completed(&self) -> usize {
        // Relaxed: a statistic.
        self.inner.seq.load(Ordering::Relaxed) / 2
    }

    /// Misuse reports about this domain since the last call, oldest first
    /// (up to 64 are kept), whichever thread made them. Each is also
    /// counted ([`misuse_count`](crate::misuse::misuse_count)) and
    /// reported to the backend. Takes the log's lock: not from an
    /// interrupt handler. A misuse made by an interrupt handler that landed
    /// on another report of this domain is counted and reported to the
    /// backend, not kept here.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu, Misuse};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// assert!(srcu.read_unlock(1).is_err());
    /// assert_eq!(srcu.take_reports(), [Misuse::SrcuBadUnlock]);
    /// ```
    pub fn take_reports(&self) -> Vec<Misuse> {
        self.inner.log.take()
    }

    /// How many read sections are open, summed over all CPUs. Racy while
    /// readers come and go; exact when they cannot.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// let g = srcu.read_lock();
    /// assert_eq!(srcu.readers(), 1);
    /// drop(g);
    /// assert_eq!(srcu.readers(), 0);
    /// ```
    pub fn readers(&self) -> usize {
        self.inner.readers()
    }

    /// Tears the domain down (Linux's `cleanup_srcu_struct`).
    ///
    /// # Errors
    ///
    /// Refuses, reporting [`Misuse::SrcuCleanupBusy`] and handing the
    /// domain back, while read sections entered with
    /// [`read_lock_raw`](Srcu::read_lock_raw) are open
    /// ([`SrcuError::ReadersActive`]) or callbacks queued by
    /// [`call`](Srcu::call) have not run ([`SrcuError::CallbacksPending`];
    /// call [`barrier`](Srcu::barrier) first). Guards cannot be open: they
    /// borrow the domain.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu};
    /// let srcu = Srcu::<Host>::new().unwrap();
    /// srcu.cleanup().map_err(|e| e.error).unwrap();
    /// ```
    pub fn cleanup(self) -> Result<(), CleanupError<B, K>> {
        let inner = &*self.inner;
        let readers = inner.readers();
        let error = if readers != 0 {
            SrcuError::ReadersActive {
                domain: inner.id,
                readers,
            }
        } else {
            let callbacks = {
                let _q = inner.callbacks.lock();
                // Relaxed: `queued` is read under the lock it is written
                // under; `invoked` only needs to be at least as new as
                // what the caller observed (barrier's Acquire).
                inner
                    .queued
                    .load(Ordering::Relaxed)
                    .wrapping_sub(inner.invoked.load(Ordering::Acquire))
            };
            if callbacks == 0 {
                return Ok(());
            }
            SrcuError::CallbacksPending {
                domain: inner.id,
                callbacks,
            }
        };
        self.inner.log.report::<B>(Misuse::SrcuCleanupBusy);
        Err(CleanupError { srcu: self, error })
    }
}

impl<B: Backend> Inner<B> {
    fn call(self: &Arc<Self>, f: Callback) {
        let schedule = {
            let mut q = self.callbacks.lock();
            // Taken under the lock so cookies never decrease along the
            // queue; `snap` fences first, ordering the caller's earlier
            // writes before the grace period that will run `f`.
            let cookie = self.snap();
            q.queue.push_back((cookie, f));
            // Relaxed: written and read under `callbacks`.
            self.queued.fetch_add(1, Ordering::Relaxed);
            self.request_worker(&mut q)
        };
        if schedule {
            self.schedule_worker();
        }
    }
}
