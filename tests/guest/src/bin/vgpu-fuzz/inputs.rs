//! Hostile inputs: memory a pointer may point into (mapped, read-only, inaccessible,
//! unmapped), file descriptors of every wrong kind, and boundary values for sizes, GPU VAs,
//! flags and padding, each drawn from the seeded generator.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use extmem_guest_tests::dri::{DrmNode, NodeKind};
use extmem_guest_tests::host_memory::{self, AnonMapping, RawBytes};
use extmem_guest_tests::ktap::{io_op, CheckResult, Failure};
use extmem_guest_tests::mapping::SharedMapping;
use extmem_guest_tests::pattern::Rng;
use extmem_guest_tests::{dri, udmabuf};
use extmem_uapi::{FLAG_READ_ONLY, USERPTR_PROBE};
use rustix::event::{eventfd, EventfdFlags};
use rustix::fs::{memfd_create, MemfdFlags};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

pub(crate) const PAGE: u64 = 4096;
/// The read-write buffer host pointers mostly point into.
pub(crate) const BUFFER: u64 = 2 << 20;
/// The other mappings, and the imported dma-bufs.
pub(crate) const SMALL: u64 = 64 << 10;
/// The device's VA space (`VA_BITS` 48).
pub(crate) const VA_END: u64 = 1 << 48;
/// Where most VAs are drawn, so that binds collide and commands hit bindings.
pub(crate) const VA_WINDOW: u64 = 0x10_0000_0000;
/// Pages in the VA window.
pub(crate) const VA_WINDOW_PAGES: u64 = 1024;

/// A file descriptor to throw at `PRIME_FD_TO_HANDLE`, and whether it is a dma-buf.
pub(crate) struct Candidate {
    pub(crate) name: &'static str,
    pub(crate) fd: RawFd,
    pub(crate) dma_buf: bool,
}

