//! The checks on ioctl arguments that need no object and no VM.
//!
//! The C glue calls these first (through `extmem_kcore_check_*`) so that a malformed
//! request gets `EINVAL` / `EOVERFLOW` / `ERANGE` before a bad handle gets `ENOENT`; the VM
//! operations run them again, so a forgotten call in the glue cannot skip them.
//!
//! Each check names the field and the value it rejects. The order is fixed: unknown op,
//! non-zero padding, unknown flags, fields an op does not use, zero size, alignment, wrap
//! (`EOVERFLOW`), then limits (`ERANGE`).

use core::mem::size_of;

use extmem_hw::profile::MIN_PAGE;
use extmem_hw::{Alignment, GpuProfile};
use extmem_uapi::{
    BindOp, Cmd, CmdOp, Exec, ExecSync, GemCreate, GemUserptr, VmBind, EXEC_FLAGS, EXEC_SYNC_FLAGS,
    GEM_CREATE_FLAGS, GEM_USERPTR_FLAGS, MAX_EXEC_CMDS, MAX_EXEC_SYNCS, VM_BIND_FLAGS,
};

use crate::cpu_page::CpuPage;

/// The field of an ioctl struct an [`ArgError`] is about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Field {
    /// A GPU virtual address (`va`).
    Va,
    /// An offset into an object.
    Offset,
    /// A size in bytes.
    Size,
    /// A host pointer (`ptr`).
    Ptr,
    /// A GEM handle.
    Handle,
    /// The user pointer to the command array of `EXEC`.
    Cmds,
    /// A command's source VA.
    Src,
    /// A command's destination VA.
    Dst,
    /// A command's fill value.
    Value,
    /// The user pointer to the wait syncobjs of `EXEC`.
    Waits,
    /// The user pointer to the signal syncobjs of `EXEC`.
    Signals,
}

/// Why the arguments of an ioctl are rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ArgError {
    /// An op this version does not know (`EINVAL`).
    UnknownOp {
        /// The op.
        op: u32,
    },
    /// A `GET_PARAM` parameter this version does not know (`EINVAL`).
    UnknownParam {
        /// The parameter id.
        param: u32,
    },
    /// Padding that is not zero (`EINVAL`).
    NonZeroPad {
        /// The padding's value.
        pad: u32,
    },
    /// Flag bits outside `known` (`EINVAL`).
    UnknownFlags {
        /// The flags passed.
        flags: u32,
        /// Every flag the call accepts.
        known: u32,
    },
    /// A field the op does not use is not zero (`EINVAL`): a `VM_BIND` UNMAP with a
    /// handle or offset, a COPY with a fill value, a FILL with a source.
    UnusedField {
        /// The field.
        field: Field,
        /// Its value.
        value: u64,
    },
    /// A size of zero (`EINVAL`).
    ZeroSize,
    /// A field that is not a multiple of `alignment` (`EINVAL`).
    Misaligned {
        /// The field.
        field: Field,
        /// Its value.
        value: u64,
        /// The alignment it needs.
        alignment: Alignment,
    },
    /// `start + size` wraps around the 64-bit space (`EOVERFLOW`).
    Wraps {
        /// The field holding `start`.
        field: Field,
        /// Start of the range.
        start: u64,
        /// Its size.
        size: u64,
    },
    /// A GPU VA range that leaves the VA space (`ERANGE`).
    OutsideVaSpace {
        /// Start of the range.
        va: u64,
        /// Its size.
        size: u64,
        /// The VA width.
        va_bits: u8,
    },
    /// A size above the profile's `max_mapping` (`ERANGE`): the largest object or
    /// mapping the device accepts (`EXTMEM_PARAM_MAX_MAPPING`).
    TooLarge {
        /// The size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// An `EXEC` command count outside `1..=MAX_EXEC_CMDS` (`EINVAL`).
    BadCount {
        /// The count.
        count: u32,
    },
    /// More than `MAX_EXEC_SYNCS` wait or signal syncobjs in one `EXEC` (`EINVAL`).
    TooManySyncs {
        /// `Waits` or `Signals`.
        field: Field,
        /// The count.
        count: u32,
    },
}

