//! The ICD's one error type, [`IcdError`]: why a command was refused, with everything the
//! refusing layer knew (the Valid Usage rule, the kernel operation and its errno, the
//! offending values). It travels up unchanged and becomes a `VkResult` only at the C
//! boundary ([`crate::entry`]), which also prints it under `EXTMEM_DEBUG`
//! ([`crate::debug`]).

use core::fmt;

use ash::vk;
use extmem::backend::{BackendError, Op};
use extmem::exec::ExecError;

use crate::commands::RecordError;
use crate::image::ImageError;

/// What the ICD's functions return.
pub type IcdResult<T> = Result<T, IcdError>;

/// Declares the Valid Usage rules the ICD checks itself (the memory manager checks the
/// external-memory ones, `extmem::Vuid`): each with its VUID, the `VkResult` a violation
/// returns and what it requires.
macro_rules! icd_rules {
    ($($(#[$doc:meta])* $name:ident = ($vuid:literal, $result:ident, $text:literal),)+) => {
        /// A Valid Usage rule of the Vulkan specification that the ICD checks.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum Rule {
            $($(#[$doc])* $name,)+
        }

        impl Rule {
            /// Every rule, for tests.
            pub const ALL: &'static [Rule] = &[$(Rule::$name),+];

            /// The VUID, e.g. `VUID-vkMapMemory-memory-00678`.
            pub const fn vuid(self) -> &'static str {
                match self {
                    $(Rule::$name => $vuid,)+
                }
            }

            /// What the rule requires, in short.
            pub const fn text(self) -> &'static str {
                match self {
                    $(Rule::$name => $text,)+
                }
            }

            /// The result a violation returns.
            pub const fn result(self) -> vk::Result {
                match self {
                    $(Rule::$name => vk::Result::$result,)+
                }
            }
        }
    };
}

icd_rules! {
    /// `vkCreateDevice`: a queue of a family the device has.
    QueueFamily = ("VUID-VkDeviceQueueCreateInfo-queueFamilyIndex-00381", ERROR_INITIALIZATION_FAILED,
        "queueFamilyIndex must name one of the device's queue families (only family 0 exists)"),
    /// `vkCreateDevice`: no more queues than the family has.
    QueueCount = ("VUID-VkDeviceQueueCreateInfo-queueCount-00382", ERROR_INITIALIZATION_FAILED,
        "queueCount must not exceed the family's queueCount (1)"),
    /// `vkMapMemory`: memory mapped at most once at a time.
    MapTwice = ("VUID-vkMapMemory-memory-00678", ERROR_VALIDATION_FAILED_EXT,
        "memory must not be currently host mapped"),
    /// `vkMapMemory`: the offset inside the memory.
    MapOffset = ("VUID-vkMapMemory-offset-00679", ERROR_VALIDATION_FAILED_EXT,
        "offset must be less than the size of memory"),
    /// `vkMapMemory`: a size of 0.
    MapSizeZero = ("VUID-vkMapMemory-size-00680", ERROR_VALIDATION_FAILED_EXT,
        "size must be greater than 0 unless it is VK_WHOLE_SIZE"),
    /// `vkMapMemory`: the range inside the memory.
    MapSizeRange = ("VUID-vkMapMemory-size-00681", ERROR_VALIDATION_FAILED_EXT,
        "size must not exceed the size of memory minus offset unless it is VK_WHOLE_SIZE"),
    /// `vkCreateBuffer`: a size of 0.
    BufferSize = ("VUID-VkBufferCreateInfo-size-00912", ERROR_VALIDATION_FAILED_EXT,
        "size must be greater than 0"),
    /// `vkCreateBuffer`: sparse binding without the feature.
    BufferSparseBinding = ("VUID-VkBufferCreateInfo-flags-00915", ERROR_VALIDATION_FAILED_EXT,
        "flags must not contain SPARSE_BINDING (the sparseBinding feature is not enabled)"),
    /// `vkCreateBuffer`: sparse residency without the feature.
    BufferSparseResidency = ("VUID-VkBufferCreateInfo-flags-00916", ERROR_VALIDATION_FAILED_EXT,
        "flags must not contain SPARSE_RESIDENCY (the sparseResidencyBuffer feature is not enabled)"),
    /// `vkCreateBuffer`: sparse aliasing without the feature.
    BufferSparseAliased = ("VUID-VkBufferCreateInfo-flags-00917", ERROR_VALIDATION_FAILED_EXT,
        "flags must not contain SPARSE_ALIASED (the sparseResidencyAliased feature is not enabled)"),
    /// `vkCreateBuffer`: protected memory without the feature.
    BufferProtected = ("VUID-VkBufferCreateInfo-flags-01887", ERROR_VALIDATION_FAILED_EXT,
        "flags must not contain PROTECTED (the protectedMemory feature is not enabled)"),
    /// `vkBindBufferMemory`: bound once.
    BufferBound = ("VUID-vkBindBufferMemory-buffer-07459", ERROR_VALIDATION_FAILED_EXT,
        "buffer must not have been bound to a memory object"),
    /// `vkBindBufferMemory`: the offset inside the memory.
    BufferOffset = ("VUID-vkBindBufferMemory-memoryOffset-01031", ERROR_VALIDATION_FAILED_EXT,
        "memoryOffset must be less than the size of memory"),
    /// `vkBindBufferMemory`: a memory type the buffer allows.
    BufferMemoryType = ("VUID-vkBindBufferMemory-memory-01035", ERROR_VALIDATION_FAILED_EXT,
        "memory must have one of the memory types in the buffer's memoryTypeBits"),
    /// `vkBindBufferMemory`: an aligned offset.
    BufferAlignment = ("VUID-vkBindBufferMemory-memoryOffset-01036", ERROR_VALIDATION_FAILED_EXT,
        "memoryOffset must be a multiple of the buffer's required alignment"),
    /// `vkBindBufferMemory`: room for the buffer.
    BufferFits = ("VUID-vkBindBufferMemory-size-01037", ERROR_VALIDATION_FAILED_EXT,
        "the buffer's required size must fit in memory after memoryOffset"),
    /// `vkCreateImage`: external handle types the device can share images through.
    ImageHandleTypes = ("VUID-VkImageCreateInfo-pNext-00990", ERROR_VALIDATION_FAILED_EXT,
        "the external handle types must be supported for this image"),
    /// `vkBindImageMemory`: bound once.
    ImageBound = ("VUID-vkBindImageMemory-image-07460", ERROR_VALIDATION_FAILED_EXT,
        "image must not have been bound to a memory object"),
    /// `vkBindImageMemory`: the offset inside the memory.
    ImageOffset = ("VUID-vkBindImageMemory-memoryOffset-01046", ERROR_VALIDATION_FAILED_EXT,
        "memoryOffset must be less than the size of memory"),
    /// `vkBindImageMemory`: a memory type the image allows.
    ImageMemoryType = ("VUID-vkBindImageMemory-memory-01047", ERROR_VALIDATION_FAILED_EXT,
        "memory must have one of the memory types in the image's memoryTypeBits"),
    /// `vkBindImageMemory`: an aligned offset.
    ImageAlignment = ("VUID-vkBindImageMemory-memoryOffset-01048", ERROR_VALIDATION_FAILED_EXT,
        "memoryOffset must be a multiple of the image's required alignment"),
    /// `vkBindImageMemory`: room for the image.
    ImageFits = ("VUID-vkBindImageMemory-size-01049", ERROR_VALIDATION_FAILED_EXT,
        "the image's required size must fit in memory after memoryOffset"),
    /// `vkCreateCommandPool`: a family the device has.
    PoolFamily = ("VUID-vkCreateCommandPool-queueFamilyIndex-01937", ERROR_VALIDATION_FAILED_EXT,
        "queueFamilyIndex must name a queue family of the device (only family 0 exists)"),
    /// `vkQueueSubmit`: only command buffers that can execute.
    SubmitExecutable = ("VUID-vkQueueSubmit-pCommandBuffers-00070", ERROR_VALIDATION_FAILED_EXT,
        "each command buffer must be in the executable state (one recorded an invalid command)"),
    /// A semaphore may only be exported as the handle types the device reports exportable.
    SemaphoreExportTypes = ("VUID-VkExportSemaphoreCreateInfo-handleTypes-01124", ERROR_VALIDATION_FAILED_EXT,
        "the export handleTypes must be supported and compatible (OPAQUE_FD and SYNC_FD on the kernel device, none on the software device)"),
    /// A fence may only be exported as the handle types the device reports exportable.
    FenceExportTypes = ("VUID-VkExportFenceCreateInfo-handleTypes-01446", ERROR_VALIDATION_FAILED_EXT,
        "the export handleTypes must be supported and compatible (OPAQUE_FD and SYNC_FD on the kernel device, none on the software device)"),
    /// Only a timeline semaphore has a counter.
    CounterTimeline = ("VUID-vkGetSemaphoreCounterValue-semaphore-03255", ERROR_VALIDATION_FAILED_EXT,
        "semaphore must be a timeline semaphore"),
    /// Only timeline semaphores are waited for from the host.
    WaitTimeline = ("VUID-VkSemaphoreWaitInfo-pSemaphores-03256", ERROR_VALIDATION_FAILED_EXT,
        "every semaphore must be a timeline semaphore"),
    /// Only a timeline semaphore is signalled from the host.
    SignalTimeline = ("VUID-VkSemaphoreSignalInfo-semaphore-03257", ERROR_VALIDATION_FAILED_EXT,
        "semaphore must be a timeline semaphore"),
    /// A host signal moves the timeline forward.
    SignalValue = ("VUID-VkSemaphoreSignalInfo-value-03258", ERROR_VALIDATION_FAILED_EXT,
        "value must be greater than the semaphore's current value"),
}

/// What a memory binding is of: the rules are the same for buffers and images, the
/// VUIDs are each command's own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BindTarget {
    /// `vkBindBufferMemory`.
    Buffer,
    /// `vkBindImageMemory`.
    Image,
}

