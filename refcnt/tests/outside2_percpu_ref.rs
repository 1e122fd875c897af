//! A second outside user's tests: refcnt::percpu_ref against Linux's
//! percpu_ref (include/linux/percpu-refcount.h, lib/percpu-refcount.c
//! kerneldoc) and the crate's own documentation. Tests are named p01..
//!
//! Written as black-box tests from Linux's documented semantics (the
//! headers named above) by an outside user of the crate, beside
//! `linux_semantics.rs` and `outside_percpu_ref.rs`. Not under Miri, for
//! the same reason as those files: their threads wait in real time.
#![cfg(all(feature = "std", not(loom), not(miri)))]
mod outside_common;
use outside_common::*;

use refcnt::host::Host;
use refcnt::percpu_ref::{Flags, Mode, PercpuRef, DYNAMIC_BATCH};
use refcnt::{Backend, Misuse};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

/// A shared ref whose release counts into `rel`.
struct Counted {
    r: Arc<PercpuRef<Host>>,
    rel: Counter,
}
impl Counted {
    fn releases(&self) -> usize {
        self.rel.get()
    }
}

fn counted(flags: Flags) -> Counted {
    counted_rate(flags, None)
}

/// `rate`: a dynamic ref's get rate (gets per second) that counts as hot.
fn counted_rate(flags: Flags, rate: Option<u64>) -> Counted {
    let rel = Counter::default();
    let r2 = rel.clone();
    let f = move || r2.inc();
    let r = match rate {
        None => PercpuRef::<Host>::new(f, flags).unwrap(),
        Some(rate) => PercpuRef::<Host>::new_with_rate(f, flags, rate).unwrap(),
    };
    Counted {
        r: Arc::new(r),
        rel,
    }
}

/// Waits until no switch is in flight.
fn settle(r: &PercpuRef<Host>) {
    until("switch landed", || !r.stats().switching);
}

// ---- mode requests made while dying or dead --------------------------

/// Linux: "@ref will stay in atomic mode across kill/reinit cycles until
/// percpu_ref_switch_to_percpu() is called"; the crate: resurrect comes
/// back "in the mode its user chose: atomic after switch_to_atomic". A
/// switch_to_atomic_sync made while dead (and released) must return, cause
/// no second release, and make the next life atomic.
#[test]
fn p01_forced_atomic_while_dead_sticks_through_resurrect() {
    let c = counted(Flags::empty());
    assert!(c.r.kill());
    c.r.wait_for_release();
    c.r.switch_to_atomic_sync();
    assert_eq!(c.releases(), 1);
    assert!(c.r.is_zero() && c.r.is_dying());
    assert!(c.r.resurrect());
    assert_eq!(
        c.r.stats().mode,
        Mode::Atomic,
        "forced atomic lost at resurrect"
    );
    assert_eq!(c.r.count_atomic(), 1);
    c.r.switch_to_percpu();
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases(), 2);
    assert_eq!(c.r.take_reports(), []);
}

/// Atomic then per-CPU asked while dead (references held): the last
/// request wins at resurrect; the switch's confirm runs exactly once.
#[test]
fn p02_atomic_then_percpu_while_dead_resurrects_percpu() {
    let c = counted(Flags::empty());
    let g = c.r.get_owned();
    c.r.kill();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    c.r.switch_to_atomic(move || {
        n2.fetch_add(1, SeqCst);
    });
    c.r.switch_to_percpu();
    until("confirm", || n.load(SeqCst) == 1);
    settle(&c.r);
    assert_eq!(c.r.stats().mode, Mode::Atomic, "a dead ref stays atomic");
    assert_eq!(c.releases(), 0);
    drop(g);
    c.r.wait_for_release();
    assert!(c.r.resurrect());
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    assert_eq!(n.load(SeqCst), 1, "confirm ran more than once");
    assert_eq!(c.r.take_reports(), []);
}

