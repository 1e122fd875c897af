//! Kernel threads, per-CPU run queues, wait queues, completions, sleeping.
//!
//! # Preemption
//! A thread runs until it blocks (a wait queue, a completion, `sleep`,
//! `join`), yields, exits, or its time slice ends: every timer tick (4 ms)
//! that finds another thread ready on the CPU asks for a switch
//! (`NEED_RESCHED`), and the tick's interrupt handler switches threads on
//! its way out, after the EOI, unless preemption is disabled. Preemption is
//! disabled inside an rcu-sched read-side section: a
//! [`SchedGuard`](crate::arch::percpu::SchedGuard), which every
//! [`SpinLock`] holds while locked, or with
//! interrupts off. A switch the tick could not do is done when the
//! outermost section ends (the tick also marks the section's exit as owing
//! a quiescent state, so the exit takes its cold path, which calls
//! [`preempt_point`]). So code holding a spin lock or inside a per-CPU
//! fast path is never switched out, as in Linux, where preempt_disable is
//! itself an rcu-sched reader. Within a CPU the ready threads run round
//! robin, one tick each. Idle threads are never preempted (they switch as
//! soon as a thread is ready).
//!
//! # Priorities
//! A thread is [`Priority::Normal`] unless it asks for
//! [`Priority::High`] ([`set_priority`]): one real-time level above the
//! others, as Linux's `SCHED_FIFO` above `SCHED_OTHER`, simplified. A
//! ready High thread runs before the Normal threads of its CPU, and the
//! tick preempts it only for another High thread, or once it has run
//! [`HIGH_RUN_LIMIT`] without blocking: then the next Normal thread gets
//! the CPU for a tick (Linux's real-time throttling keeps a share for
//! normal tasks the same way), so a High thread that never blocks slows
//! its CPU's other threads but cannot starve them. A woken High thread
//! waits for the next tick, as any other (no wakeup preemption). The io
//! mode's scenario driver runs High: it is the test's clock, and with
//! `irqmode=none` it shares its CPU with a job that never sleeps.
//!
//! Threads stay on the CPU they were spawned on (no migration), so per-CPU
//! data read by a thread belongs to the CPU it runs on for its whole life;
//! another thread of the same CPU may run between two instructions of a
//! preemptible thread, as an interrupt handler may, so per-CPU
//! read-modify-write sequences take a section or an [`IrqGuard`].
//!
//! # Run queues
//! Every CPU has a run queue (a spin lock taken with interrupts off): the
//! ready threads in FIFO order, the current thread, the idle thread, and
//! the context of a thread that just exited (its stack is given back by
//! the next thread, once nothing runs on it). Only the owning CPU takes
//! threads off its queue and switches to them; any CPU may add to it.
//! Switching happens with interrupts off, so a thread that was put back on
//! the queue (or woken) while it is being switched out cannot be resumed
//! before its registers are saved; [`crate::arch::context::switch`] checks
//! this with a per-context ownership word anyway.
//!
//! # Sleeping and waking: the lost-wakeup race
//! A thread's `state` is `RUNNING`, `BLOCKED` or `DEAD`. A waiter first
//! puts itself on the wait queue and sets `BLOCKED` (under the queue's
//! lock), *then* tests its condition, and only then calls the scheduler.
//! A waker first makes the condition true, then takes the queue's lock and
//! wakes who it finds there: `BLOCKED -> RUNNING` (a compare-exchange) and
//! onto the run queue of the thread's CPU. The queue lock orders the two:
//! either the waker's lock comes after the waiter's enqueue (the waker
//! finds and wakes it), or before it (so the waiter's later test, after
//! its own lock, sees the condition true). A wakeup that lands between the
//! test and the switch turns the state back to `RUNNING`, which the
//! scheduler reads under the run-queue lock, so the "sleep" becomes a
//! yield. Every waiter re-tests its condition in a loop, so a stale
//! wakeup is harmless. A preemption between setting `BLOCKED` and the
//! switch puts the thread back on the ready queue whatever its state (as
//! Linux does for a preempted task): it is not asleep yet, and when it
//! runs again it finishes its test and sleeps properly.
//!
//! # Cross-CPU wakeups
//! Waking a thread of another CPU whose current thread is its idle thread
//! sends that CPU the kick IPI; the idle thread checks its queue with
//! interrupts off right before `sti; hlt`, so the kick cannot be missed.
//!
//! # Sleeping in atomic context
//! Every call that may block checks first that interrupts are on, that the
//! CPU is not in an interrupt handler and that preemption is enabled (no
//! spin lock held, no rcu-sched read-side section), and panics with the
//! CPU and the caller's place otherwise ("scheduling while atomic").
#![deny(unsafe_code)]

