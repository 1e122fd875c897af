//! The interrupt descriptor table: a handler for every CPU exception.
//!
//! Every exception but the breakpoint is fatal: its handler prints the
//! vector, its name, the error code, RIP, CR2 (for page faults) and the CPU,
//! then ends the run through [`super::fatal`]. A breakpoint (`int3`) is
//! counted and execution resumes after it.
//!
//! Vectors 32..=255 are device and inter-processor interrupts: the timer
//! tick, the function-call, kick, grace-period and device-completion IPIs
//! (see [`super::smp`]), and the APIC's spurious vector. Any other vector is unexpected: it is counted
//! and reported on the console, not fatal.
//!
//! The timer tick and the grace-period IPI serve the layers above (the
//! scheduler's time slices and timers, rcu-sched's quiescent states): their
//! handlers do the arch part (count, acknowledge, tell whether the
//! interrupted code is a per-CPU fast path) and call the [`TimerHooks`] and
//! the grace-period hook registered at init ([`set_timer_hooks`],
//! [`set_gp_hook`]); the device-completion IPI runs the hook of the layer
//! that completes I/O ([`set_device_hook`]). One that arrives before its hook is set is
//! acknowledged and counted as unexpected.

use core::sync::atomic::{AtomicU64, Ordering};

use ::x86_64::registers::control::Cr2;
use ::x86_64::structures::idt::{
    InterruptDescriptorTable, InterruptStackFrame, PageFaultErrorCode,
};
use ::x86_64::VirtAddr;
use spin::LazyLock;

use super::hook::Hook;
use super::{apic, gdt, smp};

/// Breakpoints taken since boot, on all CPUs.
static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

/// Number of `int3` breakpoints handled since boot.
pub fn breakpoints() -> u64 {
    // Relaxed: a statistic; the handler ran on this CPU before the caller
    // reads it, or on another CPU with no ordering promised.
    BREAKPOINTS.load(Ordering::Relaxed)
}

fn die(frame: &InterruptStackFrame, vector: u8, name: &str, error: Option<u64>) -> ! {
    // A double fault keeps CR2 of the page fault that caused it, which is
    // how a stack overflow (a fault on a guard page) ends.
    let cr2 = if vector == 14 || vector == 8 {
        Cr2::read_raw()
    } else {
        0
    };
    if super::context::is_stack_guard(cr2) {
        super::fatal(format_args!(
            "kernel stack overflow: exception {vector} ({name}) on the guard page {cr2:#x} below a thread stack, rip {:#x}",
            frame.instruction_pointer.as_u64()
        ));
    }
    match error {
        Some(code) => super::fatal(format_args!(
            "exception {vector} ({name}), error code {code:#x}, rip {:#x}, cr2 {cr2:#x}, rsp {:#x}",
            frame.instruction_pointer.as_u64(),
            frame.stack_pointer.as_u64()
        )),
        None => super::fatal(format_args!(
            "exception {vector} ({name}), rip {:#x}, cr2 {cr2:#x}, rsp {:#x}",
            frame.instruction_pointer.as_u64(),
            frame.stack_pointer.as_u64()
        )),
    }
}

macro_rules! fatal_handlers {
    ($($handler:ident: $vector:literal $name:literal;)*) => {$(
        extern "x86-interrupt" fn $handler(frame: InterruptStackFrame) {
            die(&frame, $vector, $name, None)
        }
    )*};
}

macro_rules! fatal_handlers_with_code {
    ($($handler:ident: $vector:literal $name:literal;)*) => {$(
        extern "x86-interrupt" fn $handler(frame: InterruptStackFrame, code: u64) {
            die(&frame, $vector, $name, Some(code))
        }
    )*};
}

fatal_handlers! {
    divide_error: 0 "divide error";
    debug: 1 "debug";
    overflow: 4 "overflow";
    bound_range: 5 "bound range exceeded";
    invalid_opcode: 6 "invalid opcode";
    device_not_available: 7 "device not available";
    x87_fp: 16 "x87 floating point";
    simd_fp: 19 "SIMD floating point";
    virtualization: 20 "virtualization";
    hv_injection: 28 "hypervisor injection";
}

fatal_handlers_with_code! {
    invalid_tss: 10 "invalid TSS";
    segment_not_present: 11 "segment not present";
    stack_segment: 12 "stack-segment fault";
    general_protection: 13 "general protection fault";
    alignment_check: 17 "alignment check";
    cp_protection: 21 "control protection";
    vmm_communication: 29 "VMM communication";
    security: 30 "security exception";
}

