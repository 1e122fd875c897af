//! A null_blk-style test device: a multi-queue block device that completes
//! requests without hardware, optionally keeping the data in memory.
//!
//! Options keep null_blk's names and, where they fit, its defaults
//! (Documentation/block/null_blk.rst): `submit_queues` (hardware queues,
//! default one per CPU), `hw_queue_depth` (tags per queue, 64),
//! `irqmode` (`none`: complete inline in dispatch; `softirq`: complete on
//! the completion CPU, in an IPI sent to it; `timer`: complete
//! `completion_nsec` (10 us) after dispatch, in the submitting CPU's timer
//! interrupt), `blocking` (dispatch may sleep,
//! so it runs under the tag set's SRCU), `memory_backed` with `bs` and
//! `size` (data really copied, so reads can be verified), `shared_tags`
//! (one tag set for every device) and the completion CPU policy.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use crate::block::{
    complete, Disk, DiskConfig, Driver, Op, Request, RequestQueue, TagSet, UsageMode,
};
use crate::sched;
use crate::sync::SpinLock;

/// How a request is completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqMode {
    /// In `queue_rq` itself.
    None,
    /// On the completion CPU, in its device-completion interrupt (an IPI;
    /// Linux raises a softirq from it), one interrupt for every request
    /// queued there before it runs (see `block::complete`).
    Softirq,
    /// `completion_nsec` after dispatch, in the submitting CPU's timer
    /// interrupt (a timed call per request, `sched::call_after`).
    Timer,
}

/// Which CPU completes a request (irqmode softirq).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionCpu {
    /// The CPU that submitted it.
    Submitter,
    /// The hardware queue's home CPU (queue `i` -> CPU `i`).
    Home,
    /// Each online CPU in turn: gets and puts of the queue's usage counter
    /// land on different CPUs.
    RoundRobin,
}

/// A device's options (null_blk's names).
#[derive(Clone, Debug)]
pub struct NullBlkConfig {
    /// Hardware queues; 0 means one per online CPU.
    pub submit_queues: usize,
    /// Tags per hardware queue (at least 1).
    pub hw_queue_depth: usize,
    /// How requests complete.
    pub irqmode: IrqMode,
    /// Which CPU completes (softirq).
    pub completion_cpu: CompletionCpu,
    /// How long after dispatch a request completes (timer), ns.
    pub completion_nsec: u64,
    /// Dispatch may sleep (runs under SRCU).
    pub blocking: bool,
    /// Keep the data.
    pub memory_backed: bool,
    /// Logical block size, 512 or 4096.
    pub bs: u32,
    /// Size in MiB.
    pub size_mib: u64,
    /// Refuse writes.
    pub read_only: bool,
    /// How the queue's usage counter counts (measurements only).
    pub usage: UsageMode,
}

impl Default for NullBlkConfig {
    fn default() -> Self {
        NullBlkConfig {
            submit_queues: 0,
            hw_queue_depth: 64,
            irqmode: IrqMode::None,
            completion_cpu: CompletionCpu::Submitter,
            completion_nsec: 10_000,
            blocking: false,
            memory_backed: false,
            bs: 4096,
            size_mib: 64,
            read_only: false,
            usage: UsageMode::PerCpu,
        }
    }
}

/// Bytes per lock of the memory store.
const CHUNK: usize = 64 << 10;

/// The device (the driver of its queue).
pub struct NullBlk {
    config: NullBlkConfig,
    store: Option<Vec<SpinLock<Box<[u8]>>>>,
    next_cpu: AtomicUsize,
    cpus: Vec<usize>,
}

impl NullBlk {
    fn copy(&self, rq: &Request) {
        let Some(store) = &self.store else { return };
        let mut data = rq.data.lock();
        let mut off = rq.offset as usize;
        let mut done = 0;
        while done < data.len() {
            let (chunk, within) = (off / CHUNK, off % CHUNK);
            let n = (CHUNK - within).min(data.len() - done);
            let mut c = store[chunk].lock();
            match rq.op {
                Op::Write => c[within..within + n].copy_from_slice(&data[done..done + n]),
                Op::Read => data[done..done + n].copy_from_slice(&c[within..within + n]),
            }
            done += n;
            off += n;
        }
    }

    fn completion_cpu(&self, rq: &Request) -> usize {
        match self.config.completion_cpu {
            CompletionCpu::Submitter => rq.submit_cpu,
            CompletionCpu::Home => self.cpus[rq.hctx % self.cpus.len()],
            CompletionCpu::RoundRobin => {
                // Relaxed: spreading only.
                let i = self.next_cpu.fetch_add(1, Ordering::Relaxed);
                self.cpus[i % self.cpus.len()]
            }
        }
    }
}

/// The driver face of the device, which its queue holds.
struct NullBlkDriver(Arc<NullBlk>);

impl Driver for NullBlkDriver {
    fn queue_rq(&self, rq: &Arc<Request>) {
        let dev = &self.0;
        dev.copy(rq);
        match dev.config.irqmode {
            IrqMode::None => {
                rq.complete(Ok(()));
            }
            IrqMode::Softirq => {
                complete::complete_on(dev.completion_cpu(rq), rq.clone(), Ok(()));
            }
            IrqMode::Timer => {
                let rq = rq.clone();
                sched::call_after(
                    Duration::from_nanos(dev.config.completion_nsec),
                    move || {
                        rq.complete(Ok(()));
                    },
                );
            }
        }
    }

