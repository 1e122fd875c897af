//! Linux's own figures beside ours: the output of refscale
//! (`kernel/rcu/refscale.c`, with our `percpu_ref` and `percpu_ref-atomic`
//! scale types added) and of our `gp_latency` module
//! (`scripts/linux/gp_latency.c`) as `scripts/linux-refscale` captures
//! them, the result file it writes (`target/bench/linux-refscale.json`),
//! which of our bench rows each refscale scale type compares with, and
//! which of our latency rows each Linux latency row compares with.
//!
//! The console log is the guest's serial output with a few `# key: value`
//! lines in front (written by the script). Everything measured comes from
//! refscale's own lines in the dmesg the guest dumps after each session:
//!
//! ```text
//! [    6.500421] jiffies-ref-scale: --- Start of test:  verbose=0 ... loops=8543357 nreaders=8 nruns=2 readdelay=0
//! [    6.791615] jiffies-ref-scale: END OF TEST. Calculating average duration per loop (nanoseconds)...
//! [    6.791628] Runs<TAB>Time(ns)
//! [    6.791743] 1<TAB>5.251
//! [    6.791743] 2<TAB>5.652
//! ```
//!
//! `Time(ns)` is, per run, the readers' summed loop time divided by
//! readers x loops: ns per read-side pair per reader, as our bench reports.
//!
//! The latencies are one line each from `gp_latency`, in ns:
//!
//! ```text
//! [    8.799445] gp-latency: synchronize_rcu, idle | samples=10 | p50_ns=16051543 | p99_ns=20059549 | max_ns=20059549
//! ```

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Our bench rows that have a refscale counterpart, and its scale type.
/// Linux's `refcnt` is `atomic_inc` + `atomic_dec` on one shared counter;
/// its `rcu` is `rcu_read_lock` + `rcu_read_unlock`, which on Debian's
/// `CONFIG_PREEMPT_RCU` kernel are out-of-line nesting-count updates.
pub const MATCHES: &[(&str, &str)] = &[
    ("plain load (refscale jiffies)", "jiffies"),
    ("lock xadd pair, shared line", "refcnt"),
    ("kref get+put", "refcnt"),
    // Our percpu_ref against Linux's (the scale types our patch adds to
    // refscale): a per-CPU ref, and a ref that stays atomic.
    ("percpu_ref get+put, per-CPU", "percpu_ref"),
    ("percpu_ref get+put, atomic", "percpu_ref-atomic"),
    ("percpu_ref get+put, dynamic (switched)", "percpu_ref"),
    ("SRCU read_lock+unlock", "srcu"),
    ("SRCU-fast read_lock+unlock", "srcu-fast"),
    ("spin::RwLock read+unlock", "rwlock"),
    ("spin::Mutex lock+unlock", "lock"),
    ("rcu-sched read lock+unlock (gs inc/dec)", "rcu"),
];

/// Our latency rows (`latency:` lines of the kernel's bench) that have a
/// `gp_latency` counterpart, and its row. Our rcu-sched `synchronize_sched`
/// compares with Linux's `synchronize_rcu` (the grace period a caller
/// waits for), though ours works as Linux's expedited one does (an IPI
/// round): the Linux-only rows of the table show the expedited figures.
/// Our `kill_and_confirm` row times until the release, so it compares
/// with Linux's `kill_and_confirm -> release`.
pub const LATENCY_MATCHES: &[(&str, &str)] = &[
    ("rcu-sched synchronize_sched, idle", "synchronize_rcu, idle"),
    (
        "percpu_ref switch_to_atomic_sync",
        "percpu_ref_switch_to_atomic_sync, idle",
    ),
    (
        "percpu_ref kill -> release (kill)",
        "percpu_ref_kill -> release, idle",
    ),
    (
        "percpu_ref kill -> release (kill_and_confirm)",
        "percpu_ref_kill_and_confirm -> release, idle",
    ),
    ("SRCU synchronize, idle", "synchronize_srcu, idle"),
    (
        "SRCU synchronize_expedited, idle",
        "synchronize_srcu_expedited, idle",
    ),
    (
        "SRCU synchronize, readers on every CPU",
        "synchronize_srcu, readers on every CPU",
    ),
    (
        "rcu-sched synchronize_sched, readers on every CPU",
        "synchronize_rcu, readers on every CPU",
    ),
];

