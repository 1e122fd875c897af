//! `--mode live` (the bare primitives, without a block layer; `--mode io` is
//! the default): every CPU pushes requests
//! through the primitives, the way a block layer's submit/complete loop
//! does, and the boot CPU prints live statistics once a second.
//!
//! - The queue's usage counter is a `percpu_ref`, as in Linux's blk-mq:
//!   a submitter takes a reference per request with `tryget_live`, the
//!   completion puts it, often on another CPU (a completion handed to
//!   whichever CPU picks it up, like an interrupt on another core).
//! - Once a second the boot CPU *freezes* the queue: `kill_and_confirm`
//!   (new submissions are refused once every CPU sees the ref dead), waits
//!   for the release (every request in flight has completed), then
//!   `resurrect`s it. The time from kill to release is the drain latency.
//! - Submitters read the queue's limits through an SRCU-protected pointer
//!   (`SrcuPtr`); the boot CPU publishes new limits every second and frees
//!   the old ones after an SRCU grace period.
//!
//! At the end it checks that every accepted request completed exactly once
//! and that every freeze released once, and exits with failure if not.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

use refcnt::percpu_ref::{Flags, PercpuRef};
use refcnt::srcu::{Srcu, SrcuPtr};

use crate::arch::{percpu, smp, time};
use crate::println;
use crate::sync::backend::Kernel;

crate::percpu! {
    /// Requests this CPU submitted (took a usage reference for).
    static SUBMITTED: PerCpu<u64> = 0;
    /// Requests this CPU completed (put a usage reference for).
    static COMPLETED: PerCpu<u64> = 0;
    /// Submissions this CPU had refused (queue frozen).
    static REFUSED: PerCpu<u64> = 0;
}

/// Queue limits, replaced under SRCU.
struct Limits {
    generation: u64,
    max_sectors: u64,
}

struct Queue {
    usage: PercpuRef<Kernel>,
    frozen: Arc<AtomicBool>,
    srcu: Srcu<Kernel>,
    limits: SrcuPtr<Limits, Kernel>,
    /// Completions waiting for any CPU to pick them up.
    handoff: AtomicUsize,
    stop: AtomicBool,
    bad_limits: AtomicU64,
}

/// Submits one request: a usage reference, a look at the limits under
/// SRCU, then completion here or, with `hand_off`, by whichever CPU picks
/// it up. False when the queue is frozen.
fn submit_one(q: &Queue, hand_off: bool) -> bool {
    let Some(request) = q.usage.tryget_live() else {
        REFUSED.add(1);
        return false;
    };
    {
        let guard = q.srcu.read_lock();
        let limits = q.limits.read(&guard);
        if limits.max_sectors != 256 + limits.generation % 256 {
            q.bad_limits.fetch_add(1, SeqCst);
        }
    }
    SUBMITTED.add(1);
    if hand_off {
        request.leak();
        q.handoff.fetch_add(1, SeqCst);
    } else {
        drop(request);
        COMPLETED.add(1);
    }
    true
}

fn submit_loop(q: &Queue) {
    let mut n = 0u64;
    while !q.stop.load(SeqCst) {
        n += 1;
        if !submit_one(q, n % 2 == 0) {
            core::hint::spin_loop();
        }
        complete_handed_off(q);
    }
}

fn complete_handed_off(q: &Queue) {
    if crate::sync::take_one(&q.handoff) {
        q.usage.put();
        COMPLETED.add(1);
    }
}

fn sum(counter: &'static percpu::PerCpu<u64>) -> u64 {
    counter.sum()
}

