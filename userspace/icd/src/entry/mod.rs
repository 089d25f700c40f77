//! The C boundary: every Vulkan entry point the ICD exposes, one module per command group.
//!
//! Each function is a thin wrapper: it catches panics (`guard`), turns the
//! application's pointers into Rust values (checking the nulls that are cheap to check),
//! calls the plain function in [`crate::objects`] and writes the answer back. Handles are
//! looked up in the registries, never dereferenced. Everything below returns an
//! [`IcdError`]; the guards are the one place it becomes a `VkResult` (and, under
//! `EXTMEM_DEBUG`, a line on stderr, see [`crate::debug`]).
//!
//! This module holds what every group shares: the panic guard, the pointer and pNext-chain
//! helpers, the two-call idiom, and the `GetProcAddr` entry points over
//! [`crate::proc_table`].

use core::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ash::vk;

use crate::debug;
use crate::error::{IcdError, IcdResult};
use crate::objects::{self, PHYSICAL_DEVICES};
use crate::physical_device::DeviceInfo;
use crate::proc_table::Level;

pub mod buffer;
pub mod command_buffer;
pub mod device;
pub mod image;
pub mod instance;
pub mod memory;
pub mod physical_device;
pub mod sync;
#[cfg(test)]
mod tests;
pub mod win32;

pub use instance::vk_icdNegotiateLoaderICDInterfaceVersion;

/// Most structures followed in one output chain (a longer one is a cycle or garbage).
const MAX_CHAIN: usize = 64;

/// Runs `f` for the entry point `entry`, turning a panic into `on_panic`: a panic must
/// never unwind into C.
fn guard<R>(entry: &'static str, on_panic: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        debug::panic(entry, &*payload);
        on_panic
    })
}

/// Turns `error`, refused by `entry`, into the `VkResult` the application gets: the one
/// place an [`IcdError`] crosses the C boundary.
fn refuse(entry: &'static str, error: IcdError) -> vk::Result {
    debug::refusal(entry, &error);
    error.result()
}

/// [`guard`] for entry points that return nothing: a refusal leaves the outputs as they
/// are (Vulkan gives these commands no way to report it; `EXTMEM_DEBUG` still prints it).
fn guard_void(entry: &'static str, f: impl FnOnce() -> IcdResult<()>) {
    guard(entry, (), || {
        if let Err(error) = f() {
            let _ = refuse(entry, error);
        }
    });
}

/// [`guard`] for entry points that return a `VkResult`.
fn guard_result(entry: &'static str, f: impl FnOnce() -> IcdResult<vk::Result>) -> vk::Result {
    guard(entry, vk::Result::ERROR_UNKNOWN, || {
        f().unwrap_or_else(|error| refuse(entry, error))
    })
}

/// The refusal of a null pointer to a `T`.
fn null<T>() -> IcdError {
    let name = core::any::type_name::<T>();
    IcdError::NullPointer {
        what: name.rsplit("::").next().unwrap_or(name),
    }
}

/// The application's input structure behind `info`, refused if null.
///
/// # Safety
/// `info` is null or points to a valid `T` that outlives `'a`.
unsafe fn input<'a, T>(info: *const T) -> IcdResult<&'a T> {
    // SAFETY: null or valid per the caller.
    unsafe { info.as_ref() }.ok_or_else(null::<T>)
}

/// The application's output structure behind `out`, refused if null; the caller fills
/// the fields it answers and leaves `sType` and `pNext` as they are.
///
/// # Safety
/// `out` is null or points to a valid `T` that outlives `'a` and nothing else refers to.
unsafe fn output<'a, T>(out: *mut T) -> IcdResult<&'a mut T> {
    // SAFETY: null or valid and unaliased per the caller.
    unsafe { out.as_mut() }.ok_or_else(null::<T>)
}

/// Writes `value` to `out` unless it is null.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn write<T>(out: *mut T, value: T) -> IcdResult<()> {
    if out.is_null() {
        return Err(null::<T>());
    }
    // SAFETY: non-null, and valid for writes per the caller.
    unsafe { out.write(value) };
    Ok(())
}

