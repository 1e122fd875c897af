//! Host unit tests: one per API item and per misuse kind.
#![cfg(all(feature = "std", not(loom)))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use refcnt::host::{take_reports, Host};
use refcnt::percpu_ref::{Flags, Mode, PercpuRef, DYNAMIC_BATCH};
use refcnt::{Backend, Misuse};

fn counting(flags: Flags) -> (PercpuRef<Host>, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let r = PercpuRef::<Host>::new(
        move || {
            n2.fetch_add(1, SeqCst);
        },
        flags,
    )
    .unwrap();
    take_reports();
    (r, n)
}

fn no_reports() {
    assert_eq!(take_reports(), []);
}

#[test]
fn init_flags() {
    let (r, _) = counting(Flags::empty());
    assert_eq!(r.stats().mode, Mode::PerCpu);
    assert!(!r.is_zero() && !r.is_dying());
    let (r, _) = counting(Flags::INIT_ATOMIC);
    assert_eq!((r.stats().mode, r.count_atomic()), (Mode::Atomic, 1));
    let (r, n) = counting(Flags::INIT_DEAD);
    assert!(r.is_zero() && r.is_dying());
    assert_eq!((r.stats().lives, n.load(SeqCst)), (0, 0));
    r.wait_for_release();
    let (r, _) = counting(Flags::DYNAMIC);
    assert_eq!(r.stats().mode, Mode::DynamicAtomic);
    no_reports();
}

#[test]
fn get_put_both_modes() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC] {
        let (r, n) = counting(flags);
        let g = r.get();
        r.get_many(5);
        r.get().leak();
        r.put_many(3);
        r.switch_to_atomic_sync();
        assert_eq!(r.count_atomic(), 1 + 1 + 5 + 1 - 3);
        r.put();
        r.put_many(2);
        drop(g);
        assert_eq!(r.count_atomic(), 1);
        assert!(r.kill());
        assert_eq!(n.load(SeqCst), 1);
        no_reports();
    }
}

#[test]
fn tryget_and_tryget_many() {
    let (r, n) = counting(Flags::empty());
    let g = r.tryget().unwrap();
    assert!(r.tryget_many(3));
    r.kill();
    // Dead but referenced: tryget still works, tryget_live does not.
    assert!(r.tryget_many(2));
    assert!(r.tryget_live().is_none());
    r.put_many(5);
    drop(g);
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
    assert!(r.tryget().is_none());
    assert!(!r.tryget_many(4));
    assert!(r.is_zero());
    no_reports();
}

#[test]
fn tryget_live_fails_everywhere_after_confirm() {
    let (r, _) = counting(Flags::empty());
    let r = Arc::new(r);
    assert!(r.tryget_live().is_some());
    let (tx, rx) = mpsc::channel();
    assert!(r.kill_and_confirm(move || tx.send(()).unwrap()));
    rx.recv().unwrap();
    let r2 = r.clone();
    std::thread::spawn(move || assert!(r2.tryget_live().is_none()))
        .join()
        .unwrap();
    no_reports();
}

#[test]
fn kill_returns_once_and_reports_double_kill() {
    let (r, n) = counting(Flags::empty());
    assert!(r.kill());
    assert!(!r.kill());
    assert_eq!(take_reports(), [Misuse::DoubleKill]);
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
    // The double kill did not drop another reference.
    assert!(r.is_zero());
}

#[test]
fn kill_confirm_runs_before_release() {
    let confirmed = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicBool::new(false));
    let (c, s) = (confirmed.clone(), seen.clone());
    let r =
        PercpuRef::<Host>::new(move || s.store(c.load(SeqCst), SeqCst), Flags::empty()).unwrap();
    let c = confirmed.clone();
    r.kill_and_confirm(move || c.store(true, SeqCst));
    r.wait_for_release();
    assert!(
        seen.load(SeqCst),
        "release ran before the kill confirmation"
    );
}

#[test]
fn kill_confirm_in_atomic_mode() {
    let (r, n) = counting(Flags::INIT_ATOMIC);
    let (tx, rx) = mpsc::channel();
    r.kill_and_confirm(move || tx.send(()).unwrap());
    rx.recv().unwrap();
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
}