/// The `gp_latency` row that our latency row `what` compares with.
pub fn latency_row_for(what: &str) -> Option<&'static str> {
    LATENCY_MATCHES
        .iter()
        .find(|(ours, _)| *ours == what)
        .map(|(_, linux)| *linux)
}

/// The refscale scale type that our row `primitive` compares with.
pub fn scale_type_for(primitive: &str) -> Option<&'static str> {
    MATCHES
        .iter()
        .find(|(ours, _)| *ours == primitive)
        .map(|(_, linux)| *linux)
}

/// One refscale session: a scale type with a number of readers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// refscale's `scale_type`.
    pub scale_type: String,
    /// refscale's `nreaders`: readers on CPUs 0..nreaders, all at once.
    pub nreaders: u32,
    /// CPUs of the guest.
    pub smp: u32,
    /// refscale's `loops`: pairs per reader per run.
    pub loops: u64,
    /// `Time(ns)` of every run, in run order.
    pub runs_ns: Vec<f64>,
    /// Median over runs (the upper one for an even count, as our bench).
    pub median_ns: f64,
    /// Minimum over runs.
    pub min_ns: f64,
    /// Maximum over runs.
    pub max_ns: f64,
    /// loops x median: about how long one reader's loop took, in ms.
    pub ms_per_reader: f64,
}

/// One `gp_latency` row: an operation timed `samples` times, in µs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// What was timed and in which setting, e.g. `synchronize_rcu, idle`.
    pub what: String,
    /// How many times.
    pub samples: u32,
    /// Median (sample `samples * 50 / 100` of the sorted ones, as ours).
    pub p50_us: f64,
    /// 99th percentile (sample `samples * 99 / 100`, as ours).
    pub p99_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl Latency {
    /// `<what> | samples=N | p50_ns=A | p99_ns=B | max_ns=C`, the text of
    /// a `gp-latency:` line.
    fn parse(text: &str) -> Option<Latency> {
        let mut parts = text.split(" | ");
        let what = parts.next()?.trim();
        let mut field = |key: &str| -> Option<u64> {
            parts
                .next()?
                .trim()
                .strip_prefix(key)?
                .strip_prefix('=')?
                .parse()
                .ok()
        };
        let samples = u32::try_from(field("samples")?).ok()?;
        let us = |ns: u64| ns as f64 / 1e3;
        let (p50, p99, max) = (field("p50_ns")?, field("p99_ns")?, field("max_ns")?);
        (samples > 0 && !what.is_empty()).then(|| Latency {
            what: what.to_string(),
            samples,
            p50_us: us(p50),
            p99_us: us(p99),
            max_us: us(max),
        })
    }
}

/// Everything one Linux run measured, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinuxResults {
    /// `uname -r` of the guest.
    pub kernel_release: String,
    /// The Debian package and version booted.
    pub kernel_package: String,
    /// `qemu-system-x86_64 --version`.
    pub qemu_version: String,
    /// The QEMU command line.
    pub qemu_command: String,
    /// CPUs of the guest.
    pub smp: u32,
    /// What the figures are.
    pub unit: String,
    /// Warnings: kernel WARN/BUG/lockup lines and sessions that failed.
    pub warnings: Vec<String>,
    /// One entry per scale type and reader count, in run order.
    pub measurements: Vec<Measurement>,
    /// `gp_latency`'s rows, in its order (none in files written before
    /// it existed).
    #[serde(default)]
    pub latencies: Vec<Latency>,
}

const UNIT: &str =
    "refscale Time(ns): ns per read-side pair per reader (the readers' summed time / (readers x loops))";

/// A refscale session being read.
struct Session {
    scale_type: String,
    nreaders: u32,
    loops: u64,
    nruns: usize,
    in_report: bool,
    runs_ns: Vec<f64>,
}

/// `key=value` from refscale's parameter line.
fn param<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The text of a dmesg line without its `[ seconds]` stamp.
fn without_stamp(line: &str) -> &str {
    let t = line.trim_start();
    match t.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest.trim_start(),
        _ => t,
    }
}

