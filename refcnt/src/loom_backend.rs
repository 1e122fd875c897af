//! A backend for the loom model checker (`--cfg loom`), as weak as the
//! [`Backend`] promises: the kernel's rcu-sched grace periods
//! (`kernel/src/sync/rcu.rs`) with exactly its fences, and read-side
//! sections with no fence at all.
//!
//! # What it models
//!
//! A few CPU slots ([`LOOM_CPUS`]), one per loom thread, brought up at the
//! thread's first use of the backend. Each CPU has, as the kernel's
//! per-CPU area has:
//!
//! * a *section word*: the read-side nesting depth, a `WANTED` bit (the
//!   grace-period IPI landed in the section in progress: its outermost exit
//!   owes a report) and an `IN_IRQ` bit (a request is being handled for this
//!   CPU, see below);
//! * a *tick* flag: a timer tick landed in the section in progress;
//! * a *quiescent-state count* (the kernel's `QUIESCENT`), raised by every
//!   report;
//! * the latest grace-period number the CPU has reported for (`GP_SEEN`).
//!
//! A read-side section is one `Acquire` increment of the section word on
//! entry and one `Release` decrement on exit, and nothing else: no fence,
//! as the kernel's `inc gs:`/`sub gs:`. They are read-modify-writes because
//! a request for this CPU is handled by another loom thread (loom cannot
//! interrupt a thread): an interrupt cannot land inside an `inc`, and the
//! RMWs keep the request and the CPU's own entry and exit in one order, as
//! running the handler on the CPU itself does. The entry's `Acquire` gives
//! a section what the report's fence gives it in the kernel after a report
//! made for its CPU by a request (below), and nothing from the section's
//! own CPU; the exit's `Release` is x86 store order in the kernel: a report
//! that sees the exit sees the section's writes.
//!
//! A grace period asks the other CPUs for a quiescent state (`ask`):
//! `synchronize_sched` once, its IPI; [`run_pending`], the callback
//! thread, at every poll, a timer tick on each CPU that still holds the
//! oldest callback up. As `percpu::quiescent_state` in the kernel:
//!
//! * a CPU asked outside its sections reports at once: the asker marks it
//!   `IN_IRQ` (the CPU is interrupted: its next section entry waits until
//!   the handler returns), reports for it (with the report's fence), and
//!   clears the bit with `Release`, which that next entry acquires;
//! * a CPU asked inside one owes a report, which its outermost exit makes
//!   itself: the *deferred report*. The IPI sets `WANTED` with `Release`
//!   and the exit clears it with `Acquire` (the kernel's IPI is sent after
//!   the new grace-period number, and the report must see that number); a
//!   tick sets its flag `Relaxed`, read `Relaxed` at the exit: a tick is a
//!   local timer and carries nothing from any updater. (Not in the section
//!   word: the ticking thread has fenced, and any write of it there would
//!   head a release sequence that the CPU's `Acquire` entry synchronizes
//!   with.) A tick that the exit misses is made up by the next poll.
//!
//! A report (`report`) mirrors `report_quiescent`: the count (a `Release`
//! add: the kernel's plain store, ordered after the CPU's earlier stores by
//! x86), an `Acquire` load of the grace-period number, `GP_SEEN`
//! (`Release`), then a `SeqCst` fence.
//!
//! * `synchronize_sched`: a `SeqCst` fence, the `SeqCst` increment of the
//!   number, the IPI to every other online CPU, an answer for its own CPU
//!   whenever its `GP_SEEN` is behind, a wait until every other CPU's
//!   `GP_SEEN` has reached the number (`Relaxed` loads), and a `SeqCst`
//!   fence: the kernel's, in the kernel's places.
//! * `call_sched`: a `SeqCst` fence, then a snapshot of every online CPU's
//!   count (`Relaxed`), queued with the callback. [`run_pending`] runs the
//!   oldest callback once every CPU of its snapshot has a larger count,
//!   after a `SeqCst` fence (the kernel's `is_ready` and callback thread).
//!   So a CPU that reports at the end of a section and then, in its next
//!   section, loads what the updater stored is exactly the kernel's
//!   store-buffering case: only the report's fence, paired with
//!   `call_sched`'s, keeps that load from passing the count's store.
//!   [`set_deferred_report_fence`] drops the deferred report's fence, as
//!   in the kernel before item 10's fix, and loom then finds the callback
//!   running while such a section still uses the old value (the tests
//!   `deferred_report_without_fence_is_found` and
//!   `switch_by_call_sched_without_report_fence_is_found`; without
//!   `call_sched`'s fence three models fail too).
//!
//! Grace periods wait only for the sections that were open when their
//! request reached the CPU: a section that begins after a report (the
//! CPU's own, or one made for it) is not waited for, and sees the updater's
//! writes through that report's ordering only. A request reaches a CPU
//! outside its sections at any point of its program between two sections,
//! whether or not it calls into the backend there, so a load and a store
//! that belong in one section but are not in one are split by a grace
//! period (item 2: `tryget_live_never_counts_after_confirm`).
//!
//! # What it does not model, and why that is no stronger
//!
//! * The host's membarrier (loom cannot), and the host's fallback, a
//!   `SeqCst` fence at every section entry: the entry here has none, which
//!   is weaker. The host has no fence at a section's exit; here a deferred
//!   report ends with one, as in the kernel, but only when a request landed
//!   in that section: loom also explores the schedules where it came after
//!   the exit (and its report was made for the idle CPU, whose later
//!   sections acquire only that report).
//! * Interrupts at every instruction: a request is handled between the
//!   target's own accesses to its section word, which for a CPU outside its
//!   sections is any point (it does not access the word there).
//! * Instruction-range sections (the kernel's fast paths): the default
//!   [`Backend::this_cpu_add_unless`] and [`Backend::this_cpu_add_sched`]
//!   put the add in a section here, which orders nothing more.
//! * Re-sent IPIs (`GP_REASK`): every request here is answered.
//! * CPU hotplug: a CPU comes up (`Acquire`) after the grace periods that
//!   counted the online CPUs (a `Release` RMW, `online`) and did not wait
//!   for it, as hotplug and grace periods exclude each other in the kernel;
//!   it never goes down (a finished thread is an idle CPU).
//! * loom itself: a `SeqCst` fence joins one global happens-before order
//!   (stronger than C++: a `Relaxed` count read by a fenced waiter would
//!   pass for a `Release` one), `SeqCst` accesses count as `AcqRel`, and
//!   fences are no reason to try another schedule. Only the kernel's
//!   fences are `SeqCst` here, and no access is.
//! * The backend's own state is a `loom::lazy_static`, whose first access
//!   hands its thread's causality to every later access: models create it
//!   (`alloc_percpu`, a section, [`set_deferred_report_fence`]) before they
//!   spawn threads.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::marker::PhantomData;