#[test]
fn switch_to_atomic_confirms() {
    let (r, _) = counting(Flags::empty());
    let (tx, rx) = mpsc::channel();
    for i in 0..3 {
        let tx = tx.clone();
        r.switch_to_atomic(move || tx.send(i).unwrap());
    }
    let mut got: Vec<i32> = (0..3).map(|_| rx.recv().unwrap()).collect();
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(r.stats().mode, Mode::Atomic);
    assert_eq!(r.stats().switches_to_atomic, 1);
}

#[test]
fn switch_requests_are_serialised_not_lost() {
    let (r, _) = counting(Flags::empty());
    r.get_many(2);
    // atomic (in flight) then per-CPU: ends per-CPU.
    r.switch_to_atomic(|| {});
    r.switch_to_percpu();
    r.switch_to_atomic_sync();
    r.switch_to_percpu();
    while r.stats().switching {
        std::thread::yield_now();
    }
    assert_eq!(r.stats().mode, Mode::PerCpu);
    // per-CPU then atomic: ends atomic, with an exact count.
    r.switch_to_percpu();
    r.switch_to_atomic_sync();
    assert_eq!(r.stats().mode, Mode::Atomic);
    assert_eq!(r.count_atomic(), 3);
    r.put_many(2);
    no_reports();
}

#[test]
fn switch_to_percpu_and_back() {
    let (r, n) = counting(Flags::INIT_ATOMIC);
    r.get_many(4);
    r.switch_to_percpu();
    assert_eq!(r.stats().mode, Mode::PerCpu);
    r.put_many(4);
    r.get_many(1);
    r.switch_to_atomic_sync();
    assert_eq!(r.count_atomic(), 2);
    r.put();
    r.kill();
    assert_eq!(n.load(SeqCst), 1);
    no_reports();
}

#[test]
fn resurrect_after_release_starts_a_new_life() {
    let (r, n) = counting(Flags::empty());
    r.kill();
    r.wait_for_release();
    assert!(r.resurrect());
    let s = r.stats();
    assert_eq!((s.lives, s.releases), (2, 1));
    assert!(r.tryget_live().is_some());
    r.kill();
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 2);
    no_reports();
}

#[test]
fn resurrect_before_zero_continues_the_life() {
    let (r, n) = counting(Flags::empty());
    let g = r.get();
    r.kill();
    assert!(r.resurrect());
    drop(g);
    while r.stats().switching {
        std::thread::yield_now();
    }
    assert_eq!(r.stats().mode, Mode::PerCpu);
    assert_eq!((r.stats().lives, n.load(SeqCst)), (1, 0));
    r.kill();
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
    no_reports();
}

#[test]
fn resurrect_live_is_reported() {
    let (r, _) = counting(Flags::empty());
    assert!(!r.resurrect());
    assert_eq!(take_reports(), [Misuse::ResurrectLive]);
}

#[test]
fn reinit() {
    let (r, n) = counting(Flags::INIT_DEAD | Flags::ALLOW_REINIT);
    assert!(r.reinit());
    assert_eq!(r.stats().mode, Mode::PerCpu);
    let g = r.get();
    r.kill();
    assert!(!r.reinit());
    assert_eq!(take_reports(), [Misuse::ReinitNonZero]);
    drop(g);
    r.wait_for_release();
    assert!(r.reinit());
    assert_eq!(n.load(SeqCst), 1);
    no_reports();
}

#[test]
fn exit_then_use_is_reported() {
    let (mut r, _) = counting(Flags::empty());
    r.get_many(2);
    r.exit();
    assert_eq!(r.stats().mode, Mode::Exited);
    assert_eq!(r.count_atomic(), 3);
    r.get_many(1);
    r.put();
    assert!(r.tryget().is_none());
    assert!(!r.kill());
    r.switch_to_percpu();
    r.switch_to_atomic_sync();
    r.switch_to_atomic(|| panic!("confirm after exit"));
    assert!(!r.resurrect());
    assert_eq!(take_reports(), [Misuse::GetAfterExit; 8]);
    r.exit();
}

