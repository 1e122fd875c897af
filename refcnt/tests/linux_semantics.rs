//! Tests of the crate against Linux's documented semantics of percpu_ref
//! (include/linux/percpu-refcount.h, lib/percpu-refcount.c), SRCU
//! (include/linux/srcu.h, Documentation/RCU/) and kref (include/linux/kref.h),
//! written from the point of view of an outside user. They aim at orderings
//! and edge cases the crate's own tests do not cover.
//!
//! Not under Miri: they run many threads that wait in real time (pauses,
//! spins with a 10 s limit), which Miri's interpreter turns into tens of
//! minutes; the crate's own host tests, which do run under Miri, take the
//! same code paths.
#![cfg(all(feature = "std", not(loom), not(miri)))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use refcnt::host::{take_reports, Host};
use refcnt::kref::Kref;
use refcnt::percpu_ref::{Flags, Mode, PercpuRef};
use refcnt::srcu::{Flavour, Srcu, SrcuError, SrcuPtr};
use refcnt::{Backend, Misuse};

mod outside_common;
use outside_common::{reader, recorded, spawn_sync, Record};

const FLAVOURS: [Flavour; 2] = [Flavour::Normal, Flavour::Fast];

/// Long enough for another thread to run into a wait, for the
/// "must not have happened yet" checks.
fn pause() {
    thread::sleep(Duration::from_millis(30));
}

/// Spins (yielding) until `f` holds; fails the test after 10 s instead of
/// hanging.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
        thread::yield_now();
    }
}

/// A ref whose release counts its runs and records the releasing thread.
struct Counted {
    r: Arc<PercpuRef<Host>>,
    releases: Arc<AtomicUsize>,
    release_thread: Arc<Mutex<Option<thread::ThreadId>>>,
}

fn counted(flags: Flags) -> Counted {
    let releases = Arc::new(AtomicUsize::new(0));
    let release_thread = Arc::new(Mutex::new(None));
    let (n, t) = (releases.clone(), release_thread.clone());
    let r = PercpuRef::<Host>::new(
        move || {
            n.fetch_add(1, SeqCst);
            *t.lock().unwrap() = Some(thread::current().id());
        },
        flags,
    )
    .unwrap();
    take_reports();
    Counted {
        r: Arc::new(r),
        releases,
        release_thread,
    }
}

/// Waits until no switch is in flight and the flight's own reference is
/// gone (the count is exactly `n`).
fn settle(r: &PercpuRef<Host>, n: usize) {
    until("switch to land", || {
        !r.stats().switching && r.count_atomic() == n
    });
}

// ---- percpu_ref ----------------------------------------------------------

/// percpu_ref_kill_and_confirm: when confirm runs, the ref is already seen
/// dying (percpu_ref_is_dying) and percpu_ref_tryget_live fails, while
/// percpu_ref_tryget still succeeds since references are held; release
/// comes only after the last put.
#[test]
fn confirm_sees_ref_dying_and_tryget_live_failing() {
    let c = counted(Flags::empty());
    let held = c.r.get_owned();
    let (tx, rx) = mpsc::channel();
    let r2 = c.r.clone();
    assert!(c.r.kill_and_confirm(move || {
        let live = r2.tryget_live().is_some();
        let any = r2.tryget().is_some();
        tx.send((r2.is_dying(), live, any)).unwrap();
    }));
    assert_eq!(rx.recv().unwrap(), (true, false, true));
    assert_eq!(c.releases.load(SeqCst), 0);
    drop(held);
    c.r.wait_for_release();
    assert_eq!(c.releases.load(SeqCst), 1);
    assert_eq!(take_reports(), []);
}

