//! The host side of `--mode bench`: reads the kernel's `bench:` and
//! `latency:` lines and writes `target/bench/primitives.json` (with the
//! QEMU command line, accelerator, CPU count and commit),
//! `target/bench/primitives.md` (the tables) and
//! `target/bench/primitives.svg` (two plots against CPUs: ns per pair, and
//! each row's ratio to the floor; Linux's lines dashed in the colour of
//! the row they compare with).
//!
//! The plots are SVG written here by hand rather than with a plotting
//! crate (`plotters` was weighed): two log-scale panels, a legend and
//! dashes are about 150 lines, need no dependency in the runner, and the
//! tests can read the colours back from the text.

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
    /// many readers), and a column names the refscale scale type. With
    /// Linux's latencies too, the latency table with its Linux columns
    /// follows (so the runner's `bench-vs-linux:` lines carry both).
    pub fn pair_table(&self, linux: Option<&LinuxResults>) -> String {
        let mut md = self.pairs_md(linux);
        if let Some(l) = linux.filter(|l| !l.latencies.is_empty()) {
            md.push('\n');
            md.push_str(&self.latency_table(Some(l)));
        }
        md
    }

    /// The pair-cost table alone (see [`Results::pair_table`]).
    fn pairs_md(&self, linux: Option<&LinuxResults>) -> String {
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
                what: "percpu_ref per-CPU / Linux percpu_ref",
                goal: "<= 0.5 at every count",
                ratio: Box::new(|c| Some(ours(PCPU, c)? / theirs("percpu_ref", c)?)),
                ok: |r| r <= 0.5,
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
        let latency = self.latency_targets(linux);
        if !latency.is_empty() {
            md.push('\n');
            md.push_str(&latency);
        }
        md
    }

    /// The latency table as Markdown. With Linux's `gp_latency` rows, each
    /// of our rows that has a counterpart gains Linux's row name, its p50,
    /// p99 and max, and ours/Linux for p50 and p99 (below 1: ours is
    /// faster); Linux's rows that none of ours matches follow.
    pub fn latency_table(&self, linux: Option<&LinuxResults>) -> String {
        let linux = linux.filter(|l| !l.latencies.is_empty());
        let mut md = String::from("| latency (us) | p50 | p99 | max |");
        if linux.is_some() {
            md.push_str(
                " Linux (gp_latency) | Linux p50 | Linux p99 | Linux max | ours/Linux p50 | ours/Linux p99 |",
            );
            md.push_str("\n|---|---:|---:|---:|---|---:|---:|---:|---:|---:|");
        } else {
            md.push_str("\n|---|---:|---:|---:|");
        }
        let ratio = |o: f64, t: f64| {
            if t > 0.0 {
                ratio_text(o / t)
            } else {
                "–".into()
            }
        };
        let mut shown: Vec<&str> = Vec::new();
        for r in &self.latencies {
            let _ = write!(
                md,
                "\n| {} | {:.1} | {:.1} | {:.1} |",
                r.name, r.p50_us, r.p99_us, r.max_us
            );
            let Some(l) = linux else { continue };
            match linux::latency_row_for(&r.name).and_then(|w| l.latency(w)) {
                Some(t) => {
                    shown.push(&t.what);
                    let _ = write!(
                        md,
                        " {} | {:.1} | {:.1} | {:.1} | {} | {} |",
                        t.what,
                        t.p50_us,
                        t.p99_us,
                        t.max_us,
                        ratio(r.p50_us, t.p50_us),
                        ratio(r.p99_us, t.p99_us)
                    );
                }
                None => md.push_str(" – | – | – | – | – | – |"),
            }
        }
        if let Some(l) = linux {
            for t in l
                .latencies
                .iter()
                .filter(|t| !shown.contains(&t.what.as_str()))
            {
                let _ = write!(
                    md,
                    "\n| – | – | – | – | {} | {:.1} | {:.1} | {:.1} | – | – |",
                    t.what, t.p50_us, t.p99_us, t.max_us
                );
            }
        }
        md.push('\n');
        md
    }

    /// The latency targets of issue 21 as a Markdown table, or nothing
    /// when none of their figures was measured: our kill -> release p50
    /// (and an asynchronous grace period's, `call_sched` to a waiter) at
    /// most 200 µs, at least 10x faster than Linux's (p50), and our
    /// rcu-sched grace period with readers on every CPU no slower than
    /// Linux's `synchronize_rcu` in that setting (p50).
    pub fn latency_targets(&self, linux: Option<&LinuxResults>) -> String {
        const KILL: &str = "percpu_ref kill -> release (kill)";
        const CONFIRM: &str = "percpu_ref kill -> release (kill_and_confirm)";
        const CALL: &str = "rcu-sched call_sched -> callback, a waiter sleeping on it";
        const SCHED: &str = "rcu-sched synchronize_sched, readers on every CPU";
        let ours = |name: &str| {
            self.latencies
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.p50_us)
        };
        let theirs = |name: &str| Some(linux?.latency(linux::latency_row_for(name)?)?.p50_us);
        /// One row: what, our p50, Linux's, the ratio shown, the goal,
        /// and whether it is met.
        struct Row {
            what: String,
            ours: f64,
            theirs: Option<f64>,
            ratio: Option<f64>,
            goal: &'static str,
            met: bool,
        }
        let mut rows: Vec<Row> = Vec::new();
        for name in [KILL, CONFIRM, CALL] {
            if let Some(o) = ours(name) {
                rows.push(Row {
                    what: format!("{name}: p50 (us)"),
                    ours: o,
                    theirs: None,
                    ratio: None,
                    goal: "<= 200",
                    met: o <= 200.0,
                });
                if let Some(t) = theirs(name).filter(|_| o > 0.0) {
                    rows.push(Row {
                        what: format!("{name}: Linux p50 / ours"),
                        ours: o,
                        theirs: Some(t),
                        ratio: Some(t / o),
                        goal: ">= 10",
                        met: t / o >= 10.0,
                    });
                }
            }
        }
        if let (Some(o), Some(t)) = (ours(SCHED), theirs(SCHED)) {
            rows.push(Row {
                what: format!("{SCHED}: p50 ours / Linux synchronize_rcu"),
                ours: o,
                theirs: Some(t),
                ratio: Some(o / t),
                goal: "<= 1",
                met: o / t <= 1.0,
            });
        }
        if rows.is_empty() {
            return String::new();
        }
        let mut md = String::from(
            "| latency target | ours p50 (us) | Linux p50 (us) | ratio | goal | met |\n|---|---:|---:|---:|---|---|",
        );
        let cell =
            |v: Option<f64>, digits: usize| v.map_or("–".into(), |v| format!("{v:.digits$}"));
        for row in rows {
            let _ = write!(
                md,
                "\n| {} | {:.1} | {} | {} | {} | {} |",
                row.what,
                row.ours,
                cell(row.theirs, 1),
                cell(row.ratio, 2),
                row.goal,
                if row.met { "yes" } else { "no" }
            );
        }
        md.push('\n');
        md
    }

    /// The tables as Markdown (pair costs, with Linux's figures when
    /// given, the speed targets, then latencies).
    pub fn markdown(&self, linux: Option<&LinuxResults>) -> String {
        let mut md = self.pairs_md(linux);
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
        md.push('\n');
        md.push_str(&self.latency_table(linux));
        if let Some(l) = linux.filter(|l| !l.latencies.is_empty()) {
            let _ = writeln!(
                md,
                "\nLinux: gp_latency on {}, same QEMU, -smp {}, {} samples per row ({} per kill row); ours/Linux below 1 means ours is faster.",
                l.kernel_release,
                l.smp,
                l.latencies.first().map_or(0, |t| t.samples),
                l.latencies
                    .iter()
                    .find(|t| t.what.contains("kill"))
                    .map_or(0, |t| t.samples)
            );
        }
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

    /// Two plots against CPUs, stacked in one SVG, log-scale y: ns per
    /// pair (`<g id="ns-per-pair">`), and each row's ratio to the floor at
    /// the same CPU count (`<g id="ratio-to-floor">`, when the floor row
    /// was measured), which cancels the host's time-sharing and shows
    /// flatness directly. One solid line per primitive, each in its own
    /// colour; with `linux`, a dashed line per refscale type that our rows
    /// compare with, in the colour of the first of those rows (its ratio
    /// is to our floor of the same run). Every line carries its label in
    /// `data-label`.
    pub fn svg(&self, linux: Option<&LinuxResults>) -> String {
        let series = self.plot_series(linux);
        let counts = self.cpu_counts();
        let (w, panel_h, left, legend_w, top) = (1000.0, 420.0, 70.0, 380.0, 40.0);
        let floor: Vec<Option<f64>> = counts
            .iter()
            .map(|&c| self.median(FLOOR, c).filter(|&v| v > 0.0))
            .collect();
        let has_ratio = floor.iter().any(Option::is_some);
        let panels = if has_ratio { 2.0 } else { 1.0 };
        let legend_h = 18.0 * series.len() as f64 + top;
        let h = (top + panels * (panel_h + 60.0)).max(legend_h + 20.0);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let area = Area {
            left,
            right: w - legend_w,
            top,
            bottom: top + panel_h,
        };
        let ns: Vec<Series> = series.clone();
        plot_panel(
            &mut svg,
            "ns-per-pair",
            "ns per pair per reader (median, log scale) against CPUs hammering at once",
            &area,
            &counts,
            &ns,
        );
        if has_ratio {
            let ratio: Vec<Series> = series
                .iter()
                .map(|s| Series {
                    values: s
                        .values
                        .iter()
                        .zip(&floor)
                        .map(|(v, f)| Some(v.as_ref()? / f.as_ref()?))
                        .collect(),
                    ..s.clone()
                })
                .collect();
            let below = Area {
                top: area.bottom + 60.0,
                bottom: area.bottom + 60.0 + panel_h,
                ..area
            };
            plot_panel(
                &mut svg,
                "ratio-to-floor",
                "each row / our floor (per-CPU inc+dec) at the same CPU count, Linux's too (log scale)",
                &below,
                &counts,
                &ratio,
            );
        }
        // The legend, once, beside both panels.
        let lx = w - legend_w + 15.0;
        for (k, s) in series.iter().enumerate() {
            let ly = top + 18.0 * k as f64;
            let _ = writeln!(
                svg,
                "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{}/><text x=\"{}\" y=\"{}\">{}</text>",
                lx + 25.0,
                s.colour,
                dash_attr(s.dashed),
                lx + 31.0,
                ly + 4.0,
                xml_text(&s.label)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Our rows (solid, each its own colour), then Linux's refscale types
    /// that our rows compare with (dashed, in the colour of the first
    /// matching row), with their medians per CPU count.
    fn plot_series(&self, linux: Option<&LinuxResults>) -> Vec<Series> {
        let counts = self.cpu_counts();
        let names = self.names();
        let mut series: Vec<Series> = names
            .iter()
            .enumerate()
            .map(|(k, name)| Series {
                label: name.to_string(),
                colour: COLOURS[k % COLOURS.len()],
                dashed: false,
                values: counts.iter().map(|&c| self.median(name, c)).collect(),
            })
            .collect();
        if let Some(l) = linux {
            let mut types: Vec<(&str, &'static str)> = Vec::new();
            for (k, name) in names.iter().enumerate() {
                if let Some(t) = linux::scale_type_for(name) {
                    let measured = l.measurements.iter().any(|m| m.scale_type == t);
                    if measured && !types.iter().any(|(seen, _)| *seen == t) {
                        types.push((t, COLOURS[k % COLOURS.len()]));
                    }
                }
            }
            for (t, colour) in types {
                series.push(Series {
                    label: format!("Linux refscale {t}"),
                    colour,
                    dashed: true,
                    values: counts
                        .iter()
                        .map(|&c| l.find(t, c).map(|m| m.median_ns))
                        .collect(),
                });
            }
        }
        series
    }
}

/// A ratio with two decimals, or three significant digits below 0.1
/// (latencies differ by orders of magnitude: 0.0043, not 0.00).
fn ratio_text(r: f64) -> String {
    if r >= 0.1 || r == 0.0 {
        format!("{r:.2}")
    } else {
        let digits = (2 - r.log10().floor() as i32).clamp(3, 6) as usize;
        format!("{r:.digits$}")
    }
}

/// The bench row every ratio of the second plot divides by.
const FLOOR: &str = "floor: per-CPU inc+dec (gs)";

/// One colour per row of the bench, in the kernel's row order (it has
/// 14), so that no two of our lines share one and Linux's dashed lines can
/// take their row's: the rows that Linux's lines match get the eight most
/// distinct hues (plain load blue, shared `lock xadd` green, percpu_ref
/// per-CPU red and atomic magenta, SRCU orange, RwLock purple, Mutex
/// brown, rcu-sched cyan); the floor is black; a row close to another
/// takes a lighter or darker shade of its hue (private `lock xadd`,
/// dynamic percpu_ref, SRCU-fast).
const COLOURS: [&str; 16] = [
    "#1f77b4", "#000000", "#2ca02c", "#98df8a", "#bcbd22", "#d62728", "#e377c2", "#ff9896",
    "#ff7f0e", "#b35806", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#393b79", "#637939",
];

/// One line of a plot.
#[derive(Clone, Debug)]
struct Series {
    label: String,
    colour: &'static str,
    /// Linux's lines are dashed.
    dashed: bool,
    /// One value per CPU count (none where not measured).
    values: Vec<Option<f64>>,
}

/// Where a plot's axes go, in SVG pixels.
#[derive(Clone, Copy)]
struct Area {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

fn dash_attr(dashed: bool) -> &'static str {
    if dashed {
        " stroke-dasharray=\"7 4\""
    } else {
        ""
    }
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One log-scale panel: a title, grid lines at 1, 2 and 5 of every
/// decade, the CPU counts below, and a polyline per series, in a group
/// with the id `id`.
fn plot_panel(
    svg: &mut String,
    id: &str,
    title: &str,
    a: &Area,
    counts: &[u32],
    series: &[Series],
) {
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = values
        .iter()
        .copied()
        .fold(f64::MAX, f64::min)
        .max(1e-3)
        .log10()
        .floor();
    let hi = values
        .iter()
        .copied()
        .fold(f64::MIN_POSITIVE, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let x = |i: usize| a.left + (a.right - a.left) * i as f64 / (counts.len().max(2) - 1) as f64;
    let y = |v: f64| a.top + (a.bottom - a.top) * (hi - v.max(1e-3).log10()) / (hi - lo);
    let _ = writeln!(
        svg,
        "<g id=\"{id}\">\n<text x=\"{}\" y=\"{}\" font-size=\"14\">{}</text>",
        a.left,
        a.top - 14.0,
        xml_text(title)
    );
    for decade in lo as i32..hi as i32 {
        for step in [1.0, 2.0, 5.0] {
            let v = step * 10f64.powi(decade);
            let (colour, yv) = (if step == 1.0 { "#ccc" } else { "#eee" }, y(v));
            let _ = writeln!(
                svg,
                "<line x1=\"{}\" x2=\"{}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"{colour}\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
                a.left,
                a.right,
                a.left - 6.0,
                yv + 4.0
            );
        }
    }
    let (yv, top) = (y(10f64.powi(hi as i32)), 10f64.powi(hi as i32));
    let _ = writeln!(
        svg,
        "<line x1=\"{}\" x2=\"{}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"#ccc\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{top}</text>",
        a.left,
        a.right,
        a.left - 6.0,
        yv + 4.0
    );
    for (i, c) in counts.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{c} cpu{}</text>",
            x(i),
            a.bottom + 20.0,
            if *c == 1 { "" } else { "s" }
        );
    }
    for s in series {
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline data-label=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} points=\"{}\"/>",
            xml_text(&s.label),
            s.colour,
            dash_attr(s.dashed),
            points.join(" ")
        );
    }
    svg.push_str("</g>\n");
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

    /// (panel id, label, stroke, dashed, points) of every polyline.
    fn polylines(svg: &str) -> Vec<(String, String, String, bool, String)> {
        let attr = |line: &str, key: &str| -> String {
            let start = line.find(&format!(" {key}=\"")).expect(key) + key.len() + 3;
            line[start..].split('"').next().unwrap().to_string()
        };
        let mut panel = String::new();
        let mut out = Vec::new();
        for line in svg.lines() {
            if line.starts_with("<g id=") {
                panel = attr(line, "id");
            } else if line.starts_with("<polyline") {
                out.push((
                    panel.clone(),
                    attr(line, "data-label"),
                    attr(line, "stroke"),
                    line.contains("stroke-dasharray"),
                    attr(line, "points"),
                ));
            }
        }
        out
    }

    fn linux_with(types: &[(&str, [f64; 2])]) -> LinuxResults {
        let mut measurements = Vec::new();
        for (t, ns) in types {
            for (nreaders, ns) in [1, 8].into_iter().zip(ns) {
                measurements.push(linux::Measurement {
                    scale_type: t.to_string(),
                    nreaders,
                    smp: 8,
                    loops: 1000,
                    runs_ns: vec![*ns],
                    median_ns: *ns,
                    min_ns: *ns,
                    max_ns: *ns,
                    ms_per_reader: 1.0,
                });
            }
        }
        LinuxResults {
            kernel_release: "6.12.117+deb12-amd64".into(),
            kernel_package: "linux-image-6.12.117+deb12-amd64 6.12.117-1~deb12u1".into(),
            qemu_version: "QEMU 7.2".into(),
            qemu_command: "qemu-system-x86_64".into(),
            smp: 8,
            unit: "ns".into(),
            warnings: Vec::new(),
            measurements,
            latencies: Vec::new(),
        }
    }

    #[test]
    fn linux_lines_take_their_rows_colour_and_the_ratio_plot_is_there() {
        let mut r = Results::default();
        for line in [
            "bench: plain load (refscale jiffies) | cpus=1 | min=4.00 | median=4.00",
            "bench: plain load (refscale jiffies) | cpus=8 | min=16.00 | median=16.00",
            "bench: floor: per-CPU inc+dec (gs) | cpus=1 | min=6.00 | median=6.00",
            "bench: floor: per-CPU inc+dec (gs) | cpus=8 | min=24.00 | median=24.00",
            "bench: lock xadd pair, shared line | cpus=1 | min=16.00 | median=16.00",
            "bench: lock xadd pair, shared line | cpus=8 | min=190.00 | median=192.00",
            "bench: kref get+put | cpus=1 | min=20.00 | median=21.00",
            "bench: kref get+put | cpus=8 | min=250.00 | median=252.00",
            "bench: percpu_ref get+put, per-CPU | cpus=1 | min=12.00 | median=12.00",
            "bench: percpu_ref get+put, per-CPU | cpus=8 | min=48.00 | median=48.00",
            "bench: percpu_ref get+put, atomic | cpus=1 | min=70.00 | median=76.00",
            "bench: percpu_ref get+put, atomic | cpus=8 | min=700.00 | median=760.00",
            "bench: percpu_ref get+put, dynamic (switched) | cpus=1 | min=12.00 | median=12.00",
            "bench: percpu_ref get+put, dynamic (switched) | cpus=8 | min=48.00 | median=48.00",
        ] {
            r.add_line(line);
        }
        let linux = linux_with(&[
            ("jiffies", [1.5, 6.0]),
            ("refcnt", [15.0, 180.0]),
            ("percpu_ref", [50.0, 160.0]),
            ("percpu_ref-atomic", [96.0, 250.0]),
        ]);
        let svg = r.svg(Some(&linux));
        let lines = polylines(&svg);
        let colour_of = |panel: &str, label: &str| -> (String, bool) {
            let l = lines
                .iter()
                .find(|l| l.0 == panel && l.1 == label)
                .unwrap_or_else(|| panic!("no line {label} in {panel}: {svg}"));
            (l.2.clone(), l.3)
        };
        for panel in ["ns-per-pair", "ratio-to-floor"] {
            // Each of our rows solid, and no two in one colour.
            let ours: Vec<&(String, String, String, bool, String)> =
                lines.iter().filter(|l| l.0 == panel && !l.3).collect();
            assert_eq!(ours.len(), 7, "{panel}: {svg}");
            let mut colours: Vec<&str> = ours.iter().map(|l| l.2.as_str()).collect();
            colours.sort_unstable();
            colours.dedup();
            assert_eq!(colours.len(), 7, "{panel}: two rows share a colour");
            // Each Linux line dashed, in the colour of the first row it
            // compares with.
            for (linux_type, row) in [
                ("jiffies", "plain load (refscale jiffies)"),
                ("refcnt", "lock xadd pair, shared line"),
                ("percpu_ref", "percpu_ref get+put, per-CPU"),
                ("percpu_ref-atomic", "percpu_ref get+put, atomic"),
            ] {
                let (theirs, dashed) = colour_of(panel, &format!("Linux refscale {linux_type}"));
                assert!(dashed, "Linux {linux_type} is not dashed");
                assert_eq!(
                    theirs,
                    colour_of(panel, row).0,
                    "{panel}: Linux {linux_type} is not in the colour of `{row}`"
                );
            }
            assert_eq!(lines.iter().filter(|l| l.0 == panel && l.3).count(), 4);
        }
        // The floor's ratio to itself is 1 at every count: a flat line.
        let floor = lines
            .iter()
            .find(|l| l.0 == "ratio-to-floor" && l.1 == "floor: per-CPU inc+dec (gs)")
            .unwrap();
        let ys: Vec<&str> = floor
            .4
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(ys.len(), 2);
        assert_eq!(ys[0], ys[1], "{}", floor.4);
        // percpu_ref per-CPU is 2x the floor at both counts: flat too, and
        // above the floor (smaller y).
        let pcpu = &lines
            .iter()
            .find(|l| l.0 == "ratio-to-floor" && l.1 == "percpu_ref get+put, per-CPU")
            .unwrap()
            .4;
        let py: Vec<f64> = pcpu
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(py[0], py[1], "{pcpu}");
        assert!(py[0] < ys[0].parse::<f64>().unwrap());
        // The legend has one entry per line.
        assert!(svg.contains(">Linux refscale percpu_ref-atomic<"), "{svg}");
        // Without the floor row there is no ratio plot.
        let mut no_floor = Results::default();
        no_floor.add_line("bench: kref get+put | cpus=1 | min=20.00 | median=21.00");
        let svg = no_floor.svg(None);
        assert!(svg.contains("<g id=\"ns-per-pair\">") && !svg.contains("ratio-to-floor"));

        // percpu_ref rows now stand beside Linux's percpu_ref.
        let table = r.pair_table(Some(&linux));
        assert!(
            table.contains("| percpu_ref get+put, per-CPU | percpu_ref | 12.0 | 50.0 | 4.17 | 48.0 | 160.0 | 3.33 |"),
            "{table}"
        );
        assert!(
            table.contains("| percpu_ref get+put, atomic | percpu_ref-atomic | 76.0 |"),
            "{table}"
        );
        assert!(
            r.targets(Some(&linux)).contains(
                "| percpu_ref per-CPU / Linux percpu_ref | 0.24 | 0.30 | <= 0.5 at every count | yes |"
            ),
            "{}",
            r.targets(Some(&linux))
        );
    }

    #[test]
    fn latencies_stand_beside_linux_with_a_ratio() {
        let mut r = Results::default();
        for line in [
            "latency: rcu-sched synchronize_sched, idle | p50=86.7 | p99=1471.4 | max=5533.9",
            "latency: percpu_ref kill -> release (kill) | p50=77.7 | p99=1629.6 | max=1629.6",
            "latency: percpu_ref kill -> release (kill_and_confirm) | p50=250.0 | p99=300.0 | max=300.0",
            "latency: rcu-sched synchronize_sched, readers on every CPU | p50=11967.9 | p99=29024.9 | max=31937.2",
            "latency: something new | p50=1.0 | p99=2.0 | max=3.0",
        ] {
            r.add_line(line);
        }
        let mut linux = linux_with(&[]);
        let log = "# smp: 8\n\
            [ 1.0] gp-latency: synchronize_rcu, idle | samples=200 | p50_ns=16051543 | p99_ns=20059549 | max_ns=20059549\n\
            [ 1.1] gp-latency: synchronize_rcu_expedited, idle | samples=200 | p50_ns=1880216 | p99_ns=5830921 | max_ns=5830921\n\
            [ 1.2] gp-latency: percpu_ref_kill -> release, idle | samples=20 | p50_ns=19989359 | p99_ns=27757982 | max_ns=27757982\n\
            [ 1.3] gp-latency: percpu_ref_kill_and_confirm -> release, idle | samples=20 | p50_ns=1500000 | p99_ns=2000000 | max_ns=2000000\n\
            [ 1.4] gp-latency: synchronize_rcu, readers on every CPU | samples=200 | p50_ns=59411628 | p99_ns=88526571 | max_ns=88526571\n";
        linux.latencies = LinuxResults::parse_console(log).unwrap().latencies;
        let t = r.latency_table(Some(&linux));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| latency (us) | p50 | p99 | max | Linux (gp_latency) | Linux p50 | Linux p99 | Linux max | ours/Linux p50 | ours/Linux p99 |"
        );
        // 86.7 / 16051.5 and 1471.4 / 20059.5, to three digits.
        assert_eq!(
            lines[2],
            "| rcu-sched synchronize_sched, idle | 86.7 | 1471.4 | 5533.9 | synchronize_rcu, idle | 16051.5 | 20059.5 | 20059.5 | 0.00540 | 0.0734 |"
        );
        assert_eq!(
            lines[6],
            "| something new | 1.0 | 2.0 | 3.0 | – | – | – | – | – | – |"
        );
        // Linux's rows that none of ours matches follow.
        assert_eq!(
            lines[7],
            "| – | – | – | – | synchronize_rcu_expedited, idle | 1880.2 | 5830.9 | 5830.9 | – | – |"
        );
        assert_eq!(lines.len(), 8, "{t}");
        // Without Linux: four columns, as before.
        assert_eq!(
            r.latency_table(None).lines().next(),
            Some("| latency (us) | p50 | p99 | max |")
        );
        // The runner prints pair_table under bench-vs-linux: it carries the
        // latency table too, and the Markdown has it once.
        assert!(r.pair_table(Some(&linux)).contains(&t));
        assert_eq!(
            r.markdown(Some(&linux)).matches("| latency (us) |").count(),
            1
        );
        let targets = r.latency_targets(Some(&linux));
        let tl: Vec<&str> = targets.lines().collect();
        assert_eq!(
            tl[2],
            "| percpu_ref kill -> release (kill): p50 (us) | 77.7 | – | – | <= 200 | yes |"
        );
        // 19989.4 / 77.7 = 257.
        assert_eq!(
            tl[3],
            "| percpu_ref kill -> release (kill): Linux p50 / ours | 77.7 | 19989.4 | 257.26 | >= 10 | yes |"
        );
        assert_eq!(
            tl[4],
            "| percpu_ref kill -> release (kill_and_confirm): p50 (us) | 250.0 | – | – | <= 200 | no |"
        );
        // 1500 / 250 = 6.
        assert_eq!(
            tl[5],
            "| percpu_ref kill -> release (kill_and_confirm): Linux p50 / ours | 250.0 | 1500.0 | 6.00 | >= 10 | no |"
        );
        // 11967.9 / 59411.6.
        assert_eq!(
            tl[6],
            "| rcu-sched synchronize_sched, readers on every CPU: p50 ours / Linux synchronize_rcu | 11967.9 | 59411.6 | 0.20 | <= 1 | yes |"
        );
        assert!(r.targets(Some(&linux)).contains(&targets));
        assert!(Results::default().latency_targets(None).is_empty());
    }

    #[test]
    fn call_sched_with_a_waiter_is_a_latency_target() {
        let mut r = Results::default();
        r.add_line("latency: rcu-sched call_sched -> callback, a waiter sleeping on it | p50=260.0 | p99=300.0 | max=310.0");
        let t = r.latency_targets(None);
        assert!(
            t.contains("| rcu-sched call_sched -> callback, a waiter sleeping on it: p50 (us) | 260.0 | – | – | <= 200 | no |"),
            "{t}"
        );
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