extern "x86-interrupt" fn nmi(frame: InterruptStackFrame) {
    // The fatal path of another CPU stops this one with an NMI.
    if super::is_failing() {
        super::halt_forever();
    }
    die(&frame, 2, "non-maskable interrupt", None)
}

extern "x86-interrupt" fn breakpoint(_frame: InterruptStackFrame) {
    // Relaxed: a counter with no data hanging off it.
    BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
}

extern "x86-interrupt" fn page_fault(frame: InterruptStackFrame, code: PageFaultErrorCode) {
    die(&frame, 14, "page fault", Some(code.bits()))
}

extern "x86-interrupt" fn double_fault(frame: InterruptStackFrame, code: u64) -> ! {
    die(&frame, 8, "double fault", Some(code))
}

extern "x86-interrupt" fn machine_check(frame: InterruptStackFrame) -> ! {
    die(&frame, 18, "machine check", None)
}

static IDT: LazyLock<InterruptDescriptorTable> = LazyLock::new(|| {
    let mut idt = InterruptDescriptorTable::new();
    idt.divide_error.set_handler_fn(divide_error);
    idt.debug.set_handler_fn(debug);
    // SAFETY: the IST slot is filled in every CPU's TSS (see `gdt`) with a
    // stack used by nothing else.
    unsafe {
        idt.non_maskable_interrupt
            .set_handler_fn(nmi)
            .set_stack_index(gdt::NMI_IST);
    }
    idt.breakpoint.set_handler_fn(breakpoint);
    idt.overflow.set_handler_fn(overflow);
    idt.bound_range_exceeded.set_handler_fn(bound_range);
    idt.invalid_opcode.set_handler_fn(invalid_opcode);
    idt.device_not_available
        .set_handler_fn(device_not_available);
    // SAFETY: as for the NMI: a dedicated stack, so that a double fault
    // caused by a kernel stack overflow still has a stack to run on.
    unsafe {
        idt.double_fault
            .set_handler_fn(double_fault)
            .set_stack_index(gdt::DOUBLE_FAULT_IST);
    }
    idt.invalid_tss.set_handler_fn(invalid_tss);
    idt.segment_not_present.set_handler_fn(segment_not_present);
    idt.stack_segment_fault.set_handler_fn(stack_segment);
    idt.general_protection_fault
        .set_handler_fn(general_protection);
    idt.page_fault.set_handler_fn(page_fault);
    idt.x87_floating_point.set_handler_fn(x87_fp);
    idt.alignment_check.set_handler_fn(alignment_check);
    idt.machine_check.set_handler_fn(machine_check);
    idt.simd_floating_point.set_handler_fn(simd_fp);
    idt.virtualization.set_handler_fn(virtualization);
    idt.cp_protection_exception.set_handler_fn(cp_protection);
    idt.hv_injection_exception.set_handler_fn(hv_injection);
    idt.vmm_communication_exception
        .set_handler_fn(vmm_communication);
    idt.security_exception.set_handler_fn(security);
    for (vector, handler) in UNEXPECTED.iter().enumerate() {
        idt[32 + vector as u8].set_handler_fn(*handler);
    }
    idt[apic::TIMER_VECTOR].set_handler_fn(timer_tick);
    idt[smp::CALL_VECTOR].set_handler_fn(call_ipi);
    idt[smp::KICK_VECTOR].set_handler_fn(kick_ipi);
    idt[smp::GP_VECTOR].set_handler_fn(gp_ipi);
    idt[smp::DEVICE_VECTOR].set_handler_fn(device_ipi);
    idt[apic::SPURIOUS_VECTOR].set_handler_fn(spurious);
    idt
});

crate::percpu! {
    /// Timer ticks taken by this CPU.
    pub static TICKS: PerCpu<u64> = 0;
    /// Kick IPIs taken by this CPU.
    pub static KICKS: PerCpu<u64> = 0;
    /// Device-completion IPIs taken by this CPU.
    pub static DEVICE_IPIS: PerCpu<u64> = 0;
    /// Grace-period IPIs taken by this CPU.
    pub static GP_IPIS: PerCpu<u64> = 0;
    /// Timer interrupts that ran the high-resolution hook on this CPU.
    pub static HRTIMER_IRQS: PerCpu<u64> = 0;
    /// When this CPU's next tick is due (ns).
    static NEXT_TICK_NS: PerCpu<u64> = 0;
    /// When this CPU's high-resolution hook is due (ns; `u64::MAX`: not
    /// asked for).
    static HR_DEADLINE_NS: PerCpu<u64> = u64::MAX;
    /// 1 while this CPU runs a device or IPI handler (they do not nest:
    /// interrupt gates keep interrupts off).
    static IN_IRQ: PerCpu<u64> = 0;
}

