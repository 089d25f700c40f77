//! What every test binary of this crate shares: the vector table and reset handler, the
//! critical-section implementation defmt-semihosting needs, the global defmt logger, and
//! the panic handlers that end QEMU with a failure status.
//!
//! A case panics on a wrong outcome; the handlers below print the message and exit with
//! a non-zero semihosting status, so a failure cannot look like a pass.
#![no_std]

use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m as _;
use cortex_m_rt as _;
use defmt_semihosting as _;

/// The exit status of a failed run (what Rust's test harness uses for a panic).
const FAILURE: i32 = 101;

/// Set by the first panic, so a panic while reporting one exits at once.
static PANICKING: AtomicBool = AtomicBool::new(false);

/// `defmt::panic!` and the `defmt::assert*` macros have already logged their message.
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    semihosting::process::exit(FAILURE)
}

/// A core panic: a failed `assert!` of a case, or an overflow or index out of range in the
/// code under test.
#[panic_handler]
fn core_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if !PANICKING.swap(true, Ordering::Relaxed) {
        defmt::error!("{}", defmt::Display2Format(info));
    }
    semihosting::process::exit(FAILURE)
}
