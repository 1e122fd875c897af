//! The in-kernel test harness.
//!
//! Tests live next to the code they test, declared with [`ktest!`](macro@crate::ktest). The
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
//!
//! A test marked `#[should_panic(expected = "text")]` passes by panicking
//! with a message that contains `text` (a misuse check, say): the fatal
//! path recognises the expected panic, prints `ktest: ok NAME` and ends
//! the run with success, so the host boots again for the tests still to
//! run, as after a failure. A panic without the text fails the test, and
//! so does returning. As each one ends its boot, a run of every test
//! (`mode=test` with no names) leaves them out and says so; the host's
//! `cargo test` names every test, so it runs them, one boot each. Named
//! explicitly, they run after the other named tests.

use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

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
    /// For a test that passes by panicking: a text (at most
    /// [`MAX_EXPECTED`] bytes) that the panic message must contain.
    pub should_panic: Option<&'static str>,
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
/// ktest! {
///     /// Passes by panicking with a message that contains the text (see
///     /// the module documentation: it ends its boot).
///     #[should_panic(expected = "out of range")]
///     fn refuses_a_bad_index() {
///         check(99);
///     }
/// }
/// ```
#[macro_export]
macro_rules! ktest {
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr, $panic:expr} #[doc = $doc:literal] $($rest:tt)*) => {
        $crate::ktest!(@cfg {$smp, $timeout, $selftest, $panic} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr, $panic:expr} #[smp($($n:literal),+)] $($rest:tt)*) => {
        $crate::ktest!(@cfg {&[$($n),+], $timeout, $selftest, $panic} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr, $panic:expr} #[timeout($t:literal)] $($rest:tt)*) => {
        $crate::ktest!(@cfg {$smp, $t, $selftest, $panic} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr, $panic:expr} #[selftest] $($rest:tt)*) => {
        $crate::ktest!(@cfg {$smp, $timeout, true, $panic} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr, $panic:expr} #[should_panic(expected = $text:literal)] $($rest:tt)*) => {
        const _: () = assert!($text.len() <= $crate::ktest::MAX_EXPECTED, "should_panic: the expected text is too long");
        $crate::ktest!(@cfg {$smp, $timeout, $selftest, Some($text)} $($rest)*);
    };
    (@cfg {$smp:expr, $timeout:expr, $selftest:expr, $panic:expr} fn $name:ident() $body:block) => {
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
                should_panic: $panic,
            };
        };
    };
    ($($rest:tt)*) => {
        $crate::ktest!(@cfg {$crate::ktest::DEFAULT_SMP, $crate::ktest::DEFAULT_TIMEOUT_S, false, None} $($rest)*);
    };
}

/// The longest text a `should_panic` test may expect.
pub const MAX_EXPECTED: usize = 256;

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
/// Set while the body of a `should_panic` test runs: a panic then may be
/// the expected one (not after the body returned, when the harness itself
/// panics to fail the test).
static EXPECTING: AtomicBool = AtomicBool::new(false);
/// Named tests after the running one (for the note an expected panic
/// prints, as it ends the boot before them).
static STILL_TO_RUN: AtomicUsize = AtomicUsize::new(0);

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

/// Runs the named tests (all non-self-tests for `None`) and exits. Hooks
/// the fatal path first ([`crate::arch::FatalHooks`]), so that a failure
/// names the running test and an expected panic passes it.
pub fn run(names: Option<&[String]>) -> ! {
    crate::arch::set_fatal_hooks(crate::arch::FatalHooks {
        expected: expected_fatal,
        report: report_fatal,
    });
    let mut ran = 0;
    let mut missing = false;
    let mut left_out = 0;
    let mut wanted: alloc::vec::Vec<&'static KernelTest> = match names {
        None => all()
            .iter()
            .filter(|t| !t.selftest)
            .filter(|t| {
                // Each ends the boot: run only when named.
                let ends_the_boot = t.should_panic.is_some();
                left_out += usize::from(ends_the_boot);
                !ends_the_boot
            })
            .collect(),
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
    // Tests that end the boot by passing go last (a stable sort).
    wanted.sort_by_key(|t| t.should_panic.is_some());
    for (i, &test) in wanted.iter().enumerate() {
        // Relaxed: read on this CPU's fatal path, or after the NMI that
        // stopped this CPU (which orders it).
        STILL_TO_RUN.store(wanted.len() - i - 1, Ordering::Relaxed);
        print_line(format_args!("start {}", test.name()));
        // Release: pairs with the Acquire in `report_fatal`, which may run on
        // another CPU's fatal path and must see a complete record.
        CURRENT.store(core::ptr::from_ref(test).cast_mut(), Ordering::Release);
        let begin = cpu::rdtsc();
        // SeqCst (both): the flag is set before the body runs and cleared
        // before the panic below, as any CPU's fatal path sees it.
        EXPECTING.store(test.should_panic.is_some(), Ordering::SeqCst);
        (test.func)();
        EXPECTING.store(false, Ordering::SeqCst);
        if let Some(text) = test.should_panic {
            panic!("the test returned; it should have panicked with a message containing {text:?}");
        }
        let cycles = cpu::rdtsc() - begin;
        CURRENT.store(core::ptr::null_mut(), Ordering::Release);
        print_line(format_args!("ok {} {}kcycles", test.name(), cycles / 1000));
        ran += 1;
    }
    if left_out > 0 {
        println!(
            "ktest harness: {left_out} should_panic tests left out (each ends the boot); name them with --tests, or run cargo test"
        );
    }
    print_line(format_args!("done {ran}"));
    qemu::exit(if missing {
        abi::ExitCode::Failure
    } else {
        abi::ExitCode::Success
    })
}

