//! `--io compare=1`: what the queue's usage counter costs, per-CPU and
//! forced atomic against no counter at all, measured two ways in one boot:
//! whole runs of the job alternated by setting, and the three settings
//! interleaved inside one run, batch by batch. On a host whose speed
//! moves within a second, only the second resolves a difference of a few
//! per cent (see docs/benchmarks.md).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use core::time::Duration;

use super::{pick_op, run_once, xorshift, IoConfig};
use crate::arch::{smp, time};
use crate::block::{self, Bio, BioDone, Disk, UsageMode};
use crate::drivers::null_blk;
use crate::println;
use crate::sched;

/// The three settings, in the order of every table and array here.
const MODES: [UsageMode; 3] = [UsageMode::PerCpu, UsageMode::Atomic, UsageMode::Absent];
/// Their names in the tables, and in the keys.
const NAMES: [&str; 3] = ["per-CPU", "atomic", "absent"];
const KEYS: [&str; 3] = ["percpu", "atomic", "absent"];

/// I/Os a job sends to one setting's device before it moves to the next.
const BATCH: u64 = 32;
/// How long the interleaved measurement lasts, per job count.
const INTERLEAVED: Duration = Duration::from_secs(3);
/// In how many parts, each with new devices, the settings moved to other
/// device numbers each time. With one part and one job, a whole run could
/// find `absent` 3-7% slower than the others, which no code difference
/// explains: where a device's structures land in memory can change what
/// its path costs (TCG's software TLB, for one, is direct-mapped by page).
/// Parts spread that over several placements.
const PARTS: usize = 6;

/// Ratio `num / den` in thousandths, printed with three decimals.
fn milli(num: u64, den: u64) -> alloc::string::String {
    let v = num * 1000 / den.max(1);
    alloc::format!("{}.{:03}", v / 1000, v % 1000)
}

/// The three settings inside one run: three devices, one per setting, and
/// `jobs` jobs (one per CPU) that each send [`BATCH`] I/Os to one device,
/// then a batch to the next device and to the third (a round), the order
/// rotated each round, for [`INTERLEAVED`]. Each batch is timed. Returns,
/// per setting, the median time per I/O over every job's batches, and the
/// median over every round of absent's time over the setting's in that
/// round (in thousandths: the setting's speed against absent). The three
/// batches of a round run within a millisecond of each other, so they
/// share the host's state of the moment (how fast it runs this vCPU moves
/// by more than the settings differ, second to second and within one
/// second); the medians leave out the batches in which the host stopped
/// the vCPU. The devices are `base.dev` with the usage counter set;
/// `irqmode=none`, so each I/O completes inside its submit. `None` if a
/// device cannot be made or an I/O fails.
fn interleaved(base: &IoConfig, jobs: usize) -> Option<([u64; 3], [u64; 3])> {
    let mut rounds: Vec<[u64; 3]> = Vec::new();
    for part in 0..PARTS {
        rounds.extend(interleaved_part(
            base,
            jobs,
            part,
            INTERLEAVED / PARTS as u32,
        )?);
    }
    if rounds.is_empty() {
        return None;
    }
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let ns = core::array::from_fn(|s| median(rounds.iter().map(|r| r[s]).collect()));
    let speed = core::array::from_fn(|s| {
        median(rounds.iter().map(|r| r[2] * 1000 / r[s].max(1)).collect())
    });
    Some((ns, speed))
}

