//! extmem-softgpu: the software device.
//!
//! There is no extmem-vgpu kernel module on Windows, nor on a Linux machine that has not
//! loaded it. This crate is the device model without the kernel: the same `no_std` code the
//! module links, [`extmem_kcore`]'s GPU VM, argument checks and copy engine over
//! [`extmem_hw`]'s page tables, hosted in the process with a userspace platform
//! ([`phys_memory`]). It implements `extmem`'s [`Backend`], so the memory manager and the
//! ICD run on it unchanged; it is a software device, as lavapipe is a software rasteriser.
//!
//! What it does as the kernel device does: GPU page tables in the AArch64 stage-1 format
//! written by kcore, every copy-engine access translated through them, faults reported
//! with the faulting VA, the same checks on every request (and so the same errnos).
//!
//! What it does differently, and what it therefore does **not** prove:
//! - **Host pointers are not pinned.** An import checks the range as the kernel's
//!   `pin_user_pages(FOLL_LONGTERM)` would (mapped, readable, writable if the import is,
//!   no shared mapping of a written-back file for a writable one) and records the
//!   application's addresses; the copy engine reaches them through
//!   [`host_access`], which turns a page the application unmapped into a GPU memory fault
//!   instead of a crash. Kernel pinning (`pin_user_pages`, `RLIMIT_MEMLOCK`) is proved
//!   only by the kernel device in the QEMU guest.
//! - **Device memory is a sealed memfd** on Linux ([`shared_memory`]), exported and
//!   imported as an opaque fd between processes. A memfd is not a dma-buf, so `DMA_BUF` is
//!   neither exported nor imported, and host-mapped foreign memory (which resolves a CPU
//!   mapping back to its dma-buf) is not supported: [`CAPS`] says so.
//! - **On Windows device memory is a pagefile-backed section** with a trailer page that
//!   marks it as this driver's, shared as NT handles, by name and by global-share (KMT)
//!   tokens (`Win32Sharing`, reached through `Backend::win32`). A KMT token is this
//!   driver's own construction (a named token section recording the exporter's process and
//!   section handle), not a D3D kernel-mode token: only this driver understands it.
//!
//! Why a crate of its own: `userspace/core` is `no_std` and reaches the kernel side only
//! through ioctls; hosting kcore is this crate's business, and the ICD wires it in.
//!
//! The OS-specific parts are two modules with one interface and a file per OS, so that
//! Windows is a second implementation of each, not a rewrite: [`shared_memory`] (memfds;
//! on Windows, pagefile-backed section objects from `CreateFileMappingW`, exported as NT
//! handles with `DuplicateHandle`) and [`host_access`] (`process_vm_readv`/`writev`; on
//! Windows, `ReadProcessMemory` / `WriteProcessMemory` on the own process, which also
//! fail instead of faulting). [`phys_memory`] (over its own [`phys_allocator`]) and the
//! [`SoftGpu`] backend are OS-neutral; the Windows-only sharing is `win32` (the
//! `Win32Sharing` implementation) and `win32_error` (Win32 errors as errno).
//!
//! Every failure is an [`Error`] that says what failed with which values (handle, host
//! range, size, the OS call and its error); [`error`] maps each to the memory manager's
//! `BackendError`, the operation and the errno the kernel device would have returned.

pub mod error;
pub mod host_access;
pub mod phys_allocator;
pub mod phys_memory;
pub mod shared_memory;
pub mod sync_table;
#[cfg(windows)]
mod win32;
#[cfg(windows)]
pub mod win32_error;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use extmem::backend::{
    Backend, BackendError, CopyEngine, CpuAccess, GemHandle, GpuVm, HostImport, ObjectOrigin, Op,
};
use extmem::device_params::{DeviceParams, ParamError, RawParams};
use extmem::exec::{self, Command, ExecError, Fault};
use extmem::handle_types::{DeviceCaps, Platform};
use extmem::host_range;
use extmem::os_handle::{BorrowedOsHandle, OwnedOsHandle};
use extmem::sync::{SyncPoint, Syncobjs};
use extmem_hw::{GpuVa, HostVa};
use extmem_kcore::args::{check_gem_create, check_gem_userptr};
use extmem_kcore::params::{answer, ParamAnswer};
use extmem_kcore::{copy_engine, BoundObject, CpuPage, CpuPageError, ObjectId, Vm, PROFILE};
use extmem_uapi as uapi;

