//! Host unit tests for SRCU: every API item and every misuse kind. Its own
//! binary, so the global misuse counters see only SRCU tests.
#![cfg(all(feature = "std", not(loom)))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use refcnt::host::{take_reports, Host};
use refcnt::misuse::misuse_count;
use refcnt::srcu::{
    Checked, Fast, Flavour, Kind, Normal, Srcu, SrcuError, SrcuPtr, CHECKS, MAX_NESTING,
};
use refcnt::{Backend, Misuse};

const FLAVOURS: [Flavour; 2] = [Flavour::Normal, Flavour::Fast];

fn domain(f: Flavour) -> Arc<Srcu<Host>> {
    Arc::new(Srcu::with_flavour(f).unwrap())
}

/// Short pauses are enough to let another thread run into a wait; Miri
/// is slower, so give it more.
fn pause() {
    thread::sleep(Duration::from_millis(if cfg!(miri) { 200 } else { 30 }));
}

#[test]
fn constructors_and_accessors() {
    let n = Srcu::<Host>::new().unwrap();
    let f = Srcu::<Host>::new_fast().unwrap();
    assert_eq!(n.flavour(), Flavour::Normal);
    assert_eq!(f.flavour(), Flavour::Fast);
    assert_ne!(n.id(), f.id());
    assert_eq!(n.completed(), 0);
    assert_eq!(n.readers(), 0);
    assert!(format!("{n:?}").contains("Normal"));
}

#[test]
fn guards_nest_and_count() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let a = s.read_lock();
        let b = s.read_lock();
        assert!(a.index() <= 1 && b.index() <= 1);
        assert_eq!(a.srcu().id(), s.id());
        assert_eq!(s.readers(), 2);
        drop(b);
        drop(a);
        assert_eq!(s.readers(), 0);
        assert!(format!("{:?}", s.read_lock()).contains("index"));
    }
}

#[test]
fn raw_lock_unlock() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let i = s.read_lock_raw();
        let j = s.read_lock_raw();
        assert_eq!(s.readers(), 2);
        s.read_unlock(j).unwrap();
        s.read_unlock(i).unwrap();
        assert_eq!(s.readers(), 0);
        assert!(take_reports().is_empty());
    }
}

#[test]
fn down_read_up_read_hand_a_section_to_another_thread() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let i = s.down_read();
        assert_eq!(s.readers(), 1);
        // Not the caller's section: its own waits are not refused (the
        // section is another task's now).
        let s2 = s.clone();
        thread::spawn(move || s2.up_read(i).unwrap())
            .join()
            .unwrap();
        assert_eq!(s.readers(), 0);
        assert!(take_reports().is_empty());
        if fl == Flavour::Normal {
            assert!(s.up_read(i).is_err(), "not held any more");
            assert_eq!(take_reports(), [Misuse::SrcuBadUnlock]);
        }
        assert!(s.up_read(2).is_err());
        take_reports();
    }
}

// Needs the checking configuration (a default feature).
#[cfg(feature = "checks")]
#[test]
fn raw_unlock_on_another_thread_is_reported_but_leaves() {
    let s = domain(Flavour::Normal);
    let i = s.read_lock_raw();
    let s2 = s.clone();
    let reports = thread::spawn(move || {
        s2.read_unlock(i).unwrap();
        take_reports()
    })
    .join()
    .unwrap();
    assert_eq!(reports, [Misuse::SrcuUnlockOtherTask]);
    assert_eq!(s.readers(), 0, "the section was left");
}

/// Runs `f` on a new thread and gives up after a while (a grace-period
/// wait that should have been refused would otherwise hang the test).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what}: still waiting after 20 s"))
}

// Needs the checking configuration (a default feature).
#[cfg(feature = "checks")]
#[test]
fn own_section_is_refused_after_leaving_another_threads() {
    // A thread that left another thread's section, then enters its own
    // and waits for the domain: refused, not a deadlock.
    let s = domain(Flavour::Normal);
    let i = s.down_read();
    let s2 = s.clone();
    let r = within("synchronize inside own section", move || {
        s2.up_read(i).unwrap();
        let _g = s2.read_lock();
        let r = s2.synchronize();
        take_reports();
        r
    });
    assert_eq!(r, Err(SrcuError::SyncInReadSection { domain: s.id() }));
}

