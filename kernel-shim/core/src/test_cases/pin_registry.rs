//! The pin registry: page counts, and each refused record.

use crate::pin_registry::*;
use crate::platform::ObjectId;
use extmem_hw::HostVa;

use super::{host_tests, Must};
use crate::cpu_page::CpuPage;

fn page(shift: u32) -> CpuPage {
    CpuPage::from_shift(shift).must("a Linux page size")
}

pub fn counts_pages_and_refuses_bad_records() {
    let page_4k = page(12);
    let mut r = PinRegistry::<2>::new();
    let a = ObjectId(0xa);
    let start = HostVa::new(0x7f00_0000_0000);
    assert_eq!(r.add(a, start, 4, page_4k), Ok(()));
    // The same range again, for another object: allowed.
    assert_eq!(r.add(ObjectId(0xb), start, 2, page_4k), Ok(()));
    assert_eq!(r.pinned_pages(), 6);
    assert_eq!(
        r.add(a, start, 1, page_4k),
        Err(PinError::Duplicate { object: a }),
        "duplicate is reported before full"
    );
    assert_eq!(
        r.add(ObjectId(0xc), start, 1, page_4k),
        Err(PinError::Full { capacity: 2 })
    );
    assert_eq!(
        r.add(ObjectId(0xc), start, 0, page_4k),
        Err(PinError::ZeroPages)
    );
    assert_eq!(
        r.add(ObjectId(0xc), HostVa::new(0x1008), 1, page_4k),
        Err(PinError::Misaligned {
            start: HostVa::new(0x1008)
        })
    );
    let top = HostVa::new(u64::MAX - 0xfff);
    assert_eq!(
        r.add(ObjectId(0xc), top, 2, page_4k),
        Err(PinError::Wraps {
            start: top,
            pages: 2
        })
    );
    assert_eq!(
        r.add(ObjectId(0xc), start, u64::MAX, page_4k),
        Err(PinError::Wraps {
            start,
            pages: u64::MAX
        })
    );
    assert_eq!(r.pinned_pages(), 6, "refusals change nothing");
    assert_eq!(r.remove(a).map(|p| p.pages), Ok(4));
    assert_eq!(r.remove(a), Err(PinError::NotFound { object: a }));
    assert_eq!(r.pinned_pages(), 2);
    assert_eq!(r.pins().len(), 1);
    r.clear();
    assert_eq!((r.pinned_pages(), r.pins().len()), (0, 0));
}

pub fn sixteen_kib_pages_are_counted_and_aligned_as_such() {
    let page_16k = page(14);
    let mut r = PinRegistry::<2>::new();
    let start = HostVa::new(0x7f00_0000_4000);
    assert_eq!(r.add(ObjectId(1), start, 3, page_16k), Ok(()));
    assert_eq!(r.pinned_pages(), 3);
    // 4 KiB-aligned, but inside a 16 KiB page.
    let inside = HostVa::new(0x7f00_0000_5000);
    assert_eq!(
        r.add(ObjectId(2), inside, 1, page_16k),
        Err(PinError::Misaligned { start: inside })
    );
    // The end is computed in 16 KiB pages: four pages from 48 KiB below the top wrap,
    // where four 4 KiB pages would not.
    let near_top = HostVa::new(u64::MAX - 0xbfff);
    assert_eq!(
        r.add(ObjectId(3), near_top, 4, page_16k),
        Err(PinError::Wraps {
            start: near_top,
            pages: 4
        })
    );
    assert_eq!(r.add(ObjectId(3), near_top, 4, page(12)), Ok(()));
    assert_eq!(r.pinned_pages(), 7);
}

host_tests!(
    counts_pages_and_refuses_bad_records,
    sixteen_kib_pages_are_counted_and_aligned_as_such
);