/// After a kill has been confirmed (the ref is atomic now), a thread that
/// still holds a reference can take more with percpu_ref_tryget on any CPU,
/// never with tryget_live; the release runs once, after the last put.
#[test]
fn tryget_after_confirmed_kill_from_other_threads() {
    let c = counted(Flags::empty());
    let held = c.r.get_owned();
    let (tx, rx) = mpsc::channel();
    c.r.kill_and_confirm(move || tx.send(()).unwrap());
    rx.recv().unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let r = c.r.clone();
            thread::spawn(move || {
                assert!(r.tryget_live().is_none());
                let g = r.tryget().expect("count > 0: tryget must succeed");
                drop(g);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(c.releases.load(SeqCst), 0, "released while referenced");
    drop(held);
    assert_eq!(c.releases.load(SeqCst), 1);
    assert!(c.r.is_zero());
    assert!(c.r.tryget().is_none(), "tryget at zero must fail");
}

/// The release callback runs in the context of the last put (the header:
/// "called when the refcount reaches zero"): when that put is made on
/// another thread after the kill landed, release runs on that thread.
#[test]
fn release_runs_in_context_of_last_put_on_other_thread() {
    let c = counted(Flags::empty());
    let held = c.r.get_owned();
    c.r.kill();
    settle(&c.r, 1);
    let t = thread::spawn(move || {
        drop(held);
        thread::current().id()
    });
    let putter = t.join().unwrap();
    assert_eq!(c.releases.load(SeqCst), 1);
    assert_eq!(*c.release_thread.lock().unwrap(), Some(putter));
}

/// A reference taken on one CPU may be dropped on another (the header:
/// the per-CPU counters are only meaningful as a sum): after
/// percpu_ref_switch_to_atomic_sync the count is exact.
#[test]
fn percpu_gets_and_puts_on_different_threads_sum_exactly() {
    let c = counted(Flags::empty());
    let r = c.r.clone();
    // Thread A takes 10, thread B drops 7 of them.
    thread::spawn(move || r.get_many(10)).join().unwrap();
    let r = c.r.clone();
    thread::spawn(move || r.put_many(7)).join().unwrap();
    c.r.switch_to_atomic_sync();
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    assert_eq!(c.r.count_atomic(), 1 + 3);
    assert!(!c.r.is_zero());
    c.r.put_many(3);
    assert!(c.r.kill());
    assert_eq!(c.releases.load(SeqCst), 1);
    assert_eq!(take_reports(), []);
}

/// Many threads getting and putting concurrently while the ref is killed:
/// the release runs exactly once, and only after the last reference is put.
#[test]
fn concurrent_get_put_then_kill_releases_once_after_last_put() {
    const THREADS: usize = 4;
    let c = counted(Flags::empty());
    let started = Arc::new(Barrier::new(THREADS + 1));
    let killed = Arc::new(Barrier::new(THREADS + 1));
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (r, started, killed, tx) =
                (c.r.clone(), started.clone(), killed.clone(), tx.clone());
            thread::spawn(move || {
                let last = r.get_owned();
                started.wait();
                for _ in 0..20_000 {
                    let g = r.tryget().expect("count > 0");
                    r.get().leak();
                    r.put();
                    drop(g);
                }
                killed.wait();
                // Wait for the main thread's go before the final put.
                rx_wait(&tx);
                drop(last);
            })
        })
        .collect();
    started.wait();
    assert!(c.r.kill());
    killed.wait();
    settle(&c.r, THREADS);
    assert_eq!(c.releases.load(SeqCst), 0, "released under held refs");
    for _ in 0..THREADS {
        rx.recv().unwrap().send(()).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
    c.r.wait_for_release();
    assert_eq!(c.releases.load(SeqCst), 1);
    assert!(c.r.is_zero());
}

/// Hands the main thread a sender and waits until it is used.
fn rx_wait(tx: &mpsc::Sender<mpsc::Sender<()>>) {
    let (go_tx, go_rx) = mpsc::channel();
    tx.send(go_tx).unwrap();
    go_rx.recv().unwrap();
}

/// Two threads racing to kill: exactly one wins, the other is reported as a
/// double kill (Linux WARNs "called more than once"), and only one
/// reference is dropped (release once, after the remaining holder puts).
#[test]
fn racing_kills_one_wins_other_reported() {
    let c = counted(Flags::empty());
    let held = c.r.get_owned();
    let go = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (r, go) = (c.r.clone(), go.clone());
            thread::spawn(move || {
                go.wait();
                r.kill()
            })
        })
        .collect();
    let wins: usize = handles
        .into_iter()
        .map(|h| usize::from(h.join().unwrap()))
        .sum();
    assert_eq!(wins, 1);
    assert_eq!(c.r.take_reports(), [Misuse::DoubleKill]);
    settle(&c.r, 1);
    assert_eq!(c.releases.load(SeqCst), 0);
    drop(held);
    assert_eq!(c.releases.load(SeqCst), 1);
}

