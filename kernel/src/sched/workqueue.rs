//! Per-CPU work queues: deferred work run by a kernel thread of each CPU.
//!
//! [`queue_work_on`] may be called from anywhere, interrupt handlers
//! included (the queue lock is taken with interrupts off, and waking the
//! worker is an interrupt-safe wakeup); the work itself always runs in the
//! worker thread of the chosen CPU, in queueing order, where it may sleep.
//! [`flush`] waits until everything queued on a CPU before the call has
//! run.
//!
//! Work that may block for long (SRCU's grace-period worker waits for a
//! domain's slowest reader) goes to [`queue_work_unbound`] instead: each
//! item runs in a pool thread that runs nothing else meanwhile, idle pool
//! threads are reused, and a new one is started when none is idle, so no
//! item ever waits behind a blocked one (Linux's workqueues get the same
//! from their concurrency management).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use spin::{Mutex, Once};

use super::WaitQueue;
use crate::arch::percpu::{cpu_id, possible_cpus, IrqGuard};
use crate::arch::smp;

type Work = Box<dyn FnOnce() + Send>;

struct CpuQueue {
    items: Mutex<VecDeque<Work>>,
    /// The worker sleeps here until there is work.
    worker: WaitQueue,
    /// Flushers sleep here until `done` catches up.
    flushers: WaitQueue,
    queued: AtomicU64,
    done: AtomicU64,
}

static QUEUES: Once<Vec<CpuQueue>> = Once::new();

/// Starts one worker thread on every online CPU. Called once at boot,
/// after the CPUs are up.
pub fn start() {
    let queues = QUEUES.call_once(|| {
        (0..possible_cpus())
            .map(|_| CpuQueue {
                items: Mutex::new(VecDeque::new()),
                worker: WaitQueue::new(),
                flushers: WaitQueue::new(),
                queued: AtomicU64::new(0),
                done: AtomicU64::new(0),
            })
            .collect()
    });
    for cpu in smp::online() {
        let q = &queues[cpu];
        // The handle is dropped: workers run for the rest of the run.
        drop(super::spawn_on(cpu, move || worker_loop(q)));
    }
}

fn take(q: &CpuQueue) -> Option<Work> {
    let _irq = IrqGuard::new();
    let mut items = q.items.lock();
    items.pop_front()
}

fn worker_loop(q: &'static CpuQueue) -> ! {
    loop {
        q.worker.wait_until(|| {
            let _irq = IrqGuard::new();
            let empty = q.items.lock().is_empty();
            !empty
        });
        while let Some(work) = take(q) {
            work();
            // Release: the work's effects before a flusher sees it counted.
            q.done.fetch_add(1, Ordering::Release);
            q.flushers.wake_all();
        }
    }
}

/// Whether the work queues exist (from [`start`] on; work queued before
/// the workers run waits for them).
pub fn started() -> bool {
    QUEUES.get().is_some()
}

/// Queues `work` to run in CPU `cpu`'s worker thread.
///
/// # Panics
/// Before [`start`], or for a CPU that is not online.
pub fn queue_work_on(cpu: usize, work: impl FnOnce() + Send + 'static) {
    let queues = QUEUES.get().expect("work queues start at boot");
    assert!(
        smp::is_online(cpu),
        "queue_work_on: cpu {cpu} is not online"
    );
    let q = &queues[cpu];
    {
        let _irq = IrqGuard::new();
        let mut items = q.items.lock();
        items.push_back(Box::new(work));
        // Relaxed: ordered with the push by the queue lock, which the
        // flusher's snapshot does not need to see more precisely.
        q.queued.fetch_add(1, Ordering::Relaxed);
    }
    q.worker.wake_one();
}

/// An idle pool thread's mailbox: the queuer hands it one item directly.
struct Mailbox {
    item: Mutex<Option<Work>>,
    wake: WaitQueue,
}

struct Pool {
    /// Items waiting for a pool thread that is being started (one each).
    items: VecDeque<Work>,
    /// Idle threads, most recently idle last.
    idle: Vec<Arc<Mailbox>>,
    /// Threads alive (statistics and tests).
    threads: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    items: VecDeque::new(),
    idle: Vec::new(),
    threads: 0,
});

/// How long an idle pool thread waits for work before it exits.
const POOL_IDLE_EXIT: Duration = Duration::from_secs(2);

/// Queues `work` to run soon in a pool thread that runs nothing else
/// meanwhile, so it may block for as long as it needs without holding up
/// other work: an idle pool thread takes it, or a new one is started on
/// this CPU (through this CPU's ordered queue, since interrupt handlers may
/// call this and may not start threads). Items run in no particular order.
///
/// # Panics
/// Before [`start`].
pub fn queue_work_unbound(work: impl FnOnce() + Send + 'static) {
    let work: Work = Box::new(work);
    let idle = {
        let _irq = IrqGuard::new();
        let mut pool = POOL.lock();
        match pool.idle.pop() {
            Some(mb) => {
                *mb.item.lock() = Some(work);
                Some(mb)
            }
            None => {
                pool.items.push_back(work);
                pool.threads += 1;
                None
            }
        }
    };
    match idle {
        Some(mb) => mb.wake.wake_one(),
        None => {
            let cpu = cpu_id();
            // The handle is dropped: the thread exits by itself when idle.
            queue_work_on(cpu, move || drop(super::spawn_on(cpu, pool_thread)));
        }
    }
}

