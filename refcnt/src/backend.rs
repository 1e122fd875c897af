//! What a kernel (or a test harness) must provide for the counters to work.
//!
//! The trait is made of associated functions only, so a kernel implements it
//! on a zero-sized type and every call is static: the per-CPU fast path of
//! [`PercpuRef`](crate::percpu_ref::PercpuRef) is one inlined
//! [`Backend::this_cpu_add_unless`] (in our kernel: a load of the handle's
//! word, a register test, a branch and an `add gs:`). Nothing here is
//! x86-specific, and nothing needs `std`; `Box` comes from `alloc`.
//!
//! The same operations serve SRCU: it needs four per-CPU slots (lock and
//! unlock counts for two indexes), [`Backend::sum`] for its scans, and the
//! rcu-sched grace period for its fast flavour.

use alloc::boxed::Box;
use core::fmt;

use crate::misuse::Misuse;
use crate::srcu::TaskSections;
use crate::sync::atomic::{AtomicUsize, Ordering};

/// The per-CPU allocator had no memory left.
///
/// # Examples
///
/// ```
/// let e = refcnt::AllocError;
/// assert_eq!(e.to_string(), "per-CPU allocation failed");
/// let boxed: Box<dyn std::error::Error> = e.into();
/// assert_eq!(boxed.to_string(), "per-CPU allocation failed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError;

impl core::error::Error for AllocError {}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("per-CPU allocation failed")
    }
}

/// The context a [`Backend::call_sched_atomic`] callback runs in.
///
/// # Examples
///
/// ```
/// use refcnt::backend::CallbackContext;
/// assert!(CallbackContext::Worker.may_block());
/// assert!(!CallbackContext::Atomic.may_block());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackContext {
    /// A worker thread: the callback may block, take any lock, and wait
    /// for a grace period.
    Worker,
    /// Interrupts off, possibly inside an interrupt handler: the callback
    /// must not block, and may only try locks that the code it interrupted
    /// could hold.
    Atomic,
}

impl CallbackContext {
    /// Whether the callback may block here.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::backend::CallbackContext;
    /// assert!(CallbackContext::Worker.may_block());
    /// ```
    pub fn may_block(self) -> bool {
        self == CallbackContext::Worker
    }
}

/// Where misuse reports go. Every [`Backend`] is one; [`Kref`](crate::kref::Kref)
/// needs only this part.
///
/// The per-kind counters ([`misuse_count`](crate::misuse::misuse_count)) are
/// bumped by the crate before `report` is called, so an implementation only
/// has to tell a human (the kernel prints to the serial console).
///
/// # Examples
///
/// ```
/// use refcnt::{Misuse, Report};
/// struct Quiet;
/// impl Report for Quiet {
///     fn report(_m: Misuse) {}
/// }
/// Quiet::report(Misuse::DoubleKill);
/// ```
pub trait Report: 'static {
    /// Tells someone that `m` happened. Must not block and must not call
    /// back into the object that reported it.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::{self, Host}, percpu_ref::{Flags, PercpuRef}, Misuse};
    /// // The host backend records reports per thread (and prints them
    /// // unless REFCNT_QUIET is set): a second kill is one.
    /// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
    /// r.kill();
    /// r.kill();
    /// assert_eq!(host::take_reports(), [Misuse::DoubleKill]);
    /// ```
    fn report(m: Misuse);
}

