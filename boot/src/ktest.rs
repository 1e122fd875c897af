//! The host half of the in-kernel test protocol (see [`crate::abi::KTEST_PREFIX`]).
//!
//! [`list`] boots once to learn the registered tests. [`run_batch`] boots
//! with a list of tests and collects one [`TestResult`] per test: when the
//! kernel dies (panic, fault, triple fault) or a test outlives its timeout,
//! the test that was running is marked failed with its serial log, and the
//! kernel is booted again for the tests that have not run yet.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::abi::KTEST_PREFIX;
use crate::options::{Mode, Options};
use crate::qemu::{Event, Outcome, Running};

/// A registered kernel test, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestInfo {
    /// `module::path::name`, without the crate name.
    pub name: String,
    /// The CPU counts to boot it with.
    pub smp: Vec<u32>,
    /// How long it may run.
    pub timeout: Duration,
    /// A test of the harness that is meant to fail; not part of the suite.
    pub selftest: bool,
}

/// The verdict on one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestResult {
    /// It passed.
    Ok,
    /// It failed; `log` is what the console printed while it ran.
    Failed {
        /// Why, in one line.
        reason: String,
        /// The serial lines printed between its start and its end.
        log: Vec<String>,
    },
}

/// Time a boot may take before the first test starts.
fn boot_allowance(opts: &Options) -> Duration {
    match opts.accel {
        crate::options::Accel::Tcg => Duration::from_secs(60),
        crate::options::Accel::Kvm => Duration::from_secs(300),
    }
}

/// Boots in list mode and returns every registered test.
pub fn list(base: &Options, image: &Path) -> Result<Vec<TestInfo>, String> {
    let opts = Options {
        mode: Mode::List,
        tests: None,
        timeout: Some(boot_allowance(base)),
        ..base.clone()
    };
    let mut tests = Vec::new();
    let mut log = Vec::new();
    let outcome = crate::qemu::run(&opts, image, |line| {
        log.push(line.to_string());
        if let Some(rest) = line
            .strip_prefix(KTEST_PREFIX)
            .and_then(|l| l.strip_prefix("test "))
        {
            tests.push(parse_test_line(rest));
        }
    })?;
    match outcome {
        Outcome::Success => tests.into_iter().collect(),
        other => Err(format!(
            "listing the kernel tests failed ({other:?}); console:\n{}",
            log.join("\n")
        )),
    }
}

fn parse_test_line(rest: &str) -> Result<TestInfo, String> {
    let mut words = rest.split_whitespace();
    let name = words.next().ok_or("empty test line")?.to_string();
    let mut info = TestInfo {
        name,
        smp: vec![8],
        timeout: Duration::from_secs(60),
        selftest: false,
    };
    for word in words {
        let bad = || format!("bad word `{word}` in kernel test line `{rest}`");
        match word.split_once('=').ok_or_else(bad)? {
            ("smp", v) => {
                info.smp = v
                    .split(',')
                    .map(|n| n.parse().map_err(|_| bad()))
                    .collect::<Result<_, _>>()?
            }
            ("timeout", v) => info.timeout = Duration::from_secs(v.parse().map_err(|_| bad())?),
            ("selftest", v) => info.selftest = v == "1",
            _ => return Err(bad()),
        }
    }
    Ok(info)
}

/// Runs `tests` (given with their timeouts) on a kernel booted with
/// `base.smp` CPUs, booting again after every crash, and returns a result
/// for each.
pub fn run_batch(
    base: &Options,
    image: &Path,
    tests: &[(String, Duration)],
) -> BTreeMap<String, TestResult> {
    let mut results = BTreeMap::new();
    while results.len() < tests.len() {
        let remaining: Vec<&(String, Duration)> = tests
            .iter()
            .filter(|(n, _)| !results.contains_key(n))
            .collect();
        let opts = Options {
            mode: Mode::Test,
            tests: Some(remaining.iter().map(|(n, _)| n.clone()).collect()),
            timeout: None,
            ..base.clone()
        };
        let before = results.len();
        boot_once(&opts, image, &remaining, &mut results);
        if results.len() == before {
            // Not even one verdict: the kernel cannot run tests at all.
            // Fail the rest rather than boot forever.
            for (name, _) in remaining {
                results
                    .entry(name.clone())
                    .or_insert_with(|| TestResult::Failed {
                        reason: "the kernel ended before this test could run".into(),
                        log: Vec::new(),
                    });
            }
        }
    }
    results
}

