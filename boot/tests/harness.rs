//! Tests of the harness and the runner: failing kernel tests are reported
//! as failed (panic, page fault, hang) and the run goes on; bad options are
//! refused before QEMU starts; a plain boot exits with success.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use boot::ktest::{self, TestResult};
use boot::options::Options;

fn run(tests: &[(&str, u64)]) -> std::collections::BTreeMap<String, TestResult> {
    let tests: Vec<(String, Duration)> = tests
        .iter()
        .map(|(n, t)| (n.to_string(), Duration::from_secs(*t)))
        .collect();
    let opts = Options {
        smp: 1,
        ..Options::default()
    };
    ktest::run_batch(&opts, Path::new(boot::KERNEL_IMAGE), &tests)
}

fn failure(result: &TestResult) -> &str {
    match result {
        TestResult::Failed { reason, .. } => reason,
        TestResult::Ok => panic!("expected a failure, got ok"),
    }
}

#[test]
fn panics_faults_and_hangs_fail_and_the_run_goes_on() {
    let started = Instant::now();
    let results = run(&[
        ("ktest::selftest_panic_is_reported", 30),
        ("arch::x86_64::idt::selftest_page_fault_is_reported", 30),
        ("ktest::selftest_hang_is_caught", 3),
        ("arch::x86_64::idt::breakpoint_is_handled_and_resumes", 30),
    ]);
    let panic = failure(&results["ktest::selftest_panic_is_reported"]);
    assert!(panic.contains("deliberate failure 42"), "{panic}");
    let fault = failure(&results["arch::x86_64::idt::selftest_page_fault_is_reported"]);
    assert!(
        fault.contains("page fault") && fault.contains("cr2 0x8"),
        "{fault}"
    );
    let hang = failure(&results["ktest::selftest_hang_is_caught"]);
    assert!(hang.contains("hung"), "{hang}");
    assert_eq!(
        results["arch::x86_64::idt::breakpoint_is_handled_and_resumes"],
        TestResult::Ok
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the hang was waited for"
    );
}

#[test]
fn a_panic_on_another_cpu_names_that_cpu_and_ends_the_run() {
    let tests = vec![(
        "arch::x86_64::idt::selftest_panic_on_another_cpu_stops_all".to_string(),
        Duration::from_secs(30),
    )];
    let opts = Options {
        smp: 2,
        ..Options::default()
    };
    let results = ktest::run_batch(&opts, Path::new(boot::KERNEL_IMAGE), &tests);
    let reason = failure(&results[&tests[0].0]);
    assert!(
        reason.contains("deliberate failure on an application processor"),
        "{reason}"
    );
    assert!(!reason.contains("did not end the run"), "{reason}");
    let TestResult::Failed { log, .. } = &results[&tests[0].0] else {
        unreachable!()
    };
    assert!(
        log.iter()
            .any(|l| l.starts_with("FATAL on cpu 1: panicked at")),
        "{log:#?}"
    );
}

#[test]
fn sleeping_while_atomic_and_stack_overflows_are_reported() {
    let results = run(&[
        (
            "sched::tests::selftest_sleep_with_interrupts_off_is_reported",
            30,
        ),
        (
            "sched::tests::selftest_stack_overflow_hits_the_guard_page",
            30,
        ),
        ("sched::tests::selftest_wait_in_sched_guard_is_reported", 30),
        (
            "sched::tests::selftest_sleep_holding_a_spin_lock_is_reported",
            30,
        ),
    ]);
    let section = failure(&results["sched::tests::selftest_wait_in_sched_guard_is_reported"]);
    assert!(
        section.contains("wait_for_completion with preemption disabled")
            && section.contains("on cpu 0 at kernel/src/sched/tests.rs"),
        "{section}"
    );
    let spin = failure(&results["sched::tests::selftest_sleep_holding_a_spin_lock_is_reported"]);
    assert!(
        spin.contains("sleep with preemption disabled (a SpinLock or SchedGuard is held")
            && spin.contains("on cpu 0 at kernel/src/sched/tests.rs"),
        "{spin}"
    );
    let atomic = failure(&results["sched::tests::selftest_sleep_with_interrupts_off_is_reported"]);
    assert!(
        atomic.contains("sleep with interrupts off")
            && atomic.contains("on cpu 0 at kernel/src/sched/tests.rs"),
        "{atomic}"
    );
    let overflow = failure(&results["sched::tests::selftest_stack_overflow_hits_the_guard_page"]);
    assert!(
        overflow.contains("kernel stack overflow") && overflow.contains("guard page"),
        "{overflow}"
    );
}

