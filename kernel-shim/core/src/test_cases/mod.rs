//! Test cases that run both as host unit tests and on a 32-bit Cortex-M3 (`tests/cortex-m`,
//! defmt-test under `qemu-system-arm`), so that each case is written once: the argument
//! checks, `GET_PARAM`, the binding table and the pin registry, and the KTAP self-test
//! (page tables, `VM_BIND`, the copy engine and `vm_fini`) over [`FixedPlatform`], a
//! platform of a few pages in a plain array.
//!
//! A case is a `pub fn` that panics on a wrong outcome: the host harness reports the panic,
//! and the Cortex-M test crate's panic handler prints it and ends QEMU with a failure
//! status. [`host_tests!`] declares the host `#[test]` of each case next to it.
//!
//! Compiled for this crate's tests, and for other crates only with the non-default
//! `test-cases` feature: none of it is part of the API, and none of it is in the kernel
//! object. The Cortex-M3 board has 56 KiB of stack, so the cases keep their platforms small
//! (see [`selftest`]).

pub mod args;
pub mod bindings;
pub mod fixed_platform;
pub mod params;
pub mod pin_registry;
pub mod selftest;

pub use fixed_platform::FixedPlatform;

use core::fmt::Debug;

/// The value of a step that must succeed, or a panic naming the step: a failed step fails
/// the case, on the host and on the Cortex-M alike.
pub trait Must<T> {
    /// The value; a panic naming `step` (and the error) otherwise.
    fn must(self, step: &str) -> T;
}

impl<T, E: Debug> Must<T> for Result<T, E> {
    #[track_caller]
    fn must(self, step: &str) -> T {
        match self {
            Ok(value) => value,
            Err(error) => panic!("{step}: {error:?}"),
        }
    }
}

impl<T> Must<T> for Option<T> {
    #[track_caller]
    fn must(self, step: &str) -> T {
        match self {
            Some(value) => value,
            None => panic!("{step}: none"),
        }
    }
}

/// Declares a host `#[test]` for each listed case (extmem-hw's, shared).
pub use extmem_hw::test_cases::host_tests;
