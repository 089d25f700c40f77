//! Writes the checked-in seed corpora (`tests/fuzz/seeds/<target>/`) from the vectors of
//! the unit tests they mirror, after checking that each decodes back to what was encoded.
//!
//! ```text
//! cargo +nightly run --manifest-path tests/fuzz/Cargo.toml --bin seeds
//! ```

use std::fs;
use std::path::Path;

use ash::vk;
use extmem_fuzz::alloc_chain::{ChainInput, Node};
use extmem_fuzz::kcore_ops::{self, Addr, CmdSpec, Op, Size};
use extmem_fuzz::Wire;

type Types = vk::ExternalMemoryHandleTypeFlags;

/// The device of `userspace/core/src/alloc_info/tests.rs`: Linux with fds, dma-bufs and
/// both host-pointer types, three memory types, 4 KiB import alignment, types 1 and 2
/// host-visible.
fn chain(size: u64, memory_type_index: u32, nodes: Vec<Node>) -> ChainInput {
    ChainInput {
        caps: 0b1_1110,
        memory_type_count: 3,
        align_shift: 0,
        host_pointer_types: 0b110,
        size,
        memory_type_index,
        nodes,
        loop_to: None,
    }
}

fn host(handle_type: Types, ptr: u64) -> Node {
    Node::HostPointer {
        handle_type: handle_type.as_raw(),
        ptr,
    }
}

fn alloc_info_seeds() -> Vec<(&'static str, ChainInput)> {
    let p = 0x7f00_0000_0000;
    let mut cyclic = chain(
        4096,
        0,
        vec![
            Node::Export {
                handle_types: Types::OPAQUE_FD.as_raw(),
            },
            Node::Other {
                s_type: vk::StructureType::MEMORY_ALLOCATE_FLAGS_INFO.as_raw(),
                fill: 0,
            },
        ],
    );
    cyclic.loop_to = Some(0);
    let mut windows = chain(
        4096,
        0,
        vec![Node::Win32 {
            handle_type: Types::OPAQUE_WIN32.as_raw(),
            handle: 0,
            named: true,
        }],
    );
    windows.caps = 0b10_0001;
    vec![
        ("plain", chain(4096, 0, vec![])),
        (
            "host-pointer",
            chain(3 * 4096, 1, vec![host(Types::HOST_ALLOCATION_EXT, p)]),
        ),
        (
            "host-pointer-misaligned",
            chain(4096, 1, vec![host(Types::HOST_ALLOCATION_EXT, p + 8)]),
        ),
        (
            "host-foreign-dedicated",
            chain(
                4096,
                2,
                vec![
                    Node::Dedicated {
                        image: 0,
                        buffer: 7,
                    },
                    host(Types::HOST_MAPPED_FOREIGN_MEMORY_EXT, p),
                ],
            ),
        ),
        (
            "fd-dma-buf-export",
            chain(
                0,
                0,
                vec![
                    Node::Fd {
                        handle_type: Types::DMA_BUF_EXT.as_raw(),
                        fd: 3,
                    },
                    Node::Export {
                        handle_types: Types::DMA_BUF_EXT.as_raw(),
                    },
                ],
            ),
        ),
        (
            "two-imports",
            chain(
                4096,
                1,
                vec![
                    host(Types::HOST_ALLOCATION_EXT, p),
                    Node::Fd {
                        handle_type: Types::OPAQUE_FD.as_raw(),
                        fd: 3,
                    },
                ],
            ),
        ),
        (
            "duplicate-export",
            chain(
                4096,
                0,
                vec![
                    Node::Export {
                        handle_types: Types::OPAQUE_FD.as_raw(),
                    },
                    Node::CaptureAddress { address: 0 },
                    Node::Export {
                        handle_types: Types::DMA_BUF_EXT.as_raw(),
                    },
                ],
            ),
        ),
        (
            // handleType 0 makes VkImportMemoryWin32HandleInfoNV no import (the spec says
            // it is ignored), typed and as a raw structure: the host pointer is the one
            // import, and the second raw one repeats an sType.
            "nv-import-of-type-0",
            chain(
                4096,
                1,
                vec![
                    Node::Win32Nv {
                        handle_type: 0,
                        handle: 3,
                    },
                    host(Types::HOST_ALLOCATION_EXT, p),
                    Node::Other {
                        s_type: vk::StructureType::IMPORT_MEMORY_WIN32_HANDLE_INFO_NV.as_raw(),
                        fill: 0,
                    },
                ],
            ),
        ),
        ("cycle", cyclic),
        ("win32-named-on-windows", windows),
        (
            "too-long",
            chain(
                4096,
                0,
                (0..65)
                    .map(|i| Node::Other {
                        s_type: 2_000_000_000 + i,
                        fill: 0,
                    })
                    .collect(),
            ),
        ),
    ]
}

