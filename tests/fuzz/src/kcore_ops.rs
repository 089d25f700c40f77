//! The `kcore_ioctls` target's input: a sequence of what the C glue does with one DRM file
//! (create objects, `VM_BIND` map and unmap, `EXEC`, `VM_QUERY`, pin records, the argument
//! checks of `GEM_CREATE` / `GEM_USERPTR` / `EXEC` / `GET_PARAM`, closing and reopening the
//! file), with arguments from fuzz bytes.
//!
//! Addresses are picked relative to what exists (inside a binding, just past one) or raw,
//! so that the fuzzer reaches the copy engine and the unmap paths, not only the argument
//! checks.

use crate::{Bytes, Wire, RAW};

/// 4 KiB.
pub const PAGE: u64 = 4096;
/// 2 MiB.
pub const M2: u64 = 2 << 20;
/// Where object memory starts (2 MiB-aligned, below the fake's table pages).
pub const RAM_BASE: u64 = 0x1_0000_0000;
/// Objects a run creates at most.
pub const MAX_OBJECTS: usize = 8;
/// Object pages a run creates at most, all objects together: room for a 1024-page object
/// or two of 2 MiB (block mappings) beside small ones. The check that a failed call
/// changed nothing compares all RAM, so this bounds the time of one execution.
pub const MAX_OBJECT_PAGES: u64 = 1280;
/// Operations a run decodes at most.
pub const MAX_OPS: usize = 48;

/// A GPU VA, a size or an offset: relative to an existing binding, or raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `pages` 4 KiB pages (2 MiB blocks if `blocks`) from 1 GiB.
    Pages { pages: u16, blocks: bool },
    /// Binding `index % count` plus `offset` bytes (an unmapped 1 GiB when none exists).
    InBinding { index: u8, offset: u32 },
    /// Any value.
    Raw(u64),
}

impl Addr {
    fn decode(b: &mut Bytes<'_>) -> Self {
        match b.u8() {
            sel @ 0..=95 => Addr::Pages {
                pages: b.u16() % 2048,
                blocks: sel % 2 == 1,
            },
            sel @ 96..=239 => Addr::InBinding {
                index: sel - 96,
                offset: match b.u8() {
                    o if o < RAW => u32::from(o) * 256,
                    _ => b.u32(),
                },
            },
            _ => Addr::Raw(b.u64()),
        }
    }

    fn encode(&self, w: &mut Wire) {
        match *self {
            Addr::Pages { pages, blocks } => {
                w.u8(u8::from(blocks)).u16(pages);
            }
            Addr::InBinding { index, offset } => {
                w.u8(96 + index % 144).u8(RAW).u32(offset);
            }
            Addr::Raw(raw) => {
                w.u8(RAW).u64(raw);
            }
        }
    }
}

/// A size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Whole pages.
    Pages(u16),
    /// Bytes, for commands (any alignment).
    Bytes(u16),
    /// 2 MiB blocks and a few pages.
    Blocks { blocks: u8, pages: u8 },
    /// The whole binding the address fell in (its exact size).
    Binding,
    /// Any value.
    Raw(u64),
}

impl Size {
    fn decode(b: &mut Bytes<'_>) -> Self {
        match b.u8() {
            0..=79 => Size::Pages(b.u16() % 1100),
            80..=139 => Size::Bytes(b.u16()),
            140..=169 => Size::Blocks {
                blocks: b.u8() % 3,
                pages: b.u8() % 3,
            },
            170..=239 => Size::Binding,
            _ => Size::Raw(b.u64()),
        }
    }

    fn encode(&self, w: &mut Wire) {
        match *self {
            Size::Pages(pages) => {
                w.u8(0).u16(pages);
            }
            Size::Bytes(bytes) => {
                w.u8(80).u16(bytes);
            }
            Size::Blocks { blocks, pages } => {
                w.u8(140).u8(blocks).u8(pages);
            }
            Size::Binding => {
                w.u8(170);
            }
            Size::Raw(raw) => {
                w.u8(RAW).u64(raw);
            }
        }
    }
}

/// A flags or padding word: usually zero or the one known flag, sometimes raw.
fn word(b: &mut Bytes<'_>) -> u32 {
    match b.u8() {
        0..=199 => 0,
        200..=239 => 1,
        _ => b.u32(),
    }
}

