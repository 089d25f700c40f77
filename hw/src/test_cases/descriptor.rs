//! The AArch64 stage-1 descriptor format against hand-worked bit patterns.
//!
//! The expected values are worked out by hand from the Arm ARM field positions, not computed
//! with the crate's own bit table, so they check it. Output addresses above 4 GiB check that
//! the upper word survives on a 32-bit core.

use crate::addr::PhysAddr;
use crate::descriptor::{
    Access, AttrIndex, CorruptDescriptor, Descriptor, Level, PageAttrs, Shareability,
};

use super::{host_tests, some};

/// Read-write, unprivileged, AttrIndx 1, inner shareable: what a default map writes.
pub fn rw_attrs() -> PageAttrs {
    PageAttrs {
        access: Access::ReadWrite,
        unprivileged: true,
        attr_index: some(AttrIndex::new(1), "an index below 8"),
        shareability: Shareability::InnerShareable,
        access_flag: true,
        not_global: true,
        execute_never: true,
    }
}

/// Checks that `descriptor` encodes at `level` to the hand-worked `raw` and decodes back from
/// it; a mismatch prints both in hex.
#[track_caller]
fn assert_encodes(descriptor: Descriptor, level: Level, raw: u64) {
    let encoded = some(descriptor.encode(level), "an encoding");
    assert!(
        encoded == raw,
        "{descriptor:?} at {level:?} encodes to {encoded:#018x}, not {raw:#018x}"
    );
    assert_eq!(Descriptor::decode(level, raw), Ok(descriptor));
}

pub fn page_descriptor_matches_hand_worked_bits() {
    let d = Descriptor::Leaf {
        output: PhysAddr::new(0x8000_1000),
        attrs: rw_attrs(),
    };
    // 0b11 page | AttrIndx=1 (0x4) | AP[1] (0x40) | SH=0b11 (0x300) | AF (0x400)
    // | nG (0x800) | XN (bit 54) | OA 0x8000_1000
    assert_encodes(d, Level::L3, 0x0040_0000_8000_1f47);
}

pub fn read_only_block_descriptors_match_hand_worked_bits() {
    let attrs = PageAttrs {
        access: Access::ReadOnly,
        unprivileged: false,
        attr_index: some(AttrIndex::new(0), "an index below 8"),
        shareability: Shareability::OuterShareable,
        access_flag: true,
        not_global: false,
        execute_never: false,
    };
    let block_2m = Descriptor::Leaf {
        output: PhysAddr::new(0x1_4020_0000),
        attrs,
    };
    // 0b01 block | AP[2] (0x80) | SH=0b10 (0x200) | AF (0x400)
    assert_encodes(block_2m, Level::L2, 0x0000_0001_4020_0681);
    let block_1g = Descriptor::Leaf {
        output: PhysAddr::new(0x40_0000_0000),
        attrs,
    };
    assert_encodes(block_1g, Level::L1, 0x0000_0040_0000_0681);
    // A 2 MiB-aligned (not 1 GiB-aligned) output address cannot be a level-1 block.
    assert_eq!(block_2m.encode(Level::L1), None);
}

pub fn table_descriptor_matches_hand_worked_bits() {
    let d = Descriptor::Table {
        next: PhysAddr::new(0xabc_d000),
    };
    assert_encodes(d, Level::L0, 0xabc_d003);
    assert_encodes(d, Level::L1, 0xabc_d003);
    assert_encodes(d, Level::L2, 0xabc_d003);
    assert_eq!(d.encode(Level::L3), None);
    // At level 3 the same bits are a page.
    assert!(matches!(
        Descriptor::decode(Level::L3, 0xabc_d003),
        Ok(Descriptor::Leaf { .. })
    ));
}

pub fn reserved_and_unknown_encodings_are_corrupt() {
    let corrupt = |level, raw| Err::<Descriptor, _>(CorruptDescriptor { level, raw });
    // Block encoding at level 0 and level 3 is reserved.
    assert_eq!(
        Descriptor::decode(Level::L0, 0x4000_0401),
        corrupt(Level::L0, 0x4000_0401)
    );
    assert_eq!(
        Descriptor::decode(Level::L3, 0x1000_0401),
        corrupt(Level::L3, 0x1000_0401)
    );
    // SH = 0b01 is reserved.
    assert!(Descriptor::decode(Level::L3, 0x1000_0503).is_err());
    // The contiguous hint (bit 52, in the upper word) is never written by this crate.
    assert!(Descriptor::decode(Level::L3, (1 << 52) | 0x1000_0403).is_err());
    // An OA bit below the 2 MiB block field is RES0.
    assert!(Descriptor::decode(Level::L2, 0x4020_1401).is_err());
    // An invalid descriptor with stray bits.
    assert!(Descriptor::decode(Level::L2, 0x1000).is_err());
    assert_eq!(Descriptor::decode(Level::L2, 0), Ok(Descriptor::Invalid));
    // Output addresses beyond OA[47:12], or misaligned, do not encode.
    let leaf = |output| Descriptor::Leaf {
        output: PhysAddr::new(output),
        attrs: rw_attrs(),
    };
    assert_eq!(leaf(1 << 48).encode(Level::L3), None);
    assert_eq!(leaf(0x1800).encode(Level::L3), None);
    assert_eq!(leaf(0).encode(Level::L0), None);
}

pub fn levels_resolve_the_documented_va_bits() {
    assert_eq!(Level::L0.entry_bytes(), 512 << 30);
    assert_eq!(Level::start_for(48), Level::L0);
    assert_eq!(Level::start_for(39), Level::L1);
    assert_eq!(Level::start_for(30), Level::L2);
    assert_eq!(Level::L3.next(), None);
    assert_eq!(Level::L0.leaf_size(), None);
}

host_tests!(
    page_descriptor_matches_hand_worked_bits,
    read_only_block_descriptors_match_hand_worked_bits,
    table_descriptor_matches_hand_worked_bits,
    reserved_and_unknown_encodings_are_corrupt,
    levels_resolve_the_documented_va_bits,
);