#[test]
fn underflow_atomic_is_ignored_and_reported() {
    let (r, n) = counting(Flags::INIT_ATOMIC);
    r.kill();
    assert_eq!(n.load(SeqCst), 1);
    r.put();
    assert_eq!(take_reports(), [Misuse::Underflow]);
    assert!(r.is_zero());
    assert_eq!(n.load(SeqCst), 1);
}

#[test]
fn underflow_percpu_is_reported_at_fold() {
    let (r, n) = counting(Flags::empty());
    r.put_many(3);
    r.switch_to_atomic_sync();
    assert_eq!(take_reports(), [Misuse::Underflow]);
    assert_eq!(n.load(SeqCst), 0);
}

#[test]
fn get_on_zero_and_repeated_zero_never_release_twice() {
    let (r, n) = counting(Flags::empty());
    r.kill();
    r.wait_for_release();
    let g = r.get();
    drop(g);
    assert_eq!(take_reports(), [Misuse::GetOnZero, Misuse::RepeatedZero]);
    assert_eq!(n.load(SeqCst), 1);
}

#[test]
fn is_zero_and_is_dying() {
    let (r, _) = counting(Flags::empty());
    assert!(!r.is_zero() && !r.is_dying());
    let g = r.get();
    r.kill();
    assert!(r.is_dying());
    r.switch_to_atomic_sync();
    assert!(!r.is_zero());
    drop(g);
    assert!(r.is_zero());
}

#[test]
fn wait_for_release_waits_for_the_callback() {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let r = Arc::new(
        PercpuRef::<Host>::new(
            move || {
                std::thread::sleep(Duration::from_millis(20));
                f.store(true, SeqCst);
            },
            Flags::empty(),
        )
        .unwrap(),
    );
    let r2 = r.clone();
    let t = std::thread::spawn(move || r2.kill());
    r.wait_for_release();
    // wait_for_release returns only after release has returned, unless it
    // began before the kill; in both cases a second wait sees it.
    r.wait_for_release();
    t.join().unwrap();
    r.wait_for_release();
    assert!(flag.load(SeqCst));
}

