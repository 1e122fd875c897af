//! A second outside user's tests: refcnt::srcu against Linux's SRCU
//! (include/linux/srcu.h, kernel/rcu/srcutree.c kerneldoc,
//! Documentation/RCU/) and the crate's docs. Tests are named s01..
//!
//! Written as black-box tests from Linux's documented semantics (the
//! headers and Documentation/ named above) by an outside user of the
//! crate, beside `linux_semantics.rs` and `outside_srcu.rs`. Not under
//! Miri, for the same reason as those files: their threads wait in real
//! time.
#![cfg(all(feature = "std", not(loom), not(miri)))]
mod outside_common;
use outside_common::*;

use refcnt::host::Host;
use refcnt::srcu::{Checked, Fast, Flavour, Kind, Normal, Srcu, SrcuError, SrcuPtr, CHECKS};
use refcnt::Misuse;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

type S = Srcu<Host>;
const FLAVOURS: [Flavour; 2] = [Flavour::Normal, Flavour::Fast];

fn dom(f: Flavour) -> Arc<S> {
    Arc::new(S::with_flavour(f).unwrap())
}

/// A value that counts its drops.
struct Tracked(Arc<AtomicUsize>, u32);
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

// ---- each unlock ends only its own kind of section ------------------------
//
// `read_unlock` ends `read_lock_raw` sections and `up_read` ends `down_read`
// sections (Linux's lockdep holds srcu_read_lock/unlock and
// srcu_down_read/up_read apart too). A mixed unlock is refused with
// `BadUnlock`, reported as `SrcuBadUnlock`, and changes nothing.

/// A `read_lock_raw` section offered to `up_read`, in the checked domain
/// types: refused, the section stays open (counted, and a grace period on
/// another thread waits for it); the thread's record still says it is inside (its wait is refused, not let
/// through to wait for itself); after `read_unlock` it is outside, and its
/// wait succeeds.
#[test]
fn s02_checked_raw_section_up_read_refused_then_read_unlock() {
    fn check<K: Kind>() {
        let s = Arc::new(Srcu::<Host, K>::new().unwrap());
        within("s02", move || {
            let id = s.id();
            let i = s.read_lock_raw();
            assert_eq!(
                s.up_read(i),
                Err(SrcuError::BadUnlock {
                    domain: id,
                    index: i
                })
            );
            assert_eq!(s.readers(), 1);
            assert_eq!(
                s.synchronize(),
                Err(SrcuError::SyncInReadSection { domain: id }),
                "the thread's record lost its open raw section"
            );
            let (done, h) = spawn_sync(&s);
            assert!(
                stays_false(30, || done.load(SeqCst)),
                "a grace period ended under the raw section"
            );
            s.read_unlock(i).unwrap();
            h.join().unwrap();
            assert_eq!(s.synchronize(), Ok(()), "false refusal after read_unlock");
            assert_eq!(
                s.take_reports(),
                [Misuse::SrcuBadUnlock, Misuse::SrcuSyncInReadSection]
            );
        });
    }
    check::<Checked<Normal>>();
    check::<Checked<Fast>>();
}

/// A guard held while `read_unlock` of a `down_read` section is refused:
/// the guard's record is untouched (a wait inside it is still refused);
/// once the guard is gone the `down_read` section still holds grace
/// periods up until `up_read`, and the thread's wait then succeeds.
#[test]
fn s04_guard_still_checked_after_refused_read_unlock_of_down_read() {
    if !CHECKS {
        return;
    }
    for f in FLAVOURS {
        let s = dom(f);
        within("s04", move || {
            let id = s.id();
            let g = s.read_lock();
            let i = s.down_read();
            assert_eq!(
                s.read_unlock(i),
                Err(SrcuError::BadUnlock {
                    domain: id,
                    index: i
                }),
                "{f:?}"
            );
            assert_eq!(s.readers(), 2, "{f:?}");
            assert_eq!(
                s.synchronize(),
                Err(SrcuError::SyncInReadSection { domain: id }),
                "{f:?}: a wait inside the thread's own guard let through"
            );
            drop(g);
            assert_eq!(s.readers(), 1, "{f:?}");
            // Not the thread's own wait: a down_read section is not recorded
            // as the task's, and this one is still open.
            let (done, h) = spawn_sync(&s);
            assert!(
                stays_false(30, || done.load(SeqCst)),
                "{f:?}: a grace period ended under the down_read section"
            );
            s.up_read(i).unwrap();
            h.join().unwrap();
            assert_eq!(s.synchronize(), Ok(()), "{f:?}");
            assert_eq!(
                s.take_reports(),
                [Misuse::SrcuBadUnlock, Misuse::SrcuSyncInReadSection],
                "{f:?}"
            );
        });
    }
}

