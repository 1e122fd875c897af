//! The request queue: usage counter, freeze, quiesce, hardware queues and
//! dispatch (see the [module documentation](super)).

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use refcnt::percpu_ref::{Flags, Mode, PercpuRef};
use refcnt::srcu::{Srcu, SrcuReadGuard};

use super::request::{Request, RequestState};
use super::tags::Tags;
use super::{BlkError, EndIo, Op};
use crate::arch::lock::IrqSpinLock;
use crate::arch::percpu::{cpu_id, possible_cpus, sched_read_lock, SchedGuard};
use crate::arch::time;
use crate::sched::{SleepMutex, WaitQueue};
use crate::sync::backend::Kernel;
use crate::sync::SpinLock;

/// A device driver: starts requests.
pub trait Driver: Send + Sync + 'static {
    /// Starts `rq`, which is in flight. The driver completes it with
    /// [`Request::complete`] now or later, from any context. Runs inside
    /// the tag set's SRCU read section (a blocking tag set: may sleep) or
    /// an rcu-sched section (may not sleep).
    fn queue_rq(&self, rq: &Arc<Request>);

    /// The disk was removed: the queue is dead, drained and quiesced, so no
    /// request is in flight and none will be dispatched again. The driver
    /// lets go of what it holds for the device (null_blk: its memory), as a
    /// Linux driver tears its device down at `del_gendisk`, even while
    /// references to the disk and its queue remain (their own memory goes
    /// with the last one).
    fn teardown(&self) {}
}

/// A request's slot in its hardware queue, by tag: what the in-flight
/// iterator walks. Interrupts-off locks: the last put of a request, which
/// empties its slot, may run in a device-completion interrupt on a CPU
/// whose thread holds the same slot's lock in the iterator.
type Slots = Vec<IrqSpinLock<Option<Arc<Request>>>>;

/// Hardware queues' tags and requests, shared by every queue built on
/// them (`shared_tags`), and the SRCU domain that dispatch runs under when
/// the driver may block (Linux's `tag_set->srcu`).
pub struct TagSet {
    tags: Vec<Arc<Tags>>,
    slots: Vec<Arc<Slots>>,
    srcu: Option<Arc<Srcu<Kernel>>>,
}

impl TagSet {
    /// `hw_queues` queues of `depth` tags; `blocking`: dispatch may sleep,
    /// so it runs under an SRCU domain of the set's.
    pub fn new(hw_queues: usize, depth: usize, blocking: bool) -> Arc<Self> {
        Arc::new(TagSet {
            tags: (0..hw_queues).map(|_| Arc::new(Tags::new(depth))).collect(),
            slots: (0..hw_queues)
                .map(|_| Arc::new((0..depth).map(|_| IrqSpinLock::new(None)).collect()))
                .collect(),
            srcu: blocking
                .then(|| Arc::new(Srcu::new().expect("per-CPU memory for the tag set's SRCU"))),
        })
    }

    /// How many hardware queues.
    pub fn hw_queues(&self) -> usize {
        self.tags.len()
    }

    /// Whether dispatch may sleep.
    pub fn blocking(&self) -> bool {
        self.srcu.is_some()
    }

    /// SRCU grace periods of the set's domain (0 when not blocking).
    pub fn srcu_grace_periods(&self) -> usize {
        self.srcu.as_ref().map_or(0, |s| s.completed())
    }
}

/// One hardware queue of a request queue.
pub struct Hctx {
    /// Its index.
    pub index: usize,
    tags: Arc<Tags>,
    slots: Arc<Slots>,
    /// Requests waiting for dispatch (the queue was quiesced).
    dispatch: SpinLock<VecDeque<Arc<Request>>>,
}

