//! Options of the runner (`cargo run -- [options]`, `scripts/run`).
//!
//! Every option is checked before QEMU starts; a bad one is an error that
//! says what was wrong and what would be accepted.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How QEMU runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: the default; boots in about two seconds here.
    Tcg,
    /// Hardware virtualisation through /dev/kvm (slow to boot when nested).
    Kvm,
}

pub use crate::abi::Mode;

/// A complete, checked set of options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Number of CPUs (`-smp`).
    pub smp: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Accelerator.
    pub accel: Accel,
    /// Run mode.
    pub mode: Mode,
    /// Kill QEMU after this long; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Start QEMU halted, waiting for GDB on port 1234.
    pub gdb: bool,
    /// In test mode: the tests to run (default: all).
    pub tests: Option<Vec<String>>,
    /// In live mode: seconds to run (default: the kernel's, 10).
    pub duration: Option<u32>,
    /// In bench mode: pairs per reader per run (default: calibrated).
    pub bench_loops: Option<u32>,
    /// In bench mode: milliseconds per reader per run (default: the
    /// kernel's, 300).
    pub bench_ms: Option<u32>,
    /// In bench mode: runs per setting (default: the kernel's).
    pub bench_runs: Option<u32>,
    /// In bench mode: Linux's refscale figures to put beside ours (the
    /// file `scripts/linux-refscale` writes).
    pub linux_results: Option<PathBuf>,
    /// In io mode: device and job options, `key=value` words for the
    /// kernel (keys from [`crate::abi::IO_KEYS`]; the kernel checks values).
    pub io: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            smp: 8,
            memory_mib: 1024,
            accel: Accel::Tcg,
            mode: Mode::Io,
            timeout: Some(Duration::from_secs(600)),
            gdb: false,
            tests: None,
            duration: None,
            bench_loops: None,
            bench_ms: None,
            bench_runs: None,
            linux_results: None,
            io: Vec::new(),
        }
    }
}

impl Options {
    /// The kernel command line these options imply.
    pub fn kernel_cmdline(&self) -> String {
        let mut line = format!("mode={}", self.mode.as_str());
        if let Some(tests) = &self.tests {
            line.push_str(" tests=");
            line.push_str(&tests.join(","));
        }
        if let Some(n) = self.duration {
            line.push_str(&format!(" duration={n}"));
        }
        if let Some(n) = self.bench_loops {
            line.push_str(&format!(" bench_loops={n}"));
        }
        if let Some(n) = self.bench_ms {
            line.push_str(&format!(" bench_ms={n}"));
        }
        if let Some(n) = self.bench_runs {
            line.push_str(&format!(" bench_runs={n}"));
        }
        for word in &self.io {
            line.push(' ');
            line.push_str(word);
        }
        line
    }
}

/// The result of parsing: run, or print help.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Boot with these options.
    Run(Options),
    /// `--help` was given.
    Help,
}

/// A bad command line.
#[derive(Debug, PartialEq, Eq)]
pub struct OptionError(pub String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see --help)", self.0)
    }
}

impl std::error::Error for OptionError {}

/// The text of `--help`.
pub const HELP: &str = "\
Boot the refcnt kernel in QEMU and stream its serial console.

Usage: cargo run --release -- [options]      (or scripts/run [options])

