//! `percpu_ref`: a reference count whose gets and puts touch only the
//! calling CPU's counter, until someone needs to know whether it is zero.
//!
//! # How it works
//!
//! A ref has two counters: one word shared by everybody (`count`) and one
//! per-CPU slot per CPU (allocated by the [`Backend`]). A mode word in the
//! shared state says which one the fast paths use, and the handle keeps
//! one word for the fast paths (the *word*): the backend's
//! [`key`](Backend::key) of the per-CPU slot with the ATOMIC flag in bit
//! 0, as Linux keeps its `percpu_count_ptr`. A get or put first tries
//! [`Backend::this_cpu_add_unless`]: in one read-side section, load the
//! word, test the flag and, in per-CPU mode, add to this CPU's slot. In
//! atomic mode (or while the word lags a switch back to per-CPU mode) it
//! does an atomic read-modify-write on `count`, with no section: `count`
//! is a correct place to count in either mode (see "Switching back"). In a
//! kernel the whole fast path is a load of the word from the handle, a
//! test of a register and a `gs:`-relative add, as Linux's. In per-CPU
//! mode a CPU's slot may go "negative" (wrap), because a reference taken
//! on one CPU may be dropped on another: only the sum over all CPUs means
//! anything.
//!
//! While in per-CPU mode, `count` carries a large bias, so that no atomic
//! put (from a reader that still saw atomic mode) can take it to zero.
//!
//! **Switching to atomic** sets the ATOMIC bit in the mode word and the
//! flag in the handle's word (every switch to atomic is asked for through
//! the handle, under the control lock), then waits for a grace period
//! ([`Backend::synchronize_sched`] or, asynchronously,
//! [`Backend::call_sched_atomic`], whose callback may run in the
//! interrupt that ends the grace period and there only tries the control
//! lock). Then it adds the per-CPU sum (what changed since the last fold)
//! to `count` and removes the bias in one read-modify-write.
//!
//! # Why no reader is missed
//!
//! Every fast path loads the word and applies its change inside one
//! read-side section. Take any reader and the grace period of a switch:
//!
//! * if the reader's section began before the grace period started, the
//!   grace period waits for it, and its per-CPU add is visible to the fold
//!   that follows (backend promise 3 of [`Backend`]);
//! * if it began after, it sees the flag, which was stored before the
//!   grace period started (promise 3's second half), so it goes to the
//!   slow path, which counts on `count`.
//!
//! So the fold sees every per-CPU change that will ever be made in that
//! per-CPU period, and `count` alone is exact afterwards: the ordering
//! comes from the grace period, not from the load. (Linux gets the same
//! from `READ_ONCE` under `rcu_read_lock_sched`.) The word's flag may lag
//! the mode word the other way: a fast path that sees it set while the
//! mode is already per-CPU again just takes the slow path, which counts on
//! `count` (correct in either mode) and then clears the flag (below).
//!
//! **Switching back to per-CPU** needs no grace period: it adds the bias to
//! `count` and then clears ATOMIC (a `Release` store), then the word's
//! flag (`Release`; the fast path loads the word `Acquire`, backend
//! promise 6). A reader that still sees the flag does an atomic
//! operation, which is always correct, and the bias keeps `count` above
//! zero until the next fold removes it. A switch back that lands in a
//! grace-period callback (asked for while a switch to atomic was in
//! flight) has no handle to write the word in; the first get whose slow path
//! finds the mode per-CPU clears the flag, under the control lock (only
//! tried: a slow path may run in an interrupt handler), so that it cannot
//! undo a switch to atomic that set it meanwhile (loom's
//! `word_catch_up_vs_kill`). Each per-CPU counter slot has exactly one
//! writer, its own CPU, and is never reset: the fold subtracts the sum it
//! folded last time instead. So there is no cross-CPU write to a slot that
//! a fast path adds to.
//!
//! **Release** runs when `count` reaches zero in atomic mode, which can only
//! happen after the initial reference is dropped by [`PercpuRef::kill`].
//! Puts on `count` are `Release`, and the put that reaches zero issues an
//! `Acquire` fence before calling release (as `Arc` does); the fold is a
//! `Release` read-modify-write on the same word, so whatever the grace
//! period made visible to the folding CPU is visible to whoever releases.
//!
//! A life ends with one release: the release is claimed by a compare and
//! swap on a per-ref counter of lives, so a misused extra put that reaches
//! zero again is reported ([`Misuse::RepeatedZero`]), not run twice.
//!
//! # Serialised switches
//!
//! All mode changes take one per-ref lock (a spin lock; the fast paths
//! never take it). At most one grace-period switch is in flight. A request
//! made while one is in flight is not lost: switch-to-atomic confirmations
//! ride on the flight, kill confirmations (which need every CPU to see the
//! DEAD bit, stored after the flight's grace period may have begun) get a
//! further grace period, and a switch-to-per-CPU request is carried out when
//! the flight lands. The callback never blocks on the lock of another
//! switch.
//!
//! A flight holds a reference on `count` from its start until its last
//! confirmations have run (including those that needed a further grace
//! period), so every confirmation runs before the release that the
//! flight, or a kill during it, makes possible.
//!
//! `tryget_live`'s slow path (the test of DEAD and the increment of
//! `count`) is one read-side section, so a kill's grace period waits for
//! any that began before it: once the confirmation has run, no
//! `tryget_live` can succeed anywhere.
//!
//! # Dynamic mode (beyond Linux)
//!
//! With [`Flags::DYNAMIC`] a ref starts atomic, as in the 2013 patch that
//! introduced per-CPU refcounting, and counts its gets in the top bits of
//! `count` (one atomic add does both). Every [`DYNAMIC_BATCH`] gets, it
//! compares the time the batch took with the configured rate (default
//! [`DEFAULT_DYNAMIC_RATE`] gets a second); a faster batch switches the ref
//! to per-CPU. A ref never switches after kill. The low bits hold the
//! reference count; every test of the count masks the top bits off.
//! [`resurrect`](PercpuRef::resurrect) starts the measurement again; an
//! explicit [`switch_to_percpu`](PercpuRef::switch_to_percpu) or
//! [`switch_to_atomic`](PercpuRef::switch_to_atomic) ends the dynamic mode,
//! the user's choice holding in later lives too, as Linux's modes do.
//!
//! **A dynamic ref allocates its per-CPU counters only when it first goes
//! per-CPU**, which is the point of the mode (the 2013 patch's: the many
//! refs that are never hot, one per AIO context there, should not each pay
//! per-CPU memory). Until then its handle's word is the flag alone (key 0,
//! never used), so its fast path falls to the slow path with the same
//! instructions as any atomic ref: the fast path is not changed by this
//! (no "are there counters?" test). The switch is
//! decided on a get, which may run with interrupts off or in an interrupt
//! handler, so it allocates with [`Backend::alloc_percpu_nowait`] (never
//! waits, may fail) under a lock it only tries; when either fails the ref
//! stays atomic, counting exactly, and the next hot batch tries again
//! ([`Stats::alloc_failures`] counts the failures).
//! [`switch_to_percpu`](PercpuRef::switch_to_percpu) allocates the same
//! way; without memory it leaves the ref measuring its rate.
//!
//! The ref is then an ordinary atomic ref with counters and goes per-CPU
//! as any other (bias, then the mode and the word's flag cleared with
//! `Release`). The counters are published to the fast paths before any
//! word names them: first a pointer in the shared state (for backends
//! whose fast path uses the counters themselves), then the word in the
//! handle, both `Release`; a fast path loads the word `Acquire` (a plain
//! load on x86) and, only if it needs them, the pointer `Acquire`. (loom's
//! `dynamic_first_switch_allocates_while_getting` races a get with the
//! first switch.) Only a caller that holds the handle allocates, since the
//! word lives there; a switch that lands from a grace-period callback and
//! finds no counters goes back to measuring instead.
//!
//! **Freeing**: once allocated, the counters stay until
//! [`exit`](PercpuRef::exit) or the drop, across switches to atomic and
//! back, not freed after the grace period that ends a per-CPU period. A
//! fast path reaches them through the word without a read-side section
//! count, and the handle's word cannot stop naming them while another CPU
//! may be between its load and its add; `exit` can, because `&mut self`
//! proves that no fast path of this handle runs. A ref that went hot once
//! is likely to again (a queue frozen and unfrozen), and keeping the
//! counters makes each later switch free of allocation; an idle ref that
//! was hot costs its 8 bytes per CPU until exit, as every non-dynamic ref
//! does from creation.
//!
//! # Differences from Linux
//!
//! * `get` returns a guard ([`RefGuard`]) that puts on drop;
//!   [`RefGuard::leak`] or [`PercpuRef::get_many`] give the explicit form.
//! * The per-CPU counters live until [`exit`](PercpuRef::exit) (as
//!   Linux's `percpu_ref_exit`) or the drop, not only until kill (so every
//!   ref can be resurrected; [`Flags::ALLOW_REINIT`] is accepted for
//!   parity). A ref without counters (dynamic and idle, or exited) keeps
//!   the flag set in its word, so the fast path never checks whether they
//!   exist (a branch, which under QEMU's TCG also ends a translation
//!   block).
//! * The word with the per-CPU key and the ATOMIC flag lives in the
//!   handle, as Linux's in the ref, but a switch back to per-CPU that
//!   lands in a grace-period callback (which holds only the shared state)
//!   leaves the flag for the next get's slow path to clear; Linux's callback
//!   writes the ref itself.
//! * A dynamic ref allocates its counters when it first goes per-CPU (the
//!   2013 patch's way); Linux's percpu_ref, which has no dynamic mode,
//!   allocates them at init.
//! * A kill confirmation always waits for a grace period that began after
//!   the kill, even when the ref was already atomic (Linux confirms such a
//!   ref at once): then no `tryget_live` that was already running can
//!   succeed after the confirmation, in any mode. The flight holds a
//!   reference across that grace period, so the confirmation still runs
//!   before the release that the kill may cause.
//! * Misuse is reported and repaired, see [`Misuse`].

