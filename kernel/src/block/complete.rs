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
//! completion list. The usage references of a batch's requests are put
//! together too, one `put_many` per queue when the batch ends (blk-mq puts
//! up to 32 at a time from its batched completion): [`defer_put`].
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;

use super::{BlkError, Request, RequestQueue};
use crate::arch::lock::IrqSpinLock;
use crate::arch::percpu::{cpu_id, possible_cpus};
use crate::arch::smp;

type Pending = Vec<(Arc<Request>, Result<(), BlkError>)>;
/// Usage references owed, by queue.
type Owed = Vec<(Arc<RequestQueue>, usize)>;

/// One CPU's remote-completion state.
struct PerCpu {
    /// The requests its next device-completion IPI completes.
    pending: IrqSpinLock<Pending>,
    /// While its handler completes a batch: the usage references freed
    /// requests still owe, by queue (`None` outside a batch).
    puts: IrqSpinLock<Option<Owed>>,
}

static CPUS: Once<Vec<PerCpu>> = Once::new();
/// IPIs sent for completions, and requests completed by them.
static IPIS_SENT: AtomicU64 = AtomicU64::new(0);
static COMPLETED: AtomicU64 = AtomicU64::new(0);
/// Usage references put through a batch, and the `put_many` calls that
/// put them.
static PUTS_DEFERRED: AtomicU64 = AtomicU64::new(0);
static PUT_BATCHES: AtomicU64 = AtomicU64::new(0);

fn cpus() -> &'static [PerCpu] {
    CPUS.call_once(|| {
        (0..possible_cpus())
            .map(|_| PerCpu {
                pending: IrqSpinLock::new(Vec::new()),
                puts: IrqSpinLock::new(None),
            })
            .collect()
    })
}

/// Called when a request is freed: inside a batch of this CPU's handler,
/// counts its usage reference into the batch's put for `queue` and
/// returns true (the caller puts nothing); otherwise false.
pub(crate) fn defer_put(queue: &Arc<RequestQueue>) -> bool {
    let Some(cpus) = CPUS.get() else {
        return false;
    };
    let mut puts = cpus[cpu_id()].puts.lock();
    let Some(batch) = puts.as_mut() else {
        return false;
    };
    match batch.iter_mut().find(|(q, _)| Arc::ptr_eq(q, queue)) {
        Some((_, n)) => *n += 1,
        None => batch.push((queue.clone(), 1)),
    }
    true
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
        let mut list = cpus()[cpu].pending.lock();
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
    let Some(cpus) = CPUS.get() else {
        return;
    };
    let this = &cpus[cpu_id()];
    let batch = core::mem::take(&mut *this.pending.lock());
    // Relaxed: a statistic.
    COMPLETED.fetch_add(batch.len() as u64, Ordering::Relaxed);
    *this.puts.lock() = Some(Vec::new());
    for (rq, result) in batch {
        rq.complete(result);
    }
    // The batch's usage references, one put per queue. Interrupts are off
    // throughout, so no other batch on this CPU mixes in.
    let owed = this.puts.lock().take().unwrap_or_default();
    for (queue, n) in owed {
        // Relaxed: statistics.
        PUTS_DEFERRED.fetch_add(n as u64, Ordering::Relaxed);
        PUT_BATCHES.fetch_add(1, Ordering::Relaxed);
        queue.exit(n);
    }
}

/// Usage references put in batches by device-completion interrupts, and
/// the `put_many` calls that put them, since boot.
pub fn put_stats() -> (u64, u64) {
    // Relaxed: statistics.
    (
        PUTS_DEFERRED.load(Ordering::Relaxed),
        PUT_BATCHES.load(Ordering::Relaxed),
    )
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
    CPUS.get()
        .map_or(0, |c| c.iter().map(|c| c.pending.lock().len()).sum())
}
