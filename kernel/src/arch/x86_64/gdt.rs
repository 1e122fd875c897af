//! Global descriptor table and task state segment.
//!
//! Long mode ignores segment bases and limits (but for FS and GS), so the
//! GDT holds a kernel code and data segment and the TSS, whose interrupt
//! stack table gives the double fault and NMI handlers stacks of their own:
//! a double fault caused by a stack overflow must not run on the stack that
//! overflowed.

use alloc::boxed::Box;
use core::cell::UnsafeCell;

use ::x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use ::x86_64::instructions::tables::load_tss;
use ::x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use ::x86_64::structures::tss::TaskStateSegment;
use ::x86_64::VirtAddr;
use spin::Once;

/// IST slot of the double-fault handler's stack.
pub const DOUBLE_FAULT_IST: u16 = 0;
/// IST slot of the NMI handler's stack.
pub const NMI_IST: u16 = 1;

const IST_STACK_SIZE: usize = 16 * 1024;

/// A stack the CPU switches to through the IST; only its address is used.
#[repr(C, align(16))]
struct IstStack(UnsafeCell<[u8; IST_STACK_SIZE]>);

// SAFETY: Rust code never reads or writes the array; the CPU uses it as a
// stack for one handler at a time on the one CPU whose TSS points at it.
unsafe impl Sync for IstStack {}

impl IstStack {
    const fn new() -> Self {
        Self(UnsafeCell::new([0; IST_STACK_SIZE]))
    }

    fn top(&self) -> VirtAddr {
        VirtAddr::from_ptr(self.0.get()) + IST_STACK_SIZE as u64
    }
}

static BSP_DOUBLE_FAULT_STACK: IstStack = IstStack::new();
static BSP_NMI_STACK: IstStack = IstStack::new();

/// One CPU's descriptor tables and the selectors into them.
struct Tables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static BSP_TSS: Once<TaskStateSegment> = Once::new();
static BSP_TABLES: Once<Tables> = Once::new();

fn tss_with(double_fault: VirtAddr, nmi: VirtAddr) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = double_fault;
    tss.interrupt_stack_table[NMI_IST as usize] = nmi;
    tss
}

fn tables_for(tss: &'static TaskStateSegment) -> Tables {
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss = gdt.append(Descriptor::tss_segment(tss));
    Tables {
        gdt,
        code,
        data,
        tss,
    }
}

/// Loads the boot CPU's GDT and TSS (static: the heap does not exist yet).
pub fn init_this_cpu() {
    let tss = BSP_TSS.call_once(|| tss_with(BSP_DOUBLE_FAULT_STACK.top(), BSP_NMI_STACK.top()));
    load(BSP_TABLES.call_once(|| tables_for(tss)));
}

/// Gives an application processor its own GDT, TSS and IST stacks (a
/// shared TSS would be marked busy by the first CPU that loads it).
pub fn init_ap() {
    let stack = || {
        let stack: &'static mut IstStack = Box::leak(Box::new(IstStack::new()));
        stack.top()
    };
    let tss: &'static TaskStateSegment = Box::leak(Box::new(tss_with(stack(), stack())));
    load(Box::leak(Box::new(tables_for(tss))));
}

fn load(tables: &'static Tables) {
    tables.gdt.load();
    // SAFETY: the selectors index the GDT just loaded, whose code segment is
    // a 64-bit ring-0 segment and whose data segment is writable; the TSS
    // descriptor points at a TSS that lives for the rest of the run. GS is
    // left alone so that its base (the per-CPU area) is kept.
    unsafe {
        CS::set_reg(tables.code);
        SS::set_reg(tables.data);
        DS::set_reg(tables.data);
        ES::set_reg(tables.data);
        load_tss(tables.tss);
    }
}