/// Called first on the fatal path (after the other CPUs were stopped):
/// when the running test expects this failure (`should_panic`, and
/// `reason` contains its text), prints its `ok` line and returns true, and
/// the caller ends the run with success. Does not allocate or lock.
fn expected_fatal(reason: fmt::Arguments<'_>) -> bool {
    // SeqCst: pairs with the stores in `run`.
    if !EXPECTING.load(Ordering::SeqCst) {
        return false;
    }
    // Acquire: pairs with the Release store in `run`.
    let test = CURRENT.load(Ordering::Acquire);
    // SAFETY: `CURRENT` is null or points at a `KernelTest` static.
    let Some(test) = (unsafe { test.as_ref() }) else {
        return false;
    };
    let Some(text) = test.should_panic else {
        return false;
    };
    let mut finder = Finder::new(text.as_bytes());
    // A failing Display impl ends the search with what was seen so far.
    let _ = fmt::write(&mut finder, reason);
    if !finder.found {
        return false;
    }
    emergency_println(format_args!(
        "expected panic on cpu {}: {}",
        crate::arch::cpu_id(),
        Flat(reason)
    ));
    emergency_println(format_args!(
        "{}ok {} (panicked as expected)",
        abi::KTEST_PREFIX,
        test.name()
    ));
    let left = STILL_TO_RUN.load(Ordering::Relaxed);
    if left > 0 {
        emergency_println(format_args!(
            "ktest harness: the expected panic ends this boot; {left} named tests did not run (the host's cargo test boots again for them)"
        ));
    }
    true
}

/// Whether formatted text contains a needle, without allocating: keeps the
/// last `needle.len()` bytes seen.
struct Finder<'a> {
    needle: &'a [u8],
    window: [u8; MAX_EXPECTED],
    len: usize,
    found: bool,
}

impl<'a> Finder<'a> {
    fn new(needle: &'a [u8]) -> Self {
        Finder {
            needle,
            window: [0; MAX_EXPECTED],
            len: 0,
            found: needle.is_empty(),
        }
    }
}

impl fmt::Write for Finder<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = self.needle.len();
        if n > MAX_EXPECTED {
            return Ok(()); // never found (the macro refuses such texts)
        }
        for &b in s.as_bytes() {
            if self.found {
                break;
            }
            if self.len == n {
                self.window.copy_within(1..n, 0);
                self.len -= 1;
            }
            self.window[self.len] = b;
            self.len += 1;
            self.found = self.len == n && self.window[..n] == *self.needle;
        }
        Ok(())
    }
}

/// Called on the fatal path: marks the running test, if any, as failed.
fn report_fatal(reason: fmt::Arguments<'_>) {
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

crate::ktest! {
    /// The expected-panic matcher finds its text across the pieces a
    /// message is formatted in, and only there.
    #[smp(1)]
    fn should_panic_matcher_finds_text_across_pieces() {
        let finds = |needle: &str, args: fmt::Arguments<'_>| {
            let mut finder = Finder::new(needle.as_bytes());
            fmt::write(&mut finder, args).unwrap();
            finder.found
        };
        assert!(finds("slot 12 is out", format_args!("per-CPU slot {} is out of range", 12)));
        assert!(finds("cpu 3", format_args!("on c{}u {}", "p", 3)));
        assert!(finds("", format_args!("anything")));
        assert!(!finds("slot 13", format_args!("per-CPU slot {} is out of range", 12)));
        assert!(!finds("range!", format_args!("per-CPU slot {} is out of range", 12)));
        assert!(finds("aab", format_args!("a{}ab", "a")), "a partial match restarts correctly");
    }
}
