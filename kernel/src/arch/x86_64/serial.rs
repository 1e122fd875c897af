//! The 16550 UART at COM1, the kernel's console.
//!
//! One `println!` holds the console lock for the whole line, with local
//! interrupts off, so lines from different CPUs and from interrupt handlers
//! never interleave and a handler can never deadlock on a lock its own CPU
//! holds. The fatal path ([`emergency_println`]) takes the lock by force
//! after a bounded wait, because the holder may be the CPU that failed.

use core::fmt::{self, Write};

use ::x86_64::instructions::interrupts;
use ::x86_64::instructions::port::Port;
use spin::Mutex;

/// I/O base of COM1.
const COM1: u16 = 0x3f8;

/// A 16550-compatible UART.
pub struct Uart {
    base: u16,
}

impl Uart {
    /// Line status register bit: the transmit holding register is empty.
    const LSR_THR_EMPTY: u8 = 1 << 5;

    fn reg(&self, offset: u16) -> Port<u8> {
        Port::new(self.base + offset)
    }

    /// Programs 115200 baud, 8N1, FIFOs on, no UART interrupts.
    fn init(&mut self) {
        let setup: [(u16, u8); 7] = [
            (1, 0x00), // IER: no interrupts
            (3, 0x80), // LCR: DLAB on to set the divisor
            (0, 0x01), // DLL: divisor 1 = 115200 baud
            (1, 0x00), // DLM
            (3, 0x03), // LCR: 8 bits, no parity, one stop bit, DLAB off
            (2, 0xc7), // FCR: enable and clear FIFOs, 14-byte threshold
            (4, 0x0b), // MCR: DTR, RTS, OUT2
        ];
        for (offset, value) in setup {
            // SAFETY: COM1's registers are I/O ports owned by this driver;
            // writing them has no effect on memory.
            unsafe { self.reg(offset).write(value) };
        }
    }

    fn send(&mut self, byte: u8) {
        // SAFETY: reading LSR and writing THR of COM1 only touch the UART.
        unsafe {
            while self.reg(5).read() & Self::LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            self.reg(0).write(byte);
        }
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.send(b));
        Ok(())
    }
}

static CONSOLE: Mutex<Uart> = Mutex::new(Uart { base: COM1 });

/// Programs the UART. Called once, first thing at boot.
pub fn init() {
    CONSOLE.lock().init();
}

/// Writes formatted text under the console lock with interrupts off.
/// Use [`crate::print!`] and [`crate::println!`] instead.
pub fn _print(args: fmt::Arguments<'_>) {
    interrupts::without_interrupts(|| {
        // A formatting error can only come from a Display impl; the console
        // itself never fails, so there is nothing useful to do with it.
        let _ = CONSOLE.lock().write_fmt(args);
    });
}

/// Prints one line on the fatal path: waits a bounded time for the console
/// lock, then takes it by force (its holder may be stopped for good).
pub fn emergency_println(args: fmt::Arguments<'_>) {
    interrupts::disable();
    let mut tries = 0u32;
    let mut console = loop {
        if let Some(guard) = CONSOLE.try_lock() {
            break guard;
        }
        tries += 1;
        if tries == 10_000_000 {
            // SAFETY: the holder is either this CPU (a panic while printing)
            // or a CPU that has not released the lock for ten million tries,
            // i.e. is stopped or stuck. The run ends right after this line,
            // so at worst one line is garbled; that beats a silent hang.
            unsafe { CONSOLE.force_unlock() };
        }
        core::hint::spin_loop();
    };
    let _ = write!(OneLine(&mut *console), "{args}");
    let _ = console.write_str("\n");
}

/// Folds newlines into spaces so that one message stays one line, as the
/// host-side parsers of the serial protocol expect.
pub struct OneLine<W>(pub W);

impl<W: fmt::Write> fmt::Write for OneLine<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut parts = s.split('\n');
        if let Some(first) = parts.next() {
            self.0.write_str(first)?;
        }
        for part in parts {
            self.0.write_str(" ")?;
            self.0.write_str(part)?;
        }
        Ok(())
    }

    fn write_char(&mut self, c: char) -> fmt::Result {
        self.0.write_char(if c == '\n' { ' ' } else { c })
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::arch::serial::_print(format_args!($($arg)*)));
}

/// Prints one line to the serial console; never interleaves with others.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::arch::serial::_print(format_args!("{}\n", format_args!($($arg)*))));
}

crate::ktest! {
    /// Every CPU prints at once from interrupt context (the call IPI) and
    /// nothing deadlocks; messages are folded onto one line.
    #[smp(1, 8)]
    fn console_is_usable_from_every_cpu_and_from_interrupts() {
        super::smp::on_each_cpu(&|| {
            for i in 0..3 {
                crate::println!("serial: line {i} from cpu {} in an IPI handler", super::cpu_id());
            }
        });
        let mut folded = alloc::string::String::new();
        let arg = "c\nd"; // newlines in an argument are folded too
        write!(OneLine(&mut folded), "a\nb\n{arg}").unwrap();
        assert_eq!(folded, "a b c d");
    }
}
