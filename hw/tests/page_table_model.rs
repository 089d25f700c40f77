//! Random map / batched map (`map_runs`) / unmap / translate sequences checked against a simple model: a list of
//! mapped runs (`model/mod.rs`, shared with the `page_table` fuzz target). After every step
//! the page table's merged mapping list must equal the model's, failed steps must change
//! nothing, no non-root table may be empty, and after unmapping everything only the root
//! table is left.

mod model;

use extmem_hw::profile::{ADRENO_6XX, MALI_G610};
use model::{run, Op, G1, M2, PAGE};
use proptest::prelude::*;

/// Sizes biased towards the interesting ones: a few pages, whole 2 MiB blocks with ragged
/// edges, and (rarely) 1 GiB.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (1u64..=8).prop_map(|n| n * PAGE),
        3 => (1u64..=3, 0u64..=2).prop_map(|(b, p)| b * M2 + p * PAGE),
        1 => Just(G1),
    ]
}

/// One run of a batched map: scattered single pages, a few pages, or 2 MiB-aligned runs
/// long enough for blocks; PAs now and then beyond the 40-bit OA space of Mali.
fn run_piece() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        5 => addr().prop_map(|pa| (pa % (1 << 36), PAGE)),
        3 => (addr(), size()).prop_map(|(pa, size)| (pa % (1 << 36), size)),
        1 => (0u64..8, 1u64..=3).prop_map(|(b, n)| (b * M2, n * M2)),
        1 => (0u64..4).prop_map(|p| ((1 << 40) - p * PAGE - PAGE, 2 * PAGE)),
    ]
}

/// How far the batched map's size is from the runs' total: exact, short (the last run is
/// cut), or long (the runs end first).
fn size_delta() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => Just(0i64),
        2 => (1i64..=3).prop_map(|p| -p * 4096),
        1 => (1i64..=3).prop_map(|p| p * 4096),
    ]
}

/// Addresses in a 4 GiB window, biased towards block alignment.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..(4 * G1 / PAGE)).prop_map(|p| p * PAGE),
        3 => (0u64..(4 * G1 / M2), 0u64..=1).prop_map(|(b, p)| b * M2 + p * PAGE),
        1 => (0u64..4).prop_map(|g| g * G1),
        // Near the top of the 48-bit space, to exercise the VA bound.
        1 => (0u64..4).prop_map(|p| (1 << 48) - p * PAGE - PAGE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (addr(), addr(), size(), any::<bool>()).prop_map(|(va, pa, size, read_only)| Op::Map {
            va,
            pa: pa % (1 << 36),
            size,
            read_only
        }),
        4 => (addr(), prop::collection::vec(run_piece(), 1..12), size_delta(), prop::option::weighted(0.1, 0usize..12))
            .prop_map(|(va, runs, size_delta, fail_at)| Op::MapRuns { va, runs, size_delta, fail_at }),
        3 => (addr(), size()).prop_map(|(va, size)| Op::Unmap { va, size }),
        2 => addr().prop_map(|va| Op::Translate { va }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn mali_profile_matches_model(ops in prop::collection::vec(op(), 1..24)) {
        run(&MALI_G610, usize::MAX, &ops);
    }

    #[test]
    fn adreno_profile_with_1g_blocks_matches_model(ops in prop::collection::vec(op(), 1..24)) {
        run(&ADRENO_6XX, usize::MAX, &ops);
    }

    #[test]
    fn failures_under_a_small_table_budget_change_nothing(
        budget in 1usize..24,
        ops in prop::collection::vec(op(), 1..24),
    ) {
        // Unmapping whole merged runs at the end never cuts a block, so the budget
        // cannot make the final clean-up fail.
        run(&ADRENO_6XX, budget, &ops);
    }
}
