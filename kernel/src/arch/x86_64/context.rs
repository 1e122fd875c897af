//! Kernel-thread stacks and the context switch.
//!
//! Stacks come from a 512 GiB virtual range of their own (a level-4 entry
//! nothing else uses). Each stack owns a 64 KiB slot: the top
//! [`STACK_SIZE`] bytes are mapped page by page, the 32 KiB below them
//! stay unmapped, so running off the bottom of a stack faults on a page
//! nobody owns (and the fault handler, which then has no stack, ends in a
//! double fault on its IST stack, which names the guard page). Freed slots
//! keep their pages and are reused.
//!
//! A [`Context`] is the saved state of a thread that is not running: its
//! stack pointer, with the callee-saved registers (rbx, rbp, r12-r15)
//! pushed on that stack. The target is soft-float, so there is no FPU or
//! SSE state to save. [`switch`] is a safe function: a context records
//! which CPU runs it (or that it is saved, or dead) in one atomic word, and
//! `switch` moves that word from "saved" to "running here" with a
//! compare-exchange before loading the saved stack pointer, so no context
//! can run on two CPUs, be resumed after it died, or lose its stack while
//! it runs. Contexts are never freed (they are small and recycled through a
//! pool), so a `&'static Context` stays valid for the whole run.

use alloc::vec::Vec;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;

use super::lock::IrqSpinLock;
use super::paging;
use super::percpu::cpu_id;

/// Bytes of each thread stack (mapped).
pub const STACK_SIZE: u64 = 32 * 1024;
/// Bytes of virtual space per stack: the stack and the unmapped hole below.
const SLOT_SIZE: u64 = 64 * 1024;
/// Slots in the 512 GiB stack range.
const SLOTS: u64 = (1 << 39) / SLOT_SIZE;

struct Pool {
    base: u64,
    next: u64,
    free: Vec<u64>,
}

static STACKS: Once<IrqSpinLock<Pool>> = Once::new();

fn stacks() -> &'static IrqSpinLock<Pool> {
    STACKS.call_once(|| {
        IrqSpinLock::new(Pool {
            base: paging::reserve_unused_region(),
            next: 0,
            free: Vec::new(),
        })
    })
}

/// A mapped kernel stack with an unmapped guard hole below it. Dropping it
/// gives the slot back for reuse.
#[derive(Debug)]
pub struct KernelStack {
    slot: u64,
    top: u64,
}

impl KernelStack {
    /// Takes a free slot, or maps a new one.
    pub fn new() -> Self {
        let mut pool = stacks().lock();
        if let Some(slot) = pool.free.pop() {
            let top = pool.base + (slot + 1) * SLOT_SIZE;
            return KernelStack { slot, top };
        }
        let slot = pool.next;
        assert!(slot < SLOTS, "out of kernel stack slots");
        pool.next += 1;
        let top = pool.base + (slot + 1) * SLOT_SIZE;
        for page in (top - STACK_SIZE..top).step_by(4096) {
            // SAFETY: the page lies in the stack range, which this pool
            // reserved for itself, in a slot no one has used before.
            unsafe { paging::map_fresh(page) };
        }
        KernelStack { slot, top }
    }

    /// The address just above the stack (16-byte aligned).
    pub fn top(&self) -> u64 {
        self.top
    }
}

impl Default for KernelStack {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        stacks().lock().free.push(self.slot);
    }
}

/// Whether `addr` lies in the unmapped hole below some thread stack: a
/// fault there is a kernel stack overflow.
pub fn is_stack_guard(addr: u64) -> bool {
    // `try_lock`: called from the fault path, which must not wait.
    let Some(base) = STACKS.get().and_then(|p| p.try_lock().map(|p| p.base)) else {
        return false;
    };
    addr >= base && addr < base + (1 << 39) && (addr - base) % SLOT_SIZE < SLOT_SIZE - STACK_SIZE
}

global_asm!(
    r#"
    .text
    .global context_switch_raw
    // rdi: where to save the old stack pointer; rsi: the new stack
    // pointer; rdx: the old context's `state` word, cleared once the old
    // stack is no longer used.
context_switch_raw:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    mov qword ptr [rdx], 0
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
"#
);

unsafe extern "C" {
    fn context_switch_raw(save_rsp: *mut u64, load_rsp: u64, prev_state: *mut u64);
}

/// `state` of a context that is saved and may be resumed.
const SAVED: u64 = 0;
/// `state` of a context that is dead (its stack given back).
const DEAD: u64 = u64::MAX;

