//! x86_64: serial console, descriptor tables, exceptions, CPU identity,
//! firmware tables, and the way out of QEMU.

pub mod acpi;
pub mod cpu;
pub mod fwcfg;
pub mod gdt;
pub mod idt;
pub mod qemu;
pub mod serial;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// Sets up the boot CPU: GDT and TSS (with IST stacks), then the IDT.
pub fn init_bsp() {
    gdt::init_this_cpu();
    idt::load();
}

/// Set by the first CPU that fails; later failures stay silent.
static FAILING: AtomicBool = AtomicBool::new(false);

/// The one way a run ends badly: print what went wrong, with the CPU,
/// mark the running kernel test (if any) as failed, and exit QEMU with
/// [`crate::abi::ExitCode::Failure`].
///
/// It does not allocate and does not wait for locks held elsewhere, so it
/// is safe from a panic, a CPU exception, or an allocation failure.
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    ::x86_64::instructions::interrupts::disable();
    // Relaxed is enough: only the value matters, and the winner is the only
    // CPU that goes on to print; the others halt for good.
    if FAILING.swap(true, Ordering::Relaxed) {
        halt_forever();
    }
    serial::emergency_println(format_args!("FATAL on cpu {}: {}", cpu::cpu_id(), args));
    crate::ktest::report_fatal(args);
    qemu::exit(crate::abi::ExitCode::Failure)
}

/// Halts this CPU with interrupts off, for good.
pub fn halt_forever() -> ! {
    loop {
        ::x86_64::instructions::interrupts::disable();
        ::x86_64::instructions::hlt();
    }
}
