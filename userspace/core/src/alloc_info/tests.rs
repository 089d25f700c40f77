use super::*;
use ash::vk::Handle;

const LIMITS: DeviceLimits = DeviceLimits {
    caps: DeviceCaps::LINUX_FULL,
    memory_type_count: 3,
    min_import_alignment: Alignment::SIZE_4K,
    host_pointer_types: 0b110,
};

/// ash's `push_next` without its Stacked Borrows violation: ash 0.38 casts `next` to a
/// raw pointer and then reborrows `next` mutably to walk its chain, which invalidates that
/// pointer, so the parser's read through it is undefined behaviour under Miri. Here one
/// raw pointer does both the write and the link. `next` must have no chain of its own.
pub(crate) trait Link<'a> {
    fn link<T: vk::ExtendsMemoryAllocateInfo>(self, next: &'a mut T) -> Self;
}

impl<'a> Link<'a> for vk::MemoryAllocateInfo<'a> {
    fn link<T: vk::ExtendsMemoryAllocateInfo>(mut self, next: &'a mut T) -> Self {
        let next: *mut T = next;
        let base = next.cast::<vk::BaseOutStructure<'_>>();
        // SAFETY: `next` is a live Vulkan structure (it extends VkMemoryAllocateInfo), so it
        // starts with sType and pNext; we hold it exclusively for 'a.
        unsafe { (*base).p_next = self.p_next.cast_mut().cast() };
        self.p_next = next.cast_const().cast();
        self
    }
}

fn parsed(info: &vk::MemoryAllocateInfo<'_>) -> Result<AllocRequest, Error> {
    // SAFETY: every chain in these tests is built with ash's typed push_next.
    unsafe { parse(info) }
}

fn check(info: &vk::MemoryAllocateInfo<'_>) -> Result<AllocRequest, Error> {
    let req = parsed(info)?;
    req.validate(&LIMITS)?;
    Ok(req)
}

fn host(handle_type: Types, ptr: usize) -> vk::ImportMemoryHostPointerInfoEXT<'static> {
    vk::ImportMemoryHostPointerInfoEXT::default()
        .handle_type(handle_type)
        .host_pointer(ptr as *mut core::ffi::c_void)
}

#[test]
fn a_plain_allocation_parses_to_no_import() {
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(0);
    let req = check(&info).expect("valid");
    assert_eq!(req.import, Import::None);
    assert_eq!((req.size, req.memory_type_index), (4096, 0));
}

#[test]
fn host_pointer_import_parses_and_validates() {
    let mut h = host(Types::HOST_ALLOCATION_EXT, 0x7f00_0000_0000);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(3 * 4096)
        .memory_type_index(1)
        .link(&mut h);
    let req = check(&info).expect("valid");
    assert_eq!(
        req.import,
        Import::HostPointer {
            handle_type: Types::HOST_ALLOCATION_EXT,
            ptr: HostVa::new(0x7f00_0000_0000)
        }
    );
}

fn host_error(handle_type: Types, ptr: usize, size: u64, type_index: u32) -> Error {
    let mut h = host(handle_type, ptr);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(size)
        .memory_type_index(type_index)
        .link(&mut h);
    check(&info).expect_err("invalid")
}

#[test]
fn host_pointer_rules_each_name_their_vuid() {
    let p = 0x10_0000;
    assert_eq!(
        host_error(Types::OPAQUE_FD, p, 4096, 1),
        Vuid::HostHandleType.into()
    );
    assert_eq!(
        host_error(Types::HOST_ALLOCATION_EXT, p + 8, 4096, 1),
        Vuid::HostPointerAligned.into()
    );
    assert_eq!(
        host_error(Types::HOST_ALLOCATION_EXT, p, 4095, 1),
        Vuid::HostSizeAligned.into()
    );
    assert_eq!(
        host_error(Types::HOST_ALLOCATION_EXT, p, 4096, 0),
        Vuid::HostMemoryType.into()
    );
    assert_eq!(
        host_error(Types::HOST_ALLOCATION_EXT, p, 4096, 7),
        Vuid::MemoryTypeIndex.into()
    );
    assert!(matches!(
        host_error(Types::HOST_ALLOCATION_EXT, p, 0, 1),
        Error::InvalidHandle(HandleError::HostRangeRefused { size: 0, .. })
    ));
    assert!(matches!(
        host_error(Types::HOST_ALLOCATION_EXT, usize::MAX & !0xfff, 0x2000, 1),
        Error::InvalidHandle(HandleError::HostRangeRefused {
            errno: EOVERFLOW,
            ..
        })
    ));
    let no_foreign = DeviceLimits {
        caps: DeviceCaps {
            host_mapped_foreign: false,
            ..LIMITS.caps
        },
        ..LIMITS
    };
    let mut h = host(Types::HOST_MAPPED_FOREIGN_MEMORY_EXT, p);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(1)
        .link(&mut h);
    assert_eq!(
        parsed(&info).and_then(|r| r.validate(&no_foreign)),
        Err(Vuid::HostHandleTypeSupported.into())
    );
}

