//! rcu-sched grace periods.
//!
//! A read-side section is a [`SchedGuard`](crate::arch::percpu::SchedGuard)
//! (a per-CPU nesting count, interrupts left on), a stretch with local
//! interrupts off, or a single instruction; the fast paths of percpu_ref
//! and SRCU-fast are such sections. A grace period asks every CPU for a
//! *quiescent state*: a moment in none of its sections. A CPU asked while
//! in no section reports at once; asked inside one, it reports when the
//! outermost section ends (see `arch::percpu::quiescent_state`). A CPU with
//! interrupts off is not asked until they are back on, and a `SchedGuard`
//! section that ends with interrupts off does not report either: the
//! interrupts-off stretch goes on being a section, so the report waits
//! until interrupts are on again (a self-IPI asks the CPU then, or the
//! next tick or grace-period request does, finding it outside any
//! section). So waiting for a grace period with interrupts off, or inside
//! a section, would wait for the caller itself: [`synchronize_sched`]
//! refuses both with a panic that names the CPU and the caller's place (as
//! the scheduler's "scheduling while atomic" check does).
//!
//! - [`synchronize_sched`]: bumps the grace-period number and sends every
//!   other CPU the grace-period IPI; each records the number it saw when it
//!   reports; the caller waits until every online CPU has recorded its
//!   number or a later one. Microseconds when the CPUs are idle or outside
//!   sections, not a tick.
//! - [`call_sched`]: queues a callback with a snapshot of every CPU's
//!   quiescent-state count; the callback is ready once every online CPU
//!   has reported (any report: an IPI's, a tick's, a section end's) after
//!   the snapshot. To make that prompt, `call_sched` starts an *expedited*
//!   grace period at once, unless one is in flight: it bumps the
//!   grace-period number and sends the grace-period IPI to every CPU, its
//!   own included (the asynchronous twin of `synchronize_sched`'s round).
//!   The CPU whose report ends that grace period (the last one to report
//!   the number, in its IPI handler or at the end of the section that
//!   deferred its report) wakes the callback thread ([`start`]) directly.
//!   So a callback runs within one IPI round (tens of microseconds on an
//!   idle machine under TCG), not at the next tick (4 ms). Batching: at
//!   most one expedited grace period is in flight; callbacks queued while
//!   it is ride the next one, which the CPU that ends the first starts
//!   (one pending at most, however many callbacks come: no IPI storm).
//!   The tick still reports and still wakes the callback thread when it
//!   finds the oldest callback ready, so nothing depends on the IPIs for
//!   progress; a CPU that has not answered (an IPI lost or not yet taken)
//!   is asked again by the next tick or waiter that finds the expedited
//!   grace period older than `GP_REASK` ([`poll_expedited`]). An IPI that
//!   lands in a per-CPU fast path sends it back to its start and reports
//!   at once (`arch::idt`).
//!
//! Ordering: the caller's writes are ordered before the new number (and
//! before the snapshot) by a `SeqCst` fence, and the IPI is sent after that.
//! A report loads the number with `Acquire`, so a CPU that recorded number
//! `n` reported after the writes that preceded `n`, and its sections that
//! begin later see them (on x86 the interrupt return in between is
//! serialising as well). A CPU's section writes precede its report in its
//! own program order, and x86 keeps stores in order, so a waiter that sees
//! the report sees the writes; the waiter's final `SeqCst` fence orders them
//! before what it does next.
//!
//! `call_sched` has no number for the report to load: it compares counts.
//! There the updater stores (its writes), fences, and loads each CPU's
//! count; the reporting CPU stores its count and then, in its next section,
//! loads what the updater wrote. That is the store-buffering pattern, and
//! x86 lets a load pass an earlier store to another address: without a
//! fence on the reporting side, the CPU's next section could read the old
//! value (its load done early) while its count store still sat in its
//! store buffer; the updater's snapshot then misses the new count, counts
//! the report as coming after the snapshot, and runs the callback while
//! that section still uses the old value. So every report's count store is
//! followed by a `SeqCst` fence (`report_quiescent`), which pairs with the
//! one in `call_sched`: with a fence on both sides, either the snapshot
//! sees the count (and waits for a later report) or the section sees the
//! writes. The expedited grace period changes none of this: whether a
//! callback may run is decided by the counts alone, as before; the
//! grace-period numbers of the expedited rounds only decide *when* to wake
//! the callback thread, so a mistake there could cost latency (the tick
//! would wake it), never safety. Three more orderings make the wakeup
//! exact, so that the latency claim holds too:
//!
//! 1. A report loads the number *before* it stores its count (load, then
//!    store: x86 never performs a store before an earlier load, and an
//!    `Acquire` load keeps later accesses after it in the language model).
//!    An expedited number `n` is made (`fetch_add`, a locked instruction)
//!    after the snapshots of every callback it serves were loaded (they are
//!    taken before the callback is queued, and `n` is made under the queue
//!    lock after the push, or later by the CPU that ends the previous
//!    round). So a report that loaded `n` stores its count after every
//!    such snapshot was loaded: the snapshots did not include it, and the
//!    count it leaves is above them. "Every online CPU has recorded `n`"
//!    therefore implies "every callback `n` serves is ready", and the
//!    thread the last reporter wakes finds its work ready. (With the count
//!    stored first, a CPU could store its count, be included in a
//!    snapshot, and only then load `n`: it would record `n` with a report
//!    the callback does not count, and the callback would wait for a tick.)
//! 2. Two CPUs that report the last two numbers at once must not each miss
//!    the other's: each stores its `GP_SEEN`, then loads the others' to see
//!    whether it was the last (store-buffering again). The same `SeqCst`
//!    fence after the count and `GP_SEEN` stores orders each CPU's store
//!    before its loads: of two such CPUs, the one whose fence comes second
//!    in the fences' total order sees both stores, and ends the round.
//! 3. The in-flight number (`EXP_IN_FLIGHT`) is stored before the starting
//!    CPU itself reports that number (its own IPI is taken once its
//!    interrupts are back on, after the store, or its report is deferred
//!    to later still). So the reporter whose fence is last in that order
//!    loads the in-flight number after the store as well, and sees it.
//!
//! # Idle CPUs
//! A CPU halted in the idle loop runs nothing that reads what a grace
//! period protects, so it is quiescent for as long as it halts (Linux's
//! dyntick-idle extended quiescent state). Each CPU keeps an idle sequence
//! (`arch::percpu::idle_enter`): odd while it halts, stepped on entry and
//! on the first instruction of every interrupt handler that ends the halt.
//! A grace period reads every CPU's sequence after its `SeqCst` fence and
//! counts a CPU quiescent if the value was odd, or has changed since (the
//! CPU went idle, a quiescent point, after the read); it sends the IPI
//! only to the others. So an IPI round costs what the busy CPUs take to
//! answer, and idle vCPUs, which the host would have to wake, are left
//! halted. `synchronize_sched` and the expedited rounds skip them; a
//! `call_sched` snapshot records the sequences beside the counts. The
//! ordering is store buffering once more: the updater writes, fences and
//! reads the sequence; the CPU leaving idle steps it, fences
//! (`idle_exit`), and only then runs the handler's sections. Either the
//! updater reads the new value (and asks or waits for the CPU as for any
//! other) or the sections see the writes. On entry, x86 performs the
//! CPU's earlier loads and stores before the odd value is visible, so an
//! updater that reads it finds the CPU's last sections over.
//!
//! The thread that is woken still takes the queue lock and checks the
//! counts before it runs anything, so the wakeup needs no ordering of its
//! own beyond the lock and the scheduler's (`wake` is `AcqRel`).
//!
//! Ready callbacks run in a kernel thread of their own (as Linux's rcuc
//! threads), not on a work queue: never from an interrupt handler and never
//! from inside the caller, so a callback may take locks, sleep or wait for
//! another grace period, and work items that sleep for long (SRCU's
//! grace-period worker waits for readers) cannot hold the callbacks up.
//! One thread runs them, so they run in queue order.
//!
//! Callbacks that never block ([`call_sched_atomic`]: percpu_ref's
//! switches, so a kill's fold and release) need not wait for that thread:
//! the CPU whose report ends the round runs those at the head of the
//! queue at once, with interrupts off, in its IPI handler (or where a
//! section that owed the report ended with interrupts on; the tick does
//! the same for one it finds ready). That saves the thread's wakeup, a
//! rescheduling IPI and a switch on the callback CPU (p50 up to 128 us
//! under load at -smp 2, more than the round itself). They still start
//! in queue order: only the head is ever taken, under the queue lock.
//!
//! [`synchronize_sched`] spins for a short budget (an idle machine answers
//! within it), then sleeps ([`super::wait`]); every report that advances a
//! CPU's grace-period number wakes the sleepers.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