Options:
  --smp N          CPUs to boot, 1..=255 (default 8)
  --memory SIZE    guest memory, e.g. 512M or 2G; 128M..=64G (default 1G)
  --accel A        tcg (default) or kvm (needs /dev/kvm; slow to boot when nested)
  --mode M         io (default): an fio-like job per CPU drives a
                     null_blk-style device through the blk-mq-style block
                     layer (percpu_ref usage counter, SRCU), with a freeze,
                     a quiesce and a limits update each second and a
                     hot-remove and re-create 2 s before the end
                   live: every CPU pushes bare requests through percpu_ref
                     and SRCU (no block layer), with stats each second
                   boot: banner, then exit
                   test: run the in-kernel tests; list: list them
                   bench: run the benchmarks at 1, 2, 4, 8 CPUs
  --duration SECS  with --mode live or io: seconds to run, 1..=3600
                     (default 10)
  --io K=V,K=V      with --mode io: device and job options (fio's and
                     null_blk's names): rw=read|write|randread|randwrite|
                     randrw, bs=BYTES, iodepth=N, verify=0|1, submit_queues=N,
                     hw_queue_depth=N, irqmode=none|softirq|timer,
                     completion_nsec=NS (timer), completion_cpu=submitter|
                     home|rr, blocking=0|1,
                     memory_backed=0|1, dev_bs=512|4096, size=MIB,
                     freeze_ms=MS, quiesce_ms=MS, limits_ms=MS, switch_ms=MS,
                     remove_at=SECOND, usage=percpu|atomic|absent,
                     numjobs=N, nr_devices=N, shared_tags=0|1,
                     poison=1 (freed heap blocks poisoned and checked),
                     compare=1 (the usage counter's cost: per-CPU,
                     atomic and absent alternated, 1 job and all CPUs)
  --tests A,B      with --mode test: run only these tests
  --bench-ms MS    with --mode bench: milliseconds per reader per run, the
                     pairs calibrated per case and CPU count (default 300)
  --bench-loops N  with --mode bench: a fixed number of pairs per reader per
                     run instead (short smoke runs)
  --bench-runs N   with --mode bench: runs per setting (default 5)
  --linux-results FILE
                   with --mode bench: put Linux's refscale figures from FILE
                     (written by scripts/linux-refscale) beside ours
  --timeout SECS   kill QEMU after SECS seconds, 0 = never (default 600, more
                     for a long --duration or --bench-ms)
  --gdb            start halted; QEMU waits for GDB on localhost:1234
  -h, --help       print this help

Exit status: 0 when the kernel reports success, 1 on a panic, CPU fault,
failed test or timeout, 2 for a bad option.
";

/// Parses the runner's arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, OptionError> {
    let mut opts = Options::default();
    let mut timeout_given = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, OptionError> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| OptionError(format!("{flag} needs a value: {what}")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--smp" => {
                let v = value("a CPU count from 1 to 255")?;
                opts.smp = parse_in_range(&flag, &v, 1, 255)?;
            }
            "--memory" => opts.memory_mib = parse_memory(&value("a size such as 512M or 2G")?)?,
            "--accel" => {
                opts.accel = match value("tcg or kvm")?.as_str() {
                    "tcg" => Accel::Tcg,
                    "kvm" => Accel::Kvm,
                    other => {
                        return Err(OptionError(format!("--accel {other}: expected tcg or kvm")))
                    }
                }
            }
            "--mode" => {
                let v = value(Mode::EXPECTED)?;
                opts.mode = Mode::parse(&v).ok_or_else(|| {
                    OptionError(format!("--mode {v}: expected {}", Mode::EXPECTED))
                })?;
            }
            "--tests" => {
                let v = value("comma-separated test names")?;
                let names: Vec<String> = v.split(',').map(str::to_string).collect();
                if names
                    .iter()
                    .any(|n| n.is_empty() || n.contains(char::is_whitespace))
                {
                    return Err(OptionError(format!(
                        "--tests {v}: expected comma-separated test names without spaces"
                    )));
                }
                opts.tests = Some(names);
            }
            "--timeout" => {
                let secs = parse_in_range(&flag, &value("seconds, 0 for none")?, 0, 86_400)?;
                opts.timeout = (secs > 0).then(|| Duration::from_secs(secs.into()));
                timeout_given = true;
            }
            "--duration" => {
                let v = value("seconds")?;
                opts.duration = Some(parse_in_range(&flag, &v, 1, 3600)?);
            }
            "--bench-loops" => {
                let v = value("pairs per reader per run")?;
                opts.bench_loops = Some(parse_in_range(&flag, &v, 1, 1_000_000_000)?);
            }
            "--bench-ms" => {
                let v = value("milliseconds per reader per run")?;
                opts.bench_ms = Some(parse_in_range(&flag, &v, 1, 60_000)?);
            }
            "--io" => {
                let v = value("key=value words, comma-separated (see --help)")?;
                for word in v.split(',') {
                    match word.split_once('=') {
                        Some((k, val)) if crate::abi::IO_KEYS.contains(&k) && !val.is_empty() => {
                            opts.io.push(word.to_string())
                        }
                        _ => {
                            return Err(OptionError(format!(
                                "--io {word}: expected key=value with a key from: {}",
                                crate::abi::IO_KEYS.join(", ")
                            )))
                        }
                    }
                }
            }
            "--bench-runs" => {
                let v = value("runs per setting")?;
                opts.bench_runs = Some(parse_in_range(&flag, &v, 1, 1000)?);
            }
            "--linux-results" => {
                let v = value("the JSON file scripts/linux-refscale writes")?;
                if v.is_empty() {
                    return Err(OptionError("--linux-results needs a file name".into()));
                }
                opts.linux_results = Some(PathBuf::from(v));
            }
            "--gdb" => {
                if inline.is_some() {
                    return Err(OptionError("--gdb takes no value".into()));
                }
                opts.gdb = true;
            }
            other => return Err(OptionError(format!("unknown option `{other}`"))),
        }
    }
    if !opts.io.is_empty() && opts.mode != Mode::Io {
        return Err(OptionError("--io goes with --mode io".into()));
    }
    if opts.tests.is_some() && opts.mode != Mode::Test {
        return Err(OptionError("--tests goes with --mode test".into()));
    }
    if opts.duration.is_some() && !matches!(opts.mode, Mode::Live | Mode::Io) {
        return Err(OptionError("--duration goes with --mode live or io".into()));
    }
    if let (Some(secs), false, Some(timeout)) = (opts.duration, timeout_given, opts.timeout) {
        // A long live run must not be cut by the default timeout: allow
        // the run plus two minutes for boot and the final checks.
        opts.timeout = Some(timeout.max(Duration::from_secs(u64::from(secs) + 120)));
    }
    if let (Mode::Bench, false, Some(timeout)) = (opts.mode, timeout_given, opts.timeout) {
        // A long bench must not be cut by the default timeout either:
        // allow every setting's runs (and a calibration run each) at twice
        // their length, plus the latencies and the boot.
        let ms = u64::from(opts.bench_ms.unwrap_or(DEFAULT_BENCH_MS));
        let runs = u64::from(opts.bench_runs.unwrap_or(DEFAULT_BENCH_RUNS));
        let secs = BENCH_SETTINGS * (runs + 1) * ms * 2 / 1000 + 180;
        opts.timeout = Some(timeout.max(Duration::from_secs(secs)));
    }
    if let (Some(secs), Some(timeout)) = (opts.duration, opts.timeout) {
        if timeout.as_secs() < u64::from(secs) {
            return Err(OptionError(format!(
                "--timeout {} is shorter than --duration {secs}; raise it or use --timeout 0",
                timeout.as_secs()
            )));
        }
    }
    if (opts.bench_loops.is_some() || opts.bench_ms.is_some() || opts.bench_runs.is_some())
        && opts.mode != Mode::Bench
    {
        return Err(OptionError(
            "--bench-loops, --bench-ms and --bench-runs go with --mode bench".into(),
        ));
    }
    if opts.bench_loops.is_some() && opts.bench_ms.is_some() {
        return Err(OptionError(
            "--bench-loops and --bench-ms both set a run's length; give one".into(),
        ));
    }
    if opts.linux_results.is_some() && opts.mode != Mode::Bench {
        return Err(OptionError("--linux-results goes with --mode bench".into()));
    }
    Ok(Parsed::Run(opts))
}

