//! Leaving QEMU with a status the host runner understands.

use qemu_exit::QEMUExit;

use crate::abi::{ExitCode, DEBUG_EXIT_PORT};

/// Ends the run: writes `code` to QEMU's `isa-debug-exit` device. On a
/// machine without that device the write does nothing and the CPU halts.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: the port is QEMU's isa-debug-exit device, which the runner
    // always attaches; on other machines nothing decodes that port, so the
    // write is harmless.
    let device =
        unsafe { qemu_exit::X86::new(DEBUG_EXIT_PORT, ExitCode::Success.qemu_status() as u32) };
    device.exit(code as u32);
}
