//! A freestanding x86_64 kernel that runs `percpu_ref` and SRCU on real
//! per-CPU data.
//!
//! Boot order: serial console, GDT/TSS/IDT, heap, command line (QEMU fw_cfg),
//! ACPI MADT, banner, CPUs (per-CPU areas, the heap's per-CPU caches,
//! scheduler, interrupt hooks, then the other CPUs and interrupts on), then the run mode the command line
//! names. Everything that touches hardware lives under [`arch`]; the rest
//! is portable code.
#![no_std]
#![no_main]
#![feature(abi_x86_interrupt)]
#![feature(fn_align)]
#![feature(asm_goto_with_outputs)]

extern crate alloc;

#[path = "../../boot/src/abi.rs"]
pub mod abi;
pub mod arch;
pub mod bench;
pub mod block;
pub mod cmdline;
pub mod drivers;
pub mod io;
pub mod irq;
pub mod ktest;
pub mod live;
pub mod mem;
pub mod sched;
pub mod sync;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{entry_point, BootInfo};

/// Boot-time settings for the bootloader: map all physical memory (the
/// heap, ACPI tables and fw_cfg buffers are reached through it) and give the
/// boot CPU a roomy stack.
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.kernel_stack_size = 256 * 1024;
    // A fixed base, so that GDB can load the symbols at a known offset
    // (`symbol-file -o 0xffffffff80000000`, see docs/testing.md).
    config.mappings.kernel_base = Mapping::FixedAddress(KERNEL_BASE);
    config
};

/// Where the bootloader places the (position-independent) kernel image.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    arch::serial::init();
    arch::init_bsp();
    let phys_offset = boot_info
        .physical_memory_offset
        .into_option()
        .expect("the bootloader did not map physical memory");
    let memory = mem::init(phys_offset, &boot_info.memory_regions);
    arch::paging::init(
        phys_offset,
        &boot_info.memory_regions,
        memory.heap_phys.clone(),
    );

    let cmdline = match cmdline::CommandLine::from_firmware() {
        Ok(cmdline) => cmdline,
        Err(err) => arch::fatal(format_args!("bad kernel command line: {err}")),
    };
    let madt = boot_info
        .rsdp_addr
        .into_option()
        .and_then(|rsdp| arch::acpi::read_madt(rsdp, phys_offset));

    println!("refcnt kernel {}", env!("CARGO_PKG_VERSION"));
    println!("cpu: {}", arch::cpu::brand_string().as_str());
    println!(
        "memory: {} MiB usable, heap {} KiB",
        memory.usable_bytes >> 20,
        memory.heap_bytes >> 10
    );
    // Layer by layer, upwards: arch finds the CPUs and gives each a
    // per-CPU area, the scheduler sets up its run queues, the interrupt
    // hooks are registered, and only then do the other CPUs start (each
    // in the scheduler's idle loop) and interrupts come on.
    let cpus = arch::init_cpus(madt.as_ref(), phys_offset);
    mem::heap::enable_cpu_caches();
    sched::init();
    irq::init();
    arch::start_cpus(cpus, sched::run_idle);
    sched::workqueue::start();
    sync::rcu::start();
    println!("cmdline: {}", cmdline.raw());

    match cmdline.mode() {
        cmdline::Mode::Test => ktest::run(cmdline.tests()),
        cmdline::Mode::List => ktest::list(),
        cmdline::Mode::Bench => {
            let (length, runs) = cmdline.bench();
            bench::run(bench::Config { length, runs });
            arch::qemu::exit(abi::ExitCode::Success)
        }
        cmdline::Mode::Live => {
            let ok = live::run(cmdline.duration());
            arch::qemu::exit(if ok {
                abi::ExitCode::Success
            } else {
                abi::ExitCode::Failure
            })
        }
        cmdline::Mode::Io => {
            let ok = io::run(cmdline.io().clone());
            arch::qemu::exit(if ok {
                abi::ExitCode::Success
            } else {
                abi::ExitCode::Failure
            })
        }
        cmdline::Mode::Boot => {
            println!("boot: ok");
            arch::qemu::exit(abi::ExitCode::Success)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    arch::fatal(format_args!("{info}"))
}
