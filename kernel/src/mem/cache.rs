//! Per-CPU caches of small blocks in front of the heap, so that the
//! allocations of a hot path (a request, its buffer, its completion
//! closure) take no shared lock.
//!
//! Why: the heap is one first-fit list behind one spin lock. With 8 CPUs
//! pushing I/O (three allocations and three frees a request) the CPUs spent
//! about 40% of their time waiting for that lock (counted with the TSC in
//! an `irqmode=none` run at -smp 8), and under TCG a vCPU that holds it may
//! be descheduled by the host for milliseconds while the others spin.
//!
//! How, after Bonwick's magazines (and in the spirit of Linux's per-CPU
//! slab freelists): requests of at most 4096 bytes and alignment at most 64
//! are rounded up to one of [`CLASSES`]. Each CPU keeps, per class, a
//! `current` list of free blocks, linked through each block's first word,
//! and a `spare` list that is either empty or exactly one full batch.
//! Allocating pops from `current`; when it is empty the spare becomes
//! current, or a full batch comes from the class's depot, or a batch is
//! carved from the heap under one acquisition of its lock. Freeing pushes
//! onto `current`; when it holds a full batch it becomes the spare, and an
//! older spare goes to the depot (or, when the depot is full, back to the
//! heap). So a CPU that frees what it allocates never leaves its cache, and
//! blocks that move between CPUs (allocated by the submitter, freed by the
//! completing CPU) go through the depot a batch at a time, under a lock
//! held for a few instructions. Everything runs with interrupts off, which
//! is what makes the per-CPU lists safe (interrupt handlers allocate too)
//! and keeps the thread on its CPU.
//!
//! Memory held in caches and depots stays counted as free in
//! [`super::heap::usage`]. When the heap cannot satisfy a request, the
//! depots are given back to it and the request is tried once more.
//!
//! Debugging: with [`set_poison`] on, a freed block is filled with
//! [`POISON`] (past its link word and a marker word) and checked when it is
//! handed out again, so a write to freed memory is reported with its
//! address and offset instead of corrupting whoever gets the block next.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::arch::percpu::IrqGuard;

/// The block sizes the caches serve, in bytes. From 32 up each is 3/2 or
/// 4/3 of the one before (classes between the powers of two, as Linux's
/// `kmalloc-96` and `kmalloc-192`), so above 32 bytes a rounded-up request
/// leaves at most a third of its block unused.
pub const CLASSES: [usize; 16] = [
    16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
];
const N: usize = CLASSES.len();

/// The largest alignment a class gives (a cache line); more goes to the
/// heap directly.
const MAX_ALIGN: usize = 64;

/// The largest size the caches serve.
pub const MAX_SIZE: usize = CLASSES[N - 1];

/// Full chains a class's depot holds before batches go back to the heap.
const DEPOT_CHAINS: usize = 32;

/// Fill byte of a freed block while poisoning is on (Linux's
/// `POISON_FREE`).
pub const POISON: u8 = 0x6b;

/// Marks a poisoned block in its second word (xor its address).
const POISON_MARK: usize = 0x5a5a_f00d_dead_beef;

/// Block alignment of class `k`: the largest power of two dividing its
/// size, at most [`MAX_ALIGN`].
const fn class_align(k: usize) -> usize {
    let size = CLASSES[k];
    let a = size.isolate_lowest_one();
    if a > MAX_ALIGN {
        MAX_ALIGN
    } else {
        a
    }
}

/// The layout every block of class `k` has on the heap.
fn class_layout(k: usize) -> Layout {
    // The sizes are powers-of-two multiples of their alignment, which is a
    // power of two: always a valid layout.
    Layout::from_size_align(CLASSES[k], class_align(k)).expect("a class is a valid layout")
}

/// Blocks per batch of class `k`: about 8 KiB, between 4 and 32 blocks.
const fn batch(k: usize) -> usize {
    let b = 8192 / CLASSES[k];
    if b < 4 {
        4
    } else if b > 32 {
        32
    } else {
        b
    }
}

/// The smallest class at least `size` bytes, by `size` in 16-byte steps.
const SMALLEST: [u8; MAX_SIZE / 16 + 1] = {
    let mut t = [0u8; MAX_SIZE / 16 + 1];
    let mut i = 0;
    let mut k = 0;
    while i < t.len() {
        while CLASSES[k] < i * 16 {
            k += 1;
        }
        t[i] = k as u8;
        i += 1;
    }
    t
};

