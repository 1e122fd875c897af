//! `cargo run -- [options]`: boot the kernel in QEMU with the serial
//! console on stdout; the exit status tells how the kernel ended.

use std::path::Path;
use std::process::ExitCode;

use boot::linux::LinuxResults;
use boot::options::{self, Mode, Options, Parsed};
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
    // Read Linux's figures first: a bad file should not cost a bench run.
    let linux = match &opts.linux_results {
        None => None,
        Some(path) => match LinuxResults::load(path, opts.smp) {
            Ok(l) => Some(l),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        },
    };
    let image = Path::new(boot::KERNEL_IMAGE);
    let mut bench = boot::bench::Results::default();
    let outcome = qemu::run(&opts, image, |line| {
        println!("{line}");
        bench.add_line(line);
    });
    if opts.mode == Mode::Bench && matches!(outcome, Ok(Outcome::Success)) {
        if let Err(err) = write_bench(&opts, image, &bench, linux.as_ref()) {
            eprintln!("runner: could not write the bench results: {err}");
            return ExitCode::from(1);
        }
        if let Some(l) = &linux {
            println!(
                "bench-vs-linux: Linux {} refscale, same QEMU, -smp {}; Linux/ours > 1: ours is cheaper",
                l.kernel_release, l.smp
            );
            for line in bench.pair_table(Some(l)).lines() {
                println!("bench-vs-linux: {line}");
            }
        }
        for line in bench.targets(linux.as_ref()).lines() {
            println!("bench-targets: {line}");
        }
    }
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

/// Writes target/bench/primitives.{json,md,svg}.
fn write_bench(
    opts: &Options,
    image: &Path,
    results: &boot::bench::Results,
    linux: Option<&LinuxResults>,
) -> std::io::Result<()> {
    let dir = boot::bench::out_dir();
    std::fs::create_dir_all(&dir)?;
    let cmd = qemu::command(opts, image);
    let qemu_command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let accel = format!("{:?}", opts.accel).to_lowercase();
    let json = results.json(
        &qemu_command,
        &accel,
        opts.smp,
        &boot::bench::commit(),
        linux,
    );
    std::fs::write(dir.join("primitives.json"), json)?;
    std::fs::write(dir.join("primitives.md"), results.markdown(linux))?;
    std::fs::write(dir.join("primitives.svg"), results.svg(linux))?;
    eprintln!("runner: wrote {}/primitives.{{json,md,svg}}", dir.display());
    Ok(())
}
