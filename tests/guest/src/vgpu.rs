//! The extmem-vgpu render node and its ioctls, with the structs of `extmem-uapi`.
//!
//! Every call returns what the kernel wrote back, also on failure where the contract says the
//! struct is copied back (`EXEC`'s fault fields), so a test can look at exactly what the
//! driver said.

use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use extmem_uapi::{
    BindOp, Cmd, CmdOp, Exec, GemCreate, GemInfo, GemUserptr, GetParam, Param, VmBind, VmQuery,
    EXEC_WAIT, IOCTL_EXEC, IOCTL_GEM_CREATE, IOCTL_GEM_INFO, IOCTL_GEM_USERPTR, IOCTL_GET_PARAM,
    IOCTL_VM_BIND, IOCTL_VM_QUERY,
};
use rustix::io::Errno;
use rustix::ioctl::{self, Updater};

use crate::dri::{self, DrmNode, GemHandle, NodeKind, NodeNotFound};

/// An open render node of extmem-vgpu.
#[derive(Debug)]
pub struct Vgpu {
    node: DrmNode,
}

impl AsFd for Vgpu {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.node.as_fd()
    }
}

/// Runs one driver ioctl that reads and writes `T`.
///
/// # Safety
///
/// `OPCODE` must be an ioctl of extmem-vgpu whose argument is a `T` (the `extmem-uapi`
/// constants pair each opcode with its struct; its C-header test pins the layouts).
unsafe fn update<const OPCODE: ioctl::Opcode, T>(
    fd: BorrowedFd<'_>,
    arg: &mut T,
) -> Result<(), Errno> {
    // SAFETY: the caller guarantees OPCODE takes a `T`; `arg` is a live, exclusive `T`.
    unsafe { ioctl::ioctl(fd, Updater::<OPCODE, T>::new(arg)) }
}

impl Vgpu {
    /// Opens the first render node whose driver is `extmem-vgpu`.
    pub fn open() -> Result<Self, NodeNotFound> {
        dri::open_by_driver(extmem_uapi::DRIVER_NAME, NodeKind::Render).map(|node| Self { node })
    }

    /// The node's path and driver, for messages.
    pub fn node(&self) -> &DrmNode {
        &self.node
    }

    /// `GET_PARAM` with the whole struct, for tests of malformed requests.
    pub fn get_param_raw(&self, args: &mut GetParam) -> Result<(), Errno> {
        // SAFETY: IOCTL_GET_PARAM takes a `GetParam`.
        unsafe { update::<IOCTL_GET_PARAM, GetParam>(self.as_fd(), args) }
    }

    /// `GET_PARAM` of `param`.
    pub fn get_param(&self, param: Param) -> Result<u64, Errno> {
        let mut args = GetParam {
            param,
            ..GetParam::default()
        };
        self.get_param_raw(&mut args)?;
        Ok(args.value)
    }

    /// The device-wide counters.
    pub fn counters(&self) -> Result<Counters, Errno> {
        Ok(Counters {
            live_objects: self.get_param(Param::LIVE_OBJECTS)?,
            pinned_pages: self.get_param(Param::PINNED_PAGES)?,
            pt_pages: self.get_param(Param::PT_PAGES)?,
            attachments: self.get_param(Param::ATTACHMENTS)?,
            bindings: self.get_param(Param::BINDINGS)?,
            jobs: self.get_param(Param::JOBS)?,
        })
    }

    /// `GEM_CREATE` with the whole struct.
    pub fn gem_create_raw(&self, args: &mut GemCreate) -> Result<(), Errno> {
        // SAFETY: IOCTL_GEM_CREATE takes a `GemCreate`.
        unsafe { update::<IOCTL_GEM_CREATE, GemCreate>(self.as_fd(), args) }
    }

    /// A shmem object of `size` bytes.
    pub fn gem_create(&self, size: u64) -> Result<GemHandle, Errno> {
        let mut args = GemCreate {
            size,
            ..GemCreate::default()
        };
        self.gem_create_raw(&mut args)?;
        handle(args.handle)
    }

    /// `GEM_USERPTR` with the whole struct.
    pub fn userptr_raw(&self, args: &mut GemUserptr) -> Result<(), Errno> {
        // SAFETY: IOCTL_GEM_USERPTR takes a `GemUserptr`.
        unsafe { update::<IOCTL_GEM_USERPTR, GemUserptr>(self.as_fd(), args) }
    }

