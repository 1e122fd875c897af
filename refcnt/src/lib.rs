//! Per-CPU reference counts, SRCU and kref for `no_std` kernels.
//!
//! The crate owns the counting algorithms; the environment it runs in (a
//! kernel, a host test process, a loom model) owns the per-CPU memory, the
//! read-side sections and the grace periods, and hands them over through the
//! [`Backend`] trait. That split keeps this crate free of architecture code
//! and of `unsafe` but for two small places: everything else that needs
//! either lives in a backend. (Two hand the backend's fast paths a key to
//! the per-CPU slots that the ref or domain took from the same allocation,
//! so that a kernel need not check it: see
//! [`Backend::this_cpu_add_unless`] and
//! [`Backend::this_cpu_add_sched_unchecked`]; the other reads a dynamic
//! ref's counters through the pointer it published when it allocated
//! them.) The
//! alternative, a crate that reads GS itself, would tie the algorithms to
//! x86 and make them impossible to model-check.
//!
//! * [`percpu_ref`]: Linux-style `percpu_ref`, plus the dynamic mode of the
//!   2013 patch (start atomic, go per-CPU when gets are frequent).
//! * [`kref`]: a single atomic count with `refcount_t` saturation rules.
//! * [`srcu`]: sleepable RCU (normal and fast flavours) and [`srcu::SrcuPtr`].
//! * [`misuse`]: what counts as misuse, with per-kind counters.
#![cfg_attr(
    feature = "std",
    doc = "* [`host`] (feature `std`): threads own CPU slots; for tests and benches."
)]
#![cfg_attr(
    not(feature = "std"),
    doc = "* `host` (feature `std`, off in this build): threads own CPU slots; for tests and benches."
)]
//!
//! # Testing
//!
//! * host: `cargo test -p refcnt` (unit tests, a 2 s torture test, doc-tests)
//! * loom: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p refcnt --release --test loom`
//! * Miri: `MIRIFLAGS=-Zmiri-ignore-leaks cargo miri test -p refcnt --tests`
//!   (the `call_sched` worker thread outlives `main`, hence the flag)
//! * bench: `cargo bench -p refcnt --bench primitives` (divan; the kernel
//!   bench's pairs at 1, 2 and 4 threads, on the host backend)
//!
//! # Examples
//!
//! ```
//! # #[cfg(feature = "std")] {
//! use refcnt::{host::Host, percpu_ref::{Flags, PercpuRef}};
//! let r = PercpuRef::<Host>::new(|| println!("released"), Flags::empty()).unwrap();
//! let guard = r.get();
//! drop(guard);
//! r.kill();
//! r.wait_for_release();
//! # }
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![cfg_attr(not(feature = "std"), deny(unsafe_code))]

extern crate alloc;

pub mod backend;
#[cfg(feature = "std")]
pub mod host;
pub mod kref;
#[cfg(loom)]
pub mod loom_backend;
pub mod misuse;
pub mod percpu_ref;
pub mod srcu;
mod sync;

pub use backend::{AllocError, Backend, CallbackContext, Report};
pub use misuse::Misuse;
