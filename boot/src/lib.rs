//! The host side of the project: boots the kernel in QEMU and talks to it.
//!
//! - [`options`]: the command line of `cargo run` (and its checks).
//! - [`qemu`]: building the QEMU command, streaming the serial console,
//!   timeouts, and turning the kernel's exit into an [`qemu::Outcome`].
//! - [`ktest`]: the host half of the in-kernel test protocol.
//! - [`bench`] and [`linux`]: the bench tables, and Linux's refscale
//!   figures beside them.
//!
//! `build.rs` builds the kernel and its disk image; their paths are
//! [`KERNEL_IMAGE`] and [`KERNEL_ELF`].

pub mod abi;
pub mod bench;
pub mod ktest;
pub mod linux;
pub mod options;
pub mod qemu;

/// The bootable BIOS disk image (stripped kernel inside).
pub const KERNEL_IMAGE: &str = env!("KERNEL_IMAGE");
/// The kernel ELF with symbols, for GDB and symbolising addresses.
pub const KERNEL_ELF: &str = env!("KERNEL_ELF");