fn kcore_seeds() -> Vec<(&'static str, Vec<Op>)> {
    let scattered = Op::CreateObject {
        pages: 4,
        contiguous: false,
        base: 0,
        offset_pages: 0,
        seed: 1,
        ram: true,
        read_only: false,
        fail_from: None,
    };
    let map = |object: u8, va: Addr, size: Size, flags: u32| Op::Map {
        object,
        op: 1,
        va,
        offset: Addr::Pages {
            pages: 0,
            blocks: false,
        },
        size,
        flags,
        pad: 0,
    };
    let in_binding = |index: u8, offset: u32| Addr::InBinding { index, offset };
    let at = |pages: u16| Addr::Pages {
        pages,
        blocks: false,
    };
    vec![
        (
            "map-fill-copy-query-unmap",
            vec![
                scattered.clone(),
                map(0, at(0), Size::Pages(4), 0),
                map(0, at(16), Size::Pages(4), 0),
                Op::Exec {
                    cmds: vec![
                        CmdSpec {
                            op: 2,
                            value: 0xa5a5_5a5a,
                            src: Addr::Raw(0),
                            dst: in_binding(0, 0x100),
                            size: Size::Bytes(0x2000),
                        },
                        CmdSpec {
                            op: 1,
                            value: 0,
                            src: in_binding(0, 0),
                            dst: in_binding(1, 0x80),
                            size: Size::Bytes(0x3000),
                        },
                    ],
                    count: None,
                    pad: 0,
                },
                Op::Query {
                    va: in_binding(1, 0x1234),
                    pad: 0,
                    privileged: true,
                },
                Op::Unmap {
                    va: in_binding(0, 0),
                    size: Size::Binding,
                    flags: 0,
                    handle: 0,
                    pad: 0,
                },
                Op::Reopen,
            ],
        ),
        (
            "blocks-and-read-only",
            vec![
                Op::CreateObject {
                    pages: 513,
                    contiguous: true,
                    base: 1,
                    offset_pages: 0,
                    seed: 0,
                    ram: true,
                    read_only: true,
                    fail_from: None,
                },
                map(
                    0,
                    at(0),
                    Size::Blocks {
                        blocks: 0,
                        pages: 1,
                    },
                    0,
                ),
                map(
                    0,
                    Addr::Pages {
                        pages: 1,
                        blocks: true,
                    },
                    Size::Blocks {
                        blocks: 1,
                        pages: 1,
                    },
                    1,
                ),
                Op::Exec {
                    cmds: vec![CmdSpec {
                        op: 2,
                        value: 1,
                        src: Addr::Raw(0),
                        dst: in_binding(0, 0x1000),
                        size: Size::Bytes(4),
                    }],
                    count: None,
                    pad: 0,
                },
                Op::Query {
                    va: in_binding(0, 0),
                    pad: 0,
                    privileged: false,
                },
            ],
        ),
        (
            "faults-and-failing-segments",
            vec![
                scattered,
                Op::CreateObject {
                    pages: 8,
                    contiguous: true,
                    base: 3,
                    offset_pages: 1,
                    seed: 0,
                    ram: false,
                    read_only: false,
                    fail_from: Some(5),
                },
                map(1, at(64), Size::Pages(4), 0),
                map(1, at(80), Size::Pages(8), 0),
                map(0, at(4), Size::Pages(4), 0),
                Op::Exec {
                    cmds: vec![CmdSpec {
                        op: 1,
                        value: 0,
                        src: in_binding(1, 0),
                        dst: in_binding(0, 0x3000),
                        size: Size::Bytes(0x2000),
                    }],
                    count: Some(2),
                    pad: 0,
                },
                Op::Exec {
                    cmds: vec![CmdSpec {
                        op: 1,
                        value: 0,
                        src: in_binding(0, 0),
                        dst: in_binding(1, 0),
                        size: Size::Bytes(0x100),
                    }],
                    count: None,
                    pad: 0,
                },
            ],
        ),
        (
            "pins-budget-reopen",
            vec![
                Op::PinAdd {
                    object: 1,
                    start: Addr::Raw(0x7f00_0000_0000),
                    pages: 16,
                },
                Op::PinAdd {
                    object: 1,
                    start: Addr::Raw(0x7f00_0001_0000),
                    pages: 1,
                },
                Op::PinRemove { object: 1 },
                Op::TableBudget(Some(2)),
                Op::CreateObject {
                    pages: 2,
                    contiguous: true,
                    base: 0,
                    offset_pages: 0,
                    seed: 0,
                    ram: true,
                    read_only: false,
                    fail_from: None,
                },
                map(0, at(0), Size::Pages(2), 0),
                Op::TableBudget(None),
                Op::InitAgain,
                Op::Reopen,
                Op::CheckArgs {
                    which: 1,
                    words: [0x7f00_0000_0000, 0x1000, 0x2],
                },
                Op::CheckArgs {
                    which: 3,
                    words: [2, 0, 0],
                },
            ],
        ),
    ]
}