/// The environment the counters run in.
///
/// # Safety
///
/// The algorithms trust these promises; a backend that breaks them can make
/// a release callback run while references are still held, and callers may
/// free memory in that callback.
///
/// 1. [`this_cpu_add`](Backend::this_cpu_add) changes only the calling
///    CPU's slot, is never split by anything else running on that CPU
///    (interrupts included), and is never lost.
/// 2. [`sum`](Backend::sum) reads every CPU's slot that any CPU could ever
///    have written.
/// 3. [`synchronize_sched`](Backend::synchronize_sched) returns only after
///    every read-side section (a live [`ReadGuard`](Backend::ReadGuard))
///    that began before the call has ended, and everything those sections
///    wrote is visible to the caller when it returns. Conversely a section
///    that begins after the call started sees everything the caller wrote
///    before the call (the usual RCU guarantee).
/// 4. [`call_sched`](Backend::call_sched) runs its callback exactly once,
///    after such a grace period, and never from inside the call itself;
///    so does [`call_sched_atomic`](Backend::call_sched_atomic), except
///    that its callback may interrupt the caller once the caller's
///    interrupts are on (it is then in [`CallbackContext::Atomic`]).
/// 5. [`this_cpu_add_unless`](Backend::this_cpu_add_unless) and
///    [`this_cpu_add_sched`](Backend::this_cpu_add_sched) are each one
///    read-side section for promise 3: the load of the word, its test and
///    the add together, for the first.
/// 6. `this_cpu_add_unless` loads its word with `Acquire` (a plain move
///    on x86): percpu_ref needs it when it goes back to per-CPU mode with
///    no grace period, so that a get that sees the flag clear in the
///    handle's word (a `Release` store), and any put of that reference
///    on another CPU, come after the bias was added to the shared count.
/// 7. [`key`](Backend::key) has its lowest bit clear: percpu_ref keeps its
///    ATOMIC flag there, in the word it hands `this_cpu_add_unless`.
///
/// # Examples
///
/// A single-CPU backend, enough to show the shape (interrupts do not exist
/// here, so a read-side section is empty, and a grace period has passed
/// whenever the main loop runs):
///
/// ```
/// use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
/// use std::sync::Mutex;
/// use refcnt::{AllocError, Backend, Misuse, Report};
///
/// struct Uni;
/// impl Report for Uni {
///     fn report(m: Misuse) {
///         eprintln!("{m}");
///     }
/// }
/// /// Callbacks waiting for the main loop ([`run_deferred`]).
/// static DEFERRED: Mutex<Vec<Box<dyn FnOnce() + Send>>> = Mutex::new(Vec::new());
/// /// The kernel's main loop calls this outside any section: with one CPU
/// /// and no interrupts, every section has ended by then.
/// fn run_deferred() {
///     loop {
///         let batch = core::mem::take(&mut *DEFERRED.lock().unwrap());
///         if batch.is_empty() {
///             return;
///         }
///         batch.into_iter().for_each(|f| f());
///     }
/// }
/// // SAFETY: there is one CPU and no interrupts, so every add is whole and
/// // every section has ended by the time `synchronize_sched` or the main
/// // loop runs; `call_sched` defers (promise 4). `now_ns` has no clock: the
/// // dynamic mode never switches by itself, and `wait_for_release_timeout`
/// // would never time out.
/// unsafe impl Backend for Uni {
///     type PerCpu = Box<[AtomicUsize]>;
///     type ReadGuard = ();
///     fn alloc_percpu(slots: usize) -> Result<Self::PerCpu, AllocError> {
///         Ok((0..slots).map(|_| AtomicUsize::new(0)).collect())
///     }
///     fn this_cpu_add(p: &Self::PerCpu, slot: usize, delta: usize) {
///         p[slot].fetch_add(delta, Relaxed);
///     }
///     fn sum(p: &Self::PerCpu, slot: usize) -> usize {
///         p[slot].load(Relaxed)
///     }
///     fn read_lock_sched() {}
///     fn synchronize_sched() {}
///     fn call_sched(f: Box<dyn FnOnce() + Send>) {
///         // Never from inside the call (promise 4): the caller may be in a
///         // section, or hold a lock the callback takes.
///         DEFERRED.lock().unwrap().push(f);
///     }
///     fn now_ns() -> u64 {
///         0
///     }
/// }
///
/// let r = refcnt::percpu_ref::PercpuRef::<Uni>::new(|| {}, Default::default()).unwrap();
/// r.get_many(2);
/// r.put_many(2);
/// assert!(r.kill());
/// assert!(!r.is_zero()); // the switch waits for its grace period
/// run_deferred();
/// assert!(r.is_zero());
/// // No clock: a dynamic ref measures nothing and never switches by itself.
/// use refcnt::percpu_ref::{Flags, Mode, PercpuRef, DYNAMIC_BATCH};
/// let d = PercpuRef::<Uni>::new(|| {}, Flags::DYNAMIC).unwrap();
/// for _ in 0..4 * DYNAMIC_BATCH {
///     drop(d.get());
/// }
/// assert_eq!(d.stats().mode, Mode::DynamicAtomic);
/// ```
#[allow(unsafe_code)] // declaring the contract is not unsafe code; implementing it is
pub unsafe trait Backend: Report {
    /// One per-CPU allocation of `slots` counters, all zero, at the same
    /// offset on every CPU (in a kernel). Freed when dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let p: <Host as Backend>::PerCpu = Host::alloc_percpu(3).unwrap();
    /// assert_eq!((0..3).map(|s| Host::sum(&p, s)).sum::<usize>(), 0);
    /// ```
    type PerCpu: Send + Sync;