use loom::sync::atomic::{
    fence, AtomicBool, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use loom::sync::Mutex;

use crate::backend::{AllocError, Backend, CallbackContext, Report};
use crate::misuse::Misuse;

/// How many loom threads (CPUs) a model may use, main thread included.
pub const LOOM_CPUS: usize = 4;

/// Section word: the grace-period IPI landed inside the section in
/// progress; its outermost exit owes a report.
const WANTED: usize = 1 << (usize::BITS - 1);
/// Section word: another loom thread is handling a request for this CPU
/// (the CPU is "interrupted"): its next section entry waits.
const IN_IRQ: usize = 1 << (usize::BITS - 2);
/// Section word: the nesting depth.
const DEPTH: usize = IN_IRQ - 1;

type Callback = Box<dyn FnOnce() + Send>;
type AtomicCallback = Box<dyn FnOnce(CallbackContext) + Send>;

struct Cpu {
    section: AtomicUsize,
    /// A tick landed inside the section in progress: its outermost exit
    /// owes a report.
    tick: AtomicBool,
    quiescent: AtomicUsize,
    gp_seen: AtomicUsize,
}

struct Waiting {
    /// Quiescent-state counts of the CPUs online at `call_sched`.
    snapshot: Vec<usize>,
    /// Told its context: `call_sched_atomic`'s callbacks run as the
    /// kernel's run at the end of a round (`Atomic`), so a landing that
    /// finds the control lock held by another thread hands itself on.
    callback: AtomicCallback,
    atomic: bool,
}

struct State {
    next_cpu: AtomicUsize,
    cpus: [Cpu; LOOM_CPUS],
    gp_seq: AtomicUsize,
    queue: Mutex<VecDeque<Waiting>>,
    reports: AtomicUsize,
    /// Model configuration, not modelled memory (a std atomic: loom does
    /// not see it). Reset for every execution with the rest of `State`.
    deferred_report_fence: core::sync::atomic::AtomicBool,
}

loom::lazy_static! {
    static ref STATE: State = State {
        next_cpu: AtomicUsize::new(0),
        cpus: core::array::from_fn(|_| Cpu {
            section: AtomicUsize::new(0),
            tick: AtomicBool::new(false),
            quiescent: AtomicUsize::new(0),
            gp_seen: AtomicUsize::new(0),
        }),
        gp_seq: AtomicUsize::new(0),
        queue: Mutex::new(VecDeque::new()),
        reports: AtomicUsize::new(0),
        deferred_report_fence: core::sync::atomic::AtomicBool::new(true),
    };
}

fn state() -> &'static State {
    &STATE
}

