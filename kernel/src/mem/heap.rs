//! The kernel heap: a linked-list allocator behind `#[global_allocator]`.
//!
//! The lock is held with local interrupts off, so an allocation in an
//! interrupt handler can never deadlock against the code it interrupted.
//! A failed allocation returns null and Rust's allocation-error path panics
//! with the size that could not be had (`memory allocation of N bytes
//! failed`); fallible APIs (`try_reserve`) see the error instead.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use ::x86_64::instructions::interrupts;
use linked_list_allocator::Heap;
use spin::Mutex;

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
    interrupts::without_interrupts(|| {
        // SAFETY: guaranteed by the caller.
        unsafe { HEAP.0.lock().init(start as *mut u8, size) }
    });
}

/// Bytes in use and bytes free.
pub fn usage() -> (usize, usize) {
    interrupts::without_interrupts(|| {
        let heap = HEAP.0.lock();
        (heap.used(), heap.free())
    })
}

// SAFETY: `Heap` hands out disjoint blocks fitting the layout, and every
// access to it is serialised by the mutex.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        interrupts::without_interrupts(|| {
            self.0
                .lock()
                .allocate_first_fit(layout)
                .map_or(ptr::null_mut(), NonNull::as_ptr)
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        interrupts::without_interrupts(|| {
            // SAFETY: the caller passes a block this allocator returned for
            // `layout`, so it is non-null and may be given back.
            unsafe {
                self.0
                    .lock()
                    .deallocate(NonNull::new_unchecked(ptr), layout)
            }
        });
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
