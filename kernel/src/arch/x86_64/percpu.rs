//! Per-CPU areas reached through the GS base.
//!
//! Every CPU owns one area and its `IA32_GS_BASE` points at it:
//!
//! ```text
//! gs:0                  header (self pointer, CPU index, APIC ID)
//! gs:HEADER_SIZE        copy of the `percpu` linker section (statics declared with `percpu!`)
//! gs:dynamic_start()    dynamic region (alloc_percpu: one offset, valid on every CPU)
//! ```
//!
//! The areas lie in a 512 GiB range of virtual space of their own, one
//! [`STRIDE`] (1 GiB) apart, so each has room to grow: the dynamic region
//! starts with one [`CHUNK_SIZE`] chunk (64 KiB per CPU) and grows by
//! chunks when an allocation does not fit, as Linux's per-CPU allocator
//! does. A chunk is backed by heap memory (one block per CPU), mapped at
//! the same offset in every area; the first-fit allocator of offsets then
//! extends over it. Chunks are never given back. Growth fails, with a
//! [`PercpuExhausted`] error, when the heap cannot back a chunk on every
//! CPU or an area would pass its stride: so the total is bounded by the
//! heap, which the kernel sizes from the machine's memory. Only
//! [`alloc_percpu`] grows; [`try_alloc_percpu`], for callers that must not
//! wait, fails when the region is full.
//!
//! Because every area has the same layout, one offset names a variable on
//! every CPU, and the access is one `gs:`-relative instruction
//! (`mov`, `add`, `inc` on `gs:[off]`). A single instruction cannot be split
//! by an interrupt on the same CPU, so those accesses need no guard; a
//! multi-step update takes an [`IrqGuard`]. Other CPUs' instances are read
//! through their areas' linear addresses ([`PerCpu::remote`]), as relaxed
//! atomic loads: aligned 8-byte accesses are single-copy atomic on x86.
//!
//! Rejected alternative: a `[T; MAX_CPUS]` array indexed by `cpu_id()`.
//! It needs the CPU number in a register first and then a dependent access,
//! and its elements for different CPUs share cache lines unless padded.

use alloc::vec::Vec;
use core::arch::asm;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ::x86_64::registers::model_specific::GsBase;
use ::x86_64::VirtAddr;
use linked_list_allocator::Heap;
use spin::{Mutex, Once};

use super::hook::Hook;

/// The fixed start of every area. Fields are read by offset from assembly,
/// so the layout is `repr(C)` and checked below.
#[repr(C, align(64))]
pub struct Header {
    /// Linear address of this area (what GS base points at).
    self_ptr: u64,
    /// Dense CPU index, 0 for the boot CPU (8 bytes, so that `cpu_id()`
    /// is one load with no zero-extension).
    cpu_index: u64,
    /// Local APIC ID.
    apic_id: u32,
    /// rcu-sched read-side nesting depth of this CPU, minus `rs_wanted`
    /// (see [`SchedGuard`]).
    rs_depth: u64,
    /// 1 when a grace period asked this CPU for a quiescent state while it
    /// was inside a read-side section, else 0.
    rs_wanted: u64,
}

const SELF_PTR_OFFSET: usize = core::mem::offset_of!(Header, self_ptr);
const CPU_INDEX_OFFSET: usize = core::mem::offset_of!(Header, cpu_index);
const APIC_ID_OFFSET: usize = core::mem::offset_of!(Header, apic_id);
const RS_DEPTH_OFFSET: usize = core::mem::offset_of!(Header, rs_depth);
const RS_WANTED_OFFSET: usize = core::mem::offset_of!(Header, rs_wanted);
/// Bytes before the copy of the static section.
pub const HEADER_SIZE: usize = size_of::<Header>();
const _: () = assert!(SELF_PTR_OFFSET == 0 && CPU_INDEX_OFFSET == 8 && APIC_ID_OFFSET == 16);
const _: () = assert!(RS_DEPTH_OFFSET == 24 && RS_WANTED_OFFSET == 32 && size_of::<Header>() == 64);

/// Bytes per CPU by which the dynamic region grows (and starts).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Virtual distance between two CPUs' areas: the most an area (header,
/// statics and dynamic region) may grow to.
pub const STRIDE: usize = 1 << 30;

/// The most CPUs the kernel handles.
pub const MAX_CPUS: usize = 256;

/// A per-CPU variable: the static is only the template every CPU's copy
/// starts from; the variable itself lives in each CPU's area.
#[repr(transparent)]
pub struct PerCpu<T> {
    template: UnsafeCell<T>,
}

// SAFETY: the template is never written after boot, and each CPU's copy is
// reached only through the methods below, which use either a single
// instruction on the own CPU's copy, an interrupts-off guard, or relaxed
// atomic reads of other CPUs' copies.
unsafe impl<T: Send> Sync for PerCpu<T> {}

