//! An outside user's tests: refcnt::percpu_ref against Linux's percpu_ref
//! (include/linux/percpu-refcount.h, lib/percpu-refcount.c) and the
//! crate's own documentation. Tests are named q01..
//!
//! Written as black-box tests from Linux's documented semantics (the
//! headers and Documentation/ named above) by a user of the crate, beside
//! `linux_semantics.rs`. Not under Miri, for the same reason as that file:
//! their threads wait in real time.
#![cfg(all(feature = "std", not(loom), not(miri)))]
mod outside_common;
use outside_common::*;

use refcnt::percpu_ref::{Flags, Mode, OwnedRefGuard, PercpuRef};
use refcnt::{host::Host, Misuse};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

type R = PercpuRef<Host>;

fn counted(flags: Flags) -> (R, Counter) {
    let c = Counter::default();
    let c2 = c.clone();
    (R::new(move || c2.inc(), flags).unwrap(), c)
}

/// A ref shared between threads whose release counts into the counter.
fn shared_counted(flags: Flags) -> (Arc<R>, Arc<AtomicUsize>) {
    let released = Arc::new(AtomicUsize::new(0));
    let rel = released.clone();
    let r = R::new(
        move || {
            rel.fetch_add(1, SeqCst);
        },
        flags,
    )
    .unwrap();
    (Arc::new(r), released)
}

const MODES: [Flags; 3] = [Flags::INIT_ATOMIC, Flags::DYNAMIC, Flags::empty()];

// percpu_ref_tryget_many: "Increment a percpu refcount by @nr unless its
// count already reached zero". Counts must be exact afterwards.
#[test]
fn q01_tryget_many_counts_exact() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let (r, c) = counted(flags);
        assert!(r.tryget_many(5));
        assert!(r.tryget_many(1));
        r.switch_to_atomic_sync();
        assert_eq!(r.count_atomic(), 7, "{flags:?}");
        r.put_many(6);
        assert_eq!(r.count_atomic(), 1, "{flags:?}");
        assert!(r.kill());
        r.wait_for_release();
        assert_eq!(c.get(), 1);
        assert!(r.take_reports().is_empty());
    }
}

// tryget (not _live) succeeds on a dead ref while the count is non-zero,
// fails once it reached zero; the failure is not misuse.
#[test]
fn q02_tryget_many_after_kill_until_zero() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let (r, c) = counted(flags);
        let g = r.get();
        assert!(r.kill());
        assert!(
            r.tryget_many(3),
            "{flags:?}: tryget_many on dead ref with refs held"
        );
        assert!(r.tryget_live().is_none());
        r.put_many(3);
        drop(g);
        r.wait_for_release();
        assert_eq!(c.get(), 1);
        assert!(!r.tryget_many(3));
        assert!(!r.tryget_many(1));
        assert!(r.tryget().is_none());
        assert_eq!(
            r.count_atomic(),
            0,
            "{flags:?}: failed tryget changed the count"
        );
        assert!(r.take_reports().is_empty(), "{flags:?}");
        ms(10);
        assert_eq!(c.get(), 1);
    }
}

// percpu_ref_is_zero: false in percpu mode; true only when the count is zero.
#[test]
fn q03_is_zero_across_modes() {
    let (r, _c) = counted(Flags::empty());
    assert!(!r.is_zero());
    r.switch_to_atomic_sync();
    assert!(!r.is_zero(), "atomic with the initial ref");
    r.switch_to_percpu();
    let g = r.get();
    r.kill();
    assert!(!r.is_zero());
    ms(20);
    assert!(!r.is_zero(), "killed but a ref held");
    drop(g);
    r.wait_for_release();
    assert!(r.is_zero());
    assert!(r.resurrect());
    assert!(!r.is_zero(), "resurrected: one ref");
    let (r2, _c2) = counted(Flags::INIT_DEAD);
    assert!(r2.is_zero());
    let (r3, _c3) = counted(Flags::INIT_DEAD | Flags::INIT_ATOMIC);
    assert!(r3.is_zero());
    assert!(r3.reinit());
    assert!(!r3.is_zero());
}

