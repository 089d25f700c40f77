//! The udmabuf and dma-heap declarations in this crate (linux-raw-sys lacks them) must agree
//! with the kernel's own headers: compile `_Static_assert`s of their sizes, offsets and ioctl
//! numbers against `<linux/udmabuf.h>` and `<linux/dma-heap.h>` with the system C compiler.
//! Linux only: the declarations do not exist on Windows.
#![cfg(not(windows))]

use std::mem::{offset_of, size_of};
use std::process::Command;

use extmem::dma_heap::{DmaHeapAllocationData, DMA_HEAP_IOCTL_ALLOC};
use extmem::udmabuf::{UdmabufCreate, UDMABUF_CREATE, UDMABUF_FLAGS_CLOEXEC};

fn asserts() -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include <linux/udmabuf.h>\n#include <linux/dma-heap.h>\n",
    );
    let mut check = |expr: String| {
        c.push_str(&format!("_Static_assert({expr}, \"{expr}\");\n"));
    };
    check(format!(
        "sizeof(struct udmabuf_create) == {}",
        size_of::<UdmabufCreate>()
    ));
    for (field, at) in [
        ("memfd", offset_of!(UdmabufCreate, memfd)),
        ("flags", offset_of!(UdmabufCreate, flags)),
        ("offset", offset_of!(UdmabufCreate, offset)),
        ("size", offset_of!(UdmabufCreate, size)),
    ] {
        check(format!("offsetof(struct udmabuf_create, {field}) == {at}"));
    }
    check(format!("UDMABUF_CREATE == {:#x}u", UDMABUF_CREATE));
    check(format!("UDMABUF_FLAGS_CLOEXEC == {UDMABUF_FLAGS_CLOEXEC}"));
    check(format!(
        "sizeof(struct dma_heap_allocation_data) == {}",
        size_of::<DmaHeapAllocationData>()
    ));
    for (field, at) in [
        ("len", offset_of!(DmaHeapAllocationData, len)),
        ("fd", offset_of!(DmaHeapAllocationData, fd)),
        ("fd_flags", offset_of!(DmaHeapAllocationData, fd_flags)),
        ("heap_flags", offset_of!(DmaHeapAllocationData, heap_flags)),
    ] {
        check(format!(
            "offsetof(struct dma_heap_allocation_data, {field}) == {at}"
        ));
    }
    check(format!(
        "DMA_HEAP_IOCTL_ALLOC == {:#x}u",
        DMA_HEAP_IOCTL_ALLOC
    ));
    c
}

#[test]
fn udmabuf_and_dma_heap_match_the_kernel_headers() {
    let dir = std::env::temp_dir().join(format!("extmem-uapi-headers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("check.c");
    std::fs::write(&file, asserts()).expect("write check.c");
    let output = Command::new("cc")
        .args(["-std=c11", "-fsyntax-only", "-Werror"])
        .arg(&file)
        .output()
        .expect("run cc (gcc is part of the build environment)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "<linux/udmabuf.h> or <linux/dma-heap.h> disagrees with extmem:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
