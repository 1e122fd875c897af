//! The in-kernel test harness.
//!
//! Tests live next to the code they test, declared with [`ktest!`]. The
//! macro puts a [`KernelTest`] record into the `ktests` linker section; the
//! linker's `__start_ktests`/`__stop_ktests` symbols bound the array (the
//! target spec passes `-z nostart-stop-gc` so that the section is kept).
//!
//! In `mode=test` the kernel runs the tests the command line names (or all
//! but the harness self-tests) and prints one line per event, in the
//! protocol of [`crate::abi::KTEST_PREFIX`]. A test fails by panicking or
//! faulting: the fatal path prints `ktest: FAILED NAME: reason` and ends
//! the run, and the host runner boots again for the tests still to run.
//! Hangs are caught by the host's per-test timeout.

use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::arch::serial::{emergency_println, OneLine};
use crate::arch::{qemu, x86_64::cpu};
use crate::{abi, println};

/// One registered kernel test.
#[derive(Debug)]
#[repr(C)]
pub struct KernelTest {
    /// Full path, e.g. `kernel::mem::heap::vec_grows`.
    pub path: &'static str,
    /// The test body; it fails by panicking.
    pub func: fn(),
    /// The CPU counts the host boots this test with.
    pub smp: &'static [u32],
    /// Seconds the host waits for this test before declaring it hung.
    pub timeout_s: u32,
    /// A test of the harness itself: it is meant to fail, and runs only when
    /// named explicitly (by `boot/tests/harness.rs`).
    pub selftest: bool,
}

impl KernelTest {
    /// The name the host shows: the path without the crate name.
    pub fn name(&self) -> &'static str {
        self.path.strip_prefix("kernel::").unwrap_or(self.path)
    }
}

/// Declares a kernel test.
///
/// ```ignore
/// ktest! {
///     /// What the test shows.
///     #[smp(1, 2, 8)]   // optional: boot with each of these CPU counts (default 8)
///     #[timeout(120)]   // optional: seconds before the host calls it hung (default 60)
///     fn sums_are_exact() {
///         assert_eq!(1 + 1, 2);
///     }
/// }
/// ```
#[macro_export]
macro_rules! ktest {
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr} #[doc = $doc:literal] $($rest:tt)*) => {
        $crate::ktest!(@cfg {$smp, $timeout, $selftest} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr} #[smp($($n:literal),+)] $($rest:tt)*) => {
        $crate::ktest!(@cfg {&[$($n),+], $timeout, $selftest} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr} #[timeout($t:literal)] $($rest:tt)*) => {
        $crate::ktest!(@cfg {$smp, $t, $selftest} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr} #[selftest] $($rest:tt)*) => {
        $crate::ktest!(@cfg {$smp, $timeout, true} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr} fn $name:ident() $body:block) => {
        fn $name() $body
        const _: () = {
            #[used]
            // The section holds nothing but these records (see `all`).
            #[allow(unsafe_code)]
            #[link_section = "ktests"]
            static ENTRY: $crate::ktest::KernelTest = $crate::ktest::KernelTest {
                path: concat!(module_path!(), "::", stringify!($name)),
                func: $name,
                smp: $smp,
                timeout_s: $timeout,
                selftest: $selftest,
            };
        };
    };
    ($($rest:tt)*) => {
        $crate::ktest!(@cfg {$crate::ktest::DEFAULT_SMP, $crate::ktest::DEFAULT_TIMEOUT_S, false} $($rest)*);
    };
}

/// CPU counts a test boots with unless it says otherwise.
pub const DEFAULT_SMP: &[u32] = &[8];
/// Seconds a test may run unless it says otherwise.
pub const DEFAULT_TIMEOUT_S: u32 = 60;