/// How many pool threads are alive (or being started).
pub fn pool_threads() -> usize {
    let _irq = IrqGuard::new();
    POOL.lock().threads
}

fn pool_thread() {
    let mb = Arc::new(Mailbox {
        item: Mutex::new(None),
        wake: WaitQueue::new(),
    });
    loop {
        // An item queued for a starting thread, else go idle.
        let work = {
            let _irq = IrqGuard::new();
            let mut pool = POOL.lock();
            let work = pool.items.pop_front();
            if work.is_none() {
                pool.idle.push(mb.clone());
            }
            work
        };
        if let Some(work) = work {
            work();
            continue;
        }
        let take = || {
            let _irq = IrqGuard::new();
            let item = mb.item.lock().take();
            item
        };
        let mut work = None;
        mb.wake.wait_until_timeout(
            || {
                work = work.take().or_else(take);
                work.is_some()
            },
            POOL_IDLE_EXIT,
        );
        if work.is_none() {
            // Timed out: leave the idle list, unless a queuer picked this
            // thread meanwhile (then its item is in the mailbox).
            let _irq = IrqGuard::new();
            let mut pool = POOL.lock();
            match pool.idle.iter().position(|m| Arc::ptr_eq(m, &mb)) {
                Some(i) => {
                    pool.idle.remove(i);
                    pool.threads -= 1;
                    return;
                }
                None => work = mb.item.lock().take(),
            }
        }
        let work = work.expect("a queuer that took this thread off the idle list left an item");
        work();
    }
}

/// Sleeps until every work item queued on `cpu` before the call has run.
#[track_caller]
pub fn flush(cpu: usize) {
    let Some(q) = QUEUES.get().map(|qs| &qs[cpu]) else {
        return;
    };
    let target = {
        let _irq = IrqGuard::new();
        let _items = q.items.lock();
        q.queued.load(Ordering::Relaxed)
    };
    // Acquire: pairs with the Release increment after each item.
    q.flushers
        .wait_until(|| q.done.load(Ordering::Acquire) >= target);
}

crate::ktest! {
    /// Work queued on every CPU runs there, once each, in order, in thread
    /// context; work queued from the timer interrupt runs in the worker.
    #[smp(1, 2, 8)]
    fn work_runs_once_on_its_cpu_in_order() {
        use alloc::sync::Arc;
        use core::time::Duration;
        let cpus: Vec<usize> = smp::online().collect();
        let logs: Arc<Vec<Mutex<Vec<u32>>>> = Arc::new(cpus.iter().map(|_| Mutex::new(Vec::new())).collect());
        let wrong_place = Arc::new(AtomicU64::new(0));
        for i in 0..200u32 {
            for (slot, &cpu) in cpus.iter().enumerate() {
                let (logs, wrong) = (logs.clone(), wrong_place.clone());
                queue_work_on(cpu, move || {
                    if crate::arch::cpu_id() != cpu || crate::arch::idt::in_interrupt() {
                        wrong.fetch_add(1, Ordering::SeqCst);
                    }
                    logs[slot].lock().push(i);
                });
            }
        }
        for &cpu in &cpus {
            flush(cpu);
        }
        for (slot, &cpu) in cpus.iter().enumerate() {
            assert_eq!(*logs[slot].lock(), (0..200).collect::<Vec<u32>>(), "cpu {cpu}: not once each, in order");
        }
        assert_eq!(wrong_place.load(Ordering::SeqCst), 0, "work ran on the wrong CPU or in an interrupt");
        // From interrupt context: a timed call runs in the tick, queues work.
        let ran = Arc::new(AtomicU64::new(0));
        let r = ran.clone();
        let target = *cpus.last().unwrap();
        super::call_after(Duration::from_millis(5), move || {
            queue_work_on(target, move || {
                if !crate::arch::idt::in_interrupt() {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            });
        });
        super::sleep(Duration::from_millis(30));
        flush(target);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "work queued from the tick did not run once in thread context");
    }
}

crate::ktest! {
    /// Unbound work: items that block until a later item runs do not hold
    /// it up (each runs in a pool thread of its own), and idle pool threads
    /// are reused rather than started anew.
    #[smp(1, 2)]
    fn unbound_work_never_waits_behind_blocked_work() {
        use super::Completion;
        let gate = Arc::new(Completion::new());
        let done = Arc::new(AtomicU64::new(0));
        for _ in 0..4 {
            let (g, d) = (gate.clone(), done.clone());
            queue_work_unbound(move || {
                assert!(g.wait_for_completion_timeout(Duration::from_secs(10)), "blocked item never released");
                d.fetch_add(1, Ordering::SeqCst);
            });
        }
        let g = gate.clone();
        queue_work_unbound(move || g.complete_all());
        assert!(smp::wait_for(10_000, || done.load(Ordering::SeqCst) == 4), "an item waited behind a blocked one");
        let threads = pool_threads();
        assert!(threads >= 5, "{threads} pool threads ran 5 items that block together");
        // Idle threads take new items: no new thread for these.
        super::sleep(Duration::from_millis(20));
        for _ in 0..3 {
            let d = done.clone();
            queue_work_unbound(move || {
                d.fetch_add(1, Ordering::SeqCst);
            });
            assert!(smp::wait_for(5_000, || done.load(Ordering::SeqCst) > 4));
            done.store(4, Ordering::SeqCst);
        }
        assert!(pool_threads() <= threads, "idle pool threads were not reused");
    }
}
