//! The AArch64 (VMSAv8-64) stage-1 long-descriptor format with the 4 KiB granule, as Arm
//! Mali Bifrost/Valhall GPUs use it for their page tables (Linux `io-pgtable-arm`,
//! `ARM_64_LPAE_S1`, which panfrost and panthor program).
//!
//! Every bit position lives in the private `bits` module and nowhere else: encoding and decoding go through
//! those declarations, so a field can only be wrong in one place.
//!
//! Descriptor kinds (Arm ARM D8.3, "Translation table descriptor formats"):
//!
//! | bits\[1:0\] | level 0 | level 1, 2 | level 3 |
//! |---|---|---|---|
//! | `x0` | invalid | invalid | invalid |
//! | `01` | reserved | block | reserved |
//! | `11` | table | table | page |

use core::fmt;

use crate::addr::PhysAddr;
use crate::page_size::PageSize;

/// An inclusive run of bits `[high:low]` in a 64-bit descriptor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bits {
    low: u32,
    high: u32,
}

impl Bits {
    const fn new(high: u32, low: u32) -> Self {
        assert!(low <= high && high < 64);
        Self { low, high }
    }

    /// The bits of the run, in place.
    pub(crate) const fn mask(self) -> u64 {
        (u64::MAX >> (63 - (self.high - self.low))) << self.low
    }

    /// The field's value, shifted down.
    pub(crate) const fn get(self, raw: u64) -> u64 {
        (raw & self.mask()) >> self.low
    }

    /// `raw` with the field set to `value` (which must fit; extra high bits are dropped).
    pub(crate) const fn set(self, raw: u64, value: u64) -> u64 {
        (raw & !self.mask()) | ((value << self.low) & self.mask())
    }

    /// The largest value the field holds.
    pub(crate) const fn max(self) -> u64 {
        self.mask() >> self.low
    }
}

/// The field declarations: the only place bit positions appear.
pub(crate) mod bits {
    use super::Bits;

    /// bit 0: the descriptor is valid.
    pub const VALID: Bits = Bits::new(0, 0);
    /// bit 1: table (levels 0–2) or page (level 3) rather than block.
    pub const TABLE_OR_PAGE: Bits = Bits::new(1, 1);
    /// AttrIndx\[2:0\]: index into the MAIR (on Mali, the MEMATTR register).
    pub const ATTR_INDEX: Bits = Bits::new(4, 2);
    /// AP\[1\]: accessible from unprivileged (EL0 / GPU job) context. io-pgtable-arm sets it
    /// for every mapping not marked IOMMU_PRIV.
    pub const AP_UNPRIV: Bits = Bits::new(6, 6);
    /// AP\[2\]: read-only.
    pub const AP_READ_ONLY: Bits = Bits::new(7, 7);
    /// SH\[1:0\]: shareability.
    pub const SHAREABILITY: Bits = Bits::new(9, 8);
    /// AF: access flag. A clear AF faults on first access; we always set it.
    pub const ACCESS_FLAG: Bits = Bits::new(10, 10);
    /// nG: not global (ASID-tagged). io-pgtable-arm sets it on every stage-1 leaf.
    pub const NOT_GLOBAL: Bits = Bits::new(11, 11);
    /// Output address of a level-3 page or next-level table: OA\[47:12\].
    pub const OA_4K: Bits = Bits::new(47, 12);
    /// Output address of a level-2 block: OA\[47:21\].
    pub const OA_2M: Bits = Bits::new(47, 21);
    /// Output address of a level-1 block: OA\[47:30\].
    pub const OA_1G: Bits = Bits::new(47, 30);
    /// XN / UXN: execute-never.
    pub const EXECUTE_NEVER: Bits = Bits::new(54, 54);
}

/// Every bit a leaf we write may have set; anything else marks a corrupt descriptor.
const LEAF_KNOWN: u64 = bits::VALID.mask()
    | bits::TABLE_OR_PAGE.mask()
    | bits::ATTR_INDEX.mask()
    | bits::AP_UNPRIV.mask()
    | bits::AP_READ_ONLY.mask()
    | bits::SHAREABILITY.mask()
    | bits::ACCESS_FLAG.mask()
    | bits::NOT_GLOBAL.mask()
    | bits::OA_4K.mask()
    | bits::EXECUTE_NEVER.mask();

/// Every bit a table descriptor we write may have set.
const TABLE_KNOWN: u64 = bits::VALID.mask() | bits::TABLE_OR_PAGE.mask() | bits::OA_4K.mask();

