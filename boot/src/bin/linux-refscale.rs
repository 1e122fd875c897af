//! `linux-refscale LOG OUT`: reads the console log of a
//! `scripts/linux-refscale` boot and writes its figures to OUT as JSON
//! (the file `scripts/bench --linux` hands to the runner).

use std::process::ExitCode;

use boot::linux::LinuxResults;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [log, out] = &args[..] else {
        eprintln!("usage: linux-refscale CONSOLE_LOG OUT_JSON");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("linux-refscale: {log}: {e}");
            return ExitCode::from(2);
        }
    };
    let results = match LinuxResults::parse_console(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("linux-refscale: {log}: {e}");
            return ExitCode::from(1);
        }
    };
    for w in &results.warnings {
        eprintln!("linux-refscale: warning: {w}");
    }
    if let Err(e) = std::fs::write(out, results.to_json()) {
        eprintln!("linux-refscale: {out}: {e}");
        return ExitCode::from(1);
    }
    eprint!("{}", results.summary());
    eprintln!("linux-refscale: wrote {out} (console log: {log})");
    ExitCode::SUCCESS
}
