//! Host backend: threads own CPU slots. For tests and benchmarks.
//!
//! Each thread takes one of [`MAX_CPUS`] slots the first time it touches a
//! ref and gives it back when it exits. A slot's per-CPU counters are
//! written only by the thread that owns it, so [`Backend::this_cpu_add`] is
//! a `Relaxed` load and store (a plain `mov`/`add`, no `lock` prefix): as
//! close to a kernel's `add gs:[off]` as a process gets.
//!
//! Enabled by the crate's default feature `std` (also named `host`); a
//! kernel turns default features off and brings its own [`Backend`].
//!
//! # Environment
//!
//! * `REFCNT_QUIET`: when set, misuse reports are not printed to stderr
//!   (they are still counted, kept per thread for [`take_reports`] and per
//!   object for `PercpuRef::take_reports` / `Srcu::take_reports`).
//! * `REFCNT_NO_MEMBARRIER`: when set (before the first read-side
//!   section), do not use `membarrier(2)`: readers and updaters both fence
//!   instead (see below). For comparing the two, or for kernels that
//!   refuse the call.
//!
//! # Threads the backend starts
//!
//! * `refcnt-call-sched`: runs [`Backend::call_sched`] callbacks (percpu_ref
//!   switches and kill confirmations) after a grace period, in order.
//! * `refcnt-work`: a pool for [`Backend::queue_work`] (SRCU's grace-period
//!   workers): an idle thread takes each item, or a new one starts, so an
//!   item that waits for a slow reader holds up nothing else; idle threads
//!   exit after 5 s.
//!
//! # Read-side sections and grace periods
//!
//! Each slot has a section word: a nesting depth and a sequence number
//! bumped at every outermost entry. `synchronize_sched` snapshots every
//! slot and waits, per slot, until the depth is zero or the sequence has
//! moved on; sections that began after the snapshot are not waited for.
//!
//! The hard part is the store-load pattern: a reader stores "I am in a
//! section" and then loads a percpu_ref's flag; an updater stores the
//! flags and then loads the section words. Without a full barrier on both
//! sides, each may miss the other's store (x86 lets a load pass an earlier
//! store).
//! A `SeqCst` fence in every read-side entry would fix it, but costs ~20
//! cycles on the fast path. Instead, as liburcu does, the reader has only a
//! compiler fence, and the updater issues
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every running
//! thread of the process execute a full barrier: after it, either a reader
//! has left its store visible to the updater, or the reader's later load
//! sees the updater's mode store. Where membarrier is not available (Miri,
//! loom, non-Linux, or a kernel that refuses it) both sides use `SeqCst`
//! fences; the choice is made once, before any thread can enter a section.
//!
//! Leaving a section is a `Release` store, paired with the updater's
//! `Acquire` loads of the section words: a finished section's per-CPU adds
//! are visible once the updater sees it finished.
//!
//! # The fast path
//!
//! A percpu_ref get is a section entry, a load of the handle's word (the
//! ref's mode flag), a per-CPU add and a section exit
//! ([`Backend::this_cpu_add_unless`]), so every instruction on that path
//! shows in the pair's cost. The calling thread's slot and section word are
//! claimed once and cached in one thread-local without a destructor
//! (`const`-initialised `Cell`s: each read is one `fs:`-relative load, with
//! no lazy-initialisation or destructor check):
//!
//! * entry reads the cached section word and tests it; the word is cached
//!   only when membarrier is in use, so that one test also sends the rare
//!   cases (first use, no membarrier) to an out-of-line path that claims
//!   or fences. Then one load, one test of the depth, one add and store;
//! * exit is one decrement through the pointer the guard kept;
//! * [`Backend::this_cpu_add`] reads the cached slot number, whose range
//!   check is the claim check and the only bounds check (the counters of
//!   slots 0 to 15 are a fixed-size array per CPU), then adds.
//!
//! Everything on the path is inlined; claiming, fencing and the panics are
//! out of line. `cargo bench -p refcnt --bench primitives` measures it.

use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::atomic::{
    compiler_fence, fence, AtomicBool, AtomicU8, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Condvar, Mutex, Once, OnceLock};