/// Page-table sequences in the format of `fuzz_targets/page_table.rs`: a profile byte, a
/// budget byte, then operations (raw addresses: selector 5; sizes: selector 12, in pages
/// up to 16, or selector 8, 2 MiB blocks and pages; batched maps: selector 9).
fn page_table_seeds() -> Vec<(&'static str, Vec<u8>)> {
    const PAGE: u64 = 4096;
    fn addr(w: &mut Wire, value: u64) {
        w.u8(5).u64(value);
    }
    fn size(w: &mut Wire, pages: u16) {
        let (blocks, pages) = (pages / 512, pages % 512);
        if blocks == 0 {
            w.u8(12).u8(u8::try_from(pages - 1).unwrap_or(0));
        } else {
            w.u8(8).u8(u8::try_from(blocks - 1).unwrap_or(0));
            w.u8(u8::try_from(pages).unwrap_or(0));
        }
    }
    let map = |w: &mut Wire, va: u64, pa: u64, pages: u16, read_only: bool| {
        w.u8(0);
        addr(w, va);
        addr(w, pa);
        size(w, pages);
        w.u8(u8::from(read_only));
    };
    let unmap = |w: &mut Wire, va: u64, pages: u16| {
        w.u8(4);
        addr(w, va);
        size(w, pages);
    };
    let translate = |w: &mut Wire, va: u64| {
        w.u8(7);
        addr(w, va);
    };
    // A batched map: scattered single pages then whole 2 MiB blocks, cut one page short.
    let map_runs = |w: &mut Wire, va: u64, singles: &[u64], blocks: u8| {
        w.u8(9);
        addr(w, va);
        w.u8(u8::try_from(singles.len()).unwrap_or(0));
        for &pa in singles {
            w.u8(0);
            addr(w, pa);
        }
        w.u8(2).u8(0).u8(blocks - 1);
        w.u8(6).u8(0).u8(1);
    };
    let m2 = 512 * PAGE;
    let mut runs = Wire::default();
    runs.u8(0).u8(255);
    map_runs(&mut runs, 0x4000_0000 - 2 * PAGE, &[0x9000, 0x3000], 2);
    translate(&mut runs, 0x4000_0000 + 0x10);
    unmap(&mut runs, 0x4000_0000 - 2 * PAGE, 2);
    let mut blocks = Wire::default();
    blocks.u8(1).u8(255);
    map(&mut blocks, 0x4000_0000, 0x8000_0000, 512, false);
    map(&mut blocks, 0x4000_0000 + m2, 0x8000_0000 + m2, 513, false);
    translate(&mut blocks, 0x4000_0000 + m2 + 0x123);
    unmap(&mut blocks, 0x4000_0000 + m2 + PAGE, 3);
    translate(&mut blocks, 0x4000_0000 + m2 + PAGE);
    unmap(&mut blocks, 0x4000_0000, 1);
    let mut budget = Wire::default();
    budget.u8(0).u8(3);
    map(&mut budget, 0, 0x1000, 8, true);
    map(&mut budget, 1 << 39, 0x1000, 8, false);
    unmap(&mut budget, 0, 4);
    map(&mut budget, (1 << 48) - PAGE, 0, 1, false);
    vec![
        ("blocks", blocks.bytes),
        ("budget", budget.bytes),
        ("runs", runs.bytes),
    ]
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, input) in alloc_info_seeds() {
        let bytes = input.encode();
        assert_eq!(ChainInput::decode(&bytes), input, "{name} round-trips");
        write(&dir, "alloc_info", name, &bytes)?;
    }
    for (name, ops) in kcore_seeds() {
        let bytes = kcore_ops::encode(&ops);
        assert_eq!(kcore_ops::decode(&bytes), ops, "{name} round-trips");
        write(&dir, "kcore_ioctls", name, &bytes)?;
    }
    for (name, bytes) in page_table_seeds() {
        write(&dir, "page_table", name, &bytes)?;
    }
    println!("seeds written to {}", dir.display());
    Ok(())
}