    /// Imports `[ptr, ptr + size)` with `flags`; returns the kernel's answer (handle, kind).
    pub fn userptr(&self, ptr: u64, size: u64, flags: u32) -> Result<GemUserptr, Errno> {
        let mut args = GemUserptr {
            ptr,
            size,
            flags,
            ..GemUserptr::default()
        };
        self.userptr_raw(&mut args)?;
        Ok(args)
    }

    /// `GEM_INFO` with the whole struct.
    pub fn gem_info_raw(&self, args: &mut GemInfo) -> Result<(), Errno> {
        // SAFETY: IOCTL_GEM_INFO takes a `GemInfo`.
        unsafe { update::<IOCTL_GEM_INFO, GemInfo>(self.as_fd(), args) }
    }

    /// `GEM_INFO` of `handle`.
    pub fn gem_info(&self, handle: GemHandle) -> Result<GemInfo, Errno> {
        let mut args = GemInfo {
            handle: handle.0.get(),
            ..GemInfo::default()
        };
        self.gem_info_raw(&mut args)?;
        Ok(args)
    }

    /// `VM_BIND` with the whole struct.
    pub fn vm_bind_raw(&self, args: &mut VmBind) -> Result<(), Errno> {
        // SAFETY: IOCTL_VM_BIND takes a `VmBind`.
        unsafe { update::<IOCTL_VM_BIND, VmBind>(self.as_fd(), args) }
    }

    /// Maps `[offset, offset + size)` of `handle` at `va`.
    pub fn map(
        &self,
        handle: GemHandle,
        va: u64,
        offset: u64,
        size: u64,
        flags: u32,
    ) -> Result<(), Errno> {
        self.vm_bind_raw(&mut VmBind {
            op: BindOp::MAP,
            flags,
            handle: handle.0.get(),
            pad: 0,
            va,
            offset,
            size,
        })
    }

    /// Removes the binding at `va` of `size` bytes.
    pub fn unmap(&self, va: u64, size: u64) -> Result<(), Errno> {
        self.vm_bind_raw(&mut VmBind {
            op: BindOp::UNMAP,
            va,
            size,
            ..VmBind::default()
        })
    }

    /// `EXEC` with the whole struct; `args.cmds` must point at `args.count` commands (or be a
    /// deliberately bad pointer the kernel must refuse with `EFAULT`).
    pub fn exec_raw(&self, args: &mut Exec) -> Result<(), Errno> {
        // SAFETY: IOCTL_EXEC takes an `Exec`; the kernel only reads through `args.cmds` with
        // copy_from_user, so a bad pointer is an EFAULT, never memory unsafety here.
        unsafe { update::<IOCTL_EXEC, Exec>(self.as_fd(), args) }
    }

    /// Runs `cmds` and waits for them (`EXEC_WAIT`); on failure returns the errno and the
    /// struct as the kernel left it.
    pub fn exec(&self, cmds: &[Cmd]) -> Result<Exec, (Errno, Exec)> {
        let count = u32::try_from(cmds.len()).map_err(|_| (Errno::INVAL, Exec::default()))?;
        let mut args = Exec {
            cmds: cmds.as_ptr() as u64,
            count,
            flags: EXEC_WAIT,
            ..Exec::default()
        };
        match self.exec_raw(&mut args) {
            Ok(()) => Ok(args),
            Err(errno) => Err((errno, args)),
        }
    }

    /// `VM_QUERY` with the whole struct.
    pub fn vm_query_raw(&self, args: &mut VmQuery) -> Result<(), Errno> {
        // SAFETY: IOCTL_VM_QUERY takes a `VmQuery`.
        unsafe { update::<IOCTL_VM_QUERY, VmQuery>(self.as_fd(), args) }
    }

    /// Translates `va`.
    pub fn vm_query(&self, va: u64) -> Result<VmQuery, Errno> {
        let mut args = VmQuery {
            va,
            ..VmQuery::default()
        };
        self.vm_query_raw(&mut args)?;
        Ok(args)
    }

    /// `PRIME_HANDLE_TO_FD` (close-on-exec, read-write).
    pub fn export(&self, handle: GemHandle) -> io::Result<OwnedFd> {
        self.node.export(handle)
    }

    /// `PRIME_FD_TO_HANDLE`.
    pub fn import(&self, dma_buf: BorrowedFd<'_>) -> io::Result<GemHandle> {
        self.node.import(dma_buf)
    }