loom::thread_local! {
    static CPU: usize = bring_up();
}

/// The calling thread's first use of the backend: a CPU comes online.
fn bring_up() -> usize {
    // Acquire: pairs with the Release of `online`. A grace period that
    // counted the CPUs before this one came up does not wait for it, so its
    // sections must see what preceded that grace period (in the kernel,
    // CPU hotplug and grace periods exclude each other).
    state().next_cpu.fetch_add(1, Acquire)
}

/// How many CPUs are online (have been brought up; a CPU whose thread has
/// ended stays online, idle, and reports when asked). Called by a grace
/// period after its start (its fence).
fn online() -> usize {
    // Release, and an RMW (it adds 0) so that it reads the latest count:
    // a CPU that comes up later reads this (or a later) value with its
    // Acquire in `bring_up`, and so comes after the grace period's start.
    // The count itself needs no ordering.
    state().next_cpu.fetch_add(0, Release).min(LOOM_CPUS)
}

fn cpu() -> usize {
    let c = CPU.with(|c| *c);
    assert!(c < LOOM_CPUS, "too many loom threads for LOOM_CPUS");
    c
}

fn depth_of(me: usize) -> usize {
    // Relaxed: our own word; only its depth bits are used, which only we
    // change.
    state().cpus[me].section.load(Relaxed) & DEPTH
}

/// Whether the deferred report (at the end of a section that a grace
/// period asked) ends with its `SeqCst` fence, as the kernel's
/// `report_quiescent` does since item 10 was fixed. On by default, for
/// every execution; a model that wants the unfixed kernel calls
/// `set_deferred_report_fence(false)` at the start of each execution
/// (before it spawns threads). Only the deferred report is affected:
/// reports at once (a request outside any section) keep their fence.
pub fn set_deferred_report_fence(on: bool) {
    // Relaxed (a std atomic): configuration, set before any thread of this
    // execution exists.
    state()
        .deferred_report_fence
        .store(on, core::sync::atomic::Ordering::Relaxed);
}

/// A quiescent state of CPU `c`, as the kernel's `report_quiescent` run on
/// `c`: by `c` itself, or by a thread handling a request for `c` while `c`
/// is held off (`IN_IRQ`). `full_fence` is false only for a deferred report
/// with the fence dropped ([`set_deferred_report_fence`]).
fn report(c: usize, full_fence: bool) {
    let st = state();
    let cpu = &st.cpus[c];
    // Release: a waiter that sees the new count (`Relaxed` loads, then its
    // `SeqCst` fence) sees everything `c` did before the report, its ended
    // sections included; the kernel's plain add gets that from x86 store
    // order. An RMW, not a load and a store, only because a report for `c`
    // may also be made by another loom thread (`ask`), where the kernel
    // runs it on `c` between whole instructions.
    cpu.quiescent.fetch_add(1, Release);
    // Acquire: pairs with the SeqCst increment in `synchronize_sched`: `c`'s
    // later sections see what preceded that grace period.
    let seq = st.gp_seq.load(Acquire);
    // Relaxed: decides only whether to store, as the kernel's `get`; a
    // stale value just stores again.
    if seq > cpu.gp_seen.load(Relaxed) {
        // Release: as for the count (the kernel's plain store). An RMW
        // for the same reason as the count's.
        cpu.gp_seen.fetch_max(seq, Release);
    }
    if full_fence {
        // SeqCst: the kernel's fence at the end of every report: the count
        // is visible before any later load of `c`, in particular those of
        // its next section; pairs with the fence in `call_sched` before
        // its snapshot (store buffering, see the module docs).
        fence(SeqCst);
    }
}

