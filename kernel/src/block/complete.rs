//! Remote completion: a request completed on a CPU the driver chooses,
//! by an interrupt on that CPU, as blk-mq's `blk_mq_complete_request_remote`.
//!
//! A driver that has a request's result hands it to [`complete_on`]: the
//! request goes on the target CPU's list, and if the list was empty the
//! target gets the device-completion IPI (`arch::smp::DEVICE_VECTOR`; to
//! itself when the target is this CPU). Its handler, [`device_ipi`],
//! registered by `irq.rs`, takes the whole list and completes each request
//! there, in the interrupt, with interrupts off: the request's `end_io`
//! runs, its tag is freed and the usage counter's reference is put on the
//! completing CPU, so with any policy but "the submitter" the gets and puts
//! of a queue's per-CPU counter land on different CPUs.
//!
//! Linux completes in a softirq that the IPI raises (interrupts on, still
//! atomic); here the handler completes directly (interrupts off, atomic):
//! the same rules for `end_io` (must not sleep, may run on top of any
//! thread of that CPU), stricter for locks. So every lock the completion
//! path takes is one that is always taken with interrupts off (an
//! [`IrqSpinLock`]): the request's buffer and `end_io`, its tag slot, the
//! tag map's wait queue, the heap. A lock taken with interrupts on by a
//! thread and by the handler on the same CPU would deadlock.
//!
//! One IPI per empty-to-non-empty transition: a CPU that is sent many
//! completions while its handler has not run yet takes one interrupt for
//! all of them, which is the batching Linux gets from its per-CPU
//! completion list.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;

use super::{BlkError, Request};
use crate::arch::lock::IrqSpinLock;
use crate::arch::percpu::{cpu_id, possible_cpus};
use crate::arch::smp;

type Pending = Vec<(Arc<Request>, Result<(), BlkError>)>;

/// Per CPU: the requests its next device-completion IPI completes.
static LISTS: Once<Vec<IrqSpinLock<Pending>>> = Once::new();
/// IPIs sent for completions, and requests completed by them.
static IPIS_SENT: AtomicU64 = AtomicU64::new(0);
static COMPLETED: AtomicU64 = AtomicU64::new(0);

fn lists() -> &'static [IrqSpinLock<Pending>] {
    LISTS.call_once(|| {
        (0..possible_cpus())
            .map(|_| IrqSpinLock::new(Vec::new()))
            .collect()
    })
}

/// Completes `rq` with `result` on `cpu` (online; possibly this one), in
/// that CPU's device-completion interrupt. Callable from any context,
/// interrupt handlers included.
///
/// # Panics
/// If `cpu` is not online: nothing would ever complete the request.
pub fn complete_on(cpu: usize, rq: Arc<Request>, result: Result<(), BlkError>) {
    assert!(
        smp::is_online(cpu),
        "request {}: completion sent to cpu {cpu}, which is not online",
        rq.id
    );
    let was_empty = {
        let mut list = lists()[cpu].lock();
        list.push((rq, result));
        list.len() == 1
    };
    // Under the list's lock the handler takes everything: a push that finds
    // the list non-empty comes before that handler's take, so the IPI that
    // made it non-empty completes this request too; a push onto an empty
    // list sends the IPI that will.
    if was_empty {
        // Relaxed: statistics.
        IPIS_SENT.fetch_add(1, Ordering::Relaxed);
        smp::send_device_ipi(cpu);
    }
}

/// The device-completion IPI's work: completes everything queued for this
/// CPU. Runs in the handler (interrupts off); registered by `irq.rs`.
pub fn device_ipi() {
    let Some(lists) = LISTS.get() else {
        return;
    };
    let batch = core::mem::take(&mut *lists[cpu_id()].lock());
    // Relaxed: a statistic.
    COMPLETED.fetch_add(batch.len() as u64, Ordering::Relaxed);
    for (rq, result) in batch {
        rq.complete(result);
    }
}

/// Device-completion IPIs sent and requests they completed, since boot.
pub fn remote_stats() -> (u64, u64) {
    // Relaxed: statistics.
    (
        IPIS_SENT.load(Ordering::Relaxed),
        COMPLETED.load(Ordering::Relaxed),
    )
}

/// Requests queued for remote completion and not yet completed (racy).
pub fn remote_pending() -> usize {
    LISTS
        .get()
        .map_or(0, |l| l.iter().map(|c| c.lock().len()).sum())
}