/// A second kill_and_confirm is misuse: it must not crash and its confirm
/// is dropped unrun (the crate documents this), while the first one's
/// confirm runs.
#[test]
fn second_kill_and_confirm_drops_its_confirm() {
    let c = counted(Flags::empty());
    let (tx1, rx1) = mpsc::channel::<()>();
    let (tx2, rx2) = mpsc::channel::<()>();
    assert!(c.r.kill_and_confirm(move || tx1.send(()).unwrap()));
    assert!(!c.r.kill_and_confirm(move || tx2.send(()).unwrap()));
    assert_eq!(rx2.recv(), Err(mpsc::RecvError), "second confirm ran");
    rx1.recv().unwrap();
    c.r.wait_for_release();
    assert_eq!(c.releases.load(SeqCst), 1);
    assert_eq!(c.r.take_reports(), [Misuse::DoubleKill]);
}

/// An over-put in atomic mode that would take the count below zero is
/// reported and ignored as a whole: no reference held by others is lost and
/// nothing is released early.
#[test]
fn atomic_overput_is_ignored_while_references_remain() {
    let c = counted(Flags::INIT_ATOMIC);
    c.r.get_many(2);
    c.r.kill();
    assert_eq!(c.r.count_atomic(), 2);
    c.r.put_many(3);
    assert_eq!(take_reports(), [Misuse::Underflow]);
    assert_eq!(c.r.count_atomic(), 2);
    assert_eq!(c.releases.load(SeqCst), 0);
    c.r.put_many(2);
    assert_eq!(c.releases.load(SeqCst), 1);
}

/// PERCPU_REF_INIT_ATOMIC: the ref stays atomic until
/// percpu_ref_switch_to_percpu, also across kill and resurrect (Linux
/// keeps force_atomic), and the count is exact throughout.
#[test]
fn init_atomic_stays_atomic_across_resurrect() {
    let c = counted(Flags::INIT_ATOMIC);
    c.r.get_many(2);
    c.r.kill();
    assert!(c.r.resurrect());
    assert!(!c.r.is_dying());
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    assert_eq!(c.r.count_atomic(), 3);
    c.r.put_many(2);
    c.r.switch_to_percpu();
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases.load(SeqCst), 1);
    assert_eq!(take_reports(), []);
}

/// PERCPU_REF_INIT_DEAD: tryget and tryget_live fail, is_zero holds, no
/// release runs; percpu_ref_reinit brings it to life in the mode its flags
/// ask for (atomic with INIT_ATOMIC), and release runs once after kill.
#[test]
fn init_dead_atomic_reinit_is_atomic_and_live() {
    let c = counted(Flags::INIT_DEAD | Flags::INIT_ATOMIC);
    assert!(c.r.tryget().is_none());
    assert!(c.r.tryget_live().is_none());
    assert!(c.r.is_zero() && c.r.is_dying());
    assert!(c.r.reinit());
    assert_eq!(c.r.stats().mode, Mode::Atomic);
    assert_eq!(c.r.count_atomic(), 1);
    assert!(c.r.tryget_live().is_some());
    c.r.kill();
    assert_eq!(c.releases.load(SeqCst), 1);
    // A second life after reinit.
    assert!(c.r.reinit());
    c.r.kill();
    assert_eq!(c.releases.load(SeqCst), 2);
    assert_eq!(take_reports(), []);
}

/// percpu_ref_reinit requires the count to have reached zero; refused (and
/// reported) while the last reference is held on another thread, allowed
/// once it was put there.
#[test]
fn reinit_only_after_last_put_on_other_thread() {
    let c = counted(Flags::ALLOW_REINIT);
    let held = c.r.get_owned();
    c.r.kill();
    settle(&c.r, 1);
    assert!(!c.r.reinit());
    assert_eq!(c.r.take_reports(), [Misuse::ReinitNonZero]);
    assert!(c.r.is_dying(), "a refused reinit changes nothing");
    thread::spawn(move || drop(held)).join().unwrap();
    assert!(c.r.is_zero());
    assert!(c.r.reinit());
    assert!(!c.r.is_dying());
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    assert!(c.r.tryget_live().is_some());
    assert_eq!(c.releases.load(SeqCst), 1);
}