/// A grace period's request to CPU `c` (not the caller's): the IPI of
/// `synchronize_sched` (`ipi`) or a timer tick (for `call_sched`), handled
/// as the kernel's `percpu::quiescent_state` is on `c`.
fn ask(c: usize, ipi: bool) {
    let cpu = &state().cpus[c];
    let w = &cpu.section;
    // The usual case first: an idle CPU (depth 0, no bits), so that no
    // separate load is needed.
    let mut s = 0;
    loop {
        if s & IN_IRQ != 0 {
            // Another request is being handled: interrupts on one CPU run
            // one after another.
            loom::thread::yield_now();
            // Relaxed: only a guess for the CAS below, which checks it.
            s = w.load(Relaxed);
            continue;
        }
        if s & (DEPTH | WANTED) == 0 {
            // Outside every section, nothing owed: report now, holding the
            // CPU off (IN_IRQ) as the interrupt would. Acquire: the
            // sections that `c` ended (Release exits) come before the
            // report. Relaxed on failure: we retry.
            match w.compare_exchange(s, s | IN_IRQ, Acquire, Relaxed) {
                Ok(_) => {
                    report(c, true);
                    // Release: `c`'s next section entry (Acquire, which
                    // waits for this) comes after the report and its
                    // fence, as on the kernel's CPU after the interrupt
                    // returns.
                    w.fetch_and(!IN_IRQ, Release);
                    return;
                }
                Err(now) => s = now,
            }
        } else if ipi {
            // Inside a section (or its deferred report has not yet cleared
            // the bit): the outermost exit reports. Release: the kernel
            // sends the IPI after the new grace-period number, and the
            // deferred report (Acquire) must see that number. An IPI that
            // finds the bit set already still writes it, to pass that on.
            // Relaxed on failure: we retry.
            match w.compare_exchange(s, s | WANTED, Release, Relaxed) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        } else {
            // A tick inside a section: the outermost exit reports. Not in
            // the section word: the asker has fenced (`call_sched`), and
            // any write of it to that word would head a release sequence
            // that the CPU's `Acquire` entry then synchronizes with, where
            // the kernel's tick, a local timer, carries nothing from any
            // updater. Relaxed for the same reason. Not atomic with the
            // exit: a tick that the exit misses is made up by the next
            // (the callback thread asks again while it waits), as in the
            // kernel.
            cpu.tick.store(true, Relaxed);
            return;
        }
    }
}

/// The kernel's callback thread: runs the queued `call_sched` callbacks in
/// order, each once every CPU of its snapshot has reported since, asking
/// those that have not for a report (a timer tick) while the oldest is not
/// ready. Returns when the queue is empty (callbacks queued by the
/// callbacks included). Not from inside a read-side section.
pub fn run_pending() {
    let me = cpu();
    assert_eq!(depth_of(me), 0, "run_pending inside a read-side section");
    let st = state();
    loop {
        let ready = {
            let mut q = st.queue.lock().unwrap();
            let Some(head) = q.front() else {
                return;
            };
            // The CPUs online at the snapshot (the kernel checks those
            // online now: one that came up since is in no section that
            // began before `call_sched`, see `bring_up`) that have not
            // reported since.
            let lagging: Vec<usize> = (0..head.snapshot.len())
                // Relaxed: the SeqCst fence below orders what the reports
                // published (their Release adds) before the callback.
                .filter(|&c| st.cpus[c].quiescent.load(Relaxed) <= head.snapshot[c])
                .collect();
            if lagging.is_empty() {
                Ok(q.pop_front().unwrap())
            } else {
                Err(lagging)
            }
        };
        match ready {
            Ok(w) => {
                // SeqCst: the ended sections' writes come before the
                // callback (the kernel's `run_ready_callbacks`).
                fence(SeqCst);
                (w.callback)(if w.atomic {
                    CallbackContext::Atomic
                } else {
                    CallbackContext::Worker
                });
            }
            Err(lagging) => {
                // A tick on every CPU the oldest callback still waits for
                // (this one is outside its sections: the callback thread
                // sleeps, and the tick reports at once). Only those: in
                // the kernel the ticks of the other CPUs are independent
                // of this thread, and a report here, with its fence, on
                // every poll would order this thread's writes before the
                // other CPUs' reports where the kernel does not.
                for c in lagging {
                    if c == me {
                        report(me, true);
                    } else {
                        ask(c, false);
                    }
                }
                loom::thread::yield_now();
            }
        }
    }
}

