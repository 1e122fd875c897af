//! Time: the TSC, calibrated once against the PIT, is the kernel's clock.
//!
//! The PIT (channel 2, gated through port 0x61, polled, no interrupt) runs
//! at a fixed 1.193182 MHz that QEMU derives from the host clock, so timing
//! 10 ms of it gives the TSC rate to well under a percent. [`now_ns`] is
//! monotonic on every CPU and across CPUs (QEMU keeps the vCPUs' TSCs in
//! step; `ktest`s check both).

use core::sync::atomic::{AtomicU64, Ordering};

use ::x86_64::instructions::port::Port;

const PIT_HZ: u64 = 1_193_182;
const CALIBRATION_MS: u64 = 10;

/// TSC ticks per microsecond, scaled by 2^16 (set once at boot).
static TSC_PER_US_X65536: AtomicU64 = AtomicU64::new(0);
/// TSC value taken as time zero.
static TSC_ZERO: AtomicU64 = AtomicU64::new(0);

/// Reads the TSC; the `lfence` keeps it from being taken early, before the
/// instructions that precede it have finished.
#[inline(always)]
pub fn rdtsc_ordered() -> u64 {
    // SAFETY: `lfence` and `rdtsc` only read the counter.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// Measures the TSC rate against PIT channel 2. Boot CPU, once.
pub fn calibrate() -> u64 {
    let count = (PIT_HZ * CALIBRATION_MS / 1000) as u16;
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    // SAFETY: the PIT and the port-0x61 gate are ISA devices only this
    // function touches; the speaker output stays off.
    let (start, end) = unsafe {
        let g = gate.read();
        gate.write((g & !0x02) | 0x01); // gate on, speaker off
        command.write(0b1011_0000); // channel 2, lo/hi byte, mode 0, binary
        channel2.write(count as u8);
        channel2.write((count >> 8) as u8);
        let start = rdtsc_ordered();
        // OUT2 (bit 5) goes high when the count reaches zero.
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        (start, rdtsc_ordered())
    };
    let per_us_x65536 = ((end - start) << 16) / (CALIBRATION_MS * 1000);
    // Relaxed: written once before any other CPU starts; starting a CPU
    // (INIT/SIPI) orders it before everything that CPU does.
    TSC_PER_US_X65536.store(per_us_x65536, Ordering::Relaxed);
    TSC_ZERO.store(start, Ordering::Relaxed);
    tsc_khz()
}

/// TSC frequency in kHz.
pub fn tsc_khz() -> u64 {
    (TSC_PER_US_X65536.load(Ordering::Relaxed) * 1000) >> 16
}

/// Converts TSC ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let per_us = TSC_PER_US_X65536.load(Ordering::Relaxed).max(1);
    ((u128::from(ticks) * 1000 * 65536) / u128::from(per_us)) as u64
}

/// Nanoseconds since calibration; monotonic on and across CPUs.
pub fn now_ns() -> u64 {
    ticks_to_ns(rdtsc_ordered().saturating_sub(TSC_ZERO.load(Ordering::Relaxed)))
}

/// Busy-waits for `us` microseconds.
pub fn delay_us(us: u64) {
    let end = now_ns() + us * 1000;
    while now_ns() < end {
        core::hint::spin_loop();
    }
}
