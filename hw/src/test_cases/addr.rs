//! [`Alignment`] and the address newtypes: checked u64 arithmetic, with values above 4 GiB
//! and carries out of the low word, which a 32-bit core computes in two registers.

use crate::addr::{range_end, Alignment, GpuVa, HostVa, PhysAddr};

use super::host_tests;

pub fn alignment_is_a_power_of_two_by_construction() {
    assert_eq!(Alignment::new(0), None);
    assert_eq!(Alignment::new(3), None);
    assert_eq!(Alignment::new(4096).map(Alignment::get), Some(4096));
    assert_eq!(Alignment::new(1 << 32).map(Alignment::log2), Some(32));
    assert_eq!(Alignment::new(1 << 63).map(Alignment::log2), Some(63));
    assert_eq!(Alignment::SIZE_2M.get(), 2 * 1024 * 1024);
    assert_eq!(Alignment::SIZE_1G.log2(), 30);
}

pub fn alignment_rounding_is_checked() {
    let a = Alignment::SIZE_4K;
    assert!(a.is_aligned(0x2000));
    assert!(!a.is_aligned(0x2001));
    assert_eq!(a.align_down(0x2fff), 0x2000);
    assert_eq!(a.align_up(0x2001), Some(0x3000));
    assert_eq!(a.align_up(0x3000), Some(0x3000));
    assert_eq!(a.align_up(0x1_0000_2001), Some(0x1_0000_3000));
    assert_eq!(a.align_up(u64::MAX), None);
    assert_eq!(Alignment::SIZE_2M.align_down(0x1_0034_5678), 0x1_0020_0000);
    assert!(!Alignment::SIZE_1G.is_aligned(0x1_2000_0000));
}

pub fn address_arithmetic_is_checked() {
    let va = GpuVa::new(u64::MAX - 0xfff);
    assert_eq!(va.checked_add(0xfff), Some(GpuVa::new(u64::MAX)));
    assert_eq!(va.checked_add(0x1000), None);
    assert_eq!(GpuVa::ZERO.checked_sub(1), None);
    // A carry out of the low word.
    assert_eq!(
        PhysAddr::new(0xffff_f000).checked_add(0x1000),
        Some(PhysAddr::new(0x1_0000_0000))
    );
    assert_eq!(
        PhysAddr::new(0x5000).offset_from(PhysAddr::new(0x1000)),
        Some(0x4000)
    );
    assert_eq!(
        PhysAddr::new(0x1_0000_5000).offset_from(PhysAddr::new(0xffff_f000)),
        Some(0x6000)
    );
    assert_eq!(
        PhysAddr::new(0x1000).offset_from(PhysAddr::new(0x5000)),
        None
    );
    assert_eq!(
        HostVa::new(0x1234).align_down(Alignment::SIZE_4K),
        HostVa::new(0x1000)
    );
    assert_eq!(
        HostVa::new(0x1234).align_up(Alignment::SIZE_4K),
        Some(HostVa::new(0x2000))
    );
}

pub fn range_end_rejects_empty_and_wrapping_ranges() {
    assert_eq!(range_end(0x1000, 0), None);
    assert_eq!(range_end(u64::MAX, 1), None);
    assert_eq!(range_end(0x1000, 0x1000), Some(0x2000));
    assert_eq!(range_end(0xffff_ffff, 1), Some(0x1_0000_0000));
}

host_tests!(
    alignment_is_a_power_of_two_by_construction,
    alignment_rounding_is_checked,
    address_arithmetic_is_checked,
    range_end_rejects_empty_and_wrapping_ranges,
);