/// Queues a callback behind a snapshot of the counts, as the kernel's
/// `call_sched` and `call_sched_atomic` do.
fn queue(f: AtomicCallback, atomic: bool) {
    let st = state();
    // SeqCst: the caller's writes are visible before the snapshot's
    // loads; pairs with the fence that ends every report.
    fence(SeqCst);
    let snapshot = st.cpus[..online()]
        .iter()
        // Relaxed: the kernel's `read_remote`; the fence above orders it.
        .map(|cpu| cpu.quiescent.load(Relaxed))
        .collect();
    st.queue.lock().unwrap().push_back(Waiting {
        snapshot,
        callback: f,
        atomic,
    });
}

/// Misuse reports in this execution of the model. Read it after joining
/// the threads that may have reported.
pub fn reports() -> usize {
    // Relaxed: bookkeeping, read after the joins that order it.
    state().reports.load(Relaxed)
}

/// The loom backend.
#[derive(Debug)]
pub struct Loom;

/// Section guard of [`Loom`].
pub struct LoomGuard {
    cpu: usize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for LoomGuard {
    fn drop(&mut self) {
        let cpu = &state().cpus[self.cpu];
        let w = &cpu.section;
        // Release: everything done in the section comes before a report
        // that sees the exit (made here, or for this CPU later by `ask`,
        // whose Acquire CAS reads it); x86 store order in the kernel.
        let old = w.fetch_sub(1, Release);
        if old & DEPTH != 1 {
            return;
        }
        let ipi = old & WANTED != 0;
        if ipi {
            // Acquire: the IPI was sent after its grace-period number; the
            // report below must see the number (in the kernel the
            // interrupt ran on this CPU after it was sent).
            w.fetch_and(!WANTED, Acquire);
        }
        // Relaxed: a tick orders nothing; this only decides whether to
        // report (the kernel's `rs_wanted`).
        let tick = cpu.tick.load(Relaxed);
        if tick {
            // Relaxed: as above.
            cpu.tick.store(false, Relaxed);
        }
        if ipi || tick {
            // The deferred report. Relaxed (a std atomic): configuration.
            let fence_on = state()
                .deferred_report_fence
                .load(core::sync::atomic::Ordering::Relaxed);
            report(self.cpu, fence_on);
        }
    }
}

impl Report for Loom {
    fn report(_m: Misuse) {
        // Relaxed: bookkeeping only; an ordering here would add
        // happens-before edges between the threads that report misuse.
        state().reports.fetch_add(1, Relaxed);
    }
}

// SAFETY: (1) each loom thread has its own slot and writes only it, with
// nothing else on that "CPU"; (2) sum reads all slots; (3) a grace period
// ends only when every other CPU has reported after its request, and a
// CPU reports only outside its sections: at once when asked outside, or
// at the end of the section it was asked in, so every section that began
// before the request has ended; the reports' Release adds and the final
// SeqCst fence make those sections' writes visible, and a section after a
// report sees the updater's writes through the report's Acquire load of
// the number (synchronize), its SeqCst fence paired with call_sched's, or
// (a report made by the asker) the Release clear of IN_IRQ that the
// section's entry acquires; a CPU that came up after the grace period
// counted the online CPUs acquired that count (the module docs); (4) callbacks run once, from `run_pending`, after
// such a grace period; (5) the defaults wrap load, test and add in a
// section; (6) the default fast path loads its word Acquire; (7) `key` is
// the default 0.
unsafe impl Backend for Loom {
    type PerCpu = Box<[AtomicUsize]>;
    type ReadGuard = LoomGuard;

