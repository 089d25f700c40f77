//! 2 MiB blocks: a physically contiguous, 2 MiB-aligned host buffer bound at a 2 MiB-aligned
//! VA is mapped by one level-2 block, not a table of pages.

use extmem_guest_tests::device_snapshot::{counters, op};
use extmem_guest_tests::host_memory::{self, AnonMapping, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult, Failure};
use extmem_guest_tests::pattern;
use extmem_guest_tests::vgpu::Vgpu;
use extmem_uapi::ObjectKind;
use rustix::io::Errno;
use rustix::mm::{Advice, MapFlags, ProtFlags};

use crate::helpers::{
    as_len, close, gpu_read, import_host, map, rejected, same_bytes, unmap, write_raw,
};
use crate::{Ktap, MIB, PAGE, SIZE_2M, SIZE_2M_LEN, SLOT};

/// A 2 MiB-aligned, physically contiguous 2 MiB of host memory: a transparent huge page
/// (`MADV_HUGEPAGE`), else a hugetlb page. Returns the mapping, the offset of the 2 MiB in it,
/// the physical address and how it was obtained.
fn contiguous_2m() -> CheckResult<(AnonMapping, usize, u64, &'static str)> {
    let thp = || -> CheckResult<(AnonMapping, usize)> {
        let mapping = io_op("mmap 4 MiB", AnonMapping::read_write(2 * SIZE_2M_LEN))?;
        let offset = as_len(SIZE_2M.wrapping_sub(mapping.addr() % SIZE_2M) % SIZE_2M)?;
        io_op(
            "madvise(MADV_HUGEPAGE)",
            mapping.advise(offset, SIZE_2M_LEN, Advice::LinuxHugepage),
        )?;
        write_raw(&mapping, offset, &pattern::bytes(61, SIZE_2M_LEN))?;
        Ok((mapping, offset))
    };
    let hugetlb = || -> CheckResult<(AnonMapping, usize)> {
        // Reserve two 2 MiB huge pages for the test (the guest boots with none). The 2 MiB
        // pool by name: the default pool is 32 MiB pages on a 16 KiB-page kernel.
        const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
        std::fs::write(POOL, "2").map_err(|e| Failure::op(format!("writing {POOL}"), e))?;
        let mapping = io_op(
            "mmap(MAP_HUGETLB | MAP_HUGE_2MB) of 2 MiB",
            AnonMapping::new(
                SIZE_2M_LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::HUGETLB | MapFlags::HUGE_2MB,
            ),
        )?;
        write_raw(&mapping, 0, &pattern::bytes(61, SIZE_2M_LEN))?;
        Ok((mapping, 0))
    };
    let mut tried = Vec::new();
    for (how, attempt) in [
        ("transparent huge page", &thp as &dyn Fn() -> _),
        ("hugetlb page", &hugetlb),
    ] {
        match attempt().and_then(|(mapping, offset)| {
            let pa = contiguous_pa(&mapping, offset)?;
            Ok((mapping, offset, pa))
        }) {
            Ok((mapping, offset, pa)) => return Ok((mapping, offset, pa, how)),
            Err(failure) => tried.push(format!("{how}: {}", failure.seen)),
        }
    }
    Err(Failure::new(
        "a physically contiguous 2 MiB",
        tried.join("; "),
    ))
}