/// The class that serves `layout`, if any: the smallest at least as large
/// and at least as aligned.
pub fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SIZE || layout.align() > MAX_ALIGN {
        return None;
    }
    let mut k = usize::from(SMALLEST[layout.size().div_ceil(16)]);
    while class_align(k) < layout.align() {
        k += 1;
    }
    Some(k)
}

/// One CPU's lists: `current[k]` (`count[k]` blocks) and `spare[k]` (a full
/// batch or empty). Addresses as `usize` (0 ends a list), so the type is
/// plain data that every area's copy of the template starts from.
#[derive(Clone, Copy)]
pub struct CpuCache {
    current: [usize; N],
    count: [usize; N],
    spare: [usize; N],
}

impl CpuCache {
    const EMPTY: CpuCache = CpuCache {
        current: [0; N],
        count: [0; N],
        spare: [0; N],
    };
}

crate::percpu! {
    /// This CPU's cached blocks.
    static CACHE: PerCpu<CpuCache> = CpuCache::EMPTY;
    /// Bytes in this CPU's lists, plus what it moved in from the depot and
    /// minus what it moved out (wrapping: only the sum over CPUs is
    /// meaningful; blocks move between CPUs).
    static CACHED: PerCpu<u64> = 0;
    /// Times this CPU took the heap's lock (refills and returns of the
    /// caches, and requests too large for them).
    static HEAP_TRIPS: PerCpu<u64> = 0;
}

/// A class's full chains, each a batch linked through its blocks' first
/// words.
struct Depot {
    chains: [usize; DEPOT_CHAINS],
    len: usize,
}

static DEPOTS: [Mutex<Depot>; N] = [const {
    Mutex::new(Depot {
        chains: [0; DEPOT_CHAINS],
        len: 0,
    })
}; N];

/// Bytes in all depots.
static DEPOT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Set once the per-CPU areas exist (before, everything goes to the heap).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether frees poison and allocations check (see the module docs).
static POISONING: AtomicBool = AtomicBool::new(false);

/// Times the depots were given back because the heap ran short.
static RECLAIMS: AtomicU64 = AtomicU64::new(0);

/// Where the heap's blocks lie (for checking links while poisoning).
static HEAP_START: AtomicUsize = AtomicUsize::new(0);
static HEAP_END: AtomicUsize = AtomicUsize::new(0);

/// The heap underneath: `alloc` and `dealloc` of exact layouts, under the
/// heap's own lock.
pub trait Backing {
    /// Allocates `n` blocks of `layout` under one acquisition of the lock,
    /// calling `put` with each; returns how many it got.
    fn alloc_many(&self, layout: Layout, n: usize, put: &mut dyn FnMut(NonNull<u8>)) -> usize;
    /// Frees every block `next` yields, with `layout`, under one
    /// acquisition.
    fn dealloc_many(&self, layout: Layout, next: &mut dyn FnMut() -> Option<NonNull<u8>>);
}

/// Turns the caches on. Called once, by the boot CPU, after it entered its
/// per-CPU area and before any other CPU runs; `heap` is the range every
/// heap block lies in.
pub fn enable(heap: core::ops::Range<usize>) {
    // Relaxed: published by the Release store below.
    HEAP_START.store(heap.start, Ordering::Relaxed);
    HEAP_END.store(heap.end, Ordering::Relaxed);
    // Release: pairs with the Acquire load in `enabled`; the range is
    // written before.
    ENABLED.store(true, Ordering::Release);
}

fn enabled() -> bool {
    // Acquire: see `enable`.
    ENABLED.load(Ordering::Acquire)
}

/// Turns poisoning on or off (see the module docs). Blocks freed while it
/// was off are not checked.
pub fn set_poison(on: bool) {
    // Relaxed: a block is checked only if it carries the mark, which the
    // freeing CPU wrote with the poison; the flag only picks new frees.
    POISONING.store(on, Ordering::Relaxed);
}

/// Whether poisoning is on.
pub fn poisoning() -> bool {
    // Relaxed: see `set_poison`.
    POISONING.load(Ordering::Relaxed)
}

/// Word `i` (0 or 1) of the block at `addr`. Reading or writing it is
/// sound while the block is free and on a list the caller holds: every
/// block is at least 16 bytes and aligned to 16.
fn word(addr: usize, i: usize) -> *mut usize {
    (addr as *mut usize).wrapping_add(i)
}

