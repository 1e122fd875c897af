//! A minimal [`refcnt::Backend`] for a small SMP kernel, and percpu_ref and
//! SRCU running on it.
//!
//! ```text
//! cargo run -p refcnt --example minimal_backend
//! ```
//!
//! The "kernel" here is simulated on the host so that the example runs
//! anywhere: each simulated CPU is one host thread that never runs
//! anything else (so, as on a real CPU, code of one CPU never runs at the
//! same time as other code of the same CPU), and [`cpu_id`] is a
//! thread-local where a kernel would read a per-CPU register (GS base,
//! TPIDR_EL1, ...). Everything else is what a small kernel would write:
//!
//! * per-CPU memory is a static array per CPU, carved by a first-fit
//!   allocator that gives an allocation the same offset on every CPU;
//! * a read-side section is an interrupts-off section: a per-CPU nesting
//!   count, which is what the grace period looks at;
//! * a grace period waits until every CPU's count has been seen at zero;
//! * `call_sched` appends to a deferred list that a worker thread drains:
//!   one grace period for the whole batch, then each callback once.
//!
//! What a real kernel would do differently is said where it matters
//! ("In a kernel: ..."). The seven numbered promises of the `Backend`
//! trait's `# Safety` section are marked `Promise N` where the code keeps
//! them.
//!
//! Simulating interrupts honestly: a simulated CPU takes no interrupts, so
//! nothing can split its read-modify-writes; a kernel's CPU can be
//! interrupted between any two instructions, and its interrupt handlers
//! may take and drop references too. The code is therefore written as for
//! the kernel: every read-modify-write of a per-CPU word runs with
//! "interrupts off" ([`irq_save`]), and [`irq_save`] is the whole read-side
//! section, so the interrupts-off regions the kernel needs anyway are what
//! the grace period waits for (Linux's rcu-sched works the same way).

use std::marker::PhantomData;
use std::sync::atomic::{
    fence, AtomicBool, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use refcnt::percpu_ref::{Flags, PercpuRef};
use refcnt::srcu::{Srcu, SrcuPtr};
use refcnt::{AllocError, Backend, Misuse, Report};

/// CPUs the kernel was built for ("possible CPUs"): the per-CPU arrays
/// have this many rows, whether every CPU comes online or not.
const NR_CPUS: usize = 5;

/// The CPU whose thread runs the `call_sched` callbacks. A kernel runs
/// deferred work in a kthread that some CPU runs, so a callback is on a
/// CPU: it may enter read-side sections (refcnt's puts do) and touch
/// per-CPU counters. The demos use the other CPUs.
const WORKER_CPU: usize = NR_CPUS - 1;

/// Words of per-CPU memory each CPU has for counters (a kernel: the size
/// of its dynamic per-CPU area).
const PERCPU_WORDS: usize = 256;

// ---------------------------------------------------------------------
// The simulated machine: which CPU am I?
// ---------------------------------------------------------------------

thread_local! {
    /// This thread's CPU number; `usize::MAX` on threads that are not a
    /// CPU (the simulation's worker threads; a kernel has no such thing:
    /// its workers are threads that some CPU runs).
    static CPU: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// The calling CPU's number. In a kernel: a load from the per-CPU area
/// (`mov rax, gs:[cpu_number]`).
fn cpu_id() -> usize {
    try_cpu_id().expect("per-CPU operation on a thread that is not a CPU")
}

fn try_cpu_id() -> Option<usize> {
    let id = CPU.with(|c| c.get());
    (id < NR_CPUS).then_some(id)
}

/// Makes the calling thread CPU `id` (a kernel: the CPU's boot code sets
/// its GS base). Each CPU is brought up by exactly one thread.
fn become_cpu(id: usize) {
    assert!(id < NR_CPUS);
    CPU.with(|c| c.set(id));
}

// ---------------------------------------------------------------------
// Static per-CPU memory and its allocator.
// ---------------------------------------------------------------------

/// One CPU's per-CPU area, on its own cache lines.
#[repr(align(128))]
struct CpuArea {
    /// Counters handed out by `alloc_percpu`.
    words: [AtomicUsize; PERCPU_WORDS],
    /// Interrupts-off nesting depth: the read-side section count that
    /// `synchronize_sched` waits on.
    irq_off: AtomicUsize,
}

/// Row `c` is CPU `c`'s. Statics are zeroed, as a kernel's per-CPU
/// sections are before the CPUs start.
static PERCPU: [CpuArea; NR_CPUS] = [const {
    CpuArea {
        words: [const { AtomicUsize::new(0) }; PERCPU_WORDS],
        irq_off: AtomicUsize::new(0),
    }
}; NR_CPUS];

/// Which words of the per-CPU areas are taken (the same on every CPU).
/// In a kernel: a spinlock taken with interrupts off.
static TAKEN: spin::Mutex<[bool; PERCPU_WORDS]> = spin::Mutex::new([false; PERCPU_WORDS]);

/// An allocation of `len` words at `offset` in every CPU's area. Dropping
/// it gives the words back.
struct PerCpuAlloc {
    offset: usize,
    len: usize,
}

impl PerCpuAlloc {
    /// The calling CPU's word `slot` of this allocation.
    fn this_cpu(&self, slot: usize) -> &'static AtomicUsize {
        self.on(cpu_id(), slot)
    }

    /// CPU `cpu`'s word `slot` of this allocation.
    fn on(&self, cpu: usize, slot: usize) -> &'static AtomicUsize {
        assert!(slot < self.len, "slot {slot} out of {}", self.len);
        &PERCPU[cpu].words[self.offset + slot]
    }
}

