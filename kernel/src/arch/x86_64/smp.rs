//! Bringing up the application processors, and running code on all CPUs.
//!
//! Start-up: every CPU the MADT lists (enabled or online-capable) gets a
//! per-CPU area; the boot CPU then starts the others one at a time with
//! INIT, SIPI, SIPI. A CPU starts in 16-bit real mode at the trampoline
//! (`trampoline.S` below, copied to physical [`TRAMPOLINE`]), which loads a
//! temporary GDT, enters protected mode, turns on PAE, long mode and paging
//! on the kernel's own page tables (the trampoline page is identity-mapped
//! so the switch does not pull the code from under the CPU), and calls
//! [`ap_main`] on a stack of its own. A CPU that does not report within
//! [`AP_START_TIMEOUT_MS`] is reported by APIC ID and left out. Once set
//! up and online, an application processor calls the entry function the
//! caller of [`start_aps`] passed (the scheduler's idle loop), and never
//! returns.
//!
//! Cross-CPU calls: [`on_each_cpu`] publishes one request, IPIs every other
//! online CPU at [`CALL_VECTOR`], runs the function locally and (if asked)
//! waits for all to finish. Requests are serialised by a lock; a CPU that
//! waits for that lock keeps serving the requests of the holder, so two
//! CPUs calling at once cannot deadlock.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use ::x86_64::structures::paging::PageTableFlags;
use spin::{Mutex, Once};

use super::apic::{self, Delivery, Dest};
use super::hook::Hook;
use super::percpu::{self, IrqGuard};
use super::{gdt, idt, paging, time};

/// Physical (and, while CPUs start, identity-mapped virtual) address of the
/// trampoline; the SIPI vector is this address / 4096.
pub const TRAMPOLINE: u64 = 0x8000;
/// How long a CPU has to report in after its SIPIs.
pub const AP_START_TIMEOUT_MS: u64 = 1000;
/// Vector of the function-call IPI.
pub const CALL_VECTOR: u8 = 0xf0;
/// Vector of the kick IPI (wakes a halted CPU; counted).
pub const KICK_VECTOR: u8 = 0xf1;
/// Vector of the grace-period IPI (asks for a quiescent state).
pub const GP_VECTOR: u8 = 0xf2;
/// Vector of the device-completion IPI: a device's completions handed to
/// another CPU (or to this one, later), as a block layer's remote
/// completion is. What its handler runs is registered above arch
/// (`idt::set_device_hook`).
pub const DEVICE_VECTOR: u8 = 0xf3;
/// Bytes of each application processor's boot stack.
const AP_STACK_SIZE: usize = 64 * 1024;

global_asm!(
    r#"
    .section .text.trampoline, "ax"
    .global ap_trampoline_start
    .global ap_trampoline_end
    .global ap_trampoline_mailbox
    .set TRAMPOLINE, 0x8000
    .code16
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_gdtr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(TRAMPOLINE + ap_protected - ap_trampoline_start)
    .code32
ap_protected:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov (TRAMPOLINE + ap_trampoline_mailbox - ap_trampoline_start), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    ljmpl $0x18, $(TRAMPOLINE + ap_long - ap_trampoline_start)
    .code64
ap_long:
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov (TRAMPOLINE + ap_trampoline_mailbox + 8 - ap_trampoline_start), %rsp
    mov (TRAMPOLINE + ap_trampoline_mailbox + 24 - ap_trampoline_start), %rdi
    mov (TRAMPOLINE + ap_trampoline_mailbox + 16 - ap_trampoline_start), %rax
    call *%rax
    ud2
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
ap_gdtr:
    .word ap_gdtr - ap_gdt - 1
    .long TRAMPOLINE + ap_gdt - ap_trampoline_start
    .balign 8
ap_trampoline_mailbox:
    .quad 0
    .quad 0
    .quad 0
    .quad 0
ap_trampoline_end:
    .text
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_mailbox: u8;
}

/// What the trampoline reads: CR3, the stack top, the entry point and its
/// argument (the CPU index), in that order.
#[repr(C)]
struct Mailbox {
    cr3: u64,
    stack_top: u64,
    entry: u64,
    cpu: u64,
}

/// The CPUs that are running, by index; APIC IDs by index.
struct Cpus {
    apic_ids: Vec<u32>,
}