/// Per-CPU then atomic asked while dead: resurrect comes back atomic.
#[test]
fn p03_percpu_then_atomic_while_dead_resurrects_atomic() {
    let c = counted(Flags::INIT_ATOMIC);
    c.r.kill();
    c.r.switch_to_percpu();
    c.r.switch_to_atomic_sync();
    assert!(c.r.resurrect());
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    c.r.kill();
    assert_eq!(c.releases(), 2);
    assert_eq!(c.r.take_reports(), []);
}

/// switch_to_atomic with a confirm on a dead, released ref: the confirm
/// runs exactly once and nothing is released again or reported.
#[test]
fn p04_confirm_on_released_ref_runs_once_without_second_release() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let c = counted(flags);
        c.r.kill();
        c.r.wait_for_release();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        c.r.switch_to_atomic(move || {
            n2.fetch_add(1, SeqCst);
        });
        until("confirm", || n.load(SeqCst) == 1);
        settle(&c.r);
        assert_eq!(n.load(SeqCst), 1, "{flags:?}");
        assert_eq!(c.releases(), 1, "{flags:?}: released twice");
        assert_eq!(c.r.stats().releases, 1, "{flags:?}");
        assert!(c.r.is_zero(), "{flags:?}");
        assert_eq!(c.r.take_reports(), [], "{flags:?}");
    }
}

/// switch_to_atomic on a ref already atomic: confirm runs exactly once,
/// the count is untouched.
#[test]
fn p05_confirm_when_already_atomic_runs_once() {
    let c = counted(Flags::INIT_ATOMIC);
    c.r.get_many(2);
    let n = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let n2 = n.clone();
        c.r.switch_to_atomic(move || {
            n2.fetch_add(1, SeqCst);
        });
    }
    until("confirms", || n.load(SeqCst) == 3);
    settle(&c.r);
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    assert_eq!(c.r.count_atomic(), 3);
    c.r.put_many(2);
    c.r.kill();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}

/// INIT_DEAD, then switch_to_atomic_sync: returns, nothing released or
/// reported; reinit then starts atomic (the request is sticky).
#[test]
fn p06_switch_to_atomic_sync_on_init_dead_then_reinit_is_atomic() {
    let c = counted(Flags::INIT_DEAD);
    within("switch_to_atomic_sync on INIT_DEAD", {
        let r = c.r.clone();
        move || r.switch_to_atomic_sync()
    });
    assert!(c.r.is_zero() && c.r.is_dying());
    assert_eq!(c.releases(), 0);
    assert!(c.r.reinit());
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    assert_eq!(c.r.count_atomic(), 1);
    c.r.kill();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}

/// INIT_DEAD, switch_to_percpu while dead: takes effect at reinit.
#[test]
fn p07_init_dead_atomic_switch_to_percpu_takes_effect_at_reinit() {
    let c = counted(Flags::INIT_DEAD | Flags::INIT_ATOMIC);
    c.r.switch_to_percpu();
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    assert!(c.r.is_dying());
    assert!(c.r.reinit());
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}

// ---- dynamic mode --------------------------------------------------------

/// switch_to_atomic "keeps it there until switch_to_percpu": a dynamic ref
/// forced atomic must not go per-CPU by itself however hot it gets.
#[test]
fn p08_dynamic_forced_atomic_stays_atomic_when_hot() {
    let c = counted_rate(Flags::DYNAMIC, Some(1));
    c.r.switch_to_atomic_sync();
    for _ in 0..8 * DYNAMIC_BATCH {
        drop(c.r.get());
    }
    let s = c.r.stats();
    assert_eq!(
        s.mode,
        Mode::Atomic,
        "forced-atomic dynamic ref switched itself"
    );
    assert_eq!(s.switches_to_percpu, 0);
    c.r.switch_to_percpu();
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    assert_eq!(c.r.take_reports(), []);
}

/// Flags::INIT_ATOMIC: "Start in atomic mode and stay there until
/// switch_to_percpu", also when combined with DYNAMIC.
#[test]
fn p09_dynamic_init_atomic_stays_atomic_when_hot() {
    let c = counted_rate(Flags::DYNAMIC | Flags::INIT_ATOMIC, Some(1));
    for _ in 0..8 * DYNAMIC_BATCH {
        drop(c.r.get());
    }
    let s = c.r.stats();
    assert_eq!(
        s.switches_to_percpu, 0,
        "INIT_ATOMIC ref switched itself: {s:?}"
    );
    assert_ne!(s.mode, Mode::PerCpu);
}

