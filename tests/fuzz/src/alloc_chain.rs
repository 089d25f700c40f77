//! The `alloc_info` target's input: a `VkMemoryAllocateInfo` and its pNext chain, built
//! from ash's own structure types, plus the device limits to validate against.
//!
//! The chain varies everything the specification lets an application vary (which
//! structures, in which order, their field values, unknown structure types, duplicates, a
//! chain that loops back on itself, more structures than the parser follows) and nothing
//! it does not: every pointer the parser follows points at a live structure at least as
//! large as the one its `sType` names, so walking the chain is memory-safe. A structure of
//! an unknown type is an [`Other`](Node::Other), whose body is large enough for any type
//! the parser knows, since a raw `sType` may name one.

use core::ffi::c_void;

use ash::vk;
use extmem::alloc_info::{DeviceLimits, MAX_CHAIN};
use extmem::handle_types::{DeviceCaps, Platform};
use extmem::{Error, Vuid};
use extmem_hw::Alignment;

use crate::{Bytes, Wire, RAW};

/// More structures than this are never built (a few past [`MAX_CHAIN`], to reach its error).
const MAX_NODES: u8 = 70;

/// Structure types the parser skips: real extensions of `VkMemoryAllocateInfo` it does not
/// handle, and two values no extension uses.
const OTHER_TYPES: [vk::StructureType; 8] = [
    vk::StructureType::MEMORY_ALLOCATE_FLAGS_INFO,
    vk::StructureType::MEMORY_PRIORITY_ALLOCATE_INFO_EXT,
    vk::StructureType::IMPORT_ANDROID_HARDWARE_BUFFER_INFO_ANDROID,
    vk::StructureType::IMPORT_MEMORY_ZIRCON_HANDLE_INFO_FUCHSIA,
    vk::StructureType::IMPORT_METAL_BUFFER_INFO_EXT,
    vk::StructureType::EXPORT_METAL_OBJECT_CREATE_INFO_EXT,
    vk::StructureType::from_raw(0),
    vk::StructureType::from_raw(i32::MAX),
];

/// One structure of the chain, by its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// `VkImportMemoryHostPointerInfoEXT` (the pointer is never dereferenced).
    HostPointer { handle_type: u32, ptr: u64 },
    /// `VkImportMemoryFdInfoKHR`.
    Fd { handle_type: u32, fd: i32 },
    /// `VkImportMemoryWin32HandleInfoKHR`; `named` points `name` at a real string.
    Win32 {
        handle_type: u32,
        handle: i64,
        named: bool,
    },
    /// `VkImportMemoryWin32HandleInfoNV`.
    Win32Nv { handle_type: u32, handle: i64 },
    /// `VkExportMemoryAllocateInfo`.
    Export { handle_types: u32 },
    /// `VkExportMemoryAllocateInfoNV`.
    ExportNv { handle_types: u32 },
    /// `VkExportMemoryWin32HandleInfoKHR`.
    ExportWin32,
    /// `VkMemoryDedicatedAllocateInfo`.
    Dedicated { image: u64, buffer: u64 },
    /// `VkDedicatedAllocationMemoryAllocateInfoNV`.
    DedicatedNv { image: u64, buffer: u64 },
    /// `VkMemoryOpaqueCaptureAddressAllocateInfo`.
    CaptureAddress { address: u64 },
    /// A structure of any other type, its body filled with `fill`.
    Other { s_type: i32, fill: u64 },
}

/// A whole input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInput {
    /// Bit 0: Windows; bits 1..=5: opaque fd, dma-buf, host allocation, host-mapped
    /// foreign memory, Win32 handles.
    pub caps: u8,
    /// `memoryTypeCount` (0..=32).
    pub memory_type_count: u8,
    /// `minImportedHostPointerAlignment` is `1 << (12 + align_shift % 5)`.
    pub align_shift: u8,
    /// Memory types a host pointer may go to.
    pub host_pointer_types: u32,
    /// `allocationSize`.
    pub size: u64,
    /// `memoryTypeIndex`.
    pub memory_type_index: u32,
    /// The chain, in order.
    pub nodes: Vec<Node>,
    /// The last structure's pNext points back at this one (a cycle), if it exists.
    pub loop_to: Option<u8>,
}