use alloc::{boxed::Box, sync::Arc, vec::Vec};
use core::fmt;
use core::ops::BitOr;

use crate::backend::{AllocError, Backend, CallbackContext};
use crate::misuse::{Misuse, ReportLog};
use crate::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use crate::sync::{Mutex, MutexGuard};

/// Options for [`PercpuRef::new`], combined with `|`.
///
/// # Examples
///
/// ```
/// use refcnt::percpu_ref::Flags;
/// let f = Flags::INIT_ATOMIC | Flags::ALLOW_REINIT;
/// assert!(f.contains(Flags::INIT_ATOMIC));
/// assert!(!f.contains(Flags::INIT_DEAD));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u32);

impl Flags {
    /// Start in atomic mode and stay there until
    /// [`PercpuRef::switch_to_percpu`].
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap();
    /// assert_eq!(r.stats().mode, Mode::Atomic);
    /// assert_eq!(r.count_atomic(), 1); // exact, as in any atomic ref
    /// r.switch_to_percpu();
    /// assert_eq!(r.stats().mode, Mode::PerCpu);
    /// ```
    pub const INIT_ATOMIC: Flags = Flags(1);
    /// Start dead, with a count of zero; [`PercpuRef::reinit`] or
    /// [`PercpuRef::resurrect`] brings it to life.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_DEAD).unwrap();
    /// assert!(r.is_dying() && r.is_zero());
    /// assert!(r.tryget_live().is_none());
    /// assert!(r.reinit());
    /// assert!(r.tryget_live().is_some());
    /// ```
    pub const INIT_DEAD: Flags = Flags(2);
    /// Linux's permission to resurrect after kill; always granted here.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// // Without the flag too: a killed ref comes back.
    /// for flags in [Flags::ALLOW_REINIT, Flags::empty()] {
    ///     let r = PercpuRef::<Host>::new(|| {}, flags).unwrap();
    ///     let g = r.get();
    ///     r.kill();
    ///     assert!(r.resurrect());
    ///     drop(g);
    ///     assert!(r.tryget_live().is_some());
    /// }
    /// ```
    pub const ALLOW_REINIT: Flags = Flags(4);
    /// Start atomic and switch to per-CPU by itself once gets are frequent;
    /// the per-CPU counters are allocated then, so an idle dynamic ref
    /// takes no per-CPU memory (see the module documentation).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::DYNAMIC).unwrap();
    /// let s = r.stats();
    /// assert_eq!((s.mode, s.percpu), (Mode::DynamicAtomic, false));
    /// // Gets far faster than the default rate switch it to per-CPU.
    /// for _ in 0..100_000 {
    ///     drop(r.get());
    /// }
    /// let s = r.stats();
    /// assert_eq!((s.mode, s.percpu), (Mode::PerCpu, true));
    /// ```
    pub const DYNAMIC: Flags = Flags(8);

    /// No flags: start alive, in per-CPU mode.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(refcnt::percpu_ref::Flags::empty(), Default::default());
    /// ```
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// Whether every flag in `other` is set in `self`.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::percpu_ref::Flags;
    /// assert!((Flags::DYNAMIC | Flags::INIT_DEAD).contains(Flags::DYNAMIC));
    /// ```
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// Default switching rate of the dynamic mode: gets per second, from the
/// 2013 patch. [`PercpuRef::new`] uses it; [`PercpuRef::new_with_rate`]
/// takes another.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef, DEFAULT_DYNAMIC_RATE}};
/// assert_eq!(DEFAULT_DYNAMIC_RATE, 4096);
/// // At an impossible rate the ref never switches by itself.
/// let r = PercpuRef::<Host>::new_with_rate(|| {}, Flags::DYNAMIC, u64::MAX).unwrap();
/// for _ in 0..10_000 {
///     drop(r.get());
/// }
/// assert_eq!(r.stats().mode, Mode::DynamicAtomic);
/// ```
pub const DEFAULT_DYNAMIC_RATE: u64 = 4096;

/// How many gets the dynamic mode counts between two looks at the clock.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef, DYNAMIC_BATCH}};
/// // Fewer gets than one batch never switch, however fast they come.
/// let r = PercpuRef::<Host>::new(|| {}, Flags::DYNAMIC).unwrap();
/// for _ in 0..DYNAMIC_BATCH - 1 {
///     drop(r.get());
/// }
/// assert_eq!(r.stats().mode, Mode::DynamicAtomic);
/// ```
pub const DYNAMIC_BATCH: usize = 128;

// Mode word bits. Stored only with the control lock held (or with `&mut`).
const ATOMIC: usize = 1;
const DEAD: usize = 2;
const DYN: usize = 4;
const EXITED: usize = 8;

// `count` layout: low REF_BITS hold the count (modulo 2^REF_BITS), the top
// GET_BITS count gets in dynamic mode and are ignored by everything else.
const GET_BITS: u32 = usize::BITS / 4;
const REF_BITS: u32 = usize::BITS - GET_BITS;
const REF_MASK: usize = (1 << REF_BITS) - 1;
const GET_ONE: usize = 1 << REF_BITS;
const GET_MASK: usize = (1 << GET_BITS) - 1;
const BIAS: usize = 1 << (REF_BITS - 1);

/// The most references a [`PercpuRef`] holds at once (see its "Range"):
/// 2^47 - 2 on 64-bit targets, 2^23 - 2 on 32-bit ones. (One below the
/// bias, which a per-CPU count adds to the atomic one, and one more for
/// the reference a mode switch holds while it is in flight.)
///
/// # Examples
///
/// ```
/// # #[cfg(target_pointer_width = "64")]
/// assert_eq!(refcnt::percpu_ref::MAX_REFS, (1 << 47) - 2);
/// ```
pub const MAX_REFS: usize = BIAS - 2;

const _: () =
    assert!(GET_MASK + 1 >= DYNAMIC_BATCH && (GET_MASK + 1).is_multiple_of(DYNAMIC_BATCH));

fn refs(word: usize) -> usize {
    word & REF_MASK
}

type Confirm = Box<dyn FnOnce() + Send>;

/// A confirmation and whether it runs late: after the flight's own
/// reference is dropped (waiters of `switch_to_atomic_sync`, so that they
/// see an exact count), rather than before it (user confirmations, which
/// must run before a release the switch may cause).
type Pending = (Confirm, bool);

/// Slow-path state, under `Inner::ctl`.
struct Ctl<B: Backend> {
    /// The user asked for atomic mode (INIT_ATOMIC or switch_to_atomic).
    force_atomic: bool,
    /// Resurrection re-enters dynamic mode.
    dynamic: bool,
    /// A grace-period switch (or confirmation) is running.
    in_flight: bool,
    /// The flight in progress began in per-CPU mode and must fold.
    fold: bool,
    /// The flight in progress holds a reference on `count` (taken when it
    /// started, dropped after its last confirmations ran), so that no
    /// release can run before a confirmation it carries.
    holds_ref: bool,
    /// Per-CPU sum already folded into `count`.
    folded: usize,
    /// Run when the flight in progress lands.
    confirms: Vec<Pending>,
    /// Need a grace period that starts after the flight in progress lands.
    next: Vec<Pending>,
    /// The per-CPU counters (one slot: the count; the ATOMIC flag lives in
    /// the handle's word), once
    /// allocated: at creation, or for a dynamic ref when it first goes
    /// per-CPU. Kept until [`PercpuRef::exit`] or the drop; never
    /// replaced. `Inner::counters` publishes where they are to the fast
    /// paths.
    percpu: Option<Arc<B::PerCpu>>,
}

struct Inner<B: Backend> {
    mode: AtomicUsize,
    count: AtomicUsize,
    /// `ctl.percpu`'s counters, or null while there are none: stored once
    /// (`Release`, under the lock) when they are allocated, read by the
    /// fast paths of backends that use them (`Acquire`), cleared only
    /// with `&mut` (exit). The `Arc` in `ctl.percpu` keeps them alive.
    counters: AtomicPtr<B::PerCpu>,
    /// Failed non-blocking allocations of the counters (dynamic refs).
    alloc_failures: AtomicUsize,
    window_start: AtomicU64,
    batch_ns: u64,
    lives: AtomicUsize,
    claimed: AtomicUsize,
    releases: AtomicUsize,
    to_percpu: AtomicUsize,
    to_atomic: AtomicUsize,
    release: Box<dyn Fn() + Send + Sync>,
    ctl: Mutex<Ctl<B>>,
    /// This ref's misuse reports ([`PercpuRef::take_reports`]).
    log: ReportLog,
}

/// A per-CPU reference count with Linux `percpu_ref` semantics.
///
/// # Range
///
/// At most [`MAX_REFS`] references at once: 2^47 - 2 on 64-bit targets
/// (Linux's percpu_ref allows 2^31 - 1), 2^23 - 2 on 32-bit ones. The
/// atomic count keeps a quarter of its word for the dynamic mode's count
/// of gets, and the top bit of the rest tells a count below zero; more
/// references than that read as a count below zero (reported as
/// [`Misuse::Underflow`]) or, after a switch, wrap to a count that may
/// release under its holders. Per-CPU counters wrap freely: only the sum
/// has this range.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
///
/// let done = Arc::new(AtomicBool::new(false));
/// let d = done.clone();
/// let r = PercpuRef::<Host>::new(move || d.store(true, Ordering::SeqCst), Flags::empty()).unwrap();
/// {
///     let _a = r.get();
///     let _b = r.tryget_live().unwrap();
///     assert!(r.kill());
///     assert!(r.tryget_live().is_none());
///     assert!(!done.load(Ordering::SeqCst));
/// }
/// r.wait_for_release();
/// assert!(done.load(Ordering::SeqCst) && r.is_zero());
/// ```
pub struct PercpuRef<B: Backend> {
    inner: Arc<Inner<B>>,
    /// The fast paths' word: [`Backend::key`] of the per-CPU counters
    /// (0 while there are none) with [`WORD_ATOMIC`] set unless the fast
    /// paths may add to them, so that a kernel's fast path is one load of
    /// this word, a test of its low bit and a `gs:`-relative add, and
    /// never loads through `inner` (Linux keeps its `percpu_count_ptr` and
    /// ATOMIC flag in one word the same way). Written only under the
    /// control lock ([`PercpuRef::sync_word`]) or with `&mut` (exit):
    /// `Release`, read `Acquire` by the fast paths (plain moves on x86).
    /// The flag is set whenever the mode word has ATOMIC (every switch to
    /// atomic goes through the handle and sets it before its grace
    /// period); it may lag a switch back to per-CPU that lands in a
    /// grace-period callback, which has no handle to write: the slow path
    /// then clears it.
    word: AtomicUsize,
}

/// The bit of [`PercpuRef::word`] that sends the fast paths to the slow
/// path (keys have it clear, [`Backend::key`]).
const WORD_ATOMIC: usize = 1;

/// The per-CPU slot of a ref's counter (its only one).
const COUNTER_SLOT: usize = 0;

/// A reference obtained from [`PercpuRef::get`] and friends; dropping it
/// puts the reference.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
/// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap();
/// let g = r.get();
/// assert_eq!(r.count_atomic(), 2);
/// drop(g);
/// assert_eq!(r.count_atomic(), 1);
/// ```
#[must_use = "dropping the guard puts the reference at once"]
pub struct RefGuard<'a, B: Backend> {
    r: &'a PercpuRef<B>,
}