impl Drop for PerCpuAlloc {
    fn drop(&mut self) {
        let mut taken = TAKEN.lock();
        for t in &mut taken[self.offset..self.offset + self.len] {
            *t = false;
        }
    }
}

// ---------------------------------------------------------------------
// Interrupts-off sections (the read-side sections).
// ---------------------------------------------------------------------

/// Proof that the calling CPU has interrupts off; dropping it restores
/// them (when it is the outermost). Not `Send`: it belongs to its CPU.
struct IrqGuard {
    cpu: usize,
    _not_send: PhantomData<*const ()>,
}

/// Turns interrupts off on the calling CPU (nesting). In a kernel:
/// `pushf; cli`, and the count below (which a kernel keeps anyway, or
/// reads from the saved flags) tells the grace period about it.
fn irq_save() -> IrqGuard {
    let cpu = cpu_id();
    let count = &PERCPU[cpu].irq_off;
    // Relaxed load and store: only this CPU writes its count.
    count.store(count.load(Relaxed) + 1, Relaxed);
    // Promise 3 (second half): the store above, then a full
    // barrier, then the section's loads; `synchronize_sched` has a full
    // barrier between the updater's stores and its loads of the counts.
    // Either the updater sees this section (and waits for it), or this
    // section sees everything the updater stored before the grace period.
    // (In a kernel, the IPI or tick that reports the quiescent state
    // supplies this barrier instead, off the fast path.)
    fence(SeqCst);
    IrqGuard {
        cpu,
        _not_send: PhantomData,
    }
}

impl Drop for IrqGuard {
    fn drop(&mut self) {
        let count = &PERCPU[self.cpu].irq_off;
        // Promise 3 (first half): Release, paired with the grace period's
        // Acquire load, so everything the section wrote is visible to the
        // updater once it sees the count go down. In a kernel: `popf`.
        count.store(count.load(Relaxed) - 1, Release);
    }
}

// ---------------------------------------------------------------------
// Grace periods and the deferred list.
// ---------------------------------------------------------------------

/// Grace periods completed (for the printout).
static GRACE_PERIODS: AtomicUsize = AtomicUsize::new(0);

/// Waits until every CPU has been seen outside any interrupts-off section.
fn synchronize() {
    if let Some(cpu) = try_cpu_id() {
        // As in a kernel: waiting with interrupts off would wait for
        // ourselves forever.
        assert_eq!(
            PERCPU[cpu].irq_off.load(Relaxed),
            0,
            "synchronize_sched with interrupts off"
        );
    }
    // Promise 3: the caller's stores (a ref's mode flag, a published
    // pointer) before the loads of the counts; pairs with the fence in
    // `irq_save`.
    fence(SeqCst);
    // Promise 2's counterpart: every possible CPU, online or not.
    for area in &PERCPU {
        // Promise 3: a count seen at zero after the fence means every
        // section that CPU began before the call has ended (sections
        // nest, so the count is zero only between outermost sections).
        // Acquire, paired with the Release in IrqGuard::drop: what those
        // sections wrote is visible now. A CPU that enters a new section
        // right after is not waited for; the fences above cover it.
        while area.irq_off.load(Acquire) != 0 {
            std::thread::yield_now(); // a kernel: cpu_relax() or sleep
        }
    }
    GRACE_PERIODS.fetch_add(1, Relaxed);
}

