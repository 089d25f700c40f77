//! The driver's objects and what each Vulkan command does to them, in plain Rust: handles
//! in, `Result<_, vk::Result>` out. The C entry points in [`crate::entry`] only convert
//! pointers to these arguments and back.
//!
//! Lock order, everywhere: a device's memory manager, then a command buffer's recording,
//! then a buffer's binding or a memory's state. Work is synchronous: a submission has run
//! on the copy engine when `vkQueueSubmit` returns, so fences are signalled at submit and
//! waiting is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ash::vk;
use extmem::alloc_info::AllocRequest;
use extmem::backend::Backend;
use extmem::exec::{Command, ExecError, MAX_COMMANDS};
use extmem::memory::{DeviceMemory, MemoryManager};
use extmem::va_allocator::VaAllocator;
use extmem_hw::{GpuVa, HostVa};
#[cfg(not(windows))]
use rustix::fd::{BorrowedFd, OwnedFd};

use crate::commands::{self, BufferSpan, Direction, ImageSpan, RecordError, StagingCursor};
use crate::device_backend::DeviceBackend;
use crate::handles::{lock, Registry};
use crate::image::ImageLayout;
use crate::physical_device::{self, DeviceInfo, BUFFER_ALIGNMENT, BUFFER_MEMORY_TYPES};

/// `VkInstance`.
#[derive(Debug)]
pub struct Instance {
    /// Its physical devices' handles.
    pub physical_devices: Vec<u64>,
}

/// `VkPhysicalDevice`.
#[derive(Debug)]
pub struct PhysicalDevice {
    /// What the node is.
    pub info: DeviceInfo,
}

/// `VkDevice`: its own render-node file (or software device), so its own GPU VM.
#[derive(Debug)]
pub struct Device {
    /// What the node is.
    pub info: DeviceInfo,
    /// Memory, VA space and the copy engine.
    pub memory: Mutex<MemoryManager<DeviceBackend>>,
}

/// `VkQueue`.
#[derive(Debug)]
pub struct Queue {
    /// The device.
    pub device: u64,
}

/// A memory object's mutable state.
#[derive(Debug)]
pub struct MemoryState {
    /// The memory (taken out when it is freed).
    pub memory: Option<DeviceMemory>,
    /// Whether `vkMapMemory` is in effect.
    pub mapped: bool,
}

/// `VkDeviceMemory`.
#[derive(Debug)]
pub struct Memory {
    /// The device.
    pub device: u64,
    /// `allocationSize`.
    pub size: u64,
    /// Where the GPU sees byte 0.
    pub va: GpuVa,
    /// The memory and its map state.
    pub state: Mutex<MemoryState>,
}

/// `VkBuffer`.
#[derive(Debug)]
pub struct Buffer {
    /// The device.
    pub device: u64,
    /// `VkBufferCreateInfo::size`.
    pub size: u64,
    /// GPU VA of byte 0 once memory is bound.
    pub binding: Mutex<Option<GpuVa>>,
}

/// `VkImage`: a linear image, memory with a row pitch.
#[derive(Debug)]
pub struct Image {
    /// The device.
    pub device: u64,
    /// Format, extent, row pitch, size, usage.
    pub layout: ImageLayout,
    /// GPU VA of byte 0 once memory is bound.
    pub binding: Mutex<Option<GpuVa>>,
}

/// `VkCommandPool`.
#[derive(Debug)]
pub struct CommandPool {
    /// The device.
    pub device: u64,
}

/// One staging chunk for `vkCmdUpdateBuffer` data.
#[derive(Debug)]
pub struct Staging {
    /// The GEM object.
    pub memory: DeviceMemory,
    /// Its CPU mapping.
    pub cpu: HostVa,
}

/// What a command buffer has recorded.
#[derive(Debug, Default)]
pub struct Recording {
    /// The copy-engine commands, in order.
    pub cmds: Vec<Command>,
    /// The first invalid command, returned by `vkEndCommandBuffer`.
    pub error: Option<RecordError>,
    /// Staging chunks; the last one is being filled.
    pub staging: Vec<Staging>,
    /// Fill level of the last chunk.
    pub cursor: StagingCursor,
}

/// `VkCommandBuffer`.
#[derive(Debug)]
pub struct CommandBuffer {
    /// The device.
    pub device: u64,
    /// The pool it came from.
    pub pool: u64,
    /// The commands.
    pub recording: Mutex<Recording>,
}