/// One part of [`interleaved`], `run` long: new devices, setting `s` on
/// device `nullb{(s + part) % 3}`, removed at the end; every job's rounds.
fn interleaved_part(
    base: &IoConfig,
    jobs: usize,
    part: usize,
    run: Duration,
) -> Option<Vec<[u64; 3]>> {
    let mut disks: Vec<Arc<Disk>> = Vec::new();
    for (s, &mode) in MODES.iter().enumerate() {
        let mut dev = base.dev.clone();
        dev.usage = mode;
        let index = (s + part) % MODES.len();
        match null_blk::create(index, &dev, None) {
            Ok(d) => disks.push(d),
            Err(e) => {
                println!("io: compare: cannot create device nullb{index}: {e}");
                for d in &disks {
                    d.remove();
                }
                return None;
            }
        }
    }
    let disks = Arc::new(disks);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = smp::online()
        .take(jobs)
        .enumerate()
        .map(|(j, cpu)| {
            let (disks, stop, cfg) = (disks.clone(), stop.clone(), base.clone());
            sched::spawn_on(cpu, move || interleaved_job(j, &disks, &stop, &cfg))
        })
        .collect();
    // As in the io run: the driver's sleep ends on time although a job
    // that never sleeps shares its CPU.
    sched::set_priority(sched::Priority::High);
    sched::sleep(run);
    sched::set_priority(sched::Priority::Normal);
    // Relaxed: the jobs only need to see it eventually; `join` orders
    // their results before the reads below.
    stop.store(true, Relaxed);
    let mut rounds = Vec::new();
    let mut ok = true;
    for h in handles {
        match h.join() {
            Some(mine) => rounds.extend(mine),
            None => ok = false,
        }
    }
    for d in disks.iter() {
        d.remove();
    }
    ok.then_some(rounds)
}

/// One job of [`interleaved`]: for each whole round, the time per I/O of
/// its batch of each setting; `None` after an I/O that failed.
fn interleaved_job(
    index: usize,
    disks: &[Arc<Disk>],
    stop: &AtomicBool,
    cfg: &IoConfig,
) -> Option<Vec<[u64; 3]>> {
    let bs = cfg.bs as usize;
    let blocks = ((cfg.dev.size_mib << 20) / u64::from(cfg.bs)).max(1);
    let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1).wrapping_mul(0x2545_f491);
    let mut rounds = Vec::new();
    let done = Arc::new(AtomicU64::new(0));
    let mut sent = 0u64;
    let mut round = 0;
    while !stop.load(Relaxed) {
        let mut times = [0; 3];
        for k in 0..MODES.len() {
            let s = (round + k) % MODES.len();
            let start = time::now_ns();
            for _ in 0..BATCH {
                let op = pick_op(cfg.rw, &mut rng);
                let d = done.clone();
                let bio = Bio {
                    op,
                    offset: (xorshift(&mut rng) % blocks) * u64::from(cfg.bs),
                    data: vec![0u8; bs],
                    nowait: false,
                    // Relaxed: a count, read by this job after the submit.
                    end_io: Box::new(move |r: BioDone| {
                        if r.result.is_ok() {
                            d.fetch_add(1, Relaxed);
                        }
                    }),
                };
                if let Err((e, _)) = disks[s].submit(bio) {
                    println!("io: compare: job {index}: submit refused: {e}");
                    return None;
                }
                sent += 1;
            }
            // irqmode=none completes each I/O inside its submit: all have
            // completed, or one failed.
            if done.load(Relaxed) != sent {
                println!("io: compare: job {index}: an I/O failed or did not complete inline");
                return None;
            }
            times[s] = (time::now_ns() - start) / BATCH;
        }
        rounds.push(times);
        round += 1;
    }
    Some(rounds)
}