    /// Proof of being inside a read-side section; the section ends when it
    /// is dropped. Sections nest. In a kernel: interrupts off, restored on
    /// drop.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let outer: <Host as Backend>::ReadGuard = Host::read_lock_sched();
    /// let inner = Host::read_lock_sched(); // sections nest
    /// drop(inner);
    /// drop(outer); // the section ends here
    /// ```
    type ReadGuard;

    /// Allocates `slots` zeroed counters on every possible CPU.
    ///
    /// # Errors
    ///
    /// [`AllocError`] when the memory cannot be had.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let p = Host::alloc_percpu(2).unwrap();
    /// assert_eq!((Host::sum(&p, 0), Host::sum(&p, 1)), (0, 0));
    /// ```
    fn alloc_percpu(slots: usize) -> Result<Self::PerCpu, AllocError>;

    /// As [`alloc_percpu`](Backend::alloc_percpu), from a context that must
    /// not sleep nor wait long: a get or put of a dynamic percpu_ref that
    /// decides to go per-CPU (it may run with interrupts off or inside an
    /// interrupt handler, and inside a read-side section). Fail rather
    /// than wait: the ref then stays in atomic mode and asks again at its
    /// next hot batch of gets (the 2013 patch's non-blocking allocation).
    /// In a kernel: try the allocator's lock instead of spinning on it,
    /// and do not sleep for memory. The default calls `alloc_percpu`, which
    /// is right only for a backend whose `alloc_percpu` never sleeps nor
    /// takes a lock that the interrupted code may hold.
    ///
    /// # Errors
    ///
    /// [`AllocError`] when no memory is at hand now.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let p = Host::alloc_percpu_nowait(2).unwrap();
    /// assert_eq!(Host::sum(&p, 1), 0);
    /// ```
    fn alloc_percpu_nowait(slots: usize) -> Result<Self::PerCpu, AllocError> {
        Self::alloc_percpu(slots)
    }

    /// Adds `delta` (wrapping) to counter `slot` of the calling CPU.
    /// In a kernel: one `add qword gs:[off], reg`.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let p = Host::alloc_percpu(2).unwrap();
    /// Host::this_cpu_add(&p, 1, 7);
    /// Host::this_cpu_add(&p, 1, 3usize.wrapping_neg()); // wrapping: a put
    /// assert_eq!((Host::sum(&p, 0), Host::sum(&p, 1)), (0, 4));
    /// ```
    fn this_cpu_add(p: &Self::PerCpu, slot: usize, delta: usize);

