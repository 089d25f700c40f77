//! A buffer the way a Wayland compositor and its clients share one: allocated with GBM (Mesa's
//! libgbm) on the virtio-gpu DRM node, written by the CPU through GBM's own mapping, and passed
//! on as a dma-buf, which the Vulkan side imports with `VK_EXT_external_memory_dma_buf`.
//!
//! [`GbmBuffer`] is the GBM side, [`ImportedBuffer`] the Vulkan side (a `VkDeviceMemory`
//! imported from the dma-buf with a transfer buffer bound to it, read and written by GPU copies
//! through device memory). `gbm-flow` runs the flow as KTAP checks, `vk-demo` as one of its
//! steps.
//!
//! Which GBM driver serves the node, with no environment override: GBM's DRI backend first
//! loads the driver Mesa's loader names for the node (virgl, for `virtio_gpu`), which cannot
//! make a screen on QEMU's `virtio-gpu-pci` without 3D; the backend then falls back by itself
//! to `kms_swrast`, a software driver whose buffers are the node's dumb buffers
//! (`DRM_IOCTL_MODE_CREATE_DUMB`, `MAP_DUMB`), exported through PRIME. Dumb buffers exist on the
//! primary node only (the ioctl is not `DRM_RENDER_ALLOW`), so the buffer is allocated on
//! `/dev/dri/card*`, as a compositor does, not on the render node. It needs Mesa's DRI drivers
//! (libgl1-mesa-dri) besides libgbm1; `extmem-qemu` provisions both.

use std::num::NonZeroU32;
use std::os::fd::{AsFd, OwnedFd};

use ash::vk;
use gbm::{BufferObject, BufferObjectFlags, Format, Modifier};

use crate::dri::{self, DrmNode, GemHandle, NodeKind};
use crate::mapping::SharedMapping;
use crate::vulkan::{DeviceBuffer, Gpu, VkResult};
use crate::{dma_buf, pattern};

/// The kernel driver of QEMU's virtio-gpu device.
pub const VIRTIO_GPU_DRIVER: &str = "virtio_gpu";

/// The handle type of every import here.
const DMA_BUF: vk::ExternalMemoryHandleTypeFlags = vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT;

/// Bytes per ARGB8888 pixel.
const BYTES_PER_PIXEL: u32 = 4;

/// Sets what Mesa reads from the environment for the GBM side. Call it while the program has
/// one thread (before the Vulkan loader starts any), like [`crate::vulkan::isolate_loader`].
///
/// The guest runs on the host's root, mounted read-only: Mesa cannot create its shader cache
/// there and would say so on stderr at the first `gbm_bo_map`.
pub fn configure_mesa() {
    std::env::set_var("MESA_SHADER_CACHE_DISABLE", "true");
}

/// A linear ARGB8888 GBM buffer on the virtio-gpu node, with its dma-buf export.
///
/// # Invariants
/// `dma_buf` is an export of `bo`; `len` is `stride * height` and at most the dma-buf's size.
pub struct GbmBuffer {
    bo: BufferObject<()>,
    /// Kept for as long as the buffer object: libgbm frees it with the device.
    device: gbm::Device<DrmNode>,
    dma_buf: OwnedFd,
    width: u32,
    height: u32,
    stride: u32,
    len: usize,
    size: u64,
}