impl Hctx {
    /// Its tags.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// Counters of a queue.
#[derive(Default)]
pub struct QueueStats {
    /// Requests that entered (took a usage reference and a tag).
    pub entered: AtomicU64,
    /// Requests freed (tag back, usage reference put).
    pub freed: AtomicU64,
    /// Completions refused: the request was already complete, or not yet
    /// handed to the driver.
    pub double_completions: AtomicU64,
    /// Freezes (outermost).
    pub freezes: AtomicU64,
    /// Sum and maximum of freeze drain times (kill to zero), ns.
    pub freeze_ns_sum: AtomicU64,
    /// See `freeze_ns_sum`.
    pub freeze_ns_max: AtomicU64,
    /// Quiesces, and the sum of their waits, ns.
    pub quiesces: AtomicU64,
    /// See `quiesces`.
    pub quiesce_ns_sum: AtomicU64,
    /// Submissions refused because the queue was dying.
    pub refused_dead: AtomicU64,
}

crate::percpu! {
    /// Nanoseconds this CPU spent entering and leaving queues (taking and
    /// putting usage references) while [`time_usage`] is on.
    static USAGE_NS: PerCpu<u64> = 0;
    /// Enters and leaves timed into `USAGE_NS` on this CPU.
    static USAGE_CALLS: PerCpu<u64> = 0;
}

/// Whether entering and leaving are timed (a measurement: the clock reads
/// cost more than what they time, so the share they give is an upper
/// bound).
static TIME_USAGE: AtomicBool = AtomicBool::new(false);

/// Starts or stops timing every queue's enter and leave (see
/// [`usage_ns`]).
pub fn time_usage(on: bool) {
    // Relaxed: a measurement switch; a request that misses it is not timed.
    TIME_USAGE.store(on, Ordering::Relaxed);
}

/// Nanoseconds spent entering and leaving queues while [`time_usage`] was
/// on, since boot, summed over CPUs (take the difference around a run).
pub fn usage_ns() -> u64 {
    USAGE_NS.sum()
}

/// Enters and leaves timed while [`time_usage`] was on, since boot, summed
/// over CPUs.
pub fn usage_calls() -> u64 {
    USAGE_CALLS.sum()
}

/// What the timing itself adds to each timed enter or leave, ns: the
/// median of `rounds` batches of 256 timed empty calls on this CPU (two
/// clock reads and the bookkeeping, with nothing between). Turns timing
/// on and back off; call it while nothing else is timed.
pub fn usage_timing_overhead_ns(rounds: usize) -> u64 {
    const BATCH: u64 = 256;
    let mut per_call: Vec<u64> = (0..rounds.max(1))
        .map(|_| {
            let _irq = crate::arch::percpu::IrqGuard::new();
            time_usage(true);
            let before = USAGE_NS.get();
            for _ in 0..BATCH {
                timed(|| core::hint::black_box(()));
            }
            let spent = USAGE_NS.get() - before;
            time_usage(false);
            spent / BATCH
        })
        .collect();
    per_call.sort_unstable();
    per_call[per_call.len() / 2]
}

/// Runs `f`, adding its time to this CPU's `USAGE_NS` when timing is on.
#[inline]
fn timed<T>(f: impl FnOnce() -> T) -> T {
    // Relaxed: see `time_usage`.
    if !TIME_USAGE.load(Ordering::Relaxed) {
        return f();
    }
    let t0 = time::now_ns();
    let r = f();
    USAGE_NS.add(time::now_ns() - t0);
    USAGE_CALLS.add(1);
    r
}

/// How the usage counter counts, for measuring its cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageMode {
    /// Per-CPU once registered (Linux).
    PerCpu,
    /// Kept atomic (a shared counter).
    Atomic,
    /// Not counted at all: entering only checks that the queue is not
    /// dying, leaving does nothing. For measuring what the counter costs
    /// only: a freeze then keeps nobody out, and its wait polls the tags
    /// until none is in use (enough for removal, which marks the queue
    /// dying first).
    Absent,
}

