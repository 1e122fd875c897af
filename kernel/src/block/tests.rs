//! Kernel tests of the block layer, against blk-mq's documented rules.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use core::time::Duration;

use super::{
    disks_released, lookup, Bio, BioDone, BlkError, Disk, DiskConfig, Driver, Op, Request,
    RequestQueue, TagSet, UsageMode,
};
use crate::arch::smp;
use crate::drivers::null_blk::{self, IrqMode, NullBlkConfig};
use crate::sched;
use crate::sync::SpinLock;

mod outside;

/// A driver that keeps every request until the test completes it.
struct Parking {
    parked: SpinLock<Vec<Arc<Request>>>,
    started: AtomicUsize,
    /// Sleep this long in queue_rq (blocking tag sets only), flagging it.
    sleep_ms: u64,
    in_queue_rq: AtomicBool,
    /// While set, a sleeping queue_rq waits (flagged, for up to 5 s)
    /// before its sleep: the test clears it once it has seen the flag, so
    /// a test whose vCPU the host leaves unrun cannot miss the flag.
    hold: AtomicBool,
}

impl Default for Parking {
    fn default() -> Self {
        Parking {
            parked: SpinLock::new(Vec::new()),
            started: AtomicUsize::new(0),
            sleep_ms: 0,
            in_queue_rq: AtomicBool::new(false),
            hold: AtomicBool::new(false),
        }
    }
}

impl Driver for Parking {
    fn queue_rq(&self, rq: &Arc<Request>) {
        self.started.fetch_add(1, SeqCst);
        if self.sleep_ms > 0 {
            self.in_queue_rq.store(true, SeqCst);
            wait_while_held(&self.hold, || sched::sleep(Duration::from_millis(1)));
            sched::sleep(Duration::from_millis(self.sleep_ms));
            self.in_queue_rq.store(false, SeqCst);
        }
        self.parked.lock().push(rq.clone());
    }
}

impl Parking {
    fn complete_all(&self) -> usize {
        let all = core::mem::take(&mut *self.parked.lock());
        let n = all.len();
        for rq in all {
            assert!(rq.complete(Ok(())));
        }
        n
    }
}

/// Waits, calling `pause` between looks, while `hold` is set, for 5 s at
/// most (a test that failed before clearing it must not hang the driver).
fn wait_while_held(hold: &AtomicBool, mut pause: impl FnMut()) {
    let deadline = crate::arch::time::now_ns() + 5_000_000_000;
    while hold.load(SeqCst) && crate::arch::time::now_ns() < deadline {
        pause();
    }
}

fn parking_disk(name: &str, driver: Arc<Parking>, blocking: bool, depth: usize) -> Arc<Disk> {
    test_disk(name, TagSet::new(1, depth, blocking), driver, 4096)
}

/// Two parking disks named `names` on one shared tag set, each with its
/// driver: `[(disk, driver); 2]`.
fn parked_pair(set: &Arc<TagSet>, names: [&str; 2]) -> [(Arc<Disk>, Arc<Parking>); 2] {
    names.map(|name| {
        let drv = Arc::new(Parking::default());
        (test_disk(name, set.clone(), drv.clone(), 4096), drv)
    })
}

/// A registered 1 MiB disk named `name` on `tagset` (shared or its own),
/// its requests going to `driver`, with a per-CPU usage counter.
fn test_disk(
    name: &str,
    tagset: Arc<TagSet>,
    driver: Arc<dyn Driver>,
    block_size: u32,
) -> Arc<Disk> {
    let queue = RequestQueue::new(String::from(name), tagset, driver, UsageMode::PerCpu);
    Disk::add(
        DiskConfig {
            name: String::from(name),
            capacity: 1 << 20,
            block_size,
            read_only: false,
        },
        queue,
    )
}

/// A bio whose completion counts into `done`.
fn bio(op: Op, offset: u64, len: usize, done: &Arc<AtomicUsize>) -> Bio {
    let d = done.clone();
    Bio {
        op,
        offset,
        data: vec![0u8; len],
        nowait: false,
        end_io: Box::new(move |b: BioDone| {
            assert!(b.result.is_ok());
            d.fetch_add(1, SeqCst);
        }),
    }
}