/// A handle-type bitmask: mostly one bit (valid or not), sometimes none, or raw.
fn handle_type(b: &mut Bytes<'_>) -> u32 {
    match b.u8() {
        sel @ 0..=239 if sel % 13 == 12 => 0,
        sel @ 0..=239 => 1 << (sel % 13),
        _ => b.u32(),
    }
}

/// A size: multiples of 1 KiB up to 63 KiB (aligned, unaligned, zero), or raw.
fn size(b: &mut Bytes<'_>) -> u64 {
    match b.u8() {
        sel if sel < RAW => u64::from(sel % 64) * 1024,
        _ => b.u64(),
    }
}

/// A host pointer near a typical mmap address, in 2 KiB steps, or raw.
fn host_ptr(b: &mut Bytes<'_>) -> u64 {
    match b.u8() {
        sel if sel < RAW => 0x7f00_0000_0000 + u64::from(sel % 32) * 0x800,
        _ => b.u64(),
    }
}

/// A small number, or raw.
fn small(b: &mut Bytes<'_>) -> u32 {
    match b.u8() {
        sel if sel < RAW => u32::from(sel % 8),
        _ => b.u32(),
    }
}

fn node(b: &mut Bytes<'_>) -> Node {
    match b.u8() % 11 {
        0 => Node::HostPointer {
            handle_type: handle_type(b),
            ptr: host_ptr(b),
        },
        1 => Node::Fd {
            handle_type: handle_type(b),
            fd: small(b) as i32,
        },
        2 => Node::Win32 {
            handle_type: handle_type(b),
            handle: i64::from(small(b)),
            named: b.bool(),
        },
        3 => Node::Win32Nv {
            handle_type: handle_type(b),
            handle: i64::from(small(b)),
        },
        4 => Node::Export {
            handle_types: handle_type(b) | handle_type(b),
        },
        5 => Node::ExportNv {
            handle_types: handle_type(b),
        },
        6 => Node::ExportWin32,
        7 => Node::Dedicated {
            image: u64::from(small(b)),
            buffer: u64::from(small(b)),
        },
        8 => Node::DedicatedNv {
            image: u64::from(small(b)),
            buffer: u64::from(small(b)),
        },
        9 => Node::CaptureAddress {
            address: u64::from(small(b)),
        },
        _ => {
            let s_type = match b.u8() {
                sel if sel < RAW => OTHER_TYPES[usize::from(sel) % OTHER_TYPES.len()].as_raw(),
                _ => b.u32() as i32,
            };
            Node::Other {
                s_type,
                fill: u64::from(b.u8()) * 0x0101_0101_0101_0101,
            }
        }
    }
}

impl ChainInput {
    /// Decodes an input; every byte string is some input.
    pub fn decode(data: &[u8]) -> Self {
        let mut b = Bytes::new(data);
        let caps = b.u8();
        let memory_type_count = b.u8() % 33;
        let align_shift = b.u8() % 5;
        let host_pointer_types = b.u32();
        let size = size(&mut b);
        let memory_type_index = small(&mut b);
        let count = b.u8() % (MAX_NODES + 1);
        let nodes = (0..count).map(|_| node(&mut b)).collect();
        let loop_to = b.u8();
        Self {
            caps,
            memory_type_count,
            align_shift,
            host_pointer_types,
            size,
            memory_type_index,
            nodes,
            loop_to: (loop_to < count).then_some(loop_to),
        }
    }

