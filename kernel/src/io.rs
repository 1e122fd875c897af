//! `--mode io`: an fio-like job on every CPU pushes I/O through the block
//! layer into a null_blk device, while the boot CPU freezes, quiesces and
//! updates the queue limits under SRCU, can hot-remove and re-create the
//! device, and prints statistics once a second.
//!
//! Every job owns one slice of the device (as fio's `offset_increment`),
//! so with `verify` each block's last write is known: a block written
//! carries a header (magic, block number, a stamp naming the write) and a
//! checksum of its payload, and a read checks all of them, so a lost,
//! doubled or misdirected I/O is a verify failure. At the end the run
//! checks its invariants: every accepted I/O completed exactly once, none
//! entered a removed device, every verify passed, tags are all free, the
//! usage counter ends at zero, every removed disk was released once.
#![deny(unsafe_code)]

mod compare;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use core::time::Duration;

use refcnt::srcu::{Srcu, SrcuPtr};

use crate::arch::lock::IrqSpinLock;
use crate::arch::{smp, time};
use crate::block::{self, Bio, BioDone, BlkError, Disk, Op, UsageMode};
use crate::drivers::null_blk::{self, NullBlkConfig};
use crate::println;
use crate::sched::{self, WaitQueue};
use crate::sync::backend::Kernel;

/// The I/O pattern (fio's `rw`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rw {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Random, half reads and half writes.
    RandRw,
}

impl Rw {
    /// The word on the command line.
    pub fn parse(s: &str) -> Option<Rw> {
        Some(match s {
            "read" => Rw::Read,
            "write" => Rw::Write,
            "randread" => Rw::RandRead,
            "randwrite" => Rw::RandWrite,
            "randrw" => Rw::RandRw,
            _ => return None,
        })
    }
}

/// A run's options (fio's and null_blk's names; the scenario's own).
#[derive(Clone, Debug)]
pub struct IoConfig {
    /// The device.
    pub dev: NullBlkConfig,
    /// The pattern.
    pub rw: Rw,
    /// Bytes per I/O (a multiple of the device's block size).
    pub bs: u32,
    /// I/Os in flight per job.
    pub iodepth: usize,
    /// Seconds.
    pub runtime: u64,
    /// Check every read against the block's last write.
    pub verify: bool,
    /// Freeze and unfreeze every this many ms (0: never).
    pub freeze_ms: u64,
    /// Quiesce and unquiesce every this many ms (0: never).
    pub quiesce_ms: u64,
    /// Publish new queue limits under SRCU every this many ms (0: never).
    pub limits_ms: u64,
    /// Switch the usage counter to atomic and back every this many ms.
    pub switch_ms: u64,
    /// Hot-remove the device at this second and re-create it 100 ms later
    /// (`Some(0)`: never; `None`: two seconds before the end of a run of
    /// at least four seconds).
    pub remove_at: Option<u64>,
    /// Jobs on the first this many online CPUs (0: all).
    pub numjobs: usize,
    /// Devices (`nullb0`, `nullb1`, ...); job `i` drives device
    /// `i % nr_devices`. The scenario events hit every device; the
    /// hot-remove hits `nullb0`.
    pub nr_devices: usize,
    /// One tag set for every device (null_blk's `shared_tags`).
    pub shared_tags: bool,
    /// Instead of one run: measure the usage counter's cost (see
    /// [`compare`]).
    pub compare: bool,
    /// Run length in ms, overriding `runtime` (the comparison's short runs).
    pub run_ms: Option<u64>,
    /// No per-second lines or summary (the comparison's runs).
    pub quiet: bool,
    /// Poison freed heap blocks for the run and check them on reuse and
    /// at the end (`mem::cache::set_poison`).
    pub poison: bool,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            dev: NullBlkConfig {
                memory_backed: true,
                irqmode: null_blk::IrqMode::Softirq,
                completion_cpu: null_blk::CompletionCpu::RoundRobin,
                ..NullBlkConfig::default()
            },
            rw: Rw::RandRw,
            bs: 4096,
            iodepth: 8,
            runtime: 10,
            verify: true,
            freeze_ms: 1000,
            quiesce_ms: 1000,
            limits_ms: 1000,
            switch_ms: 0,
            remove_at: None,
            numjobs: 0,
            nr_devices: 1,
            shared_tags: false,
            compare: false,
            run_ms: None,
            quiet: false,
            poison: false,
        }
    }
}

