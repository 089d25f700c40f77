//! extmem-kcore on a 32-bit Cortex-M3 (QEMU `lm3s6965evb`): the ioctl argument checks,
//! `GET_PARAM`, the binding table and the pin registry, and the KTAP self-test that the
//! kernel runs (page tables, `VM_BIND` with each errno, the copy engine and its faults,
//! `vm_fini`) over a platform of nine pages in a plain array, all with u64 arithmetic on a
//! core whose registers are 32 bits wide.
//!
//! The cases are extmem-kcore's own unit test cases (`extmem_kcore::test_cases`, behind its
//! `test-cases` feature), so the host and this core run the same checks; the crate's panic
//! handlers (`src/lib.rs`) turn a failed case into a failed run.
#![no_std]
#![no_main]

// The runtime, the logger and the panic handlers.
use extmem_cortex_m_tests as _;

use extmem_kcore::test_cases::{args, bindings, params, pin_registry, selftest};

#[defmt_test::tests]
mod tests {
    use super::{args, bindings, params, pin_registry, selftest};

    #[test]
    fn check_gem_create() {
        args::gem_create();
    }

    #[test]
    fn check_gem_userptr() {
        args::gem_userptr();
    }

    #[test]
    fn with_16_kib_pages_objects_and_imports_are_whole_cpu_pages() {
        args::with_16_kib_pages_objects_and_imports_are_whole_cpu_pages();
    }

    #[test]
    fn check_vm_bind() {
        args::vm_bind();
    }

    #[test]
    fn check_exec_and_commands() {
        args::exec_and_commands();
    }

    #[test]
    fn the_core_answers_the_profile() {
        params::the_core_answers_the_profile();
    }

    #[test]
    fn a_16_kib_kernel_reports_its_page_and_imports_in_whole_pages() {
        params::a_16_kib_kernel_reports_its_page_and_imports_in_whole_pages();
    }

    #[test]
    fn platform_params_leave_the_value_alone() {
        params::platform_params_leave_the_value_alone();
    }

    #[test]
    fn every_known_param_has_an_owner_and_unknown_ones_are_rejected() {
        params::every_known_param_has_an_owner_and_unknown_ones_are_rejected();
    }

    #[test]
    fn overlap_is_found_on_either_side() {
        bindings::overlap_is_found_on_either_side();
    }

    #[test]
    fn full_exact_removal_and_not_found() {
        bindings::full_exact_removal_and_not_found();
    }

    #[test]
    fn counts_pages_and_refuses_bad_records() {
        pin_registry::counts_pages_and_refuses_bad_records();
    }

    #[test]
    fn sixteen_kib_pages_are_counted_and_aligned_as_such() {
        pin_registry::sixteen_kib_pages_are_counted_and_aligned_as_such();
    }

    #[test]
    fn the_self_test_passes_on_a_fixed_platform() {
        selftest::the_self_test_passes_on_a_fixed_platform();
    }

    #[test]
    fn self_test_failures_have_a_diagnostic_and_give_pages_back() {
        selftest::self_test_failures_have_a_diagnostic_and_give_pages_back();
    }
}
