//! Helpers of the outside-user suites (`linux_semantics.rs`,
//! `outside_percpu_ref.rs`, `outside_srcu.rs`, `outside_kref.rs`).
#![allow(dead_code)]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use refcnt::host::Host;
use refcnt::srcu::Srcu;

/// Runs `synchronize` on a new thread; the flag says when it has returned.
pub fn spawn_sync(s: &Arc<Srcu<Host>>) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let (s, d) = (s.clone(), done.clone());
    let h = thread::spawn(move || {
        s.synchronize().unwrap();
        d.store(true, SeqCst);
    });
    (done, h)
}

/// Poll `f` for up to 5 s.
pub fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > Duration::from_secs(5) {
            panic!("timed out waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// True if `f` stays false for `ms` milliseconds.
pub fn stays_false(ms: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(ms) {
        if f() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    !f()
}

pub fn ms(n: u64) {
    std::thread::sleep(Duration::from_millis(n));
}

/// An ordered event log shared with callbacks.
#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<&'static str>>>);
impl Log {
    pub fn push(&self, s: &'static str) {
        self.0.lock().unwrap().push(s);
    }
    pub fn get(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Clone, Default)]
pub struct Counter(pub Arc<AtomicUsize>);
impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, SeqCst);
    }
    pub fn get(&self) -> usize {
        self.0.load(SeqCst)
    }
}