impl BindTarget {
    /// The rules of a binding, in the order they are checked: bound once, offset inside the
    /// memory, memory type, alignment, size.
    pub const fn rules(self) -> [Rule; 5] {
        match self {
            BindTarget::Buffer => [
                Rule::BufferBound,
                Rule::BufferOffset,
                Rule::BufferMemoryType,
                Rule::BufferAlignment,
                Rule::BufferFits,
            ],
            BindTarget::Image => [
                Rule::ImageBound,
                Rule::ImageOffset,
                Rule::ImageMemoryType,
                Rule::ImageAlignment,
                Rule::ImageFits,
            ],
        }
    }
}

/// What a refusal records beyond its `VkResult` (`extmem::Cause`, with the ICD's own
/// rules, whose VUIDs are strings).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Cause {
    /// The VUID of the rule broken, for a Valid Usage violation.
    pub vuid: Option<&'static str>,
    /// The backend operation, where one failed.
    pub op: Option<Op>,
    /// The errno the kernel (or the OS) answered.
    pub errno: Option<i32>,
}

impl Cause {
    /// A violation of the rule `vuid`.
    const fn rule(vuid: &'static str) -> Self {
        Cause {
            vuid: Some(vuid),
            op: None,
            errno: None,
        }
    }
}

/// Why the ICD refused a command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IcdError {
    /// The memory manager refused (it names the rule, or the kernel operation and errno).
    Memory(extmem::Error),
    /// A recorded command broke a rule (returned by `vkEndCommandBuffer`).
    Record(RecordError),
    /// `vkCreateImage` asked for an image the device does not offer.
    Image(ImageError),
    /// A Valid Usage rule the ICD checks itself, with the values that broke it.
    ValidUsage {
        /// The rule.
        rule: Rule,
        /// The offending value (a size, an offset, a flag or index), where one says it.
        value: u64,
    },
    /// A handle that is not live, or belongs to another device (the command's implicit
    /// `-parameter` and `-parent` rules).
    UnknownHandle {
        /// What kind of handle.
        ty: vk::ObjectType,
        /// Its value.
        raw: u64,
    },
    /// A pointer the command reads or writes is null.
    NullPointer {
        /// What it points to (a Vulkan structure or handle type), or the argument.
        what: &'static str,
    },
    /// The copy engine faulted, or the kernel refused the job.
    Exec(ExecError),
    /// The device's backend has no copy engine to run a submission on.
    NoCopyEngine,
    /// The device is lost: a job of it failed (a GPU fault, a dependency that never
    /// signalled), or a held-back submission could not be made. Every later wait and
    /// submission of the device reports it too.
    DeviceLost {
        /// Jobs of the device that failed since it was created, as its backend counts
        /// them (0 if it was lost another way).
        failed_jobs: u64,
    },
    /// An enabled extension this driver does not offer (or a null name).
    ExtensionNotPresent {
        /// Its index in `ppEnabledExtensionNames`.
        index: usize,
    },
    /// A layer was named; the driver has none.
    LayerNotPresent,
    /// An enabled feature the device does not have (it has no optional feature).
    FeatureNotPresent {
        /// Which `VkPhysicalDeviceFeatures` member, counted from 0.
        member: usize,
    },
    /// The loader offers an interface version older than 3, the first with
    /// `vk_icdGetPhysicalDeviceProcAddr`.
    IncompatibleLoader {
        /// The version offered.
        offered: u32,
    },
    /// The device node (or the software device) could not be opened: the call and errno.
    DeviceOpen(BackendError),
    /// An image the device does not offer, asked of a format query.
    FormatNotSupported,
    /// The mapping's CPU address does not fit a host pointer.
    MapAddress {
        /// The address.
        addr: u64,
    },
}

