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
    BindOp, Cmd, CmdOp, Exec, GemCreate, GemUserptr, VmBind, GEM_CREATE_FLAGS, GEM_USERPTR_FLAGS,
    MAX_EXEC_CMDS, VM_BIND_FLAGS,
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
    no_pad(args.pad)?;
    if args.count == 0 || args.count > MAX_EXEC_CMDS {
        return Err(ArgError::BadCount { count: args.count });
    }
    let cmd_bytes = u64::try_from(size_of::<Cmd>()).unwrap_or(u64::MAX);
    let bytes = u64::from(args.count).saturating_mul(cmd_bytes);
    end_of(Field::Cmds, args.cmds, bytes)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use extmem_hw::profile::VGPU;
    use extmem_uapi::{FLAG_READ_ONLY, USERPTR_PROBE};

    const M4K: u64 = 0x1000;
    const M16K: u64 = 0x4000;

    fn page(shift: u32) -> CpuPage {
        CpuPage::from_shift(shift).expect("a Linux page size")
    }

    fn map(va: u64, offset: u64, size: u64) -> VmBind {
        VmBind {
            op: BindOp::MAP,
            va,
            offset,
            size,
            handle: 1,
            ..VmBind::default()
        }
    }

    #[test]
    fn gem_create() {
        let ok = GemCreate {
            size: 3 * M4K,
            ..GemCreate::default()
        };
        assert_eq!(check_gem_create(&ok, &VGPU, page(12)), Ok(()));
        let bad = |f: fn(&mut GemCreate)| {
            let mut a = ok;
            f(&mut a);
            check_gem_create(&a, &VGPU, page(12))
        };
        assert_eq!(
            bad(|a| a.flags = FLAG_READ_ONLY),
            Err(ArgError::UnknownFlags { flags: 1, known: 0 })
        );
        assert_eq!(bad(|a| a.size = 0), Err(ArgError::ZeroSize));
        assert_eq!(
            bad(|a| a.size = 0x1800),
            Err(ArgError::Misaligned {
                field: Field::Size,
                value: 0x1800,
                alignment: MIN_PAGE
            })
        );
        assert_eq!(
            bad(|a| a.size = VGPU.max_mapping + M4K),
            Err(ArgError::TooLarge {
                size: VGPU.max_mapping + M4K,
                max: VGPU.max_mapping
            })
        );
        // The handle is an out field: whatever comes in is ignored.
        assert_eq!(bad(|a| a.handle = 7), Ok(()));
    }

    #[test]
    fn gem_userptr() {
        let ok = GemUserptr {
            ptr: 0x7f00_0000_0000,
            size: 16 * M4K,
            flags: FLAG_READ_ONLY | USERPTR_PROBE,
            ..GemUserptr::default()
        };
        assert_eq!(check_gem_userptr(&ok, &VGPU, page(12)), Ok(()));
        let bad = |f: fn(&mut GemUserptr)| {
            let mut a = ok;
            f(&mut a);
            check_gem_userptr(&a, &VGPU, page(12))
        };
        assert_eq!(
            bad(|a| a.flags = 1 << 5),
            Err(ArgError::UnknownFlags {
                flags: 1 << 5,
                known: GEM_USERPTR_FLAGS
            })
        );
        assert_eq!(bad(|a| a.pad = 1), Err(ArgError::NonZeroPad { pad: 1 }));
        assert_eq!(bad(|a| a.size = 0), Err(ArgError::ZeroSize));
        assert!(matches!(
            bad(|a| a.ptr += 8),
            Err(ArgError::Misaligned {
                field: Field::Ptr,
                ..
            })
        ));
        assert!(matches!(
            bad(|a| a.size = M4K + 1),
            Err(ArgError::Misaligned {
                field: Field::Size,
                ..
            })
        ));
        assert_eq!(
            bad(|a| a.ptr = u64::MAX - 0xfff),
            Err(ArgError::Wraps {
                field: Field::Ptr,
                start: u64::MAX - 0xfff,
                size: 16 * M4K
            })
        );
        assert!(matches!(
            bad(|a| a.size = 1 << 40),
            Err(ArgError::TooLarge { .. })
        ));
        // Out fields are ignored.
        assert_eq!(
            bad(|a| {
                a.handle = 9;
                a.kind = extmem_uapi::ObjectKind::DMABUF;
            }),
            Ok(())
        );
    }

    #[test]
    fn with_16_kib_pages_objects_and_imports_are_whole_cpu_pages() {
        let page_16k = page(14);
        let create = |size| {
            check_gem_create(
                &GemCreate {
                    size,
                    ..GemCreate::default()
                },
                &VGPU,
                page_16k,
            )
        };
        assert_eq!(create(3 * M16K), Ok(()));
        assert_eq!(
            create(3 * M4K),
            Err(ArgError::Misaligned {
                field: Field::Size,
                value: 3 * M4K,
                alignment: page_16k.alignment()
            })
        );
        let userptr = |ptr, size| {
            check_gem_userptr(
                &GemUserptr {
                    ptr,
                    size,
                    ..GemUserptr::default()
                },
                &VGPU,
                page_16k,
            )
        };
        assert_eq!(userptr(0x7f00_0000_4000, 2 * M16K), Ok(()));
        // 4 KiB-aligned is what the GPU granule would take, but not a whole CPU page.
        assert_eq!(
            userptr(0x7f00_0000_1000, M16K),
            Err(ArgError::Misaligned {
                field: Field::Ptr,
                value: 0x7f00_0000_1000,
                alignment: page_16k.alignment()
            })
        );
        assert_eq!(
            userptr(0x7f00_0000_4000, M16K + M4K),
            Err(ArgError::Misaligned {
                field: Field::Size,
                value: M16K + M4K,
                alignment: page_16k.alignment()
            })
        );
        // VM_BIND stays at the GPU granule: a 16 KiB page is four 4 KiB entries, and a
        // binding may start at any of them.
        assert_eq!(check_vm_bind(&map(0x10_1000, M4K, M4K), &VGPU), Ok(()));
    }

    #[test]
    fn vm_bind() {
        assert_eq!(check_vm_bind(&map(0x10_0000, M4K, M4K), &VGPU), Ok(()));
        let unmap = VmBind {
            op: BindOp::UNMAP,
            va: 0x10_0000,
            size: M4K,
            ..VmBind::default()
        };
        assert_eq!(check_vm_bind(&unmap, &VGPU), Ok(()));
        let bad = |mut a: VmBind, f: fn(&mut VmBind)| {
            f(&mut a);
            check_vm_bind(&a, &VGPU)
        };
        let m = map(0x10_0000, M4K, M4K);
        assert_eq!(
            bad(m, |a| a.op = BindOp(3)),
            Err(ArgError::UnknownOp { op: 3 })
        );
        assert_eq!(bad(m, |a| a.pad = 4), Err(ArgError::NonZeroPad { pad: 4 }));
        assert_eq!(
            bad(m, |a| a.flags = 2),
            Err(ArgError::UnknownFlags {
                flags: 2,
                known: VM_BIND_FLAGS
            })
        );
        assert_eq!(bad(m, |a| a.flags = FLAG_READ_ONLY), Ok(()));
        assert_eq!(
            bad(unmap, |a| a.flags = FLAG_READ_ONLY),
            Err(ArgError::UnknownFlags { flags: 1, known: 0 })
        );
        assert_eq!(
            bad(unmap, |a| a.handle = 5),
            Err(ArgError::UnusedField {
                field: Field::Handle,
                value: 5
            })
        );
        assert_eq!(
            bad(unmap, |a| a.offset = M4K),
            Err(ArgError::UnusedField {
                field: Field::Offset,
                value: M4K
            })
        );
        assert_eq!(bad(m, |a| a.size = 0), Err(ArgError::ZeroSize));
        for (field, f) in [
            (
                Field::Va,
                (|a: &mut VmBind| a.va += 0x10) as fn(&mut VmBind),
            ),
            (Field::Offset, |a| a.offset += 0x200),
            (Field::Size, |a| a.size += 1),
        ] {
            assert!(
                matches!(bad(m, f), Err(ArgError::Misaligned { field: got, .. }) if got == field),
                "{field:?}"
            );
        }
        assert_eq!(
            bad(m, |a| a.va = !0xfff_u64),
            Err(ArgError::Wraps {
                field: Field::Va,
                start: !0xfff_u64,
                size: M4K
            })
        );
        assert_eq!(
            bad(m, |a| a.offset = !0xfff_u64),
            Err(ArgError::Wraps {
                field: Field::Offset,
                start: !0xfff_u64,
                size: M4K
            })
        );
        assert_eq!(
            bad(m, |a| a.va = (1 << 48) - M4K),
            Ok(()),
            "the last page of the VA space"
        );
        assert_eq!(
            bad(m, |a| a.va = 1 << 48),
            Err(ArgError::OutsideVaSpace {
                va: 1 << 48,
                size: M4K,
                va_bits: 48
            })
        );
        assert!(matches!(
            bad(m, |a| a.size = VGPU.max_mapping + M4K),
            Err(ArgError::TooLarge { .. })
        ));
    }

    #[test]
    fn exec_and_commands() {
        let ok = Exec {
            cmds: 0x7000_0000,
            count: 3,
            ..Exec::default()
        };
        assert_eq!(check_exec(&ok), Ok(()));
        assert_eq!(
            check_exec(&Exec { pad: 1, ..ok }),
            Err(ArgError::NonZeroPad { pad: 1 })
        );
        assert_eq!(
            check_exec(&Exec { count: 0, ..ok }),
            Err(ArgError::BadCount { count: 0 })
        );
        assert_eq!(
            check_exec(&Exec {
                count: MAX_EXEC_CMDS + 1,
                ..ok
            }),
            Err(ArgError::BadCount {
                count: MAX_EXEC_CMDS + 1
            })
        );
        assert!(matches!(
            check_exec(&Exec {
                cmds: u64::MAX - 8,
                ..ok
            }),
            Err(ArgError::Wraps {
                field: Field::Cmds,
                ..
            })
        ));
        // Out fields are ignored.
        assert_eq!(
            check_exec(&Exec {
                fault_va: 1,
                fault_cmd: 2,
                ..ok
            }),
            Ok(())
        );

        let copy = Cmd {
            op: CmdOp::COPY,
            src: 0x1001,
            dst: 0x2003,
            size: 5,
            ..Cmd::default()
        };
        let fill = Cmd {
            op: CmdOp::FILL,
            value: 0xdead_beef,
            dst: 0x2004,
            size: 8,
            ..Cmd::default()
        };
        assert_eq!(check_cmd(&copy), Ok(()));
        assert_eq!(check_cmd(&fill), Ok(()));
        assert_eq!(
            check_cmd(&Cmd {
                op: CmdOp(0),
                ..copy
            }),
            Err(ArgError::UnknownOp { op: 0 })
        );
        assert_eq!(
            check_cmd(&Cmd { value: 1, ..copy }),
            Err(ArgError::UnusedField {
                field: Field::Value,
                value: 1
            })
        );
        assert_eq!(
            check_cmd(&Cmd { src: 4, ..fill }),
            Err(ArgError::UnusedField {
                field: Field::Src,
                value: 4
            })
        );
        assert_eq!(check_cmd(&Cmd { size: 0, ..copy }), Err(ArgError::ZeroSize));
        assert_eq!(check_cmd(&Cmd { size: 0, ..fill }), Err(ArgError::ZeroSize));
        assert!(matches!(
            check_cmd(&Cmd {
                src: u64::MAX,
                ..copy
            }),
            Err(ArgError::Wraps {
                field: Field::Src,
                ..
            })
        ));
        assert!(matches!(
            check_cmd(&Cmd {
                dst: u64::MAX - 3,
                ..copy
            }),
            Err(ArgError::Wraps {
                field: Field::Dst,
                ..
            })
        ));
        assert!(matches!(
            check_cmd(&Cmd {
                dst: u64::MAX - 3,
                ..fill
            }),
            Err(ArgError::Wraps {
                field: Field::Dst,
                ..
            })
        ));
        assert!(matches!(
            check_cmd(&Cmd {
                dst: 0x2006,
                ..fill
            }),
            Err(ArgError::Misaligned {
                field: Field::Dst,
                ..
            })
        ));
        assert!(matches!(
            check_cmd(&Cmd { size: 6, ..fill }),
            Err(ArgError::Misaligned {
                field: Field::Size,
                ..
            })
        ));
    }
}