pub use crate::error::{Error, OsError};
use crate::phys_memory::{Backing, PhysMemory};
use crate::shared_memory::{MemoryError, SharedMemory};
use crate::sync_table::SyncTable;

/// `deviceUUID` of the software device: not the kernel device's, so an opaque fd of one
/// is never taken for the other's.
pub const DEVICE_UUID: [u8; 16] = *b"extmem-softgpu\0\x01";
/// `driverUUID` of the software device's driver.
pub const DRIVER_UUID: [u8; 16] = *b"extmem-softgpu\0\x02";

/// What the software device can do with external memory: opaque fds (memfds) and host
/// allocations; no dma-buf, no host-mapped foreign memory (see the crate docs).
#[cfg(not(windows))]
pub const CAPS: DeviceCaps = DeviceCaps {
    platform: Platform::Linux,
    opaque_fd: true,
    dma_buf: false,
    host_allocation: true,
    host_mapped_foreign: false,
    win32: false,
};

/// What the software device can do with external memory on Windows: NT handles and
/// global-share tokens of its sections, and host allocations.
#[cfg(windows)]
pub const CAPS: DeviceCaps = DeviceCaps {
    platform: Platform::Windows,
    opaque_fd: false,
    dma_buf: false,
    host_allocation: true,
    host_mapped_foreign: false,
    win32: true,
};

/// One software device, as one open file of the kernel device: its own GPU VM and its
/// own GEM handle namespace.
pub struct SoftGpu {
    /// The host's page, in which imports and allocations are made, as the kernel device's
    /// are in its kernel's.
    cpu_page: CpuPage,
    memory: PhysMemory,
    vm: Box<Vm<PhysMemory>>,
    handles: BTreeMap<NonZeroU32, ObjectId>,
    next_handle: u32,
    /// Fences and semaphores, shared with the front end's waits.
    syncs: Arc<SyncTable>,
}

impl fmt::Debug for SoftGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftGpu")
            .field("handles", &self.handles.len())
            .field("objects", &self.memory.objects())
            .field("bindings", &self.vm.bindings().len())
            .field("table_pages", &self.vm.table_pages())
            .finish()
    }
}

/// The host's CPU page size, as the kernel device takes its kernel's `PAGE_SHIFT`.
fn host_cpu_page() -> Result<CpuPage, CpuPageError> {
    #[cfg(not(windows))]
    let bytes = rustix::param::page_size();
    // Windows pages are 4 KiB on every architecture it runs on (the 64 KiB it also
    // speaks of is the allocation granularity, not a page).
    #[cfg(windows)]
    let bytes: usize = 4096;
    CpuPage::from_shift(bytes.trailing_zeros())
}

/// The failure of `op` on device memory.
fn memory_failed(op: Op) -> impl Fn(MemoryError) -> Error {
    move |error| Error::Memory { op, error }
}