impl IcdError {
    /// The `VkResult` the application gets: the one conversion, made at the C boundary.
    /// Exhaustive, with no catch-all arm, so a new variant cannot slip through unmapped.
    pub fn result(self) -> vk::Result {
        match self {
            IcdError::Memory(e) => e.result(),
            IcdError::Record(e) => e.result(),
            IcdError::Image(_) => vk::Result::ERROR_VALIDATION_FAILED_EXT,
            IcdError::ValidUsage { rule, .. } => rule.result(),
            // The specification leaves a stale handle or a null output undefined; we
            // refuse with the generic error rather than follow it.
            IcdError::UnknownHandle { .. } | IcdError::NullPointer { .. } => {
                vk::Result::ERROR_UNKNOWN
            }
            IcdError::Exec(ExecError::Fault(_) | ExecError::Kernel(_))
            | IcdError::NoCopyEngine
            | IcdError::DeviceLost { .. } => vk::Result::ERROR_DEVICE_LOST,
            IcdError::ExtensionNotPresent { .. } => vk::Result::ERROR_EXTENSION_NOT_PRESENT,
            IcdError::LayerNotPresent => vk::Result::ERROR_LAYER_NOT_PRESENT,
            IcdError::FeatureNotPresent { .. } => vk::Result::ERROR_FEATURE_NOT_PRESENT,
            IcdError::IncompatibleLoader { .. } => vk::Result::ERROR_INCOMPATIBLE_DRIVER,
            IcdError::DeviceOpen(_) => vk::Result::ERROR_INITIALIZATION_FAILED,
            IcdError::FormatNotSupported => vk::Result::ERROR_FORMAT_NOT_SUPPORTED,
            IcdError::MapAddress { .. } => vk::Result::ERROR_MEMORY_MAP_FAILED,
        }
    }

