//! An outside user's tests: refcnt::srcu against Linux's SRCU (include/linux/
//! srcu.h and kernel/rcu/srcutree.c kerneldoc, Documentation/RCU/*) and the
//! crate's docs. Tests are named t01..
//!
//! Written as black-box tests from Linux's documented semantics (the
//! headers and Documentation/ named above) by a user of the crate, beside
//! `linux_semantics.rs`. Not under Miri, for the same reason as that file:
//! their threads wait in real time.
#![cfg(all(feature = "std", not(loom), not(miri)))]
mod outside_common;
use outside_common::*;

use refcnt::host::Host;
use refcnt::srcu::{Checked, Fast, Flavour, Normal, Srcu, SrcuError, SrcuPtr};
use refcnt::Misuse;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

type S = Srcu<Host>;
const FLAVOURS: [Flavour; 2] = [Flavour::Normal, Flavour::Fast];

fn dom(f: Flavour) -> Arc<S> {
    Arc::new(S::with_flavour(f).unwrap())
}

// srcu_barrier waits for callbacks queued before it; a callback chain that
// keeps re-queueing itself must not make it wait for ever.
#[test]
fn t01_barrier_not_starved_by_requeueing_callback() {
    fn chain(s: Arc<S>, stop: Arc<AtomicBool>, n: Arc<AtomicUsize>) {
        n.fetch_add(1, SeqCst);
        if !stop.load(SeqCst) {
            let s2 = s.clone();
            s.call(move || chain(s2, stop, n));
        }
    }
    for f in FLAVOURS {
        let s = dom(f);
        let stop = Arc::new(AtomicBool::new(false));
        let n = Arc::new(AtomicUsize::new(0));
        let (s2, st, n2) = (s.clone(), stop.clone(), n.clone());
        s.call(move || chain(s2, st, n2));
        let done = Arc::new(AtomicBool::new(false));
        let (s3, d) = (s.clone(), done.clone());
        let h = thread::spawn(move || {
            s3.barrier().unwrap();
            d.store(true, SeqCst);
        });
        // A starved barrier never ends; 10 s is room for a busy host.
        let t = Instant::now();
        while !done.load(SeqCst) && t.elapsed() < Duration::from_secs(10) {
            ms(1);
        }
        let ok = done.load(SeqCst);
        stop.store(true, SeqCst);
        h.join().unwrap();
        assert!(
            ok,
            "{f:?}: barrier starved by a self-requeueing chain ({} links)",
            n.load(SeqCst)
        );
        s.barrier().unwrap();
        s.barrier().unwrap();
    }
}

// A start_poll cookie taken while a grace period is already running (held
// up by R1) and while R2 is inside must not be satisfied by that grace
// period, and must complete by itself (no synchronize) once R2 leaves.
#[test]
fn t02_start_poll_mid_gp_completes_by_itself() {
    for f in FLAVOURS {
        let s = dom(f);
        let before = index_now(&s);
        let r1 = reader(&s);
        let (done, h) = spawn_sync(&s);
        wait_flip(&s, before);
        let r2 = reader(&s);
        let c = s.start_poll();
        r1.leave();
        h.join().unwrap();
        assert!(done.load(SeqCst));
        assert!(
            stays_false(40, || s.poll_state(c)),
            "{f:?}: cookie satisfied while R2 inside"
        );
        r2.leave();
        until("start_poll completes", || s.poll_state(c));
    }
}

// poll_state true => every reader that was inside when the cookie was
// taken has left (stress, sleeping readers, several threads).
#[test]
fn t03_poll_state_implies_old_readers_gone() {
    for f in FLAVOURS {
        let s = dom(f);
        let epoch = Arc::new(AtomicUsize::new(1));
        // per reader: epoch at entry while inside, 0 while outside
        let inside: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let mut hs = vec![];
        for i in 0..3 {
            let (s, epoch, inside, stop) = (s.clone(), epoch.clone(), inside.clone(), stop.clone());
            hs.push(thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(SeqCst) {
                    let g = s.read_lock();
                    inside[i].store(epoch.load(SeqCst), SeqCst);
                    if k % 7 == 0 {
                        thread::sleep(Duration::from_micros(300));
                    } else {
                        thread::yield_now();
                    }
                    inside[i].store(0, SeqCst);
                    drop(g);
                    k += 1;
                }
            }));
        }
        let t = Instant::now();
        let mut n = 0;
        // At least 4 rounds, however slowly a busy host runs them.
        while t.elapsed() < Duration::from_millis(500) || n < 4 {
            let e = epoch.fetch_add(1, SeqCst);
            let c = if n % 2 == 0 {
                s.start_poll()
            } else {
                s.get_state()
            };
            if n % 2 == 1 {
                s.synchronize().unwrap();
            }
            until("poll", || s.poll_state(c));
            for (i, x) in inside.iter().enumerate() {
                let v = x.load(SeqCst);
                assert!(
                    v == 0 || v > e,
                    "{f:?}: reader {i} from epoch {v} <= {e} still inside"
                );
            }
            n += 1;
        }
        stop.store(true, SeqCst);
        for h in hs {
            h.join().unwrap();
        }
        assert!(n > 3);
    }
}