/// percpu_ref_resurrect on a killed ref whose references are still held
/// makes tryget_live succeed again, and no release runs for that life
/// until the next kill and last put.
#[test]
fn resurrect_while_held_restores_tryget_live() {
    let c = counted(Flags::empty());
    let held = c.r.get_owned();
    let (tx, rx) = mpsc::channel();
    c.r.kill_and_confirm(move || tx.send(()).unwrap());
    rx.recv().unwrap();
    assert!(c.r.tryget_live().is_none());
    assert!(c.r.resurrect());
    assert!(c.r.tryget_live().is_some());
    drop(held);
    until("switch to land", || !c.r.stats().switching);
    // Back in the mode it had before the kill.
    assert_eq!(c.r.stats().mode, Mode::PerCpu);
    assert_eq!(c.releases.load(SeqCst), 0);
    c.r.kill();
    c.r.wait_for_release();
    assert_eq!(c.releases.load(SeqCst), 1);
}

/// percpu_ref_is_zero is false in per-CPU mode whatever the count, and
/// after a sync switch to atomic it tells the exact truth.
#[test]
fn is_zero_after_switch_to_atomic_sync() {
    let c = counted(Flags::empty());
    assert!(!c.r.is_zero());
    c.r.switch_to_atomic_sync();
    assert!(!c.r.is_zero());
    assert_eq!(c.r.count_atomic(), 1);
    // Killing an atomic ref whose only reference is the initial one.
    c.r.kill();
    assert!(c.r.is_zero());
    c.r.wait_for_release();
    assert_eq!(c.releases.load(SeqCst), 1);
}

/// percpu_ref_switch_to_atomic's confirm runs once the switch is done (the
/// ref is atomic when it runs) even if the ref was already atomic.
#[test]
fn switch_to_atomic_confirm_sees_atomic_mode() {
    for flags in [Flags::empty(), Flags::INIT_ATOMIC] {
        let c = counted(flags);
        let (tx, rx) = mpsc::channel();
        let r2 = c.r.clone();
        c.r.switch_to_atomic(move || tx.send(r2.stats().mode).unwrap());
        assert_eq!(rx.recv().unwrap(), Mode::Atomic, "{flags:?}");
        settle(&c.r, 1);
        assert_eq!(c.r.count_atomic(), 1);
    }
}

/// percpu_ref_resurrect right after a kill whose switch is still in flight,
/// then a second kill_and_confirm (Linux waits for the in-flight switch and
/// allows this): both confirms run, both before the one release, which
/// comes only after the last holder's put.
#[test]
fn kill_resurrect_kill_while_switch_in_flight() {
    let confirms = Arc::new(AtomicUsize::new(0));
    let at_release = Arc::new(Mutex::new(Vec::new()));
    let (n, a) = (confirms.clone(), at_release.clone());
    let r = Arc::new(
        PercpuRef::<Host>::new(
            move || a.lock().unwrap().push(n.load(SeqCst)),
            Flags::empty(),
        )
        .unwrap(),
    );
    let held = r.get_owned();
    let (tx, rx) = mpsc::channel();
    let confirm = |tx: mpsc::Sender<()>| {
        let n = confirms.clone();
        move || {
            n.fetch_add(1, SeqCst);
            tx.send(()).unwrap();
        }
    };
    // Holds the kill's grace period back, so the switch is in flight.
    let section = Host::read_lock_sched();
    assert!(r.kill_and_confirm(confirm(tx.clone())));
    assert!(r.stats().switching);
    assert!(r.resurrect());
    assert!(r.tryget_live().is_some());
    assert!(r.kill_and_confirm(confirm(tx)));
    drop(section);
    rx.recv().unwrap();
    rx.recv().unwrap();
    assert!(r.tryget_live().is_none());
    settle(&r, 1);
    assert!(at_release.lock().unwrap().is_empty(), "released while held");
    drop(held);
    r.wait_for_release();
    assert_eq!(*at_release.lock().unwrap(), [2], "release count / order");
    assert_eq!(r.take_reports(), []);
}

