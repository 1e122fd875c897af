//! Physical memory at boot: the usable regions from the bootloader's map,
//! and the kernel heap carved out of the largest one.

pub mod cache;
pub mod heap;

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};

/// The heap is at most this large; the rest of RAM is left for frames.
const MAX_HEAP: u64 = 256 << 20;

/// What boot-time memory setup found.
#[derive(Debug, Clone)]
pub struct MemoryInfo {
    /// Total usable RAM in bytes.
    pub usable_bytes: u64,
    /// Bytes given to the heap.
    pub heap_bytes: u64,
    /// Physical range of the heap.
    pub heap_phys: core::ops::Range<u64>,
}

/// Sets up the heap in the largest usable region, reached through the
/// bootloader's mapping of all physical memory at `phys_offset`.
pub fn init(phys_offset: u64, regions: &MemoryRegions) -> MemoryInfo {
    let usable = || {
        regions
            .iter()
            .filter(|r| r.kind == MemoryRegionKind::Usable)
    };
    let usable_bytes = usable().map(|r| r.end - r.start).sum();
    let largest = usable()
        .max_by_key(|r| r.end - r.start)
        .expect("the bootloader reported no usable memory");
    let heap_bytes = (largest.end - largest.start).min(MAX_HEAP);
    // SAFETY: the region is usable RAM that the bootloader reported free and
    // mapped at `phys_offset`; nothing else in the kernel claims it, and
    // `init` runs once, at boot, before anything allocates.
    unsafe { heap::init(phys_offset + largest.start, heap_bytes as usize) };
    MemoryInfo {
        usable_bytes,
        heap_bytes,
        heap_phys: largest.start..largest.start + heap_bytes,
    }
}