static CPUS: Once<Cpus> = Once::new();
/// Bit i set: CPU i is online and serves IPIs.
static ONLINE: [AtomicU64; percpu::MAX_CPUS / 64] =
    [const { AtomicU64::new(0) }; percpu::MAX_CPUS / 64];
static ONLINE_COUNT: AtomicUsize = AtomicUsize::new(1);

/// Number of CPUs online.
pub fn online_cpus() -> usize {
    // Acquire: pairs with the Release in `ap_main`, so a caller that sees a
    // CPU counted also sees it ready.
    ONLINE_COUNT.load(Ordering::Acquire)
}

/// Whether CPU `cpu` is online.
pub fn is_online(cpu: usize) -> bool {
    cpu < percpu::MAX_CPUS && ONLINE[cpu / 64].load(Ordering::Acquire) & (1 << (cpu % 64)) != 0
}

/// Indices of the online CPUs.
pub fn online() -> impl Iterator<Item = usize> {
    (0..percpu::possible_cpus()).filter(|&c| is_online(c))
}

/// APIC ID of CPU `cpu`.
pub fn apic_id_of(cpu: usize) -> u32 {
    CPUS.get().map_or(0, |c| c.apic_ids[cpu])
}

fn mark_online(cpu: usize) {
    // Release: everything the CPU set up before is visible to whoever sees
    // the bit (and then sends it IPIs).
    ONLINE[cpu / 64].fetch_or(1 << (cpu % 64), Ordering::Release);
}

/// Result of bringing up the CPUs.
pub struct Bringup {
    /// CPUs that did not start in time, by APIC ID.
    pub failed: Vec<u32>,
}

/// Where each application processor goes once it is online (see
/// [`start_aps`]).
static AP_ENTRY: Hook<fn() -> !> = Hook::new("application processor entry");

/// Starts every CPU in `apic_ids` but the boot CPU (index 0, the caller).
/// Each one sets itself up (GDT, IDT, local APIC and its timer), marks
/// itself online and calls `entry` with interrupts still off; `entry`
/// never returns (it becomes the CPU's idle loop). Call once.
pub fn start_aps(apic_ids: &[u32], entry: fn() -> !) -> Bringup {
    AP_ENTRY.set(entry);
    CPUS.call_once(|| Cpus {
        apic_ids: apic_ids.to_vec(),
    });
    mark_online(0);
    let mut failed = Vec::new();
    if apic_ids.len() == 1 {
        return Bringup { failed };
    }
    let start = (&raw const ap_trampoline_start) as usize;
    let len = (&raw const ap_trampoline_end) as usize - start;
    let mailbox_offset = (&raw const ap_trampoline_mailbox) as usize - start;
    // SAFETY: the page at TRAMPOLINE is below 1 MiB, which the frame pool
    // never hands out and the heap does not own; identity-mapping it adds
    // a mapping of memory nothing else uses.
    unsafe {
        paging::map(
            TRAMPOLINE,
            TRAMPOLINE,
            PageTableFlags::PRESENT | PageTableFlags::WRITABLE,
        );
        core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE as *mut u8, len);
    }
    let mailbox = (TRAMPOLINE as usize + mailbox_offset) as *mut Mailbox;
    let (cr3, _) = ::x86_64::registers::control::Cr3::read();
    let cr3 = cr3.start_address().as_u64();
    assert!(
        cr3 < 1 << 32,
        "the trampoline loads CR3 in 32-bit mode; the page tables are above 4 GiB"
    );

    for (cpu, &apic_id) in apic_ids.iter().enumerate().skip(1) {
        let stack = Box::leak(alloc::vec![0u8; AP_STACK_SIZE].into_boxed_slice());
        let stack_top = (stack.as_ptr() as u64 + AP_STACK_SIZE as u64) & !0xf;
        // SAFETY: the mailbox is in the identity-mapped trampoline page;
        // no CPU reads it until the SIPI below.
        unsafe {
            mailbox.write_volatile(Mailbox {
                cr3,
                stack_top,
                entry: ap_main as *const () as u64,
                cpu: cpu as u64,
            });
        }
        let before = online_cpus();
        apic::send_ipi(Dest::Apic(apic_id), Delivery::Init);
        time::delay_us(10_000);
        let vector = (TRAMPOLINE / 4096) as u8;
        apic::send_ipi(Dest::Apic(apic_id), Delivery::Startup(vector));
        time::delay_us(200);
        if online_cpus() == before {
            apic::send_ipi(Dest::Apic(apic_id), Delivery::Startup(vector));
        }
        let deadline = time::now_ns() + AP_START_TIMEOUT_MS * 1_000_000;
        while online_cpus() == before && time::now_ns() < deadline {
            core::hint::spin_loop();
        }
        if online_cpus() == before {
            failed.push(apic_id);
        }
    }
    Bringup { failed }
}

