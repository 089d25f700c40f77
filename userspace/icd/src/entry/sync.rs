//! Queue submission, fences and semaphores (binary and timeline, and their fd export and
//! import): pointers in, [`crate::sync`] does the work.

use core::ffi::c_void;

use ash::vk;

use super::{each_in, guard_result, guard_void, input, into_out, null, slice};
use crate::error::IcdResult;
use crate::queue::{self, Batch};
use crate::sync;

/// The first structure of type `ty` in an input chain, as a `T`.
///
/// # Safety
/// `p_next` is null or a valid chain, and `T` is the structure `ty` names.
unsafe fn find_in<'a, T>(p_next: *const c_void, ty: vk::StructureType) -> Option<&'a T> {
    let mut found = None;
    // SAFETY: per the caller.
    unsafe {
        each_in(p_next, |s| {
            if found.is_none() && (*s).s_type == ty {
                found = s.cast::<T>().as_ref();
            }
        });
    }
    found
}

/// `(semaphore, value)` pairs of a `VkSubmitInfo` array and its timeline values (absent or
/// short for binary semaphores: their value is ignored).
///
/// # Safety
/// `semaphores` holds `count` handles; `values` is null or holds `value_count` values.
unsafe fn pairs(
    semaphores: *const vk::Semaphore,
    count: u32,
    values: *const u64,
    value_count: u32,
) -> IcdResult<Vec<(vk::Semaphore, u64)>> {
    // SAFETY: per the caller.
    let semaphores = unsafe { slice(semaphores, count) }.ok_or_else(null::<vk::Semaphore>)?;
    // SAFETY: per the caller.
    let values = unsafe { slice(values, value_count) }.unwrap_or(&[]);
    Ok(semaphores
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, values.get(i).copied().unwrap_or(0)))
        .collect())
}