    /// Wrapping sum of counter `slot` over all possible CPUs. The read is
    /// racy; the result is exact only when no CPU can still be adding, which
    /// callers ensure with a grace period.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let p = std::sync::Arc::new(Host::alloc_percpu(1).unwrap());
    /// // A get on one CPU (thread) and its put on another: each counter
    /// // alone is off, and only the sum is the count.
    /// let q = p.clone();
    /// std::thread::spawn(move || Host::this_cpu_add(&q, 0, 1)).join().unwrap();
    /// Host::this_cpu_add(&p, 0, 1usize.wrapping_neg());
    /// assert_eq!(Host::sum(&p, 0), 0);
    /// ```
    fn sum(p: &Self::PerCpu, slot: usize) -> usize;

    /// A word that names `p` for [`this_cpu_add_unless`](Backend::this_cpu_add_unless)
    /// and [`this_cpu_add_sched_unchecked`](Backend::this_cpu_add_sched_unchecked),
    /// which a caller keeps in its handle so that the fast path finds the
    /// counters without a load through the handle's shared state (a
    /// kernel: the per-CPU offset, a multiple of 8). Its lowest bit must
    /// be clear (promise 7). The default, 0, is for backends that use `p`.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let p = Host::alloc_percpu(1).unwrap();
    /// assert_eq!(Host::key(&p), 0);
    /// ```
    #[inline]
    fn key(_p: &Self::PerCpu) -> usize {
        0
    }

    /// Enters a read-side section that [`Backend::synchronize_sched`] waits
    /// for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicBool, Ordering::SeqCst}, Arc};
    /// use refcnt::{host::Host, Backend};
    /// let done = Arc::new(AtomicBool::new(false));
    /// let g = Host::read_lock_sched();
    /// let d = done.clone();
    /// let t = std::thread::spawn(move || {
    ///     Host::synchronize_sched(); // waits for the section above
    ///     d.store(true, SeqCst);
    /// });
    /// std::thread::sleep(std::time::Duration::from_millis(20));
    /// assert!(!done.load(SeqCst));
    /// drop(g);
    /// t.join().unwrap();
    /// assert!(done.load(SeqCst));
    /// ```
    fn read_lock_sched() -> Self::ReadGuard;

    /// Waits for a grace period: every read-side section that began before
    /// the call has ended (rcu-sched).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// Host::synchronize_sched(); // no section open anywhere: returns soon
    /// ```
    fn synchronize_sched();

    /// Runs `f` after a grace period, from a context that may block (a
    /// worker), never from inside this call. That worker is a thread some
    /// CPU runs (a kthread, in a kernel): `f` may enter read-side sections
    /// ([`read_lock_sched`](Self::read_lock_sched)) and use this CPU's
    /// per-CPU slots, as percpu_ref's puts in its callbacks do.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use refcnt::{host::Host, Backend};
    /// let (tx, rx) = mpsc::channel();
    /// let here = std::thread::current().id();
    /// Host::call_sched(Box::new(move || tx.send(std::thread::current().id()).unwrap()));
    /// assert_ne!(rx.recv().unwrap(), here); // in a worker, not the caller
    /// ```
    fn call_sched(f: Box<dyn FnOnce() + Send>);

    /// As [`call_sched`](Self::call_sched), for a callback that never
    /// blocks: the backend may run it in the context that ends the grace
    /// period (in a kernel: with interrupts off, often in the interrupt
    /// handler of the CPU whose report ended it, and possibly at a moment
    /// when it interrupted the caller, once the caller's interrupts are on
    /// again), saving the wakeup of a worker. `f` is told which context it
    /// got ([`CallbackContext`]): in [`Atomic`](CallbackContext::Atomic) it
    /// must not sleep, wait for a grace period, or spin on a lock that the
    /// interrupted code may hold (try it, and hand the work on with
    /// `call_sched` if it is busy). percpu_ref's switches land this way, as
    /// Linux's run from RCU callbacks. The default runs `f` from
    /// `call_sched`'s worker, telling it so.
    ///
    /// Runs exactly once, after a grace period as promise 4 says.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use refcnt::{backend::CallbackContext, host::Host, Backend};
    /// let (tx, rx) = mpsc::channel();
    /// Host::call_sched_atomic(Box::new(move |cx| tx.send(cx).unwrap()));
    /// assert_eq!(rx.recv().unwrap(), CallbackContext::Worker);
    /// ```
    fn call_sched_atomic(f: Box<dyn FnOnce(CallbackContext) + Send>) {
        Self::call_sched(Box::new(move || f(CallbackContext::Worker)))
    }