/// Everything a hostile pointer or descriptor can refer to, alive for the whole run.
pub(crate) struct Hostile {
    pub(crate) buffer: AnonMapping,
    pub(crate) read_only: AnonMapping,
    pub(crate) no_access: AnonMapping,
    /// A range that was mapped and is unmapped again.
    pub(crate) hole: u64,
    /// The driver's largest object (`MAX_MAPPING`).
    pub(crate) max_mapping: u64,
    /// CPU mappings of the vgem dma-buf and the udmabuf: a host pointer into one of them
    /// imports the dma-buf (`FOREIGN`).
    pub(crate) foreign: Vec<SharedMapping>,
    /// The number of a descriptor that was opened and closed again.
    pub(crate) closed_fd: RawFd,
    /// Kept open: the descriptors behind [`Hostile::candidate`].
    files: Vec<(&'static str, OwnedFd, bool)>,
    _vgem: DrmNode,
}

impl Hostile {
    pub(crate) fn new(max_mapping: u64) -> CheckResult<Self> {
        let buffer = io_op("mapping 2 MiB", AnonMapping::read_write(len(BUFFER)))?;
        io_op(
            "filling the buffer",
            buffer.write(0, &extmem_guest_tests::pattern::bytes(7, len(BUFFER))),
        )?;
        let read_only = io_op("mapping 64 KiB", AnonMapping::read_write(len(SMALL)))?;
        io_op("touching it", read_only.write(0, &[1]))?;
        io_op(
            "mprotect(PROT_READ)",
            read_only.protect(MprotectFlags::READ),
        )?;
        let no_access = io_op(
            "mapping 64 KiB PROT_NONE",
            AnonMapping::new(len(SMALL), ProtFlags::empty(), MapFlags::empty()),
        )?;
        let hole = io_op("an unmapped range", host_memory::unmapped_range(len(SMALL)))?;
        let vgem = dri::open_by_driver("vgem", NodeKind::Primary)
            .map_err(|e| Failure::op("opening vgem", e))?;
        let mut files: Vec<(&'static str, OwnedFd, bool)> = Vec::new();
        let memfd = io_op(
            "memfd_create",
            memfd_create("extmem-fuzz", MemfdFlags::CLOEXEC),
        )?;
        io_op("ftruncate", rustix::fs::ftruncate(&memfd, SMALL))?;
        files.push(("memfd", memfd, false));
        let (read_end, write_end) = io_op("pipe", rustix::pipe::pipe())?;
        files.push(("pipe read end", read_end, false));
        files.push(("pipe write end", write_end, false));
        files.push((
            "eventfd",
            io_op("eventfd", eventfd(0, EventfdFlags::CLOEXEC))?,
            false,
        ));
        let null = io_op("open(/dev/null)", File::open("/dev/null"))?;
        files.push(("/dev/null", null.into(), false));
        let vgem_file = io_op("open(/proc/self/exe)", File::open("/proc/self/exe"))?;
        files.push(("a regular file", vgem_file.into(), false));
        let vgem_buf = vgem.dumb_dma_buf(SMALL)?;
        let mut foreign = vec![io_op(
            "mapping the vgem dma-buf",
            SharedMapping::new(vgem_buf.as_fd(), 0, len(SMALL)),
        )?];
        files.push(("a vgem dma-buf", vgem_buf, true));
        let (memfd, udma) = io_op(
            "a udmabuf over a sealed memfd",
            udmabuf::over_sealed_memfd("extmem-fuzz", SMALL),
        )?;
        files.push(("a udmabuf's memfd", memfd, false));
        foreign.push(io_op(
            "mapping the udmabuf",
            SharedMapping::new(udma.as_fd(), 0, len(SMALL)),
        )?);
        files.push(("a udmabuf", udma, true));
        // A number far above the ones in use, so no later open (an export) reuses it.
        let closed_fd = {
            let file = io_op("open(/dev/null)", File::open("/dev/null"))?;
            let high = io_op(
                "F_DUPFD_CLOEXEC(1000)",
                rustix::io::fcntl_dupfd_cloexec(&file, 1000),
            )?;
            high.as_raw_fd()
        };
        Ok(Self {
            buffer,
            read_only,
            no_access,
            hole,
            max_mapping,
            foreign,
            closed_fd,
            files,
            _vgem: vgem,
        })
    }

    /// A descriptor of some kind: wrong ones, closed numbers, dma-bufs.
    pub(crate) fn candidate(&self, rng: &mut Rng) -> Candidate {
        match rng.below(4) {
            0 => Candidate {
                name: "a closed descriptor",
                fd: self.closed_fd,
                dma_buf: false,
            },
            1 => {
                let fd = *rng.pick(&[-1, i32::MAX, 1 << 20, 0x7fff]).unwrap_or(&-1);
                Candidate {
                    name: "a number that is no descriptor",
                    fd,
                    dma_buf: false,
                }
            }
            _ => {
                let (name, fd, dma_buf) = self
                    .files
                    .get(rng.index(self.files.len()))
                    .map_or(("none", -1, false), |(n, f, d)| (*n, f.as_raw_fd(), *d));
                Candidate { name, fd, dma_buf }
            }
        }
    }

    /// A host pointer: into the buffer (aligned or not), the read-only or inaccessible
    /// mapping, the hole, a dma-buf's mapping, or addresses no user range has.
    pub(crate) fn pointer(&self, rng: &mut Rng) -> u64 {
        let in_buffer = self.buffer.addr() + rng.below(BUFFER / PAGE) * PAGE;
        match rng.below(13) {
            0..=4 => in_buffer,
            5 => in_buffer + 1 + rng.below(PAGE - 1),
            6 => self.read_only.addr(),
            7 => self.no_access.addr(),
            8 => self.hole,
            9 => *rng
                .pick(&[
                    0,
                    PAGE,
                    0xffff_8880_0000_0000,
                    0x0000_8000_0000_0000,
                    0xffff_ffff_ffff_f000,
                    0x7fff_ffff_f000,
                ])
                .unwrap_or(&0),
            10 => self.buffer.addr() + BUFFER - PAGE,
            11 => self
                .foreign
                .get(rng.index(self.foreign.len()))
                .map_or(0, |m| m.addr() + rng.below(SMALL / PAGE) * PAGE),
            _ => rng.next_u64(),
        }
    }

    /// A byte size: small valid ones, the limits, just past them, wrapping ones.
    pub(crate) fn size(&self, rng: &mut Rng) -> u64 {
        match rng.below(10) {
            0..=3 => (1 + rng.below(16)) * PAGE,
            4 => (1 + rng.below(BUFFER / PAGE)) * PAGE,
            5 => *rng.pick(&[0, 1, PAGE - 1, PAGE + 1, 6]).unwrap_or(&0),
            6 => *rng
                .pick(&[
                    self.max_mapping,
                    self.max_mapping + PAGE,
                    1 << 40,
                    VA_END,
                    u64::MAX - (PAGE - 1),
                    u64::MAX,
                ])
                .unwrap_or(&0),
            7 => BUFFER,
            8 => 2 * PAGE,
            _ => rng.next_u64(),
        }
    }

    /// A size for an object that may really be created: at most 1 MiB, so a run that binds
    /// (and so populates) many of them stays within the guest's memory.
    pub(crate) fn object_size(&self, rng: &mut Rng) -> u64 {
        match rng.below(8) {
            0 => self.size(rng).max(2 << 20),
            _ => (1 + rng.below(256)) * PAGE,
        }
    }

    /// An offset into an object.
    pub(crate) fn offset(rng: &mut Rng) -> u64 {
        match rng.below(8) {
            0..=4 => 0,
            5 => rng.below(64) * PAGE,
            6 => 1 + rng.below(PAGE),
            _ => rng.next_u64(),
        }
    }
}

/// A GPU VA: mostly page-aligned in a small window, else at and past the VA space's end,
/// misaligned or random.
pub(crate) fn va(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0..=6 => VA_WINDOW + rng.below(VA_WINDOW_PAGES) * PAGE,
        7 => *rng
            .pick(&[
                0,
                VA_END - PAGE,
                VA_END - (2 << 20),
                VA_END,
                u64::MAX - (PAGE - 1),
            ])
            .unwrap_or(&0),
        8 => VA_WINDOW + 1 + rng.below(PAGE - 1),
        _ => rng.next_u64(),
    }
}

/// Flags: usually none or the known ones, sometimes any bits.
pub(crate) fn flags(rng: &mut Rng) -> u32 {
    match rng.below(8) {
        0..=3 => 0,
        4 => FLAG_READ_ONLY,
        5 => USERPTR_PROBE,
        6 => 1 << rng.below(32),
        _ => rng.next_u32(),
    }
}

/// Padding: zero nine times in ten.
pub(crate) fn pad(rng: &mut Rng) -> u32 {
    if rng.one_in(10) {
        (rng.next_u32()) | 1
    } else {
        0
    }
}

impl Hostile {
    /// Whether `ptr` lies inside one of the dma-buf mappings.
    pub(crate) fn in_foreign(&self, ptr: u64) -> bool {
        self.foreign
            .iter()
            .any(|m| (m.addr()..m.addr() + SMALL).contains(&ptr))
    }
}

fn len(size: u64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}