/// Declares per-CPU statics.
///
/// ```ignore
/// percpu! {
///     /// Ticks seen by this CPU.
///     pub static TICKS: PerCpu<u64> = 0;
/// }
/// TICKS.add(1); // add qword ptr gs:[off], 1
/// ```
#[macro_export]
macro_rules! percpu {
    ($($(#[$m:meta])* $vis:vis static $name:ident: PerCpu<$ty:ty> = $init:expr;)*) => {$(
        $(#[$m])*
        // The section holds nothing but `PerCpu` templates (see `init`).
        #[allow(unsafe_code)]
        #[link_section = "percpu"]
        $vis static $name: $crate::arch::percpu::PerCpu<$ty> =
            $crate::arch::percpu::PerCpu::template($init);
    )*};
}

unsafe extern "C" {
    static __start_percpu: u8;
    static __stop_percpu: u8;
}

fn section() -> (usize, usize) {
    let start = (&raw const __start_percpu) as usize;
    let stop = (&raw const __stop_percpu) as usize;
    (start, stop - start)
}

/// Offset of the dynamic region in every area.
fn dynamic_start() -> usize {
    (HEADER_SIZE + section().1).next_multiple_of(64)
}

/// Bytes of each area mapped at boot: header, statics and the first
/// chunk of the dynamic region.
fn area_size() -> usize {
    (dynamic_start() + CHUNK_SIZE).next_multiple_of(4096)
}

impl<T> PerCpu<T> {
    /// A template; use [`percpu!`](crate::percpu!) to declare one.
    pub const fn template(init: T) -> Self {
        PerCpu {
            template: UnsafeCell::new(init),
        }
    }

    /// This variable's offset in every area.
    #[inline(always)]
    pub fn offset(&'static self) -> usize {
        HEADER_SIZE + (self.template.get() as usize - section().0)
    }

    /// Pointer to `cpu`'s instance.
    pub fn remote(&'static self, cpu: usize) -> *mut T {
        (area_base(cpu) + self.offset()) as *mut T
    }

    /// Runs `f` on this CPU's instance with interrupts off (the guard proves
    /// it), so the closure cannot be interrupted or moved to another CPU.
    pub fn with<R>(&'static self, _guard: &IrqGuard, f: impl FnOnce(&mut T) -> R) -> R {
        let ptr = (this_area_base() + self.offset()) as *mut T;
        // SAFETY: the pointer is this CPU's instance; interrupts are off for
        // as long as the guard lives, so no other code on this CPU runs, and
        // other CPUs only read it through relaxed atomic loads of 8-byte
        // words (for counters) or not at all.
        f(unsafe { &mut *ptr })
    }
}

/// Single-instruction operations on 8-byte per-CPU counters: the safe
/// face of [`gs_add`] and its kin. The offset is this static's, so it names
/// a `u64` in every area and nothing else; the one rule the type cannot
/// check is that no [`PerCpu::with`] closure on the same static is running
/// on this CPU (its `&mut` would alias the access).
impl PerCpu<u64> {
    /// Adds to this CPU's instance: one `add qword ptr gs:[off], v`.
    #[inline(always)]
    pub fn add(&'static self, v: u64) {
        // SAFETY: the offset of a `PerCpu<u64>` static: a `u64` of this
        // CPU's area that only this static's methods reach.
        unsafe { gs_add(self.offset(), v) }
    }

    /// Adds to this CPU's instance and returns the old value: one
    /// `xadd qword ptr gs:[off], reg`.
    #[inline(always)]
    pub fn fetch_add(&'static self, v: u64) -> u64 {
        // SAFETY: as in `add`.
        unsafe { gs_xadd(self.offset(), v) }
    }

    /// Reads this CPU's instance: one `mov reg, qword ptr gs:[off]`.
    #[inline(always)]
    pub fn get(&'static self) -> u64 {
        // SAFETY: as in `add`; a read of that word.
        unsafe { gs_load(self.offset()) }
    }

    /// Writes this CPU's instance: one `mov qword ptr gs:[off], v`.
    #[inline(always)]
    pub fn set(&'static self, v: u64) {
        // SAFETY: as in `add`.
        unsafe { gs_store(self.offset(), v) }
    }

    /// Reads `cpu`'s instance (a racy but untorn snapshot).
    pub fn read_remote(&'static self, cpu: usize) -> u64 {
        // SAFETY: the offset of a `PerCpu<u64>` static: an aligned `u64`
        // in every area.
        unsafe { load_remote(cpu, self.offset()) }
    }

    /// Sum over every CPU's instance.
    pub fn sum(&'static self) -> u64 {
        (0..possible_cpus())
            .map(|cpu| self.read_remote(cpu))
            .fold(0, u64::wrapping_add)
    }
}

/// `add qword ptr gs:[offset], v`: atomic with respect to interrupts on
/// this CPU (one instruction), not with respect to other CPUs (no `lock`:
/// no other CPU writes this CPU's area).
///
/// # Safety
///
/// `offset` names an 8-byte word of this CPU's area that the caller may
/// write, holding a `u64` (any value valid) that no live Rust reference
/// points at: the offset of a `PerCpu<u64>` static (outside its
/// [`PerCpu::with`] closures), or a word of an [`alloc_percpu`] allocation
/// that the caller holds and that is still live. Nothing is checked: an
/// offset into the header (the self pointer, the CPU index, the section
/// count) or into another allocation corrupts it.
#[inline(always)]
pub unsafe fn gs_add(offset: usize, v: u64) {
    // SAFETY: GS base points at this CPU's area (set before any caller can
    // run) and `offset` names a word of it the caller may write (this
    // function's contract). The instruction touches only that word. Not
    // `preserves_flags`: `add` writes the arithmetic flags.
    unsafe {
        asm!("add qword ptr gs:[{off}], {v}", off = in(reg) offset, v = in(reg) v, options(nostack));
    }
}

/// Loads `word` and, unless it has a bit of `MASK` set, adds `v` to this
/// CPU's word at offset `word + OFF`; returns whether it added (the mask
/// and the offset are immediates of the instructions). The load, the test
/// and the add form an rcu-sched read-side section without any section
/// instruction, as a *restartable sequence* (Linux's rseq has the same
/// idea): they lie between two labels whose addresses the asm records in
/// the `pcpu_fast_ranges` linker section, the add is the last instruction
/// and the only one with an effect, and an interrupt that may report a
/// quiescent state or preempt first moves a return address that lies in a
/// recorded range back to the range's start ([`fast_path_start`]), so the
/// interrupted sequence, which has written nothing yet, runs again from
/// its load. So a grace period that follows a store of a `MASK` bit into
/// `word` waits for every add made by code that loaded the old value (a
/// sequence that reaches its add ran whole between two reports), as with
/// a [`SchedGuard`] around it, at the cost of one load, one test, one
/// branch and the `add gs:`. The sequence's inputs are registers it does
/// not write (the loaded word is an output, allocated apart from them),
/// so running it again from the start is running it once. This is
/// percpu_ref's fast path: `word` is the handle's word, the per-CPU
/// offset of its counter with the ATOMIC flag in bit 0.
///
/// # Safety
///
/// Whenever `word` has no bit of `MASK` set, `word + OFF` names an
/// 8-byte word of the dynamic region that belongs to the caller (from one
/// [`alloc_percpu`] allocation that is still live): the add writes without
/// checking.
#[inline(always)]
pub unsafe fn gs_add_unless<const MASK: u32, const OFF: u32>(word: &AtomicUsize, v: u64) -> bool {
    let w: usize;
    // SAFETY: `word` is a live reference (a plain load of it is an Acquire
    // load on x86, and the asm is not `nomem`, so the compiler keeps it
    // where it is); the add touches the caller's word (this function's
    // contract) with one gs-relative instruction, as in `gs_add`. The
    // table entry holds two code addresses of this asm; `pcpu_fast_ranges`
    // holds nothing else (only this asm names it), and is writable ("aw")
    // so that the loader can relocate it. The jump to `set` leaves the
    // range before anything else runs.
    unsafe {
        asm!(
            "2:",
            "mov {w}, qword ptr [{word}]",
            "test {w}, {mask}",
            "jnz {set}",
            "add qword ptr gs:[{w} + {off}], {v}",
            "3:",
            ".pushsection pcpu_fast_ranges, \"aw\"",
            ".balign 8",
            ".quad 2b, 3b",
            ".popsection",
            word = in(reg) word.as_ptr(),
            w = out(reg) w,
            mask = const MASK,
            off = const OFF,
            v = in(reg) v,
            set = label {
                return false;
            },
            options(nostack),
        );
    }
    let _ = w;
    true
}

/// The `[start, end)` code ranges recorded by [`gs_add_unless`].
fn fast_ranges() -> &'static [[u64; 2]] {
    unsafe extern "C" {
        static __start_pcpu_fast_ranges: u8;
        static __stop_pcpu_fast_ranges: u8;
    }
    let start = (&raw const __start_pcpu_fast_ranges).cast::<[u64; 2]>();
    let stop = (&raw const __stop_pcpu_fast_ranges).cast::<[u64; 2]>();
    let len = (stop as usize - start as usize) / size_of::<[u64; 2]>();
    // SAFETY: the linker bounds the section with these symbols; it holds
    // only the 16-byte, 8-aligned entries of `gs_add_unless`, back to back,
    // written by the loader's relocation and never again.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// If an interrupted instruction at `rip` lies inside a [`gs_add_unless`]
/// sequence (from its load up to its add, which has not run), the
/// sequence's first instruction: where the interrupt should return to.
pub fn fast_path_start(rip: u64) -> Option<u64> {
    fast_ranges()
        .iter()
        .find(|&&[start, end]| start <= rip && rip < end)
        .map(|&[start, _]| start)
}

/// `xadd qword ptr gs:[offset], v`: adds `v` and returns the old value, in
/// one instruction (so, like [`gs_add`], whole with respect to interrupts
/// on this CPU; no `lock`, as no other CPU writes the word).
///
/// # Safety
///
/// As for [`gs_add`]: `offset` names a `u64` word of this CPU's area that
/// the caller may write.
#[inline(always)]
pub unsafe fn gs_xadd(offset: usize, v: u64) -> u64 {
    let mut v = v;
    // SAFETY: as in `gs_add` (the caller's word, this function's contract);
    // `xadd` leaves the old value in the register and writes the flags
    // (no `preserves_flags`).
    unsafe {
        asm!("xadd qword ptr gs:[{off}], {v}", off = in(reg) offset, v = inout(reg) v, options(nostack));
    }
    v
}

/// `mov reg, qword ptr gs:[offset]`.
///
/// # Safety
///
/// `offset` is 8-byte aligned and names a word inside this CPU's area (its
/// header, a `percpu!` static holding a `u64`-sized plain value, or a word
/// of a live [`alloc_percpu`] allocation): the load is not bounds-checked,
/// and an offset past the area reads whatever memory lies there.
#[inline(always)]
pub unsafe fn gs_load(offset: usize) -> u64 {
    let v;
    // SAFETY: GS base points at this CPU's area and `offset` is a word
    // inside it (this function's contract); a plain read: `mov` writes no
    // flags and no memory (`preserves_flags`, `readonly`).
    unsafe {
        asm!("mov {v}, qword ptr gs:[{off}]", off = in(reg) offset, v = out(reg) v, options(nostack, preserves_flags, readonly));
    }
    v
}

/// `mov qword ptr gs:[offset], v`.
///
/// # Safety
///
/// As for [`gs_add`]: `offset` names a `u64` word of this CPU's area that
/// the caller may write (never a header word another part of this module
/// keeps, such as the self pointer at offset 0).
#[inline(always)]
pub unsafe fn gs_store(offset: usize, v: u64) {
    // SAFETY: the caller's word (this function's contract); `mov` writes
    // no flags (`preserves_flags`).
    unsafe {
        asm!("mov qword ptr gs:[{off}], {v}", off = in(reg) offset, v = in(reg) v, options(nostack, preserves_flags));
    }
}

/// Writes the 8-byte word at `offset` in `cpu`'s area: for words that
/// their own CPU only reads (flags), never for counters that it adds to
/// (its non-atomic `add` could overwrite this store).
///
/// # Safety
///
/// `offset` names an 8-byte word of an [`alloc_percpu`] allocation that
/// the caller owns and that is still live (not a `percpu!` static, whose
/// Rust value the store could break).
pub unsafe fn store_remote(cpu: usize, offset: usize, v: u64) {
    let ptr = (area_base(cpu) + offset) as *const AtomicU64;
    // SAFETY: an aligned word inside every area (the caller's allocation,
    // which lives for the rest of the call); an aligned x86 store is never
    // torn. Release: refcnt's promise 7 (a fast path that reads the value
    // comes after what preceded the store); a plain `mov` on x86 all the
    // same. Sections that began earlier see it after the caller's grace
    // period.
    unsafe { (*ptr).store(v, Ordering::Release) }
}

/// Reads the 8-byte word at `offset` in `cpu`'s area.
///
/// # Safety
///
/// `offset` is 8-byte aligned and names a word inside every area (a header
/// word, a `percpu!` static holding a `u64`-sized plain value, or a word of
/// a live [`alloc_percpu`] allocation): it is not bounds-checked. (`cpu` is:
/// a CPU without an area panics.)
pub unsafe fn load_remote(cpu: usize, offset: usize) -> u64 {
    let ptr = (area_base(cpu) + offset) as *const AtomicU64;
    // SAFETY: `offset` names an 8-byte-aligned word inside every area (this
    // function's contract) and the area lives for the rest of the run. The
    // owner writes it with single instructions; reading it as an atomic is
    // the Rust view of an aligned x86 load, which never sees a torn value.
    // Relaxed: callers that need ordering (grace periods) fence themselves.
    unsafe { (*ptr).load(Ordering::Relaxed) }
}

/// Dense index of the running CPU: one `mov rax, qword ptr gs:[8]`.
#[inline(always)]
pub fn cpu_id() -> usize {
    let id: usize;
    // SAFETY: GS base always points at an area or at the boot header, both
    // of which start with a `Header`.
    unsafe {
        asm!("mov {0}, qword ptr gs:[{off}]", out(reg) id, off = const CPU_INDEX_OFFSET, options(nostack, preserves_flags, readonly));
    }
    id
}

/// Local APIC ID of the running CPU, from its area header.
pub fn apic_id() -> u32 {
    let id: u32;
    // SAFETY: as in `cpu_id`.
    unsafe {
        asm!("mov {0:e}, dword ptr gs:[{off}]", out(reg) id, off = const APIC_ID_OFFSET, options(nostack, preserves_flags, readonly));
    }
    id
}

fn this_area_base() -> usize {
    let base: u64;
    // SAFETY: as in `cpu_id`.
    unsafe {
        asm!("mov {0}, qword ptr gs:[{off}]", out(reg) base, off = const SELF_PTR_OFFSET, options(nostack, preserves_flags, readonly));
    }
    base as usize
}

/// The areas, once allocated.
struct Areas {
    bases: Vec<usize>,
}

static AREAS: Once<Areas> = Once::new();

/// The header GS points at before the areas exist, so that `cpu_id()` (and
/// thus the fatal path) works from the first instruction.
#[repr(transparent)]
struct BootHeader(UnsafeCell<Header>);
// SAFETY: written once by the boot CPU before any other CPU runs.
unsafe impl Sync for BootHeader {}
static BOOT_HEADER: BootHeader = BootHeader(UnsafeCell::new(Header {
    self_ptr: 0,
    cpu_index: 0,
    apic_id: 0,
    rs_depth: 0,
    rs_wanted: 0,
}));

/// Points the boot CPU's GS base at the static boot header. First thing at
/// boot, before anything reads `cpu_id()`.
pub fn init_early() {
    let header = BOOT_HEADER.0.get();
    // SAFETY: only the boot CPU runs, nothing reads the header yet.
    unsafe { (*header).self_ptr = header as u64 };
    GsBase::write(VirtAddr::from_ptr(header));
}

/// Number of CPUs that have an area (every CPU the kernel may bring up).
pub fn possible_cpus() -> usize {
    AREAS.get().map_or(1, |a| a.bases.len())
}

fn area_base(cpu: usize) -> usize {
    match AREAS.get() {
        Some(areas) => areas.bases[cpu],
        None => BOOT_HEADER.0.get() as usize,
    }
}

/// The local APIC ID of CPU `cpu` (from its area's header).
pub fn apic_id_of(cpu: usize) -> u32 {
    let ptr = (area_base(cpu) + APIC_ID_OFFSET) as *const u32;
    // SAFETY: every area starts with a `Header`, written before the CPU's
    // index is handed out and never changed; `apic_id` is an aligned u32.
    unsafe { ptr.read_volatile() }
}

/// Allocates one area per CPU (`apic_ids[i]` is CPU `i`'s APIC ID), copies
/// the static section into each, and moves the boot CPU (index 0) onto its
/// area. Each area is mapped at `region + i * STRIDE` (a range of virtual
/// space of its own, see the module documentation), backed by heap memory.
pub fn init(apic_ids: &[u32]) {
    assert!(
        !apic_ids.is_empty() && apic_ids.len() <= MAX_CPUS,
        "1..={MAX_CPUS} CPUs supported"
    );
    const _: () = assert!(
        MAX_CPUS * STRIDE <= 1 << 39,
        "the areas fit one level-4 entry"
    );
    let region = super::paging::reserve_unused_region() as usize;
    let size = area_size();
    let (start, len) = section();
    let bases = apic_ids
        .iter()
        .enumerate()
        .map(|(i, &apic_id)| {
            let base = region + i * STRIDE;
            let backing = alloc_backing(size)
                .unwrap_or_else(|| panic!("no memory for the per-CPU area of CPU {i}"));
            // SAFETY: `base` starts this CPU's stride of the range that
            // `reserve_unused_region` gave us, of which nothing is mapped
            // yet; `backing` is a fresh zeroed heap block of `size` bytes.
            unsafe { map_backing(base, backing, size) };
            let base = base as *mut u8;
            // SAFETY: `base` now maps `size` bytes, enough for the header
            // plus `len` bytes of section copy; the section is readable
            // kernel data.
            unsafe {
                base.cast::<Header>().write(Header {
                    self_ptr: base as u64,
                    cpu_index: i as u64,
                    apic_id,
                    rs_depth: 0,
                    rs_wanted: 0,
                });
                core::ptr::copy_nonoverlapping(start as *const u8, base.add(HEADER_SIZE), len);
            }
            base as usize
        })
        .collect();
    let areas = AREAS.call_once(|| Areas { bases });
    // The dynamic allocator hands out ranges of the boot CPU's dynamic
    // region; the same offsets are then valid in every area.
    let dyn_base = areas.bases[0] + dynamic_start();
    let dyn_size = size - dynamic_start();
    let mut dynamic = DYNAMIC.lock();
    // SAFETY: the range is the boot CPU's dynamic region, mapped above and
    // owned by the allocator from now on (its free list lives in
    // unallocated parts).
    unsafe { dynamic.heap.init(dyn_base as *mut u8, dyn_size) };
    dynamic.size = dyn_size;
    drop(dynamic);
    enter_area(0);
}

/// Points this CPU's GS base at area `cpu`. Called once per CPU, by the
/// CPU itself, before it uses per-CPU data.
pub fn enter_area(cpu: usize) {
    GsBase::write(VirtAddr::new(area_base(cpu) as u64));
}

/// The offsets allocator and how much of every area it covers.
struct Dynamic {
    /// First-fit allocator over the boot CPU's dynamic region; an
    /// allocation's offset from the boot CPU's area base is its offset in
    /// every area.
    heap: Heap,
    /// Bytes of the dynamic region mapped in every area.
    size: usize,
}

static DYNAMIC: Mutex<Dynamic> = Mutex::new(Dynamic {
    heap: Heap::empty(),
    size: 0,
});

/// A zeroed, page-aligned heap block of `size` bytes that backs part of an
/// area (never freed: chunks stay), or `None` if the heap has no room.
fn alloc_backing(size: usize) -> Option<usize> {
    let layout = core::alloc::Layout::from_size_align(size, 4096).ok()?;
    // SAFETY: the layout has a non-zero size (callers pass whole pages).
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    (!p.is_null()).then_some(p as usize)
}

/// Gives back a block of [`alloc_backing`] that was never mapped.
fn free_backing(block: usize, size: usize) {
    let layout = core::alloc::Layout::from_size_align(size, 4096).unwrap();
    // SAFETY: `block` came from `alloc_backing(size)` and is unused.
    unsafe { alloc::alloc::dealloc(block as *mut u8, layout) };
}

/// Maps the `size` bytes (whole pages) at virtual `virt` to the frames of
/// the heap block `backing`.
///
/// # Safety
///
/// `virt..virt + size` lies in the areas' reserved range and is not mapped
/// yet; `backing` is a heap block of `size` bytes, page-aligned, that is
/// used for nothing else from now on (it is reached only through `virt`).
unsafe fn map_backing(virt: usize, backing: usize, size: usize) {
    use ::x86_64::structures::paging::PageTableFlags as F;
    for page in (0..size).step_by(4096) {
        let phys = super::paging::translate((backing + page) as u64).expect("the heap is mapped");
        // SAFETY: the page is ours and unmapped, and the frame is RAM that
        // only this mapping uses from now on (the caller's contract); the
        // heap's own mapping of it is never used again.
        unsafe { super::paging::map((virt + page) as u64, phys, F::PRESENT | F::WRITABLE) };
    }
}

/// Grows every area's dynamic region by at least `bytes` (whole chunks),
/// so that the allocator can fit an allocation of that size. New pages
/// go from not present to present: no other CPU can hold a stale
/// translation of them, so no TLB shootdown is needed.
fn grow(dynamic: &mut Dynamic, bytes: usize) -> Result<(), ()> {
    // A hole's bookkeeping and alignment may take a little of the chunk.
    let add = (bytes + 64).next_multiple_of(CHUNK_SIZE);
    let end = dynamic_start() + dynamic.size;
    if end + add > STRIDE {
        return Err(());
    }
    let mut blocks = Vec::with_capacity(possible_cpus());
    for _ in 0..possible_cpus() {
        match alloc_backing(add) {
            Some(b) => blocks.push(b),
            None => {
                for b in blocks {
                    free_backing(b, add);
                }
                return Err(());
            }
        }
    }
    for (cpu, b) in blocks.into_iter().enumerate() {
        // SAFETY: past the mapped end of `cpu`'s area and inside its
        // stride (checked above), unmapped so far; `b` is a fresh block.
        unsafe { map_backing(area_base(cpu) + end, b, add) };
    }
    // SAFETY: the boot CPU's area is now mapped up to `end + add`, and the
    // allocator's range ends at `end` (the region has grown only here).
    unsafe { dynamic.heap.extend(add) };
    dynamic.size += add;
    Ok(())
}

/// Bytes of the dynamic region in use and mapped, per CPU (every CPU's
/// area has the same layout), for measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercpuUsage {
    /// Bytes allocated (the allocator's count, which rounds each
    /// allocation up to 16 bytes), per CPU.
    pub used: usize,
    /// Bytes mapped, per CPU (grows by [`CHUNK_SIZE`]).
    pub size: usize,
}

/// How much of the dynamic region is used and mapped.
pub fn usage() -> PercpuUsage {
    let _irq = IrqGuard::new();
    let d = DYNAMIC.lock();
    PercpuUsage {
        used: d.heap.used(),
        size: d.size,
    }
}

/// One dynamic per-CPU allocation: the same offset in every CPU's area.
/// Freed when dropped.
#[derive(Debug)]
pub struct PercpuAlloc {
    offset: usize,
    layout: core::alloc::Layout,
}

/// The dynamic per-CPU region is full and cannot grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercpuExhausted {
    /// Bytes asked for.
    pub requested: usize,
    /// Bytes of the dynamic region mapped per CPU when it failed; 0 when
    /// [`try_alloc_percpu`] found the allocator busy.
    pub size: usize,
}

