//! Hardware profiles: the limits of real open GPUs, as `const` tables.
//!
//! A profile is what a driver reads from the GPU (Mali's `GPU_MMU_FEATURES` gives the VA
//! and PA widths) plus what its Linux driver configures (`io_pgtable_cfg.pgsize_bitmap`).
//! Every profile is checked at compile time by [`GpuProfile::check`].

use crate::addr::Alignment;
use crate::descriptor::Level;
use crate::page_size::{PageSize, PageSizes};

/// The page-table formats the crate implements.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PageTableFormat {
    /// AArch64 stage-1 long descriptors, 4 KiB granule (`io-pgtable-arm` `ARM_64_LPAE_S1`).
    Aarch64Stage1Granule4K,
}

/// The limits of one GPU.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct GpuProfile {
    /// Human-readable name.
    pub name: &'static str,
    /// The MMU's page-table format.
    pub format: PageTableFormat,
    /// Width of a GPU virtual address.
    pub va_bits: u8,
    /// Width of an output (physical) address.
    pub oa_bits: u8,
    /// Page and block sizes the driver maps with.
    pub page_sizes: PageSizes,
    /// `minImportedHostPointerAlignment`: a power of two, at least the CPU page and the
    /// smallest GPU page, at most 64 KiB (the Vulkan CTS rejects larger).
    pub min_import_alignment: Alignment,
    /// The largest single mapping (and so allocation) the driver accepts, in bytes.
    pub max_mapping: u64,
}

/// Why a profile is unusable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ProfileError {
    /// `va_bits` is outside the 25..=48 the 4 KiB granule can walk.
    VaBits(u8),
    /// `oa_bits` is outside 32..=48 (OA\[47:12\] without FEAT_LPA).
    OaBits(u8),
    /// No 4 KiB pages: nothing smaller than a block could be mapped.
    No4KPages,
    /// 1 GiB blocks without 2 MiB blocks: a cut 1 GiB block could not be split in one step.
    BlockSizeGap,
    /// The import alignment is below 4 KiB or above 64 KiB.
    ImportAlignment(u64),
    /// `max_mapping` is zero, not page-aligned, or larger than the VA space.
    MaxMapping(u64),
}

/// The smallest page of the 4 KiB granule, which is also the CPU page size of the hosts
/// extmem targets.
pub const MIN_PAGE: Alignment = Alignment::SIZE_4K;

impl GpuProfile {
    /// Checks the profile's invariants. Used in `const` assertions for every built-in
    /// profile, and by anyone building a profile at run time (from GPU registers).
    pub const fn check(&self) -> Result<(), ProfileError> {
        if self.va_bits < 25 || self.va_bits > 48 {
            return Err(ProfileError::VaBits(self.va_bits));
        }
        if self.oa_bits < 32 || self.oa_bits > 48 {
            return Err(ProfileError::OaBits(self.oa_bits));
        }
        if !self.page_sizes.contains(PageSize::Size4K) {
            return Err(ProfileError::No4KPages);
        }
        if self.page_sizes.contains(PageSize::Size1G) && !self.page_sizes.contains(PageSize::Size2M)
        {
            return Err(ProfileError::BlockSizeGap);
        }
        let align = self.min_import_alignment.get();
        if align < MIN_PAGE.get() || align > Alignment::SIZE_64K.get() {
            return Err(ProfileError::ImportAlignment(align));
        }
        if self.max_mapping == 0
            || !MIN_PAGE.is_aligned(self.max_mapping)
            || self.max_mapping > self.va_size()
        {
            return Err(ProfileError::MaxMapping(self.max_mapping));
        }
        Ok(())
    }

    /// Bytes of GPU virtual address space: `1 << va_bits`.
    #[must_use]
    pub const fn va_size(&self) -> u64 {
        1u64 << self.va_bits
    }

    /// Bytes of output address space: `1 << oa_bits`.
    #[must_use]
    pub const fn oa_size(&self) -> u64 {
        1u64 << self.oa_bits
    }

    /// The level the MMU starts its walk at.
    #[must_use]
    pub const fn start_level(&self) -> Level {
        Level::start_for(self.va_bits)
    }
}

const SIZES_4K_2M: PageSizes = PageSizes::EMPTY
    .with(PageSize::Size4K)
    .with(PageSize::Size2M);

/// Arm Mali-G610 (Valhall, as on RK3588 boards; Linux `panthor`). `GPU_MMU_FEATURES` reads
/// 48 VA / 40 PA bits; panthor configures `pgsize_bitmap = SZ_4K | SZ_2M`, so no 1 GiB
/// blocks. This is the profile the extmem-vgpu virtual GPU uses.
pub const MALI_G610: GpuProfile = GpuProfile {
    name: "Mali-G610 (Valhall)",
    format: PageTableFormat::Aarch64Stage1Granule4K,
    va_bits: 48,
    oa_bits: 40,
    page_sizes: SIZES_4K_2M,
    min_import_alignment: Alignment::SIZE_4K,
    // Valhall buffer descriptors carry 32-bit sizes; panvk caps allocations well below.
    max_mapping: 1 << 32,
};

/// Qualcomm Adreno 6xx (Linux `msm`, per-process TTBR0 tables through the Adreno SMMU,
/// `ARM_64_LPAE_S1`): 48-bit GPU VA, and the SMMU's page-size bitmap includes 1 GiB blocks.
pub const ADRENO_6XX: GpuProfile = GpuProfile {
    name: "Adreno 6xx",
    format: PageTableFormat::Aarch64Stage1Granule4K,
    va_bits: 48,
    oa_bits: 36,
    page_sizes: SIZES_4K_2M.with(PageSize::Size1G),
    min_import_alignment: Alignment::SIZE_4K,
    max_mapping: 1 << 34,
};

/// The profile of the extmem-vgpu virtual GPU.
pub const VGPU: GpuProfile = MALI_G610;

/// Every built-in profile.
pub const ALL: [&GpuProfile; 2] = [&MALI_G610, &ADRENO_6XX];

const _: () = {
    let mut i = 0;
    while i < ALL.len() {
        assert!(ALL[i].check().is_ok(), "a built-in profile is invalid");
        i += 1;
    }
};
