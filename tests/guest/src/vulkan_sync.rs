//! Fences and semaphores on a [`Gpu`]: create them (exportable or not, binary or
//! timeline), submit command buffers that wait for and signal them, wait on the host,
//! and move their payloads through fds (`VK_KHR_external_semaphore_fd`,
//! `VK_KHR_external_fence_fd`). Each helper says which Vulkan call failed.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use ash::vk;

use crate::ktap::{CheckResult, Failure};
use crate::vulkan::{Gpu, VkResult};

/// Semaphore handle types.
pub type SemTypes = vk::ExternalSemaphoreHandleTypeFlags;
/// Fence handle types.
pub type FenceTypes = vk::ExternalFenceHandleTypeFlags;

fn call<T>(what: &str, result: ash::prelude::VkResult<T>) -> VkResult<T> {
    result.map_err(|e| format!("{what}: {e}"))
}

/// One batch of [`Gpu::submit_batches`]: `(semaphore, value)` pairs (the value is ignored for
/// binary semaphores) around the command buffers.
#[derive(Debug, Default, Clone)]
pub struct SyncBatch {
    /// Waited for before the commands run.
    pub waits: Vec<(vk::Semaphore, u64)>,
    /// The command buffers.
    pub command_buffers: Vec<vk::CommandBuffer>,
    /// Signalled when they have run.
    pub signals: Vec<(vk::Semaphore, u64)>,
}