/// readers() counts every kind; cleanup refuses with the number of raw
/// sections of both kinds together (`read_lock_raw` and `down_read`).
#[test]
fn s07_readers_counts_every_kind_and_cleanup_reports_them() {
    let s = S::new().unwrap();
    let i = s.read_lock_raw();
    let j = s.down_read();
    {
        let _g = s.read_lock();
        assert_eq!(s.readers(), 3);
    }
    let failed = s.cleanup().unwrap_err();
    assert!(
        matches!(failed.error, SrcuError::ReadersActive { readers: 2, .. }),
        "{:?}",
        failed.error
    );
    let s = failed.srcu;
    s.read_unlock(i).unwrap();
    s.up_read(j).unwrap();
    s.cleanup().map_err(|e| e.error).unwrap();
}

/// A mixed unlock refused is not held against the thread later: after
/// refused mixes, each section left with its own unlock, the thread's
/// waits keep succeeding, and the only reports are the refusals.
#[test]
fn s22_refused_mixed_unlocks_leave_no_false_refusal() {
    for f in FLAVOURS {
        let s = dom(f);
        within("s22", move || {
            let mut refused = 0;
            for round in 0..3 {
                let i = s.read_lock_raw();
                assert!(s.up_read(i).is_err(), "{f:?} round {round}");
                refused += 1;
                s.read_unlock(i).unwrap();
                let j = s.down_read();
                assert!(s.read_unlock(j).is_err(), "{f:?} round {round}");
                refused += 1;
                s.up_read(j).unwrap();
                drop(s.read_lock());
                assert_eq!(s.synchronize(), Ok(()), "{f:?} round {round}");
            }
            assert_eq!(s.readers(), 0);
            assert_eq!(
                s.take_reports(),
                vec![Misuse::SrcuBadUnlock; refused],
                "{f:?}"
            );
        });
    }
}

/// An index from domain A is not held in domain B, and B's refusal does
/// not touch A's section.
#[test]
fn s23_unlock_index_of_other_domain_refused() {
    let a = dom(Flavour::Normal);
    let b = dom(Flavour::Normal);
    let i = a.read_lock_raw();
    assert_eq!(
        b.read_unlock(i),
        Err(SrcuError::BadUnlock {
            domain: b.id(),
            index: i
        })
    );
    assert_eq!(a.readers(), 1);
    a.read_unlock(i).unwrap();
    assert_eq!(b.take_reports(), [Misuse::SrcuBadUnlock]);
    assert_eq!(a.take_reports(), []);
}

// ---- grace periods ---------------------------------------------------------

/// synchronize_srcu_expedited "has the same ... memory-ordering properties
/// as does synchronize_srcu()": it waits for the outermost of a nested
/// pair held by another thread, in both flavours.
#[test]
fn s08_expedited_waits_for_outermost_nested_section() {
    for f in FLAVOURS {
        let s = dom(f);
        let (ack_tx, ack_rx) = mpsc::channel();
        let (step_tx, step_rx) = mpsc::channel::<()>();
        let left = Arc::new(AtomicBool::new(false));
        let (s2, l2) = (s.clone(), left.clone());
        let h = thread::spawn(move || {
            let outer = s2.read_lock();
            let inner = s2.read_lock();
            ack_tx.send(()).unwrap();
            step_rx.recv().unwrap();
            drop(inner);
            ack_tx.send(()).unwrap();
            step_rx.recv().unwrap();
            l2.store(true, SeqCst);
            drop(outer);
        });
        ack_rx.recv().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let (s3, d2, l3) = (s.clone(), done.clone(), left.clone());
        let w = thread::spawn(move || {
            s3.synchronize_expedited().unwrap();
            assert!(
                l3.load(SeqCst),
                "expedited returned before the outer section ended"
            );
            d2.store(true, SeqCst);
        });
        step_tx.send(()).unwrap();
        ack_rx.recv().unwrap(); // the inner section has ended
        assert!(stays_false(30, || done.load(SeqCst)), "{f:?}");
        step_tx.send(()).unwrap();
        h.join().unwrap();
        w.join().unwrap();
        assert!(done.load(SeqCst));
    }
}

/// A cookie of domain A is not satisfied by grace periods of domain B.
#[test]
fn s09_cookie_is_per_domain() {
    for f in FLAVOURS {
        let a = dom(f);
        let b = dom(f);
        let r = reader(&a);
        let c = a.start_poll();
        b.synchronize().unwrap();
        b.synchronize_expedited().unwrap();
        assert!(
            stays_false(20, || a.poll_state(c)),
            "{f:?}: A's cookie satisfied under A's reader"
        );
        r.leave();
        until("A's own grace period", || a.poll_state(c));
    }
}