mod mutex;
pub mod workqueue;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use core::time::Duration;
pub use mutex::{SleepMutex, SleepMutexGuard};

use ::x86_64::instructions::interrupts;
use refcnt::srcu::TaskSections;
use spin::{Mutex, Once};

use crate::arch::context::{self, Context};
use crate::arch::lock::SpinLock;
use crate::arch::percpu::{self, cpu_id, possible_cpus, sched_depth, IrqGuard};
use crate::arch::{idt, smp, time};

mod tests;

crate::percpu! {
    /// 1 when the tick found another thread ready while the current one
    /// could not be switched out; the next preemption point switches.
    static NEED_RESCHED: PerCpu<u64> = 0;
    /// Involuntary switches (preemptions) done on this CPU.
    pub static PREEMPTIONS: PerCpu<u64> = 0;
    /// The running thread's record of its open SRCU read sections (see
    /// [`with_task_srcu`]); saved to the thread and replaced by the next
    /// thread's at every switch.
    static SRCU_SECTIONS: PerCpu<TaskSections> = TaskSections::new();
}

const RUNNING: u8 = 0;
const BLOCKED: u8 = 1;
const DEAD: u8 = 2;

/// A kernel thread.
struct Thread {
    id: u64,
    /// The CPU it runs on, for its whole life.
    cpu: usize,
    ctx: &'static Context,
    /// `RUNNING`, `BLOCKED` or `DEAD` (see the module documentation).
    state: AtomicU8,
    /// On its CPU's ready queue. Read and written only under that queue's
    /// lock (so Relaxed).
    on_rq: AtomicBool,
    idle: bool,
    /// Its SRCU sections while it is switched out (see `SRCU_SECTIONS`).
    /// Only its CPU's scheduler touches it, under the run-queue lock.
    srcu: SpinLock<TaskSections>,
    start: SpinLock<Option<Box<dyn FnOnce() + Send>>>,
    /// Set once the thread's function has returned.
    done: AtomicBool,
    exited: WaitQueue,
    /// [`Priority::High`]. Set by the thread itself; read by its CPU's
    /// scheduler under the run-queue lock (so Relaxed).
    high: AtomicBool,
}

impl Thread {
    fn high(&self) -> bool {
        self.high.load(Ordering::Relaxed)
    }
}

/// A thread's scheduling class (see "Priorities" in the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Round robin with the other Normal threads of the CPU, a tick each.
    Normal,
    /// Before the Normal threads, up to [`HIGH_RUN_LIMIT`] at a stretch.
    High,
}

/// How long a [`Priority::High`] thread may run without blocking before
/// the tick lets a Normal thread of its CPU run for a tick: 20 ticks, so
/// a High thread that never blocks keeps about 95% of its CPU, as
/// Linux's default real-time throttling (950 ms a second) leaves it.
pub const HIGH_RUN_LIMIT: Duration = Duration::from_millis(80);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Thread {
    fn new(
        cpu: usize,
        ctx: &'static Context,
        idle: bool,
        start: Option<Box<dyn FnOnce() + Send>>,
    ) -> Arc<Self> {
        Arc::new(Thread {
            // Relaxed: only uniqueness matters.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            cpu,
            ctx,
            state: AtomicU8::new(RUNNING),
            on_rq: AtomicBool::new(false),
            idle,
            srcu: SpinLock::new(TaskSections::new()),
            start: SpinLock::new(start),
            done: AtomicBool::new(false),
            exited: WaitQueue::new(),
            high: AtomicBool::new(false),
        })
    }
}

struct RunQueue {
    ready: VecDeque<Arc<Thread>>,
    current: Option<Arc<Thread>>,
    idle: Option<Arc<Thread>>,
    /// The context of the thread that exited in the last switch here.
    zombie: Option<&'static Context>,
    switches: u64,
    /// When the current thread was switched in (ns): how long a High
    /// thread has run at a stretch.
    since: u64,
}

impl RunQueue {
    /// Whether the current thread is High and has run past
    /// [`HIGH_RUN_LIMIT`] since it was switched in.
    fn high_over_limit(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.high())
            && time::now_ns().saturating_sub(self.since) >= HIGH_RUN_LIMIT.as_nanos() as u64
    }
}

