//! DRM device nodes under `/dev/dri`: finding a driver's node and the GEM/PRIME calls the tests
//! make on it.
//!
//! drm-rs covers enumeration (`DRM_IOCTL_VERSION`) and PRIME. Dumb buffers go through drm-ffi
//! instead: drm-rs's `DumbBuffer` hides the size the kernel reports (which the tests check), and
//! its mapping is a `&mut [u8]` that must not alias the dma-buf mapping of the same pages.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::ktap::{expect_eq, io_op, CheckResult, Failure};

use drm::control::Device as _;
use drm::Device as _;

/// Which of a DRM device's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// `/dev/dri/cardN`: modesetting and dumb buffers (the dumb-buffer ioctls are not
    /// `DRM_RENDER_ALLOW`).
    Primary,
    /// `/dev/dri/renderDN`: rendering and PRIME only.
    Render,
}

impl NodeKind {
    fn of(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        if name.starts_with("renderD") {
            Some(Self::Render)
        } else if name.starts_with("card") {
            Some(Self::Primary)
        } else {
            None
        }
    }
}

/// An open DRM node.
#[derive(Debug)]
pub struct DrmNode {
    file: File,
    /// Where it was opened.
    pub path: PathBuf,
    /// The driver name from `DRM_IOCTL_VERSION`.
    pub driver: String,
}

impl AsFd for DrmNode {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl drm::Device for DrmNode {}
impl drm::control::Device for DrmNode {}

/// No node of the wanted driver and kind; lists what was there.
#[derive(Debug)]
pub struct NodeNotFound {
    /// The driver asked for.
    pub driver: String,
    /// The kind asked for.
    pub kind: NodeKind,
    /// Every node seen, with its driver name or the error opening it gave.
    pub seen: Vec<(PathBuf, Result<String, String>)>,
}

impl fmt::Display for NodeNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no {:?} node of driver {:?} among [",
            self.kind, self.driver
        )?;
        for (index, (path, driver)) in self.seen.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            match driver {
                Ok(name) => write!(f, "{separator}{}: {name}", path.display())?,
                Err(err) => write!(f, "{separator}{}: {err}", path.display())?,
            }
        }
        write!(f, "]")
    }
}

/// Opens the first `/dev/dri` node of `kind` whose driver is `driver`.
pub fn open_by_driver(driver: &str, kind: NodeKind) -> Result<DrmNode, NodeNotFound> {
    let mut seen = Vec::new();
    let mut paths: Vec<PathBuf> = match fs::read_dir("/dev/dri") {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(err) => {
            seen.push((PathBuf::from("/dev/dri"), Err(err.to_string())));
            Vec::new()
        }
    };
    paths.sort();
    for path in paths {
        if NodeKind::of(&path) != Some(kind) {
            continue;
        }
        match open_node(&path) {
            Ok(node) if node.driver == driver => return Ok(node),
            Ok(node) => seen.push((path, Ok(node.driver))),
            Err(err) => seen.push((path, Err(err.to_string()))),
        }
    }
    Err(NodeNotFound {
        driver: driver.to_owned(),
        kind,
        seen,
    })
}

fn open_node(path: &Path) -> io::Result<DrmNode> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut node = DrmNode {
        file,
        path: path.to_owned(),
        driver: String::new(),
    };
    node.driver = node.get_driver()?.name().to_string_lossy().into_owned();
    Ok(node)
}

impl DrmNode {
    /// The node's device number `(major, minor)`, from `fstat` of the open file.
    pub fn device_number(&self) -> io::Result<(u32, u32)> {
        let stat = rustix::fs::fstat(&self.file)?;
        Ok((
            rustix::fs::major(stat.st_rdev),
            rustix::fs::minor(stat.st_rdev),
        ))
    }
}

/// A GEM handle on one node (handles are per open file and never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemHandle(pub NonZeroU32);

impl fmt::Display for GemHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A dumb buffer as `DRM_IOCTL_MODE_CREATE_DUMB` described it.
#[derive(Debug, Clone, Copy)]
pub struct DumbBuffer {
    /// Its GEM handle.
    pub handle: GemHandle,
    /// Bytes per row.
    pub pitch: u32,
    /// Size in bytes as the kernel reports it.
    pub size: u64,
}

impl DrmNode {
    /// A dumb buffer of exactly `size` bytes (1024 pixels × 32 bpp per 4 KiB row), exported
    /// as a dma-buf; the node's own handle is closed again, the dma-buf keeps the buffer.
    pub fn dumb_dma_buf(&self, size: u64) -> CheckResult<OwnedFd> {
        let height = u32::try_from(size / 4096)
            .map_err(|_| Failure::new("a small size", size.to_string()))?;
        let dumb = io_op("CREATE_DUMB", self.create_dumb(1024, height, 32))?;
        expect_eq("dumb buffer size", dumb.size, size)?;
        let fd = io_op("PRIME export", self.export(dumb.handle))?;
        io_op("GEM_CLOSE", self.close_handle(dumb.handle))?;
        Ok(fd)
    }

    /// `DRM_IOCTL_MODE_CREATE_DUMB` (primary node only).
    pub fn create_dumb(&self, width: u32, height: u32, bpp: u32) -> io::Result<DumbBuffer> {
        let created = drm_ffi::mode::dumbbuffer::create(self.as_fd(), width, height, bpp, 0)?;
        Ok(DumbBuffer {
            handle: gem_handle(created.handle)?,
            pitch: created.pitch,
            size: created.size,
        })
    }

    /// `DRM_IOCTL_MODE_MAP_DUMB`: the fake offset to `mmap` this node at for `handle`.
    pub fn map_dumb_offset(&self, handle: GemHandle) -> io::Result<u64> {
        Ok(drm_ffi::mode::dumbbuffer::map(self.as_fd(), handle.0.get(), 0, 0)?.offset)
    }

    /// `DRM_IOCTL_PRIME_HANDLE_TO_FD` with `DRM_CLOEXEC | DRM_RDWR` (RDWR so the dma-buf can be
    /// mapped writable).
    pub fn export(&self, handle: GemHandle) -> io::Result<OwnedFd> {
        self.buffer_to_prime_fd(handle.0.into(), drm::CLOEXEC | drm::RDWR)
    }

    /// `DRM_IOCTL_PRIME_HANDLE_TO_FD` with `DRM_CLOEXEC` alone: the dma-buf's file is
    /// `O_RDONLY`, so importers must refuse to map it writable. The GEM object keeps its first
    /// export, so only a buffer not exported before comes out read-only.
    pub fn export_read_only(&self, handle: GemHandle) -> io::Result<OwnedFd> {
        self.buffer_to_prime_fd(handle.0.into(), drm::CLOEXEC)
    }

    /// `DRM_IOCTL_PRIME_FD_TO_HANDLE`.
    pub fn import(&self, dma_buf: BorrowedFd<'_>) -> io::Result<GemHandle> {
        gem_handle(self.prime_fd_to_buffer(dma_buf)?.into())
    }

    /// `DRM_IOCTL_GEM_CLOSE`.
    pub fn close_handle(&self, handle: GemHandle) -> io::Result<()> {
        self.close_buffer(handle.0.into())
    }
}

fn gem_handle(raw: u32) -> io::Result<GemHandle> {
    NonZeroU32::new(raw)
        .map(GemHandle)
        .ok_or_else(|| io::Error::other("the kernel returned GEM handle 0"))
}