impl<B: Backend> RefGuard<'_, B> {
    /// Keeps the reference without the guard; the caller must later call
    /// [`PercpuRef::put`] once. This is Linux's plain `percpu_ref_get`.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap();
    /// r.get().leak();
    /// assert_eq!(r.count_atomic(), 2);
    /// r.put();
    /// ```
    pub fn leak(self) {
        core::mem::forget(self)
    }
}

impl<B: Backend> Drop for RefGuard<'_, B> {
    fn drop(&mut self) {
        self.r.put_many(1)
    }
}

/// A reference from [`PercpuRef::get_owned`] and friends: owns a handle to
/// the ref, so it may move between threads and outlive the caller's
/// borrow; dropping it puts the reference.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
/// let r = Arc::new(PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap());
/// let g = r.get_owned();
/// assert!(Arc::ptr_eq(g.percpu_ref(), &r));
/// drop(g);
/// assert_eq!(r.count_atomic(), 1);
/// ```
#[must_use = "dropping the guard puts the reference at once"]
pub struct OwnedRefGuard<B: Backend> {
    r: Arc<PercpuRef<B>>,
}

impl<B: Backend> OwnedRefGuard<B> {
    /// The ref this reference counts on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = Arc::new(PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap());
    /// assert!(!r.get_owned().percpu_ref().is_dying());
    /// ```
    pub fn percpu_ref(&self) -> &Arc<PercpuRef<B>> {
        &self.r
    }
}

impl<B: Backend> Drop for OwnedRefGuard<B> {
    fn drop(&mut self) {
        self.r.put_many(1)
    }
}

impl<B: Backend> fmt::Debug for OwnedRefGuard<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRefGuard").finish_non_exhaustive()
    }
}

/// Which counter the fast paths use.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef}};
/// let mut r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
/// assert_eq!(r.stats().mode, Mode::PerCpu);
/// r.switch_to_atomic_sync();
/// assert_eq!(r.stats().mode, Mode::Atomic);
/// r.kill();
/// r.exit();
/// assert_eq!(r.stats().mode, Mode::Exited);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Per-CPU counters.
    PerCpu,
    /// The shared atomic count.
    Atomic,
    /// The shared atomic count, measuring the get rate (dynamic mode).
    DynamicAtomic,
    /// After [`PercpuRef::exit`].
    Exited,
}

/// A snapshot of a ref's statistics, from [`PercpuRef::stats`].
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
/// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
/// r.kill();
/// r.wait_for_release();
/// assert!(r.resurrect());
/// let s = r.stats();
/// assert_eq!((s.lives, s.releases), (2, 1));
/// assert_eq!((s.switches_to_atomic, s.switches_to_percpu), (1, 1));
/// assert!(s.percpu && !s.switching);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// The current mode.
    pub mode: Mode,
    /// Whether a grace-period switch is in flight.
    pub switching: bool,
    /// Switches from atomic to per-CPU mode (dynamic ones included).
    pub switches_to_percpu: usize,
    /// Switches from per-CPU to atomic mode.
    pub switches_to_atomic: usize,
    /// Lives begun (by init, resurrect or reinit).
    pub lives: usize,
    /// Releases that have returned.
    pub releases: usize,
    /// Whether the ref holds per-CPU counters. A dynamic ref has none
    /// until it first goes per-CPU; every other ref has them from
    /// creation; an exited ref has given them back.
    pub percpu: bool,
    /// Times a dynamic ref could not get its per-CPU counters
    /// ([`Backend::alloc_percpu_nowait`] failed) and stayed atomic, to try
    /// again at its next hot batch of gets.
    pub alloc_failures: usize,
}

enum Action {
    Nothing,
    RunNow(Option<Pending>),
    Start,
}

impl<B: Backend> Inner<B> {
    /// Stores a new mode word (`Release`: a reader that sees it also sees
    /// the lock-protected state before it; the fast paths do not read it,
    /// they read the handle's word, see [`PercpuRef::sync_word`]). Under
    /// the control lock (or `&mut`).
    fn set_mode(&self, new: usize) {
        self.mode.store(new, Release);
    }

    /// The per-CPU counters, if allocated.
    #[inline(always)]
    #[allow(unsafe_code)] // a pointer to what `ctl.percpu` owns, see SAFETY
    fn counters(&self) -> Option<&B::PerCpu> {
        // Acquire: pairs with the Release store in `ensure_counters`, so
        // the counters' zeroed slots are visible.
        let p = self.counters.load(Acquire);
        // SAFETY: non-null only between `ensure_counters` (or `new`), which
        // stores `Arc::as_ptr` of the `Arc` it then keeps in `ctl.percpu`,
        // and `exit`, which clears the pointer before dropping that `Arc`
        // and has `&mut` to the whole `Inner` (so no reference returned
        // here is alive then). The `Arc` is never replaced meanwhile, and
        // it is dropped at the latest with `Inner`, after `&self` ends.
        // Moving an `Arc` does not move what it points to.
        unsafe { p.as_ref() }
    }

    /// The wrapping sum of this ref's per-CPU counters (0 without any).
    fn percpu_sum(&self) -> usize {
        self.counters().map_or(0, |p| B::sum(p, COUNTER_SLOT))
    }

    /// A get (or, with `put`, a put) of `n` whose fast path found the
    /// word's flag set: counts on `count`, with no read-side section. That
    /// is right in every mode: in atomic mode `count` is the count; in
    /// per-CPU mode (a flag that lags a switch back) `count` carries the
    /// bias, so no put can take it to zero, and the next fold adds the
    /// per-CPU sum to whatever `count` holds by then. Out of line, and
    /// reached through the handle ([`PercpuRef::slow_path`]), so that the
    /// fast path never loads the handle's pointer to this shared state
    /// (the compiler would hoist that load above the fast path's branch if
    /// this were inlined); atomic mode pays a call for it.
    /// Returns whether the dynamic mode asks for a switch to per-CPU,
    /// which the handle then tries ([`PercpuRef::promote`]).
    fn slow_path(&self, n: usize, put: bool) -> bool {
        let mode = self.mode();
        if put {
            self.put_atomic(mode, n);
            false
        } else {
            self.get_atomic(mode, n)
        }
    }

