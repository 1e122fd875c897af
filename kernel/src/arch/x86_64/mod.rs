//! x86_64: serial console, descriptor tables, exceptions, CPU identity,
//! firmware tables, per-CPU areas, the local APIC, IPIs and the timer,
//! starting the other CPUs, page tables, thread stacks and the context
//! switch, and the way out of QEMU.
//!
//! # The rule: arch calls nothing above it
//!
//! Every import points down: run modes -> block -> sync -> sched -> mem ->
//! arch. Code here names only itself, the `abi` it shares with the host
//! runner, and its own macros (`print!`, `println!`, `percpu!`); a reader
//! needs nothing above arch to understand it. Where an event here has work
//! for a layer above (the timer tick and the grace-period IPI in [`idt`],
//! the cold exit of a read-side section in [`percpu`], an application
//! processor's entry in [`smp`], the fatal path below), arch calls a
//! [`hook::Hook`] that the upper layer registers at init, before the
//! event can happen; the kernel's `irq` module wires the interrupt hooks.
//! The lock arch takes is its own ([`lock::IrqSpinLock`]). Kernel tests
//! here register with the harness's `ktest!` macro (a record in a linker
//! section that the harness collects) and, like the code, use arch only.
//!
//! The rule is checked when the kernel is built: the sources of every
//! module below are scanned (at compile time, `names_nothing_above`) for a
//! path from the crate root that leads outside arch, and the build fails
//! naming the file. A new module must be added to the list at the end of
//! this file (the build fails until it is).

pub mod acpi;
pub mod apic;
pub mod context;
pub mod cpu;
pub mod fwcfg;
pub mod gdt;
pub mod hook;
pub mod idt;
pub mod lock;
pub mod paging;
pub mod percpu;
pub mod qemu;
pub mod serial;
pub mod smp;
pub mod time;

pub use percpu::cpu_id;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// Sets up the boot CPU: GS at the boot header (so `cpu_id()` works from
/// here on), GDT and TSS (with IST stacks), the IDT, and the legacy PICs
/// moved off the exception vectors and masked (the APIC replaces them).
pub fn init_bsp() {
    percpu::init_early();
    gdt::init_this_cpu();
    idt::load();
    mask_legacy_pics();
}

/// Remaps the 8259 PICs to vectors 0x20..0x30 and masks every line, so a
/// stray (spurious) PIC interrupt lands on a counted vector instead of on
/// an exception vector.
fn mask_legacy_pics() {
    use ::x86_64::instructions::port::Port;
    let writes: [(u16, u8); 10] = [
        (0x20, 0x11), // ICW1: init, ICW4 follows
        (0xa0, 0x11),
        (0x21, 0x20), // ICW2: vector base 0x20
        (0xa1, 0x28), // ... and 0x28
        (0x21, 0x04), // ICW3: slave on line 2
        (0xa1, 0x02),
        (0x21, 0x01), // ICW4: 8086 mode
        (0xa1, 0x01),
        (0x21, 0xff), // mask all lines
        (0xa1, 0xff),
    ];
    for (port, value) in writes {
        // SAFETY: the PICs' command and data ports; programming them only
        // changes which vectors they would raise, and masks them.
        unsafe { Port::<u8>::new(port).write(value) };
    }
}

/// Whether a CPU has entered the fatal path (other CPUs then halt on the
/// NMI it sends).
pub fn is_failing() -> bool {
    // Relaxed: the NMI that makes other CPUs ask is sent after the store,
    // and the IPI itself orders the two.
    FAILING.load(Ordering::Relaxed)
}

/// The CPUs found by [`init_cpus`], for [`start_cpus`].
#[derive(Debug)]
pub struct CpuSet {
    /// APIC IDs by CPU index; the boot CPU is index 0.
    apic_ids: alloc::vec::Vec<u32>,
    tsc_khz: u64,
    /// The local APIC's mode, for the banner.
    mode: &'static str,
}

impl CpuSet {
    /// Number of CPUs found (online or not).
    pub fn len(&self) -> usize {
        self.apic_ids.len()
    }

    /// Whether no CPU was found (never: the boot CPU is one).
    pub fn is_empty(&self) -> bool {
        self.apic_ids.is_empty()
    }
}