enum Timer {
    Wake(Arc<Thread>),
    Call(Box<dyn FnOnce() + Send>),
}

/// One CPU's scheduler state, on a cache line of its own.
#[repr(align(64))]
struct PerCpuSched {
    rq: Mutex<RunQueue>,
    /// Sleepers and timed callbacks, by (deadline in ns, sequence number).
    timers: Mutex<BTreeMap<(u64, u64), Timer>>,
}

static CPUS: Once<Vec<PerCpuSched>> = Once::new();
static TIMER_SEQ: AtomicU64 = AtomicU64::new(0);

fn cpus() -> &'static [PerCpuSched] {
    CPUS.get().expect("sched::init has run")
}

/// Runs `f` on CPU `cpu`'s run queue, locked with interrupts off.
///
/// Every lock here is a named local declared after its `IrqGuard`, so it
/// is released before interrupts come back on. (A lock guard that is a
/// temporary in a block's tail expression would outlive the block's
/// locals, the `IrqGuard` among them, and an interrupt handler taking the
/// same lock on this CPU would then spin forever.)
fn with_rq<R>(cpu: usize, f: impl FnOnce(&mut RunQueue) -> R) -> R {
    let _irq = IrqGuard::new();
    let mut rq = cpus()[cpu].rq.lock();
    let result = f(&mut rq);
    drop(rq);
    result
}

/// Sets up the run queues and makes the code running on the boot CPU its
/// first thread. Boot CPU, once, after the per-CPU areas and before the
/// other CPUs start.
pub fn init() {
    CPUS.call_once(|| {
        (0..possible_cpus())
            .map(|_| PerCpuSched {
                rq: Mutex::new(RunQueue {
                    ready: VecDeque::new(),
                    current: None,
                    idle: None,
                    zombie: None,
                    switches: 0,
                    since: 0,
                }),
                timers: Mutex::new(BTreeMap::new()),
            })
            .collect()
    });
    let main = Thread::new(0, Context::for_this_cpu(), false, None);
    let idle = Thread::new(0, Context::new(idle_entry), true, None);
    with_rq(0, |rq| {
        rq.current = Some(main);
        rq.idle = Some(idle);
    });
}

/// Turns the code running on an application processor into its idle
/// thread and runs the idle loop.
pub fn run_idle() -> ! {
    let me = cpu_id();
    let idle = Thread::new(me, Context::for_this_cpu(), true, None);
    with_rq(me, |rq| {
        rq.current = Some(idle.clone());
        rq.idle = Some(idle);
    });
    idle_loop()
}

extern "C" fn idle_entry() -> ! {
    finish_switch();
    idle_loop()
}

/// Runs the ready threads, then halts until an interrupt.
fn idle_loop() -> ! {
    let me = cpu_id();
    loop {
        interrupts::disable();
        // The interrupt that ended the halt left the idle state already;
        // this covers a halt that ended without one of ours.
        percpu::idle_exit();
        // Interrupts stay off from this check to `sti; hlt` (which takes a
        // pending interrupt only once halted), so a kick sent after the
        // check still ends the halt.
        if with_rq(me, |rq| !rq.ready.is_empty()) {
            schedule(false);
        } else {
            // Grace periods count this CPU quiescent from here until an
            // interrupt arrives, without waking it.
            percpu::idle_enter();
            interrupts::enable_and_hlt();
        }
    }
}