    /// Takes the control lock for a kill (`dead` false: the ref must be
    /// live) or a resurrect (`dead` true: it must be dead) and returns it
    /// with the mode. An exited ref reports [`Misuse::GetAfterExit`], one
    /// in the wrong state reports `wrong`; both return `None`, unlocked.
    fn lock_if(&self, dead: bool, wrong: Misuse) -> Option<(MutexGuard<'_, Ctl<B>>, usize)> {
        let ctl = self.ctl.lock();
        let mode = self.mode();
        let bad = if mode & EXITED != 0 {
            Misuse::GetAfterExit
        } else if (mode & DEAD != 0) != dead {
            wrong
        } else {
            return Some((ctl, mode));
        };
        drop(ctl);
        self.log.report::<B>(bad);
        None
    }

    fn mode(&self) -> usize {
        // Relaxed: see the module documentation; ordering comes from the
        // grace period (or, for slow paths, from the control lock).
        self.mode.load(Relaxed)
    }

    fn atomic_amount(mode: usize, n: usize) -> usize {
        if mode & DYN != 0 {
            n.wrapping_add(GET_ONE)
        } else {
            n
        }
    }

    /// Returns whether the dynamic mode asks for a switch to per-CPU.
    #[inline]
    fn get_atomic(&self, mode: usize, n: usize) -> bool {
        if mode & EXITED != 0 {
            self.log.report::<B>(Misuse::GetAfterExit);
            return false;
        }
        // Relaxed: taking a reference publishes nothing; the caller already
        // reaches the object through a reference it holds (as Arc::clone).
        let old = self.count.fetch_add(Self::atomic_amount(mode, n), Relaxed);
        if refs(old) == 0 {
            self.log.report::<B>(Misuse::GetOnZero);
        }
        mode & DYN != 0 && self.dyn_tick(old)
    }

    /// The increment-unless-zero of the slow paths (and of `live`, unless
    /// dead): `None` if no reference was taken, else whether the dynamic
    /// mode asks for a switch to per-CPU.
    #[cold]
    fn tryget_atomic(&self, mode: usize, n: usize, live: bool) -> Option<bool> {
        if mode & EXITED != 0 {
            self.log.report::<B>(Misuse::GetAfterExit);
            return None;
        }
        if live && mode & DEAD != 0 {
            return None;
        }
        let add = Self::atomic_amount(mode, n);
        let mut cur = self.count.load(Relaxed);
        loop {
            if refs(cur) == 0 {
                return None;
            }
            // Acquire on success: the caller may now use an object it found
            // through a lookup, so order that use after the increment (as
            // Weak::upgrade does). Relaxed on failure: we only retry.
            match self
                .count
                .compare_exchange_weak(cur, cur.wrapping_add(add), Acquire, Relaxed)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        Some(mode & DYN != 0 && self.dyn_tick(cur))
    }

    #[inline]
    fn put_atomic(&self, mode: usize, n: usize) {
        if mode & EXITED != 0 {
            return self.log.report::<B>(Misuse::GetAfterExit);
        }
        // The count may reach zero here. From that decrement until the
        // release callback has returned and `releases` says so, this thread
        // must not be preempted: `resurrect` waits for a release in
        // progress with its lock held (preemption off, in a kernel), and a
        // releaser switched out on the same CPU would never get to finish,
        // so both would hang. A read-side section keeps the put, release
        // included, on its CPU and running (Linux's put also runs inside
        // an RCU read-side section). So the release callback runs inside
        // one too: it must not sleep.
        let _running = B::read_lock_sched();
        // Release: everything this holder did with the object happens
        // before the release callback; pairs with the Acquire fence below,
        // run by whoever takes the count to zero.
        let old = self.count.fetch_sub(n, Release);
        let r = refs(old);
        if r < n {
            // Relaxed: undoing our own change; we publish nothing.
            self.count.fetch_add(n, Relaxed);
            return self.log.report::<B>(Misuse::Underflow);
        }
        if r == n {
            fence(Acquire);
            self.release_now();
        }
    }

    fn release_now(&self) {
        // Acquire: pairs with the Release increment in resurrect, so we
        // claim the life that resurrect started, not an older one.
        let l = self.lives.load(Acquire);
        // AcqRel: the claim is the single point that decides who releases.
        if l > 0
            && self
                .claimed
                .compare_exchange(l - 1, l, AcqRel, Relaxed)
                .is_ok()
        {
            (self.release)();
            // Release: waiters that see this see everything release did.
            self.releases.store(l, Release);
            B::wake_waiters();
        } else {
            self.log.report::<B>(Misuse::RepeatedZero);
        }
    }

    /// Counts a get in dynamic mode; every [`DYNAMIC_BATCH`] gets, returns
    /// whether the batch was fast enough to go per-CPU.
    fn dyn_tick(&self, old: usize) -> bool {
        let gets = ((old >> REF_BITS) + 1) & GET_MASK;
        if !gets.is_multiple_of(DYNAMIC_BATCH) || self.batch_ns == 0 {
            return false;
        }
        let now = B::now_ns();
        // Relaxed: a heuristic; a stale window only delays the switch.
        let start = self.window_start.load(Relaxed);
        if now == start {
            // The clock has not moved: no measurement. A backend without a
            // clock (`now_ns` constant) never switches by itself, as its
            // docs promise; a coarse clock measures the batches since its
            // last tick, at its next one.
            return false;
        }
        self.window_start.store(now, Relaxed);
        now.saturating_sub(start) < self.batch_ns
    }

    /// Atomic to per-CPU; needs no grace period (see the module essay).
    /// A dynamic ref that has no counters yet (only a caller holding the
    /// handle can allocate them, see [`PercpuRef::ensure_counters`]) goes
    /// back to measuring its get rate instead, and allocates at its next
    /// hot batch.
    fn to_percpu_locked(&self, ctl: &mut Ctl<B>) -> bool {
        let mode = self.mode();
        if mode & ATOMIC == 0 {
            return true;
        }
        if mode & (DEAD | EXITED) != 0 || ctl.in_flight {
            return false;
        }
        if ctl.percpu.is_none() {
            if ctl.dynamic && mode & DYN == 0 {
                // Relaxed: heuristic.
                self.window_start.store(B::now_ns(), Relaxed);
                self.set_mode(mode | DYN);
            }
            return false;
        }
        // Relaxed here; ordered by the Release stores below. The bias must
        // precede, in `count`'s modification order, every slow-path put of
        // a reference that a fast path takes once it sees the word's flag
        // clear (else such a put could take `count` to zero while
        // references are held). Backend promise 6 gives it: the mode and
        // then the word's flag (`PercpuRef::sync_word`, or a later slow
        // path that read the mode under the lock) are cleared with Release
        // stores after this add, and a fast path that reads the flag clear
        // (an Acquire load) happens after them, so that get, and any put of
        // its reference that happens after it, follow the bias.
        self.count.fetch_add(BIAS, Relaxed);
        // Release on the mode word too: a slow path that reads per-CPU
        // mode also sees the bias and the lock-protected state before it.
        self.set_mode(mode & !(ATOMIC | DYN));
        // Relaxed: statistics.
        self.to_percpu.fetch_add(1, Relaxed);
        true
    }

    /// Takes the reference a flight holds across its grace period (Linux
    /// holds one the same way): without it a kill could drop the last
    /// reference, and release run, before the confirmations the flight
    /// carries. `mode` is the mode before the flight. In per-CPU mode
    /// `count` carries the bias, so a plain increment is safe; in atomic
    /// mode the reference is taken only if the count is not zero (a count
    /// of zero was already released: there is nothing left to hold back).
    fn take_flight_ref(&self, mode: usize) -> bool {
        if mode & ATOMIC == 0 {
            // Relaxed: a reference taken by the owner of the lock publishes
            // nothing; the fold that follows is the ordering point.
            self.count.fetch_add(1, Relaxed);
            return true;
        }
        // The slow path's increment-unless-zero; without DYN, so the
        // flight's reference is not counted as a get. (Callers have
        // already refused an exited ref.)
        self.tryget_atomic(mode & !DYN, 1, false).is_some()
    }

    /// Under the lock: make the ref atomic, adding `set` to the mode word,
    /// and arrange for `confirm` to run once every CPU sees the new word.
    fn want_atomic(&self, ctl: &mut Ctl<B>, confirm: Option<Pending>, set: usize) -> Action {
        let mode = self.mode();
        let new = (mode | set | ATOMIC) & !DYN;
        if new != mode {
            // Visibility to the fast paths comes from the grace period
            // below, which begins after the caller sets the word's flag.
            self.set_mode(new);
        }
        // A new bit (DEAD) must be seen by readers that began after any
        // grace period already running, so it needs a fresh one.
        let fresh = new & !mode & !ATOMIC != 0;
        if ctl.in_flight {
            if fresh {
                ctl.next.extend(confirm);
            } else {
                ctl.confirms.extend(confirm);
            }
            return Action::Nothing;
        }
        if mode & ATOMIC != 0 && (!fresh || confirm.is_none()) {
            return Action::RunNow(confirm);
        }
        ctl.fold = mode & ATOMIC == 0;
        if ctl.fold {
            // Relaxed: statistics.
            self.to_atomic.fetch_add(1, Relaxed);
        }
        ctl.holds_ref = self.take_flight_ref(mode);
        ctl.in_flight = true;
        ctl.confirms.extend(confirm);
        Action::Start
    }

    fn run(this: &Arc<Self>, a: Action, sync: bool) {
        match a {
            Action::Nothing => {}
            Action::RunNow(c) => {
                if let Some((c, _)) = c {
                    c()
                }
            }
            Action::Start if sync => {
                B::synchronize_sched();
                Self::land(this);
            }
            Action::Start => Self::land_later(Arc::clone(this)),
        }
    }

    /// Lands the flight after a grace period, from the backend's callback
    /// ([`Backend::call_sched_atomic`]): a switch lands in the context that
    /// ends the grace period when the backend offers one (in our kernel,
    /// the interrupt of the last CPU to report), so a kill reaches its
    /// release without waiting for a worker to be woken and scheduled.
    fn land_later(this: Arc<Self>) {
        B::call_sched_atomic(Box::new(move |cx| Self::land_in(this, cx)));
    }

    /// One round of [`land`](Self::land) in the callback's context `cx`.
    /// In atomic context the control lock is only tried (the interrupted
    /// code may hold it): when it is busy, or the flight needs a further
    /// grace period, the rest goes back to the backend.
    fn land_in(this: Arc<Self>, cx: CallbackContext) {
        let landed = {
            let ctl = if cx.may_block() {
                Some(this.ctl.lock())
            } else {
                this.ctl.try_lock()
            };
            ctl.map(|ctl| Self::land_round(&this, ctl))
        };
        match landed {
            // The lock was busy. The grace period has passed already; the
            // worker this hands the landing to waits for one more, which
            // costs time only (a landing may come as late as it likes).
            None => B::call_sched(Box::new(move || {
                Self::land_in(this, CallbackContext::Worker)
            })),
            Some(true) => Self::land_later(this),
            Some(false) => {
                // `exit` waits for this handle to go.
                drop(this);
                B::wake_waiters();
            }
        }
    }

    /// A flight's grace period has passed: fold, confirm, and either start
    /// the next grace period or settle into the wanted mode.
    ///
    /// The flight's reference (`holds_ref`) is dropped only after the
    /// last round's early confirmations, so a release the flight makes
    /// possible (the kill's, typically) runs after every confirmation the
    /// flight carried, including those that needed a further grace period.
    fn land(this: &Arc<Self>) {
        while Self::land_round(this, this.ctl.lock()) {
            B::synchronize_sched();
        }
    }

    /// One round of landing, under the lock it is given (and drops):
    /// fold, run the confirmations that are due, and settle the mode.
    /// Returns whether the flight needs another grace period (late kill
    /// confirmations), after which the caller calls it again. Never
    /// blocks, so it may run in atomic context.
    fn land_round(this: &Arc<Self>, mut ctl: MutexGuard<'_, Ctl<B>>) -> bool {
        if ctl.fold {
            let sum = this.percpu_sum();
            let delta = sum.wrapping_sub(ctl.folded);
            ctl.folded = sum;
            let add = delta.wrapping_sub(BIAS);
            // AcqRel: Release hands what the grace period made visible
            // here (the per-CPU changes) to whoever later reaches zero;
            // Acquire pairs with earlier Release puts.
            let old = this.count.fetch_add(add, AcqRel);
            // Below zero: more puts than gets in per-CPU mode. Which
            // put was one too many cannot be known now, so the count is
            // left below zero and the ref is never released (a leak,
            // where a repair could release under a holder).
            if refs(old.wrapping_add(add)) >= BIAS {
                this.log.report::<B>(Misuse::Underflow);
            }
            ctl.fold = false;
        }
        let mut confirms = core::mem::take(&mut ctl.confirms);
        let again = !ctl.next.is_empty();
        let mut put = false;
        if again {
            // Late confirmations (waiters for an exact count) wait for
            // the next round, after which the flight's reference goes.
            let (late, early): (Vec<Pending>, Vec<Pending>) =
                confirms.into_iter().partition(|p| p.1);
            confirms = early;
            ctl.confirms = core::mem::take(&mut ctl.next);
            ctl.confirms.extend(late);
        } else {
            ctl.in_flight = false;
            put = core::mem::take(&mut ctl.holds_ref);
            let mode = this.mode();
            if mode & (DEAD | DYN | EXITED) == 0 && !ctl.force_atomic {
                this.to_percpu_locked(&mut ctl);
            }
        }
        drop(ctl);
        let (late, early): (Vec<Pending>, Vec<Pending>) = confirms.into_iter().partition(|p| p.1);
        for (c, _) in early {
            c();
        }
        if put {
            // Counts on `count` in either mode (see `slow_path`).
            this.put_atomic(this.mode(), 1);
        }
        for (c, _) in late {
            c();
        }
        // `switch_to_atomic_sync` and `exit` may be waiting for this.
        B::wake_waiters();
        again
    }
}

impl<B: Backend> PercpuRef<B> {
    /// Creates a ref holding one reference (the initial one, dropped by
    /// [`kill`](Self::kill)), unless [`Flags::INIT_DEAD`]. `release` runs
    /// once per life, when the count reaches zero after kill, in the
    /// context of the last put (any context, an interrupt handler
    /// included) and inside an rcu-sched read-side section: like Linux's,
    /// it must not sleep or wait for a grace period (hand such work to a
    /// worker, e.g. with `call_sched`).
    ///
    /// # Errors
    ///
    /// [`AllocError`] if the per-CPU counters cannot be allocated (never
    /// for [`Flags::DYNAMIC`], which allocates them when it first goes
    /// per-CPU).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_DEAD).unwrap();
    /// assert!(r.is_zero() && r.is_dying());
    /// assert_eq!(r.stats().mode, Mode::Atomic);
    /// ```
    pub fn new(
        release: impl Fn() + Send + Sync + 'static,
        flags: Flags,
    ) -> Result<Self, AllocError> {
        Self::new_with_rate(release, flags, DEFAULT_DYNAMIC_RATE)
    }