#[test]
fn dynamic_idle_stays_atomic() {
    let (r, _) = counting(Flags::DYNAMIC);
    // 300 gets at ~1 kHz: every batch of 128 takes far longer than the
    // 31 ms the default rate (4096/s) allows.
    let n = if cfg!(miri) { 130 } else { 300 };
    for _ in 0..n {
        drop(r.get());
        std::thread::sleep(Duration::from_micros(1000));
    }
    let s = r.stats();
    assert_eq!((s.mode, s.switches_to_percpu), (Mode::DynamicAtomic, 0));
    assert_eq!(r.count_atomic(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "a million gets is too slow under Miri")]
fn dynamic_hot_goes_percpu() {
    let (r, n) = counting(Flags::DYNAMIC);
    let mut i = 0;
    while r.stats().mode != Mode::PerCpu {
        drop(r.get());
        i += 1;
        assert!(i < 1_000_000, "hot ref never went per-CPU");
    }
    assert_eq!(r.stats().switches_to_percpu, 1);
    r.get_many(3);
    r.put_many(3);
    r.kill();
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
    // Never switches after kill, even when hot (here: resurrected gets
    // dynamic again, killed gets nothing).
    no_reports();
}

/// A dynamic ref (rate 1 get/s: every batch of 128 gets is "hot").
fn dynamic_counting() -> (PercpuRef<Host>, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let r = PercpuRef::<Host>::new_with_rate(
        move || {
            n2.fetch_add(1, SeqCst);
        },
        Flags::DYNAMIC,
        1,
    )
    .unwrap();
    take_reports();
    (r, n)
}

/// The seed's reason for the dynamic mode: an idle dynamic ref holds no
/// per-CPU counters (every other kind does from creation); it gets them
/// when it first goes per-CPU, keeps them across switches, and gives them
/// back at exit.
#[test]
fn dynamic_ref_allocates_percpu_counters_only_when_it_goes_percpu() {
    let (r, n) = dynamic_counting();
    for f in [Flags::empty(), Flags::INIT_ATOMIC, Flags::INIT_DEAD] {
        assert!(
            counting(f).0.stats().percpu,
            "{f:?}: counters from creation"
        );
    }
    let s = r.stats();
    assert_eq!((s.mode, s.percpu), (Mode::DynamicAtomic, false));
    // The dynamic mode counts calls (a get_many is one).
    for _ in 0..127 {
        r.get_many(1); // one short of a batch: still idle
    }
    let s = r.stats();
    assert_eq!(
        (s.mode, s.percpu, r.count_atomic()),
        (Mode::DynamicAtomic, false, 128)
    );
    r.get_many(1); // the 128th get ends a hot batch: allocate and switch
    let s = r.stats();
    assert_eq!(
        (s.mode, s.percpu, s.switches_to_percpu),
        (Mode::PerCpu, true, 1)
    );
    // The references taken atomically are put through the per-CPU path.
    r.put_many(128);
    r.switch_to_atomic_sync();
    assert_eq!((r.stats().percpu, r.count_atomic()), (true, 1));
    r.switch_to_percpu();
    assert_eq!(r.stats().mode, Mode::PerCpu);
    let g = r.get();
    r.kill();
    assert_eq!(n.load(SeqCst), 0, "released while a reference is held");
    drop(g);
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
    let mut r = r;
    r.exit();
    assert!(!r.stats().percpu, "exit gives the counters back");
    assert_eq!(r.stats().mode, Mode::Exited);
    no_reports();
}

/// The allocation on the get path may fail (it must not sleep): the ref
/// then keeps counting atomically, exactly, and tries again at its next
/// hot batch, which succeeds.
#[test]
fn dynamic_ref_failed_allocation_stays_atomic_and_retries() {
    let (r, n) = dynamic_counting();
    refcnt::host::fail_nowait_allocs(2);
    for _ in 0..128 {
        r.get_many(1); // a hot batch: the allocation fails
    }
    let s = r.stats();
    assert_eq!(
        (s.mode, s.percpu, s.alloc_failures),
        (Mode::DynamicAtomic, false, 1)
    );
    assert_eq!(r.count_atomic(), 129, "counted on the shared count");
    for _ in 0..128 {
        assert!(r.tryget_many(1)); // the tryget slow path asks too: fails again
    }
    assert_eq!(r.stats().alloc_failures, 2);
    r.put_many(256);
    assert_eq!(r.count_atomic(), 1);
    // switch_to_percpu allocates as well; with a failure it leaves the ref
    // measuring (dynamic), not stuck atomic.
    refcnt::host::fail_nowait_allocs(1);
    r.switch_to_percpu();
    let s = r.stats();
    assert_eq!(
        (s.mode, s.percpu, s.alloc_failures),
        (Mode::DynamicAtomic, false, 3)
    );
    // The next hot batch succeeds.
    for _ in 0..128 {
        drop(r.get());
    }
    let s = r.stats();
    assert_eq!(
        (s.mode, s.percpu, s.switches_to_percpu),
        (Mode::PerCpu, true, 1)
    );
    r.kill();
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
    no_reports();
}

/// A ref whose counters are allocated by one thread while others get and
/// put through the idle key: no count is lost, release runs once.
#[test]
fn dynamic_ref_goes_percpu_under_concurrent_gets() {
    let (r, n) = dynamic_counting();
    let r = Arc::new(r);
    let rounds = if cfg!(miri) { 150 } else { 20_000 };
    let ts: Vec<_> = (0..3)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    r.get_many(2);
                    r.put();
                    r.put();
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    assert!(r.stats().percpu && r.stats().mode == Mode::PerCpu);
    r.kill();
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
    no_reports();
}

/// At a rate of one get a second every batch of gets is hot: the same
/// gets that switch a live ref leave a killed one atomic.
#[test]
fn dynamic_never_switches_after_kill() {
    let gets = 4 * DYNAMIC_BATCH;
    let (live, _) = dynamic_counting();
    for _ in 0..gets {
        drop(live.tryget());
    }
    assert_eq!(
        live.stats().mode,
        Mode::PerCpu,
        "the gets suffice to switch a live ref"
    );
    let (r, _) = dynamic_counting();
    let g = r.get();
    r.kill();
    for _ in 0..gets {
        drop(r.tryget());
    }
    assert_eq!(r.stats().switches_to_percpu, 0);
    assert_eq!(r.stats().mode, Mode::Atomic);
    drop(g);
}

#[test]
fn dynamic_resurrect_measures_again() {
    let (r, _) = counting(Flags::DYNAMIC);
    r.kill();
    r.wait_for_release();
    r.resurrect();
    assert_eq!(r.stats().mode, Mode::DynamicAtomic);
}

#[test]
fn stats_and_debug() {
    let (r, _) = counting(Flags::empty());
    let s = r.stats();
    assert_eq!((s.lives, s.releases, s.switches_to_percpu), (1, 0, 0));
    assert!(format!("{r:?}").contains("PercpuRef"));
}

#[test]
fn misuse_display_says_what_to_do() {
    for m in Misuse::ALL {
        let s = m.to_string();
        assert!(s.len() > 30, "{m:?}: {s}");
        assert!(refcnt::misuse::misuse_count(m) < usize::MAX);
    }
}

/// A release callback that records whether the kill's confirmation ran
/// before it, for the orderings Linux promises (confirm, then release).
fn confirm_then_release(flags: Flags) -> (PercpuRef<Host>, Arc<AtomicBool>, Arc<AtomicBool>) {
    let confirmed = Arc::new(AtomicBool::new(false));
    let ordered = Arc::new(AtomicBool::new(false));
    let (c, o) = (confirmed.clone(), ordered.clone());
    let r = PercpuRef::<Host>::new(move || o.store(c.load(SeqCst), SeqCst), flags).unwrap();
    take_reports();
    (r, confirmed, ordered)
}

#[test]
fn kill_confirm_runs_before_release_of_an_atomic_ref() {
    for flags in [Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let (r, confirmed, ordered) = confirm_then_release(flags);
        let c = confirmed.clone();
        // Hold the confirmation's grace period back until the kill has
        // dropped the initial reference.
        let section = Host::read_lock_sched();
        assert!(r.kill_and_confirm(move || c.store(true, SeqCst)));
        drop(section);
        r.wait_for_release();
        assert!(confirmed.load(SeqCst));
        assert!(
            ordered.load(SeqCst),
            "{flags:?}: release ran before the kill confirmation"
        );
        no_reports();
    }
}

#[test]
fn kill_confirm_runs_before_release_when_a_switch_is_in_flight() {
    let (r, confirmed, ordered) = confirm_then_release(Flags::empty());
    // Hold the switch's grace period back, so the kill surely finds it in
    // flight.
    let section = Host::read_lock_sched();
    r.switch_to_atomic(|| {});
    assert!(r.stats().switching);
    let c = confirmed.clone();
    assert!(r.kill_and_confirm(move || c.store(true, SeqCst)));
    drop(section);
    r.wait_for_release();
    assert!(
        ordered.load(SeqCst),
        "release ran before the kill confirmation"
    );
    no_reports();
}

#[test]
fn switch_to_atomic_confirm_runs_before_a_release_it_enables() {
    // An atomic ref whose last reference goes while the confirmation of a
    // further switch_to_atomic is pending: confirm still comes first.
    let (r, confirmed, ordered) = confirm_then_release(Flags::empty());
    let section = Host::read_lock_sched();
    let c = confirmed.clone();
    r.switch_to_atomic(move || c.store(true, SeqCst));
    assert!(r.kill());
    drop(section);
    r.wait_for_release();
    assert!(ordered.load(SeqCst), "release ran before the confirmation");
    no_reports();
}

#[test]
fn switch_to_percpu_on_a_dying_ref_takes_effect_at_resurrect() {
    let (r, n) = counting(Flags::INIT_ATOMIC);
    r.get_many(1);
    r.kill();
    r.switch_to_percpu();
    no_reports();
    assert_eq!(r.stats().mode, Mode::Atomic);
    assert!(r.is_dying());
    r.put();
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 1);
    assert!(r.resurrect());
    assert_eq!(r.stats().mode, Mode::PerCpu);
    r.kill();
    r.wait_for_release();
    assert_eq!(n.load(SeqCst), 2);
    no_reports();
}