/// get_state: "Some later synchronize, call worker or start_poll must run
/// it": a call() queued after the cookie completes it by barrier.
#[test]
fn s11_get_state_completed_by_call_worker() {
    for f in FLAVOURS {
        let s = dom(f);
        let c = s.get_state();
        s.call(|| {});
        s.barrier().unwrap();
        assert!(s.poll_state(c), "{f:?}");
    }
}

/// Readers whose sections sit on each index in turn (a grace period
/// flipped between them): a replace started after both entered waits for
/// both, the one on the old index and the one on the new.
#[test]
fn s19_replace_waits_for_readers_on_both_indexes() {
    for f in FLAVOURS {
        let s = dom(f);
        let p = Arc::new(SrcuPtr::new(&*s, 1u32));
        let before = index_now(&s);
        let r1 = reader(&s);
        // A grace period in the background flips the index, then waits for r1.
        let (bg_done, bg) = spawn_sync(&s);
        wait_flip(&s, before);
        let r2 = reader(&s); // on the new index
        let done = Arc::new(AtomicBool::new(false));
        let (p2, d2) = (p.clone(), done.clone());
        let t = thread::spawn(move || {
            let old = p2.replace(2).unwrap();
            d2.store(true, SeqCst);
            old
        });
        assert!(
            stays_false(30, || done.load(SeqCst)),
            "{f:?}: replace returned under readers r1 and r2"
        );
        r1.leave();
        bg.join().unwrap();
        assert!(bg_done.load(SeqCst));
        assert!(
            stays_false(30, || done.load(SeqCst)),
            "{f:?}: replace returned under reader r2 (new index)"
        );
        r2.leave();
        assert_eq!(t.join().unwrap(), 1);
        assert_eq!(*p.read(&s.read_lock()), 2);
    }
}

// ---- call() ------------------------------------------------------------------

/// "callbacks of one domain run in the order they were queued": queued by
/// two threads in a happens-before chain, with a reader held across the
/// first, a synchronize in between, and from inside a read section.
#[test]
fn s13_call_order_across_threads() {
    for f in FLAVOURS {
        let s = dom(f);
        let log = Arc::new(Mutex::new(Vec::new()));
        let r = reader(&s);
        let (l1, s1) = (log.clone(), s.clone());
        thread::spawn(move || {
            for i in 0..10 {
                let l = l1.clone();
                s1.call(move || l.lock().unwrap().push(i));
            }
        })
        .join()
        .unwrap();
        let s2 = s.clone();
        let t = thread::spawn(move || s2.synchronize().unwrap());
        for i in 10..20 {
            let l = log.clone();
            let _g = s.read_lock();
            s.call(move || l.lock().unwrap().push(i));
        }
        r.leave();
        t.join().unwrap();
        let (l3, s3) = (log.clone(), s.clone());
        thread::spawn(move || {
            for i in 20..30 {
                let l = l3.clone();
                s3.call(move || l.lock().unwrap().push(i));
                if i == 25 {
                    s3.synchronize_expedited().unwrap();
                }
            }
        })
        .join()
        .unwrap();
        s.barrier().unwrap();
        assert_eq!(*log.lock().unwrap(), (0..30).collect::<Vec<_>>(), "{f:?}");
    }
}

/// call from inside a callback of the same domain: the nested callback
/// still waits for a reader that was inside when it was queued.
#[test]
fn s14_call_from_callback_waits_for_reader_present_then() {
    for f in FLAVOURS {
        let s = dom(f);
        let (queued_tx, queued_rx) = mpsc::channel();
        let (leave_tx, leave_rx) = mpsc::channel::<()>();
        let leave_rx = Arc::new(Mutex::new(Some(leave_rx)));
        let ran = Arc::new(AtomicBool::new(false));
        let left = Arc::new(AtomicBool::new(false));
        let (s2, ran2, left2) = (s.clone(), ran.clone(), left.clone());
        s.call(move || {
            // Start a reader and wait until it is inside.
            let (in_tx, in_rx) = mpsc::channel();
            let (s3, l3, lr) = (s2.clone(), left2.clone(), leave_rx.clone());
            thread::spawn(move || {
                let g = s3.read_lock();
                in_tx.send(()).unwrap();
                let rx = lr.lock().unwrap().take().unwrap();
                rx.recv().unwrap();
                l3.store(true, SeqCst);
                drop(g);
            });
            in_rx.recv().unwrap();
            let (ran3, l4) = (ran2.clone(), left2.clone());
            s2.call(move || {
                assert!(
                    l4.load(SeqCst),
                    "nested callback ran under a reader present at its call"
                );
                ran3.store(true, SeqCst);
            });
            queued_tx.send(()).unwrap();
        });
        queued_rx.recv().unwrap();
        assert!(stays_false(30, || ran.load(SeqCst)), "{f:?}");
        leave_tx.send(()).unwrap();
        until("nested callback", || ran.load(SeqCst));
        s.barrier().unwrap();
        assert!(left.load(SeqCst));
    }
}

