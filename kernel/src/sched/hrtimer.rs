//! High-resolution timers: a per-CPU list of deadlines in nanoseconds,
//! each with a function that runs in that CPU's timer interrupt once its
//! deadline has passed (Linux's hrtimers in hard-interrupt mode, as
//! null_blk's timer completion uses them).
//!
//! The tick's timers (`sleep`, `wait_until_timeout`) have the tick's 4 ms
//! resolution; these have the local APIC timer's. The list is a heap
//! ordered by deadline (then by arming order) behind an interrupts-off
//! lock; [`start`] pushes and asks the arch layer for an interrupt at the
//! new head's deadline (`idt::arm_hrtimer`); the interrupt's hook,
//! [`expire`], runs every entry that is due and asks for the next head.
//!
//! A function runs with interrupts off, in the interrupt, on the CPU that
//! armed it: it must not sleep, and a lock it shares with thread code must
//! be taken with interrupts off there too.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Ordering as CmpOrdering;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;

use crate::arch::lock::IrqSpinLock;
use crate::arch::percpu::{cpu_id, possible_cpus};
use crate::arch::{idt, time};

struct Entry {
    deadline: u64,
    seq: u64,
    f: Box<dyn FnOnce() + Send>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that the heap's top is the earliest deadline (and, at
    /// equal deadlines, the first armed).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

static LISTS: Once<Vec<IrqSpinLock<BinaryHeap<Entry>>>> = Once::new();
/// Arming order, for ties.
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Functions run since boot.
static FIRED: AtomicU64 = AtomicU64::new(0);

fn lists() -> &'static [IrqSpinLock<BinaryHeap<Entry>>] {
    LISTS.call_once(|| {
        (0..possible_cpus())
            .map(|_| IrqSpinLock::new(BinaryHeap::new()))
            .collect()
    })
}

/// Runs `f` in this CPU's timer interrupt once `delay_ns` nanoseconds have
/// passed (not before; later by the interrupt's latency). Callable from
/// any context, interrupt handlers included. Returns the deadline (ns,
/// `time::now_ns`'s clock).
pub fn start(delay_ns: u64, f: impl FnOnce() + Send + 'static) -> u64 {
    let deadline = time::now_ns().saturating_add(delay_ns);
    // Relaxed: only uniqueness and order among this CPU's entries matter,
    // and those are armed in program order.
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut list = lists()[cpu_id()].lock();
    list.push(Entry {
        deadline,
        seq,
        f: Box::new(f),
    });
    // Under the lock, interrupts off: the head cannot expire between the
    // push and the request.
    idt::arm_hrtimer(list.peek().map_or(deadline, |e| e.deadline));
    deadline
}

/// The timer interrupt's hook: runs every entry of this CPU that is due,
/// earliest first, then asks for an interrupt at the next one's deadline.
/// Registered by `irq.rs`.
pub fn expire() {
    let Some(lists) = LISTS.get() else { return };
    let list = &lists[cpu_id()];
    loop {
        let now = time::now_ns();
        let due = {
            let mut l = list.lock();
            match l.peek() {
                Some(e) if e.deadline <= now => l.pop(),
                Some(e) => {
                    idt::arm_hrtimer(e.deadline);
                    None
                }
                None => None,
            }
        };
        let Some(e) = due else { return };
        // Relaxed: a statistic.
        FIRED.fetch_add(1, Ordering::Relaxed);
        // Outside the list's lock: the function may arm another timer.
        (e.f)();
    }
}

/// Functions run by high-resolution timers since boot.
pub fn fired() -> u64 {
    // Relaxed: a statistic.
    FIRED.load(Ordering::Relaxed)
}

/// Timers armed on `cpu` and not yet run (racy).
pub fn pending(cpu: usize) -> usize {
    LISTS.get().map_or(0, |l| l[cpu].lock().len())
}

crate::ktest! {
    /// Timers run on the CPU that armed them, in its interrupt, never
    /// before their deadline, earliest deadline first whatever the arming
    /// order; a 20 us timer fires long before the next 4 ms tick would.
    #[smp(1, 4)]
    fn hrtimers_fire_in_deadline_order_not_early_on_their_cpu() {
        use alloc::sync::Arc;
        use ::x86_64::instructions::interrupts::are_enabled;
        let cpus: Vec<usize> = crate::arch::smp::online().collect();
        let mut first = u64::MAX;
        for &cpu in &cpus {
            // (index, deadline, fired at, cpu, in the interrupt, interrupts on)
            let log = Arc::new(IrqSpinLock::new(Vec::new()));
            let l = log.clone();
            let deadlines = Arc::new(IrqSpinLock::new(Vec::new()));
            crate::sched::spawn_on(cpu, move || {
                // Armed with interrupts off, so none fires before all are
                // armed and the deadlines are what the arming order says.
                let _irq = crate::arch::percpu::IrqGuard::new();
                let t0 = time::now_ns();
                for (i, delay) in [300_000u64, 20_000, 150_000, 20_000, 60_000].into_iter().enumerate() {
                    let (l, d) = (l.clone(), deadlines.clone());
                    let deadline = start(delay, move || {
                        let at = time::now_ns();
                        let deadline = d.lock()[i];
                        l.lock().push((i, deadline, at, at - t0, cpu_id(), crate::arch::idt::in_interrupt(), are_enabled()));
                    });
                    deadlines.lock().push(deadline);
                }
            })
            .join();
            assert!(crate::arch::smp::wait_for(2000, || log.lock().len() == 5), "{} of 5 timers fired", log.lock().len());
            let log = log.lock();
            let fired: Vec<usize> = log.iter().map(|e| e.0).collect();
            let mut by_deadline: Vec<(u64, usize)> = log.iter().map(|e| (e.1, e.0)).collect();
            by_deadline.sort_unstable();
            let expected: Vec<usize> = by_deadline.iter().map(|e| e.1).collect();
            assert_eq!(fired, expected, "cpu {cpu}: not in deadline order");
            assert_eq!(fired[0], 1, "cpu {cpu}: the first 20 us timer did not fire first");
            for &(i, deadline, at, _, ran_on, irq, ints) in log.iter() {
                assert!(at >= deadline, "cpu {cpu}: timer {i} fired {} ns before its deadline", deadline - at);
                assert_eq!(ran_on, cpu, "timer {i} armed on cpu {cpu} ran on {ran_on}");
                assert!(irq && !ints, "timer {i}: not in the timer interrupt with interrupts off");
            }
            first = first.min(log[0].3);
        }
        // A 20 us timer fires well before a tick (4 ms) would: the best of
        // the CPUs' (one whose vCPU the host did not run meanwhile is late).
        assert!(first < 2_000_000, "the fastest 20 us timer took {first} ns");
        assert!(cpus.iter().all(|&c| pending(c) == 0));
    }
}