/// A value that knows whether it has been dropped.
struct Tracked {
    id: usize,
    alive: AtomicBool,
    drops: Arc<AtomicUsize>,
}
impl Tracked {
    fn new(id: usize, drops: &Arc<AtomicUsize>) -> Tracked {
        Tracked {
            id,
            alive: AtomicBool::new(true),
            drops: drops.clone(),
        }
    }
}
impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(self.alive.swap(false, SeqCst), "double drop of {}", self.id);
        self.drops.fetch_add(1, SeqCst);
    }
}

// SrcuPtr under concurrent replace from several threads with readers:
// every old value comes back exactly once, readers never see a dropped one.
#[test]
fn t04_srcu_ptr_concurrent_replace() {
    for f in FLAVOURS {
        let s = dom(f);
        let drops = Arc::new(AtomicUsize::new(0));
        let p = Arc::new(SrcuPtr::new(&*s, Tracked::new(0, &drops)));
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicBool::new(false));
        let mut readers = vec![];
        for _ in 0..2 {
            let (s, p, stop, bad) = (s.clone(), p.clone(), stop.clone(), bad.clone());
            readers.push(thread::spawn(move || {
                while !stop.load(SeqCst) {
                    let g = s.read_lock();
                    let v = p.read(&g);
                    thread::yield_now();
                    if !v.alive.load(SeqCst) {
                        bad.store(true, SeqCst);
                    }
                    drop(g);
                }
            }));
        }
        let returned = Arc::new(Mutex::new(Vec::new()));
        let mut writers = vec![];
        for t in 0..3 {
            let (p, drops, returned) = (p.clone(), drops.clone(), returned.clone());
            writers.push(thread::spawn(move || {
                for i in 0..40 {
                    let old = p.replace(Tracked::new(1 + t * 1000 + i, &drops)).unwrap();
                    assert!(old.alive.load(SeqCst));
                    returned.lock().unwrap().push(old.id);
                    drop(old);
                }
            }));
        }
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, SeqCst);
        for r in readers {
            r.join().unwrap();
        }
        assert!(!bad.load(SeqCst), "{f:?}: reader saw a dropped value");
        let mut ids = returned.lock().unwrap().clone();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "{f:?}: a value returned twice");
        assert_eq!(n, 120);
        assert!(ids.contains(&0));
        assert_eq!(drops.load(SeqCst), 120);
        let last = Arc::try_unwrap(p).ok().unwrap().into_inner();
        assert!(!ids.contains(&last.id));
        drop(last);
        assert_eq!(drops.load(SeqCst), 121);
    }
}