/// Runs the live workload for `seconds`; returns whether every check held.
pub fn run(seconds: u64) -> bool {
    let frozen = Arc::new(AtomicBool::new(false));
    let f = frozen.clone();
    let srcu = Srcu::new().expect("per-CPU memory");
    let limits = SrcuPtr::new(
        &srcu,
        Limits {
            generation: 0,
            max_sectors: 256,
        },
    );
    let q = Arc::new(Queue {
        usage: PercpuRef::new(move || f.store(true, SeqCst), Flags::empty())
            .expect("per-CPU memory"),
        frozen,
        srcu,
        limits,
        handoff: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        bad_limits: AtomicU64::new(0),
    });
    let workers: Vec<_> = smp::online()
        .skip(1)
        .map(|cpu| {
            let q = q.clone();
            crate::sched::spawn_job(cpu, move || submit_loop(&q))
        })
        .collect();
    println!(
        "live: {} submitting cpus, {} s; each second: freeze (kill, drain, resurrect) and new limits under SRCU",
        workers.len().max(1),
        seconds
    );
    let start = time::now_ns();
    let mut last = (0, 0, 0, start);
    let mut freezes = 0u64;
    let mut worst_drain_us = 0;
    for second in 1..=seconds {
        // One second of load; with a single CPU the boot CPU submits itself.
        while time::now_ns() < start + second * 1_000_000_000 {
            if workers.is_empty() {
                submit_one_batch(&q);
            } else {
                smp::wait_for(10, || false);
            }
        }
        let now = time::now_ns();
        let (sub, done, refused) = (sum(&SUBMITTED), sum(&COMPLETED), sum(&REFUSED));
        let secs = (now - last.3) as f64 / 1e9;
        // Freeze: refuse new requests, wait for the ones in flight, thaw.
        let t0 = time::now_ns();
        q.usage.kill_and_confirm(|| {});
        let drained = smp::wait_for(5_000, || {
            complete_handed_off(&q);
            q.frozen.load(SeqCst)
        });
        let drain_us = (time::now_ns() - t0) / 1000;
        worst_drain_us = worst_drain_us.max(drain_us);
        if !drained {
            println!("live: the queue did not drain within 5 s");
            q.stop.store(true, SeqCst);
            return false;
        }
        freezes += 1;
        q.frozen.store(false, SeqCst);
        q.usage.resurrect();
        // New limits; the old ones are freed after an SRCU grace period.
        let t1 = time::now_ns();
        let _old = q
            .limits
            .replace(Limits {
                generation: second,
                max_sectors: 256 + second % 256,
            })
            .expect("not inside a read section"); // freed here, after the grace period
        let srcu_us = (time::now_ns() - t1) / 1000;
        println!(
            "live: t={second:>3}s submitted {:>9.0}/s completed {:>9.0}/s refused {:>7.0}/s | freeze drain {:>6} us | srcu replace {:>5} us | mode {:?} | srcu grace periods {}",
            (sub - last.0) as f64 / secs,
            (done - last.1) as f64 / secs,
            (refused - last.2) as f64 / secs,
            drain_us,
            srcu_us,
            q.usage.stats().mode,
            q.srcu.completed()
        );
        last = (sub, done, refused, now);
    }
    q.stop.store(true, SeqCst);
    for w in &workers {
        if !w.join(10_000) {
            println!("live: a submitter did not stop");
            return false;
        }
    }
    while q.handoff.load(SeqCst) > 0 {
        complete_handed_off(&q);
    }
    let (sub, done) = (sum(&SUBMITTED), sum(&COMPLETED));
    let stats = q.usage.stats();
    let ok = sub == done && stats.releases as u64 == freezes && q.bad_limits.load(SeqCst) == 0;
    println!(
        "live: done: {sub} requests submitted, {done} completed, {freezes} freezes ({} releases, worst drain {worst_drain_us} us), {} switches to atomic, bad limits seen {}: {}",
        stats.releases,
        stats.switches_to_atomic,
        q.bad_limits.load(SeqCst),
        if ok { "ok" } else { "FAILED" }
    );
    ok
}

/// With no other CPU, the boot CPU submits for a few milliseconds itself.
fn submit_one_batch(q: &Queue) {
    let deadline = time::now_ns() + 5_000_000;
    while time::now_ns() < deadline && submit_one(q, false) {}
}
