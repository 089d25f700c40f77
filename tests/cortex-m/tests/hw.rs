//! extmem-hw on a 32-bit Cortex-M3 (QEMU `lm3s6965evb`): the descriptor format against
//! hand-worked bit patterns, u64 address arithmetic on a core whose registers are 32 bits
//! wide, and map / unmap / translate on a table pool with no allocator.
//!
//! The cases are extmem-hw's own unit test cases (`extmem_hw::test_cases`, behind its
//! `test-cases` feature), so the host and this core run the same checks. A case panics on a
//! wrong outcome; the crate's panic handlers (`src/lib.rs`) print the message and end QEMU
//! with a non-zero semihosting exit status, so a failure cannot look like a pass.
#![no_std]
#![no_main]

// The runtime, the logger and the panic handlers.
use extmem_cortex_m_tests as _;

use extmem_hw::test_cases::{addr, descriptor, page_table, profile, table_pool};

#[defmt_test::tests]
mod tests {
    use super::{addr, descriptor, page_table, profile, table_pool};

    #[test]
    fn page_descriptor_matches_hand_worked_bits() {
        descriptor::page_descriptor_matches_hand_worked_bits();
    }

    #[test]
    fn read_only_block_descriptors_match_hand_worked_bits() {
        descriptor::read_only_block_descriptors_match_hand_worked_bits();
    }

    #[test]
    fn table_descriptor_matches_hand_worked_bits() {
        descriptor::table_descriptor_matches_hand_worked_bits();
    }

    #[test]
    fn reserved_and_unknown_encodings_are_corrupt() {
        descriptor::reserved_and_unknown_encodings_are_corrupt();
    }

    #[test]
    fn levels_resolve_the_documented_va_bits() {
        descriptor::levels_resolve_the_documented_va_bits();
    }

    #[test]
    fn alignment_is_a_power_of_two_by_construction() {
        addr::alignment_is_a_power_of_two_by_construction();
    }

    #[test]
    fn alignment_rounding_is_checked() {
        addr::alignment_rounding_is_checked();
    }

    #[test]
    fn address_arithmetic_is_checked() {
        addr::address_arithmetic_is_checked();
    }

    #[test]
    fn range_end_rejects_empty_and_wrapping_ranges() {
        addr::range_end_rejects_empty_and_wrapping_ranges();
    }

    #[test]
    fn built_in_profiles_are_valid() {
        profile::built_in_profiles_are_valid();
    }

    #[test]
    fn check_rejects_each_bad_field() {
        profile::check_rejects_each_bad_field();
    }

    #[test]
    fn pool_hands_out_zeroed_distinct_pages_and_takes_them_back() {
        table_pool::pool_hands_out_zeroed_distinct_pages_and_takes_them_back();
    }

    #[test]
    fn pool_rejects_bad_bases() {
        table_pool::pool_rejects_bad_bases();
    }

    #[test]
    fn unmapping_half_a_block_splits_it() {
        page_table::unmapping_half_a_block_splits_it();
    }

    #[test]
    fn cutting_a_1g_block_at_a_4k_boundary_splits_twice() {
        page_table::cutting_a_1g_block_at_a_4k_boundary_splits_twice();
    }

    #[test]
    fn a_range_whose_ends_cut_two_2m_blocks_splits_both() {
        page_table::a_range_whose_ends_cut_two_2m_blocks_splits_both();
    }

    #[test]
    fn bad_arguments_are_refused_with_the_bad_value() {
        page_table::bad_arguments_are_refused_with_the_bad_value();
    }

    #[test]
    fn running_out_of_table_memory_changes_nothing() {
        page_table::running_out_of_table_memory_changes_nothing();
    }

    #[test]
    fn a_run_slice_maps_and_refuses_as_the_run_iterator_does() {
        page_table::a_run_slice_maps_and_refuses_as_the_run_iterator_does();
    }
}
