//! The host backend's own promises: grace periods wait for open sections
//! and only for them, callbacks run elsewhere after a grace period, slots
//! are recycled.
#![cfg(all(feature = "std", not(loom)))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Release, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use refcnt::host::{cpu, Host, MAX_CPUS};
use refcnt::percpu_ref::{Flags, PercpuRef};
use refcnt::Backend;

#[test]
fn grace_period_waits_for_open_section() {
    let left = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let l = left.clone();
    let t = std::thread::spawn(move || {
        let g = Host::read_lock_sched();
        let inner = Host::read_lock_sched(); // nests
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        drop(inner);
        std::thread::sleep(Duration::from_millis(10));
        l.store(true, SeqCst);
        drop(g);
    });
    rx.recv().unwrap();
    Host::synchronize_sched();
    assert!(
        left.load(SeqCst),
        "grace period ended inside a read-side section"
    );
    t.join().unwrap();
}

#[test]
fn grace_period_does_not_wait_for_new_sections() {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        while !s.load(SeqCst) {
            let _g = Host::read_lock_sched();
            std::hint::spin_loop();
        }
    });
    for _ in 0..if cfg!(miri) { 3 } else { 100 } {
        Host::synchronize_sched();
    }
    stop.store(true, SeqCst);
    t.join().unwrap();
}

#[test]
fn call_sched_runs_on_another_thread() {
    let (tx, rx) = mpsc::channel();
    let me = std::thread::current().id();
    Host::call_sched(Box::new(move || {
        tx.send(std::thread::current().id() != me).unwrap();
    }));
    assert!(rx.recv().unwrap());
}

#[test]
fn slots_are_recycled() {
    let n = if cfg!(miri) { 8 } else { 4 * MAX_CPUS };
    for _ in 0..n {
        std::thread::spawn(|| assert!(cpu() < MAX_CPUS))
            .join()
            .unwrap();
    }
}

#[test]
fn per_cpu_counters_sum_over_threads() {
    let p = Arc::new(Host::alloc_percpu(20).unwrap());
    let hs: Vec<_> = (0..3)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                Host::this_cpu_add(&p, 17, i + 1);
                Host::this_cpu_add(&p, 3, usize::MAX); // -1
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    Host::synchronize_sched();
    assert_eq!(Host::sum(&p, 17), 6);
    assert_eq!(Host::sum(&p, 3), 3usize.wrapping_neg());
    assert_eq!(Host::sum(&p, 0), 0);
}

/// `this_cpu_add_unless` adds to the calling thread's own slot while the
/// word's masked bits are clear, including slots past the first sixteen,
/// and writes nothing while one is set, even with no counters at all.
#[test]
fn this_cpu_add_unless_follows_the_word() {
    let p = Arc::new(Host::alloc_percpu(20).unwrap());
    let word = Arc::new(AtomicUsize::new(Host::key(&p)));
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let (p, word) = (p.clone(), word.clone());
            std::thread::spawn(move || {
                // SAFETY: the word is the key of `p`; slots 0 and 18 of 20.
                let added = unsafe { Host::this_cpu_add_unless(|| Some(&*p), &word, 1, 18, 2) };
                assert!(added, "the flag is clear: the add happens");
                // SAFETY: as above.
                let added = unsafe { Host::this_cpu_add_unless(|| Some(&*p), &word, 8, 0, 1) };
                assert!(added, "bit 3 is clear too");
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    word.store(Host::key(&p) | 1, Release);
    // SAFETY: the flag is set, so nothing is written (no counters needed).
    let added = unsafe { Host::this_cpu_add_unless(|| None, &word, 1, 0, 1) };
    assert!(!added, "the flag is set: no add");
    Host::synchronize_sched();
    assert_eq!(Host::sum(&p, 0), 3);
    assert_eq!(Host::sum(&p, 18), 6);
}

/// A thread-local destructor that runs after the slot was given back (it
/// was registered before the slot's owner) may still use refs, and the
/// counts stay exact (the thread claims a slot anew, see `host::claim`,
/// rather than add to the one it gave back).
#[test]
fn refs_work_in_late_thread_local_destructors() {
    struct LateUser(Arc<PercpuRef<Host>>);
    impl Drop for LateUser {
        fn drop(&mut self) {
            self.0.get_many(2);
            self.0.put_many(1);
            assert!(cpu() < MAX_CPUS);
        }
    }
    thread_local! {
        static LATE: std::cell::RefCell<Option<LateUser>> = const { std::cell::RefCell::new(None) };
    }
    let r = Arc::new(PercpuRef::<Host>::new(|| {}, Flags::empty()).unwrap());
    let r2 = r.clone();
    std::thread::spawn(move || {
        // Registered first, so destroyed after the slot owner.
        LATE.with(|l| *l.borrow_mut() = Some(LateUser(r2.clone())));
        r2.get_many(1); // claims a slot
        r2.put_many(1);
    })
    .join()
    .unwrap();
    r.switch_to_atomic_sync();
    assert_eq!(
        r.count_atomic(),
        2,
        "the initial reference and the late one"
    );
}

/// A thread that exits while a read-side section is still open (its guard
/// kept in a thread-local destroyed after the backend's slot owner) keeps
/// its slot: no other thread may get it while the late unlock can still
/// write its section word. (It was handed on at once; two threads then
/// updated one word with plain stores, and a section could be lost to a
/// grace period: found by a soundness audit.)
#[test]
fn a_slot_with_an_open_section_is_not_handed_on() {
    use refcnt::host::HostReadGuard;
    use std::cell::RefCell;
    static HOLDER_DROPPING: AtomicBool = AtomicBool::new(false);
    static MAY_DROP: AtomicBool = AtomicBool::new(false);
    struct Holder(RefCell<Option<HostReadGuard>>);
    impl Drop for Holder {
        fn drop(&mut self) {
            HOLDER_DROPPING.store(true, SeqCst);
            while !MAY_DROP.load(SeqCst) {
                std::thread::yield_now();
            }
            drop(self.0.borrow_mut().take());
        }
    }
    thread_local! { static HOLD: Holder = const { Holder(RefCell::new(None)) }; }
    let (tx, rx) = mpsc::channel();
    let t1 = std::thread::spawn(move || {
        // Registered before the slot owner, so destroyed after it.
        HOLD.with(|_| {});
        let g = Host::read_lock_sched();
        tx.send(cpu()).unwrap();
        HOLD.with(|h| *h.0.borrow_mut() = Some(g));
    });
    let t1_slot = rx.recv().unwrap();
    while !HOLDER_DROPPING.load(SeqCst) {
        std::thread::yield_now();
    }
    // T1's slot owner is gone, its section still open: a new thread must
    // get another slot.
    let t2_slot = std::thread::spawn(cpu).join().unwrap();
    MAY_DROP.store(true, SeqCst);
    t1.join().unwrap();
    assert_ne!(
        t2_slot, t1_slot,
        "a slot with an open section was handed on"
    );
}
