//! vgpu: the extmem-vgpu kernel module, end to end on the real kernel.
//!
//! Host pointers (heap and anonymous mappings) pinned, bound and copied through the GPU's page
//! tables; dma-buf imports from vgem, udmabuf and the system dma-heap; PRIME export into vgem;
//! host-mapped foreign memory (a `GEM_USERPTR` inside a CPU mapping of a dma-buf); 2 MiB
//! blocks; every documented rejection (with the counters unchanged); `RLIMIT_MEMLOCK`; a
//! SIGKILLed process giving everything back; jobs, fences, syncobjs and implicit sync; and the
//! DMA API's syncs around each job; one DMA mapping per pinned range and one attachment per
//! dma-buf, however many objects import them. One KTAP result per check; a failure says what
//! was expected and what was seen.
//!
//! Each group of checks is a module; `helpers` holds what several of them use. The program
//! re-runs itself as a child for the checks that need another process (`vgpu child-memlock`,
//! `vgpu child-hold`).

mod blocks;
mod dma;
mod exports;
mod foreign;
mod helpers;
mod host_pointers;
mod imports;
mod killed_process;
mod memlock;
mod params;
mod pin_forms;
mod rejections;
mod shared_maps;
mod syncs;

use std::io;
use std::process::ExitCode;

use extmem_guest_tests::device_snapshot::{expect_counters, expect_snapshot, snapshot};
use extmem_guest_tests::dri::{self, NodeKind};
use extmem_guest_tests::fd_table;
use extmem_guest_tests::ktap::{expect_eq, Failure, KtapWriter};
use extmem_guest_tests::vgpu::{Counters, Vgpu};

/// Number of results the parent writes; the runner fails the program if fewer arrive.
const PLAN: usize = 106 + syncs::CHECKS + dma::CHECKS + shared_maps::CHECKS;

/// The GPU's page: the 4 KiB granule of its page tables (VM_BIND's alignment, VM_QUERY's
/// leaf). The CPU's page, which pins and host pointers count in, is
/// [`host_memory::cpu_page`](extmem_guest_tests::host_memory::cpu_page).
const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const SIZE_2M: u64 = 2 * MIB;
/// The same sizes as buffer lengths.
const PAGE_LEN: usize = 4096;
const MIB_LEN: usize = 1 << 20;
const SIZE_2M_LEN: usize = 2 << 20;
/// Each group of checks binds in its own 512 GiB slot of the VA space (one level-0 entry), so
/// table-page counts of one group do not depend on another's.
const SLOT: u64 = 1 << 39;

type Ktap = KtapWriter<io::Stdout>;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("child-memlock") => return memlock::child_memlock(),
        Some("child-hold") => return killed_process::child_hold(),
        Some("child-job") => return syncs::child_job(),
        Some("child-sync-file") => {
            return syncs::child_sync_file(&std::env::args().collect::<Vec<_>>())
        }
        _ => {}
    }
    fd_table::ktap_program(PLAN, run)
}

fn run(ktap: &mut Ktap) {
    let gpu = ktap.check(
        "extmem-vgpu: a renderD* node reports driver \"extmem-vgpu\" (DRM_IOCTL_VERSION)",
        || Vgpu::open().map_err(|e| Failure::new("a render node of extmem-vgpu", e.to_string())),
    );
    let gpu = gpu.as_ref();
    let what = "counters: no objects, pinned pages, attachments (counter and debugfs) or bindings before the test makes any";
    let start = ktap.check_after(what, gpu, |gpu| {
        let now = snapshot(gpu)?;
        let idle = Counters {
            pt_pages: now.counters.pt_pages,
            ..Counters::default()
        };
        expect_counters(now.counters, idle)?;
        expect_eq("dma-buf attachments in debugfs", now.attachments, 0)?;
        Ok(now)
    });
    let vgem = ktap.check(
        "vgem: a card* node reports driver \"vgem\" (the exporter of the import tests)",
        || {
            dri::open_by_driver("vgem", NodeKind::Primary)
                .map_err(|e| Failure::new("a vgem node", e.to_string()))
        },
    );
    let vgem = vgem.as_ref();

    params::checks(ktap, gpu);
    host_pointers::checks(ktap, gpu);
    imports::checks(ktap, gpu, vgem);
    exports::checks(ktap, gpu, vgem);
    foreign::checks(ktap, gpu, vgem);
    blocks::checks(ktap, gpu);
    pin_forms::checks(ktap, gpu);
    rejections::checks(ktap, gpu);
    memlock::checks(ktap, gpu);
    killed_process::checks(ktap, gpu);
    syncs::checks(ktap, gpu, vgem);
    dma::checks(ktap, gpu);
    shared_maps::checks(ktap, gpu);

    ktap.check_after(
        "counters, outstanding pins and debugfs attachments: back to their values at the start",
        gpu.zip(start),
        |(gpu, start)| expect_snapshot(snapshot(gpu)?, start),
    );
}
