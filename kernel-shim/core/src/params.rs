//! `GET_PARAM` for the parameters the core owns: the contract version and the profile's
//! limits. The C glue owns the rest (UUIDs, counters, pin timing).

use extmem_hw::{GpuProfile, PageSize};
use extmem_uapi::{GetParam, Param, API_VERSION};

use crate::args::ArgError;
use crate::cpu_page::CpuPage;

/// Who answers a parameter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ParamAnswer {
    /// The core: the value.
    Core(u64),
    /// The C glue (`EXTMEM_KCORE_PLATFORM_PARAM`).
    Platform,
}

/// Classifies `param`, with the core's value where the core owns it (from `profile` and the
/// running kernel's `cpu_page`). Unknown ids are an error; a unit test checks that every id
/// `extmem-uapi` knows is answered by someone.
pub fn answer(
    param: Param,
    profile: &GpuProfile,
    cpu_page: CpuPage,
) -> Result<ParamAnswer, ArgError> {
    let core = ParamAnswer::Core;
    Ok(match param {
        Param::API_VERSION => core(API_VERSION),
        Param::VA_BITS => core(u64::from(profile.va_bits)),
        Param::OA_BITS => core(u64::from(profile.oa_bits)),
        Param::PAGE_SIZES => core(
            PageSize::ALL
                .iter()
                .filter(|&&size| profile.page_sizes.contains(size))
                .fold(0, |mask, size| mask | size.bytes()),
        ),
        Param::MIN_IMPORT_ALIGNMENT => core(cpu_page.import_alignment(profile).get()),
        Param::CPU_PAGE_SIZE => core(cpu_page.bytes()),
        Param::MAX_MAPPING => core(profile.max_mapping),
        Param::DEVICE_UUID_LO
        | Param::DEVICE_UUID_HI
        | Param::DRIVER_UUID_LO
        | Param::DRIVER_UUID_HI
        | Param::LIVE_OBJECTS
        | Param::PINNED_PAGES
        | Param::PT_PAGES
        | Param::ATTACHMENTS
        | Param::BINDINGS
        | Param::LAST_PIN_NS
        | Param::LAST_ATTACH_NS => ParamAnswer::Platform,
        Param(param) => return Err(ArgError::UnknownParam { param }),
    })
}

/// `GET_PARAM`: rejects non-zero padding and unknown ids; sets `args.value` for a
/// parameter the core owns and leaves it alone for one the platform owns.
pub fn get_param(
    args: &mut GetParam,
    profile: &GpuProfile,
    cpu_page: CpuPage,
) -> Result<ParamAnswer, ArgError> {
    if args.pad != 0 {
        return Err(ArgError::NonZeroPad { pad: args.pad });
    }
    let answer = answer(args.param, profile, cpu_page)?;
    if let ParamAnswer::Core(value) = answer {
        args.value = value;
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use extmem_hw::profile::VGPU;

    fn page(shift: u32) -> CpuPage {
        CpuPage::from_shift(shift).expect("a Linux page size")
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

    #[test]
    fn the_core_answers_the_profile() {
        assert_eq!(get(Param::API_VERSION), Ok((ParamAnswer::Core(1), 1)));
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

    #[test]
    fn a_16_kib_kernel_reports_its_page_and_imports_in_whole_pages() {
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

    #[test]
    fn platform_params_leave_the_value_alone() {
        assert_eq!(
            get(Param::PINNED_PAGES),
            Ok((ParamAnswer::Platform, 0xfeed))
        );
    }

    #[test]
    fn every_known_param_has_an_owner_and_unknown_ones_are_rejected() {
        for &p in Param::KNOWN {
            assert!(answer(p, &VGPU, page(12)).is_ok(), "{:?}", p.name());
        }
        assert_eq!(get(Param(0)), Err(ArgError::UnknownParam { param: 0 }));
        assert_eq!(get(Param(19)), Err(ArgError::UnknownParam { param: 19 }));
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
}
