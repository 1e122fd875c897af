//! The kernel command line, handed over by the host runner through QEMU
//! fw_cfg (see [`crate::abi::CMDLINE_FW_CFG`]).
//!
//! Format: space-separated `key=value` words. Unknown keys and bad values
//! are errors: the runner validates options before QEMU starts, so a bad
//! word here means the two sides disagree, and that must not pass silently.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::arch::fwcfg;

pub use crate::abi::Mode;

/// A parsed command line.
#[derive(Debug)]
pub struct CommandLine {
    raw: String,
    mode: Mode,
    tests: Option<Vec<String>>,
    bench_loops: Option<u64>,
    bench_ms: u64,
    bench_runs: usize,
    duration: u64,
    io: crate::io::IoConfig,
}

/// Why a command line was refused.
#[derive(Debug)]
pub enum CmdlineError {
    /// A word is not `key=value`.
    NotKeyValue(String),
    /// A key the kernel does not know.
    UnknownKey(String),
    /// A key with a value outside its range.
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The fw_cfg file exists but is not UTF-8.
    NotUtf8,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotKeyValue(w) => write!(f, "`{w}` is not of the form key=value"),
            Self::UnknownKey(k) => write!(
                f,
                "unknown key `{k}` (known: mode, tests, duration, bench_loops, bench_ms, bench_runs, {})",
                crate::io::IoConfig::KEYS.join(", ")
            ),
            Self::BadValue {
                key,
                value,
                expected,
            } => write!(f, "`{key}={value}`: expected {expected}"),
            Self::NotUtf8 => write!(f, "the command line is not UTF-8"),
        }
    }
}

impl CommandLine {
    /// Reads the command line from fw_cfg; no fw_cfg file means an empty line.
    pub fn from_firmware() -> Result<Self, CmdlineError> {
        let bytes = fwcfg::read_file(crate::abi::CMDLINE_FW_CFG).unwrap_or_default();
        let text = String::from_utf8(bytes).map_err(|_| CmdlineError::NotUtf8)?;
        Self::parse(&text)
    }

    /// Parses a command line.
    pub fn parse(text: &str) -> Result<Self, CmdlineError> {
        let mut line = CommandLine {
            raw: text.trim().to_string(),
            mode: Mode::Boot,
            tests: None,
            bench_loops: None,
            bench_ms: 300,
            bench_runs: 5,
            duration: 10,
            io: crate::io::IoConfig::default(),
        };
        for word in text.split_ascii_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| CmdlineError::NotKeyValue(word.to_string()))?;
            let bad = |expected| CmdlineError::BadValue {
                key: key.to_string(),
                value: value.to_string(),
                expected,
            };
            match key {
                "mode" => {
                    line.mode = Mode::parse(value).ok_or_else(|| bad(Mode::EXPECTED))?;
                }
                "tests" => {
                    if value.is_empty() {
                        return Err(bad("a comma-separated list of test names"));
                    }
                    line.tests = Some(value.split(',').map(String::from).collect());
                }
                "bench_loops" => {
                    line.bench_loops =
                        Some(positive(value).ok_or_else(|| bad("a positive number of pairs"))?)
                }
                "bench_ms" => {
                    line.bench_ms =
                        positive(value).ok_or_else(|| bad("a positive number of milliseconds"))?
                }
                "duration" => {
                    line.duration =
                        positive(value).ok_or_else(|| bad("a positive number of seconds"))?;
                    line.io.runtime = line.duration;
                }
                "bench_runs" => {
                    line.bench_runs =
                        positive(value).ok_or_else(|| bad("a positive number of runs"))? as usize
                }
                _ => match line.io.set(key, value) {
                    Some(Ok(())) => {}
                    Some(Err(expected)) => return Err(bad(expected)),
                    None => return Err(CmdlineError::UnknownKey(key.to_string())),
                },
            }
        }
        Ok(line)
    }

    /// The line as received.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The run mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Benchmark settings: how long a run is (a fixed number of pairs per
    /// reader if `bench_loops` was given, else `bench_ms` milliseconds per
    /// reader, 300 by default), and runs per setting.
    pub fn bench(&self) -> (crate::bench::Length, usize) {
        let length = match self.bench_loops {
            Some(n) => crate::bench::Length::Loops(n),
            None => crate::bench::Length::Millis(self.bench_ms),
        };
        (length, self.bench_runs)
    }

    /// The io mode's options (its runtime is `duration`).
    pub fn io(&self) -> &crate::io::IoConfig {
        &self.io
    }

    /// Seconds the live mode runs.
    pub fn duration(&self) -> u64 {
        self.duration
    }

    /// The tests named by `tests=`, or `None` for all.
    pub fn tests(&self) -> Option<&[String]> {
        self.tests.as_deref()
    }
}

/// A whole number above zero.
fn positive(value: &str) -> Option<u64> {
    value.parse().ok().filter(|&n| n > 0)
}

crate::ktest! {
    fn cmdline_parses_and_refuses() {
        let line = CommandLine::parse("mode=test tests=a::b,c").unwrap();
        assert_eq!(line.mode(), Mode::Test);
        assert_eq!(line.tests().unwrap(), ["a::b", "c"]);
        assert_eq!(CommandLine::parse("").unwrap().mode(), Mode::Boot);
        assert!(matches!(CommandLine::parse("mode"), Err(CmdlineError::NotKeyValue(_))));
        assert!(matches!(CommandLine::parse("colour=red"), Err(CmdlineError::UnknownKey(_))));
        assert!(matches!(CommandLine::parse("mode=fast"), Err(CmdlineError::BadValue { .. })));
        assert!(matches!(CommandLine::parse("duration=0"), Err(CmdlineError::BadValue { .. })));
        use crate::bench::Length;
        assert_eq!(CommandLine::parse("bench_runs=3 bench_loops=7").unwrap().bench(), (Length::Loops(7), 3));
        assert_eq!(CommandLine::parse("bench_ms=40").unwrap().bench(), (Length::Millis(40), 5));
        assert_eq!(CommandLine::parse("").unwrap().bench(), (Length::Millis(300), 5));
        assert!(matches!(CommandLine::parse("bench_ms=0"), Err(CmdlineError::BadValue { .. })));
    }
}
