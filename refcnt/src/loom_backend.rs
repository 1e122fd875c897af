//! A backend for the loom model checker (`--cfg loom`): a few CPU slots,
//! one per loom thread, read-side sections as per-slot depth counters with
//! `SeqCst` fences on both sides, and `call_sched` callbacks that a model
//! runs itself with [`run_pending`].

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::marker::PhantomData;

use loom::sync::atomic::{
    fence, AtomicUsize,
    Ordering::{Relaxed, Release, SeqCst},
};
use loom::sync::Mutex;

use crate::backend::{AllocError, Backend, Report};
use crate::misuse::Misuse;

/// How many loom threads (CPUs) a model may use, main thread included.
pub const LOOM_CPUS: usize = 4;

type Callback = Box<dyn FnOnce() + Send>;

loom::lazy_static! {
    static ref NEXT_CPU: AtomicUsize = AtomicUsize::new(0);
    static ref DEPTH: Vec<AtomicUsize> = (0..LOOM_CPUS).map(|_| AtomicUsize::new(0)).collect();
    static ref PENDING: Mutex<Vec<Callback>> = Mutex::new(Vec::new());
    static ref REPORTS: AtomicUsize = AtomicUsize::new(0);
}

loom::thread_local! {
    static CPU: usize = NEXT_CPU.fetch_add(1, Relaxed);
}

fn cpu() -> usize {
    let c = CPU.with(|c| *c);
    assert!(c < LOOM_CPUS, "too many loom threads for LOOM_CPUS");
    c
}

/// The loom backend.
#[derive(Debug)]
pub struct Loom;

/// Section guard of [`Loom`].
pub struct LoomGuard {
    cpu: usize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for LoomGuard {
    fn drop(&mut self) {
        DEPTH[self.cpu].fetch_sub(1, SeqCst);
    }
}

/// Runs, after a grace period, every callback queued by `call_sched`.
pub fn run_pending() {
    Loom::synchronize_sched();
    let batch = core::mem::take(&mut *PENDING.lock().unwrap());
    for f in batch {
        f();
    }
}

/// Misuse reports in this execution of the model.
pub fn reports() -> usize {
    REPORTS.load(SeqCst)
}

impl Report for Loom {
    fn report(_m: Misuse) {
        REPORTS.fetch_add(1, SeqCst);
    }
}

// SAFETY: (1) each loom thread has its own slot and writes only it; (2) sum
// reads all slots; (3) synchronize waits until every slot's depth is zero,
// with SeqCst fences on both sides of the store-load pattern; (4) callbacks
// run only from `run_pending`, after a grace period.
unsafe impl Backend for Loom {
    type PerCpu = Box<[AtomicUsize]>;
    type ReadGuard = LoomGuard;

    fn alloc_percpu(slots: usize) -> Result<Self::PerCpu, AllocError> {
        Ok((0..slots * LOOM_CPUS)
            .map(|_| AtomicUsize::new(0))
            .collect())
    }

    fn this_cpu_add(p: &Self::PerCpu, slot: usize, delta: usize) {
        let n = p.len() / LOOM_CPUS;
        let c = &p[cpu() * n + slot];
        c.store(c.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    fn sum(p: &Self::PerCpu, slot: usize) -> usize {
        let n = p.len() / LOOM_CPUS;
        (0..LOOM_CPUS)
            .map(|c| p[c * n + slot].load(Relaxed))
            .fold(0, usize::wrapping_add)
    }

    fn this_cpu_read(p: &Self::PerCpu, slot: usize) -> Option<usize> {
        let n = p.len() / LOOM_CPUS;
        Some(p[cpu() * n + slot].load(Relaxed))
    }

    fn set_on_every_cpu(p: &Self::PerCpu, slot: usize, value: usize) {
        let n = p.len() / LOOM_CPUS;
        for c in 0..LOOM_CPUS {
            // Release: promise 7 (the default fast path fences Acquire).
            p[c * n + slot].store(value, Release);
        }
    }

    fn read_lock_sched() -> LoomGuard {
        let cpu = cpu();
        DEPTH[cpu].fetch_add(1, SeqCst);
        fence(SeqCst);
        LoomGuard {
            cpu,
            _not_send: PhantomData,
        }
    }

    fn synchronize_sched() {
        fence(SeqCst);
        for d in DEPTH.iter() {
            while d.load(SeqCst) != 0 {
                loom::thread::yield_now();
            }
        }
        fence(SeqCst);
    }

    fn call_sched(f: Callback) {
        PENDING.lock().unwrap().push(f);
    }

    fn now_ns() -> u64 {
        0
    }

    fn relax() {
        loom::thread::yield_now();
    }
}