impl std::fmt::Debug for GbmBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbmBuffer")
            .field("node", &self.device.path)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stride", &self.stride)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl GbmBuffer {
    /// Opens the virtio-gpu primary node as a GBM device and allocates a `width` × `height`
    /// ARGB8888 buffer with a linear layout (`GBM_BO_USE_LINEAR`: the only layout an importer
    /// without format modifiers can read as plain bytes), then exports it as a dma-buf.
    pub fn allocate(width: u32, height: u32) -> Result<Self, String> {
        let node =
            dri::open_by_driver(VIRTIO_GPU_DRIVER, NodeKind::Primary).map_err(|e| e.to_string())?;
        let path = node.path.display().to_string();
        let device =
            gbm::Device::new(node).map_err(|e| format!("gbm_create_device({path}): {e}"))?;
        let bo = device
            .create_buffer_object::<()>(
                width,
                height,
                Format::Argb8888,
                BufferObjectFlags::LINEAR | BufferObjectFlags::RENDERING,
            )
            .map_err(|e| format!("gbm_bo_create({width}x{height} ARGB8888, LINEAR): {e}"))?;
        let modifier = bo.modifier();
        if modifier != Modifier::Linear && modifier != Modifier::Invalid {
            return Err(format!("gbm_bo_get_modifier: {modifier:?}, not LINEAR"));
        }
        let planes = bo.plane_count();
        if planes != 1 {
            return Err(format!("gbm_bo_get_plane_count: {planes}, not 1"));
        }
        let stride = bo.stride();
        let min_stride = width.saturating_mul(BYTES_PER_PIXEL);
        if stride < min_stride {
            return Err(format!(
                "gbm_bo_get_stride: {stride}, less than {width} pixels of 4 bytes"
            ));
        }
        let len = u64::from(stride) * u64::from(height);
        // kms_swrast exports with DRM_CLOEXEC alone, so the dma-buf of `gbm_bo_get_fd` is a
        // read-only file that cannot be mapped for writing. The CPU's export is made first,
        // through PRIME with DRM_RDWR, as a compositor that maps buffers for writing does: the
        // kernel keeps one dma-buf per GEM object, so `gbm_bo_get_fd` later hands out that same
        // read-write file (which `export` checks).
        // SAFETY: every field of the union is a plain integer or pointer, so reading `u32_` is
        // defined whichever was written; for the DRI backend it holds the GEM handle on the
        // node's DRM file (gbm.h, `gbm_bo_get_handle`), which libgbm shares through a dup.
        let raw_handle = unsafe { bo.handle().u32_ };
        let handle = NonZeroU32::new(raw_handle)
            .map(GemHandle)
            .ok_or("gbm_bo_get_handle: GEM handle 0")?;
        let dma_buf = device
            .export(handle)
            .map_err(|e| format!("PRIME_HANDLE_TO_FD(DRM_RDWR) of GEM handle {handle}: {e}"))?;
        let size = dma_buf::size_by_seek(dma_buf.as_fd())
            .map_err(|e| format!("lseek(SEEK_END) of the dma-buf: {e}"))?;
        if size < len {
            return Err(format!(
                "the dma-buf holds {size} bytes, less than {height} rows of {stride}"
            ));
        }
        let len = usize::try_from(len).map_err(|e| format!("{len} bytes: {e}"))?;
        Ok(Self {
            bo,
            device,
            dma_buf,
            width,
            height,
            stride,
            len,
            size,
        })
    }

    /// The GBM backend libgbm loaded (`drm` for Mesa's DRI backend).
    pub fn backend(&self) -> String {
        self.device.backend_name().to_owned()
    }

    /// Where the GBM device was opened.
    pub fn node(&self) -> &DrmNode {
        &self.device
    }

    /// Bytes per row, as GBM laid the buffer out.
    pub fn stride(&self) -> u32 {
        self.stride
    }

    /// The image's bytes: `stride * height`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the image has no bytes (never: GBM refuses a zero size).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The dma-buf's size as the kernel reports it (the image, rounded up to pages).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A new dma-buf fd for the buffer (`gbm_bo_get_fd`, as a compositor hands one to a
    /// client), checked to be the dma-buf the CPU maps.
    pub fn export(&self) -> Result<OwnedFd, String> {
        let fd = self
            .bo
            .fd()
            .map_err(|e| format!("gbm_bo_get_fd: {e} (PRIME export)"))?;
        let identity = |fd| dma_buf::identity(fd).map_err(|e| format!("fstat of a dma-buf: {e}"));
        if identity(fd.as_fd())? != identity(self.dma_buf.as_fd())? {
            return Err("gbm_bo_get_fd exported a dma-buf other than the buffer's".into());
        }
        Ok(fd)
    }

    /// Writes `bytes` (the whole image, `len` bytes) through GBM's CPU mapping of the buffer
    /// (`gbm_bo_map` for read and write), between `DMA_BUF_IOCTL_SYNC` start and end.
    pub fn write_through_gbm(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() != self.len {
            return Err(format!(
                "{} bytes for an image of {} bytes",
                bytes.len(),
                self.len
            ));
        }
        let (width, height, stride) = (self.width, self.height, self.stride);
        let fd = self.dma_buf.as_fd();
        let written = dma_buf::with_cpu_access(fd, || {
            self.bo.map_mut(0, 0, width, height, |mapped| {
                if mapped.stride() != stride {
                    return Err(format!(
                        "gbm_bo_map: stride {}, the buffer's is {stride}",
                        mapped.stride()
                    ));
                }
                let target = mapped.buffer_mut();
                match target.get_mut(..bytes.len()) {
                    Some(image) => {
                        image.copy_from_slice(bytes);
                        Ok(())
                    }
                    None => Err(format!(
                        "gbm_bo_map: {} bytes mapped for an image of {}",
                        target.len(),
                        bytes.len()
                    )),
                }
            })
        });
        written
            .map_err(|e| format!("DMA_BUF_IOCTL_SYNC: {e}"))?
            .map_err(|e| format!("gbm_bo_map: {e}"))?
    }

    /// The image's bytes through GBM's CPU mapping (`gbm_bo_map` for reading).
    pub fn read_through_gbm(&self) -> Result<Vec<u8>, String> {
        let (width, height, len) = (self.width, self.height, self.len);
        let read = dma_buf::with_cpu_access(self.dma_buf.as_fd(), || {
            self.bo.map(0, 0, width, height, |mapped| {
                mapped
                    .buffer()
                    .get(..len)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| {
                        format!(
                            "gbm_bo_map: {} bytes mapped for an image of {len}",
                            mapped.buffer().len()
                        )
                    })
            })
        });
        read.map_err(|e| format!("DMA_BUF_IOCTL_SYNC: {e}"))?
            .map_err(|e| format!("gbm_bo_map: {e}"))?
    }

    /// The image's bytes through an `mmap` of the dma-buf, between `DMA_BUF_IOCTL_SYNC` start
    /// and end.
    pub fn read_through_dma_buf(&self) -> Result<Vec<u8>, String> {
        let fd = self.dma_buf.as_fd();
        let mapping =
            SharedMapping::new(fd, 0, self.len).map_err(|e| format!("mmap of the dma-buf: {e}"))?;
        let seen = dma_buf::with_cpu_access(fd, || mapping.read_all())
            .map_err(|e| format!("DMA_BUF_IOCTL_SYNC: {e}"))?;
        Ok(seen)
    }
}