/// Measures what the queue's usage counter costs: the same job with the
/// counter per-CPU, forced atomic, and absent, in rounds of one short run
/// each (the order rotated round by round, so no setting always runs
/// first), with 1 job and with a job on every CPU. Prints each setting's
/// median IOPS and its ratio to `absent`, taken round by round: the three
/// runs of a round are adjacent in time, so they share the host's load of
/// the moment, which moves the IOPS of runs seconds apart by more than the
/// settings differ. Always `irqmode=none`, no memory backing and no verify,
/// so the block layer's own path is what is measured (the job's `rw`, `bs`
/// and `iodepth` are kept).
pub(super) fn compare(config: &IoConfig) -> bool {
    const ROUNDS: usize = 15;
    const ROUND_MS: u64 = 200;
    let mut base = config.clone();
    base.freeze_ms = 0;
    base.quiesce_ms = 0;
    base.limits_ms = 0;
    base.switch_ms = 0;
    base.remove_at = Some(0);
    base.run_ms = Some(ROUND_MS);
    base.quiet = true;
    base.verify = false;
    base.dev.irqmode = null_blk::IrqMode::None;
    base.dev.memory_backed = false;
    let all = smp::online_cpus();
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    println!(
        "io: compare: rw={:?} bs={} iodepth={} irqmode={:?} memory_backed={}, {ROUNDS} rounds of one {ROUND_MS} ms run per setting, order rotated each round",
        base.rw, base.bs, base.iodepth, base.dev.irqmode, base.dev.memory_backed
    );
    println!(
        "| jobs | usage counter | IOPS (median) | IOPS per job | vs absent (median of the rounds' ratios) | middle half of the rounds |"
    );
    println!("|---:|---|---:|---:|---:|---|");
    let mut keys = Vec::new();
    for &jobs in &counts {
        // rounds[round][setting]
        let mut rounds = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let mut iops = [0u64; 3];
            for k in 0..MODES.len() {
                let i = (round + k) % MODES.len();
                let mut c = base.clone();
                c.dev.usage = MODES[i];
                c.numjobs = jobs;
                match run_once(&c) {
                    Some(v) => iops[i] = v.max(1),
                    None => {
                        println!(
                            "io: compare: a run with usage={:?} failed its checks",
                            MODES[i]
                        );
                        return false;
                    }
                }
            }
            rounds.push(iops);
        }
        for (i, name) in NAMES.iter().enumerate() {
            let mut own: Vec<u64> = rounds.iter().map(|r| r[i]).collect();
            own.sort_unstable();
            let median = own[ROUNDS / 2];
            // Per mille of the same round's absent run.
            let mut ratios: Vec<u64> = rounds.iter().map(|r| r[i] * 1000 / r[2]).collect();
            ratios.sort_unstable();
            let (lo, mid, hi) = (
                ratios[ROUNDS / 4],
                ratios[ROUNDS / 2],
                ratios[ROUNDS * 3 / 4],
            );
            println!(
                "| {jobs} | {name} | {median} | {} | {} | {}-{} |",
                median / jobs as u64,
                milli(mid, 1000),
                milli(lo, 1000),
                milli(hi, 1000)
            );
            keys.push(alloc::format!(
                "io: key compare_jobs{jobs}_{}_iops={median}",
                KEYS[i]
            ));
            keys.push(alloc::format!(
                "io: key compare_jobs{jobs}_{}_vs_absent_per_mille={mid}",
                KEYS[i]
            ));
        }
    }
    println!(
        "io: compare: interleaved: three devices, one per setting, {PARTS} parts of {} ms with new devices; each job sends {BATCH} I/Os to one, then to the next, the order rotated each round; time per I/O: the median batch, and the median of the rounds' ratios",
        (INTERLEAVED / PARTS as u32).as_millis()
    );
    println!("| jobs | usage counter | ns per I/O (median batch) | speed vs absent (median of the rounds' ratios) |");
    println!("|---:|---|---:|---:|");
    for &jobs in &counts {
        let Some((ns, speed)) = interleaved(&base, jobs) else {
            println!("io: compare: the interleaved run failed");
            return false;
        };
        for (i, name) in NAMES.iter().enumerate() {
            // Speed as the IOPS ratios above: absent's time over this one's.
            println!(
                "| {jobs} | {name} | {} | {} |",
                ns[i],
                milli(speed[i], 1000)
            );
            keys.push(alloc::format!(
                "io: key compare_jobs{jobs}_{}_interleaved_ns_per_io={}",
                KEYS[i],
                ns[i]
            ));
            keys.push(alloc::format!(
                "io: key compare_jobs{jobs}_{}_interleaved_vs_absent_per_mille={}",
                KEYS[i],
                speed[i]
            ));
        }
    }
    // The share of a request's time spent entering and leaving the queue
    // (taking and putting the usage reference), timed directly: one more
    // per-CPU run per job count with the clock read around both. Jobs in
    // irqmode=none never sleep, so jobs x run time is the time their
    // requests took. The clock reads cost more than what they time under
    // TCG, so the share is given twice: as timed (an upper bound), and
    // with the timing's own cost per call, measured on this CPU with
    // nothing between the reads, taken off.
    let overhead = block::usage_timing_overhead_ns(31);
    for &jobs in &counts {
        let mut c = base.clone();
        c.dev.usage = UsageMode::PerCpu;
        c.numjobs = jobs;
        let before = block::usage_ns();
        let calls_before = block::usage_calls();
        block::time_usage(true);
        let ran = run_once(&c);
        block::time_usage(false);
        let Some(iops) = ran else {
            println!("io: compare: the timed run failed its checks");
            return false;
        };
        let spent = block::usage_ns() - before;
        let calls = block::usage_calls() - calls_before;
        let net = spent.saturating_sub(calls * overhead);
        let total = jobs as u64 * ROUND_MS * 1_000_000;
        // Per mille, printed with one decimal of a per cent.
        let share = spent * 1000 / total.max(1);
        let net_share = net * 1000 / total.max(1);
        let ios = (iops * ROUND_MS / 1000).max(1);
        println!(
            "io: compare: {jobs} job(s): entering and leaving the queue take {}.{}% of the requests' time as timed ({} ns of {} ns per request, clock reads included: an upper bound); {}.{}% with the timing's own {overhead} ns per call taken off ({} ns per request)",
            share / 10,
            share % 10,
            spent / ios,
            1_000_000_000 * jobs as u64 / iops.max(1),
            net_share / 10,
            net_share % 10,
            net / ios,
        );
        keys.push(alloc::format!(
            "io: key compare_jobs{jobs}_enter_exit_per_mille={share}"
        ));
        keys.push(alloc::format!(
            "io: key compare_jobs{jobs}_enter_exit_net_per_mille={net_share}"
        ));
    }
    for k in keys {
        println!("{k}");
    }
    println!("io: key result=ok");
    true
}