crate::ktest! {
    /// Data written is read back; bad bios are refused with the reason,
    /// handed back whole, and their end_io never runs.
    #[smp(1)]
    fn block_roundtrip_and_refusals() {
        let cfg = NullBlkConfig { memory_backed: true, size_mib: 1, ..NullBlkConfig::default() };
        let disk = null_blk::create(7, &cfg, None).unwrap();
        let got = Arc::new(SpinLock::new(Vec::new()));
        let g = got.clone();
        let mut data = vec![0u8; 8192];
        data.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 ^ 0x5a);
        let expect = data.clone();
        disk.submit(Bio { op: Op::Write, offset: 4096, data, nowait: false, end_io: Box::new(|b| assert!(b.result.is_ok())) })
            .map_err(|(e, _)| e)
            .unwrap();
        disk.submit(Bio { op: Op::Read, offset: 4096, data: vec![0; 8192], nowait: false, end_io: Box::new(move |b| *g.lock() = b.data) })
            .map_err(|(e, _)| e)
            .unwrap();
        assert!(smp::wait_for(2000, || !got.lock().is_empty()));
        assert!(*got.lock() == expect, "read did not return what was written");
        let ran = Arc::new(AtomicUsize::new(0));
        let cap = 1u64 << 20;
        let cases: [(u64, usize, BlkError); 4] = [
            (cap - 4096, 8192, BlkError::OutOfRange { sector: (cap - 4096) / 512, sectors: 16, capacity: cap / 512 }),
            (512, 4096, BlkError::Misaligned { offset: 512, len: 4096, block_size: 4096 }),
            (0, 1000, BlkError::Misaligned { offset: 0, len: 1000, block_size: 4096 }),
            (0, 0, BlkError::Empty),
        ];
        for (offset, len, want) in cases {
            let (e, back) = disk.submit(bio(Op::Read, offset, len, &ran)).unwrap_err();
            assert_eq!(e, want);
            assert_eq!((back.offset, back.data.len()), (offset, len), "the bio did not come back whole");
        }
        assert_eq!(ran.load(SeqCst), 0, "end_io of a refused bio ran");
        let ro = null_blk::create(8, &NullBlkConfig { read_only: true, size_mib: 1, ..NullBlkConfig::default() }, None).unwrap();
        assert_eq!(ro.submit(bio(Op::Write, 0, 4096, &ran)).unwrap_err().0, BlkError::ReadOnly);
        ro.submit(bio(Op::Read, 0, 4096, &ran)).map_err(|(e, _)| e).unwrap();
        assert!(smp::wait_for(2000, || ran.load(SeqCst) == 1));
        assert!(ro.remove() && disk.remove());
        assert!(!disk.remove(), "a second remove is refused");
        assert_eq!(disk.submit(bio(Op::Read, 0, 4096, &ran)).unwrap_err().0, BlkError::Dead);
        assert!(alloc::format!("{}", BlkError::Dead).contains("removed"));
    }
}