    /// `GEM_CLOSE`.
    pub fn close(&self, handle: GemHandle) -> io::Result<()> {
        self.node.close_handle(handle)
    }
}

/// Where the dma-buf core lists every buffer with the devices attached to it (debugfs must
/// be mounted; the guest plan mounts it before the extmem-vgpu programs run).
pub const DMA_BUF_BUFINFO: &str = "/sys/kernel/debug/dma_buf/bufinfo";

/// How many dma-buf attachments the device named `device` holds, by the dma-buf core's own
/// list (`Attached Devices:` lines of [`DMA_BUF_BUFINFO`]), not by the driver's counter.
pub fn dma_buf_attachments(device: &str) -> io::Result<usize> {
    let text = std::fs::read_to_string(DMA_BUF_BUFINFO)?;
    Ok(count_attachments(&text, device))
}

fn count_attachments(bufinfo: &str, device: &str) -> usize {
    bufinfo
        .lines()
        .filter(|l| l.strip_prefix('\t') == Some(device))
        .count()
}

/// Where DRM puts each device's debugfs directory; extmem-vgpu's holds
/// [`COUNTERS_FILE`].
const DRI_DEBUGFS: &str = "/sys/kernel/debug/dri";
/// The driver's debugfs counters file (`extmem_counters_show` in `extmem_vgpu_drv.c`).
pub const COUNTERS_FILE: &str = "extmem_counters";

/// Cache maintenance the driver did around jobs: the tables it synced for the device before
/// the copy engine ran and for the CPU after, with their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Tables synced for the device.
    pub for_device: u64,
    /// Their bytes.
    pub for_device_bytes: u64,
    /// Tables synced for the CPU.
    pub for_cpu: u64,
    /// Their bytes.
    pub for_cpu_bytes: u64,
}

/// What the debugfs counters file says about the device's DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaCounters {
    /// Whether the DMA API treats the device as cache-coherent (no maintenance).
    pub coherent: bool,
    /// The longest DMA segment the device takes.
    pub max_seg_size: u64,
    /// The last job's syncs.
    pub last_job: SyncCounts,
    /// The time the last job's syncs took, in nanoseconds.
    pub last_job_ns: u64,
    /// Every job's syncs since the module was loaded.
    pub total: SyncCounts,
    /// Their time, in nanoseconds.
    pub total_ns: u64,
    /// DMA mappings of pinned user pages alive: one per page range and direction, shared by
    /// the `GEM_USERPTR` objects over it.
    pub user_dma_maps: u64,
}

