//! The kernel heap: a linked-list allocator behind `#[global_allocator]`,
//! with per-CPU caches of small blocks in front ([`super::cache`]).
//!
//! The heap's lock is held with local interrupts off, so an allocation in
//! an interrupt handler can never deadlock against the code it
//! interrupted. A failed allocation returns null and Rust's
//! allocation-error path panics with the size that could not be had
//! (`memory allocation of N bytes failed`); fallible APIs (`try_reserve`)
//! see the error instead. Before failing, the caches' depots are given
//! back to the heap and the request is tried again.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use linked_list_allocator::Heap;
use spin::Mutex;

use super::cache::{self, Backing};
use crate::arch::percpu::IrqGuard;

/// The global allocator.
pub struct KernelHeap(Mutex<Heap>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Mutex::new(Heap::empty()));

/// Hands the heap its memory.
///
/// # Safety
/// `start..start + size` must be mapped, writable, unused by anything else
/// for the rest of the run, and this must be called once.
pub unsafe fn init(start: u64, size: usize) {
    let _irq = IrqGuard::new();
    // SAFETY: guaranteed by the caller.
    unsafe { HEAP.0.lock().init(start as *mut u8, size) }
}

/// Turns on the per-CPU caches: once, on the boot CPU, after the per-CPU
/// areas exist and before the other CPUs start.
pub fn enable_cpu_caches() {
    let range = {
        let _irq = IrqGuard::new();
        let heap = HEAP.0.lock();
        heap.bottom() as usize..heap.top() as usize
    };
    cache::enable(range);
}

/// Bytes in use and bytes free. Free blocks held by the per-CPU caches
/// count as free (they are handed out again before the heap is asked).
pub fn usage() -> (usize, usize) {
    let (used, free) = {
        let _irq = IrqGuard::new();
        let heap = HEAP.0.lock();
        (heap.used(), heap.free())
    };
    let cached = cache::stats().cached_bytes.min(used);
    (used - cached, free + cached)
}

impl Backing for KernelHeap {
    fn alloc_many(&self, layout: Layout, n: usize, put: &mut dyn FnMut(NonNull<u8>)) -> usize {
        let _irq = IrqGuard::new();
        cache::note_heap_trip();
        let mut heap = self.0.lock();
        for got in 0..n {
            match heap.allocate_first_fit(layout) {
                Ok(p) => put(p),
                Err(()) => return got,
            }
        }
        n
    }

    fn dealloc_many(&self, layout: Layout, next: &mut dyn FnMut() -> Option<NonNull<u8>>) {
        let _irq = IrqGuard::new();
        cache::note_heap_trip();
        let mut heap = self.0.lock();
        while let Some(p) = next() {
            // SAFETY: `Backing`'s callers pass blocks this heap returned for
            // `layout` (the caches allocate every block of a class with
            // its class layout and free it with the same).
            unsafe { heap.deallocate(p, layout) };
        }
    }
}

impl KernelHeap {
    /// One block straight from the heap; on failure the caches' depots are
    /// given back and the heap is asked once more.
    fn alloc_large(&self, layout: Layout) -> *mut u8 {
        let mut got = ptr::null_mut();
        if self.alloc_many(layout, 1, &mut |p| got = p.as_ptr()) == 0 && cache::reclaim(self) > 0 {
            self.alloc_many(layout, 1, &mut |p| got = p.as_ptr());
        }
        got
    }
}

// SAFETY: blocks come from the linked-list heap, directly or through the
// caches, which hand out each free block once and only take back blocks
// of the class they gave (the class is a function of the layout, which
// `dealloc` receives unchanged); every access to the heap is serialised
// by its mutex, every cache list is one CPU's with interrupts off.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match cache::class_of(layout) {
            Some(k) => cache::alloc(k, self).map_or(ptr::null_mut(), NonNull::as_ptr),
            None => self.alloc_large(layout),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned for
        // `layout`, so it is non-null.
        let block = unsafe { NonNull::new_unchecked(ptr) };
        match cache::class_of(layout) {
            // SAFETY: it came from `cache::alloc` with this class (the
            // same layout maps to the same class) and the caller gives it
            // up.
            Some(k) => unsafe { cache::dealloc(block, k, self) },
            None => {
                let mut one = Some(block);
                self.dealloc_many(layout, &mut || one.take());
            }
        }
    }
}

crate::ktest! {
    fn heap_boxes_and_vectors() {
        use alloc::{boxed::Box, vec::Vec};
        // Other CPUs allocate and free meanwhile: a little (idle threads,
        // timers), sometimes a lot (an earlier test's device, released
        // after a grace period). So the margins are far below the
        // vector's 800 KB, and a measurement that another CPU's big free
        // spoiled is taken again (at most five times).
        let mut last = (0, 0, 0);
        for _ in 0..5 {
            let (used_before, _) = usage();
            let boxed = Box::new(0x1234_5678_u64);
            assert_eq!(*boxed, 0x1234_5678);
            let v: Vec<u64> = (0..100_000).collect();
            assert_eq!(v.iter().sum::<u64>(), 99_999 * 100_000 / 2);
            let used_with_vec = usage().0;
            drop(v);
            drop(boxed);
            let used_after = usage().0;
            last = (used_before, used_with_vec, used_after);
            if used_with_vec >= used_before + 800_000
                && used_after + 790_000 <= used_with_vec
                && used_after <= used_before + 10_000
            {
                return;
            }
            crate::sched::sleep(core::time::Duration::from_millis(50));
        }
        let (before, with, after) = last;
        panic!("the vector's memory is not counted and given back: {before} before, {with} with it, {after} after");
    }
}

crate::ktest! {
    fn heap_exhaustion_is_an_error_not_corruption() {
        use alloc::vec::Vec;
        let (_, free) = usage();
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve_exact(free + 4096).is_err(), "more than the heap holds must fail");
        v.try_reserve_exact(4096).expect("a small allocation still works after a failed one");
    }
}
