//! Kernel tests of the block layer written as an outside user would, from
//! blk-mq's and null_blk's documented rules rather than from this code:
//! freeze and quiesce nesting, nowait refusals that hand the bio back
//! whole, sleepers woken by an unfreeze or failed by a remove, exactly-once
//! completion under races, tags and usage references given back after
//! errors, shared tag sets with one device removed, and the busy-tag
//! iterator, which visits only started requests (the one defect these
//! tests found: it visited requests parked on a quiesced queue).

use super::*;

/// A bio of `len` bytes filled with a pattern, whose end_io counts into
/// `ran` (whatever the result).
fn outside_bio(op: Op, offset: u64, len: usize, ran: &Arc<AtomicUsize>, nowait: bool) -> Bio {
    let r = ran.clone();
    Bio {
        op,
        offset,
        data: (0..len).map(|i| (i % 251) as u8).collect(),
        nowait,
        end_io: Box::new(move |_b: BioDone| {
            r.fetch_add(1, SeqCst);
        }),
    }
}

/// The refused bio came back whole: same op, offset, nowait and data.
fn outside_whole(back: &Bio, op: Op, offset: u64, len: usize, nowait: bool) {
    assert_eq!(back.op, op, "the bio came back with another op");
    assert_eq!(back.offset, offset, "the bio came back with another offset");
    assert_eq!(back.nowait, nowait, "the bio came back with another nowait");
    assert_eq!(
        back.data.len(),
        len,
        "the bio came back with another length"
    );
    assert!(
        back.data
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8),
        "the bio's data was changed"
    );
}

/// Waits up to `ms` for `h` to finish, sleeping (not spinning).
fn outside_finished<T>(h: &sched::JoinHandle<T>, ms: u64) -> bool {
    outside_sleep_until(ms, || h.is_finished())
}

/// A freeze of `q` from `cpu` returns within 2 s (nothing left in flight,
/// no usage reference leaked), then the queue is unfrozen; `why` names
/// what a hang would mean.
fn outside_freeze_drains(q: &Arc<RequestQueue>, cpu: usize, why: &str) {
    let q2 = q.clone();
    let freezer = sched::spawn_on(cpu, move || q2.freeze());
    assert!(outside_finished(&freezer, 2000), "{why}");
    freezer.join();
    q.unfreeze();
}

fn outside_sleep_until(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..ms / 2 {
        if cond() {
            return true;
        }
        sched::sleep(Duration::from_millis(2));
    }
    cond()
}

crate::ktest! {
    /// Freeze nests: a second freeze_start/freeze_wait while frozen returns
    /// at once, one unfreeze of two leaves the queue frozen (nowait: Again,
    /// the bio whole, end_io not run; a sleeper stays asleep), the second
    /// lets the sleeper through.
    #[smp(2)]
    fn outside_freeze_nesting() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-freeze-nest", drv.clone(), false, 4);
        let q = disk.queue().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        q.freeze();
        assert_eq!(q.freeze_depth(), 1);
        let q2 = q.clone();
        let second = sched::spawn_on(1, move || {
            q2.freeze_start();
            q2.freeze_wait();
        });
        assert!(outside_finished(&second, 2000), "a second freeze of a frozen, drained queue did not return");
        second.join();
        assert_eq!(q.freeze_depth(), 2);
        q.unfreeze();
        assert_eq!(q.freeze_depth(), 1);
        let (e, back) = disk.submit(outside_bio(Op::Write, 8192, 4096, &ran, true)).unwrap_err();
        assert_eq!(e, BlkError::Again, "nowait on a frozen queue (depth 1 of 2)");
        outside_whole(&back, Op::Write, 8192, 4096, true);
        let (d2, r2) = (disk.clone(), ran.clone());
        let sleeper = sched::spawn_on(1, move || d2.submit(outside_bio(Op::Read, 0, 4096, &r2, false)).map_err(|(e, _)| e));
        sched::sleep(Duration::from_millis(30));
        assert!(!sleeper.is_finished(), "a submitter got through a queue frozen twice and unfrozen once");
        assert_eq!(drv.started.load(SeqCst), 0);
        q.unfreeze();
        assert_eq!(q.freeze_depth(), 0);
        assert!(outside_finished(&sleeper, 2000), "the sleeper did not proceed after the last unfreeze");
        assert_eq!(sleeper.join(), Ok(()));
        assert!(outside_sleep_until(1000, || drv.parked.lock().len() == 1));
        assert_eq!(drv.complete_all(), 1);
        assert_eq!(ran.load(SeqCst), 1);
        assert_eq!(q.in_flight(), 0);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// Quiesce nests: nothing is dispatched until the last unquiesce, and
    /// every request queued meanwhile is dispatched then, once.
    #[smp(2)]
    fn outside_quiesce_nesting() {
        for blocking in [false, true] {
            let drv = Arc::new(Parking::default());
            let disk = parking_disk(if blocking { "o-qn-b" } else { "o-qn" }, drv.clone(), blocking, 8);
            let q = disk.queue().clone();
            let ran = Arc::new(AtomicUsize::new(0));
            q.quiesce();
            q.quiesce();
            for i in 0..3 {
                disk.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
            }
            // From the other CPU too.
            let (d2, r2) = (disk.clone(), ran.clone());
            sched::spawn_on(1, move || d2.submit(outside_bio(Op::Write, 3 * 4096, 4096, &r2, false)).map_err(|(e, _)| e))
                .join()
                .unwrap();
            sched::sleep(Duration::from_millis(10));
            assert_eq!(drv.started.load(SeqCst), 0, "dispatch ran on a quiesced queue");
            q.unquiesce();
            sched::sleep(Duration::from_millis(10));
            assert_eq!(drv.started.load(SeqCst), 0, "dispatch ran after one unquiesce of two");
            q.unquiesce();
            assert!(outside_sleep_until(1000, || drv.started.load(SeqCst) == 4), "started {} of 4 after the last unquiesce", drv.started.load(SeqCst));
            // An unmatched unquiesce is ignored, and a later quiesce still works.
            q.unquiesce();
            q.quiesce();
            disk.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
            sched::sleep(Duration::from_millis(10));
            assert_eq!(drv.started.load(SeqCst), 4, "an unmatched unquiesce left the queue unquiesced");
            q.unquiesce();
            assert!(outside_sleep_until(1000, || drv.started.load(SeqCst) == 5));
            assert_eq!(drv.complete_all(), 5);
            assert_eq!(ran.load(SeqCst), 5);
            assert_eq!(q.in_flight(), 0);
            assert_eq!(q.stats.double_completions.load(SeqCst), 0);
            assert!(disk.remove());
        }
    }
}