/// A dma-buf imported into Vulkan, with a transfer buffer over all of it; both are destroyed
/// on drop.
pub struct ImportedBuffer<'g, 'i> {
    gpu: &'g Gpu<'i>,
    /// The imported memory.
    pub memory: vk::DeviceMemory,
    /// The buffer bound to it at offset 0.
    pub buffer: vk::Buffer,
    /// `memoryTypeBits` from `vkGetMemoryFdPropertiesKHR`.
    pub memory_type_bits: u32,
    /// `allocationSize` of the import.
    pub size: u64,
}

impl<'g, 'i> ImportedBuffer<'g, 'i> {
    /// Imports `fd`, a dma-buf of at least `size` bytes, and binds a transfer buffer to it.
    pub fn new(gpu: &'g Gpu<'i>, fd: OwnedFd, size: u64) -> VkResult<Self> {
        let (memory, memory_type_bits) = gpu.import_dma_buf(fd, size)?;
        match gpu.buffer(memory, size, DMA_BUF) {
            Ok(buffer) => Ok(Self {
                gpu,
                memory,
                buffer,
                memory_type_bits,
                size,
            }),
            Err(e) => {
                gpu.free(memory);
                Err(e)
            }
        }
    }

    /// The first `len` bytes, as a GPU copy into device memory shows them (`vkMapMemory`).
    pub fn read_by_gpu(&self, len: usize) -> VkResult<Vec<u8>> {
        let staging = DeviceBuffer::new(
            self.gpu,
            self.size,
            vk::ExternalMemoryHandleTypeFlags::empty(),
        )?;
        self.gpu.copy(self.buffer, staging.buffer, self.size)?;
        self.gpu.read(staging.memory, 0, len)
    }

    /// Writes `bytes` at the start by a GPU copy out of device memory that holds them.
    pub fn write_by_gpu(&self, bytes: &[u8]) -> VkResult<()> {
        let staging = DeviceBuffer::new(
            self.gpu,
            self.size,
            vk::ExternalMemoryHandleTypeFlags::empty(),
        )?;
        self.gpu.write(staging.memory, 0, bytes)?;
        let len = u64::try_from(bytes.len()).map_err(|e| e.to_string())?;
        self.gpu.copy(staging.buffer, self.buffer, len)
    }
}

impl Drop for ImportedBuffer<'_, '_> {
    fn drop(&mut self) {
        self.gpu.destroy_buffer(self.buffer);
        self.gpu.free(self.memory);
    }
}

/// The two images of the flow: what the CPU writes through GBM, and what the GPU writes back.
pub fn images(len: usize) -> (Vec<u8>, Vec<u8>) {
    (
        pattern::bytes(0x6b6d, len),
        pattern::bytes(0x6170_6970, len),
    )
}
