//! The host side of `--mode bench`: reads the kernel's `bench:` and
//! `latency:` lines and writes `target/bench/primitives.json` (with the
//! QEMU command line, accelerator, CPU count and commit),
//! `target/bench/primitives.md` (the tables) and
//! `target/bench/primitives.svg` (ns per pair against CPUs, log scale).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::linux::{self, LinuxResults};

/// One pair-cost row: a primitive at a CPU count.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRow {
    /// Primitive.
    pub name: String,
    /// CPUs hammering at once.
    pub cpus: u32,
    /// Minimum over runs, ns per pair.
    pub min_ns: f64,
    /// Median over runs, ns per pair.
    pub median_ns: f64,
}

/// One latency row, in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRow {
    /// What was timed.
    pub name: String,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Maximum.
    pub max_us: f64,
}

/// Everything one bench run printed.
#[derive(Debug, Default)]
pub struct Results {
    /// Pair costs.
    pub pairs: Vec<PairRow>,
    /// Latencies.
    pub latencies: Vec<LatencyRow>,
}

fn field(part: &str, key: &str) -> Option<f64> {
    part.trim().strip_prefix(key)?.parse().ok()
}

impl Results {
    /// Takes one console line; ignores lines that are not results.
    pub fn add_line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("bench: ") {
            let p: Vec<&str> = rest.split(" | ").collect();
            if let [name, cpus, min, median] = p[..] {
                if let (Some(cpus), Some(min_ns), Some(median_ns)) = (
                    field(cpus, "cpus="),
                    field(min, "min="),
                    field(median, "median="),
                ) {
                    self.pairs.push(PairRow {
                        name: name.to_string(),
                        cpus: cpus as u32,
                        min_ns,
                        median_ns,
                    });
                }
            }
        } else if let Some(rest) = line.strip_prefix("latency: ") {
            let p: Vec<&str> = rest.split(" | ").collect();
            if let [name, p50, p99, max] = p[..] {
                if let (Some(p50_us), Some(p99_us), Some(max_us)) =
                    (field(p50, "p50="), field(p99, "p99="), field(max, "max="))
                {
                    self.latencies.push(LatencyRow {
                        name: name.to_string(),
                        p50_us,
                        p99_us,
                        max_us,
                    });
                }
            }
        }
    }

    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for r in &self.pairs {
            if !names.contains(&r.name.as_str()) {
                names.push(&r.name);
            }
        }
        names
    }

    fn cpu_counts(&self) -> Vec<u32> {
        let mut counts: Vec<u32> = self.pairs.iter().map(|r| r.cpus).collect();
        counts.sort_unstable();
        counts.dedup();
        counts
    }

    fn median(&self, name: &str, cpus: u32) -> Option<f64> {
        self.pairs
            .iter()
            .find(|r| r.name == name && r.cpus == cpus)
            .map(|r| r.median_ns)
    }

    /// The pair-cost table as Markdown; with Linux's figures, each CPU
    /// count gains a "Linux" and a "Linux/ours" column (refscale with as
    /// many readers), and a column names the refscale scale type.
    pub fn pair_table(&self, linux: Option<&LinuxResults>) -> String {
        let counts = self.cpu_counts();
        let mut md = String::from("| primitive (median ns per pair) |");
        if linux.is_some() {
            md.push_str(" Linux refscale type |");
        }
        for c in &counts {
            let _ = write!(md, " {c} cpu{} |", if *c == 1 { "" } else { "s" });
            if linux.is_some() {
                md.push_str(" Linux | Linux/ours |");
            }
        }
        md.push_str("\n|---|");
        if linux.is_some() {
            md.push_str("---|");
        }
        let per_count = if linux.is_some() { 3 } else { 1 };
        md.push_str(&"---:|".repeat(counts.len() * per_count));
        for name in self.names() {
            let _ = write!(md, "\n| {name} |");
            let linux_type = linux.and_then(|l| {
                let t = linux::scale_type_for(name)?;
                l.measurements
                    .iter()
                    .any(|m| m.scale_type == t)
                    .then_some(t)
            });
            if linux.is_some() {
                let _ = write!(md, " {} |", linux_type.unwrap_or("–"));
            }
            for &c in &counts {
                let ours = self.median(name, c);
                match ours {
                    Some(v) => {
                        let _ = write!(md, " {v:.1} |");
                    }
                    None => md.push_str(" |"),
                }
                if let Some(l) = linux {
                    let theirs = linux_type.and_then(|t| l.find(t, c)).map(|m| m.median_ns);
                    match (theirs, ours) {
                        (Some(t), Some(o)) if o > 0.0 => {
                            let _ = write!(md, " {t:.1} | {:.2} |", t / o);
                        }
                        (Some(t), _) => {
                            let _ = write!(md, " {t:.1} | – |");
                        }
                        (None, _) => md.push_str(" – | – |"),
                    }
                }
            }
        }
        md.push('\n');
        md
    }

    /// The speed targets of the bench, as ratios of medians of this run
    /// (and of Linux's, when given), per CPU count, with whether each is
    /// met: a Markdown table. Rows whose figures are missing are left out.
    pub fn targets(&self, linux: Option<&LinuxResults>) -> String {
        const PCPU: &str = "percpu_ref get+put, per-CPU";
        const FLOOR: &str = "floor: per-CPU inc+dec (gs)";
        const FAST: &str = "SRCU-fast read_lock+unlock";
        const SRCU: &str = "SRCU read_lock+unlock";
        const XADD: &str = "lock xadd pair, shared line";
        let counts = self.cpu_counts();
        let max = counts.last().copied().unwrap_or(0);
        let ours = |name: &str, c: u32| self.median(name, c).filter(|&v| v > 0.0);
        let theirs = |t: &str, c: u32| Some(linux?.find(t, c)?.median_ns);
        /// A target: a ratio at a CPU count, whether a ratio meets the
        /// goal, and whether every count is checked or only the largest.
        struct Target<'a> {
            what: &'static str,
            goal: &'static str,
            ratio: Box<dyn Fn(u32) -> Option<f64> + 'a>,
            ok: fn(f64) -> bool,
            every: bool,
        }
        let rows = [
            Target {
                what: "percpu_ref per-CPU / floor",
                goal: "<= 2 at every count",
                ratio: Box::new(|c| Some(ours(PCPU, c)? / ours(FLOOR, c)?)),
                ok: |r| r <= 2.0,
                every: true,
            },
            Target {
                what: "SRCU-fast / floor",
                goal: "<= 2 at every count",
                ratio: Box::new(|c| Some(ours(FAST, c)? / ours(FLOOR, c)?)),
                ok: |r| r <= 2.0,
                every: true,
            },
            Target {
                what: "Linux refcnt / percpu_ref per-CPU",
                goal: ">= 20 at the most CPUs",
                ratio: Box::new(|c| Some(theirs("refcnt", c)? / ours(PCPU, c)?)),
                ok: |r| r >= 20.0,
                every: false,
            },
            Target {
                what: "shared lock xadd / percpu_ref per-CPU",
                goal: ">= 10 at the most CPUs",
                ratio: Box::new(|c| Some(ours(XADD, c)? / ours(PCPU, c)?)),
                ok: |r| r >= 10.0,
                every: false,
            },
            Target {
                what: "SRCU / Linux srcu",
                goal: "<= 1/3 at every count",
                ratio: Box::new(|c| Some(ours(SRCU, c)? / theirs("srcu", c)?)),
                ok: |r| r <= 1.0 / 3.0,
                every: true,
            },
        ];
        let mut md = String::from("| target (ratio of medians) |");
        for c in &counts {
            let _ = write!(md, " {c} cpu{} |", if *c == 1 { "" } else { "s" });
        }
        md.push_str(" goal | met |\n|---|");
        md.push_str(&"---:|".repeat(counts.len()));
        md.push_str("---|---|");
        for Target {
            what,
            goal,
            ratio,
            ok,
            every,
        } in rows
        {
            let cells: Vec<Option<f64>> = counts.iter().map(|&c| ratio(c)).collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            let _ = write!(md, "\n| {what} |");
            for cell in &cells {
                match cell {
                    Some(r) => {
                        let _ = write!(md, " {r:.2} |");
                    }
                    None => md.push_str(" – |"),
                }
            }
            let checked: Vec<Option<f64>> = if every { cells } else { vec![ratio(max)] };
            let met = checked.iter().all(|r| r.is_some_and(ok));
            let _ = write!(md, " {goal} | {} |", if met { "yes" } else { "no" });
        }
        md.push('\n');
        md
    }

    /// The tables as Markdown (pair costs, with Linux's figures when
    /// given, the speed targets, then latencies).
    pub fn markdown(&self, linux: Option<&LinuxResults>) -> String {
        let mut md = self.pair_table(linux);
        if let Some(l) = linux {
            let _ = writeln!(
                md,
                "\nLinux: refscale on {} ({}), same QEMU, -smp {}, median of {} runs; Linux/ours above 1 means ours is cheaper.",
                l.kernel_release,
                l.kernel_package,
                l.smp,
                l.measurements.first().map_or(0, |m| m.runs_ns.len())
            );
        }
        md.push('\n');
        md.push_str(&self.targets(linux));
        md.push_str("\n| latency (us) | p50 | p99 | max |\n|---|---:|---:|---:|");
        for l in &self.latencies {
            let _ = write!(
                md,
                "\n| {} | {:.1} | {:.1} | {:.1} |",
                l.name, l.p50_us, l.p99_us, l.max_us
            );
        }
        md.push('\n');
        md
    }

    /// The results as JSON, with how they were measured; with Linux's
    /// figures, a `linux` object holds the matched rows (ours, Linux's and
    /// the ratio) and every refscale measurement.
    pub fn json(
        &self,
        qemu_command: &str,
        accel: &str,
        smp: u32,
        commit: &str,
        linux: Option<&LinuxResults>,
    ) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let pairs: Vec<String> = self
            .pairs
            .iter()
            .map(|r| {
                format!(
                    "{{\"primitive\": {}, \"cpus\": {}, \"min_ns\": {}, \"median_ns\": {}}}",
                    q(&r.name),
                    r.cpus,
                    r.min_ns,
                    r.median_ns
                )
            })
            .collect();
        let lats: Vec<String> = self
            .latencies
            .iter()
            .map(|l| {
                format!(
                    "{{\"what\": {}, \"p50_us\": {}, \"p99_us\": {}, \"max_us\": {}}}",
                    q(&l.name),
                    l.p50_us,
                    l.p99_us,
                    l.max_us
                )
            })
            .collect();
        let linux = linux
            .map(|l| {
                let text = self.linux_json(l);
                format!(",\n  \"linux\": {}", text.replace('\n', "\n  "))
            })
            .unwrap_or_default();
        format!(
            "{{\n  \"qemu_command\": {},\n  \"accel\": {},\n  \"smp\": {smp},\n  \"commit\": {},\n  \"unit\": \"ns per pair per reader (median and min over runs); latencies in us\",\n  \"pairs\": [\n    {}\n  ],\n  \"latencies\": [\n    {}\n  ]{linux}\n}}\n",
            q(qemu_command),
            q(accel),
            q(commit),
            pairs.join(",\n    "),
            lats.join(",\n    ")
        )
    }

    /// Our rows beside Linux's, for the JSON.
    fn linux_json(&self, l: &LinuxResults) -> String {
        /// One of our rows with its refscale counterpart.
        #[derive(serde::Serialize)]
        struct Matched<'a> {
            primitive: &'a str,
            cpus: u32,
            scale_type: &'a str,
            ours_median_ns: f64,
            linux_median_ns: f64,
            linux_min_ns: f64,
            linux_over_ours: Option<f64>,
        }
        let matched: Vec<Matched> = self
            .pairs
            .iter()
            .filter_map(|r| {
                let t = linux::scale_type_for(&r.name)?;
                let m = l.find(t, r.cpus)?;
                Some(Matched {
                    primitive: &r.name,
                    cpus: r.cpus,
                    scale_type: t,
                    ours_median_ns: r.median_ns,
                    linux_median_ns: m.median_ns,
                    linux_min_ns: m.min_ns,
                    linux_over_ours: (r.median_ns > 0.0).then(|| m.median_ns / r.median_ns),
                })
            })
            .collect();
        /// The `linux` object: how Linux ran, the matched rows, and
        /// every refscale measurement.
        #[derive(serde::Serialize)]
        struct Beside<'a> {
            kernel_release: &'a str,
            kernel_package: &'a str,
            qemu_command: &'a str,
            smp: u32,
            unit: &'a str,
            warnings: &'a [String],
            matched: Vec<Matched<'a>>,
            measurements: &'a [linux::Measurement],
        }
        let beside = Beside {
            kernel_release: &l.kernel_release,
            kernel_package: &l.kernel_package,
            qemu_command: &l.qemu_command,
            smp: l.smp,
            unit: &l.unit,
            warnings: &l.warnings,
            matched,
            measurements: &l.measurements,
        };
        serde_json::to_string_pretty(&beside).expect("plain data serialises")
    }

    /// ns per pair against CPUs, one line per primitive, log-scale y;
    /// with `linux`, a dotted grey line per refscale type that one of our
    /// rows is compared with.
    pub fn svg(&self, linux: Option<&LinuxResults>) -> String {
        let (w, h, left, right, top, bottom) = (900.0, 560.0, 70.0, 330.0, 30.0, 50.0);
        let counts = self.cpu_counts();
        const COLOURS: [&str; 10] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf",
        ];
        // (label, colour, dash, value per CPU count)
        let mut series: Vec<(String, &str, &str, Vec<Option<f64>>)> = self
            .names()
            .into_iter()
            .enumerate()
            .map(|(k, name)| {
                let dash = if k >= COLOURS.len() {
                    " stroke-dasharray=\"6 3\""
                } else {
                    ""
                };
                let values = counts.iter().map(|&c| self.median(name, c)).collect();
                (name.to_string(), COLOURS[k % COLOURS.len()], dash, values)
            })
            .collect();
        if let Some(l) = linux {
            let mut types: Vec<&str> = Vec::new();
            for name in self.names() {
                if let Some(t) = crate::linux::scale_type_for(name) {
                    if !types.contains(&t) && l.find(t, 1).is_some() {
                        types.push(t);
                    }
                }
            }
            for t in types {
                let values = counts
                    .iter()
                    .map(|&c| l.find(t, c).map(|m| m.median_ns))
                    .collect();
                series.push((
                    format!("Linux refscale {t}"),
                    "#444",
                    " stroke-dasharray=\"2 3\"",
                    values,
                ));
            }
        }
        let values: Vec<f64> = series
            .iter()
            .flat_map(|s| s.3.iter().flatten().copied())
            .filter(|v| *v > 0.0)
            .collect();
        let lo = values
            .iter()
            .cloned()
            .fold(f64::MAX, f64::min)
            .max(0.1)
            .log10()
            .floor();
        let hi = values
            .iter()
            .cloned()
            .fold(1.0, f64::max)
            .log10()
            .ceil()
            .max(lo + 1.0);
        let x = |i: usize| left + (w - left - right) * i as f64 / (counts.len().max(2) - 1) as f64;
        let y = |v: f64| top + (h - top - bottom) * (hi - v.max(1e-3).log10()) / (hi - lo);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">ns per pair per reader (median, log scale) against CPUs hammering at once</text>\n"
        );
        for decade in lo as i32..=hi as i32 {
            let v = 10f64.powi(decade);
            let (x2, yv, tx, ty) = (w - right, y(v), left - 6.0, y(v) + 4.0);
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" x2=\"{x2}\" y1=\"{yv}\" y2=\"{yv}\" stroke=\"#ddd\"/><text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{v}</text>"
            );
        }
        for (i, c) in counts.iter().enumerate() {
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{c} cpu{}</text>",
                x(i),
                h - bottom + 20.0,
                if *c == 1 { "" } else { "s" }
            );
        }
        for (k, (label, colour, dash, values)) in series.iter().enumerate() {
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
                .collect();
            let _ = writeln!(svg, "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>", points.join(" "));
            let ly = top + 18.0 * k as f64;
            let _ = writeln!(svg, "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{}</text>", w - right + 15.0, w - right + 40.0, w - right + 46.0, ly + 4.0, label.replace('&', "&amp;").replace('<', "&lt;"));
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// Where the results go: `$REFCNT_BENCH_OUT` if set (the tests use it, so
/// that a test run never overwrites real results), else `target/bench` of
/// the workspace.
pub fn out_dir() -> PathBuf {
    std::env::var_os("REFCNT_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench"))
}

