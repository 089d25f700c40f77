//! The driver's objects and what each Vulkan command does to them, in plain Rust: handles
//! in, `Result<_, vk::Result>` out. The C entry points in [`crate::entry`] only convert
//! pointers to these arguments and back.
//!
//! Lock order, everywhere: a device's memory manager, then a command buffer's recording,
//! then a buffer's binding or a memory's state. Fences, semaphores and submission are
//! [`crate::sync`]'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ash::vk::{self, Handle};
use extmem::alloc_info::AllocRequest;
use extmem::backend::Backend;
use extmem::exec::Command;
use extmem::memory::{DeviceMemory, MemoryManager};
use extmem::sync::Syncobjs;
use extmem::va_allocator::VaAllocator;
use extmem_hw::{GpuVa, HostVa};
#[cfg(not(windows))]
use rustix::fd::{BorrowedFd, OwnedFd};

use crate::commands::{self, BufferSpan, Direction, ImageSpan, RecordError, StagingCursor};
use crate::device_backend::DeviceBackend;
use crate::error::{BindTarget, IcdError, IcdResult, Rule};
use crate::handles::{lock, DeviceChild, Registry};
use crate::image::ImageLayout;
use crate::physical_device::{self, DeviceInfo, BUFFER_ALIGNMENT, BUFFER_MEMORY_TYPES};
use crate::queue::SubmitQueue;
use crate::sync::{sync_error, FENCES, SEMAPHORES};

/// `VkInstance`.
#[derive(Debug)]
pub struct Instance {
    /// Its physical devices' handles.
    pub physical_devices: Vec<vk::PhysicalDevice>,
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
    /// Fences, semaphores and the queue's timeline stand on these.
    pub syncs: Arc<dyn Syncobjs>,
    /// A page of device memory that a batch without commands writes 4 bytes of, so that
    /// it still waits and signals in queue order (the copy engine has no empty job).
    pub scratch: GpuVa,
    /// The scratch page's memory, freed with the device.
    scratch_memory: Mutex<Option<DeviceMemory>>,
    /// The backend's failed-job count when the device was created.
    faults_at_start: u64,
    /// Set once the device is lost; it never comes back (the specification's rule).
    lost: AtomicBool,
}

impl Device {
    /// `VK_ERROR_DEVICE_LOST` once a job of the device has failed, as Mesa's runtime
    /// asks a driver's `check_status` after every wait: a wait says that a point is
    /// signalled, not whether the work behind it ran, so the backend's count of failed
    /// jobs ([`Syncobjs::job_faults`]) is compared with its value at creation.
    pub fn check_status(&self) -> IcdResult<()> {
        let faults = self.syncs.job_faults().map_err(sync_error)?;
        let failed_jobs = faults.saturating_sub(self.faults_at_start);
        if failed_jobs > 0 {
            self.lost.store(true, Ordering::SeqCst);
        }
        if self.lost.load(Ordering::SeqCst) {
            return Err(IcdError::DeviceLost { failed_jobs });
        }
        Ok(())
    }