use spin::Mutex;

use crate::arch::apic::{self, Delivery, Dest};
use crate::arch::percpu::{self, cpu_id, possible_cpus, IrqGuard};
use crate::arch::{smp, time};
use crate::sched::WaitQueue;
use refcnt::CallbackContext;

crate::percpu! {
    /// Quiescent states reported by this CPU (ticks outside sections and
    /// answered grace-period requests).
    static QUIESCENT: PerCpu<u64> = 0;
    /// The latest grace-period number this CPU has reported for.
    static GP_SEEN: PerCpu<u64> = 0;
    /// Grace periods this CPU has served (reports that advanced `GP_SEEN`).
    pub static GP_SERVED: PerCpu<u64> = 0;
}

/// How long [`synchronize_sched`] spins before it sleeps: several times
/// what an idle 8-CPU machine takes to answer under TCG (p50 ~65 us, with
/// a tail past 100 us: a 100 us budget put half the idle grace periods to
/// sleep and cost each a wakeup, p50 108 us). A grace period held up by
/// long sections (milliseconds under load) sleeps.
const GP_SPIN: Duration = Duration::from_micros(500);

/// How long [`synchronize_sched`] waits for a CPU's answer before it
/// sends that CPU the grace-period IPI again.
const GP_REASK: Duration = Duration::from_micros(200);

/// Number of the latest grace period started.
static GP_SEQ: AtomicU64 = AtomicU64::new(0);

/// This CPU is in no read-side section: say so.
fn report_quiescent() {
    // Acquire: pairs with the SeqCst increments of the number in
    // `synchronize_sched` and `start_expedited`; the writes before that
    // grace period are visible from here on. Loaded before the count is
    // stored (ordering 1 in the module documentation): a report that sees
    // an expedited number counts for every callback that number serves.
    let seq = GP_SEQ.load(Ordering::Acquire);
    QUIESCENT.add(1);
    let advanced = seq > GP_SEEN.get();
    if advanced {
        GP_SEEN.set(seq);
        GP_SERVED.add(1);
    }
    // SeqCst (an `mfence`): the count store above (and `GP_SEEN`'s) is
    // globally visible before any later load of this CPU, in particular
    // the loads of the next read-side section, wherever the report came
    // from (the tick, the grace-period IPI, the end of a section, a
    // synchronize_sched answering for its own CPU). Pairs with the SeqCst
    // fence in `call_sched` between the caller's writes and its snapshot of
    // the counts (the store-buffering argument in the module
    // documentation). Not covered by the `Acquire` load above: that orders
    // later accesses after the number's load, not loads after the count's
    // store. It also orders `GP_SEEN`'s store before the loads of the
    // other CPUs' in `expedited_reported` (ordering 2).
    fence(Ordering::SeqCst);
    if advanced {
        // A synchronize_sched may sleep on this report.
        super::wait::wake_waiters();
        // This may be the report that ends an expedited grace period.
        expedited_reported(seq);
    }
}

/// The grace-period IPI handler.
pub fn gp_ipi() {
    percpu::quiescent_state(report_quiescent);
}

/// Called from every CPU's timer tick: a quiescent state, now or at the
/// end of the section the tick interrupted (an interrupted per-CPU fast
/// path was sent back to its start first, see `arch::idt`).
pub fn tick() {
    percpu::quiescent_state(report_quiescent);
    poll_expedited();
    run_ready_atomic();
    wake_callback_thread_if_ready();
}

/// Panics unless the caller may wait for a grace period (`what`): with
/// interrupts off or inside a read-side section, the caller is itself in a
/// section that the grace period waits for, so the wait would never end.
#[track_caller]
fn refuse_wait_in_section(what: &str) {
    let place = core::panic::Location::caller();
    let cpu = cpu_id();
    if !::x86_64::instructions::interrupts::are_enabled() {
        panic!(
            "{what} called with interrupts off on cpu {cpu} at {place}: an interrupts-off stretch is an rcu-sched read-side section, so the grace period would wait for its own caller; turn interrupts on (drop the IrqGuard) first"
        );
    }
    let depth = percpu::sched_depth();
    if depth != 0 {
        panic!(
            "{what} called inside a read-side section on cpu {cpu} at {place} (a SchedGuard or SpinLock is held, depth {depth}): the grace period would wait for its own caller; end the section (drop the guard) first"
        );
    }
}

/// Waits until every CPU has left every read-side section it was in when
/// the call began.
///
/// # Panics
/// With interrupts off or inside a read-side section of this CPU: the
/// grace period would wait for the caller itself, forever.
#[track_caller]
pub fn synchronize_sched() {
    refuse_wait_in_section("synchronize_sched");
    // SeqCst: the caller's writes are visible before the new number is.
    fence(Ordering::SeqCst);
    let seq = GP_SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    let me = cpu_id();
    // Each other CPU with its idle sequence, read after the fence: one
    // idle now, or idle at any point from now on, is quiescent without
    // being asked (see "Idle CPUs" in the module documentation).
    let others: Vec<(usize, u64)> = smp::online()
        .filter(|&c| c != me)
        .map(|c| (c, percpu::idle_seq(c)))
        .collect();
    let answered = |&(cpu, idle): &(usize, u64)| {
        GP_SEEN.read_remote(cpu) >= seq || percpu::idle_quiet_since(cpu, idle)
    };
    let busy: Vec<usize> = others
        .iter()
        .filter(|o| !answered(o))
        .map(|&(c, _)| c)
        .collect();
    ask(&busy, busy.len() == others.len(), Dest::AllButSelf);
    // Belt and braces: ask the CPUs that have not answered again, every
    // `GP_REASK` (an IPI that lands in a per-CPU fast path restarts it and
    // reports at once, see `percpu::gs_add_unless`).
    let mut asked = time::now_ns();
    super::wait::wait_until(GP_SPIN, || {
        if time::now_ns().saturating_sub(asked) > GP_REASK.as_nanos() as u64 {
            asked = time::now_ns();
            for o in others.iter().filter(|o| !answered(o)) {
                ask_one(o.0);
            }
        }
        // Another CPU may be waiting for us with interrupts off; we are in
        // no section (interrupts were on and the depth 0 at the call, and
        // this loop reads nothing a grace period protects), so answer for
        // ourselves. Interrupts off: the report's read-modify-write of
        // this CPU's words must not interleave with the tick's or another
        // thread's on this CPU.
        IrqGuard::new().run(|| {
            if GP_SEEN.get() < GP_SEQ.load(Ordering::Relaxed) {
                report_quiescent();
            }
        });
        others.iter().all(answered)
    });
    // SeqCst: the ended sections' writes come before what the caller does.
    fence(Ordering::SeqCst);
}

/// A queued callback, by where it may run.
enum Callback {
    /// [`call_sched`]'s: in the callback thread only.
    Thread(Box<dyn FnOnce() + Send>),
    /// [`call_sched_atomic`]'s: never blocks, so the CPU that ends its
    /// grace period runs it at once (interrupts off), or the tick or the
    /// callback thread does, whichever finds it ready first.
    Atomic(Box<dyn FnOnce(CallbackContext) + Send>),
}

struct Waiting {
    /// Every CPU's quiescent-state count and idle sequence at the call.
    snapshot: Vec<(u64, u64)>,
    callback: Callback,
}

/// The queued callbacks and the expedited grace periods run for them.
struct Callbacks {
    /// Callbacks waiting for their grace period, oldest first.
    queue: VecDeque<Waiting>,
    /// Number of the expedited grace period in flight, 0 if none.
    in_flight: u64,
    /// Callbacks were queued after `in_flight` started: they need the next
    /// one, which the CPU that ends `in_flight` starts.
    pending: bool,
}

/// [`call_sched_atomic`] callbacks in `CALLBACKS`' queue. Changed under
/// its lock only.
static ATOMIC_QUEUED: AtomicUsize = AtomicUsize::new(0);

