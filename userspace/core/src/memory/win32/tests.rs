//! The Win32 rules against an in-memory fake of a Windows backend: NT handles, names and
//! global-share tokens are plain numbers, so the tests run anywhere (and under Miri).
//! The real section objects are tested under Wine (extmem-softgpu).

use super::*;
use crate::alloc_info::tests::Link;
use crate::alloc_info::{parse, DeviceLimits, Import};
use crate::backend::{CpuAccess, GpuVm, HostImport, Op};
use crate::handle_types::DeviceCaps;
use crate::memory::Origin;
use crate::va_allocator::VaAllocator;
use alloc::collections::BTreeMap;
use core::num::NonZeroU32;
use extmem_hw::{GpuVa, HostVa};

/// One memory object of the fake.
#[derive(Debug)]
struct Object {
    size: u64,
    name: Option<Vec<u16>>,
    descriptor: usize,
}

#[derive(Debug, Default)]
struct FakeWindows {
    objects: BTreeMap<u32, Object>,
    next: u32,
    /// NT handle value → object, for handles the "application" holds.
    nt: BTreeMap<isize, u32>,
    /// (object, access, inherit) of every NT export.
    exports: Vec<(u32, u32, bool)>,
    /// Objects created in another "device".
    foreign: Vec<u32>,
}

const TOKEN_BASE: isize = 0x4000_0000;

impl FakeWindows {
    fn gem(id: u32) -> GemHandle {
        GemHandle(NonZeroU32::new(id).expect("non-zero"))
    }

    fn add(&mut self, size: u64, name: Option<Vec<u16>>, descriptor: usize) -> GemHandle {
        self.next += 1;
        self.objects.insert(
            self.next,
            Object {
                size,
                name,
                descriptor,
            },
        );
        Self::gem(self.next)
    }

    fn err(op: Op, errno: i32) -> BackendError {
        BackendError { op, errno }
    }
}