    /// The rule broken, the backend operation that failed and its errno, as far as the
    /// refusing layer knew them.
    pub fn cause(self) -> Cause {
        match self {
            IcdError::Memory(e) => {
                let cause = e.cause();
                Cause {
                    vuid: cause.vuid.map(extmem::Vuid::id),
                    op: cause.op,
                    errno: cause.errno,
                }
            }
            IcdError::Record(RecordError::OutOfMemory(e)) => IcdError::Memory(e).cause(),
            IcdError::Record(e) => Cause::rule(e.vuid()),
            IcdError::Image(e) => Cause {
                vuid: image_vuid(e),
                ..Cause::default()
            },
            IcdError::ValidUsage { rule, .. } => Cause::rule(rule.vuid()),
            IcdError::Exec(ExecError::Fault(_)) => Cause {
                op: Some(Op::Exec),
                ..Cause::default()
            },
            IcdError::Exec(ExecError::Kernel(e)) => Cause {
                op: Some(e.op),
                errno: Some(e.errno),
                ..Cause::default()
            },
            IcdError::DeviceOpen(e) => Cause {
                op: Some(e.op),
                errno: Some(e.errno),
                ..Cause::default()
            },
            IcdError::NoCopyEngine | IcdError::DeviceLost { .. } => Cause {
                op: Some(Op::Exec),
                ..Cause::default()
            },
            IcdError::MapAddress { .. } => Cause {
                op: Some(Op::Map),
                ..Cause::default()
            },
            IcdError::UnknownHandle { .. }
            | IcdError::NullPointer { .. }
            | IcdError::ExtensionNotPresent { .. }
            | IcdError::LayerNotPresent
            | IcdError::FeatureNotPresent { .. }
            | IcdError::IncompatibleLoader { .. }
            | IcdError::FormatNotSupported => Cause::default(),
        }
    }