/// percpu_ref_switch_to_atomic_sync called on several threads while a
/// kill's switch is in flight: each returns once the ref is atomic, and
/// the count it then sees is exact.
#[test]
fn switch_to_atomic_sync_during_kill_from_several_threads() {
    let c = counted(Flags::empty());
    c.r.get_many(3);
    let section = Host::read_lock_sched();
    assert!(c.r.kill());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let r = c.r.clone();
            thread::spawn(move || {
                r.switch_to_atomic_sync();
                (r.stats().mode, r.count_atomic())
            })
        })
        .collect();
    pause();
    drop(section);
    for h in handles {
        let (mode, count) = h.join().unwrap();
        assert_eq!(mode, Mode::Atomic);
        assert_eq!(count, 3, "count not exact after switch_to_atomic_sync");
    }
    c.r.put_many(3);
    c.r.wait_for_release();
    assert_eq!(c.releases.load(SeqCst), 1);
}

/// In the release callback the ref is at zero and dead: percpu_ref_is_zero
/// holds and percpu_ref_tryget fails (no reference can be revived there).
#[test]
fn release_sees_ref_zero_and_dead() {
    let me: Arc<std::sync::OnceLock<std::sync::Weak<PercpuRef<Host>>>> = Arc::default();
    let seen = Arc::new(Mutex::new(None));
    let (m, sn) = (me.clone(), seen.clone());
    let r = Arc::new(
        PercpuRef::<Host>::new(
            move || {
                let r = m.get().unwrap().upgrade().unwrap();
                let state = (r.is_zero(), r.is_dying(), r.tryget().is_none());
                *sn.lock().unwrap() = Some(state);
            },
            Flags::empty(),
        )
        .unwrap(),
    );
    me.set(Arc::downgrade(&r)).unwrap();
    let held = r.get_owned();
    r.kill();
    settle(&r, 1);
    drop(held);
    r.wait_for_release();
    assert_eq!(*seen.lock().unwrap(), Some((true, true, true)));
}

// ---- SRCU ----------------------------------------------------------------

fn domain(f: Flavour) -> Arc<Srcu<Host>> {
    Arc::new(Srcu::with_flavour(f).unwrap())
}

/// synchronize_srcu waits only for readers that were already inside: a
/// reader that enters once the grace period is under way (its section
/// counts on the other index) and stays inside must not hold it up, or a
/// stream of readers could starve updaters.
#[test]
fn synchronize_does_not_wait_for_reader_entering_later() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        let (in_tx, in_rx) = mpsc::channel();
        let old = s.read_lock_raw();
        let (done, h) = spawn_sync(&s);
        // A late reader on another thread: enters until the grace period
        // has flipped to the other index, then stays.
        let s2 = s.clone();
        let late = thread::spawn(move || {
            let t0 = Instant::now();
            let g = loop {
                let g = s2.read_lock();
                if g.index() != old {
                    break g;
                }
                drop(g);
                assert!(t0.elapsed() < Duration::from_secs(10), "no flip");
                thread::yield_now();
            };
            in_tx.send(()).unwrap();
            hold_rx.recv().unwrap();
            drop(g);
        });
        in_rx.recv().unwrap();
        assert!(!done.load(SeqCst), "{fl:?}: returned under an old reader");
        s.read_unlock(old).unwrap();
        until("synchronize ignores the late reader", || done.load(SeqCst));
        h.join().unwrap();
        hold_tx.send(()).unwrap();
        late.join().unwrap();
    }
}

/// Nested read sections: a grace period waits for the outermost one; the
/// end of an inner section does not end the reader.
#[test]
fn synchronize_waits_for_outermost_nested_section() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let (step_tx, step_rx) = mpsc::channel::<()>();
        let (ack_tx, ack_rx) = mpsc::channel();
        let s2 = s.clone();
        let reader = thread::spawn(move || {
            let outer = s2.read_lock();
            let inner = s2.read_lock();
            ack_tx.send(()).unwrap();
            step_rx.recv().unwrap();
            drop(inner);
            ack_tx.send(()).unwrap();
            step_rx.recv().unwrap();
            drop(outer);
        });
        ack_rx.recv().unwrap();
        let (done, h) = spawn_sync(&s);
        step_tx.send(()).unwrap();
        ack_rx.recv().unwrap();
        pause();
        assert!(!done.load(SeqCst), "{fl:?}: returned inside outer section");
        step_tx.send(()).unwrap();
        h.join().unwrap();
        reader.join().unwrap();
    }
}