#[test]
fn excess_put_in_percpu_mode_leaks_rather_than_releases() {
    // Two references held (the initial one and one get), four puts: the
    // per-CPU mode cannot tell which put was one too many, so the fold
    // reports it and the ref is never released (a holder it robbed may
    // still be using the object), as Linux's WARN-and-leak.
    let (r, n) = counting(Flags::empty());
    r.get_many(1);
    r.put_many(4);
    no_reports();
    // Synchronous, so the fold (and its report) runs on this thread.
    r.switch_to_atomic_sync();
    assert_eq!(take_reports(), [Misuse::Underflow]);
    r.kill();
    r.switch_to_atomic_sync();
    assert!(!r.is_zero());
    // Later puts neither release nor report again.
    r.put();
    no_reports();
    assert_eq!(n.load(SeqCst), 0);
}

#[test]
fn reports_made_on_a_worker_reach_the_ref() {
    // The kill's fold runs on the call_sched worker, so this thread's own
    // reports (host::take_reports) never see its Underflow; the ref's do.
    let (r, n) = counting(Flags::empty());
    r.get_many(1);
    r.put_many(4);
    r.kill();
    while r.stats().switching {
        std::thread::yield_now();
    }
    assert_eq!(r.take_reports(), [Misuse::Underflow]);
    assert!(r.take_reports().is_empty());
    no_reports();
    // Leaked, as the docs say: never released.
    assert!(!r.wait_for_release_timeout(Duration::from_millis(50)));
    assert_eq!(n.load(SeqCst), 0);
}