/// `VkFence`.
#[derive(Debug)]
pub struct Fence {
    /// The device.
    pub device: u64,
    /// Signalled.
    pub signaled: AtomicBool,
}

/// Live instances.
pub static INSTANCES: Registry<Instance> = Registry::new();
/// Live physical devices.
pub static PHYSICAL_DEVICES: Registry<PhysicalDevice> = Registry::new();
/// Live devices.
pub static DEVICES: Registry<Device> = Registry::new();
/// Live queues.
pub static QUEUES: Registry<Queue> = Registry::new();
/// Live memory objects.
pub static MEMORIES: Registry<Memory> = Registry::new();
/// Live buffers.
pub static BUFFERS: Registry<Buffer> = Registry::new();
/// Live images.
pub static IMAGES: Registry<Image> = Registry::new();
/// Live command pools.
pub static POOLS: Registry<CommandPool> = Registry::new();
/// Live command buffers.
pub static COMMAND_BUFFERS: Registry<CommandBuffer> = Registry::new();
/// Live fences.
pub static FENCES: Registry<Fence> = Registry::new();

/// The error for a handle that is not live (the application's error; the specification
/// leaves it undefined, we refuse).
pub const BAD_HANDLE: vk::Result = vk::Result::ERROR_UNKNOWN;
/// The error for a Valid Usage violation we detect.
pub const INVALID: vk::Result = vk::Result::ERROR_VALIDATION_FAILED_EXT;

type VkResult<T> = Result<T, vk::Result>;

/// `vkCreateInstance` over the devices found (by [`physical_device::devices`]).
pub fn create_instance(infos: Vec<DeviceInfo>) -> u64 {
    let physical_devices = infos
        .into_iter()
        .map(|info| PHYSICAL_DEVICES.insert_dispatchable(PhysicalDevice { info }))
        .collect();
    INSTANCES.insert_dispatchable(Instance { physical_devices })
}

/// `vkDestroyInstance`. Devices must have been destroyed first (the application's
/// obligation); their handles stay valid until then.
pub fn destroy_instance(instance: u64) {
    if let Some(instance) = INSTANCES.remove(instance) {
        for pd in &instance.physical_devices {
            PHYSICAL_DEVICES.remove(*pd);
        }
    }
}

/// `vkCreateDevice`: opens the node again (or starts a software device), so the device
/// gets its own GPU VM.
pub fn create_device(physical_device: u64) -> VkResult<u64> {
    let pd = PHYSICAL_DEVICES.get(physical_device).ok_or(BAD_HANDLE)?;
    let info = pd.info.clone();
    let backend = DeviceBackend::open(&info)?;
    let (start, end) = info.va_range();
    let va = VaAllocator::new(GpuVa::new(start), GpuVa::new(end), info.page_sizes);
    let manager = MemoryManager::new(backend, info.limits(), va, physical_device::DMA_BUF_TYPES);
    let device = DEVICES.insert_dispatchable(Device {
        info,
        memory: Mutex::new(manager),
    });
    QUEUES.insert_dispatchable(Queue { device });
    Ok(device)
}

/// The device's queue.
pub fn device_queue(device: u64) -> Option<u64> {
    QUEUES.find(|q| q.device == device)
}

/// `vkDestroyDevice`: releases whatever the application left behind (it should have
/// destroyed everything; the kernel would release it with the file anyway).
pub fn destroy_device(device: u64) {
    let Some(dev) = DEVICES.remove(device) else {
        return;
    };
    QUEUES.remove_where(|q| q.device == device);
    BUFFERS.remove_where(|b| b.device == device);
    IMAGES.remove_where(|i| i.device == device);
    POOLS.remove_where(|p| p.device == device);
    FENCES.remove_where(|f| f.device == device);
    let mut manager = lock(&dev.memory);
    for cb in COMMAND_BUFFERS.remove_where(|c| c.device == device) {
        release_staging(&mut manager, &mut lock(&cb.recording));
    }
    for memory in MEMORIES.remove_where(|m| m.device == device) {
        if let Some(m) = lock(&memory.state).memory.take() {
            manager.free(m);
        }
    }
}

fn device(device: u64) -> VkResult<Arc<Device>> {
    DEVICES.get(device).ok_or(BAD_HANDLE)
}

