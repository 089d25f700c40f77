//! `/dev/udmabuf`: dma-bufs over the pages of a sealed memfd, as an [`Exporter`].
//!
//! linux-raw-sys does not carry `<linux/udmabuf.h>`, so its one struct and ioctl are
//! declared here; `tests/uapi_headers.rs` compiles their layout against the system header.
//!
//! - Allocating makes a memfd, seals it against shrinking (the kernel requires
//!   `F_SEAL_SHRINK` and refuses `F_SEAL_WRITE`) and turns all of it into a dma-buf.
//! - A host range can be imported only if it lies in one shared mapping of a memfd: udmabuf
//!   takes a memfd and an offset, never a pointer. The memfd behind the mapping is reopened
//!   through `/proc/self/map_files` (which needs `CAP_SYS_ADMIN`); an anonymous or
//!   file-backed pointer is refused with [`errno::EOPNOTSUPP`], which the memory manager
//!   reports as `VK_ERROR_INVALID_EXTERNAL_HANDLE` (the spec's answer for a host pointer
//!   the platform cannot import).

use alloc::format;
use alloc::vec::Vec;
use core::ffi::c_void;

use extmem_hw::HostVa;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{opcode, Ioctl, IoctlOutput, Opcode};

use crate::backend::{errno, BackendError, Op};
use crate::dma_buf_device::{DmaBufDevice, Exporter};

/// `struct udmabuf_create` of `<linux/udmabuf.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UdmabufCreate {
    /// The memfd.
    pub memfd: u32,
    /// `UDMABUF_FLAGS_CLOEXEC`.
    pub flags: u32,
    /// Byte offset into the memfd, page aligned.
    pub offset: u64,
    /// Bytes, page aligned.
    pub size: u64,
}

/// `UDMABUF_FLAGS_CLOEXEC`.
pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
/// `UDMABUF_CREATE = _IOW('u', 0x42, struct udmabuf_create)`.
pub const UDMABUF_CREATE: Opcode = opcode::write::<UdmabufCreate>(b'u', 0x42);

/// `UDMABUF_CREATE` returns the new dma-buf as the ioctl's return value, which rustix's
/// ready-made patterns discard; this spells the request out.
struct CreateRequest(UdmabufCreate);

// SAFETY: the opcode matches the argument type (its size is encoded in it and checked
// against the C header by tests/uapi_headers.rs), the kernel only reads the argument, and a
// non-negative return value is a new file descriptor this process owns.
unsafe impl Ioctl for CreateRequest {
    type Output = OwnedFd;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        UDMABUF_CREATE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        (&raw mut self.0).cast()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<OwnedFd> {
        if out < 0 {
            return Err(rustix::io::Errno::INVAL);
        }
        // SAFETY: a successful UDMABUF_CREATE returns a freshly installed fd nobody owns.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}

fn failed(op: Op) -> impl Fn(rustix::io::Errno) -> BackendError {
    move |e| BackendError {
        op,
        errno: e.raw_os_error(),
    }
}

/// An open `/dev/udmabuf`.
#[derive(Debug)]
pub struct Udmabuf {
    dev: OwnedFd,
}

/// A backend of udmabufs.
pub type UdmabufDevice = DmaBufDevice<Udmabuf>;

impl Udmabuf {
    /// Opens `/dev/udmabuf`.
    pub fn open() -> Result<Self, BackendError> {
        let dev = rustix::fs::open(
            "/dev/udmabuf",
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed(Op::Info))?;
        Ok(Self { dev })
    }

    /// [`create`] on this device.
    fn create(
        &self,
        memfd: BorrowedFd<'_>,
        offset: u64,
        size: u64,
        op: Op,
    ) -> Result<OwnedFd, BackendError> {
        create(self.dev.as_fd(), memfd, offset, size).map_err(failed(op))
    }
}

/// `UDMABUF_CREATE` on the open `/dev/udmabuf` `dev`: a close-on-exec, read-write dma-buf
/// over `[offset, offset + size)` of `memfd` (page aligned; the memfd sealed with
/// `F_SEAL_SHRINK`, not `F_SEAL_WRITE`).
pub fn create(
    dev: BorrowedFd<'_>,
    memfd: BorrowedFd<'_>,
    offset: u64,
    size: u64,
) -> rustix::io::Result<OwnedFd> {
    let memfd = u32::try_from(memfd.as_raw_fd()).map_err(|_| rustix::io::Errno::BADF)?;
    let request = CreateRequest(UdmabufCreate {
        memfd,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset,
        size,
    });
    // SAFETY: see the `Ioctl` impl of `CreateRequest`.
    unsafe { rustix::ioctl::ioctl(dev, request) }
}

impl Exporter for Udmabuf {
    fn allocate(&mut self, size: u64) -> Result<OwnedFd, BackendError> {
        let op = Op::Create;
        let memfd = rustix::fs::memfd_create(
            "extmem-udmabuf",
            rustix::fs::MemfdFlags::ALLOW_SEALING | rustix::fs::MemfdFlags::CLOEXEC,
        )
        .map_err(failed(op))?;
        rustix::fs::ftruncate(&memfd, size).map_err(failed(op))?;
        rustix::fs::fcntl_add_seals(&memfd, rustix::fs::SealFlags::SHRINK).map_err(failed(op))?;
        // The dma-buf holds the pages; the memfd can go.
        self.create(memfd.as_fd(), 0, size, op)
    }

    fn import_host(
        &mut self,
        ptr: HostVa,
        size: u64,
        _read_only: bool,
    ) -> Result<OwnedFd, BackendError> {
        let op = Op::ImportHost;
        let refused = BackendError {
            op,
            errno: errno::EOPNOTSUPP,
        };
        let maps = read_file("/proc/self/maps").map_err(failed(op))?;
        let maps = core::str::from_utf8(&maps).map_err(|_| refused)?;
        let vma = maps
            .lines()
            .filter_map(MapsLine::parse)
            .find(|l| l.start <= ptr.get() && ptr.get() < l.end)
            .ok_or(BackendError {
                op,
                errno: errno::EFAULT,
            })?;
        let end = ptr.get().checked_add(size).ok_or(refused)?;
        if !vma.is_shared_memfd() || end > vma.end {
            return Err(refused);
        }
        let memfd = rustix::fs::open(
            format!("/proc/self/map_files/{:x}-{:x}", vma.start, vma.end).as_str(),
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed(op))?;
        let offset = vma
            .offset
            .checked_add(ptr.get() - vma.start)
            .ok_or(refused)?;
        self.create(memfd.as_fd(), offset, size, op)
    }
}

/// One line of `/proc/self/maps`: `start-end perms offset dev inode path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MapsLine<'a> {
    start: u64,
    end: u64,
    perms: &'a str,
    offset: u64,
    path: &'a str,
}

impl<'a> MapsLine<'a> {
    /// The kernel separates the first five fields by one space and pads before the path
    /// (which may itself hold spaces, e.g. `/memfd:name (deleted)`).
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let _dev = fields.next()?;
        let _inode = fields.next()?;
        Some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            perms,
            offset,
            path: fields.next().unwrap_or("").trim_start(),
        })
    }

    /// A shared mapping of a memfd (`MAP_SHARED` shows as `s`; memfds as `/memfd:name`).
    fn is_shared_memfd(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's') && self.path.starts_with("/memfd:")
    }
}