/// Every registered kernel test, in link order.
pub fn all() -> &'static [KernelTest] {
    unsafe extern "C" {
        static __start_ktests: u8;
        static __stop_ktests: u8;
    }
    let start = (&raw const __start_ktests).cast::<KernelTest>();
    let stop = (&raw const __stop_ktests).cast::<KernelTest>();
    let len = (stop as usize - start as usize) / size_of::<KernelTest>();
    // SAFETY: the linker bounds the `ktests` section with these symbols, and
    // the section holds nothing but `KernelTest` statics (only `ktest!`
    // names it), each of whose size is a multiple of its alignment, so they
    // lie back to back as an array. They are immutable statics.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// The test running now, for the fatal path to name.
static CURRENT: AtomicPtr<KernelTest> = AtomicPtr::new(core::ptr::null_mut());

/// Prints every test for the host (`mode=list`) and exits.
pub fn list() -> ! {
    for test in all() {
        print_line(format_args!(
            "test {} smp={} timeout={} selftest={}",
            test.name(),
            Joined(test.smp),
            test.timeout_s,
            u8::from(test.selftest)
        ));
    }
    print_line(format_args!("done {}", all().len()));
    qemu::exit(abi::ExitCode::Success)
}

/// Runs the named tests (all non-self-tests for `None`) and exits.
pub fn run(names: Option<&[String]>) -> ! {
    let mut ran = 0;
    let mut missing = false;
    let wanted: alloc::vec::Vec<&'static KernelTest> = match names {
        None => all().iter().filter(|t| !t.selftest).collect(),
        Some(names) => names
            .iter()
            .filter_map(|n| {
                let found = all().iter().find(|t| t.name() == n);
                if found.is_none() {
                    print_line(format_args!(
                        "FAILED {n}: no such kernel test (mode=list shows them)"
                    ));
                    missing = true;
                }
                found
            })
            .collect(),
    };
    for test in wanted {
        print_line(format_args!("start {}", test.name()));
        // Release: pairs with the Acquire in `report_fatal`, which may run on
        // another CPU's fatal path and must see a complete record.
        CURRENT.store(core::ptr::from_ref(test).cast_mut(), Ordering::Release);
        let begin = cpu::rdtsc();
        (test.func)();
        let cycles = cpu::rdtsc() - begin;
        CURRENT.store(core::ptr::null_mut(), Ordering::Release);
        print_line(format_args!("ok {} {}kcycles", test.name(), cycles / 1000));
        ran += 1;
    }
    print_line(format_args!("done {ran}"));
    qemu::exit(if missing {
        abi::ExitCode::Failure
    } else {
        abi::ExitCode::Success
    })
}

/// Called on the fatal path: marks the running test, if any, as failed.
pub fn report_fatal(reason: fmt::Arguments<'_>) {
    // Acquire: pairs with the Release store in `run`.
    let test = CURRENT.load(Ordering::Acquire);
    // SAFETY: `CURRENT` is null or points at a `KernelTest` static.
    if let Some(test) = unsafe { test.as_ref() } {
        emergency_println(format_args!(
            "{}FAILED {}: {}",
            abi::KTEST_PREFIX,
            test.name(),
            reason
        ));
    }
}

fn print_line(args: fmt::Arguments<'_>) {
    println!("{}{}", abi::KTEST_PREFIX, Flat(args));
}

/// Displays arguments folded onto one line.
struct Flat<'a>(fmt::Arguments<'a>);

impl fmt::Display for Flat<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::write(&mut OneLine(f), self.0)
    }
}

/// Displays a list of numbers as `1,2,8`.
struct Joined<'a>(&'a [u32]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

crate::ktest! {
    /// Harness self-test: a panicking test is reported as FAILED with its
    /// message. Run by boot/tests/harness.rs, not by the suite.
    #[selftest]
    fn selftest_panic_is_reported() {
        panic!("deliberate failure {}", 42);
    }
}

crate::ktest! {
    /// Harness self-test: a test that never ends is caught by the host's
    /// timeout. Run by boot/tests/harness.rs, not by the suite.
    #[selftest]
    #[timeout(3)]
    fn selftest_hang_is_caught() {
        loop {
            core::hint::spin_loop();
        }
    }
}
