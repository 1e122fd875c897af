//! Just enough ACPI to find the CPUs: RSDP -> RSDT/XSDT -> MADT.

use alloc::vec::Vec;

/// One processor entry of the MADT.
#[derive(Debug, Clone, Copy)]
pub struct MadtCpu {
    /// Local APIC (or x2APIC) ID.
    pub apic_id: u32,
    /// The processor can be used now.
    pub enabled: bool,
    /// The processor may be brought online (ACPI 6.3+).
    pub online_capable: bool,
}

/// What the MADT says.
#[derive(Debug)]
pub struct Madt {
    /// Physical address of the local APIC registers.
    pub local_apic_addr: u64,
    /// Every processor entry.
    pub cpus: Vec<MadtCpu>,
}

impl Madt {
    /// APIC IDs of the processors that are enabled or online-capable.
    pub fn apic_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.cpus
            .iter()
            .filter(|c| c.enabled || c.online_capable)
            .map(|c| c.apic_id)
    }
}

/// Reads physical memory through the bootloader's full mapping.
struct Phys(u64);

impl Phys {
    fn read<T: Copy>(&self, addr: u64) -> T {
        // SAFETY: the bootloader maps all physical memory at `self.0`, and
        // ACPI tables sit in RAM below the top of that mapping; unaligned
        // reads are used because ACPI fields are packed.
        unsafe { core::ptr::read_unaligned((self.0 + addr) as *const T) }
    }
}

/// Finds the MADT from the RSDP's physical address and parses its
/// processor entries.
pub fn read_madt(rsdp: u64, phys_offset: u64) -> Option<Madt> {
    let mem = Phys(phys_offset);
    if mem.read::<[u8; 8]>(rsdp) != *b"RSD PTR " {
        return None;
    }
    let revision: u8 = mem.read(rsdp + 15);
    let (root, entry_size) = if revision >= 2 && mem.read::<u64>(rsdp + 24) != 0 {
        (mem.read::<u64>(rsdp + 24), 8)
    } else {
        (u64::from(mem.read::<u32>(rsdp + 16)), 4)
    };
    let root_len = u64::from(mem.read::<u32>(root + 4));
    let madt = (root + 36..root + root_len)
        .step_by(entry_size)
        .map(|at| {
            if entry_size == 8 {
                mem.read::<u64>(at)
            } else {
                u64::from(mem.read::<u32>(at))
            }
        })
        .find(|&table| mem.read::<[u8; 4]>(table) == *b"APIC")?;
    let madt_len = u64::from(mem.read::<u32>(madt + 4));
    let mut result = Madt {
        local_apic_addr: u64::from(mem.read::<u32>(madt + 36)),
        cpus: Vec::new(),
    };
    let mut at = madt + 44;
    while at + 2 <= madt + madt_len {
        let kind: u8 = mem.read(at);
        let len = u64::from(mem.read::<u8>(at + 1));
        if len < 2 {
            break; // a malformed entry; stop rather than loop forever
        }
        let flags_at = match kind {
            0 => Some((u32::from(mem.read::<u8>(at + 3)), at + 4)), // local APIC
            9 => Some((mem.read::<u32>(at + 4), at + 8)),           // local x2APIC
            5 => {
                // Local APIC address override: a 64-bit address.
                result.local_apic_addr = mem.read::<u64>(at + 4);
                None
            }
            _ => None,
        };
        if let Some((apic_id, flags_addr)) = flags_at {
            let flags: u32 = mem.read(flags_addr);
            result.cpus.push(MadtCpu {
                apic_id,
                enabled: flags & 1 != 0,
                online_capable: flags & 2 != 0,
            });
        }
        at += len;
    }
    Some(result)
}