/// A hot dynamic ref forced atomic, killed and resurrected: comes back
/// atomic (forced), and stays so under hot gets.
#[test]
fn p11_dynamic_forced_atomic_survives_kill_resurrect() {
    let c = counted_rate(Flags::DYNAMIC, Some(1));
    for _ in 0..4 * DYNAMIC_BATCH {
        drop(c.r.get());
    }
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    c.r.switch_to_atomic_sync();
    c.r.kill();
    c.r.wait_for_release();
    assert!(c.r.resurrect());
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    for _ in 0..4 * DYNAMIC_BATCH {
        drop(c.r.get());
    }
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    assert_eq!(c.r.take_reports(), []);
}

/// INIT_DEAD | DYNAMIC: reinit brings it back measuring, without counters.
#[test]
fn p12_init_dead_dynamic_reinit_measures() {
    let c = counted(Flags::INIT_DEAD | Flags::DYNAMIC);
    assert!(c.r.reinit());
    let s = c.r.stats();
    assert_eq!((s.mode, s.percpu), (Mode::DynamicAtomic, false));
    c.r.kill();
    assert_eq!(c.releases(), 1);
}

// ---- counts across kill / resurrect / switches ---------------------------

#[test]
fn p13_counts_exact_across_kill_resurrect_in_percpu_mode() {
    let c = counted(Flags::empty());
    c.r.get_many(3);
    c.r.kill();
    assert!(c.r.resurrect());
    c.r.switch_to_atomic_sync();
    assert_eq!(c.r.count_atomic(), 4);
    c.r.switch_to_percpu();
    c.r.put_many(3);
    c.r.switch_to_atomic_sync();
    assert_eq!(c.r.count_atomic(), 1);
    assert!(!c.r.is_zero());
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}

/// Puts and gets made while the kill's grace period is held up are
/// counted; release waits for the last of them.
#[test]
fn p14_counts_during_kill_flight() {
    let c = counted(Flags::empty());
    c.r.get_many(5);
    let section = Host::read_lock_sched();
    assert!(c.r.kill());
    c.r.put_many(2);
    assert!(c.r.tryget_many(4));
    assert!(c.r.tryget_live().is_none());
    c.r.put_many(1);
    drop(section);
    settle(&c.r);
    assert_eq!(c.r.count_atomic(), 6);
    assert_eq!(c.releases(), 0);
    c.r.put_many(6);
    assert_eq!(c.releases(), 1);
    assert!(c.r.is_zero());
    assert_eq!(c.r.take_reports(), []);
}

/// tryget during the kill's grace period of a ref whose only reference was
/// the initial one: the count is not known to be zero yet, so it may
/// succeed (Linux's does); if it did, release waits for that reference.
#[test]
fn p15_tryget_during_kill_grace_period() {
    for _ in 0..20 {
        let c = counted(Flags::empty());
        let section = Host::read_lock_sched();
        c.r.kill();
        assert!(!c.r.is_zero(), "zero before the grace period ended");
        let t = c.r.tryget();
        drop(section);
        match t {
            Some(g) => {
                settle(&c.r);
                assert_eq!(c.releases(), 0, "released under a tryget's reference");
                assert!(!c.r.is_zero());
                drop(g);
                assert_eq!(c.releases(), 1);
            }
            None => c.r.wait_for_release(),
        }
        assert_eq!(c.releases(), 1);
        assert_eq!(c.r.take_reports(), []);
    }
}