// percpu_ref_is_dying: "Returns true if @ref is dying or dead"; set at
// once by kill (before the switch lands), cleared by resurrect/reinit.
#[test]
fn q04_is_dying_transitions() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let (r, _c) = counted(flags);
        assert!(!r.is_dying());
        let g = r.get();
        assert!(r.kill());
        assert!(r.is_dying(), "{flags:?}: kill must mark dying immediately");
        assert!(r.resurrect());
        assert!(!r.is_dying());
        assert!(r.kill());
        assert!(r.is_dying());
        drop(g);
        r.wait_for_release();
        assert!(r.is_dying());
        assert!(r.reinit());
        assert!(!r.is_dying());
        assert!(r.take_reports().is_empty(), "{flags:?}");
    }
}

// kill_and_confirm: "Confirm runs before the release that the kill may
// cause" -- also when the last put races the kill on another thread.
#[test]
fn q05_confirm_before_release_racing_last_put() {
    for flags in MODES {
        for _ in 0..60 {
            let confirmed = Arc::new(AtomicBool::new(false));
            let bad = Arc::new(AtomicBool::new(false));
            let released = Counter::default();
            let (c2, b2, rel2) = (confirmed.clone(), bad.clone(), released.clone());
            let r = Arc::new(
                R::new(
                    move || {
                        if !c2.load(SeqCst) {
                            b2.store(true, SeqCst);
                        }
                        rel2.inc();
                    },
                    flags,
                )
                .unwrap(),
            );
            let g = r.get_owned();
            let bar = Arc::new(Barrier::new(2));
            let b = bar.clone();
            let h = thread::spawn(move || {
                b.wait();
                drop(g);
            });
            let c3 = confirmed.clone();
            bar.wait();
            assert!(r.kill_and_confirm(move || c3.store(true, SeqCst)));
            h.join().unwrap();
            r.wait_for_release();
            assert!(!bad.load(SeqCst), "{flags:?}: release before confirm");
            assert_eq!(released.get(), 1);
        }
    }
}

// "A second kill drops `confirm` without running it": dropped, not leaked.
#[test]
fn q06_second_kill_and_confirm_drops_closure() {
    let (r, _c) = counted(Flags::empty());
    assert!(r.kill());
    let token = Arc::new(());
    let t = token.clone();
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = ran.clone();
    assert!(!r.kill_and_confirm(move || {
        let _t = t;
        ran2.store(true, SeqCst);
    }));
    assert_eq!(Arc::strong_count(&token), 1, "confirm closure leaked");
    r.wait_for_release();
    ms(20);
    assert!(!ran.load(SeqCst));
    assert_eq!(r.take_reports(), [Misuse::DoubleKill]);
}

// wait_for_release from several threads: all return, none before release.
#[test]
fn q07_wait_for_release_many_waiters() {
    let released = Arc::new(AtomicBool::new(false));
    let rel = released.clone();
    let r = Arc::new(R::new(move || rel.store(true, SeqCst), Flags::empty()).unwrap());
    let g = r.get_owned();
    r.kill();
    let mut hs = vec![];
    for _ in 0..4 {
        let (r, released) = (r.clone(), released.clone());
        hs.push(thread::spawn(move || {
            r.wait_for_release();
            assert!(released.load(SeqCst), "waiter returned before release");
        }));
    }
    ms(50);
    assert!(hs.iter().all(|h| !h.is_finished()));
    drop(g);
    for h in hs {
        h.join().unwrap();
    }
}

// A never-killed ref is never released: the timed wait times out, not early.
#[test]
fn q08_wait_for_release_timeout_live_ref() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let (r, c) = counted(flags);
        let t = Instant::now();
        assert!(!r.wait_for_release_timeout(Duration::from_millis(40)));
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(40),
            "{flags:?}: returned early: {e:?}"
        );
        assert!(e < Duration::from_secs(10), "{flags:?}: took {e:?}");
        assert_eq!(c.get(), 0);
    }
}

// "Returns at once on a ref that was created dead and never brought to
// life"; after reinit a new life begins and the wait waits for it.
#[test]
fn q09_wait_for_release_init_dead_then_reinit() {
    let (r, c) = counted(Flags::INIT_DEAD);
    let t = Instant::now();
    r.wait_for_release();
    // At once, not at the end of the timeout (a loaded host may stall the
    // thread, hence the wide margin).
    assert!(r.wait_for_release_timeout(Duration::from_secs(10)));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(r.reinit());
    assert!(!r.wait_for_release_timeout(Duration::from_millis(30)));
    r.kill();
    assert!(r.wait_for_release_timeout(Duration::from_secs(10)));
    assert_eq!(c.get(), 1);
}