/// The device memory behind `memory`, if it belongs to `device`.
fn memory_of(device: u64, memory: u64) -> VkResult<Arc<Memory>> {
    MEMORIES
        .get(memory)
        .filter(|m| m.device == device)
        .ok_or(BAD_HANDLE)
}

/// `vkAllocateMemory` for a parsed chain.
pub fn allocate_memory(device_handle: u64, req: &AllocRequest) -> VkResult<u64> {
    let dev = device(device_handle)?;
    let (memory, va) = {
        let mut manager = lock(&dev.memory);
        let memory = manager.allocate(req).map_err(|e| e.result())?;
        // The device's backend is extmem-vgpu, which always has a GPU VM; were it not so,
        // the memory goes back rather than leak.
        match memory.gpu_va() {
            Ok(va) => (memory, va),
            Err(e) => {
                manager.free(memory);
                return Err(e.result());
            }
        }
    };
    Ok(MEMORIES.insert(Memory {
        device: device_handle,
        size: memory.size(),
        va,
        state: Mutex::new(MemoryState {
            memory: Some(memory),
            mapped: false,
        }),
    }))
}

/// `vkFreeMemory`. Null and unknown handles are ignored.
pub fn free_memory(device_handle: u64, memory: u64) {
    let Ok(dev) = device(device_handle) else {
        return;
    };
    if memory_of(device_handle, memory).is_err() {
        return;
    }
    let Some(memory) = MEMORIES.remove(memory) else {
        return;
    };
    let mut manager = lock(&dev.memory);
    let taken = lock(&memory.state).memory.take();
    if let Some(m) = taken {
        manager.free(m);
    }
}

/// `vkMapMemory`: the CPU address of byte `offset`.
pub fn map_memory(device_handle: u64, memory: u64, offset: u64, size: u64) -> VkResult<HostVa> {
    let dev = device(device_handle)?;
    let memory = memory_of(device_handle, memory)?;
    // VUID-vkMapMemory-offset-00679, -size-00680, -size-00681.
    let in_range = offset < memory.size
        && (size == vk::WHOLE_SIZE
            || (size != 0 && offset.checked_add(size).is_some_and(|e| e <= memory.size)));
    if !in_range {
        return Err(INVALID);
    }
    let mut manager = lock(&dev.memory);
    let mut state = lock(&memory.state);
    // VUID-vkMapMemory-memory-00678: not already mapped.
    if state.mapped {
        return Err(INVALID);
    }
    let m = state.memory.as_mut().ok_or(BAD_HANDLE)?;
    // A host-pointer import maps to the application's own pointer; types other than the
    // host-visible ones do not exist on this device, so every memory is mappable.
    let base = manager
        .map(m)
        .map_err(|_| vk::Result::ERROR_MEMORY_MAP_FAILED)?;
    let ptr = base
        .checked_add(offset)
        .ok_or(vk::Result::ERROR_MEMORY_MAP_FAILED)?;
    state.mapped = true;
    Ok(ptr)
}

/// `vkUnmapMemory`. The CPU mapping itself is kept until the memory is freed (mapping
/// again returns the same address), as most Mesa drivers do.
pub fn unmap_memory(device_handle: u64, memory: u64) {
    if let Ok(memory) = memory_of(device_handle, memory) {
        lock(&memory.state).mapped = false;
    }
}

/// `vkFlushMappedMemoryRanges` / `vkInvalidateMappedMemoryRanges`: every memory type is
/// host-coherent, so there is nothing to do but check the handles.
pub fn check_ranges(device_handle: u64, memories: &[u64]) -> VkResult<()> {
    for m in memories {
        memory_of(device_handle, *m)?;
    }
    Ok(())
}

#[cfg(not(windows))]
/// `vkGetMemoryFdKHR`.
pub fn memory_fd(
    device_handle: u64,
    memory: u64,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
) -> VkResult<OwnedFd> {
    let dev = device(device_handle)?;
    let memory = memory_of(device_handle, memory)?;
    let mut manager = lock(&dev.memory);
    let state = lock(&memory.state);
    let m = state.memory.as_ref().ok_or(BAD_HANDLE)?;
    manager.get_fd(m, handle_type).map_err(|e| e.result())
}