    fn alloc_percpu(slots: usize) -> Result<Self::PerCpu, AllocError> {
        // The backend's state is created here at the latest, by the model's
        // first thread (see the module docs).
        let _ = state();
        Ok((0..slots * LOOM_CPUS)
            .map(|_| AtomicUsize::new(0))
            .collect())
    }

    fn this_cpu_add(p: &Self::PerCpu, slot: usize, delta: usize) {
        let n = p.len() / LOOM_CPUS;
        let c = &p[cpu() * n + slot];
        // Relaxed load and store: only this CPU writes its slot (a plain
        // `add gs:`); sections and grace periods order it.
        c.store(c.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    fn sum(p: &Self::PerCpu, slot: usize) -> usize {
        let n = p.len() / LOOM_CPUS;
        (0..LOOM_CPUS)
            // Relaxed: the grace period before a meaningful sum ordered
            // the adds.
            .map(|c| p[c * n + slot].load(Relaxed))
            .fold(0, usize::wrapping_add)
    }

    fn this_cpu_read(p: &Self::PerCpu, slot: usize) -> Option<usize> {
        let n = p.len() / LOOM_CPUS;
        // Relaxed: a plain `gs:` load; the default fast path fences
        // Acquire after it (promise 7).
        Some(p[cpu() * n + slot].load(Relaxed))
    }

    fn read_lock_sched() -> LoomGuard {
        let cpu = cpu();
        let w = &state().cpus[cpu].section;
        // Acquire: pairs with the Release that ends a report made for
        // this CPU by another thread (`ask`): this section comes after that
        // report and its fence. No fence: the kernel's entry is one `inc`.
        let old = w.fetch_add(1, Acquire);
        assert!(
            old & DEPTH < DEPTH - 1,
            "read-side sections nested too deep"
        );
        if old & IN_IRQ != 0 {
            // "Interrupted": the section begins when the handler returns.
            // Acquire: as above.
            while w.load(Acquire) & IN_IRQ != 0 {
                loom::thread::yield_now();
            }
        }
        LoomGuard {
            cpu,
            _not_send: PhantomData,
        }
    }

    fn synchronize_sched() {
        let st = state();
        let me = cpu();
        assert_eq!(
            depth_of(me),
            0,
            "synchronize_sched inside a read-side section would wait for itself"
        );
        // SeqCst: the caller's writes are visible before the new number.
        fence(SeqCst);
        // SeqCst: the kernel's increment (loom treats it as AcqRel).
        let seq = st.gp_seq.fetch_add(1, SeqCst) + 1;
        // The IPI, to every other CPU online now (one that comes up later
        // comes after this point, see `bring_up`).
        let others: Vec<usize> = (0..online()).filter(|&c| c != me).collect();
        for &c in &others {
            ask(c, true);
        }
        loop {
            // Answer for ourselves (another CPU's grace period may wait for
            // us). Relaxed: as in the kernel, only decides whether to report;
            // the report orders itself.
            if st.cpus[me].gp_seen.load(Relaxed) < st.gp_seq.load(Relaxed) {
                report(me, true);
            }
            let done = others
                .iter()
                // Relaxed: the SeqCst fence below orders the reports.
                .all(|&c| st.cpus[c].gp_seen.load(Relaxed) >= seq);
            if done {
                break;
            }
            loom::thread::yield_now();
        }
        // SeqCst: the ended sections' writes come before what the caller
        // does next.
        fence(SeqCst);
    }

    fn call_sched(f: Callback) {
        queue(Box::new(move |_| f()), false);
    }

    fn call_sched_atomic(f: AtomicCallback) {
        queue(f, true);
    }

    fn now_ns() -> u64 {
        0
    }

    fn relax() {
        loom::thread::yield_now();
    }
}