/// Whether this CPU is running an interrupt handler (where sleeping is
/// forbidden).
pub fn in_interrupt() -> bool {
    IN_IRQ.get() != 0
}

/// Unexpected interrupts since boot, per vector, on all CPUs.
static UNEXPECTED_COUNTS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
/// APIC spurious interrupts since boot, on all CPUs.
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// Unexpected interrupts counted so far (all vectors), and spurious ones.
pub fn unexpected_interrupts() -> (u64, u64) {
    // Relaxed: statistics.
    let unexpected = UNEXPECTED_COUNTS
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    (unexpected, SPURIOUS.load(Ordering::Relaxed))
}

/// What the timer tick runs for the layers above arch (see
/// [`set_timer_hooks`]).
#[derive(Clone, Copy, Debug)]
pub struct TimerHooks {
    /// The tick's work, in the handler (interrupts off, [`in_interrupt`]
    /// true), before the EOI. An interrupted per-CPU fast path has been
    /// sent back to its start ([`restart_fast_path`]), so it is not in a
    /// section and the tick may report a quiescent state.
    pub tick: fn(),
    /// The way out, after the EOI, on the interrupted code's stack with
    /// interrupts off. It may switch threads: it returns (and the
    /// handler's `iretq` resumes the interrupted code) when that code is
    /// chosen to run again.
    pub exit: fn(),
}

static TIMER_HOOKS: Hook<TimerHooks> = Hook::new("timer tick");
static GP_HOOK: Hook<fn()> = Hook::new("grace-period IPI");
static DEVICE_HOOK: Hook<fn()> = Hook::new("device-completion IPI");
static HRTIMER_HOOK: Hook<fn()> = Hook::new("high-resolution timer");

/// Registers what every CPU's timer tick runs. Once, before interrupts are
/// enabled (a tick before it is acknowledged and counted as unexpected).
pub fn set_timer_hooks(hooks: TimerHooks) {
    TIMER_HOOKS.set(hooks);
}

/// Registers what the grace-period IPI ([`smp::GP_VECTOR`]) runs, in the
/// handler, unless it interrupted a per-CPU fast path (then the grace
/// period asks again). Once, before interrupts are enabled.
pub fn set_gp_hook(hook: fn()) {
    GP_HOOK.set(hook);
}

/// Registers what the device-completion IPI ([`smp::DEVICE_VECTOR`])
/// runs, in the handler (interrupts off, before the EOI). Once, before the
/// first such IPI can be sent.
pub fn set_device_hook(hook: fn()) {
    DEVICE_HOOK.set(hook);
}

/// Nanoseconds between two timer ticks.
const TICK_NS: u64 = 1_000_000_000 / apic::HZ;

/// Starts this CPU's timer: the first tick one period from now. Each CPU
/// once, interrupts off, after its APIC is enabled.
pub fn start_tick() {
    apic::start_timer();
    let now = super::time::now_ns();
    NEXT_TICK_NS.set(now + TICK_NS);
    HR_DEADLINE_NS.set(u64::MAX);
    rearm(now);
}

/// Registers what the timer interrupt runs when this CPU's high-resolution
/// deadline ([`arm_hrtimer`]) has passed: the upper layer's expiry of its
/// timer list, in the handler, before the EOI. Once, before interrupts are
/// enabled.
pub fn set_hrtimer_hook(hook: fn()) {
    HRTIMER_HOOK.set(hook);
}

/// Asks for this CPU's timer interrupt at `deadline` (ns, [`time::now_ns`]
/// clock) or earlier, to run the high-resolution hook; a deadline later
/// than one already asked for changes nothing (the hook re-asks for its
/// next one when it runs). A deadline already past fires as soon as
/// interrupts are on.
///
/// [`time::now_ns`]: super::time::now_ns
pub fn arm_hrtimer(deadline: u64) {
    let _irq = super::percpu::IrqGuard::new();
    if deadline < HR_DEADLINE_NS.get() {
        HR_DEADLINE_NS.set(deadline);
        if deadline < NEXT_TICK_NS.get() {
            rearm(super::time::now_ns());
        }
    }
}

