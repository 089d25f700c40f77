//! The C view of the contract, for checking `extmem_vgpu_drm.h` against this crate.

use core::fmt::{self, Write};
use core::mem::{offset_of, size_of};

use crate::ioctl::*;

/// Lists each struct with its C name and fields once; generates the C assertions.
macro_rules! c_structs {
    ($out:ident; $($rust:ident => $c:literal { $($field:ident),+ $(,)? })+) => {
        $(
            writeln!($out, "_Static_assert(sizeof(struct {}) == {}, \"size of {}\");", $c, size_of::<$rust>(), $c)?;
            $(
                writeln!(
                    $out,
                    "_Static_assert(offsetof(struct {}, {}) == {}, \"offset of {}.{}\");",
                    $c, stringify!($field), offset_of!($rust, $field), $c, stringify!($field)
                )?;
            )+
        )+
    };
}

/// Lists each named value with its C macro once.
macro_rules! c_values {
    ($out:ident; $($c:literal = $value:expr,)+) => {
        $(
            writeln!($out, "_Static_assert({} == {:#x}u, \"value of {}\");", $c, $value, $c)?;
        )+
    };
}

/// Writes a C translation unit body of `_Static_assert`s that holds exactly when the C
/// header agrees with this crate on every struct size, field offset, ioctl number, flag,
/// parameter id and op. Include the header (and `<stddef.h>`) before it.
pub fn c_layout_asserts(out: &mut impl Write) -> fmt::Result {
    c_structs!(out;
        GetParam => "drm_extmem_get_param" { param, pad, value }
        GemCreate => "drm_extmem_gem_create" { size, flags, handle }
        GemUserptr => "drm_extmem_gem_userptr" { ptr, size, flags, handle, kind, pad }
        GemInfo => "drm_extmem_gem_info" { handle, kind, size, mmap_offset, flags, pad }
        VmBind => "drm_extmem_vm_bind" { op, flags, handle, pad, va, offset, size }
        Cmd => "drm_extmem_cmd" { op, value, src, dst, size }
        ExecSync => "drm_extmem_exec_sync" { handle, flags, point }
        Exec => "drm_extmem_exec" {
            cmds, count, flags, fault_va, fault_cmd, fault_kind, waits, signals, wait_count,
            signal_count,
        }
        VmQuery => "drm_extmem_vm_query" { va, pa, page_size, flags, pad }
    );
    c_values!(out;
        "DRM_IOCTL_EXTMEM_GET_PARAM" = IOCTL_GET_PARAM,
        "DRM_IOCTL_EXTMEM_GEM_CREATE" = IOCTL_GEM_CREATE,
        "DRM_IOCTL_EXTMEM_GEM_USERPTR" = IOCTL_GEM_USERPTR,
        "DRM_IOCTL_EXTMEM_GEM_INFO" = IOCTL_GEM_INFO,
        "DRM_IOCTL_EXTMEM_VM_BIND" = IOCTL_VM_BIND,
        "DRM_IOCTL_EXTMEM_EXEC" = IOCTL_EXEC,
        "DRM_IOCTL_EXTMEM_VM_QUERY" = IOCTL_VM_QUERY,
        "EXTMEM_API_VERSION" = API_VERSION,
        "EXTMEM_FLAG_READ_ONLY" = FLAG_READ_ONLY,
        "EXTMEM_USERPTR_PROBE" = USERPTR_PROBE,
        "EXTMEM_QUERY_MAPPED" = QUERY_MAPPED,
        "EXTMEM_QUERY_READ_ONLY" = QUERY_READ_ONLY,
        "EXTMEM_MAX_EXEC_CMDS" = MAX_EXEC_CMDS,
        "EXTMEM_EXEC_WAIT" = EXEC_WAIT,
        "EXTMEM_EXEC_FLAGS" = EXEC_FLAGS,
        "EXTMEM_MAX_EXEC_SYNCS" = MAX_EXEC_SYNCS,
        "EXTMEM_EXEC_SYNC_FLAGS" = EXEC_SYNC_FLAGS,
    );
    for p in Param::KNOWN {
        if let Some(name) = p.name() {
            writeln!(
                out,
                "_Static_assert(EXTMEM_PARAM_{name} == {}u, \"param {name}\");",
                p.0
            )?;
        }
    }
    for k in ObjectKind::KNOWN {
        if let Some(name) = k.name() {
            writeln!(
                out,
                "_Static_assert(EXTMEM_OBJECT_{name} == {}u, \"kind {name}\");",
                k.0
            )?;
        }
    }
    for op in BindOp::KNOWN {
        if let Some(name) = op.name() {
            writeln!(
                out,
                "_Static_assert(EXTMEM_BIND_{name} == {}u, \"bind op {name}\");",
                op.0
            )?;
        }
    }
    for op in CmdOp::KNOWN {
        if let Some(name) = op.name() {
            writeln!(
                out,
                "_Static_assert(EXTMEM_CMD_{name} == {}u, \"cmd op {name}\");",
                op.0
            )?;
        }
    }
    for f in FaultKind::KNOWN {
        if let Some(name) = f.name() {
            writeln!(
                out,
                "_Static_assert(EXTMEM_FAULT_{name} == {}u, \"fault {name}\");",
                f.0
            )?;
        }
    }
    Ok(())
}

// Every struct is a multiple of 8 bytes, so 32- and 64-bit userspace agree (no compat ioctl).
const _: () = {
    assert!(size_of::<GetParam>() % 8 == 0);
    assert!(size_of::<GemCreate>() % 8 == 0);
    assert!(size_of::<GemUserptr>() % 8 == 0);
    assert!(size_of::<GemInfo>() % 8 == 0);
    assert!(size_of::<VmBind>() % 8 == 0);
    assert!(size_of::<Cmd>() % 8 == 0);
    assert!(size_of::<Exec>() % 8 == 0);
    assert!(size_of::<ExecSync>() % 8 == 0);
    assert!(size_of::<VmQuery>() % 8 == 0);
};
