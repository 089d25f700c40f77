//! The CPU page size of the kernel kcore runs in: 4 KiB on x86_64, 4, 16 or 64 KiB on arm64,
//! chosen when the kernel is configured. The GPU keeps its own 4 KiB granule (the Mali
//! stage-1 format, [`MIN_PAGE`]), so one CPU page is mapped as several GPU entries (four
//! for 16 KiB), or as part of a 2 MiB block where the layout allows. What the CPU page
//! decides is what the kernel pins and allocates in: shmem GEM objects are whole CPU pages,
//! `pin_user_pages` pins whole CPU pages, so host memory is imported in whole CPU pages.
//! The C glue hands kcore `PAGE_SHIFT` at module init; nothing here assumes a size.

use extmem_hw::profile::MIN_PAGE;
use extmem_hw::{Alignment, GpuProfile};

/// A CPU page size: a power of two from the GPU granule ([`MIN_PAGE`], 4 KiB) to 64 KiB,
/// the sizes Linux is built with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CpuPage(Alignment);

/// Why a CPU page size was refused (`EINVAL`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CpuPageError {
    /// The C glue has not given kcore the page size (`extmem_kcore_set_cpu_page_shift`).
    Unset,
    /// A shift outside [`CpuPage::MIN_SHIFT`]..=[`CpuPage::MAX_SHIFT`].
    Unsupported {
        /// The shift given.
        shift: u32,
    },
}

impl CpuPage {
    /// The smallest shift: the GPU granule, so a CPU page is always whole GPU pages.
    pub const MIN_SHIFT: u32 = MIN_PAGE.log2();
    /// The largest shift: 64 KiB, arm64's largest page.
    pub const MAX_SHIFT: u32 = 16;

    /// The page of `1 << shift` bytes (the kernel's `PAGE_SHIFT`).
    pub fn from_shift(shift: u32) -> Result<Self, CpuPageError> {
        if !(Self::MIN_SHIFT..=Self::MAX_SHIFT).contains(&shift) {
            return Err(CpuPageError::Unsupported { shift });
        }
        1_u64
            .checked_shl(shift)
            .and_then(Alignment::new)
            .map(Self)
            .ok_or(CpuPageError::Unsupported { shift })
    }

    /// The size as an alignment.
    pub const fn alignment(self) -> Alignment {
        self.0
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0.get()
    }

    /// What imported host memory must be aligned to: whole CPU pages (what the kernel
    /// pins), and the profile's own import alignment where that is coarser.
    pub fn import_alignment(self, profile: &GpuProfile) -> Alignment {
        if profile.min_import_alignment.get() > self.bytes() {
            profile.min_import_alignment
        } else {
            self.0
        }
    }

    /// How many GPU granules ([`MIN_PAGE`]) one CPU page spans.
    pub const fn gpu_pages(self) -> u64 {
        self.bytes() / MIN_PAGE.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use extmem_hw::profile::VGPU;

    #[test]
    fn shifts_from_the_gpu_granule_to_64_kib_are_page_sizes() {
        for (shift, bytes, gpu_pages) in [(12, 0x1000, 1), (14, 0x4000, 4), (16, 0x1_0000, 16)] {
            let page = CpuPage::from_shift(shift).expect("a Linux page size");
            assert_eq!(page.bytes(), bytes);
            assert_eq!(page.alignment().log2(), shift);
            assert_eq!(page.gpu_pages(), gpu_pages);
        }
        for shift in [0, 11, 17, 64, u32::MAX] {
            assert_eq!(
                CpuPage::from_shift(shift),
                Err(CpuPageError::Unsupported { shift })
            );
        }
    }

    #[test]
    fn the_import_alignment_is_the_coarser_of_page_and_profile() {
        let page_16k = CpuPage::from_shift(14).expect("16 KiB");
        assert_eq!(page_16k.import_alignment(&VGPU).get(), 0x4000);
        let page_4k = CpuPage::from_shift(12).expect("4 KiB");
        assert_eq!(page_4k.import_alignment(&VGPU), VGPU.min_import_alignment);
        let coarse = GpuProfile {
            min_import_alignment: Alignment::SIZE_64K,
            ..VGPU
        };
        assert_eq!(page_16k.import_alignment(&coarse), Alignment::SIZE_64K);
    }
}