    /// A refusal of rule `rule` for the offending `value`.
    pub const fn rule(rule: Rule, value: u64) -> Self {
        IcdError::ValidUsage { rule, value }
    }

    /// A handle of type `H` that is not live.
    pub fn unknown<H: vk::Handle>(handle: H) -> Self {
        IcdError::UnknownHandle {
            ty: H::TYPE,
            raw: handle.as_raw(),
        }
    }
}

/// The VUID an [`ImageError`] is about (see its variants).
fn image_vuid(e: ImageError) -> Option<&'static str> {
    match e {
        ImageError::Unsupported => Some("VUID-VkImageCreateInfo-imageCreateMaxMipLevels-02251"),
        ImageError::Extent { .. } => Some("VUID-VkImageCreateInfo-extent-00944"),
        ImageError::Counts => Some("VUID-VkImageCreateInfo-mipLevels-02255"),
        ImageError::InitialLayout => Some("VUID-VkImageCreateInfo-initialLayout-00993"),
        // Past maxResourceSize is a limit of this device, not a Valid Usage rule.
        ImageError::TooLarge { .. } => None,
    }
}

impl From<extmem::Error> for IcdError {
    fn from(e: extmem::Error) -> Self {
        IcdError::Memory(e)
    }
}

impl From<RecordError> for IcdError {
    fn from(e: RecordError) -> Self {
        IcdError::Record(e)
    }
}

impl From<ImageError> for IcdError {
    fn from(e: ImageError) -> Self {
        IcdError::Image(e)
    }
}

impl From<ExecError> for IcdError {
    fn from(e: ExecError) -> Self {
        IcdError::Exec(e)
    }
}

