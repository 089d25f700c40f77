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
        | Param::LAST_ATTACH_NS
        | Param::JOBS
        | Param::LAST_USERPTR_RECORD_NS
        | Param::LAST_USERPTR_LEDGER_NS
        | Param::LAST_USERPTR_SETUP_NS
        | Param::LAST_USERPTR_NS
        | Param::LAST_EXEC_NS
        | Param::JOB_FAULTS => ParamAnswer::Platform,
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
