//! loom models of SRCU. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p refcnt --release --test srcu_loom`.
//!
//! A "pointer" is an index into two loom cells; the updater publishes a new
//! index, waits for a grace period, and then writes poison into the old
//! cell. loom reports a data race if a reader's read of that cell is not
//! ordered before the poisoning, which is exactly "a reader that could see
//! the old value has finished when synchronize returns".
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use refcnt::loom_backend::{reports, Loom};
use refcnt::srcu::{Flavour, Srcu};

const POISON: u32 = 0xdead;

struct World {
    srcu: Srcu<Loom>,
    ptr: AtomicUsize,
    cells: [UnsafeCell<u32>; 3],
}

// SAFETY: the cells are only touched through loom's `with`/`with_mut`,
// which report every access not ordered by happens-before; catching such
// accesses is the point of the models. (Needed only so `call` may move a
// handle to the world into its `Send` callback.)
unsafe impl Sync for World {}
// SAFETY: as above.
unsafe impl Send for World {}

impl World {
    fn new(flavour: Flavour) -> Arc<Self> {
        Arc::new(World {
            srcu: Srcu::with_flavour(flavour).unwrap(),
            ptr: AtomicUsize::new(0),
            cells: [UnsafeCell::new(1), UnsafeCell::new(2), UnsafeCell::new(3)],
        })
    }

    /// One read section: dereference the pointer and check the value.
    fn read(&self) {
        let g = self.srcu.read_lock();
        // Acquire: the value was written before it was published.
        let v = self.ptr.load(Ordering::Acquire);
        // SAFETY: loom checks this read against the updater's poisoning
        // write and reports any access not ordered by a grace period.
        let x = self.cells[v].with(|p| unsafe { *p });
        assert_ne!(x, POISON, "reader saw a freed value");
        drop(g);
    }

    /// Publish `next`, wait for a grace period, poison the old value.
    fn update(&self, next: usize) {
        // Release: publish (the cell was initialised at construction).
        let old = self.ptr.swap(next, Ordering::AcqRel);
        self.srcu.synchronize().unwrap();
        // SAFETY: as in `read`: loom checks the ordering.
        self.cells[old].with_mut(|p| unsafe { *p = POISON });
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f);
}

fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    // Grace-period waits spin (yielding) until readers leave.
    b.max_branches = 10_000;
    b.check(f);
}

/// A reader that began before synchronize started has finished when
/// synchronize returns (and a later one sees the new value).
fn reader_vs_synchronize(flavour: Flavour) {
    model(move || {
        let w = World::new(flavour);
        let w2 = w.clone();
        let t = thread::spawn(move || w2.read());
        w.update(1);
        t.join().unwrap();
        assert_eq!(reports(), 0);
    });
}

#[test]
fn normal_reader_vs_synchronize() {
    reader_vs_synchronize(Flavour::Normal);
}

#[test]
fn fast_reader_vs_synchronize() {
    reader_vs_synchronize(Flavour::Fast);
}

/// A rogue thread unlocks both indexes while a guard's reader runs: both
/// unlocks are refused (no raw section is open), so the grace period still
/// waits for the reader and its read is ordered before the poisoning.
/// (Before `raw_open`, an unlock of an index some reader held was taken,
/// always in the fast flavour: the counters balanced under the live guard
/// and loom saw the read race with the poison.)
fn rogue_unlock_vs_guard(flavour: Flavour) {
    model(move || {
        let w = World::new(flavour);
        let (w1, w2) = (w.clone(), w.clone());
        let rogue = thread::spawn(move || {
            let refused = [w1.srcu.up_read(0), w1.srcu.read_unlock(1)];
            assert!(refused.iter().all(Result::is_err), "{refused:?}");
        });
        let reader = thread::spawn(move || w2.read());
        w.update(1);
        rogue.join().unwrap();
        reader.join().unwrap();
        assert_eq!(w.srcu.readers(), 0);
    });
}

#[test]
fn normal_rogue_unlock_vs_guard() {
    rogue_unlock_vs_guard(Flavour::Normal);
}

#[test]
fn fast_rogue_unlock_vs_guard() {
    rogue_unlock_vs_guard(Flavour::Fast);
}

/// The index-flip race: a reader reads the active index, stalls while a
/// whole grace period flips it, and only then counts itself on what has
/// become the inactive index. The second grace period must still wait for
/// it (scan 1 exists for this).
fn flip_race(flavour: Flavour) {
    model(move || {
        let w = World::new(flavour);
        let w2 = w.clone();
        let t = thread::spawn(move || w2.read());
        w.update(1);
        w.update(2);
        t.join().unwrap();
        assert_eq!(w.srcu.completed(), 2);
    });
}

#[test]
fn normal_flip_race() {
    flip_race(Flavour::Normal);
}

#[test]
fn fast_flip_race() {
    flip_race(Flavour::Fast);
}

/// `call`: the callback (run by the worker that `call_sched` schedules)
/// is ordered after every reader that could see the old value.
#[test]
fn call_after_reader() {
    model(|| {
        let w = World::new(Flavour::Normal);
        let w2 = w.clone();
        let t = thread::spawn(move || w2.read());
        let old = w.ptr.swap(1, Ordering::AcqRel);
        let w3 = w.clone();
        w.srcu.call(move || {
            // SAFETY: loom checks the ordering against the reader.
            w3.cells[old].with_mut(|p| unsafe { *p = POISON });
        });
        refcnt::loom_backend::run_pending();
        t.join().unwrap();
        assert_eq!(reports(), 0);
    });
}

/// Two updaters at once share or serialise grace periods; each one's old
/// value outlives the reader. (Three threads, two of them spinning: a
/// preemption bound of 2 keeps it to a second; 3 runs for many minutes.)
#[test]
fn concurrent_updaters() {
    model_bounded(2, || {
        let w = World::new(Flavour::Normal);
        let (w2, w3) = (w.clone(), w.clone());
        let r = thread::spawn(move || w2.read());
        let u = thread::spawn(move || w3.update(2));
        w.update(1);
        r.join().unwrap();
        u.join().unwrap();
        assert!(w.srcu.completed() >= 1);
    });
}