/// Fills the block (past its two words) with [`POISON`] and marks it.
///
/// # Safety
/// `addr` must be a free block of class `k` on a list the caller holds
/// (or one the caller is giving up).
unsafe fn poison(addr: usize, k: usize) {
    // SAFETY: the block is free, ours and `CLASSES[k]` bytes long.
    unsafe {
        word(addr, 1).write(addr ^ POISON_MARK);
        core::ptr::write_bytes((addr as *mut u8).add(16), POISON, CLASSES[k] - 16);
    }
}

/// A freed block that was written to (found while poisoning).
#[derive(Clone, Copy, Debug)]
pub struct Corruption {
    addr: usize,
    size: usize,
    /// The first byte that is not poison (offset, value), or `None` when
    /// the free-list link is what was overwritten.
    byte: Option<(usize, u8)>,
    link: usize,
}

impl core::fmt::Display for Corruption {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Corruption {
            addr,
            size,
            byte,
            link,
        } = *self;
        write!(
            f,
            "heap: the {size}-byte block at {addr:#x} was written after it was freed: "
        )?;
        match byte {
            Some((i, b)) => write!(f, "byte {i} is {b:#04x}, not {POISON:#04x}"),
            None => write!(f, "its free-list link is {link:#x}"),
        }
    }
}

/// Checks a block about to be handed out: if it was poisoned, nothing may
/// have written to it since, and its link must be a heap block. Then
/// clears the mark, so that the new owner's data is never taken for it.
/// (The caller reports a corruption once it holds no lock and has
/// interrupts back: the panic's own allocations must find the caches
/// consistent.)
///
/// # Safety
/// As [`poison`].
unsafe fn check(addr: usize, k: usize) -> Result<(), Corruption> {
    // SAFETY: the block is free and ours until we return it.
    let marked = unsafe { word(addr, 1).read() } == addr ^ POISON_MARK;
    if !marked {
        return Ok(());
    }
    let size = CLASSES[k];
    // SAFETY: as above; the block is `size` bytes.
    let bytes = unsafe { core::slice::from_raw_parts((addr as *const u8).add(16), size - 16) };
    // SAFETY: as above.
    let link = unsafe { word(addr, 0).read() };
    let mut bad = Corruption {
        addr,
        size,
        byte: None,
        link,
    };
    if let Some(i) = bytes.iter().position(|&b| b != POISON) {
        bad.byte = Some((i + 16, bytes[i]));
        return Err(bad);
    }
    // Relaxed: written before the caches were enabled (see `enable`).
    let (lo, hi) = (
        HEAP_START.load(Ordering::Relaxed),
        HEAP_END.load(Ordering::Relaxed),
    );
    if link != 0 && (link % 16 != 0 || link < lo || link >= hi) {
        return Err(bad);
    }
    // SAFETY: as above.
    unsafe { word(addr, 1).write(0) };
    Ok(())
}

/// Pops a block of class `k` from this CPU's lists, refilling them if
/// needed; `None` when the heap has nothing.
pub fn alloc(k: usize, backing: &dyn Backing) -> Option<NonNull<u8>> {
    if !enabled() {
        return alloc_direct(k, backing);
    }
    let guard = IrqGuard::new();
    let got = CACHE.with(&guard, |c| {
        if c.count[k] == 0 && !refill(c, k, backing) {
            return Ok(None);
        }
        let addr = c.current[k];
        // SAFETY: `addr` heads this CPU's list of free class-`k` blocks,
        // which only this CPU touches, with interrupts off.
        if let Err(bad) = unsafe { check(addr, k) } {
            // The rest of the list is not to be trusted: drop it (leaked).
            CACHED.add(((c.count[k] * CLASSES[k]) as u64).wrapping_neg());
            c.current[k] = 0;
            c.count[k] = 0;
            return Err(bad);
        }
        // SAFETY: as above.
        c.current[k] = unsafe { word(addr, 0).read() };
        c.count[k] -= 1;
        CACHED.add((CLASSES[k] as u64).wrapping_neg());
        Ok(NonNull::new(addr as *mut u8))
    });
    drop(guard);
    let got = got.unwrap_or_else(|bad| panic!("{bad}"));
    got.or_else(|| {
        // The depots may hold what the heap lacks; if they held nothing,
        // the heap has not changed and the refill just failed: no retry.
        (reclaim(backing) > 0)
            .then(|| alloc_direct(k, backing))
            .flatten()
    })
}