    /// Encodes the input so that [`ChainInput::decode`] gives it back (raw escapes for
    /// every value).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Wire::default();
        w.u8(self.caps)
            .u8(self.memory_type_count)
            .u8(self.align_shift)
            .u32(self.host_pointer_types)
            .u8(RAW)
            .u64(self.size)
            .u8(RAW)
            .u32(self.memory_type_index)
            .u8(u8::try_from(self.nodes.len()).unwrap_or(0));
        for node in &self.nodes {
            match *node {
                Node::HostPointer { handle_type, ptr } => {
                    w.u8(0).u8(RAW).u32(handle_type).u8(RAW).u64(ptr);
                }
                Node::Fd { handle_type, fd } => {
                    w.u8(1).u8(RAW).u32(handle_type).u8(RAW).u32(fd as u32);
                }
                Node::Win32 {
                    handle_type,
                    handle,
                    named,
                } => {
                    w.u8(2).u8(RAW).u32(handle_type).u8(RAW).u32(handle as u32);
                    w.u8(u8::from(named));
                }
                Node::Win32Nv {
                    handle_type,
                    handle,
                } => {
                    w.u8(3).u8(RAW).u32(handle_type).u8(RAW).u32(handle as u32);
                }
                Node::Export { handle_types } => {
                    w.u8(4).u8(RAW).u32(handle_types).u8(RAW).u32(0);
                }
                Node::ExportNv { handle_types } => {
                    w.u8(5).u8(RAW).u32(handle_types);
                }
                Node::ExportWin32 => {
                    w.u8(6);
                }
                Node::Dedicated { image, buffer } => {
                    w.u8(7).u8(RAW).u32(image as u32).u8(RAW).u32(buffer as u32);
                }
                Node::DedicatedNv { image, buffer } => {
                    w.u8(8).u8(RAW).u32(image as u32).u8(RAW).u32(buffer as u32);
                }
                Node::CaptureAddress { address } => {
                    w.u8(9).u8(RAW).u32(address as u32);
                }
                Node::Other { s_type, fill } => {
                    w.u8(10).u8(RAW).u32(s_type as u32).u8(fill as u8);
                }
            }
        }
        w.u8(self.loop_to.unwrap_or(u8::MAX));
        w.bytes
    }

    /// The device limits this input validates against.
    pub fn limits(&self) -> DeviceLimits {
        let bit = |n: u8| self.caps & (1 << n) != 0;
        DeviceLimits {
            caps: DeviceCaps {
                platform: if bit(0) {
                    Platform::Windows
                } else {
                    Platform::Linux
                },
                opaque_fd: bit(1),
                dma_buf: bit(2),
                host_allocation: bit(3),
                host_mapped_foreign: bit(4),
                win32: bit(5),
            },
            memory_type_count: u32::from(self.memory_type_count),
            min_import_alignment: Alignment::new(1 << (12 + self.align_shift % 5))
                .unwrap_or(Alignment::SIZE_4K),
            host_pointer_types: self.host_pointer_types,
        }
    }

    /// The nodes in the order the parser meets them, up to one past [`MAX_CHAIN`]
    /// (following the loop, if any).
    pub fn walk_order(&self) -> Vec<&Node> {
        let mut order = Vec::new();
        let mut index = 0;
        while order.len() <= MAX_CHAIN {
            let Some(node) = self.nodes.get(index) else {
                break;
            };
            order.push(node);
            index += 1;
            if index == self.nodes.len() {
                match self.loop_to {
                    Some(to) => index = usize::from(to),
                    None => break,
                }
            }
        }
        order
    }

    /// What parsing must say about the chain itself: `Err` for a chain too long, a repeated
    /// structure type or a second import, in the order the parser meets them.
    pub fn expected_chain_error(&self) -> Option<Error> {
        let mut seen = Vec::new();
        let mut imports = 0;
        for (index, node) in self.walk_order().into_iter().enumerate() {
            if index == MAX_CHAIN {
                return Some(Error::ValidUsage(Vuid::ChainValid));
            }
            let s_type = node.s_type();
            if seen.contains(&s_type) {
                return Some(Error::ValidUsage(Vuid::ChainUnique));
            }
            seen.push(s_type);
            if node.requests_import() {
                imports += 1;
                if imports > 1 {
                    return Some(Error::ValidUsage(Vuid::OneImport));
                }
            }
        }
        None
    }
}

impl Node {
    /// Whether this structure requests an import: every import structure does, but for
    /// `VkImportMemoryWin32HandleInfoNV` with handle type 0, which the specification
    /// says is ignored.
    pub fn requests_import(&self) -> bool {
        match self {
            Node::Win32Nv { handle_type, .. } => *handle_type != 0,
            // A raw structure's body is `fill` repeated, so one carrying the NV import's
            // sType has handleType 0 exactly when `fill` is 0.
            Node::Other { s_type, fill }
                if *s_type == vk::StructureType::IMPORT_MEMORY_WIN32_HANDLE_INFO_NV.as_raw() =>
            {
                *fill != 0
            }
            node => [
                vk::StructureType::IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
                vk::StructureType::IMPORT_MEMORY_FD_INFO_KHR,
                vk::StructureType::IMPORT_MEMORY_WIN32_HANDLE_INFO_KHR,
            ]
            .contains(&node.s_type()),
        }
    }