    /// Monotonic time in nanoseconds: the dynamic mode's rate measurement
    /// and the deadline of
    /// [`wait_for_release_timeout`](crate::percpu_ref::PercpuRef::wait_for_release_timeout)
    /// use it (a clock that never moves makes that timeout wait for ever).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let t = Host::now_ns();
    /// std::thread::sleep(std::time::Duration::from_millis(1));
    /// assert!(Host::now_ns() >= t + 1_000_000);
    /// ```
    fn now_ns() -> u64;

    /// The calling CPU's counter `slot`, if this backend can read it.
    /// Only misuse checks use it (SRCU: a grace-period wait inside a read
    /// section, nesting depth); the default, `None`, turns them off. A
    /// backend whose tasks may migrate while inside an SRCU read section
    /// should keep the default (see [`srcu`](crate::srcu), "Misuse").
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let p = Host::alloc_percpu(1).unwrap();
    /// Host::this_cpu_add(&p, 0, 2);
    /// // The host backend's CPUs are threads: this one reads its own.
    /// assert_eq!(Host::this_cpu_read(&p, 0), Some(2));
    /// ```
    fn this_cpu_read(_p: &Self::PerCpu, _slot: usize) -> Option<usize> {
        None
    }

    /// Lends `f` the calling task's record of open SRCU read sections
    /// ([`TaskSections`]), if this backend keeps one per task; SRCU's
    /// sections record themselves in it, and its misuse checks (a
    /// grace-period wait inside a section of the same domain, nesting
    /// depth) read it. A backend whose CPUs run several tasks keeps one
    /// per task (a kernel swaps it at every context switch), so that the
    /// sections of other tasks of the same CPU, or sections handed to
    /// another task, do not count as the caller's. `f` must run without
    /// another call of this function on the same record in between (in a
    /// kernel: with interrupts off, or with SRCU never used in interrupt
    /// handlers). The default, `None`, leaves the checks to the per-CPU
    /// counters ([`this_cpu_read`](Backend::this_cpu_read)), which is exact
    /// only when each CPU runs one task.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, srcu::Srcu, Backend};
    /// let s = Srcu::<Host>::new().unwrap();
    /// let g = s.read_lock();
    /// assert_eq!(Host::with_task_sections(|t| t.holds(s.id())), Some(Some(true)));
    /// drop(g);
    /// assert_eq!(Host::with_task_sections(|t| t.depth()), Some(0));
    /// ```
    #[inline]
    fn with_task_sections<R>(f: impl FnOnce(&mut TaskSections) -> R) -> Option<R> {
        let _ = f;
        None
    }