/// A request queue (see the [module documentation](super)).
pub struct RequestQueue {
    /// For messages.
    pub name: String,
    usage: PercpuRef<Kernel>,
    usage_mode: UsageMode,
    /// Freeze depth; the lock serialises freeze and unfreeze.
    freeze_depth: SpinLock<u32>,
    /// `freeze_depth`'s value, for the waiters' condition.
    frozen: AtomicU32,
    /// Submitters wait here while frozen; freezers wait here for zero
    /// (the usage counter's release wakes them).
    freeze_wq: Arc<WaitQueue>,
    dying: AtomicBool,
    /// Quiesce depth (the lock serialises quiesce and unquiesce, which
    /// sleep in a grace period).
    quiesce_depth: SleepMutex<u32>,
    quiesced: AtomicU32,
    hctxs: Vec<Hctx>,
    /// CPU -> hardware queue.
    map: Vec<usize>,
    tagset: Arc<TagSet>,
    driver: Arc<dyn Driver>,
    /// Counters.
    pub stats: QueueStats,
    /// When the last kill's confirmation ran (ns since boot; 0: not yet):
    /// splits a freeze's drain into the grace period and the wait for the
    /// requests in flight ([`FreezeTimes`]).
    confirmed_at: Arc<AtomicU64>,
    /// When the usage counter's release last ran (ns since boot): the end
    /// of a freeze's drain, before the freezer is woken.
    released_at: Arc<AtomicU64>,
}

/// What one [`RequestQueue::freeze`] took.
#[derive(Clone, Copy, Debug)]
pub struct FreezeTimes {
    /// Kill to the freezer's return: the whole freeze, ns.
    pub drain_ns: u64,
    /// Kill to the usage counter's release (its count reached zero): the
    /// drain itself, without the freezer's wakeup, ns. `None` as for
    /// `confirm_ns`, or when the count did not reach zero in this freeze.
    pub release_ns: Option<u64>,
    /// Kill to the kill's confirmation (the usage counter is atomic, so
    /// every later enter fails): the grace period's part of the drain, ns.
    /// `None` when this freeze did not kill (nested, or no counter).
    pub confirm_ns: Option<u64>,
    /// Requests in flight when the freeze began: what the rest of the
    /// drain waits for.
    pub in_flight_at_kill: usize,
}