// replace_deferred from several threads, then the pointer is dropped
// before the callbacks ran: every value dropped exactly once after barrier.
#[test]
fn t05_replace_deferred_concurrent_then_drop_ptr() {
    for f in FLAVOURS {
        let s = dom(f);
        let drops = Arc::new(AtomicUsize::new(0));
        let p = Arc::new(SrcuPtr::new(&*s, Tracked::new(0, &drops)));
        let r = reader(&s);
        let hs: Vec<_> = (0..3)
            .map(|t| {
                let (p, drops) = (p.clone(), drops.clone());
                thread::spawn(move || {
                    for i in 0..30 {
                        p.replace_deferred(Tracked::new(1 + t * 100 + i, &drops));
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(
            stays_false(30, || drops.load(SeqCst) != 0),
            "{f:?}: dropped under reader"
        );
        drop(p);
        // the current value (never published to a reader of a later
        // section) goes with the pointer; the 90 retired ones wait.
        assert!(drops.load(SeqCst) <= 1, "{f:?}: {}", drops.load(SeqCst));
        r.leave();
        s.barrier().unwrap();
        assert_eq!(drops.load(SeqCst), 91, "{f:?}");
    }
}

// Linux: "it is perfectly legal to call synchronize_srcu() on one
// srcu_struct from some other srcu_struct's read-side critical section".
#[test]
fn t06_wait_on_other_domain_inside_section_allowed() {
    for (fa, fb) in [
        (Flavour::Normal, Flavour::Fast),
        (Flavour::Fast, Flavour::Normal),
        (Flavour::Fast, Flavour::Fast),
    ] {
        let a = dom(fa);
        let b = dom(fb);
        let pb = SrcuPtr::new(&*b, 1u32);
        let ga = a.read_lock();
        let ia = a.read_lock_raw();
        b.synchronize().unwrap();
        b.synchronize_expedited().unwrap();
        b.call(|| {});
        b.barrier().unwrap();
        assert_eq!(pb.replace(2).unwrap(), 1);
        let c = b.start_poll();
        until("poll b", || b.poll_state(c));
        assert!(a.synchronize().is_err());
        a.read_unlock(ia).unwrap();
        drop(ga);
        assert_eq!(a.take_reports(), [Misuse::SrcuSyncInReadSection]);
        assert!(b.take_reports().is_empty());
    }
}

// More sections open than TASK_SECTIONS records: "it never refuses a wait
// that may be legal". Domain A's section, left early, must not be held
// against a later synchronize of A.
#[test]
fn t07_deep_nesting_no_false_refusal() {
    let a = S::new().unwrap();
    let b = S::new().unwrap();
    let ga = a.read_lock();
    let gb: Vec<_> = (0..refcnt::srcu::TASK_SECTIONS + 4)
        .map(|_| b.read_lock())
        .collect();
    drop(ga);
    a.synchronize()
        .expect("A's section was left: wait is legal");
    drop(gb);
    a.synchronize().unwrap();
    b.synchronize().unwrap();
    assert!(a.take_reports().is_empty());
}

// Many domains nested past TASK_SECTIONS: waits on domains not held pass;
// waits on a recorded held domain are refused.
#[test]
fn t08_many_domains_nested() {
    let n = refcnt::srcu::TASK_SECTIONS + 3;
    let doms: Vec<S> = (0..n + 1).map(|_| S::new().unwrap()).collect();
    let guards: Vec<_> = doms[..n].iter().map(|d| d.read_lock()).collect();
    doms[n].synchronize().expect("not inside the last domain");
    assert!(
        doms[0].synchronize().is_err(),
        "inside doms[0] (recorded first)"
    );
    drop(guards);
    for d in &doms {
        d.synchronize().unwrap();
    }
}

// Guards of three domains left out of order: after each drop, waits on
// the domains left pass and the ones still held are refused.
#[test]
fn t09_three_domains_out_of_order() {
    let a = S::new().unwrap();
    let b = S::new_fast().unwrap();
    let c = Srcu::<Host, Fast>::new().unwrap();
    let ga = a.read_lock();
    let gb = b.read_lock();
    let gc = c.read_lock();
    let gb2 = b.read_lock();
    drop(gb);
    assert!(b.synchronize().is_err(), "still inside b (gb2)");
    drop(ga);
    a.synchronize().unwrap();
    assert!(c.synchronize().is_err());
    drop(gb2);
    b.synchronize().unwrap();
    assert!(c.synchronize().is_err());
    drop(gc);
    c.synchronize().unwrap();
}

// A refused wait loses nothing: callbacks queued in the section still run
// once, the domain keeps working, counters stay exact.
#[test]
fn t10_refused_wait_loses_nothing() {
    for f in FLAVOURS {
        let s = dom(f);
        let ran = Counter::default();
        let before = s.completed();
        {
            let _g = s.read_lock();
            let r = ran.clone();
            s.call(move || r.inc());
            assert!(s.synchronize().is_err());
            assert!(s.synchronize_expedited().is_err());
            assert!(s.barrier().is_err());
            assert_eq!(s.readers(), 1);
        }
        assert_eq!(s.readers(), 0);
        s.barrier().unwrap();
        assert_eq!(ran.get(), 1);
        s.synchronize().unwrap();
        assert!(s.completed() > before);
        let r1 = reader(&s);
        let (done, h) = spawn_sync(&s);
        assert!(stays_false(30, || done.load(SeqCst)));
        r1.leave();
        h.join().unwrap();
        ms(10);
        assert_eq!(ran.get(), 1);
    }
}

// A refused unlock changes nothing: the real section still holds grace
// periods up and can still be left.
#[test]
fn t11_bad_unlock_changes_nothing() {
    for f in FLAVOURS {
        let s = dom(f);
        let idx = s.read_lock_raw();
        let other = 1 - idx;
        assert_eq!(
            s.read_unlock(other),
            Err(SrcuError::BadUnlock {
                domain: s.id(),
                index: other
            })
        );
        assert!(s.up_read(other).is_err());
        assert!(s.read_unlock(2).is_err());
        assert!(s.up_read(usize::MAX).is_err());
        assert_eq!(s.readers(), 1);
        let (done, h) = spawn_sync(&s);
        assert!(
            stays_false(40, || done.load(SeqCst)),
            "{f:?}: bad unlock released the section"
        );
        s.read_unlock(idx).unwrap();
        h.join().unwrap();
        assert_eq!(s.readers(), 0);
        assert_eq!(s.take_reports().len(), 4);
    }
}

/// A scripted single-threaded sequence; what an observer sees.
fn script<K: refcnt::srcu::Kind>(s: &Srcu<Host, K>) -> Vec<String> {
    let mut out = vec![];
    out.push(format!("completed {}", s.completed()));
    let c0 = s.get_state();
    out.push(format!("poll0 {}", s.poll_state(c0)));
    s.synchronize().unwrap();
    out.push(format!("poll0 after sync {}", s.poll_state(c0)));
    out.push(format!("completed {}", s.completed()));
    let g = s.read_lock();
    let i = s.read_lock_raw();
    let d = s.down_read();
    out.push(format!("readers {}", s.readers()));
    out.push(format!(
        "sync in section {:?}",
        s.synchronize().map_err(|_| ())
    ));
    out.push(format!("unlock 2 {:?}", s.read_unlock(2).map_err(|_| ())));
    s.up_read(d).unwrap();
    s.read_unlock(i).unwrap();
    drop(g);
    out.push(format!("readers {}", s.readers()));
    s.synchronize_expedited().unwrap();
    out.push(format!("completed {}", s.completed()));
    let ran = Arc::new(AtomicUsize::new(0));
    for k in 0..5 {
        let r = ran.clone();
        s.call(move || {
            assert_eq!(r.fetch_add(1, SeqCst), k);
        });
    }
    s.barrier().unwrap();
    out.push(format!("ran {}", ran.load(SeqCst)));
    let a = s.get_state();
    let b = s.get_state();
    out.push(format!("same cookie {}", a == b));
    s.synchronize().unwrap();
    out.push(format!("polls {} {}", s.poll_state(a), s.poll_state(b)));
    let mut r = s.take_reports();
    r.sort_by_key(|m| format!("{m:?}"));
    out.push(format!("reports {r:?}"));
    out
}

// Fast and normal flavours (and their typed forms) differ in cost only:
// the same script observes the same results.
#[test]
fn t12_flavours_equivalent() {
    let base = script(&S::new().unwrap());
    assert_eq!(script(&S::new_fast().unwrap()), base);
    assert_eq!(script(&Srcu::<Host, Normal>::new().unwrap()), base);
    assert_eq!(script(&Srcu::<Host, Fast>::new().unwrap()), base);
    assert_eq!(script(&Srcu::<Host, Checked<Fast>>::new().unwrap()), base);
    assert_eq!(script(&Srcu::<Host, Checked<Normal>>::new().unwrap()), base);
}

// down_read sections entered on many short-lived threads (CPU slots
// reused) still hold grace periods up until up_read.
#[test]
fn t13_down_read_survives_thread_slot_reuse() {
    for f in FLAVOURS {
        let s = dom(f);
        let mut idxs = vec![];
        for _ in 0..80 {
            let s2 = s.clone();
            idxs.push(thread::spawn(move || s2.down_read()).join().unwrap());
        }
        // More threads reuse the slots, entering and leaving sections.
        for _ in 0..80 {
            let s2 = s.clone();
            thread::spawn(move || drop(s2.read_lock())).join().unwrap();
        }
        assert_eq!(s.readers(), 80, "{f:?}");
        let (done, h) = spawn_sync(&s);
        assert!(stays_false(40, || done.load(SeqCst)), "{f:?}");
        let last = idxs.pop().unwrap();
        for i in idxs {
            s.up_read(i).unwrap();
        }
        assert!(
            stays_false(20, || done.load(SeqCst)),
            "{f:?}: one section still open"
        );
        s.up_read(last).unwrap();
        h.join().unwrap();
        assert_eq!(s.readers(), 0);
    }
}

// Dropping the domain handle with callbacks queued: the callbacks are not
// lost (the worker keeps the shared state alive), and still wait for the
// reader of a pointer that outlives the handle.
#[test]
fn t14_drop_domain_with_pending_callbacks() {
    for f in FLAVOURS {
        let s = S::with_flavour(f).unwrap();
        let ran = Counter::default();
        for _ in 0..3 {
            let r = ran.clone();
            s.call(move || r.inc());
        }
        drop(s);
        until("callbacks after domain drop", || ran.get() == 3);
    }
}

// An SrcuPtr keeps its domain's state: replace works after the Srcu
// handle is gone, and the values are dropped exactly once.
#[test]
fn t15_srcu_ptr_outlives_domain_handle() {
    let drops = Arc::new(AtomicUsize::new(0));
    let s = S::new_fast().unwrap();
    let p = SrcuPtr::new(&s, Tracked::new(1, &drops));
    drop(s);
    let old = p.replace(Tracked::new(2, &drops)).unwrap();
    assert_eq!(old.id, 1);
    drop(old);
    p.replace_deferred(Tracked::new(3, &drops));
    until("deferred drop", || drops.load(SeqCst) == 2);
    drop(p);
    assert_eq!(drops.load(SeqCst), 3);
}

// Concurrent barrier callers: each returns only after the callbacks that
// it queued before calling have run.
#[test]
fn t16_concurrent_barriers() {
    for f in FLAVOURS {
        let s = dom(f);
        let bar = Arc::new(Barrier::new(4));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (s, bar) = (s.clone(), bar.clone());
                thread::spawn(move || {
                    bar.wait();
                    for _ in 0..20 {
                        let ran = Arc::new(AtomicBool::new(false));
                        let r = ran.clone();
                        s.call(move || r.store(true, SeqCst));
                        s.barrier().unwrap();
                        assert!(ran.load(SeqCst), "barrier returned before own callback");
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
}

// A thread that panics inside a read section leaves it during unwinding:
// grace periods are not held up and the thread's record is clean.
#[test]
fn t17_guard_dropped_on_panic() {
    for f in FLAVOURS {
        let s = dom(f);
        let s2 = s.clone();
        let r = thread::spawn(move || {
            let _g = s2.read_lock();
            panic!("boom");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(s.readers(), 0);
        s.synchronize().unwrap();
        // same thread: catch_unwind, then synchronize must not be refused
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = s.read_lock();
            panic!("boom2");
        }));
        assert!(res.is_err());
        s.synchronize().expect("section left by unwinding");
        assert!(s.take_reports().is_empty());
    }
}

// readers() counts guards, raw and down_read sections of several threads.
#[test]
fn t18_readers_count_many_threads() {
    let s = dom(Flavour::Fast);
    let bar = Arc::new(Barrier::new(5));
    let leave = Arc::new(Barrier::new(5));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (s, bar, leave) = (s.clone(), bar.clone(), leave.clone());
            thread::spawn(move || {
                let g = s.read_lock();
                let i = s.read_lock_raw();
                let d = s.down_read();
                bar.wait();
                leave.wait();
                s.up_read(d).unwrap();
                s.read_unlock(i).unwrap();
                drop(g);
            })
        })
        .collect();
    bar.wait();
    assert_eq!(s.readers(), 12);
    leave.wait();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(s.readers(), 0);
}

// A cookie's state never goes back: true stays true over many later
// grace periods.
#[test]
fn t19_old_cookie_stays_true() {
    for f in FLAVOURS {
        let s = dom(f);
        let c = s.get_state();
        s.synchronize().unwrap();
        assert!(s.poll_state(c));
        for _ in 0..50 {
            s.synchronize_expedited().unwrap();
            let c2 = s.start_poll();
            assert!(s.poll_state(c), "{f:?}: old cookie went back to false");
            until("c2", || s.poll_state(c2));
        }
    }
}

// Expedited and normal synchronize running at once both wait for a
// pre-existing reader, and both return when it leaves.
#[test]
fn t20_expedited_and_normal_concurrent() {
    for f in FLAVOURS {
        let s = dom(f);
        let r = reader(&s);
        let d1 = Arc::new(AtomicBool::new(false));
        let d2 = Arc::new(AtomicBool::new(false));
        let (s1, x1) = (s.clone(), d1.clone());
        let h1 = thread::spawn(move || {
            s1.synchronize().unwrap();
            x1.store(true, SeqCst);
        });
        let (s2, x2) = (s.clone(), d2.clone());
        let h2 = thread::spawn(move || {
            s2.synchronize_expedited().unwrap();
            x2.store(true, SeqCst);
        });
        assert!(
            stays_false(50, || d1.load(SeqCst) || d2.load(SeqCst)),
            "{f:?}"
        );
        r.leave();
        h1.join().unwrap();
        h2.join().unwrap();
    }
}

// get_state cookies taken while a grace period runs differ from those
// taken when idle, and the earlier one completes no later than the later.
#[test]
fn t21_cookies_across_concurrent_gps() {
    for f in FLAVOURS {
        let s = dom(f);
        let c_idle = s.get_state();
        let r1 = reader(&s);
        let (done, h) = spawn_sync(&s);
        until("the grace period starts", || s.get_state() != c_idle);
        let c_busy = s.get_state();
        assert_ne!(c_idle, c_busy, "{f:?}: cookie taken mid-GP equals idle one");
        r1.leave();
        h.join().unwrap();
        assert!(done.load(SeqCst));
        assert!(
            s.poll_state(c_idle),
            "{f:?}: the GP that ran started after c_idle"
        );
        assert!(
            !s.poll_state(c_busy),
            "{f:?}: mid-GP cookie done by that same GP"
        );
        s.synchronize().unwrap();
        assert!(s.poll_state(c_busy));
    }
}

// Many threads, each with its own domain plus one shared domain, nesting
// sections of both and synchronizing the other: no refusal, no deadlock.
#[test]
fn t22_cross_domain_stress() {
    let shared = dom(Flavour::Fast);
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..4)
        .map(|t| {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || {
                let own = S::with_flavour(if t % 2 == 0 {
                    Flavour::Normal
                } else {
                    Flavour::Fast
                })
                .unwrap();
                let mut n = 0;
                // One round at least, however late the thread starts.
                while n == 0 || !stop.load(SeqCst) {
                    {
                        let _g = shared.read_lock();
                        own.synchronize().unwrap();
                    }
                    {
                        let _g = own.read_lock();
                        shared.synchronize_expedited().unwrap();
                    }
                    n += 1;
                }
                assert!(own.take_reports().is_empty());
                n
            })
        })
        .collect();
    ms(400);
    stop.store(true, SeqCst);
    for h in hs {
        assert!(h.join().unwrap() > 0);
    }
    assert!(shared.take_reports().is_empty());
}

// cleanup after a busy life (cross-thread down_read/up_read, calls and
// barrier) succeeds; right after a refusal, the handed-back domain works.
#[test]
fn t23_cleanup_after_refusal_then_ok() {
    let s = Arc::new(S::new_fast().unwrap());
    let idx = s.down_read();
    let s2 = s.clone();
    thread::spawn(move || s2.up_read(idx).unwrap())
        .join()
        .unwrap();
    let s = Arc::try_unwrap(s).ok().unwrap();
    let i = s.read_lock_raw();
    let e = s.cleanup().unwrap_err();
    let s = e.srcu;
    s.read_unlock(i).unwrap();
    let ran = Counter::default();
    let r = ran.clone();
    s.call(move || r.inc());
    s.barrier().unwrap();
    assert_eq!(ran.get(), 1);
    s.cleanup().map_err(|e| e.error).unwrap();
}

// call(): the callback runs only after every reader that was inside when
// it was queued has left (stress, epochs, both flavours).
#[test]
fn t24_call_waits_for_old_readers_stress() {
    for f in FLAVOURS {
        let s = dom(f);
        let epoch = Arc::new(AtomicUsize::new(1));
        let inside: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicUsize::new(0));
        let mut hs = vec![];
        for i in 0..3 {
            let (s, epoch, inside, stop) = (s.clone(), epoch.clone(), inside.clone(), stop.clone());
            hs.push(thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(SeqCst) {
                    let g = s.read_lock();
                    inside[i].store(epoch.load(SeqCst), SeqCst);
                    if k % 5 == 0 {
                        thread::sleep(Duration::from_micros(200));
                    }
                    inside[i].store(0, SeqCst);
                    drop(g);
                    k += 1;
                }
            }));
        }
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..300 {
            let e = epoch.fetch_add(1, SeqCst);
            let (inside, bad, ran) = (inside.clone(), bad.clone(), ran.clone());
            s.call(move || {
                for x in inside.iter() {
                    let v = x.load(SeqCst);
                    if v != 0 && v <= e {
                        bad.fetch_add(1, SeqCst);
                    }
                }
                ran.fetch_add(1, SeqCst);
            });
            thread::sleep(Duration::from_micros(100));
        }
        s.barrier().unwrap();
        stop.store(true, SeqCst);
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(ran.load(SeqCst), 300);
        assert_eq!(
            bad.load(SeqCst),
            0,
            "{f:?}: callback ran under an older reader"
        );
    }
}

// replace_deferred under concurrent readers: a reader never sees a
// dropped value; all retired values dropped once.
#[test]
fn t25_replace_deferred_with_readers_stress() {
    for f in FLAVOURS {
        let s = dom(f);
        let drops = Arc::new(AtomicUsize::new(0));
        let p = Arc::new(SrcuPtr::new(&*s, Tracked::new(0, &drops)));
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicBool::new(false));
        let rs: Vec<_> = (0..2)
            .map(|_| {
                let (s, p, stop, bad) = (s.clone(), p.clone(), stop.clone(), bad.clone());
                thread::spawn(move || {
                    while !stop.load(SeqCst) {
                        let g = s.read_lock();
                        let v = p.read(&g);
                        for _ in 0..100 {
                            std::hint::spin_loop();
                        }
                        if !v.alive.load(SeqCst) {
                            bad.store(true, SeqCst);
                        }
                    }
                })
            })
            .collect();
        for i in 0..500 {
            p.replace_deferred(Tracked::new(i + 1, &drops));
            if i % 50 == 0 {
                thread::sleep(Duration::from_micros(500));
            }
        }
        s.barrier().unwrap();
        stop.store(true, SeqCst);
        for r in rs {
            r.join().unwrap();
        }
        assert!(!bad.load(SeqCst), "{f:?}: reader saw dropped value");
        assert_eq!(drops.load(SeqCst), 500);
    }
}