/// Where an application processor lands in Rust, on its own stack, in long
/// mode on the kernel's page tables, with interrupts off.
extern "C" fn ap_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    percpu::enter_area(cpu);
    gdt::init_ap();
    idt::load();
    apic::enable_this_cpu();
    super::idt::start_tick();
    mark_online(cpu);
    // Release: see `online_cpus`.
    ONLINE_COUNT.fetch_add(1, Ordering::Release);
    match AP_ENTRY.get() {
        Some(entry) => entry(),
        // Not reached: `start_aps` sets the entry before the first SIPI.
        // Should it be, the CPU idles, serving interrupts and IPIs.
        None => loop {
            ::x86_64::instructions::interrupts::enable_and_hlt();
        },
    }
}

/// A cross-CPU call in flight.
struct CallRequest {
    func: *const (dyn Fn() + Sync),
    /// CPUs still to run it.
    pending: AtomicUsize,
    /// For calls that are not waited for: the function, kept alive by the
    /// request, which the last CPU to run it frees.
    owned: Option<Arc<dyn Fn() + Send + Sync>>,
}

static CALL_LOCK: Mutex<()> = Mutex::new(());

crate::percpu! {
    /// The address of the request this CPU owes a run of, or 0.
    static CALL_OWED: PerCpu<u64> = 0;
}

/// Runs the request this CPU owes, if any. From the IPI handler, and from
/// CPUs waiting for the call lock.
pub fn handle_call_ipi() {
    let owed = CALL_OWED.get();
    if owed == 0 {
        return;
    }
    // Taking the request: the caller waits for this before it may publish
    // the next one.
    CALL_OWED.set(0);
    let request = owed as *mut CallRequest;
    // SAFETY: a waited-for request lives on its caller's stack until
    // `pending` reaches zero, which cannot happen before this CPU's
    // decrement below; an owned request is freed only by the CPU whose
    // decrement reaches zero. So the request is alive until our decrement,
    // and `owned` is read before it.
    unsafe {
        let owned = (*request).owned.is_some();
        (*(*request).func)();
        // AcqRel: Release makes the function's effects visible to the
        // waiter (Acquire load in `on_each_cpu`); Acquire lets the CPU that
        // frees an owned request see the other CPUs' last uses of it.
        if (*request).pending.fetch_sub(1, Ordering::AcqRel) == 1 && owned {
            drop(Box::from_raw(request));
        }
    }
}

/// Takes the call lock with interrupts off, serving the holder's requests
/// while waiting (the holder may be waiting for this very CPU).
fn lock_calls() -> (IrqGuard, spin::MutexGuard<'static, ()>) {
    let irq = IrqGuard::new();
    loop {
        if let Some(lock) = CALL_LOCK.try_lock() {
            return (irq, lock);
        }
        handle_call_ipi();
        core::hint::spin_loop();
    }
}

/// Hands `request` to every online CPU but this one; returns them.
fn publish(request: *mut CallRequest, others: &[usize]) {
    for &cpu in others {
        let slot = CALL_OWED.remote(cpu) as *const AtomicU64;
        // SAFETY: `slot` is CPU `cpu`'s 8-byte instance, and it is 0: the
        // call lock is held and every earlier request was taken.
        // Release: the request is fully built before the CPU can see it.
        unsafe { (*slot).store(request as u64, Ordering::Release) };
        apic::send_ipi(Dest::Apic(apic_id_of(cpu)), Delivery::Fixed(CALL_VECTOR));
    }
}

fn other_online_cpus() -> Vec<usize> {
    let me = percpu::cpu_id();
    online().filter(|&c| c != me).collect()
}

