//! A blk-mq-style block layer: request queues whose lifetime rules are
//! percpu_ref and SRCU, as in Linux.
//!
//! # How a request flows
//!
//! 1. [`Disk::submit`] checks the bio (range, alignment, read-only, a dead
//!    disk): a bad one gets a [`BlkError`] at once and nothing is queued.
//! 2. *Enter the queue*: a reference on the queue's usage counter
//!    (`q_usage_counter`, a [`PercpuRef`](refcnt::percpu_ref::PercpuRef))
//!    with `tryget_live`. While the queue is frozen that fails and the
//!    submitter sleeps until the freeze ends (or the disk dies: then
//!    [`BlkError::Dead`]); a no-wait submit gets [`BlkError::Again`].
//! 3. *A tag* from the hardware queue the submitting CPU maps to (a bitmap
//!    with a per-CPU hint, [`tags`]); with none free the submitter sleeps on
//!    the tag wait queue and tries again, possibly on another queue.
//! 4. *Dispatch*, inside the tag set's SRCU read section (a blocking
//!    driver) or an rcu-sched section: unless the queue is quiesced, the
//!    driver's `queue_rq` starts the request; a quiesced queue keeps it on
//!    the hardware queue's dispatch list until unquiesce runs the queue.
//! 5. *Completion* (inline, or later in a device-completion interrupt on
//!    the CPU the driver picks, [`complete`]): the request goes from
//!    in flight to complete exactly once, its bio's `end_io` runs, and the
//!    last reference to the request frees the tag and leaves the queue (a
//!    put on the usage counter).
//!
//! # Freeze, quiesce, remove
//!
//! *Freeze* (nesting depth): the first freeze kills the usage counter, so
//! new submitters wait; waiting for the freeze is waiting for the counter
//! to reach zero (every request that entered has been freed); the last
//! unfreeze resurrects it and wakes the waiters. *Quiesce* (nesting depth)
//! stops dispatch: it sets the depth and waits for a grace period of the
//! section dispatch runs in, so when it returns no `queue_rq` is running.
//! *Remove* follows `del_gendisk`: mark the queue dying (new I/O fails
//! fast; sleepers on freeze and tags wake and fail), freeze and wait for
//! the drain, quiesce, unregister, and let go of the disk only after a grace
//! period of the registry's SRCU, so that no lookup still holds it.
#![deny(unsafe_code)]

pub mod complete;
mod disk;
mod queue;
mod request;
pub mod tags;
mod tests;

use alloc::vec::Vec;
use core::fmt;

pub use disk::{disks_released, lookup, Disk, DiskConfig};
pub use queue::{
    time_usage, usage_calls, usage_ns, usage_timing_overhead_ns, Driver, FreezeTimes, Hctx,
    QueueStats, RequestQueue, TagSet, UsageMode,
};
pub use request::{Request, RequestState};

/// A data direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Device to memory.
    Read,
    /// Memory to device.
    Write,
}

/// Why a bio was refused or failed. Every variant says what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The range ends past the end of the disk.
    OutOfRange {
        /// First sector asked for (512-byte units).
        sector: u64,
        /// Sectors asked for.
        sectors: u64,
        /// The disk's size in sectors.
        capacity: u64,
    },
    /// Offset or length not a multiple of the logical block size.
    Misaligned {
        /// Byte offset asked for.
        offset: u64,
        /// Byte length asked for.
        len: u64,
        /// The disk's logical block size.
        block_size: u32,
    },
    /// A zero-length bio.
    Empty,
    /// A write to a read-only disk.
    ReadOnly,
    /// The disk was removed (or is being removed).
    Dead,
    /// A no-wait submit found the queue frozen or out of tags.
    Again,
    /// The device failed the request.
    Io,
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::OutOfRange {
                sector,
                sectors,
                capacity,
            } => write!(
                f,
                "sectors {sector}..{} are past the end of the disk ({capacity} sectors)",
                sector + sectors
            ),
            BlkError::Misaligned {
                offset,
                len,
                block_size,
            } => write!(
                f,
                "offset {offset} length {len}: both must be multiples of the block size {block_size}"
            ),
            BlkError::Empty => write!(f, "a bio of zero bytes; give it at least one block"),
            BlkError::ReadOnly => write!(f, "write to a read-only disk"),
            BlkError::Dead => write!(f, "the disk was removed; look it up again"),
            BlkError::Again => write!(f, "queue frozen or out of tags (no-wait submit); retry"),
            BlkError::Io => write!(f, "the device failed the request"),
        }
    }
}

/// What [`Bio::end_io`] receives: the result, the data buffer back (a
/// read's data in it), and the request's id.
pub struct BioDone {
    /// Success, or why the device failed it.
    pub result: Result<(), BlkError>,
    /// The buffer the bio carried.
    pub data: Vec<u8>,
    /// The request's unique id (never reused).
    pub id: u64,
}

/// Called once when a bio completes, from whatever context completes it:
/// inline in the submitter's call (a driver that completes in `queue_rq`),
/// or in a device-completion interrupt on the completion CPU, with
/// interrupts off, on top of whatever thread that CPU was running (the
/// submitter's own, possibly). Must not sleep; a lock it shares with
/// thread code must be taken with interrupts off there too (an
/// `IrqSpinLock`), or the interrupt can spin on a lock its own CPU holds.
pub type EndIo = alloc::boxed::Box<dyn FnOnce(BioDone) + Send>;

/// A block I/O: a direction, a place, a buffer and a completion.
pub struct Bio {
    /// Read or write.
    pub op: Op,
    /// Byte offset on the disk.
    pub offset: u64,
    /// The data (written from, or read into); its length is the I/O size.
    pub data: Vec<u8>,
    /// Fail with [`BlkError::Again`] instead of sleeping on a frozen queue
    /// or a full tag map.
    pub nowait: bool,
    /// Called once on completion.
    pub end_io: EndIo,
}
