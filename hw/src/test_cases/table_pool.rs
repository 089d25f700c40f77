//! [`TablePool`]: the fixed-size table memory of tests, fuzzing and bare metal, here with
//! its made-up physical addresses above 4 GiB.

use crate::addr::PhysAddr;
use crate::page_table::{TableIndex, TableMemory};
use crate::table_pool::TablePool;

use super::{host_tests, some};

pub fn pool_hands_out_zeroed_distinct_pages_and_takes_them_back() {
    let base = 0x1_0010_0000;
    let mut pool = some(TablePool::<3>::new(PhysAddr::new(base)), "an aligned base");
    let a = some(pool.alloc_table(), "a page");
    let b = some(pool.alloc_table(), "a page");
    assert_eq!((a, b), (PhysAddr::new(base), PhysAddr::new(base + 0x1000)));
    let i = some(TableIndex::new(7), "an index below 512");
    pool.write_descriptor(a, i, 0xdead_0003);
    assert_eq!(pool.read_descriptor(a, i), 0xdead_0003);
    assert_eq!(pool.read_descriptor(b, i), 0);
    pool.free_table(a);
    pool.free_table(a); // A double free is ignored.
    assert_eq!(pool.live(), 1);
    let c = some(pool.alloc_table(), "a page");
    assert_eq!(c, a);
    assert_eq!(
        pool.read_descriptor(c, i),
        0,
        "reallocated pages are zeroed"
    );
    assert!(pool.alloc_table().is_some());
    assert_eq!(pool.alloc_table(), None);
    assert_eq!(pool.peak(), 3);
    // Addresses the pool does not own: below it, past it, and not page-aligned.
    assert_eq!(pool.read_descriptor(PhysAddr::new(0x20_0000), i), 0);
    assert_eq!(pool.read_descriptor(PhysAddr::new(base + 0x3000), i), 0);
    pool.write_descriptor(PhysAddr::new(base + 0x800), i, 1);
    pool.free_table(PhysAddr::new(base + 0x800));
    assert_eq!(pool.live(), 3);
}

pub fn pool_rejects_bad_bases() {
    assert!(TablePool::<1>::new(PhysAddr::new(0x1800)).is_none());
    // Running past the end of the 64-bit address space.
    assert!(TablePool::<2>::new(PhysAddr::new(!0xfff_u64)).is_none());
}

host_tests!(
    pool_hands_out_zeroed_distinct_pages_and_takes_them_back,
    pool_rejects_bad_bases,
);