/// get_many / put_many spread over threads and interleaved with switches.
#[test]
fn p16_get_many_put_many_across_switches_and_threads() {
    let c = counted(Flags::empty());
    let stop = Arc::new(AtomicBool::new(false));
    let switcher = {
        let (r, stop) = (c.r.clone(), stop.clone());
        thread::spawn(move || {
            let mut i = 0;
            while !stop.load(SeqCst) {
                if i % 2 == 0 {
                    r.switch_to_atomic_sync();
                } else {
                    r.switch_to_percpu();
                }
                i += 1;
                thread::yield_now();
            }
            r.switch_to_percpu();
        })
    };
    let hs: Vec<_> = (0..3)
        .map(|t| {
            let r = c.r.clone();
            thread::spawn(move || {
                for i in 0..3000usize {
                    let n = 1 + (i + t) % 7;
                    r.get_many(n);
                    if i % 3 == 0 {
                        assert!(r.tryget_many(2));
                        r.put_many(2);
                    }
                    r.put_many(n);
                }
                // leave 5 references for the main thread to put
                r.get_many(5);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    stop.store(true, SeqCst);
    switcher.join().unwrap();
    c.r.switch_to_atomic_sync();
    assert_eq!(c.r.count_atomic(), 1 + 15);
    c.r.switch_to_percpu();
    c.r.kill();
    c.r.put_many(15);
    c.r.wait_for_release();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}

#[test]
fn p17_tryget_many_on_dying_ref_with_references() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC] {
        let c = counted(flags);
        let g = c.r.get_owned();
        c.r.kill();
        settle(&c.r);
        assert!(c.r.tryget_many(3), "{flags:?}");
        assert!(c.r.tryget_live().is_none());
        assert!(c.r.tryget_owned().is_some());
        assert_eq!(c.r.count_atomic(), 4);
        c.r.put_many(3);
        assert_eq!(c.releases(), 0);
        drop(g);
        assert_eq!(c.releases(), 1);
        assert!(!c.r.tryget_many(1));
        assert!(c.r.tryget_owned().is_none());
        assert_eq!(c.r.take_reports(), []);
    }
}

// ---- confirm / release ordering and context ------------------------------

/// kill_and_confirm: the confirm runs once every CPU sees the ref dead;
/// it needs a grace period, so it cannot have run while the caller holds
/// one up. Exactly once, before release, also when the count is already
/// zero at kill (INIT_ATOMIC with no other reference).
#[test]
fn p18_confirm_waits_for_grace_period_and_precedes_release() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC, Flags::DYNAMIC] {
        let log = Log::default();
        let l2 = log.clone();
        let r = PercpuRef::<Host>::new(move || l2.push("release"), flags).unwrap();
        let section = Host::read_lock_sched();
        let l3 = log.clone();
        assert!(r.kill_and_confirm(move || l3.push("confirm")));
        // The test holds the grace period up: the confirm cannot run yet.
        let early = stays_false(30, || log.get().contains(&"confirm"));
        drop(section);
        assert!(
            early,
            "{flags:?}: confirm ran before the grace period: {:?}",
            log.get()
        );
        r.wait_for_release();
        until("confirm", || log.get().len() == 2);
        assert_eq!(log.get(), ["confirm", "release"], "{flags:?}");
        assert_eq!(r.take_reports(), []);
    }
}

/// The release callback runs inside an rcu-sched read-side section (crate
/// docs, "as in Linux"): a synchronize_sched started from inside it cannot
/// end before it returns. Checked for a last put in atomic mode (caller's
/// thread) and for a release from the kill's fold (per-CPU mode).
#[test]
fn p19_release_runs_inside_a_sched_section() {
    for flags in [Flags::INIT_ATOMIC, Flags::empty()] {
        let gp_done = Arc::new(AtomicBool::new(false));
        let seen_early = Arc::new(Mutex::new(None));
        let (gd, se) = (gp_done.clone(), seen_early.clone());
        let r = PercpuRef::<Host>::new(
            move || {
                let gd2 = gd.clone();
                let (started_tx, started_rx) = mpsc::channel();
                thread::spawn(move || {
                    started_tx.send(()).unwrap();
                    Host::synchronize_sched();
                    gd2.store(true, SeqCst);
                });
                started_rx.recv().unwrap();
                // Release has not returned: the grace period cannot end yet.
                *se.lock().unwrap() = Some(stays_false(50, || gd.load(SeqCst)));
            },
            flags,
        )
        .unwrap();
        r.kill();
        r.wait_for_release();
        assert_eq!(
            *seen_early.lock().unwrap(),
            Some(true),
            "{flags:?}: a grace period ended while release was running"
        );
        until("grace period after release", || gp_done.load(SeqCst));
    }
}