/// Picks the next thread of this CPU and switches to it. The current
/// thread goes back on the queue if it is still runnable (a yield) or is
/// being preempted, stays off it if it is blocked, and is retired if it is
/// dead.
fn schedule(preempt: bool) {
    let irq = IrqGuard::new();
    let me = cpu_id();
    let pair = with_rq(me, |rq| {
        let prev = rq.current.clone().expect("a current thread on this cpu");
        // A High thread preempted past its limit hands the CPU to a Normal
        // one; otherwise High threads go first.
        let throttled = preempt && rq.high_over_limit();
        // Acquire: pairs with the AcqRel compare-exchange of a waker.
        let state = prev.state.load(Ordering::Acquire);
        // A preempted thread stays runnable even if it was on its way to
        // sleep (see "the lost-wakeup race"); a dead one never preempts.
        let runnable = state == RUNNING || (preempt && state == BLOCKED);
        if runnable && !prev.idle {
            if rq.ready.is_empty() {
                return None;
            }
            prev.on_rq.store(true, Ordering::Relaxed);
            rq.ready.push_back(prev.clone());
        }
        if state == DEAD {
            rq.zombie = Some(prev.ctx);
        }
        let pick = rq.ready.iter().position(|t| t.high() != throttled);
        let next = match pick
            .and_then(|i| rq.ready.remove(i))
            .or_else(|| rq.ready.pop_front())
        {
            Some(next) => {
                next.on_rq.store(false, Ordering::Relaxed);
                next
            }
            None => rq.idle.clone().expect("an idle thread on this cpu"),
        };
        if Arc::ptr_eq(&next, &prev) {
            return None;
        }
        rq.switches += 1;
        rq.since = time::now_ns();
        NEED_RESCHED.set(0);
        SRCU_SECTIONS.with(&irq, |running| {
            *prev.srcu.lock() = running.clone();
            *running = next.srcu.lock().clone();
        });
        if preempt {
            PREEMPTIONS.add(1);
        }
        let pair = (prev.ctx, next.ctx);
        rq.current = Some(next);
        Some(pair)
    });
    if let Some((prev, next)) = pair {
        context::switch(prev, next);
        finish_switch();
    }
    drop(irq);
}

/// First thing after a switch, on the new thread: gives back the stack of
/// a thread that exited in that switch (nothing runs on it any more).
fn finish_switch() {
    let zombie = with_rq(cpu_id(), |rq| rq.zombie.take());
    if let Some(ctx) = zombie {
        assert!(ctx.retire(), "an exited thread's context is still running");
    }
}

extern "C" fn thread_entry() -> ! {
    finish_switch();
    interrupts::enable();
    let start = current().start.lock().take();
    if let Some(f) = start {
        f();
    }
    let me = current();
    // Release: the thread's effects (and its result) are visible to a
    // joiner that sees `done` (Acquire in `JoinHandle`).
    me.done.store(true, Ordering::Release);
    me.exited.wake_all();
    drop(me);
    exit_current()
}

/// Ends the current thread. Holds no reference to it across the last
/// switch, so that it can be freed.
fn exit_current() -> ! {
    interrupts::disable();
    with_rq(cpu_id(), |rq| {
        let me = rq.current.as_ref().expect("a current thread");
        // Relaxed: read by this CPU's scheduler only, under this lock.
        me.state.store(DEAD, Ordering::Relaxed);
    });
    schedule(false);
    unreachable!("an exited thread was resumed")
}

fn current() -> Arc<Thread> {
    with_rq(cpu_id(), |rq| rq.current.clone().expect("a current thread"))
}

/// The id of the running thread (unique for the run).
pub fn current_id() -> u64 {
    current().id
}

/// Sets the calling thread's scheduling class (see "Priorities" in the
/// module documentation). A High thread should block regularly: past
/// [`HIGH_RUN_LIMIT`] at a stretch it gives way to the CPU's Normal
/// threads for a tick at a time.
pub fn set_priority(priority: Priority) {
    // Relaxed: read by this CPU's scheduler, which runs after this store
    // in this CPU's program order.
    current()
        .high
        .store(priority == Priority::High, Ordering::Relaxed);
}

/// Context switches done on `cpu` so far.
pub fn context_switches(cpu: usize) -> u64 {
    with_rq(cpu, |rq| rq.switches)
}

/// Makes a blocked thread runnable; false if it was not blocked.
fn wake(thread: &Arc<Thread>) -> bool {
    match wake_inner(thread) {
        Woken::No => false,
        Woken::Yes(kick) => {
            if let Some(cpu) = kick {
                smp::kick(cpu);
            }
            true
        }
    }
}

/// As [`wake`], leaving the kick to the caller: the CPU to kick, if any.
fn wake_deferring_kick(thread: &Arc<Thread>) -> Option<usize> {
    match wake_inner(thread) {
        Woken::Yes(kick) => kick,
        Woken::No => None,
    }
}

enum Woken {
    /// It was not asleep.
    No,
    /// Woken; its CPU idles and needs a kick, unless `None`.
    Yes(Option<usize>),
}

fn wake_inner(thread: &Arc<Thread>) -> Woken {
    // AcqRel: the waker's writes (the condition) are visible to the thread
    // once it runs; pairs with the Acquire load in `schedule`.
    if thread
        .state
        .compare_exchange(BLOCKED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Woken::No;
    }
    Woken::Yes(enqueue_deferring_kick(thread))
}