    /// Marks the device lost for a reason the failed-job count does not show (a
    /// held-back submission the kernel refused).
    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

/// `VkQueue`.
#[derive(Debug)]
pub struct Queue {
    /// The device.
    pub device: vk::Device,
    /// Its submissions: the timeline its jobs signal, and the jobs held back.
    pub submits: Arc<SubmitQueue>,
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
    pub device: vk::Device,
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
    pub device: vk::Device,
    /// `VkBufferCreateInfo::size`.
    pub size: u64,
    /// GPU VA of byte 0 once memory is bound.
    pub binding: Mutex<Option<GpuVa>>,
}

/// `VkImage`: memory with a row pitch, whichever its tiling.
#[derive(Debug)]
pub struct Image {
    /// The device.
    pub device: vk::Device,
    /// Format, extent, row pitch, size, usage.
    pub layout: ImageLayout,
    /// GPU VA of byte 0 once memory is bound.
    pub binding: Mutex<Option<GpuVa>>,
}

/// `VkCommandPool`.
#[derive(Debug)]
pub struct CommandPool {
    /// The device.
    pub device: vk::Device,
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
    pub device: vk::Device,
    /// The pool it came from.
    pub pool: vk::CommandPool,
    /// The commands.
    pub recording: Mutex<Recording>,
}

/// Implements [`DeviceChild`] for the objects that name their device.
macro_rules! device_children {
    ($($object:ty),+) => {
        $(impl DeviceChild for $object {
            fn device(&self) -> vk::Device {
                self.device
            }
        })+
    };
}

device_children!(Queue, Memory, Buffer, Image, CommandPool, CommandBuffer);

/// Bytes of a device's scratch page.
const SCRATCH_SIZE: u64 = 4096;

/// Live instances.
pub static INSTANCES: Registry<vk::Instance, Instance> = Registry::new();
/// Live physical devices.
pub static PHYSICAL_DEVICES: Registry<vk::PhysicalDevice, PhysicalDevice> = Registry::new();
/// Live devices.
pub static DEVICES: Registry<vk::Device, Device> = Registry::new();
/// Live queues.
pub static QUEUES: Registry<vk::Queue, Queue> = Registry::new();
/// Live memory objects.
pub static MEMORIES: Registry<vk::DeviceMemory, Memory> = Registry::new();
/// Live buffers.
pub static BUFFERS: Registry<vk::Buffer, Buffer> = Registry::new();
/// Live images.
pub static IMAGES: Registry<vk::Image, Image> = Registry::new();
/// Live command pools.
pub static POOLS: Registry<vk::CommandPool, CommandPool> = Registry::new();
/// Live command buffers.
pub static COMMAND_BUFFERS: Registry<vk::CommandBuffer, CommandBuffer> = Registry::new();

/// `vkCreateInstance` over the devices found (by [`physical_device::devices`]).
pub fn create_instance(infos: Vec<DeviceInfo>) -> vk::Instance {
    let physical_devices = infos
        .into_iter()
        .map(|info| PHYSICAL_DEVICES.insert_dispatchable(PhysicalDevice { info }))
        .collect();
    INSTANCES.insert_dispatchable(Instance { physical_devices })
}

/// `vkDestroyInstance`. Devices must have been destroyed first (the application's
/// obligation); their handles stay valid until then.
pub fn destroy_instance(instance: vk::Instance) {
    if let Some(instance) = INSTANCES.remove(instance) {
        for pd in &instance.physical_devices {
            PHYSICAL_DEVICES.remove(*pd);
        }
    }
}

/// `vkCreateDevice`: opens the node again (or starts a software device), so the device
/// gets its own GPU VM.
pub fn create_device(physical_device: vk::PhysicalDevice) -> IcdResult<vk::Device> {
    let pd = PHYSICAL_DEVICES.live(physical_device)?;
    let info = pd.info.clone();
    // The backend says no more than that the node could not be opened.
    let backend = DeviceBackend::open(&info).map_err(IcdError::DeviceOpen)?;
    let (start, end) = info.va_range();
    let va = VaAllocator::new(GpuVa::new(start), GpuVa::new(end), info.page_sizes);
    // Both backends the ICD opens have synchronisation objects.
    let syncs = backend.syncobjs().ok_or(IcdError::NoCopyEngine)?;
    let mut manager =
        MemoryManager::new(backend, info.limits(), va, physical_device::DMA_BUF_TYPES);
    let req = AllocRequest {
        size: SCRATCH_SIZE,
        memory_type_index: physical_device::MEMORY_TYPE_DEVICE,
        ..AllocRequest::default()
    };
    let scratch_memory = manager.allocate(&req)?;
    let scratch = match scratch_memory.gpu_va() {
        Ok(va) => va,
        Err(e) => {
            manager.free(scratch_memory);
            return Err(e.into());
        }
    };
    let submits = Arc::new(SubmitQueue::new(Arc::clone(&syncs))?);
    let faults_at_start = match syncs.job_faults() {
        Ok(n) => n,
        Err(e) => {
            manager.free(scratch_memory);
            return Err(sync_error(e));
        }
    };
    let device = DEVICES.insert_dispatchable(Device {
        info,
        memory: Mutex::new(manager),
        syncs,
        scratch,
        scratch_memory: Mutex::new(Some(scratch_memory)),
        faults_at_start,
        lost: AtomicBool::new(false),
    });
    QUEUES.insert_dispatchable(Queue { device, submits });
    Ok(device)
}

/// The device's queue.
pub fn device_queue(device: vk::Device) -> Option<vk::Queue> {
    QUEUES.find(|q| q.device == device)
}

/// `vkDestroyDevice`: releases whatever the application left behind (it should have
/// destroyed everything; the kernel would release it with the file anyway).
pub fn destroy_device(device: vk::Device) {
    let Some(dev) = DEVICES.remove(device) else {
        return;
    };
    // The submit thread goes first: it holds the device and sends work to it.
    for queue in QUEUES.remove_where(|q| q.device == device) {
        queue.submits.stop();
    }
    BUFFERS.remove_where(|b| b.device == device);
    IMAGES.remove_where(|i| i.device == device);
    POOLS.remove_where(|p| p.device == device);
    FENCES.remove_where(|f| f.device == device);
    SEMAPHORES.remove_where(|s| s.device == device);
    let mut manager = lock(&dev.memory);
    if let Some(scratch) = lock(&dev.scratch_memory).take() {
        manager.free(scratch);
    }
    for cb in COMMAND_BUFFERS.remove_where(|c| c.device == device) {
        release_staging(&mut manager, &mut lock(&cb.recording));
    }
    for memory in MEMORIES.remove_where(|m| m.device == device) {
        if let Some(m) = lock(&memory.state).memory.take() {
            manager.free(m);
        }
    }
}

fn device(device: vk::Device) -> IcdResult<Arc<Device>> {
    DEVICES.live(device)
}

/// The device memory behind `memory`, if it belongs to `device`.
fn memory_of(device: vk::Device, memory: vk::DeviceMemory) -> IcdResult<Arc<Memory>> {
    MEMORIES.live_of(device, memory)
}

/// `vkAllocateMemory` for a parsed chain.
pub fn allocate_memory(
    device_handle: vk::Device,
    req: &AllocRequest,
) -> IcdResult<vk::DeviceMemory> {
    let dev = device(device_handle)?;
    let (memory, va) = {
        let mut manager = lock(&dev.memory);
        let memory = manager.allocate(req)?;
        // The device's backend is extmem-vgpu, which always has a GPU VM; were it not so,
        // the memory goes back rather than leak.
        match memory.gpu_va() {
            Ok(va) => (memory, va),
            Err(e) => {
                manager.free(memory);
                return Err(e.into());
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
pub fn free_memory(device_handle: vk::Device, memory: vk::DeviceMemory) {
    let Ok(dev) = device(device_handle) else {
        return;
    };
    let Some(memory) = MEMORIES.remove_of(device_handle, memory) else {
        return;
    };
    let mut manager = lock(&dev.memory);
    let taken = lock(&memory.state).memory.take();
    if let Some(m) = taken {
        manager.free(m);
    }
}

/// `vkMapMemory`: the CPU address of byte `offset`.
pub fn map_memory(
    device_handle: vk::Device,
    memory: vk::DeviceMemory,
    offset: u64,
    size: u64,
) -> IcdResult<HostVa> {
    let dev = device(device_handle)?;
    let handle = memory;
    let memory = memory_of(device_handle, handle)?;
    check_map_range(offset, size, memory.size)?;
    let mut manager = lock(&dev.memory);
    let mut state = lock(&memory.state);
    if state.mapped {
        return Err(IcdError::rule(Rule::MapTwice, handle.as_raw()));
    }
    let m = state
        .memory
        .as_mut()
        .ok_or_else(|| IcdError::unknown(handle))?;
    // A host-pointer import maps to the application's own pointer; types other than the
    // host-visible ones do not exist on this device, so every memory is mappable.
    let base = manager.map(m)?;
    let ptr = base
        .checked_add(offset)
        .ok_or(IcdError::MapAddress { addr: base.get() })?;
    state.mapped = true;
    Ok(ptr)
}

/// `[offset, offset + size)` (`size` may be `VK_WHOLE_SIZE`) inside memory of `memory_size`
/// bytes.
fn check_map_range(offset: u64, size: u64, memory_size: u64) -> IcdResult<()> {
    if offset >= memory_size {
        return Err(IcdError::rule(Rule::MapOffset, offset));
    }
    if size == vk::WHOLE_SIZE {
        return Ok(());
    }
    if size == 0 {
        return Err(IcdError::rule(Rule::MapSizeZero, size));
    }
    if offset.checked_add(size).is_none_or(|end| end > memory_size) {
        return Err(IcdError::rule(Rule::MapSizeRange, size));
    }
    Ok(())
}

/// `vkUnmapMemory`. The CPU mapping itself is kept until the memory is freed (mapping
/// again returns the same address), as most Mesa drivers do.
pub fn unmap_memory(device_handle: vk::Device, memory: vk::DeviceMemory) {
    if let Ok(memory) = memory_of(device_handle, memory) {
        lock(&memory.state).mapped = false;
    }
}

/// `vkFlushMappedMemoryRanges` / `vkInvalidateMappedMemoryRanges`: every memory type is
/// host-coherent, so there is nothing to do but check the handles.
pub fn check_ranges(
    device_handle: vk::Device,
    memories: impl IntoIterator<Item = vk::DeviceMemory>,
) -> IcdResult<()> {
    for m in memories {
        memory_of(device_handle, m)?;
    }
    Ok(())
}

#[cfg(not(windows))]
/// `vkGetMemoryFdKHR`.
pub fn memory_fd(
    device_handle: vk::Device,
    memory: vk::DeviceMemory,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
) -> IcdResult<OwnedFd> {
    with_memory(device_handle, memory, |manager, m| {
        manager.get_fd(m, handle_type)
    })
}

/// Runs `f` on the device's memory manager and the live memory object `memory` of
/// `device` (the exports), turning the manager's refusal into the command's.
fn with_memory<R>(
    device_handle: vk::Device,
    memory: vk::DeviceMemory,
    f: impl FnOnce(&mut MemoryManager<DeviceBackend>, &mut DeviceMemory) -> Result<R, extmem::Error>,
) -> IcdResult<R> {
    let dev = device(device_handle)?;
    let handle = memory;
    let memory = memory_of(device_handle, handle)?;
    let mut manager = lock(&dev.memory);
    let mut state = lock(&memory.state);
    let m = state
        .memory
        .as_mut()
        .ok_or_else(|| IcdError::unknown(handle))?;
    Ok(f(&mut manager, m)?)
}

/// `vkGetMemoryWin32HandleKHR`.
pub fn memory_win32_handle(
    device_handle: vk::Device,
    memory: vk::DeviceMemory,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
) -> IcdResult<isize> {
    with_memory(device_handle, memory, |manager, m| {
        manager.get_win32_handle(m, handle_type)
    })
}

/// `vkGetMemoryWin32HandleNV`.
pub fn memory_win32_handle_nv(
    device_handle: vk::Device,
    memory: vk::DeviceMemory,
    handle_type: vk::ExternalMemoryHandleTypeFlagsNV,
) -> IcdResult<isize> {
    with_memory(device_handle, memory, |manager, m| {
        manager.get_win32_handle_nv(m, handle_type)
    })
}

/// `vkGetMemoryWin32HandlePropertiesKHR`.
pub fn win32_handle_properties(
    device_handle: vk::Device,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
) -> IcdResult<u32> {
    with_manager(device_handle, |manager| {
        manager.win32_handle_properties(handle_type)
    })
}

/// Runs `f` on the device's memory manager (the handle-properties queries), turning the
/// manager's refusal into the command's.
fn with_manager<R>(
    device_handle: vk::Device,
    f: impl FnOnce(&mut MemoryManager<DeviceBackend>) -> Result<R, extmem::Error>,
) -> IcdResult<R> {
    let dev = device(device_handle)?;
    let mut manager = lock(&dev.memory);
    Ok(f(&mut manager)?)
}

#[cfg(not(windows))]
/// `vkGetMemoryFdPropertiesKHR`: the memory types a dma-buf fd can be imported into.
pub fn memory_fd_properties(
    device_handle: vk::Device,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    fd: BorrowedFd<'_>,
) -> IcdResult<u32> {
    with_manager(device_handle, |manager| {
        manager.fd_properties(handle_type, fd)
    })
}

/// `vkGetMemoryHostPointerPropertiesEXT`.
pub fn host_pointer_properties(
    device_handle: vk::Device,
    handle_type: vk::ExternalMemoryHandleTypeFlags,
    ptr: HostVa,
) -> IcdResult<u32> {
    with_manager(device_handle, |manager| {
        manager.host_pointer_properties(handle_type, ptr)
    })
}

/// `vkCreateBuffer`. Sparse buffers are not supported (no sparse features).
pub fn create_buffer(
    device_handle: vk::Device,
    size: u64,
    flags: vk::BufferCreateFlags,
) -> IcdResult<vk::Buffer> {
    device(device_handle)?;
    if size == 0 {
        return Err(IcdError::rule(Rule::BufferSize, size));
    }
    // The device has none of the features these flags need.
    let featureless = [
        (
            vk::BufferCreateFlags::SPARSE_BINDING,
            Rule::BufferSparseBinding,
        ),
        (
            vk::BufferCreateFlags::SPARSE_RESIDENCY,
            Rule::BufferSparseResidency,
        ),
        (
            vk::BufferCreateFlags::SPARSE_ALIASED,
            Rule::BufferSparseAliased,
        ),
        (vk::BufferCreateFlags::PROTECTED, Rule::BufferProtected),
    ];
    if let Some((_, rule)) = featureless.iter().find(|(flag, _)| flags.contains(*flag)) {
        return Err(IcdError::rule(*rule, u64::from(flags.as_raw())));
    }
    Ok(BUFFERS.insert(Buffer {
        device: device_handle,
        size,
        binding: Mutex::new(None),
    }))
}

/// `vkDestroyBuffer`.
pub fn destroy_buffer(device_handle: vk::Device, buffer: vk::Buffer) {
    BUFFERS.remove_of(device_handle, buffer);
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
pub fn buffer_size(device_handle: vk::Device, buffer: vk::Buffer) -> IcdResult<u64> {
    Ok(BUFFERS.live_of(device_handle, buffer)?.size)
}

/// `vkBindBufferMemory`.
pub fn bind_buffer(
    device_handle: vk::Device,
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    offset: u64,
) -> IcdResult<()> {
    let buf = BUFFERS.live_of(device_handle, buffer)?;
    let reqs = buffer_requirements(buf.size);
    let target = (BindTarget::Buffer, &buf.binding);
    bind_resource(device_handle, memory, offset, reqs, buf.size, target)
}

/// Binds a buffer or image needing `reqs` (`used` bytes of it) at `offset` of `memory`:
/// not bound before, an offset inside the memory, a memory type it allows, an aligned
/// offset, and room in the memory (the rules of `target`, in that order).
fn bind_resource(
    device_handle: vk::Device,
    memory: vk::DeviceMemory,
    offset: u64,
    reqs: vk::MemoryRequirements,
    used: u64,
    (target, binding): (BindTarget, &Mutex<Option<GpuVa>>),
) -> IcdResult<()> {
    let [bound, inside, memory_type, alignment, fits] = target.rules();
    let mem = memory_of(device_handle, memory)?;
    let type_index = lock(&mem.state)
        .memory
        .as_ref()
        .map(DeviceMemory::memory_type_index)
        .ok_or_else(|| IcdError::unknown(memory))?;
    let mut binding = lock(binding);
    if binding.is_some() {
        return Err(IcdError::rule(bound, memory.as_raw()));
    }
    if offset >= mem.size {
        return Err(IcdError::rule(inside, offset));
    }
    let type_ok = reqs
        .memory_type_bits
        .checked_shr(type_index)
        .is_some_and(|bits| bits & 1 == 1);
    if !type_ok {
        return Err(IcdError::rule(memory_type, u64::from(type_index)));
    }
    if offset % reqs.alignment != 0 {
        return Err(IcdError::rule(alignment, offset));
    }
    let end = offset.checked_add(reqs.size.min(used));
    if end.is_none_or(|end| end > mem.size) {
        return Err(IcdError::rule(fits, reqs.size));
    }
    let va = mem
        .va
        .checked_add(offset)
        .ok_or(IcdError::rule(inside, offset))?;
    *binding = Some(va);
    Ok(())
}

/// `vkCreateImage`, for a create info already checked into `layout`.
pub fn create_image(device_handle: vk::Device, layout: ImageLayout) -> IcdResult<vk::Image> {
    device(device_handle)?;
    Ok(IMAGES.insert(Image {
        device: device_handle,
        layout,
        binding: Mutex::new(None),
    }))
}

/// `vkDestroyImage`.
pub fn destroy_image(device_handle: vk::Device, image: vk::Image) {
    IMAGES.remove_of(device_handle, image);
}

/// The layout of a live image of `device`.
pub fn image_layout(device_handle: vk::Device, image: vk::Image) -> IcdResult<ImageLayout> {
    Ok(IMAGES.live_of(device_handle, image)?.layout)
}

/// `vkBindImageMemory` (`VUID-vkBindImageMemory-image-01044`, `-memory-01047`,
/// `-memoryOffset-01048`, `-size-01049`).
pub fn bind_image(
    device_handle: vk::Device,
    image: vk::Image,
    memory: vk::DeviceMemory,
    offset: u64,
) -> IcdResult<()> {
    let img = IMAGES.live_of(device_handle, image)?;
    let reqs = img.layout.requirements(BUFFER_MEMORY_TYPES);
    let target = (BindTarget::Image, &img.binding);
    bind_resource(device_handle, memory, offset, reqs, img.layout.size, target)
}

/// `vkCreateCommandPool`. Only the one queue family exists.
pub fn create_pool(device_handle: vk::Device, family: u32) -> IcdResult<vk::CommandPool> {
    device(device_handle)?;
    if family != physical_device::QUEUE_FAMILY {
        return Err(IcdError::rule(Rule::PoolFamily, u64::from(family)));
    }
    Ok(POOLS.insert(CommandPool {
        device: device_handle,
    }))
}

/// `vkDestroyCommandPool`: frees its command buffers too.
pub fn destroy_pool(device_handle: vk::Device, pool: vk::CommandPool) {
    if POOLS.remove_of(device_handle, pool).is_none() {
        return;
    }
    let Ok(dev) = device(device_handle) else {
        return;
    };
    let mut manager = lock(&dev.memory);
    for cb in COMMAND_BUFFERS.remove_where(|c| c.pool == pool) {
        release_staging(&mut manager, &mut lock(&cb.recording));
    }
}

/// `vkResetCommandPool`: resets every command buffer of the pool.
pub fn reset_pool(device_handle: vk::Device, pool: vk::CommandPool) -> IcdResult<()> {
    POOLS.live_of(device_handle, pool)?;
    let dev = device(device_handle)?;
    let mut manager = lock(&dev.memory);
    for cb in pool_buffers(pool) {
        reset_recording(&mut manager, &mut lock(&cb.recording));
    }
    Ok(())
}

fn pool_buffers(pool: vk::CommandPool) -> Vec<Arc<CommandBuffer>> {
    COMMAND_BUFFERS.filter(|c| c.pool == pool)
}

/// `vkAllocateCommandBuffers`: `count` new primary or secondary command buffers.
pub fn allocate_command_buffers(
    device_handle: vk::Device,
    pool: vk::CommandPool,
    count: u32,
) -> IcdResult<Vec<vk::CommandBuffer>> {
    POOLS.live_of(device_handle, pool)?;
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
pub fn free_command_buffers(
    device_handle: vk::Device,
    pool: vk::CommandPool,
    buffers: &[vk::CommandBuffer],
) {
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

fn command_buffer(cb: vk::CommandBuffer) -> IcdResult<Arc<CommandBuffer>> {
    COMMAND_BUFFERS.live(cb)
}

/// `vkBeginCommandBuffer` and `vkResetCommandBuffer`: an empty recording.
pub fn reset_command_buffer(cb: vk::CommandBuffer) -> IcdResult<()> {
    let cb = command_buffer(cb)?;
    let dev = device(cb.device)?;
    let mut manager = lock(&dev.memory);
    reset_recording(&mut manager, &mut lock(&cb.recording));
    Ok(())
}

/// `vkEndCommandBuffer`: the first invalid command's error, if any.
pub fn end_command_buffer(cb: vk::CommandBuffer) -> IcdResult<()> {
    let cb = command_buffer(cb)?;
    let recording = lock(&cb.recording);
    match recording.error {
        Some(e) => Err(e.into()),
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
fn span(device_handle: vk::Device, buffer: vk::Buffer) -> Result<BufferSpan, RecordError> {
    let buf = BUFFERS
        .get_of(device_handle, buffer)
        .ok_or(RecordError::UnknownBuffer)?;
    let va = (*lock(&buf.binding)).ok_or(RecordError::NotBound)?;
    Ok(BufferSpan { va, size: buf.size })
}

/// `vkCmdCopyBuffer`.
pub fn cmd_copy(
    cb: vk::CommandBuffer,
    src: vk::Buffer,
    dst: vk::Buffer,
    regions: Option<&[vk::BufferCopy]>,
) {
    let Ok(cb) = command_buffer(cb) else {
        return;
    };
    let result = regions
        .ok_or(RecordError::NullPointer)
        .and_then(|regions| commands::copy(span(cb.device, src)?, span(cb.device, dst)?, regions));
    record(&mut lock(&cb.recording), result);
}

/// The GPU span of a live, bound image of `device`.
fn image_span(device_handle: vk::Device, image: vk::Image) -> Result<ImageSpan, RecordError> {
    let img = IMAGES
        .get_of(device_handle, image)
        .ok_or(RecordError::UnknownImage)?;
    let va = (*lock(&img.binding)).ok_or(RecordError::NotBound)?;
    Ok(ImageSpan {
        va,
        layout: img.layout,
    })
}

/// `vkCmdCopyBufferToImage` and `vkCmdCopyImageToBuffer`.
pub fn cmd_copy_buffer_image(
    cb: vk::CommandBuffer,
    buffer: vk::Buffer,
    image: vk::Image,
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
pub fn cmd_fill(cb: vk::CommandBuffer, dst: vk::Buffer, offset: u64, size: u64, data: u32) {
    let Ok(cb) = command_buffer(cb) else {
        return;
    };
    let result = span(cb.device, dst)
        .and_then(|dst| commands::fill(dst, offset, size, data))
        .map(|cmd| cmd.into_iter().collect());
    record(&mut lock(&cb.recording), result);
}

/// Records `error` as if a command had broken it.
pub fn record_error(cb: vk::CommandBuffer, error: RecordError) {
    if let Ok(cb) = command_buffer(cb) {
        record(&mut lock(&cb.recording), Err(error));
    }
}

/// `vkCmdUpdateBuffer`: copies `data` into staging memory now (the application may reuse
/// its array as soon as the call returns) and records a copy from there.
pub fn cmd_update(cb: vk::CommandBuffer, dst: vk::Buffer, offset: u64, data: Option<&[u8]>) {
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
            let oom = RecordError::OutOfMemory;
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
    // Never empty here: `at` was placed in the last chunk, or in the one pushed above.
    let chunk = recording
        .staging
        .last()
        .ok_or(RecordError::OutOfMemory(extmem::Error::OutOfHostMemory))?;
    let cpu = chunk
        .cpu
        .checked_add(at)
        .ok_or(RecordError::BadSize { size, buffer: 0 })?;
    let gpu = chunk
        .memory
        .gpu_va()
        .map_err(RecordError::OutOfMemory)?
        .checked_add(at)
        .ok_or(RecordError::BadSize { size, buffer: 0 })?;
    // SAFETY: `cpu` is `at` bytes into the chunk's live CPU mapping, which the recording
    // owns and nothing else writes; the cursor reserved `[at, at + size)` inside the
    // chunk for this data.
    unsafe { crate::host_memory::write(cpu, data) };
    Ok(gpu)
}
