//! CPU identity through CPUID.

use core::arch::x86_64::{__cpuid, CpuidResult};

fn cpuid(leaf: u32) -> CpuidResult {
    __cpuid(leaf)
}

/// The processor brand string (CPUID leaves 0x8000_0002..=0x8000_0004).
pub fn brand_string() -> BrandString {
    let mut brand = BrandString { bytes: [0; 48] };
    if cpuid(0x8000_0000).eax < 0x8000_0004 {
        brand.bytes[..7].copy_from_slice(b"unknown");
        return brand;
    }
    for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
        let r = cpuid(leaf);
        for (j, reg) in [r.eax, r.ebx, r.ecx, r.edx].into_iter().enumerate() {
            let at = i * 16 + j * 4;
            brand.bytes[at..at + 4].copy_from_slice(&reg.to_le_bytes());
        }
    }
    brand
}

/// A brand string, NUL-padded.
pub struct BrandString {
    bytes: [u8; 48],
}

impl BrandString {
    /// The brand as text, trimmed of padding.
    pub fn as_str(&self) -> &str {
        let len = self.bytes.iter().position(|&b| b == 0).unwrap_or(48);
        core::str::from_utf8(&self.bytes[..len])
            .unwrap_or("(not ASCII)")
            .trim()
    }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter, present on every
    // x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}