    /// The structure type this node is built with.
    pub fn s_type(&self) -> vk::StructureType {
        match self {
            Node::HostPointer { .. } => vk::StructureType::IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
            Node::Fd { .. } => vk::StructureType::IMPORT_MEMORY_FD_INFO_KHR,
            Node::Win32 { .. } => vk::StructureType::IMPORT_MEMORY_WIN32_HANDLE_INFO_KHR,
            Node::Win32Nv { .. } => vk::StructureType::IMPORT_MEMORY_WIN32_HANDLE_INFO_NV,
            Node::Export { .. } => vk::StructureType::EXPORT_MEMORY_ALLOCATE_INFO,
            Node::ExportNv { .. } => vk::StructureType::EXPORT_MEMORY_ALLOCATE_INFO_NV,
            Node::ExportWin32 => vk::StructureType::EXPORT_MEMORY_WIN32_HANDLE_INFO_KHR,
            Node::Dedicated { .. } => vk::StructureType::MEMORY_DEDICATED_ALLOCATE_INFO,
            Node::DedicatedNv { .. } => {
                vk::StructureType::DEDICATED_ALLOCATION_MEMORY_ALLOCATE_INFO_NV
            }
            Node::CaptureAddress { .. } => {
                vk::StructureType::MEMORY_OPAQUE_CAPTURE_ADDRESS_ALLOCATE_INFO
            }
            Node::Other { s_type, .. } => vk::StructureType::from_raw(*s_type),
        }
    }
}

/// A structure of a type the parser may not know: `sType`, `pNext` and a body larger than
/// any structure the parser reads, so a raw `sType` naming one of those stays in bounds.
#[repr(C)]
#[derive(Debug)]
pub struct OtherStruct {
    s_type: vk::StructureType,
    p_next: *const c_void,
    body: [u64; 8],
}