impl core::fmt::Display for PercpuExhausted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.size == 0 {
            return write!(
                f,
                "the per-CPU allocator was busy (another CPU holds it) and this caller cannot wait: {} bytes not allocated; try again later",
                self.requested
            );
        }
        write!(
            f,
            "the per-CPU region ({} bytes per CPU) has no room for {} more bytes and cannot grow: the heap cannot back another chunk on every CPU, or an area would pass its {STRIDE}-byte stride; free per-CPU objects or give the machine more memory",
            self.size, self.requested
        )
    }
}

/// Allocates `size` zeroed bytes (8-byte aligned) at one offset valid on
/// every CPU, growing the region by chunks if needed.
pub fn alloc_percpu(size: usize) -> Result<PercpuAlloc, PercpuExhausted> {
    alloc_inner(size, true)
}

/// As [`alloc_percpu`], for callers that must not wait (a get path that
/// runs with interrupts off or in an interrupt handler): fails at once
/// when another CPU holds the allocator (the error's `size` is 0), and
/// never grows the region (heap allocation, zeroing and mapping a chunk on
/// every CPU, with interrupts off: 0.16 to 0.38 ms at 8 CPUs and about
/// 15 ms at 64 under TCG, timed around the growing allocations of
/// `percpu_allocator_reuses_grows_and_refuses`); when the region is full it fails, and the caller may have it
/// grown from a context that can wait ([`alloc_percpu`] grows), as Linux
/// populates its per-CPU chunks from a worker for atomic allocations.
pub fn try_alloc_percpu(size: usize) -> Result<PercpuAlloc, PercpuExhausted> {
    alloc_inner(size, false)
}

