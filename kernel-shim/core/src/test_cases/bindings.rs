//! The binding table: overlap on either side, a full table, exact removal.

use crate::bindings::*;
use crate::platform::ObjectId;
use extmem_hw::GpuVa;

use super::{host_tests, Must};

fn b(va: u64, size: u64) -> Binding {
    Binding {
        va: GpuVa::new(va),
        size,
        object: ObjectId(va),
        ..Binding::default()
    }
}

pub fn overlap_is_found_on_either_side() {
    let mut t = BindingTable::<8>::new();
    t.insert(b(0x10_000, 0x2000)).must("first");
    t.insert(b(0x20_000, 0x1000)).must("second");
    // Touching ranges do not overlap.
    assert_eq!(t.check_vacant(GpuVa::new(0x12_000), 0xe000), Ok(()));
    assert_eq!(t.check_vacant(GpuVa::new(0xf_000), 0x1000), Ok(()));
    let overlap = |va: u64, size: u64| match t.check_vacant(GpuVa::new(va), size) {
        Err(BindingError::Overlap { existing, .. }) => Some(existing.va.get()),
        _ => None,
    };
    assert_eq!(overlap(0x11_000, 0x1000), Some(0x10_000), "inside");
    assert_eq!(overlap(0xf_000, 0x2000), Some(0x10_000), "tail into");
    assert_eq!(overlap(0x11_000, 0x10_000), Some(0x10_000), "both");
    assert_eq!(overlap(0x1f_000, 0x2000), Some(0x20_000), "head into");
    assert_eq!(overlap(0x0, 0x100_000), Some(0x10_000), "covering");
    assert_eq!(overlap(0x20_000, 0x1000), Some(0x20_000), "exact");
}

pub fn full_exact_removal_and_not_found() {
    let mut t = BindingTable::<2>::new();
    t.insert(b(0x1000, 0x1000)).must("1");
    t.insert(b(0x3000, 0x1000)).must("2");
    assert_eq!(
        t.insert(b(0x5000, 0x1000)),
        Err(BindingError::Full { capacity: 2 })
    );
    // Overlap is reported before a full table.
    assert!(matches!(
        t.check_vacant(GpuVa::new(0x1000), 0x1000),
        Err(BindingError::Overlap { .. })
    ));
    let not_found = |va: u64, size: u64| BindingError::NotFound {
        va: GpuVa::new(va),
        size,
    };
    assert_eq!(
        t.remove_exact(GpuVa::new(0x3000), 0x2000),
        Err(not_found(0x3000, 0x2000))
    );
    assert_eq!(
        t.remove_exact(GpuVa::new(0x2000), 0x1000),
        Err(not_found(0x2000, 0x1000))
    );
    assert_eq!(
        t.find_exact(GpuVa::new(0x3000), 0x1000),
        Ok(&b(0x3000, 0x1000))
    );
    assert_eq!(
        t.remove_exact(GpuVa::new(0x3000), 0x1000),
        Ok(b(0x3000, 0x1000))
    );
    assert_eq!(t.as_slice(), &[b(0x1000, 0x1000)]);
    t.clear();
    assert!(t.is_empty());
}

host_tests!(
    overlap_is_found_on_either_side,
    full_exact_removal_and_not_found
);