/// `vkGetMemoryWin32HandleKHR`.
pub fn memory_win32_handle(
    device_handle: u64,
    memory: u64,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
) -> VkResult<isize> {
    let dev = device(device_handle)?;
    let memory = memory_of(device_handle, memory)?;
    let mut manager = lock(&dev.memory);
    let mut state = lock(&memory.state);
    let m = state.memory.as_mut().ok_or(BAD_HANDLE)?;
    manager
        .get_win32_handle(m, handle_type)
        .map_err(|e| e.result())
}

/// `vkGetMemoryWin32HandleNV`.
pub fn memory_win32_handle_nv(
    device_handle: u64,
    memory: u64,
    handle_type: vk::ExternalMemoryHandleTypeFlagsNV,
) -> VkResult<isize> {
    let dev = device(device_handle)?;
    let memory = memory_of(device_handle, memory)?;
    let mut manager = lock(&dev.memory);
    let state = lock(&memory.state);
    let m = state.memory.as_ref().ok_or(BAD_HANDLE)?;
    manager
        .get_win32_handle_nv(m, handle_type)
        .map_err(|e| e.result())
}

/// `vkGetMemoryWin32HandlePropertiesKHR`.
pub fn win32_handle_properties(
    device_handle: u64,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
) -> VkResult<u32> {
    let dev = device(device_handle)?;
    let bits = lock(&dev.memory)
        .win32_handle_properties(handle_type)
        .map_err(|e| e.result())?;
    Ok(bits)
}

#[cfg(not(windows))]
/// `vkGetMemoryFdPropertiesKHR`: the memory types a dma-buf fd can be imported into.
pub fn memory_fd_properties(
    device_handle: u64,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    fd: BorrowedFd<'_>,
) -> VkResult<u32> {
    let dev = device(device_handle)?;
    let bits = lock(&dev.memory)
        .fd_properties(handle_type, fd)
        .map_err(|e| e.result())?;
    Ok(bits)
}

/// `vkGetMemoryHostPointerPropertiesEXT`.
pub fn host_pointer_properties(
    device_handle: u64,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    ptr: HostVa,
) -> VkResult<u32> {
    let dev = device(device_handle)?;
    let bits = lock(&dev.memory)
        .host_pointer_properties(handle_type, ptr)
        .map_err(|e| e.result())?;
    Ok(bits)
}

/// `vkCreateBuffer`. Sparse buffers are not supported (no sparse features).
pub fn create_buffer(device_handle: u64, size: u64, flags: vk::BufferCreateFlags) -> VkResult<u64> {
    device(device_handle)?;
    // VUID-VkBufferCreateInfo-size-00912.
    if size == 0 {
        return Err(INVALID);
    }
    if flags.intersects(
        vk::BufferCreateFlags::SPARSE_BINDING
            | vk::BufferCreateFlags::SPARSE_RESIDENCY
            | vk::BufferCreateFlags::SPARSE_ALIASED
            | vk::BufferCreateFlags::PROTECTED,
    ) {
        return Err(INVALID);
    }
    Ok(BUFFERS.insert(Buffer {
        device: device_handle,
        size,
        binding: Mutex::new(None),
    }))
}

/// `vkDestroyBuffer`.
pub fn destroy_buffer(device_handle: u64, buffer: u64) {
    if BUFFERS
        .get(buffer)
        .is_some_and(|b| b.device == device_handle)
    {
        BUFFERS.remove(buffer);
    }
}

/// `vkGetBufferMemoryRequirements` for a buffer of `size` bytes.
pub fn buffer_requirements(size: u64) -> vk::MemoryRequirements {
    vk::MemoryRequirements {
        size: size
            .checked_next_multiple_of(BUFFER_ALIGNMENT)
            .unwrap_or(size),
        alignment: BUFFER_ALIGNMENT,
        memory_type_bits: BUFFER_MEMORY_TYPES,
    }
}

/// The size of a live buffer of `device`.
pub fn buffer_size(device_handle: u64, buffer: u64) -> VkResult<u64> {
    BUFFERS
        .get(buffer)
        .filter(|b| b.device == device_handle)
        .map(|b| b.size)
        .ok_or(BAD_HANDLE)
}

/// `vkBindBufferMemory`.
pub fn bind_buffer(device_handle: u64, buffer: u64, memory: u64, offset: u64) -> VkResult<()> {
    let buf = BUFFERS
        .get(buffer)
        .filter(|b| b.device == device_handle)
        .ok_or(BAD_HANDLE)?;
    let reqs = buffer_requirements(buf.size);
    // VUID-vkBindBufferMemory-memory-01035, -memoryOffset-01031, -memoryOffset-01036,
    // -size-01037, -buffer-07459.
    bind_resource(device_handle, memory, offset, reqs, buf.size, &buf.binding)
}