crate::ktest! {
    /// A freeze kills the usage counter: new submitters sleep until the
    /// unfreeze, and the freeze's wait returns only once every request
    /// that entered has been freed.
    #[smp(2)]
    fn freeze_drains_in_flight_and_holds_submitters() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("t-freeze", drv.clone(), false, 8);
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..4 {
            disk.submit(bio(Op::Read, i * 4096, 4096, &done)).map_err(|(e, _)| e).unwrap();
        }
        assert_eq!(disk.queue().in_flight(), 4);
        let q = disk.queue().clone();
        q.freeze_start();
        let frozen = Arc::new(AtomicBool::new(false));
        let (q2, f2) = (q.clone(), frozen.clone());
        let waiter = sched::spawn_on(1, move || {
            q2.freeze_wait();
            f2.store(true, SeqCst);
        });
        sched::sleep(Duration::from_millis(40));
        assert!(!frozen.load(SeqCst), "freeze_wait returned with requests in flight");
        // Until the kill's grace period ends a submitter may still enter (as
        // in Linux); the freeze then waits for it too.
        let extra = drv.complete_all();
        assert!(extra >= 4);
        waiter.join();
        assert!(frozen.load(SeqCst) && q.usage_is_zero());
        // Frozen: a submitter sleeps until the unfreeze; nowait fails.
        let (d2, done2) = (disk.clone(), done.clone());
        let late = sched::spawn_on(1, move || d2.submit(bio(Op::Read, 0, 4096, &done2)).map_err(|(e, _)| e));
        let nowait = Bio { nowait: true, ..bio(Op::Read, 0, 4096, &done) };
        assert_eq!(disk.submit(nowait).unwrap_err().0, BlkError::Again);
        sched::sleep(Duration::from_millis(30));
        assert!(!late.is_finished(), "a submitter got through a frozen queue");
        assert_eq!(drv.started.load(SeqCst), extra);
        q.unfreeze();
        assert_eq!(late.join(), Ok(()));
        assert!(smp::wait_for(2000, || drv.parked.lock().len() == 1));
        drv.complete_all();
        assert_eq!(done.load(SeqCst), extra + 1);
        // Nested: the inner unfreeze does not let anyone in.
        q.freeze();
        q.freeze();
        q.unfreeze();
        assert_eq!(q.freeze_depth(), 1);
        assert_eq!(disk.submit(Bio { nowait: true, ..bio(Op::Read, 0, 4096, &done) }).unwrap_err().0, BlkError::Again);
        q.unfreeze();
        disk.submit(Bio { nowait: true, ..bio(Op::Read, 0, 4096, &done) }).map_err(|(e, _)| e).unwrap();
        drv.complete_all();
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// What a freeze reports is in the order of its events: the kill's
    /// confirmation (its grace period; it does not wait for requests in
    /// flight), then the usage counter's release (once the last request
    /// in flight is freed), then the freezer's return.
    #[smp(2)]
    fn freeze_times_are_confirm_then_release_then_return() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("t-freeze-times", drv.clone(), false, 8);
        let q = disk.queue().clone();
        // Once through first: under TCG, code that runs for the first time
        // is translated as it goes (milliseconds for a freeze's paths).
        let warm = q.freeze();
        q.unfreeze();
        assert!(warm.confirm_ns.is_some() && warm.release_ns.is_some(), "{warm:?}");
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..2 {
            disk.submit(bio(Op::Read, i * 4096, 4096, &done)).map_err(|(e, _)| e).unwrap();
        }
        let q2 = q.clone();
        let freezer = sched::spawn_on(1, move || q2.freeze());
        // The freeze's clock starts before its depth shows, so `seen` is
        // no earlier than it, and the requests are held `held_ns` at least
        // from then: the release must come later, the confirmation (a
        // grace period, not waiting for requests) sooner. 200 ms leaves
        // the grace period room for a host that runs a vCPU late.
        assert!(smp::wait_for(2000, || q.freeze_depth() == 1), "the freeze never started");
        let seen = crate::arch::time::now_ns();
        sched::sleep(Duration::from_millis(200));
        let held_ns = crate::arch::time::now_ns() - seen;
        drv.complete_all();
        let t = freezer.join();
        let confirm = t.confirm_ns.expect("the first freeze kills");
        let release = t.release_ns.expect("the count reached zero");
        assert!(confirm < release, "release before the kill's confirmation: {t:?}");
        assert!(release <= t.drain_ns, "the freezer returned before the release: {t:?}");
        assert!(release >= held_ns, "released with requests in flight ({held_ns} ns held): {t:?}");
        assert!(confirm < held_ns, "the grace period waited for requests ({held_ns} ns held): {t:?}");
        assert_eq!(t.in_flight_at_kill, 2);
        // A nested freeze neither kills nor releases.
        let inner = q.freeze();
        assert_eq!((inner.confirm_ns, inner.release_ns), (None, None), "{inner:?}");
        q.unfreeze();
        q.unfreeze();
        assert_eq!(done.load(SeqCst), 2);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// Quiesce returns only once no dispatch is running (a blocking driver
    /// asleep in queue_rq, under the tag set's SRCU), and requests
    /// submitted while quiesced wait until the unquiesce dispatches them.
    #[smp(2)]
    fn quiesce_waits_for_dispatch_and_parks_new_requests() {
        let drv = Arc::new(Parking { sleep_ms: 40, hold: AtomicBool::new(true), ..Parking::default() });
        let disk = parking_disk("t-quiesce", drv.clone(), true, 8);
        let done = Arc::new(AtomicUsize::new(0));
        let (d2, done2) = (disk.clone(), done.clone());
        let submitter = sched::spawn_on(1, move || d2.submit(bio(Op::Write, 0, 4096, &done2)).map_err(|(e, _)| e));
        assert!(smp::wait_for(2000, || drv.in_queue_rq.load(SeqCst)));
        drv.hold.store(false, SeqCst);
        disk.queue().quiesce();
        assert!(!drv.in_queue_rq.load(SeqCst), "quiesce returned while queue_rq was running");
        assert_eq!(submitter.join(), Ok(()));
        let started = drv.started.load(SeqCst);
        disk.submit(bio(Op::Write, 4096, 4096, &done)).map_err(|(e, _)| e).unwrap();
        sched::sleep(Duration::from_millis(20));
        assert_eq!(drv.started.load(SeqCst), started, "a quiesced queue dispatched");
        disk.queue().unquiesce();
        assert_eq!(drv.started.load(SeqCst), started + 1, "unquiesce did not run the queue");
        assert!(disk.queue().tagset().srcu_grace_periods() >= 1);
        drv.complete_all();
        assert_eq!(done.load(SeqCst), 2);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// Hot-remove in del_gendisk's order: submitters asleep on a freeze
    /// wake and fail with Dead, the drain completes, lookups stop finding
    /// the disk, new I/O fails fast, and the disk is released exactly once
    /// when its last holder lets go.
    #[smp(2)]
    fn remove_fails_sleepers_and_releases_once() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("t-remove", drv.clone(), false, 1);
        let done = Arc::new(AtomicUsize::new(0));
        disk.submit(bio(Op::Read, 0, 4096, &done)).map_err(|(e, _)| e).unwrap();
        // The only tag is taken: this submitter sleeps on the tag queue.
        let (d2, done2) = (disk.clone(), done.clone());
        let sleeper = sched::spawn_on(1, move || d2.submit(bio(Op::Read, 0, 4096, &done2)).map_err(|(e, _)| e));
        sched::sleep(Duration::from_millis(20));
        assert!(!sleeper.is_finished());
        let (d3, drv3) = (disk.clone(), drv.clone());
        let released = disks_released();
        // The remove waits for the parked request; complete it meanwhile.
        let completer = sched::spawn_on(1, move || {
            sched::sleep(Duration::from_millis(30));
            drv3.complete_all()
        });
        assert!(d3.remove());
        assert_eq!(completer.join(), 1);
        assert_eq!(sleeper.join(), Err(BlkError::Dead));
        assert!(lookup("t-remove").is_none());
        assert_eq!(disk.submit(bio(Op::Read, 0, 4096, &done)).unwrap_err().0, BlkError::Dead);
        assert!(disk.queue().usage_is_zero() && disk.queue().in_flight() == 0);
        drop(d3);
        assert_eq!(disks_released(), released, "released while still held");
        drop(disk);
        assert_eq!(disks_released(), released + 1, "not released exactly once");
        assert_eq!(done.load(SeqCst), 1);
    }
}

