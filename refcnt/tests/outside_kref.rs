//! An outside user's tests: refcnt::kref against kref.h / refcount_t.
//!
//! Written as black-box tests from Linux's documented semantics (the
//! headers and Documentation/ named above) by a user of the crate, beside
//! `linux_semantics.rs`. Not under Miri, for the same reason as that file:
//! their threads wait in real time.
#![cfg(all(feature = "std", not(loom), not(miri)))]
use refcnt::kref::Kref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;

// kref_get_unless_zero racing with the final puts: exactly one release,
// and no get_unless_zero succeeds after it (Documentation/core-api/kref.rst).
#[test]
fn r01_get_unless_zero_stress() {
    for _ in 0..200 {
        let k = Arc::new(Kref::new());
        let released = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicBool::new(false));
        let bar = Arc::new(Barrier::new(4));
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let (k, released, bad, bar) =
                    (k.clone(), released.clone(), bad.clone(), bar.clone());
                thread::spawn(move || {
                    bar.wait();
                    for _ in 0..200 {
                        if k.get_unless_zero() {
                            if released.load(SeqCst) != 0 {
                                bad.store(true, SeqCst);
                            }
                            k.put(|| {
                                released.fetch_add(1, SeqCst);
                            });
                        }
                    }
                })
            })
            .collect();
        bar.wait();
        k.put(|| {
            released.fetch_add(1, SeqCst);
        });
        for h in hs {
            h.join().unwrap();
        }
        assert!(!bad.load(SeqCst), "get_unless_zero succeeded after release");
        assert_eq!(released.load(SeqCst), 1);
        assert_eq!(k.read(), 0);
        assert!(!k.is_saturated());
    }
}

// Balanced concurrent get/put leaves the count unchanged; the final put
// releases once.
#[test]
fn r02_concurrent_get_put_balanced() {
    let k = Arc::new(Kref::new());
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let k = k.clone();
            thread::spawn(move || {
                for _ in 0..20000 {
                    k.get();
                    assert!(!k.put(|| panic!("released early")));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(k.read(), 1);
    let mut n = 0;
    assert!(k.put(|| n += 1));
    assert_eq!(n, 1);
}

// Puts after release racing on several threads: no second release, and
// the count ends saturated (refcount_t: "use-after-free", object leaked).
#[test]
fn r03_racing_puts_after_zero_never_release() {
    let k = Arc::new(Kref::new());
    assert!(k.put(|| {}));
    let rel = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..3)
        .map(|_| {
            let (k, rel) = (k.clone(), rel.clone());
            thread::spawn(move || {
                for _ in 0..100 {
                    k.put(|| {
                        rel.fetch_add(1, SeqCst);
                    });
                    k.get();
                    k.put(|| {
                        rel.fetch_add(1, SeqCst);
                    });
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(rel.load(SeqCst), 0, "released again after zero");
    assert!(k.is_saturated());
    assert!(k.get_unless_zero(), "saturated count stays saturated");
}

// release must see every holder's writes (kref_put's release ordering).
#[test]
fn r04_release_sees_holders_writes() {
    for _ in 0..200 {
        let k = Arc::new(Kref::new());
        let data = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(usize::MAX));
        let hs: Vec<_> = (0..3)
            .map(|_| {
                k.get();
                let (k, data, seen) = (k.clone(), data.clone(), seen.clone());
                thread::spawn(move || {
                    data.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    k.put(|| seen.store(data.load(std::sync::atomic::Ordering::Relaxed), SeqCst));
                })
            })
            .collect();
        k.put(|| seen.store(data.load(std::sync::atomic::Ordering::Relaxed), SeqCst));
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(seen.load(SeqCst), 3);
    }
}