fn encode_word(w: &mut Wire, value: u32) {
    w.u8(RAW).u32(value);
}

/// One copy-engine command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdSpec {
    /// 1 COPY, 2 FILL, anything else unknown.
    pub op: u32,
    /// The FILL value (must be 0 for COPY).
    pub value: u32,
    /// Source.
    pub src: Addr,
    /// Destination.
    pub dst: Addr,
    /// Bytes.
    pub size: Size,
}

/// One thing the glue does with the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new object of `pages` pages (at most 1024): physically contiguous from
    /// `RAM_BASE + base * 2 MiB + offset_pages * 4 KiB`, or scattered by `seed`; backed by
    /// RAM or not; read-only or not; its segments failing from page `fail_from` on.
    CreateObject {
        pages: u16,
        contiguous: bool,
        base: u8,
        offset_pages: u8,
        seed: u16,
        ram: bool,
        read_only: bool,
        fail_from: Option<u16>,
    },
    /// `VM_BIND` MAP (or, with a raw `op`, anything).
    Map {
        object: u8,
        op: u32,
        va: Addr,
        offset: Addr,
        size: Size,
        flags: u32,
        pad: u32,
    },
    /// `VM_BIND` UNMAP.
    Unmap {
        va: Addr,
        size: Size,
        flags: u32,
        handle: u32,
        pad: u32,
    },
    /// `EXEC`; `count` overrides the number of commands when given.
    Exec {
        cmds: Vec<CmdSpec>,
        count: Option<u32>,
        pad: u32,
    },
    /// `VM_QUERY`.
    Query {
        va: Addr,
        pad: u32,
        privileged: bool,
    },
    /// `extmem_kcore_pin_add`.
    PinAdd { object: u8, start: Addr, pages: u64 },
    /// `extmem_kcore_pin_remove`.
    PinRemove { object: u8 },
    /// The checks of `GEM_CREATE` (0), `GEM_USERPTR` (1), `EXEC` (2), `GET_PARAM` (3) on
    /// raw words.
    CheckArgs { which: u8, words: [u64; 3] },
    /// Limits the fake's table pages (`None`: unlimited).
    TableBudget(Option<u8>),
    /// The file closes (`vm_fini`, pins cleared) and a new one opens (`vm_init`).
    Reopen,
    /// `vm_init` on a live VM.
    InitAgain,
}

impl Op {
    fn decode(b: &mut Bytes<'_>) -> Self {
        match b.u8() % 12 {
            0 | 1 => {
                let sel = b.u8();
                Op::CreateObject {
                    pages: match b.u8() {
                        p @ 0..=199 => u16::from(p % 16) + 1,
                        p @ 200..=239 => [512, 513, 1024][usize::from(p % 3)],
                        _ => b.u16() % 1024 + 1,
                    },
                    contiguous: sel & 1 != 0,
                    base: b.u8(),
                    offset_pages: b.u8() % 4,
                    seed: b.u16(),
                    ram: sel & 2 == 0 || sel & 4 == 0,
                    read_only: sel & 8 != 0,
                    fail_from: (sel & 0x30 == 0x30).then(|| b.u16() % 1025),
                }
            }
            2 | 3 => Op::Map {
                object: b.u8(),
                op: match b.u8() {
                    0..=239 => 1,
                    _ => b.u32(),
                },
                va: Addr::decode(b),
                offset: match b.u8() {
                    0..=199 => Addr::Pages {
                        pages: u16::from(b.u8() % 4),
                        blocks: false,
                    },
                    _ => Addr::decode(b),
                },
                size: Size::decode(b),
                flags: word(b),
                pad: word(b),
            },
            4 => Op::Unmap {
                va: Addr::decode(b),
                size: Size::decode(b),
                flags: word(b),
                handle: word(b),
                pad: word(b),
            },
            5 | 6 => {
                let n = b.u8() % 5 + 1;
                let cmds = (0..n)
                    .map(|_| {
                        let op = match b.u8() {
                            0..=119 => 1,
                            120..=239 => 2,
                            _ => b.u32(),
                        };
                        CmdSpec {
                            op,
                            value: if op == 2 { b.u32() } else { word(b) },
                            src: Addr::decode(b),
                            dst: Addr::decode(b),
                            size: Size::decode(b),
                        }
                    })
                    .collect();
                let count = match b.u8() {
                    0..=239 => None,
                    _ => Some(b.u32()),
                };
                Op::Exec {
                    cmds,
                    count,
                    pad: word(b),
                }
            }
            7 => Op::Query {
                va: Addr::decode(b),
                pad: word(b),
                privileged: b.bool(),
            },
            8 => match b.u8() % 2 {
                0 => Op::PinAdd {
                    object: b.u8() % 12,
                    start: Addr::decode(b),
                    pages: match b.u8() {
                        p @ 0..=239 => u64::from(p % 64),
                        _ => b.u64(),
                    },
                },
                _ => Op::PinRemove {
                    object: b.u8() % 12,
                },
            },
            9 => Op::CheckArgs {
                which: b.u8() % 4,
                words: [b.u64(), b.u64(), b.u64()],
            },
            10 => Op::TableBudget(match b.u8() {
                n @ 0..=127 => Some(n % 12),
                _ => None,
            }),
            _ => {
                if b.bool() {
                    Op::Reopen
                } else {
                    Op::InitAgain
                }
            }
        }
    }

