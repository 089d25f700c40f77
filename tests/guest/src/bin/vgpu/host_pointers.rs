//! Host pointers: heap and anonymous memory pinned by `GEM_USERPTR`, bound, and copied to
//! and from a GEM object by the GPU; read-only pins; `PROBE`.

use extmem_guest_tests::device_snapshot::{counters, expect_snapshot, op, snapshot};
use extmem_guest_tests::host_memory::{self, AnonMapping, HeapBuffer, RawBytes};
use extmem_guest_tests::ktap::{expect_eq, io_op, Failure};
use extmem_guest_tests::pattern::{self, filled};
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_uapi::{
    FaultKind, ObjectKind, Param, FLAG_READ_ONLY, QUERY_MAPPED, QUERY_READ_ONLY, USERPTR_PROBE,
};
use rustix::io::Errno;
use rustix::mm::MprotectFlags;

use crate::helpers::{
    back_to_start, close, create_gem, exec, expect_info, expect_new_object, import_host, map,
    pinned_heap, read_raw, rejected, release, same_bytes, unmap, userptr_handle, write_raw,
};
use crate::{Ktap, MIB, MIB_LEN, PAGE, SLOT};

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    const VA_HEAP: u64 = SLOT;
    const VA_GEM: u64 = SLOT + 16 * MIB;
    const VA_ANON: u64 = SLOT + 32 * MIB;
    const VA_RO: u64 = SLOT + 48 * MIB;
    let len = MIB_LEN;
    let start = gpu.map(snapshot).and_then(Result::ok);

    let cpu_page = host_memory::cpu_page();
    let what = format!("host pointer: GEM_USERPTR of a {cpu_page}-aligned 1 MiB heap allocation gives a USERPTR object, pins {} pages of {cpu_page} bytes, LAST_PIN_NS > 0 and the phases add up to no more than LAST_USERPTR_NS", MIB / cpu_page);
    let heap = ktap.check_after(&what, gpu.zip(start), |(gpu, start)| {
        let before = start.counters;
        let (buffer, handle) = pinned_heap(gpu, len)?;
        expect_new_object(gpu, before, (0, MIB / cpu_page))?;
        write_raw(&buffer, 0, &pattern::bytes(21, len))?;
        let ns = op("GET_PARAM LAST_PIN_NS", gpu.get_param(Param::LAST_PIN_NS))?;
        if ns == 0 {
            return Err(Failure::new("LAST_PIN_NS > 0 after a pin", "0"));
        }
        let mut phases = ns;
        for param in [
            Param::LAST_USERPTR_RECORD_NS,
            Param::LAST_USERPTR_LEDGER_NS,
            Param::LAST_USERPTR_SETUP_NS,
        ] {
            let phase = op("GET_PARAM (a GEM_USERPTR phase)", gpu.get_param(param))?;
            phases = phases.saturating_add(phase);
        }
        let whole = op(
            "GET_PARAM LAST_USERPTR_NS",
            gpu.get_param(Param::LAST_USERPTR_NS),
        )?;
        if whole < phases {
            return Err(Failure::new(
                format!("LAST_USERPTR_NS >= the phases' sum {phases}"),
                whole.to_string(),
            ));
        }
        Ok((buffer, handle))
    });
    ktap.check_after(
        "host pointer: GEM_INFO says USERPTR, 1 MiB, writable, no mmap offset",
        gpu.zip(heap.as_ref()),
        |(gpu, (_, handle))| expect_info(gpu, *handle, ObjectKind::USERPTR, MIB, false).map(|_| ()),
    );
    let what = "GEM_CREATE of 1 MiB gives a SHMEM object that maps through the DRM file at its GEM_INFO offset";
    let gem = ktap.check_after(what, gpu, |gpu| create_gem(gpu, MIB));
    let what = "host pointer: both bound (2 bindings more); VM_QUERY of the heap VA gives a 4 KiB page at the pagemap physical address";
    let bound = ktap.check_after(
        what,
        gpu.zip(heap.as_ref()).zip(gem.as_ref()),
        |((gpu, (buffer, handle)), gem)| {
            let before = counters(gpu)?;
            map(gpu, *handle, VA_HEAP, MIB, 0)?;
            map(gpu, gem.handle, VA_GEM, MIB, 0)?;
            let after = counters(gpu)?;
            expect_eq("bindings", after.bindings, before.bindings + 2)?;
            let probe = 5 * PAGE;
            let query = op("VM_QUERY", gpu.vm_query(VA_HEAP + probe))?;
            let pa = io_op(
                "reading /proc/self/pagemap",
                host_memory::physical_address(buffer.addr() + probe),
            )?;
            expect_eq("flags", query.flags, QUERY_MAPPED)?;
            expect_eq("page size", query.page_size, PAGE)?;
            expect_eq("physical address", Some(query.pa), pa)
        },
    );
    let ready = bound.and(gpu.zip(heap.as_ref()).zip(gem.as_ref()));
    let what = "host pointer: EXEC COPY heap VA -> GEM VA (1 MiB); the GEM object's mmap shows the heap's bytes";
    ktap.check_after(what, ready, |((gpu, _), gem)| {
        exec(gpu, &[vgpu::copy(VA_HEAP, VA_GEM, MIB)])?;
        same_bytes(
            "the heap's 1 MiB pattern",
            &pattern::bytes(21, len),
            &gem.map.read_all(),
        )
    });
    let what = "host pointer: the CPU writes the GEM object, EXEC COPY GEM -> heap VA; the heap allocation shows the GPU's write";
    ktap.check_after(what, ready, |((gpu, (buffer, _)), gem)| {
        let expected = pattern::bytes(22, len);
        gem.map
            .write(0, &expected)
            .map_err(|e| Failure::op("writing the GEM mapping", e))?;
        exec(gpu, &[vgpu::copy(VA_GEM, VA_HEAP, MIB)])?;
        same_bytes(
            "the GEM object's bytes",
            &expected,
            &read_raw(buffer, 0, len)?,
        )
    });
    let what = "host pointer: EXEC FILL 0xa5a55a5a over [64 KiB, 128 KiB) of the heap VA; the CPU sees exactly that range change";
    ktap.check_after(what, ready, |((gpu, (buffer, _)), _)| {
        let mut expected = pattern::bytes(22, len);
        exec(gpu, &[vgpu::fill(VA_HEAP + 0x10000, 0xa5a5_5a5a, 0x10000)])?;
        if let Some(window) = expected.get_mut(0x10000..0x20000) {
            window.copy_from_slice(&filled(0xa5a5_5a5a, 0x10000));
        }
        same_bytes(
            "the heap with the filled window",
            &expected,
            &read_raw(buffer, 0, len)?,
        )
    });
    let what = "host pointer: an anonymous 512 KiB mmap pinned and bound; EXEC COPY into the GEM object: the object shows its bytes";
    ktap.check_after(what, gpu.zip(gem.as_ref()), |(gpu, gem)| {
        let anon = io_op("mmap 512 KiB", AnonMapping::read_write(len / 2))?;
        write_raw(&anon, 0, &pattern::bytes(23, len / 2))?;
        let handle = import_host(
            gpu,
            "GEM_USERPTR",
            (anon.addr(), MIB / 2),
            ObjectKind::USERPTR,
        )?;
        map(gpu, handle, VA_ANON, MIB / 2, 0)?;
        exec(gpu, &[vgpu::copy(VA_ANON, VA_GEM, MIB / 2)])?;
        let seen = gem.read(len / 2)?;
        same_bytes(
            "the anonymous mapping's bytes",
            &pattern::bytes(23, len / 2),
            &seen,
        )?;
        // The GPU writes back into the anonymous mapping.
        exec(gpu, &[vgpu::fill(VA_ANON, 0x1234_5678, MIB / 2)])?;
        same_bytes(
            "the GPU's fill in the anonymous mapping",
            &filled(0x1234_5678, len / 2),
            &read_raw(&anon, 0, len / 2)?,
        )?;
        unmap(gpu, VA_ANON, MIB / 2)?;
        close(gpu, handle)
    });
    let what = "read-only host pointer: GEM_USERPTR(READ_ONLY) of a PROT_READ mapping works; GEM_INFO says READ_ONLY";
    let read_only = ktap.check_after(what, gpu, |gpu| {
        let anon = io_op("mmap 64 KiB", AnonMapping::read_write(0x10000))?;
        write_raw(&anon, 0, &pattern::bytes(24, 0x10000))?;
        io_op("mprotect(PROT_READ)", anon.protect(MprotectFlags::READ))?;
        let answer = op(
            "GEM_USERPTR(READ_ONLY)",
            gpu.userptr(anon.addr(), 0x10000, FLAG_READ_ONLY),
        )?;
        let handle = userptr_handle(answer, ObjectKind::USERPTR)?;
        expect_info(gpu, handle, ObjectKind::USERPTR, 0x10000, true)?;
        Ok((anon, handle))
    });
    ktap.check_after(
        "read-only host pointer: VM_BIND without READ_ONLY fails with EACCES, counters unchanged",
        gpu.zip(read_only.as_ref()),
        |(gpu, (_, handle))| {
            rejected(
                gpu,
                "VM_BIND of a read-only object without READ_ONLY",
                Errno::ACCESS,
                || gpu.map(*handle, VA_RO, 0, 0x10000, 0),
            )
        },
    );
    let what = "read-only host pointer: bound READ_ONLY, the GPU copies out of it; a write faults with EIO, fault READ_ONLY at the VA, command 0";
    ktap.check_after(
        what,
        gpu.zip(read_only.as_ref()).zip(gem.as_ref()),
        |((gpu, (_, handle)), gem)| {
            map(gpu, *handle, VA_RO, 0x10000, FLAG_READ_ONLY)?;
            let query = op("VM_QUERY", gpu.vm_query(VA_RO))?;
            expect_eq("flags", query.flags, QUERY_MAPPED | QUERY_READ_ONLY)?;
            exec(gpu, &[vgpu::copy(VA_RO, VA_GEM, 0x10000)])?;
            let seen = gem.read(0x10000)?;
            same_bytes(
                "the read-only mapping's bytes",
                &pattern::bytes(24, 0x10000),
                &seen,
            )?;
            match gpu.exec(&[vgpu::fill(VA_RO + 0x2000, 7, 4)]) {
                Err((Errno::IO, args)) => {
                    expect_eq("fault kind", args.fault_kind, FaultKind::READ_ONLY)?;
                    expect_eq("fault VA", args.fault_va, VA_RO + 0x2000)?;
                    expect_eq("fault command", args.fault_cmd, 0)
                }
                other => Err(Failure::new(
                    "EIO with a READ_ONLY fault",
                    format!("{other:?}"),
                )),
            }
        },
    );
    let what = "PROBE: GEM_USERPTR(PROBE) of a mapped heap range answers USERPTR with handle 0, pins and creates nothing";
    ktap.check_after(what, gpu, |gpu| {
        let buffer = io_op(
            "allocating 256 KiB",
            HeapBuffer::new(0x40000, host_memory::cpu_page_len()),
        )?;
        let before = snapshot(gpu)?;
        let answer = op(
            "GEM_USERPTR(PROBE)",
            gpu.userptr(buffer.addr(), 0x40000, USERPTR_PROBE),
        )?;
        expect_eq("kind", answer.kind, ObjectKind::USERPTR)?;
        expect_eq("handle", answer.handle, 0)?;
        expect_snapshot(snapshot(gpu)?, before)
    });
    let owned = (heap, gem, read_only);
    let what = "host pointer: after UNMAP, GEM_CLOSE and munmap of everything the counters are back (page tables aside)";
    ktap.check_after(what, gpu.zip(start), |(gpu, start)| {
        let (heap, gem, read_only) = owned;
        let bound = [
            heap.as_ref().map(|(_, handle)| (VA_HEAP, MIB, *handle)),
            gem.as_ref().map(|gem| (VA_GEM, MIB, gem.handle)),
            read_only
                .as_ref()
                .map(|(_, handle)| (VA_RO, 0x10000, *handle)),
        ];
        let released = release(gpu, bound.into_iter().flatten());
        // A CPU mapping of a GEM object holds a reference to it.
        drop((heap, gem, read_only));
        released?;
        back_to_start(gpu, start)
    });
}