enum Section<'a> {
    Srcu(#[allow(dead_code)] SrcuReadGuard<'a, Kernel>),
    Sched(#[allow(dead_code)] SchedGuard),
}

impl RequestQueue {
    /// A queue over `tagset`'s hardware queues, CPUs mapped round robin
    /// (CPU `c` to queue `c % hw_queues`). Its usage counter starts atomic,
    /// as Linux's; [`register`](Self::register) switches it per-CPU.
    pub fn new(
        name: String,
        tagset: Arc<TagSet>,
        driver: Arc<dyn Driver>,
        usage_mode: UsageMode,
    ) -> Arc<Self> {
        let freeze_wq = Arc::new(WaitQueue::new());
        let released_at = Arc::new(AtomicU64::new(0));
        let (wq, released) = (freeze_wq.clone(), released_at.clone());
        let usage = PercpuRef::new(
            move || {
                // Release: pairs with the Acquire load in `freeze`, which
                // follows the wakeup below.
                released.store(time::now_ns(), Ordering::Release);
                wq.wake_all();
            },
            Flags::INIT_ATOMIC,
        )
        .expect("per-CPU memory for a queue's usage counter");
        let n = tagset.hw_queues();
        Arc::new(RequestQueue {
            name,
            usage,
            usage_mode,
            freeze_depth: SpinLock::new(0),
            frozen: AtomicU32::new(0),
            freeze_wq,
            dying: AtomicBool::new(false),
            quiesce_depth: SleepMutex::new(0),
            quiesced: AtomicU32::new(0),
            hctxs: (0..n)
                .map(|i| Hctx {
                    index: i,
                    tags: tagset.tags[i].clone(),
                    slots: tagset.slots[i].clone(),
                    dispatch: SpinLock::new(VecDeque::new()),
                })
                .collect(),
            map: (0..possible_cpus()).map(|c| c % n).collect(),
            tagset,
            driver,
            stats: QueueStats::default(),
            confirmed_at: Arc::new(AtomicU64::new(0)),
            released_at,
        })
    }

    /// The disk is live: the usage counter goes per-CPU (unless kept
    /// atomic for a measurement).
    pub fn register(&self) {
        if self.usage_mode == UsageMode::PerCpu {
            self.usage.switch_to_percpu();
        }
    }

    /// Its hardware queues.
    pub fn hctxs(&self) -> &[Hctx] {
        &self.hctxs
    }

    /// The tag set.
    pub fn tagset(&self) -> &Arc<TagSet> {
        &self.tagset
    }

    /// The usage counter's mode now.
    pub fn usage_mode(&self) -> Mode {
        self.usage.stats().mode
    }

    /// Switches the usage counter to atomic (and waits) or back to
    /// per-CPU: a scenario option exercises the switch under load.
    pub fn switch_usage(&self, percpu: bool) {
        if percpu {
            self.usage.switch_to_percpu();
        } else {
            self.usage.switch_to_atomic_sync();
        }
    }

    /// Whether the queue is dying (its disk is being removed).
    pub fn is_dying(&self) -> bool {
        // Acquire: pairs with the Release in mark_dying.
        self.dying.load(Ordering::Acquire)
    }

    /// Requests in flight now (tags in use), racy.
    pub fn in_flight(&self) -> usize {
        self.hctxs.iter().map(|h| h.tags.in_use()).sum()
    }

    // ---- entering and leaving -------------------------------------------

    /// Takes a usage reference (Linux's `blk_queue_enter`).
    fn enter(&self, nowait: bool) -> Result<(), BlkError> {
        loop {
            if self.is_dying() {
                self.stats.refused_dead.fetch_add(1, Ordering::Relaxed);
                return Err(BlkError::Dead);
            }
            if self.usage_mode == UsageMode::Absent {
                return Ok(());
            }
            if let Some(g) = self.usage.tryget_live() {
                g.leak();
                // A remove that marked the queue dying after our check may
                // already be waiting for the drain: our reference is
                // counted, so it waits for us too.
                return Ok(());
            }
            if nowait {
                return Err(BlkError::Again);
            }
            self.freeze_wq.wait_until(|| {
                // Acquire: pairs with the Release store after resurrect.
                self.is_dying() || self.frozen.load(Ordering::Acquire) == 0
            });
        }
    }

    /// Drops `n` usage references (Linux's `blk_queue_exit`, batched).
    pub(crate) fn exit(&self, n: usize) {
        if self.usage_mode != UsageMode::Absent {
            self.usage.put_many(n);
        }
    }

    fn get_tag(&self, h: usize, nowait: bool) -> Result<usize, BlkError> {
        let tags = &self.hctxs[h].tags;
        let mut got = None;
        if let Some(t) = tags.try_get() {
            return Ok(t);
        }
        if nowait {
            return Err(BlkError::Again);
        }
        tags.wait.wait_until(|| {
            got = tags.try_get();
            got.is_some() || self.is_dying()
        });
        got.ok_or(BlkError::Dead)
    }

    /// Queues a bio that the disk has checked: enter, tag, request,
    /// dispatch. On refusal the usage reference and tag are given back.
    pub(crate) fn submit(
        self: &Arc<Self>,
        op: Op,
        offset: u64,
        data: Vec<u8>,
        nowait: bool,
        end_io: EndIo,
    ) -> Result<(), (BlkError, Vec<u8>, EndIo)> {
        if let Err(e) = timed(|| self.enter(nowait)) {
            return Err((e, data, end_io));
        }
        let h = self.map[cpu_id()];
        let tag = match self.get_tag(h, nowait) {
            Ok(t) => t,
            Err(e) => {
                self.exit(1);
                return Err((e, data, end_io));
            }
        };
        self.stats.entered.fetch_add(1, Ordering::Relaxed);
        let rq = Arc::new(Request::new(
            self.clone(),
            h,
            tag,
            op,
            offset,
            data,
            end_io,
            time::now_ns(),
        ));
        let old = self.hctxs[h].slots[tag].lock().replace(rq.clone());
        assert!(
            old.is_none(),
            "{}: tag {tag} of queue {h} handed out while in use",
            self.name
        );
        self.dispatch(h, rq);
        Ok(())
    }

    /// The last reference to `rq` went: free its slot and tag, leave the
    /// queue.
    pub(crate) fn free_request(&self, rq: &Arc<Request>) {
        let hctx = &self.hctxs[rq.hctx];
        let slot = hctx.slots[rq.tag].lock().take();
        assert!(
            slot.is_some_and(|s| Arc::ptr_eq(&s, rq)),
            "{}: request {} freed from a slot it does not hold",
            self.name,
            rq.id
        );
        self.stats.freed.fetch_add(1, Ordering::Relaxed);
        hctx.tags.put(rq.tag);
        // In a device-completion interrupt the put joins the batch's (one
        // `put_many` per queue when the batch ends, as blk-mq's batched
        // completion); elsewhere it is put now.
        if !super::complete::defer_put(&rq.queue) {
            timed(|| self.exit(1));
        }
    }

    /// A completion refused: of a request already completed, or of one
    /// never handed to the driver (`started` false: it still waits on a
    /// quiesced queue's dispatch list, or is being set up). Both are a
    /// driver's bug, counted together.
    pub(crate) fn note_refused_completion(&self, id: u64, started: bool) {
        self.stats
            .double_completions
            .fetch_add(1, Ordering::Relaxed);
        if started {
            crate::println!(
                "block: {}: request {id} completed twice; the second completion was ignored",
                self.name
            );
        } else {
            crate::println!(
                "block: {}: request {id} completed before it was started (never handed to the driver); the completion was ignored",
                self.name
            );
        }
    }

    /// Calls `f` on every started request: handed to the driver, in flight
    /// or completed and not yet freed, as blk-mq's busy-tag iterator
    /// (`blk_mq_tagset_busy_iter`) visits only started requests. A request
    /// that holds a tag but has not been handed to the driver (parked on a
    /// quiesced queue's dispatch list) is not visited: a pass that fails
    /// every request in flight must not complete one the driver never
    /// saw. Holds a reference to each (taken only if the request is not
    /// being freed, and kept only if its tag still names it), and checks
    /// the state after taking it.
    pub fn for_each_in_flight(&self, mut f: impl FnMut(&Arc<Request>)) {
        for hctx in &self.hctxs {
            for slot in hctx.slots.iter() {
                let Some(rq) = slot.lock().clone() else {
                    continue;
                };
                // Shared tags: the slot may hold another queue's request.
                if !core::ptr::eq(Arc::as_ptr(&rq.queue), self) || !rq.get_unless_zero() {
                    continue;
                }
                let still = slot.lock().as_ref().is_some_and(|s| Arc::ptr_eq(s, &rq));
                if still && rq.state() != RequestState::Idle {
                    f(&rq);
                }
                rq.put();
            }
        }
    }

    // ---- dispatch -------------------------------------------------------

    fn section(&self) -> Section<'_> {
        match &self.tagset.srcu {
            Some(s) => Section::Srcu(s.read_lock()),
            None => Section::Sched(sched_read_lock()),
        }
    }

    fn is_quiesced(&self) -> bool {
        // SeqCst: with the store in quiesce/unquiesce, either dispatch sees
        // the depth or the grace period waits for it; and a request parked
        // on the list is seen by whichever of the submitter and unquiesce
        // comes second.
        self.quiesced.load(Ordering::SeqCst) != 0
    }

    fn dispatch(&self, h: usize, rq: Arc<Request>) {
        {
            let _section = self.section();
            if !self.is_quiesced() {
                rq.start();
                self.driver.queue_rq(&rq);
                return;
            }
            self.hctxs[h].dispatch.lock().push_back(rq);
        }
        if !self.is_quiesced() {
            self.run_hw_queue(h);
        }
    }

    /// Dispatches what waits on hardware queue `h` (unless quiesced).
    pub fn run_hw_queue(&self, h: usize) {
        let _section = self.section();
        while !self.is_quiesced() {
            let Some(rq) = self.hctxs[h].dispatch.lock().pop_front() else {
                break;
            };
            rq.start();
            self.driver.queue_rq(&rq);
        }
    }

    /// Runs every hardware queue.
    pub fn run_hw_queues(&self) {
        for h in 0..self.hctxs.len() {
            self.run_hw_queue(h);
        }
    }

    // ---- freeze -----------------------------------------------------------

    /// Starts a freeze (nests): the first one kills the usage counter, so
    /// new submitters wait, and runs the queues so nothing parked is
    /// forgotten.
    pub fn freeze_start(&self) {
        let first = {
            let mut depth = self.freeze_depth.lock();
            *depth += 1;
            // Release: only gates the waiters' retry; the kill itself is
            // what refuses them (tryget_live).
            self.frozen.store(*depth, Ordering::Release);
            if *depth == 1 && self.usage_mode != UsageMode::Absent {
                let confirmed = self.confirmed_at.clone();
                // Release: the time is read after the release, which the
                // confirmation precedes (percpu_ref's promise).
                self.usage
                    .kill_and_confirm(move || confirmed.store(time::now_ns(), Ordering::Release));
            }
            *depth == 1
        };
        if first {
            self.stats.freezes.fetch_add(1, Ordering::Relaxed);
            self.run_hw_queues();
        }
    }

    /// Waits until the usage counter is zero: every request that entered
    /// has been freed.
    pub fn freeze_wait(&self) {
        if self.usage_mode == UsageMode::Absent {
            while self.in_flight() != 0 {
                crate::sched::sleep(core::time::Duration::from_millis(1));
            }
            return;
        }
        self.freeze_wq.wait_until(|| self.usage.is_zero());
    }

    /// Freezes and waits for the drain; says what it took.
    pub fn freeze(&self) -> FreezeTimes {
        let in_flight_at_kill = self.in_flight();
        // Relaxed: a statistic. A freeze nested in another (a remove
        // during the io run's periodic freeze) may read the outer one's
        // time, or clear it: the figures are for the io run's summary.
        self.confirmed_at.store(0, Ordering::Relaxed);
        self.released_at.store(0, Ordering::Relaxed);
        let t0 = time::now_ns();
        self.freeze_start();
        self.freeze_wait();
        let ns = time::now_ns() - t0;
        self.stats.freeze_ns_sum.fetch_add(ns, Ordering::Relaxed);
        self.stats.freeze_ns_max.fetch_max(ns, Ordering::Relaxed);
        // Acquire: pairs with the confirmation's Release store.
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        // Acquire: pairs with the release callback's Release store.
        let released = self.released_at.load(Ordering::Acquire);
        FreezeTimes {
            drain_ns: ns,
            release_ns: (released >= t0).then(|| released - t0),
            confirm_ns: (confirmed != 0).then(|| confirmed.saturating_sub(t0)),
            in_flight_at_kill,
        }
    }

    /// Ends a freeze (nests): the last one resurrects the usage counter and
    /// wakes the waiting submitters. An unfreeze without a freeze is
    /// reported and ignored.
    pub fn unfreeze(&self) {
        {
            let mut depth = self.freeze_depth.lock();
            if *depth == 0 {
                drop(depth);
                crate::println!("block: {}: unfreeze without a freeze; ignored", self.name);
                return;
            }
            *depth -= 1;
            if *depth == 0 && self.usage_mode != UsageMode::Absent {
                self.usage.resurrect();
            }
            // Release: a submitter that sees 0 retries after the resurrect.
            self.frozen.store(*depth, Ordering::Release);
        }
        self.freeze_wq.wake_all();
    }

    /// The freeze depth now.
    pub fn freeze_depth(&self) -> u32 {
        // Relaxed: a statistic.
        self.frozen.load(Ordering::Relaxed)
    }

    // ---- quiesce ----------------------------------------------------------

    /// Stops dispatch (nests) and waits until no dispatch is running: a
    /// grace period of the section dispatch runs in. Returns the wait in
    /// ns.
    pub fn quiesce(&self) -> u64 {
        let t0 = time::now_ns();
        {
            let mut depth = self.quiesce_depth.lock();
            *depth += 1;
            self.quiesced.store(*depth, Ordering::SeqCst);
        }
        match &self.tagset.srcu {
            Some(s) => s
                .synchronize()
                .expect("quiesce from inside the tag set's own dispatch section"),
            None => crate::sync::rcu::synchronize_sched(),
        }
        let ns = time::now_ns() - t0;
        self.stats.quiesces.fetch_add(1, Ordering::Relaxed);
        self.stats.quiesce_ns_sum.fetch_add(ns, Ordering::Relaxed);
        ns
    }

    /// Ends a quiesce (nests); the last one runs the queues. An unquiesce
    /// without a quiesce is reported and ignored.
    pub fn unquiesce(&self) {
        let last = {
            let mut depth = self.quiesce_depth.lock();
            if *depth == 0 {
                drop(depth);
                crate::println!("block: {}: unquiesce without a quiesce; ignored", self.name);
                return;
            }
            *depth -= 1;
            self.quiesced.store(*depth, Ordering::SeqCst);
            *depth == 0
        };
        if last {
            self.run_hw_queues();
        }
    }

    // ---- removal ------------------------------------------------------------

    /// Marks the queue dying: new submissions fail, and submitters asleep
    /// on a freeze or on tags wake up and fail.
    pub(crate) fn mark_dying(&self) {
        // Release: pairs with the Acquire in is_dying.
        self.dying.store(true, Ordering::Release);
        self.freeze_wq.wake_all();
        for h in &self.hctxs {
            h.tags.wait.wake_all();
        }
    }

    /// One line of the queue's state, for a watchdog's report: dying,
    /// freeze and quiesce depths, tags in use and waiters per hardware
    /// queue, requests parked for dispatch, the usage counter's mode, and
    /// entered / freed counts.
    pub fn debug_state(&self) -> String {
        use core::fmt::Write;
        let mut s = alloc::format!(
            "{}: dying={} frozen={} quiesced={} usage={:?} zero={} entered={} freed={} hctx(in use/waiters/parked)=[",
            self.name,
            self.is_dying(),
            self.freeze_depth(),
            self.quiesced.load(Ordering::SeqCst),
            self.usage.stats().mode,
            self.usage_mode != UsageMode::Absent && self.usage.is_zero(),
            self.stats.entered.load(Ordering::Relaxed),
            self.stats.freed.load(Ordering::Relaxed),
        );
        for h in &self.hctxs {
            let _ = write!(
                s,
                " {}/{}/{}",
                h.tags.in_use(),
                h.tags.wait.len(),
                h.dispatch.lock().len()
            );
        }
        s.push_str(" ]");
        s
    }

    /// Tells the driver the device is gone (see [`Driver::teardown`]).
    pub(crate) fn teardown_driver(&self) {
        self.driver.teardown();
    }

    /// Whether the usage counter is zero (meaningful once frozen; with no
    /// counter, whether no tag is in use).
    pub fn usage_is_zero(&self) -> bool {
        match self.usage_mode {
            UsageMode::Absent => self.in_flight() == 0,
            _ => self.usage.is_zero(),
        }
    }
}