/// Gives a block of class `k` back to this CPU's lists.
///
/// # Safety
/// `ptr` must have come from [`alloc`](fn@alloc) with the same `k` and must not be
/// used afterwards.
pub unsafe fn dealloc(ptr: NonNull<u8>, k: usize, backing: &dyn Backing) {
    let addr = ptr.as_ptr() as usize;
    if !enabled() {
        let mut one = Some(ptr);
        backing.dealloc_many(class_layout(k), &mut || one.take());
        return;
    }
    if poisoning() {
        // SAFETY: the caller gave the block up; it is `CLASSES[k]` bytes.
        unsafe { poison(addr, k) };
    }
    let guard = IrqGuard::new();
    CACHE.with(&guard, |c| {
        if c.count[k] == batch(k) {
            // `current` is a full batch: it becomes the spare, and an older
            // spare leaves for the depot.
            if c.spare[k] != 0 {
                let chain = c.spare[k];
                CACHED.add(((batch(k) * CLASSES[k]) as u64).wrapping_neg());
                depot_push(k, chain, backing);
            }
            c.spare[k] = c.current[k];
            c.current[k] = 0;
            c.count[k] = 0;
        }
        // SAFETY: the block is free and now this CPU's; interrupts are off.
        unsafe { word(addr, 0).write(c.current[k]) };
        c.current[k] = addr;
        c.count[k] += 1;
        CACHED.add(CLASSES[k] as u64);
    });
}

/// Makes `current[k]` non-empty: from the spare, the depot or the heap.
fn refill(c: &mut CpuCache, k: usize, backing: &dyn Backing) -> bool {
    if c.spare[k] != 0 {
        c.current[k] = core::mem::take(&mut c.spare[k]);
        c.count[k] = batch(k);
        return true;
    }
    if let Some(chain) = depot_pop(k) {
        c.current[k] = chain;
        c.count[k] = batch(k);
        CACHED.add((batch(k) * CLASSES[k]) as u64);
        return true;
    }
    let mut head = 0;
    let got = backing.alloc_many(class_layout(k), batch(k), &mut |p| {
        let addr = p.as_ptr() as usize;
        // SAFETY: a fresh block of class `k`, ours.
        unsafe { word(addr, 0).write(head) };
        head = addr;
    });
    c.current[k] = head;
    c.count[k] = got;
    CACHED.add((got * CLASSES[k]) as u64);
    got > 0
}

fn depot_push(k: usize, chain: usize, backing: &dyn Backing) {
    {
        let mut d = DEPOTS[k].lock();
        if d.len < DEPOT_CHAINS {
            let i = d.len;
            d.chains[i] = chain;
            d.len += 1;
            // Relaxed: a statistic.
            DEPOT_BYTES.fetch_add(batch(k) * CLASSES[k], Ordering::Relaxed);
            return;
        }
    }
    free_chain(k, chain, backing);
}

fn depot_pop(k: usize) -> Option<usize> {
    let mut d = DEPOTS[k].lock();
    if d.len == 0 {
        return None;
    }
    d.len -= 1;
    let i = d.len;
    // Relaxed: a statistic.
    DEPOT_BYTES.fetch_sub(batch(k) * CLASSES[k], Ordering::Relaxed);
    Some(d.chains[i])
}

/// Frees a chain of class-`k` blocks to the heap.
fn free_chain(k: usize, chain: usize, backing: &dyn Backing) {
    let mut next = chain;
    backing.dealloc_many(class_layout(k), &mut || {
        let addr = NonNull::new(next as *mut u8)?;
        // SAFETY: a free class-`k` block of a chain we own; read its link
        // and clear its poison mark before the heap reuses the block (a
        // mark left in a hole could be taken for one when the memory
        // comes back as a block of a class).
        unsafe {
            let block = next;
            next = word(block, 0).read();
            word(block, 1).write(0);
        }
        Some(addr)
    });
}

/// Gives every depot's chains back to the heap; returns the bytes.
pub fn reclaim(backing: &dyn Backing) -> usize {
    // Relaxed: a statistic.
    RECLAIMS.fetch_add(1, Ordering::Relaxed);
    let mut bytes = 0;
    for (k, size) in CLASSES.iter().enumerate() {
        while let Some(chain) = depot_pop(k) {
            free_chain(k, chain, backing);
            bytes += batch(k) * size;
        }
    }
    bytes
}

