//! QEMU's firmware configuration device (fw_cfg), legacy I/O port interface:
//! how the host runner hands the kernel its command line.

use alloc::vec::Vec;

use ::x86_64::instructions::port::Port;

use super::lock::IrqSpinLock;

const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = 0x511;
const SIGNATURE_KEY: u16 = 0x0000;
const FILE_DIR_KEY: u16 = 0x0019;

/// Serialises users: a selection and the reads after it belong together.
static DEVICE: IrqSpinLock<()> = IrqSpinLock::new(());

fn select(key: u16) {
    // SAFETY: the fw_cfg selector port only changes which item the data
    // port streams; it touches no memory.
    unsafe { Port::<u16>::new(SELECTOR_PORT).write(key) }
}

fn read_bytes(buf: &mut [u8]) {
    let mut data = Port::<u8>::new(DATA_PORT);
    for b in buf {
        // SAFETY: reading the fw_cfg data port only advances its cursor.
        *b = unsafe { data.read() };
    }
}

fn read_be_u32() -> u32 {
    let mut b = [0; 4];
    read_bytes(&mut b);
    u32::from_be_bytes(b)
}

/// Returns the contents of the fw_cfg file `name`, or `None` when there is
/// no fw_cfg device or no such file.
pub fn read_file(name: &str) -> Option<Vec<u8>> {
    let _device = DEVICE.lock();
    select(SIGNATURE_KEY);
    let mut signature = [0; 4];
    read_bytes(&mut signature);
    if &signature != b"QEMU" {
        return None;
    }
    select(FILE_DIR_KEY);
    let count = read_be_u32();
    for _ in 0..count {
        // Each directory entry: size (BE u32), select key (BE u16),
        // reserved (u16), NUL-padded name (56 bytes).
        let size = read_be_u32();
        let mut key = [0; 2];
        read_bytes(&mut key);
        let mut reserved = [0; 2];
        read_bytes(&mut reserved);
        let mut entry_name = [0u8; 56];
        read_bytes(&mut entry_name);
        let len = entry_name.iter().position(|&b| b == 0).unwrap_or(56);
        if &entry_name[..len] == name.as_bytes() {
            select(u16::from_be_bytes(key));
            let mut contents = alloc::vec![0; size as usize];
            read_bytes(&mut contents);
            return Some(contents);
        }
    }
    None
}