/// A level of the translation walk. Level 0 resolves VA\[47:39\], level 3 VA\[20:12\].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Level {
    /// Resolves VA\[47:39\]; holds only table descriptors.
    L0,
    /// Resolves VA\[38:30\]; tables or 1 GiB blocks.
    L1,
    /// Resolves VA\[29:21\]; tables or 2 MiB blocks.
    L2,
    /// Resolves VA\[20:12\]; 4 KiB pages.
    L3,
}

impl Level {
    /// log2 of the bytes one entry at this level covers.
    #[must_use]
    pub const fn shift(self) -> u32 {
        match self {
            Level::L0 => 39,
            Level::L1 => 30,
            Level::L2 => 21,
            Level::L3 => 12,
        }
    }

    /// Bytes one entry at this level covers.
    #[must_use]
    pub const fn entry_bytes(self) -> u64 {
        1u64 << self.shift()
    }

    /// The level below, or `None` at level 3.
    #[must_use]
    pub const fn next(self) -> Option<Level> {
        match self {
            Level::L0 => Some(Level::L1),
            Level::L1 => Some(Level::L2),
            Level::L2 => Some(Level::L3),
            Level::L3 => None,
        }
    }

    /// The leaf size a block or page at this level maps, or `None` at level 0.
    #[must_use]
    pub const fn leaf_size(self) -> Option<PageSize> {
        match self {
            Level::L0 => None,
            Level::L1 => Some(PageSize::Size1G),
            Level::L2 => Some(PageSize::Size2M),
            Level::L3 => Some(PageSize::Size4K),
        }
    }

    /// The level the walk starts at for a `va_bits`-bit address space (TnSZ = 64 - va_bits).
    #[must_use]
    pub const fn start_for(va_bits: u8) -> Level {
        if va_bits > 39 {
            Level::L0
        } else if va_bits > 30 {
            Level::L1
        } else {
            Level::L2
        }
    }

    /// The output-address field of a leaf at this level.
    pub(crate) const fn leaf_oa(self) -> Bits {
        match self {
            Level::L1 => bits::OA_1G,
            Level::L2 => bits::OA_2M,
            Level::L0 | Level::L3 => bits::OA_4K,
        }
    }
}

/// Read-only or read-write (AP\[2\]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Access {
    /// Reads only; a GPU write faults.
    ReadOnly,
    /// Reads and writes.
    #[default]
    ReadWrite,
}

/// SH\[1:0\]. The encoding `0b01` is reserved.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Shareability {
    /// Non-shareable (`0b00`).
    NonShareable,
    /// Outer shareable (`0b10`).
    OuterShareable,
    /// Inner shareable (`0b11`), what io-pgtable-arm uses for coherent walks.
    #[default]
    InnerShareable,
}

impl Shareability {
    const fn encode(self) -> u64 {
        match self {
            Shareability::NonShareable => 0b00,
            Shareability::OuterShareable => 0b10,
            Shareability::InnerShareable => 0b11,
        }
    }

    const fn decode(field: u64) -> Option<Self> {
        match field {
            0b00 => Some(Shareability::NonShareable),
            0b10 => Some(Shareability::OuterShareable),
            0b11 => Some(Shareability::InnerShareable),
            _ => None,
        }
    }
}

/// An index into the memory-attribute register (MAIR; MEMATTR on Mali), 0–7.
///
/// # Invariants
/// The value is at most 7.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct AttrIndex(u8);

impl AttrIndex {
    /// `index` if it is at most 7.
    #[must_use]
    pub const fn new(index: u8) -> Option<Self> {
        if index <= 7 {
            Some(Self(index))
        } else {
            None
        }
    }

    /// The index.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// The attributes of a page or block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PageAttrs {
    /// AP\[2\].
    pub access: Access,
    /// AP\[1\]: usable by unprivileged (job) accesses.
    pub unprivileged: bool,
    /// AttrIndx.
    pub attr_index: AttrIndex,
    /// SH.
    pub shareability: Shareability,
    /// AF.
    pub access_flag: bool,
    /// nG.
    pub not_global: bool,
    /// XN.
    pub execute_never: bool,
}

/// One descriptor, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Descriptor {
    /// Faults on access.
    Invalid,
    /// Points at the next-level table.
    Table {
        /// Physical address of the 4 KiB next-level table.
        next: PhysAddr,
    },
    /// A 1 GiB block (level 1), 2 MiB block (level 2) or 4 KiB page (level 3).
    Leaf {
        /// Physical address the leaf maps (aligned to its size).
        output: PhysAddr,
        /// Its attributes.
        attrs: PageAttrs,
    },
}