fn alloc_direct(k: usize, backing: &dyn Backing) -> Option<NonNull<u8>> {
    let mut got = None;
    backing.alloc_many(class_layout(k), 1, &mut |p| got = Some(p));
    got
}

/// A snapshot of the caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes of free blocks in the CPUs' lists and the depots.
    pub cached_bytes: usize,
    /// Of which in the depots.
    pub depot_bytes: usize,
    /// Times the depots were given back to the heap.
    pub reclaims: u64,
}

/// The caches now (racy across CPUs; exact when they are quiet).
pub fn stats() -> CacheStats {
    // Relaxed: statistics.
    let depot_bytes = DEPOT_BYTES.load(Ordering::Relaxed);
    // The CPUs' counts are read one after another while blocks move: the
    // sum may be off by what moved meanwhile, never below zero.
    let cpus = if enabled() {
        (CACHED.sum() as i64).max(0) as usize
    } else {
        0
    };
    CacheStats {
        cached_bytes: cpus.wrapping_add(depot_bytes),
        depot_bytes,
        reclaims: RECLAIMS.load(Ordering::Relaxed),
    }
}

/// Counts one acquisition of the heap's lock on this CPU (the heap calls
/// it; before the per-CPU areas exist nothing is counted).
pub fn note_heap_trip() {
    if enabled() {
        HEAP_TRIPS.add(1);
    }
}

/// Times this CPU took the heap's lock.
pub fn heap_trips_here() -> u64 {
    HEAP_TRIPS.get()
}

/// Times all CPUs took the heap's lock.
pub fn heap_trips() -> u64 {
    HEAP_TRIPS.sum()
}

/// Checks every poisoned block in every CPU's lists (on that CPU, from a
/// call IPI) and in the depots; returns how many it checked, or the first
/// block found written to after it was freed.
pub fn check_all() -> Result<usize, Corruption> {
    let checked = AtomicUsize::new(0);
    let found: Mutex<Option<Corruption>> = Mutex::new(None);
    let note = |r: Result<usize, Corruption>| match r {
        // Relaxed: read after `on_each_cpu` returns, which waited for
        // every CPU (with Acquire) to finish.
        Ok(n) => _ = checked.fetch_add(n, Ordering::Relaxed),
        Err(bad) => _ = found.lock().get_or_insert(bad),
    };
    crate::arch::smp::on_each_cpu(&|| {
        let guard = IrqGuard::new();
        let r = CACHE.with(&guard, |c| {
            let mut n = 0;
            for k in 0..N {
                n += check_chain(c.current[k], k)? + check_chain(c.spare[k], k)?;
            }
            Ok(n)
        });
        note(r);
    });
    for (k, depot) in DEPOTS.iter().enumerate() {
        let _irq = IrqGuard::new();
        let d = depot.lock();
        for &chain in &d.chains[..d.len] {
            note(check_chain(chain, k));
        }
    }
    match found.into_inner() {
        Some(bad) => Err(bad),
        None => Ok(checked.load(Ordering::Relaxed)),
    }
}

/// Checks the blocks of a list the caller holds (this CPU's, with
/// interrupts off, or a depot's, under its lock); keeps their marks.
fn check_chain(mut addr: usize, k: usize) -> Result<usize, Corruption> {
    let mut n = 0;
    while addr != 0 {
        // SAFETY: a free class-`k` block on a list the caller holds.
        let mark = unsafe { word(addr, 1).read() };
        // SAFETY: as above.
        unsafe { check(addr, k) }?;
        // SAFETY: as above; `check` cleared the mark, put it back.
        unsafe { word(addr, 1).write(mark) };
        // SAFETY: as above; `check` found the link inside the heap.
        addr = unsafe { word(addr, 0).read() };
        n += 1;
    }
    Ok(n)
}

crate::ktest! {
    /// A CPU that frees what it allocates (here with interrupts off, so
    /// nothing else runs on it) never takes the heap's lock: its lists and
    /// spare batch absorb the churn.
    #[smp(1, 8)]
    fn a_cpu_that_frees_what_it_allocates_stays_off_the_heap() {
        use alloc::{boxed::Box, vec::Vec};
        let _irq = IrqGuard::new();
        let round = |n: usize| {
            let small: Vec<Box<[u8; 200]>> = (0..n).map(|i| Box::new([i as u8; 200])).collect();
            let pages: Vec<Vec<u8>> = (0..n / 4).map(|i| alloc::vec![i as u8; 4096]).collect();
            assert!(small.iter().enumerate().all(|(i, b)| b[199] == i as u8));
            assert!(pages.iter().enumerate().all(|(i, p)| p[4095] == i as u8));
        };
        // Warm up: the lists fill from the heap once.
        for _ in 0..4 {
            round(40);
        }
        let before = heap_trips_here();
        for _ in 0..2000 {
            round(40);
        }
        let trips = heap_trips_here() - before;
        assert_eq!(trips, 0, "2000 rounds of allocating and freeing went to the heap {trips} times");
    }
}

