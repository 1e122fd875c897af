//! The local APIC: x2APIC (MSRs) when the CPU has it, xAPIC (MMIO) if not.
//!
//! Used for inter-processor interrupts (INIT/SIPI to start CPUs, fixed
//! vectors for calls and kicks, NMI to stop everything on a failure), the
//! per-CPU timer tick, and end-of-interrupt.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ::x86_64::registers::model_specific::Msr;

/// Which register interface the local APICs use (the same on every CPU).
static X2APIC: AtomicBool = AtomicBool::new(false);
/// Linear address of the xAPIC registers (0 in x2APIC mode).
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// Set once the boot CPU's APIC works; the fatal path checks it before
/// sending NMIs.
static READY: AtomicBool = AtomicBool::new(false);
/// Timer counts per microsecond, scaled by 2^16, measured on the boot CPU.
static TIMER_PER_US_X65536: AtomicU64 = AtomicU64::new(0);

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

/// Register offsets in xAPIC MMIO terms; x2APIC MSR = 0x800 + offset / 16.
mod reg {
    pub const ID: u32 = 0x20;
    pub const EOI: u32 = 0xb0;
    pub const SVR: u32 = 0xf0;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

/// Vector of the APIC's spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Vector of the per-CPU timer tick.
pub const TIMER_VECTOR: u8 = 0xef;
/// Timer ticks per second on every CPU.
pub const HZ: u64 = 250;

fn read(r: u32) -> u64 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on, so the MSR exists; reading APIC
        // registers has no side effects (the ones we read).
        unsafe { Msr::new(0x800 + r / 16).read() }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: `base` maps the xAPIC page; registers are 32-bit aligned.
        u64::from(unsafe { core::ptr::read_volatile((base + u64::from(r)) as *const u32) })
    }
}

fn write(r: u32, v: u64) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on; the callers write values valid for r.
        unsafe { Msr::new(0x800 + r / 16).write(v) }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((base + u64::from(r)) as *mut u32, v as u32) }
    }
}

/// Whether the CPU supports x2APIC (`CPUID.1:ECX[21]`).
pub fn has_x2apic() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0
}

/// Chooses the interface (on the boot CPU, once): x2APIC if available,
/// else the xAPIC page at `mmio` (a linear address mapping it).
pub fn select_mode(mmio: impl FnOnce() -> u64) -> &'static str {
    if has_x2apic() {
        X2APIC.store(true, Ordering::Relaxed);
        "x2apic"
    } else {
        XAPIC_BASE.store(mmio(), Ordering::Relaxed);
        "xapic"
    }
}