impl IoConfig {
    /// The command-line keys [`set`](Self::set) knows (shared with the
    /// runner).
    pub const KEYS: [&'static str; 24] = crate::abi::IO_KEYS;

    /// Sets option `key` from its command-line word: `None` for a key that
    /// is not an io option, `Some(Err(what it accepts))` for a bad value.
    pub fn set(&mut self, key: &str, value: &str) -> Option<Result<(), &'static str>> {
        let num = |lo: u64, hi: u64| value.parse::<u64>().ok().filter(|n| (lo..=hi).contains(n));
        let flag = || match value {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let r = match key {
            "rw" => Rw::parse(value)
                .map(|rw| self.rw = rw)
                .ok_or("read, write, randread, randwrite or randrw"),
            "bs" => num(512, 1 << 20)
                .filter(|n| n.is_multiple_of(512))
                .map(|n| self.bs = n as u32)
                .ok_or("a multiple of 512 from 512 to 1048576"),
            "iodepth" => num(1, 4096)
                .map(|n| self.iodepth = n as usize)
                .ok_or("1..=4096"),
            "verify" => flag().map(|v| self.verify = v).ok_or("0 or 1"),
            "submit_queues" => num(0, 255)
                .map(|n| self.dev.submit_queues = n as usize)
                .ok_or("0 (one per CPU) to the CPU count"),
            "hw_queue_depth" => num(1, 4096)
                .map(|n| self.dev.hw_queue_depth = n as usize)
                .ok_or("1..=4096"),
            "irqmode" => match value {
                "none" | "0" => Some(null_blk::IrqMode::None),
                "softirq" | "1" => Some(null_blk::IrqMode::Softirq),
                "timer" | "2" => Some(null_blk::IrqMode::Timer),
                _ => None,
            }
            .map(|m| self.dev.irqmode = m)
            .ok_or("none, softirq or timer (or 0, 1, 2)"),
            "completion_nsec" => num(0, 1_000_000_000)
                .map(|n| self.dev.completion_nsec = n)
                .ok_or("0..=1000000000 (ns; irqmode=timer)"),
            "completion_cpu" => match value {
                "submitter" => Some(null_blk::CompletionCpu::Submitter),
                "home" => Some(null_blk::CompletionCpu::Home),
                "rr" => Some(null_blk::CompletionCpu::RoundRobin),
                _ => None,
            }
            .map(|c| self.dev.completion_cpu = c)
            .ok_or("submitter, home or rr"),
            "blocking" => flag().map(|v| self.dev.blocking = v).ok_or("0 or 1"),
            "memory_backed" => flag().map(|v| self.dev.memory_backed = v).ok_or("0 or 1"),
            "dev_bs" => num(512, 4096)
                .filter(|n| matches!(n, 512 | 4096))
                .map(|n| self.dev.bs = n as u32)
                .ok_or("512 or 4096"),
            "size" => num(1, 1024)
                .map(|n| self.dev.size_mib = n)
                .ok_or("1..=1024 (MiB)"),
            "freeze_ms" => num(0, 3_600_000)
                .map(|n| self.freeze_ms = n)
                .ok_or("milliseconds, 0 = never"),
            "quiesce_ms" => num(0, 3_600_000)
                .map(|n| self.quiesce_ms = n)
                .ok_or("milliseconds, 0 = never"),
            "limits_ms" => num(0, 3_600_000)
                .map(|n| self.limits_ms = n)
                .ok_or("milliseconds, 0 = never"),
            "switch_ms" => num(0, 3_600_000)
                .map(|n| self.switch_ms = n)
                .ok_or("milliseconds, 0 = never"),
            "remove_at" => num(0, 3600)
                .map(|n| self.remove_at = Some(n))
                .ok_or("a second of the run, 0 = never"),
            "usage" => match value {
                "percpu" => Some(UsageMode::PerCpu),
                "atomic" => Some(UsageMode::Atomic),
                "absent" => Some(UsageMode::Absent),
                _ => None,
            }
            .map(|u| self.dev.usage = u)
            .ok_or("percpu, atomic or absent (absent: measurements only, no freeze)"),
            "numjobs" => num(0, 255)
                .map(|n| self.numjobs = n as usize)
                .ok_or("0 (one per CPU) to the CPU count"),
            "compare" => flag().map(|v| self.compare = v).ok_or("0 or 1"),
            "nr_devices" => num(1, 8)
                .map(|n| self.nr_devices = n as usize)
                .ok_or("1..=8"),
            "shared_tags" => flag().map(|v| self.shared_tags = v).ok_or("0 or 1"),
            "poison" => flag().map(|v| self.poison = v).ok_or("0 or 1"),
            _ => return None,
        };
        Some(r)
    }
}

const MAGIC: u64 = 0x6e75_6c6c_626c_6b21;
const LAT_BUCKETS: usize = 64 * 8;

/// Queue limits that jobs read under SRCU and the boot CPU replaces.
struct Limits {
    generation: u64,
    max_bytes: u64,
    alive: AtomicBool,
}

impl Drop for Limits {
    fn drop(&mut self) {
        self.alive.store(false, SeqCst);
    }
}

/// One job's counters (it runs on one CPU, so these are per CPU).
struct JobStats {
    ios: AtomicU64,
    bytes: AtomicU64,
    submitted: AtomicU64,
    verify_failures: AtomicU64,
    errors: AtomicU64,
    dead_refusals: AtomicU64,
    stale_limits: AtomicU64,
    lat: Vec<AtomicU64>,
    /// The largest latency since the last once-a-second line (ns).
    lat_max: AtomicU64,
    /// The largest latency of the run (ns).
    lat_max_run: AtomicU64,
}

impl JobStats {
    fn new() -> Self {
        JobStats {
            ios: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            verify_failures: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dead_refusals: AtomicU64::new(0),
            stale_limits: AtomicU64::new(0),
            lat: (0..LAT_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            lat_max: AtomicU64::new(0),
            lat_max_run: AtomicU64::new(0),
        }
    }
}

/// A log-linear bucket of a latency in ns: 8 buckets per power of two.
fn bucket(ns: u64) -> usize {
    if ns < 8 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros() as usize;
    let sub = ((ns >> (msb - 3)) & 7) as usize;
    ((msb - 2) * 8 + sub).min(LAT_BUCKETS - 1)
}

/// The lowest latency of bucket `b`, ns.
fn bucket_floor(b: usize) -> u64 {
    if b < 8 {
        return b as u64;
    }
    let msb = b / 8 + 2;
    let sub = (b % 8) as u64;
    (1u64 << msb) | (sub << (msb - 3))
}

/// The latency below which `per_mille` of the samples fall (bucket floor).
fn percentile(h: &[u64], per_mille: u64) -> u64 {
    percentile_by(h, per_mille, bucket_floor)
}

/// `value` of the histogram bucket that holds the sample `per_mille` of
/// the way up `h` (0 if `h` is empty).
fn percentile_by(h: &[u64], per_mille: u64, value: impl Fn(usize) -> u64) -> u64 {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return 0;
    }
    let want = (total * per_mille).div_ceil(1000);
    let mut seen = 0;
    for (b, &n) in h.iter().enumerate() {
        seen += n;
        if seen >= want {
            return value(b);
        }
    }
    0
}

/// A completed I/O, as the job sees it.
struct Done {
    block: usize,
    op: Op,
    stamp: u64,
    start: u64,
    done: BioDone,
}

struct Job {
    index: usize,
    cpu: usize,
    stats: JobStats,
    /// Completions not yet looked at. Interrupts-off: `end_io` pushes here
    /// from the device-completion interrupt (irqmode softirq).
    done: IrqSpinLock<Vec<Done>>,
    wake: WaitQueue,
    /// What the job is doing (`JOB_PHASES`), and its I/Os in flight: for
    /// the watchdog's report.
    phase: AtomicU8,
    inflight: AtomicU64,
}

/// A job's phases, by `Job::phase`.
const JOB_PHASES: [&str; 5] = [
    "running",
    "in submit",
    "waiting for completions",
    "waiting for the device",
    "exited",
];
/// The scenario driver's phases, by `Shared::phase`.
const DRIVE_PHASES: [&str; 10] = [
    "sleeping",
    "freeze",
    "unfreeze",
    "quiesce",
    "unquiesce",
    "usage switch",
    "limits update",
    "remove",
    "re-create",
    "finish",
];

struct Shared {
    config: IoConfig,
    stop: AtomicBool,
    disk_gen: AtomicU64,
    srcu: Arc<Srcu<Kernel>>,
    limits: SrcuPtr<Limits, Kernel>,
    jobs: Vec<Arc<Job>>,
    /// Requests that entered a queue after its disk's remove returned.
    entered_after_remove: AtomicU64,
    /// The tag set every device shares (`shared_tags`).
    tagset: Option<Arc<block::TagSet>>,
    /// A hot-remove happened (and the two checks of it mean something).
    hot_removed: AtomicBool,
    /// The hot-removed disk was released exactly once when its last
    /// holder let go.
    remove_released_once: AtomicBool,
    /// What the scenario driver is doing (`DRIVE_PHASES`).
    phase: AtomicU8,
    /// The run is over (the watchdog stops).
    over: AtomicBool,
    /// Every freeze's drain (kill to release and to the freezer's return,
    /// and their parts), for the summary.
    drain_samples: IrqSpinLock<Vec<block::FreezeTimes>>,
    /// The scenario's other events over the run, for the summary: each
    /// quiesce's wait and each limits update's (its SRCU grace period),
    /// in ns, and the usage counter's mode switches.
    quiesce_samples: IrqSpinLock<Vec<u64>>,
    limits_samples: IrqSpinLock<Vec<u64>>,
    switches: AtomicU64,
    /// The heap's lock acquisitions (all CPUs) when the jobs started and
    /// when they stopped (`mem::cache::heap_trips`).
    heap_trips: [AtomicU64; 2],
}

fn dev_name(i: usize) -> String {
    alloc::format!("nullb{i}")
}

/// Every live device.
fn devices(shared: &Shared) -> Vec<Arc<Disk>> {
    (0..shared.config.nr_devices)
        .filter_map(|i| block::lookup(&dev_name(i)))
        .collect()
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The next I/O's direction for the job's `rw` (a coin toss for randrw).
fn pick_op(rw: Rw, rng: &mut u64) -> Op {
    match rw {
        Rw::Read | Rw::RandRead => Op::Read,
        Rw::Write | Rw::RandWrite => Op::Write,
        Rw::RandRw => {
            if xorshift(rng) & 1 == 0 {
                Op::Read
            } else {
                Op::Write
            }
        }
    }
}

fn fill(buf: &mut [u8], block: u64, stamp: u64) {
    let mut seed = stamp ^ block.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    for w in buf[32..].as_chunks_mut::<8>().0 {
        *w = xorshift(&mut seed).to_le_bytes();
    }
    let sum = checksum(&buf[32..]);
    buf[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    buf[8..16].copy_from_slice(&block.to_le_bytes());
    buf[16..24].copy_from_slice(&stamp.to_le_bytes());
    buf[24..32].copy_from_slice(&sum.to_le_bytes());
}

fn checksum(b: &[u8]) -> u64 {
    b.as_chunks::<8>()
        .0
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
            (h ^ u64::from_le_bytes(*w)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Why a read's data is wrong, if it is.
fn check(buf: &[u8], block: u64, expected_stamp: u64) -> Option<&'static str> {
    let word = |i: usize| u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
    if expected_stamp == 0 {
        // Never written in this run: a fresh device reads zeros.
        return (word(0) != 0 && word(0) == MAGIC).then_some("data in a block never written");
    }
    if word(0) != MAGIC {
        return Some("no header (lost write)");
    }
    if word(1) != block {
        return Some("header of another block (misdirected write)");
    }
    if word(2) != expected_stamp {
        return Some("not the last write of this block (lost or reordered write)");
    }
    if word(3) != checksum(&buf[32..]) {
        return Some("payload does not match its checksum (torn write)");
    }
    None
}

fn current_disk(shared: &Shared, dev: usize) -> Option<Arc<Disk>> {
    block::lookup(&dev_name(dev)).filter(|_| !shared.stop.load(Relaxed))
}

fn job_loop(shared: Arc<Shared>, job: Arc<Job>) {
    let cfg = &shared.config;
    let nr = cfg.nr_devices;
    let dev = job.index % nr;
    // Jobs on this device, and this job's slice of it.
    let jobs = (shared.jobs.len() - dev).div_ceil(nr);
    let bs = cfg.bs as usize;
    let mut disk = current_disk(&shared, dev);
    let capacity = (cfg.dev.size_mib << 20) as usize;
    let blocks = capacity / bs / jobs;
    let first = (job.index / nr) * blocks;
    let mut written = vec![0u64; blocks];
    let mut busy = vec![false; blocks];
    let mut inflight = 0usize;
    let mut seq = 0u64;
    let mut rng = 0x2545_f491_4f6c_dd1d ^ (job.index as u64 + 1).wrapping_mul(0x9e37_79b9);
    let mut next_seq_block = 0usize;
    loop {
        let stopping = shared.stop.load(SeqCst);
        while !stopping && inflight < cfg.iodepth && inflight < blocks {
            let Some(d) = disk.clone() else { break };
            // Pick a block that is not in flight.
            let block = loop {
                let b = match cfg.rw {
                    Rw::Read | Rw::Write => {
                        next_seq_block = (next_seq_block + 1) % blocks;
                        next_seq_block
                    }
                    _ => (xorshift(&mut rng) % blocks as u64) as usize,
                };
                if !busy[b] {
                    break b;
                }
            };
            let op = pick_op(cfg.rw, &mut rng);
            // The queue limits, under SRCU: must be alive while read.
            {
                let g = shared.srcu.read_lock();
                let l = shared.limits.read(&g);
                if !l.alive.load(SeqCst) || l.max_bytes < bs as u64 || l.generation == u64::MAX {
                    job.stats.stale_limits.fetch_add(1, Relaxed);
                }
            }
            let lba = (first + block) as u64;
            let mut data = vec![0u8; bs];
            let stamp = if op == Op::Write {
                seq += 1;
                let s = ((job.index as u64 + 1) << 48) | seq;
                if cfg.verify {
                    fill(&mut data, lba, s);
                }
                s
            } else {
                0
            };
            let start = time::now_ns();
            let j = job.clone();
            let bio = Bio {
                op,
                offset: lba * bs as u64,
                data,
                nowait: false,
                end_io: alloc::boxed::Box::new(move |done: BioDone| {
                    j.done.lock().push(Done {
                        block,
                        op,
                        stamp,
                        start,
                        done,
                    });
                    j.wake.wake_one();
                }),
            };
            job.phase.store(1, Relaxed);
            let submitted = d.submit(bio);
            job.phase.store(0, Relaxed);
            match submitted {
                Ok(()) => {
                    busy[block] = true;
                    inflight += 1;
                    job.stats.submitted.fetch_add(1, Relaxed);
                }
                Err((BlkError::Dead, _)) => {
                    job.stats.dead_refusals.fetch_add(1, Relaxed);
                    disk = None;
                }
                Err((e, _)) => {
                    job.stats.errors.fetch_add(1, Relaxed);
                    println!("io: job {}: submit refused: {e}", job.index);
                    break;
                }
            }
        }
        if stopping && inflight == 0 {
            return;
        }
        if disk.is_none() && inflight == 0 {
            if stopping {
                return;
            }
            // Removed: written data went with the device.
            written.iter_mut().for_each(|w| *w = 0);
            job.phase.store(3, Relaxed);
            sched::sleep(Duration::from_millis(4));
            job.phase.store(0, Relaxed);
            disk = current_disk(&shared, dev);
            continue;
        }
        job.inflight.store(inflight as u64, Relaxed);
        job.phase.store(2, Relaxed);
        job.wake
            .wait_until_timeout(|| !job.done.lock().is_empty(), Duration::from_millis(20));
        job.phase.store(0, Relaxed);
        let batch = core::mem::take(&mut *job.done.lock());
        let now = time::now_ns();
        for d in batch {
            inflight -= 1;
            busy[d.block] = false;
            match d.done.result {
                Ok(()) => {
                    let lba = (first + d.block) as u64;
                    if cfg.verify {
                        match d.op {
                            Op::Write => written[d.block] = d.stamp,
                            Op::Read => {
                                if let Some(why) = check(&d.done.data, lba, written[d.block]) {
                                    job.stats.verify_failures.fetch_add(1, Relaxed);
                                    println!(
                                        "io: verify failed: job {} block {lba}: {why}",
                                        job.index
                                    );
                                }
                            }
                        }
                    }
                    let ns = now.saturating_sub(d.start);
                    job.stats.ios.fetch_add(1, Relaxed);
                    job.stats.bytes.fetch_add(d.done.data.len() as u64, Relaxed);
                    job.stats.lat[bucket(ns)].fetch_add(1, Relaxed);
                    job.stats.lat_max.fetch_max(ns, Relaxed);
                    job.stats.lat_max_run.fetch_max(ns, Relaxed);
                }
                Err(e) => {
                    job.stats.errors.fetch_add(1, Relaxed);
                    println!("io: job {}: I/O failed: {e}", job.index);
                }
            }
        }
    }
}

struct Snapshot {
    ios: Vec<u64>,
    bytes: u64,
    lat: Vec<u64>,
    max: u64,
}

fn snapshot(shared: &Shared) -> Snapshot {
    let mut lat = vec![0u64; LAT_BUCKETS];
    for j in &shared.jobs {
        for (b, n) in j.stats.lat.iter().enumerate() {
            lat[b] += n.load(Relaxed);
        }
    }
    Snapshot {
        ios: shared
            .jobs
            .iter()
            .map(|j| j.stats.ios.load(Relaxed))
            .collect(),
        bytes: shared
            .jobs
            .iter()
            .map(|j| j.stats.bytes.load(Relaxed))
            .sum(),
        lat,
        max: shared
            .jobs
            .iter()
            .map(|j| j.stats.lat_max.swap(0, Relaxed))
            .max()
            .unwrap_or(0),
    }
}

/// Runs the workload (or, with `compare`, the usage counter comparison);
/// returns whether every check passed.
pub fn run(config: IoConfig) -> bool {
    if config.compare {
        return compare::compare(&config);
    }
    run_once(&config).is_some()
}

/// One run; the IOPS if every check passed.
fn run_once(config: &IoConfig) -> Option<u64> {
    let config = config.clone();
    if config.dev.usage == UsageMode::Absent
        && (config.freeze_ms > 0 || config.switch_ms > 0 || config.remove_at.is_none_or(|s| s > 0))
    {
        println!("io: usage=absent has no counter to freeze, switch or drain: set freeze_ms=0, switch_ms=0, remove_at=0");
        return None;
    }
    let run_ms = config.run_ms.unwrap_or(config.runtime * 1000);
    if let Some(at) = config.remove_at.filter(|&at| at > 0 && at * 1000 >= run_ms) {
        println!(
            "io: remove_at={at}: the run ends at {} ms, so the hot-remove would never happen: choose a second before the end (1..={}), 0 for none, or a longer --duration",
            run_ms,
            (run_ms.saturating_sub(1) / 1000).max(1)
        );
        return None;
    }
    if config.verify && !config.dev.memory_backed {
        println!("io: verify needs memory_backed=1 (a device that keeps no data reads zeros)");
        return None;
    }
    if config.bs == 0 || !config.bs.is_multiple_of(config.dev.bs) {
        println!(
            "io: bs={} (bytes per I/O) must be a multiple of the device's block size dev_bs={}: use a bs that is, or set dev_bs=512",
            config.bs, config.dev.bs
        );
        return None;
    }
    let tagset = if config.shared_tags {
        match null_blk::tag_set(&config.dev) {
            Ok(t) => Some(t),
            Err(e) => {
                println!("io: cannot create the tag set: {e}");
                return None;
            }
        }
    } else {
        None
    };
    let mut disks = Vec::new();
    for i in 0..config.nr_devices {
        match null_blk::create(i, &config.dev, tagset.clone()) {
            Ok(d) => disks.push(d),
            Err(e) => {
                println!("io: cannot create device nullb{i}: {e}");
                for d in disks {
                    d.remove();
                }
                return None;
            }
        }
    }
    let disk = disks[0].clone();
    drop(disks);
    let online = smp::online_cpus();
    if config.numjobs > online {
        println!(
            "io: numjobs={}: at most one job per CPU ({online} online)",
            config.numjobs
        );
        return None;
    }
    let numjobs = if config.numjobs == 0 {
        online
    } else {
        config.numjobs
    };
    let cpus: Vec<usize> = smp::online().take(numjobs).collect();
    let srcu = Arc::new(Srcu::new().expect("per-CPU memory"));
    let limits = SrcuPtr::new(
        &srcu,
        Limits {
            generation: 0,
            max_bytes: 1 << 20,
            alive: AtomicBool::new(true),
        },
    );
    let shared = Arc::new(Shared {
        jobs: cpus
            .iter()
            .enumerate()
            .map(|(i, &cpu)| {
                Arc::new(Job {
                    index: i,
                    cpu,
                    stats: JobStats::new(),
                    done: IrqSpinLock::new(Vec::new()),
                    wake: WaitQueue::new(),
                    phase: AtomicU8::new(0),
                    inflight: AtomicU64::new(0),
                })
            })
            .collect(),
        config: config.clone(),
        stop: AtomicBool::new(false),
        disk_gen: AtomicU64::new(0),
        srcu,
        limits,
        entered_after_remove: AtomicU64::new(0),
        tagset,
        remove_released_once: AtomicBool::new(true),
        hot_removed: AtomicBool::new(false),
        phase: AtomicU8::new(0),
        over: AtomicBool::new(false),
        drain_samples: IrqSpinLock::new(Vec::new()),
        quiesce_samples: IrqSpinLock::new(Vec::new()),
        limits_samples: IrqSpinLock::new(Vec::new()),
        switches: AtomicU64::new(0),
        heap_trips: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    if !config.quiet {
        println!(
        "io: {} x nullb {} MiB bs={} queues={} depth={} shared_tags={} irqmode={:?} blocking={} memory_backed={} | rw={:?} bs={} iodepth={} jobs={} runtime={}s verify={}",
        config.nr_devices,
        config.dev.size_mib,
        config.dev.bs,
        disk.queue().hctxs().len(),
        config.dev.hw_queue_depth,
        config.shared_tags,
        config.dev.irqmode,
        config.dev.blocking,
        config.dev.memory_backed,
        config.rw,
        config.bs,
        config.iodepth,
        cpus.len(),
        config.runtime,
        config.verify
    );
    }
    drop(disk);
    // From here `finish` runs, which turns poisoning off again (an early
    // return above would have left it on).
    if config.poison {
        crate::mem::cache::set_poison(true);
    }
    shared.heap_trips[0].store(crate::mem::cache::heap_trips(), SeqCst);
    let handles: Vec<_> = shared
        .jobs
        .iter()
        .map(|j| {
            let (s, j) = (shared.clone(), j.clone());
            sched::spawn_on(j.cpu, move || {
                job_loop(s, j.clone());
                j.phase.store(4, SeqCst);
            })
        })
        .collect();
    let watchdog = {
        let s = shared.clone();
        let cpu = smp::online().last().unwrap_or(0);
        sched::spawn_on(cpu, move || watchdog(&s))
    };
    // The scenario is the test's clock: it runs before the job sharing
    // this CPU (which with irqmode=none never sleeps), and the tick does
    // not take the CPU from it for that job (see `sched::Priority`).
    sched::set_priority(sched::Priority::High);
    let ok = drive(&shared);
    sched::set_priority(sched::Priority::Normal);
    shared.stop.store(true, SeqCst);
    for h in handles {
        h.join();
    }
    shared.heap_trips[1].store(crate::mem::cache::heap_trips(), SeqCst);
    shared.phase.store(9, SeqCst);
    let (checked, iops) = finish(&shared);
    shared.over.store(true, SeqCst);
    watchdog.join();
    (ok & checked).then_some(iops)
}

/// Reports where a run that overran its time by 15 s is stuck, every 10 s
/// until it ends: the driver's phase, each job's phase and I/Os in flight,
/// each queue's state. A hang then says which wait never ended.
fn watchdog(shared: &Shared) {
    let cfg = &shared.config;
    let run_ms = cfg.run_ms.unwrap_or(cfg.runtime * 1000);
    let t0 = time::now_ns();
    let mut next_ms = run_ms + 15_000;
    while !shared.over.load(SeqCst) {
        sched::sleep(Duration::from_millis(50));
        let ms = (time::now_ns() - t0) / 1_000_000;
        if ms < next_ms {
            continue;
        }
        next_ms += 10_000;
        println!(
            "io: watchdog: {ms} ms into a {run_ms} ms run; driver: {}",
            DRIVE_PHASES[usize::from(shared.phase.load(SeqCst))]
        );
        for j in &shared.jobs {
            println!(
                "io: watchdog:   job {} on cpu {}: {}, {} in flight, {} done",
                j.index,
                j.cpu,
                JOB_PHASES[usize::from(j.phase.load(SeqCst))],
                j.inflight.load(SeqCst),
                j.stats.ios.load(SeqCst)
            );
        }
        for d in devices(shared) {
            println!("io: watchdog:   {}", d.queue().debug_state());
        }
        println!(
            "io: watchdog:   remote completions pending: {}",
            block::complete::remote_pending()
        );
    }
}

/// The boot CPU's part: scenario events and the once-a-second line.
fn drive(shared: &Shared) -> bool {
    let cfg = &shared.config;
    let t0 = time::now_ns();
    let ms = |t: u64| (t - t0) / 1_000_000;
    let mut next = [cfg.freeze_ms, cfg.quiesce_ms, cfg.limits_ms, cfg.switch_ms];
    let mut last_second = 0;
    let mut prev = snapshot(shared);
    let mut prev_remote = block::complete::remote_stats();
    let mut generation = 0;
    let mut removed_entered: Option<(Arc<Disk>, u64)> = None;
    // Where the run-long samples stood at the last once-a-second line.
    let (mut drains_seen, mut quiesces_seen) = (0, 0);
    let mut percpu = true;
    let run_ms = cfg.run_ms.unwrap_or(cfg.runtime * 1000);
    let remove_at = cfg
        .remove_at
        .unwrap_or(if cfg.runtime >= 4 { cfg.runtime - 2 } else { 0 });
    loop {
        let now = time::now_ns();
        let elapsed = ms(now);
        // The last second is printed too, then the loop ends.
        let end = elapsed >= run_ms;
        let all = if end { Vec::new() } else { devices(shared) };
        let disk = block::lookup("nullb0").filter(|_| !end);
        let (freeze, quiesce, switch) = (
            cfg.freeze_ms > 0 && elapsed >= next[0],
            cfg.quiesce_ms > 0 && elapsed >= next[1],
            cfg.switch_ms > 0 && elapsed >= next[3],
        );
        if switch {
            percpu = !percpu;
        }
        let phase = |p: u8| shared.phase.store(p, SeqCst);
        for d in &all {
            let q = d.queue();
            if freeze {
                phase(1);
                let times = q.freeze();
                shared.drain_samples.lock().push(times);
                // With shared tags, other devices' requests hold tags too.
                if shared.tagset.is_none() {
                    assert_eq!(q.in_flight(), 0, "freeze returned with requests in flight");
                }
                phase(2);
                q.unfreeze();
            }
            if quiesce {
                phase(3);
                let ns = q.quiesce();
                shared.quiesce_samples.lock().push(ns);
                phase(4);
                q.unquiesce();
            }
            if switch {
                phase(5);
                q.switch_usage(percpu);
                shared.switches.fetch_add(1, Relaxed);
            }
        }
        phase(0);
        drop(all);
        for (hit, n, every) in [
            (freeze, 0, cfg.freeze_ms),
            (quiesce, 1, cfg.quiesce_ms),
            (switch, 3, cfg.switch_ms),
        ] {
            if hit {
                next[n] += every;
            }
        }
        if cfg.limits_ms > 0 && elapsed >= next[2] && !end {
            phase(6);
            generation += 1;
            let t = time::now_ns();
            let old = shared
                .limits
                .replace(Limits {
                    generation,
                    max_bytes: 1 << 20,
                    alive: AtomicBool::new(true),
                })
                .expect("limits update outside any read section");
            shared.limits_samples.lock().push(time::now_ns() - t);
            drop(old);
            next[2] += cfg.limits_ms;
        }
        if remove_at > 0 && elapsed >= remove_at * 1000 && removed_entered.is_none() && !end {
            if let Some(d) = disk.clone() {
                let t = time::now_ns();
                phase(7);
                d.remove();
                let entered = d.queue().stats.entered.load(SeqCst);
                println!(
                    "io: nullb0 removed in {} us under load",
                    (time::now_ns() - t) / 1000
                );
                removed_entered = Some((d, entered));
                sched::sleep(Duration::from_millis(100));
                phase(8);
                match null_blk::create(0, &cfg.dev, shared.tagset.clone()) {
                    Ok(_) => println!("io: nullb0 re-created"),
                    Err(e) => {
                        println!("io: cannot re-create nullb0: {e}");
                        return false;
                    }
                }
                shared.disk_gen.fetch_add(1, SeqCst);
            }
        }
        phase(0);
        drop(disk);
        let second = elapsed / 1000;
        if second > last_second && !cfg.quiet {
            last_second = second;
            let s = snapshot(shared);
            let ios: Vec<u64> = s.ios.iter().zip(&prev.ios).map(|(a, b)| a - b).collect();
            let total: u64 = ios.iter().sum();
            let lat: Vec<u64> = s.lat.iter().zip(&prev.lat).map(|(a, b)| a - b).collect();
            let per_cpu: Vec<String> = ios.iter().map(|n| alloc::format!("{n}")).collect();
            let all = devices(shared);
            let (mut inflight, mut freezes, mut srcu_gps) = (0, 0, 0);
            for d in &all {
                let q = d.queue();
                // Shared tags: one device's count is every device's.
                inflight = if shared.tagset.is_some() {
                    q.in_flight()
                } else {
                    inflight + q.in_flight()
                };
                freezes += q.stats.freezes.load(Relaxed);
                srcu_gps += q.tagset().srcu_grace_periods();
            }
            let mode = all.first().map_or(String::from("-"), |d| {
                alloc::format!("{:?}", d.queue().usage_mode())
            });
            drop(all);
            // The longest freeze and quiesce of this second.
            let drain = {
                let d = shared.drain_samples.lock();
                let max = d[drains_seen..].iter().map(|t| t.drain_ns).max();
                drains_seen = d.len();
                max.unwrap_or(0) / 1000
            };
            let quiesce = {
                let q = shared.quiesce_samples.lock();
                let max = q[quiesces_seen..].iter().copied().max();
                quiesces_seen = q.len();
                max.unwrap_or(0) / 1000
            };
            // Remote completions this second and the IPIs that did them.
            let remote = block::complete::remote_stats();
            let (ipis, remote_done) = (remote.0 - prev_remote.0, remote.1 - prev_remote.1);
            prev_remote = remote;
            println!(
                "io: t={second}s iops={total} per_cpu=[{}] MB/s={} lat_us p50={} p99={} max={} inflight={inflight} usage={mode} freezes={freezes} drain_max_us={drain} quiesce_max_us={quiesce} limits_gen={generation} srcu_gps={} dispatch_srcu_gps={srcu_gps} remote_cpl={remote_done} ipis={ipis}",
                per_cpu.join(" "),
                (s.bytes - prev.bytes) / 1_000_000,
                percentile(&lat, 500) / 1000,
                percentile(&lat, 990) / 1000,
                s.max / 1000,
                shared.srcu.completed(),
            );
            prev = s;
        }
        if end {
            break;
        }
        // Until the next scenario event (sleeps end at their deadline, not
        // at a tick), at most 4 ms, so the second's line stays on time. An
        // event already due (the events of this round took longer than
        // their period) runs at once. Giving the CPU up first starved the
        // scenario whenever it fell behind: a sleep of 1 ms each round
        // kept `freeze_ms=10` to 70-90 freezes a second on a slow host,
        // and a yield to the job sharing this CPU, which with
        // `irqmode=none` never sleeps, cost a whole time slice each round
        // (10-17 freezes a second at -smp 8 here; 46-74 without it). The
        // job still runs while the events wait (most of each), and for a
        // tick in every `HIGH_RUN_LIMIT` the driver runs without waiting
        // (it runs High, see `run_once`).
        let elapsed = ms(time::now_ns());
        let due = [cfg.freeze_ms, cfg.quiesce_ms, cfg.limits_ms, cfg.switch_ms]
            .iter()
            .zip(next)
            .filter(|(every, _)| **every > 0)
            .map(|(_, at)| at)
            .min()
            .unwrap_or(u64::MAX);
        if due > elapsed {
            sched::sleep(Duration::from_millis((due - elapsed).min(4)));
        }
    }
    if let Some((d, entered)) = removed_entered {
        shared.hot_removed.store(true, SeqCst);
        let now = d.queue().stats.entered.load(SeqCst);
        shared.entered_after_remove.store(now - entered, SeqCst);
        // Jobs let go of it when they saw it dead, the registry after a
        // grace period: this is the last reference.
        let before = block::disks_released();
        drop(d);
        shared
            .remove_released_once
            .store(block::disks_released() == before + 1, SeqCst);
    }
    true
}

/// `n`, then p50, p99 and max of `samples` divided by `unit`.
fn sample_stats(samples: Vec<u64>, unit: u64) -> [u64; 4] {
    let n = samples.len() as u64;
    let (p50, p99, max) = crate::bench::percentiles(samples);
    [n, p50 / unit, p99 / unit, max / unit]
}

/// End of run: stop, remove the device, check the invariants, print the
/// summary table and the machine-readable lines.
fn finish(shared: &Shared) -> (bool, u64) {
    let released_before = block::disks_released();
    let all = devices(shared);
    let count = all.len() as u64;
    let (mut entered, mut freed, mut doubled) = (0u64, 0u64, 0u64);
    let (mut usage_zero, mut tags_free) = (true, true);
    let mut dispatch_srcu_gps = 0;
    for d in all {
        let q = d.queue().clone();
        dispatch_srcu_gps += q.tagset().srcu_grace_periods();
        d.remove();
        usage_zero &= q.usage_is_zero();
        entered += q.stats.entered.load(SeqCst);
        freed += q.stats.freed.load(SeqCst);
        doubled += q.stats.double_completions.load(SeqCst);
        drop(d);
        tags_free &= q.in_flight() == 0;
    }
    let sum = |f: fn(&JobStats) -> &AtomicU64| -> u64 {
        shared.jobs.iter().map(|j| f(&j.stats).load(SeqCst)).sum()
    };
    let submitted = sum(|s| &s.submitted);
    let ios = sum(|s| &s.ios);
    let errors = sum(|s| &s.errors);
    let verify = sum(|s| &s.verify_failures);
    let stale = sum(|s| &s.stale_limits);
    let dead = sum(|s| &s.dead_refusals);
    let after = shared.entered_after_remove.load(SeqCst);
    // The registry's references went after its grace period; ours now.
    let mut checks = vec![
        (
            "every accepted I/O completed exactly once",
            submitted == ios + errors,
        ),
        ("no request completed twice", doubled == 0),
        (
            "every request that entered a queue was freed",
            entered == freed,
        ),
        (
            "every read returned its block's last write (verify)",
            verify == 0,
        ),
        ("no I/O errors", errors == 0),
        ("no job read freed queue limits (SRCU)", stale == 0),
        ("the usage counters ended at zero", usage_zero),
        ("the tags were all free at the end", tags_free),
        (
            "every removed disk was released exactly once",
            block::disks_released() == released_before + count,
        ),
    ];
    // The hot-remove's own checks hold vacuously in a run without one:
    // they are shown as not run, not as passed.
    let hot_removed = shared.hot_removed.load(SeqCst);
    let hot_checks = [
        ("no I/O entered a removed device", after == 0),
        (
            "the hot-removed disk was released exactly once",
            shared.remove_released_once.load(SeqCst),
        ),
    ];
    if hot_removed {
        checks.extend(hot_checks);
    }
    if shared.config.poison {
        // Every freed block the heap's caches hold, checked now; blocks
        // handed out during the run were checked as they went.
        let clean = match crate::mem::cache::check_all() {
            Ok(n) => {
                println!("io: poisoning: {n} freed heap blocks checked");
                true
            }
            Err(bad) => {
                println!("io: {bad}");
                false
            }
        };
        crate::mem::cache::set_poison(false);
        checks.push(("no freed heap block was written to (poisoned)", clean));
    }
    let mut ok = true;
    for &(what, passed) in &checks {
        if !passed {
            println!("io: CHECK FAILED: {what}");
            ok = false;
        }
    }
    let ms = shared
        .config
        .run_ms
        .unwrap_or(shared.config.runtime * 1000)
        .max(1);
    let iops = ios * 1000 / ms;
    if shared.config.quiet {
        return (ok, iops);
    }
    let secs = (ms / 1000).max(1);
    println!("io: summary: {ios} I/Os in {secs} s ({} IOPS), {submitted} submitted, {dead} refused by a removed device, {verify} verify failures, {errors} errors", iops);
    // Per job (one per CPU), then all together: the latency histograms
    // merge bucket by bucket.
    println!("io: | job | cpu | I/Os | IOPS | MB/s | lat p50 us | lat p99 us | lat max us |");
    println!("io: |---|---:|---:|---:|---:|---:|---:|---:|");
    let mut merged = vec![0u64; LAT_BUCKETS];
    let (mut bytes, mut lat_max) = (0, 0);
    let row = |name: &str, cpu: &str, n: u64, b: u64, lat: &[u64], max: u64| {
        println!(
            "io: | {name} | {cpu} | {n} | {} | {} | {} | {} | {} |",
            n * 1000 / ms,
            b * 1000 / ms / 1_000_000,
            percentile(lat, 500) / 1000,
            percentile(lat, 990) / 1000,
            max / 1000
        );
    };
    for j in &shared.jobs {
        let lat: Vec<u64> = j.stats.lat.iter().map(|n| n.load(SeqCst)).collect();
        for (m, n) in merged.iter_mut().zip(&lat) {
            *m += n;
        }
        let (b, max) = (j.stats.bytes.load(SeqCst), j.stats.lat_max_run.load(SeqCst));
        bytes += b;
        lat_max = lat_max.max(max);
        let cpu = alloc::format!("{}", j.cpu);
        row(
            &alloc::format!("{}", j.index),
            &cpu,
            j.stats.ios.load(SeqCst),
            b,
            &lat,
            max,
        );
    }
    row("all", "", ios, bytes, &merged, lat_max);
    // The scenario's events: how many, and what they took.
    let samples = core::mem::take(&mut *shared.drain_samples.lock());
    let us = |v: Vec<u64>| sample_stats(v, 1000);
    let release = us(samples.iter().filter_map(|t| t.release_ns).collect());
    let drain = us(samples.iter().map(|t| t.drain_ns).collect());
    let confirm = us(samples.iter().filter_map(|t| t.confirm_ns).collect());
    let in_flight = sample_stats(
        samples.iter().map(|t| t.in_flight_at_kill as u64).collect(),
        1,
    );
    let quiesce = us(core::mem::take(&mut *shared.quiesce_samples.lock()));
    let limits = us(core::mem::take(&mut *shared.limits_samples.lock()));
    println!("io: | event | count | p50 | p99 | max |");
    println!("io: |---|---:|---:|---:|---:|");
    for (what, f) in [
        ("freeze: kill to release (the drain), us", release),
        ("freeze: kill to the freezer's return, us", drain),
        ("freeze: kill to confirm (its grace period), us", confirm),
        ("freeze: requests in flight at the kill", in_flight),
        ("quiesce: wait for dispatch to leave, us", quiesce),
        ("limits update: SRCU replace and grace period, us", limits),
    ] {
        println!("io: | {what} | {} | {} | {} | {} |", f[0], f[1], f[2], f[3]);
    }
    let switches = shared.switches.load(SeqCst);
    let srcu_gps = shared.srcu.completed();
    println!("io: | usage counter mode switches | {switches} | | | |");
    // Every CPU's acquisitions of the heap's lock while the jobs ran,
    // scenario events included: with the per-CPU caches, I/O takes none
    // once they are warm.
    let heap_locks = shared.heap_trips[1].load(SeqCst) - shared.heap_trips[0].load(SeqCst);
    let heap_locks_per_kilo_io = heap_locks * 1000 / ios.max(1);
    println!("io: | heap lock acquisitions (per 1000 I/Os) | {heap_locks} ({heap_locks_per_kilo_io}) | | | |");
    println!(
        "io: | SRCU grace periods: limits / dispatch | {srcu_gps} / {dispatch_srcu_gps} | | | |"
    );
    println!("io: | check | result |");
    println!("io: |---|---|");
    for (what, passed) in checks {
        println!("io: | {what} | {} |", if passed { "ok" } else { "FAILED" });
    }
    if !hot_removed {
        for (what, _) in hot_checks {
            println!("io: | {what} | not run (no hot-remove in this run: see remove_at) |");
        }
    }
    let (rounds, wakes) = crate::sync::rcu::expedited_histograms();
    // Log2 buckets: bucket `b` holds what took under 2^b us.
    let median_bucket = |h: &[u64]| percentile_by(h, 500, |b| 1u64 << b);
    println!(
        "io: grace periods since boot: expedited rounds p50 under {} us, round end to its first callback p50 under {} us",
        median_bucket(&rounds),
        median_bucket(&wakes)
    );
    // One line per figure, for scripts.
    let keys: [(&str, u64); 33] = [
        ("iops", iops),
        ("ios", ios),
        ("submitted", submitted),
        ("mb_per_s", bytes * 1000 / ms / 1_000_000),
        ("lat_p50_us", percentile(&merged, 500) / 1000),
        ("lat_p99_us", percentile(&merged, 990) / 1000),
        ("lat_max_us", lat_max / 1000),
        ("verify_failures", verify),
        ("errors", errors),
        ("dead_refusals", dead),
        ("freezes", release[0].max(drain[0])),
        ("freeze_release_p50_us", release[1]),
        ("freeze_release_p99_us", release[2]),
        ("freeze_release_max_us", release[3]),
        ("freeze_drain_p50_us", drain[1]),
        ("freeze_drain_p99_us", drain[2]),
        ("freeze_confirm_p50_us", confirm[1]),
        ("freeze_confirm_p99_us", confirm[2]),
        ("freeze_inflight_p50", in_flight[1]),
        ("quiesces", quiesce[0]),
        ("quiesce_p50_us", quiesce[1]),
        ("quiesce_max_us", quiesce[3]),
        ("limits_updates", limits[0]),
        ("limits_update_p50_us", limits[1]),
        ("limits_update_max_us", limits[3]),
        ("usage_switches", switches),
        ("srcu_gps", srcu_gps as u64),
        ("dispatch_srcu_gps", dispatch_srcu_gps as u64),
        ("double_completions", doubled),
        ("hot_removes", u64::from(hot_removed)),
        ("entered_after_remove", after),
        ("heap_locks", heap_locks),
        ("heap_locks_per_kilo_io", heap_locks_per_kilo_io),
    ];
    for (key, value) in keys {
        println!("io: key {key}={value}");
    }
    for (j, job) in shared.jobs.iter().enumerate() {
        println!(
            "io: key iops_job{j}={}",
            job.stats.ios.load(SeqCst) * 1000 / ms
        );
    }
    println!("io: key result={}", if ok { "ok" } else { "fail" });
    (ok, iops)
}