crate::ktest! {
    /// Every size up to past the largest class, with every alignment up to
    /// a page, gets a block of at least that size and alignment that no
    /// other live block overlaps.
    fn every_size_and_alignment_is_honoured() {
        use alloc::vec::Vec;
        let sizes = [
            1, 8, 15, 16, 17, 31, 33, 48, 49, 64, 65, 96, 97, 128, 129, 192, 193, 255, 256, 257,
            384, 385, 512, 513, 768, 769, 1024, 1025, 1536, 1537, 2048, 2049, 3072, 3073, 4095,
            4096, 4097, 8192,
        ];
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut fill = 0u8;
        for &size in &sizes {
            for shift in [0, 1, 2, 3, 4, 5, 6, 7, 12] {
                let layout = Layout::from_size_align(size, 1 << shift).unwrap();
                for _ in 0..3 {
                    // SAFETY: a non-zero size.
                    let p = unsafe { alloc::alloc::alloc(layout) };
                    assert!(!p.is_null(), "no block for {layout:?}");
                    assert_eq!(p as usize % layout.align(), 0, "{layout:?} got {p:?}");
                    fill = fill.wrapping_add(1);
                    // SAFETY: `p` is a fresh block of `size` bytes.
                    unsafe { core::ptr::write_bytes(p, fill, size) };
                    live.push((p, layout, fill));
                }
            }
        }
        for &(p, layout, f) in &live {
            // SAFETY: live blocks, each written whole above.
            let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
            assert!(bytes.iter().all(|&b| b == f), "the block of {layout:?} at {p:?} was overwritten: blocks overlap");
        }
        for (p, layout, _) in live {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { alloc::alloc::dealloc(p, layout) };
        }
        for (size, k) in sizes.iter().filter_map(|&s| Some((s, class_of(Layout::from_size_align(s, 1).ok()?)?))) {
            assert!(CLASSES[k] >= size && (k == 0 || CLASSES[k - 1] < size), "size {size} in class {}", CLASSES[k]);
        }
    }
}

crate::ktest! {
    /// Blocks allocated on one CPU and freed on another (the block layer's
    /// remote completions) come back: after many rounds, the bytes in use
    /// are where they started and the caches hold no more than their
    /// bounds.
    #[smp(4)]
    fn blocks_freed_on_other_cpus_are_not_lost() {
        use alloc::{boxed::Box, vec::Vec};
        use crate::arch::lock::SpinLock;
        use alloc::sync::Arc;
        let handoff: Arc<SpinLock<Vec<Box<[u64; 64]>>>> = Arc::new(SpinLock::new(Vec::with_capacity(4096)));
        let (used0, _) = super::heap::usage();
        for round in 0..100u64 {
            let blocks: Vec<Box<[u64; 64]>> = (0..200).map(|i| Box::new([round * 1000 + i; 64])).collect();
            handoff.lock().extend(blocks);
            let h = handoff.clone();
            let freer = crate::sched::spawn_job(1 + (round as usize % 3), move || {
                let taken = core::mem::take(&mut *h.lock());
                for (i, b) in taken.iter().enumerate() {
                    assert!(b.iter().all(|&w| w == round * 1000 + i as u64), "a block changed in transit");
                }
                drop(taken);
            });
            assert!(freer.join(5000), "the freeing job hung");
        }
        let (used1, _) = super::heap::usage();
        assert!(
            used1 <= used0 + (64 << 10),
            "20000 blocks allocated here and freed elsewhere left {} KiB in use",
            (used1.saturating_sub(used0)) >> 10
        );
        let s = stats();
        let k = class_of(Layout::new::<[u64; 64]>()).unwrap();
        let bound = (DEPOT_CHAINS + 2 * 8) * batch(k) * CLASSES[k] + N * 2 * 8192 * 8;
        assert!(s.cached_bytes <= bound, "caches hold {} bytes, more than their bound {bound}", s.cached_bytes);
    }
}