/// The kernel's default milliseconds per reader per bench run.
const DEFAULT_BENCH_MS: u32 = 300;
/// The kernel's default runs per bench setting.
const DEFAULT_BENCH_RUNS: u32 = 5;
/// Bench settings (cases x CPU counts) to allow time for: 14 cases at 1, 2,
/// 4 and 8 CPUs, rounded up.
const BENCH_SETTINGS: u64 = 64;

fn parse_in_range(flag: &str, v: &str, min: u32, max: u32) -> Result<u32, OptionError> {
    match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(OptionError(format!(
            "{flag} {v}: expected a whole number from {min} to {max}"
        ))),
    }
}

/// Parses `512M`, `2G`, `1024` (MiB) into MiB.
fn parse_memory(v: &str) -> Result<u32, OptionError> {
    let bad = || {
        OptionError(format!(
            "--memory {v}: expected a size from 128M to 64G, e.g. 512M or 2G"
        ))
    };
    let (digits, scale) = match v.strip_suffix(['G', 'g']) {
        Some(d) => (d, 1024),
        None => (v.strip_suffix(['M', 'm']).unwrap_or(v), 1),
    };
    let mib = digits
        .parse::<u32>()
        .map_err(|_| bad())?
        .checked_mul(scale)
        .ok_or_else(bad)?;
    if (128..=64 * 1024).contains(&mib) {
        Ok(mib)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Parsed, OptionError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    fn run(args: &[&str]) -> Options {
        match parse_strs(args).unwrap() {
            Parsed::Run(o) => o,
            Parsed::Help => panic!("expected options"),
        }
    }

    #[test]
    fn defaults_are_eight_tcg_cpus() {
        let o = run(&[]);
        assert_eq!((o.smp, o.accel, o.mode), (8, Accel::Tcg, Mode::Io));
        assert_eq!(o.kernel_cmdline(), "mode=io");
        assert_eq!(
            run(&["--duration", "3"]).kernel_cmdline(),
            "mode=io duration=3"
        );
        assert_eq!(
            run(&["--io", "rw=randread,iodepth=4", "--io=irqmode=none"]).kernel_cmdline(),
            "mode=io rw=randread iodepth=4 irqmode=none"
        );
    }

    #[test]
    fn io_options_are_checked_by_key() {
        for (args, message) in [
            (
                &["--io", "speed=9"][..],
                "--io speed=9: expected key=value with a key from: rw, bs",
            ),
            (&["--io", "rw"][..], "--io rw: expected key=value"),
            (&["--io", "rw="][..], "--io rw=: expected key=value"),
            (
                &["--mode", "live", "--io", "rw=read"][..],
                "--io goes with --mode io",
            ),
        ] {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn every_option_is_read_in_both_spellings() {
        let o = run(&[
            "--smp",
            "3",
            "--memory=2G",
            "--accel",
            "kvm",
            "--mode=test",
            "--tests",
            "a::b,c",
            "--timeout",
            "0",
            "--gdb",
        ]);
        assert_eq!(o.smp, 3);
        assert_eq!(o.memory_mib, 2048);
        assert_eq!(o.accel, Accel::Kvm);
        assert_eq!(o.timeout, None);
        assert!(o.gdb);
        assert_eq!(o.kernel_cmdline(), "mode=test tests=a::b,c");
        assert_eq!(run(&["--memory", "512m"]).memory_mib, 512);
        let o = run(&["--mode", "bench", "--linux-results=t/l.json"]);
        assert_eq!(o.linux_results, Some(PathBuf::from("t/l.json")));
        assert_eq!(o.kernel_cmdline(), "mode=bench");
        let o = run(&["--mode", "bench", "--bench-ms", "40", "--bench-runs", "3"]);
        assert_eq!(o.kernel_cmdline(), "mode=bench bench_ms=40 bench_runs=3");
        // The default timeout grows with a long bench, unless one is given.
        let t = |args: &[&str]| run(args).timeout.map(|d| d.as_secs());
        assert_eq!(t(&["--mode", "bench"]), Some(600));
        assert_eq!(
            t(&["--mode", "bench", "--bench-ms", "2000"]),
            Some(64 * 6 * 4 + 180)
        );
        assert_eq!(
            t(&["--mode", "bench", "--bench-ms", "2000", "--timeout", "30"]),
            Some(30)
        );
        assert_eq!(parse_strs(&["--help"]).unwrap(), Parsed::Help);
    }

    #[test]
    fn bad_options_say_what_was_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--smp", "0"],
                "--smp 0: expected a whole number from 1 to 255",
            ),
            (&["--smp", "eight"], "expected a whole number"),
            (&["--smp"], "--smp needs a value"),
            (&["--memory", "12K"], "--memory 12K: expected a size"),
            (&["--memory", "64M"], "from 128M to 64G"),
            (&["--accel", "hvf"], "--accel hvf: expected tcg or kvm"),
            (
                &["--mode", "fast"],
                "--mode fast: expected live, io, boot, test, list or bench",
            ),
            (&["--tests", "a"], "--tests goes with --mode test"),
            (
                &["--mode", "test", "--tests", "a,,b"],
                "expected comma-separated test names",
            ),
            (&["--bench-runs", "3"], "go with --mode bench"),
            (
                &["--mode", "boot", "--duration", "3"],
                "--duration goes with --mode live or io",
            ),
            (
                &["--duration", "0"],
                "--duration 0: expected a whole number from 1 to 3600",
            ),
            (
                &["--mode", "bench", "--bench-loops", "0"],
                "--bench-loops 0: expected a whole number from 1",
            ),
            (
                &["--mode", "bench", "--bench-ms", "0"],
                "--bench-ms 0: expected a whole number from 1 to 60000",
            ),
            (
                &["--mode", "bench", "--bench-ms", "50", "--bench-loops", "9"],
                "--bench-loops and --bench-ms both set a run's length; give one",
            ),
            (&["--bench-ms", "50"], "go with --mode bench"),
            (&["--frobnicate"], "unknown option `--frobnicate`"),
            (
                &["--linux-results", "x.json"],
                "--linux-results goes with --mode bench",
            ),
            (
                &["--mode", "bench", "--linux-results"],
                "--linux-results needs a value",
            ),
            (
                &["--mode", "bench", "--linux-results="],
                "--linux-results needs a file name",
            ),
            (&["--gdb=yes"], "--gdb takes no value"),
        ];
        for (args, message) in cases {
            let err = parse_strs(args).expect_err(&format!("{args:?} must be refused"));
            assert!(
                err.to_string().contains(message),
                "{args:?}: `{err}` lacks `{message}`"
            );
        }
    }
}