/// Runs `f` on every online CPU: on the others from the call IPI (with
/// interrupts off), on this one directly, and waits until all have run it.
pub fn on_each_cpu(f: &(dyn Fn() + Sync)) {
    let (irq, lock) = lock_calls();
    let others = other_online_cpus();
    // SAFETY: the transmute only erases the lifetime of `f`; this function
    // does not return (and so `f` stays borrowed) until `pending` is zero,
    // i.e. until every CPU has finished running it.
    let func: *const (dyn Fn() + Sync) = unsafe { core::mem::transmute(f) };
    let mut request = CallRequest {
        func,
        pending: AtomicUsize::new(others.len()),
        owned: None,
    };
    publish(&raw mut request, &others);
    f();
    // Acquire: pairs with the AcqRel decrements in `handle_call_ipi`.
    while request.pending.load(Ordering::Acquire) != 0 {
        core::hint::spin_loop();
    }
    drop(lock);
    drop(irq);
}

/// Runs `f` on every online CPU without waiting for it to finish: returns
/// once every other CPU has taken the request (and after running `f`
/// here). The request frees itself after the last run.
pub fn on_each_cpu_nowait(f: Arc<dyn Fn() + Send + Sync>) {
    let (irq, lock) = lock_calls();
    let others = other_online_cpus();
    if !others.is_empty() {
        let request = Box::into_raw(Box::new(CallRequest {
            func: Arc::as_ptr(&f) as *const (dyn Fn() + Sync),
            pending: AtomicUsize::new(others.len()),
            owned: Some(f.clone()),
        }));
        publish(request, &others);
        for &cpu in &others {
            // Wait until taken, so the next caller can reuse the slot.
            while load_owed(cpu) != 0 {
                core::hint::spin_loop();
            }
        }
    }
    drop(lock);
    f();
    drop(irq);
}

fn load_owed(cpu: usize) -> u64 {
    CALL_OWED.read_remote(cpu)
}

/// Sends a kick IPI to `cpu` (counted in its `KICKS`).
pub fn kick(cpu: usize) {
    apic::send_ipi(Dest::Apic(apic_id_of(cpu)), Delivery::Fixed(KICK_VECTOR));
}

/// Sends the device-completion IPI ([`DEVICE_VECTOR`]) to `cpu`, which
/// may be this CPU: then it is taken as soon as this CPU's interrupts are
/// on, after the caller's current interrupts-off stretch.
pub fn send_device_ipi(cpu: usize) {
    apic::send_ipi(Dest::Apic(apic_id_of(cpu)), Delivery::Fixed(DEVICE_VECTOR));
}

/// Kicks each CPU of `cpus` (distinct online CPUs, not this one): one
/// broadcast to all but this CPU when they are all the others, else one
/// IPI each. Under TCG every access to the local APIC takes QEMU's big
/// lock, which with more vCPUs than host cores is often held by a vCPU
/// the host is not running: an unfreeze that woke a job on each of 7
/// idle CPUs spent milliseconds in 7 IPIs of 3 APIC accesses each.
pub fn kick_many(cpus: &[usize]) {
    let me = percpu::cpu_id();
    debug_assert!(!cpus.contains(&me), "kick_many: this cpu is among {cpus:?}");
    if cpus.len() > 1 && cpus.len() + 1 == online_cpus() && is_online(me) {
        kick_all(false);
    } else {
        for &cpu in cpus {
            kick(cpu);
        }
    }
}

/// Sends a kick IPI to every other CPU, or to all.
pub fn kick_all(include_self: bool) {
    let dest = if include_self {
        Dest::All
    } else {
        Dest::AllButSelf
    };
    apic::send_ipi(dest, Delivery::Fixed(KICK_VECTOR));
}