#[test]
fn a_handed_over_section_does_not_taint_the_cpu_slot_it_began_on() {
    // The section's lock is counted on this thread's CPU slot, its unlock
    // on another's: the slot's counts say "inside" for good (as they do
    // for a thread that exits in a handed-over section and a new thread
    // that gets its slot). This thread is in no section, so its wait is
    // legal and must not be refused.
    for fl in FLAVOURS {
        let s = domain(fl);
        let i = s.down_read();
        let s2 = s.clone();
        thread::spawn(move || s2.up_read(i).unwrap())
            .join()
            .unwrap();
        assert_eq!(s.synchronize(), Ok(()));
        assert!(take_reports().is_empty());
    }
}

#[test]
fn a_slow_reader_delays_only_its_own_domain() {
    // A reader sleeps in a section of `slow` until told; the callback
    // worker of `slow` waits for it. Another domain's callbacks and a
    // percpu_ref's kill must not wait behind that worker.
    let slow = domain(Flavour::Normal);
    let other = domain(Flavour::Normal);
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let (inside_tx, inside_rx) = mpsc::channel();
    let s = slow.clone();
    let reader = thread::spawn(move || {
        let _g = s.read_lock();
        inside_tx.send(()).unwrap();
        leave_rx.recv().unwrap();
    });
    inside_rx.recv().unwrap();
    let (tx, rx) = mpsc::channel();
    let t = tx.clone();
    slow.call(move || t.send("slow").unwrap());
    pause();
    let t = tx.clone();
    other.call(move || t.send("other").unwrap());
    let t = Mutex::new(tx.clone());
    let r = refcnt::percpu_ref::PercpuRef::<Host>::new(
        move || t.lock().unwrap().send("release").unwrap(),
        refcnt::percpu_ref::Flags::empty(),
    )
    .unwrap();
    r.kill();
    let mut got: Vec<&str> = (0..2)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("held up by a slow reader of another domain")
        })
        .collect();
    got.sort();
    assert_eq!(got, ["other", "release"]);
    assert!(
        rx.try_recv().is_err(),
        "slow's callback ran inside its reader"
    );
    leave_tx.send(()).unwrap();
    reader.join().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("slow"));
}

#[test]
fn misuse_unlock_bad_index() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let before = misuse_count(Misuse::SrcuBadUnlock);
        let e = s.read_unlock(2).unwrap_err();
        assert_eq!(
            e,
            SrcuError::BadUnlock {
                domain: s.id(),
                index: 2
            }
        );
        assert!(e.to_string().contains("read_unlock(2)"));
        assert_eq!(take_reports(), [Misuse::SrcuBadUnlock]);
        assert!(misuse_count(Misuse::SrcuBadUnlock) > before);
        assert_eq!(s.readers(), 0, "no counter changed");
    }
}

/// Each unlock ends only its own kind of section, as Linux's lockdep
/// holds them apart: `up_read` of a `read_lock_raw` section and
/// `read_unlock` of a `down_read` one are refused and change nothing, and
/// the right unlock then leaves the section, with no report and no false
/// refusal of a later wait. (Accepted before, the first left the
/// entering thread's record saying it was inside for ever, every later
/// wait of that thread refused; the second reported a section the thread
/// had entered itself as another task's.)
#[test]
fn unlock_calls_end_only_their_own_kind() {
    fn check<K: Kind>() {
        let s = Srcu::<Host, K>::new().unwrap();
        let own = s.read_lock_raw();
        let refused = SrcuError::BadUnlock {
            domain: s.id(),
            index: own,
        };
        assert_eq!(s.up_read(own), Err(refused));
        assert_eq!(s.readers(), 1, "the refused up_read left the section");
        s.read_unlock(own).unwrap();
        assert_eq!(
            s.synchronize(),
            Ok(()),
            "a wait after the section was left refused"
        );
        let handed = s.down_read();
        let refused = SrcuError::BadUnlock {
            domain: s.id(),
            index: handed,
        };
        assert_eq!(s.read_unlock(handed), Err(refused));
        assert_eq!(s.readers(), 1, "the refused read_unlock left the section");
        s.up_read(handed).unwrap();
        assert_eq!(s.readers(), 0);
        s.synchronize().unwrap();
        assert_eq!(
            s.take_reports(),
            [Misuse::SrcuBadUnlock, Misuse::SrcuBadUnlock]
        );
    }
    check::<Checked<Normal>>();
    check::<Checked<Fast>>();
}