/// Puts a runnable thread on its CPU's queue (unless it runs or is queued
/// already) and kicks that CPU if it idles.
fn enqueue(thread: &Arc<Thread>) {
    if let Some(cpu) = enqueue_deferring_kick(thread) {
        smp::kick(cpu);
    }
}

/// As [`enqueue`]; returns the CPU to kick (another CPU, idling) instead
/// of kicking it.
fn enqueue_deferring_kick(thread: &Arc<Thread>) -> Option<usize> {
    let cpu = thread.cpu;
    let kick = with_rq(cpu, |rq| {
        let running = rq.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, thread));
        if running || thread.on_rq.load(Ordering::Relaxed) {
            return false;
        }
        thread.on_rq.store(true, Ordering::Relaxed);
        rq.ready.push_back(thread.clone());
        rq.current.as_ref().is_none_or(|c| c.idle)
    });
    (kick && cpu != cpu_id()).then_some(cpu)
}

/// Panics unless the caller may block: interrupts on, not in an interrupt
/// handler, preemption enabled (no spin lock held, no rcu-sched read-side
/// section).
#[track_caller]
fn might_sleep(what: &str) {
    let place = Location::caller();
    let cpu = cpu_id();
    if idt::in_interrupt() {
        panic!("{what} in an interrupt handler (scheduling while atomic) on cpu {cpu} at {place}");
    }
    if !interrupts::are_enabled() {
        panic!(
            "{what} with interrupts off (scheduling while atomic; an IrqGuard is held?) on cpu {cpu} at {place}"
        );
    }
    let depth = sched_depth();
    if depth != 0 {
        panic!(
            "{what} with preemption disabled (a SpinLock or SchedGuard is held, depth {depth}; scheduling while atomic) on cpu {cpu} at {place}"
        );
    }
}

/// Lends `f` the running thread's record of its open SRCU read sections
/// (the kernel's [`refcnt::Backend::with_task_sections`]): a per-CPU
/// record that the scheduler saves to the thread and restores at every
/// switch, so it follows the thread. Interrupts are off while `f` runs, so
/// neither a switch nor an interrupt handler's own section can come
/// between its reads and writes.
#[inline]
pub fn with_task_srcu<R>(f: impl FnOnce(&mut TaskSections) -> R) -> R {
    let irq = IrqGuard::new();
    SRCU_SECTIONS.with(&irq, f)
}

/// Whether the caller may block here: the scheduler runs, the caller is
/// a thread (not the idle loop), interrupts are on, it is not in an
/// interrupt handler and preemption is enabled. The checks of
/// [`might_sleep`], as a question.
pub fn can_sleep() -> bool {
    CPUS.get().is_some()
        && interrupts::are_enabled()
        && !idt::in_interrupt()
        && sched_depth() == 0
        && with_rq(cpu_id(), |rq| rq.current.as_ref().is_some_and(|c| !c.idle))
}

/// Lets the other ready threads of this CPU run first.
#[track_caller]
pub fn yield_now() {
    might_sleep("yield_now");
    schedule(false);
}

static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);

/// Starts `f` in a new kernel thread on some online CPU (round robin).
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let online: Vec<usize> = smp::online().collect();
    // Relaxed: only spreads the threads.
    let n = NEXT_CPU.fetch_add(1, Ordering::Relaxed);
    spawn_on(online[n % online.len()], f)
}

/// Starts `f` in a new kernel thread on CPU `cpu`, where it stays. The
/// thread has a stack of its own with a guard hole below it.
///
/// # Panics
/// If `cpu` is offline.
pub fn spawn_on<T: Send + 'static>(
    cpu: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    assert!(smp::is_online(cpu), "spawn_on: cpu {cpu} is offline");
    let packet: Arc<SpinLock<Option<T>>> = Arc::new(SpinLock::new(None));
    let result = packet.clone();
    let start: Box<dyn FnOnce() + Send> = Box::new(move || {
        let value = f();
        *result.lock() = Some(value);
    });
    let thread = Thread::new(cpu, Context::new(thread_entry), false, Some(start));
    enqueue(&thread);
    JoinHandle { thread, packet }
}