#[test]
fn wait_for_release_timeout_gives_up_then_sees_the_release() {
    let (r, n) = counting(Flags::empty());
    let r = Arc::new(r);
    let g = r.get_owned();
    r.kill();
    let t0 = std::time::Instant::now();
    assert!(!r.wait_for_release_timeout(Duration::from_millis(30)));
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert_eq!(n.load(SeqCst), 0);
    // The owned guard goes to another thread and is dropped there.
    std::thread::spawn(move || drop(g)).join().unwrap();
    assert!(r.wait_for_release_timeout(Duration::from_secs(10)));
    assert_eq!(n.load(SeqCst), 1);
    no_reports();
}

/// A switch back to per-CPU that lands in the grace-period callback (a
/// `switch_to_percpu` made while a switch to atomic was in flight) is
/// taken up by the fast paths: the first get after the landing may count
/// on the shared count (the handle's word still carries the flag, which
/// that slow path clears), every later one counts per-CPU.
#[test]
fn a_switch_back_that_lands_in_a_callback_reaches_the_fast_path() {
    let (r, released) = counting(Flags::empty());
    let (tx, rx) = mpsc::channel();
    {
        // Hold the flight in the air until the switch back is asked for.
        let _section = Host::read_lock_sched();
        r.switch_to_atomic(move || tx.send(()).unwrap());
        r.switch_to_percpu();
    }
    rx.recv().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.stats().mode != Mode::PerCpu {
        assert!(std::time::Instant::now() < deadline, "never landed per-CPU");
        std::thread::yield_now();
    }
    r.get_many(1);
    // A get on the shared count raises it by one; the landing's last step
    // (dropping the reference its flight held) may lower it meanwhile.
    for _ in 0..3 {
        let before = r.count_atomic();
        r.get_many(1);
        let after = r.count_atomic();
        r.put_many(1);
        assert!(after <= before, "a later get reached the shared count");
    }
    r.put_many(1);
    assert!(r.kill());
    r.wait_for_release();
    assert_eq!(released.load(SeqCst), 1);
    no_reports();
}

/// `MAX_REFS` references at once are counted exactly, in atomic mode, in
/// per-CPU mode, and across the switches between them: the ref releases
/// when, and only when, the last of them is put.
#[test]
fn max_refs_are_counted_exactly_in_both_modes() {
    use refcnt::percpu_ref::MAX_REFS;
    for flags in [Flags::INIT_ATOMIC, Flags::empty()] {
        let (r, released) = counting(flags);
        // The initial reference and MAX_REFS - 1 more.
        r.get_many(MAX_REFS - 1);
        r.switch_to_atomic_sync();
        assert_eq!(r.count_atomic(), MAX_REFS, "{flags:?}");
        r.switch_to_percpu();
        assert!(r.kill());
        r.put_many(MAX_REFS - 2);
        assert_eq!(
            released.load(SeqCst),
            0,
            "released with a reference held ({flags:?})"
        );
        r.put();
        assert!(r.wait_for_release_timeout(Duration::from_secs(5)));
        assert_eq!(released.load(SeqCst), 1, "{flags:?}");
        no_reports();
    }
}