/// A thread that leaves another thread's raw section (allowed, reported)
/// keeps the record of its own guard: its wait inside the guard is still
/// refused instead of waiting for itself for ever, and allowed once the
/// guard is gone. (Before, the unlock took away the guard's record, and
/// the wait hung.)
#[test]
fn leaving_another_threads_section_keeps_ones_own_guard_checked() {
    fn check<K: Kind>() {
        let s = Arc::new(Srcu::<Host, K>::new().unwrap());
        let (tx, rx) = mpsc::channel();
        let s2 = s.clone();
        // The entering thread ends without leaving: its record goes with it.
        thread::spawn(move || tx.send(s2.read_lock_raw()).unwrap())
            .join()
            .unwrap();
        let theirs = rx.recv().unwrap();
        let guard = s.read_lock();
        s.read_unlock(theirs).unwrap();
        assert_eq!(s.take_reports(), [Misuse::SrcuUnlockOtherTask]);
        assert_eq!(
            s.synchronize(),
            Err(SrcuError::SyncInReadSection { domain: s.id() }),
            "a wait inside the thread's own guard let through"
        );
        drop(guard);
        s.synchronize().unwrap();
        assert_eq!(s.take_reports(), [Misuse::SrcuSyncInReadSection]);
    }
    check::<Checked<Normal>>();
    check::<Checked<Fast>>();
}

#[test]
fn misuse_unlock_not_locked() {
    let s = domain(Flavour::Normal);
    let e = s.read_unlock(0).unwrap_err();
    assert!(matches!(e, SrcuError::BadUnlock { index: 0, .. }));
    assert_eq!(take_reports(), [Misuse::SrcuBadUnlock]);
    // Unlocking twice: the second one is refused.
    let i = s.read_lock_raw();
    s.read_unlock(i).unwrap();
    assert!(s.read_unlock(i).is_err());
    assert_eq!(take_reports(), [Misuse::SrcuBadUnlock]);
    assert_eq!(s.readers(), 0);
    // Holding index 0 does not make unlocking index 1 legal.
    let i = s.read_lock_raw();
    assert!(s.read_unlock(1 - i).is_err());
    s.read_unlock(i).unwrap();
    take_reports();
}

/// A grace period that a panic abandons half way (here the backend's
/// `synchronize_sched`, refusing a caller inside an rcu-sched section,
/// panics in the fast flavour's first scan) leaves the domain as if it had
/// not started: a later replace still waits for a guard entered after the
/// flip of the grace period that follows. (The sequence used to stay odd,
/// so every later grace period ended the waits of callers that snapped
/// during it one grace period early, and the replace below returned the
/// value the guard still borrowed.)
#[test]
fn a_grace_period_abandoned_by_a_panic_ends_no_wait_early() {
    let s = Arc::new(Srcu::<Host, Fast>::new().unwrap());
    let drops = Arc::new(AtomicUsize::new(0));
    let p = Arc::new(SrcuPtr::new(&s, Counted(drops.clone())));
    {
        let _sched = Host::read_lock_sched();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.synchronize()));
        assert!(
            r.is_err(),
            "synchronize_sched inside its own section did not panic"
        );
    }
    take_reports();
    // A reader on the active index holds up the next grace period's
    // second scan; meanwhile a guard enters on the new index and a replace
    // snaps.
    let r0 = s.down_read();
    let s1 = s.clone();
    let updater = thread::spawn(move || s1.synchronize().unwrap());
    let g = loop {
        let g = s.read_lock();
        if g.index() != r0 {
            break g;
        }
        drop(g);
        thread::yield_now();
    };
    let (p2, d2) = (p.clone(), drops.clone());
    let replacer = thread::spawn(move || drop(p2.replace(Counted(d2)).unwrap()));
    pause();
    // The first grace period can end now; the replace's needs the guard
    // gone (and so may the updater's second: it is joined after).
    s.up_read(r0).unwrap();
    pause();
    assert!(
        !replacer.is_finished(),
        "the replace returned under a live guard"
    );
    assert_eq!(drops.load(SeqCst), 0, "freed under a live guard");
    drop(g);
    replacer.join().unwrap();
    updater.join().unwrap();
    assert_eq!(drops.load(SeqCst), 1);
}