/// The tests' devices: small, completing inline.
fn test_config() -> IoConfig {
    let mut base = IoConfig::default();
    base.dev.irqmode = null_blk::IrqMode::None;
    base.dev.size_mib = 4;
    base
}

/// Panics unless none of the devices a part makes is registered.
fn assert_no_device_left() {
    for i in 0..MODES.len() {
        let name = alloc::format!("nullb{i}");
        assert!(block::lookup(&name).is_none(), "{name} is still registered");
    }
}

crate::ktest! {
    /// The interleaved measurement times all three settings in every
    /// round, on every job, and leaves no device behind: the devices it
    /// made are removed and released, and a device of the same number can
    /// be made again.
    #[smp(2)]
    fn interleaved_rounds_time_every_setting_and_release_their_devices() {
        let base = test_config();
        let released = block::disks_released();
        let rounds = interleaved_part(&base, 2, 1, Duration::from_millis(100)).expect("the part ran");
        assert!(rounds.len() >= 2, "only {} rounds in 100 ms", rounds.len());
        for r in &rounds {
            assert!(r.iter().all(|&ns| ns > 0), "a round with an untimed setting: {r:?}");
        }
        assert!(crate::arch::smp::wait_for(2000, || block::disks_released() >= released + 3), "the devices were not released");
        assert_no_device_left();
        let again = null_blk::create(0, &base.dev, None).expect("nullb0 again");
        assert!(again.remove());
    }
}

crate::ktest! {
    /// An I/O the devices refuse ends the measurement with `None` (and a
    /// message naming the job), not with figures.
    #[smp(1)]
    fn interleaved_part_fails_on_a_refused_io() {
        let mut base = test_config();
        base.bs = 1000; // not a multiple of the device's 4096-byte blocks
        assert!(interleaved_part(&base, 1, 0, Duration::from_millis(50)).is_none());
        assert_no_device_left();
    }
}
