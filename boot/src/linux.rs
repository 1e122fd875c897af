//! Linux's own figures beside ours: the output of refscale
//! (`kernel/rcu/refscale.c`) as `scripts/linux-refscale` captures it, the
//! result file it writes (`target/bench/linux-refscale.json`), and which
//! of our bench rows each refscale scale type compares with.
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
    // The issue's comparison: a reference count done per CPU against
    // Linux's shared atomic one.
    ("percpu_ref get+put, per-CPU", "refcnt"),
    ("percpu_ref get+put, dynamic (switched)", "refcnt"),
    ("SRCU read_lock+unlock", "srcu"),
    ("SRCU-fast read_lock+unlock", "srcu-fast"),
    ("spin::RwLock read+unlock", "rwlock"),
    ("spin::Mutex lock+unlock", "lock"),
    ("rcu-sched read lock+unlock (gs inc/dec)", "rcu"),
];

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
        if done.is_empty() {
            return Err("no complete refscale report in the console log".into());
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
        if r.measurements.is_empty() {
            return Err("no measurements".into());
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

    /// A short table: median ns per scale type and reader count.
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