#[test]
fn host_pointer_cannot_be_dedicated_or_capture_replayed() {
    let mut h = host(Types::HOST_ALLOCATION_EXT, 0x10_0000);
    let mut d = vk::MemoryDedicatedAllocateInfo::default().buffer(vk::Buffer::from_raw(5));
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(1)
        .link(&mut h)
        .link(&mut d);
    assert_eq!(check(&info), Err(Vuid::HostNotDedicated.into()));

    let mut h = host(Types::HOST_ALLOCATION_EXT, 0x10_0000);
    let mut d =
        vk::DedicatedAllocationMemoryAllocateInfoNV::default().image(vk::Image::from_raw(9));
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(1)
        .link(&mut h)
        .link(&mut d);
    assert_eq!(check(&info), Err(Vuid::HostNotDedicatedNv.into()));

    // A dedicated struct naming nothing is allowed.
    let mut h = host(Types::HOST_ALLOCATION_EXT, 0x10_0000);
    let mut d = vk::MemoryDedicatedAllocateInfo::default();
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(1)
        .link(&mut h)
        .link(&mut d);
    assert!(check(&info).is_ok());

    let mut h = host(Types::HOST_ALLOCATION_EXT, 0x10_0000);
    let mut c =
        vk::MemoryOpaqueCaptureAddressAllocateInfo::default().opaque_capture_address(0x1000);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(1)
        .link(&mut h)
        .link(&mut c);
    assert_eq!(check(&info), Err(Vuid::HostNoCaptureAddress.into()));

    let mut f = vk::ImportMemoryFdInfoKHR::default()
        .handle_type(Types::DMA_BUF_EXT)
        .fd(3);
    let mut c =
        vk::MemoryOpaqueCaptureAddressAllocateInfo::default().opaque_capture_address(0x1000);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut f)
        .link(&mut c);
    assert_eq!(check(&info), Err(Vuid::ImportNoCaptureAddress.into()));
}

#[test]
fn host_imports_cannot_be_exported_fd_imports_can() {
    let mut h = host(Types::HOST_ALLOCATION_EXT, 0x10_0000);
    let mut e = vk::ExportMemoryAllocateInfo::default().handle_types(Types::DMA_BUF_EXT);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(1)
        .link(&mut h)
        .link(&mut e);
    assert_eq!(check(&info), Err(Vuid::ExportTypesSupported.into()));
    let mut f = vk::ImportMemoryFdInfoKHR::default()
        .handle_type(Types::DMA_BUF_EXT)
        .fd(3);
    let mut e =
        vk::ExportMemoryAllocateInfo::default().handle_types(Types::OPAQUE_FD | Types::DMA_BUF_EXT);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut f)
        .link(&mut e);
    assert!(check(&info).is_ok());
}

#[test]
fn two_imports_are_rejected() {
    let mut h = host(Types::HOST_ALLOCATION_EXT, 0x10_0000);
    let mut f = vk::ImportMemoryFdInfoKHR::default()
        .handle_type(Types::DMA_BUF_EXT)
        .fd(3);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .memory_type_index(1)
        .link(&mut h)
        .link(&mut f);
    assert_eq!(parsed(&info), Err(Vuid::OneImport.into()));
}