/// Runs `f` on CPU `cpu`, another CPU than the caller's, in a kernel
/// thread of its own (see [`spawn_on`]), with interrupts on, so it may wait
/// for grace periods and IPIs. The caller may spin-wait for it with
/// [`JobHandle::join`] (it runs on another CPU), even with interrupts off:
/// what tests and benchmarks use to drive several CPUs at once.
///
/// # Panics
/// If `cpu` is this CPU or offline.
pub fn spawn_job(cpu: usize, f: impl FnOnce() + Send + 'static) -> JobHandle {
    assert!(
        cpu != cpu_id() && smp::is_online(cpu),
        "spawn_job: cpu {cpu} is this cpu or offline"
    );
    JobHandle {
        thread: spawn_on(cpu, f),
    }
}

/// A job started with [`spawn_job`].
pub struct JobHandle {
    thread: JoinHandle<()>,
}

impl JobHandle {
    /// Waits up to `ms` milliseconds for the job to return; false on timeout.
    /// Spins (it does not sleep), so it works with interrupts off too.
    pub fn join(&self, ms: u64) -> bool {
        smp::wait_for(ms, || self.thread.is_finished())
    }
}

/// Owns a thread started by [`spawn`]; [`JoinHandle::join`] waits for it.
#[must_use = "a thread that is never joined cannot report its result"]
pub struct JoinHandle<T> {
    thread: Arc<Thread>,
    packet: Arc<SpinLock<Option<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the thread's function has returned.
    pub fn is_finished(&self) -> bool {
        // Acquire: pairs with the Release store in `thread_entry`.
        self.thread.done.load(Ordering::Acquire)
    }

    /// The thread's id.
    pub fn id(&self) -> u64 {
        self.thread.id
    }

    /// Sleeps until the thread has exited and returns its result.
    #[track_caller]
    pub fn join(self) -> T {
        might_sleep("join");
        self.thread.exited.wait_until(|| self.is_finished());
        self.packet
            .lock()
            .take()
            .expect("a finished thread left its result")
    }
}

/// Threads waiting for a condition.
pub struct WaitQueue {
    waiters: Mutex<VecDeque<Arc<Thread>>>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        WaitQueue {
            waiters: Mutex::new(VecDeque::new()),
        }
    }

    /// Sleeps until `cond` is true. `cond` is tested after the thread is
    /// on the queue, so a waker that makes it true and then calls
    /// [`wake_one`](Self::wake_one) or [`wake_all`](Self::wake_all) is
    /// never missed.
    #[track_caller]
    pub fn wait_until(&self, cond: impl FnMut() -> bool) {
        might_sleep("wait_until");
        self.wait(cond, None);
    }

    /// As [`wait_until`](Self::wait_until), for at most `timeout`; returns
    /// whether `cond` became true.
    #[track_caller]
    pub fn wait_until_timeout(&self, cond: impl FnMut() -> bool, timeout: Duration) -> bool {
        might_sleep("wait_until_timeout");
        let deadline = time::now_ns().saturating_add(timeout.as_nanos() as u64);
        self.wait(cond, Some(deadline))
    }

    fn wait(&self, mut cond: impl FnMut() -> bool, deadline: Option<u64>) -> bool {
        if cond() {
            return true;
        }
        let me = current();
        let mut timer = None;
        let done = loop {
            {
                let _irq = IrqGuard::new();
                let mut waiters = self.waiters.lock();
                if !waiters.iter().any(|t| Arc::ptr_eq(t, &me)) {
                    waiters.push_back(me.clone());
                }
                // Relaxed is enough here: the queue lock orders this store
                // before a waker's compare-exchange (see the module docs).
                me.state.store(BLOCKED, Ordering::Relaxed);
            }
            let done = cond();
            if done || deadline.is_some_and(|d| time::now_ns() >= d) {
                break done;
            }
            if let Some(deadline) = deadline {
                arm_timer(&mut timer, deadline, &me);
            }
            schedule(false);
        };
        self.remove(&me);
        // Relaxed: only this thread and its wakers touch it; a waker that
        // raced us just finds it running.
        me.state.store(RUNNING, Ordering::Relaxed);
        cancel_timer(timer);
        done
    }

    fn remove(&self, me: &Arc<Thread>) {
        let _irq = IrqGuard::new();
        self.waiters.lock().retain(|t| !Arc::ptr_eq(t, me));
    }

    /// Threads waiting now (racy; for reports).
    pub fn len(&self) -> usize {
        let _irq = IrqGuard::new();
        self.waiters.lock().len()
    }

    /// Whether no thread waits now (racy).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the longest waiter, if any. Callable from interrupt handlers.
    pub fn wake_one(&self) {
        let first = {
            let _irq = IrqGuard::new();
            let mut waiters = self.waiters.lock();
            waiters.pop_front()
        };
        if let Some(thread) = first {
            wake(&thread);
        }
    }

    /// Wakes every waiter. Callable from interrupt handlers.
    pub fn wake_all(&self) {
        let all: VecDeque<Arc<Thread>> = {
            let _irq = IrqGuard::new();
            let mut waiters = self.waiters.lock();
            core::mem::take(&mut *waiters)
        };
        // The idle CPUs are kicked together at the end: one broadcast when
        // they are all the others (see `smp::kick_many`).
        let mut kicks = Vec::new();
        for thread in &all {
            if let Some(cpu) = wake_deferring_kick(thread) {
                if !kicks.contains(&cpu) {
                    kicks.push(cpu);
                }
            }
        }
        smp::kick_many(&kicks);
    }
}