/// A Fast-typed domain: call and start_poll wait for a down_read section,
/// which another thread then leaves with up_read.
#[test]
fn s20_fast_type_call_and_poll() {
    let s = Arc::new(Srcu::<Host, Fast>::new().unwrap());
    let ran = Arc::new(AtomicBool::new(false));
    let i = s.down_read();
    let c = s.start_poll();
    let r = ran.clone();
    s.call(move || r.store(true, SeqCst));
    assert!(stays_false(30, || ran.load(SeqCst) || s.poll_state(c)));
    let s2 = s.clone();
    thread::spawn(move || s2.up_read(i).unwrap())
        .join()
        .unwrap();
    s.barrier().unwrap();
    assert!(ran.load(SeqCst));
    until("cookie", || s.poll_state(c));
}

// ---- SrcuPtr -------------------------------------------------------------------

/// replace_deferred inside one's own section: the old value stays readable
/// and undropped while the section is held; dropped after it ends.
#[test]
fn s17_replace_deferred_inside_own_section() {
    for f in FLAVOURS {
        let s = dom(f);
        let drops = Arc::new(AtomicUsize::new(0));
        let p = SrcuPtr::new(&*s, Tracked(drops.clone(), 1));
        {
            let g = s.read_lock();
            let old = p.read(&g);
            p.replace_deferred(Tracked(drops.clone(), 2));
            s.call(|| {});
            assert!(
                stays_false(30, || drops.load(SeqCst) != 0),
                "{f:?}: old value dropped under its reader"
            );
            assert_eq!(old.1, 1);
            assert_eq!(p.read(&g).1, 2);
        }
        s.barrier().unwrap();
        assert_eq!(drops.load(SeqCst), 1, "{f:?}");
        let v = p.into_inner();
        assert_eq!(v.1, 2);
        assert_eq!(drops.load(SeqCst), 1);
        drop(v);
        assert_eq!(drops.load(SeqCst), 2);
    }
}

/// into_inner while a deferred drop is still pending: the pending old
/// value is still dropped, once, later.
#[test]
fn s18_into_inner_with_deferred_drop_pending() {
    let s = dom(Flavour::Normal);
    let drops = Arc::new(AtomicUsize::new(0));
    let p = SrcuPtr::new(&*s, Tracked(drops.clone(), 1));
    let r = reader(&s);
    p.replace_deferred(Tracked(drops.clone(), 2));
    let v = p.into_inner();
    assert_eq!(v.1, 2);
    assert_eq!(drops.load(SeqCst), 0);
    r.leave();
    until("deferred drop", || drops.load(SeqCst) == 1);
    drop(v);
    assert_eq!(drops.load(SeqCst), 2);
}

// ---- cleanup, nesting ------------------------------------------------------------

/// cleanup after start_poll (no callbacks, no readers): not refused for
/// readers or callbacks.
#[test]
fn s25_cleanup_after_start_poll() {
    for f in FLAVOURS {
        let s = S::with_flavour(f).unwrap();
        let _c = s.start_poll();
        let r = within("cleanup after start_poll", move || {
            s.cleanup().map_err(|e| e.error)
        });
        assert_eq!(r, Ok(()), "{f:?}");
    }
}

/// More raw sections than TaskSections records, over two domains: a wait
/// on a third domain is never refused; after leaving all (first in, first
/// out), waits on both succeed, and nothing is reported.
#[test]
fn s26_deep_nesting_over_domains_then_recovers() {
    let a = dom(Flavour::Normal);
    let b = dom(Flavour::Fast);
    let c = dom(Flavour::Normal);
    let r = within("deep nesting", {
        let (a, b, c) = (a.clone(), b.clone(), c.clone());
        move || {
            let mut raws = Vec::new();
            for k in 0..(refcnt::srcu::TASK_SECTIONS + 5) {
                if k % 2 == 0 {
                    raws.push((0, a.read_lock_raw()));
                } else {
                    raws.push((1, b.read_lock_raw()));
                }
            }
            let third = c.synchronize();
            for (d, i) in raws {
                if d == 0 {
                    a.read_unlock(i).unwrap()
                } else {
                    b.read_unlock(i).unwrap()
                }
            }
            (third, a.synchronize(), b.synchronize())
        }
    });
    assert_eq!(r, (Ok(()), Ok(()), Ok(())));
    assert_eq!(a.take_reports(), []);
    assert_eq!(b.take_reports(), []);
}
