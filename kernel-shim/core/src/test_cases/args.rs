//! Argument checks of `GEM_CREATE`, `GEM_USERPTR`, `VM_BIND` and `EXEC`: each refused
//! field with its error and value, and the out fields ignored.

use crate::args::*;
use extmem_hw::profile::MIN_PAGE;
use extmem_uapi::{
    BindOp, Cmd, CmdOp, Exec, ExecSync, GemCreate, GemUserptr, VmBind, EXEC_FLAGS,
    GEM_USERPTR_FLAGS, MAX_EXEC_CMDS, MAX_EXEC_SYNCS, VM_BIND_FLAGS,
};

use super::{host_tests, Must};
use crate::cpu_page::CpuPage;
use extmem_hw::profile::VGPU;
use extmem_uapi::{FLAG_READ_ONLY, USERPTR_PROBE};

use extmem_uapi::EXEC_WAIT;

const M4K: u64 = 0x1000;
const M16K: u64 = 0x4000;

fn page(shift: u32) -> CpuPage {
    CpuPage::from_shift(shift).must("a Linux page size")
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

pub fn gem_create() {
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

pub fn gem_userptr() {
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

pub fn with_16_kib_pages_objects_and_imports_are_whole_cpu_pages() {
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

pub fn vm_bind() {
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

pub fn exec_and_commands() {
    let ok = Exec {
        cmds: 0x7000_0000,
        count: 3,
        ..Exec::default()
    };
    assert_eq!(check_exec(&ok), Ok(()));
    assert_eq!(
        check_exec(&Exec { flags: 2, ..ok }),
        Err(ArgError::UnknownFlags {
            flags: 2,
            known: EXEC_FLAGS
        })
    );
    assert_eq!(
        check_exec(&Exec {
            flags: EXEC_WAIT,
            ..ok
        }),
        Ok(())
    );
    assert_eq!(
        check_exec(&Exec {
            signal_count: MAX_EXEC_SYNCS + 1,
            ..ok
        }),
        Err(ArgError::TooManySyncs {
            field: Field::Signals,
            count: MAX_EXEC_SYNCS + 1
        })
    );
    assert!(matches!(
        check_exec(&Exec {
            waits: u64::MAX - 8,
            wait_count: 1,
            ..ok
        }),
        Err(ArgError::Wraps {
            field: Field::Waits,
            ..
        })
    ));
    // A null array of no syncs is fine.
    assert_eq!(
        check_exec(&Exec {
            waits: u64::MAX,
            wait_count: 0,
            ..ok
        }),
        Ok(())
    );
    assert_eq!(
        check_exec_sync(&ExecSync {
            handle: 1,
            flags: 1,
            point: 7
        }),
        Err(ArgError::UnknownFlags { flags: 1, known: 0 })
    );
    assert_eq!(
        check_exec_sync(&ExecSync {
            handle: 1,
            flags: 0,
            point: 7
        }),
        Ok(())
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

host_tests!(
    gem_create,
    gem_userptr,
    with_16_kib_pages_objects_and_imports_are_whole_cpu_pages,
    vm_bind,
    exec_and_commands
);