/// A guard's section ends only when the guard drops: a raw unlock of its
/// index is refused in both flavours, and a replace of an `SrcuPtr` still
/// waits for the guard, so a borrow from `read` cannot outlive its value.
/// (An extra `read_unlock(g.index())` used to be accepted while another
/// section held the index, or always in the fast flavour: the grace period
/// then ended under the guard and the replace freed what it borrowed.)
#[test]
fn a_raw_unlock_cannot_end_a_guards_section() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let drops = Arc::new(AtomicUsize::new(0));
        let p = Arc::new(SrcuPtr::new(&s, Counted(drops.clone())));
        // A raw section on the same index, so that the index is held by
        // someone (the case a holder-count check let through).
        let g = s.read_lock();
        let raw = s.down_read();
        let borrowed: &Counted = p.read(&g);
        for idx in [g.index(), 1 - g.index()] {
            if idx == raw {
                continue;
            }
            assert_eq!(
                s.read_unlock(idx),
                Err(SrcuError::BadUnlock {
                    domain: s.id(),
                    index: idx
                })
            );
        }
        take_reports();
        s.up_read(raw).unwrap();
        // Every raw section is gone; the guard's index is refused too.
        assert!(s.read_unlock(g.index()).is_err());
        assert!(s.up_read(g.index()).is_err());
        assert_eq!(
            take_reports(),
            [Misuse::SrcuBadUnlock, Misuse::SrcuBadUnlock]
        );
        assert_eq!(s.readers(), 1, "the guard's section was ended");
        let (p2, d2) = (p.clone(), drops.clone());
        let replacer = thread::spawn(move || drop(p2.replace(Counted(d2)).unwrap()));
        pause();
        assert!(
            !replacer.is_finished(),
            "a grace period ended under a live guard"
        );
        assert_eq!(drops.load(SeqCst), 0, "freed under a live guard");
        assert!(
            Arc::strong_count(&borrowed.0) >= 2,
            "the borrow is still good"
        );
        drop(g);
        replacer.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1);
    }
}

/// For both flavours: `sync` returns only after a reader that was inside
/// its section when it started (and sleeps there) has left, and it ran a
/// grace period of its own.
fn waits_for_existing_reader(name: &str, sync: fn(&Srcu<Host>) -> Result<(), SrcuError>) {
    for fl in FLAVOURS {
        let s = domain(fl);
        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (s2, d2) = (s.clone(), done.clone());
        let t = thread::spawn(move || {
            let g = s2.read_lock();
            tx.send(()).unwrap();
            pause(); // readers may sleep
            d2.store(true, SeqCst);
            drop(g);
        });
        rx.recv().unwrap();
        let before = s.completed();
        sync(&s).unwrap();
        assert!(done.load(SeqCst), "{fl:?}: {name} returned under a reader");
        assert!(s.completed() > before, "{fl:?}: {name} ran no grace period");
        t.join().unwrap();
    }
}

#[test]
fn synchronize_waits_for_existing_reader() {
    waits_for_existing_reader("synchronize", Srcu::synchronize);
}

