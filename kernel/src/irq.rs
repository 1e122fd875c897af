//! Interrupt dispatch: what the arch layer's interrupt paths run above it.
//!
//! Arch handles every vector but names nothing above itself: its timer
//! tick, its grace-period IPI and the cold exit of an rcu-sched read-side
//! section call hooks (see `arch::x86_64::hook`). This module registers
//! them, once, at boot, after the scheduler is set up and before
//! interrupts are enabled, so that what an interrupt does, and in which
//! order, is written in one place:
//!
//! - the timer tick: rcu-sched first (a quiescent state, unless the tick
//!   interrupted a read-side section; waking the callback thread), then
//!   the scheduler (due timers, the end of the time slice), both before the
//!   EOI; on the way out, after the EOI, the scheduler's preemption;
//! - the grace-period IPI: rcu-sched's quiescent-state request;
//! - the device-completion IPI: the block layer's remote completions
//!   queued for this CPU (`block::complete`);
//! - the timer interrupt at a high-resolution deadline: the scheduler's
//!   sleepers and timed calls (`call_after`) due on this CPU;
//! - the end of an outermost section that owed a report: the scheduler's
//!   preemption point (a switch the tick had to put off).
//!
//! The application processors' entry (the scheduler's idle loop) is passed
//! to `arch::start_cpus` by `kernel_main`, and the kernel test harness
//! hooks the fatal path itself when it starts.
#![deny(unsafe_code)]

use crate::arch::{idt, percpu};
use crate::{block, sched, sync};

/// Registers the interrupt hooks. Boot CPU, once, after `sched::init` and
/// before `arch::start_cpus` enables interrupts.
pub fn init() {
    idt::set_timer_hooks(idt::TimerHooks {
        tick,
        exit: sched::preempt_irq_exit,
    });
    idt::set_gp_hook(sync::rcu::gp_ipi);
    idt::set_device_hook(block::complete::device_ipi);
    idt::set_hrtimer_hook(sched::run_timers);
    percpu::set_section_end_hook(sched::preempt_point);
}

/// Every CPU's timer tick, in the handler, before its EOI.
fn tick() {
    sync::rcu::tick();
    sched::tick();
}