impl fmt::Display for IcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The VUID is printed beside the detail already.
            IcdError::Memory(e) => match e.cause().vuid {
                Some(vuid) => write!(f, "{}", vuid.text()),
                None => write!(f, "{e}"),
            },
            IcdError::Record(RecordError::OutOfMemory(e)) => {
                write!(f, "no staging memory for vkCmdUpdateBuffer: {e}")
            }
            IcdError::Record(e) => write!(f, "a recorded command is invalid: {e:?}"),
            IcdError::Image(e) => write!(f, "the image is not one this device offers: {e:?}"),
            IcdError::ValidUsage { rule, value } => {
                write!(f, "{} (value {value:#x})", rule.text())
            }
            IcdError::UnknownHandle { ty, raw } => {
                write!(f, "{ty:?} {raw:#x} is not a live handle of this device")
            }
            IcdError::NullPointer { what } => write!(f, "the pointer to {what} is NULL"),
            IcdError::Exec(ExecError::Fault(fault)) => write!(
                f,
                "the copy engine faulted at command {} (GPU VA {}): {:?}",
                fault.cmd, fault.va, fault.kind
            ),
            IcdError::Exec(ExecError::Kernel(e)) => write!(f, "the kernel refused the job: {e}"),
            IcdError::NoCopyEngine => write!(f, "the device has no copy engine"),
            IcdError::DeviceLost { failed_jobs } => write!(
                f,
                "the device is lost: {failed_jobs} of its jobs failed (a GPU fault or a dependency that never signalled)"
            ),
            IcdError::ExtensionNotPresent { index } => {
                write!(f, "enabled extension {index} is not offered by this driver")
            }
            IcdError::LayerNotPresent => write!(f, "the driver has no layers"),
            IcdError::FeatureNotPresent { member } => write!(
                f,
                "VkPhysicalDeviceFeatures member {member} is enabled; the device has no optional feature"
            ),
            IcdError::IncompatibleLoader { offered } => write!(
                f,
                "the loader offers interface version {offered}; 3 or later is needed"
            ),
            IcdError::DeviceOpen(e) => write!(f, "the device could not be opened: {e}"),
            IcdError::FormatNotSupported => {
                write!(f, "no image of this format, type, tiling, usage and flags")
            }
            IcdError::MapAddress { addr } => {
                write!(f, "the CPU address {addr:#x} does not fit a host pointer")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use extmem::backend::BackendError;

    #[test]
    fn every_rule_names_its_vuid_and_maps_to_an_error() {
        for rule in Rule::ALL {
            assert!(rule.vuid().starts_with("VUID-"), "{rule:?}");
            assert!(!rule.text().is_empty());
            assert!(rule.result().as_raw() < 0, "{rule:?}");
            let e = IcdError::rule(*rule, 0);
            assert_eq!(e.result(), rule.result());
            assert_eq!(e.cause().vuid, Some(rule.vuid()));
        }
    }

    #[test]
    fn what_the_memory_manager_knew_is_kept() {
        let e = IcdError::from(extmem::Error::InvalidHandle(
            extmem::HandleError::HostRangeRefused {
                ptr: 0x1000,
                size: 0x1000,
                errno: 14,
            },
        ));
        assert_eq!(e.result(), vk::Result::ERROR_INVALID_EXTERNAL_HANDLE);
        let cause = Cause {
            vuid: None,
            op: Some(Op::ImportHost),
            errno: Some(14),
        };
        assert_eq!(e.cause(), cause);
        let rule = IcdError::from(extmem::Error::from(extmem::Vuid::FdPropsValid));
        let vuid = Some("VUID-vkGetMemoryFdPropertiesKHR-fd-00673");
        assert_eq!(rule.cause().vuid, vuid);
    }

    #[test]
    fn a_kernel_refusal_of_a_job_is_device_lost_with_its_errno() {
        let e = IcdError::from(ExecError::Kernel(BackendError {
            op: Op::Exec,
            errno: 22,
        }));
        assert_eq!(e.result(), vk::Result::ERROR_DEVICE_LOST);
        assert_eq!((e.cause().op, e.cause().errno), (Some(Op::Exec), Some(22)));
    }

    #[test]
    fn a_recorded_error_names_the_command_rule() {
        let e = IcdError::from(RecordError::ZeroCopy);
        assert_eq!(e.cause().vuid, Some("VUID-VkBufferCopy-size-01988"));
        assert_eq!(e.result(), vk::Result::ERROR_VALIDATION_FAILED_EXT);
        let staging = IcdError::from(RecordError::OutOfMemory(extmem::Error::MemoryMapFailed {
            errno: 12,
        }));
        assert_eq!(staging.result(), vk::Result::ERROR_MEMORY_MAP_FAILED);
        assert_eq!(
            (staging.cause().op, staging.cause().errno),
            (Some(Op::Map), Some(12))
        );
        let unknown = IcdError::unknown(vk::Buffer::null());
        assert_eq!(unknown.result(), vk::Result::ERROR_UNKNOWN);
        assert!(unknown.to_string().contains("BUFFER 0x0"), "{unknown}");
    }
}