/// srcu_down_read/srcu_up_read: a section entered on one task and left on
/// another holds up grace periods until the up_read, wherever it runs.
#[test]
fn down_read_section_held_across_threads_blocks_grace_period() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let idx = s.down_read();
        let (done, h) = spawn_sync(&s);
        pause();
        assert!(!done.load(SeqCst), "{fl:?}: returned under down_read");
        let s2 = s.clone();
        thread::spawn(move || s2.up_read(idx).unwrap())
            .join()
            .unwrap();
        h.join().unwrap();
        assert_eq!(s.readers(), 0);
        assert_eq!(take_reports(), []);
    }
}

/// srcu_read_lock/srcu_read_unlock with raw indexes need not unlock in
/// LIFO order: after the first section is left, a grace period still waits
/// for the second.
#[test]
fn raw_sections_left_out_of_order_still_hold_grace_period() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let (step_tx, step_rx) = mpsc::channel::<()>();
        let (ack_tx, ack_rx) = mpsc::channel();
        let s2 = s.clone();
        let reader = thread::spawn(move || {
            let first = s2.read_lock_raw();
            let second = s2.read_lock_raw();
            ack_tx.send(()).unwrap();
            step_rx.recv().unwrap();
            s2.read_unlock(first).unwrap();
            ack_tx.send(()).unwrap();
            step_rx.recv().unwrap();
            s2.read_unlock(second).unwrap();
            take_reports()
        });
        ack_rx.recv().unwrap();
        let (done, h) = spawn_sync(&s);
        step_tx.send(()).unwrap();
        ack_rx.recv().unwrap();
        pause();
        assert!(!done.load(SeqCst), "{fl:?}: returned under second section");
        step_tx.send(()).unwrap();
        h.join().unwrap();
        assert_eq!(reader.join().unwrap(), []);
    }
}

/// call_srcu may be invoked from a callback (Linux allows it); the new
/// callback runs after its own grace period, and a later srcu_barrier
/// waits for it.
#[test]
fn call_from_inside_a_callback_runs_and_barrier_waits() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s2, l2) = (s.clone(), log.clone());
        s.call(move || {
            l2.lock().unwrap().push("outer");
            let l3 = l2.clone();
            s2.call(move || l3.lock().unwrap().push("inner"));
        });
        s.barrier().unwrap();
        assert_eq!(log.lock().unwrap()[0], "outer");
        s.barrier().unwrap();
        assert_eq!(*log.lock().unwrap(), ["outer", "inner"], "{fl:?}");
    }
}

/// Inside an inner section whose outer section is still open, a grace-period
/// wait is still inside the reader and must be refused, not deadlock; once
/// the outer one is left it works.
// Needs the checking configuration (the default feature `checks`).
#[cfg(feature = "checks")]
#[test]
fn synchronize_refused_while_outer_section_still_open() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let outer = s.read_lock();
        drop(s.read_lock());
        assert_eq!(
            s.synchronize(),
            Err(SrcuError::SyncInReadSection { domain: s.id() })
        );
        assert!(s.synchronize_expedited().is_err());
        drop(outer);
        take_reports();
        s.synchronize().unwrap();
        s.synchronize_expedited().unwrap();
    }
}

/// A cookie from get_state_synchronize_srcu taken while a grace period is
/// already running needs a full grace period that starts later:
/// completing the running one is not enough.
#[test]
fn cookie_taken_mid_grace_period_needs_the_next_one() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let idx = s.read_lock_raw();
        let idle = s.get_state();
        let (done, h) = spawn_sync(&s);
        until("grace period to start", || s.get_state() != idle);
        let mid = s.get_state();
        s.read_unlock(idx).unwrap();
        h.join().unwrap();
        assert!(done.load(SeqCst));
        assert!(s.poll_state(idle));
        assert!(
            !s.poll_state(mid),
            "{fl:?}: running GP satisfied later cookie"
        );
        s.synchronize().unwrap();
        assert!(s.poll_state(mid));
    }
}

/// get_state_synchronize_srcu does not start a grace period; cookies are
/// ordered: one taken after a completed synchronize is not yet satisfied
/// while an earlier one is.
#[test]
fn get_state_starts_nothing_and_cookies_are_ordered() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let c1 = s.get_state();
        pause();
        assert_eq!(s.completed(), 0, "get_state started a grace period");
        assert!(!s.poll_state(c1));
        s.synchronize().unwrap();
        let c2 = s.get_state();
        assert!(s.poll_state(c1));
        assert!(!s.poll_state(c2));
        s.synchronize_expedited().unwrap();
        assert!(s.poll_state(c1) && s.poll_state(c2));
    }
}