/// A raw descriptor that is not one this crate writes: a reserved encoding or bits we never
/// set. Seeing one means the table memory was corrupted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CorruptDescriptor {
    /// The level it was read at.
    pub level: Level,
    /// The raw value.
    pub raw: u64,
}

impl fmt::Display for CorruptDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt level-{:?} descriptor {:#018x}",
            self.level, self.raw
        )
    }
}

impl Descriptor {
    /// Encodes the descriptor for `level`. Returns `None` for a combination the format
    /// cannot express: a leaf at level 0, a table at level 3, or an output address that is
    /// not aligned to the level's size or does not fit OA\[47:12\].
    #[must_use]
    pub const fn encode(self, level: Level) -> Option<u64> {
        match self {
            Descriptor::Invalid => Some(0),
            Descriptor::Table { next } => {
                if matches!(level, Level::L3) || !fits(bits::OA_4K, next) {
                    return None;
                }
                let raw = bits::VALID.set(0, 1);
                let raw = bits::TABLE_OR_PAGE.set(raw, 1);
                Some(raw | next.get())
            }
            Descriptor::Leaf { output, attrs } => {
                if matches!(level, Level::L0) || !fits(level.leaf_oa(), output) {
                    return None;
                }
                let raw = bits::VALID.set(0, 1);
                let raw = bits::TABLE_OR_PAGE.set(raw, matches!(level, Level::L3) as u64);
                let raw = bits::ATTR_INDEX.set(raw, attrs.attr_index.get() as u64);
                let raw = bits::AP_UNPRIV.set(raw, attrs.unprivileged as u64);
                let read_only = matches!(attrs.access, Access::ReadOnly);
                let raw = bits::AP_READ_ONLY.set(raw, read_only as u64);
                let raw = bits::SHAREABILITY.set(raw, attrs.shareability.encode());
                let raw = bits::ACCESS_FLAG.set(raw, attrs.access_flag as u64);
                let raw = bits::NOT_GLOBAL.set(raw, attrs.not_global as u64);
                let raw = bits::EXECUTE_NEVER.set(raw, attrs.execute_never as u64);
                Some(raw | output.get())
            }
        }
    }

    /// Decodes a raw descriptor read at `level`.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "AttrIndx is masked to 3 bits first"
    )]
    pub const fn decode(level: Level, raw: u64) -> Result<Descriptor, CorruptDescriptor> {
        let corrupt = CorruptDescriptor { level, raw };
        if bits::VALID.get(raw) == 0 {
            // Bits other than VALID are ignored by the walker; we only ever write zero.
            return if raw == 0 {
                Ok(Descriptor::Invalid)
            } else {
                Err(corrupt)
            };
        }
        let table_or_page = bits::TABLE_OR_PAGE.get(raw) == 1;
        match (level, table_or_page) {
            (Level::L0 | Level::L1 | Level::L2, true) => {
                if raw & !TABLE_KNOWN != 0 {
                    return Err(corrupt);
                }
                Ok(Descriptor::Table {
                    next: PhysAddr::new(raw & bits::OA_4K.mask()),
                })
            }
            (Level::L0 | Level::L3, false) => Err(corrupt),
            (Level::L1 | Level::L2 | Level::L3, _) => {
                let oa = level.leaf_oa();
                // Bits between OA[11:0] and the level's OA field are RES0 in a block.
                let allowed = (LEAF_KNOWN & !bits::OA_4K.mask()) | oa.mask();
                if raw & !allowed != 0 {
                    return Err(corrupt);
                }
                let Some(shareability) = Shareability::decode(bits::SHAREABILITY.get(raw)) else {
                    return Err(corrupt);
                };
                let Some(attr_index) = AttrIndex::new(bits::ATTR_INDEX.get(raw) as u8) else {
                    return Err(corrupt);
                };
                let access = if bits::AP_READ_ONLY.get(raw) == 1 {
                    Access::ReadOnly
                } else {
                    Access::ReadWrite
                };
                Ok(Descriptor::Leaf {
                    output: PhysAddr::new(raw & oa.mask()),
                    attrs: PageAttrs {
                        access,
                        unprivileged: bits::AP_UNPRIV.get(raw) == 1,
                        attr_index,
                        shareability,
                        access_flag: bits::ACCESS_FLAG.get(raw) == 1,
                        not_global: bits::NOT_GLOBAL.get(raw) == 1,
                        execute_never: bits::EXECUTE_NEVER.get(raw) == 1,
                    },
                })
            }
        }
    }
}