/// One boot: records a verdict for each test that ran.
fn boot_once(
    opts: &Options,
    image: &Path,
    tests: &[&(String, Duration)],
    results: &mut BTreeMap<String, TestResult>,
) {
    let mut boot_log = Vec::new();
    let mut qemu = match Running::start(opts, image) {
        Ok(q) => q,
        Err(err) => {
            for (name, _) in tests {
                results.insert(
                    name.clone(),
                    TestResult::Failed {
                        reason: err.clone(),
                        log: Vec::new(),
                    },
                );
            }
            return;
        }
    };
    let timeout_of = |name: &str| tests.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
    let mut current: Option<String> = None;
    // A failure verdict ends the run (the fatal path exits QEMU), so a
    // failed exit right after one is explained.
    let mut just_failed = false;
    let mut log: Vec<String> = Vec::new();
    let mut deadline = Instant::now() + boot_allowance(opts);
    loop {
        match qemu.next_event(Some(deadline)) {
            Event::Line(line) => {
                let Some(msg) = line.strip_prefix(KTEST_PREFIX) else {
                    if current.is_some() {
                        &mut log
                    } else {
                        &mut boot_log
                    }
                    .push(line);
                    continue;
                };
                if let Some(name) = msg.strip_prefix("start ") {
                    current = Some(name.to_string());
                    just_failed = false;
                    log.clear();
                    deadline = Instant::now() + timeout_of(name).unwrap_or(Duration::from_secs(60));
                } else if let Some(rest) = msg.strip_prefix("ok ") {
                    let name = rest.split_whitespace().next().unwrap_or_default();
                    results.insert(name.to_string(), TestResult::Ok);
                    current = None;
                } else if let Some(rest) = msg.strip_prefix("FAILED ") {
                    let (name, reason) = rest.split_once(": ").unwrap_or((rest, "failed"));
                    results.insert(
                        name.to_string(),
                        TestResult::Failed {
                            reason: reason.to_string(),
                            log: std::mem::take(&mut log),
                        },
                    );
                    current = None;
                    just_failed = true;
                } else if msg.starts_with("done ") {
                    // Wait for the exit below; nothing else is to come.
                }
            }
            Event::Timeout => {
                qemu.kill();
                let reason = match &current {
                    Some(name) => format!(
                        "hung: no verdict within its timeout of {} s; QEMU was killed",
                        timeout_of(name).unwrap_or_default().as_secs()
                    ),
                    None => "the kernel did not start testing within the boot allowance".into(),
                };
                record_death(results, current.take(), reason, log, &boot_log, tests);
                return;
            }
            Event::Eof => {
                let outcome = qemu.finish();
                let explained = outcome == Outcome::Success
                    || (just_failed && outcome == Outcome::KernelFailure);
                if current.is_some() || !explained {
                    let reason = format!("the kernel died: {outcome:?}");
                    record_death(results, current.take(), reason, log, &boot_log, tests);
                }
                return;
            }
        }
    }
}

/// Marks the test that was running as failed; when no test was running,
/// the kernel died outside any test and every test left fails with the
/// boot log.
fn record_death(
    results: &mut BTreeMap<String, TestResult>,
    current: Option<String>,
    reason: String,
    log: Vec<String>,
    boot_log: &[String],
    tests: &[&(String, Duration)],
) {
    match current {
        Some(name) => {
            results
                .entry(name)
                .or_insert(TestResult::Failed { reason, log });
        }
        None => {
            for (name, _) in tests {
                results
                    .entry(name.clone())
                    .or_insert_with(|| TestResult::Failed {
                        reason: format!("{reason} (outside any test)"),
                        log: boot_log.to_vec(),
                    });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lines_parse() {
        let t = parse_test_line("mem::heap::grows smp=1,2,8 timeout=30 selftest=0").unwrap();
        assert_eq!(t.name, "mem::heap::grows");
        assert_eq!(t.smp, [1, 2, 8]);
        assert_eq!(t.timeout, Duration::from_secs(30));
        assert!(!t.selftest);
        assert!(parse_test_line("x smp=a").is_err());
        assert!(parse_test_line("x colour=red").is_err());
    }
}