type Callback = Box<dyn FnOnce() + Send>;

/// `call_sched` callbacks waiting for the worker. In a kernel: a per-CPU
/// list (interrupts off to append) that the tick hands to a kthread.
static DEFERRED: spin::Mutex<Vec<Callback>> = spin::Mutex::new(Vec::new());
/// Set by `call_sched`, cleared by the worker when it takes the list.
static DEFERRED_PENDING: AtomicBool = AtomicBool::new(false);
/// `call_sched` callbacks run so far.
static CALLBACKS_RUN: AtomicUsize = AtomicUsize::new(0);

/// The worker: takes the whole list, waits one grace period (which began
/// after every callback in it was queued), then runs each callback.
/// Started once; in a kernel, a kthread that sleeps until woken.
fn start_callback_worker() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("call_sched".into())
            .spawn(|| {
                become_cpu(WORKER_CPU);
                loop {
                    if !DEFERRED_PENDING.swap(false, Acquire) {
                        std::thread::park_timeout(Duration::from_millis(1));
                        continue;
                    }
                    let batch = std::mem::take(&mut *DEFERRED.lock());
                    // Promise 4: the grace period starts after each callback
                    // of the batch was queued (they were on the list before
                    // we took it) ...
                    synchronize();
                    for f in batch {
                        // ... and each runs exactly once (moved out of the
                        // list, called once), here, never in call_sched.
                        f();
                        CALLBACKS_RUN.fetch_add(1, Relaxed);
                    }
                    MiniKernel::wake_waiters();
                }
            })
            .expect("could not start the call_sched worker");
    });
}

// ---------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------

/// The backend: a zero-sized type, every call static.
struct MiniKernel;

impl Report for MiniKernel {
    fn report(m: Misuse) {
        // A kernel: printk to the console.
        eprintln!("refcnt misuse: {m}");
    }
}

/// First fit under the allocator's lock (see `alloc_percpu`).
fn alloc_words(
    mut taken: spin::MutexGuard<'_, [bool; PERCPU_WORDS]>,
    slots: usize,
) -> Result<PerCpuAlloc, AllocError> {
    // First fit: `slots` free words in a row, the same offset on
    // every CPU.
    let offset = (0..=PERCPU_WORDS.saturating_sub(slots))
        .find(|&o| taken[o..o + slots].iter().all(|t| !t))
        .ok_or(AllocError)?;
    for t in &mut taken[offset..offset + slots] {
        *t = true;
    }
    // "All zero": a freed allocation may have left counts behind.
    // Nobody else can reach these words yet.
    for area in &PERCPU {
        for w in &area.words[offset..offset + slots] {
            w.store(0, Relaxed);
        }
    }
    // The lock's release publishes the zeroes to whoever gets the
    // allocation (they reach it through a handle passed on later).
    Ok(PerCpuAlloc { offset, len: slots })
}

// SAFETY: the seven promises of `Backend` are kept as marked in the
// comments above and below ("Promise N"): per-CPU words written only by
// their CPU with interrupts off (1), sums over every possible CPU (2), a
// grace period that waits for every CPU's interrupts-off count to be seen
// at zero, with full barriers on both sides of the store-load race (3),
// callbacks run once by a worker after a later grace period (4), the
// default section-wrapped fast paths (5) with the default's Acquire load
// of the ref's word (6), and the default key, 0 (7).
unsafe impl Backend for MiniKernel {
    type PerCpu = PerCpuAlloc;
    type ReadGuard = IrqGuard;

    fn alloc_percpu(slots: usize) -> Result<PerCpuAlloc, AllocError> {
        alloc_words(TAKEN.lock(), slots)
    }

