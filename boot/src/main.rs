//! `cargo run -- [options]`: boot the kernel in QEMU with the serial
//! console on stdout; the exit status tells how the kernel ended.

use std::path::Path;
use std::process::ExitCode;

use boot::options::{self, Parsed};
use boot::qemu::{self, Outcome};

fn main() -> ExitCode {
    let opts = match options::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            print!("{}", options::HELP);
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if opts.gdb {
        eprintln!(
            "QEMU waits for GDB on localhost:1234; in another terminal:\n  gdb {} -ex 'target remote :1234'",
            boot::KERNEL_ELF
        );
    }
    let outcome = qemu::run(&opts, Path::new(boot::KERNEL_IMAGE), |line| {
        println!("{line}")
    });
    match outcome {
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
        Ok(outcome) => {
            match &outcome {
                Outcome::Success => {}
                Outcome::KernelFailure => eprintln!("runner: the kernel reported a failure (see above)"),
                Outcome::Crashed(why) => eprintln!("runner: {why}"),
                Outcome::TimedOut(after) => eprintln!(
                    "runner: timeout: killed QEMU after {:.1} s (--timeout sets the limit, 0 = none)",
                    after.as_secs_f64()
                ),
            }
            ExitCode::from(outcome.exit_status() as u8)
        }
    }
}