#[test]
fn an_unknown_test_name_fails_that_name() {
    let results = run(&[("no::such::test", 30)]);
    assert!(failure(&results["no::such::test"]).contains("no such kernel test"));
}

fn runner(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_boot"))
        .args(args)
        .output()
        .expect("runner starts")
}

#[test]
fn bad_options_exit_2_before_qemu_starts() {
    let out = runner(&["--smp", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--smp 0: expected a whole number from 1 to 255"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing booted");
}

#[test]
fn a_plain_boot_prints_the_banner_and_exits_0() {
    let out = runner(&["--smp", "2", "--mode", "boot", "--timeout", "60"]);
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}");
    assert!(console.contains("refcnt kernel"), "{console}");
    assert!(console.contains("cpus: 2/2 online"), "{console}");
    assert!(console.contains("cmdline: mode=boot"), "{console}");
}

#[test]
fn a_failing_kernel_run_exits_1() {
    let out = runner(&[
        "--smp",
        "1",
        "--mode",
        "test",
        "--tests",
        "ktest::selftest_panic_is_reported",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("ktest: FAILED ktest::selftest_panic_is_reported: panicked at"),
        "{console}"
    );
}

#[test]
fn a_short_bench_runs_and_its_output_parses() {
    let out_dir = std::env::temp_dir().join(format!("refcnt-bench-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_boot"))
        .args([
            "--smp",
            "2",
            "--mode",
            "bench",
            "--bench-loops",
            "2000",
            "--bench-runs",
            "1",
            "--timeout",
            "120",
        ])
        .env("REFCNT_BENCH_OUT", &out_dir)
        .output()
        .expect("runner starts");
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}");
    let rows: Vec<(&str, usize, f64, f64)> = console
        .lines()
        .filter_map(|l| l.strip_prefix("bench: "))
        .filter(|l| l.contains(" | cpus="))
        .map(|l| {
            let parts: Vec<&str> = l.split(" | ").collect();
            assert_eq!(parts.len(), 4, "bad bench line `{l}`");
            let num = |p: &str, key: &str| {
                p.strip_prefix(key)
                    .unwrap_or_else(|| panic!("`{p}` lacks {key}"))
                    .to_string()
            };
            (
                parts[0],
                num(parts[1], "cpus=").parse().unwrap(),
                num(parts[2], "min=").parse().unwrap(),
                num(parts[3], "median=").parse().unwrap(),
            )
        })
        .collect();
    // Every case at 1 and 2 CPUs, and no case timed at zero (an optimised-
    // away loop would be).
    assert!(rows.len() >= 20, "{console}");
    assert!(
        rows.iter().any(|r| r.0.starts_with("floor") && r.1 == 2),
        "{console}"
    );
    for (name, cpus, min, median) in &rows {
        assert!(
            *min > 0.0 && median >= min,
            "{name} at {cpus} cpus: min {min}, median {median}"
        );
    }
    assert!(console.contains("bench-table: | primitive"), "{console}");
    let latencies: Vec<&str> = console
        .lines()
        .filter(|l| l.starts_with("latency: "))
        .collect();
    assert!(latencies.len() >= 8, "{console}");
    for line in latencies {
        let p50: f64 = line
            .split(" | ")
            .find_map(|p| p.strip_prefix("p50="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad latency line `{line}`"));
        assert!(p50 > 0.0, "{line}");
    }
    let json =
        std::fs::read_to_string(out_dir.join("primitives.json")).expect("primitives.json written");
    assert!(
        json.contains("\"pairs\"")
            && json.contains("\"smp\": 2")
            && json.contains("qemu-system-x86_64"),
        "{json}"
    );
    let svg =
        std::fs::read_to_string(out_dir.join("primitives.svg")).expect("primitives.svg written");
    assert!(svg.matches("<polyline").count() >= 10, "{svg}");
    assert!(std::fs::read_to_string(out_dir.join("primitives.md"))
        .unwrap()
        .contains("| latency (us) |"));
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn io_mode_is_the_default_and_checks_itself() {
    // A 4 s run: a freeze, a quiesce and a limits update each second, a
    // hot-remove and re-create at 2 s, verify on; every check must pass.
    let out = runner(&["--smp", "4", "--duration", "4", "--timeout", "180"]);
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}");
    let seconds: Vec<&str> = console
        .lines()
        .filter(|l| l.starts_with("io: t="))
        .collect();
    assert_eq!(seconds.len(), 4, "one stats line a second: {console}");
    for line in &seconds {
        for field in [
            "iops=",
            "per_cpu=[",
            "MB/s=",
            "p50=",
            "p99=",
            "inflight=",
            "usage=",
            "drain_max_us=",
            "srcu_gps=",
        ] {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
    assert!(console.contains("io: nullb0 removed in"), "{console}");
    assert!(console.contains("io: nullb0 re-created"), "{console}");
    for key in [
        "verify_failures=0",
        "errors=0",
        "double_completions=0",
        "hot_removes=1",
        "entered_after_remove=0",
        "result=ok",
    ] {
        assert!(
            console.lines().any(|l| l == format!("io: key {key}")),
            "io: key {key} missing: {console}"
        );
    }
    // The freezes' figures, as numbers: the drain ends at the release,
    // which the freezer's return follows.
    let key = |name: &str| -> u64 {
        let prefix = format!("io: key {name}=");
        console
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("io: key {name} missing: {console}"))
            .parse()
            .unwrap_or_else(|e| panic!("io: key {name}: {e}: {console}"))
    };
    assert!(
        key("freeze_release_p50_us") <= key("freeze_drain_p50_us"),
        "{console}"
    );
    // A freeze, a quiesce and a limits update each second (the hot-remove
    // takes one of the freezes' seconds).
    assert!(key("freezes") >= 2 && key("quiesces") >= 2, "{console}");
    assert!(
        key("limits_updates") >= 3 && key("srcu_gps") >= 3,
        "{console}"
    );
    // The summary table: a row per job and one for all, whose I/Os are
    // the total; every check passed.
    let rows: Vec<Vec<&str>> = console
        .lines()
        .filter_map(|l| l.strip_prefix("io: | "))
        .map(|l| l.strip_suffix(" |").unwrap_or(l).split(" | ").collect())
        .collect();
    let jobs: Vec<u64> = rows
        .iter()
        .filter(|r| r.len() == 8 && r[0].parse::<u64>().is_ok())
        .map(|r| r[2].parse().unwrap())
        .collect();
    assert_eq!(jobs.len(), 4, "a row per job: {console}");
    let all = rows.iter().find(|r| r[0] == "all").expect("the all row");
    assert_eq!(all[2].parse::<u64>().unwrap(), jobs.iter().sum::<u64>());
    assert_eq!(all[2].parse::<u64>().unwrap(), key("ios"));
    let checks: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| r.len() == 2 && r[0] != "check")
        .collect();
    assert!(checks.len() >= 10, "the checks' rows: {console}");
    assert!(checks.iter().all(|r| r[1] == "ok"), "{console}");
    // A bad io option is refused by the kernel with the reason.
    let out = runner(&["--smp", "1", "--io", "rw=sideways", "--timeout", "60"]);
    let console = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{console}");
    assert!(
        console.contains("`rw=sideways`: expected read, write, randread, randwrite or randrw"),
        "{console}"
    );
}

#[test]
fn live_mode_pushes_requests_and_checks_them() {
    for smp in ["1", "4"] {
        let out = runner(&[
            "--mode",
            "live",
            "--smp",
            smp,
            "--duration",
            "2",
            "--timeout",
            "120",
        ]);
        let console = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{console}");
        let seconds = console
            .lines()
            .filter(|l| l.starts_with("live: t="))
            .count();
        assert_eq!(seconds, 2, "one stats line a second: {console}");
        let done = console
            .lines()
            .find(|l| l.starts_with("live: done:"))
            .expect("a summary");
        assert!(
            done.ends_with(": ok") && done.contains("2 freezes (2 releases"),
            "{done}"
        );
    }
}