/// Binds a buffer or image needing `reqs` (`used` bytes of it) at `offset` of `memory`:
/// a memory type it allows, an aligned offset, room in the memory, and not bound before.
fn bind_resource(
    device_handle: u64,
    memory: u64,
    offset: u64,
    reqs: vk::MemoryRequirements,
    used: u64,
    binding: &Mutex<Option<GpuVa>>,
) -> VkResult<()> {
    let mem = memory_of(device_handle, memory)?;
    let memory_type = lock(&mem.state)
        .memory
        .as_ref()
        .map(DeviceMemory::memory_type_index)
        .ok_or(BAD_HANDLE)?;
    let type_ok = reqs
        .memory_type_bits
        .checked_shr(memory_type)
        .is_some_and(|bits| bits & 1 == 1);
    let fits = offset < mem.size
        && offset
            .checked_add(reqs.size.min(used))
            .is_some_and(|end| end <= mem.size);
    if !type_ok || offset % reqs.alignment != 0 || !fits {
        return Err(INVALID);
    }
    let va = mem.va.checked_add(offset).ok_or(INVALID)?;
    let mut binding = lock(binding);
    if binding.is_some() {
        return Err(INVALID);
    }
    *binding = Some(va);
    Ok(())
}

/// `vkCreateImage`, for a create info already checked into `layout`.
pub fn create_image(device_handle: u64, layout: ImageLayout) -> VkResult<u64> {
    device(device_handle)?;
    Ok(IMAGES.insert(Image {
        device: device_handle,
        layout,
        binding: Mutex::new(None),
    }))
}

/// `vkDestroyImage`.
pub fn destroy_image(device_handle: u64, image: u64) {
    if IMAGES.get(image).is_some_and(|i| i.device == device_handle) {
        IMAGES.remove(image);
    }
}

/// The layout of a live image of `device`.
pub fn image_layout(device_handle: u64, image: u64) -> VkResult<ImageLayout> {
    IMAGES
        .get(image)
        .filter(|i| i.device == device_handle)
        .map(|i| i.layout)
        .ok_or(BAD_HANDLE)
}

/// `vkBindImageMemory` (`VUID-vkBindImageMemory-image-01044`, `-memory-01047`,
/// `-memoryOffset-01048`, `-size-01049`).
pub fn bind_image(device_handle: u64, image: u64, memory: u64, offset: u64) -> VkResult<()> {
    let img = IMAGES
        .get(image)
        .filter(|i| i.device == device_handle)
        .ok_or(BAD_HANDLE)?;
    let reqs = img.layout.requirements(BUFFER_MEMORY_TYPES);
    bind_resource(
        device_handle,
        memory,
        offset,
        reqs,
        img.layout.size,
        &img.binding,
    )
}

/// `vkCreateCommandPool`. Only the one queue family exists.
pub fn create_pool(device_handle: u64, family: u32) -> VkResult<u64> {
    device(device_handle)?;
    if family != physical_device::QUEUE_FAMILY {
        return Err(INVALID);
    }
    Ok(POOLS.insert(CommandPool {
        device: device_handle,
    }))
}

/// `vkDestroyCommandPool`: frees its command buffers too.
pub fn destroy_pool(device_handle: u64, pool: u64) {
    if POOLS.get(pool).is_none_or(|p| p.device != device_handle) {
        return;
    }
    POOLS.remove(pool);
    let Ok(dev) = device(device_handle) else {
        return;
    };
    let mut manager = lock(&dev.memory);
    for cb in COMMAND_BUFFERS.remove_where(|c| c.pool == pool) {
        release_staging(&mut manager, &mut lock(&cb.recording));
    }
}

/// `vkResetCommandPool`: resets every command buffer of the pool.
pub fn reset_pool(device_handle: u64, pool: u64) -> VkResult<()> {
    if POOLS.get(pool).is_none_or(|p| p.device != device_handle) {
        return Err(BAD_HANDLE);
    }
    let dev = device(device_handle)?;
    let mut manager = lock(&dev.memory);
    for cb in pool_buffers(pool) {
        reset_recording(&mut manager, &mut lock(&cb.recording));
    }
    Ok(())
}