static CALLBACKS: Mutex<Callbacks> = Mutex::new(Callbacks {
    queue: VecDeque::new(),
    in_flight: 0,
    pending: false,
});

/// `Callbacks::in_flight`, readable without the lock: every report that
/// advances its CPU's `GP_SEEN` tests it (one load when it is 0). Written
/// under the lock only.
static EXP_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
/// Every CPU's idle sequence when the expedited grace period in flight
/// started: a CPU idle then, or since, owes it no report. Written under
/// the lock by `start_expedited`, before `EXP_IN_FLIGHT`.
static EXP_IDLE: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// When the expedited grace period in flight last asked the CPUs (ns).
static EXP_ASKED_NS: AtomicU64 = AtomicU64::new(0);
/// When the expedited grace period in flight started, and when the last
/// one ended (ns; statistics for [`expedited_histograms`]).
static EXP_START_NS: AtomicU64 = AtomicU64::new(0);
static EXP_END_NS: AtomicU64 = AtomicU64::new(0);
/// Log2 histograms (bucket `b`: under `2^b` us) of expedited rounds
/// (start to the last report) and of the waits for the first callback
/// after a round's end (run there and then when it never blocks, else
/// when the callback thread has been woken and scheduled).
static EXP_ROUND_US: [AtomicU64; HIST_BUCKETS] = [const { AtomicU64::new(0) }; HIST_BUCKETS];
static EXP_WAKE_US: [AtomicU64; HIST_BUCKETS] = [const { AtomicU64::new(0) }; HIST_BUCKETS];
/// Buckets of those histograms: the last one holds everything from
/// `2^(HIST_BUCKETS - 2)` us (about 0.5 s) up.
pub const HIST_BUCKETS: usize = 20;