/// A one-way event with a count, as in Linux: [`complete`](Self::complete)
/// lets one waiter through, [`complete_all`](Self::complete_all) every
/// waiter from then on. Completing is allowed from interrupt handlers.
pub struct Completion {
    /// Waiters that may still pass; `u64::MAX` after `complete_all`.
    done: Mutex<u64>,
    waiters: WaitQueue,
}

impl Default for Completion {
    fn default() -> Self {
        Self::new()
    }
}

impl Completion {
    /// A completion not completed yet.
    pub const fn new() -> Self {
        Completion {
            done: Mutex::new(0),
            waiters: WaitQueue::new(),
        }
    }

    /// Lets one waiter (present or future) through.
    pub fn complete(&self) {
        {
            let _irq = IrqGuard::new();
            let mut done = self.done.lock();
            *done = done.saturating_add(1);
        }
        self.waiters.wake_one();
    }

    /// Lets every waiter through, now and later.
    pub fn complete_all(&self) {
        {
            let _irq = IrqGuard::new();
            *self.done.lock() = u64::MAX;
        }
        self.waiters.wake_all();
    }

    fn try_take(&self) -> bool {
        let _irq = IrqGuard::new();
        let mut done = self.done.lock();
        match *done {
            0 => false,
            u64::MAX => true,
            _ => {
                *done -= 1;
                true
            }
        }
    }

    /// Whether a wait would pass now (without taking it).
    pub fn is_done(&self) -> bool {
        let _irq = IrqGuard::new();
        let done = self.done.lock();
        *done != 0
    }

    /// Sleeps until completed.
    #[track_caller]
    pub fn wait_for_completion(&self) {
        might_sleep("wait_for_completion");
        self.waiters.wait(|| self.try_take(), None);
    }

    /// Sleeps until completed or `timeout` has passed; false on timeout.
    #[track_caller]
    pub fn wait_for_completion_timeout(&self, timeout: Duration) -> bool {
        might_sleep("wait_for_completion_timeout");
        let deadline = time::now_ns().saturating_add(timeout.as_nanos() as u64);
        self.waiters.wait(|| self.try_take(), Some(deadline))
    }
}

/// Key of a timer in its CPU's list.
type TimerKey = (u64, u64);

fn add_timer(deadline: u64, timer: Timer) -> TimerKey {
    // Relaxed: only uniqueness matters.
    let key = (deadline, TIMER_SEQ.fetch_add(1, Ordering::Relaxed));
    let _irq = IrqGuard::new();
    let mut timers = cpus()[cpu_id()].timers.lock();
    timers.insert(key, timer);
    // The timer interrupt comes at the earliest deadline, not at the next
    // tick only (see `run_timers`).
    if let Some((&(first, _), _)) = timers.first_key_value() {
        idt::arm_hrtimer(first);
    }
    key
}

/// Makes sure a wakeup of `me` at `deadline` is pending on this CPU: adds
/// one unless the one added before (`armed`) is still in the list (the
/// tick may have fired it while `me` was awake anyway).
fn arm_timer(armed: &mut Option<TimerKey>, deadline: u64, me: &Arc<Thread>) {
    if let Some(key) = *armed {
        let _irq = IrqGuard::new();
        let timers = cpus()[cpu_id()].timers.lock();
        if timers.contains_key(&key) {
            return;
        }
    }
    *armed = Some(add_timer(deadline, Timer::Wake(me.clone())));
}