    fn alloc_percpu_nowait(slots: usize) -> Result<PerCpuAlloc, AllocError> {
        // A dynamic percpu_ref's get asks for its counters here, maybe
        // with interrupts off and on a CPU whose interrupted code holds
        // the lock: try it rather than spin on it; on failure the ref
        // stays atomic and asks again later.
        alloc_words(TAKEN.try_lock().ok_or(AllocError)?, slots)
    }

    fn this_cpu_add(p: &PerCpuAlloc, slot: usize, delta: usize) {
        // Promise 1: only the calling CPU's word (`cpu_id`), and with
        // interrupts off, so no handler on this CPU can run between the
        // load and the store and have its add overwritten (nothing is
        // lost). No `lock` prefix needed: no other CPU writes this word.
        // In a kernel: one `add gs:[off], reg`, which an interrupt cannot
        // split, and then no section is needed.
        let _irq = irq_save();
        let w = p.this_cpu(slot);
        w.store(w.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    fn sum(p: &PerCpuAlloc, slot: usize) -> usize {
        // Promise 2: every possible CPU's word, not only online ones.
        (0..NR_CPUS).fold(0usize, |s, cpu| {
            s.wrapping_add(p.on(cpu, slot).load(Relaxed))
        })
    }

    fn this_cpu_read(p: &PerCpuAlloc, slot: usize) -> Option<usize> {
        // On a thread that is not a CPU (the simulation's workers) there
        // is no "this CPU": say so, which turns SRCU's misuse checks off
        // there rather than reading some other CPU's words.
        let cpu = try_cpu_id()?;
        Some(p.on(cpu, slot).load(Relaxed))
    }

    fn read_lock_sched() -> IrqGuard {
        // Promise 5: the default `this_cpu_add_unless` and
        // `this_cpu_add_sched` (not overridden here) run their test and
        // add inside this guard, so each is one section; the guard is
        // an interrupts-off section, which `synchronize_sched` waits for.
        irq_save()
    }

    fn synchronize_sched() {
        // Promise 3 (see `synchronize`).
        synchronize()
    }

    fn call_sched(f: Box<dyn FnOnce() + Send>) {
        // Promise 4: only queued here, never run; the worker runs it after
        // a grace period that begins after this push.
        DEFERRED.lock().push(f);
        DEFERRED_PENDING.store(true, Release);
        start_callback_worker();
    }

    fn now_ns() -> u64 {
        // A kernel: the TSC scaled to ns, or a timer's counter.
        static BOOT: OnceLock<Instant> = OnceLock::new();
        BOOT.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    fn relax() {
        // A kernel with a scheduler yields here; `pause` otherwise.
        std::thread::yield_now()
    }

    fn queue_work(f: Box<dyn FnOnce() + Send>) {
        // SRCU runs its grace-period work here; it may wait for a slow
        // reader, so it must not hold up call_sched callbacks (the
        // trait's docs): a thread of its own per item. A kernel: a work
        // pool that starts a kthread when none is idle.
        std::thread::Builder::new()
            .name("work".into())
            .spawn(f)
            .expect("could not start a work thread");
    }
}

// ---------------------------------------------------------------------
// Using it: percpu_ref and SRCU on the simulated CPUs.
// ---------------------------------------------------------------------

/// Runs `f(cpu)` on CPUs 1 to WORKER_CPU - 1 at once (CPU 0 is the main
/// thread, which waits for them), like a kernel's "run on every other
/// CPU" helper.
fn on_other_cpus(f: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        for cpu in 1..WORKER_CPU {
            let f = &f;
            s.spawn(move || {
                become_cpu(cpu);
                f(cpu)
            });
        }
    });
}

fn percpu_ref_demo() {
    println!("-- percpu_ref --");
    let released = Arc::new(AtomicBool::new(false));
    let r = {
        let released = released.clone();
        Arc::new(
            PercpuRef::<MiniKernel>::new(
                move || {
                    println!("  release callback: last reference gone, the object can be freed");
                    released.store(true, Release);
                },
                Flags::empty(),
            )
            .expect("per-CPU memory"),
        )
    };
    println!("  new ref: {:?} mode", r.stats().mode);

    // Every CPU takes and drops references on its own counter only; each
    // keeps one more to hand to CPU 0 (a put on another CPU than the
    // get's is fine: only the sum over CPUs means anything).
    const PAIRS: usize = 100_000;
    on_other_cpus(|_cpu| {
        for _ in 0..PAIRS {
            drop(r.get());
        }
        r.get().leak();
    });
    println!(
        "  CPUs 1-{}: {PAIRS} get/put pairs each on their own counter, one reference kept",
        WORKER_CPU - 1
    );

    // CPU 0 drops the references the others handed over: its own counter
    // goes "negative" (wrapping), the sum stays right.
    r.put_many(WORKER_CPU - 1);

    // kill: switch to atomic mode after a grace period (a call_sched
    // callback), and drop the initial reference.
    let held = r.get();
    r.kill();
    assert!(r.tryget_live().is_none(), "no new users once killed");
    println!(
        "  killed with one reference held: dying = {}, released = {}",
        r.is_dying(),
        released.load(Acquire)
    );
    drop(held);
    r.wait_for_release();
    assert!(released.load(Acquire));
    let s = r.stats();
    println!(
        "  after the last put: {:?} mode, {} switch to atomic, {} release",
        s.mode, s.switches_to_atomic, s.releases
    );
}

fn srcu_demo() {
    println!("-- SRCU --");
    let srcu = Srcu::<MiniKernel>::new().expect("per-CPU memory");
    // The configuration readers look at; writers replace it whole.
    let config = SrcuPtr::new(&srcu, String::from("config v0"));
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for cpu in 1..WORKER_CPU {
            let (srcu, config, stop, reads) = (&srcu, &config, &stop, &reads);
            s.spawn(move || {
                become_cpu(cpu);
                while !stop.load(Relaxed) {
                    // A read-side section: may sleep (here: yield), and
                    // the value read stays alive until it ends.
                    let guard = srcu.read_lock();
                    let v = config.read(&guard);
                    assert!(v.starts_with("config v"));
                    std::thread::yield_now();
                    drop(guard);
                    reads.fetch_add(1, Relaxed);
                }
            });
        }
        // CPU 0 (this thread) is the writer.
        for v in 1..=5 {
            // Publishes the new value, waits for every reader that could
            // see the old one, and hands the old one back: safe to free.
            let old = config
                .replace(format!("config v{v}"))
                .expect("not inside a section");
            println!("  replaced {old:?}: every reader of it had left");
        }
        stop.store(true, Relaxed);
    });
    println!(
        "  {} read sections on CPUs 1-{}, {} SRCU grace periods",
        reads.load(Relaxed),
        WORKER_CPU - 1,
        srcu.completed()
    );

    // The asynchronous form: call runs the closure after a grace period.
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    srcu.call(move || d.store(true, Release));
    srcu.barrier().expect("not inside a section");
    assert!(done.load(Acquire));
    println!("  srcu.call: callback ran before barrier returned");

    // A section handed between CPUs (an I/O submitted on one, completed
    // on another): down_read on CPU 1, up_read on CPU 2. This backend has
    // no per-task records, so the misuse check reads the CPU's counts,
    // which the hand-off leaves off by one; it then lets waits through
    // instead of refusing CPU 1's legal one.
    let idx = std::thread::scope(|s| {
        s.spawn(|| {
            become_cpu(1);
            srcu.down_read()
        })
        .join()
        .unwrap()
    });
    std::thread::scope(|s| {
        s.spawn(|| {
            become_cpu(2);
            srcu.up_read(idx).expect("the index down_read returned");
        });
    });
    std::thread::scope(|s| {
        s.spawn(|| {
            become_cpu(1);
            srcu.synchronize().expect("CPU 1 is in no section");
        });
    });
    println!("  down_read on CPU 1, up_read on CPU 2: CPU 1 may wait again");
}

fn main() {
    // The boot CPU.
    become_cpu(0);
    println!(
        "minimal_backend: {NR_CPUS} simulated CPUs (CPU {WORKER_CPU} runs the call_sched callbacks), {PERCPU_WORDS} per-CPU words each"
    );
    percpu_ref_demo();
    srcu_demo();
    let free = TAKEN.lock().iter().filter(|t| !**t).count();
    println!(
        "done: {} grace periods (rcu-sched), {} call_sched callbacks, {} of {} per-CPU words free again",
        GRACE_PERIODS.load(Relaxed),
        CALLBACKS_RUN.load(Relaxed),
        free,
        PERCPU_WORDS
    );
}