fn pool_buffers(pool: u64) -> Vec<Arc<CommandBuffer>> {
    COMMAND_BUFFERS.filter(|c| c.pool == pool)
}

/// `vkAllocateCommandBuffers`: `count` new primary or secondary command buffers.
pub fn allocate_command_buffers(device_handle: u64, pool: u64, count: u32) -> VkResult<Vec<u64>> {
    if POOLS.get(pool).is_none_or(|p| p.device != device_handle) {
        return Err(BAD_HANDLE);
    }
    Ok((0..count)
        .map(|_| {
            COMMAND_BUFFERS.insert_dispatchable(CommandBuffer {
                device: device_handle,
                pool,
                recording: Mutex::new(Recording::default()),
            })
        })
        .collect())
}

/// `vkFreeCommandBuffers`. Null and unknown handles are ignored.
pub fn free_command_buffers(device_handle: u64, pool: u64, buffers: &[u64]) {
    let Ok(dev) = device(device_handle) else {
        return;
    };
    let mut manager = lock(&dev.memory);
    for h in buffers {
        if !COMMAND_BUFFERS
            .get(*h)
            .is_some_and(|c| c.device == device_handle && c.pool == pool)
        {
            continue;
        }
        if let Some(cb) = COMMAND_BUFFERS.remove(*h) {
            release_staging(&mut manager, &mut lock(&cb.recording));
        }
    }
}

fn release_staging(manager: &mut MemoryManager<DeviceBackend>, recording: &mut Recording) {
    for chunk in recording.staging.drain(..) {
        manager.free(chunk.memory);
    }
    *recording = Recording::default();
}

/// Empties a recording but keeps one staging chunk for the next one.
fn reset_recording(manager: &mut MemoryManager<DeviceBackend>, recording: &mut Recording) {
    let keep = recording.staging.pop();
    release_staging(manager, recording);
    if let Some(chunk) = keep {
        recording.staging.push(chunk);
    }
}

fn command_buffer(cb: u64) -> VkResult<Arc<CommandBuffer>> {
    COMMAND_BUFFERS.get(cb).ok_or(BAD_HANDLE)
}

/// `vkBeginCommandBuffer` and `vkResetCommandBuffer`: an empty recording.
pub fn reset_command_buffer(cb: u64) -> VkResult<()> {
    let cb = command_buffer(cb)?;
    let dev = device(cb.device)?;
    let mut manager = lock(&dev.memory);
    reset_recording(&mut manager, &mut lock(&cb.recording));
    Ok(())
}

/// `vkEndCommandBuffer`: the first invalid command's error, if any.
pub fn end_command_buffer(cb: u64) -> VkResult<()> {
    let cb = command_buffer(cb)?;
    let recording = lock(&cb.recording);
    match recording.error {
        Some(e) => Err(e.result()),
        None => Ok(()),
    }
}

/// Records `result`'s commands, or its error if it is the first one.
fn record(recording: &mut Recording, result: Result<Vec<Command>, RecordError>) {
    match result {
        Ok(cmds) => recording.cmds.extend(cmds),
        Err(e) => {
            recording.error.get_or_insert(e);
        }
    }
}

/// The GPU span of a live, bound buffer of `device`.
fn span(device_handle: u64, buffer: u64) -> Result<BufferSpan, RecordError> {
    let buf = BUFFERS
        .get(buffer)
        .filter(|b| b.device == device_handle)
        .ok_or(RecordError::UnknownBuffer)?;
    let va = (*lock(&buf.binding)).ok_or(RecordError::NotBound)?;
    Ok(BufferSpan { va, size: buf.size })
}

/// `vkCmdCopyBuffer`.
pub fn cmd_copy(cb: u64, src: u64, dst: u64, regions: Option<&[vk::BufferCopy]>) {
    let Ok(cb) = command_buffer(cb) else {
        return;
    };
    let result = regions
        .ok_or(RecordError::NullPointer)
        .and_then(|regions| commands::copy(span(cb.device, src)?, span(cb.device, dst)?, regions));
    record(&mut lock(&cb.recording), result);
}

