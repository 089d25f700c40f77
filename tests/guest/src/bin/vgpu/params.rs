//! `GET_PARAM`: every parameter as `extmem_hw::profile::VGPU` and the running kernel's page
//! size say, the UUIDs, and the rejected forms.

use extmem_guest_tests::device_snapshot::{expect_errno, op};
use extmem_guest_tests::ktap::{expect_eq, CheckResult, Failure};
use extmem_guest_tests::vgpu::Vgpu;
use extmem_hw::profile::VGPU;
use extmem_hw::PageSize;
use extmem_uapi::{GetParam, Param};
use rustix::io::Errno;

use crate::Ktap;

pub(crate) fn checks(ktap: &mut Ktap, gpu: Option<&Vgpu>) {
    let page_sizes: u64 = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G]
        .into_iter()
        .filter(|s| VGPU.page_sizes.contains(*s))
        .map(PageSize::bytes)
        .sum();
    // The kernel's page size, as this process sees it: imports are whole CPU pages, so
    // the import alignment is the coarser of that and the profile's.
    let cpu_page = rustix::param::page_size() as u64;
    let import_alignment = cpu_page.max(VGPU.min_import_alignment.get());
    let expected = [
        (Param::API_VERSION, extmem_uapi::API_VERSION),
        (Param::VA_BITS, u64::from(VGPU.va_bits)),
        (Param::OA_BITS, u64::from(VGPU.oa_bits)),
        (Param::PAGE_SIZES, page_sizes),
        (Param::MIN_IMPORT_ALIGNMENT, import_alignment),
        (Param::MAX_MAPPING, VGPU.max_mapping),
        (Param::CPU_PAGE_SIZE, cpu_page),
    ];
    for (param, value) in expected {
        let name = param.name().unwrap_or("?");
        ktap.check_after(
            &format!(
                "GET_PARAM {name} is {value:#x}, as extmem_hw::profile::VGPU and the page size say"
            ),
            gpu,
            |gpu| expect_eq(name, get_param(gpu, param)?, value),
        );
    }
    let what = "GET_PARAM UUIDs: the device UUID is an RFC 9562 version-8 UUID, the driver UUID is set, both the same on a second open file";
    ktap.check_after(what, gpu, |gpu| {
        let read = |gpu: &Vgpu| -> CheckResult<[u64; 4]> {
            let mut words = [0; 4];
            let params = [
                Param::DEVICE_UUID_LO,
                Param::DEVICE_UUID_HI,
                Param::DRIVER_UUID_LO,
                Param::DRIVER_UUID_HI,
            ];
            for (word, param) in words.iter_mut().zip(params) {
                *word = get_param(gpu, param)?;
            }
            Ok(words)
        };
        let first = read(gpu)?;
        let [device_lo, device_hi, driver_lo, driver_hi] = first;
        let version = (device_lo >> 52) & 0xf;
        let variant = device_hi & 0xc0;
        if version != 8 || variant != 0x80 {
            return Err(Failure::new(
                "byte 6 high nibble 8, byte 8 top bits 10",
                format!("device UUID {device_lo:016x} {device_hi:016x}"),
            ));
        }
        if driver_lo == 0 && driver_hi == 0 {
            return Err(Failure::new("a non-zero driver UUID", "0"));
        }
        let other = Vgpu::open().map_err(|e| Failure::op("opening the node again", e))?;
        expect_eq("UUIDs on the second file", read(&other)?, first)
    });
    ktap.check_after(
        "GET_PARAM of an unknown parameter fails with EINVAL",
        gpu,
        |gpu| expect_errno("GET_PARAM 999", gpu.get_param(Param(999)), Errno::INVAL),
    );
    ktap.check_after(
        "GET_PARAM with non-zero padding fails with EINVAL",
        gpu,
        |gpu| {
            let mut args = GetParam {
                param: Param::VA_BITS,
                pad: 1,
                value: 0,
            };
            expect_errno(
                "GET_PARAM with pad 1",
                gpu.get_param_raw(&mut args),
                Errno::INVAL,
            )
        },
    );
}

/// `GET_PARAM` of `param`, a failure naming it.
pub(crate) fn get_param(gpu: &Vgpu, param: Param) -> CheckResult<u64> {
    let name = param.name().unwrap_or("?");
    op(format!("GET_PARAM {name}"), gpu.get_param(param))
}