impl Backend for FakeWindows {
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError> {
        Ok(self.add(size, None, 0))
    }
    fn import_host(
        &mut self,
        _ptr: HostVa,
        _size: u64,
        _read_only: bool,
        _probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError> {
        Err(Self::err(Op::ImportHost, errno::EOPNOTSUPP))
    }
    fn import_shared(
        &mut self,
        _os: crate::os_handle::BorrowedOsHandle<'_>,
    ) -> Result<GemHandle, BackendError> {
        Err(Self::err(Op::ImportDmaBuf, errno::EOPNOTSUPP))
    }
    fn export_shared(
        &mut self,
        _handle: GemHandle,
    ) -> Result<crate::os_handle::OwnedOsHandle, BackendError> {
        Err(Self::err(Op::ExportDmaBuf, errno::EOPNOTSUPP))
    }
    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError> {
        let id = handle.0.get();
        let object = self
            .objects
            .get(&id)
            .ok_or(Self::err(Op::Info, errno::ENOENT))?;
        let origin = if self.foreign.contains(&id) {
            ObjectOrigin::Imported
        } else {
            ObjectOrigin::Native
        };
        Ok((object.size, origin))
    }
    fn close(&mut self, handle: GemHandle) {
        self.objects.remove(&handle.0.get());
    }
    fn map(&mut self, _: GemHandle, _: u64, _: CpuAccess) -> Result<HostVa, BackendError> {
        Err(Self::err(Op::Map, errno::EOPNOTSUPP))
    }
    fn unmap(&mut self, _ptr: HostVa, _size: u64) {}
    fn vm(&mut self) -> Option<&mut dyn GpuVm> {
        None
    }
    fn win32(&mut self) -> Option<&mut dyn Win32Sharing> {
        Some(self)
    }
}

impl Win32Sharing for FakeWindows {
    fn create_exportable(
        &mut self,
        size: u64,
        export: &Win32ExportInfo<'_>,
    ) -> Result<GemHandle, BackendError> {
        let name = export.name.map(<[u16]>::to_vec);
        if name.is_some() && self.objects.values().any(|o| o.name == name) {
            return Err(Self::err(Op::Create, errno::EEXIST));
        }
        Ok(self.add(size, name, export.security_descriptor as usize))
    }
    fn import_nt(&mut self, handle: RawWin32Handle) -> Result<GemHandle, BackendError> {
        let id = *self
            .nt
            .get(&handle)
            .ok_or(Self::err(Op::ImportDmaBuf, errno::EBADF))?;
        let size = self.objects[&id].size;
        let gem = self.add(size, None, 0);
        if self.foreign.contains(&id) {
            self.foreign.push(gem.0.get());
        }
        Ok(gem)
    }
    fn import_name(&mut self, name: &[u16]) -> Result<GemHandle, BackendError> {
        let size = self
            .objects
            .values()
            .find(|o| o.name.as_deref() == Some(name))
            .ok_or(Self::err(Op::ImportDmaBuf, errno::ENOENT))?
            .size;
        Ok(self.add(size, None, 0))
    }
    fn import_global(&mut self, token: RawWin32Handle) -> Result<GemHandle, BackendError> {
        let id = u32::try_from(token - TOKEN_BASE)
            .map_err(|_| Self::err(Op::ImportDmaBuf, errno::EINVAL))?;
        let size = self
            .objects
            .get(&id)
            .ok_or(Self::err(Op::ImportDmaBuf, errno::ENOENT))?
            .size;
        Ok(self.add(size, None, 0))
    }
    fn export_nt(
        &mut self,
        handle: GemHandle,
        access: u32,
        inherit: bool,
    ) -> Result<RawWin32Handle, BackendError> {
        let id = handle.0.get();
        self.exports.push((id, access, inherit));
        let value = 0x100 + 4 * self.exports.len() as isize;
        self.nt.insert(value, id);
        Ok(value)
    }
    fn export_global(&mut self, handle: GemHandle) -> Result<RawWin32Handle, BackendError> {
        Ok(TOKEN_BASE + handle.0.get() as isize)
    }
}

fn manager() -> MemoryManager<FakeWindows> {
    let limits = DeviceLimits {
        caps: DeviceCaps::WINDOWS_HANDLES,
        memory_type_count: 1,
        min_import_alignment: extmem_hw::Alignment::SIZE_4K,
        host_pointer_types: 0,
    };
    let va = VaAllocator::new(
        GpuVa::new(2 << 20),
        GpuVa::new(1 << 40),
        extmem_hw::profile::VGPU.page_sizes,
    );
    MemoryManager::new(FakeWindows::default(), limits, va, 0)
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain([0]).collect()
}

fn exported(m: &mut MemoryManager<FakeWindows>, types: Types) -> DeviceMemory {
    let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(types);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(8192)
        .link(&mut export);
    // SAFETY: a chain of live structures built above.
    let req = unsafe { parse(&info) }.expect("parse");
    m.allocate(&req).expect("allocate")
}

fn import(
    m: &mut MemoryManager<FakeWindows>,
    handle_type: Types,
    handle: isize,
    name: Option<&[u16]>,
    size: u64,
) -> Result<DeviceMemory, Error> {
    let req = AllocRequest {
        size,
        import: Import::Win32 {
            handle_type,
            handle,
            name: name.map_or(core::ptr::null(), <[u16]>::as_ptr),
        },
        ..AllocRequest::default()
    };
    m.allocate(&req)
}

#[test]
fn nt_handles_are_the_applications_once_per_memory_and_import_back() {
    let mut m = manager();
    let mut memory = exported(&mut m, Types::OPAQUE_WIN32);
    let nt = m
        .get_win32_handle(&mut memory, Types::OPAQUE_WIN32)
        .expect("export");
    // Default access (0) and not inheritable without VkExportMemoryWin32HandleInfoKHR.
    assert_eq!(m.backend.exports, [(memory.handle.0.get(), 0, false)]);
    assert_eq!(
        m.get_win32_handle(&mut memory, Types::OPAQUE_WIN32),
        Err(Vuid::GetWin32Once.into())
    );
    let imported = import(&mut m, Types::OPAQUE_WIN32, nt, None, 8192).expect("import");
    assert_eq!(imported.origin(), Origin::Win32(Types::OPAQUE_WIN32));
    // Importing does not take the handle: the application's NT handle still names it.
    assert!(m.backend.nt.contains_key(&nt));
    assert!(matches!(
        import(&mut m, Types::OPAQUE_WIN32, nt, None, 3 * 4096),
        Err(Error::InvalidHandle(HandleError::TooSmall {
            have: 8192,
            ..
        }))
    ));
    assert_eq!(
        import(&mut m, Types::OPAQUE_WIN32, 0x7777, None, 4096).map(|_| ()),
        Err(Error::InvalidHandle(HandleError::Win32Refused {
            handle_type: Types::OPAQUE_WIN32.as_raw(),
            errno: errno::EBADF
        }))
    );
    let live = m.live_handles();
    m.free(imported);
    m.free(memory);
    assert_eq!(m.live_handles(), live - 2);
    assert_eq!(m.live_handles(), 0, "failed imports left nothing behind");
}

#[test]
fn kmt_tokens_are_stable_and_name_the_memory() {
    let mut m = manager();
    let mut memory = exported(&mut m, Types::OPAQUE_WIN32_KMT);
    let token = m
        .get_win32_handle(&mut memory, Types::OPAQUE_WIN32_KMT)
        .expect("token");
    assert_eq!(
        m.get_win32_handle(&mut memory, Types::OPAQUE_WIN32_KMT),
        Ok(token),
        "a global-share token is not an NT handle: asking again is allowed"
    );
    let imported = import(&mut m, Types::OPAQUE_WIN32_KMT, token, None, 8192).expect("import");
    m.free(imported);
    // Freed memory's token no longer names anything.
    m.free(memory);
    assert!(matches!(
        import(&mut m, Types::OPAQUE_WIN32_KMT, token, None, 8192),
        Err(Error::InvalidHandle(HandleError::Win32Refused {
            errno: errno::ENOENT,
            ..
        }))
    ));
}

#[test]
fn export_info_names_the_object_and_sets_access_and_inheritance() {
    let mut m = manager();
    let name = wide("Local\\extmem-test");
    let descriptor = [0u8; 20];
    let attributes = SecurityAttributes {
        length: 24,
        security_descriptor: descriptor.as_ptr().cast_mut().cast(),
        inherit_handle: 1,
    };
    let mut win32 = vk::ExportMemoryWin32HandleInfoKHR {
        p_attributes: (&raw const attributes).cast(),
        dw_access: 0x4,
        name: name.as_ptr(),
        ..Default::default()
    };
    let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(Types::OPAQUE_WIN32);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut export)
        .link(&mut win32);
    // SAFETY: a chain of live structures built above.
    let req = unsafe { parse(&info) }.expect("parse");
    let mut memory = m.allocate(&req).expect("allocate");
    let object = &m.backend.objects[&memory.handle.0.get()];
    assert_eq!(object.name.as_deref(), Some(&name[..name.len() - 1]));
    assert_eq!(object.descriptor, descriptor.as_ptr() as usize);
    m.get_win32_handle(&mut memory, Types::OPAQUE_WIN32)
        .expect("export");
    assert_eq!(m.backend.exports, [(memory.handle.0.get(), 0x4, true)]);
    // The name imports; a second object cannot take it; an unknown name is refused.
    let by_name = import(&mut m, Types::OPAQUE_WIN32, 0, Some(&name), 4096).expect("by name");
    assert!(matches!(
        m.allocate(&req),
        Err(Error::InvalidHandle(HandleError::Win32Refused {
            errno: errno::EEXIST,
            ..
        }))
    ));
    let other = wide("Local\\nothing");
    assert!(matches!(
        import(&mut m, Types::OPAQUE_WIN32, 0, Some(&other), 4096),
        Err(Error::InvalidHandle(HandleError::Win32Refused {
            errno: errno::ENOENT,
            ..
        }))
    ));
    let empty = wide("");
    assert_eq!(
        import(&mut m, Types::OPAQUE_WIN32, 0, Some(&empty), 4096).map(|_| ()),
        Err(Error::InvalidHandle(HandleError::Win32Name))
    );
    m.free(by_name);
    m.free(memory);
    assert_eq!(m.live_handles(), 0);
}