#[test]
fn fd_import_rules() {
    let fd = |t: Types| {
        let mut f = vk::ImportMemoryFdInfoKHR::default().handle_type(t).fd(5);
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(4096)
            .link(&mut f);
        check(&info)
    };
    assert_eq!(
        fd(Types::DMA_BUF_EXT).map(|r| r.import),
        Ok(Import::Fd {
            handle_type: Types::DMA_BUF_EXT,
            fd: 5
        })
    );
    assert!(fd(Types::OPAQUE_FD).is_ok());
    assert_eq!(
        fd(Types::OPAQUE_FD | Types::DMA_BUF_EXT),
        Err(Vuid::FdHandleTypeSingle.into())
    );
    assert_eq!(fd(Types::empty()), Err(Vuid::FdHandleTypeSingle.into()));
    assert_eq!(
        fd(Types::HOST_ALLOCATION_EXT),
        Err(Vuid::FdHandleType.into())
    );
    assert_eq!(fd(Types::OPAQUE_WIN32), Err(Vuid::FdHandleType.into()));
    // An fd type this device does not import.
    let no_dma_buf = DeviceLimits {
        caps: DeviceCaps {
            dma_buf: false,
            ..LIMITS.caps
        },
        ..LIMITS
    };
    let mut f = vk::ImportMemoryFdInfoKHR::default()
        .handle_type(Types::DMA_BUF_EXT)
        .fd(5);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut f);
    assert_eq!(
        parsed(&info).and_then(|r| r.validate(&no_dma_buf)),
        Err(Vuid::FdHandleTypeSupported.into())
    );
}

#[test]
fn a_runaway_chain_is_refused() {
    // MAX_CHAIN + 1 structures of distinct types the parser does not know (and skips).
    let mut links: std::vec::Vec<vk::BaseInStructure<'_>> = (0..=MAX_CHAIN)
        .map(|i| vk::BaseInStructure {
            s_type: vk::StructureType::from_raw(1_999_000_000 + i32::try_from(i).expect("small")),
            ..Default::default()
        })
        .collect();
    let base = links.as_mut_ptr();
    for i in 0..MAX_CHAIN {
        // SAFETY: `i + 1 <= MAX_CHAIN` is inside `links`, which outlives the parse below.
        unsafe { (*base.add(i)).p_next = base.add(i + 1) };
    }
    let mut info = vk::MemoryAllocateInfo::default().allocation_size(4096);
    info.p_next = base.cast();
    assert_eq!(parsed(&info).map(|_| ()), Err(Vuid::ChainValid.into()));
    // SAFETY: one link in, still inside `links`: a chain of exactly MAX_CHAIN is fine.
    info.p_next = unsafe { base.add(1) }.cast();
    assert!(parsed(&info).is_ok());
}

#[test]
fn win32_imports_are_unsupported_on_linux() {
    let mut w = vk::ImportMemoryWin32HandleInfoKHR::default()
        .handle_type(Types::OPAQUE_WIN32)
        .handle(4);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut w);
    assert_eq!(check(&info), Err(Vuid::Win32HandleTypeSupported.into()));
    let mut w = vk::ImportMemoryWin32HandleInfoKHR::default()
        .handle_type(Types::DMA_BUF_EXT)
        .handle(4);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut w);
    assert_eq!(check(&info), Err(Vuid::Win32HandleType.into()));
    let mut n = vk::ImportMemoryWin32HandleInfoNV::default().handle_type(
        vk::ExternalMemoryHandleTypeFlagsNV::OPAQUE_WIN32
            | vk::ExternalMemoryHandleTypeFlagsNV::OPAQUE_WIN32_KMT,
    );
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut n);
    assert_eq!(check(&info), Err(Vuid::NvWin32OneType.into()));
    let mut n = vk::ImportMemoryWin32HandleInfoNV::default()
        .handle_type(vk::ExternalMemoryHandleTypeFlagsNV::OPAQUE_WIN32);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut n);
    assert!(matches!(
        check(&info),
        Err(Error::InvalidHandle(HandleError::Unsupported { .. }))
    ));
}

