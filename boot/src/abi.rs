//! What the kernel and the host runner agree on.
//!
//! This file is compiled into both: into `boot` as a module and into the
//! kernel through `#[path]`. It must stay `no_std`-clean and free of
//! dependencies, so both sides see the same numbers and strings.

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// fw_cfg file through which the runner hands the kernel its command line.
pub const CMDLINE_FW_CFG: &str = "opt/refcnt/cmdline";

/// How the kernel ends a run. QEMU turns a value `v` written to the
/// debug-exit port into the process status `(v << 1) | 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything the run was asked to do succeeded.
    Success = 0x10,
    /// A panic, a CPU exception, a failed test or a bad command line.
    Failure = 0x11,
}

impl ExitCode {
    /// The QEMU process status this exit code produces.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// The exit code behind a QEMU process status, if the kernel wrote one.
    pub const fn from_qemu_status(status: i32) -> Option<Self> {
        if status == Self::Success.qemu_status() {
            Some(Self::Success)
        } else if status == Self::Failure.qemu_status() {
            Some(Self::Failure)
        } else {
            None
        }
    }
}

/// The io mode's option keys, as both command lines spell them (the
/// runner's `--io key=value`, the kernel's `key=value` words).
pub const IO_KEYS: [&str; 24] = [
    "rw",
    "bs",
    "iodepth",
    "verify",
    "submit_queues",
    "hw_queue_depth",
    "irqmode",
    "completion_nsec",
    "completion_cpu",
    "blocking",
    "memory_backed",
    "dev_bs",
    "size",
    "freeze_ms",
    "quiesce_ms",
    "limits_ms",
    "switch_ms",
    "remove_at",
    "usage",
    "numjobs",
    "compare",
    "nr_devices",
    "shared_tags",
    "poison",
];

/// What the kernel does after boot: the runner's `--mode` and the kernel's
/// `mode=` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every CPU pushes requests through the primitives, with live stats.
    Live,
    /// Boot, print the banner, exit.
    Boot,
    /// Run the in-kernel tests (all, or the ones named) and exit.
    Test,
    /// List the in-kernel tests and exit.
    List,
    /// Run the in-kernel benchmarks and exit.
    Bench,
    /// An fio-like job per CPU drives a null_blk-style device through the
    /// blk-mq-style block layer, with stats each second.
    Io,
}

impl Mode {
    /// Every mode, in the order help texts list them.
    pub const ALL: [Mode; 6] = [
        Mode::Live,
        Mode::Io,
        Mode::Boot,
        Mode::Test,
        Mode::List,
        Mode::Bench,
    ];
    /// The modes as a help text lists them.
    pub const EXPECTED: &'static str = "live, io, boot, test, list or bench";

    /// The word on both command lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Boot => "boot",
            Mode::Test => "test",
            Mode::List => "list",
            Mode::Bench => "bench",
            Mode::Io => "io",
        }
    }

    /// The mode a word names, if any.
    pub fn parse(word: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == word)
    }
}

/// Prefix of every line of the in-kernel test protocol on the serial console.
///
/// The kernel prints, one line each:
/// - `ktest: test NAME smp=1,2,8 timeout=60 selftest=0` (list mode)
/// - `ktest: start NAME`
/// - `ktest: ok NAME 123kcycles` (the test's time in thousands of TSC cycles)
/// - `ktest: FAILED NAME: reason`
/// - `ktest: done N`
pub const KTEST_PREFIX: &str = "ktest: ";
