//! PRIME export: a GEM object exported as a dma-buf, imported by vgem, written through
//! vgem's re-export and imported back; host-pointer objects are not exportable.

use std::os::fd::AsFd;

use extmem_guest_tests::dma_buf;
use extmem_guest_tests::dri::DrmNode;
use extmem_guest_tests::ktap::{expect_eq, io_op, Failure};
use extmem_guest_tests::pattern::{self, filled};
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_uapi::ObjectKind;
use rustix::io::Errno;

use crate::helpers::{
    close, create_gem, exec, expect_info, map, map_fd, pinned_heap, read_map, read_raw, same_bytes,
    unmap, write_map,
};
use crate::{Ktap, MIB, SLOT};

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>, vgem: Option<&DrmNode>) {
    const VA_GEM: u64 = 3 * SLOT;
    const VA_HEAP: u64 = 3 * SLOT + 16 * MIB;
    const LEN: usize = 256 * 1024;
    const SIZE: u64 = LEN as u64;
    let len = LEN;

    let exported = ktap.check_after(
        "PRIME export: a GEM object filled by the GPU exports as a dma-buf of its size",
        gpu,
        |gpu| {
            let gem = create_gem(gpu, SIZE)?;
            map(gpu, gem.handle, VA_GEM, SIZE, 0)?;
            exec(gpu, &[vgpu::fill(VA_GEM, 0x5eed_f00d, SIZE)])?;
            let fd = io_op("PRIME_HANDLE_TO_FD", gpu.export(gem.handle))?;
            expect_eq(
                "dma-buf size",
                io_op("lseek", dma_buf::size_by_seek(fd.as_fd()))?,
                SIZE,
            )?;
            Ok((gem, fd))
        },
    );
    // vgem cannot map an imported object itself (DRM refuses MAP_DUMB on imports), so what
    // vgem holds is seen through its re-export, which must be our dma-buf again.
    let what = "PRIME export: vgem imports the dma-buf (attaching to the object); its re-export is the same dma-buf, whose mmap shows the GPU's fill";
    let in_vgem = ktap.check_after(what, vgem.zip(exported.as_ref()), |(vgem, (_, fd))| {
        let handle = io_op("vgem PRIME_FD_TO_HANDLE", vgem.import(fd.as_fd()))?;
        let checked = (|| {
            let again = io_op("vgem re-export", vgem.export(handle))?;
            expect_eq(
                "re-exported dma-buf",
                io_op("fstat", dma_buf::identity(again.as_fd()))?,
                io_op("fstat", dma_buf::identity(fd.as_fd()))?,
            )?;
            let view = map_fd(again.as_fd(), 0, SIZE)?;
            same_bytes(
                "the GPU's fill",
                &filled(0x5eed_f00d, len),
                &read_map(&view, Some(again.as_fd()))?,
            )?;
            Ok((again, view))
        })();
        match checked {
            Ok((again, view)) => Ok((handle, again, view)),
            Err(failure) => {
                let _ = vgem.close_handle(handle);
                Err(failure)
            }
        }
    });
    let what = "PRIME export: bytes the CPU writes through the mmap of vgem's re-export reach a host pointer by a GPU COPY";
    ktap.check_after(
        what,
        gpu.zip(exported.as_ref()).zip(in_vgem.as_ref()),
        |((gpu, _), (_, again, view))| {
            let expected = pattern::bytes(41, len);
            write_map(view, Some(again.as_fd()), &expected)?;
            let (buffer, handle) = pinned_heap(gpu, len)?;
            map(gpu, handle, VA_HEAP, SIZE, 0)?;
            exec(gpu, &[vgpu::copy(VA_GEM, VA_HEAP, SIZE)])?;
            let seen = read_raw(&buffer, 0, len)?;
            unmap(gpu, VA_HEAP, SIZE)?;
            close(gpu, handle)?;
            same_bytes("vgem's bytes", &expected, &seen)
        },
    );
    let what = "PRIME export: the dma-buf imported back into extmem-vgpu is the same object (same handle, SHMEM)";
    ktap.check_after(what, gpu.zip(exported.as_ref()), |(gpu, (gem, fd))| {
        let handle = io_op("PRIME_FD_TO_HANDLE", gpu.import(fd.as_fd()))?;
        expect_eq("handle", handle, gem.handle)?;
        expect_info(gpu, handle, ObjectKind::SHMEM, SIZE, false).map(|_| ())
    });
    ktap.check_after(
        "PRIME export of a host-pointer object is refused with EOPNOTSUPP (importable only)",
        gpu,
        |gpu| {
            let (_buffer, handle) = pinned_heap(gpu, len)?;
            let result = gpu.export(handle);
            close(gpu, handle)?;
            match result {
                Err(e) if e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) => Ok(()),
                other => Err(Failure::new("EOPNOTSUPP", format!("{other:?}"))),
            }
        },
    );
    // Tear down: vgem's import, then ours.
    if let (Some(vgem), Some((handle, _, _))) = (vgem, in_vgem.as_ref()) {
        if let Err(err) = vgem.close_handle(*handle) {
            ktap.diagnostic(format_args!("vgem GEM_CLOSE failed: {err}"));
        }
    }
    if let (Some(gpu), Some((gem, _))) = (gpu, exported.as_ref()) {
        if let Err(f) = unmap(gpu, VA_GEM, SIZE).and_then(|()| close(gpu, gem.handle)) {
            ktap.diagnostic(format_args!("export cleanup: {}", f.seen));
        }
    }
}