/// The commit being measured, or "unknown" outside a git checkout.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_tables_json_and_a_plot() {
        let mut r = Results::default();
        for line in [
            "bench: floor | cpus=1 | min=9.50 | median=9.80",
            "bench: floor | cpus=2 | min=7.00 | median=7.70",
            "bench: shared \"xadd\" | cpus=1 | min=16.00 | median=17.00",
            "bench: shared \"xadd\" | cpus=2 | min=30.00 | median=36.00",
            "latency: synchronize | p50=0.5 | p99=1.0 | max=201.4",
            "bench-table: | not a result |",
            "bench: malformed | cpus=x | min=1 | median=2",
        ] {
            r.add_line(line);
        }
        assert_eq!(r.pairs.len(), 4);
        assert_eq!(r.latencies.len(), 1);
        let md = r.markdown(None);
        assert!(md.contains("| floor | 9.8 | 7.7 |"), "{md}");
        assert!(md.contains("| synchronize | 0.5 | 1.0 | 201.4 |"), "{md}");
        let json = r.json("qemu-system-x86_64 -smp 8", "tcg", 8, "abc123", None);
        assert!(json.contains("\"primitive\": \"shared \\\"xadd\\\"\", \"cpus\": 2, \"min_ns\": 30, \"median_ns\": 36}"), "{json}");
        assert!(
            json.contains("\"commit\": \"abc123\"") && json.contains("\"smp\": 8"),
            "{json}"
        );
        let svg = r.svg(None);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.ends_with("</svg>\n"));
    }

    #[test]
    fn targets_are_ratios_of_one_runs_medians() {
        let mut r = Results::default();
        for line in [
            "bench: floor: per-CPU inc+dec (gs) | cpus=1 | min=6.00 | median=7.00",
            "bench: floor: per-CPU inc+dec (gs) | cpus=8 | min=6.00 | median=8.00",
            "bench: percpu_ref get+put, per-CPU | cpus=1 | min=13.00 | median=14.00",
            "bench: percpu_ref get+put, per-CPU | cpus=8 | min=16.00 | median=20.00",
            "bench: lock xadd pair, shared line | cpus=1 | min=16.00 | median=16.00",
            "bench: lock xadd pair, shared line | cpus=8 | min=150.00 | median=200.00",
        ] {
            r.add_line(line);
        }
        let t = r.targets(None);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| target (ratio of medians) | 1 cpu | 8 cpus | goal | met |"
        );
        // 14/7 = 2.00 meets "<= 2", 20/8 = 2.50 does not: every count counts.
        assert_eq!(
            lines[2],
            "| percpu_ref per-CPU / floor | 2.00 | 2.50 | <= 2 at every count | no |"
        );
        // Only the largest count is checked for the contention targets.
        assert_eq!(
            lines[3],
            "| shared lock xadd / percpu_ref per-CPU | 1.14 | 10.00 | >= 10 at the most CPUs | yes |"
        );
        // No SRCU rows and no Linux figures: those targets are left out.
        assert_eq!(lines.len(), 4, "{t}");
        assert!(r.markdown(None).contains(&t));
    }

    #[test]
    fn linux_figures_go_beside_the_matched_rows() {
        let mut r = Results::default();
        for line in [
            "bench: plain load (refscale jiffies) | cpus=1 | min=4.00 | median=4.50",
            "bench: plain load (refscale jiffies) | cpus=8 | min=7.00 | median=7.80",
            "bench: kref get+put | cpus=1 | min=30.00 | median=32.40",
            "bench: kref get+put | cpus=8 | min=200.00 | median=210.20",
            "bench: SRCU read_lock+unlock | cpus=1 | min=50.00 | median=53.60",
            "bench: SRCU read_lock+unlock | cpus=8 | min=150.00 | median=151.10",
            "bench: irq off+on (pushf/cli, popf) | cpus=1 | min=18.00 | median=18.50",
            "bench: irq off+on (pushf/cli, popf) | cpus=8 | min=16.00 | median=16.00",
        ] {
            r.add_line(line);
        }
        let log = include_str!("../tests/data/linux-refscale-console.log");
        let linux = LinuxResults::parse_console(log).unwrap();
        let table = r.pair_table(Some(&linux));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| primitive (median ns per pair) | Linux refscale type | 1 cpu | Linux | Linux/ours | 8 cpus | Linux | Linux/ours |"
        );
        assert_eq!(lines[1], "|---|---|---:|---:|---:|---:|---:|---:|");
        // jiffies from the captured log: 1.522 1.521 with 1 reader, 5.251 5.652 with 8.
        assert_eq!(
            lines[2],
            "| plain load (refscale jiffies) | jiffies | 4.5 | 1.5 | 0.34 | 7.8 | 5.7 | 0.72 |"
        );
        // refcnt was not measured in that log, so kref has no Linux figure.
        assert_eq!(
            lines[3],
            "| kref get+put | – | 32.4 | – | – | 210.2 | – | – |"
        );
        assert!(
            lines[4].starts_with(
                "| SRCU read_lock+unlock | srcu | 53.6 | 71.3 | 1.33 | 151.1 | 208.0 | 1.38 |"
            ),
            "{}",
            lines[4]
        );
        assert_eq!(
            lines[5],
            "| irq off+on (pushf/cli, popf) | – | 18.5 | – | – | 16.0 | – | – |"
        );
        assert_eq!(
            r.pair_table(None).lines().next(),
            Some("| primitive (median ns per pair) | 1 cpu | 8 cpus |")
        );
        assert!(r
            .markdown(Some(&linux))
            .contains("Linux: refscale on 6.12.117+deb12-amd64"));
        // 53.6 / 71.3 and 151.1 / 208.0.
        assert!(
            r.targets(Some(&linux))
                .contains("| SRCU / Linux srcu | 0.75 | 0.73 | <= 1/3 at every count | no |"),
            "{}",
            r.targets(Some(&linux))
        );

        let json = r.json("qemu", "tcg", 8, "abc", Some(&linux));
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let matched = v["linux"]["matched"].as_array().unwrap();
        assert_eq!(matched.len(), 4, "{json}");
        assert_eq!(matched[1]["primitive"], "plain load (refscale jiffies)");
        assert_eq!(matched[1]["cpus"], 8);
        assert_eq!(matched[1]["linux_median_ns"], 5.652);
        assert_eq!(v["linux"]["measurements"].as_array().unwrap().len(), 4);
        assert_eq!(v["pairs"].as_array().unwrap().len(), 8);
        assert!(r
            .json("qemu", "tcg", 8, "abc", None)
            .find("\"linux\"")
            .is_none());
        // The plot gains a dotted line per matched refscale type.
        let ours = r.svg(None).matches("<polyline").count();
        let with_linux = r.svg(Some(&linux));
        assert!(
            with_linux.matches("<polyline").count() > ours,
            "{with_linux}"
        );
        assert!(
            with_linux.contains(">Linux refscale jiffies<"),
            "{with_linux}"
        );
    }
}