/// First half of bringing the CPUs up, on the boot CPU with interrupts
/// off: calibrates the TSC clock, enables the boot CPU's local APIC, and
/// gives every CPU the MADT lists a per-CPU area (so per-CPU data of every
/// CPU exists from here on). Nothing runs on the other CPUs yet. The layers
/// above set up their per-CPU state and register their hooks next, then
/// call [`start_cpus`].
pub fn init_cpus(madt: Option<&acpi::Madt>, phys_offset: u64) -> CpuSet {
    let tsc_khz = time::calibrate();
    let mode = apic::select_mode(|| {
        let phys = madt.map_or(0xfee0_0000, |m| m.local_apic_addr);
        let virt = phys_offset + phys;
        // SAFETY: the page holds the local APIC's registers, mapped
        // uncached at its place in the physical-memory window, which the
        // bootloader left unmapped or mapped to the same frame.
        unsafe {
            paging::map(
                virt,
                phys,
                ::x86_64::structures::paging::PageTableFlags::PRESENT
                    | ::x86_64::structures::paging::PageTableFlags::WRITABLE
                    | ::x86_64::structures::paging::PageTableFlags::NO_CACHE,
            );
        }
        virt
    });
    apic::enable_this_cpu();
    let bsp = apic::id();
    // The boot CPU is index 0; the others follow in MADT order.
    let mut apic_ids = alloc::vec![bsp];
    if let Some(madt) = madt {
        apic_ids.extend(madt.apic_ids().filter(|&id| id != bsp));
    }
    apic_ids.truncate(percpu::MAX_CPUS);
    percpu::init(&apic_ids);
    CpuSet {
        apic_ids,
        tsc_khz,
        mode,
    }
}

/// Second half: starts every CPU's timer tick and the application
/// processors, each of which ends in `ap_entry` (see [`smp::start_aps`]),
/// then enables interrupts on the boot CPU. The timer and IPI hooks
/// ([`idt::set_timer_hooks`], [`idt::set_gp_hook`]) must be registered
/// before. Prints the `clock:` and `cpus:` banner lines. Returns the number
/// of CPUs online.
pub fn start_cpus(cpus: CpuSet, ap_entry: fn() -> !) -> usize {
    let CpuSet {
        apic_ids,
        tsc_khz,
        mode,
    } = cpus;
    let lapic_per_ms = apic::calibrate_timer();
    idt::start_tick();
    crate::println!(
        "clock: tsc {}.{:03} MHz (calibrated against the PIT), local apic timer {} counts/ms, {} Hz tick",
        tsc_khz / 1000,
        tsc_khz % 1000,
        lapic_per_ms,
        apic::HZ
    );
    let bringup = smp::start_aps(&apic_ids, ap_entry);
    ::x86_64::instructions::interrupts::enable();
    crate::println!(
        "cpus: {}/{} online ({mode}, apic ids {:?})",
        smp::online_cpus(),
        apic_ids.len(),
        apic_ids
    );
    for apic_id in &bringup.failed {
        crate::println!(
            "cpus: cpu with apic id {apic_id} did not start within {} ms; going on without it",
            smp::AP_START_TIMEOUT_MS
        );
    }
    smp::online_cpus()
}

/// Set by the first CPU that fails; later failures stay silent.
static FAILING: AtomicBool = AtomicBool::new(false);

/// What the fatal path runs for a layer above arch (the kernel test
/// harness, which knows which test is running). Both run on the one CPU
/// that failed first, after the others were stopped, with interrupts off:
/// they must not allocate or wait for a lock held elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct FatalHooks {
    /// Whether this failure is the expected end of the run (a test that
    /// should panic with this message): then the hook prints what it
    /// wants and the run ends with success, without the `FATAL` line.
    pub expected: fn(fmt::Arguments<'_>) -> bool,
    /// Called after the `FATAL` line, before the run ends with failure.
    pub report: fn(fmt::Arguments<'_>),
}

static FATAL_HOOKS: hook::Hook<FatalHooks> = hook::Hook::new("fatal");

/// Registers the fatal path's [`FatalHooks`]. Once.
pub fn set_fatal_hooks(hooks: FatalHooks) {
    FATAL_HOOKS.set(hooks);
}

/// The one way a run ends badly: print what went wrong, with the CPU,
/// tell the [`FatalHooks`] (if set), and exit QEMU with
/// [`crate::abi::ExitCode::Failure`]. (Unless the hook says this very
/// failure was expected: then the run ends with success.)
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
    apic::nmi_others();
    let hooks = FATAL_HOOKS.get();
    if hooks.is_some_and(|h| (h.expected)(args)) {
        qemu::exit(crate::abi::ExitCode::Success)
    }
    serial::emergency_println(format_args!("FATAL on cpu {}: {}", cpu_id(), args));
    if let Some(hooks) = hooks {
        (hooks.report)(args);
    }
    qemu::exit(crate::abi::ExitCode::Failure)
}