/// Zero exactly when `raw` is a level-3 page this crate writes, that is when
/// `Descriptor::decode(Level::L3, raw)` gives a `Leaf`, without building it (a range check
/// scans whole leaf tables with this). Arithmetic without a comparison, so that a scan ORs
/// it over many entries and tests once (see `page_table::first_nonzero`).
pub(crate) const fn not_page(raw: u64) -> u64 {
    let kind = bits::VALID.mask() | bits::TABLE_OR_PAGE.mask();
    ((raw & kind) ^ kind) | (raw & !LEAF_KNOWN) | reserved_shareability(raw)
}

/// Zero exactly when `raw` is a block this crate writes at `level` (1 or 2), that is when
/// `Descriptor::decode(level, raw)` gives a `Leaf` there (unmap checks a range of blocks
/// with this); never at levels 0 and 3, which hold no blocks. As [`not_page`] for pages.
pub(crate) const fn not_block(level: Level, raw: u64) -> u64 {
    let kind = bits::VALID.mask() | bits::TABLE_OR_PAGE.mask();
    let allowed = (LEAF_KNOWN & !bits::OA_4K.mask()) | level.leaf_oa().mask();
    let no_blocks = !matches!(level, Level::L1 | Level::L2) as u64;
    no_blocks | ((raw & kind) ^ bits::VALID.mask()) | (raw & !allowed) | reserved_shareability(raw)
}

/// Non-zero when the shareability field holds 0b01, the reserved value
/// ([`Shareability::decode`] refuses it): its low bit set and its high bit clear.
const fn reserved_shareability(raw: u64) -> u64 {
    let low = bits::SHAREABILITY.low;
    (raw >> low) & !(raw >> (low + 1)) & 1
}

/// Whether `addr` lies entirely inside the in-place address field `field`.
const fn fits(field: Bits, addr: PhysAddr) -> bool {
    addr.get() & !field.mask() == 0 && field.max() != 0
}

#[cfg(test)]
mod tests {
    // The hand-worked encodings are shared with the Cortex-M tests: crate::test_cases::descriptor.
    use super::*;
    use crate::test_cases::descriptor::rw_attrs;

    #[test]
    fn not_page_agrees_with_decode() {
        let page = Descriptor::Leaf {
            output: PhysAddr::new(0x1234_5000),
            attrs: rw_attrs(),
        }
        .encode(Level::L3)
        .expect("encodes");
        let mut raws = std::vec![0, 1, 0b11, page, page | 1 << 12, page & !0b10];
        // Every single-bit flip of a valid page, and every shareability (0b01 is reserved).
        raws.extend((0..64).map(|bit| page ^ (1u64 << bit)));
        raws.extend((0..4).map(|sh| bits::SHAREABILITY.set(page, sh)));
        for raw in raws {
            let decoded = matches!(
                Descriptor::decode(Level::L3, raw),
                Ok(Descriptor::Leaf { .. })
            );
            assert_eq!(not_page(raw) == 0, decoded, "{raw:#x}");
        }
    }

    #[test]
    fn not_block_agrees_with_decode() {
        for level in [Level::L0, Level::L1, Level::L2, Level::L3] {
            let output = PhysAddr::new(0x40_0000_0000);
            let block = Descriptor::Leaf {
                output,
                attrs: rw_attrs(),
            }
            .encode(level);
            let table = Descriptor::Table { next: output }.encode(level);
            let mut raws = std::vec![0, 1, 0b11];
            raws.extend(block.into_iter().chain(table));
            // Every single-bit flip of a valid block (or of a page's bits where the level
            // has none), and every shareability (0b01 is reserved).
            let base = block.unwrap_or(0x40_0000_0000 | 0b01 | 1 << 10);
            raws.extend((0..64).map(|bit| base ^ (1u64 << bit)));
            raws.extend((0..4).map(|sh| bits::SHAREABILITY.set(base, sh)));
            for raw in raws {
                let decoded = level != Level::L3
                    && matches!(Descriptor::decode(level, raw), Ok(Descriptor::Leaf { .. }));
                assert_eq!(not_block(level, raw) == 0, decoded, "{level:?} {raw:#x}");
            }
        }
    }
}
