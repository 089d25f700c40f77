//! Host-mapped foreign memory: a `GEM_USERPTR` inside a CPU mapping of a dma-buf (vgem,
//! udmabuf, or virtio-gpu where the kernel has no udmabuf) imports the dma-buf range under it
//! as a FOREIGN object.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use extmem_guest_tests::device_snapshot::{counters, expect_snapshot, op, snapshot};
use extmem_guest_tests::dri::DrmNode;
use extmem_guest_tests::exporters::Exporter;
use extmem_guest_tests::ktap::{expect_eq, io_op};
use extmem_guest_tests::pattern::{self, filled};
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_uapi::{ObjectKind, FLAG_READ_ONLY, USERPTR_PROBE};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use crate::helpers::{
    back_to_start, bound_gem, close, exec, expect_info, expect_new_object, exporter,
    import_and_copy, map, map_fd, read_map, rejected, same_bytes, unmap, userptr_handle, write_map,
};
use crate::{Ktap, MIB, SLOT};

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>, vgem: Option<&DrmNode>) {
    const VA_GEM: u64 = 4 * SLOT;
    const VA_FOREIGN: u64 = 4 * SLOT + 16 * MIB;
    const VA_WINDOW: u64 = 4 * SLOT + 32 * MIB;
    const VA_UDMABUF: u64 = 4 * SLOT + 48 * MIB;
    const LEN: usize = 512 * 1024;
    const SIZE: u64 = LEN as u64;
    let len = LEN;
    let start = gpu.map(snapshot).and_then(Result::ok);
    let gem = bound_gem(ktap, gpu, (VA_GEM, SIZE), "foreign checks");

    let what = "foreign: GEM_USERPTR inside an mmap of a vgem dma-buf gives a FOREIGN object (1 attachment more, no pinned pages)";
    let from_vgem = ktap.check_after(what, gpu.zip(vgem), |(gpu, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let view = map_fd(fd.as_fd(), 0, SIZE)?;
        write_map(&view, Some(fd.as_fd()), &pattern::bytes(51, len))?;
        let before = counters(gpu)?;
        let answer = op(
            "GEM_USERPTR on the dma-buf mapping",
            gpu.userptr(view.addr(), SIZE, 0),
        )?;
        let handle = userptr_handle(answer, ObjectKind::FOREIGN)?;
        expect_info(gpu, handle, ObjectKind::FOREIGN, SIZE, false)?;
        expect_new_object(gpu, before, (1, 0))?;
        Ok((fd, view, handle))
    });
    let what = "foreign (vgem): a GPU COPY out of the FOREIGN object gives the dma-buf's bytes; a GPU FILL into it shows in the mapping";
    ktap.check_after(
        what,
        gpu.zip(from_vgem.as_ref()).zip(gem.as_ref()),
        |((gpu, (fd, view, handle)), gem)| {
            map(gpu, *handle, VA_FOREIGN, SIZE, 0)?;
            exec(gpu, &[vgpu::copy(VA_FOREIGN, VA_GEM, SIZE)])?;
            same_bytes(
                "the dma-buf's bytes",
                &pattern::bytes(51, len),
                &gem.map.read_all(),
            )?;
            exec(gpu, &[vgpu::fill(VA_FOREIGN + 0x1000, 0xf0f0_0f0f, 0x3000)])?;
            let mut expected = pattern::bytes(51, len);
            if let Some(window) = expected.get_mut(0x1000..0x4000) {
                window.copy_from_slice(&filled(0xf0f0_0f0f, 0x3000));
            }
            same_bytes(
                "the fill in the dma-buf mapping",
                &expected,
                &read_map(view, Some(fd.as_fd()))?,
            )?;
            unmap(gpu, VA_FOREIGN, SIZE)
        },
    );
    let what = "foreign (vgem): a 128 KiB window 64 KiB into a mapping made at dma-buf offset 256 KiB holds exactly dma-buf bytes [320 KiB, 448 KiB)";
    ktap.check_after(
        what,
        gpu.zip(from_vgem.as_ref()).zip(gem.as_ref()),
        |((gpu, (fd, _, _)), gem)| {
            let expected = pattern::bytes(52, len);
            let whole = map_fd(fd.as_fd(), 0, SIZE)?;
            write_map(&whole, Some(fd.as_fd()), &expected)?;
            let half = map_fd(fd.as_fd(), SIZE / 2, SIZE / 2)?;
            let seen = import_and_copy(
                gpu,
                "GEM_USERPTR of the window",
                (half.addr() + 0x10000, 0x20000),
                ObjectKind::FOREIGN,
                VA_WINDOW,
                (gem, VA_GEM),
            )?;
            same_bytes(
                "dma-buf bytes [320 KiB, 448 KiB)",
                expected.get(0x50000..0x70000).unwrap_or_default(),
                &seen,
            )
        },
    );
    let (memfd_exporter, name) = exporter(Exporter::Udmabuf);
    let what = format!(
        "foreign ({name}): GEM_USERPTR inside an mmap (at offset 128 KiB) of it gives FOREIGN; a GPU COPY gives its bytes"
    );
    ktap.check_after(&what, gpu.zip(gem.as_ref()), |(gpu, gem)| {
        let exported = memfd_exporter?.export(SIZE)?;
        let expected = pattern::bytes(53, len);
        // The bytes go in through the memfd where there is one, so the GPU must find the
        // memfd's pages behind the dma-buf mapping.
        match &exported.memfd {
            Some(memfd) => write_map(&map_fd(memfd.as_fd(), 0, SIZE)?, None, &expected)?,
            None => {
                let fd = exported.dma_buf.as_fd();
                write_map(&map_fd(fd, 0, SIZE)?, Some(fd), &expected)?;
            }
        }
        let view = map_fd(exported.dma_buf.as_fd(), 0x20000, SIZE - 0x20000)?;
        let seen = import_and_copy(
            gpu,
            "GEM_USERPTR on the dma-buf mapping",
            (view.addr(), 0x40000),
            ObjectKind::FOREIGN,
            VA_UDMABUF,
            (gem, VA_GEM),
        )?;
        same_bytes(
            "exported bytes [128 KiB, 384 KiB)",
            expected.get(0x20000..0x60000).unwrap_or_default(),
            &seen,
        )
    });
    let what = "foreign: PROBE inside a dma-buf mapping answers FOREIGN with handle 0 and attaches nothing";
    ktap.check_after(what, gpu.zip(from_vgem.as_ref()), |(gpu, (_, view, _))| {
        let before = snapshot(gpu)?;
        let answer = op(
            "GEM_USERPTR(PROBE)",
            gpu.userptr(view.addr(), SIZE, USERPTR_PROBE),
        )?;
        expect_eq("kind", answer.kind, ObjectKind::FOREIGN)?;
        expect_eq("handle", answer.handle, 0)?;
        expect_snapshot(snapshot(gpu)?, before)
    });
    let what = "foreign: a range running past the end of the dma-buf mapping fails with EFAULT, counters unchanged";
    ktap.check_after(what, gpu.zip(from_vgem.as_ref()), |(gpu, (fd, _, _))| {
        let half = map_fd(fd.as_fd(), 0, SIZE / 2)?;
        rejected(
            gpu,
            "GEM_USERPTR past the mapping's end",
            Errno::FAULT,
            || gpu.userptr(half.addr() + SIZE / 4, SIZE / 2, 0),
        )
    });
    let what = "foreign: a PROT_READ dma-buf mapping without READ_ONLY fails with EFAULT; with READ_ONLY it imports read-only";
    ktap.check_after(what, gpu.zip(vgem), |(gpu, vgem)| {
        let fd = vgem.dumb_dma_buf(SIZE)?;
        let ptr = io_op(
            "mmap(PROT_READ) of the dma-buf",
            ReadOnlyMapping::new(fd.as_fd(), len),
        )?;
        let addr = ptr.addr();
        rejected(
            gpu,
            "GEM_USERPTR for writing on a PROT_READ mapping",
            Errno::FAULT,
            || gpu.userptr(addr, SIZE, 0),
        )?;
        let answer = op(
            "GEM_USERPTR(READ_ONLY)",
            gpu.userptr(addr, SIZE, FLAG_READ_ONLY),
        )?;
        let handle = userptr_handle(answer, ObjectKind::FOREIGN)?;
        let info = expect_info(gpu, handle, ObjectKind::FOREIGN, SIZE, true);
        close(gpu, handle)?;
        info.map(|_| ())
    });
    ktap.check_after(
        "foreign: after UNMAP and GEM_CLOSE the attachments are given back",
        gpu.zip(start),
        move |(gpu, start)| {
            let mut result = Ok(());
            if let Some((_, _, handle)) = from_vgem.as_ref() {
                result = close(gpu, *handle);
            }
            if let Some(gem) = gem {
                result = result
                    .and_then(|()| unmap(gpu, VA_GEM, SIZE))
                    .and_then(|()| close(gpu, gem.handle));
                // Its CPU mapping holds a reference to the object.
                drop(gem);
            }
            drop(from_vgem);
            result?;
            back_to_start(gpu, start)
        },
    );
}

/// A `PROT_READ`, `MAP_SHARED` mapping of a file, only ever handed to the kernel by address.
///
/// # Invariants
///
/// `base`/`len` describe a live mapping owned by this value.
struct ReadOnlyMapping {
    base: *mut std::ffi::c_void,
    len: usize,
}

impl ReadOnlyMapping {
    /// Maps the first `len` bytes of `fd`.
    fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping at a kernel-chosen address overlaps nothing Rust uses; it is
        // never dereferenced here.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        Ok(Self { base, len })
    }

    fn addr(&self) -> u64 {
        self.base as u64
    }
}

impl Drop for ReadOnlyMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value (type invariant) and unmapped once.
        if let Err(err) = unsafe { rustix::mm::munmap(self.base, self.len) } {
            eprintln!("munmap failed: {err}");
        }
    }
}