/// The shape of every command that turns one input structure into one output value
/// (`vkCreate*` of one object, `vkGetMemoryFdKHR`): neither pointer may be null, `make`
/// turns the structure into the value, which is written to `out`.
///
/// # Safety
/// `info` is null or points to a valid `I`; `out` is null or valid for a write of `H`.
unsafe fn into_out<I, H>(
    info: *const I,
    out: *mut H,
    make: impl FnOnce(&I) -> IcdResult<H>,
) -> IcdResult<vk::Result> {
    if out.is_null() {
        return Err(null::<H>());
    }
    // SAFETY: per the caller.
    let info = unsafe { input(info) }?;
    let handle = make(info)?;
    // SAFETY: non-null, valid for a write per the caller.
    unsafe { out.write(handle) };
    Ok(vk::Result::SUCCESS)
}

/// The application's array `[ptr, ptr + count)`, or `None` for a null pointer with a
/// non-zero count.
///
/// # Safety
/// `ptr` is null or points to `count` initialised `T`s that outlive `'a`.
unsafe fn slice<'a, T>(ptr: *const T, count: u32) -> Option<&'a [T]> {
    if count == 0 {
        return Some(&[]);
    }
    if ptr.is_null() {
        return None;
    }
    let len = usize::try_from(count).ok()?;
    // SAFETY: per the caller, `ptr` points to `count` initialised elements.
    Some(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// Applies `f` to each element of the application's array `[ptr, ptr + count)` (the
/// `*2` commands that take an array of infos), stopping at the first refusal.
///
/// # Safety
/// `ptr` is null or points to `count` initialised `T`s.
unsafe fn each_info<T>(
    ptr: *const T,
    count: u32,
    mut f: impl FnMut(&T) -> IcdResult<()>,
) -> IcdResult<vk::Result> {
    // SAFETY: per the caller.
    let infos = unsafe { slice(ptr, count) }.ok_or_else(null::<T>)?;
    infos.iter().try_for_each(&mut f)?;
    Ok(vk::Result::SUCCESS)
}

/// The two-call idiom: the count, or as many items as fit and `VK_INCOMPLETE`.
///
/// # Safety
/// `count` is valid for reads and writes; `out` is null or valid for `*count` writes.
unsafe fn enumerate<T: Copy>(items: &[T], count: *mut u32, out: *mut T) -> IcdResult<vk::Result> {
    // SAFETY: forwarded contract; each slot is valid for a write of a `T`.
    unsafe { enumerate_into(items, count, out, |slot, item| slot.write(*item)) }
}

/// The two-call idiom for output structures the application owns: `put` fills slot `i`
/// from item `i` (keeping the application's sType and pNext where the slot has them).
///
/// # Safety
/// `count` is null or valid for reads and writes; `out` is null or valid for `*count`
/// elements; `put` is sound for each such slot.
unsafe fn enumerate_into<T, O>(
    items: &[T],
    count: *mut u32,
    out: *mut O,
    put: impl Fn(*mut O, &T),
) -> IcdResult<vk::Result> {
    if count.is_null() {
        return Err(null::<u32>());
    }
    let total = u32::try_from(items.len()).unwrap_or(u32::MAX);
    if out.is_null() {
        // SAFETY: non-null, valid per the caller.
        unsafe { count.write(total) };
        return Ok(vk::Result::SUCCESS);
    }
    // SAFETY: as above.
    let room = unsafe { count.read() };
    let n = room.min(total);
    for (i, item) in items.iter().take(n as usize).enumerate() {
        // SAFETY: `i < n <= *count`, the caller's capacity.
        put(unsafe { out.add(i) }, item);
    }
    // SAFETY: as above.
    unsafe { count.write(n) };
    Ok(if n < total {
        vk::Result::INCOMPLETE
    } else {
        vk::Result::SUCCESS
    })
}

/// Calls `f` on each structure of an input pNext chain (at most [`MAX_CHAIN`]).
///
/// # Safety
/// `p_next` is null or the start of a valid chain of input structures.
pub(super) unsafe fn each_in(
    p_next: *const c_void,
    mut f: impl FnMut(*const vk::BaseInStructure<'_>),
) {
    // SAFETY: per the caller; the walk only reads `p_next` of each structure, and an
    // input structure starts with the same sType/pNext header as an output one.
    unsafe { each_out(p_next.cast_mut(), |s| f(s.cast_const().cast())) }
}

/// Calls `f` on each structure of an output pNext chain.
///
/// # Safety
/// `p_next` is null or the start of a valid chain of output structures.
unsafe fn each_out(p_next: *mut c_void, mut f: impl FnMut(*mut vk::BaseOutStructure<'_>)) {
    let mut next = p_next.cast::<vk::BaseOutStructure<'_>>();
    let mut seen = 0;
    while !next.is_null() && seen < MAX_CHAIN {
        f(next);
        // SAFETY: `next` is a valid structure per the caller.
        next = unsafe { (*next).p_next };
        seen += 1;
    }
}

/// Replaces the body of the output structure at `base` (of the type its sType names)
/// with `value`, keeping the application's sType and pNext.
///
/// # Safety
/// `base` points to a valid `T`.
unsafe fn fill<T>(base: *mut vk::BaseOutStructure<'_>, value: T) {
    let s = base.cast::<T>();
    // SAFETY: `base` is a T per the caller; the header is read first and put back so the
    // chain stays intact.
    unsafe {
        let header = *base;
        s.write(value);
        (*base).s_type = header.s_type;
        (*base).p_next = header.p_next;
    }
}

/// Answers `vkGet*MemoryRequirements2`: `reqs`, and no dedicated allocation (neither
/// required nor preferred) in a chained `VkMemoryDedicatedRequirements`.
///
/// # Safety
/// `out` is null or a valid structure with a valid chain.
unsafe fn write_requirements2(
    out: *mut vk::MemoryRequirements2<'_>,
    reqs: vk::MemoryRequirements,
) -> IcdResult<()> {
    // SAFETY: per the caller.
    let out = unsafe { output(out) }?;
    out.memory_requirements = reqs;
    // SAFETY: the chain is valid per the caller; the cast matches its sType.
    unsafe {
        each_out(out.p_next, |s| {
            if (*s).s_type == vk::StructureType::MEMORY_DEDICATED_REQUIREMENTS {
                fill(s, vk::MemoryDedicatedRequirements::default());
            }
        });
    }
    Ok(())
}

/// What the registry knows of a live physical device.
fn physical(pd: vk::PhysicalDevice) -> IcdResult<DeviceInfo> {
    Ok(PHYSICAL_DEVICES.live(pd)?.info.clone())
}

// ---- Dispatch -----------------------------------------------------------------------------

/// The entry point called `name`, if it is a command of `level`.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn lookup_at(level: Level, name: *const c_char) -> vk::PFN_vkVoidFunction {
    // SAFETY: forwarded contract.
    let name = unsafe { c_name(name) }?;
    crate::proc_table::lookup(name)
        .filter(|(at, _)| *at == level)
        .map(|(_, f)| f)
}

/// `vk_icdGetInstanceProcAddr`.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "system" fn vk_icdGetInstanceProcAddr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    // SAFETY: forwarded contract.
    unsafe { get_instance_proc_addr(instance, name) }
}

/// `vk_icdGetPhysicalDeviceProcAddr`: physical-device-level commands only.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "system" fn vk_icdGetPhysicalDeviceProcAddr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    guard("vk_icdGetPhysicalDeviceProcAddr", None, || {
        objects::INSTANCES.get(instance)?;
        // SAFETY: forwarded contract.
        unsafe { lookup_at(Level::PhysicalDevice, name) }
    })
}

/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn c_name<'a>(name: *const c_char) -> Option<&'a [u8]> {
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    Some(unsafe { CStr::from_ptr(name) }.to_bytes())
}

/// `vkGetInstanceProcAddr`: global commands with a null instance, everything with a live
/// one.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
pub unsafe extern "system" fn get_instance_proc_addr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    guard("vkGetInstanceProcAddr", None, || {
        // SAFETY: forwarded contract.
        let name = unsafe { c_name(name) }?;
        let (level, f) = crate::proc_table::lookup(name)?;
        if instance == vk::Instance::null() {
            return (level == Level::Global).then_some(f);
        }
        objects::INSTANCES.get(instance)?;
        Some(f)
    })
}

/// `vkGetDeviceProcAddr`: device-level commands only.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
pub unsafe extern "system" fn get_device_proc_addr(
    device: vk::Device,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    guard("vkGetDeviceProcAddr", None, || {
        objects::DEVICES.get(device)?;
        // SAFETY: forwarded contract.
        unsafe { lookup_at(Level::Device, name) }
    })
}
