//! `extmem_hw::PageTable` map / batched map / unmap / translate sequences from fuzz bytes,
//! checked step by step against the run-list model the property tests use
//! (`hw/tests/model`): after every step the table's merged mapping list equals the model's,
//! a refused or failed step (range, overlap, hole, output-address limit, source error, table
//! budget) returns the error the model predicts and changes neither mappings nor table use,
//! no table but the root is empty, and unmapping everything leaves only the root.
//!
//! Bounds, so that one execution takes well under a millisecond: at most 32 steps; both
//! Mali and Adreno profiles; VAs in a 64 MiB window, on 1 GiB blocks, at the top of the
//! 48-bit space or anywhere below 2^49 (see `addr`); maps of up to 16 pages anywhere, and
//! of 2 MiB blocks or 1 GiB near the 2 MiB grid (see `place`); batched maps of at most 12
//! runs and 8 MiB. Unmaps keep every size and place, so blocks are split at any page.
#![no_main]

#[path = "../../../hw/tests/model/mod.rs"]
mod model;

use extmem_fuzz::Bytes;
use extmem_hw::profile::{ADRENO_6XX, MALI_G610};
use libfuzzer_sys::fuzz_target;
use model::{Op, G1, M2, PAGE};

/// Operations a run decodes at most.
const MAX_OPS: usize = 32;
/// A batched map stops taking runs once they add up to this much (at most 2048 4 KiB
/// pages where its VA is off the 2 MiB grid).
const RUNS_BYTES_MAX: u64 = 4 * M2;

/// A page-aligned address in the domain the model covers: a 64 MiB window across the
/// 1 GiB boundary biased towards block alignment, 1 GiB blocks, the top of the 48-bit
/// space, or anywhere below 2^49. (The model walks every table after every step, 512
/// entries each, so a window that scatters mappings over thousands of tables makes that
/// walk most of the time; 64 MiB still gives 32 level-3 tables and both sides of a level-1
/// boundary.)
fn addr(b: &mut Bytes<'_>) -> u64 {
    const WINDOW: u64 = G1 - 32 * M2;
    match b.u8() % 6 {
        0 | 1 => WINDOW + u64::from(b.u16() % (32 * M2 / PAGE) as u16) * PAGE,
        2 => WINDOW + u64::from(b.u8() % 32) * M2 + u64::from(b.u8() % 2) * PAGE,
        3 => u64::from(b.u8() % 4) * G1,
        4 => (1 << 48) - u64::from(b.u8() % 4) * PAGE - PAGE,
        _ => (b.u64() % (1 << 49)) & !(PAGE - 1),
    }
}

/// A non-zero, page-aligned size: a few pages, blocks with ragged edges, up to 16 pages,
/// or 1 GiB.
fn size(b: &mut Bytes<'_>) -> u64 {
    match b.u8() % 16 {
        0..=7 => u64::from(b.u8() % 8 + 1) * PAGE,
        8..=11 => u64::from(b.u8() % 3 + 1) * M2 + u64::from(b.u8() % 3) * PAGE,
        12..=14 => u64::from(b.u8() % 16 + 1) * PAGE,
        _ => G1,
    }
}

/// For a mapping larger than 2 MiB: `va` moved to the 2 MiB grid plus at most three pages
/// (so the ragged ends are a few pages), and `pa` to the same offset in its 2 MiB block
/// (so the rest is blocks). A larger mapping anywhere else is hundreds of thousands of 4 KiB
/// descriptors, which the model walks after every step: one execution took a quarter of a
/// second. The fallback of a misaligned large mapping to pages is the property tests' job
/// (`hw/tests/page_table_model.rs`); here every size up to 2 MiB still lands anywhere.
fn place(va: u64, pa: u64, size: u64) -> (u64, u64) {
    if size <= M2 {
        return (va, pa);
    }
    let va = (va & !(M2 - 1)) + (va / PAGE % 4) * PAGE;
    (va, (pa & !(M2 - 1)) | (va & (M2 - 1)))
}

/// One (pa, bytes) run of a batched map: a single page, up to 16 pages, or whole 2 MiB
/// blocks; anywhere below 2^41 so that Mali's 40-bit OA limit is crossed now and then.
fn run_piece(b: &mut Bytes<'_>) -> (u64, u64) {
    match b.u8() % 3 {
        0 => (addr(b) % (1 << 41), PAGE),
        1 => (addr(b) % (1 << 41), u64::from(b.u8() % 16 + 1) * PAGE),
        _ => (u64::from(b.u8() % 16) * M2, u64::from(b.u8() % 3 + 1) * M2),
    }
}

fn map_runs(b: &mut Bytes<'_>) -> Op {
    let va = addr(b);
    let count = usize::from(b.u8() % 12) + 1;
    // Runs up to RUNS_BYTES_MAX in all.
    let mut runs = Vec::new();
    let mut total = 0;
    while runs.len() < count && total < RUNS_BYTES_MAX {
        let run = run_piece(b);
        total += run.1;
        runs.push(run);
    }

    let size_delta = match b.u8() % 8 {
        0..=5 => 0,
        6 => -i64::from(b.u8() % 3 + 1) * 4096,
        _ => i64::from(b.u8() % 3 + 1) * 4096,
    };
    let fail_at = (b.u8() % 10 == 0).then(|| usize::from(b.u8() % 12));
    Op::MapRuns {
        va,
        runs,
        size_delta,
        fail_at,
    }
}

fn op(b: &mut Bytes<'_>) -> Op {
    match b.u8() % 12 {
        9..=11 => map_runs(b),
        0..=3 => {
            let (va, pa, size) = (addr(b), addr(b) % (1 << 41), size(b));
            let (va, pa) = place(va, pa, size);
            Op::Map {
                va,
                pa,
                size,
                read_only: b.bool(),
            }
        }
        4..=6 => Op::Unmap {
            va: addr(b),
            size: size(b),
        },
        _ => Op::Translate { va: addr(b) },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes::new(data);
    let profile = if b.bool() { &ADRENO_6XX } else { &MALI_G610 };
    let budget = match b.u8() {
        n @ 0..=127 => usize::from(n % 24) + 1,
        _ => usize::MAX,
    };
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < MAX_OPS {
        ops.push(op(&mut b));
    }
    model::run(profile, budget, &ops);
});