#[test]
fn synchronize_expedited_waits_for_existing_reader() {
    waits_for_existing_reader("synchronize_expedited", Srcu::synchronize_expedited);
}

#[test]
fn synchronize_ignores_other_domains_and_ends_idle() {
    let a = domain(Flavour::Normal);
    let b = domain(Flavour::Normal);
    let _g = a.read_lock();
    b.synchronize().unwrap(); // a reader of another domain is no obstacle
    assert_eq!(b.completed(), 1);
}

/// New readers arriving all the time cannot starve an updater.
#[test]
fn no_starvation_under_reader_stream() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (s, stop, started) = (s.clone(), stop.clone(), started.clone());
                thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(SeqCst) {
                        let outer = s.read_lock();
                        let inner = s.read_lock();
                        std::hint::black_box(&inner);
                        drop(outer); // sections need not end in order
                        drop(inner);
                        if n == 0 {
                            started.fetch_add(1, SeqCst);
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        while started.load(SeqCst) < 2 {
            thread::yield_now();
        }
        let rounds = if cfg!(miri) { 2 } else { 20 };
        let t0 = Instant::now();
        for _ in 0..rounds {
            s.synchronize().unwrap();
        }
        stop.store(true, SeqCst);
        let n: u64 = readers.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(n >= 2, "both readers ran");
        assert!(s.completed() >= rounds);
        assert!(t0.elapsed() < Duration::from_secs(60));
    }
}

/// Callers that arrive while a grace period is running share the next one.
/// A caller whose thread the host runs only after the first grace period
/// ended and the second started asks for a third, rightly: such a run is
/// tried again (3 times at most). Callers that each run their own grace
/// period make four every time.
#[test]
fn concurrent_synchronize_share_grace_periods() {
    let mut counts = Vec::new();
    for _ in 0..3 {
        let s = domain(Flavour::Normal);
        let idx = s.read_lock_raw();
        let idle = s.get_state();
        let first = {
            let s = s.clone();
            thread::spawn(move || s.synchronize().unwrap())
        };
        // Once a grace period runs (blocked by our reader), a new cookie
        // asks for the one after it.
        while s.get_state() == idle {
            thread::yield_now();
        }
        let started = Arc::new(AtomicUsize::new(0));
        let others: Vec<_> = (0..3)
            .map(|_| {
                let (s, started) = (s.clone(), started.clone());
                thread::spawn(move || {
                    started.fetch_add(1, SeqCst);
                    s.synchronize().unwrap()
                })
            })
            .collect();
        while started.load(SeqCst) < 3 {
            thread::yield_now();
        }
        pause();
        s.read_unlock(idx).unwrap();
        first.join().unwrap();
        for t in others {
            t.join().unwrap();
        }
        counts.push(s.completed());
        if s.completed() == 2 {
            return;
        }
    }
    panic!("four callers, two grace periods: {counts:?} in 3 tries");
}

// Needs the checking configuration (a default feature).
#[cfg(feature = "checks")]
#[test]
fn misuse_synchronize_in_read_section() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let before = misuse_count(Misuse::SrcuSyncInReadSection);
        let g = s.read_lock();
        let e = s.synchronize().unwrap_err();
        assert_eq!(e, SrcuError::SyncInReadSection { domain: s.id() });
        assert!(e.to_string().contains("deadlock"));
        assert!(s.synchronize_expedited().is_err());
        assert!(s.barrier().is_err());
        assert_eq!(take_reports(), [Misuse::SrcuSyncInReadSection; 3]);
        assert!(misuse_count(Misuse::SrcuSyncInReadSection) >= before + 3);
        drop(g);
        // Raw sections count too.
        let i = s.read_lock_raw();
        assert!(s.synchronize().is_err());
        s.read_unlock(i).unwrap();
        take_reports();
        s.synchronize().unwrap();
        assert_eq!(s.completed(), 1, "the refused calls waited for nothing");
    }
}

