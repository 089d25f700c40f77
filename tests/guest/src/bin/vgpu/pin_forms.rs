//! Pin forms: a pin of huge pages is kept as runs, one of scattered 4 KiB pages as a page
//! array; ranges mixing both, in either order, must translate and copy right.

use extmem_guest_tests::device_snapshot::{counters, op};
use extmem_guest_tests::host_memory::{self, AnonMapping, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, CheckResult};
use extmem_guest_tests::pattern;
use extmem_guest_tests::vgpu::Vgpu;
use extmem_uapi::ObjectKind;
use rustix::mm::Advice;

use crate::blocks::contiguous_pa;
use crate::helpers::{as_len, close, gpu_read, import_host, map, same_bytes, unmap, write_raw};
use crate::{Ktap, MIB, MIB_LEN, PAGE, PAGE_LEN, SIZE_2M, SIZE_2M_LEN, SLOT};

/// Imports `[offset, offset + len)` of `mapping` (whose bytes are `bytes`), binds it, and
/// checks every 64th page's translation against pagemap and a GPU copy of all of it.
fn pinned_range_translates(
    gpu: &Vgpu,
    mapping: &AnonMapping,
    bytes: &[u8],
    offset: usize,
    len: usize,
) -> CheckResult<()> {
    const VA: u64 = 11 * SLOT;
    const VA_GEM: u64 = 11 * SLOT + 16 * MIB;
    let size = len as u64;
    let before = counters(gpu)?;
    let range = (mapping.addr() + offset as u64, size);
    let handle = import_host(gpu, "GEM_USERPTR", range, ObjectKind::USERPTR)?;
    let checked = (|| {
        expect_eq(
            "pinned pages",
            counters(gpu)?.pinned_pages,
            before.pinned_pages + size / host_memory::cpu_page(),
        )?;
        map(gpu, handle, VA, size, 0)?;
        let mut probe = 0;
        while probe < size {
            let query = op("VM_QUERY", gpu.vm_query(VA + probe))?;
            let pa = io_op(
                "reading /proc/self/pagemap",
                host_memory::physical_address(mapping.addr() + offset as u64 + probe),
            )?;
            expect_eq(
                &format!("physical address at +{probe:#x}"),
                Some(query.pa),
                pa,
            )?;
            probe += 64 * PAGE + PAGE;
        }
        let seen = gpu_read(gpu, VA, size, VA_GEM)?;
        unmap(gpu, VA, size)?;
        same_bytes(
            "the imported range's bytes",
            bytes.get(offset..offset + len).unwrap_or_default(),
            &seen,
        )
    })();
    close(gpu, handle)?;
    checked?;
    expect_eq(
        "pinned pages after GEM_CLOSE",
        counters(gpu)?.pinned_pages,
        before.pinned_pages,
    )
}

/// 10 MiB of anonymous memory whose 2 MiB-aligned middle 4 MiB (at least 2 MiB in)
/// asks for huge pages (`MADV_HUGEPAGE`) and whose rest (at least 2 MiB after) has 4 KiB
/// pages only; every byte written. Returns the mapping, its bytes and the offset of the
/// huge part.
fn half_huge() -> CheckResult<(AnonMapping, Vec<u8>, usize)> {
    let len = 5 * SIZE_2M_LEN;
    let mapping = io_op("mmap 10 MiB", AnonMapping::read_write(len))?;
    let huge = as_len(SIZE_2M.wrapping_sub(mapping.addr() % SIZE_2M) % SIZE_2M)? + SIZE_2M_LEN;
    io_op(
        "madvise(MADV_NOHUGEPAGE)",
        mapping.advise(0, len, Advice::LinuxNoHugepage),
    )?;
    io_op(
        "madvise(MADV_HUGEPAGE)",
        mapping.advise(huge, 2 * SIZE_2M_LEN, Advice::LinuxHugepage),
    )?;
    let bytes = pattern::bytes(71, len);
    write_raw(&mapping, 0, &bytes)?;
    Ok((mapping, bytes, huge))
}

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    let what = "pin forms: 10 MiB of anonymous memory, huge pages asked for in its 2 MiB-aligned middle 4 MiB only, written";
    let memory = ktap.check_after(what, gpu, |_| half_huge());
    if let Some((mapping, _, huge)) = memory.as_ref() {
        let form = match contiguous_pa(mapping, *huge) {
            Ok(_) => "a transparent huge page".to_string(),
            Err(f) => format!("not one huge page ({})", f.seen),
        };
        ktap.diagnostic(format_args!(
            "pin forms: the middle's first 2 MiB is {form}"
        ));
    }
    // (what, start relative to the first huge page, length): ranges whose pin takes each
    // form, runs of huge pages and 4 KiB pages in either order.
    let forms: [(&str, isize, usize); 3] = [
        (
            "pin forms: huge pages then 4 KiB pages (4 MiB + 256 KiB from a 2 MiB boundary) pin, translate as pagemap says, copy right and unpin on close",
            0,
            2 * SIZE_2M_LEN + 64 * PAGE_LEN,
        ),
        (
            "pin forms: 4 KiB pages then huge pages (64 KiB before a 2 MiB boundary to 4 MiB past it) pin, translate as pagemap says, copy right and unpin on close",
            -16 * PAGE_LEN as isize,
            2 * SIZE_2M_LEN + 16 * PAGE_LEN,
        ),
        (
            "pin forms: a huge page then 1 MiB of 4 KiB pages (runs that stop paying mid-way) pin, translate as pagemap says, copy right and unpin on close",
            SIZE_2M_LEN as isize,
            SIZE_2M_LEN + MIB_LEN,
        ),
    ];
    for (what, from_huge, len) in forms {
        ktap.check_after(
            what,
            gpu.zip(memory.as_ref()),
            |(gpu, (mapping, bytes, huge))| {
                pinned_range_translates(
                    gpu,
                    mapping,
                    bytes,
                    huge.wrapping_add_signed(from_huge),
                    len,
                )
            },
        );
    }
}