use std::time::Instant;
use std::vec::Vec;

use crate::backend::{AllocError, Backend, Report};
use crate::misuse::Misuse;
use crate::srcu::TaskSections;

/// How many threads can own a CPU slot at once.
///
/// # Examples
///
/// ```
/// use refcnt::host::{cpu, MAX_CPUS};
/// assert!(cpu() < MAX_CPUS);
/// ```
pub const MAX_CPUS: usize = 64;

const DEPTH_BITS: u32 = 16;
const DEPTH_MASK: usize = (1 << DEPTH_BITS) - 1;

#[repr(align(128))]
struct Padded<T>(T);

static SLOT_TAKEN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static SECTIONS: [Padded<AtomicUsize>; MAX_CPUS] =
    [const { Padded(AtomicUsize::new(0)) }; MAX_CPUS];

const FENCE_UNDECIDED: u8 = 0;
const FENCE_MEMBARRIER: u8 = 1;
const FENCE_SEQCST: u8 = 2;
static FENCE_KIND: AtomicU8 = AtomicU8::new(FENCE_UNDECIDED);
static FENCE_INIT: Once = Once::new();

fn decide_fences() {
    FENCE_INIT.call_once(|| {
        let kind = if membarrier_register() {
            FENCE_MEMBARRIER
        } else {
            FENCE_SEQCST
        };
        // Relaxed: the Once publishes it to every thread that passes
        // through `decide_fences`, which every reader does before its
        // first section (in `claim`).
        FENCE_KIND.store(kind, Relaxed);
    });
}

#[cfg(all(target_os = "linux", not(miri)))]
mod sys {
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    pub(super) fn register() -> bool {
        if std::env::var_os("REFCNT_NO_MEMBARRIER").is_some() {
            return false;
        }
        // SAFETY: membarrier takes three integer arguments and touches no
        // memory of ours; an unknown command just fails with an error.
        let r =
            unsafe { libc::syscall(libc::SYS_membarrier, CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) };
        r == 0
    }