crate::ktest! {
    /// When the heap cannot serve a request, the depots go back to it
    /// before the request fails.
    #[smp(1)]
    fn the_depots_go_back_to_the_heap_when_it_runs_short() {
        use alloc::vec::Vec;
        let (used0, _) = super::heap::usage();
        let pages: Vec<Vec<u8>> = (0..400).map(|_| alloc::vec![1u8; 4096]).collect();
        drop(pages);
        // More than the depot holds: the rest went back to the heap.
        let (used1, _) = super::heap::usage();
        assert!(used1 <= used0 + 16 * 4096, "400 pages freed, {} KiB still in use", (used1 - used0) >> 10);
        let before = stats();
        assert!(before.depot_bytes >= 64 * 4096, "400 freed pages left only {} bytes in the depots", before.depot_bytes);
        let (_, free) = super::heap::usage();
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve_exact(free + 4096).is_err());
        let after = stats();
        assert!(after.reclaims > before.reclaims, "the failed request did not reclaim");
        assert_eq!(after.depot_bytes, 0, "the depots kept {} bytes", after.depot_bytes);
        let (_, free_after) = super::heap::usage();
        assert!(free_after + 4096 >= free, "reclaiming lost memory: {free} free before, {free_after} after");
    }
}

crate::ktest! {
    /// With poisoning on, a write to a freed block is reported when the
    /// block is handed out again.
    #[smp(1)]
    #[should_panic(expected = "was written after it was freed: byte 100 is 0x00")]
    fn a_write_after_free_is_caught() {
        set_poison(true);
        let layout = Layout::from_size_align(256, 8).unwrap();
        let _irq = IrqGuard::new();
        // SAFETY: a non-zero size.
        let p = unsafe { alloc::alloc::alloc(layout) };
        // SAFETY: allocated above; freed once.
        unsafe { alloc::alloc::dealloc(p, layout) };
        // The bug under test: a write through a stale pointer. The block
        // is still this CPU's free block, so the write corrupts nothing
        // but the poison.
        // SAFETY: see above.
        unsafe { p.add(100).write_volatile(0) };
        // SAFETY: a non-zero size; this CPU's list hands back the same
        // block, which is checked first.
        let q = unsafe { alloc::alloc::alloc(layout) };
        panic!("no report: got {q:?} back for {p:?}");
    }
}

crate::ktest! {
    /// Poisoning does not disturb live data, and `check_all` finds the
    /// freed blocks intact; turned off, blocks poisoned before are still
    /// handed out cleanly.
    #[smp(1, 4)]
    fn poisoning_checks_freed_blocks_and_leaves_live_ones_alone() {
        use alloc::vec::Vec;
        set_poison(true);
        let mut keep = Vec::new();
        for round in 0..50usize {
            let v: Vec<Vec<u8>> = (0..40).map(|i| alloc::vec![(round + i) as u8; 16 + (i * 97) % 4000]).collect();
            for (i, b) in v.iter().enumerate() {
                assert!(b.iter().all(|&x| x == (round + i) as u8), "live data changed");
            }
            keep.push(v.into_iter().nth(round % 40).unwrap());
        }
        let checked = check_all().unwrap_or_else(|bad| panic!("{bad}"));
        assert!(checked > 40, "only {checked} poisoned blocks checked");
        set_poison(false);
        // Twice: the second round gets blocks freed with poisoning off by
        // owners that wrote some of them (not the words a poisoned block
        // is marked in), which must not be taken for poisoned blocks.
        let layout = Layout::from_size_align(256, 8).unwrap();
        for _ in 0..2 {
            let blocks: Vec<*mut u8> = (0..100)
                .map(|_| {
                    // SAFETY: a non-zero size.
                    let p = unsafe { alloc::alloc::alloc(layout) };
                    assert!(!p.is_null());
                    // SAFETY: a live block of 256 bytes.
                    unsafe {
                        p.cast::<u64>().write(1);
                        p.add(100).cast::<u64>().write_unaligned(2);
                    }
                    p
                })
                .collect();
            for p in blocks {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { alloc::alloc::dealloc(p, layout) };
            }
        }
        for (round, b) in keep.iter().enumerate() {
            assert!(b.iter().all(|&x| x == (round + round % 40) as u8), "a kept block changed");
        }
    }
}
