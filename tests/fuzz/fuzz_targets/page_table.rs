//! `extmem_hw::PageTable` map / batched map / unmap / translate sequences from fuzz bytes, checked step by
//! step against the run-list model the property tests use (`hw/tests/model`).
#![no_main]

#[path = "../../../hw/tests/model/mod.rs"]
mod model;

use extmem_fuzz::Bytes;
use extmem_hw::profile::{ADRENO_6XX, MALI_G610};
use libfuzzer_sys::fuzz_target;
use model::{Op, G1, M2, PAGE};

/// Operations a run decodes at most.
const MAX_OPS: usize = 32;

/// A page-aligned address in the domain the model covers: a 4 GiB window biased towards
/// block alignment, the top of the 48-bit space, or anywhere below 2^49.
fn addr(b: &mut Bytes<'_>) -> u64 {
    match b.u8() % 6 {
        0 | 1 => u64::from(b.u32() % (4 * G1 / PAGE) as u32) * PAGE,
        2 => u64::from(b.u16() % 2048) * M2 + u64::from(b.u8() % 2) * PAGE,
        3 => u64::from(b.u8() % 4) * G1,
        4 => (1 << 48) - u64::from(b.u8() % 4) * PAGE - PAGE,
        _ => (b.u64() % (1 << 49)) & !(PAGE - 1),
    }
}

/// A non-zero, page-aligned size: a few pages, blocks with ragged edges, up to 2 MiB of
/// pages, or (rarely: a GiB of 4 KiB pages takes the model a second) 1 GiB.
fn size(b: &mut Bytes<'_>) -> u64 {
    match b.u8() % 16 {
        0..=7 => u64::from(b.u8() % 8 + 1) * PAGE,
        8..=11 => u64::from(b.u8() % 3 + 1) * M2 + u64::from(b.u8() % 3) * PAGE,
        12..=14 => u64::from(b.u16() % 512 + 1) * PAGE,
        _ => G1,
    }
}

/// One (pa, bytes) run of a batched map: a single page, a size from [`size`], or whole
/// 2 MiB blocks; anywhere below 2^41 so that Mali's 40-bit OA limit is crossed now and then.
fn run_piece(b: &mut Bytes<'_>) -> (u64, u64) {
    match b.u8() % 3 {
        0 => (addr(b) % (1 << 41), PAGE),
        1 => (addr(b) % (1 << 41), size(b)),
        _ => (u64::from(b.u8() % 16) * M2, u64::from(b.u8() % 3 + 1) * M2),
    }
}

fn map_runs(b: &mut Bytes<'_>) -> Op {
    let va = addr(b);
    let count = usize::from(b.u8() % 12) + 1;
    let runs = (0..count).map(|_| run_piece(b)).collect();
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
        0..=3 => Op::Map {
            va: addr(b),
            pa: addr(b) % (1 << 41),
            size: size(b),
            read_only: b.bool(),
        },
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
