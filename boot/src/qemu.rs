//! Running the kernel in QEMU: the command line, the serial stream, the
//! timeout, and the meaning of QEMU's exit status.
//!
//! A [`Running`] QEMU is killed when it is dropped, so a panic or an early
//! return in the runner never leaves a guest behind.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::abi::{ExitCode, CMDLINE_FW_CFG, DEBUG_EXIT_PORT};
use crate::options::{Accel, Options};

const QEMU: &str = "qemu-system-x86_64";

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel wrote [`ExitCode::Success`].
    Success,
    /// The kernel wrote [`ExitCode::Failure`] (panic, fault, failed test).
    KernelFailure,
    /// QEMU ended without the kernel saying how (a triple fault resets the
    /// machine, which `-no-reboot` turns into an exit), or failed to start.
    Crashed(String),
    /// The timeout passed; QEMU was killed.
    TimedOut(Duration),
}

impl Outcome {
    /// The runner's process exit status for this outcome.
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::Success => 0,
            _ => 1,
        }
    }
}

/// Checks that QEMU (and /dev/kvm for `--accel kvm`) can be used, with a
/// one-line explanation of what to install when not.
pub fn check_prerequisites(opts: &Options) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(QEMU).is_file()))
        .unwrap_or(false);
    if !found {
        return Err(format!(
            "{QEMU} not found in PATH: install it (Debian/Ubuntu: apt-get install qemu-system-x86), or use scripts/run, which does"
        ));
    }
    if opts.accel == Accel::Kvm
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_err()
    {
        return Err("--accel kvm needs read-write access to /dev/kvm; use --accel tcg".into());
    }
    Ok(())
}

/// The QEMU command for `opts`, booting `image`.
pub fn command(opts: &Options, image: &Path) -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.arg("-drive")
        .arg(format!("format=raw,file={}", image.display()))
        // The image is shared by concurrent runs and never written.
        .arg("-snapshot")
        .args(["-smp", &opts.smp.to_string()])
        .args(["-m", &format!("{}M", opts.memory_mib)])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-no-reboot")
        .arg("-device")
        .arg(format!(
            "isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"
        ))
        .arg("-fw_cfg")
        // QEMU option syntax: a literal comma is written as two.
        .arg(format!(
            "name={CMDLINE_FW_CFG},string={}",
            opts.kernel_cmdline().replace(',', ",,")
        ));
    match opts.accel {
        Accel::Tcg => cmd.args(["-accel", "tcg"]),
        // The default CPU model: `-cpu host` makes nested KVM here abort.
        Accel::Kvm => cmd.args(["-accel", "kvm"]),
    };
    if opts.gdb {
        cmd.args(["-s", "-S"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A line QEMU printed, or the end of its output.
#[derive(Debug)]
pub enum Event {
    /// One line of the serial console (or of QEMU's own stderr, prefixed
    /// `qemu: `).
    Line(String),
    /// No line before the deadline.
    Timeout,
    /// QEMU closed its output: it is exiting.
    Eof,
}

/// A QEMU process and its console.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    started: Instant,
}

impl Running {
    /// Starts QEMU.
    pub fn start(opts: &Options, image: &Path) -> Result<Running, String> {
        check_prerequisites(opts)?;
        let mut child = command(opts, image)
            .spawn()
            .map_err(|e| format!("could not start {QEMU}: {e}"))?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        forward(stdout, tx.clone(), "");
        forward(stderr, tx, "qemu: ");
        Ok(Running {
            child,
            lines,
            started: Instant::now(),
        })
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The next console line, waiting at most until `deadline`.
    pub fn next_event(&mut self, deadline: Option<Instant>) -> Event {
        let got = match deadline {
            None => self
                .lines
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => self
                .lines
                .recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match got {
            Ok(line) => Event::Line(line),
            Err(RecvTimeoutError::Timeout) => Event::Timeout,
            Err(RecvTimeoutError::Disconnected) => Event::Eof,
        }
    }

    /// Kills QEMU and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for QEMU to exit and says how the kernel ended.
    pub fn finish(&mut self) -> Outcome {
        match self.child.wait() {
            Err(e) => Outcome::Crashed(format!("could not wait for QEMU: {e}")),
            Ok(status) => match status.code().and_then(ExitCode::from_qemu_status) {
                Some(ExitCode::Success) => Outcome::Success,
                Some(ExitCode::Failure) => Outcome::KernelFailure,
                None => Outcome::Crashed(format!(
                    "QEMU exited with {status} without a verdict from the kernel (a triple fault or reset?)"
                )),
            },
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

fn forward(stream: impl Read + Send + 'static, tx: mpsc::Sender<String>, prefix: &'static str) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&buf);
            let line = text.trim_end_matches(['\n', '\r']);
            if tx.send(format!("{prefix}{line}")).is_err() {
                break;
            }
            buf.clear();
        }
    });
}

/// Boots, hands every console line to `on_line`, and returns how the run
/// ended; the timeout of `opts` applies to the whole run.
pub fn run(opts: &Options, image: &Path, mut on_line: impl FnMut(&str)) -> Result<Outcome, String> {
    let mut qemu = Running::start(opts, image)?;
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    loop {
        match qemu.next_event(deadline) {
            Event::Line(line) => on_line(&line),
            Event::Eof => return Ok(qemu.finish()),
            Event::Timeout => {
                qemu.kill();
                return Ok(Outcome::TimedOut(qemu.elapsed()));
            }
        }
    }
}
