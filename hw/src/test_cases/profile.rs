//! The built-in [`GpuProfile`]s and [`GpuProfile::check`].

use crate::addr::Alignment;
use crate::descriptor::Level;
use crate::page_size::{PageSize, PageSizes};
use crate::profile::{GpuProfile, ProfileError, ADRENO_6XX, ALL, MALI_G610, VGPU};

use super::host_tests;

pub fn built_in_profiles_are_valid() {
    for p in ALL {
        assert_eq!(p.check(), Ok(()), "{}", p.name);
        assert!(p.min_import_alignment.get() <= 65536);
    }
    assert_eq!(MALI_G610.va_size(), 1 << 48);
    assert_eq!(MALI_G610.oa_size(), 1 << 40);
    assert_eq!(VGPU.start_level(), Level::L0);
    assert!(!VGPU.page_sizes.contains(PageSize::Size1G));
    assert!(ADRENO_6XX.page_sizes.contains(PageSize::Size1G));
}

pub fn check_rejects_each_bad_field() {
    let bad = |f: fn(&mut GpuProfile)| {
        let mut p = MALI_G610;
        f(&mut p);
        p.check()
    };
    assert_eq!(bad(|p| p.va_bits = 49), Err(ProfileError::VaBits(49)));
    assert_eq!(bad(|p| p.oa_bits = 31), Err(ProfileError::OaBits(31)));
    assert_eq!(
        bad(|p| p.page_sizes = PageSizes::EMPTY.with(PageSize::Size2M)),
        Err(ProfileError::No4KPages)
    );
    assert_eq!(
        bad(|p| p.page_sizes = PageSizes::EMPTY
            .with(PageSize::Size4K)
            .with(PageSize::Size1G)),
        Err(ProfileError::BlockSizeGap)
    );
    assert_eq!(
        bad(|p| p.min_import_alignment = Alignment::SIZE_2M),
        Err(ProfileError::ImportAlignment(2 << 20))
    );
    assert_eq!(
        bad(|p| p.max_mapping = 0x1800),
        Err(ProfileError::MaxMapping(0x1800))
    );
    assert_eq!(
        bad(|p| p.max_mapping = 1 << 49),
        Err(ProfileError::MaxMapping(1 << 49))
    );
}

host_tests!(built_in_profiles_are_valid, check_rejects_each_bad_field);