fn hist_add(hist: &[AtomicU64; HIST_BUCKETS], ns: u64) {
    let us = ns / 1000;
    let b = (u64::BITS - us.leading_zeros()) as usize;
    // Relaxed: a statistic.
    hist[b.min(HIST_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
}

/// Expedited grace periods started, and `call_sched` calls (statistics).
static EXP_STARTED: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Runs `callback` after a grace period, in the callback thread. Starts an
/// expedited grace period for it at once, or has it ride the next one if
/// one is in flight (see the module documentation). Callable from any
/// context, with interrupts off or inside a read-side section too (this
/// CPU's report then waits for the section's end, as any other).
pub fn call_sched(callback: Box<dyn FnOnce() + Send>) {
    queue(Callback::Thread(callback));
}

/// As [`call_sched`], for a callback that never blocks (it must not sleep,
/// wait for a grace period, or spin on a lock the code it interrupts may
/// hold): the CPU whose report ends the grace period runs it there and
/// then, with interrupts off, so it runs within the IPI round instead of
/// after the callback thread's wakeup as well (tens of microseconds under
/// TCG). It is told which context it got ([`CallbackContext`]): the tick
/// or the callback thread may find it ready first (a round that did not
/// serve it, an IPI not answered), and the thread runs it as a worker.
/// Callbacks start in queue order either way; one may start while an
/// earlier `call_sched` callback is still running in the thread.
/// percpu_ref's switches to atomic (kill) land this way.
pub fn call_sched_atomic(callback: Box<dyn FnOnce(CallbackContext) + Send>) {
    queue(Callback::Atomic(callback));
}

/// Queues `callback` behind a snapshot of the CPUs' quiescent states and
/// starts an expedited grace period, or has it ride the next one.
fn queue(callback: Callback) {
    // SeqCst (an `mfence`): the caller's writes are globally visible before
    // the snapshot's loads. Pairs with the fence that follows every report's
    // count store (`report_quiescent`): see the module documentation.
    fence(Ordering::SeqCst);
    let snapshot = (0..possible_cpus())
        .map(|c| (QUIESCENT.read_remote(c), percpu::idle_seq(c)))
        .collect();
    // Relaxed: a statistic.
    CALLS.fetch_add(1, Ordering::Relaxed);
    // Interrupts off from the lock to the IPI: the number is stored as in
    // flight before this CPU can report it (ordering 3), and no tick can
    // preempt the caller between the new number and its IPI.
    let _irq = IrqGuard::new();
    let start = {
        let mut cbs = CALLBACKS.lock();
        if matches!(callback, Callback::Atomic(_)) {
            // Relaxed: under the lock, as every change of it.
            ATOMIC_QUEUED.fetch_add(1, Ordering::Relaxed);
        }
        cbs.queue.push_back(Waiting { snapshot, callback });
        if cbs.in_flight == 0 {
            start_expedited(&mut cbs);
            true
        } else {
            cbs.pending = true;
            false
        }
    };
    if start {
        ask_expedited();
    }
}

/// Sends the grace-period IPI to the CPUs in `busy`: one broadcast to
/// `all` when `busy` is every CPU it covers (one ICR write), else one
/// IPI each (the idle CPUs are left to sleep).
fn ask(busy: &[usize], every: bool, all: Dest) {
    if busy.is_empty() || !apic::ready() {
        return;
    }
    if every {
        apic::send_ipi(all, Delivery::Fixed(smp::GP_VECTOR));
    } else {
        for &cpu in busy {
            ask_one(cpu);
        }
    }
}

/// Sends `cpu` the grace-period IPI.
fn ask_one(cpu: usize) {
    apic::send_ipi(
        Dest::Apic(percpu::apic_id_of(cpu)),
        Delivery::Fixed(smp::GP_VECTOR),
    );
}

/// Starts an expedited grace period: a new number, in flight. The caller
/// holds the lock with interrupts off and sends the IPIs
/// ([`ask_expedited`]) once it has let go of the lock.
fn start_expedited(cbs: &mut Callbacks) {
    // SeqCst: as in `synchronize_sched`; made after the snapshots of every
    // queued callback were loaded (ordering 1).
    let n = GP_SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    cbs.in_flight = n;
    cbs.pending = false;
    // Read after the SeqCst increment, as in `synchronize_sched`. Relaxed
    // stores: the Release store of `EXP_IN_FLIGHT` below publishes them.
    for cpu in smp::online() {
        EXP_IDLE[cpu].store(percpu::idle_seq(cpu), Ordering::Relaxed);
    }
    // Release: the idle snapshots above come before `n` for whoever loads
    // it (with Acquire) and then tests `all_reported(n)`. Ordered before
    // this CPU's own report of `n` by program order and before the other
    // CPUs' tests by the reports' fences (ordering 3); a stale 0 only
    // skips a test that a later report or tick makes.
    EXP_IN_FLIGHT.store(n, Ordering::Release);
    let now = time::now_ns();
    EXP_ASKED_NS.store(now, Ordering::Relaxed);
    EXP_START_NS.store(now, Ordering::Relaxed);
    EXP_STARTED.fetch_add(1, Ordering::Relaxed);
}

/// Sends the expedited grace period's IPI to every online CPU that was not
/// idle at its start, this one included (its own arrives once its
/// interrupts are on; inside a section the report waits for the
/// section's end, as on any CPU).
fn ask_expedited() {
    let online = smp::online().count();
    let busy: Vec<usize> = smp::online()
        .filter(|&c| !idle_since_round_start(c))
        .collect();
    ask(&busy, busy.len() == online, Dest::All);
}

/// Whether every online CPU has reported grace period `n` or a later one,
/// or has been idle since `n` started.
fn all_reported(n: u64) -> bool {
    smp::online().all(|c| round_answered(c, n))
}

/// Whether `cpu` has reported expedited grace period `n` (or a later one),
/// or has been idle since the round in flight started.
fn round_answered(cpu: usize, n: u64) -> bool {
    GP_SEEN.read_remote(cpu) >= n || idle_since_round_start(cpu)
}

/// Whether `cpu` was idle when the expedited round in flight started, or
/// has been since (`EXP_IDLE`).
fn idle_since_round_start(cpu: usize) -> bool {
    // Relaxed: published by the Release store of `EXP_IN_FLIGHT`, which
    // the callers loaded with Acquire (or, in `ask_expedited`, wrote).
    percpu::idle_quiet_since(cpu, EXP_IDLE[cpu].load(Ordering::Relaxed))
}

/// From a report that advanced this CPU's `GP_SEEN` to `seq` (after its
/// fence): if that ended the expedited grace period in flight, hand it on.
fn expedited_reported(seq: u64) {
    // Acquire: after the report's fence (ordering 3); pairs with the
    // Release store in `start_expedited`, so the idle snapshots that
    // `all_reported` reads are `n`'s (or a later round's, which
    // `end_expedited` then finds not in flight).
    let n = EXP_IN_FLIGHT.load(Ordering::Acquire);
    if n != 0 && seq >= n && all_reported(n) {
        end_expedited(n);
    }
}

/// Expedited grace period `n` has ended (every online CPU recorded it):
/// start the pending one, if callbacks wait for it, and wake the callback
/// thread. Only the first CPU to get here for `n` does anything.
fn end_expedited(n: u64) {
    let _irq = IrqGuard::new();
    let start = {
        let mut cbs = CALLBACKS.lock();
        if cbs.in_flight != n {
            return; // ended by another CPU already
        }
        // Relaxed: statistics, under the lock.
        let now = time::now_ns();
        hist_add(
            &EXP_ROUND_US,
            now.saturating_sub(EXP_START_NS.load(Ordering::Relaxed)),
        );
        EXP_END_NS.store(now, Ordering::Relaxed);
        if cbs.pending {
            start_expedited(&mut cbs);
            true
        } else {
            cbs.in_flight = 0;
            EXP_IN_FLIGHT.store(0, Ordering::Relaxed);
            false
        }
    };
    if start {
        ask_expedited();
    }
    // The callbacks `n` served are ready (ordering 1): those that never
    // block run here, the thread runs the rest.
    run_ready_atomic();
    wake_callback_thread_if_ready();
}

/// Keeps an expedited grace period moving when its IPIs were not enough:
/// once it is older than `GP_REASK`, ends it if every CPU has in fact
/// reported (belt and braces: the last report ends it), or asks again the
/// CPUs that have not. Called by every
/// tick and by waiters while they spin ([`super::wait::wait_until`]); one
/// load when no expedited grace period is in flight.
pub fn poll_expedited() {
    // Acquire: as in `expedited_reported`; the lock in `end_expedited`
    // decides.
    let n = EXP_IN_FLIGHT.load(Ordering::Acquire);
    if n == 0 {
        return;
    }
    let asked = EXP_ASKED_NS.load(Ordering::Relaxed);
    let now = time::now_ns();
    if now.saturating_sub(asked) <= GP_REASK.as_nanos() as u64 {
        return;
    }
    if all_reported(n) {
        end_expedited(n);
        return;
    }
    // One asker per `GP_REASK`, however many poll.
    if EXP_ASKED_NS
        .compare_exchange(asked, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let me = cpu_id();
    for cpu in smp::online().filter(|&c| c != me) {
        if !round_answered(cpu, n) {
            ask_one(cpu);
        }
    }
}

/// Counters since boot: `call_sched` calls and expedited grace periods
/// started for them (the IPI rounds they cost).
pub fn expedited_stats() -> (u64, u64) {
    // Relaxed: statistics.
    (
        CALLS.load(Ordering::Relaxed),
        EXP_STARTED.load(Ordering::Relaxed),
    )
}

/// The histograms of expedited rounds and of the waits from a round's end
/// to its first callback (see [`HIST_BUCKETS`]), since boot.
pub fn expedited_histograms() -> ([u64; HIST_BUCKETS], [u64; HIST_BUCKETS]) {
    // Relaxed: statistics.
    let read =
        |h: &[AtomicU64; HIST_BUCKETS]| core::array::from_fn(|i| h[i].load(Ordering::Relaxed));
    (read(&EXP_ROUND_US), read(&EXP_WAKE_US))
}

/// The callback thread sleeps here until the oldest callback is ready.
static CALLBACK_THREAD: WaitQueue = WaitQueue::new();
/// The CPU the callback thread runs on.
const CALLBACK_CPU: usize = 0;
/// Set when the callback thread is woken, cleared when it runs: lets a
/// waiter spinning on [`CALLBACK_CPU`] give the CPU up at once
/// ([`callback_thread_wants`]) instead of holding the thread off until
/// its spin budget runs out.
static CALLBACK_WOKEN: AtomicBool = AtomicBool::new(false);

/// Starts the callback thread on the boot CPU. Called once at boot, after
/// the scheduler; callbacks queued earlier wait for it.
pub fn start() {
    // The handle is dropped: the thread runs for the rest of the run.
    drop(crate::sched::spawn_on(CALLBACK_CPU, || loop {
        CALLBACK_THREAD.wait_until(|| {
            // Relaxed: a hint for spinning waiters; cleared whenever the
            // thread runs, so a wakeup that finds nothing ready does not
            // leave it set.
            CALLBACK_WOKEN.store(false, Ordering::Relaxed);
            head_ready()
        });
        run_ready_callbacks();
    }));
}

/// Wakes the callback thread (it runs the ready callbacks, if any).
fn wake_callback_thread() {
    // Relaxed: a hint for spinning waiters (`callback_thread_wants`).
    CALLBACK_WOKEN.store(true, Ordering::Relaxed);
    CALLBACK_THREAD.wake_one();
}

/// Whether the callback thread has been woken to run on `cpu` and has
/// not run yet: a thread spinning there (in [`super::wait::wait_until`])
/// is most likely waiting for one of its callbacks, and should sleep now
/// rather than keep the CPU from it.
pub fn callback_thread_wants(cpu: usize) -> bool {
    // Relaxed: a hint; a wrong answer costs a spin or a sleep, no more.
    cpu == CALLBACK_CPU && CALLBACK_WOKEN.load(Ordering::Relaxed)
}

/// From the tick: wakes the callback thread if the oldest callback's grace
/// period has ended.
fn wake_callback_thread_if_ready() {
    if head_ready() {
        wake_callback_thread();
    }
}

/// Whether the oldest queued callback's grace period has ended.
fn head_ready() -> bool {
    let _irq = IrqGuard::new();
    let cbs = CALLBACKS.lock();
    cbs.queue.front().is_some_and(is_ready)
}

/// Whether every online CPU has reported, or been idle, since `w` was
/// queued (offline CPUs run no ticks and are in no section).
fn is_ready(w: &Waiting) -> bool {
    smp::online().all(|c| {
        let (count, idle) = w.snapshot[c];
        QUIESCENT.read_remote(c) > count || percpu::idle_quiet_since(c, idle)
    })
}

/// Callbacks waiting for their grace period.
pub fn pending() -> usize {
    let _irq = IrqGuard::new();
    // A named guard, dropped before `_irq` (a temporary in the tail
    // expression would outlive it, holding the lock with interrupts on).
    let cbs = CALLBACKS.lock();
    cbs.queue.len()
}

/// Runs the callbacks whose grace period has ended. The callback thread
/// only.
fn run_ready_callbacks() {
    loop {
        let ready = {
            let _irq = IrqGuard::new();
            let mut cbs = CALLBACKS.lock();
            let done = cbs.queue.front().is_some_and(is_ready);
            if done {
                cbs.queue.pop_front().inspect(|w| {
                    if matches!(w.callback, Callback::Atomic(_)) {
                        // Relaxed: under the lock.
                        ATOMIC_QUEUED.fetch_sub(1, Ordering::Relaxed);
                    }
                })
            } else {
                None
            }
        };
        let Some(waiting) = ready else { return };
        before_callback();
        match waiting.callback {
            Callback::Thread(f) => f(),
            Callback::Atomic(f) => f(CallbackContext::Worker),
        }
        // Someone may sleep until this callback has run.
        super::wait::wake_waiters();
    }
}

/// Runs, here and with interrupts off, the ready callbacks at the head of
/// the queue that never block ([`call_sched_atomic`]), up to the first
/// that is not ready or must run in the thread. From the end of an
/// expedited round and from the tick (so in an interrupt handler, or where
/// a section that owed a report ended with interrupts on).
fn run_ready_atomic() {
    // Relaxed: a hint that saves the tick the lock when no such callback
    // is queued. The round's end (`end_expedited`) loads it after taking
    // the lock under which the callbacks it served were queued, so it
    // finds them; a tick that misses a new one leaves it to the round.
    if ATOMIC_QUEUED.load(Ordering::Relaxed) == 0 {
        return;
    }
    loop {
        let _irq = IrqGuard::new();
        let ready = {
            let mut cbs = CALLBACKS.lock();
            let atomic = cbs
                .queue
                .front()
                .is_some_and(|w| matches!(w.callback, Callback::Atomic(_)) && is_ready(w));
            if atomic {
                // Relaxed: under the lock.
                ATOMIC_QUEUED.fetch_sub(1, Ordering::Relaxed);
                cbs.queue.pop_front()
            } else {
                None
            }
        };
        let Some(Waiting {
            callback: Callback::Atomic(f),
            ..
        }) = ready
        else {
            return;
        };
        before_callback();
        f(CallbackContext::Atomic);
        super::wait::wake_waiters();
    }
}

/// What every callback's run begins with, wherever it runs.
fn before_callback() {
    // Relaxed: a statistic; the first callback after a round's end.
    let ended = EXP_END_NS.swap(0, Ordering::Relaxed);
    if ended != 0 {
        hist_add(&EXP_WAKE_US, time::now_ns().saturating_sub(ended));
    }
    // SeqCst: the ended sections' writes come before the callback.
    fence(Ordering::SeqCst);
    GP_SERVED.add(1);
}

crate::ktest! {
    /// Grace periods leave idle CPUs halted: neither `synchronize_sched` nor
    /// the expedited round of `call_sched` sends them the grace-period IPI
    /// (each sent one to every CPU before idle CPUs counted as quiescent,
    /// which asks every idle CPU in every one of the 80 grace periods).
    /// A CPU woken by its tick at the moment a round starts is asked as
    /// any busy CPU, hence the margin; and a host that stalls vCPUs keeps
    /// a woken CPU awake for longer (23 of 80 seen with loom and Miri
    /// running beside QEMU), so an attempt that crosses the margin is run
    /// again, up to five, and one clean attempt is needed.
    #[smp(4, 8)]
    fn grace_periods_leave_idle_cpus_halted() {
        const ROUNDS: u64 = 40;
        const ATTEMPTS: usize = 5;
        let mut best = (0, u64::MAX);
        for attempt in 1..=ATTEMPTS {
            let worst = idle_gp_ipis(ROUNDS);
            if worst.1 < best.1 {
                best = worst;
            }
            crate::println!(
                "attempt {attempt}: most grace-period IPIs on an idle cpu: {} (cpu {}) in {} grace periods",
                worst.1,
                worst.0,
                2 * ROUNDS
            );
            if worst.1 < ROUNDS / 2 {
                return;
            }
        }
        panic!(
            "idle cpu {} took {} grace-period IPIs in {} grace periods (the best of {ATTEMPTS} attempts): idle CPUs should not be asked",
            best.0,
            best.1,
            2 * ROUNDS
        );
    }
}

/// Runs `rounds` pairs of grace periods (a `synchronize_sched` and a
/// `call_sched` waited for) from this CPU, and returns the idle CPU (not
/// this one nor the callback CPU) that took the most grace-period IPIs
/// meanwhile, with their number.
fn idle_gp_ipis(rounds: u64) -> (usize, u64) {
    use crate::arch::idt::GP_IPIS;
    let me = cpu_id();
    let before: Vec<u64> = (0..possible_cpus())
        .map(|c| GP_IPIS.read_remote(c))
        .collect();
    for _ in 0..rounds {
        synchronize_sched();
        let done = alloc::sync::Arc::new(AtomicBool::new(false));
        let d = done.clone();
        call_sched(Box::new(move || d.store(true, Ordering::SeqCst)));
        assert!(
            smp::wait_for(2000, || done.load(Ordering::SeqCst)),
            "a call_sched callback did not run within 2 s"
        );
    }
    smp::online()
        .filter(|&c| c != me && c != CALLBACK_CPU)
        .map(|c| (c, GP_IPIS.read_remote(c) - before[c]))
        .max_by_key(|&(_, taken)| taken)
        .unwrap_or((me, 0))
}

crate::ktest! {
    /// An interrupt that ends an idle CPU's halt runs its handler outside
    /// the idle state: a grace period started while the handler is in a
    /// section (interrupts off) waits for it, synchronous or not.
    #[smp(2, 4)]
    fn a_handler_that_wakes_an_idle_cpu_holds_grace_periods() {
        use alloc::sync::Arc;
        use core::sync::atomic::AtomicU8;
        const TARGET: usize = 1;
        // 0: not started, 1: in the handler's section, 2: section over.
        let state = Arc::new(AtomicU8::new(0));
        // The handler stays in its section until this is set, so the test
        // cannot miss state 1 when the host leaves this vCPU unrun for
        // longer than the section lasts.
        let release = Arc::new(core::sync::atomic::AtomicBool::new(false));
        for round in 0..2 {
            state.store(0, Ordering::SeqCst);
            release.store(false, Ordering::SeqCst);
            // Let the target halt (it idles: this test runs nothing there).
            crate::arch::time::delay_us(2_000);
            let (s, r) = (state.clone(), release.clone());
            smp::on_each_cpu_nowait(Arc::new(move || {
                if cpu_id() == TARGET {
                    s.store(1, Ordering::SeqCst);
                    while !r.load(Ordering::SeqCst) {
                        core::hint::spin_loop();
                    }
                    crate::arch::time::delay_us(20_000);
                    s.store(2, Ordering::SeqCst);
                }
            }));
            assert!(smp::wait_for(1000, || state.load(Ordering::SeqCst) == 1));
            if round == 0 {
                release.store(true, Ordering::SeqCst);
                synchronize_sched();
                assert_eq!(state.load(Ordering::SeqCst), 2, "synchronize_sched returned while the handler's section ran");
            } else {
                let seen = Arc::new(AtomicU8::new(0));
                let (s, v) = (state.clone(), seen.clone());
                call_sched(Box::new(move || v.store(10 + s.load(Ordering::SeqCst), Ordering::SeqCst)));
                release.store(true, Ordering::SeqCst);
                assert!(smp::wait_for(2000, || seen.load(Ordering::SeqCst) != 0));
                assert_eq!(seen.load(Ordering::SeqCst), 12, "a call_sched callback ran while the handler's section ran");
            }
        }
    }

}

crate::ktest! {
    /// A synchronous grace period waits for a section (interrupts off) that
    /// is in progress on another CPU, and every other CPU counts it served.
    #[smp(2, 8)]
    fn synchronize_sched_waits_for_sections_in_progress() {
        use alloc::sync::Arc;
        use core::sync::atomic::{AtomicBool, AtomicU8};
        let served_before: Vec<u64> = smp::online().map(|c| GP_SERVED.read_remote(c)).collect();
        // 0: not started, 1: in the section, 2: section over.
        let state = Arc::new(AtomicU8::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let (s, r) = (state.clone(), release.clone());
        let job = crate::sched::spawn_job(1, move || {
            let guard = IrqGuard::new();
            s.store(1, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            crate::arch::time::delay_us(20_000);
            s.store(2, Ordering::SeqCst);
            drop(guard);
        });
        assert!(smp::wait_for(1000, || state.load(Ordering::SeqCst) == 1));
        release.store(true, Ordering::SeqCst);
        synchronize_sched();
        assert_eq!(state.load(Ordering::SeqCst), 2, "returned while the section was still running");
        assert!(job.join(1000));
        // An idle CPU is not asked: it serves at its next tick, which the
        // host may run late.
        for (i, cpu) in smp::online().enumerate().skip(1) {
            assert!(
                smp::wait_for(2000, || GP_SERVED.read_remote(cpu) > served_before[i]),
                "cpu {cpu} served no grace period"
            );
        }
    }
}

crate::ktest! {
    /// The same with interrupts on inside the section (a `SchedGuard`):
    /// timer ticks and grace-period IPIs arrive inside it and are deferred
    /// to its end, for synchronous and asynchronous grace periods alike.
    #[smp(2, 8)]
    fn grace_periods_wait_for_sched_guard_sections() {
        use alloc::sync::Arc;
        use core::sync::atomic::{AtomicBool, AtomicU8};
        let state = Arc::new(AtomicU8::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let (s, r) = (state.clone(), release.clone());
        let job = crate::sched::spawn_job(1, move || {
            let outer = percpu::sched_read_lock();
            let inner = percpu::sched_read_lock(); // nested
            s.store(1, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            crate::arch::time::delay_us(30_000); // several ticks, inside
            drop(inner);
            s.store(2, Ordering::SeqCst);
            drop(outer);
        });
        assert!(smp::wait_for(1000, || state.load(Ordering::SeqCst) == 1));
        let callback_saw = Arc::new(AtomicU8::new(0));
        let (st, saw) = (state.clone(), callback_saw.clone());
        call_sched(Box::new(move || saw.store(st.load(Ordering::SeqCst) + 10, Ordering::SeqCst)));
        release.store(true, Ordering::SeqCst);
        synchronize_sched();
        assert_eq!(state.load(Ordering::SeqCst), 2, "returned while the section was still running");
        assert!(job.join(1000));
        assert!(smp::wait_for(2000, || callback_saw.load(Ordering::SeqCst) != 0));
        assert_eq!(callback_saw.load(Ordering::SeqCst), 12, "the callback ran before the section ended");
    }
}

crate::ktest! {
    /// Asynchronous callbacks run once each, in order, after ticks on every
    /// CPU.
    #[smp(1, 8)]
    fn call_sched_runs_callbacks_once_in_order() {
        use alloc::sync::Arc;
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..10 {
            let log = log.clone();
            call_sched(Box::new(move || log.lock().push(i)));
        }
        assert!(smp::wait_for(2000, || log.lock().len() == 10), "ran {} of 10", log.lock().len());
        crate::arch::time::delay_us(20_000);
        assert_eq!(*log.lock(), (0..10).collect::<Vec<_>>());
        assert_eq!(pending(), 0);
    }
}

crate::ktest! {
    /// The read-side count and the owed report: a tick inside nested
    /// sections is not a quiescent state; the outermost exit reports it,
    /// once, and leaves the count at zero; but an outermost exit with
    /// interrupts off does not report (the interrupts-off stretch is a
    /// section too) until interrupts are back on.
    #[smp(1)]
    fn tick_inside_a_section_is_reported_at_the_outermost_exit() {
        let no_real_ticks = IrqGuard::new();
        let before = QUIESCENT.get();
        let outer = percpu::sched_read_lock();
        let inner = percpu::sched_read_lock();
        tick(); // as the timer interrupt would, between two instructions
        tick(); // a second request while one is owed changes nothing
        assert_eq!(QUIESCENT.get(), before, "reported inside a section");
        assert_eq!(percpu::sched_depth(), 2);
        assert!(percpu::sched_report_owed());
        drop(inner);
        assert_eq!(QUIESCENT.get(), before, "reported at an inner exit");
        let again = percpu::sched_read_lock(); // a fresh nested section
        drop(again);
        assert_eq!(QUIESCENT.get(), before);
        // Interrupts on for the outermost exit: real ticks inside the
        // section change nothing (the report is owed already).
        drop(no_real_ticks);
        drop(outer);
        let after = QUIESCENT.get();
        assert!(after > before, "the outermost exit with interrupts on did not report");
        assert_eq!(percpu::sched_depth(), 0);
        assert!(!percpu::sched_report_owed());

        // The same section, ended with interrupts off.
        let irq = IrqGuard::new();
        let before = QUIESCENT.get();
        let outer = percpu::sched_read_lock();
        tick();
        drop(outer);
        assert_eq!(QUIESCENT.get(), before, "a section that ended with interrupts off reported");
        assert_eq!(percpu::sched_depth(), 0, "the count is back at zero all the same");
        tick();
        assert_eq!(QUIESCENT.get(), before + 1, "outside a section a tick (with interrupts on where it landed) reports at once");
        drop(irq);
        // The owed report's self-IPI (or a tick) reports once they are on.
        assert!(smp::wait_for(1000, || QUIESCENT.get() > before + 1), "no report after interrupts came back on");
    }
}

crate::ktest! {
    /// A section that ends with interrupts off is not a quiescent state:
    /// the interrupts-off stretch that follows is a read-side section, so
    /// neither a synchronous grace period nor a `call_sched` callback may
    /// end while it lasts. CPU 1 enters a `SchedGuard` section, waits for
    /// the grace period's request to reach it inside the section, turns
    /// interrupts off, ends the section and spins for 20 ms before turning
    /// them on again; the boot CPU's `synchronize_sched` must not return,
    /// nor its callback run, before that.
    #[smp(2, 8)]
    fn a_section_ending_with_interrupts_off_holds_grace_periods() {
        use alloc::sync::Arc;
        use core::sync::atomic::AtomicU8;
        use Ordering::SeqCst;
        // 1: in the section (interrupts on); 2: the section ended with
        // interrupts off; 3: interrupts back on.
        let state = Arc::new(AtomicU8::new(0));
        let s = state.clone();
        let job = crate::sched::spawn_job(1, move || {
            let start = GP_SEQ.load(SeqCst);
            let section = percpu::sched_read_lock();
            s.store(1, SeqCst);
            // The boot CPU's grace period (a new number) has asked this CPU
            // inside the section (its IPI, or a tick before it: the report
            // is owed either way, and would count for the new number).
            let asked = smp::wait_for(2000, || {
                GP_SEQ.load(SeqCst) > start && percpu::sched_report_owed()
            });
            let irq = IrqGuard::new();
            drop(section);
            s.store(2, SeqCst);
            time::delay_us(20_000);
            s.store(3, SeqCst);
            drop(irq);
            assert!(asked, "the grace period never asked cpu 1 inside its section");
        });
        assert!(smp::wait_for(1000, || state.load(SeqCst) >= 1), "cpu 1 never entered its section");
        let callback_saw = Arc::new(AtomicU8::new(0));
        let (st, saw) = (state.clone(), callback_saw.clone());
        call_sched(Box::new(move || saw.store(st.load(SeqCst), SeqCst)));
        synchronize_sched();
        let at_return = state.load(SeqCst);
        assert!(job.join(1000));
        assert_eq!(at_return, 3, "synchronize_sched returned while cpu 1 still had interrupts off after its section");
        assert!(smp::wait_for(2000, || callback_saw.load(SeqCst) != 0));
        assert_eq!(callback_saw.load(SeqCst), 3, "a call_sched callback ran while cpu 1 still had interrupts off after its section");
    }
}

crate::ktest! {
    /// `synchronize_sched` with interrupts off would wait for its own
    /// caller (an interrupts-off stretch is a read-side section): refused.
    #[smp(1)]
    #[should_panic(expected = "synchronize_sched called with interrupts off on cpu 0 at kernel/src/sync/rcu.rs")]
    fn synchronize_sched_with_interrupts_off_panics() {
        let _irq = IrqGuard::new();
        synchronize_sched();
    }
}

crate::ktest! {
    /// `synchronize_sched` inside a `SchedGuard` section would wait for its
    /// own caller: refused.
    #[smp(1)]
    #[should_panic(expected = "synchronize_sched called inside a read-side section on cpu 0 at kernel/src/sync/rcu.rs")]
    fn synchronize_sched_inside_a_section_panics() {
        let _section = percpu::sched_read_lock();
        synchronize_sched();
    }
}

crate::ktest! {
    /// The per-CPU fast path's instruction range is recorded, and the
    /// interrupt side recognises exactly it: the load of the word, the
    /// test and the add, not the instruction before nor the one after,
    /// and sends an address inside back to the range's start.
    #[smp(1)]
    fn fast_path_ranges_are_recorded() {
        let probe = percpu::probes::percpu_probe_add_unless as *const () as u64;
        let ranges: Vec<(u64, u64)> = (probe..probe + 128)
            .filter(|&a| percpu::fast_path_start(a) == Some(a))
            .map(|start| {
                let end = (start..).find(|&a| percpu::fast_path_start(a).is_none()).unwrap();
                (start, end)
            })
            .collect();
        assert_eq!(ranges.len(), 1, "the probe should hold one recorded range: {ranges:x?}");
        let (start, end) = ranges[0];
        assert!(start >= probe, "the range lies in the probe");
        assert!(end - start <= 32, "the range is a few instructions, not {} bytes", end - start);
        assert_eq!(percpu::fast_path_start(start - 1), None);
        assert_eq!(percpu::fast_path_start(end - 1), Some(start), "inside: back to the start");
        let words = percpu::alloc_percpu(16).unwrap();
        let counter = words.offset() + 8;
        let word = AtomicUsize::new(words.offset());
        #[allow(unsafe_code)]
        // SAFETY: with bit 1 clear the word is the offset of `words`, and
        // its second word is live to the end of the test.
        let add = || unsafe { percpu::gs_add_unless::<2, 8>(&word, 5) };
        let set_flag = |v| word.store(words.offset() | v, Ordering::Relaxed);
        assert!(add());
        set_flag(2);
        assert!(!add());
        set_flag(0);
        assert!(add());
        #[allow(unsafe_code)]
        // SAFETY: a word of `words`, live to the end of the test.
        let counted = unsafe { percpu::gs_load(counter) };
        assert_eq!(counted, 10);
    }
}

/// Load for the fast-path tests: every other CPU adds to its counter
/// (one per-CPU word) through `gs_add_unless` and a shared word (the
/// counter's offset, with the flag in bit 0, as percpu_ref's handle) as
/// fast as it can, until [`stop`](Self::stop).
struct FastPathFire {
    words: alloc::sync::Arc<percpu::PercpuAlloc>,
    word: alloc::sync::Arc<AtomicUsize>,
    stop: alloc::sync::Arc<AtomicBool>,
    jobs: Vec<crate::sched::JobHandle>,
}

impl FastPathFire {
    fn start() -> Self {
        use alloc::sync::Arc;
        let words = Arc::new(percpu::alloc_percpu(16).unwrap());
        let word = Arc::new(AtomicUsize::new(words.offset()));
        let stop = Arc::new(AtomicBool::new(false));
        let me = cpu_id();
        let jobs = smp::online()
            .filter(|&c| c != me)
            .map(|cpu| {
                let (words, word, stop) = (words.clone(), word.clone(), stop.clone());
                crate::sched::spawn_job(cpu, move || {
                    #[allow(unsafe_code)]
                    // SAFETY: with bit 0 clear the word is the offset of
                    // `words`, which this closure keeps alive.
                    let add = || unsafe { percpu::gs_add_unless::<1, 0>(&word, 1) };
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            add();
                        }
                    }
                    drop(words);
                })
            })
            .collect();
        FastPathFire {
            words,
            word,
            stop,
            jobs,
        }
    }

    /// Sets the word's flag (1 sends the adds away), as a switch to
    /// atomic does before its grace period.
    fn set_flag(&self, v: usize) {
        self.word.store(self.words.offset() | v, Ordering::Relaxed);
    }

    /// The counters' sum over every CPU.
    fn sum(&self) -> u64 {
        Self::sum_of(&self.words)
    }

    fn sum_of(words: &percpu::PercpuAlloc) -> u64 {
        let offset = words.offset();
        #[allow(unsafe_code)]
        // SAFETY: a word of `words`, which the caller holds.
        let load = |c| unsafe { percpu::load_remote(c, offset) };
        (0..possible_cpus()).map(load).sum()
    }

    /// Stops the load and returns the final sum.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for j in self.jobs {
            assert!(j.join(10_000));
        }
        Self::sum_of(&self.words)
    }
}

crate::ktest! {
    /// The fast path as a read-side section, under fire: every other CPU
    /// adds to its counter through `gs_add_unless` as fast as it can while
    /// the boot CPU, 1000 times (600 at 8 CPUs), sets the flag, waits for
    /// a grace period and sums: the sum never moves afterwards (an add that saw the flag clear
    /// is finished when the grace period ends), and every grace period ends
    /// (CPUs asked inside the range are asked again). At 8 CPUs, 600
    /// rounds: each takes about 14 ms with 7 busy vCPUs on the host's 2
    /// cores (1000 rounds were 14 s, a fifth of the kernel suite). An add
    /// caught in its window needs its vCPU preempted by the host there, so
    /// the 8-CPU run is the one that catches a broken wait: with the wait
    /// taken out of `synchronize_sched`, 5 of 300 rounds moved at 8 CPUs
    /// and none of 1000 at 2.
    #[smp(2, 8)]
    #[timeout(120)]
    fn grace_period_waits_for_fast_paths_under_fire() {
        let fire = FastPathFire::start();
        let mut moved = 0;
        let rounds = if smp::online().count() > 4 { 600 } else { 1000 };
        for _ in 0..rounds {
            fire.set_flag(0);
            time::delay_us(100);
            fire.set_flag(1);
            synchronize_sched();
            let settled = fire.sum();
            time::delay_us(100);
            if fire.sum() != settled {
                moved += 1;
            }
        }
        assert!(fire.stop() > 0, "the other CPUs never added");
        assert_eq!(moved, 0, "adds landed after the grace period in {moved} of {rounds} rounds");
    }
}

crate::ktest! {
    /// The store-buffering window of `call_sched`, litmus style, through
    /// the real report: CPU 1 reports (`report_quiescent`, as at the end of
    /// a section) and then loads a flag, as its next section would; the
    /// boot CPU stores the flag, fences and snapshots CPU 1's report
    /// count, as `call_sched` does. A round where the snapshot missed the
    /// report *and* the load after the report missed the flag is the bug:
    /// the callback would run while that section used the old value. The
    /// fence at the end of the report forbids it, so the test never fails
    /// on correct code; without it, TCG on this machine kind showed 1 to 12
    /// such rounds per 10^6 in six runs (x86 lets the load pass the
    /// buffered store), so 2 * 10^6 rounds (about two seconds) catch it in
    /// all but an unlucky run.
    #[smp(2)]
    #[timeout(120)]
    fn report_then_section_load_is_ordered_for_call_sched() {
        use alloc::sync::Arc;
        use alloc::vec;
        use core::sync::atomic::AtomicU64;
        use Ordering::Relaxed;
        const N: usize = 2_000_000;
        let flag = Arc::new(AtomicU64::new(0));
        let go = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        // Per round, CPU 1's count after its report and what its load saw.
        let seen = Arc::new(Mutex::new((vec![0u64; N + 1], vec![0u64; N + 1])));
        let (f, g, d, out) = (flag.clone(), go.clone(), done.clone(), seen.clone());
        let job = crate::sched::spawn_job(1, move || {
            let (mut counts, mut loads) = (vec![0u64; N + 1], vec![0u64; N + 1]);
            // Interrupts off: no tick reports (or takes locks) in between.
            let irq = IrqGuard::new();
            for i in 1..=N {
                while g.load(Relaxed) < i as u64 {
                    core::hint::spin_loop();
                }
                report_quiescent();
                // Relaxed: the plain load of a section.
                loads[i] = f.load(Relaxed);
                counts[i] = QUIESCENT.get();
                d.store(i as u64, Relaxed);
            }
            drop(irq);
            *out.lock() = (counts, loads);
        });
        let mut snapshots = vec![0u64; N + 1];
        let irq = IrqGuard::new();
        for (i, snapshot) in snapshots.iter_mut().enumerate().skip(1) {
            while done.load(Relaxed) + 1 < i as u64 {
                core::hint::spin_loop();
            }
            go.store(i as u64, Relaxed);
            // Relaxed store, then the fence `call_sched` has, then its load.
            flag.store(i as u64, Relaxed);
            fence(Ordering::SeqCst);
            *snapshot = QUIESCENT.read_remote(1);
        }
        drop(irq);
        assert!(job.join(60_000), "cpu 1 did not finish its rounds");
        let seen = seen.lock();
        let (counts, loads) = (&seen.0, &seen.1);
        let bad = (1..=N)
            .filter(|&i| snapshots[i] < counts[i] && loads[i] < i as u64)
            .count();
        assert_eq!(bad, 0, "in {bad} of {N} rounds the snapshot missed a report and the load after it missed the flag");
    }
}

/// The median and the maximum (ns) of the latencies of 20 asynchronous
/// grace periods on an otherwise idle machine, each from `start` to the
/// moment the waiter sees its end: the waiter waits as refcnt's waiters do
/// ([`super::wait::wait_until`]: a short spin, then a sleep), so the
/// callback thread (CPU 0) gets the CPU. Each wait needs the host to run
/// the vCPUs involved, which it may not do for milliseconds when busy: a
/// set of 20 with its median at [`TICK_FREE_P50`] or over is measured again
/// (3 sets at most), and the best set is returned. A grace period that
/// waits for a tick puts every set's median at a tick (4 ms).
fn async_p50_max(
    mut start: impl FnMut() -> alloc::sync::Arc<core::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    let mut best = (u64::MAX, 0);
    for _ in 0..3 {
        let mut lat: Vec<u64> = (0..20)
            .map(|_| {
                let t0 = time::now_ns();
                let done = start();
                super::wait::wait_until(Duration::from_micros(100), || done.load(Ordering::SeqCst));
                time::now_ns() - t0
            })
            .collect();
        lat.sort_unstable();
        let set = (lat[lat.len() / 2], lat[lat.len() - 1]);
        best = best.min(set);
        if set.0 < TICK_FREE_P50 {
            break;
        }
    }
    best
}

/// The median latency under which an asynchronous grace period did not
/// wait for a tick (4 ms): 2 ms.
const TICK_FREE_P50: u64 = 2_000_000;

crate::ktest! {
    /// Issue 21: on an idle machine a `call_sched` callback runs within an
    /// expedited grace period (one IPI round, tens to a few hundred
    /// microseconds under TCG), not at the next tick: the median of 20
    /// call-to-callback latencies is below 2 ms (70-150 us measured), in
    /// one of 3 sets at most (a busy host delays some). The
    /// tick-driven `call_sched` before the expedited grace period failed
    /// it at 2 and 8 CPUs alike (median 4.0 ms: the callback waited for
    /// every CPU's next tick, the sleeping waiter for a tick as well).
    #[smp(2, 8)]
    fn call_sched_on_an_idle_machine_does_not_wait_for_a_tick() {
        use alloc::sync::Arc;
        use core::sync::atomic::AtomicBool;
        let (p50, max) = async_p50_max(|| {
            let done = Arc::new(AtomicBool::new(false));
            let d = done.clone();
            call_sched(Box::new(move || d.store(true, Ordering::SeqCst)));
            done
        });
        crate::println!("call_sched -> callback, idle: p50 {} us, max {} us", p50 / 1000, max / 1000);
        assert!(p50 < TICK_FREE_P50, "p50 of call_sched -> callback is {p50} ns: the callback waited for a tick");
    }
}

crate::ktest! {
    /// Issue 21, through percpu_ref: kill (and kill_and_confirm) to release
    /// of an idle ref, 20 each, median below 2 ms in one of 3 sets at most
    /// (a tick-driven kill took 4 ms at 8 CPUs).
    #[smp(2, 8)]
    fn percpu_ref_kill_to_release_does_not_wait_for_a_tick() {
        use crate::sync::backend::Kernel;
        use alloc::sync::Arc;
        use core::sync::atomic::AtomicBool;
        use refcnt::percpu_ref::{Flags, PercpuRef};
        for confirm in [false, true] {
            let released = Arc::new(AtomicBool::new(false));
            let rel = released.clone();
            let r = PercpuRef::<Kernel>::new(move || rel.store(true, Ordering::SeqCst), Flags::empty()).unwrap();
            let (p50, max) = async_p50_max(|| {
                if released.swap(false, Ordering::SeqCst) {
                    r.resurrect();
                }
                if confirm {
                    assert!(r.kill_and_confirm(|| {}));
                } else {
                    assert!(r.kill());
                }
                released.clone()
            });
            crate::println!("percpu_ref kill -> release (confirm {confirm}), idle: p50 {} us, max {} us", p50 / 1000, max / 1000);
            assert!(p50 < TICK_FREE_P50, "p50 of kill -> release (confirm {confirm}) is {p50} ns: the release waited for a tick");
        }
    }
}

crate::ktest! {
    /// Batching: callbacks queued while an expedited grace period is in
    /// flight ride the next one; at most one is in flight and one pending,
    /// however many callbacks come. With interrupts off on this CPU, the
    /// first grace period cannot end during the loop (this CPU cannot
    /// report), so 1000 callbacks cost exactly two expedited grace periods;
    /// they all run, in order, soon after.
    #[smp(1, 8)]
    fn call_sched_batches_callbacks_into_at_most_two_grace_periods() {
        use alloc::sync::Arc;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (calls_before, started_before) = expedited_stats();
        let irq = IrqGuard::new();
        for i in 0..1000 {
            let log = log.clone();
            call_sched(Box::new(move || log.lock().push(i)));
        }
        drop(irq);
        assert!(smp::wait_for(2000, || log.lock().len() == 1000), "ran {} of 1000", log.lock().len());
        let (calls, started) = expedited_stats();
        assert_eq!(calls - calls_before, 1000);
        assert!(started - started_before <= 2, "1000 callbacks started {} expedited grace periods", started - started_before);
        assert_eq!(*log.lock(), (0..1000).collect::<Vec<_>>());
        assert_eq!(pending(), 0);
    }
}

crate::ktest! {
    /// The expedited asynchronous grace period still waits for every
    /// read-side section, per-CPU fast paths included: the other CPUs add
    /// through `gs_add_unless` as fast as they can while the boot CPU, 300
    /// times, sets the flag and queues a callback that sums the counters;
    /// the sum never moves after the callback (an add that saw the flag
    /// clear is finished when the grace period ends), and every callback
    /// runs (CPUs whose IPI landed inside the range are asked again).
    #[smp(2, 8)]
    #[timeout(120)]
    fn expedited_call_sched_waits_for_fast_paths_under_fire() {
        let fire = FastPathFire::start();
        let mut moved = 0;
        for _ in 0..300 {
            fire.set_flag(0);
            time::delay_us(100);
            fire.set_flag(1);
            let settled = alloc::sync::Arc::new(AtomicU64::new(u64::MAX));
            let (s, w) = (settled.clone(), fire.words.clone());
            call_sched(Box::new(move || {
                s.store(FastPathFire::sum_of(&w), Ordering::SeqCst);
            }));
            super::wait::wait_until(Duration::from_micros(100), || settled.load(Ordering::SeqCst) != u64::MAX);
            time::delay_us(100);
            if fire.sum() != settled.load(Ordering::SeqCst) {
                moved += 1;
            }
        }
        assert!(fire.stop() > 0, "the other CPUs never added");
        assert_eq!(moved, 0, "adds landed after the callback's grace period in {moved} of 300 rounds");
    }
}

crate::ktest! {
    /// A kill's release does not wait for the callback thread: its switch
    /// lands where the grace period ends (`call_sched_atomic`), so a
    /// `call_sched` callback that holds the thread for 300 ms does not
    /// hold the kill (confirmation and release run, in that order, while
    /// the slow callback still runs). Landing through `call_sched` put the
    /// kill behind the slow callback and failed this.
    #[smp(2, 4)]
    fn a_kill_lands_beside_a_slow_callback_in_the_thread() {
        use crate::sync::backend::Kernel;
        use alloc::sync::Arc;
        use core::sync::atomic::AtomicUsize;
        use refcnt::percpu_ref::{Flags, PercpuRef};
        let slow = Arc::new(AtomicUsize::new(0));
        let s = slow.clone();
        call_sched(Box::new(move || {
            s.store(1, Ordering::SeqCst);
            time::delay_us(300_000);
            s.store(2, Ordering::SeqCst);
        }));
        assert!(smp::wait_for(5_000, || slow.load(Ordering::SeqCst) == 1), "the slow callback never started");
        // 1: confirmed; 2: released after the confirmation; 3: released first.
        let state = Arc::new(AtomicUsize::new(0));
        let (c, rel) = (state.clone(), state.clone());
        let r = PercpuRef::<Kernel>::new(
            move || {
                let next = if rel.load(Ordering::SeqCst) == 1 { 2 } else { 3 };
                rel.store(next, Ordering::SeqCst);
            },
            Flags::empty(),
        )
        .unwrap();
        let g = r.get();
        drop(g);
        assert!(r.kill_and_confirm(move || c.store(1, Ordering::SeqCst)));
        assert!(smp::wait_for(5_000, || state.load(Ordering::SeqCst) >= 2), "the kill never released");
        assert_eq!(state.load(Ordering::SeqCst), 2, "released before the kill's confirmation");
        assert_eq!(slow.load(Ordering::SeqCst), 1, "the kill waited for the slow callback in the thread");
        assert!(smp::wait_for(5_000, || slow.load(Ordering::SeqCst) == 2));
    }
}