#[test]
fn call_runs_after_grace_period_in_order_on_worker() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let log = Arc::new(Mutex::new(Vec::new()));
        let me = thread::current().id();
        let idx = s.read_lock_raw();
        let n = if cfg!(miri) { 5 } else { 50 };
        for i in 0..n {
            let log = log.clone();
            s.call(move || {
                assert_ne!(thread::current().id(), me, "ran in the caller's context");
                log.lock().unwrap().push(i);
            });
        }
        pause();
        assert!(log.lock().unwrap().is_empty(), "{fl:?}: ran under a reader");
        s.read_unlock(idx).unwrap();
        s.barrier().unwrap();
        assert_eq!(*log.lock().unwrap(), (0..n).collect::<Vec<_>>());
        assert!(s.completed() >= 1);
    }
}

#[test]
fn call_inside_read_section_and_exactly_once() {
    let s = domain(Flavour::Normal);
    let runs = Arc::new(AtomicUsize::new(0));
    {
        let _g = s.read_lock();
        let r = runs.clone();
        s.call(move || {
            r.fetch_add(1, SeqCst);
        });
    }
    s.barrier().unwrap();
    s.barrier().unwrap();
    s.synchronize().unwrap();
    assert_eq!(runs.load(SeqCst), 1);
}

#[test]
fn call_from_many_threads_runs_all() {
    let s = domain(Flavour::Fast);
    let runs = Arc::new(AtomicUsize::new(0));
    let per = if cfg!(miri) { 3 } else { 100 };
    let ts: Vec<_> = (0..2)
        .map(|_| {
            let (s, runs) = (s.clone(), runs.clone());
            thread::spawn(move || {
                for _ in 0..per {
                    let r = runs.clone();
                    s.call(move || {
                        r.fetch_add(1, SeqCst);
                    });
                }
                s.barrier().unwrap();
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    assert_eq!(runs.load(SeqCst), 2 * per);
}

#[test]
fn barrier_with_nothing_queued_returns() {
    let s = domain(Flavour::Normal);
    s.barrier().unwrap();
    assert_eq!(s.completed(), 0);
}

#[test]
fn polling() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let c = s.get_state();
        assert_eq!(c, s.get_state());
        assert!(!s.poll_state(c));
        s.synchronize().unwrap();
        assert!(s.poll_state(c));

        // start_poll makes a grace period happen without anyone waiting.
        let c = s.start_poll();
        let t0 = Instant::now();
        while !s.poll_state(c) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "start_poll never ended"
            );
            thread::yield_now();
        }

        // A cookie taken under a reader is not satisfied while it reads.
        let idx = s.read_lock_raw();
        let c = s.start_poll();
        pause();
        assert!(!s.poll_state(c));
        s.read_unlock(idx).unwrap();
        while !s.poll_state(c) {
            thread::yield_now();
        }
    }
}

#[test]
fn misuse_cleanup_busy() {
    let s = Srcu::<Host>::new().unwrap();
    let before = misuse_count(Misuse::SrcuCleanupBusy);

    // Readers.
    let i = s.read_lock_raw();
    let failed = s.cleanup().unwrap_err();
    assert_eq!(
        failed.error,
        SrcuError::ReadersActive {
            domain: failed.srcu.id(),
            readers: 1
        }
    );
    assert!(failed.to_string().contains("1 read section"));
    assert!(format!("{failed:?}").contains("ReadersActive"));
    let s = failed.srcu;
    s.read_unlock(i).unwrap();

    // Callbacks: the first one holds the worker until we let it go.
    let gate = Arc::new(AtomicBool::new(false));
    let g2 = gate.clone();
    s.call(move || {
        while !g2.load(SeqCst) {
            thread::yield_now();
        }
    });
    s.call(|| {});
    let failed = s.cleanup().unwrap_err();
    assert!(matches!(
        failed.error,
        SrcuError::CallbacksPending {
            callbacks: 1..=2,
            ..
        }
    ));
    assert!(failed.error.to_string().contains("barrier"));
    let s = failed.srcu;
    gate.store(true, SeqCst);
    s.barrier().unwrap();

    assert_eq!(take_reports(), [Misuse::SrcuCleanupBusy; 2]);
    assert!(misuse_count(Misuse::SrcuCleanupBusy) >= before + 2);
    s.cleanup().unwrap();
}