// Dropping a live (never killed) handle runs no release; an owned guard
// that outlives every other handle still releases exactly once.
#[test]
fn q10_drop_handles() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let (r, c) = counted(flags);
        drop(r.get());
        drop(r);
        ms(20);
        assert_eq!(c.get(), 0, "{flags:?}: release ran on drop of a live ref");

        let (r, c) = counted(flags);
        let r = Arc::new(r);
        let g: OwnedRefGuard<Host> = r.get_owned();
        r.kill();
        drop(r);
        ms(20);
        assert_eq!(c.get(), 0);
        thread::spawn(move || drop(g)).join().unwrap();
        until("release", || c.get() == 1);
        ms(10);
        assert_eq!(c.get(), 1);
    }
}

// Dynamic ref going per-CPU under load while it is killed: one release,
// never while a holder still holds.
#[test]
fn q11_dynamic_hot_kill_race() {
    for round in 0..15 {
        let (r, released) = shared_counted(Flags::DYNAMIC);
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicBool::new(false));
        let mut hs = vec![];
        for _ in 0..3 {
            let (r, stop, bad, released) = (r.clone(), stop.clone(), bad.clone(), released.clone());
            let keep = r.get_owned();
            hs.push(thread::spawn(move || {
                while !stop.load(SeqCst) {
                    for _ in 0..200 {
                        let _g = r.get();
                    }
                    if let Some(_g) = r.tryget() {
                        if released.load(SeqCst) != 0 {
                            bad.store(true, SeqCst);
                        }
                    }
                }
                if released.load(SeqCst) != 0 {
                    bad.store(true, SeqCst);
                }
                drop(keep);
            }));
        }
        ms(round % 4);
        r.kill();
        ms(5);
        stop.store(true, SeqCst);
        for h in hs {
            h.join().unwrap();
        }
        r.wait_for_release();
        ms(2);
        let rep = r.take_reports();
        assert!(
            !bad.load(SeqCst),
            "round {round}: release under a holder; released={} reports={rep:?} stats={:?}",
            released.load(SeqCst),
            r.stats()
        );
        assert_eq!(released.load(SeqCst), 1, "round {round}");
        let rep = r.take_reports();
        assert!(rep.is_empty(), "{rep:?}");
    }
}

