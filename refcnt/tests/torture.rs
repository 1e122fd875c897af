//! Bounded host torture test (its own binary, so the global misuse counters
//! see only this test): workers get, put, tryget and tryget_live at random
//! while a controller kills, resurrects, reinits and switches modes.
#![cfg(all(feature = "std", not(loom)))]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use refcnt::host::{take_reports, Host};
use refcnt::misuse::misuse_count;
use refcnt::percpu_ref::{Flags, PercpuRef};
use refcnt::Misuse;

/// xorshift: no dependency, reproducible per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// Epoch word: (epoch << 1) | confirmed.
fn worker(r: &PercpuRef<Host>, state: &AtomicU64, stop: &AtomicBool, seed: u64) -> usize {
    let mut rng = Rng(seed);
    let mut ops = 0;
    let limit = if cfg!(miri) { 300 } else { usize::MAX };
    while !stop.load(SeqCst) && ops < limit {
        ops += 1;
        match rng.below(4) {
            0 => {
                let before = state.load(SeqCst);
                if let Some(g) = r.tryget_live() {
                    let after = state.load(SeqCst);
                    assert!(
                        !(before & 1 == 1 && before >> 1 == after >> 1),
                        "tryget_live succeeded after kill was confirmed"
                    );
                    let _g2 = r.get(); // nested get while holding: legal
                    drop(g);
                }
            }
            // tryget on a dead ref succeeds while references remain, so
            // workers that kept using it could hold the count above zero
            // for ever; real users stop once the ref is dying.
            _ if r.is_dying() => std::thread::yield_now(),
            1 => {
                if r.tryget_many(3) {
                    r.get_many(2);
                    r.put_many(4);
                    r.put();
                }
            }
            2 => {
                if let Some(g) = r.tryget() {
                    std::hint::black_box(&g);
                }
            }
            _ => {
                // Take on this thread, drop on another CPU slot later is
                // what the mode switches must survive: hold across a yield.
                if let Some(g) = r.tryget() {
                    std::thread::yield_now();
                    drop(g);
                }
            }
        }
    }
    assert_eq!(take_reports(), []);
    ops
}

#[test]
fn torture() {
    let before: Vec<usize> = Misuse::ALL.iter().map(|&m| misuse_count(m)).collect();
    let (threads, duration, lives) = if cfg!(miri) {
        (2, Duration::from_millis(1), 3)
    } else {
        (4, Duration::from_secs(2), usize::MAX)
    };
    let released = Arc::new(AtomicUsize::new(0));
    let rel = released.clone();
    let r = Arc::new(
        PercpuRef::<Host>::new(
            move || {
                rel.fetch_add(1, SeqCst);
            },
            Flags::ALLOW_REINIT,
        )
        .unwrap(),
    );
    let state = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (r, state, stop) = (r.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || worker(&r, &state, &stop, 0x9e37_79b9_7f4a_7c15 ^ (i + 1)))
        })
        .collect();

    let mut rng = Rng(12345);
    let start = Instant::now();
    let mut life = 0;
    while start.elapsed() < duration || life < 2 {
        if life >= lives {
            break;
        }
        for _ in 0..rng.below(4) {
            match rng.below(3) {
                0 => r.switch_to_atomic(|| {}),
                1 => r.switch_to_atomic_sync(),
                _ => r.switch_to_percpu(),
            }
            std::thread::yield_now();
        }
        let epoch = state.load(SeqCst) >> 1;
        let st = state.clone();
        assert!(r.kill_and_confirm(move || st.store((epoch << 1) | 1, SeqCst)));
        let t0 = Instant::now();
        while state.load(SeqCst) & 1 == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "kill never confirmed: {r:?}"
            );
            std::thread::yield_now();
        }
        if rng.below(4) == 0 {
            // Resurrect, possibly before the release: same life or next.
            state.store((epoch + 1) << 1, SeqCst);
            assert!(r.resurrect());
        } else {
            let t0 = Instant::now();
            while r.stats().releases < r.stats().lives {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "never released: {r:?}"
                );
                std::thread::yield_now();
            }
            r.wait_for_release();
            let s = r.stats();
            assert_eq!(s.releases, s.lives, "release once per life");
            assert_eq!(released.load(SeqCst), s.releases);
            assert!(r.is_zero());
            state.store((epoch + 1) << 1, SeqCst);
            if rng.below(2) == 0 {
                assert!(r.reinit());
            } else {
                assert!(r.resurrect());
            }
            life += 1;
        }
    }
    stop.store(true, SeqCst);
    let ops: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(r.kill());
    r.wait_for_release();
    let s = r.stats();
    assert_eq!(s.releases, s.lives);
    assert_eq!(released.load(SeqCst), s.releases);
    assert!(r.is_zero());
    assert_eq!(r.count_atomic(), 0);
    assert_eq!(take_reports(), []);
    let after: Vec<usize> = Misuse::ALL.iter().map(|&m| misuse_count(m)).collect();
    assert_eq!(before, after, "misuse reported during the torture test");
    eprintln!(
        "torture: {ops} worker ops, {} lives, {} switches to atomic",
        s.lives, s.switches_to_atomic
    );
}