/// `vkQueueSubmit`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn queue_submit(
    queue: vk::Queue,
    count: u32,
    submits: *const vk::SubmitInfo<'_>,
    fence: vk::Fence,
) -> vk::Result {
    guard_result("vkQueueSubmit", || {
        // SAFETY: `submits` points to `count` structures per the contract.
        let submits = unsafe { slice(submits, count) }.ok_or_else(null::<vk::SubmitInfo<'_>>)?;
        let mut batches = Vec::with_capacity(submits.len());
        for submit in submits {
            // SAFETY: a valid chain per the contract; the type matches the sType.
            let timeline: Option<&vk::TimelineSemaphoreSubmitInfo<'_>> = unsafe {
                find_in(
                    submit.p_next,
                    vk::StructureType::TIMELINE_SEMAPHORE_SUBMIT_INFO,
                )
            };
            let (waits, wait_n, signals, signal_n) =
                timeline.map_or((core::ptr::null(), 0, core::ptr::null(), 0), |t| {
                    (
                        t.p_wait_semaphore_values,
                        t.wait_semaphore_value_count,
                        t.p_signal_semaphore_values,
                        t.signal_semaphore_value_count,
                    )
                });
            // SAFETY: each array holds its count per the contract.
            let command_buffers =
                unsafe { slice(submit.p_command_buffers, submit.command_buffer_count) }
                    .ok_or_else(null::<vk::CommandBuffer>)?
                    .to_vec();
            batches.push(Batch {
                // SAFETY: as above.
                waits: unsafe {
                    pairs(
                        submit.p_wait_semaphores,
                        submit.wait_semaphore_count,
                        waits,
                        wait_n,
                    )
                }?,
                command_buffers,
                // SAFETY: as above.
                signals: unsafe {
                    pairs(
                        submit.p_signal_semaphores,
                        submit.signal_semaphore_count,
                        signals,
                        signal_n,
                    )
                }?,
            });
        }
        let fence = (fence != vk::Fence::null()).then_some(fence);
        queue::submit(queue, &batches, fence)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// The `(semaphore, value)` pairs of a `VkSemaphoreSubmitInfo` array (stage masks and
/// device indices do not matter to a one-queue transfer device).
///
/// # Safety
/// `infos` holds `count` structures.
unsafe fn submit_infos(
    infos: *const vk::SemaphoreSubmitInfo<'_>,
    count: u32,
) -> IcdResult<Vec<(vk::Semaphore, u64)>> {
    // SAFETY: per the caller.
    let infos = unsafe { slice(infos, count) }.ok_or_else(null::<vk::SemaphoreSubmitInfo<'_>>)?;
    Ok(infos.iter().map(|i| (i.semaphore, i.value)).collect())
}

/// `vkQueueSubmit2` (`VK_KHR_synchronization2`).
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn queue_submit2(
    queue: vk::Queue,
    count: u32,
    submits: *const vk::SubmitInfo2<'_>,
    fence: vk::Fence,
) -> vk::Result {
    guard_result("vkQueueSubmit2", || {
        // SAFETY: `submits` points to `count` structures per the contract.
        let submits = unsafe { slice(submits, count) }.ok_or_else(null::<vk::SubmitInfo2<'_>>)?;
        let mut batches = Vec::with_capacity(submits.len());
        for submit in submits {
            // SAFETY: each array holds its count per the contract.
            let cbs = unsafe {
                slice(
                    submit.p_command_buffer_infos,
                    submit.command_buffer_info_count,
                )
            }
            .ok_or_else(null::<vk::CommandBufferSubmitInfo<'_>>)?;
            batches.push(Batch {
                // SAFETY: as above.
                waits: unsafe {
                    submit_infos(
                        submit.p_wait_semaphore_infos,
                        submit.wait_semaphore_info_count,
                    )
                }?,
                command_buffers: cbs.iter().map(|c| c.command_buffer).collect(),
                // SAFETY: as above.
                signals: unsafe {
                    submit_infos(
                        submit.p_signal_semaphore_infos,
                        submit.signal_semaphore_info_count,
                    )
                }?,
            });
        }
        let fence = (fence != vk::Fence::null()).then_some(fence);
        queue::submit(queue, &batches, fence)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkQueueWaitIdle`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn queue_wait_idle(queue: vk::Queue) -> vk::Result {
    guard_result("vkQueueWaitIdle", || {
        queue::wait_idle_queue(queue)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkCreateFence`, exportable as `VkExportFenceCreateInfo` asks.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn create_fence(
    device: vk::Device,
    info: *const vk::FenceCreateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Fence,
) -> vk::Result {
    guard_result("vkCreateFence", || {
        // SAFETY: per the contract.
        unsafe {
            into_out(info, out, |info| {
                let signaled = info.flags.contains(vk::FenceCreateFlags::SIGNALED);
                // SAFETY: a valid chain per the contract; the type matches the sType.
                let export: Option<&vk::ExportFenceCreateInfo<'_>> =
                    find_in(info.p_next, vk::StructureType::EXPORT_FENCE_CREATE_INFO);
                let exportable = export.map(|e| e.handle_types).unwrap_or_default();
                sync::create_fence(device, signaled, exportable)
            })
        }
    })
}

/// `vkDestroyFence`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_fence(
    device: vk::Device,
    fence: vk::Fence,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard_void("vkDestroyFence", || {
        sync::destroy_fence(device, fence);
        Ok(())
    });
}

/// `vkResetFences`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn reset_fences(
    device: vk::Device,
    count: u32,
    fences: *const vk::Fence,
) -> vk::Result {
    guard_result("vkResetFences", || {
        // SAFETY: `fences` points to `count` handles per the contract.
        let fences = unsafe { slice(fences, count) }.ok_or_else(null::<vk::Fence>)?;
        sync::reset_fences(device, fences)?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `VK_SUCCESS` when signalled, else `not_yet`.
fn outcome(signalled: bool, not_yet: vk::Result) -> vk::Result {
    if signalled {
        vk::Result::SUCCESS
    } else {
        not_yet
    }
}

/// `vkGetFenceStatus`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_fence_status(device: vk::Device, fence: vk::Fence) -> vk::Result {
    guard_result("vkGetFenceStatus", || {
        Ok(outcome(
            sync::fence_status(device, fence)?,
            vk::Result::NOT_READY,
        ))
    })
}

/// `vkWaitForFences`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn wait_for_fences(
    device: vk::Device,
    count: u32,
    fences: *const vk::Fence,
    wait_all: vk::Bool32,
    timeout: u64,
) -> vk::Result {
    guard_result("vkWaitForFences", || {
        // SAFETY: `fences` points to `count` handles per the contract.
        let fences = unsafe { slice(fences, count) }.ok_or_else(null::<vk::Fence>)?;
        let all = wait_all != vk::FALSE;
        Ok(outcome(
            sync::wait_for_fences(device, fences, all, timeout)?,
            vk::Result::TIMEOUT,
        ))
    })
}

/// `vkCreateSemaphore`: binary, or timeline with `VkSemaphoreTypeCreateInfo`; exportable
/// as `VkExportSemaphoreCreateInfo` asks.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn create_semaphore(
    device: vk::Device,
    info: *const vk::SemaphoreCreateInfo<'_>,
    _allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Semaphore,
) -> vk::Result {
    guard_result("vkCreateSemaphore", || {
        // SAFETY: per the contract.
        unsafe {
            into_out(info, out, |info| {
                // SAFETY: a valid chain per the contract; each type matches its sType.
                let ty: Option<&vk::SemaphoreTypeCreateInfo<'_>> =
                    find_in(info.p_next, vk::StructureType::SEMAPHORE_TYPE_CREATE_INFO);
                // SAFETY: as above.
                let export: Option<&vk::ExportSemaphoreCreateInfo<'_>> =
                    find_in(info.p_next, vk::StructureType::EXPORT_SEMAPHORE_CREATE_INFO);
                let timeline = ty
                    .filter(|t| t.semaphore_type == vk::SemaphoreType::TIMELINE)
                    .map(|t| t.initial_value);
                let exportable = export.map(|e| e.handle_types).unwrap_or_default();
                sync::create_semaphore(device, timeline, exportable)
            })
        }
    })
}

/// `vkDestroySemaphore`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn destroy_semaphore(
    device: vk::Device,
    semaphore: vk::Semaphore,
    _allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard_void("vkDestroySemaphore", || {
        sync::destroy_semaphore(device, semaphore);
        Ok(())
    });
}

/// `vkGetSemaphoreCounterValue`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_semaphore_counter_value(
    device: vk::Device,
    semaphore: vk::Semaphore,
    out: *mut u64,
) -> vk::Result {
    guard_result("vkGetSemaphoreCounterValue", || {
        let value = sync::semaphore_counter(device, semaphore)?;
        // SAFETY: valid for a write per the contract.
        unsafe { super::write(out, value) }?;
        Ok(vk::Result::SUCCESS)
    })
}

/// `vkWaitSemaphores`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn wait_semaphores(
    device: vk::Device,
    info: *const vk::SemaphoreWaitInfo<'_>,
    timeout: u64,
) -> vk::Result {
    guard_result("vkWaitSemaphores", || {
        // SAFETY: per the contract.
        let info = unsafe { input(info) }?;
        // SAFETY: both arrays hold `semaphore_count` elements per the contract.
        let waits = unsafe {
            pairs(
                info.p_semaphores,
                info.semaphore_count,
                info.p_values,
                info.semaphore_count,
            )
        }?;
        let all = !info.flags.contains(vk::SemaphoreWaitFlags::ANY);
        Ok(outcome(
            sync::wait_semaphores(device, &waits, all, timeout)?,
            vk::Result::TIMEOUT,
        ))
    })
}

/// `vkSignalSemaphore`.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn signal_semaphore(
    device: vk::Device,
    info: *const vk::SemaphoreSignalInfo<'_>,
) -> vk::Result {
    guard_result("vkSignalSemaphore", || {
        // SAFETY: per the contract.
        let info = unsafe { input(info) }?;
        sync::signal_semaphore(device, info.semaphore, info.value)?;
        Ok(vk::Result::SUCCESS)
    })
}

#[cfg(not(windows))]
/// `vkGetSemaphoreFdKHR`: the fd becomes the application's.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_semaphore_fd(
    device: vk::Device,
    info: *const vk::SemaphoreGetFdInfoKHR<'_>,
    out: *mut i32,
) -> vk::Result {
    use rustix::fd::IntoRawFd;
    guard_result("vkGetSemaphoreFdKHR", || {
        // SAFETY: per the contract.
        unsafe {
            into_out(info, out, |info| {
                Ok(sync::semaphore_fd(device, info.semaphore, info.handle_type)?.into_raw_fd())
            })
        }
    })
}

#[cfg(not(windows))]
/// `vkImportSemaphoreFdKHR`: a successful import takes the fd, a failed one leaves it.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn import_semaphore_fd(
    device: vk::Device,
    info: *const vk::ImportSemaphoreFdInfoKHR<'_>,
) -> vk::Result {
    guard_result("vkImportSemaphoreFdKHR", || {
        // SAFETY: per the contract.
        let info = unsafe { input(info) }?;
        let temporary = info.flags.contains(vk::SemaphoreImportFlags::TEMPORARY);
        sync::import_semaphore_fd(device, info.semaphore, info.handle_type, temporary, info.fd)?;
        Ok(vk::Result::SUCCESS)
    })
}

#[cfg(not(windows))]
/// `vkGetFenceFdKHR`: the fd becomes the application's.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn get_fence_fd(
    device: vk::Device,
    info: *const vk::FenceGetFdInfoKHR<'_>,
    out: *mut i32,
) -> vk::Result {
    use rustix::fd::IntoRawFd;
    guard_result("vkGetFenceFdKHR", || {
        // SAFETY: per the contract.
        unsafe {
            into_out(info, out, |info| {
                Ok(sync::fence_fd(device, info.fence, info.handle_type)?.into_raw_fd())
            })
        }
    })
}

#[cfg(not(windows))]
/// `vkImportFenceFdKHR`: a successful import takes the fd, a failed one leaves it.
///
/// # Safety
/// The Vulkan specification's valid-usage rules for the pointer arguments.
pub unsafe extern "system" fn import_fence_fd(
    device: vk::Device,
    info: *const vk::ImportFenceFdInfoKHR<'_>,
) -> vk::Result {
    guard_result("vkImportFenceFdKHR", || {
        // SAFETY: per the contract.
        let info = unsafe { input(info) }?;
        let temporary = info.flags.contains(vk::FenceImportFlags::TEMPORARY);
        sync::import_fence_fd(device, info.fence, info.handle_type, temporary, info.fd)?;
        Ok(vk::Result::SUCCESS)
    })
}