#[test]
fn export_rules_name_their_vuids() {
    let mut m = manager();
    let mut memory = exported(&mut m, Types::OPAQUE_WIN32);
    assert_eq!(
        m.get_win32_handle(&mut memory, Types::OPAQUE_WIN32_KMT),
        Err(Vuid::GetWin32Exported.into())
    );
    assert_eq!(
        m.get_win32_handle(&mut memory, Types::OPAQUE_FD),
        Err(Vuid::GetWin32HandleType.into())
    );
    assert_eq!(
        m.get_win32_handle(&mut memory, Types::OPAQUE_WIN32 | Types::OPAQUE_WIN32_KMT),
        Err(Vuid::GetWin32HandleType.into())
    );
    assert_eq!(
        m.win32_handle_properties(Types::OPAQUE_WIN32),
        Err(Vuid::Win32PropsNotOpaque.into())
    );
    assert_eq!(
        m.win32_handle_properties(Types::OPAQUE_WIN32_KMT),
        Err(Vuid::Win32PropsNotOpaque.into())
    );
    assert!(matches!(
        m.win32_handle_properties(Types::D3D12_HEAP),
        Err(Error::InvalidHandle(HandleError::Unsupported { .. }))
    ));
    m.free(memory);
}

#[test]
fn memory_of_another_device_is_refused_and_released() {
    let mut m = manager();
    let mut memory = exported(&mut m, Types::OPAQUE_WIN32);
    let nt = m
        .get_win32_handle(&mut memory, Types::OPAQUE_WIN32)
        .expect("export");
    // Pretend the object behind the handle belongs to another device.
    let id = memory.handle.0.get();
    m.backend.foreign.push(id);
    assert_eq!(
        import(&mut m, Types::OPAQUE_WIN32, nt, None, 4096).map(|_| ()),
        Err(Vuid::Win32SameDevice.into())
    );
    assert_eq!(m.backend.objects.len(), 1, "the refused import was closed");
    m.free(memory);
}

