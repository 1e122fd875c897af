//! Bounded SRCU torture test: readers hold the object an [`SrcuPtr`]
//! publishes (sometimes sleeping with it) and check it was never freed
//! under them, while updaters replace it, freeing old objects through
//! `synchronize` (`replace`), through callbacks (`replace_deferred`) and
//! through the polling interface. Freed objects are poisoned first, so a
//! reader that outlives its object's grace period sees the poison (and
//! under Miri, the use after free itself is caught).
#![cfg(all(feature = "std", not(loom)))]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use refcnt::host::{take_reports, Host};
use refcnt::srcu::{Flavour, Srcu, SrcuPtr};

const LIVE: u64 = 0x600d_600d_600d_600d;
const POISON: u64 = 0xdead_dead_dead_dead;

static CREATED: AtomicUsize = AtomicUsize::new(0);
static FREED: AtomicUsize = AtomicUsize::new(0);

struct Obj {
    state: AtomicU64,
    serial: u64,
}

impl Obj {
    fn new(serial: u64) -> Self {
        CREATED.fetch_add(1, SeqCst);
        Obj {
            state: AtomicU64::new(LIVE),
            serial,
        }
    }
    fn check(&self) {
        let s = self.state.load(SeqCst);
        assert_eq!(s, LIVE, "object {} used after free", self.serial);
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        self.check();
        self.state.store(POISON, SeqCst);
        FREED.fetch_add(1, SeqCst);
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn torture(flavour: Flavour, budget: Duration) {
    let srcu = Arc::new(Srcu::<Host>::with_flavour(flavour).unwrap());
    let serial = Arc::new(AtomicU64::new(1));
    let ptr = Arc::new(SrcuPtr::new(&srcu, Obj::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let limit = if cfg!(miri) { 20 } else { u64::MAX };

    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (srcu, ptr, stop) = (srcu.clone(), ptr.clone(), stop.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9 + r);
                let mut n = 0;
                while !stop.load(SeqCst) && n < limit {
                    n += 1;
                    let g = srcu.read_lock();
                    let o = ptr.read(&g);
                    o.check();
                    match rng.below(64) {
                        0 => thread::sleep(Duration::from_micros(200)),
                        1..=8 => thread::yield_now(),
                        _ => {}
                    }
                    // Nested section of the same domain, on the same object.
                    let g2 = srcu.read_lock();
                    ptr.read(&g2).check();
                    drop(g2);
                    o.check();
                    drop(g);
                }
                n
            })
        })
        .collect();

    let updaters: Vec<_> = (0..2)
        .map(|u| {
            let (srcu, ptr, stop, serial) =
                (srcu.clone(), ptr.clone(), stop.clone(), serial.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x51ed_2701 + u);
                let mut n = 0;
                while !stop.load(SeqCst) && n < limit {
                    n += 1;
                    let next = Obj::new(serial.fetch_add(1, SeqCst));
                    match rng.below(4) {
                        0 => {
                            let old = ptr.replace(next).unwrap();
                            old.check();
                        }
                        1 => ptr.replace_deferred(next),
                        2 => {
                            // Hold the old value past a polled grace period.
                            let mut keep = Vec::new();
                            let c = srcu.get_state();
                            keep.push(ptr.replace(next).unwrap());
                            if rng.below(2) == 0 {
                                srcu.synchronize_expedited().unwrap();
                            } else {
                                while !srcu.poll_state(c) {
                                    thread::yield_now();
                                }
                            }
                            keep[0].check();
                        }
                        _ => {
                            // Start a poll and keep going; the worker runs it.
                            let c = srcu.start_poll();
                            ptr.replace_deferred(next);
                            if rng.below(8) == 0 {
                                while !srcu.poll_state(c) {
                                    thread::yield_now();
                                }
                            }
                        }
                    }
                }
                n
            })
        })
        .collect();

    let t0 = Instant::now();
    while t0.elapsed() < budget && !readers.iter().all(|t| t.is_finished()) {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, SeqCst);
    let reads: u64 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    let updates: u64 = updaters.into_iter().map(|t| t.join().unwrap()).sum();
    srcu.barrier().unwrap();
    let ptr = Arc::try_unwrap(ptr).ok().unwrap();
    drop(ptr);
    eprintln!(
        "{flavour:?}: {reads} read sections, {updates} updates, {} grace periods",
        srcu.completed()
    );
    assert!(reads > 0 && updates > 0);
    assert!(take_reports().is_empty());
    Arc::try_unwrap(srcu).unwrap().cleanup().unwrap();
}

#[test]
fn torture_both_flavours() {
    // Under Miri the loops stop after a few iterations instead.
    let budget = Duration::from_millis(if cfg!(miri) { 3_600_000 } else { 1000 });
    torture(Flavour::Normal, budget);
    torture(Flavour::Fast, budget);
    assert_eq!(
        CREATED.load(SeqCst),
        FREED.load(SeqCst),
        "every object freed once"
    );
}