/// The 4-byte alignment of FILL commands (`vkCmdFillBuffer`: VUID-vkCmdFillBuffer-dstOffset-00025
/// and VUID-vkCmdFillBuffer-size-00028).
pub const FILL_ALIGNMENT: Alignment = match Alignment::new(4) {
    Some(a) => a,
    None => Alignment::SIZE_4K,
};

fn no_pad(pad: u32) -> Result<(), ArgError> {
    if pad == 0 {
        Ok(())
    } else {
        Err(ArgError::NonZeroPad { pad })
    }
}

fn known_flags(flags: u32, known: u32) -> Result<(), ArgError> {
    if flags & !known == 0 {
        Ok(())
    } else {
        Err(ArgError::UnknownFlags { flags, known })
    }
}

fn unused(field: Field, value: u64) -> Result<(), ArgError> {
    if value == 0 {
        Ok(())
    } else {
        Err(ArgError::UnusedField { field, value })
    }
}

fn non_zero(size: u64) -> Result<(), ArgError> {
    if size == 0 {
        Err(ArgError::ZeroSize)
    } else {
        Ok(())
    }
}

fn aligned(field: Field, value: u64, alignment: Alignment) -> Result<(), ArgError> {
    if alignment.is_aligned(value) {
        Ok(())
    } else {
        Err(ArgError::Misaligned {
            field,
            value,
            alignment,
        })
    }
}

/// `start + size`, or [`ArgError::Wraps`].
fn end_of(field: Field, start: u64, size: u64) -> Result<u64, ArgError> {
    start
        .checked_add(size)
        .ok_or(ArgError::Wraps { field, start, size })
}

fn at_most_max_mapping(size: u64, profile: &GpuProfile) -> Result<(), ArgError> {
    if size <= profile.max_mapping {
        Ok(())
    } else {
        Err(ArgError::TooLarge {
            size,
            max: profile.max_mapping,
        })
    }
}

/// `GEM_CREATE`: known flags, a non-zero multiple of the CPU page (a shmem object is whole
/// CPU pages; a CPU page is whole GPU pages), at most `max_mapping`.
pub fn check_gem_create(
    args: &GemCreate,
    profile: &GpuProfile,
    cpu_page: CpuPage,
) -> Result<(), ArgError> {
    known_flags(args.flags, GEM_CREATE_FLAGS)?;
    non_zero(args.size)?;
    aligned(Field::Size, args.size, cpu_page.alignment())?;
    at_most_max_mapping(args.size, profile)
}

/// `GEM_USERPTR`: known flags, zero padding, `ptr` and a non-zero `size` aligned to
/// `minImportedHostPointerAlignment`, the coarser of the CPU page (the kernel pins whole
/// pages) and the profile's ([`CpuPage::import_alignment`];
/// VUID-VkImportMemoryHostPointerInfoEXT-pHostPointer-01749,
/// VUID-VkMemoryAllocateInfo-allocationSize-01745 ask the application for the same),
/// `ptr + size` not wrapping, `size` at most `max_mapping`.
pub fn check_gem_userptr(
    args: &GemUserptr,
    profile: &GpuProfile,
    cpu_page: CpuPage,
) -> Result<(), ArgError> {
    known_flags(args.flags, GEM_USERPTR_FLAGS)?;
    no_pad(args.pad)?;
    non_zero(args.size)?;
    let alignment = cpu_page.import_alignment(profile);
    aligned(Field::Ptr, args.ptr, alignment)?;
    aligned(Field::Size, args.size, alignment)?;
    end_of(Field::Ptr, args.ptr, args.size)?;
    at_most_max_mapping(args.size, profile)
}