fn alloc_inner(size: usize, wait: bool) -> Result<PercpuAlloc, PercpuExhausted> {
    let layout =
        core::alloc::Layout::from_size_align(size.max(8), 8).map_err(|_| PercpuExhausted {
            requested: size,
            size: 0,
        })?;
    let ptr = IrqGuard::new().run(|| {
        let mut dynamic = if wait {
            DYNAMIC.lock()
        } else {
            DYNAMIC.try_lock().ok_or(0usize)?
        };
        if let Ok(p) = dynamic.heap.allocate_first_fit(layout) {
            return Ok(p);
        }
        let fail = dynamic.size;
        if !wait {
            return Err(fail);
        }
        grow(&mut dynamic, layout.size()).map_err(|()| fail)?;
        dynamic.heap.allocate_first_fit(layout).map_err(|()| fail)
    });
    let ptr = ptr.map_err(|s| PercpuExhausted {
        requested: size,
        size: s,
    })?;
    let offset = ptr.as_ptr() as usize - area_base(0);
    for cpu in 0..possible_cpus() {
        // SAFETY: the range was just allocated, so no one else uses it on
        // any CPU; it lies inside every area (same layout everywhere).
        unsafe { core::ptr::write_bytes((area_base(cpu) + offset) as *mut u8, 0, layout.size()) };
    }
    Ok(PercpuAlloc { offset, layout })
}