/// Enables this CPU's local APIC in the selected mode, with the spurious
/// vector set. Every CPU calls it once.
pub fn enable_this_cpu() {
    let mut base = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting EN (and
    // EXTD when the CPU has x2APIC) only switches the APIC's interface.
    unsafe {
        let mut v = base.read() | APIC_BASE_ENABLE;
        if X2APIC.load(Ordering::Relaxed) {
            v |= APIC_BASE_X2APIC;
        }
        base.write(v);
    }
    write(reg::SVR, (1 << 8) | u64::from(SPURIOUS_VECTOR)); // software enable
    READY.store(true, Ordering::Release);
}

/// This CPU's APIC ID, read from the APIC.
pub fn id() -> u32 {
    let v = read(reg::ID);
    if X2APIC.load(Ordering::Relaxed) {
        v as u32
    } else {
        (v >> 24) as u32
    }
}

/// Signals end of interrupt for the in-service vector.
#[inline]
pub fn eoi() {
    write(reg::EOI, 0);
}

/// Whom an IPI goes to.
#[derive(Clone, Copy, Debug)]
pub enum Dest {
    /// One CPU, by APIC ID.
    Apic(u32),
    /// Every CPU but the sender.
    AllButSelf,
    /// The sender only.
    SelfOnly,
    /// Every CPU, the sender included.
    All,
}

/// How an IPI is delivered.
#[derive(Clone, Copy, Debug)]
pub enum Delivery {
    /// An interrupt at a vector.
    Fixed(u8),
    /// A non-maskable interrupt.
    Nmi,
    /// INIT (assert, level-triggered).
    Init,
    /// Start-up at `vector * 4096`.
    Startup(u8),
}

/// Sends an IPI. In xAPIC mode it first waits until the APIC has sent the
/// previous one (the ICR's delivery status), as Linux does, rather than
/// after the write: under TCG each access to the APIC's registers takes
/// QEMU's big lock, and a read after a broadcast competes for it with
/// every CPU the IPI has just woken. A destination shorthand (self, all,
/// all but self) needs no ICR high write. So a broadcast costs two
/// accesses instead of three.
pub fn send_ipi(dest: Dest, delivery: Delivery) {
    let (mode, vector) = match delivery {
        Delivery::Fixed(v) => (0b000, v),
        Delivery::Nmi => (0b100, 0),
        Delivery::Init => (0b101, 0),
        Delivery::Startup(v) => (0b110, v),
    };
    let (shorthand, apic) = match dest {
        Dest::Apic(id) => (0b00u64, id),
        Dest::SelfOnly => (0b01, 0),
        Dest::All => (0b10, 0),
        Dest::AllButSelf => (0b11, 0),
    };
    let level_assert = 1u64 << 14;
    let low = u64::from(vector) | (mode << 8) | level_assert | (shorthand << 18);
    // The wait and the ICR writes must not be split by an interrupt
    // handler that sends an IPI of its own.
    let _irq = super::percpu::IrqGuard::new();
    if X2APIC.load(Ordering::Relaxed) {
        // The IPI must not reach its target before the stores that come
        // before it in program order (the request `smp::publish` hands
        // over, the grace-period number): the target's handler loads them.
        // In x2APIC mode the ICR is an MSR, and the SDM (Vol. 3A, "MSR
        // Access in x2APIC Mode") relaxes WRMSR's serialising semantics for
        // the APIC registers: such a WRMSR may complete before earlier
        // stores are globally visible. MFENCE alone does not order it, as
        // MFENCE orders loads and stores and WRMSR is neither; MFENCE makes
        // the earlier stores globally visible, and LFENCE keeps any later
        // instruction (the WRMSR) from starting before the MFENCE has
        // completed. (The xAPIC path below writes the ICR to uncacheable
        // MMIO, a store, which x86 keeps in order after earlier stores.)
        // SAFETY: two fences: no operands, no stack, no flags written. Not
        // `nomem`: it is also a compiler barrier, so the compiler keeps the
        // earlier stores before it too.
        unsafe { core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags)) };
        write(reg::ICR_LOW, (u64::from(apic) << 32) | low);
    } else {
        // Delivery status (bit 12) clears when the previous IPI has been
        // sent.
        while read(reg::ICR_LOW) & (1 << 12) != 0 {
            core::hint::spin_loop();
        }
        if shorthand == 0 {
            write(reg::ICR_HIGH, u64::from(apic) << 24);
        }
        write(reg::ICR_LOW, low);
    }
}

/// Whether the boot CPU's APIC is enabled (IPIs can be sent).
pub fn ready() -> bool {
    // Acquire: pairs with the Release store in `enable_this_cpu`.
    READY.load(Ordering::Acquire)
}

/// Stops every other CPU with an NMI (the fatal path), if the APIC is up.
pub fn nmi_others() {
    if ready() {
        send_ipi(Dest::AllButSelf, Delivery::Nmi);
    }
}

/// Measures the APIC timer against the TSC on the boot CPU; returns its
/// counts per millisecond, for the banner.
pub fn calibrate_timer() -> u64 {
    write(reg::TIMER_DIVIDE, 0b0011); // divide by 16
    write(reg::LVT_TIMER, 1 << 16); // masked, one-shot
    write(reg::TIMER_INITIAL, u64::from(u32::MAX));
    super::time::delay_us(10_000);
    let elapsed = u64::from(u32::MAX) - read(reg::TIMER_CURRENT);
    write(reg::TIMER_INITIAL, 0);
    // Relaxed: written once before any other CPU starts (see
    // `time::calibrate`).
    TIMER_PER_US_X65536.store(((elapsed << 16) / 10_000).max(1), Ordering::Relaxed);
    elapsed / 10
}

/// Sets this CPU's timer up in one-shot mode at [`TIMER_VECTOR`], unarmed;
/// [`arm_timer_in`] arms it (the tick and high-resolution deadlines are
/// kept by `idt`, which re-arms it in every timer interrupt).
pub fn start_timer() {
    write(reg::TIMER_DIVIDE, 0b0011);
    write(reg::LVT_TIMER, u64::from(TIMER_VECTOR)); // one-shot, unmasked
}

/// Arms this CPU's one-shot timer to fire in `ns` nanoseconds (at least
/// one count; at most the counter's range, about a minute, and the
/// interrupt then re-arms it). Interrupts must be off: a timer interrupt
/// between the computation and the write would be overwritten.
pub fn arm_timer_in(ns: u64) {
    let per_us = TIMER_PER_US_X65536.load(Ordering::Relaxed);
    let counts =
        (u128::from(ns) * u128::from(per_us) / (1000 << 16)).clamp(1, u128::from(u32::MAX));
    write(reg::TIMER_INITIAL, counts as u64);
}