// Raw sections of one task on both indexes (a flip in between), left in
// the order they were entered: a GP started between them waits only for
// the first; the task's check follows which are still open.
#[test]
fn t26_raw_sections_across_flip_non_lifo() {
    for f in FLAVOURS {
        let s = dom(f);
        let outer = s.read_lock_raw();
        let (done, h) = spawn_sync(&s);
        wait_flip(&s, outer); // the GP has flipped and waits for `outer`
        let inner = s.read_lock_raw();
        assert!(!done.load(SeqCst));
        s.read_unlock(outer).unwrap();
        h.join().unwrap(); // does not wait for `inner`, which began later
        assert!(s.synchronize().is_err(), "{f:?}: still inside `inner`");
        let (done2, h2) = spawn_sync(&s);
        assert!(
            stays_false(40, || done2.load(SeqCst)),
            "{f:?}: new GP ignored `inner`"
        );
        s.read_unlock(inner).unwrap();
        h2.join().unwrap();
        s.synchronize().unwrap();
        assert_eq!(s.take_reports(), [Misuse::SrcuSyncInReadSection]);
    }
}

// start_poll from several threads at once, with readers slowing grace
// periods: every cookie completes by itself (no synchronize anywhere).
#[test]
fn t27_concurrent_start_poll_all_complete() {
    for f in FLAVOURS {
        let s = dom(f);
        let stop = Arc::new(AtomicBool::new(false));
        let (s1, st) = (s.clone(), stop.clone());
        let rd = thread::spawn(move || {
            while !st.load(SeqCst) {
                let g = s1.read_lock();
                thread::sleep(Duration::from_micros(500));
                drop(g);
            }
        });
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || {
                    for _ in 0..15 {
                        let c = s.start_poll();
                        let t = Instant::now();
                        while !s.poll_state(c) {
                            assert!(
                                t.elapsed() < Duration::from_secs(10),
                                "cookie never completed"
                            );
                            thread::sleep(Duration::from_micros(200));
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        stop.store(true, SeqCst);
        rd.join().unwrap();
    }
}

// A get_state cookie followed by start_poll (no GP in between) names the
// same grace period; both complete by themselves.
#[test]
fn t28_get_state_then_start_poll() {
    for f in FLAVOURS {
        let s = dom(f);
        let a = s.get_state();
        let b = s.start_poll();
        assert_eq!(a, b, "{f:?}");
        until("a", || s.poll_state(a));
        assert!(s.poll_state(b));
        let c = s.get_state();
        assert!(!s.poll_state(c), "{f:?}: fresh cookie already done");
    }
}

// Many domains each with a grace period held up by a reader and a callback
// pending: the work pool grows (one blocked worker per domain); nothing
// may be lost or panic, and everything completes once readers leave.
#[test]
fn t29_many_domains_blocked_workers() {
    for f in FLAVOURS {
        let n = 70;
        let doms: Vec<Arc<S>> = (0..n).map(|_| dom(f)).collect();
        let idx: Vec<usize> = doms.iter().map(|d| d.read_lock_raw()).collect();
        let ran = Counter::default();
        for d in &doms {
            let r = ran.clone();
            d.call(move || r.inc());
        }
        ms(150);
        assert_eq!(ran.get(), 0, "{f:?}");
        for (d, i) in doms.iter().zip(idx) {
            d.read_unlock(i).unwrap();
        }
        let t = Instant::now();
        while ran.get() < n && t.elapsed() < Duration::from_secs(10) {
            ms(2);
        }
        assert_eq!(ran.get(), n, "{f:?}: callbacks lost");
        for d in &doms {
            d.barrier().unwrap();
        }
    }
}

// After nesting past TASK_SECTIONS and coming back below it, a section
// entered then is recorded: a wait inside it is refused, not let through
// to wait for itself for ever (run on a thread; unblocked from outside).
#[test]
fn t30_record_recovers_after_deep_nesting() {
    let a = Arc::new(S::new().unwrap());
    let b = Arc::new(S::new().unwrap());
    let (a2, b2) = (a.clone(), b.clone());
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let deep: Vec<usize> = (0..refcnt::srcu::TASK_SECTIONS + 4)
            .map(|_| b2.read_lock_raw())
            .collect();
        let (keep, leave) = deep.split_at(4);
        for &i in leave {
            b2.read_unlock(i).unwrap();
        }
        // now 4 deep in B, far below TASK_SECTIONS
        let ia = a2.read_lock_raw();
        tx.send(ia).unwrap();
        let r = a2.synchronize();
        for &i in keep {
            b2.read_unlock(i).unwrap();
        }
        r
    });
    let ia = rx.recv().unwrap();
    // A refusal returns at once; a self-wait never does. 10 s is for a
    // host that leaves the thread unrun a while.
    let t = Instant::now();
    while !h.is_finished() && t.elapsed() < Duration::from_secs(10) {
        ms(5);
    }
    let finished = h.is_finished();
    if !finished {
        // unblock the self-wait from outside
        a.read_unlock(ia).unwrap();
    }
    let r = h.join().unwrap();
    assert!(finished, "synchronize inside own section waited for itself (not refused); result after unblock {r:?}");
    assert!(r.is_err());
}

// A refused replace inside the caller's own section: a borrow of the old
// value taken in that section stays valid until the section ends; the old
// value is then dropped exactly once.
#[test]
fn t31_refused_replace_keeps_old_value_for_own_section() {
    for f in FLAVOURS {
        let s = dom(f);
        let drops = Arc::new(AtomicUsize::new(0));
        let p = SrcuPtr::new(&*s, Tracked::new(1, &drops));
        {
            let g = s.read_lock();
            let old = p.read(&g);
            assert!(p.replace(Tracked::new(2, &drops)).is_err());
            ms(60);
            assert!(
                old.alive.load(SeqCst),
                "{f:?}: old value dropped under own section"
            );
            assert_eq!(old.id, 1);
            assert_eq!(p.read(&g).id, 2);
        }
        s.barrier().unwrap();
        assert_eq!(drops.load(SeqCst), 1);
        drop(p);
        assert_eq!(drops.load(SeqCst), 2);
    }
}

// "a steady stream of new readers cannot starve the updater": readers
// hand over hand (some reader always inside) must not stop synchronize.
#[test]
fn t32_no_updater_starvation_under_overlapping_readers() {
    for f in FLAVOURS {
        for expedited in [false, true] {
            let s = dom(f);
            let stop = Arc::new(AtomicBool::new(false));
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let (s, stop) = (s.clone(), stop.clone());
                    thread::spawn(move || {
                        let mut held = s.read_lock_raw();
                        while !stop.load(SeqCst) {
                            let next = s.read_lock_raw();
                            for _ in 0..200 {
                                std::hint::spin_loop();
                            }
                            s.read_unlock(held).unwrap();
                            held = next;
                        }
                        s.read_unlock(held).unwrap();
                    })
                })
                .collect();
            ms(10);
            let (tx, rx) = mpsc::channel();
            let s2 = s.clone();
            let u = thread::spawn(move || {
                for _ in 0..5 {
                    if expedited {
                        s2.synchronize_expedited().unwrap();
                    } else {
                        s2.synchronize().unwrap();
                    }
                }
                tx.send(()).unwrap();
            });
            // Starvation never ends; 20 s is room for a busy host.
            let ok = rx.recv_timeout(Duration::from_secs(20)).is_ok();
            stop.store(true, SeqCst);
            for h in hs {
                h.join().unwrap();
            }
            u.join().unwrap();
            assert!(
                ok,
                "{f:?} expedited={expedited}: updater starved by new readers"
            );
        }
    }
}