    pub(super) fn barrier() {
        // SAFETY: as in `register`; the command was registered, so it
        // succeeds.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, CMD_PRIVATE_EXPEDITED, 0, 0) };
        assert_eq!(r, 0, "membarrier failed after successful registration");
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
fn membarrier_register() -> bool {
    sys::register()
}

#[cfg(not(all(target_os = "linux", not(miri))))]
fn membarrier_register() -> bool {
    false
}

/// Whether the host backend uses membarrier (true) or fences on both sides.
///
/// # Examples
///
/// ```
/// let _ = refcnt::host::uses_membarrier();
/// ```
pub fn uses_membarrier() -> bool {
    decide_fences();
    // Relaxed: fixed once decide_fences has returned (Once orders it).
    FENCE_KIND.load(Relaxed) == FENCE_MEMBARRIER
}

fn updater_barrier() {
    #[cfg(all(target_os = "linux", not(miri)))]
    // Relaxed: decided by the caller's decide_fences (a Once orders it).
    if FENCE_KIND.load(Relaxed) == FENCE_MEMBARRIER {
        return sys::barrier();
    }
    fence(SeqCst);
}

/// Gives the slot back when its thread exits.
struct SlotOwner(Cell<usize>);

impl Drop for SlotOwner {
    fn drop(&mut self) {
        let id = self.0.get();
        if id < MAX_CPUS {
            // Forget the slot first: a thread-local destructor that runs
            // after this one and touches a ref must not add to a slot that
            // another thread may own by then (it claims a new one, see
            // `claim`).
            THIS.with(ThisCpu::forget);
            // A read-side section still open here belongs to a guard kept
            // in a thread-local that is destroyed after this one: its
            // unlock will still write this slot's section word. Giving the
            // slot to another thread now would let two threads update one
            // word with plain stores, and lose a section a grace period
            // must wait for. Keep it taken for good (one slot leaked per
            // such thread). Acquire: our own word; pairs with nothing.
            if SECTIONS[id].0.load(Acquire) & DEPTH_MASK != 0 {
                return;
            }
            // Release: the next owner's writes come after ours.
            SLOT_TAKEN[id].store(false, Release);
        }
    }
}

/// What the fast paths need to know about the calling thread, claimed
/// once and cached in one thread-local without a destructor, so each is a
/// single `fs:`-relative load (no lazy-initialisation or
/// destructor-registration check, no index arithmetic).
struct ThisCpu {
    /// The slot; `MAX_CPUS` or more until claimed.
    id: Cell<usize>,
    /// `&SECTIONS[id]` once claimed, if section entry may skip the
    /// hardware fence (membarrier in use); `None` sends every entry to
    /// [`enter_slow`], which claims or fences. One test thus covers both.
    fast_section: Cell<Option<&'static AtomicUsize>>,
}

impl ThisCpu {
    fn forget(&self) {
        self.id.set(usize::MAX);
        self.fast_section.set(None);
    }
}

thread_local! {
    static THIS: ThisCpu = const {
        ThisCpu {
            id: Cell::new(usize::MAX),
            fast_section: Cell::new(None),
        }
    };
    // The destructor that gives the slot back lives apart, touched only
    // when claiming, so that `THIS` needs no destructor.
    static OWNER: SlotOwner = const { SlotOwner(Cell::new(usize::MAX)) };
    static REPORTS: RefCell<Vec<Misuse>> = const { RefCell::new(Vec::new()) };
    /// The thread's open SRCU sections ([`Backend::with_task_sections`]).
    static TASK_SECTIONS: RefCell<TaskSections> = const { RefCell::new(TaskSections::new()) };
}

#[cold]
#[inline(never)]
fn claim() -> usize {
    decide_fences();
    for (i, t) in SLOT_TAKEN.iter().enumerate() {
        // Acquire: pairs with the Release in SlotOwner::drop (previous
        // owner), so its counter writes come before ours.
        if t.compare_exchange(false, true, Acquire, Relaxed).is_ok() {
            // A thread whose thread-local destructors have already run
            // cannot register another one: it then keeps the slot for
            // good rather than give it back while it may still use it.
            let _ = OWNER.try_with(|o| o.0.set(i));
            // Relaxed: fixed by decide_fences above (a Once orders it).
            let membarrier = FENCE_KIND.load(Relaxed) == FENCE_MEMBARRIER;
            THIS.with(|c| {
                c.id.set(i);
                c.fast_section.set(membarrier.then_some(&SECTIONS[i].0));
            });
            return i;
        }
    }
    panic!("refcnt host backend: more than {MAX_CPUS} threads use refs at once");
}

/// Enters a read-side section on section word `w` of the calling thread;
/// `hw_fence`: no membarrier, so the reader issues the store-load barrier.
#[inline(always)]
fn enter(w: &'static AtomicUsize, hw_fence: bool) -> HostReadGuard {
    // Relaxed: only this thread writes its section word.
    let s = w.load(Relaxed);
    if s & DEPTH_MASK == 0 {
        // Outermost (the depth bits are 0): depth 1 and the next sequence
        // number, in one add. Relaxed store, then the store-load barrier.
        w.store(s.wrapping_add((1 << DEPTH_BITS) | 1), Relaxed);
        if hw_fence {
            fence(SeqCst);
        } else {
            // The updater's membarrier supplies the hardware barrier; this
            // keeps the compiler from hoisting the section's accesses
            // above the store.
            compiler_fence(SeqCst);
        }
    } else {
        if s & DEPTH_MASK == DEPTH_MASK {
            nested_too_deep();
        }
        // Relaxed: nested; the outermost entry did the ordering.
        w.store(s + 1, Relaxed);
    }
    HostReadGuard {
        word: w,
        _not_send: PhantomData,
    }
}

/// Section entry of a thread that has no slot yet, or that must fence
/// (no membarrier). Out of line, so the usual path falls straight through.
#[cold]
#[inline(never)]
fn enter_slow() -> HostReadGuard {
    let w = &SECTIONS[cpu()].0;
    // Relaxed: fixed before `cpu` returned (decide_fences, a Once).
    enter(w, FENCE_KIND.load(Relaxed) != FENCE_MEMBARRIER)
}

#[cold]
#[inline(never)]
fn nested_too_deep() -> ! {
    panic!("read-side sections nested too deep");
}

/// The calling thread's CPU slot (claimed on first use).
///
/// # Examples
///
/// ```
/// assert!(refcnt::host::cpu() < refcnt::host::MAX_CPUS);
/// ```
#[inline]
pub fn cpu() -> usize {
    let id = THIS.with(|c| c.id.get());
    if id < MAX_CPUS {
        id
    } else {
        claim()
    }
}

/// Misuse reports made by the calling thread since the last call.
///
/// # Examples
///
/// ```
/// use refcnt::{host::{take_reports, Host}, percpu_ref::{Flags, PercpuRef}};
/// let r = PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap();
/// take_reports();
/// r.kill();
/// r.kill();
/// assert_eq!(take_reports(), [refcnt::Misuse::DoubleKill]);
/// ```
pub fn take_reports() -> Vec<Misuse> {
    REPORTS.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

std::thread_local! {
    /// How many of this thread's next `alloc_percpu_nowait` calls fail.
    static FAIL_NOWAIT: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread's next `n` [`Backend::alloc_percpu_nowait`]
/// calls fail, as a kernel's non-blocking allocation may when memory is
/// short or its allocator is busy (for tests of what a dynamic
/// percpu_ref does then: stay atomic and try again later). Other threads
/// are not affected; `n = 0` cancels.
///
/// # Examples
///
/// ```
/// use refcnt::{host::{fail_nowait_allocs, Host}, Backend};
/// fail_nowait_allocs(1);
/// assert!(Host::alloc_percpu_nowait(2).is_err());
/// assert!(Host::alloc_percpu_nowait(2).is_ok());
/// ```
pub fn fail_nowait_allocs(n: usize) {
    FAIL_NOWAIT.with(|f| f.set(n));
}

/// The host backend (see the module documentation).
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, Backend};
/// let p = Host::alloc_percpu(1).unwrap();
/// {
///     let _section = Host::read_lock_sched();
///     Host::this_cpu_add(&p, 0, 2);
/// }
/// Host::synchronize_sched(); // every section that began before has ended
/// assert_eq!(Host::sum(&p, 0), 2);
/// ```
#[derive(Debug)]
pub struct Host;

/// Sixteen counters (one per slot of an allocation) of every CPU, each
/// CPU's on its own 128 bytes.
type Line = [Padded<[AtomicUsize; 16]>; MAX_CPUS];

/// Per-CPU counters of the host backend: for every 16 slots, one
/// cache-line-aligned row of 16 counters per CPU.
///
/// # Examples
///
/// ```
/// use refcnt::{host::{Host, HostPerCpu}, Backend};
/// let p: HostPerCpu = Host::alloc_percpu(20).unwrap();
/// Host::this_cpu_add(&p, 17, 5);
/// assert_eq!(Host::this_cpu_read(&p, 17), Some(5));
/// ```
pub struct HostPerCpu {
    /// Slots 0 to 15. Apart from the others, so that the usual constant
    /// slot below 16 reaches it with no length check; indexed by CPU, a
    /// fixed-size array, so the claim check is the only bounds check.
    first: Box<Line>,
    /// Slots 16 and up: `more[slot / 16 - 1]`.
    more: Box<[Line]>,
}

impl HostPerCpu {
    #[inline]
    fn line(&self, slot: usize) -> &Line {
        match slot / 16 {
            0 => &self.first,
            n => &self.more[n - 1],
        }
    }

    /// The calling thread's counter `slot` (its slot claimed on first use).
    #[inline]
    fn this_cell(&self, slot: usize) -> &AtomicUsize {
        &self.this_row(slot)[slot % 16]
    }

    /// The calling thread's row of the sixteen counters around `slot`.
    #[inline(always)]
    fn this_row(&self, slot: usize) -> &[AtomicUsize; 16] {
        let line = self.line(slot);
        // `get` is the claim check: an unclaimed id is `MAX_CPUS` or more.
        match line.get(THIS.with(|c| c.id.get())) {
            Some(row) => &row.0,
            None => &line[claim()].0,
        }
    }
}

fn zero_line() -> Line {
    [const { Padded([const { AtomicUsize::new(0) }; 16]) }; MAX_CPUS]
}

/// Proof that the calling thread is in a read-side section; not `Send`.
///
/// # Examples
///
/// ```
/// use refcnt::{host::Host, Backend};
/// let guard = Host::read_lock_sched();
/// drop(guard); // the section ends here
/// ```
#[must_use = "dropping the guard ends the read-side section"]
pub struct HostReadGuard {
    /// The section word of the thread that entered (kept, so leaving reads
    /// no thread-local).
    word: &'static AtomicUsize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for HostReadGuard {
    #[inline]
    fn drop(&mut self) {
        let w = self.word;
        // Release: everything done in the section happens before an
        // updater that sees the depth drop (its Acquire loads). The load
        // is Relaxed: only this thread writes its section word.
        w.store(w.load(Relaxed).wrapping_sub(1), Release);
    }
}

impl Report for Host {
    fn report(m: Misuse) {
        REPORTS.with(|r| r.borrow_mut().push(m));
        if std::env::var_os("REFCNT_QUIET").is_none() {
            std::eprintln!("refcnt misuse: {m}");
        }
    }
}

struct Worker {
    queue: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    wake: Condvar,
}

fn worker() -> &'static Worker {
    static W: OnceLock<&'static Worker> = OnceLock::new();
    W.get_or_init(|| {
        let w: &'static Worker = Box::leak(Box::new(Worker {
            queue: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("refcnt-call-sched".into())
            .spawn(move || loop {
                let batch = {
                    let mut q = w.queue.lock().unwrap();
                    while q.is_empty() {
                        q = w.wake.wait(q).unwrap();
                    }
                    std::mem::take(&mut *q)
                };
                Host::synchronize_sched();
                for f in batch {
                    f();
                }
            })
            .expect("spawn the call_sched worker");
        w
    })
}

fn start() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

// SAFETY: (1) a slot's counter is written only by its owning thread, with
// no interrupts in between (signal handlers do not touch refs); (2) `sum`
// reads every slot; (3) `synchronize_sched` waits for every section that
// was open at its snapshot, with the barrier argument of the module
// documentation; (4) `call_sched` queues to a worker that waits a grace
// period before running callbacks.
unsafe impl Backend for Host {
    type PerCpu = HostPerCpu;
    type ReadGuard = HostReadGuard;

    fn alloc_percpu(slots: usize) -> Result<HostPerCpu, AllocError> {
        Ok(HostPerCpu {
            first: Box::new(zero_line()),
            more: (16..slots).step_by(16).map(|_| zero_line()).collect(),
        })
    }

    /// As `alloc_percpu`, unless [`fail_nowait_allocs`] asked the calling
    /// thread to fail some.
    fn alloc_percpu_nowait(slots: usize) -> Result<HostPerCpu, AllocError> {
        let fail = FAIL_NOWAIT.with(|f| {
            let n = f.get();
            f.set(n.saturating_sub(1));
            n > 0
        });
        if fail {
            return Err(AllocError);
        }
        Self::alloc_percpu(slots)
    }

    #[inline]
    fn this_cpu_add(p: &HostPerCpu, slot: usize, delta: usize) {
        let c = p.this_cell(slot);
        // Relaxed load and store: only this thread writes this cell, so no
        // read-modify-write is needed; the section exit (Release) and the
        // grace period publish it.
        c.store(c.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    #[inline]
    fn this_cpu_read(p: &HostPerCpu, slot: usize) -> Option<usize> {
        // Relaxed: a counter is written only by this thread.
        Some(p.this_cell(slot).load(Relaxed))
    }

    fn sum(p: &HostPerCpu, slot: usize) -> usize {
        p.line(slot)
            .iter()
            // Relaxed: the grace period that precedes a meaningful sum has
            // already ordered the writes (Acquire on the section words).
            .map(|c| c.0[slot % 16].load(Relaxed))
            .fold(0usize, usize::wrapping_add)
    }

    #[inline(always)]
    fn read_lock_sched() -> HostReadGuard {
        match THIS.with(|c| c.fast_section.get()) {
            Some(w) => enter(w, false),
            None => enter_slow(),
        }
    }

    fn synchronize_sched() {
        decide_fences();
        let me = THIS.with(|c| c.id.get());
        if me < MAX_CPUS {
            // Relaxed: our own word.
            let d = SECTIONS[me].0.load(Relaxed) & DEPTH_MASK;
            assert!(
                d == 0,
                "synchronize_sched inside a read-side section would deadlock"
            );
        }
        // Pairs with the reader's entry barrier (see the module docs).
        updater_barrier();
        for w in SECTIONS.iter().map(|p| &p.0) {
            // Acquire: pairs with the Release at section exit.
            let s0 = w.load(Acquire);
            if s0 & DEPTH_MASK == 0 {
                continue;
            }
            let mut spins = 0u32;
            loop {
                let s = w.load(Acquire);
                if s & DEPTH_MASK == 0 || s >> DEPTH_BITS != s0 >> DEPTH_BITS {
                    break;
                }
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        // Order what the caller does next after the observed exits.
        fence(SeqCst);
    }

    fn call_sched(f: Box<dyn FnOnce() + Send>) {
        let w = worker();
        w.queue.lock().unwrap().push(f);
        w.wake.notify_one();
    }

    fn now_ns() -> u64 {
        start().elapsed().as_nanos() as u64
    }

    fn relax() {
        std::thread::yield_now();
    }

    /// One record per thread (a thread is a task here). `None` only in a
    /// thread-local destructor that runs after the record's own.
    #[inline]
    fn with_task_sections<R>(f: impl FnOnce(&mut TaskSections) -> R) -> Option<R> {
        TASK_SECTIONS.try_with(|t| f(&mut t.borrow_mut())).ok()
    }

    /// Runs `f` on a pool thread that is not busy: an idle one if there
    /// is one, else a new one. Work that waits (an SRCU grace period held
    /// up by a slow reader) thus never holds up other work: not another
    /// domain's, and not the `call_sched` callbacks (percpu_ref switches
    /// and kill confirmations), which have a thread of their own.
    fn queue_work(f: Box<dyn FnOnce() + Send>) {
        pool_queue(f);
    }
}

/// The work pool behind [`Host`]'s `queue_work`.
struct Pool {
    state: Mutex<PoolState>,
    wake: Condvar,
}

struct PoolState {
    queue: std::collections::VecDeque<Box<dyn FnOnce() + Send>>,
    /// Threads waiting for work.
    idle: usize,
}

/// How long a pool thread waits for work before it exits.
const POOL_IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| Pool {
        state: Mutex::new(PoolState {
            queue: std::collections::VecDeque::new(),
            idle: 0,
        }),
        wake: Condvar::new(),
    })
}

fn pool_queue(f: Box<dyn FnOnce() + Send>) {
    let p = pool();
    let mut s = p.state.lock().unwrap();
    s.queue.push_back(f);
    // Every idle thread takes one item; more items than idle threads
    // need a new thread, or an item would wait behind a busy one.
    let spawn = s.queue.len() > s.idle;
    drop(s);
    if spawn {
        std::thread::Builder::new()
            .name("refcnt-work".into())
            .spawn(pool_thread)
            .expect("spawn a refcnt work thread");
    } else {
        p.wake.notify_one();
    }
}

fn pool_thread() {
    let p = pool();
    let mut s = p.state.lock().unwrap();
    loop {
        if let Some(f) = s.queue.pop_front() {
            drop(s);
            f();
            s = p.state.lock().unwrap();
            continue;
        }
        s.idle += 1;
        let (next, timeout) = p.wake.wait_timeout(s, POOL_IDLE_EXIT).unwrap();
        s = next;
        s.idle -= 1;
        if timeout.timed_out() && s.queue.is_empty() {
            return;
        }
    }
}