// ---- reinit / resurrect preconditions -------------------------------------

/// percpu_ref_reinit needs a count of zero; on a live ref (which holds its
/// initial reference) it is refused with ReinitNonZero and changes nothing.
#[test]
fn p21_reinit_on_live_ref_refused() {
    let c = counted(Flags::ALLOW_REINIT);
    assert!(!c.r.reinit());
    assert_eq!(c.r.take_reports(), [Misuse::ReinitNonZero]);
    assert!(!c.r.is_dying());
    assert_eq!(c.r.stats().lives, 1);
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases(), 1);
}

/// During the kill's grace period the count is not yet known to be zero
/// (the per-CPU counts are not folded): reinit "refuses unless is_zero",
/// reporting ReinitNonZero, and the ref stays dead; allowed once the
/// release has run.
#[test]
fn p22_reinit_during_kill_grace_period() {
    let c = counted(Flags::ALLOW_REINIT);
    let section = Host::read_lock_sched();
    c.r.kill();
    assert!(!c.r.is_zero());
    assert!(!c.r.reinit(), "reinit accepted before the kill's fold");
    drop(section);
    assert_eq!(c.r.take_reports(), [Misuse::ReinitNonZero]);
    assert!(c.r.is_dying());
    c.r.wait_for_release();
    assert_eq!(c.releases(), 1);
    assert!(c.r.reinit());
    assert!(c.r.tryget_live().is_some());
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases(), 2);
    assert_eq!(c.r.take_reports(), []);
}

/// Resurrect during the kill's grace period (references held): mode comes
/// back per-CPU once the flight lands; counts stay exact.
#[test]
fn p24_resurrect_during_flight_ends_percpu_with_exact_count() {
    let c = counted(Flags::empty());
    c.r.get_many(2);
    let section = Host::read_lock_sched();
    c.r.kill();
    assert!(c.r.resurrect());
    c.r.get_many(1);
    drop(section);
    settle(&c.r);
    until("per-CPU again", || {
        drop(c.r.get());
        c.r.stats().mode == Mode::PerCpu
    });
    c.r.switch_to_atomic_sync();
    assert_eq!(c.r.count_atomic(), 4);
    c.r.put_many(3);
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}

// ---- exit -----------------------------------------------------------------

/// exit "waits for a switch still in flight": a kill's grace period is
/// held by another thread (until the test lets it go) when exit is called.
#[test]
fn p25_exit_waits_for_a_kill_in_flight() {
    let rel = Counter::default();
    let r2 = rel.clone();
    let mut r = PercpuRef::<Host>::new(move || r2.inc(), Flags::empty()).unwrap();
    let (in_tx, in_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let s = Host::read_lock_sched();
        in_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        drop(s);
    });
    in_rx.recv().unwrap();
    r.kill();
    assert!(r.stats().switching, "the kill's switch is held up");
    let exiter = thread::spawn(move || {
        r.exit();
        r
    });
    assert!(
        stays_false(30, || exiter.is_finished()),
        "exit returned with the kill's switch in flight"
    );
    assert_eq!(rel.get(), 0);
    go_tx.send(()).unwrap();
    holder.join().unwrap();
    until("exit returns", || exiter.is_finished());
    let r = exiter.join().unwrap();
    assert_eq!(rel.get(), 1, "exit returned before the kill landed");
    let s = r.stats();
    assert_eq!(
        (s.mode, s.switching, s.percpu),
        (Mode::Exited, false, false)
    );
    assert!(r.is_zero());
}

/// exit of a live per-CPU ref with references: the fold keeps the count
/// (is_zero false), counters given back, no release.
#[test]
fn p26_exit_live_percpu_ref_keeps_count() {
    let rel = Counter::default();
    let r2 = rel.clone();
    let mut r = PercpuRef::<Host>::new(move || r2.inc(), Flags::empty()).unwrap();
    r.get_many(2);
    let r_ref = &r;
    thread::scope(|s| {
        s.spawn(|| r_ref.put_many(1));
    });
    r.exit();
    assert!(!r.is_zero());
    assert_eq!(r.count_atomic(), 2);
    assert!(!r.stats().percpu);
    assert_eq!(rel.get(), 0);
    assert_eq!(r.take_reports(), []);
}