    fn encode(&self, w: &mut Wire) {
        match self {
            Op::CreateObject {
                pages,
                contiguous,
                base,
                offset_pages,
                seed,
                ram,
                read_only,
                fail_from,
            } => {
                let sel = u8::from(*contiguous)
                    | if *ram { 0 } else { 6 }
                    | if *read_only { 8 } else { 0 }
                    | if fail_from.is_some() { 0x30 } else { 0 };
                w.u8(0).u8(sel).u8(RAW).u16(pages.saturating_sub(1));
                w.u8(*base).u8(*offset_pages).u16(*seed);
                if let Some(from) = fail_from {
                    w.u16(*from);
                }
            }
            Op::Map {
                object,
                op,
                va,
                offset,
                size,
                flags,
                pad,
            } => {
                w.u8(2).u8(*object).u8(RAW).u32(*op);
                va.encode(w);
                w.u8(RAW);
                offset.encode(w);
                size.encode(w);
                encode_word(w, *flags);
                encode_word(w, *pad);
            }
            Op::Unmap {
                va,
                size,
                flags,
                handle,
                pad,
            } => {
                w.u8(4);
                va.encode(w);
                size.encode(w);
                encode_word(w, *flags);
                encode_word(w, *handle);
                encode_word(w, *pad);
            }
            Op::Exec { cmds, count, pad } => {
                let n = u8::try_from(cmds.len()).unwrap_or(1);
                w.u8(5).u8(n.saturating_sub(1));
                for cmd in cmds {
                    w.u8(RAW).u32(cmd.op);
                    if cmd.op == 2 {
                        w.u32(cmd.value);
                    } else {
                        encode_word(w, cmd.value);
                    }
                    cmd.src.encode(w);
                    cmd.dst.encode(w);
                    cmd.size.encode(w);
                }
                match count {
                    Some(count) => w.u8(RAW).u32(*count),
                    None => w.u8(0),
                };
                encode_word(w, *pad);
            }
            Op::Query {
                va,
                pad,
                privileged,
            } => {
                w.u8(7);
                va.encode(w);
                encode_word(w, *pad);
                w.u8(u8::from(*privileged));
            }
            Op::PinAdd {
                object,
                start,
                pages,
            } => {
                w.u8(8).u8(0).u8(*object);
                start.encode(w);
                w.u8(RAW).u64(*pages);
            }
            Op::PinRemove { object } => {
                w.u8(8).u8(1).u8(*object);
            }
            Op::CheckArgs { which, words } => {
                w.u8(9).u8(*which);
                for word in words {
                    w.u64(*word);
                }
            }
            Op::TableBudget(budget) => {
                w.u8(10).u8(budget.map_or(u8::MAX, |b| b % 12));
            }
            Op::Reopen => {
                w.u8(11).u8(1);
            }
            Op::InitAgain => {
                w.u8(11).u8(0);
            }
        }
    }
}

/// Decodes a whole input: operations until the bytes run out (at most [`MAX_OPS`]).
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut b = Bytes::new(data);
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < MAX_OPS {
        ops.push(Op::decode(&mut b));
    }
    ops
}

/// Encodes `ops` so that [`decode`] gives them back.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut w = Wire::default();
    for op in ops {
        op.encode(&mut w);
    }
    w.bytes
}
