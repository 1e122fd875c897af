//! Per-CPU work queues: deferred work run by a kernel thread of each CPU.
//!
//! [`queue_work_on`] may be called from anywhere, interrupt handlers
//! included (the queue lock is taken with interrupts off, and waking the
//! worker is an interrupt-safe wakeup); the work itself always runs in the
//! worker thread of the chosen CPU, in queueing order, where it may sleep.
//! [`flush`] waits until everything queued on a CPU before the call has
//! run.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::{Mutex, Once};

use super::WaitQueue;
use crate::arch::percpu::{possible_cpus, IrqGuard};
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