#[test]
fn nv_exports_import_back_and_an_empty_nv_import_is_ignored() {
    type Nv = vk::ExternalMemoryHandleTypeFlagsNV;
    let mut m = manager();
    let mut export = vk::ExportMemoryAllocateInfoNV {
        handle_types: Nv::OPAQUE_WIN32 | Nv::OPAQUE_WIN32_KMT,
        ..Default::default()
    };
    let mut win32 = vk::ExportMemoryWin32HandleInfoNV {
        dw_access: 0x2,
        ..Default::default()
    };
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut export)
        .link(&mut win32);
    // SAFETY: a chain of live structures built above.
    let req = unsafe { parse(&info) }.expect("parse");
    let memory = m.allocate(&req).expect("allocate");
    let nt = m
        .get_win32_handle_nv(&memory, Nv::OPAQUE_WIN32)
        .expect("NT handle");
    assert_eq!(m.backend.exports, [(memory.handle.0.get(), 0x2, false)]);
    let token = m
        .get_win32_handle_nv(&memory, Nv::OPAQUE_WIN32_KMT)
        .expect("KMT token");
    assert_eq!(
        m.get_win32_handle_nv(&memory, Nv::D3D11_IMAGE),
        Err(Vuid::NvGetHandleExported.into())
    );
    assert_eq!(
        m.get_win32_handle_nv(&memory, Nv::empty()),
        Err(Vuid::NvGetHandleExported.into())
    );
    for (handle_type, handle) in [(Nv::OPAQUE_WIN32, nt), (Nv::OPAQUE_WIN32_KMT, token)] {
        let req = AllocRequest {
            size: 4096,
            import: Import::Win32Nv {
                handle_type,
                handle,
            },
            ..AllocRequest::default()
        };
        let imported = m.allocate(&req).expect("NV import");
        m.free(imported);
    }
    // handleType 0: the structure is ignored and this is a plain allocation.
    let mut empty = vk::ImportMemoryWin32HandleInfoNV::default();
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut empty);
    // SAFETY: as above.
    let req = unsafe { parse(&info) }.expect("parse");
    assert_eq!(req.import, Import::None);
    m.free(memory);
    assert_eq!(m.live_handles(), 0);
}