/// Halts this CPU with interrupts off, for good.
pub fn halt_forever() -> ! {
    loop {
        ::x86_64::instructions::interrupts::disable();
        ::x86_64::instructions::hlt();
    }
}

/// Whether `source` names nothing above arch: every path from the crate
/// root (the text `crate` followed by two colons, `$crate` too) goes on
/// with `arch` or `abi`, or is one of the macros `percpu!`, `print!`,
/// `println!`, `ktest!`; and nothing climbs out with a doubled `super`.
/// Comments and doc links count: a reader of arch needs nothing above it.
const fn names_nothing_above(source: &str) -> bool {
    // Spelled with escapes so that this file does not match itself.
    const ROOT: &[u8] = b"crate\x3a\x3a";
    const CLIMB: &[u8] = b"super\x3a\x3asuper";
    const WORDS: [&[u8]; 2] = [b"arch", b"abi"];
    const MACROS: [&[u8]; 4] = [b"percpu!", b"print!", b"println!", b"ktest!"];
    let s = source.as_bytes();
    let mut i = 0;
    while i < s.len() {
        // The first byte decides most positions (const evaluation is slow).
        if s[i] == b's' && starts_with(s, i, CLIMB) {
            return false;
        }
        if s[i] == b'c' && starts_with(s, i, ROOT) {
            let at = i + ROOT.len();
            let mut ok = false;
            let mut w = 0;
            while w < WORDS.len() {
                let end = at + WORDS[w].len();
                if starts_with(s, at, WORDS[w]) && (end == s.len() || !is_ident(s[end])) {
                    ok = true;
                }
                w += 1;
            }
            let mut m = 0;
            while m < MACROS.len() {
                if starts_with(s, at, MACROS[m]) {
                    ok = true;
                }
                m += 1;
            }
            if !ok {
                return false;
            }
        }
        i += 1;
    }
    true
}

const fn starts_with(s: &[u8], at: usize, word: &[u8]) -> bool {
    if at + word.len() > s.len() {
        return false;
    }
    let mut k = 0;
    while k < word.len() {
        if s[at + k] != word[k] {
            return false;
        }
        k += 1;
    }
    true
}

const fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Lines of `source` that declare a module (`mod NAME;` or `pub mod NAME;`
/// at the start of a line).
const fn module_declarations(source: &str) -> usize {
    let s = source.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i < s.len() {
        let line_start = i == 0 || s[i - 1] == b'\n';
        if line_start && (starts_with(s, i, b"mod ") || starts_with(s, i, b"pub mod ")) {
            count += 1;
        }
        i += 1;
    }
    count
}

/// Checks each listed source file of arch with [`names_nothing_above`] at
/// compile time, one constant per file (so the build error names it), and
/// that the list covers every module this file declares.
macro_rules! arch_sources_name_nothing_above {
    ($($module:literal)*) => {
        $(
            const _: () = assert!(
                names_nothing_above(include_str!($module)),
                concat!(
                    "kernel/src/arch/x86_64/", $module,
                    " names something above arch (see the rule in arch/x86_64/mod.rs); find it with: grep -nE 'crate[:]{{2}}|super[:]{{2}}super' kernel/src/arch/x86_64/", $module
                )
            );
        )*
        const _: () = assert!(
            module_declarations(include_str!("mod.rs")) + 2 == [$($module),*].len(),
            "arch/x86_64/mod.rs declares a module that the arch_sources_name_nothing_above! list at its end leaves out: add it"
        );
    };
}

arch_sources_name_nothing_above!(
    "../mod.rs" "mod.rs" "acpi.rs" "apic.rs" "context.rs" "cpu.rs" "fwcfg.rs" "gdt.rs" "hook.rs"
    "idt.rs" "lock.rs" "paging.rs" "percpu.rs" "qemu.rs" "serial.rs" "smp.rs" "time.rs"
);