/// start_poll_synchronize_srcu with a reader inside on another thread: the
/// cookie is not satisfied while it reads, and once poll_state says so the
/// reader has left.
#[test]
fn start_poll_waits_for_reader_on_other_thread() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let left = Arc::new(AtomicBool::new(false));
        let (in_tx, in_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (s2, l2) = (s.clone(), left.clone());
        let reader = thread::spawn(move || {
            let g = s2.read_lock();
            in_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            l2.store(true, SeqCst);
            drop(g);
        });
        in_rx.recv().unwrap();
        let c = s.start_poll();
        pause();
        assert!(!s.poll_state(c), "{fl:?}: satisfied under a reader");
        go_tx.send(()).unwrap();
        until("start_poll's grace period", || s.poll_state(c));
        assert!(left.load(SeqCst));
        reader.join().unwrap();
    }
}

/// call_srcu callbacks wait for readers on other threads, and srcu_barrier
/// waits for callbacks queued by other threads before it was called.
#[test]
fn call_waits_for_other_threads_reader_and_barrier_for_their_callbacks() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let reader = reader(&s);
        let ran = Arc::new(AtomicUsize::new(0));
        let s3 = s.clone();
        let r3 = ran.clone();
        thread::spawn(move || {
            for _ in 0..3 {
                let r = r3.clone();
                s3.call(move || {
                    r.fetch_add(1, SeqCst);
                });
            }
        })
        .join()
        .unwrap();
        pause();
        assert_eq!(ran.load(SeqCst), 0, "{fl:?}: callback ran under a reader");
        reader.leave();
        s.barrier().unwrap();
        assert_eq!(ran.load(SeqCst), 3);
    }
}

/// cleanup_srcu_struct is refused while a down_read section (which no
/// guard borrows) is open; after its up_read, cleanup succeeds.
#[test]
fn cleanup_refused_with_down_read_section_open() {
    let s = Srcu::<Host>::new().unwrap();
    let idx = s.down_read();
    let failed = s.cleanup().unwrap_err();
    assert!(matches!(
        failed.error,
        SrcuError::ReadersActive { readers: 1, .. }
    ));
    let s = failed.srcu;
    assert_eq!(s.take_reports(), [Misuse::SrcuCleanupBusy]);
    s.up_read(idx).unwrap();
    s.cleanup().unwrap();
}

/// SrcuPtr (rcu_assign_pointer + call_srcu free): a reader that loaded the
/// old value keeps it valid across several deferred replaces; none of the
/// old values is freed before that reader leaves, each exactly once after;
/// a new reader sees the newest value.
#[test]
fn ptr_deferred_replaces_keep_old_values_for_existing_reader() {
    struct Val(u32, Arc<AtomicUsize>);
    impl Drop for Val {
        fn drop(&mut self) {
            self.1.fetch_add(1, SeqCst);
        }
    }
    for fl in FLAVOURS {
        let s = domain(fl);
        let drops = Arc::new(AtomicUsize::new(0));
        let p = Arc::new(SrcuPtr::new(&s, Val(0, drops.clone())));
        let (in_tx, in_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (s2, p2) = (s.clone(), p.clone());
        let reader = thread::spawn(move || {
            let g = s2.read_lock();
            let v = p2.read(&g);
            in_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            v.0
        });
        in_rx.recv().unwrap();
        for i in 1..=3 {
            p.replace_deferred(Val(i, drops.clone()));
        }
        pause();
        assert_eq!(drops.load(SeqCst), 0, "{fl:?}: freed under a reader");
        assert_eq!(p.read(&s.read_lock()).0, 3);
        go_tx.send(()).unwrap();
        assert_eq!(reader.join().unwrap(), 0, "reader's value changed");
        s.barrier().unwrap();
        assert_eq!(drops.load(SeqCst), 3);
        drop(p);
        assert_eq!(drops.load(SeqCst), 4);
    }
}

/// SrcuPtr::replace (publish, synchronize_srcu, return old): returns only
/// after a reader that held the old value on another thread has left, and
/// readers entering after it returns see the new value.
#[test]
fn ptr_replace_returns_old_after_reader_and_publishes_new() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let p = Arc::new(SrcuPtr::new(&s, String::from("old")));
        let (in_tx, in_rx) = mpsc::channel();
        let left = Arc::new(AtomicBool::new(false));
        let (s2, p2, l2) = (s.clone(), p.clone(), left.clone());
        let reader = thread::spawn(move || {
            let g = s2.read_lock();
            let v = p2.read(&g).clone();
            in_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(20));
            l2.store(true, SeqCst);
            drop(g);
            v
        });
        in_rx.recv().unwrap();
        assert_eq!(p.replace(String::from("new")).unwrap(), "old");
        assert!(left.load(SeqCst), "{fl:?}: replace returned under a reader");
        assert_eq!(reader.join().unwrap(), "old");
        let s3 = s.clone();
        let p3 = p.clone();
        let seen = thread::spawn(move || p3.read(&s3.read_lock()).clone())
            .join()
            .unwrap();
        assert_eq!(seen, "new");
    }
}