    /// Loads `word` and, unless it has a bit of `mask` set, adds `delta`
    /// to counter `slot` of the calling CPU, all in one read-side section
    /// (promise 5); returns whether it added. percpu_ref's fast paths are
    /// this call: `word` is its handle's word, which holds the counters'
    /// [`key`](Backend::key) with the ref's ATOMIC flag in bit 0 (`mask`),
    /// as Linux keeps the per-CPU pointer and the flag in one word of the
    /// ref. Switching to atomic mode sets the flag, then waits for a grace
    /// period: every add made by a section that loaded the word before
    /// has then landed, and every later section sees the flag.
    ///
    /// With no bit of `mask` set, `word` is exactly `key(p)` for the
    /// counters `p` yields; use one of the two: `p` (the default, which
    /// reads `word` only for the flag) or the word itself (a kernel, whose
    /// fast path then never loads through the ref's shared state). With a
    /// bit of `mask` set, `p` may yield `None` (an idle dynamic ref has no
    /// counters), and nothing may be written.
    ///
    /// The default loads `word` with `Acquire` (promise 6), calls `p` and
    /// adds with [`this_cpu_add`](Backend::this_cpu_add), inside
    /// [`read_lock_sched`](Backend::read_lock_sched). A kernel whose grace
    /// period can tell that an interrupt landed between the load and the
    /// add (by the interrupted instruction's address, say) may do without
    /// the section.
    ///
    /// # Safety
    ///
    /// While `word` (loaded) has no bit of `mask` set, it is
    /// [`key`](Backend::key) of the counters `p` yields, which are live for
    /// the call, and `slot` is below the slot count they were allocated
    /// with: an implementation may write through the word without checking
    /// it.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::sync::atomic::AtomicUsize;
    /// use refcnt::{host::Host, Backend};
    /// let pc = Host::alloc_percpu(1).unwrap();
    /// let word = AtomicUsize::new(Host::key(&pc));
    /// // SAFETY: the word is the key of `pc` itself, and slot 0 of 1.
    /// assert!(unsafe { Host::this_cpu_add_unless(|| Some(&pc), &word, 1, 0, 5) });
    /// word.store(Host::key(&pc) | 1, core::sync::atomic::Ordering::Release);
    /// // SAFETY: as above; the flag is set, so nothing is written.
    /// assert!(!unsafe { Host::this_cpu_add_unless(|| None, &word, 1, 0, 5) });
    /// assert_eq!(Host::sum(&pc, 0), 5);
    /// ```
    #[inline(always)]
    unsafe fn this_cpu_add_unless<'a>(
        p: impl FnOnce() -> Option<&'a Self::PerCpu>,
        word: &AtomicUsize,
        mask: usize,
        slot: usize,
        delta: usize,
    ) -> bool
    where
        Self::PerCpu: 'a,
    {
        let _section = Self::read_lock_sched();
        // Acquire: promise 6.
        if word.load(Ordering::Acquire) & mask != 0 {
            return false;
        }
        let Some(p) = p() else {
            return false;
        };
        Self::this_cpu_add(p, slot, delta);
        true
    }

    /// As [`this_cpu_add`](Backend::this_cpu_add), and the add is itself a
    /// read-side section for [`synchronize_sched`](Backend::synchronize_sched)
    /// (promise 3 applies to it). SRCU's fast flavour counts readers with
    /// it. The default wraps the add in [`read_lock_sched`](Backend::read_lock_sched);
    /// a kernel whose grace period cannot split one instruction may
    /// override it with the bare `add gs:[off]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let p = Host::alloc_percpu(1).unwrap();
    /// Host::this_cpu_add_sched(&p, 0, 4);
    /// assert_eq!(Host::sum(&p, 0), 4);
    /// ```
    #[inline]
    fn this_cpu_add_sched(p: &Self::PerCpu, slot: usize, delta: usize) {
        let _section = Self::read_lock_sched();
        Self::this_cpu_add(p, slot, delta);
    }

    /// As [`this_cpu_add_sched`](Backend::this_cpu_add_sched), for a
    /// caller that knows `slot` is in range and keeps `key`
    /// ([`key`](Backend::key) of `p`) beside its handle: a kernel may then
    /// add through `key` alone, with no slot check and no load through
    /// `p`. SRCU's fast flavour counts its readers with it. The default
    /// ignores `key` and calls `this_cpu_add_sched`.
    ///
    /// # Safety
    ///
    /// `key` is [`key`](Backend::key) of `p`, and `slot` is below the
    /// slot count `p` was allocated with: an implementation may write
    /// through `key` without checking either.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// let pc = Host::alloc_percpu(4).unwrap();
    /// // SAFETY: the key of `pc` itself, and slot 3 of 4.
    /// unsafe { Host::this_cpu_add_sched_unchecked(&pc, Host::key(&pc), 3, 2) };
    /// assert_eq!(Host::sum(&pc, 3), 2);
    /// ```
    #[inline(always)]
    unsafe fn this_cpu_add_sched_unchecked(
        p: &Self::PerCpu,
        key: usize,
        slot: usize,
        delta: usize,
    ) {
        let _ = key;
        Self::this_cpu_add_sched(p, slot, delta);
    }

    /// Called in the crate's short spin-wait loops (a release callback
    /// that another CPU is running while a lock is held) and by the default
    /// [`wait_until`](Backend::wait_until). The default is a CPU pause
    /// hint; a backend with a scheduler may yield instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// Host::relax(); // yields the thread on the host
    /// ```
    fn relax() {
        core::hint::spin_loop()
    }

    /// Waits until `done` returns true. Every wait of the crate that can
    /// last goes through here: readers leaving an SRCU index, another
    /// updater's grace period, a mode switch's confirmation, callbacks
    /// before a barrier, a release in flight. No lock that anyone spins on
    /// is held when it is called (SRCU holds its grace-period lock across
    /// its scans, but that lock is only ever try-locked, and the losers
    /// wait here too), so a backend with a scheduler should put the caller
    /// to sleep (after a short spin, since most of these waits end within
    /// microseconds) and test `done` again when
    /// [`wake_waiters`](Backend::wake_waiters) is called or after a
    /// timeout: `done` may become true without a wakeup (a reader leaving
    /// its section tells no one). `done` is cheap and may be called many
    /// times. The default spins with [`relax`](Backend::relax).
    ///
    /// # Examples
    ///
    /// ```
    /// use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
    /// use refcnt::{host::Host, Backend};
    /// let polls = AtomicU32::new(0);
    /// Host::wait_until(&mut || polls.fetch_add(1, Relaxed) == 3);
    /// assert_eq!(polls.load(Relaxed), 4);
    /// ```
    fn wait_until(done: &mut dyn FnMut() -> bool) {
        while !done() {
            Self::relax();
        }
    }

    /// Something a [`wait_until`](Backend::wait_until) may be waiting for
    /// has happened (a grace period ended, callbacks ran, a mode switch
    /// landed, a release returned): sleeping waiters should test their
    /// condition again. May be called from any context the crate runs in,
    /// and often: it should cost one load when nobody waits. The default
    /// does nothing (the default wait spins).
    ///
    /// # Examples
    ///
    /// ```
    /// use refcnt::{host::Host, Backend};
    /// Host::wake_waiters();
    /// ```
    fn wake_waiters() {}

    /// Runs `f` soon from a context that may block and wait (a worker
    /// thread), never from inside this call. SRCU's callback worker, which
    /// runs whole grace periods and so may wait as long as a domain's
    /// slowest reader, goes here. An item may block for that long, so it
    /// must not hold up other items or the [`call_sched`](Backend::call_sched)
    /// callbacks: run each where no other work waits behind it (a pool
    /// that starts a thread when none is idle, as the host and the kernel
    /// backends do), or a slow reader of one domain delays every other
    /// domain's callbacks and every percpu_ref switch. The default hands
    /// `f` to `call_sched`, which is correct only for a backend whose
    /// `call_sched` callbacks may block one another (a single-task test
    /// backend).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use refcnt::{host::Host, Backend};
    /// let (tx, rx) = mpsc::channel();
    /// Host::queue_work(Box::new(move || tx.send(7).unwrap()));
    /// assert_eq!(rx.recv().unwrap(), 7);
    /// ```
    fn queue_work(f: Box<dyn FnOnce() + Send>) {
        Self::call_sched(f)
    }
}