    /// As [`new`](Self::new), with the dynamic mode's switching rate in gets
    /// per second (0: never switch by itself).
    ///
    /// # Errors
    ///
    /// [`AllocError`] if the per-CPU counters cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef}};
    /// let r = PercpuRef::<Host>::new_with_rate(|| {}, Flags::DYNAMIC, 0).unwrap();
    /// for _ in 0..1000 {
    ///     r.get().leak();
    /// }
    /// assert_eq!(r.stats().mode, Mode::DynamicAtomic);
    /// ```
    pub fn new_with_rate(
        release: impl Fn() + Send + Sync + 'static,
        flags: Flags,
        gets_per_sec: u64,
    ) -> Result<Self, AllocError> {
        let dead = flags.contains(Flags::INIT_DEAD);
        let dynamic = flags.contains(Flags::DYNAMIC);
        // One slot, the counter. A dynamic ref allocates it when it first
        // goes per-CPU (see the module documentation).
        let percpu = if dynamic {
            None
        } else {
            Some(Arc::new(B::alloc_percpu(1)?))
        };
        let force_atomic = flags.contains(Flags::INIT_ATOMIC);
        let atomic = dead || dynamic || force_atomic;
        let mut mode = 0;
        let mut count = 0;
        if atomic {
            mode |= ATOMIC;
        } else {
            count += BIAS;
        }
        if dead {
            mode |= DEAD;
        } else {
            count += 1;
        }
        if dynamic && !dead && !force_atomic {
            mode |= DYN;
        }
        let batch_ns = (DYNAMIC_BATCH as u64 * 1_000_000_000)
            .checked_div(gets_per_sec)
            .unwrap_or(0);
        let key = percpu.as_deref().map_or(0, B::key);
        let word = if atomic { key | WORD_ATOMIC } else { key };
        let counters = percpu
            .as_ref()
            .map_or(core::ptr::null_mut(), |p| Arc::as_ptr(p).cast_mut());
        Ok(Self {
            word: AtomicUsize::new(word),
            inner: Arc::new(Inner {
                mode: AtomicUsize::new(mode),
                count: AtomicUsize::new(count),
                counters: AtomicPtr::new(counters),
                alloc_failures: AtomicUsize::new(0),
                window_start: AtomicU64::new(B::now_ns()),
                batch_ns,
                lives: AtomicUsize::new(usize::from(!dead)),
                claimed: AtomicUsize::new(0),
                releases: AtomicUsize::new(0),
                to_percpu: AtomicUsize::new(0),
                to_atomic: AtomicUsize::new(0),
                release: Box::new(release),
                ctl: Mutex::new(Ctl {
                    force_atomic,
                    dynamic,
                    in_flight: false,
                    fold: false,
                    holds_ref: false,
                    folded: 0,
                    confirms: Vec::new(),
                    next: Vec::new(),
                    percpu,
                }),
                log: ReportLog::new(),
            }),
        })
    }

    /// The per-CPU fast path: adds `delta` to this CPU's slot unless the
    /// handle's word has its ATOMIC flag set, the load, test and add in
    /// one section; false in atomic mode (the caller then takes the slow
    /// path, which counts on the shared `count`).
    #[inline(always)]
    #[allow(unsafe_code)] // the fast path's unchecked add, see the SAFETY note
    fn fast_add(&self, delta: usize) -> bool {
        // SAFETY: the word has WORD_ATOMIC clear only while it is the key
        // of the counters that `ctl.percpu` holds (`sync_word` writes it
        // under the control lock from `ctl.percpu`), which were published
        // (`Inner::counters`, Release) before any word naming them, so
        // `p` yields them; they stay until `exit`, which has `&mut self`
        // and sets the flag first, or the drop of `inner`, which `self`
        // holds. They have one slot, COUNTER_SLOT.
        unsafe {
            B::this_cpu_add_unless(
                || self.inner.counters(),
                &self.word,
                WORD_ATOMIC,
                COUNTER_SLOT,
                delta,
            )
        }
    }