// After resurrect returns, tryget_live succeeds on every thread.
#[test]
fn q12_resurrect_visible_to_other_threads() {
    let (r, c) = counted(Flags::empty());
    let r = Arc::new(r);
    r.kill();
    r.wait_for_release();
    assert!(r.resurrect());
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let r = r.clone();
            thread::spawn(move || {
                let g = r.tryget_live_owned();
                assert!(g.is_some(), "tryget_live failed after resurrect");
                assert!(!r.is_dying());
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    r.kill();
    r.wait_for_release();
    assert_eq!(c.get(), 2);
    assert_eq!(r.stats().releases, 2);
}

// Host CPU slots are reused by later threads (at most 64 at once): refs
// taken on threads that have exited must still be counted.
#[test]
fn q13_refs_survive_thread_slot_reuse() {
    let (r, c) = counted(Flags::empty());
    let r = Arc::new(r);
    for _ in 0..100 {
        let r = r.clone();
        thread::spawn(move || r.get().leak()).join().unwrap();
    }
    // Puts on other short-lived threads, half now.
    for _ in 0..50 {
        let r = r.clone();
        thread::spawn(move || r.put()).join().unwrap();
    }
    r.switch_to_atomic_sync();
    assert_eq!(r.count_atomic(), 51);
    r.switch_to_percpu();
    for _ in 0..50 {
        let r = r.clone();
        thread::spawn(move || r.put()).join().unwrap();
    }
    r.kill();
    assert!(
        r.wait_for_release_timeout(Duration::from_secs(10)),
        "lost count across slot reuse"
    );
    assert_eq!(c.get(), 1);
    assert!(r.take_reports().is_empty());
}

// Send/Sync: handles and owned guards may be shared and moved.
#[test]
fn q14_send_sync() {
    fn ss<T: Send + Sync>() {}
    fn s<T: Send>() {}
    ss::<R>();
    s::<OwnedRefGuard<Host>>();
    ss::<refcnt::srcu::Srcu<Host>>();
    ss::<refcnt::srcu::SrcuPtr<String, Host>>();
    ss::<refcnt::kref::Kref>();
}

// After exit every get/put/tryget reports GetAfterExit, nothing releases.
#[test]
fn q15_ops_after_exit_reported() {
    let (mut r, c) = counted(Flags::empty());
    r.kill();
    r.wait_for_release();
    r.exit();
    r.take_reports();
    assert!(r.tryget().is_none());
    assert!(r.tryget_live().is_none());
    assert!(!r.tryget_many(2));
    drop(r.get());
    r.put();
    let rep = r.take_reports();
    assert!(
        !rep.is_empty() && rep.iter().all(|m| *m == Misuse::GetAfterExit),
        "{rep:?}"
    );
    assert_eq!(c.get(), 1);
    assert_eq!(r.stats().mode, Mode::Exited);
    assert_eq!(r.stats().releases, 1);
}

// Many threads ask for switches to atomic (with confirms) while others
// switch back to per-CPU: every confirm runs exactly once; counts exact.
#[test]
fn q16_concurrent_switch_confirms() {
    let (r, c) = counted(Flags::empty());
    let r = Arc::new(r);
    let confirms = Arc::new(AtomicUsize::new(0));
    let mut hs = vec![];
    for t in 0..4 {
        let (r, confirms) = (r.clone(), confirms.clone());
        hs.push(thread::spawn(move || {
            for i in 0..50 {
                let _g = r.get();
                if (t + i) % 3 == 0 {
                    r.switch_to_percpu();
                } else {
                    let c = confirms.clone();
                    r.switch_to_atomic(move || {
                        c.fetch_add(1, SeqCst);
                    });
                }
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    let expect = (0..4)
        .map(|t| (0..50).filter(|i| (t + i) % 3 != 0).count())
        .sum::<usize>();
    until("all confirms", || confirms.load(SeqCst) == expect);
    r.switch_to_atomic_sync();
    assert_eq!(r.count_atomic(), 1);
    ms(20);
    assert_eq!(confirms.load(SeqCst), expect);
    r.kill();
    r.wait_for_release();
    assert_eq!(c.get(), 1);
    assert!(r.take_reports().is_empty());
}

// A release may put another ref (chained teardown, as blk-mq does).
#[test]
fn q17_release_puts_another_ref() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC] {
        let (b, cb) = counted(flags);
        let b = Arc::new(b);
        b.get().leak();
        b.kill();
        let b2 = b.clone();
        let a = R::new(move || b2.put(), flags).unwrap();
        a.kill();
        a.wait_for_release();
        b.wait_for_release();
        assert_eq!(cb.get(), 1, "{flags:?}");
        assert!(b.take_reports().is_empty());
    }
}

// tryget racing the final put of a killed ref: a tryget that succeeds
// does so before release (count was non-zero); none after it.
#[test]
fn q18_tryget_races_final_put() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC] {
        for _ in 0..30 {
            let (r, released) = shared_counted(flags);
            let bad = Arc::new(AtomicBool::new(false));
            let start = Arc::new(Barrier::new(3));
            let mut hs = vec![];
            for _ in 0..2 {
                let (r, bad, released, start) =
                    (r.clone(), bad.clone(), released.clone(), start.clone());
                hs.push(thread::spawn(move || {
                    start.wait();
                    let t = Instant::now();
                    while released.load(SeqCst) == 0 && t.elapsed() < Duration::from_secs(1) {
                        if let Some(g) = r.tryget() {
                            if released.load(SeqCst) != 0 {
                                bad.store(true, SeqCst);
                            }
                            drop(g);
                        }
                    }
                }));
            }
            start.wait();
            r.kill();
            for h in hs {
                h.join().unwrap();
            }
            r.wait_for_release();
            assert!(
                !bad.load(SeqCst),
                "{flags:?}: tryget succeeded after release"
            );
            assert_eq!(released.load(SeqCst), 1);
            assert!(r.take_reports().is_empty(), "{:?}", r.take_reports());
        }
    }
}

// kill while another thread is inside switch_to_atomic_sync: both return,
// sync's count is exact, one release.
#[test]
fn q19_kill_during_switch_to_atomic_sync() {
    for _ in 0..20 {
        let (r, c) = counted(Flags::empty());
        let r = Arc::new(r);
        let g = r.get_owned();
        let r2 = r.clone();
        let h = thread::spawn(move || {
            r2.switch_to_atomic_sync();
            let n = r2.count_atomic();
            assert!(n == 1 || n == 2, "count after sync: {n}");
        });
        r.kill();
        h.join().unwrap();
        assert_eq!(r.count_atomic(), 1);
        drop(g);
        r.wait_for_release();
        assert_eq!(c.get(), 1);
    }
}

// get_many(0)/put_many(0)/tryget_many(0) change nothing and report nothing.
#[test]
fn q20_zero_counts_are_noops() {
    let (r, c) = counted(Flags::INIT_ATOMIC);
    r.get_many(0);
    r.put_many(0);
    assert!(r.tryget_many(0));
    assert_eq!(r.count_atomic(), 1);
    let rep = r.take_reports();
    assert!(rep.is_empty(), "{rep:?}");
    r.kill();
    r.wait_for_release();
    let rep = r.take_reports();
    assert!(rep.is_empty(), "{rep:?}");
    assert_eq!(c.get(), 1);
}

// Release sees the ref dead and at zero from inside, and a killed ref's
// release may resurrect-free inspection: stats.releases counts it after.
#[test]
fn q21_percpu_put_on_other_thread_than_get() {
    // Refs taken on one thread, put on another, in per-CPU mode; with
    // switches in between: no spurious underflow, exact count.
    let (r, c) = counted(Flags::empty());
    let r = Arc::new(r);
    let (tx, rx) = std::sync::mpsc::channel::<OwnedRefGuard<Host>>();
    let r2 = r.clone();
    let producer = thread::spawn(move || {
        for i in 0..2000 {
            tx.send(r2.get_owned()).unwrap();
            if i % 500 == 0 {
                r2.switch_to_atomic_sync();
                r2.switch_to_percpu();
            }
        }
    });
    let consumer = thread::spawn(move || {
        for g in rx {
            drop(g);
        }
    });
    producer.join().unwrap();
    consumer.join().unwrap();
    r.switch_to_atomic_sync();
    assert_eq!(r.count_atomic(), 1);
    r.kill();
    r.wait_for_release();
    assert_eq!(c.get(), 1);
    assert!(r.take_reports().is_empty(), "{:?}", r.take_reports());
}

// kill_and_confirm: "once the confirmation has run, tryget_live fails on
// every CPU" -- stress with threads hammering tryget_live, all modes.
#[test]
fn q22_tryget_live_after_confirm_stress() {
    for flags in MODES {
        for _ in 0..20 {
            let (r, c) = counted(flags);
            let r = Arc::new(r);
            let confirmed = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let bad = Arc::new(AtomicUsize::new(0));
            let bar = Arc::new(Barrier::new(3));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let (r, confirmed, stop, bad, bar) = (
                        r.clone(),
                        confirmed.clone(),
                        stop.clone(),
                        bad.clone(),
                        bar.clone(),
                    );
                    thread::spawn(move || {
                        bar.wait();
                        while !stop.load(SeqCst) {
                            let was = confirmed.load(SeqCst);
                            if let Some(g) = r.tryget_live() {
                                if was {
                                    bad.fetch_add(1, SeqCst);
                                }
                                drop(g);
                            }
                        }
                    })
                })
                .collect();
            bar.wait();
            let cf = confirmed.clone();
            r.kill_and_confirm(move || cf.store(true, SeqCst));
            until("confirm", || confirmed.load(SeqCst));
            ms(3);
            stop.store(true, SeqCst);
            for h in hs {
                h.join().unwrap();
            }
            r.wait_for_release();
            assert_eq!(
                bad.load(SeqCst),
                0,
                "{flags:?}: tryget_live succeeded after confirm"
            );
            assert_eq!(c.get(), 1);
        }
    }
}

// Kill/resurrect cycles while other threads take and drop live refs: no
// release ever runs while a reference is held; one release per life that
// reached zero.
#[test]
fn q23_kill_resurrect_cycles_with_holders() {
    for flags in MODES {
        let (r, rel) = shared_counted(flags);
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (r, stop, bad, rel) = (r.clone(), stop.clone(), bad.clone(), rel.clone());
                thread::spawn(move || {
                    while !stop.load(SeqCst) {
                        if let Some(g) = r.tryget_live() {
                            let r0 = rel.load(SeqCst);
                            for _ in 0..50 {
                                std::hint::spin_loop();
                            }
                            if rel.load(SeqCst) != r0 {
                                bad.fetch_add(1, SeqCst);
                            }
                            drop(g);
                        }
                    }
                })
            })
            .collect();
        for _ in 0..100 {
            assert!(r.kill());
            if rel.load(SeqCst) % 2 == 0 {
                thread::yield_now();
            }
            assert!(r.resurrect());
        }
        stop.store(true, SeqCst);
        for h in hs {
            h.join().unwrap();
        }
        r.kill();
        r.wait_for_release();
        ms(5);
        let s = r.stats();
        assert_eq!(
            bad.load(SeqCst),
            0,
            "{flags:?}: release while a ref was held"
        );
        assert_eq!(s.releases, rel.load(SeqCst));
        assert_eq!(s.releases, s.lives, "{flags:?}: {s:?}");
        assert!(
            r.take_reports().is_empty(),
            "{flags:?}: {:?}",
            r.take_reports()
        );
    }
}