/// The saved state of a kernel thread (see the module documentation).
///
/// # Invariants
/// `state` is [`SAVED`] (then `rsp` points at a frame `switch` can pop, on
/// a stack the context owns or the boot stack of a CPU), `cpu + 1` while it
/// runs on that CPU, or [`DEAD`] (never resumed again).
#[derive(Debug)]
pub struct Context {
    rsp: AtomicU64,
    state: AtomicU64,
    stack: IrqSpinLock<Option<KernelStack>>,
}

static RETIRED: IrqSpinLock<Vec<&'static Context>> = IrqSpinLock::new(Vec::new());

impl Context {
    fn alloc() -> &'static Context {
        let reused = RETIRED.lock().pop();
        reused.unwrap_or_else(|| {
            alloc::boxed::Box::leak(alloc::boxed::Box::new(Context {
                rsp: AtomicU64::new(0),
                state: AtomicU64::new(DEAD),
                stack: IrqSpinLock::new(None),
            }))
        })
    }

    /// The context of the code running now on this CPU (its boot stack),
    /// so that it can be switched away from and back to.
    pub fn for_this_cpu() -> &'static Context {
        let ctx = Self::alloc();
        // Relaxed: the context is not shared yet.
        ctx.state.store(cpu_id() as u64 + 1, Ordering::Relaxed);
        ctx
    }

    /// A context that, when first switched to, runs `entry` on a fresh
    /// stack, with interrupts off (as `switch` leaves them).
    pub fn new(entry: extern "C" fn() -> !) -> &'static Context {
        let stack = KernelStack::new();
        let top = stack.top();
        // The frame `switch` pops: r15, r14, r13, r12, rbx, rbp, then the
        // return address (`entry`), then a zero "return address" of
        // `entry` itself, so that it starts with rsp = 8 (mod 16) as after
        // a call.
        let frame = [0, 0, 0, 0, 0, 0, entry as usize as u64, 0];
        let sp = top - 8 * frame.len() as u64;
        for (i, word) in frame.iter().enumerate() {
            let at = (sp + 8 * i as u64) as *mut u64;
            // SAFETY: the top 64 bytes of a stack just taken from the pool
            // (mapped, writable, owned by no one else yet).
            unsafe { at.write(*word) };
        }
        let ctx = Self::alloc();
        *ctx.stack.lock() = Some(stack);
        ctx.rsp.store(sp, Ordering::Relaxed);
        // Release: the frame and `rsp` are visible to whoever resumes it
        // (its compare-exchange in `switch` is Acquire).
        ctx.state.store(SAVED, Ordering::Release);
        ctx
    }

    /// Marks a context that has stopped for good as dead and gives its
    /// stack back. Returns false (and does nothing) while it runs.
    pub fn retire(&'static self) -> bool {
        // Acquire: its last run (on whichever CPU) happened before.
        if self
            .state
            .compare_exchange(SAVED, DEAD, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let stack = self.stack.lock().take();
        drop(stack);
        RETIRED.lock().push(self);
        true
    }
}

/// Saves the running context `prev` and resumes `next` on this CPU; returns
/// when some CPU switches back to `prev`.
///
/// # Panics
/// With interrupts on, if `prev` is not the context running on this CPU,
/// or if `next` is running somewhere or dead.
pub fn switch(prev: &'static Context, next: &'static Context) {
    assert!(
        !::x86_64::instructions::interrupts::are_enabled(),
        "context switch with interrupts on"
    );
    let me = cpu_id() as u64 + 1;
    assert_eq!(
        prev.state.load(Ordering::Relaxed),
        me,
        "context switch from a context that is not running on cpu {}",
        me - 1
    );
    // Acquire: pairs with the release (plain x86 store) of `state` in the
    // switch that saved `next`, after its `rsp` was written.
    if let Err(state) = next
        .state
        .compare_exchange(SAVED, me, Ordering::Acquire, Ordering::Relaxed)
    {
        panic!(
            "context switch on cpu {} to a context that is {}",
            me - 1,
            if state == DEAD {
                "dead".into()
            } else {
                alloc::format!("running on cpu {}", state - 1)
            }
        );
    }
    // SAFETY: (1) interrupts are off, so nothing on this CPU runs between
    // the save and the load; (2) `prev` is the running context (checked),
    // and both are `'static`, so the pointers stay valid; (3) `next` was
    // SAVED and now belongs to this CPU (the compare-exchange), so its
    // `rsp` points at a frame pushed by this function or built by
    // `Context::new` on a stack it owns, which no one else uses; (4) the
    // asm clears `prev.state` only after it stopped using `prev`'s stack,
    // and the plain store is a release on x86 (the `rsp` store before it
    // is visible first).
    unsafe {
        context_switch_raw(
            prev.rsp.as_ptr(),
            next.rsp.load(Ordering::Relaxed),
            prev.state.as_ptr(),
        );
    }
}