/// Arms the one-shot APIC timer for the earlier of the next tick and the
/// high-resolution deadline. Interrupts off.
fn rearm(now: u64) {
    let next = NEXT_TICK_NS.get().min(HR_DEADLINE_NS.get());
    apic::arm_timer_in(next.saturating_sub(now));
}

/// The timer interrupt. The APIC timer runs one-shot: each interrupt is a
/// tick when the tick is due (every `TICK_NS`), runs the high-resolution
/// hook when its deadline has passed, and re-arms the timer for whichever
/// comes next.
extern "x86-interrupt" fn timer_tick(mut frame: InterruptStackFrame) {
    // First: the handler may run read-side sections.
    super::percpu::idle_exit();
    IN_IRQ.set(1);
    let now = super::time::now_ns();
    let tick = now >= NEXT_TICK_NS.get();
    // Before anything that may report a quiescent state or switch threads.
    restart_fast_path(&mut frame);
    let hooks = TIMER_HOOKS.get();
    if tick {
        TICKS.add(1);
        // One period after the tick that was due; after a stall (a vCPU
        // the host did not run) one period from now, not a burst.
        let next = NEXT_TICK_NS.get() + TICK_NS;
        NEXT_TICK_NS.set(if next > now { next } else { now + TICK_NS });
        match hooks {
            Some(hooks) => (hooks.tick)(),
            None => unhooked(apic::TIMER_VECTOR),
        }
    }
    if HR_DEADLINE_NS.get() <= now {
        HR_DEADLINE_NS.set(u64::MAX);
        HRTIMER_IRQS.add(1);
        match HRTIMER_HOOK.get() {
            Some(hook) => hook(),
            None => unhooked(apic::TIMER_VECTOR),
        }
    }
    rearm(super::time::now_ns());
    IN_IRQ.set(0);
    apic::eoi();
    // Last: a preemption switches threads on this stack and comes back
    // here only when the interrupted thread runs again.
    if let Some(hooks) = hooks {
        if tick {
            (hooks.exit)();
        }
    }
}

extern "x86-interrupt" fn call_ipi(_frame: InterruptStackFrame) {
    // First: the handler may run read-side sections.
    super::percpu::idle_exit();
    IN_IRQ.set(1);
    smp::handle_call_ipi();
    IN_IRQ.set(0);
    apic::eoi();
}

extern "x86-interrupt" fn gp_ipi(mut frame: InterruptStackFrame) {
    // First: the handler may run read-side sections.
    super::percpu::idle_exit();
    GP_IPIS.add(1);
    // As in `timer_tick`: the report may come at once.
    restart_fast_path(&mut frame);
    match GP_HOOK.get() {
        Some(hook) => hook(),
        None => unhooked(smp::GP_VECTOR),
    }
    apic::eoi();
}

/// If `frame` interrupted a per-CPU fast path (a
/// [`super::percpu::gs_add_unless`] sequence, before its add ran), points
/// its return address back at the sequence's first instruction, so that
/// it runs again from its load: the interrupted attempt wrote nothing and
/// is over, and the handler may report a quiescent state or preempt as
/// anywhere else. Only the handlers that may do either need it (the
/// timer tick and the grace-period IPI): other handlers return into the
/// sequence, which then finishes within the section it began in.
fn restart_fast_path(frame: &mut InterruptStackFrame) {
    let rip = frame.instruction_pointer.as_u64();
    if let Some(start) = super::percpu::fast_path_start(rip) {
        // SAFETY: `start` is the first instruction of the asm sequence
        // that holds `rip`, in the same function and stack frame; the
        // sequence writes no register its instructions read before
        // writing it, and nothing in memory before its last instruction,
        // which has not run (`rip` is below the range's end), so running
        // it from `start` is running it once (see `gs_add_unless`). The
        // write goes to the hardware frame that `iretq` pops (volatile,
        // as `as_mut` asks).
        unsafe {
            frame
                .as_mut()
                .update(|f| f.instruction_pointer = VirtAddr::new(start));
        }
    }
}

extern "x86-interrupt" fn device_ipi(_frame: InterruptStackFrame) {
    // First: the handler may run read-side sections.
    super::percpu::idle_exit();
    IN_IRQ.set(1);
    DEVICE_IPIS.add(1);
    match DEVICE_HOOK.get() {
        Some(hook) => hook(),
        None => unhooked(smp::DEVICE_VECTOR),
    }
    IN_IRQ.set(0);
    apic::eoi();
}

