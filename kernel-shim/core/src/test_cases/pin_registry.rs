//! The pin registry: page counts, and each refused record.

use crate::pin_registry::*;
use crate::platform::ObjectId;
use extmem_hw::HostVa;

use super::host_tests;

pub fn counts_pages_and_refuses_bad_records() {
    let mut r = PinRegistry::<2>::new();
    let a = ObjectId(0xa);
    let start = HostVa::new(0x7f00_0000_0000);
    assert_eq!(r.add(a, start, 4), Ok(()));
    // The same range again, for another object: allowed.
    assert_eq!(r.add(ObjectId(0xb), start, 2), Ok(()));
    assert_eq!(r.pinned_pages(), 6);
    assert_eq!(
        r.add(a, start, 1),
        Err(PinError::Duplicate { object: a }),
        "duplicate is reported before full"
    );
    assert_eq!(
        r.add(ObjectId(0xc), start, 1),
        Err(PinError::Full { capacity: 2 })
    );
    assert_eq!(r.add(ObjectId(0xc), start, 0), Err(PinError::ZeroPages));
    assert_eq!(
        r.add(ObjectId(0xc), HostVa::new(0x1008), 1),
        Err(PinError::Misaligned {
            start: HostVa::new(0x1008)
        })
    );
    let top = HostVa::new(u64::MAX - 0xfff);
    assert_eq!(
        r.add(ObjectId(0xc), top, 2),
        Err(PinError::Wraps {
            start: top,
            pages: 2
        })
    );
    assert_eq!(
        r.add(ObjectId(0xc), start, u64::MAX),
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

host_tests!(counts_pages_and_refuses_bad_records);
