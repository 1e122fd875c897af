//! Everything that touches the machine. The rest of the kernel reaches the
//! hardware only through this module, and nearly all `unsafe` code lives
//! below it.

pub mod x86_64;

pub use self::x86_64::*;