/// A structure built from a [`Node`], in its own allocation.
#[derive(Debug)]
enum Built {
    HostPointer(vk::ImportMemoryHostPointerInfoEXT<'static>),
    Fd(vk::ImportMemoryFdInfoKHR<'static>),
    Win32(vk::ImportMemoryWin32HandleInfoKHR<'static>),
    Win32Nv(vk::ImportMemoryWin32HandleInfoNV<'static>),
    Export(vk::ExportMemoryAllocateInfo<'static>),
    ExportNv(vk::ExportMemoryAllocateInfoNV<'static>),
    ExportWin32(vk::ExportMemoryWin32HandleInfoKHR<'static>),
    Dedicated(vk::MemoryDedicatedAllocateInfo<'static>),
    DedicatedNv(vk::DedicatedAllocationMemoryAllocateInfoNV<'static>),
    CaptureAddress(vk::MemoryOpaqueCaptureAddressAllocateInfo<'static>),
    Other(OtherStruct),
}

/// `L"extmem"`, for a named Win32 import.
static NAME: [u16; 7] = [0x65, 0x78, 0x74, 0x6d, 0x65, 0x6d, 0];

impl Built {
    fn new(node: &Node) -> Self {
        use ash::vk::Handle;
        match *node {
            Node::HostPointer { handle_type, ptr } => Built::HostPointer(
                vk::ImportMemoryHostPointerInfoEXT::default()
                    .handle_type(vk::ExternalMemoryHandleTypeFlags::from_raw(handle_type))
                    // An address the application passes; the parser never dereferences it.
                    .host_pointer(ptr as usize as *mut c_void),
            ),
            Node::Fd { handle_type, fd } => Built::Fd(
                vk::ImportMemoryFdInfoKHR::default()
                    .handle_type(vk::ExternalMemoryHandleTypeFlags::from_raw(handle_type))
                    .fd(fd),
            ),
            Node::Win32 {
                handle_type,
                handle,
                named,
            } => {
                let mut s = vk::ImportMemoryWin32HandleInfoKHR::default()
                    .handle_type(vk::ExternalMemoryHandleTypeFlags::from_raw(handle_type))
                    .handle(handle as isize);
                if named {
                    s.name = NAME.as_ptr();
                }
                Built::Win32(s)
            }
            Node::Win32Nv {
                handle_type,
                handle,
            } => Built::Win32Nv(
                vk::ImportMemoryWin32HandleInfoNV::default()
                    .handle_type(vk::ExternalMemoryHandleTypeFlagsNV::from_raw(handle_type))
                    .handle(handle as isize),
            ),
            Node::Export { handle_types } => Built::Export(
                vk::ExportMemoryAllocateInfo::default()
                    .handle_types(vk::ExternalMemoryHandleTypeFlags::from_raw(handle_types)),
            ),
            Node::ExportNv { handle_types } => Built::ExportNv(
                vk::ExportMemoryAllocateInfoNV::default()
                    .handle_types(vk::ExternalMemoryHandleTypeFlagsNV::from_raw(handle_types)),
            ),
            Node::ExportWin32 => Built::ExportWin32(vk::ExportMemoryWin32HandleInfoKHR::default()),
            Node::Dedicated { image, buffer } => Built::Dedicated(
                vk::MemoryDedicatedAllocateInfo::default()
                    .image(vk::Image::from_raw(image))
                    .buffer(vk::Buffer::from_raw(buffer)),
            ),
            Node::DedicatedNv { image, buffer } => Built::DedicatedNv(
                vk::DedicatedAllocationMemoryAllocateInfoNV::default()
                    .image(vk::Image::from_raw(image))
                    .buffer(vk::Buffer::from_raw(buffer)),
            ),
            Node::CaptureAddress { address } => Built::CaptureAddress(
                vk::MemoryOpaqueCaptureAddressAllocateInfo::default()
                    .opaque_capture_address(address),
            ),
            Node::Other { s_type, fill } => Built::Other(OtherStruct {
                s_type: vk::StructureType::from_raw(s_type),
                p_next: core::ptr::null(),
                body: [fill; 8],
            }),
        }
    }

    /// The structure's address, as the chain links it.
    fn base(&mut self) -> *mut vk::BaseOutStructure<'static> {
        fn cast<T>(s: &mut T) -> *mut vk::BaseOutStructure<'static> {
            (s as *mut T).cast()
        }
        match self {
            Built::HostPointer(s) => cast(s),
            Built::Fd(s) => cast(s),
            Built::Win32(s) => cast(s),
            Built::Win32Nv(s) => cast(s),
            Built::Export(s) => cast(s),
            Built::ExportNv(s) => cast(s),
            Built::ExportWin32(s) => cast(s),
            Built::Dedicated(s) => cast(s),
            Built::DedicatedNv(s) => cast(s),
            Built::CaptureAddress(s) => cast(s),
            Built::Other(s) => cast(s),
        }
    }
}

/// The structures of a chain, each in its own allocation, linked through `pNext`.
///
/// # Invariants
/// `bases[i]` points into `storage[i]`, which is never touched again except to drop it; the
/// `pNext` of each points at the next one (or, for the last, at `loop_to` or null).
#[derive(Debug)]
pub struct Chain {
    storage: Vec<Box<Built>>,
    bases: Vec<*mut vk::BaseOutStructure<'static>>,
}

impl Chain {
    /// Builds and links the structures of `input`.
    pub fn build(input: &ChainInput) -> Self {
        let mut storage: Vec<Box<Built>> = input
            .nodes
            .iter()
            .map(|n| Box::new(Built::new(n)))
            .collect();
        let bases: Vec<_> = storage.iter_mut().map(|b| b.base()).collect();
        for (index, &base) in bases.iter().enumerate() {
            let next = match bases.get(index + 1) {
                Some(&next) => next,
                None => match input.loop_to {
                    Some(to) => bases[usize::from(to)],
                    None => core::ptr::null_mut(),
                },
            };
            // SAFETY: `base` points at a live structure that starts with sType and pNext
            // (the invariant); nothing else references it while we write.
            unsafe { (*base).p_next = next };
        }
        Self { storage, bases }
    }

    /// `pNext` for the `VkMemoryAllocateInfo`.
    pub fn head(&self) -> *const c_void {
        self.bases
            .first()
            .map_or(core::ptr::null(), |&b| b.cast_const().cast())
    }

    /// How many structures were built.
    pub fn len(&self) -> usize {
        self.storage.len()
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.storage.is_empty()
    }
}
