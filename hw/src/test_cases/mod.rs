//! Test cases that run both as host unit tests and on a 32-bit Cortex-M3 (`tests/cortex-m`,
//! defmt-test under `qemu-system-arm`), so that each case is written once.
//!
//! A case is a `pub fn` that panics on a wrong outcome (`assert!`, or [`ok`] / [`some`] for
//! a step that must succeed): the host harness reports the panic, and the Cortex-M test
//! crate's panic handler prints it and ends QEMU with a failure status. [`host_tests!`]
//! declares the host `#[test]` of each case next to it.
//!
//! Compiled for this crate's tests, and for other crates only with the non-default
//! `test-cases` feature (the Cortex-M crate turns it on): none of it is part of the API, and
//! none of it is in the kernel object.
//!
//! Cases keep everything on the stack and lend table pools by `&mut`: the Cortex-M3 board
//! has 56 KiB of stack, and every move of a pool by value is another copy of it.

pub mod addr;
pub mod descriptor;
pub mod page_table;
pub mod profile;
pub mod table_pool;

use core::fmt::Debug;

/// The value in `result`; a panic naming `step` and the error otherwise: a step that fails
/// fails the case.
#[track_caller]
pub fn ok<T, E: Debug>(result: Result<T, E>, step: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{step}: {error:?}"),
    }
}

/// The value in `option`; a panic naming `step` otherwise.
#[track_caller]
pub fn some<T>(option: Option<T>, step: &str) -> T {
    match option {
        Some(value) => value,
        None => panic!("{step}: none"),
    }
}

/// Declares a host `#[test]` of the same name for each listed case of the module it is
/// used in (`cfg(test)` of the crate that uses it: extmem-kcore's cases use it too).
#[macro_export]
#[doc(hidden)]
macro_rules! host_tests {
    ($($case:ident),* $(,)?) => {
        #[cfg(test)]
        mod host {
            $(
                #[test]
                fn $case() {
                    super::$case();
                }
            )*
        }
    };
}
pub use host_tests;