// Needs the checking configuration (a default feature).
#[cfg(feature = "checks")]
#[test]
#[cfg_attr(miri, ignore = "a million sections is too slow under Miri")]
fn misuse_nesting_overflow() {
    let s = Srcu::<Host>::new().unwrap();
    let guards: Vec<_> = (0..MAX_NESTING - 1).map(|_| s.read_lock()).collect();
    assert!(take_reports().is_empty());
    let last = s.read_lock();
    assert_eq!(take_reports(), [Misuse::SrcuNestingOverflow]);
    // Deeper still works and is not reported again.
    let deeper = s.read_lock();
    assert!(take_reports().is_empty());
    assert_eq!(s.readers(), MAX_NESTING + 1);
    drop((guards, last, deeper));
    assert_eq!(s.readers(), 0);
    s.synchronize().unwrap();
}

#[test]
fn misuse_messages() {
    for m in [
        Misuse::SrcuSyncInReadSection,
        Misuse::SrcuBadUnlock,
        Misuse::SrcuCleanupBusy,
        Misuse::SrcuNestingOverflow,
    ] {
        assert!(Misuse::ALL.contains(&m));
        assert!(m.to_string().starts_with("srcu:"));
    }
}

// ---- SrcuPtr -------------------------------------------------------------

#[test]
fn ptr_read_replace_into_inner() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let mut p = SrcuPtr::new(&s, String::from("a"));
        assert_eq!(p.read(&s.read_lock()), "a");
        p.get_mut().push('b');
        assert_eq!(p.replace(String::from("c")).unwrap(), "ab");
        assert_eq!(p.read(&s.read_lock()), "c");
        assert!(format!("{p:?}").contains("SrcuPtr"));
        assert_eq!(p.into_inner(), "c");
    }
}

#[test]
fn ptr_replace_waits_for_reader_of_old_value() {
    for fl in FLAVOURS {
        let s = domain(fl);
        let p = Arc::new(SrcuPtr::new(&s, 1u32));
        let (tx, rx) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let (s2, p2, d2) = (s.clone(), p.clone(), done.clone());
        let t = thread::spawn(move || {
            let g = s2.read_lock();
            let v = p2.read(&g);
            tx.send(()).unwrap();
            pause();
            assert_eq!(*v, 1);
            d2.store(true, SeqCst);
        });
        rx.recv().unwrap();
        assert_eq!(p.replace(2).unwrap(), 1);
        assert!(done.load(SeqCst));
        t.join().unwrap();
    }
}

struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn ptr_replace_deferred_drops_after_grace_period() {
    let s = domain(Flavour::Normal);
    let drops = Arc::new(AtomicUsize::new(0));
    let p = SrcuPtr::new(&s, Counted(drops.clone()));
    let idx = s.read_lock_raw();
    p.replace_deferred(Counted(drops.clone()));
    pause();
    assert_eq!(drops.load(SeqCst), 0, "dropped under a reader");
    s.read_unlock(idx).unwrap();
    s.barrier().unwrap();
    assert_eq!(drops.load(SeqCst), 1);
    drop(p);
    assert_eq!(drops.load(SeqCst), 2);
}

// Needs the checking configuration (a default feature).
#[cfg(feature = "checks")]
#[test]
fn ptr_replace_in_read_section_defers() {
    let s = domain(Flavour::Normal);
    let drops = Arc::new(AtomicUsize::new(0));
    let p = SrcuPtr::new(&s, Counted(drops.clone()));
    let g = s.read_lock();
    let old = p.read(&g) as *const Counted;
    assert_eq!(
        p.replace(Counted(drops.clone())).err(),
        Some(SrcuError::SyncInReadSection { domain: s.id() })
    );
    assert_eq!(take_reports(), [Misuse::SrcuSyncInReadSection]);
    assert_ne!(p.read(&g) as *const Counted, old, "new value published");
    assert_eq!(drops.load(SeqCst), 0);
    drop(g);
    s.barrier().unwrap();
    assert_eq!(drops.load(SeqCst), 1);
}