/// The physical address of the 2 MiB at `offset` if pagemap shows 512 consecutive frames
/// starting 2 MiB-aligned.
pub(crate) fn contiguous_pa(mapping: &AnonMapping, offset: usize) -> CheckResult<u64> {
    let base = mapping.addr() + offset as u64;
    let first = io_op("pagemap", host_memory::physical_address(base))?
        .ok_or_else(|| Failure::new("a present page", "not present"))?;
    if first % SIZE_2M != 0 {
        return Err(Failure::new("a 2 MiB-aligned frame", format!("{first:#x}")));
    }
    for page in 1..512 {
        let pa = io_op("pagemap", host_memory::physical_address(base + page * PAGE))?;
        if pa != Some(first + page * PAGE) {
            return Err(Failure::new(
                format!("page {page} at {:#x}", first + page * PAGE),
                format!("{pa:x?}"),
            ));
        }
    }
    Ok(first)
}

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    const VA_BLOCK: u64 = 5 * SLOT;
    const VA_PAGES: u64 = 6 * SLOT;
    const VA_GEM: u64 = 7 * SLOT;
    let what = "2 MiB: a 2 MiB-aligned, physically contiguous host buffer exists (pagemap: 512 consecutive frames)";
    let huge = ktap.check_after(what, gpu, |_| {
        let found = contiguous_2m()?;
        Ok(found)
    });
    if let Some((_, _, _, how)) = huge.as_ref() {
        ktap.diagnostic(format_args!("2 MiB host buffer: {how}"));
    }
    let what = "2 MiB: pinned and bound at a 2 MiB-aligned VA, VM_QUERY reports 2 MiB leaves at the pagemap address; 2 new table pages (4 KiB pages need 3)";
    let bound = ktap.check_after(
        what,
        gpu.zip(huge.as_ref()),
        |(gpu, (mapping, offset, pa, _))| {
            let handle = import_host(
                gpu,
                "GEM_USERPTR of the 2 MiB",
                (mapping.addr() + *offset as u64, SIZE_2M),
                ObjectKind::USERPTR,
            )?;
            let before = counters(gpu)?;
            map(gpu, handle, VA_BLOCK, SIZE_2M, 0)?;
            let block_tables = counters(gpu)?.pt_pages - before.pt_pages;
            for probe in [0, 0x1000, 0x12_3000, SIZE_2M - PAGE] {
                let query = op("VM_QUERY", gpu.vm_query(VA_BLOCK + probe))?;
                expect_eq(
                    &format!("page size at +{probe:#x}"),
                    query.page_size,
                    SIZE_2M,
                )?;
                expect_eq(
                    &format!("physical address at +{probe:#x}"),
                    query.pa,
                    pa + probe,
                )?;
            }
            // The same size from a shmem object (not contiguous) needs a level-3 table.
            let gem = op("GEM_CREATE 2 MiB", gpu.gem_create(SIZE_2M))?;
            let before = counters(gpu)?;
            map(gpu, gem, VA_PAGES, SIZE_2M, 0)?;
            let page_tables = counters(gpu)?.pt_pages - before.pt_pages;
            let query = op("VM_QUERY", gpu.vm_query(VA_PAGES))?;
            unmap(gpu, VA_PAGES, SIZE_2M)?;
            close(gpu, gem)?;
            expect_eq("page size of the shmem object", query.page_size, PAGE)?;
            expect_eq(
                "new table pages for (2 MiB block, 4 KiB pages)",
                (block_tables, page_tables),
                (2, 3),
            )?;
            Ok(handle)
        },
    );
    ktap.check_after(
        "2 MiB: a GPU COPY through the block reads the huge page's bytes",
        gpu.zip(bound),
        |(gpu, _)| {
            same_bytes(
                "the huge page's bytes",
                &pattern::bytes(61, SIZE_2M_LEN),
                &gpu_read(gpu, VA_BLOCK, SIZE_2M, VA_GEM)?,
            )
        },
    );
    let what = "2 MiB: UNMAP of half the block binding fails with ENOENT (UNMAP takes whole bindings, so no split), the block still translates";
    ktap.check_after(what, gpu.zip(bound), |(gpu, _)| {
        rejected(gpu, "UNMAP of the first 1 MiB", Errno::NOENT, || {
            gpu.unmap(VA_BLOCK, MIB)
        })?;
        let query = op("VM_QUERY", gpu.vm_query(VA_BLOCK + MIB))?;
        expect_eq("page size", query.page_size, SIZE_2M)
    });
    if let (Some(gpu), Some(handle)) = (gpu, bound) {
        if let Err(f) = unmap(gpu, VA_BLOCK, SIZE_2M).and_then(|()| close(gpu, handle)) {
            ktap.diagnostic(format_args!("2 MiB cleanup: {}", f.seen));
        }
    }
}