impl PercpuAlloc {
    /// Offset of the allocation in every area.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes allocated.
    pub fn size(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for PercpuAlloc {
    fn drop(&mut self) {
        let ptr = NonNull::new((area_base(0) + self.offset) as *mut u8).unwrap();
        // SAFETY: the block came from this allocator with this layout and is
        // given back once (we are its only owner).
        IrqGuard::new().run(|| unsafe { DYNAMIC.lock().heap.deallocate(ptr, self.layout) });
    }
}

/// An rcu-sched read-side section with interrupts left on: a nesting count
/// in this CPU's area header, raised by one `inc qword ptr gs:[24]` and
/// lowered on drop by one `sub qword ptr gs:[24], 1` whose borrow (carry)
/// says whether a quiescent state is owed.
///
/// A grace period asks every CPU for a quiescent state (an IPI, or the
/// timer tick for the asynchronous kind). A CPU asked while in no section
/// reports at once; one asked inside a section notes the request
/// (`rs_wanted = 1`) and takes one off the count, so the count is
/// `depth - wanted`: the outermost exit then takes it from 0 to -1, the
/// `sub` borrows, and the exit path (cold) puts it back to 0 and reports
/// ([`quiescent_state`]). All of it happens on the CPU's own area, in its
/// own program order, between whole instructions (an interrupt cannot
/// split an `inc` or a `sub`), so the read side needs no memory barrier;
/// the grace-period side orders itself with fences and the IPI.
///
/// Compared with an interrupts-off section this is two plain instructions
/// instead of `pushf; cli` and `popf`, and interrupts are served inside the
/// section. The section must not sleep.
#[must_use = "dropping the guard ends the read-side section at once"]
pub struct SchedGuard {
    /// Not `Send`: the section belongs to the CPU that entered it.
    _cpu_bound: PhantomData<*const ()>,
}

/// Enters an rcu-sched read-side section (nestable).
#[inline(always)]
pub fn sched_read_lock() -> SchedGuard {
    // SAFETY: GS points at this CPU's area, whose header holds the count.
    // No `nomem`: the asm is also a compiler barrier, so the section's
    // accesses are not hoisted above the increment.
    unsafe {
        asm!("inc qword ptr gs:[{off}]", off = const RS_DEPTH_OFFSET, options(nostack));
    }
    SchedGuard {
        _cpu_bound: PhantomData,
    }
}

impl Drop for SchedGuard {
    #[inline(always)]
    fn drop(&mut self) {
        let owed: u8;
        // SAFETY: as in `sched_read_lock`; `sub` sets CF when the count
        // borrows (0 -> -1: outermost exit with a report owed), which
        // `setc` reads in the same asm block.
        unsafe {
            asm!("sub qword ptr gs:[{off}], 1", "setc {c}", off = const RS_DEPTH_OFFSET, c = out(reg_byte) owed, options(nostack));
        }
        if owed != 0 {
            deferred_quiescent_state();
        }
    }
}

/// This CPU's read-side nesting depth.
#[inline(always)]
pub fn sched_depth() -> u64 {
    // Interrupts off: the two words change together in the handler.
    let _irq = IrqGuard::new();
    // SAFETY: two words of this CPU's header, which every area has.
    unsafe { gs_load(RS_DEPTH_OFFSET).wrapping_add(gs_load(RS_WANTED_OFFSET)) }
}

/// Whether a grace period has asked this CPU for a quiescent state that
/// the section in progress owes (the request arrived inside it).
pub fn sched_report_owed() -> bool {
    // SAFETY: a word of this CPU's header.
    unsafe { gs_load(RS_WANTED_OFFSET) != 0 }
}

/// The outermost section ended with a report owed.
///
/// With interrupts on, the CPU is in no read-side section from here on:
/// report. With interrupts off it still is in one: a stretch with
/// interrupts off is an rcu-sched read-side section of its own (what the
/// code does next may still use what the section read), so the report
/// waits until interrupts are back on. A self-IPI at the grace-period
/// vector, pending until then, asks this CPU again as soon as they are:
/// its handler reports if the CPU is in no section by then, or hands the
/// request to the section it lands in. (Without it the next tick or the
/// grace period's next request would ask; the IPI only makes it prompt.)
#[cold]
#[inline(never)]
fn deferred_quiescent_state() {
    // Before the guard below turns them off: the state the code that ended
    // its section runs in.
    let irqs_on = ::x86_64::instructions::interrupts::are_enabled();
    {
        // Interrupts off while the two words are put back in step (a
        // grace-period interrupt between the `sub` and here saw `wanted`
        // set and left both alone) and while the report runs, as it does
        // in the interrupt handlers: its read-modify-writes of this CPU's
        // words must not interleave with theirs.
        let _irq = IrqGuard::new();
        // SAFETY: two words of this CPU's header, which only this module
        // writes, with interrupts off.
        unsafe {
            gs_store(RS_DEPTH_OFFSET, 0);
            gs_store(RS_WANTED_OFFSET, 0);
        }
        if irqs_on {
            (QS_HOOK.get().copied().unwrap_or(|| {}))();
        } else if super::apic::ready() {
            super::apic::send_ipi(
                super::apic::Dest::SelfOnly,
                super::apic::Delivery::Fixed(super::smp::GP_VECTOR),
            );
        }
    }
    // The tick marks a section it interrupts as owing a report, so this
    // is also where a preemption the tick had to put off happens (the
    // scheduler's hook checks that interrupts are on).
    if let Some(hook) = SECTION_END_HOOK.get() {
        hook();
    }
}

/// Run after an outermost section's cold exit (see
/// [`set_section_end_hook`]).
static SECTION_END_HOOK: Hook<fn()> = Hook::new("section end");

/// Registers what runs when an outermost rcu-sched read-side section ends
/// owing a report (after the report, in the ending code's context, with
/// interrupts as it left them): the scheduler's preemption point, which
/// does a switch the tick had to put off. Once, at init; until then the
/// exit only reports.
pub fn set_section_end_hook(hook: fn()) {
    SECTION_END_HOOK.set(hook);
}

/// Called when a CPU passes a quiescent state it was asked for.
static QS_HOOK: Once<fn()> = Once::new();

/// Asks this CPU for a quiescent state, from an interrupt handler (so with
/// interrupts off, between two whole instructions of the interrupted
/// code, which ran with interrupts on): runs `report` at once if the CPU
/// is in no read-side section, else arranges for the outermost exit to run
/// it (or, if that exit finds interrupts off, for the grace-period IPI to
/// ask again once they are on). `report` must be the same function every
/// time (the grace-period code's).
pub fn quiescent_state(report: fn()) {
    QS_HOOK.call_once(|| report);
    // SAFETY: two words of this CPU's header.
    let (wanted, depth) = unsafe { (gs_load(RS_WANTED_OFFSET), gs_load(RS_DEPTH_OFFSET)) };
    if wanted != 0 {
        return; // already owed by the section in progress
    }
    if depth == 0 {
        report();
    } else {
        // SAFETY: two words of this CPU's header, which only this module
        // writes; the caller runs with interrupts off, as every writer does.
        unsafe {
            gs_store(RS_WANTED_OFFSET, 1);
            gs_add(RS_DEPTH_OFFSET, u64::MAX); // count = depth - 1
        }
    }
}

crate::percpu! {
    /// This CPU's idle sequence: odd while it halts in the idle loop, even
    /// otherwise; one step at each entry and each exit (see [`idle_enter`]).
    static IDLE_SEQ: PerCpu<u64> = 0;
}

/// Enters the idle extended quiescent state (Linux's dyntick-idle): from
/// here until the next interrupt the CPU runs nothing that reads what a
/// grace period protects, so a grace period may count it as quiescent
/// without asking it ([`idle_quiet_since`]), and need not wake it with an
/// IPI. Called by the idle loop with interrupts off, right before
/// `sti; hlt`; every interrupt handler leaves the state first thing
/// ([`idle_exit`]), so no handler runs a read-side section inside it.
///
/// Ordering: the CPU's earlier accesses (its last sections') come before
/// the odd value is visible: x86 performs neither an earlier load nor an
/// earlier store after a later store, and the compiler fence keeps the
/// compiler from sinking them below it. So a grace period that reads the
/// odd value finds those sections over.
pub fn idle_enter() {
    debug_assert!(!::x86_64::instructions::interrupts::are_enabled());
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    IDLE_SEQ.add(1);
}

/// Leaves the idle extended quiescent state if this CPU is in it: the
/// first thing of every interrupt handler, and of the idle loop's next
/// round. Interrupts off. One `gs:` load when the CPU was not idle.
#[inline(always)]
pub fn idle_exit() {
    if IDLE_SEQ.get() & 1 != 0 {
        idle_exit_slow();
    }
}

#[cold]
#[inline(never)]
fn idle_exit_slow() {
    IDLE_SEQ.add(1);
    // SeqCst (an `mfence`): the even value is globally visible before any
    // later load of this CPU, the handler's sections' included. Pairs with
    // the SeqCst fence a grace period takes between the updater's writes
    // and its read of this CPU's sequence (store buffering): either the
    // grace period reads the even value (and asks or waits for this CPU as
    // for any other) or the sections from here on see the updater's
    // writes.
    core::sync::atomic::fence(Ordering::SeqCst);
}

/// `cpu`'s idle sequence, for [`idle_quiet_since`]. The caller orders its
/// earlier writes before this load with a `SeqCst` fence.
pub fn idle_seq(cpu: usize) -> u64 {
    IDLE_SEQ.read_remote(cpu)
}

/// Whether `cpu` has been in a quiescent state since its idle sequence
/// read `snap` ([`idle_seq`]): it was idle then (odd), or it has entered
/// or left the idle state since (the entry is a quiescent point, and an
/// exit follows an entry).
pub fn idle_quiet_since(cpu: usize, snap: u64) -> bool {
    snap & 1 != 0 || IDLE_SEQ.read_remote(cpu) != snap
}

/// Interrupts off on this CPU while it lives; the previous state comes
/// back on drop, so guards nest.
#[must_use = "dropping the guard restores interrupts at once"]
pub struct IrqGuard {
    were_enabled: bool,
    /// Not `Send`: the guard belongs to the CPU whose interrupts it holds off.
    _cpu_bound: PhantomData<*const ()>,
}

impl IrqGuard {
    /// Disables interrupts, remembering whether they were on.
    #[inline(always)]
    pub fn new() -> Self {
        let were_enabled = ::x86_64::instructions::interrupts::are_enabled();
        ::x86_64::instructions::interrupts::disable();
        IrqGuard {
            were_enabled,
            _cpu_bound: PhantomData,
        }
    }

    /// Runs `f` and drops the guard.
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        let r = f();
        drop(self);
        r
    }
}

impl Default for IrqGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IrqGuard {
    #[inline(always)]
    fn drop(&mut self) {
        if self.were_enabled {
            ::x86_64::instructions::interrupts::enable();
        }
    }
}

/// Out-of-line copies of the fast paths, kept (with C names) so the
/// disassembly check in `boot/tests/disassembly.rs` can find them.
pub mod probes {
    use core::sync::atomic::AtomicUsize;