#[test]
#[should_panic(expected = "guard of srcu domain")]
fn ptr_read_with_guard_of_other_domain_panics() {
    let a = Srcu::<Host>::new().unwrap();
    let b = Srcu::<Host>::new().unwrap();
    let p = SrcuPtr::new(&a, 0);
    let g = b.read_lock();
    let _ = p.read(&g);
}

#[test]
fn ptr_outlives_domain_handle() {
    let s = Srcu::<Host>::new().unwrap();
    let p = SrcuPtr::new(&s, 7);
    s.cleanup().unwrap();
    // The pointer keeps the shared state; replacing still waits properly.
    assert_eq!(p.replace_deferred(8), ());
    assert_eq!(p.into_inner(), 8);
}

/// Issue 21: a domain whose type fixes the flavour (`Srcu<Host, Fast>`,
/// `Normal`, and a checked one) has that flavour, and `synchronize` and
/// an `SrcuPtr`'s `replace` wait for a reader that was inside (and sleeps
/// there) when they started, as with the flavour read from the domain.
fn static_kind_waits_for_existing_reader<K: Kind>(flavour: Flavour) {
    let s = Arc::new(Srcu::<Host, K>::new().unwrap());
    assert_eq!(s.flavour(), flavour);
    let p = Arc::new(SrcuPtr::new(&*s, 1u32));
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (s2, p2, d2) = (s.clone(), p.clone(), done.clone());
    let t = thread::spawn(move || {
        let g = s2.read_lock();
        assert_eq!(*p2.read(&g), 1);
        tx.send(()).unwrap();
        pause();
        d2.store(true, SeqCst);
        drop(g);
    });
    rx.recv().unwrap();
    assert_eq!(p.replace(2).unwrap(), 1);
    assert!(
        done.load(SeqCst),
        "{flavour:?}: replace returned under a reader"
    );
    t.join().unwrap();
    let before = s.completed();
    s.synchronize().unwrap();
    assert!(s.completed() > before);
    assert_eq!(s.readers(), 0);
}

#[test]
fn flavour_in_the_type_waits_for_existing_readers() {
    static_kind_waits_for_existing_reader::<Normal>(Flavour::Normal);
    static_kind_waits_for_existing_reader::<Fast>(Flavour::Fast);
    static_kind_waits_for_existing_reader::<Checked<Fast>>(Flavour::Fast);
    static_kind_waits_for_existing_reader::<Checked<Normal>>(Flavour::Normal);
}

/// Issue 21, the checking configuration: a `Checked<_>` domain records
/// its sections in the task's record and refuses a wait inside its own
/// section in every build; any other domain records only with the
/// feature `checks` (these tests run with it, a default feature; without
/// it, waiting inside `plain`'s section would never end, so it is only
/// tried with it).
#[test]
fn checked_domains_record_their_sections() {
    let depth = || Host::with_task_sections(|t| t.depth()).unwrap();
    let plain = Srcu::<Host, Fast>::new().unwrap();
    let checked = Srcu::<Host, Checked<Fast>>::new().unwrap();
    let recorded = usize::from(CHECKS);
    let g = plain.read_lock();
    assert_eq!(depth(), recorded);
    if CHECKS {
        assert_eq!(
            plain.synchronize(),
            Err(SrcuError::SyncInReadSection { domain: plain.id() })
        );
    }
    let c = checked.read_lock();
    assert_eq!(depth(), recorded + 1);
    assert_eq!(
        checked.synchronize(),
        Err(SrcuError::SyncInReadSection {
            domain: checked.id()
        })
    );
    drop(c);
    drop(g);
    assert_eq!(depth(), 0);
    take_reports();
    checked.synchronize().unwrap();
    plain.synchronize().unwrap();
}