crate::ktest! {
    /// A freeze started while requests are parked on a quiesced queue
    /// waits for them; the unquiesce dispatches them, and once they
    /// complete the freeze returns.
    #[smp(2)]
    fn outside_freeze_waits_for_requests_parked_by_quiesce() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-fq", drv.clone(), false, 8);
        let q = disk.queue().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        q.quiesce();
        for i in 0..2 {
            disk.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        }
        let q2 = q.clone();
        let freezer = sched::spawn_on(1, move || {
            q2.freeze();
        });
        sched::sleep(Duration::from_millis(30));
        assert!(!freezer.is_finished(), "the freeze returned with parked requests");
        assert_eq!(drv.started.load(SeqCst), 0);
        q.unquiesce();
        assert!(outside_sleep_until(1000, || drv.started.load(SeqCst) == 2));
        sched::sleep(Duration::from_millis(10));
        assert!(!freezer.is_finished(), "the freeze returned with requests in flight");
        drv.complete_all();
        assert!(outside_finished(&freezer, 2000), "the freeze did not return after the drain");
        freezer.join();
        assert!(q.usage_is_zero());
        q.unfreeze();
        assert_eq!(ran.load(SeqCst), 2);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// nowait with no free tag: Again, the bio whole, its end_io not run,
    /// and the usage reference it took given back (a freeze then drains).
    #[smp(1)]
    fn outside_nowait_without_tags() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-nowait-tag", drv.clone(), false, 2);
        let q = disk.queue().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..2 {
            disk.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, true)).map_err(|(e, _)| e).unwrap();
        }
        for _ in 0..5 {
            let (e, back) = disk.submit(outside_bio(Op::Write, 12288, 8192, &ran, true)).unwrap_err();
            assert_eq!(e, BlkError::Again);
            outside_whole(&back, Op::Write, 12288, 8192, true);
        }
        assert_eq!(ran.load(SeqCst), 0, "end_io of a refused bio ran");
        assert_eq!(q.in_flight(), 2);
        assert_eq!(drv.complete_all(), 2);
        assert_eq!(ran.load(SeqCst), 2);
        assert_eq!(q.stats.entered.load(SeqCst), 2);
        assert_eq!(q.stats.freed.load(SeqCst), 2);
        outside_freeze_drains(&q, 0, "a usage reference leaked by the Again refusals");
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// A submitter asleep on a frozen queue fails with Dead when the disk
    /// is removed meanwhile, its bio handed back whole and its end_io not
    /// run; afterwards every kind of I/O fails with Dead, and unfreezing
    /// the dead queue lets nothing in.
    #[smp(2)]
    fn outside_frozen_sleeper_then_remove() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-frozen-rm", drv.clone(), false, 4);
        let q = disk.queue().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        q.freeze();
        let (d2, r2) = (disk.clone(), ran.clone());
        let sleeper = sched::spawn_on(1, move || match d2.submit(outside_bio(Op::Write, 4096, 4096, &r2, false)) {
            Ok(()) => Ok(()),
            Err((e, back)) => {
                outside_whole(&back, Op::Write, 4096, 4096, false);
                Err(e)
            }
        });
        sched::sleep(Duration::from_millis(30));
        assert!(!sleeper.is_finished(), "a submitter got through a frozen queue");
        let d3 = disk.clone();
        let remover = sched::spawn_on(0, move || d3.remove());
        assert!(outside_finished(&remover, 3000), "remove of a frozen queue hung");
        assert!(remover.join());
        assert!(outside_finished(&sleeper, 2000), "the sleeper on the frozen queue was not woken by the remove");
        assert_eq!(sleeper.join(), Err(BlkError::Dead));
        assert!(format_err(&BlkError::Dead).contains("removed"));
        for (op, nowait) in [(Op::Read, false), (Op::Write, false), (Op::Read, true), (Op::Write, true)] {
            let (e, back) = disk.submit(outside_bio(op, 0, 4096, &ran, nowait)).unwrap_err();
            assert_eq!(e, BlkError::Dead, "{op:?} nowait={nowait} after remove");
            outside_whole(&back, op, 0, 4096, nowait);
        }
        // The user's own unfreeze after the remove: still dead.
        q.unfreeze();
        let (e, _) = disk.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).unwrap_err();
        assert_eq!(e, BlkError::Dead);
        assert_eq!(ran.load(SeqCst), 0);
        assert_eq!(drv.started.load(SeqCst), 0, "a request reached the driver of a removed disk");
        assert_eq!(q.in_flight(), 0);
    }
}

fn format_err(e: &BlkError) -> String {
    alloc::format!("{e}")
}

/// A driver that fails every request with Io (inline).
struct Failing;

impl Driver for Failing {
    fn queue_rq(&self, rq: &Arc<Request>) {
        assert!(rq.complete(Err(BlkError::Io)));
    }
}

