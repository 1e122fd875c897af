//! Changes to the kernel's page tables (the ones the bootloader built):
//! the identity-mapped page the CPU start-up trampoline runs from, and the
//! xAPIC register page when x2APIC is missing. Page-table frames come from
//! a bump allocator over usable RAM the heap does not use.

use core::ops::Range;

use ::x86_64::registers::control::Cr3;
use ::x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
    Translate,
};
use ::x86_64::{PhysAddr, VirtAddr};
use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use spin::Once;

use super::lock::IrqSpinLock;

const MAX_REGIONS: usize = 64;

/// Hands out 4 KiB frames from usable regions, never reusing one.
struct BumpFrames {
    regions: [Range<u64>; MAX_REGIONS],
    count: usize,
    current: usize,
    next: u64,
}

// SAFETY: every frame returned lies in a region the bootloader reported as
// usable and the heap does not own, and the bump pointer never returns a
// frame twice.
unsafe impl FrameAllocator<Size4KiB> for BumpFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        while self.current < self.count {
            let region = &self.regions[self.current];
            let at = self.next.max(region.start).next_multiple_of(4096);
            if at + 4096 <= region.end {
                self.next = at + 4096;
                return PhysFrame::from_start_address(PhysAddr::new(at)).ok();
            }
            self.current += 1;
        }
        None
    }
}

struct Paging {
    mapper: OffsetPageTable<'static>,
    frames: BumpFrames,
}

static PAGING: Once<IrqSpinLock<Paging>> = Once::new();

/// Takes over the active page tables. `heap` is the physical range the heap
/// uses, excluded from the frame pool, as is everything below 1 MiB (the
/// trampoline lives there).
pub fn init(phys_offset: u64, regions: &MemoryRegions, heap: Range<u64>) {
    let mut frames = BumpFrames {
        regions: core::array::from_fn(|_| 0..0),
        count: 0,
        current: 0,
        next: 0,
    };
    let usable = regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable);
    for r in usable {
        let start = r.start.max(1 << 20);
        // The heap sits at the start of its region; keep what follows it.
        let pieces = [start..r.end.min(heap.start), start.max(heap.end)..r.end];
        for piece in pieces {
            if piece.start < piece.end && frames.count < MAX_REGIONS {
                frames.regions[frames.count] = piece;
                frames.count += 1;
            }
        }
    }
    let (level_4, _) = Cr3::read();
    let table = (phys_offset + level_4.start_address().as_u64()) as *mut PageTable;
    // SAFETY: CR3 names the active level-4 table, reachable at
    // `phys_offset`; this is the only mapper ever made (Once), so there is
    // no aliasing `&mut`.
    let mapper = unsafe { OffsetPageTable::new(&mut *table, VirtAddr::new(phys_offset)) };
    PAGING.call_once(|| IrqSpinLock::new(Paging { mapper, frames }));
}

/// Maps the 4 KiB page at `virt` to the frame at `phys`, unless it is
/// mapped there already.
///
/// # Safety
/// The page must be unused by the kernel (or already map `phys`), and the
/// frame must be safe to access with `flags` (RAM nothing else owns, or
/// device registers).
pub unsafe fn map(virt: u64, phys: u64, flags: PageTableFlags) {
    let mut guard = PAGING.get().expect("paging::init has run").lock();
    let Paging { mapper, frames } = &mut *guard;
    if mapper.translate_addr(VirtAddr::new(virt)) == Some(PhysAddr::new(phys)) {
        return;
    }
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
    let frame = PhysFrame::containing_address(PhysAddr::new(phys));
    // SAFETY: guaranteed by the caller.
    unsafe { mapper.map_to(page, frame, flags, frames) }
        .expect("mapping a kernel page failed (out of frames, or already mapped elsewhere)")
        .flush();
}

/// The physical address `virt` maps to, if any.
pub fn translate(virt: u64) -> Option<u64> {
    let guard = PAGING.get()?.lock();
    guard
        .mapper
        .translate_addr(VirtAddr::new(virt))
        .map(|p| p.as_u64())
}

/// Finds a level-4 entry in the higher half that nothing maps yet and
/// returns the base of its 512 GiB of virtual space; the caller owns that
/// range from then on (call it once per user, at boot).
pub fn reserve_unused_region() -> u64 {
    let guard = PAGING.get().expect("paging::init has run").lock();
    let table = guard.mapper.level_4_table();
    // Scan from the top of the lower quarter of the higher half down, so as
    // not to land next to what the bootloader placed (it allocates upwards
    // from the start of the higher half, and the kernel sits at the top).
    let index = (256..448)
        .rev()
        .find(|&i| table[i].is_unused())
        .expect("no free level-4 entry in the higher half");
    0xffff_0000_0000_0000 | ((index as u64) << 39)
}

/// Maps the 4 KiB page at `virt` to a fresh, zeroed frame from the frame pool,
/// writable, unless it is mapped already.
///
/// # Safety
/// The page must lie in a range the caller owns (see
/// [`reserve_unused_region`]), so that no other code relies on it being
/// unmapped or mapped elsewhere.
pub unsafe fn map_fresh(virt: u64) {
    let mut guard = PAGING.get().expect("paging::init has run").lock();
    let Paging { mapper, frames } = &mut *guard;
    if mapper.translate_addr(VirtAddr::new(virt)).is_some() {
        return;
    }
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
    let frame = frames.allocate_frame().expect("out of physical frames");
    // Zeroed before use: the pool starts at 1 MiB, where the BIOS
    // bootloader's stages 3 and 4 ran (0x100000, 0x130000), which the
    // memory map reports usable. Under QEMU's TCG the code translated from
    // those pages stays attached to them, and every guest store to a page
    // that still has translated code takes the slow, self-modifying-code
    // path (a page lookup and lock per store, hundreds of times the cost):
    // a thread whose stack top landed on such a page ran ~400x slower (the
    // io mode's one starved CPU). Writing the whole page once drops all of
    // its stale translations; it also hands out no leftover bytes.
    let zero = mapper.phys_offset() + frame.start_address().as_u64();
    // SAFETY: the frame is fresh from the pool (no one else's), and all
    // physical memory is mapped writable at the mapper's offset.
    unsafe { core::ptr::write_bytes(zero.as_mut_ptr::<u8>(), 0, 4096) };
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    // SAFETY: the frame is fresh from the pool (never handed out before,
    // not the heap's) and the page is the caller's, per the contract.
    unsafe { mapper.map_to(page, frame, flags, frames) }
        .expect("mapping a stack page failed")
        .flush();
}