    /// Under the control lock: makes the fast paths' word agree with the
    /// mode: the counters' key, with [`WORD_ATOMIC`] set unless the mode
    /// is per-CPU. Every change of mode made through the handle calls it
    /// before the lock goes; a switch to atomic thus sets the flag before
    /// it starts its grace period. `Release`: a fast path that reads the
    /// flag clear (`Acquire`, backend promise 6) comes after the bias that
    /// [`Inner::to_percpu_locked`] added before clearing ATOMIC.
    fn sync_word(&self, ctl: &Ctl<B>) {
        let key = ctl.percpu.as_deref().map(B::key);
        debug_assert!(
            key.is_none_or(|k| k & WORD_ATOMIC == 0),
            "Backend::key must have bit 0 clear"
        );
        let word = match key {
            Some(k) if self.inner.mode() & ATOMIC == 0 => k,
            Some(k) => k | WORD_ATOMIC,
            None => WORD_ATOMIC,
        };
        self.word.store(word, Release);
    }

    /// A slow path found the mode per-CPU: the word's flag lags a switch
    /// that landed in a grace-period callback (which has no handle).
    /// Clears it, if the lock is free (a slow path may run where it must
    /// not spin: an interrupt handler that interrupted the lock's
    /// holder); else a later slow path will.
    #[cold]
    #[inline(never)]
    fn catch_up(&self) {
        if let Some(ctl) = self.inner.ctl.try_lock() {
            self.sync_word(&ctl);
        }
    }

    /// The slow path of a get or put, out of line (see [`Inner::slow_path`]).
    #[cold]
    #[inline(never)]
    fn slow_path(&self, n: usize, put: bool) {
        // Zero references taken or dropped: nothing to count, and nothing
        // to report on a ref at zero (the fast path's add of 0 is as
        // harmless).
        if n == 0 {
            return;
        }
        if self.inner.slow_path(n, put) {
            self.promote();
        }
        // Gets only: a put may have released, and whoever the release
        // callback handed the object to may free it (the handle with it)
        // at once, so a put touches nothing after its decrement. A lagging
        // word only slows puts down until the next get clears it.
        if !put {
            self.check_word();
        }
    }

    /// After a get's slow path: if the mode is per-CPU, the word lags (see
    /// [`catch_up`](Self::catch_up)).
    #[inline]
    fn check_word(&self) {
        if self.inner.mode() & ATOMIC == 0 {
            self.catch_up();
        }
    }

    /// A dynamic ref's batch of gets was fast: switch to per-CPU,
    /// allocating the counters first if this is the first time. Runs on
    /// a get, which may not sleep: the lock is only tried and the
    /// allocation does not wait ([`Backend::alloc_percpu_nowait`]); a
    /// missed chance or a failed allocation leaves the ref atomic, and the
    /// next hot batch tries again.
    #[cold]
    #[inline(never)]
    fn promote(&self) {
        let Some(mut ctl) = self.inner.ctl.try_lock() else {
            return;
        };
        let mode = self.inner.mode();
        if mode & DYN == 0 || mode & DEAD != 0 || ctl.in_flight {
            return;
        }
        if !self.ensure_counters(&mut ctl) {
            return;
        }
        ctl.force_atomic = false;
        self.inner.to_percpu_locked(&mut ctl);
        self.sync_word(&ctl);
    }

    /// Under the lock: gives the ref its per-CPU counters if it has none,
    /// without blocking; false if the allocation failed. The ref is then
    /// an atomic ref with counters, which [`Inner::to_percpu_locked`]
    /// switches as any other (bias first, then the mode and the word's
    /// flag cleared with `Release`). The counters are published (the
    /// pointer, for backends that use `p`, `Release`) before any word
    /// names them ([`sync_word`](Self::sync_word), `Release`); a fast path
    /// loads the word, then the pointer, both `Acquire`.
    fn ensure_counters(&self, ctl: &mut Ctl<B>) -> bool {
        if ctl.percpu.is_some() {
            return true;
        }
        let Ok(p) = B::alloc_percpu_nowait(1) else {
            // Relaxed: statistics.
            self.inner.alloc_failures.fetch_add(1, Relaxed);
            return false;
        };
        let p = Arc::new(p);
        // Release: a fast path that reads it also sees the zeroed counters.
        self.inner
            .counters
            .store(Arc::as_ptr(&p).cast_mut(), Release);
        ctl.folded = 0;
        ctl.percpu = Some(p);
        true
    }

    /// Takes a reference; the guard puts it when dropped. Never fails; on a
    /// ref whose count is zero it reports [`Misuse::GetOnZero`].
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// let _g = r.get();
    /// ```
    #[inline]
    pub fn get(&self) -> RefGuard<'_, B> {
        self.get_many(1);
        RefGuard { r: self }
    }

    /// Takes `n` references (explicit form: put them with
    /// [`put_many`](Self::put_many)). `n == 0` does nothing, in any state.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap();
    /// r.get_many(3);
    /// assert_eq!(r.count_atomic(), 4);
    /// r.put_many(3);
    /// ```
    #[inline(always)]
    pub fn get_many(&self, n: usize) {
        if !self.fast_add(n) {
            // Out of line: the fast path's add falls through into the
            // caller's next instruction, and `self.inner` is loaded only in
            // there, so a backend whose fast path uses the word alone never
            // loads it on the fast path.
            self.slow_path(n, false);
        }
    }

    /// Drops one reference (Linux `percpu_ref_put`).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// r.get_many(1);
    /// r.put();
    /// ```
    #[inline]
    pub fn put(&self) {
        self.put_many(1)
    }

    /// Drops `n` references; the one that takes the count to zero runs the
    /// release callback. Dropping more than are held reports
    /// [`Misuse::Underflow`]. In atomic mode that is seen at once and the
    /// put is ignored. In per-CPU mode it can only be seen at the next
    /// switch to atomic, when the per-CPU sum is folded, and only if the
    /// puts then outnumber every reference, the initial one included: the
    /// count is then left below zero and the ref is never released (a
    /// leak, rather than a release while a holder whose reference the
    /// extra put took may still be using the object; Linux warns and leaks
    /// the same way). An over-put that other references still cover at the
    /// fold cannot be told from their puts: the last of them then releases
    /// while one holder may still use the object, in Linux too.
    /// `n == 0` drops nothing, in any state: no release, no report.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// r.get_many(2);
    /// r.put_many(2);
    /// r.kill();
    /// r.wait_for_release();
    /// r.put_many(0); // nothing to drop: not a second zero
    /// assert!(r.take_reports().is_empty());
    /// ```
    #[inline(always)]
    pub fn put_many(&self, n: usize) {
        if !self.fast_add(n.wrapping_neg()) {
            self.slow_path(n, true);
        }
    }