crate::ktest! {
    /// A driver that fails every request: each end_io sees the error, once,
    /// and every tag and usage reference comes back (a freeze drains).
    #[smp(2)]
    fn outside_errors_free_every_tag() {
        let disk = test_disk("o-fail", TagSet::new(2, 2, false), Arc::new(Failing), 4096);
        let errs = Arc::new(AtomicUsize::new(0));
        let oks = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..2)
            .map(|cpu| {
                let (d, e, o) = (disk.clone(), errs.clone(), oks.clone());
                sched::spawn_on(cpu, move || {
                    for i in 0..100u64 {
                        let (e, o) = (e.clone(), o.clone());
                        let end_io = Box::new(move |b: BioDone| match b.result {
                            Err(BlkError::Io) => {
                                e.fetch_add(1, SeqCst);
                            }
                            _ => {
                                o.fetch_add(1, SeqCst);
                            }
                        });
                        d.submit(Bio { op: Op::Write, offset: (i % 8) * 4096, data: vec![1; 4096], nowait: false, end_io })
                            .map_err(|(e, _)| e)
                            .unwrap();
                    }
                })
            })
            .collect();
        for j in jobs {
            j.join();
        }
        assert_eq!((errs.load(SeqCst), oks.load(SeqCst)), (200, 0));
        let q = disk.queue().clone();
        assert_eq!(q.in_flight(), 0, "tags left in use after errors");
        assert_eq!(q.stats.entered.load(SeqCst), q.stats.freed.load(SeqCst));
        assert_eq!(q.stats.double_completions.load(SeqCst), 0);
        q.freeze();
        assert!(q.usage_is_zero());
        q.unfreeze();
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// Two CPUs complete the same request at once, many times: exactly one
    /// completion wins each time, end_io runs once, the tag is freed once.
    #[smp(2)]
    fn outside_racing_double_completion() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-race-cpl", drv.clone(), false, 4);
        let ran = Arc::new(AtomicUsize::new(0));
        let rounds = 50;
        for i in 0..rounds {
            disk.submit(outside_bio(Op::Read, (i % 4) * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
            let rq = drv.parked.lock().pop().expect("parked");
            let go = Arc::new(AtomicBool::new(false));
            let (rq2, go2) = (rq.clone(), go.clone());
            let other = sched::spawn_on(1, move || {
                while !go2.load(SeqCst) {
                    core::hint::spin_loop();
                }
                rq2.complete(Ok(()))
            });
            go.store(true, SeqCst);
            let mine = rq.complete(Ok(()));
            let theirs = other.join();
            assert!(mine ^ theirs, "round {i}: completions won: mine {mine}, theirs {theirs}");
        }
        assert_eq!(ran.load(SeqCst), rounds as usize);
        assert_eq!(disk.queue().stats.double_completions.load(SeqCst), rounds);
        assert_eq!(disk.queue().in_flight(), 0);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// One hardware queue of depth 1 shared by every CPU: waiting and
    /// nowait submitters (retrying on Again) all get through, each I/O
    /// completes once, no tag is left in use.
    #[smp(4)]
    fn outside_depth_one_all_cpus() {
        let cfg = NullBlkConfig { submit_queues: 1, hw_queue_depth: 1, irqmode: IrqMode::Softirq, size_mib: 1, ..NullBlkConfig::default() };
        let disk = null_blk::create(21, &cfg, None).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let agains = Arc::new(AtomicUsize::new(0));
        let per = 40u64;
        let jobs: Vec<_> = smp::online()
            .map(|cpu| {
                let (d, r, a) = (disk.clone(), ran.clone(), agains.clone());
                sched::spawn_on(cpu, move || {
                    for i in 0..per {
                        let nowait = cpu % 2 == 1;
                        let mut b = outside_bio(Op::Write, (i % 16) * 4096, 4096, &r, nowait);
                        loop {
                            match d.submit(b) {
                                Ok(()) => break,
                                Err((BlkError::Again, back)) if nowait => {
                                    outside_whole(&back, Op::Write, (i % 16) * 4096, 4096, true);
                                    a.fetch_add(1, SeqCst);
                                    b = back;
                                    sched::yield_now();
                                }
                                Err((e, _)) => panic!("submit: {e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for j in jobs {
            j.join();
        }
        let n = smp::online_cpus() * per as usize;
        assert!(outside_sleep_until(4000, || ran.load(SeqCst) == n), "{} of {n} completed", ran.load(SeqCst));
        assert!(outside_sleep_until(1000, || disk.queue().in_flight() == 0));
        assert_eq!(disk.queue().stats.double_completions.load(SeqCst), 0);
        let q = disk.queue();
        assert_eq!(q.stats.entered.load(SeqCst), n as u64);
        assert_eq!(q.stats.freed.load(SeqCst), n as u64);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// Two devices on one tag set (depth 2): one is hot-removed while
    /// both run; the removed one's submitters see Dead, the other keeps
    /// going, completes everything, and its tags all come back.
    #[smp(4)]
    fn outside_shared_tags_remove_one() {
        let cfg = NullBlkConfig { submit_queues: 2, hw_queue_depth: 2, irqmode: IrqMode::Softirq, size_mib: 1, ..NullBlkConfig::default() };
        let set = null_blk::tag_set(&cfg).unwrap();
        let a = null_blk::create(22, &cfg, Some(set.clone())).unwrap();
        let b = null_blk::create(23, &cfg, Some(set.clone())).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ran_a = Arc::new(AtomicUsize::new(0));
        let ran_b = Arc::new(AtomicUsize::new(0));
        // Jobs that have seen a's removal.
        let saw_dead = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (1..4)
            .map(|cpu| {
                let (a, b, ra, rb, stop) = (a.clone(), b.clone(), ran_a.clone(), ran_b.clone(), stop.clone());
                let saw_dead = saw_dead.clone();
                sched::spawn_on(cpu, move || {
                    let (mut na, mut nb, mut a_dead) = (0usize, 0usize, false);
                    let mut i = 0u64;
                    while !stop.load(SeqCst) {
                        i += 1;
                        if !a_dead {
                            match a.submit(outside_bio(Op::Write, (i % 64) * 4096, 4096, &ra, false)) {
                                Ok(()) => na += 1,
                                Err((BlkError::Dead, back)) => {
                                    outside_whole(&back, Op::Write, (i % 64) * 4096, 4096, false);
                                    a_dead = true;
                                    saw_dead.fetch_add(1, SeqCst);
                                }
                                Err((e, _)) => panic!("a: {e}"),
                            }
                        }
                        match b.submit(outside_bio(Op::Read, (i % 64) * 4096, 4096, &rb, false)) {
                            Ok(()) => nb += 1,
                            Err((e, _)) => panic!("b failed while a was removed: {e}"),
                        }
                        if i % 8 == 0 {
                            sched::yield_now();
                        }
                    }
                    (na, nb, a_dead)
                })
            })
            .collect();
        sched::sleep(Duration::from_millis(60));
        assert!(a.remove());
        // Waits, not fixed sleeps: a job's vCPU may be left unrun by the
        // host for a while, which delays its progress but stops nothing.
        let b_before = ran_b.load(SeqCst);
        assert!(outside_sleep_until(2000, || ran_b.load(SeqCst) > b_before), "b stopped while a was removed");
        assert!(outside_sleep_until(2000, || saw_dead.load(SeqCst) == 3), "a job never saw a's removal");
        stop.store(true, SeqCst);
        let (mut na, mut nb) = (0, 0);
        for j in jobs {
            let (x, y, dead) = j.join();
            assert!(dead, "a job never saw a's removal");
            na += x;
            nb += y;
        }
        assert!(outside_sleep_until(3000, || ran_a.load(SeqCst) == na && ran_b.load(SeqCst) == nb), "a {}/{na} b {}/{nb}", ran_a.load(SeqCst), ran_b.load(SeqCst));
        assert!(outside_sleep_until(1000, || b.queue().in_flight() == 0), "shared tags left in use");
        // b still works alone, nowait included.
        let r = Arc::new(AtomicUsize::new(0));
        b.submit(outside_bio(Op::Read, 0, 4096, &r, true)).map_err(|(e, _)| e).unwrap();
        assert!(outside_sleep_until(1000, || r.load(SeqCst) == 1));
        assert!(b.remove());
        assert_eq!(a.queue().stats.double_completions.load(SeqCst) + b.queue().stats.double_completions.load(SeqCst), 0);
    }
}

crate::ktest! {
    /// Shared tags (one tag): device a holds it; b's submitter sleeps for
    /// it. Removing a must not fail b's sleeper: when a's request is done
    /// the tag goes to b, whose I/O succeeds.
    #[smp(2)]
    fn outside_shared_tags_sleeper_on_other_device_survives_remove() {
        let set = TagSet::new(1, 1, false);
        let [(a, da), (b, db)] = parked_pair(&set, ["o-sh-a", "o-sh-b"]);
        let ran = Arc::new(AtomicUsize::new(0));
        a.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        let (e, _) = b.submit(outside_bio(Op::Read, 0, 4096, &ran, true)).unwrap_err();
        assert_eq!(e, BlkError::Again, "b got a tag a holds");
        let (b2, r2) = (b.clone(), ran.clone());
        let sleeper = sched::spawn_on(1, move || b2.submit(outside_bio(Op::Read, 0, 4096, &r2, false)).map_err(|(e, _)| e));
        sched::sleep(Duration::from_millis(20));
        assert!(!sleeper.is_finished());
        let da2 = da.clone();
        let completer = sched::spawn_on(1, move || {
            sched::sleep(Duration::from_millis(30));
            da2.complete_all()
        });
        assert!(a.remove());
        assert_eq!(completer.join(), 1);
        assert!(outside_finished(&sleeper, 2000), "b's sleeper never got the freed tag");
        assert_eq!(sleeper.join(), Ok(()), "b's I/O failed because a was removed");
        assert!(outside_sleep_until(1000, || db.parked.lock().len() == 1));
        db.complete_all();
        assert_eq!(ran.load(SeqCst), 2);
        assert_eq!(b.queue().in_flight(), 0);
        assert!(b.remove());
    }
}

crate::ktest! {
    /// Bad bios are refused before anything runs and come back whole:
    /// writes to a read-only disk (reads work), past the end (also with an
    /// offset near u64::MAX), misaligned on a 512-byte and a 4096-byte
    /// disk, zero length; nowait or not.
    #[smp(1)]
    fn outside_refusals_return_the_bio_whole() {
        let ran = Arc::new(AtomicUsize::new(0));
        let ro = null_blk::create(24, &NullBlkConfig { read_only: true, size_mib: 1, bs: 512, ..NullBlkConfig::default() }, None).unwrap();
        for nowait in [false, true] {
            let (e, back) = ro.submit(outside_bio(Op::Write, 512, 1024, &ran, nowait)).unwrap_err();
            assert_eq!(e, BlkError::ReadOnly);
            outside_whole(&back, Op::Write, 512, 1024, nowait);
        }
        ro.submit(outside_bio(Op::Read, 512, 1024, &ran, false)).map_err(|(e, _)| e).unwrap();
        assert!(outside_sleep_until(1000, || ran.load(SeqCst) == 1));
        let cap = 1u64 << 20;
        // 512-byte disk: 512-aligned is fine, 100 is not.
        ro.submit(outside_bio(Op::Read, cap - 512, 512, &ran, false)).map_err(|(e, _)| e).unwrap();
        assert!(outside_sleep_until(1000, || ran.load(SeqCst) == 2));
        let cases: [(u64, usize, BlkError); 5] = [
            (cap, 512, BlkError::OutOfRange { sector: cap / 512, sectors: 1, capacity: cap / 512 }),
            (cap - 512, 1024, BlkError::OutOfRange { sector: cap / 512 - 1, sectors: 2, capacity: cap / 512 }),
            (u64::MAX - 511, 1024, BlkError::OutOfRange { sector: (u64::MAX - 511) / 512, sectors: 2, capacity: cap / 512 }),
            (100, 512, BlkError::Misaligned { offset: 100, len: 512, block_size: 512 }),
            (0, 513, BlkError::Misaligned { offset: 0, len: 513, block_size: 512 }),
        ];
        for (offset, len, want) in cases {
            for op in [Op::Read, Op::Write] {
                let (e, back) = ro.submit(outside_bio(op, offset, len, &ran, true)).unwrap_err();
                if op == Op::Write && e == BlkError::ReadOnly {
                    continue;
                }
                assert_eq!(e, want, "{op:?} offset {offset} len {len}");
                assert!(!format_err(&e).is_empty());
                outside_whole(&back, op, offset, len, true);
            }
        }
        let (e, back) = ro.submit(outside_bio(Op::Read, 0, 0, &ran, false)).unwrap_err();
        assert_eq!(e, BlkError::Empty);
        assert_eq!(back.data.len(), 0);
        assert_eq!(ran.load(SeqCst), 2, "end_io of a refused bio ran");
        assert_eq!(ro.queue().stats.entered.load(SeqCst), 2, "a refused bio entered the queue");
        assert!(ro.remove());
    }
}

crate::ktest! {
    /// Completing requests from inside the in-flight iterator (as a
    /// driver's abort path does with blk_mq_tagset_busy_iter): each is
    /// visited once, completed once, freed, and the queue drains.
    #[smp(2)]
    fn outside_iterate_while_completing() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-iter-cpl", drv.clone(), false, 8);
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..6 {
            disk.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        }
        drv.parked.lock().clear();
        let mut visited = Vec::new();
        disk.queue().for_each_in_flight(|rq| {
            visited.push(rq.id);
            assert!(rq.complete(Err(BlkError::Io)), "request {} completed before", rq.id);
        });
        visited.sort_unstable();
        visited.dedup();
        assert_eq!(visited.len(), 6);
        assert_eq!(ran.load(SeqCst), 6);
        assert_eq!(disk.queue().in_flight(), 0);
        disk.queue().for_each_in_flight(|rq| panic!("request {} visited after it was freed", rq.id));
        // The same while the other CPU completes them at the same time.
        for i in 0..8 {
            disk.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        }
        let drv2 = drv.clone();
        let other = sched::spawn_on(1, move || {
            let all = core::mem::take(&mut *drv2.parked.lock());
            all.iter().filter(|rq| rq.complete(Ok(()))).count()
        });
        let mut mine = 0;
        for _ in 0..3 {
            disk.queue().for_each_in_flight(|rq| {
                if rq.complete(Ok(())) {
                    mine += 1;
                }
            });
        }
        let theirs = other.join();
        assert_eq!(mine + theirs, 8, "mine {mine} theirs {theirs}");
        assert_eq!(ran.load(SeqCst), 14);
        assert!(outside_sleep_until(1000, || disk.queue().in_flight() == 0));
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// The in-flight iterator visits requests that were handed to the
    /// driver, not ones still waiting on a quiesced queue's dispatch list
    /// (blk_mq_tagset_busy_iter skips requests that were not started).
    #[smp(1)]
    fn outside_iterator_skips_requests_not_started() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-iter-idle", drv.clone(), false, 8);
        let ran = Arc::new(AtomicUsize::new(0));
        disk.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        disk.queue().quiesce();
        disk.submit(outside_bio(Op::Read, 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        let mut states = Vec::new();
        disk.queue().for_each_in_flight(|rq| states.push(rq.state()));
        disk.queue().unquiesce();
        drv.complete_all();
        assert!(outside_sleep_until(1000, || ran.load(SeqCst) == 2));
        assert!(disk.remove());
        assert_eq!(states, vec![crate::block::RequestState::InFlight], "the in-flight iterator visited {states:?}");
    }
}

crate::ktest! {
    /// freeze_start then unfreeze without waiting for the drain (as NVMe's
    /// start_freeze/unfreeze when the wait times out): the queue takes new
    /// I/O at once, the old requests still complete, and a later full
    /// freeze drains.
    #[smp(2)]
    fn outside_freeze_start_then_unfreeze_without_wait() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-fs-uf", drv.clone(), false, 8);
        let q = disk.queue().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..2 {
            disk.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        }
        for round in 0..3 {
            q.freeze_start();
            q.unfreeze();
            disk.submit(outside_bio(Op::Read, 8192, 4096, &ran, true)).map_err(|(e, _)| e).unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        assert_eq!(drv.complete_all(), 5);
        assert_eq!(ran.load(SeqCst), 5);
        outside_freeze_drains(&q, 1, "the freeze never drained");
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// I/O on several CPUs while the queue is frozen and unfrozen, and
    /// quiesced and unquiesced, over and over: every accepted I/O
    /// completes exactly once, nothing is lost, the queue drains.
    #[smp(4)]
    fn outside_io_under_freeze_and_quiesce_churn() {
        let cfg = NullBlkConfig { hw_queue_depth: 4, irqmode: IrqMode::Softirq, memory_backed: true, size_mib: 1, ..NullBlkConfig::default() };
        let disk = null_blk::create(25, &cfg, None).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (1..4)
            .map(|cpu| {
                let (d, r, stop) = (disk.clone(), ran.clone(), stop.clone());
                sched::spawn_on(cpu, move || {
                    let (mut n, mut again) = (0usize, 0usize);
                    let mut i = 0u64;
                    while !stop.load(SeqCst) {
                        i += 1;
                        let nowait = i % 3 == 0;
                        match d.submit(outside_bio(if i % 2 == 0 { Op::Write } else { Op::Read }, (i % 256) * 4096, 4096, &r, nowait)) {
                            Ok(()) => n += 1,
                            Err((BlkError::Again, _)) if nowait => again += 1,
                            Err((e, _)) => panic!("submit: {e}"),
                        }
                        if i % 16 == 0 {
                            sched::yield_now();
                        }
                    }
                    (n, again)
                })
            })
            .collect();
        let q = disk.queue().clone();
        for k in 0..20 {
            sched::sleep(Duration::from_millis(5));
            if k % 2 == 0 {
                q.freeze();
                assert!(q.usage_is_zero(), "freeze returned with requests in flight");
                assert_eq!(q.in_flight(), 0, "tags in use on a frozen queue");
                q.unfreeze();
            } else {
                q.quiesce();
                q.quiesce();
                q.unquiesce();
                q.unquiesce();
            }
        }
        stop.store(true, SeqCst);
        let mut n = 0;
        for j in jobs {
            n += j.join().0;
        }
        assert!(n > 0);
        assert!(outside_sleep_until(3000, || ran.load(SeqCst) == n), "{} of {n} completed", ran.load(SeqCst));
        assert!(outside_sleep_until(1000, || q.in_flight() == 0));
        assert_eq!(q.stats.double_completions.load(SeqCst), 0);
        assert_eq!(q.stats.entered.load(SeqCst), q.stats.freed.load(SeqCst));
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// null_blk memory backing across its 64 KiB chunks: data written
    /// across a chunk boundary (512-byte blocks) reads back exactly; a
    /// never-written block reads as zeros.
    #[smp(1)]
    fn outside_null_blk_memory_across_chunks() {
        let cfg = NullBlkConfig { memory_backed: true, bs: 512, size_mib: 1, ..NullBlkConfig::default() };
        let disk = null_blk::create(26, &cfg, None).unwrap();
        let got = Arc::new(SpinLock::new(Vec::new()));
        let data: Vec<u8> = (0..3 * 512).map(|i| (i * 7 % 253) as u8 + 1).collect();
        let off = (64 << 10) - 512;
        let wrote = Arc::new(AtomicUsize::new(0));
        let w = wrote.clone();
        disk.submit(Bio { op: Op::Write, offset: off, data: data.clone(), nowait: false, end_io: Box::new(move |b| { assert!(b.result.is_ok()); w.fetch_add(1, SeqCst); }) })
            .map_err(|(e, _)| e)
            .unwrap();
        assert!(outside_sleep_until(1000, || wrote.load(SeqCst) == 1));
        for (o, len) in [(off, 3 * 512), (off + 512, 512), ((1 << 20) - 512, 512)] {
            let g = got.clone();
            disk.submit(Bio { op: Op::Read, offset: o, data: vec![0xee; len], nowait: false, end_io: Box::new(move |b| { assert!(b.result.is_ok()); *g.lock() = b.data; }) })
                .map_err(|(e, _)| e)
                .unwrap();
            assert!(outside_sleep_until(1000, || !got.lock().is_empty()));
            let back = core::mem::take(&mut *got.lock());
            if o == off {
                assert!(back == data, "read across the chunk boundary differs");
            } else if o == off + 512 {
                assert!(back[..] == data[512..1024], "read inside the written range differs");
            } else {
                assert!(back.iter().all(|&b| b == 0), "a never-written block is not zero");
            }
        }
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// Minimal: a driver's "fail everything in flight" pass (Linux:
    /// blk_mq_tagset_busy_iter + complete with an error) over a quiesced
    /// queue must not touch a request that was never started; here it is
    /// visited, its completion refused and reported as "completed twice"
    /// though it was never completed at all.
    #[smp(1)]
    fn outside_abort_pass_on_quiesced_queue() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-abort", drv.clone(), false, 4);
        let ran = Arc::new(AtomicUsize::new(0));
        disk.queue().quiesce();
        disk.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        let mut refused = 0;
        disk.queue().for_each_in_flight(|rq| {
            if !rq.complete(Err(BlkError::Io)) {
                refused += 1;
            }
        });
        let doubles = disk.queue().stats.double_completions.load(SeqCst);
        disk.queue().unquiesce();
        drv.complete_all();
        assert!(disk.remove());
        assert_eq!((refused, doubles), (0, 0), "a request never started was visited and its completion counted as a second one");
    }
}

crate::ktest! {
    /// Two freezers at once (different CPUs) with requests in flight: both
    /// wait for the drain, both return after it, depth 2; one unfreeze
    /// keeps the queue frozen, two open it.
    #[smp(2)]
    fn outside_two_concurrent_freezers() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-two-frz", drv.clone(), false, 4);
        let q = disk.queue().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..3 {
            disk.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        }
        let f: Vec<_> = (0..2)
            .map(|cpu| {
                let q = q.clone();
                sched::spawn_on(cpu, move || {
                    q.freeze();
                })
            })
            .collect();
        sched::sleep(Duration::from_millis(30));
        assert!(f.iter().all(|h| !h.is_finished()), "a freeze returned with requests in flight");
        drv.complete_all();
        for h in f {
            assert!(outside_finished(&h, 2000), "a freezer never returned");
            h.join();
        }
        assert_eq!(q.freeze_depth(), 2);
        q.unfreeze();
        assert_eq!(disk.submit(outside_bio(Op::Read, 0, 4096, &ran, true)).unwrap_err().0, BlkError::Again);
        q.unfreeze();
        disk.submit(outside_bio(Op::Read, 0, 4096, &ran, true)).map_err(|(e, _)| e).unwrap();
        drv.complete_all();
        assert_eq!(ran.load(SeqCst), 4);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// Many submitters asleep on a frozen queue (several per CPU): one
    /// unfreeze wakes them all and all their I/O completes.
    #[smp(4)]
    fn outside_unfreeze_wakes_every_sleeper() {
        let cfg = NullBlkConfig { hw_queue_depth: 2, irqmode: IrqMode::Softirq, size_mib: 1, ..NullBlkConfig::default() };
        let disk = null_blk::create(27, &cfg, None).unwrap();
        let q = disk.queue().clone();
        q.freeze();
        let ran = Arc::new(AtomicUsize::new(0));
        let sleepers: Vec<_> = (0..12)
            .map(|i| {
                let (d, r) = (disk.clone(), ran.clone());
                sched::spawn_on(i % 4, move || d.submit(outside_bio(Op::Write, (i as u64) * 4096, 4096, &r, false)).map_err(|(e, _)| e))
            })
            .collect();
        sched::sleep(Duration::from_millis(40));
        assert!(sleepers.iter().all(|h| !h.is_finished()), "a submitter passed a frozen queue");
        assert_eq!(ran.load(SeqCst), 0);
        q.unfreeze();
        for h in sleepers {
            assert!(outside_finished(&h, 3000), "a sleeper was not woken by the unfreeze");
            assert_eq!(h.join(), Ok(()));
        }
        assert!(outside_sleep_until(2000, || ran.load(SeqCst) == 12), "{} of 12", ran.load(SeqCst));
        assert!(outside_sleep_until(1000, || q.in_flight() == 0));
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// Remove with timer completions pending (irqmode=timer, 50 ms): the
    /// remove waits for them; every end_io ran exactly once before it
    /// returns; the old Arc refuses with Dead; a new device of the same
    /// name can be created, is found by lookup, and works.
    #[smp(2)]
    fn outside_remove_with_timer_completions_pending_and_recreate() {
        let cfg = NullBlkConfig { irqmode: IrqMode::Timer, completion_nsec: 50_000_000, memory_backed: true, size_mib: 1, ..NullBlkConfig::default() };
        let disk = null_blk::create(28, &cfg, None).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        // Before the submits: every completion is due 50 ms after `t0` or
        // later, whenever the host runs this vCPU.
        let t0 = crate::arch::time::now_ns();
        for i in 0..4 {
            disk.submit(outside_bio(Op::Write, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        }
        let (ran_before, submitted_in) = (ran.load(SeqCst), crate::arch::time::now_ns() - t0);
        assert!(ran_before == 0 || submitted_in >= 50_000_000, "{ran_before} completions ran {submitted_in} ns after submit, before their 50 ms");
        assert!(disk.remove());
        let took = crate::arch::time::now_ns() - t0;
        assert_eq!(ran.load(SeqCst), 4, "remove returned before the pending completions ran");
        assert!(took >= 50_000_000, "submit and remove took only {took} ns with 50 ms completions pending");
        assert_eq!(disk.queue().in_flight(), 0);
        assert!(lookup("nullb28").is_none());
        let again = null_blk::create(28, &cfg, None).unwrap();
        let found = lookup("nullb28").expect("the re-created device is not found");
        assert!(Arc::ptr_eq(&found, &again));
        assert_eq!(disk.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).unwrap_err().0, BlkError::Dead);
        again.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        assert!(outside_sleep_until(1000, || ran.load(SeqCst) == 5));
        drop(found);
        assert!(again.remove());
    }
}

crate::ktest! {
    /// Shared tags: each queue's in-flight iterator visits its own
    /// requests only, and completing them leaves the other device's alone.
    #[smp(1)]
    fn outside_shared_tags_iterator_per_queue() {
        let set = TagSet::new(1, 8, false);
        let [(a, da), (b, db)] = parked_pair(&set, ["o-shi-a", "o-shi-b"]);
        let ran = Arc::new(AtomicUsize::new(0));
        for i in 0..3 {
            a.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        }
        for i in 0..2 {
            b.submit(outside_bio(Op::Read, i * 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        }
        let mut na = 0;
        a.queue().for_each_in_flight(|rq| {
            na += 1;
            assert!(rq.complete(Ok(())));
        });
        assert_eq!(na, 3);
        let mut nb = 0;
        b.queue().for_each_in_flight(|_| nb += 1);
        assert_eq!(nb, 2);
        da.parked.lock().clear();
        assert_eq!(db.complete_all(), 2);
        assert_eq!(ran.load(SeqCst), 5);
        assert!(a.remove() && b.remove());
    }
}

crate::ktest! {
    /// null_blk's option bounds are checked with a message, not a panic.
    #[smp(2)]
    fn outside_null_blk_option_bounds() {
        let base = NullBlkConfig { size_mib: 1, ..NullBlkConfig::default() };
        for (cfg, key) in [
            (NullBlkConfig { hw_queue_depth: 0, ..base.clone() }, "hw_queue_depth"),
            (NullBlkConfig { hw_queue_depth: 4097, ..base.clone() }, "hw_queue_depth"),
            (NullBlkConfig { submit_queues: 3, ..base.clone() }, "submit_queues"),
            (NullBlkConfig { bs: 1024, ..base.clone() }, "bs"),
            (NullBlkConfig { size_mib: 0, ..base.clone() }, "size"),
        ] {
            let e = null_blk::create(29, &cfg, None).err().unwrap_or_else(|| panic!("{key}: a bad value was accepted"));
            assert!(e.contains(key), "{e}");
            assert!(lookup("nullb29").is_none());
        }
        let ok = null_blk::create(29, &NullBlkConfig { hw_queue_depth: 4096, submit_queues: 2, ..base }, None).unwrap();
        assert!(ok.remove());
    }
}

crate::ktest! {
    /// Remote completion twice for the same request (to two CPUs, and to
    /// one CPU twice): end_io runs once, the second is refused and counted,
    /// the tag and usage reference go back once (a freeze drains). A stale
    /// handle to a freed request whose tag was reused completes nothing.
    #[smp(2)]
    fn outside_remote_double_completion_and_stale_handle() {
        use crate::block::complete::complete_on;
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-remote-dbl", drv.clone(), false, 1);
        let q = disk.queue().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        for (i, targets) in [[0usize, 1], [1, 1], [0, 0]].into_iter().enumerate() {
            disk.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
            let rq = drv.parked.lock().pop().unwrap();
            for cpu in targets {
                complete_on(cpu, rq.clone(), Ok(()));
            }
            assert!(outside_sleep_until(1000, || ran.load(SeqCst) == i + 1), "round {i}: {} completions", ran.load(SeqCst));
            assert!(outside_sleep_until(1000, || q.stats.double_completions.load(SeqCst) == i as u64 + 1), "round {i}: the second completion was not refused");
            assert!(outside_sleep_until(1000, || q.in_flight() == 0));
        }
        assert_eq!(ran.load(SeqCst), 3);
        // A stale handle: the old request's only tag is reused by a new one.
        disk.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        let old = drv.parked.lock().pop().unwrap();
        assert!(old.complete(Ok(())));
        disk.submit(outside_bio(Op::Read, 4096, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        let new = drv.parked.lock().pop().unwrap();
        assert_eq!(old.tag, new.tag);
        assert!(!old.complete(Ok(())), "a stale handle completed");
        assert_eq!(new.state(), crate::block::RequestState::InFlight, "a stale handle's completion hit the tag's new request");
        assert_eq!(ran.load(SeqCst), 4);
        assert!(new.complete(Ok(())));
        assert_eq!(ran.load(SeqCst), 5);
        q.freeze();
        q.unfreeze();
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// On the CPU that called freeze_start, a nowait submit right after it
    /// (no wait for the drain) fails with Again, as Linux's tryget_live
    /// sees its own CPU's kill; a waiting one sleeps until the unfreeze.
    #[smp(2)]
    fn outside_nowait_right_after_freeze_start() {
        let drv = Arc::new(Parking::default());
        let disk = parking_disk("o-fs-nowait", drv.clone(), false, 4);
        let q = disk.queue().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        disk.submit(outside_bio(Op::Read, 0, 4096, &ran, false)).map_err(|(e, _)| e).unwrap();
        let (q2, d2, r2) = (q.clone(), disk.clone(), ran.clone());
        let r = sched::spawn_on(1, move || {
            q2.freeze_start();
            d2.submit(outside_bio(Op::Write, 4096, 4096, &r2, true)).map_err(|(e, b)| {
                outside_whole(&b, Op::Write, 4096, 4096, true);
                e
            })
        })
        .join();
        assert_eq!(r, Err(BlkError::Again));
        drv.complete_all();
        q.freeze_wait();
        q.unfreeze();
        assert_eq!(ran.load(SeqCst), 1);
        assert!(disk.remove());
    }
}

crate::ktest! {
    /// A blocking driver asleep in queue_rq while the disk is removed:
    /// the remove returns only after queue_rq has returned and the request
    /// completed; nothing is dispatched after it.
    #[smp(2)]
    fn outside_remove_while_blocking_driver_sleeps() {
        let drv = Arc::new(Parking { sleep_ms: 40, hold: AtomicBool::new(true), ..Parking::default() });
        let disk = parking_disk("o-rm-block", drv.clone(), true, 4);
        let ran = Arc::new(AtomicUsize::new(0));
        let (d2, r2) = (disk.clone(), ran.clone());
        let sub = sched::spawn_on(1, move || d2.submit(outside_bio(Op::Write, 0, 4096, &r2, false)).map_err(|(e, _)| e));
        assert!(outside_sleep_until(2000, || drv.in_queue_rq.load(SeqCst)));
        drv.hold.store(false, SeqCst);
        let drv2 = drv.clone();
        let completer = sched::spawn_on(1, move || {
            assert!(outside_sleep_until(2000, || drv2.parked.lock().len() == 1));
            sched::sleep(Duration::from_millis(20));
            drv2.complete_all()
        });
        assert!(disk.remove());
        assert!(!drv.in_queue_rq.load(SeqCst), "remove returned while queue_rq ran");
        assert_eq!(ran.load(SeqCst), 1, "remove returned before the request completed");
        assert_eq!(sub.join(), Ok(()));
        assert_eq!(completer.join(), 1);
        assert_eq!(disk.submit(outside_bio(Op::Write, 0, 4096, &ran, false)).unwrap_err().0, BlkError::Dead);
        assert_eq!(drv.started.load(SeqCst), 1);
    }
}

/// A non-blocking driver that busy-waits in queue_rq (it may not sleep:
/// rcu-sched section), recording what it was given.
struct Spinner {
    inside: AtomicBool,
    /// While set, queue_rq spins (flagged, for up to 5 s) before its
    /// 40 ms: as `Parking::hold`.
    hold: AtomicBool,
    seen: SpinLock<Vec<(Op, u64, usize, usize)>>,
}

impl Default for Spinner {
    fn default() -> Self {
        Spinner {
            inside: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            seen: SpinLock::new(Vec::new()),
        }
    }
}

impl Driver for Spinner {
    fn queue_rq(&self, rq: &Arc<Request>) {
        self.inside.store(true, SeqCst);
        wait_while_held(&self.hold, core::hint::spin_loop);
        let t0 = crate::arch::time::now_ns();
        while crate::arch::time::now_ns() - t0 < 40_000_000 {
            core::hint::spin_loop();
        }
        self.seen.lock().push((rq.op, rq.offset, rq.len, rq.hctx));
        self.inside.store(false, SeqCst);
        assert!(rq.complete(Ok(())));
    }
}

crate::ktest! {
    /// Quiesce of a non-blocking queue waits for a queue_rq running on
    /// another CPU (an rcu-sched grace period), and the driver sees the
    /// bio's op, offset and length on the submitting CPU's hardware queue.
    #[smp(2)]
    fn outside_quiesce_waits_for_nonblocking_dispatch() {
        let drv = Arc::new(Spinner { hold: AtomicBool::new(true), ..Spinner::default() });
        let disk = test_disk("o-spin", TagSet::new(2, 4, false), drv.clone(), 512);
        let ran = Arc::new(AtomicUsize::new(0));
        let (d2, r2) = (disk.clone(), ran.clone());
        let sub = sched::spawn_on(1, move || d2.submit(outside_bio(Op::Write, 1536, 2048, &r2, false)).map_err(|(e, _)| e));
        assert!(smp::wait_for(2000, || drv.inside.load(SeqCst)));
        drv.hold.store(false, SeqCst);
        disk.queue().quiesce();
        assert!(!drv.inside.load(SeqCst), "quiesce returned while a non-blocking queue_rq ran");
        assert_eq!(sub.join(), Ok(()));
        disk.queue().unquiesce();
        assert_eq!(ran.load(SeqCst), 1);
        assert_eq!(*drv.seen.lock(), vec![(Op::Write, 1536, 2048, 1)]);
        assert!(disk.remove());
    }
}
