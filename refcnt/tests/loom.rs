//! loom models of the percpu_ref races. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p refcnt --release --test loom`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;
use refcnt::loom_backend::{reports, run_pending, Loom};
use refcnt::percpu_ref::{Flags, PercpuRef};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn counting_ref(flags: Flags) -> (Arc<PercpuRef<Loom>>, Arc<AtomicUsize>) {
    let released = Arc::new(AtomicUsize::new(0));
    let r2 = released.clone();
    let r = PercpuRef::<Loom>::new(
        move || {
            r2.fetch_add(1, SeqCst);
        },
        flags,
    )
    .unwrap();
    (Arc::new(r), released)
}

/// Switching to atomic while two other CPUs get and put: no change lost.
#[test]
fn switch_to_atomic_vs_get_put() {
    model(|| {
        let (r, released) = counting_ref(Flags::empty());
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                thread::spawn(move || {
                    let g = r.get();
                    drop(g);
                })
            })
            .collect();
        r.switch_to_atomic_sync();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(r.count_atomic(), 1);
        assert!(r.kill());
        assert!(r.is_zero());
        assert_eq!(released.load(SeqCst), 1);
        assert_eq!(reports(), 0);
    });
}

/// A reference taken on one CPU and dropped on another while the ref
/// switches: the per-CPU slots go negative and the fold is still exact.
#[test]
fn cross_cpu_put_during_switch() {
    model(|| {
        let (r, released) = counting_ref(Flags::empty());
        r.get_many(1);
        let r1 = r.clone();
        let t = thread::spawn(move || r1.put_many(1));
        r.switch_to_atomic_sync();
        t.join().unwrap();
        assert_eq!(r.count_atomic(), 1);
        r.kill();
        assert_eq!(released.load(SeqCst), 1);
        assert_eq!(reports(), 0);
    });
}

/// Once kill is confirmed, tryget_live fails on every CPU.
#[test]
fn kill_vs_tryget_live() {
    model(|| {
        let (r, released) = counting_ref(Flags::empty());
        let confirmed = Arc::new(AtomicBool::new(false));
        let (r1, c1) = (r.clone(), confirmed.clone());
        let t = thread::spawn(move || {
            let was_confirmed = c1.load(SeqCst);
            if let Some(g) = r1.tryget_live() {
                assert!(
                    !was_confirmed,
                    "tryget_live succeeded after kill was confirmed"
                );
                drop(g);
            }
        });
        let c2 = confirmed.clone();
        assert!(r.kill_and_confirm(move || c2.store(true, SeqCst)));
        run_pending();
        assert!(confirmed.load(SeqCst));
        t.join().unwrap();
        assert!(r.is_zero());
        assert_eq!(released.load(SeqCst), 1);
        assert_eq!(reports(), 0);
    });
}

/// The last put releases while another CPU resurrects: exactly one
/// release per life, and the new life is intact.
#[test]
fn release_vs_resurrect() {
    model(|| {
        let (r, released) = counting_ref(Flags::INIT_ATOMIC);
        r.get_many(1);
        assert!(r.kill());
        let r1 = r.clone();
        let t = thread::spawn(move || r1.put_many(1));
        assert!(r.resurrect());
        t.join().unwrap();
        let s = r.stats();
        assert_eq!(released.load(SeqCst), s.releases);
        assert_eq!(s.lives, 1 + s.releases);
        assert!(!r.is_dying());
        assert_eq!(r.count_atomic(), 1);
        assert!(r.kill());
        assert_eq!(released.load(SeqCst), s.releases + 1);
        assert_eq!(reports(), 0);
    });
}

/// A tryget_live that read the mode before the kill and counts after the
/// kill's confirmation would break the confirmation's promise (nobody gets
/// a new reference once it has run). The whole of tryget_live must be one
/// read-side section, so the confirmation's grace period waits for it.
#[test]
fn tryget_live_never_counts_after_confirm() {
    model(|| {
        let (r, _) = counting_ref(Flags::INIT_ATOMIC);
        // Held by this thread throughout, so the count never reaches zero
        // and a late tryget_live could succeed.
        r.get_many(1);
        let at_confirm = Arc::new(AtomicUsize::new(usize::MAX));
        let r1 = r.clone();
        let t = thread::spawn(move || {
            if let Some(g) = r1.tryget_live() {
                g.leak();
            }
        });
        let (r2, a2) = (r.clone(), at_confirm.clone());
        assert!(r.kill_and_confirm(move || a2.store(r2.count_atomic(), SeqCst)));
        run_pending();
        t.join().unwrap();
        // After the confirmation only puts may happen (the switch drops
        // the reference it held across its grace period), so the count
        // seen there must be above the final one; a reference counted after
        // the confirmation makes them equal.
        assert!(
            at_confirm.load(SeqCst) > r.count_atomic(),
            "tryget_live counted after the kill was confirmed"
        );
        assert_eq!(reports(), 0);
    });
}