/// Removes a wakeup that is no longer needed (if the tick has not fired it
/// yet), so that it neither wakes the thread later nor keeps it alive.
fn cancel_timer(armed: Option<TimerKey>) {
    if let Some(key) = armed {
        let removed = {
            let _irq = IrqGuard::new();
            let mut timers = cpus()[cpu_id()].timers.lock();
            timers.remove(&key)
        };
        drop(removed);
    }
}

/// Sleeps for at least `duration` on the TSC clock (woken by the timer
/// interrupt at the deadline; the thread runs then if its CPU is idle,
/// else when the running thread's time slice ends).
#[track_caller]
pub fn sleep(duration: Duration) {
    might_sleep("sleep");
    let deadline = time::now_ns().saturating_add(duration.as_nanos() as u64);
    let me = current();
    let mut timer = None;
    loop {
        // Relaxed: the waker is this CPU's tick, which comes after this
        // store in program order.
        me.state.store(BLOCKED, Ordering::Relaxed);
        if time::now_ns() >= deadline {
            me.state.store(RUNNING, Ordering::Relaxed);
            cancel_timer(timer);
            return;
        }
        arm_timer(&mut timer, deadline, &me);
        schedule(false);
    }
}

/// Runs `f` from this CPU's timer interrupt once `delay` has passed (not
/// before; later by the interrupt's latency: the interrupt is asked for at
/// the deadline, see `run_timers`), with interrupts off. `f` must not
/// sleep; it may wake threads and complete completions and requests.
/// Callable from any context, interrupt handlers included. Returns the
/// deadline (ns, `time::now_ns`'s clock).
pub fn call_after(delay: Duration, f: impl FnOnce() + Send + 'static) -> u64 {
    let deadline = time::now_ns().saturating_add(delay.as_nanos() as u64);
    add_timer(deadline, Timer::Call(Box::new(f)));
    deadline
}

/// Wakes the sleepers and runs the timed calls that are due on this CPU,
/// then asks for the timer interrupt at the next deadline, so that a
/// sleep or timed call ends at its deadline (plus the interrupt's
/// latency), not at the next tick. Runs in the timer interrupt: at each
/// tick and at high-resolution deadlines (registered by `irq.rs`).
pub fn run_timers() {
    let Some(cpus) = CPUS.get() else { return };
    let now = time::now_ns();
    let mut due = Vec::new();
    {
        let mut timers = cpus[cpu_id()].timers.lock();
        while let Some(entry) = timers.first_entry() {
            if entry.key().0 > now {
                idt::arm_hrtimer(entry.key().0);
                break;
            }
            due.push(entry.remove());
        }
    }
    for timer in due {
        match timer {
            Timer::Wake(thread) => {
                wake(&thread);
            }
            Timer::Call(f) => f(),
        }
    }
}

/// The timer tick's part: the timers that are due (`run_timers`), and the
/// end of the time slice. Interrupt handler.
pub fn tick() {
    run_timers();
    // The time slice of the current thread ends if another one is ready
    // (for a High thread: another High one, or its limit is reached).
    let slice_over = with_rq(cpu_id(), |rq| match rq.current.as_ref() {
        Some(c) if !c.idle && !rq.ready.is_empty() => {
            !c.high() || rq.ready.iter().any(|t| t.high()) || rq.high_over_limit()
        }
        _ => false,
    });
    if slice_over {
        NEED_RESCHED.set(1);
    }
}

/// Whether this CPU may switch threads here: the scheduler runs on it, and
/// it is in no rcu-sched read-side section (which every spin lock holder
/// is in). Interrupts are checked by the callers.
fn preemptible() -> bool {
    CPUS.get().is_some() && sched_depth() == 0
}

/// The timer interrupt's exit, after its EOI: switches threads if the
/// tick asked for it and the interrupted code is preemptible. Runs on the
/// interrupted thread's stack with interrupts off; the switch returns here
/// when the thread is chosen again, and the handler's `iretq` resumes it.
pub fn preempt_irq_exit() {
    if NEED_RESCHED.get() != 0 && preemptible() {
        NEED_RESCHED.set(0);
        schedule(true);
    }
}

/// A preemption point for code that has just ended its outermost
/// rcu-sched section (or dropped its last spin lock): switches if the tick
/// asked for it meanwhile. Does nothing with interrupts off or in an
/// interrupt handler.
pub fn preempt_point() {
    if NEED_RESCHED.get() != 0 && interrupts::are_enabled() && !idt::in_interrupt() && preemptible()
    {
        NEED_RESCHED.set(0);
        schedule(true);
    }
}