/// `VM_BIND`: a known op, zero padding, known flags (none for UNMAP), no handle or offset
/// for UNMAP, a non-zero size, `va` / `offset` / `size` 4 KiB-aligned, neither
/// `va + size` nor `offset + size` wrapping, `size` at most `max_mapping`, and
/// `[va, va + size)` inside the VA space.
pub fn check_vm_bind(args: &VmBind, profile: &GpuProfile) -> Result<(), ArgError> {
    let map = match args.op {
        BindOp::MAP => true,
        BindOp::UNMAP => false,
        BindOp(op) => return Err(ArgError::UnknownOp { op }),
    };
    no_pad(args.pad)?;
    if map {
        known_flags(args.flags, VM_BIND_FLAGS)?;
    } else {
        known_flags(args.flags, 0)?;
        unused(Field::Handle, u64::from(args.handle))?;
        unused(Field::Offset, args.offset)?;
    }
    non_zero(args.size)?;
    aligned(Field::Va, args.va, MIN_PAGE)?;
    aligned(Field::Offset, args.offset, MIN_PAGE)?;
    aligned(Field::Size, args.size, MIN_PAGE)?;
    let end = end_of(Field::Va, args.va, args.size)?;
    end_of(Field::Offset, args.offset, args.size)?;
    at_most_max_mapping(args.size, profile)?;
    if end > profile.va_size() {
        return Err(ArgError::OutsideVaSpace {
            va: args.va,
            size: args.size,
            va_bits: profile.va_bits,
        });
    }
    Ok(())
}

/// `EXEC`: zero padding, `1..=MAX_EXEC_CMDS` commands, and the command array's user range
/// not wrapping. The out fields are ignored.
pub fn check_exec(args: &Exec) -> Result<(), ArgError> {
    known_flags(args.flags, EXEC_FLAGS)?;
    if args.count == 0 || args.count > MAX_EXEC_CMDS {
        return Err(ArgError::BadCount { count: args.count });
    }
    end_of(Field::Cmds, args.cmds, array_bytes::<Cmd>(args.count))?;
    for (field, ptr, count) in [
        (Field::Waits, args.waits, args.wait_count),
        (Field::Signals, args.signals, args.signal_count),
    ] {
        if count > MAX_EXEC_SYNCS {
            return Err(ArgError::TooManySyncs { field, count });
        }
        end_of(field, ptr, array_bytes::<ExecSync>(count))?;
    }
    Ok(())
}

/// Bytes of `count` `T`s in a user array (saturating: the range check then fails).
fn array_bytes<T>(count: u32) -> u64 {
    let each = u64::try_from(size_of::<T>()).unwrap_or(u64::MAX);
    u64::from(count).saturating_mul(each)
}

/// One wait or signal syncobj of `EXEC`: known flags. Whether the handle names a syncobj
/// is the DRM core's business (`ENOENT`).
pub fn check_exec_sync(sync: &ExecSync) -> Result<(), ArgError> {
    known_flags(sync.flags, EXEC_SYNC_FLAGS)
}

/// One copy-engine command: a known op, no field the op does not use, a non-zero size,
/// ranges that do not wrap, and for FILL a 4-byte-aligned `dst` and `size`. Where the
/// ranges point is the page tables' business: an address nothing maps is a GPU fault, not
/// a malformed command.
pub fn check_cmd(cmd: &Cmd) -> Result<(), ArgError> {
    match cmd.op {
        CmdOp::COPY => {
            unused(Field::Value, u64::from(cmd.value))?;
            non_zero(cmd.size)?;
            end_of(Field::Src, cmd.src, cmd.size)?;
            end_of(Field::Dst, cmd.dst, cmd.size)?;
        }
        CmdOp::FILL => {
            unused(Field::Src, cmd.src)?;
            non_zero(cmd.size)?;
            aligned(Field::Dst, cmd.dst, FILL_ALIGNMENT)?;
            aligned(Field::Size, cmd.size, FILL_ALIGNMENT)?;
            end_of(Field::Dst, cmd.dst, cmd.size)?;
        }
        CmdOp(op) => return Err(ArgError::UnknownOp { op }),
    }
    Ok(())
}