// ---- statistics -------------------------------------------------------------

/// Switch counters count real switches only; no-op requests count nothing.
#[test]
fn p27_switch_statistics_count_real_switches() {
    let c = counted(Flags::INIT_ATOMIC);
    let s = c.r.stats();
    assert_eq!((s.switches_to_percpu, s.switches_to_atomic), (0, 0));
    c.r.switch_to_percpu();
    c.r.switch_to_percpu();
    let s = c.r.stats();
    assert_eq!((s.switches_to_percpu, s.switches_to_atomic), (1, 0));
    c.r.switch_to_atomic_sync();
    c.r.switch_to_atomic_sync();
    let s = c.r.stats();
    assert_eq!((s.switches_to_percpu, s.switches_to_atomic), (1, 1));
    c.r.kill();
    c.r.wait_for_release();
    let s = c.r.stats();
    assert_eq!((s.switches_to_percpu, s.switches_to_atomic), (1, 1));
    assert!(c.r.resurrect());
    let s = c.r.stats();
    assert_eq!(s.mode, Mode::Atomic);
    assert_eq!(
        (
            s.switches_to_percpu,
            s.switches_to_atomic,
            s.lives,
            s.releases
        ),
        (1, 1, 2, 1)
    );
}

/// Guards keep working after the ref changes modes under them: a guard
/// taken in per-CPU mode and dropped after kill + resurrect + forced
/// atomic still balances the count.
#[test]
fn p29_guards_outlive_mode_changes() {
    let c = counted(Flags::empty());
    let g1 = c.r.get();
    let g2 = c.r.tryget_live().unwrap();
    c.r.kill();
    let g3 = c.r.tryget().unwrap();
    assert!(c.r.resurrect());
    c.r.switch_to_atomic_sync();
    drop(g1);
    c.r.switch_to_percpu();
    drop(g2);
    c.r.switch_to_atomic_sync();
    drop(g3);
    assert_eq!(c.r.count_atomic(), 1);
    c.r.kill();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}

/// get on a released ref reports GetOnZero and never causes a second
/// release; the ref still resurrects cleanly afterwards.
#[test]
fn p30_get_on_zero_then_resurrect() {
    let c = counted(Flags::INIT_ATOMIC);
    c.r.kill();
    assert_eq!(c.releases(), 1);
    let g = c.r.get();
    drop(g);
    assert_eq!(c.releases(), 1);
    let rep = c.r.take_reports();
    assert!(rep.contains(&Misuse::GetOnZero), "{rep:?}");
    assert!(c.r.resurrect());
    c.r.kill();
    assert_eq!(c.releases(), 2);
}

// ---- more edges -------------------------------------------------------------

/// kill on an INIT_DEAD ref is a double kill; its confirm is dropped
/// without running.
#[test]
fn p34_kill_and_confirm_on_init_dead_drops_confirm() {
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let c = counted(Flags::INIT_DEAD);
    let (ran, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (r2, d) = (ran.clone(), OnDrop(dropped.clone()));
    assert!(!c.r.kill_and_confirm(move || {
        let _d = &d;
        r2.store(true, SeqCst);
    }));
    until("confirm dropped", || dropped.load(SeqCst));
    assert!(!ran.load(SeqCst));
    assert_eq!(c.r.take_reports(), [Misuse::DoubleKill]);
    assert_eq!(c.releases(), 0);
    assert!(c.r.resurrect());
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases(), 1);
}

/// The handle dropped while the kill's switch is in flight: the release
/// the kill made due still runs, once.
#[test]
fn p36_handle_dropped_during_kill_flight_still_releases() {
    let c = counted(Flags::empty());
    let section = Host::read_lock_sched();
    c.r.kill();
    let Counted { r, rel } = c;
    drop(r);
    drop(section);
    until("release after the handle was dropped", || rel.get() == 1);
}