/// Waits up to `ms` milliseconds for `cond`, spinning; false on timeout.
/// The spin is preemptible (unless the caller disabled preemption), so the
/// other threads of this CPU keep running.
pub fn wait_for(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = time::now_ns() + ms * 1_000_000;
    while !cond() {
        if time::now_ns() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

crate::ktest! {
    /// Each kick IPI arrives exactly once: to each CPU, to a set of CPUs
    /// (`kick_many`), to all others, and to all CPUs including the
    /// sender. (Sends of one vector that reach a CPU before it took the
    /// previous one merge in its APIC's request register, as on hardware;
    /// so each send waits for the arrival.)
    #[smp(2, 8)]
    fn ipis_arrive_exactly_once() {
        let kicks = |cpu| idt::KICKS.read_remote(cpu);
        let me = percpu::cpu_id();
        for cpu in online().filter(|&c| c != me) {
            let before = kicks(cpu);
            for sent in 1..=5 {
                kick(cpu);
                let arrived = wait_for(1000, || kicks(cpu) >= before + sent);
                assert!(arrived, "cpu {cpu}: kick {sent} did not arrive");
            }
            time::delay_us(5_000);
            assert_eq!(kicks(cpu), before + 5, "cpu {cpu} got a kick twice");
        }
        // kick_many: every other CPU (one broadcast), then one of them.
        let others: Vec<usize> = online().filter(|&c| c != me).collect();
        for set in [&others[..], &others[..1]] {
            let before: Vec<u64> = online().map(kicks).collect();
            kick_many(set);
            for (i, cpu) in online().enumerate() {
                let want = before[i] + u64::from(set.contains(&cpu));
                assert!(wait_for(1000, || kicks(cpu) >= want), "cpu {cpu}: {} kicks, want {want}", kicks(cpu));
            }
            time::delay_us(5_000);
            for (i, cpu) in online().enumerate() {
                let want = before[i] + u64::from(set.contains(&cpu));
                assert_eq!(kicks(cpu), want, "kick_many({set:?}): cpu {cpu} got {} kicks, want {want}", kicks(cpu) - before[i]);
            }
        }
        for include_self in [false, true] {
            let before: Vec<u64> = online().map(kicks).collect();
            kick_all(include_self);
            for (i, cpu) in online().enumerate() {
                let want = before[i] + u64::from(cpu != me || include_self);
                assert!(wait_for(1000, || kicks(cpu) >= want), "cpu {cpu}: {} kicks, want {want}", kicks(cpu));
            }
            time::delay_us(5_000);
            for (i, cpu) in online().enumerate() {
                let want = before[i] + u64::from(cpu != me || include_self);
                assert_eq!(kicks(cpu), want, "cpu {cpu}: a broadcast kick arrived twice or went astray");
            }
        }
    }
}

crate::ktest! {
    /// `on_each_cpu` runs on every online CPU once; the no-wait form too.
    #[smp(1, 2, 8)]
    fn on_each_cpu_runs_on_all_cpus() {
        let seen = AtomicU64::new(0);
        let runs = AtomicUsize::new(0);
        on_each_cpu(&|| {
            seen.fetch_or(1 << percpu::cpu_id(), Ordering::Relaxed);
            runs.fetch_add(1, Ordering::Relaxed);
        });
        let n = online_cpus();
        assert_eq!(seen.load(Ordering::Relaxed), (1u64 << n) - 1);
        assert_eq!(runs.load(Ordering::Relaxed), n);
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        on_each_cpu_nowait(Arc::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }));
        assert!(wait_for(1000, || count.load(Ordering::Relaxed) == n), "no-wait call ran {} of {n}", count.load(Ordering::Relaxed));
    }
}

crate::ktest! {
    /// The timer ticks on every CPU, at roughly HZ, and the clock never
    /// goes backwards, on one CPU or from one CPU to the next.
    #[smp(1, 2, 8)]
    fn timer_ticks_everywhere_and_clock_is_monotonic() {
        let before: Vec<u64> = online().map(|c| idt::TICKS.read_remote(c)).collect();
        let t0 = time::now_ns();
        time::delay_us(100_000);
        let elapsed_ms = (time::now_ns() - t0) / 1_000_000;
        // A vCPU that the host leaves unrun for the whole 100 ms takes its
        // tick late: wait for it (a CPU without ticks never takes one).
        for (i, cpu) in online().enumerate() {
            assert!(
                wait_for(2000, || idt::TICKS.read_remote(cpu) > before[i]),
                "cpu {cpu} took no timer tick in {elapsed_ms} ms nor in the 2 s after"
            );
        }
        let last = AtomicU64::new(0);
        let backwards = AtomicUsize::new(0);
        on_each_cpu(&|| {
            for _ in 0..20_000 {
                // Acquire/AcqRel: a time published by another CPU happens
                // before our own read of the clock.
                let seen = last.load(Ordering::Acquire);
                let now = time::now_ns();
                if now < seen {
                    backwards.fetch_add(1, Ordering::Relaxed);
                }
                last.fetch_max(now, Ordering::AcqRel);
            }
        });
        assert_eq!(backwards.load(Ordering::Relaxed), 0, "the clock went backwards");
    }
}