    /// `gs_add` out of line.
    ///
    /// # Safety
    ///
    /// As [`gs_add`](super::gs_add).
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub unsafe extern "C" fn percpu_probe_add(offset: usize, v: u64) {
        // SAFETY: the caller's promise, passed on.
        unsafe { super::gs_add(offset, v) }
    }

    /// An empty rcu-sched read-side section out of line.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn percpu_probe_sched_section() {
        drop(super::sched_read_lock());
    }

    /// `gs_add_unless` (the percpu_ref fast path: flag in bit 0, the
    /// counter at the word's offset) out of line.
    ///
    /// # Safety
    ///
    /// As [`gs_add_unless`](super::gs_add_unless).
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub unsafe extern "C" fn percpu_probe_add_unless(word: &AtomicUsize, v: u64) -> bool {
        // SAFETY: the caller's promise, passed on.
        unsafe { super::gs_add_unless::<1, 0>(word, v) }
    }

    /// `cpu_id` out of line.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn percpu_probe_cpu_id() -> usize {
        super::cpu_id()
    }
}

#[used]
static KEEP_PROBE_ADD: unsafe extern "C" fn(usize, u64) = probes::percpu_probe_add;
#[used]
static KEEP_PROBE_SECTION: extern "C" fn() = probes::percpu_probe_sched_section;
#[used]
static KEEP_PROBE_CPU_ID: extern "C" fn() -> usize = probes::percpu_probe_cpu_id;
#[used]
static KEEP_PROBE_ADD_UNLESS: unsafe extern "C" fn(&AtomicUsize, u64) -> bool =
    probes::percpu_probe_add_unless;