/// `get_many(0)` and `put_many(0)` take and drop nothing, so they are never
/// misuse: not on a live ref in any mode, not on a dead one before or after
/// its release (they reported a get on zero and a second zero there).
/// After the release `tryget_many(0)` fails, as Linux's add-unless-zero
/// does on a count of zero.
#[test]
fn zero_count_calls_do_nothing_in_every_state() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let (r, n) = counting(flags);
        let zero_calls = |when: &str| {
            r.get_many(0);
            r.put_many(0);
            assert_eq!(r.take_reports(), [], "{flags:?}, {when}");
        };
        zero_calls("live");
        let g = r.get();
        r.kill();
        zero_calls("dying, one reference held");
        assert_eq!(n.load(SeqCst), 0, "{flags:?}: released under a holder");
        drop(g);
        r.wait_for_release();
        zero_calls("released");
        assert_eq!(n.load(SeqCst), 1, "{flags:?}: released again");
        assert!(
            !r.tryget_many(0),
            "{flags:?}: tryget_many(0) on a count of zero"
        );
        assert_eq!(r.count_atomic(), 0);
        assert!(r.is_zero());
    }
}

/// A dynamic ref's mode across lives follows its user's choice: switched
/// to per-CPU explicitly (while live, or while dead before a resurrect or
/// reinit) it comes back per-CPU; switched to atomic, atomic; never
/// switched, measuring its rate again. (Before, every dynamic ref came
/// back measuring, and with a rate it never reaches stayed atomic for
/// good although its user had asked for per-CPU.) Counts stay exact.
#[test]
fn a_dynamic_refs_explicit_mode_survives_kill_and_resurrect() {
    let dynamic = |flags: Flags| {
        let released = Arc::new(AtomicUsize::new(0));
        let rel = released.clone();
        // Rate 0: the ref never goes per-CPU by itself.
        let r = PercpuRef::<Host>::new_with_rate(
            move || {
                rel.fetch_add(1, SeqCst);
            },
            flags | Flags::DYNAMIC,
            0,
        )
        .unwrap();
        (r, released)
    };
    let next_life = |r: &PercpuRef<Host>, released: &AtomicUsize| {
        let before = released.load(SeqCst);
        r.kill();
        r.wait_for_release();
        assert_eq!(released.load(SeqCst), before + 1);
        assert!(r.resurrect());
    };
    // Switched while live.
    let (r, released) = dynamic(Flags::empty());
    r.switch_to_percpu();
    assert_eq!(r.stats().mode, Mode::PerCpu);
    next_life(&r, &released);
    assert_eq!(r.stats().mode, Mode::PerCpu, "switched while live");
    // Switched while dead, then resurrected.
    let (r, released) = dynamic(Flags::empty());
    r.kill();
    r.wait_for_release();
    r.switch_to_percpu();
    assert!(r.resurrect());
    assert_eq!(r.stats().mode, Mode::PerCpu, "switched while dead");
    let g = r.get();
    drop(g);
    next_life(&r, &released);
    assert_eq!(r.stats().mode, Mode::PerCpu);
    // Created dead, switched, then reinit.
    let (r, _) = dynamic(Flags::INIT_DEAD);
    r.switch_to_percpu();
    assert!(r.reinit());
    assert_eq!(r.stats().mode, Mode::PerCpu, "switched before reinit");
    // Switched to atomic: atomic in the next life, even after per-CPU.
    let (r, released) = dynamic(Flags::empty());
    r.switch_to_percpu();
    r.switch_to_atomic_sync();
    next_life(&r, &released);
    assert_eq!(r.stats().mode, Mode::Atomic);
    // Never switched: measuring again.
    let (r, released) = dynamic(Flags::empty());
    next_life(&r, &released);
    assert_eq!(r.stats().mode, Mode::DynamicAtomic);
    assert_eq!(take_reports(), []);
}
