//! Helpers of the outside-user suites (`linux_semantics.rs`,
//! `outside_percpu_ref.rs`, `outside_srcu.rs`, `outside_kref.rs`, and the
//! second user's `outside2_*.rs`).
#![allow(dead_code)]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use refcnt::host::Host;
use refcnt::srcu::{Kind, Srcu};

/// Runs `synchronize` on a new thread; the flag says when it has returned.
pub fn spawn_sync<K: Kind>(s: &Arc<Srcu<Host, K>>) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let (s, d) = (s.clone(), done.clone());
    let h = thread::spawn(move || {
        s.synchronize().unwrap();
        d.store(true, SeqCst);
    });
    (done, h)
}

/// Poll `f` for up to 10 s (room for a host that leaves a thread unrun a
/// while; what a bug stops never comes).
pub fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > Duration::from_secs(10) {
            panic!("timed out (10 s) waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `f` on a new thread and returns its result; fails the test if it
/// has not returned within 10 s. A panic in `f` is the test's panic.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let h = thread::spawn(f);
    let t = Instant::now();
    while !h.is_finished() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what}: still running after 10 s"
        );
        thread::sleep(Duration::from_millis(1));
    }
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A thread inside a read section (a guard) until told to leave.
pub struct Reader {
    leave: std::sync::mpsc::Sender<()>,
    h: thread::JoinHandle<()>,
}

/// Starts a [`Reader`] of `s`; returns once it is inside.
pub fn reader(s: &Arc<Srcu<Host>>) -> Reader {
    let (in_tx, in_rx) = std::sync::mpsc::channel();
    let (leave, leave_rx) = std::sync::mpsc::channel::<()>();
    let s = s.clone();
    let h = thread::spawn(move || {
        let g = s.read_lock();
        in_tx.send(()).unwrap();
        leave_rx.recv().unwrap();
        drop(g);
    });
    in_rx.recv().unwrap();
    Reader { leave, h }
}

impl Reader {
    /// Leaves the section and ends the thread.
    pub fn leave(self) {
        self.leave.send(()).unwrap();
        self.h.join().unwrap();
    }
}

/// The index a section entered now would count on.
pub fn index_now(s: &Srcu<Host>) -> usize {
    let i = s.read_lock_raw();
    s.read_unlock(i).unwrap();
    i
}

/// Waits (10 s at most) until sections enter on another index than
/// `from`: the grace period in progress has flipped. A fixed sleep is not
/// enough when the host leaves the updater's thread unrun for a while.
pub fn wait_flip(s: &Srcu<Host>, from: usize) {
    until("the grace period flips", || index_now(s) != from);
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

thread_local! {
    static REPORTS: std::cell::RefCell<Vec<refcnt::Misuse>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A report sink (for `Kref::<Record>`) that records misuse per thread, so
/// tests running in parallel do not see each other's reports.
pub struct Record;

impl refcnt::Report for Record {
    fn report(m: refcnt::Misuse) {
        REPORTS.with(|r| r.borrow_mut().push(m));
    }
}

/// What [`Record`] recorded on this thread since the last call.
pub fn recorded() -> Vec<refcnt::Misuse> {
    REPORTS.with(|r| std::mem::take(&mut *r.borrow_mut()))
}
