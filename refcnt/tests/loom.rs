//! loom models of the percpu_ref races. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p refcnt --release --test loom`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use loom::sync::Arc;
use loom::thread;
use refcnt::loom_backend::{reports, run_pending, set_deferred_report_fence, Loom};
use refcnt::percpu_ref::{Flags, PercpuRef};
use refcnt::Backend;

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
/// (Item 2: with the section removed from `tryget_live_slow`, loom finds
/// the late count at once, the request of the confirmation's grace period
/// landing between the mode's load and the increment.)
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

/// The store-buffering window of `call_sched` (issue 18, item 10), as a
/// litmus test through the backend's own API: a CPU ends a section that a
/// grace period asked for (its deferred report) and, in its next section,
/// loads a flag; the updater stores the flag and queues a callback with
/// `call_sched`, which snapshots the report counts. If the snapshot misses
/// the report while the next section's load misses the flag, the callback
/// runs while that section still uses the old value: loom reports the
/// section's read of the old cell and the callback's write to it as
/// unordered. The report's fence (on in the kernel since the fix) forbids
/// it.
fn deferred_report_litmus(report_fence: bool) {
    model(move || {
        set_deferred_report_fence(report_fence);
        let old = Arc::new(Shared(UnsafeCell::new(1)));
        let flag = Arc::new(AtomicUsize::new(0));
        let (o, f) = (old.clone(), flag.clone());
        let t = thread::spawn(move || {
            // Section 0: a tick that lands inside makes its exit report.
            drop(Loom::read_lock_sched());
            let section = Loom::read_lock_sched();
            // Relaxed: the plain load of a section.
            if f.load(Relaxed) == 0 {
                // SAFETY: loom checks this read against the callback's
                // write, which must wait for this section.
                let v = o.0.with(|p| unsafe { *p });
                assert_eq!(v, 1, "the section read the freed value");
            }
            drop(section);
        });
        // Relaxed: the plain store of an updater; call_sched fences.
        flag.store(1, Relaxed);
        let o = old.clone();
        Loom::call_sched(Box::new(move || {
            // SAFETY: loom checks this write against the section's read.
            o.0.with_mut(|p| unsafe { *p = 0xdead });
        }));
        run_pending();
        t.join().unwrap();
    });
}

/// A cell that the litmus frees in a callback; loom checks its accesses.
struct Shared(UnsafeCell<u32>);
// SAFETY: every access goes through loom's `with`/`with_mut`, which report
// accesses not ordered by happens-before; finding those is the point.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

#[test]
fn deferred_report_then_section_is_ordered_for_call_sched() {
    deferred_report_litmus(true);
}

/// Item 10 before its fix: without the fence at the end of the deferred
/// report, loom finds the callback running while a section that began
/// after the report still reads the old value.
#[test]
#[should_panic(expected = "Causality violation")]
fn deferred_report_without_fence_is_found() {
    deferred_report_litmus(false);
}

/// The same window through percpu_ref: a switch to atomic mode whose grace
/// period is a `call_sched` callback (`switch_to_atomic`, the fold in the
/// callback) while another CPU gets and puts by its per-CPU fast path. The
/// get's section ends with the deferred report; the put's section must see
/// the atomic flag, or its per-CPU change lands after the fold and is lost.
fn switch_by_call_sched_vs_get_put(report_fence: bool) {
    model(move || {
        set_deferred_report_fence(report_fence);
        let (r, released) = counting_ref(Flags::empty());
        let r1 = r.clone();
        let t = thread::spawn(move || drop(r1.get()));
        r.switch_to_atomic(|| {});
        run_pending();
        t.join().unwrap();
        assert_eq!(
            r.count_atomic(),
            1,
            "a per-CPU change landed after the switch's fold"
        );
        assert!(r.kill());
        assert_eq!(released.load(SeqCst), 1);
        assert_eq!(reports(), 0);
    });
}

#[test]
fn switch_by_call_sched_vs_get_put_is_exact() {
    switch_by_call_sched_vs_get_put(true);
}

/// Item 10 before its fix, through percpu_ref: loom finds the lost put.
#[test]
#[should_panic(expected = "a per-CPU change landed after the switch's fold")]
fn switch_by_call_sched_without_report_fence_is_found() {
    switch_by_call_sched_vs_get_put(false);
}

/// A dynamic ref's first switch to per-CPU allocates its counters while
/// another CPU gets and puts through the idle key: the new counters are
/// published with their flags already set, so a get that finds them
/// counts atomically until the bias is in; no put can take the shared
/// count to zero under a held reference. (Publishing the counters before
/// setting their flags lets the get count per-CPU with no bias and its
/// put count atomically: loom then finds the early release.)
#[test]
fn dynamic_first_switch_allocates_while_getting() {
    model(|| {
        let (r, released) = counting_ref(Flags::DYNAMIC);
        assert!(!r.stats().percpu);
        let r1 = r.clone();
        let t = thread::spawn(move || drop(r1.get()));
        r.switch_to_percpu();
        t.join().unwrap();
        assert!(r.stats().percpu);
        assert_eq!(
            released.load(SeqCst),
            0,
            "released under the initial reference"
        );
        r.kill();
        run_pending();
        assert_eq!(released.load(SeqCst), 1);
        assert_eq!(reports(), 0);
    });
}

/// A switch back to per-CPU that lands in a grace-period callback has no
/// handle to clear the fast paths' word in: a get on another CPU finds the
/// mode per-CPU and clears the word's flag (under the control lock),
/// racing a kill that sets it again. Every reference is counted once and
/// release runs once, after the last put. (With the flag cleared from the
/// mode read outside the lock, loom finds a get that counts per-CPU after
/// the kill's fold: an early release, or a count that never reaches
/// zero.)
#[test]
fn word_catch_up_vs_kill() {
    model(|| {
        let (r, released) = counting_ref(Flags::empty());
        // In flight, then wanted per-CPU: the landing goes per-CPU.
        r.switch_to_atomic(|| {});
        r.switch_to_percpu();
        // The thread's reference, which it puts after its own gets.
        r.get_many(1);
        let r1 = r.clone();
        let rel = released.clone();
        let t = thread::spawn(move || {
            r1.get_many(1);
            r1.get_many(1);
            assert_eq!(rel.load(SeqCst), 0, "released while held");
            r1.put_many(3);
        });
        run_pending();
        r.kill();
        run_pending();
        t.join().unwrap();
        assert_eq!(released.load(SeqCst), 1);
        assert!(r.is_zero());
        assert_eq!(reports(), 0, "{:?}", r.take_reports());
    });
}