#[test]
fn win32_rules_on_a_windows_device() {
    let windows = DeviceLimits {
        caps: DeviceCaps::WINDOWS_HANDLES,
        ..LIMITS
    };
    let name: [u16; 2] = [b'x' as u16, 0];
    let run = |t: Types, handle: isize, named: bool| {
        let mut w = vk::ImportMemoryWin32HandleInfoKHR::default()
            .handle_type(t)
            .handle(handle);
        if named {
            w = w.name(name.as_ptr());
        }
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(4096)
            .link(&mut w);
        parsed(&info).and_then(|r| r.validate(&windows))
    };
    assert_eq!(run(Types::OPAQUE_WIN32, 4, false), Ok(()));
    assert_eq!(run(Types::OPAQUE_WIN32, 0, true), Ok(()));
    assert_eq!(
        run(Types::OPAQUE_WIN32, 4, true),
        Err(Vuid::Win32HandleOrName.into())
    );
    assert_eq!(
        run(Types::OPAQUE_WIN32_KMT, 0, true),
        Err(Vuid::Win32NameType.into())
    );
    assert_eq!(
        run(Types::D3D11_TEXTURE, 4, false),
        Err(Vuid::Win32HandleTypeSupported.into())
    );
    assert_eq!(
        run(Types::OPAQUE_FD, 4, false),
        Err(Vuid::Win32HandleType.into())
    );

    let mut e = vk::ExportMemoryAllocateInfo::default().handle_types(Types::OPAQUE_WIN32_KMT);
    let mut wi = vk::ExportMemoryWin32HandleInfoKHR::default();
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut e)
        .link(&mut wi);
    assert_eq!(
        parsed(&info).and_then(|r| r.validate(&windows)),
        Err(Vuid::Win32ExportInfo.into())
    );
}

#[test]
fn export_rules() {
    let export = |types: Types, size: u64| {
        let mut e = vk::ExportMemoryAllocateInfo::default().handle_types(types);
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .link(&mut e);
        check(&info).map(|r| r.export)
    };
    let fd = Types::OPAQUE_FD | Types::DMA_BUF_EXT;
    assert_eq!(export(fd, 4096), Ok(fd));
    assert_eq!(
        export(Types::HOST_ALLOCATION_EXT, 4096),
        Err(Vuid::ExportTypesSupported.into())
    );
    assert_eq!(
        export(Types::OPAQUE_WIN32, 4096),
        Err(Vuid::ExportTypesSupported.into())
    );
    assert_eq!(
        export(Types::DMA_BUF_EXT, 0),
        Err(Vuid::ExportSizeNonZero.into())
    );
    let info = vk::MemoryAllocateInfo::default().allocation_size(0);
    assert_eq!(check(&info), Err(Vuid::SizeNonZero.into()));
}

#[test]
fn unknown_structures_are_skipped_and_duplicates_rejected() {
    let mut flags = vk::MemoryAllocateFlagsInfo::default();
    let mut priority = vk::MemoryPriorityAllocateInfoEXT::default().priority(0.5);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut flags)
        .link(&mut priority);
    assert!(check(&info).is_ok());

    let mut e1 = vk::ExportMemoryAllocateInfo::default().handle_types(Types::DMA_BUF_EXT);
    let mut e2 = vk::ExportMemoryAllocateInfo::default().handle_types(Types::OPAQUE_FD);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(4096)
        .link(&mut e1)
        .link(&mut e2);
    assert_eq!(parsed(&info), Err(Vuid::ChainUnique.into()));
}

#[test]
fn a_cyclic_chain_is_rejected_not_walked_forever() {
    let mut a = vk::MemoryPriorityAllocateInfoEXT::default();
    let a_ptr: *mut vk::MemoryPriorityAllocateInfoEXT<'_> = &mut a;
    // SAFETY: a_ptr points to `a`, alive for the whole test.
    unsafe { (*a_ptr).p_next = a_ptr.cast::<core::ffi::c_void>().cast_const() };
    let mut info = vk::MemoryAllocateInfo::default().allocation_size(4096);
    info.p_next = a_ptr.cast::<core::ffi::c_void>().cast_const();
    // The same sType twice is caught as a duplicate before the length limit.
    assert_eq!(parsed(&info), Err(Vuid::ChainUnique.into()));
}