fn uuid_halves(uuid: [u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&uuid[..8]);
    hi.copy_from_slice(&uuid[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

impl SoftGpu {
    /// A device with an empty VM (one root table page).
    pub fn new() -> Result<Self, BackendError> {
        let cpu_page = host_cpu_page().map_err(Error::CpuPage)?;
        let memory = PhysMemory::new(PROFILE);
        let mut vm = Box::new(Vm::new());
        vm.init(memory.clone()).map_err(Error::Init)?;
        Ok(Self {
            cpu_page,
            memory,
            vm,
            handles: BTreeMap::new(),
            next_handle: 1,
            syncs: Arc::default(),
        })
    }

    /// `GET_PARAM`, answered as the kernel device answers it: kcore for what the core
    /// owns, this device for the UUIDs and counters (no pins, no dma-buf attachments).
    pub fn param(&self, param: uapi::Param) -> Result<u64, BackendError> {
        let core = answer(param, PROFILE, self.cpu_page).map_err(|error| Error::Args {
            op: Op::Info,
            error,
        })?;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Ok(match (core, param) {
            (ParamAnswer::Core(value), _) => value,
            (ParamAnswer::Platform, uapi::Param::DEVICE_UUID_LO) => uuid_halves(DEVICE_UUID)[0],
            (ParamAnswer::Platform, uapi::Param::DEVICE_UUID_HI) => uuid_halves(DEVICE_UUID)[1],
            (ParamAnswer::Platform, uapi::Param::DRIVER_UUID_LO) => uuid_halves(DRIVER_UUID)[0],
            (ParamAnswer::Platform, uapi::Param::DRIVER_UUID_HI) => uuid_halves(DRIVER_UUID)[1],
            (ParamAnswer::Platform, uapi::Param::LIVE_OBJECTS) => count(self.memory.objects()),
            (ParamAnswer::Platform, uapi::Param::PT_PAGES) => count(self.vm.table_pages()),
            (ParamAnswer::Platform, uapi::Param::BINDINGS) => count(self.vm.bindings().len()),
            (ParamAnswer::Platform, uapi::Param::JOB_FAULTS) => self.syncs.faults(),
            // Nothing is pinned and nothing attached.
            (ParamAnswer::Platform, _) => 0,
        })
    }

    /// `VM_QUERY`: (leaf size, read-only) of the mapping at `va`, `None` if unmapped.
    pub fn query(&self, va: GpuVa) -> Result<Option<(u64, bool)>, BackendError> {
        let mut args = uapi::VmQuery {
            va: va.get(),
            ..Default::default()
        };
        self.vm.query(&mut args, false).map_err(Error::Query)?;
        Ok((args.flags & uapi::QUERY_MAPPED != 0)
            .then_some((args.page_size, args.flags & uapi::QUERY_READ_ONLY != 0)))
    }

    /// Live objects (held by a handle or a binding).
    pub fn live_objects(&self) -> usize {
        self.memory.objects()
    }

    /// Page-table pages the VM holds, the root included.
    pub fn table_pages(&self) -> usize {
        self.memory.table_pages()
    }

    fn new_handle(&mut self, id: ObjectId, op: Op) -> Result<GemHandle, Error> {
        let Some(raw) = NonZeroU32::new(self.next_handle) else {
            // The counter wrapped: the object gets no handle and goes.
            self.memory.close_handle(id);
            return Err(Error::HandlesExhausted { op });
        };
        self.next_handle = self.next_handle.wrapping_add(1);
        self.handles.insert(raw, id);
        Ok(GemHandle(raw))
    }

    fn object(&self, handle: GemHandle, op: Op) -> Result<ObjectId, Error> {
        self.handles
            .get(&handle.0)
            .copied()
            .ok_or(Error::NoSuchHandle { op, handle })
    }

    /// New device memory of `size` bytes, checked as `GEM_CREATE` is, made by `make`.
    fn create_with(
        &mut self,
        size: u64,
        make: impl FnOnce() -> Result<SharedMemory, MemoryError>,
    ) -> Result<GemHandle, Error> {
        let op = Op::Create;
        let args = uapi::GemCreate {
            size,
            ..Default::default()
        };
        check_gem_create(&args, PROFILE, self.cpu_page)
            .map_err(|error| Error::Args { op, error })?;
        let memory = make().map_err(memory_failed(op))?;
        let id = self
            .memory
            .add_object(Backing::Device(memory), size)
            .map_err(|error| Error::PhysSpace { op, error })?;
        self.new_handle(id, op)
    }

    /// Gives imported device memory a handle: the handle that already names the same
    /// memory (its [`shared_memory::Identity`]), or a new one.
    fn adopt(&mut self, memory: SharedMemory, op: Op) -> Result<GemHandle, Error> {
        if let Some(id) = self.memory.find_device_memory(memory.identity()) {
            if let Some((handle, _)) = self.handles.iter().find(|(_, o)| **o == id) {
                return Ok(GemHandle(*handle));
            }
        }
        let size = memory.size();
        let id = self
            .memory
            .add_object(Backing::Device(memory), size)
            .map_err(|error| Error::PhysSpace { op, error })?;
        self.new_handle(id, op)
    }

    /// Runs `f` on the device memory behind `handle`; a host import has none.
    fn device_memory<R>(
        &self,
        handle: GemHandle,
        op: Op,
        f: impl FnOnce(&SharedMemory) -> Result<R, MemoryError>,
    ) -> Result<R, Error> {
        let id = self.object(handle, op)?;
        self.memory
            .with_object(id, |o| match &o.backing {
                Backing::Device(memory) => f(memory).map_err(memory_failed(op)),
                Backing::Host { .. } => Err(Error::NotDeviceMemory { op, handle }),
            })
            .unwrap_or(Err(Error::NoSuchHandle { op, handle }))
    }
}

impl Drop for SoftGpu {
    fn drop(&mut self) {
        self.vm.fini();
        for (_, id) in std::mem::take(&mut self.handles) {
            self.memory.close_handle(id);
        }
    }
}

impl Backend for SoftGpu {
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError> {
        Ok(self.create_with(size, || SharedMemory::create(size))?)
    }

    /// Checks the range as `GEM_USERPTR` does: its arguments, and every page mapped,
    /// readable and, for a writable import, writable and not a shared mapping of a file
    /// that is written back ([`host_range::check_importable`]); does not pin (see the
    /// crate docs). Reported as [`HostImport::Pinned`], the only kind of
    /// plain host import the trait knows.
    fn import_host(
        &mut self,
        ptr: HostVa,
        size: u64,
        read_only: bool,
        probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError> {
        let args = uapi::GemUserptr {
            ptr: ptr.get(),
            size,
            flags: if read_only { uapi::FLAG_READ_ONLY } else { 0 },
            ..Default::default()
        };
        let op = Op::ImportHost;
        check_gem_userptr(&args, PROFILE, self.cpu_page)
            .map_err(|error| Error::Args { op, error })?;
        host_range::check_importable(ptr, size, !read_only).map_err(|why| {
            Error::HostRangeRefused {
                ptr,
                size,
                read_only,
                why,
            }
        })?;
        if probe {
            return Ok(None);
        }
        let backing = Backing::Host {
            addr: ptr,
            read_only,
        };
        let id = self
            .memory
            .add_object(backing, size)
            .map_err(|error| Error::PhysSpace { op, error })?;
        Ok(Some((
            self.new_handle(id, Op::ImportHost)?,
            HostImport::Pinned,
        )))
    }

    /// Imports a memfd (on Windows, a section handle) of this driver; anything else is
    /// `EINVAL`. The same memory imported again while a handle names it gets that handle,
    /// as PRIME import does.
    fn import_shared(&mut self, os: BorrowedOsHandle<'_>) -> Result<GemHandle, BackendError> {
        let memory = SharedMemory::import(os).map_err(memory_failed(Op::ImportDmaBuf))?;
        Ok(self.adopt(memory, Op::ImportDmaBuf)?)
    }

    /// A new close-on-exec fd of the object's memfd (an opaque fd, not a dma-buf); on
    /// Windows a new section handle (not inheritable).
    fn export_shared(&mut self, handle: GemHandle) -> Result<OwnedOsHandle, BackendError> {
        Ok(self.device_memory(handle, Op::ExportDmaBuf, SharedMemory::export)?)
    }

    /// Device memory, created here or imported from another process, is native: it is
    /// this driver's memory either way.
    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError> {
        let op = Op::Info;
        let id = self.object(handle, op)?;
        Ok(self
            .memory
            .with_object(id, |o| match o.backing {
                Backing::Device(_) => (o.size, ObjectOrigin::Native),
                Backing::Host { .. } => (o.size, ObjectOrigin::Userptr),
            })
            .ok_or(Error::NoSuchHandle { op, handle })?)
    }

    fn close(&mut self, handle: GemHandle) {
        if let Some(id) = self.handles.remove(&handle.0) {
            self.memory.close_handle(id);
        }
    }

    /// Device memory is always writable, so either access gets a read-write mapping.
    fn map(
        &mut self,
        handle: GemHandle,
        size: u64,
        _access: CpuAccess,
    ) -> Result<HostVa, BackendError> {
        let ptr = self.device_memory(handle, Op::Map, |memory| memory.map(size))?;
        Ok(HostVa::new(ptr.as_ptr() as usize as u64))
    }

    fn unmap(&mut self, ptr: HostVa, size: u64) {
        shared_memory::unmap(ptr, size);
    }

    fn vm(&mut self) -> Option<&mut dyn GpuVm> {
        Some(self)
    }

    #[cfg(windows)]
    fn win32(&mut self) -> Option<&mut dyn extmem::backend::Win32Sharing> {
        Some(self)
    }

    fn engine(&mut self) -> Option<&mut dyn CopyEngine> {
        Some(self)
    }

    fn syncobjs(&self) -> Option<Arc<dyn Syncobjs>> {
        Some(self.syncs.clone())
    }

    /// `GET_PARAM`'s answers ([`SoftGpu::param`]), checked as the kernel device's are.
    fn device_params(&self) -> Result<DeviceParams, ParamError> {
        DeviceParams::from_raw(RawParams::read(|p| self.param(p))?)
    }
}

/// Commands in the kernel's encoding, run by kcore's copy engine as the module runs them.
impl CopyEngine for SoftGpu {
    fn exec(&mut self, cmds: &[Command]) -> Result<(), ExecError> {
        let (encoded, mut args) = exec::encode(cmds)?;
        match self.vm.exec(&mut args, &encoded) {
            Ok(()) => Ok(()),
            Err(copy_engine::ExecError::Fault { cmd, va, kind }) => Err(ExecError::Fault(Fault {
                cmd,
                va,
                kind: kind.into(),
            })),
            Err(e) => Err(ExecError::Kernel(Error::Exec(e).into())),
        }
    }

    /// Runs the commands at once (nothing can be waited for that has not run), then
    /// signals. A fault is reported as the kernel reports a queued job's: counted in
    /// [`Syncobjs::job_faults`] before the signal (which still happens, so that no waiter
    /// hangs), not returned here. A refusal of the commands themselves is returned, as
    /// `EXEC` refuses them before queueing.
    fn submit(
        &mut self,
        cmds: &[Command],
        waits: &[SyncPoint],
        signals: &[SyncPoint],
    ) -> Result<(), ExecError> {
        self.syncs
            .check_signaled(waits)
            .map_err(ExecError::Kernel)?;
        self.syncs.check_known(signals).map_err(ExecError::Kernel)?;
        let ran = match self.exec(cmds) {
            Err(ExecError::Fault(_)) => {
                self.syncs.count_fault();
                Ok(())
            }
            other => other,
        };
        self.syncs.signal_all(signals).map_err(ExecError::Kernel)?;
        ran
    }
}

impl GpuVm for SoftGpu {
    fn bind(
        &mut self,
        handle: GemHandle,
        va: GpuVa,
        offset: u64,
        size: u64,
        read_only: bool,
    ) -> Result<(), BackendError> {
        let op = Op::Bind;
        let id = self.object(handle, op)?;
        let object = self
            .memory
            .with_object(id, |o| BoundObject {
                id,
                size: o.size,
                read_only: o.read_only(),
            })
            .ok_or(Error::NoSuchHandle { op, handle })?;
        let args = uapi::VmBind {
            op: uapi::BindOp::MAP,
            flags: if read_only { uapi::FLAG_READ_ONLY } else { 0 },
            handle: handle.0.get(),
            va: va.get(),
            offset,
            size,
            ..Default::default()
        };
        self.vm
            .bind(&args, object)
            .map_err(|error| Error::Bind { op, error })?;
        self.memory.note_bound(id);
        Ok(())
    }

    fn unbind(&mut self, va: GpuVa, size: u64) -> Result<(), BackendError> {
        let args = uapi::VmBind {
            op: uapi::BindOp::UNMAP,
            va: va.get(),
            size,
            ..Default::default()
        };
        let none = BoundObject {
            id: ObjectId(0),
            size: 0,
            read_only: false,
        };
        Ok(self.vm.bind(&args, none).map_err(|error| Error::Bind {
            op: Op::Unbind,
            error,
        })?)
    }
}