/// `<type>-ref-scale: <rest>` -> (type, rest).
fn refscale_line(text: &str) -> Option<(&str, &str)> {
    let (ty, rest) = text.split_once("-ref-scale: ")?;
    (!ty.is_empty() && !ty.contains(char::is_whitespace)).then_some((ty, rest))
}

/// One `<run>\t<ns>` row of refscale's report.
fn report_row(text: &str) -> Option<f64> {
    let (run, ns) = text.split_once('\t')?;
    run.trim().parse::<u32>().ok()?;
    ns.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

impl Measurement {
    fn new(s: Session, smp: u32) -> Measurement {
        let mut sorted = s.runs_ns.clone();
        sorted.sort_by(f64::total_cmp);
        let median_ns = median(&sorted);
        Measurement {
            scale_type: s.scale_type,
            nreaders: s.nreaders,
            smp,
            loops: s.loops,
            runs_ns: s.runs_ns,
            median_ns,
            min_ns: sorted[0],
            max_ns: sorted[sorted.len() - 1],
            ms_per_reader: (s.loops as f64 * median_ns / 1e6 * 10.0).round() / 10.0,
        }
    }
}

impl LinuxResults {
    /// Reads the console log of a `scripts/linux-refscale` boot.
    pub fn parse_console(log: &str) -> Result<LinuxResults, String> {
        let header = |key: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix("# ")?.strip_prefix(key)?.strip_prefix(": "))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let (qemu_version, qemu_command) = (header("qemu-version"), header("qemu-command"));
        let kernel_package = header("kernel-package");
        let mut smp: u32 = header("smp").parse().unwrap_or(0);
        let mut kernel_release = String::new();
        let mut warnings = Vec::new();
        let mut done: Vec<Session> = Vec::new();
        let mut current: Option<Session> = None;
        let mut latencies = Vec::new();
        for line in log.lines() {
            if let Some(rest) = line.strip_prefix("refscale-guest: kernel ") {
                // "6.12.117+deb12-amd64, 8 cpus, clocksource tsc, ..."
                let mut parts = rest.split(", ");
                kernel_release = parts.next().unwrap_or("").to_string();
                if let Some(n) = parts.next().and_then(|p| p.strip_suffix(" cpus")) {
                    smp = n.parse().unwrap_or(smp);
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("refscale-guest: error: ") {
                warnings.push(rest.to_string());
                continue;
            }
            let text = without_stamp(line);
            if ["WARNING:", "BUG:", "soft lockup", "Kernel panic"]
                .iter()
                .any(|w| text.contains(w))
            {
                warnings.push(text.to_string());
            }
            if let Some(rest) = text.strip_prefix("gp-latency: ") {
                if rest.contains(" | samples=") {
                    match Latency::parse(rest) {
                        Some(l) => latencies.push(l),
                        None => warnings
                            .push(format!("a gp-latency line that does not parse: `{text}`")),
                    }
                }
                continue;
            }
            if let Some((ty, rest)) = refscale_line(text) {
                if rest.starts_with("--- Start of test:") {
                    if let Some(s) = current.take() {
                        warnings.push(format!(
                            "{} with {} readers: no complete report",
                            s.scale_type, s.nreaders
                        ));
                    }
                    let (Some(nreaders), Some(loops), Some(nruns)) = (
                        param(rest, "nreaders"),
                        param(rest, "loops"),
                        param::<usize>(rest, "nruns"),
                    ) else {
                        return Err(format!(
                            "a refscale start line without nreaders, loops and nruns: `{text}`"
                        ));
                    };
                    current = Some(Session {
                        scale_type: ty.to_string(),
                        nreaders,
                        loops,
                        nruns,
                        in_report: false,
                        runs_ns: Vec::new(),
                    });
                } else if rest.starts_with("END OF TEST") {
                    match current.as_mut() {
                        Some(s) if s.scale_type == ty => s.in_report = true,
                        _ => warnings.push(format!("{ty}: END OF TEST without its start line")),
                    }
                } else if rest.starts_with("!!!") {
                    warnings.push(text.to_string());
                }
                continue;
            }
            if let Some(s) = current.as_mut().filter(|s| s.in_report) {
                if let Some(ns) = report_row(text) {
                    s.runs_ns.push(ns);
                    if s.runs_ns.len() == s.nruns {
                        done.extend(current.take());
                    }
                }
            }
        }
        if let Some(s) = current {
            warnings.push(format!(
                "{} with {} readers: the report stops after {} of {} runs",
                s.scale_type,
                s.nreaders,
                s.runs_ns.len(),
                s.nruns
            ));
        }
        if done.is_empty() && latencies.is_empty() {
            return Err(
                "no complete refscale report and no gp-latency row in the console log".into(),
            );
        }
        if smp == 0 {
            return Err("the console log does not say how many CPUs the guest had".into());
        }
        Ok(LinuxResults {
            kernel_release,
            kernel_package,
            qemu_version,
            qemu_command,
            smp,
            unit: UNIT.into(),
            warnings,
            measurements: done.into_iter().map(|s| Measurement::new(s, smp)).collect(),
            latencies,
        })
    }

    /// The result file's text.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("plain data serialises");
        s.push('\n');
        s
    }

    /// Reads and checks a result file.
    pub fn from_json(text: &str) -> Result<LinuxResults, String> {
        let r: LinuxResults = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if r.smp == 0 {
            return Err("smp is 0".into());
        }
        if r.measurements.is_empty() && r.latencies.is_empty() {
            return Err("no measurements".into());
        }
        for l in &r.latencies {
            let figures = [l.p50_us, l.p99_us, l.max_us];
            if l.samples == 0 || figures.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!(
                    "latency {}: no samples or a figure that is not a number of µs",
                    l.what
                ));
            }
        }
        for m in &r.measurements {
            let figures = [m.median_ns, m.min_ns, m.max_ns];
            if m.nreaders == 0 || figures.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!(
                    "{} with {} readers: a reader count of 0 or a figure that is not a number of ns",
                    m.scale_type, m.nreaders
                ));
            }
        }
        Ok(r)
    }

    /// Loads `path` for a bench at `-smp smp`; the error says what is wrong.
    pub fn load(path: &Path, smp: u32) -> Result<LinuxResults, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "--linux-results {}: {e} (scripts/linux-refscale writes it)",
                path.display()
            )
        })?;
        let r = LinuxResults::from_json(&text).map_err(|e| {
            format!(
                "--linux-results {}: not a linux-refscale result file: {e}",
                path.display()
            )
        })?;
        if r.smp != smp {
            return Err(format!(
                "--linux-results {}: Linux ran with -smp {}, this bench with -smp {smp}; run scripts/linux-refscale --smp {smp}",
                path.display(),
                r.smp
            ));
        }
        Ok(r)
    }

    /// The measurement of `scale_type` with `nreaders` readers.
    pub fn find(&self, scale_type: &str, nreaders: u32) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.scale_type == scale_type && m.nreaders == nreaders)
    }

    /// The `gp_latency` row named `what`.
    pub fn latency(&self, what: &str) -> Option<&Latency> {
        self.latencies.iter().find(|l| l.what == what)
    }

    /// A short table: median ns per scale type and reader count, then
    /// the latencies.
    pub fn summary(&self) -> String {
        let mut counts: Vec<u32> = self.measurements.iter().map(|m| m.nreaders).collect();
        counts.sort_unstable();
        counts.dedup();
        let mut types: Vec<&str> = Vec::new();
        for m in &self.measurements {
            if !types.contains(&m.scale_type.as_str()) {
                types.push(&m.scale_type);
            }
        }
        let mut out = format!(
            "Linux {} refscale, -smp {}, median ns per pair [ms per reader per run]\n{:<12}",
            self.kernel_release, self.smp, "scale_type"
        );
        for c in &counts {
            let _ = write!(
                out,
                " {:>20}",
                format!("{c} reader{}", if *c == 1 { "" } else { "s" })
            );
        }
        for t in types {
            let _ = write!(out, "\n{t:<12}");
            for &c in &counts {
                let cell = self
                    .find(t, c)
                    .map(|m| format!("{:.1} [{:.0}]", m.median_ns, m.ms_per_reader))
                    .unwrap_or_else(|| "–".into());
                let _ = write!(out, " {cell:>20}");
            }
        }
        out.push('\n');
        if !self.latencies.is_empty() {
            let _ = writeln!(
                out,
                "Linux {} gp_latency, µs: p50 p99 max (samples)",
                self.kernel_release
            );
            for l in &self.latencies {
                let _ = writeln!(
                    out,
                    "{:<56} {:>10.1} {:>10.1} {:>10.1} ({})",
                    l.what, l.p50_us, l.p99_us, l.max_us, l.samples
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real console log from `scripts/linux-refscale --types jiffies,srcu
    /// --readers 1,8 --runs 2 --run-ms 100` (boot dmesg shortened).
    const LOG: &str = include_str!("../tests/data/linux-refscale-console.log");

    #[test]
    fn a_real_console_log_parses() {
        let r = LinuxResults::parse_console(LOG).unwrap();
        assert_eq!(r.kernel_release, "6.12.117+deb12-amd64");
        assert_eq!(r.smp, 8);
        assert!(r
            .qemu_command
            .starts_with("qemu-system-x86_64 -accel tcg -smp 8 -m 2G"));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let got: Vec<(&str, u32, usize)> = r
            .measurements
            .iter()
            .map(|m| (m.scale_type.as_str(), m.nreaders, m.runs_ns.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("jiffies", 1, 2),
                ("jiffies", 8, 2),
                ("srcu", 1, 2),
                ("srcu", 8, 2)
            ]
        );
        let j8 = r.find("jiffies", 8).unwrap();
        assert_eq!(j8.loops, 8543357);
        assert_eq!(j8.runs_ns, [5.251, 5.652]);
        assert_eq!((j8.min_ns, j8.median_ns, j8.max_ns), (5.251, 5.652, 5.652));
        assert_eq!(j8.ms_per_reader, 48.3);
        let back = LinuxResults::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn broken_reports_become_warnings_or_errors() {
        let cut = "# smp: 4\n\
            [ 1.0] refcnt-ref-scale: --- Start of test:  loops=1000 nreaders=4 nruns=3 readdelay=0\n\
            [ 1.1] refcnt-ref-scale: END OF TEST. Calculating average duration per loop (nanoseconds)...\n\
            [ 1.1] Runs\tTime(ns)\n\
            [ 1.1] 1\t300.500\n\
            [ 1.1] 2\t310.250\n\
            [ 1.1] 3\t290.000\n\
            [ 2.0] lock-ref-scale: --- Start of test:  loops=1000 nreaders=4 nruns=3 readdelay=0\n\
            [ 2.5] lock-ref-scale: END OF TEST. Calculating average duration per loop (nanoseconds)...\n\
            [ 2.5] 1\t900.000\n\
            refscale-guest: error: rwlock, 4 readers: calibration failed\n\
            [ 3.0] watchdog: BUG: soft lockup - CPU#2 stuck for 22s! [ref_scale_reade:99]\n";
        let r = LinuxResults::parse_console(cut).unwrap();
        assert_eq!(r.smp, 4);
        assert_eq!(r.measurements.len(), 1);
        assert_eq!(r.measurements[0].median_ns, 300.5);
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("calibration failed"));
        assert!(r.warnings[1].contains("soft lockup"));
        assert!(r.warnings[2].contains("lock with 4 readers: the report stops after 1 of 3"));

        let err = LinuxResults::parse_console("# smp: 8\nrefscale-guest: all done\n");
        assert!(err.unwrap_err().contains("no complete refscale report"));
    }

    #[test]
    fn bad_result_files_are_refused_with_a_reason() {
        let r = LinuxResults::parse_console(LOG).unwrap();
        let dir = std::env::temp_dir().join(format!("linux-refscale-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r.to_json()).unwrap();
        assert!(LinuxResults::load(&good, 8).is_ok());
        let e = LinuxResults::load(&good, 4).unwrap_err();
        assert!(
            e.contains("Linux ran with -smp 8, this bench with -smp 4"),
            "{e}"
        );
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"smp\": 8}").unwrap();
        let e = LinuxResults::load(&bad, 8).unwrap_err();
        assert!(
            e.contains("not a linux-refscale result file: missing field"),
            "{e}"
        );
        std::fs::write(
            &bad,
            r.to_json()
                .replace("\"median_ns\": 5.652", "\"median_ns\": -1"),
        )
        .unwrap();
        let e = LinuxResults::load(&bad, 8).unwrap_err();
        assert!(e.contains("jiffies with 8 readers"), "{e}");
        let e = LinuxResults::load(&dir.join("missing.json"), 8).unwrap_err();
        assert!(
            e.contains("missing.json") && e.contains("scripts/linux-refscale"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// gp_latency's lines as the guest dumps them (from a real run with
    /// 10 samples, shortened), and one that is broken.
    const LATENCY_LOG: &str = "# smp: 8\n\
        refscale-guest: kernel 6.12.117+deb12-amd64, 8 cpus, clocksource tsc, userspace at 3.06 s\n\
        refscale-guest: dmesg {\n\
        [    8.626078] gp-latency: start: 10 samples, 3 per kill row, 8 CPUs, timing on CPU 0\n\
        [    8.799445] gp-latency: synchronize_rcu, idle | samples=10 | p50_ns=16051543 | p99_ns=20059549 | max_ns=20059549\n\
        [    9.118117] gp-latency: percpu_ref_kill -> release, idle | samples=3 | p50_ns=19989359 | p99_ns=27757982 | max_ns=27757982\n\
        [    9.785923] gp-latency: synchronize_rcu, readers on every CPU | samples=10 | p50_ns=59411628 | p99_ns=88526571 | max_ns=88526571\n\
        [    9.785924] gp-latency: synchronize_srcu, idle | samples=10 | p50_ns=x | p99_ns=1 | max_ns=1\n\
        [   11.830401] gp-latency: done\n\
        refscale-guest: dmesg }\n\
        refscale-guest: all done at 11.95 s\n";

    #[test]
    fn gp_latency_rows_parse_without_refscale() {
        let r = LinuxResults::parse_console(LATENCY_LOG).unwrap();
        assert!(r.measurements.is_empty());
        let got: Vec<(&str, u32)> = r
            .latencies
            .iter()
            .map(|l| (l.what.as_str(), l.samples))
            .collect();
        assert_eq!(
            got,
            [
                ("synchronize_rcu, idle", 10),
                ("percpu_ref_kill -> release, idle", 3),
                ("synchronize_rcu, readers on every CPU", 10)
            ]
        );
        let kill = r.latency("percpu_ref_kill -> release, idle").unwrap();
        assert_eq!(
            (kill.p50_us, kill.p99_us, kill.max_us),
            (19989.359, 27757.982, 27757.982)
        );
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("does not parse"));
        let back = LinuxResults::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert!(r.summary().contains("synchronize_rcu, idle"));
        // A result file from before gp_latency has no `latencies`.
        let old = LinuxResults::parse_console(LOG).unwrap().to_json();
        let old = old.replace(",\n  \"latencies\": []", "");
        assert!(!old.contains("latencies"), "{old}");
        assert!(LinuxResults::from_json(&old).unwrap().latencies.is_empty());
    }

    #[test]
    fn every_matched_latency_is_a_bench_row() {
        let bench = include_str!("../../kernel/src/bench/mod.rs");
        for (ours, linux) in LATENCY_MATCHES {
            assert!(
                bench.contains(&format!("\"{ours}\"")),
                "no latency row `{ours}` in the kernel's bench"
            );
            let (op, setting) = linux.rsplit_once(", ").unwrap();
            assert!(
                ["idle", "readers on every CPU"].contains(&setting),
                "{linux}"
            );
            assert!(
                include_str!("../../scripts/linux/gp_latency.c").contains(op),
                "gp_latency.c has no row `{op}`"
            );
        }
        assert_eq!(
            latency_row_for("SRCU synchronize, idle"),
            Some("synchronize_srcu, idle")
        );
        assert_eq!(latency_row_for("nothing"), None);
    }

    #[test]
    fn every_matched_row_is_a_bench_case() {
        let cases = include_str!("../../kernel/src/bench/mod.rs");
        for (ours, _) in MATCHES {
            assert!(
                cases.contains(&format!("(\"{ours}\"")),
                "no bench case `{ours}`"
            );
        }
        assert_eq!(scale_type_for("kref get+put"), Some("refcnt"));
        assert_eq!(scale_type_for("irq off+on (pushf/cli, popf)"), None);
    }
}