impl Gpu<'_> {
    /// `VK_KHR_external_semaphore_fd`'s functions.
    pub fn semaphore_fd(&self) -> ash::khr::external_semaphore_fd::Device {
        ash::khr::external_semaphore_fd::Device::new(&self.instance.instance, &self.device)
    }

    /// `VK_KHR_external_fence_fd`'s functions.
    pub fn fence_fd(&self) -> ash::khr::external_fence_fd::Device {
        ash::khr::external_fence_fd::Device::new(&self.instance.instance, &self.device)
    }

    /// `VK_KHR_timeline_semaphore`'s functions.
    pub fn timeline(&self) -> ash::khr::timeline_semaphore::Device {
        ash::khr::timeline_semaphore::Device::new(&self.instance.instance, &self.device)
    }

    /// `VK_KHR_synchronization2`'s functions.
    pub fn sync2(&self) -> ash::khr::synchronization2::Device {
        ash::khr::synchronization2::Device::new(&self.instance.instance, &self.device)
    }

    /// A semaphore: binary, or a timeline from `initial`; exportable as `export`.
    pub fn semaphore(&self, timeline: Option<u64>, export: SemTypes) -> VkResult<vk::Semaphore> {
        let mut ty = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk::SemaphoreType::TIMELINE)
            .initial_value(timeline.unwrap_or(0));
        let mut exportable = vk::ExportSemaphoreCreateInfo::default().handle_types(export);
        let mut info = vk::SemaphoreCreateInfo::default();
        if timeline.is_some() {
            info = info.push_next(&mut ty);
        }
        if !export.is_empty() {
            info = info.push_next(&mut exportable);
        }
        // SAFETY: a live device; the chain lives across the call.
        call("vkCreateSemaphore", unsafe {
            self.device.create_semaphore(&info, None)
        })
    }

    /// A fence, signalled if `signaled`, exportable as `export`.
    pub fn fence(&self, signaled: bool, export: FenceTypes) -> VkResult<vk::Fence> {
        let mut exportable = vk::ExportFenceCreateInfo::default().handle_types(export);
        let flags = if signaled {
            vk::FenceCreateFlags::SIGNALED
        } else {
            vk::FenceCreateFlags::empty()
        };
        let mut info = vk::FenceCreateInfo::default().flags(flags);
        if !export.is_empty() {
            info = info.push_next(&mut exportable);
        }
        // SAFETY: a live device; the chain lives across the call.
        call("vkCreateFence", unsafe {
            self.device.create_fence(&info, None)
        })
    }

    /// `vkDestroySemaphore`.
    pub fn destroy_semaphore(&self, semaphore: vk::Semaphore) {
        // SAFETY: the caller no longer uses it.
        unsafe { self.device.destroy_semaphore(semaphore, None) };
    }

    /// `vkDestroyFence`.
    pub fn destroy_fence(&self, fence: vk::Fence) {
        // SAFETY: the caller no longer uses it.
        unsafe { self.device.destroy_fence(fence, None) };
    }

    /// A recorded, ended command buffer of the pool (free it with
    /// [`Gpu::free_command_buffer`] once its submission has finished).
    pub fn record(
        &self,
        record: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> VkResult<vk::CommandBuffer> {
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: a live pool.
        let cb = *call("vkAllocateCommandBuffers", unsafe {
            self.device.allocate_command_buffers(&alloc)
        })?
        .first()
        .ok_or("vkAllocateCommandBuffers: no command buffer")?;
        // Submitted more than once by some checks: no ONE_TIME_SUBMIT.
        if let Err(e) = self.begin_record_end(cb, vk::CommandBufferUsageFlags::empty(), record) {
            self.free_command_buffer(cb);
            return Err(e);
        }
        Ok(cb)
    }

    /// A command buffer that copies `size` bytes from `src` to `dst`.
    pub fn record_copy(
        &self,
        src: vk::Buffer,
        dst: vk::Buffer,
        size: u64,
    ) -> VkResult<vk::CommandBuffer> {
        self.record(|device, cb| {
            let region = [vk::BufferCopy::default().size(size)];
            // SAFETY: recording; both buffers are bound and at least `size` long.
            unsafe { device.cmd_copy_buffer(cb, src, dst, &region) };
        })
    }

    /// `vkFreeCommandBuffers` of one command buffer.
    pub fn free_command_buffer(&self, cb: vk::CommandBuffer) {
        // SAFETY: its submissions have finished (the caller's obligation).
        unsafe { self.device.free_command_buffers(self.pool, &[cb]) };
    }

    /// `vkQueueSubmit` of `batches` (timeline values through
    /// `VkTimelineSemaphoreSubmitInfo`), signalling `fence` (null: none).
    pub fn submit_batches(&self, batches: &[SyncBatch], fence: vk::Fence) -> VkResult<()> {
        struct Arrays {
            waits: Vec<vk::Semaphore>,
            wait_values: Vec<u64>,
            stages: Vec<vk::PipelineStageFlags>,
            signals: Vec<vk::Semaphore>,
            signal_values: Vec<u64>,
        }
        let arrays: Vec<Arrays> = batches
            .iter()
            .map(|b| Arrays {
                waits: b.waits.iter().map(|w| w.0).collect(),
                wait_values: b.waits.iter().map(|w| w.1).collect(),
                stages: vec![vk::PipelineStageFlags::TRANSFER; b.waits.len()],
                signals: b.signals.iter().map(|s| s.0).collect(),
                signal_values: b.signals.iter().map(|s| s.1).collect(),
            })
            .collect();
        let mut timeline: Vec<vk::TimelineSemaphoreSubmitInfo<'_>> = arrays
            .iter()
            .map(|a| {
                vk::TimelineSemaphoreSubmitInfo::default()
                    .wait_semaphore_values(&a.wait_values)
                    .signal_semaphore_values(&a.signal_values)
            })
            .collect();
        let submits: Vec<vk::SubmitInfo<'_>> = batches
            .iter()
            .zip(&arrays)
            .zip(timeline.iter_mut())
            .map(|((b, a), t)| {
                vk::SubmitInfo::default()
                    .wait_semaphores(&a.waits)
                    .wait_dst_stage_mask(&a.stages)
                    .command_buffers(&b.command_buffers)
                    .signal_semaphores(&a.signals)
                    .push_next(t)
            })
            .collect();
        // SAFETY: executable command buffers, live semaphores and fence; the arrays live
        // across the call.
        call("vkQueueSubmit", unsafe {
            self.device.queue_submit(self.queue, &submits, fence)
        })
    }

    /// `vkQueueSubmit2KHR` of one batch.
    pub fn submit2(&self, batch: &SyncBatch, fence: vk::Fence) -> VkResult<()> {
        let info = |(semaphore, value): &(vk::Semaphore, u64)| {
            vk::SemaphoreSubmitInfo::default()
                .semaphore(*semaphore)
                .value(*value)
                .stage_mask(vk::PipelineStageFlags2::ALL_TRANSFER)
        };
        let waits: Vec<_> = batch.waits.iter().map(info).collect();
        let signals: Vec<_> = batch.signals.iter().map(info).collect();
        let cbs: Vec<_> = batch
            .command_buffers
            .iter()
            .map(|cb| vk::CommandBufferSubmitInfo::default().command_buffer(*cb))
            .collect();
        let submit = [vk::SubmitInfo2::default()
            .wait_semaphore_infos(&waits)
            .command_buffer_infos(&cbs)
            .signal_semaphore_infos(&signals)];
        // SAFETY: as in `submit_batches`.
        call("vkQueueSubmit2KHR", unsafe {
            self.sync2().queue_submit2(self.queue, &submit, fence)
        })
    }

    /// `vkWaitForFences` of one fence: `Ok(true)` signalled, `Ok(false)` timed out.
    pub fn wait_fence(&self, fence: vk::Fence, timeout_ns: u64) -> VkResult<bool> {
        // SAFETY: a live fence.
        match unsafe { self.device.wait_for_fences(&[fence], true, timeout_ns) } {
            Ok(()) => Ok(true),
            Err(vk::Result::TIMEOUT) => Ok(false),
            Err(e) => Err(format!("vkWaitForFences: {e}")),
        }
    }

    /// `vkWaitForFences` of one fence without a timeout: an error if it does not signal.
    pub fn await_fence(&self, fence: vk::Fence) -> VkResult<()> {
        if self.wait_fence(fence, u64::MAX)? {
            Ok(())
        } else {
            Err("vkWaitForFences (no timeout): VK_TIMEOUT".into())
        }
    }

    /// `vkQueueSubmit` of `batches` with `fence` (not null), then [`Gpu::await_fence`].
    pub fn submit_and_wait(&self, batches: &[SyncBatch], fence: vk::Fence) -> VkResult<()> {
        self.submit_batches(batches, fence)?;
        self.await_fence(fence)
    }

    /// `vkQueueWaitIdle` of the device's queue: what a check runs before it destroys the
    /// objects its submissions used, whether or not it passed.
    pub fn wait_idle(&self) -> VkResult<()> {
        // SAFETY: a live queue.
        call("vkQueueWaitIdle", unsafe {
            self.device.queue_wait_idle(self.queue)
        })
    }

    /// The end of a check that submitted work: waits for the queue to go idle, destroys
    /// `fences`, `semaphores` and `command_buffers` (whether or not the check passed), and
    /// returns the check's `result` first, then the wait's.
    pub fn settle(
        &self,
        result: CheckResult<()>,
        fences: &[vk::Fence],
        semaphores: &[vk::Semaphore],
        command_buffers: &[vk::CommandBuffer],
    ) -> CheckResult<()> {
        let idle = self.wait_idle();
        for fence in fences {
            self.destroy_fence(*fence);
        }
        for semaphore in semaphores {
            self.destroy_semaphore(*semaphore);
        }
        for cb in command_buffers {
            self.free_command_buffer(*cb);
        }
        result?;
        idle.map_err(|e| Failure::new("the queue goes idle", e))
    }

    /// `vkWaitSemaphoresKHR` for `value` of one timeline: `Ok(true)` reached, `Ok(false)`
    /// timed out.
    pub fn wait_timeline(
        &self,
        semaphore: vk::Semaphore,
        value: u64,
        timeout_ns: u64,
    ) -> VkResult<bool> {
        let semaphores = [semaphore];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default()
            .semaphores(&semaphores)
            .values(&values);
        // SAFETY: a live timeline semaphore; the arrays live across the call.
        match unsafe { self.timeline().wait_semaphores(&info, timeout_ns) } {
            Ok(()) => Ok(true),
            Err(vk::Result::TIMEOUT) => Ok(false),
            Err(e) => Err(format!("vkWaitSemaphoresKHR: {e}")),
        }
    }

    /// `vkGetSemaphoreCounterValueKHR`.
    pub fn counter(&self, semaphore: vk::Semaphore) -> VkResult<u64> {
        // SAFETY: a live timeline semaphore.
        call("vkGetSemaphoreCounterValueKHR", unsafe {
            self.timeline().get_semaphore_counter_value(semaphore)
        })
    }

    /// `vkSignalSemaphoreKHR`.
    pub fn signal_timeline(&self, semaphore: vk::Semaphore, value: u64) -> VkResult<()> {
        let info = vk::SemaphoreSignalInfo::default()
            .semaphore(semaphore)
            .value(value);
        // SAFETY: a live timeline semaphore.
        call("vkSignalSemaphoreKHR", unsafe {
            self.timeline().signal_semaphore(&info)
        })
    }

    /// `vkGetSemaphoreFdKHR`: the raw result and, on success, the fd (now ours).
    pub fn export_semaphore(
        &self,
        semaphore: vk::Semaphore,
        handle_type: SemTypes,
    ) -> Result<OwnedFd, vk::Result> {
        let info = vk::SemaphoreGetFdInfoKHR::default()
            .semaphore(semaphore)
            .handle_type(handle_type);
        // SAFETY: a live semaphore.
        let fd = unsafe { self.semaphore_fd().get_semaphore_fd(&info) }?;
        // SAFETY: a successful export hands the new fd to the application.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `vkImportSemaphoreFdKHR`: on success the fd is the driver's; on failure it comes
    /// back with the result.
    pub fn import_semaphore(
        &self,
        semaphore: vk::Semaphore,
        handle_type: SemTypes,
        temporary: bool,
        fd: OwnedFd,
    ) -> Result<(), (vk::Result, OwnedFd)> {
        let raw = fd.into_raw_fd();
        let flags = if temporary {
            vk::SemaphoreImportFlags::TEMPORARY
        } else {
            vk::SemaphoreImportFlags::empty()
        };
        let info = vk::ImportSemaphoreFdInfoKHR::default()
            .semaphore(semaphore)
            .handle_type(handle_type)
            .flags(flags)
            .fd(raw);
        // SAFETY: a live semaphore; `raw` is ours until the import succeeds.
        match unsafe { self.semaphore_fd().import_semaphore_fd(&info) } {
            Ok(()) => Ok(()),
            // SAFETY: a failed import leaves the fd with us.
            Err(e) => Err((e, unsafe { OwnedFd::from_raw_fd(raw) })),
        }
    }

    /// `vkGetFenceFdKHR`, as [`Gpu::export_semaphore`].
    pub fn export_fence(
        &self,
        fence: vk::Fence,
        handle_type: FenceTypes,
    ) -> Result<OwnedFd, vk::Result> {
        let info = vk::FenceGetFdInfoKHR::default()
            .fence(fence)
            .handle_type(handle_type);
        // SAFETY: a live fence.
        let fd = unsafe { self.fence_fd().get_fence_fd(&info) }?;
        // SAFETY: a successful export hands the new fd to the application.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `vkImportFenceFdKHR`, as [`Gpu::import_semaphore`].
    pub fn import_fence(
        &self,
        fence: vk::Fence,
        handle_type: FenceTypes,
        temporary: bool,
        fd: OwnedFd,
    ) -> Result<(), (vk::Result, OwnedFd)> {
        let raw = fd.into_raw_fd();
        let flags = if temporary {
            vk::FenceImportFlags::TEMPORARY
        } else {
            vk::FenceImportFlags::empty()
        };
        let info = vk::ImportFenceFdInfoKHR::default()
            .fence(fence)
            .handle_type(handle_type)
            .flags(flags)
            .fd(raw);
        // SAFETY: a live fence; `raw` is ours until the import succeeds.
        match unsafe { self.fence_fd().import_fence_fd(&info) } {
            Ok(()) => Ok(()),
            // SAFETY: a failed import leaves the fd with us.
            Err(e) => Err((e, unsafe { OwnedFd::from_raw_fd(raw) })),
        }
    }

    /// What `vkGetPhysicalDeviceExternalSemaphoreProperties` answers for `handle_type` on a
    /// binary (or, with `timeline`, a timeline) semaphore.
    pub fn semaphore_properties(
        &self,
        handle_type: SemTypes,
        timeline: bool,
    ) -> vk::ExternalSemaphoreProperties<'static> {
        let mut ty =
            vk::SemaphoreTypeCreateInfo::default().semaphore_type(vk::SemaphoreType::TIMELINE);
        let mut info = vk::PhysicalDeviceExternalSemaphoreInfo::default().handle_type(handle_type);
        if timeline {
            info = info.push_next(&mut ty);
        }
        let mut out = vk::ExternalSemaphoreProperties::default();
        // SAFETY: a live physical device; valid structures.
        unsafe {
            self.instance
                .instance
                .get_physical_device_external_semaphore_properties(self.physical, &info, &mut out);
        }
        out
    }

    /// What `vkGetPhysicalDeviceExternalFenceProperties` answers for `handle_type`.
    pub fn fence_properties(
        &self,
        handle_type: FenceTypes,
    ) -> vk::ExternalFenceProperties<'static> {
        let info = vk::PhysicalDeviceExternalFenceInfo::default().handle_type(handle_type);
        let mut out = vk::ExternalFenceProperties::default();
        // SAFETY: a live physical device; valid structures.
        unsafe {
            self.instance
                .instance
                .get_physical_device_external_fence_properties(self.physical, &info, &mut out);
        }
        out
    }
}
