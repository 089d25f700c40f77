//! What a device says about itself (UUIDs, import alignment, the GPU VM's shape), read
//! once through [`crate::backend::Backend::device_params`] and checked here, so a front end
//! gets typed values it can report as they are.
//!
//! The kernel's `GET_PARAM` answers in raw `u64`s ([`RawParams`]); [`DeviceParams::from_raw`]
//! refuses any that the rest of the stack could not honour, naming which and its value.

use core::fmt;

use extmem_hw::{Alignment, PageSize, PageSizes};
use extmem_uapi as uapi;

use crate::backend::BackendError;

/// Bytes in a device or driver UUID (`VK_UUID_SIZE`).
pub const UUID_SIZE: usize = 16;

/// The raw answers a [`DeviceParams`] is built from, as `GET_PARAM` gives them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct RawParams {
    /// `DEVICE_UUID_LO`, `DEVICE_UUID_HI`.
    pub device_uuid: [u64; 2],
    /// `DRIVER_UUID_LO`, `DRIVER_UUID_HI`.
    pub driver_uuid: [u64; 2],
    /// `MIN_IMPORT_ALIGNMENT`.
    pub min_import_alignment: u64,
    /// `VA_BITS`.
    pub va_bits: u64,
    /// `PAGE_SIZES`.
    pub page_sizes: u64,
    /// `MAX_MAPPING`.
    pub max_mapping: u64,
}

impl RawParams {
    /// Reads them with `param`: the kernel's `GET_PARAM`, or the software device's answer
    /// to the same question.
    pub fn read(
        param: impl Fn(uapi::Param) -> Result<u64, BackendError>,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            device_uuid: [
                param(uapi::Param::DEVICE_UUID_LO)?,
                param(uapi::Param::DEVICE_UUID_HI)?,
            ],
            driver_uuid: [
                param(uapi::Param::DRIVER_UUID_LO)?,
                param(uapi::Param::DRIVER_UUID_HI)?,
            ],
            min_import_alignment: param(uapi::Param::MIN_IMPORT_ALIGNMENT)?,
            va_bits: param(uapi::Param::VA_BITS)?,
            page_sizes: param(uapi::Param::PAGE_SIZES)?,
            max_mapping: param(uapi::Param::MAX_MAPPING)?,
        })
    }
}

/// A device's description, checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DeviceParams {
    /// `deviceUUID`.
    pub device_uuid: [u8; UUID_SIZE],
    /// `driverUUID`.
    pub driver_uuid: [u8; UUID_SIZE],
    /// `minImportedHostPointerAlignment`: a power of two from 4 KiB to 64 KiB.
    pub min_import_alignment: Alignment,
    /// Width of a GPU VA: 32 to 48 bits.
    pub va_bits: u8,
    /// The page and block sizes of the GPU MMU; 4 KiB always among them.
    pub page_sizes: PageSizes,
    /// The largest object or mapping in bytes.
    pub max_mapping: u64,
}

/// The parameter a [`ParamError::Invalid`] is about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Param {
    /// `minImportedHostPointerAlignment`.
    MinImportAlignment,
    /// The GPU VA width.
    VaBits,
    /// The MMU's page sizes.
    PageSizes,
}

/// Why a device's parameters could not be had.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ParamError {
    /// Reading them failed (`EOPNOTSUPP`: the backend describes no device).
    Kernel(BackendError),
    /// A parameter is outside what the stack can honour.
    Invalid {
        /// Which.
        param: Param,
        /// Its value.
        value: u64,
    },
}

impl From<BackendError> for ParamError {
    fn from(e: BackendError) -> Self {
        ParamError::Kernel(e)
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Kernel(e) => write!(f, "reading the device parameters: {e}"),
            ParamError::Invalid { param, value } => {
                write!(f, "device parameter {param:?} out of range: {value:#x}")
            }
        }
    }
}