/// Two updaters replacing an SrcuPtr at once (each replace is an atomic
/// publish, as rcu_assign_pointer/xchg): every value is handed back exactly
/// once, and the one left published is the one nobody got back.
#[test]
fn ptr_concurrent_replaces_hand_back_each_value_once() {
    let s = domain(Flavour::Normal);
    let p = Arc::new(SrcuPtr::new(&s, 0u32));
    let go = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [1u32, 2]
        .into_iter()
        .map(|v| {
            let (p, go) = (p.clone(), go.clone());
            thread::spawn(move || {
                go.wait();
                p.replace(v).unwrap()
            })
        })
        .collect();
    let mut olds: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let now = *p.read(&s.read_lock());
    olds.push(now);
    olds.sort();
    assert_eq!(olds, [0, 1, 2]);
    assert_ne!(now, 0);
}

// ---- kref ----------------------------------------------------------------

// Kref misuse is recorded per thread: `Record` and `recorded()`.

/// kref_init sets 1; kref_get increments; kref_put calls release and
/// returns 1 only for the put that drops the last reference.
#[test]
fn kref_put_returns_true_only_for_last() {
    let k = Kref::<Record>::with_report();
    assert_eq!(k.read(), 1);
    k.get();
    assert!(k.get_unless_zero());
    assert_eq!(k.read(), 3);
    let mut released = 0;
    assert!(!k.put(|| released += 1));
    assert!(!k.put(|| released += 1));
    assert_eq!(released, 0);
    assert!(k.put(|| released += 1));
    assert_eq!(released, 1);
    assert!(!k.get_unless_zero(), "kref_get_unless_zero at zero");
    assert_eq!(k.read(), 0);
    assert_eq!(recorded(), []);
}

/// Concurrent kref_get/kref_put from many threads, with
/// kref_get_unless_zero racing the final put: release runs exactly once,
/// and no get_unless_zero succeeds once it has.
#[test]
fn kref_concurrent_get_put_releases_once() {
    let k = Arc::new(Kref::<Record>::with_report());
    let released = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (k, released, go) = (k.clone(), released.clone(), go.clone());
            k.get();
            thread::spawn(move || {
                go.wait();
                for _ in 0..10_000 {
                    k.get();
                    if k.get_unless_zero() {
                        k.put(|| panic!("released while held"));
                    }
                    k.put(|| panic!("released while held"));
                }
                k.put(|| {
                    released.fetch_add(1, SeqCst);
                });
                recorded()
            })
        })
        .collect();
    k.put(|| {
        released.fetch_add(1, SeqCst);
    });
    for h in handles {
        assert_eq!(h.join().unwrap(), []);
    }
    assert_eq!(released.load(SeqCst), 1);
    assert!(!k.get_unless_zero());
}

/// A put on a count that already reached zero is misuse (refcount_t
/// WARNs): reported, and release never runs a second time.
#[test]
fn kref_put_after_release_is_reported_not_rereleased() {
    let k = Kref::<Record>::with_report();
    assert!(k.put(|| {}));
    assert!(!k.put(|| panic!("released twice")));
    assert_eq!(recorded(), [Misuse::KrefUseAfterZero]);
    assert!(!k.put(|| panic!("released twice")));
}
