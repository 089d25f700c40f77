//! `GET_PARAM`: the profile's answers, the ones left to the platform, unknown params.

use crate::args::ArgError;
use crate::params::*;
use extmem_uapi::{GetParam, Param};

use super::{host_tests, Must};
use crate::cpu_page::CpuPage;
use extmem_hw::profile::VGPU;

fn page(shift: u32) -> CpuPage {
    CpuPage::from_shift(shift).must("a Linux page size")
}

fn get_with(param: Param, cpu_page: CpuPage) -> Result<(ParamAnswer, u64), ArgError> {
    let mut args = GetParam {
        param,
        value: 0xfeed,
        ..GetParam::default()
    };
    get_param(&mut args, &VGPU, cpu_page).map(|a| (a, args.value))
}

fn get(param: Param) -> Result<(ParamAnswer, u64), ArgError> {
    get_with(param, page(12))
}

pub fn the_core_answers_the_profile() {
    assert_eq!(get(Param::API_VERSION), Ok((ParamAnswer::Core(2), 2)));
    assert_eq!(get(Param::VA_BITS), Ok((ParamAnswer::Core(48), 48)));
    assert_eq!(get(Param::OA_BITS), Ok((ParamAnswer::Core(40), 40)));
    assert_eq!(
        get(Param::PAGE_SIZES),
        Ok((ParamAnswer::Core(0x20_1000), 0x20_1000))
    );
    assert_eq!(
        get(Param::MIN_IMPORT_ALIGNMENT),
        Ok((ParamAnswer::Core(4096), 4096))
    );
    assert_eq!(
        get(Param::MAX_MAPPING),
        Ok((ParamAnswer::Core(1 << 32), 1 << 32))
    );
    assert_eq!(
        get(Param::CPU_PAGE_SIZE),
        Ok((ParamAnswer::Core(4096), 4096))
    );
}

pub fn a_16_kib_kernel_reports_its_page_and_imports_in_whole_pages() {
    let page_16k = page(14);
    assert_eq!(
        get_with(Param::CPU_PAGE_SIZE, page_16k),
        Ok((ParamAnswer::Core(16384), 16384))
    );
    assert_eq!(
        get_with(Param::MIN_IMPORT_ALIGNMENT, page_16k),
        Ok((ParamAnswer::Core(16384), 16384))
    );
    // The GPU's own page sizes do not change with the CPU's.
    assert_eq!(
        get_with(Param::PAGE_SIZES, page_16k),
        Ok((ParamAnswer::Core(0x20_1000), 0x20_1000))
    );
}

pub fn platform_params_leave_the_value_alone() {
    assert_eq!(
        get(Param::PINNED_PAGES),
        Ok((ParamAnswer::Platform, 0xfeed))
    );
}

pub fn every_known_param_has_an_owner_and_unknown_ones_are_rejected() {
    for &p in Param::KNOWN {
        assert!(answer(p, &VGPU, page(12)).is_ok(), "{:?}", p.name());
    }
    assert_eq!(get(Param(0)), Err(ArgError::UnknownParam { param: 0 }));
    assert_eq!(get(Param(26)), Err(ArgError::UnknownParam { param: 26 }));
    let mut padded = GetParam {
        param: Param::VA_BITS,
        pad: 1,
        value: 3,
    };
    assert_eq!(
        get_param(&mut padded, &VGPU, page(12)),
        Err(ArgError::NonZeroPad { pad: 1 })
    );
    assert_eq!(padded.value, 3);
}

host_tests!(
    the_core_answers_the_profile,
    a_16_kib_kernel_reports_its_page_and_imports_in_whole_pages,
    platform_params_leave_the_value_alone,
    every_known_param_has_an_owner_and_unknown_ones_are_rejected
);