crate::percpu! {
    static TEST_COUNTER: PerCpu<u64> = 0;
    static TEST_VALUE: PerCpu<u64> = 0;
}

crate::ktest! {
    /// Every CPU adds to its own counter 10^6 times at once, through a
    /// static and through a dynamic per-CPU variable; the sums are exact.
    #[smp(1, 2, 8)]
    #[timeout(120)]
    fn percpu_counters_sum_exactly() {
        const N: u64 = 1_000_000;
        let dynamic = alloc_percpu(8).expect("room for one counter");
        super::smp::on_each_cpu(&|| TEST_COUNTER.set(0));
        super::smp::on_each_cpu(&|| {
            for _ in 0..N {
                TEST_COUNTER.add(1);
                // SAFETY: the word of `dynamic`, which outlives the call.
                unsafe { gs_add(dynamic.offset(), 1) };
            }
        });
        let cpus = super::smp::online_cpus() as u64;
        assert_eq!(TEST_COUNTER.sum(), N * cpus);
        // SAFETY: as above.
        let dyn_sum: u64 = (0..possible_cpus()).map(|c| unsafe { load_remote(c, dynamic.offset()) }).sum();
        assert_eq!(dyn_sum, N * cpus);
    }
}

crate::ktest! {
    /// A value written on CPU i is seen only in CPU i's instance, and every
    /// CPU's `cpu_id()` and area header agree with its APIC.
    #[smp(1, 2, 8)]
    fn percpu_isolation_and_cpu_ids() {
        use core::sync::atomic::AtomicUsize;
        let mismatches = AtomicUsize::new(0);
        super::smp::on_each_cpu(&|| {
            TEST_VALUE.set(cpu_id() as u64 * 1000 + 7);
            let apic = super::apic::id();
            if apic != apic_id() || apic != super::smp::apic_id_of(cpu_id()) {
                mismatches.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(mismatches.load(Ordering::Relaxed), 0, "cpu_id/APIC ID map disagrees");
        for cpu in super::smp::online() {
            assert_eq!(TEST_VALUE.read_remote(cpu), cpu as u64 * 1000 + 7, "cpu {cpu}");
        }
        let guard = IrqGuard::new();
        TEST_VALUE.with(&guard, |v| *v += 1);
        assert_eq!(TEST_VALUE.get(), cpu_id() as u64 * 1000 + 8);
    }
}

crate::ktest! {
    /// The dynamic allocator zeroes, reuses freed space, grows by chunks
    /// (an allocation past the mapped region lands in a new chunk, mapped
    /// and zeroed on every CPU, at an offset that works through GS on
    /// this CPU), never overlaps, and refuses what cannot fit with an
    /// error that says so.
    fn percpu_allocator_reuses_grows_and_refuses() {
        let a = alloc_percpu(64).unwrap();
        // SAFETY: the first word of `a`, which is live.
        unsafe { gs_store(a.offset(), 0xdead) };
        let offset = a.offset();
        drop(a);
        let b = alloc_percpu(64).unwrap();
        assert_eq!(b.offset(), offset, "freed space is reused first");
        // SAFETY: the first word of `b`, which is live.
        assert_eq!(unsafe { gs_load(b.offset()) }, 0, "allocations are zeroed");
        let before = usage();
        // All the free room (earlier tests of this boot may have grown the
        // region) and two chunks more, in 1 KiB blocks: the region grows.
        let blocks = (before.size - before.used) / 1024 + 2 * CHUNK_SIZE / 1024;
        let many: alloc::vec::Vec<PercpuAlloc> =
            (0..blocks).map(|_| alloc_percpu(1024).expect("the region grows")).collect();
        let after = usage();
        assert!(after.size >= before.size + 2 * CHUNK_SIZE, "{before:?} -> {after:?}");
        assert!(after.used >= before.used + blocks * 1024);
        let mut offsets: alloc::vec::Vec<usize> = many.iter().map(PercpuAlloc::offset).collect();
        offsets.sort_unstable();
        assert!(offsets.windows(2).all(|w| w[1] - w[0] >= 1024), "no two blocks overlap");
        let last = *offsets.last().unwrap();
        assert!(last + 1024 <= dynamic_start() + after.size, "inside the mapped region");
        // The newest chunk is mapped on every CPU and works through GS.
        // SAFETY: the last word of the last block, which is live.
        unsafe { gs_add(last + 1016, 5) };
        // SAFETY: as above; every CPU's area maps it.
        let sum: u64 = (0..possible_cpus()).map(|c| unsafe { load_remote(c, last + 1016) }).sum();
        assert_eq!(sum, 5);
        drop(many);
        assert_eq!(usage().used, before.used, "all space is back after freeing");
        let err = alloc_percpu(STRIDE).unwrap_err();
        assert_eq!(err.requested, STRIDE);
        let text = alloc::format!("{err}");
        assert!(text.contains("cannot grow") && text.contains("more memory"), "{text}");
        // Within the stride, but more than the heap can back on every CPU.
        let err = alloc_percpu(STRIDE / 2).unwrap_err();
        assert_eq!(err.size, usage().size, "{err}");
        alloc_percpu(32 * 1024).expect("a failed growth leaves the allocator working");
    }
}