extern "x86-interrupt" fn kick_ipi(_frame: InterruptStackFrame) {
    // First: the handler may run read-side sections.
    super::percpu::idle_exit();
    IN_IRQ.set(1);
    KICKS.add(1);
    IN_IRQ.set(0);
    apic::eoi();
}

extern "x86-interrupt" fn spurious(_frame: InterruptStackFrame) {
    // First: the handler may run read-side sections.
    super::percpu::idle_exit();
    // Relaxed: a statistic. No EOI: a spurious interrupt is not in service.
    SPURIOUS.fetch_add(1, Ordering::Relaxed);
}

/// An interrupt at a vector whose hook is not registered yet: counted as
/// unexpected (the first one of the vector printed); the caller sends the
/// EOI.
#[cold]
fn unhooked(vector: u8) {
    // Relaxed: a statistic.
    if UNEXPECTED_COUNTS[vector as usize].fetch_add(1, Ordering::Relaxed) == 0 {
        crate::println!(
            "irq: interrupt at vector {vector:#x} on cpu {} before its hook was registered (counted; further ones are silent)",
            super::percpu::cpu_id()
        );
    }
}

extern "x86-interrupt" fn unexpected<const V: u8>(_frame: InterruptStackFrame) {
    // First: the handler may run read-side sections.
    super::percpu::idle_exit();
    // Relaxed: a statistic; the first one of each vector is also printed.
    if UNEXPECTED_COUNTS[V as usize].fetch_add(1, Ordering::Relaxed) == 0 {
        crate::println!(
            "irq: unexpected interrupt, vector {V:#x} on cpu {} (counted; further ones are silent)",
            super::percpu::cpu_id()
        );
    }
    // A legacy PIC vector (0x20..0x30) is a spurious PIC interrupt (the PIC
    // is masked) and must not be acknowledged at the APIC.
    if !(0x20..0x30).contains(&V) {
        apic::eoi();
    }
}

type Handler = extern "x86-interrupt" fn(InterruptStackFrame);

macro_rules! unexpected_table {
    ($($v:literal)*) => { [$(unexpected::<$v> as Handler),*] };
}

static UNEXPECTED: [Handler; 224] = unexpected_table!(32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144 145 146 147 148 149 150 151 152 153 154 155 156 157 158 159 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191 192 193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216 217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255);

/// Loads the IDT on this CPU.
pub fn load() {
    IDT.load();
}

crate::ktest! {
    fn breakpoint_is_handled_and_resumes() {
        let before = breakpoints();
        ::x86_64::instructions::interrupts::int3();
        ::x86_64::instructions::interrupts::int3();
        assert_eq!(breakpoints() - before, 2, "two int3 must be counted");
    }
}

crate::ktest! {
    /// Harness self-test: a page fault must be reported with its address and
    /// fail the test. Run by boot/tests/harness.rs, not by the suite.
    #[selftest]
    fn selftest_page_fault_is_reported() {
        let bad = core::ptr::without_provenance::<u64>(0x8); // in the unmapped null page
        // SAFETY: deliberately unsound: this read faults, which is what the
        // test checks; the fault handler ends the run before it returns.
        let _ = unsafe { core::ptr::read_volatile(bad) };
    }
}

crate::ktest! {
    /// An interrupt at a vector nobody handles is counted, reported once,
    /// and not fatal.
    #[smp(1)]
    fn unexpected_interrupts_are_counted_not_fatal() {
        let (before, _) = unexpected_interrupts();
        for _ in 0..3 {
            apic::send_ipi(apic::Dest::Apic(apic::id()), apic::Delivery::Fixed(0x80));
            assert!(smp::wait_for(1000, || unexpected_interrupts().0 > before));
        }
        assert!(smp::wait_for(1000, || unexpected_interrupts().0 == before + 3));
    }
}

crate::ktest! {
    /// Harness self-test: a panic on an application processor stops every
    /// CPU and names the CPU (here in its call-IPI handler). Run by
    /// boot/tests/harness.rs.
    #[selftest]
    #[smp(2)]
    fn selftest_panic_on_another_cpu_stops_all() {
        smp::on_each_cpu_nowait(alloc::sync::Arc::new(|| {
            if super::percpu::cpu_id() == 1 {
                panic!("deliberate failure on an application processor");
            }
        }));
        smp::wait_for(10_000, || false);
        panic!("the panic on cpu 1 did not end the run");
    }
}