/// Reads a whole (proc) file.
fn read_file(path: &str) -> rustix::io::Result<Vec<u8>> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = rustix::io::read(&fd, &mut chunk)?;
        if n == 0 {
            return Ok(data);
        }
        data.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_matches_udmabuf_h() {
        assert_eq!(UDMABUF_CREATE, 0x4018_7542);
    }

    #[test]
    fn maps_lines_parse_with_their_paths() {
        let line =
            "7f0000000000-7f0000004000 rw-s 00002000 00:01 1234   /memfd:extmem test (deleted)";
        let l = MapsLine::parse(line).expect("parses");
        assert_eq!(
            (l.start, l.end, l.offset),
            (0x7f00_0000_0000, 0x7f00_0000_4000, 0x2000)
        );
        assert_eq!(l.path, "/memfd:extmem test (deleted)");
        assert!(l.is_shared_memfd());
        let anon =
            MapsLine::parse("7f0000000000-7f0000004000 rw-p 00000000 00:00 0 ").expect("parses");
        assert_eq!(anon.path, "");
        assert!(!anon.is_shared_memfd());
        let private = MapsLine::parse("1000-2000 rw-p 00000000 00:01 7 /memfd:x").expect("parses");
        assert!(
            !private.is_shared_memfd(),
            "a private mapping is not the memfd's pages"
        );
        assert_eq!(MapsLine::parse("garbage"), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "/dev/udmabuf and procfs, which Miri does not emulate")]
    fn an_anonymous_pointer_is_refused() {
        let _serial = crate::FD_TESTS.lock();
        let page = std::vec![0u8; 0x2000];
        let Ok(mut dev) = Udmabuf::open() else {
            // Without /dev/udmabuf the refusal comes from opening it; the guest tests cover
            // the device. The parser decides before any ioctl, so exercise it directly.
            let maps = read_file("/proc/self/maps").expect("procfs");
            let maps = core::str::from_utf8(&maps).expect("utf-8");
            let addr = page.as_ptr() as u64;
            let vma = maps
                .lines()
                .filter_map(MapsLine::parse)
                .find(|l| l.start <= addr && addr < l.end)
                .expect("the heap is mapped");
            assert!(!vma.is_shared_memfd());
            return;
        };
        assert_eq!(
            dev.import_host(HostVa::new(page.as_ptr() as u64), 0x1000, false)
                .map(|_| ()),
            Err(BackendError {
                op: Op::ImportHost,
                errno: errno::EOPNOTSUPP
            })
        );
    }
}