/// The GPU span of a live, bound image of `device`.
fn image_span(device_handle: u64, image: u64) -> Result<ImageSpan, RecordError> {
    let img = IMAGES
        .get(image)
        .filter(|i| i.device == device_handle)
        .ok_or(RecordError::UnknownImage)?;
    let va = (*lock(&img.binding)).ok_or(RecordError::NotBound)?;
    Ok(ImageSpan {
        va,
        layout: img.layout,
    })
}

/// `vkCmdCopyBufferToImage` and `vkCmdCopyImageToBuffer`.
pub fn cmd_copy_buffer_image(
    cb: u64,
    buffer: u64,
    image: u64,
    layout: vk::ImageLayout,
    regions: Option<&[vk::BufferImageCopy]>,
    direction: Direction,
) {
    let Ok(cb) = command_buffer(cb) else {
        return;
    };
    let result = regions.ok_or(RecordError::NullPointer).and_then(|regions| {
        commands::buffer_image_copy(
            span(cb.device, buffer)?,
            image_span(cb.device, image)?,
            layout,
            regions,
            direction,
        )
    });
    record(&mut lock(&cb.recording), result);
}

/// `vkCmdFillBuffer`.
pub fn cmd_fill(cb: u64, dst: u64, offset: u64, size: u64, data: u32) {
    let Ok(cb) = command_buffer(cb) else {
        return;
    };
    let result = span(cb.device, dst)
        .and_then(|dst| commands::fill(dst, offset, size, data))
        .map(|cmd| cmd.into_iter().collect());
    record(&mut lock(&cb.recording), result);
}

/// Records `error` as if a command had broken it.
pub fn record_error(cb: u64, error: RecordError) {
    if let Ok(cb) = command_buffer(cb) {
        record(&mut lock(&cb.recording), Err(error));
    }
}

/// `vkCmdUpdateBuffer`: copies `data` into staging memory now (the application may reuse
/// its array as soon as the call returns) and records a copy from there.
pub fn cmd_update(cb: u64, dst: u64, offset: u64, data: Option<&[u8]>) {
    let Ok(cb) = command_buffer(cb) else {
        return;
    };
    let Ok(dev) = device(cb.device) else {
        return;
    };
    let mut manager = lock(&dev.memory);
    let mut recording = lock(&cb.recording);
    let result = (|| {
        let data = data.ok_or(RecordError::NullPointer)?;
        let size = u64::try_from(data.len()).map_err(|_| RecordError::BadSize {
            size: u64::MAX,
            buffer: 0,
        })?;
        let to = commands::update_target(span(cb.device, dst)?, offset, size)?;
        let from = stage(&mut manager, &mut recording, data, size)?;
        Ok(vec![commands::copy_from_staging(from, to, size)])
    })();
    record(&mut recording, result);
}

/// Copies `data` into the recording's staging memory, returning its GPU VA.
fn stage(
    manager: &mut MemoryManager<DeviceBackend>,
    recording: &mut Recording,
    data: &[u8],
    size: u64,
) -> Result<GpuVa, RecordError> {
    let placed = if recording.staging.is_empty() {
        None
    } else {
        recording.cursor.place(size)
    };
    let at = match placed {
        Some(at) => at,
        None => {
            let req = AllocRequest {
                size: StagingCursor::CHUNK,
                memory_type_index: physical_device::MEMORY_TYPE_DEVICE,
                ..AllocRequest::default()
            };
            let oom = |e: extmem::Error| RecordError::OutOfMemory(e.result());
            let mut memory = manager.allocate(&req).map_err(oom)?;
            let cpu = match manager.map(&mut memory) {
                Ok(cpu) => cpu,
                Err(e) => {
                    manager.free(memory);
                    return Err(oom(e));
                }
            };
            recording.staging.push(Staging { memory, cpu });
            recording.cursor = StagingCursor::default();
            recording
                .cursor
                .place(size)
                .ok_or(RecordError::BadSize { size, buffer: 0 })?
        }
    };
    let chunk = recording
        .staging
        .last()
        .ok_or(RecordError::OutOfMemory(vk::Result::ERROR_UNKNOWN))?;
    let cpu = chunk
        .cpu
        .checked_add(at)
        .ok_or(RecordError::BadSize { size, buffer: 0 })?;
    let gpu = chunk
        .memory
        .gpu_va()
        .map_err(|e| RecordError::OutOfMemory(e.result()))?
        .checked_add(at)
        .ok_or(RecordError::BadSize { size, buffer: 0 })?;
    // SAFETY: `cpu` is `at` bytes into the chunk's live CPU mapping, which the recording
    // owns and nothing else writes; the cursor reserved `[at, at + size)` inside the
    // chunk for this data.
    unsafe { crate::host_memory::write(cpu, data) };
    Ok(gpu)
}

