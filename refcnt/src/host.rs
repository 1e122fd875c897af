//! Host backend: threads own CPU slots. For tests and benchmarks.
//!
//! Each thread takes one of [`MAX_CPUS`] slots the first time it touches a
//! ref and gives it back when it exits. A slot's per-CPU counters are
//! written only by the thread that owns it, so [`Backend::this_cpu_add`] is
//! a `Relaxed` load and store (a plain `mov`/`add`, no `lock` prefix): as
//! close to a kernel's `add gs:[off]` as a process gets.
//!
//! # Read-side sections and grace periods
//!
//! Each slot has a section word: a nesting depth and a sequence number
//! bumped at every outermost entry. `synchronize_sched` snapshots every
//! slot and waits, per slot, until the depth is zero or the sequence has
//! moved on; sections that began after the snapshot are not waited for.
//!
//! The hard part is the store-load pattern: a reader stores "I am in a
//! section" and then loads the mode word; an updater stores the mode word
//! and then loads the section words. Without a full barrier on both sides,
//! each may miss the other's store (x86 lets a load pass an earlier store).
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

/// How many threads can own a CPU slot at once.
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
        // first section (in `cpu`).
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
            // Release: the next owner's writes come after ours.
            SLOT_TAKEN[id].store(false, Release);
        }
    }
}

thread_local! {
    // The slot id lives in a Drop-free cell, so reading it on the fast
    // path is a plain TLS load with no destructor-registration check; the
    // owner with the destructor is touched only when claiming.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    static OWNER: SlotOwner = const { SlotOwner(Cell::new(usize::MAX)) };
    static REPORTS: RefCell<Vec<Misuse>> = const { RefCell::new(Vec::new()) };
}

#[cold]
fn claim() -> usize {
    decide_fences();
    for (i, t) in SLOT_TAKEN.iter().enumerate() {
        // Acquire: pairs with the Release in Slot::drop (previous owner).
        if t.compare_exchange(false, true, Acquire, Relaxed).is_ok() {
            OWNER.with(|o| o.0.set(i));
            return i;
        }
    }
    panic!("refcnt host backend: more than {MAX_CPUS} threads use refs at once");
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
    SLOT.with(|s| {
        let id = s.get();
        if id < MAX_CPUS {
            id
        } else {
            let id = claim();
            s.set(id);
            id
        }
    })
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

/// The host backend (see the module documentation).
#[derive(Debug)]
pub struct Host;

/// Per-CPU counters of the host backend: one cache-line-aligned row per
/// slot.
pub struct HostPerCpu {
    cells: Box<[Padded<[AtomicUsize; 16]>]>,
    lines: usize,
}

impl HostPerCpu {
    #[inline]
    fn cell(&self, cpu: usize, slot: usize) -> &AtomicUsize {
        &self.cells[cpu * self.lines + slot / 16].0[slot % 16]
    }
}

/// Proof that the calling thread is in a read-side section; not `Send`.
#[must_use = "dropping the guard ends the read-side section"]
pub struct HostReadGuard {
    slot: usize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for HostReadGuard {
    #[inline]
    fn drop(&mut self) {
        let w = &SECTIONS[self.slot].0;
        // Release: everything done in the section happens before an
        // updater that sees the depth drop (its Acquire loads).
        w.store(w.load(Relaxed) - 1, Release);
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
        let lines = slots.div_ceil(16).max(1);
        let cells = (0..lines * MAX_CPUS)
            .map(|_| Padded([const { AtomicUsize::new(0) }; 16]))
            .collect();
        Ok(HostPerCpu { cells, lines })
    }

    #[inline]
    fn this_cpu_add(p: &HostPerCpu, slot: usize, delta: usize) {
        let c = p.cell(cpu(), slot);
        // Relaxed load and store: only this thread writes this cell, so no
        // read-modify-write is needed; the section exit (Release) and the
        // grace period publish it.
        c.store(c.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    #[inline]
    fn this_cpu_read(p: &HostPerCpu, slot: usize) -> Option<usize> {
        // Relaxed: this thread's own cell, written only by this thread.
        Some(p.cell(cpu(), slot).load(Relaxed))
    }

    fn sum(p: &HostPerCpu, slot: usize) -> usize {
        (0..MAX_CPUS)
            // Relaxed: the grace period that precedes a meaningful sum has
            // already ordered the writes (Acquire on the section words).
            .map(|c| p.cell(c, slot).load(Relaxed))
            .fold(0usize, usize::wrapping_add)
    }

    #[inline]
    fn read_lock_sched() -> HostReadGuard {
        let slot = cpu();
        let w = &SECTIONS[slot].0;
        let s = w.load(Relaxed);
        if s & DEPTH_MASK == 0 {
            // Relaxed store, then the store-load barrier below.
            w.store(
                ((s >> DEPTH_BITS).wrapping_add(1) << DEPTH_BITS) | 1,
                Relaxed,
            );
            // Relaxed: fixed before this thread claimed its slot.
            if FENCE_KIND.load(Relaxed) == FENCE_MEMBARRIER {
                // The updater's membarrier supplies the hardware barrier.
                compiler_fence(SeqCst);
            } else {
                fence(SeqCst);
            }
        } else {
            assert!(
                s & DEPTH_MASK < DEPTH_MASK,
                "read-side sections nested too deep"
            );
            w.store(s + 1, Relaxed);
        }
        HostReadGuard {
            slot,
            _not_send: PhantomData,
        }
    }

    fn synchronize_sched() {
        decide_fences();
        let me = SLOT.with(|s| s.get());
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
}