fn uuid(halves: [u64; 2]) -> [u8; UUID_SIZE] {
    let mut out = [0u8; UUID_SIZE];
    let (lo, hi) = out.split_at_mut(8);
    lo.copy_from_slice(&halves[0].to_le_bytes());
    hi.copy_from_slice(&halves[1].to_le_bytes());
    out
}

impl DeviceParams {
    /// Checks the raw answers. The import alignment must be a power of two between 4 KiB
    /// and 64 KiB (the Vulkan CTS's upper bound for `minImportedHostPointerAlignment`), the
    /// VA width between 32 and 48 bits (the AArch64 stage-1 format's range), and 4 KiB
    /// pages supported (every binding is made of them). UUIDs are little-endian halves.
    pub fn from_raw(raw: RawParams) -> Result<Self, ParamError> {
        let min_import_alignment = Alignment::new(raw.min_import_alignment)
            .filter(|a| (Alignment::SIZE_4K..=Alignment::SIZE_64K).contains(a))
            .ok_or(ParamError::Invalid {
                param: Param::MinImportAlignment,
                value: raw.min_import_alignment,
            })?;
        let va_bits = u8::try_from(raw.va_bits)
            .ok()
            .filter(|b| (32..=48).contains(b))
            .ok_or(ParamError::Invalid {
                param: Param::VaBits,
                value: raw.va_bits,
            })?;
        let page_sizes = PageSize::ALL
            .iter()
            .filter(|p| raw.page_sizes & p.bytes() != 0)
            .fold(PageSizes::EMPTY, |set, p| set.with(*p));
        if !page_sizes.contains(PageSize::Size4K) {
            return Err(ParamError::Invalid {
                param: Param::PageSizes,
                value: raw.page_sizes,
            });
        }
        Ok(Self {
            device_uuid: uuid(raw.device_uuid),
            driver_uuid: uuid(raw.driver_uuid),
            min_import_alignment,
            va_bits,
            page_sizes,
            max_mapping: raw.max_mapping,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawParams {
        RawParams {
            device_uuid: [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908],
            driver_uuid: [1, 2],
            min_import_alignment: 4096,
            va_bits: 48,
            page_sizes: 0x1000 | 0x20_0000,
            max_mapping: 1 << 32,
        }
    }

    #[test]
    fn uuids_are_little_endian_halves_and_values_become_types() {
        let params = DeviceParams::from_raw(raw()).unwrap_or_else(|e| panic!("{e}"));
        let expect: [u8; UUID_SIZE] = core::array::from_fn(|i| u8::try_from(i).unwrap_or(u8::MAX));
        assert_eq!(params.device_uuid, expect);
        assert_eq!(params.driver_uuid[0], 1);
        assert_eq!(params.driver_uuid[8], 2);
        assert_eq!(params.min_import_alignment, Alignment::SIZE_4K);
        assert_eq!(params.va_bits, 48);
        assert!(params.page_sizes.contains(PageSize::Size2M));
        assert!(!params.page_sizes.contains(PageSize::Size1G));
        assert_eq!(params.max_mapping, 1 << 32);
    }

    #[test]
    fn out_of_range_params_are_refused_with_their_value() {
        for (bad, param, value) in [
            (
                RawParams {
                    min_import_alignment: 3000,
                    ..raw()
                },
                Param::MinImportAlignment,
                3000,
            ),
            (
                RawParams {
                    min_import_alignment: 1 << 17,
                    ..raw()
                },
                Param::MinImportAlignment,
                1 << 17,
            ),
            (
                RawParams {
                    va_bits: 64,
                    ..raw()
                },
                Param::VaBits,
                64,
            ),
            (
                RawParams {
                    va_bits: 0x1_0000_0030,
                    ..raw()
                },
                Param::VaBits,
                0x1_0000_0030,
            ),
            (
                RawParams {
                    page_sizes: 0x20_0000,
                    ..raw()
                },
                Param::PageSizes,
                0x20_0000,
            ),
        ] {
            assert_eq!(
                DeviceParams::from_raw(bad),
                Err(ParamError::Invalid { param, value })
            );
        }
    }
}