    /// Frees the device's memory (every chunk becomes empty: a copy after
    /// this would be a bug, and panics on the empty chunk rather than
    /// touching freed memory).
    fn teardown(&self) {
        if let Some(store) = &self.0.store {
            for chunk in store {
                *chunk.lock() = Box::new([]);
            }
        }
    }
}

/// A tag set for devices of `config` (hardware queues and depth), to
/// share between them (null_blk's `shared_tags`).
///
/// # Errors
/// A message saying which option is out of range and what it accepts.
pub fn tag_set(config: &NullBlkConfig) -> Result<Arc<TagSet>, alloc::string::String> {
    let (queues, depth) = check(config)?;
    Ok(TagSet::new(queues, depth, config.blocking))
}

/// Hardware queues and depth of a device of `config`, if its options are
/// in range.
fn check(config: &NullBlkConfig) -> Result<(usize, usize), alloc::string::String> {
    let cpus = crate::arch::smp::online_cpus();
    let queues = if config.submit_queues == 0 {
        cpus
    } else {
        config.submit_queues
    };
    if queues > cpus {
        return Err(format!(
            "submit_queues={queues}: at most one per CPU ({cpus} online)"
        ));
    }
    if config.hw_queue_depth == 0 || config.hw_queue_depth > 4096 {
        return Err(format!(
            "hw_queue_depth={}: expected 1..=4096",
            config.hw_queue_depth
        ));
    }
    if !matches!(config.bs, 512 | 4096) {
        return Err(format!("bs={}: expected 512 or 4096", config.bs));
    }
    if config.size_mib == 0 || config.size_mib > 1024 {
        return Err(format!("size={}: expected 1..=1024 MiB", config.size_mib));
    }
    Ok((queues, config.hw_queue_depth))
}

/// Heap a memory-backed device leaves free for the rest of the kernel
/// (requests and their buffers, threads, other devices' queues).
const HEAP_RESERVE: usize = 32 << 20;

/// The zeroed data of a memory-backed device of `size_mib` MiB, in
/// [`CHUNK`]s; an error, with nothing kept, when the heap cannot hold it
/// and [`HEAP_RESERVE`] besides (where `null_blk` in Linux fails the
/// configfs `power` write with `-ENOMEM`, and so on here: never a panic).
fn alloc_store(size_mib: u64) -> Result<Vec<SpinLock<Box<[u8]>>>, alloc::string::String> {
    let bytes = (size_mib << 20) as usize;
    let (_, free) = crate::mem::heap::usage();
    let no_room = || {
        format!(
            "size={size_mib} with memory_backed=1 needs {size_mib} MiB of the heap, which has {} MiB free and keeps {} MiB for the rest of the kernel: use size={} or less (or fewer memory-backed devices), or memory_backed=0",
            free >> 20,
            HEAP_RESERVE >> 20,
            free.saturating_sub(HEAP_RESERVE) >> 20
        )
    };
    if bytes + HEAP_RESERVE > free {
        return Err(no_room());
    }
    // Fallible all the way: another CPU may take what the check saw free.
    // On an error, what was taken goes back as `store` drops.
    let mut store = Vec::new();
    store
        .try_reserve_exact(bytes / CHUNK)
        .map_err(|_| no_room())?;
    for _ in 0..bytes / CHUNK {
        let mut chunk = Vec::new();
        chunk.try_reserve_exact(CHUNK).map_err(|_| no_room())?;
        chunk.resize(CHUNK, 0u8);
        store.push(SpinLock::new(chunk.into_boxed_slice()));
    }
    Ok(store)
}

/// Creates device `nullb{index}` with `config` on `tagset` (a new one when
/// `None`; pass one to share tags between devices) and registers its
/// disk.
///
/// # Errors
/// A message saying which option is out of range and what it accepts, or
/// that the heap has no room for a memory-backed device of this size.
pub fn create(
    index: usize,
    config: &NullBlkConfig,
    tagset: Option<Arc<TagSet>>,
) -> Result<Arc<Disk>, alloc::string::String> {
    let (queues, depth) = check(config)?;
    let cpus: Vec<usize> = crate::arch::smp::online().collect();
    let bytes = config.size_mib << 20;
    let store = if config.memory_backed {
        Some(alloc_store(config.size_mib)?)
    } else {
        None
    };
    let tagset = match tagset {
        Some(t) => t,
        None => TagSet::new(queues, depth, config.blocking),
    };
    let dev = Arc::new(NullBlk {
        config: config.clone(),
        store,
        next_cpu: AtomicUsize::new(0),
        cpus,
    });
    let name = format!("nullb{index}");
    let queue = RequestQueue::new(
        name.clone(),
        tagset,
        Arc::new(NullBlkDriver(dev)),
        config.usage,
    );
    Ok(Disk::add(
        DiskConfig {
            name,
            capacity: bytes,
            block_size: config.bs,
            read_only: config.read_only,
        },
        queue,
    ))
}