crate::ktest! {
    /// One tag per queue: every CPU's submitters take turns and every I/O
    /// completes once; a request completed twice is refused and counted;
    /// the in-flight iterator sees exactly the requests in flight.
    #[smp(1, 8)]
    fn depth_one_double_completion_and_iterator() {
        let cfg = NullBlkConfig { hw_queue_depth: 1, irqmode: IrqMode::Softirq, size_mib: 1, ..NullBlkConfig::default() };
        let disk = null_blk::create(9, &cfg, None).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = smp::online()
            .map(|cpu| {
                let (d, done) = (disk.clone(), done.clone());
                sched::spawn_on(cpu, move || {
                    for i in 0..50 {
                        d.submit(bio(Op::Read, (i % 16) * 4096, 4096, &done)).map_err(|(e, _)| e).unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join();
        }
        let n = smp::online_cpus() * 50;
        assert!(smp::wait_for(10_000, || done.load(SeqCst) == n), "{} of {n} completed", done.load(SeqCst));
        assert!(smp::wait_for(2000, || disk.queue().in_flight() == 0));
        assert!(disk.remove());

        let drv = Arc::new(Parking::default());
        let disk = parking_disk("t-iter", drv.clone(), false, 4);
        for i in 0..3 {
            disk.submit(bio(Op::Read, i * 4096, 4096, &done)).map_err(|(e, _)| e).unwrap();
        }
        let mut seen = Vec::new();
        disk.queue().for_each_in_flight(|rq| seen.push(rq.id));
        assert_eq!(seen.len(), 3);
        let rq = drv.parked.lock()[0].clone();
        assert!(rq.complete(Ok(())));
        assert!(!rq.complete(Ok(())), "a second completion ran");
        assert_eq!(disk.queue().stats.double_completions.load(SeqCst), 1);
        drv.parked.lock().remove(0);
        let mut seen = 0;
        disk.queue().for_each_in_flight(|_| seen += 1);
        assert_eq!(seen, 2);
        drv.complete_all();
        disk.queue().for_each_in_flight(|_| panic!("a freed request was visited"));
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// The io job passes its checks with the usage counter per-CPU,
    /// forced atomic and absent (the comparison's three settings), and the
    /// absent setting refuses scenarios it cannot honour.
    #[smp(2)]
    fn io_runs_with_each_usage_mode() {
        for usage in [UsageMode::PerCpu, UsageMode::Atomic, UsageMode::Absent] {
            let mut cfg = crate::io::IoConfig {
                run_ms: Some(300),
                quiet: true,
                freeze_ms: 0,
                quiesce_ms: 0,
                limits_ms: 0,
                remove_at: Some(0),
                ..crate::io::IoConfig::default()
            };
            cfg.dev.usage = usage;
            cfg.dev.size_mib = 4;
            assert!(crate::io::run(cfg), "usage={usage:?}");
        }
        let mut cfg = crate::io::IoConfig { run_ms: Some(300), quiet: true, ..crate::io::IoConfig::default() };
        cfg.dev.usage = UsageMode::Absent;
        assert!(!crate::io::run(cfg), "usage=absent with freezes was accepted");
    }
}

crate::ktest! {
    /// The io mode end to end, short: jobs on every CPU with verify, a
    /// freeze, a quiesce and a limits update every 200 ms, usage-counter
    /// switches, and a hot-remove and re-create at 1 s; every check passes,
    /// with one device and then, in the same boot, with two on a shared
    /// tag set, dispatch under its SRCU and completions round robin. (The
    /// second run used to hang about one boot in three at 8 CPUs: an
    /// unfreeze's resurrect spun, preemption off, against a release its
    /// own CPU had switched out; see
    /// `resurrect_beside_a_slow_release_on_the_same_cpu`.)
    #[smp(2, 8)]
    #[timeout(120)]
    fn io_mode_short_run_passes_every_check() {
        let mut cfg = crate::io::IoConfig {
            runtime: 2,
            freeze_ms: 200,
            quiesce_ms: 200,
            limits_ms: 200,
            switch_ms: 300,
            remove_at: Some(1),
            ..crate::io::IoConfig::default()
        };
        cfg.dev.size_mib = 8;
        assert!(crate::io::run(cfg.clone()));
        cfg.nr_devices = 2;
        cfg.shared_tags = true;
        cfg.dev.blocking = true;
        cfg.dev.completion_cpu = null_blk::CompletionCpu::RoundRobin;
        assert!(crate::io::run(cfg));
    }
}

crate::ktest! {
    /// Remote completion: each request completes on the CPU it was sent
    /// to, inside that CPU's device-completion interrupt with interrupts
    /// off, and its end_io runs while the request still holds its tag (the
    /// tag is freed and the queue left only after end_io); requests queued
    /// for a CPU whose interrupt has not run yet share one IPI.
    #[smp(4)]
    fn remote_completion_runs_on_the_chosen_cpu_in_its_interrupt() {
        use super::complete::{complete_on, remote_stats};
        use crate::arch::idt::in_interrupt;
        use crate::arch::lock::IrqSpinLock;
        use crate::arch::percpu::{cpu_id, IrqGuard};
        use ::x86_64::instructions::interrupts::are_enabled;

        let drv = Arc::new(Parking::default());
        let disk = parking_disk("t-remote", drv.clone(), false, 16);
        // (request id, cpu, in the interrupt, interrupts on, tags in use)
        let seen = Arc::new(IrqSpinLock::new(Vec::new()));
        let submit = |n: u64| {
            for i in 0..n {
                let (s, q) = (seen.clone(), disk.queue().clone());
                let end_io = Box::new(move |b: BioDone| {
                    assert!(b.result.is_ok());
                    s.lock().push((b.id, cpu_id(), in_interrupt(), are_enabled(), q.in_flight()));
                });
                disk.submit(Bio { op: Op::Read, offset: i * 4096, data: vec![0; 4096], nowait: false, end_io })
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
            core::mem::take(&mut *drv.parked.lock())
        };

        let cpus: Vec<usize> = smp::online().collect();
        let parked = submit(8);
        let mut sent = Vec::new();
        for (i, rq) in parked.into_iter().enumerate() {
            let cpu = cpus[i % cpus.len()];
            sent.push((rq.id, cpu));
            complete_on(cpu, rq, Ok(()));
        }
        assert!(smp::wait_for(5000, || seen.lock().len() == 8), "{} of 8 completed", seen.lock().len());
        for (id, cpu) in sent {
            let s = seen.lock();
            let &(_, ran_on, irq, ints_on, in_use) = s.iter().find(|r| r.0 == id).expect("completed");
            assert_eq!(ran_on, cpu, "request {id} completed on cpu {ran_on}, sent to {cpu}");
            assert!(irq && !ints_on, "request {id}: end_io outside the interrupt, or with interrupts on");
            assert!(in_use >= 1, "request {id}: its tag was freed before its end_io ran");
        }
        assert!(smp::wait_for(2000, || disk.queue().in_flight() == 0), "tags not freed after completion");

        // Eight completions for this CPU while its interrupts are off: one
        // IPI, taken when they come back on, completes all eight.
        seen.lock().clear();
        let parked = submit(8);
        let (ipis, done) = remote_stats();
        let (puts, put_calls) = super::complete::put_stats();
        {
            let _irq = IrqGuard::new();
            let me = cpu_id();
            for rq in parked {
                complete_on(me, rq, Ok(()));
            }
            assert!(seen.lock().is_empty(), "completed with this CPU's interrupts off");
        }
        assert!(smp::wait_for(5000, || seen.lock().len() == 8), "{} of 8 completed", seen.lock().len());
        let (ipis2, done2) = remote_stats();
        assert_eq!((ipis2 - ipis, done2 - done), (1, 8), "eight queued completions took other than one IPI");
        // Their usage references went back in one put of eight.
        let (puts2, put_calls2) = super::complete::put_stats();
        assert_eq!((puts2 - puts, put_calls2 - put_calls), (8, 1), "the batch's usage references were not put together");
        // (Had any been lost, the remove below would wait for ever on the
        // drain: the test would hang and fail.)
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// null_blk with irqmode softirq and round-robin completion: requests
    /// submitted on one CPU complete on every CPU (the usage counter's gets
    /// and puts land on different CPUs), every one exactly once, and the
    /// queue drains.
    #[smp(4)]
    fn null_blk_round_robin_completes_on_every_cpu() {
        use crate::arch::percpu::cpu_id;
        use crate::drivers::null_blk::CompletionCpu;
        let cfg = NullBlkConfig {
            irqmode: IrqMode::Softirq,
            completion_cpu: CompletionCpu::RoundRobin,
            size_mib: 1,
            ..NullBlkConfig::default()
        };
        let disk = null_blk::create(11, &cfg, None).unwrap();
        let per_cpu: Arc<Vec<AtomicUsize>> = Arc::new(smp::online().map(|_| AtomicUsize::new(0)).collect());
        let n = 200;
        let (d, p) = (disk.clone(), per_cpu.clone());
        sched::spawn_on(0, move || {
            for i in 0..n {
                let p = p.clone();
                let end_io = Box::new(move |b: BioDone| {
                    assert!(b.result.is_ok());
                    p[cpu_id()].fetch_add(1, SeqCst);
                });
                d.submit(Bio { op: Op::Write, offset: (i % 64) * 4096, data: vec![1; 4096], nowait: false, end_io })
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
        })
        .join();
        let total = || per_cpu.iter().map(|c| c.load(SeqCst)).sum::<usize>();
        assert!(smp::wait_for(5000, || total() == n as usize), "{} of {n} completed", total());
        for (cpu, c) in per_cpu.iter().enumerate() {
            assert!(c.load(SeqCst) > 0, "no completion ran on cpu {cpu}");
        }
        assert!(smp::wait_for(2000, || disk.queue().in_flight() == 0));
        assert_eq!(disk.queue().stats.double_completions.load(SeqCst), 0);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// null_blk irqmode=timer: every request completes no sooner than
    /// completion_nsec after it was submitted, on the submitting CPU, in
    /// its timer interrupt; an io run in timer mode passes every check.
    #[smp(2)]
    fn null_blk_timer_mode_completes_after_completion_nsec() {
        use crate::arch::idt::in_interrupt;
        use crate::arch::lock::IrqSpinLock;
        use crate::arch::percpu::cpu_id;
        use crate::arch::time::now_ns;
        let cfg = NullBlkConfig { irqmode: IrqMode::Timer, completion_nsec: 300_000, size_mib: 1, ..NullBlkConfig::default() };
        let disk = null_blk::create(12, &cfg, None).unwrap();
        let seen = Arc::new(IrqSpinLock::new(Vec::new()));
        let (d, s) = (disk.clone(), seen.clone());
        sched::spawn_on(1, move || {
            for i in 0..20u64 {
                let (s, t0) = (s.clone(), now_ns());
                let end_io = Box::new(move |b: BioDone| {
                    assert!(b.result.is_ok());
                    s.lock().push((now_ns() - t0, cpu_id(), in_interrupt()));
                });
                d.submit(Bio { op: Op::Read, offset: i * 4096, data: vec![0; 4096], nowait: false, end_io })
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
        })
        .join();
        assert!(smp::wait_for(5000, || seen.lock().len() == 20), "{} of 20 completed", seen.lock().len());
        for &(after, cpu, irq) in seen.lock().iter() {
            assert!(after >= 300_000, "completed {after} ns after submission, before completion_nsec");
            assert_eq!(cpu, 1, "completed on cpu {cpu}, submitted on 1");
            assert!(irq, "completed outside the timer interrupt");
        }
        assert!(smp::wait_for(2000, || disk.queue().in_flight() == 0));
        assert!(disk.remove());

        let mut io = crate::io::IoConfig { run_ms: Some(500), quiet: true, freeze_ms: 100, quiesce_ms: 100, remove_at: Some(0), ..crate::io::IoConfig::default() };
        io.dev.irqmode = IrqMode::Timer;
        io.dev.size_mib = 4;
        assert!(crate::io::run(io), "an io run with irqmode=timer failed its checks");
    }
}

crate::ktest! {
    /// Removing a memory-backed null_blk device frees its memory at once,
    /// while a reference to the disk is still held (the driver's teardown,
    /// as null_blk frees its pages when the device is destroyed), and the
    /// removed disk still refuses I/O with a clear error.
    #[smp(2)]
    fn null_blk_remove_frees_the_device_memory() {
        let cfg = NullBlkConfig { memory_backed: true, size_mib: 16, ..NullBlkConfig::default() };
        let disk = null_blk::create(13, &cfg, None).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        disk.submit(bio(Op::Write, 0, 4096, &done)).map_err(|(e, _)| e).unwrap();
        assert!(smp::wait_for(2000, || done.load(SeqCst) == 1));
        let (before, _) = crate::mem::heap::usage();
        assert!(disk.remove());
        let (after, _) = crate::mem::heap::usage();
        assert!(
            before >= after + (15 << 20),
            "16 MiB device removed but only {} KiB freed",
            before.saturating_sub(after) >> 10
        );
        match disk.submit(bio(Op::Read, 0, 4096, &done)) {
            Err((BlkError::Dead, _)) => {}
            Err((e, _)) => panic!("I/O to a removed disk: {e}, not Dead"),
            Ok(()) => panic!("I/O to a removed disk was accepted"),
        }
        drop(disk);
    }
}

crate::ktest! {
    /// Hot-remove under load with freed memory poisoned: after the disk
    /// is released, nothing writes to what was freed (the disk, its queue,
    /// their requests, bios and completion closures). Every freed block
    /// that the heap's caches hold is checked, and every block handed out
    /// again on the way.
    #[smp(4)]
    #[timeout(120)]
    fn hot_remove_under_load_writes_no_freed_memory() {
        use crate::mem::cache;
        // The structures must be small enough to be poisoned at all.
        assert!(size_of::<Disk>() + 16 <= cache::MAX_SIZE, "Disk is {} bytes", size_of::<Disk>());
        assert!(size_of::<RequestQueue>() + 16 <= cache::MAX_SIZE, "RequestQueue is {} bytes", size_of::<RequestQueue>());
        assert!(size_of::<Request>() + 16 <= cache::MAX_SIZE, "Request is {} bytes", size_of::<Request>());
        cache::set_poison(true);
        let cfg = NullBlkConfig {
            memory_backed: true,
            size_mib: 4,
            irqmode: IrqMode::Softirq,
            ..NullBlkConfig::default()
        };
        let disk = null_blk::create(14, &cfg, None).unwrap();
        let released = disks_released();
        let done = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (1..4)
            .map(|cpu| {
                let (d, done) = (disk.clone(), done.clone());
                sched::spawn_on(cpu, move || {
                    let mut n = 0u64;
                    loop {
                        let op = if n % 3 == 0 { Op::Write } else { Op::Read };
                        let offset = (n * 7 + cpu as u64) % 1024 * 4096;
                        match d.submit(bio(op, offset, 4096, &done)) {
                            Ok(()) => n += 1,
                            Err((BlkError::Dead, _)) => return n,
                            Err((e, _)) => panic!("submit: {e}"),
                        }
                        if n % 8 == 0 {
                            sched::yield_now();
                        }
                    }
                })
            })
            .collect();
        sched::sleep(Duration::from_millis(100));
        assert!(disk.remove());
        let submitted: u64 = jobs.into_iter().map(|j| j.join()).sum();
        assert!(submitted > 0);
        assert!(smp::wait_for(2000, || done.load(SeqCst) as u64 == submitted), "not every accepted I/O completed");
        drop(disk);
        assert!(smp::wait_for(5000, || disks_released() == released + 1), "the disk was not released");
        // Churn, so that freed blocks are handed out (and checked) again.
        for _ in 0..20 {
            let v: Vec<Vec<u8>> = (0..64).map(|i| vec![0u8; 16 + i * 61]).collect();
            drop(v);
        }
        let checked = cache::check_all().unwrap_or_else(|bad| panic!("{bad}"));
        cache::set_poison(false);
        assert!(checked > 100, "only {checked} poisoned blocks were checked");
    }
}

crate::ktest! {
    /// The io mode with `poison=1`: a short run with freezes, a
    /// hot-remove and re-create passes every check, the poisoning one
    /// included, and leaves poisoning off.
    #[smp(4)]
    #[timeout(120)]
    fn io_run_with_poisoning_passes_its_checks() {
        let cfg = crate::io::IoConfig {
            runtime: 2,
            freeze_ms: 100,
            quiesce_ms: 300,
            limits_ms: 100,
            remove_at: Some(1),
            poison: true,
            ..crate::io::IoConfig::default()
        };
        let mut small = cfg.clone();
        small.dev.size_mib = 8;
        assert!(crate::io::run(small), "the poisoned io run failed a check");
        assert!(!crate::mem::cache::poisoning(), "poisoning was left on");
    }
}

crate::ktest! {
    /// Requests on several CPUs at once take no shared heap lock: after a
    /// warm-up, each CPU's allocations and frees for its I/O (the request,
    /// the buffer, the completion closure) come from and go back to its
    /// own caches. (Before the caches every I/O took the heap's one lock
    /// about six times.)
    #[smp(4)]
    fn concurrent_io_stays_off_the_heap_lock() {
        use crate::mem::cache;
        let cfg = NullBlkConfig { irqmode: IrqMode::None, size_mib: 4, ..NullBlkConfig::default() };
        let disk = null_blk::create(15, &cfg, None).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let run = |per_cpu: u64| {
            let jobs: Vec<_> = (1..4)
                .map(|cpu| {
                    let (d, done) = (disk.clone(), done.clone());
                    sched::spawn_job(cpu, move || {
                        for n in 0..per_cpu {
                            let op = if n % 2 == 0 { Op::Write } else { Op::Read };
                            d.submit(bio(op, (n * 3 + cpu as u64) % 1024 * 4096, 4096, &done))
                                .map_err(|(e, _)| e)
                                .unwrap();
                        }
                    })
                })
                .collect();
            for j in jobs {
                assert!(j.join(20_000), "a job hung");
            }
        };
        run(200);
        let before = cache::heap_trips();
        run(3000);
        let trips = cache::heap_trips() - before;
        assert!(smp::wait_for(2000, || done.load(SeqCst) == 3 * 3200));
        assert!(trips <= 90, "9000 I/Os on 3 CPUs went to the heap {trips} times");
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// A memory-backed device the heap cannot hold (with room to spare for
    /// the rest of the kernel) is refused with a message that names the
    /// size and what to do instead, and takes nothing: no device is
    /// registered and the heap is as it was. A device that fits is made.
    /// (Linux's null_blk fails the configfs `power` write with -ENOMEM.)
    #[smp(1)]
    fn a_memory_backed_device_the_heap_cannot_hold_is_refused() {
        let (used0, free) = crate::mem::heap::usage();
        let huge = NullBlkConfig { memory_backed: true, size_mib: 1024, ..NullBlkConfig::default() };
        let e = null_blk::create(5, &huge, None).err().expect("a 1 GiB device was made in a smaller heap");
        assert!(e.contains("size=1024") && e.contains("memory_backed=0"), "the message does not say what to change: {e}");
        assert!(lookup("nullb5").is_none(), "the refused device is registered");
        // Half the free heap fits; a second one of the same size does not.
        let half = NullBlkConfig { size_mib: (free >> 21) as u64 - 8, ..huge };
        let first = null_blk::create(5, &half, None).expect("half the free heap");
        let e = null_blk::create(6, &half, None).err().expect("a second half of the heap was made");
        assert!(e.contains("MiB free"), "{e}");
        assert!(lookup("nullb6").is_none(), "the refused device is registered");
        let released = super::disks_released();
        assert!(first.remove());
        drop(first);
        assert!(smp::wait_for(2000, || super::disks_released() > released), "the device was not released");
        let (used1, _) = crate::mem::heap::usage();
        assert!(used1 <= used0 + (1 << 20), "refusals and a removal left {} KiB more in use", (used1.saturating_sub(used0)) >> 10);
    }
}

crate::ktest! {
    /// A hot-remove set at or after the run's end is refused before the
    /// run starts (it would never happen, and its checks would pass with
    /// nothing checked); one a second before the end is taken.
    #[smp(2)]
    fn a_hot_remove_after_the_run_is_refused() {
        let base = || {
            let mut cfg = crate::io::IoConfig { runtime: 2, quiet: true, ..crate::io::IoConfig::default() };
            cfg.dev.size_mib = 4;
            cfg
        };
        for at in [2, 99] {
            let cfg = crate::io::IoConfig { remove_at: Some(at), ..base() };
            assert!(!crate::io::run(cfg), "remove_at={at} in a 2 s run was accepted");
        }
        assert!(lookup("nullb0").is_none(), "a refused run left its device");
        let released = disks_released();
        assert!(crate::io::run(crate::io::IoConfig { remove_at: Some(1), ..base() }), "remove_at=1 in a 2 s run");
        // The hot-removed device and the re-created one (removed at the end).
        assert!(disks_released() >= released + 2, "no hot-remove happened");
    }
}