// resurrect during a running release "waits ... for the last put's
// release to return"; the new life is separate.
#[test]
fn q24_resurrect_waits_for_running_release() {
    let in_release = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (i2, f2) = (in_release.clone(), finished.clone());
    let r = Arc::new(
        R::new(
            move || {
                i2.store(true, SeqCst);
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(60) {
                    std::hint::spin_loop();
                }
                f2.store(true, SeqCst);
            },
            Flags::INIT_ATOMIC,
        )
        .unwrap(),
    );
    let g = r.get_owned();
    r.kill();
    let h = thread::spawn(move || drop(g));
    until("release running", || in_release.load(SeqCst));
    assert!(r.resurrect());
    assert!(
        finished.load(SeqCst),
        "resurrect returned while release was running"
    );
    h.join().unwrap();
    let s = r.stats();
    assert_eq!((s.lives, s.releases), (2, 1));
    assert!(!r.is_dying() && !r.is_zero());
    assert!(!r.wait_for_release_timeout(Duration::from_millis(20)));
}

// The release callback may inspect its ref (Linux's release commonly
// reads the ref, e.g. percpu_ref_is_zero): stats(), is_zero(), is_dying(),
// count_atomic(), tryget() must not deadlock, whatever path releases
// (the final put, a kill in atomic mode, a switch landing).
#[test]
fn q25_release_may_inspect_ref() {
    use std::sync::{OnceLock, Weak};
    for flags in MODES {
        for path in 0..3 {
            let cell: Arc<OnceLock<Weak<R>>> = Arc::default();
            let (tx, rx) = std::sync::mpsc::channel();
            let c2 = cell.clone();
            let tx = std::sync::Mutex::new(tx);
            let r = Arc::new(
                R::new(
                    move || {
                        let r = c2.get().unwrap().upgrade().unwrap();
                        let s = r.stats();
                        let out = (
                            r.is_zero(),
                            r.is_dying(),
                            r.count_atomic(),
                            r.tryget().is_none(),
                            s.lives,
                        );
                        tx.lock().unwrap().send(out).unwrap();
                    },
                    flags,
                )
                .unwrap(),
            );
            cell.set(Arc::downgrade(&r)).unwrap();
            let r2 = r.clone();
            let h = thread::spawn(move || match path {
                0 => {
                    r2.kill();
                }
                1 => {
                    let g = r2.get();
                    r2.kill();
                    ms(5);
                    drop(g);
                }
                _ => {
                    r2.switch_to_atomic_sync();
                    r2.kill();
                }
            });
            let got = rx.recv_timeout(Duration::from_secs(10));
            assert!(
                got.is_ok(),
                "{flags:?} path {path}: release inspecting its ref hung"
            );
            h.join().unwrap();
            let (zero, dying, count, no_tryget, lives) = got.unwrap();
            assert!(zero && dying && no_tryget, "{flags:?} path {path}");
            assert_eq!((count, lives), (0, 1));
        }
    }
}

// wait_for_release_timeout with zero and huge timeouts.
#[test]
fn q26_wait_timeout_edges() {
    let (r, _c) = counted(Flags::empty());
    let t = Instant::now();
    assert!(!r.wait_for_release_timeout(Duration::ZERO));
    assert!(t.elapsed() < Duration::from_secs(5));
    r.kill();
    assert!(r.wait_for_release_timeout(Duration::MAX));
    assert!(r.wait_for_release_timeout(Duration::ZERO));
}
