//! Every in-kernel test as its own cargo test trial.
//!
//! Boots the kernel once to list its tests, then runs them in batches (one
//! boot per CPU count) the first time a trial of that batch is reached.
//! `cargo test -- NAME` filters as usual; harness self-tests (meant to
//! fail) are left to `harness.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use boot::ktest::{self, TestInfo, TestResult};
use boot::options::Options;
use libtest_mimic::{Arguments, Failed, Trial};

fn trial_name(test: &TestInfo, smp: u32) -> String {
    if test.smp == [8] {
        test.name.clone()
    } else {
        format!("{}@smp{smp}", test.name)
    }
}

fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |pattern: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    args.filter.as_deref().is_none_or(matches) && !args.skip.iter().any(|s| matches(s))
}

type Batch = OnceLock<BTreeMap<String, TestResult>>;

fn main() {
    let mut args = Arguments::from_args();
    // One QEMU at a time: the batches already use every CPU of the guest.
    args.test_threads.get_or_insert(1);
    let image = Path::new(boot::KERNEL_IMAGE);
    let tests = match ktest::list(&Options::default(), image) {
        Ok(tests) => tests,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(101);
        }
    };

    // Group the selected (test, smp) pairs by CPU count: one boot each.
    let mut groups: BTreeMap<u32, Vec<(String, String, Duration)>> = BTreeMap::new();
    for test in tests.iter().filter(|t| !t.selftest) {
        for &smp in &test.smp {
            let trial = trial_name(test, smp);
            if selected(&args, &trial) {
                groups
                    .entry(smp)
                    .or_default()
                    .push((trial, test.name.clone(), test.timeout));
            }
        }
    }
    let batches: BTreeMap<u32, Arc<Batch>> =
        groups.keys().map(|&smp| (smp, Arc::default())).collect();

    let mut trials = Vec::new();
    for test in tests.iter().filter(|t| !t.selftest) {
        for &smp in &test.smp {
            let name = test.name.clone();
            let batch = batches.get(&smp).cloned().unwrap_or_default();
            let members: Vec<(String, Duration)> = groups
                .get(&smp)
                .map(|g| g.iter().map(|(_, n, t)| (n.clone(), *t)).collect())
                .unwrap_or_else(|| vec![(name.clone(), test.timeout)]);
            trials.push(Trial::test(trial_name(test, smp), move || {
                let opts = Options {
                    smp,
                    ..Options::default()
                };
                let results = batch.get_or_init(|| ktest::run_batch(&opts, image, &members));
                match results.get(&name) {
                    Some(TestResult::Ok) => Ok(()),
                    Some(TestResult::Failed { reason, log }) => Err(Failed::from(format!(
                        "{reason}\n--- serial log of the test ---\n{}",
                        log.join("\n")
                    ))),
                    None => Err(Failed::from("the harness recorded no result for this test")),
                }
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