/// `vkQueueSubmit`: runs every command buffer in order on the copy engine, then
/// signals `fence`. A GPU fault or a kernel refusal is `VK_ERROR_DEVICE_LOST`.
pub fn submit(queue: u64, command_buffers: &[u64], fence: Option<u64>) -> VkResult<()> {
    let q = QUEUES.get(queue).ok_or(BAD_HANDLE)?;
    let dev = device(q.device)?;
    let fence = match fence {
        Some(f) => Some(
            FENCES
                .get(f)
                .filter(|f| f.device == q.device)
                .ok_or(BAD_HANDLE)?,
        ),
        None => None,
    };
    let buffers = command_buffers
        .iter()
        .map(|h| {
            command_buffer(*h)
                .ok()
                .filter(|c| c.device == q.device)
                .ok_or(BAD_HANDLE)
        })
        .collect::<VkResult<Vec<_>>>()?;
    let mut manager = lock(&dev.memory);
    for cb in &buffers {
        let recording = lock(&cb.recording);
        // VUID-vkQueueSubmit-pCommandBuffers-00072: only executable command buffers.
        if recording.error.is_some() {
            return Err(INVALID);
        }
        let chunk_len = usize::try_from(MAX_COMMANDS).unwrap_or(1);
        for chunk in recording.cmds.chunks(chunk_len) {
            // Both devices the ICD opens have a copy engine; a backend without one could
            // run nothing, which is as good as lost.
            manager
                .backend_mut()
                .engine()
                .ok_or(vk::Result::ERROR_DEVICE_LOST)?
                .exec(chunk)
                .map_err(|e: ExecError| match e {
                    ExecError::Fault(_) | ExecError::Kernel(_) => vk::Result::ERROR_DEVICE_LOST,
                })?;
        }
    }
    if let Some(fence) = fence {
        fence.signaled.store(true, Ordering::Release);
    }
    Ok(())
}

/// `vkQueueWaitIdle`, `vkDeviceWaitIdle`: submissions finish before they return.
pub fn wait_idle_queue(queue: u64) -> VkResult<()> {
    QUEUES.get(queue).map(|_| ()).ok_or(BAD_HANDLE)
}

/// `vkCreateFence`.
pub fn create_fence(device_handle: u64, signaled: bool) -> VkResult<u64> {
    device(device_handle)?;
    Ok(FENCES.insert(Fence {
        device: device_handle,
        signaled: AtomicBool::new(signaled),
    }))
}

/// `vkDestroyFence`.
pub fn destroy_fence(device_handle: u64, fence: u64) {
    if FENCES.get(fence).is_some_and(|f| f.device == device_handle) {
        FENCES.remove(fence);
    }
}

fn fence(device_handle: u64, fence: u64) -> VkResult<Arc<Fence>> {
    FENCES
        .get(fence)
        .filter(|f| f.device == device_handle)
        .ok_or(BAD_HANDLE)
}

/// `vkGetFenceStatus`.
pub fn fence_status(device_handle: u64, f: u64) -> VkResult<bool> {
    Ok(fence(device_handle, f)?.signaled.load(Ordering::Acquire))
}

/// `vkResetFences`.
pub fn reset_fences(device_handle: u64, fences: &[u64]) -> VkResult<()> {
    let fences = fences
        .iter()
        .map(|f| fence(device_handle, *f))
        .collect::<VkResult<Vec<_>>>()?;
    for f in fences {
        f.signaled.store(false, Ordering::Release);
    }
    Ok(())
}

/// `vkWaitForFences`: work is synchronous, so a fence that is not signalled now was never
/// submitted; only another thread's submit could signal it, and we do not wait for that:
/// the answer is `VK_TIMEOUT` at once.
pub fn wait_for_fences(device_handle: u64, fences: &[u64], wait_all: bool) -> VkResult<bool> {
    let states = fences
        .iter()
        .map(|f| fence_status(device_handle, *f))
        .collect::<VkResult<Vec<bool>>>()?;
    Ok(if wait_all {
        states.iter().all(|s| *s)
    } else {
        states.iter().any(|s| *s)
    })
}