    /// Takes a reference unless the count is zero (dead refs included).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_DEAD).unwrap();
    /// assert!(r.tryget().is_none());
    /// ```
    #[inline]
    pub fn tryget(&self) -> Option<RefGuard<'_, B>> {
        self.tryget_many(1).then(|| RefGuard { r: self })
    }

    /// Takes `n` references unless the count is zero; explicit form.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// assert!(r.tryget_many(2));
    /// r.put_many(2);
    /// ```
    #[inline]
    pub fn tryget_many(&self, n: usize) -> bool {
        if self.fast_add(n) {
            return true;
        }
        // On the shared count, as get and put do (see `Inner::slow_path`):
        // in per-CPU mode its bias keeps it above zero, so this succeeds.
        let inner = &*self.inner;
        let got = inner.tryget_atomic(inner.mode(), n, false);
        if got == Some(true) {
            self.promote();
        }
        self.check_word();
        got.is_some()
    }

    /// Takes a reference unless the ref is dead (killed) or zero. Once the
    /// confirmation of [`kill_and_confirm`](Self::kill_and_confirm) has run,
    /// this fails on every CPU.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// let g = r.tryget_live().unwrap();
    /// r.kill();
    /// assert!(r.tryget_live().is_none());
    /// assert!(r.tryget().is_some()); // still referenced by g
    /// drop(g);
    /// ```
    #[inline]
    pub fn tryget_live(&self) -> Option<RefGuard<'_, B>> {
        // Per-CPU mode is never dead: kill sets DEAD and ATOMIC in one store.
        if self.fast_add(1) {
            return Some(RefGuard { r: self });
        }
        self.tryget_live_slow().then(|| RefGuard { r: self })
    }

    /// The slow path of [`tryget_live`](Self::tryget_live): the test of
    /// DEAD and the increment of `count` in one read-side section (as
    /// Linux's whole `percpu_ref_tryget_live` is under `rcu_read_lock`).
    /// Without it, a caller that read the mode before a kill could do its
    /// increment after the kill's confirmation ran; with it, the
    /// confirmation's grace period waits for every section that began
    /// before the grace period, and a section that began after sees DEAD
    /// (stored before the grace period began, backend promise 3).
    #[cold]
    #[inline(never)]
    fn tryget_live_slow(&self) -> bool {
        let got = {
            let _section = B::read_lock_sched();
            let inner = &*self.inner;
            inner.tryget_atomic(inner.mode(), 1, true)
        };
        // Outside the section: the switch is not part of the tryget.
        if got == Some(true) {
            self.promote();
        }
        self.check_word();
        got.is_some()
    }

    /// Kills the ref: marks it dead, starts the switch to atomic mode and
    /// drops the initial reference. Returns whether this call killed it; a
    /// second kill reports [`Misuse::DoubleKill`] and changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// assert!(r.kill());
    /// assert!(!r.kill());
    /// ```
    pub fn kill(&self) -> bool {
        self.kill_inner(None)
    }

    /// As [`kill`](Self::kill), and runs `confirm` once every CPU sees the
    /// ref dead, so [`tryget_live`](Self::tryget_live) fails everywhere.
    /// Confirm runs before the release that the kill may cause. A second
    /// kill drops `confirm` without running it.
    ///
    /// `confirm` runs where the switch lands ([`Backend::call_sched_atomic`]):
    /// in a kernel, possibly in the interrupt that ends the grace period.
    /// Like `release` (and like Linux's, which runs from an RCU callback),
    /// it must not sleep, wait for a grace period, or take a lock without
    /// interrupts off; hand such work to a worker.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// assert!(r.kill_and_confirm(move || tx.send(()).unwrap()));
    /// rx.recv().unwrap();
    /// assert!(r.tryget_live().is_none());
    /// ```
    pub fn kill_and_confirm(&self, confirm: impl FnOnce() + Send + 'static) -> bool {
        self.kill_inner(Some((Box::new(confirm), false)))
    }

    fn kill_inner(&self, confirm: Option<Pending>) -> bool {
        let Some((mut ctl, _)) = self.inner.lock_if(false, Misuse::DoubleKill) else {
            return false;
        };
        let a = self.inner.want_atomic(&mut ctl, confirm, DEAD);
        // Before the grace period starts (`run`): sections that begin
        // after it find the flag and count on `count`.
        self.sync_word(&ctl);
        drop(ctl);
        // The initial reference goes before the switch starts, so the fold
        // counts it however soon the grace period ends (as soon as `run`
        // returns, or inside it, if this thread is preempted or every other
        // CPU is idle). Dropped after, it would still be in `count` when
        // the fold adds the per-CPU sum: one put too many in per-CPU mode
        // would then go unseen there, and this put would release under the
        // holder whose reference that put took, where the fold must find
        // the count below zero, report it and leak (Linux drops it under
        // its switch lock, before the grace period can end). Confirmations
        // still come before the release: a switch from per-CPU mode keeps
        // the bias in `count` until the fold, and a flight holds a
        // reference of its own (`take_flight_ref`) until its confirmations
        // have run. Only an atomic ref with nothing to confirm (no flight)
        // can release here, which is what its last put should do.
        self.put_many(1);
        Inner::run(&self.inner, a, false);
        true
    }

    /// Switches to atomic mode (and keeps it there until
    /// [`switch_to_percpu`](Self::switch_to_percpu)); `confirm` runs once
    /// every CPU uses the atomic count, in the context that rules give
    /// [`kill_and_confirm`](Self::kill_and_confirm)'s (it must not sleep).
    /// Does not wait. On a ref already atomic with no switch in flight,
    /// `confirm` runs before this call returns, as in Linux; while a switch
    /// is in flight, when it lands.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicBool, Ordering}, mpsc, Arc};
    /// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// r.switch_to_atomic(move || tx.send(()).unwrap());
    /// rx.recv().unwrap();
    /// assert_eq!(r.stats().mode, Mode::Atomic);
    /// // Already atomic: confirmed at once.
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let r2 = ran.clone();
    /// r.switch_to_atomic(move || r2.store(true, Ordering::SeqCst));
    /// assert!(ran.load(Ordering::SeqCst));
    /// ```
    pub fn switch_to_atomic(&self, confirm: impl FnOnce() + Send + 'static) {
        self.to_atomic(Some((Box::new(confirm), false)), false);
    }

    /// Switches to atomic mode and waits until the switch has landed (the
    /// grace period runs on the caller if no switch was in flight); on
    /// return [`count_atomic`](Self::count_atomic) is exact. (Linux wakes
    /// its waiter a moment before dropping the switch's own reference.)
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// r.get().leak();
    /// r.switch_to_atomic_sync();
    /// assert_eq!(r.count_atomic(), 2);
    /// ```
    pub fn switch_to_atomic_sync(&self) {
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        // Release/Acquire: the waiter sees the landed state.
        let flag: Confirm = Box::new(move || d.store(true, Release));
        if !self.to_atomic(Some((flag, true)), true) {
            return;
        }
        B::wait_until(&mut || done.load(Acquire));
    }

    /// False (and reported) after exit, when `confirm` is dropped unrun.
    fn to_atomic(&self, confirm: Option<Pending>, sync: bool) -> bool {
        let mut ctl = self.inner.ctl.lock();
        if self.inner.mode() & EXITED != 0 {
            drop(ctl);
            self.inner.log.report::<B>(Misuse::GetAfterExit);
            return false;
        }
        ctl.force_atomic = true;
        let a = self.inner.want_atomic(&mut ctl, confirm, 0);
        // Before the grace period starts, as in `kill_inner`.
        self.sync_word(&ctl);
        drop(ctl);
        Inner::run(&self.inner, a, sync);
        true
    }

    /// Switches to per-CPU mode (at once, or when a switch in flight lands).
    /// On a dead ref it takes effect at [`resurrect`](Self::resurrect) (the
    /// ref stays atomic while dead), as in Linux. On a dynamic ref
    /// ([`Flags::DYNAMIC`]) it ends the dynamic mode: the ref is per-CPU
    /// from then on, in its later lives too, until
    /// [`switch_to_atomic`](Self::switch_to_atomic).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap();
    /// r.switch_to_percpu();
    /// assert_eq!(r.stats().mode, Mode::PerCpu);
    /// // A dynamic ref asked for per-CPU while dead comes back per-CPU.
    /// let d = PercpuRef::<Host>::new(|| {}, Flags::DYNAMIC | Flags::INIT_DEAD).unwrap();
    /// d.switch_to_percpu();
    /// assert!(d.reinit());
    /// assert_eq!(d.stats().mode, Mode::PerCpu);
    /// ```
    pub fn switch_to_percpu(&self) {
        let mut ctl = self.inner.ctl.lock();
        ctl.force_atomic = false;
        // The caller has chosen the mode: later lives do not measure.
        ctl.dynamic = false;
        let mode = self.inner.mode();
        let exited = mode & EXITED != 0;
        if !exited && mode & DEAD == 0 {
            if self.ensure_counters(&mut ctl) {
                // Cleared even if a flight is running: landing then goes
                // per-CPU.
                if mode & DYN != 0 {
                    self.inner.set_mode(mode & !DYN);
                }
            }
            // Without counters (a dynamic ref whose allocation failed) this
            // leaves the ref measuring its get rate, to allocate when hot.
            self.inner.to_percpu_locked(&mut ctl);
            self.sync_word(&ctl);
        }
        drop(ctl);
        if exited {
            self.inner.log.report::<B>(Misuse::GetAfterExit);
        }
    }

    /// Brings a dead ref back to life with one (initial) reference, in the
    /// mode its user chose: atomic after
    /// [`switch_to_atomic`](Self::switch_to_atomic) (or
    /// [`Flags::INIT_ATOMIC`]), per-CPU otherwise; a dynamic ref that was
    /// not switched to per-CPU explicitly begins the new life measuring its
    /// get rate again, as at creation (even if it had gone per-CPU by
    /// itself: the new life's rate is its own). If the count was zero, a
    /// new life begins (waiting, if needed, for the last put's release to
    /// return). Returns false (and reports) if the ref is not dead. Must
    /// not be called from the release callback.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// r.kill();
    /// assert!(r.resurrect());
    /// assert!(!r.is_dying());
    /// ```
    pub fn resurrect(&self) -> bool {
        let inner = &*self.inner;
        let Some((mut ctl, mode)) = inner.lock_if(true, Misuse::ResurrectLive) else {
            return false;
        };
        // Relaxed: a dead ref is atomic; the increment itself publishes
        // nothing (the new life is published by the `lives` store).
        let old = inner.count.fetch_add(1, Relaxed);
        if refs(old) == 0 {
            // The last put of the old life may still be releasing: let it
            // finish, so it does not claim the life we are starting. A
            // short spin (not `wait_until`): `ctl` is held, and the release
            // callback is already running, inside a read-side section
            // (`put_atomic`), so its thread cannot be switched out for us.
            // Acquire: pairs with the Release store after release returns.
            while inner.releases.load(Acquire) < inner.lives.load(Relaxed) {
                B::relax();
            }
            // Release: pairs with the Acquire load in release_now.
            inner.lives.fetch_add(1, Release);
        }
        let mut new = mode & !DEAD;
        // A ref without counters (dynamic, or one asked for per-CPU before
        // it ever had them) that cannot get them now measures its rate, to
        // allocate them when hot, as `switch_to_percpu` does.
        let measure = !ctl.force_atomic && (ctl.dynamic || !self.ensure_counters(&mut ctl));
        if measure {
            new |= DYN;
            // Relaxed: heuristic.
            inner.window_start.store(B::now_ns(), Relaxed);
        }
        inner.set_mode(new);
        if !ctl.force_atomic && !measure && !ctl.in_flight {
            inner.to_percpu_locked(&mut ctl);
        }
        self.sync_word(&ctl);
        true
    }

    /// Linux `percpu_ref_reinit`: [`resurrect`](Self::resurrect) a ref whose
    /// count is zero. Unless [`is_zero`](Self::is_zero) (references still
    /// held, or a kill whose grace period has not yet folded the per-CPU
    /// counts) it reports [`Misuse::ReinitNonZero`] and returns false.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_DEAD | Flags::ALLOW_REINIT).unwrap();
    /// assert!(r.reinit());
    /// assert!(r.tryget_live().is_some());
    /// ```
    pub fn reinit(&self) -> bool {
        if !self.is_zero() {
            self.inner.log.report::<B>(Misuse::ReinitNonZero);
            return false;
        }
        self.resurrect()
    }

    /// Retires the ref: folds the per-CPU counters into the count for good
    /// and frees them; the ref stays readable ([`is_zero`](Self::is_zero),
    /// [`stats`](Self::stats)) but every get, put or switch afterwards
    /// reports [`Misuse::GetAfterExit`]. Waits for a switch still in
    /// flight.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let mut r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// r.kill();
    /// r.exit();
    /// assert!(r.is_zero() && r.is_dying());
    /// assert!(r.tryget().is_none());
    /// ```
    pub fn exit(&mut self) {
        // Only in-flight switches hold another Arc (and none can start:
        // we hold `&mut self`); wait for them to land.
        let arc = &mut self.inner;
        B::wait_until(&mut || Arc::get_mut(arc).is_some());
        let inner = Arc::get_mut(&mut self.inner).expect("no switch in flight");
        let mode = inner.mode.load(Relaxed);
        if mode & EXITED != 0 {
            return;
        }
        if mode & ATOMIC == 0 {
            // We hold the only handle: no reader can be in a fast path.
            let mut ctl = inner.ctl.lock();
            let sum = inner.percpu_sum();
            let delta = sum.wrapping_sub(ctl.folded);
            ctl.folded = sum;
            inner.count.fetch_add(delta.wrapping_sub(BIAS), Relaxed);
        }
        inner.set_mode((mode | ATOMIC | DEAD | EXITED) & !DYN);
        // Give the counters back now (Linux frees them here too). With
        // `&mut self` no fast path of this handle is running, and the
        // word's flag is set first, so later (misused) gets take the slow
        // path, which reports them.
        self.word.store(WORD_ATOMIC, Relaxed);
        // Relaxed: `&mut` access; no one else can load it now.
        inner.counters.store(core::ptr::null_mut(), Relaxed);
        inner.ctl.lock().percpu = None;
    }

    /// Whether the count is zero. Always false in per-CPU mode (the sum is
    /// not known there), as in Linux.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap();
    /// assert!(!r.is_zero());
    /// r.kill();
    /// assert!(r.is_zero());
    /// ```
    pub fn is_zero(&self) -> bool {
        let mode = self.inner.mode();
        // Acquire: a caller that sees zero may free what the holders used.
        mode & ATOMIC != 0 && refs(self.inner.count.load(Acquire)) == 0
    }

    /// Whether the ref has been killed (and not resurrected).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// assert!(!r.is_dying());
    /// r.kill();
    /// assert!(r.is_dying());
    /// ```
    pub fn is_dying(&self) -> bool {
        self.inner.mode() & DEAD != 0
    }

    /// The reference count held in the shared word (meaningful in atomic
    /// mode; in per-CPU mode it includes the bias). For tests and
    /// diagnostics.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap();
    /// assert_eq!(r.count_atomic(), 1);
    /// ```
    pub fn count_atomic(&self) -> usize {
        // Relaxed: diagnostics.
        refs(self.inner.count.load(Relaxed))
    }

    /// Waits (with [`Backend::wait_until`]) until the current life has
    /// been released and its release callback has returned. Returns at once
    /// on a ref that was created dead and never brought to life.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// r.kill();
    /// r.wait_for_release();
    /// assert_eq!(r.stats().releases, 1);
    /// ```
    pub fn wait_for_release(&self) {
        // Acquire: pairs with the Release stores of lives and releases, so
        // that we return only after release's effects are visible.
        let target = self.inner.lives.load(Acquire);
        B::wait_until(&mut || self.inner.releases.load(Acquire) >= target);
    }

    /// As [`wait_for_release`](Self::wait_for_release), but gives up once
    /// `timeout` has passed ([`Backend::now_ns`]); returns whether the
    /// release has returned. For callers that must not hang when a
    /// reference leaks (a shutdown path that reports and goes on).
    ///
    /// # Examples
    ///
    /// ```
    /// use core::time::Duration;
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// let held = r.get();
    /// r.kill();
    /// assert!(!r.wait_for_release_timeout(Duration::from_millis(10)));
    /// drop(held);
    /// assert!(r.wait_for_release_timeout(Duration::from_secs(10)));
    /// ```
    pub fn wait_for_release_timeout(&self, timeout: core::time::Duration) -> bool {
        // Acquire: as in wait_for_release.
        let target = self.inner.lives.load(Acquire);
        let released = || self.inner.releases.load(Acquire) >= target;
        let deadline =
            B::now_ns().saturating_add(timeout.as_nanos().try_into().unwrap_or(u64::MAX));
        B::wait_until(&mut || released() || B::now_ns() >= deadline);
        released()
    }

    /// Misuse reports about this ref since the last call, oldest first
    /// (up to 64 are kept), whichever thread made them: a release or a
    /// switch confirmation may run on a worker. Each is also counted
    /// ([`misuse_count`](crate::misuse::misuse_count)) and reported to the
    /// backend. Takes the log's lock: not from an interrupt handler. A
    /// misuse made by an interrupt handler that landed on another report
    /// of this ref is counted and reported to the backend, not kept here.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}, Misuse};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// r.kill();
    /// r.kill();
    /// assert_eq!(r.take_reports(), [Misuse::DoubleKill]);
    /// assert!(r.take_reports().is_empty());
    /// ```
    pub fn take_reports(&self) -> Vec<Misuse> {
        self.inner.log.take()
    }

    /// Takes a reference held by the returned guard, which owns a handle
    /// to the ref (an `Arc`) rather than borrowing it, so it may be sent
    /// to another thread or stored with what it protects (an I/O submitted
    /// here and completed there).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = Arc::new(PercpuRef::<Host>::new(|| {}, Flags::INIT_ATOMIC).unwrap());
    /// let g = r.get_owned();
    /// std::thread::spawn(move || drop(g)).join().unwrap();
    /// assert_eq!(r.count_atomic(), 1);
    /// ```
    pub fn get_owned(self: &Arc<Self>) -> OwnedRefGuard<B> {
        self.get_many(1);
        OwnedRefGuard {
            r: Arc::clone(self),
        }
    }

    /// As [`tryget_live`](Self::tryget_live), with an owned guard (see
    /// [`get_owned`](Self::get_owned)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = Arc::new(PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap());
    /// assert!(r.tryget_live_owned().is_some());
    /// r.kill();
    /// assert!(r.tryget_live_owned().is_none());
    /// ```
    pub fn tryget_live_owned(self: &Arc<Self>) -> Option<OwnedRefGuard<B>> {
        self.tryget_live().map(|g| {
            g.leak();
            OwnedRefGuard {
                r: Arc::clone(self),
            }
        })
    }

    /// As [`tryget`](Self::tryget), with an owned guard (see
    /// [`get_owned`](Self::get_owned)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
    /// let r = Arc::new(PercpuRef::<Host>::new(|| {}, Flags::INIT_DEAD).unwrap());
    /// assert!(r.tryget_owned().is_none());
    /// ```
    pub fn tryget_owned(self: &Arc<Self>) -> Option<OwnedRefGuard<B>> {
        self.tryget_many(1).then(|| OwnedRefGuard {
            r: Arc::clone(self),
        })
    }

    /// A snapshot of the mode and counters.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, percpu_ref::{Flags, Mode, PercpuRef}};
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// let s = r.stats();
    /// assert_eq!((s.mode, s.lives, s.releases), (Mode::PerCpu, 1, 0));
    /// ```
    pub fn stats(&self) -> Stats {
        let i = &*self.inner;
        let (switching, percpu) = {
            let ctl = i.ctl.lock();
            (ctl.in_flight, ctl.percpu.is_some())
        };
        let m = i.mode();
        let mode = if m & EXITED != 0 {
            Mode::Exited
        } else if m & DYN != 0 {
            Mode::DynamicAtomic
        } else if m & ATOMIC != 0 {
            Mode::Atomic
        } else {
            Mode::PerCpu
        };
        // Relaxed: statistics.
        Stats {
            mode,
            switching,
            switches_to_percpu: i.to_percpu.load(Relaxed),
            switches_to_atomic: i.to_atomic.load(Relaxed),
            lives: i.lives.load(Relaxed),
            releases: i.releases.load(Relaxed),
            percpu,
            alloc_failures: i.alloc_failures.load(Relaxed),
        }
    }
}

impl<B: Backend> fmt::Debug for PercpuRef<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PercpuRef")
            .field("stats", &self.stats())
            .field("count_atomic", &self.count_atomic())
            .finish()
    }
}