/// Mode requests racing a kill's flight and a resurrect: the last request
/// decides the final mode; every confirm runs once.
#[test]
fn p38_requests_during_kill_flight_and_resurrect() {
    for want_atomic in [true, false] {
        let c = counted(Flags::empty());
        c.r.get_many(2);
        let n = Arc::new(AtomicUsize::new(0));
        let section = Host::read_lock_sched();
        c.r.kill();
        let n2 = n.clone();
        c.r.switch_to_atomic(move || {
            n2.fetch_add(1, SeqCst);
        });
        assert!(c.r.resurrect());
        if !want_atomic {
            c.r.switch_to_percpu();
        }
        drop(section);
        until("confirm", || n.load(SeqCst) == 1);
        settle(&c.r);
        let want = if want_atomic {
            Mode::Atomic
        } else {
            Mode::PerCpu
        };
        until("final mode", || {
            drop(c.r.get());
            c.r.stats().mode == want
        });
        c.r.switch_to_atomic_sync();
        assert_eq!(c.r.count_atomic(), 3, "want_atomic={want_atomic}");
        c.r.put_many(2);
        c.r.kill();
        c.r.wait_for_release();
        assert_eq!(c.releases(), 1);
        assert_eq!(n.load(SeqCst), 1);
        assert_eq!(c.r.take_reports(), []);
    }
}

/// DYNAMIC | INIT_ATOMIC starts atomic, not measuring.
#[test]
fn p39_dynamic_init_atomic_mode_is_atomic() {
    let c = counted(Flags::DYNAMIC | Flags::INIT_ATOMIC);
    assert_eq!(c.r.stats().mode, Mode::Atomic);
}

/// A dynamic ref that went per-CPU by itself (hot), killed and resurrected
/// while its references are held (the life goes on): whether it counts
/// per-CPU or measures again, no reference is lost or counted twice.
#[test]
fn p40_dynamic_hot_kill_resurrect_counts_exact() {
    let c = counted_rate(Flags::DYNAMIC, Some(1));
    for _ in 0..4 * DYNAMIC_BATCH {
        c.r.get().leak();
    }
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    c.r.kill();
    assert!(c.r.resurrect());
    settle(&c.r);
    let m = c.r.stats().mode;
    assert!(m == Mode::PerCpu || m == Mode::DynamicAtomic, "{m:?}");
    for _ in 0..4 * DYNAMIC_BATCH {
        c.r.get().leak();
    }
    c.r.switch_to_atomic_sync();
    assert_eq!(c.r.count_atomic(), 1 + 8 * DYNAMIC_BATCH);
    c.r.put_many(8 * DYNAMIC_BATCH);
    c.r.kill();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}

/// is_zero "Always false in per-CPU mode": also when every reference was
/// put before any kill.
#[test]
fn p41_is_zero_false_in_percpu_mode_even_if_sum_is_zero() {
    let c = counted(Flags::empty());
    let g = c.r.get();
    drop(g);
    c.r.put(); // the initial reference, without kill (misuse, but legal to ask)
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    assert!(!c.r.is_zero());
}

/// A hot (per-CPU) dynamic ref killed and resurrected while the kill's
/// grace period is held, with per-CPU references taken on other threads:
/// the count stays exact.
#[test]
fn p42_dynamic_percpu_resurrect_during_flight_counts_exact() {
    let c = counted_rate(Flags::DYNAMIC, Some(1));
    for _ in 0..4 * DYNAMIC_BATCH {
        drop(c.r.get());
    }
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let r = c.r.clone();
            thread::spawn(move || r.get_many(7))
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let section = Host::read_lock_sched();
    c.r.kill();
    assert!(c.r.resurrect());
    c.r.get_many(2);
    drop(section);
    settle(&c.r);
    for _ in 0..4 * DYNAMIC_BATCH {
        drop(c.r.get());
    }
    c.r.switch_to_atomic_sync();
    assert_eq!(c.r.count_atomic(), 1 + 21 + 2);
    c.r.put_many(23);
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases(), 1);
    assert_eq!(c.r.take_reports(), []);
}