/// Reads [`DmaCounters`] from extmem-vgpu's debugfs counters file (debugfs must be mounted).
pub fn dma_counters() -> io::Result<DmaCounters> {
    let text = std::fs::read_to_string(counters_path()?)?;
    parse_dma_counters(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The counters file of the one DRM device that has one.
fn counters_path() -> io::Result<std::path::PathBuf> {
    for entry in std::fs::read_dir(DRI_DEBUGFS)? {
        let path = entry?.path().join(COUNTERS_FILE);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no {DRI_DEBUGFS}/*/{COUNTERS_FILE}"),
    ))
}

fn parse_dma_counters(text: &str) -> Result<DmaCounters, String> {
    let value = |name: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .ok_or_else(|| format!("no \"{name}\" line in {COUNTERS_FILE}"))?;
        line.trim()
            .parse()
            .map_err(|e| format!("{name} {line:?} in {COUNTERS_FILE}: {e}"))
    };
    let counts = |prefix: &str| -> Result<SyncCounts, String> {
        Ok(SyncCounts {
            for_device: value(&format!("{prefix}_for_device"))?,
            for_device_bytes: value(&format!("{prefix}_for_device_bytes"))?,
            for_cpu: value(&format!("{prefix}_for_cpu"))?,
            for_cpu_bytes: value(&format!("{prefix}_for_cpu_bytes"))?,
        })
    };
    let coherent = match value("dma_coherent")? {
        0 => false,
        1 => true,
        other => {
            return Err(format!(
                "dma_coherent {other} in {COUNTERS_FILE}: not 0 or 1"
            ))
        }
    };
    Ok(DmaCounters {
        coherent,
        max_seg_size: value("dma_max_seg_size")?,
        last_job: counts("last_job_sync")?,
        last_job_ns: value("last_job_sync_ns")?,
        total: counts("total_sync")?,
        total_ns: value("total_sync_ns")?,
        user_dma_maps: value("user_dma_maps")?,
    })
}

fn handle(raw: u32) -> Result<GemHandle, Errno> {
    // A successful create that hands out handle 0 broke the contract; EPROTO says so.
    NonZeroU32::new(raw).map(GemHandle).ok_or(Errno::PROTO)
}

/// A `COPY` of `size` bytes from GPU VA `src` to `dst`.
pub fn copy(src: u64, dst: u64, size: u64) -> Cmd {
    Cmd {
        op: CmdOp::COPY,
        value: 0,
        src,
        dst,
        size,
    }
}

/// A `FILL` of `size` bytes at `dst` with `value`.
pub fn fill(dst: u64, value: u32, size: u64) -> Cmd {
    Cmd {
        op: CmdOp::FILL,
        value,
        src: 0,
        dst,
        size,
    }
}

/// The device-wide counters `GET_PARAM` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// GEM objects alive.
    pub live_objects: u64,
    /// User pages pinned by `GEM_USERPTR`.
    pub pinned_pages: u64,
    /// Page-table pages allocated.
    pub pt_pages: u64,
    /// dma-buf attachments held.
    pub attachments: u64,
    /// VM bindings alive.
    pub bindings: u64,
    /// `EXEC` jobs still holding memory (0 when the device is idle).
    pub jobs: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "objects {}, pinned pages {}, page-table pages {}, attachments {}, bindings {}, jobs {}",
            self.live_objects,
            self.pinned_pages,
            self.pt_pages,
            self.attachments,
            self.bindings,
            self.jobs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_counted_from_bufinfo() {
        let bufinfo = "\nDma-buf Objects:\nsize\tflags\tmode\tcount\texp_name\tino\tname\n\
            00262144\t00000002\t00080007\t00000003\tdrm_gem_shmem\t00000012\t<none>\n\
            \tAttached Devices:\n\textmem-vgpu\n\tvgem\nTotal 2 devices attached\n\n\
            00262144\t00000002\t00080007\t00000002\tudmabuf\t00000013\t<none>\n\
            \tAttached Devices:\n\textmem-vgpu\nTotal 1 devices attached\n";
        assert_eq!(count_attachments(bufinfo, "extmem-vgpu"), 2);
        assert_eq!(count_attachments(bufinfo, "vgem"), 1);
        assert_eq!(count_attachments(bufinfo, "extmem"), 0);
    }

    const COUNTERS: &str = "live_objects 0\njobs 0\ndma_coherent 0\ndma_max_seg_size 4294967295\n\
        last_job_sync_for_device 2\nlast_job_sync_for_device_bytes 393216\n\
        last_job_sync_for_cpu 1\nlast_job_sync_for_cpu_bytes 131072\nlast_job_sync_ns 5100\n\
        total_sync_for_device 7\ntotal_sync_for_device_bytes 900000\ntotal_sync_for_cpu 3\n\
        total_sync_for_cpu_bytes 400000\ntotal_sync_ns 90000\nuser_dma_maps 3\n";

    #[test]
    fn dma_counters_are_parsed_by_name() {
        let parsed = parse_dma_counters(COUNTERS).unwrap();
        assert!(!parsed.coherent);
        assert_eq!(parsed.max_seg_size, u64::from(u32::MAX));
        assert_eq!(
            parsed.last_job,
            SyncCounts {
                for_device: 2,
                for_device_bytes: 393_216,
                for_cpu: 1,
                for_cpu_bytes: 131_072,
            }
        );
        assert_eq!(parsed.last_job_ns, 5100);
        assert_eq!(parsed.total.for_cpu_bytes, 400_000);
        assert_eq!(parsed.total_ns, 90_000);
        assert_eq!(parsed.user_dma_maps, 3);
    }

    #[test]
    fn dma_counters_name_what_is_missing_or_wrong() {
        let without = COUNTERS.replace("last_job_sync_for_cpu 1\n", "");
        let err = parse_dma_counters(&without).unwrap_err();
        assert!(err.contains("\"last_job_sync_for_cpu\""), "{err}");
        let bad = COUNTERS.replace("dma_coherent 0", "dma_coherent 2");
        assert!(parse_dma_counters(&bad)
            .unwrap_err()
            .contains("dma_coherent 2"));
    }
}
