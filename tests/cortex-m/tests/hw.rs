//! extmem-hw on a 32-bit Cortex-M3 (QEMU `lm3s6965evb`): the descriptor format against
//! hand-worked bit patterns, u64 address arithmetic on a core whose registers are 32 bits
//! wide, and map / unmap / translate on a [`TablePool`] with no allocator.
//!
//! Each test panics through defmt on a wrong outcome; the panic handlers below end QEMU
//! with a non-zero semihosting exit status, so a failure cannot look like a pass.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};

// The vector table and reset handler, the critical-section implementation defmt-semihosting
// needs, and the global defmt logger.
use cortex_m as _;
use cortex_m_rt as _;
use defmt_semihosting as _;

use extmem_hw::descriptor::CorruptDescriptor;
use extmem_hw::profile::{self, GpuProfile, ADRENO_6XX, MALI_G610, VGPU};
use extmem_hw::{
    Access, Alignment, AttrIndex, Descriptor, GpuVa, HostVa, Level, MapError, MapFlags, PageAttrs,
    PageSize, PageTable, PhysAddr, Shareability, TableMemory, TablePool, TranslateError,
    UnmapError,
};

/// The exit status of a failed run (what Rust's test harness uses for a panic).
const FAILURE: i32 = 101;

/// Set by the first panic, so a panic while reporting one exits at once.
static PANICKING: AtomicBool = AtomicBool::new(false);

/// `defmt::panic!` and the `defmt::assert*` macros have already logged their message.
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    semihosting::process::exit(FAILURE)
}

/// A core panic (overflow, an index out of range, `expect`) in the tests or in extmem-hw.
#[panic_handler]
fn core_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if !PANICKING.swap(true, Ordering::Relaxed) {
        defmt::error!("{}", defmt::Display2Format(info));
    }
    semihosting::process::exit(FAILURE)
}

/// `defmt::assert_eq!` for extmem-hw's types, which implement `Debug` but not
/// `defmt::Format`.
macro_rules! assert_same {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (left, right) => defmt::assert!(
                *left == *right,
                "`{=str}` == `{=str}`\n left: {}\nright: {}",
                stringify!($left),
                stringify!($right),
                defmt::Debug2Format(left),
                defmt::Debug2Format(right),
            ),
        }
    };
}

const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

/// Four table pages (16 KiB): enough for every scenario below.
type Pool = TablePool<4>;

/// Where the pools' made-up physical addresses start.
const POOL_BASE: PhysAddr = PhysAddr::new(0x100_0000);

// SRAM is 64 KiB and every move of a pool by value (into `Option`, `Result`, a
// constructor's argument) is another copy on the stack: handing `PageTable::new` an owned
// `TablePool<4>` took 48 KiB of stack in one frame. So the pools are lent (`&mut`), and stay
// where they were built.

/// An empty address space of `profile` over `pool`.
fn table<'a, const N: usize>(
    pool: &'a mut Option<TablePool<N>>,
    profile: &GpuProfile,
) -> PageTable<&'a mut TablePool<N>> {
    let pool = pool.as_mut().expect("an aligned pool base");
    PageTable::new(pool, profile).expect("a root table")
}

fn rw() -> MapFlags {
    MapFlags::default()
}

fn rw_attrs() -> PageAttrs {
    PageAttrs {
        access: Access::ReadWrite,
        unprivileged: true,
        attr_index: AttrIndex::new(1).expect("index below 8"),
        shareability: Shareability::InnerShareable,
        access_flag: true,
        not_global: true,
        execute_never: true,
    }
}

/// Checks that `descriptor` encodes at `level` to the hand-worked `raw` and decodes back
/// from it, printing descriptors in hex (`defmt::assert_eq!` would print them in decimal).
fn assert_encodes(descriptor: Descriptor, level: Level, raw: u64) {
    match descriptor.encode(level) {
        Some(encoded) => defmt::assert!(
            encoded == raw,
            "{} at {} encodes to {=u64:#018x}, not {=u64:#018x}",
            defmt::Debug2Format(&descriptor),
            defmt::Debug2Format(&level),
            encoded,
            raw
        ),
        None => defmt::panic!(
            "{} does not encode at {}; expected {=u64:#018x}",
            defmt::Debug2Format(&descriptor),
            defmt::Debug2Format(&level),
            raw
        ),
    }
    assert_same!(Descriptor::decode(level, raw), Ok(descriptor));
}

/// (PA, leaf size) that `va` translates to.
fn page_at<M: TableMemory>(pt: &PageTable<M>, va: u64) -> (u64, PageSize) {
    let t = pt.translate(GpuVa::new(va)).expect("mapped");
    (t.pa.get(), t.page)
}

#[defmt_test::tests]
mod tests {
    use super::*;

    // The expected descriptors are the hand-worked values of extmem-hw's unit tests, from
    // the Arm ARM field positions rather than from the crate's own bit table.

    #[test]
    fn page_descriptor_matches_hand_worked_bits() {
        let d = Descriptor::Leaf {
            output: PhysAddr::new(0x8000_1000),
            attrs: rw_attrs(),
        };
        // 0b11 page | AttrIndx=1 | AP[1] | SH=0b11 | AF | nG | XN (bit 54) | OA 0x8000_1000
        assert_encodes(d, Level::L3, 0x0040_0000_8000_1f47);
    }

    #[test]
    fn read_only_block_descriptors_match_hand_worked_bits() {
        let attrs = PageAttrs {
            access: Access::ReadOnly,
            unprivileged: false,
            attr_index: AttrIndex::new(0).expect("index below 8"),
            shareability: Shareability::OuterShareable,
            access_flag: true,
            not_global: false,
            execute_never: false,
        };
        // Output addresses above 4 GiB: the upper word must survive on a 32-bit core.
        let block_2m = Descriptor::Leaf {
            output: PhysAddr::new(0x1_4020_0000),
            attrs,
        };
        // 0b01 block | AP[2] | SH=0b10 | AF
        assert_encodes(block_2m, Level::L2, 0x0000_0001_4020_0681);
        let block_1g = Descriptor::Leaf {
            output: PhysAddr::new(0x40_0000_0000),
            attrs,
        };
        assert_encodes(block_1g, Level::L1, 0x0000_0040_0000_0681);
        // 2 MiB- but not 1 GiB-aligned: not a level-1 block.
        defmt::assert_eq!(block_2m.encode(Level::L1), None);
    }

    #[test]
    fn table_descriptor_matches_hand_worked_bits() {
        let d = Descriptor::Table {
            next: PhysAddr::new(0xabc_d000),
        };
        assert_encodes(d, Level::L0, 0xabc_d003);
        assert_encodes(d, Level::L1, 0xabc_d003);
        assert_encodes(d, Level::L2, 0xabc_d003);
        defmt::assert_eq!(d.encode(Level::L3), None);
        // At level 3 the same bits are a page.
        defmt::assert!(matches!(
            Descriptor::decode(Level::L3, 0xabc_d003),
            Ok(Descriptor::Leaf { .. })
        ));
    }

    #[test]
    fn decode_rejects_reserved_and_unknown_encodings() {
        let corrupt = |level, raw| Err::<Descriptor, _>(CorruptDescriptor { level, raw });
        // Block encoding at levels 0 and 3 is reserved.
        assert_same!(
            Descriptor::decode(Level::L0, 0x4000_0401),
            corrupt(Level::L0, 0x4000_0401)
        );
        assert_same!(
            Descriptor::decode(Level::L3, 0x1000_0401),
            corrupt(Level::L3, 0x1000_0401)
        );
        // SH = 0b01 is reserved.
        defmt::assert!(Descriptor::decode(Level::L3, 0x1000_0503).is_err());
        // The contiguous hint (bit 52, in the upper word) is never written by extmem-hw.
        defmt::assert!(Descriptor::decode(Level::L3, (1 << 52) | 0x1000_0403).is_err());
        // An OA bit below the 2 MiB block field is RES0.
        defmt::assert!(Descriptor::decode(Level::L2, 0x4020_1401).is_err());
        // An invalid descriptor with stray bits.
        defmt::assert!(Descriptor::decode(Level::L2, 0x1000).is_err());
        assert_same!(Descriptor::decode(Level::L2, 0), Ok(Descriptor::Invalid));
        // Output addresses beyond OA[47:12], or misaligned, do not encode.
        let leaf = |output| Descriptor::Leaf {
            output: PhysAddr::new(output),
            attrs: rw_attrs(),
        };
        defmt::assert_eq!(leaf(1 << 48).encode(Level::L3), None);
        defmt::assert_eq!(leaf(0x1800).encode(Level::L3), None);
        defmt::assert_eq!(leaf(0).encode(Level::L0), None);
    }

    #[test]
    fn alignment_and_addresses_use_checked_u64_arithmetic() {
        defmt::assert!(Alignment::new(0).is_none());
        defmt::assert!(Alignment::new(3).is_none());
        defmt::assert!(Alignment::new(1 << 32).is_some());
        defmt::assert_eq!(Alignment::new(1 << 63).map(Alignment::log2), Some(63));
        defmt::assert_eq!(Alignment::SIZE_1G.log2(), 30);
        let a = Alignment::SIZE_4K;
        defmt::assert_eq!(a.align_up(0x1_0000_2001), Some(0x1_0000_3000));
        defmt::assert_eq!(a.align_up(u64::MAX), None);
        defmt::assert_eq!(Alignment::SIZE_2M.align_down(0x1_0034_5678), 0x1_0020_0000);
        defmt::assert!(!Alignment::SIZE_1G.is_aligned(0x1_2000_0000));

        let va = GpuVa::new(u64::MAX - 0xfff);
        assert_same!(va.checked_add(0xfff), Some(GpuVa::new(u64::MAX)));
        assert_same!(va.checked_add(0x1000), None);
        assert_same!(GpuVa::ZERO.checked_sub(1), None);
        // A carry out of the low word.
        assert_same!(
            PhysAddr::new(0xffff_f000).checked_add(0x1000),
            Some(PhysAddr::new(0x1_0000_0000))
        );
        defmt::assert_eq!(
            PhysAddr::new(0x1_0000_5000).offset_from(PhysAddr::new(0xffff_f000)),
            Some(0x6000)
        );
        defmt::assert_eq!(
            PhysAddr::new(0x1000).offset_from(PhysAddr::new(0x5000)),
            None
        );
        assert_same!(
            HostVa::new(0x1234).align_up(Alignment::SIZE_4K),
            Some(HostVa::new(0x2000))
        );
        defmt::assert_eq!(extmem_hw::addr::range_end(0x1000, 0), None);
        defmt::assert_eq!(extmem_hw::addr::range_end(u64::MAX, 1), None);
        defmt::assert_eq!(
            extmem_hw::addr::range_end(0xffff_ffff, 1),
            Some(0x1_0000_0000)
        );
    }

    #[test]
    fn built_in_profiles_are_valid() {
        for p in profile::ALL {
            assert_same!(p.check(), Ok(()));
        }
        defmt::assert_eq!(MALI_G610.va_size(), 1 << 48);
        defmt::assert_eq!(MALI_G610.oa_size(), 1 << 40);
        assert_same!(VGPU.start_level(), Level::L0);
        defmt::assert!(!VGPU.page_sizes.contains(PageSize::Size1G));
        defmt::assert!(ADRENO_6XX.page_sizes.contains(PageSize::Size1G));
    }

    #[test]
    fn table_pool_hands_out_and_takes_back_pages() {
        let mut pool = TablePool::<2>::new(PhysAddr::new(0x1_0000_0000));
        let pool = pool.as_mut().expect("an aligned pool base");
        let a = pool.alloc_table().expect("page");
        let b = pool.alloc_table().expect("page");
        assert_same!(
            (a, b),
            (PhysAddr::new(0x1_0000_0000), PhysAddr::new(0x1_0000_1000))
        );
        assert_same!(pool.alloc_table(), None);
        pool.free_table(a);
        pool.free_table(a); // a double free is ignored
        defmt::assert_eq!(pool.live(), 1);
        defmt::assert_eq!(pool.peak(), 2);
        // Unaligned, or running past the end of the 64-bit address space.
        defmt::assert!(TablePool::<1>::new(PhysAddr::new(0x1800)).is_none());
        defmt::assert!(TablePool::<2>::new(PhysAddr::new(!0xfff_u64)).is_none());
    }

    #[test]
    fn mali_block_maps_translates_splits_and_unmaps() {
        let mut pool = Pool::new(POOL_BASE);
        let mut pt = table(&mut pool, &MALI_G610);
        // Above 4 GiB in both VA and PA.
        let va = 0x1_0020_0000;
        let pa = 0x2_8040_0000;
        pt.map(GpuVa::new(va), PhysAddr::new(pa), M2, rw())
            .expect("map a 2 MiB block");
        // Root, level 1 and level 2: one 2 MiB block, no level-3 table.
        defmt::assert_eq!(pt.table_pages(), 3);
        assert_same!(page_at(&pt, va + 0x1234), (pa + 0x1234, PageSize::Size2M));
        assert_same!(page_at(&pt, va + M2 - 1), (pa + M2 - 1, PageSize::Size2M));
        assert_same!(
            pt.translate(GpuVa::new(va + M2)),
            Err(TranslateError::NotMapped {
                va: GpuVa::new(va + M2)
            })
        );
        let t = pt.translate(GpuVa::new(va)).expect("mapped");
        assert_same!(t.attrs, rw().attrs());

        // Unmapping the first half splits the block into a level-3 table of pages.
        let inv = pt.unmap(GpuVa::new(va), M2 / 2).expect("unmap half");
        assert_same!((inv.va.get(), inv.size), (va, M2));
        defmt::assert_eq!(pt.table_pages(), 4);
        assert_same!(
            pt.translate(GpuVa::new(va)),
            Err(TranslateError::NotMapped { va: GpuVa::new(va) })
        );
        assert_same!(
            page_at(&pt, va + M2 / 2 + 0x10),
            (pa + M2 / 2 + 0x10, PageSize::Size4K)
        );
        let mut runs = pt.mappings();
        let run = runs.next().expect("one run").expect("no corruption");
        assert_same!(
            (run.va.get(), run.pa.get(), run.size),
            (va + M2 / 2, pa + M2 / 2, M2 / 2)
        );
        defmt::assert!(runs.next().is_none());

        // Unmapping the rest frees every table but the root.
        let _ = pt
            .unmap(GpuVa::new(va + M2 / 2), M2 / 2)
            .expect("unmap the rest");
        defmt::assert_eq!(pt.table_pages(), 1);
        defmt::assert!(pt.mappings().next().is_none());
        let pool = pt.destroy();
        defmt::assert_eq!(pool.live(), 0);
        defmt::assert_eq!(pool.peak(), 4);
    }

    #[test]
    fn adreno_1g_block_cut_at_a_4k_boundary_splits_twice() {
        let mut pool = Pool::new(POOL_BASE);
        let mut pt = table(&mut pool, &ADRENO_6XX);
        pt.map(GpuVa::new(G1), PhysAddr::new(G1), G1, rw())
            .expect("map a 1 GiB block");
        defmt::assert_eq!(pt.table_pages(), 2);
        assert_same!(page_at(&pt, 2 * G1 - 8), (2 * G1 - 8, PageSize::Size1G));
        let inv = pt
            .unmap(GpuVa::new(G1 + M2 + 0x1000), 0x2000)
            .expect("unmap two pages");
        assert_same!((inv.va.get(), inv.size), (G1, G1));
        // Root, level 1, the 1 GiB block split to 2 MiB, one 2 MiB block split to 4 KiB.
        defmt::assert_eq!(pt.table_pages(), 4);
        assert_same!(page_at(&pt, G1 + M2), (G1 + M2, PageSize::Size4K));
        assert_same!(
            page_at(&pt, G1 + M2 + 0x3000),
            (G1 + M2 + 0x3000, PageSize::Size4K)
        );
        assert_same!(page_at(&pt, G1 + 2 * M2), (G1 + 2 * M2, PageSize::Size2M));
        defmt::assert!(pt.translate(GpuVa::new(G1 + M2 + 0x1fff)).is_err());
        defmt::assert_eq!(pt.destroy().live(), 0);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_bad_value() {
        let mut pool = Pool::new(POOL_BASE);
        let mut pt = table(&mut pool, &MALI_G610);
        let va = GpuVa::new(0x1000);
        let pa = PhysAddr::new(0x1000);
        assert_same!(pt.map(va, pa, 0, rw()), Err(MapError::ZeroSize));
        assert_same!(
            pt.map(GpuVa::new(0x1800), pa, 0x1000, rw()),
            Err(MapError::MisalignedVa {
                va: GpuVa::new(0x1800)
            })
        );
        assert_same!(
            pt.map(va, PhysAddr::new(0x1_0000_0010), 0x1000, rw()),
            Err(MapError::MisalignedPa {
                pa: PhysAddr::new(0x1_0000_0010)
            })
        );
        assert_same!(
            pt.map(va, pa, 0x1001, rw()),
            Err(MapError::MisalignedSize { size: 0x1001 })
        );
        // Past the 48-bit VA space, and a size that wraps the 64-bit space.
        let top = GpuVa::new((1 << 48) - 0x1000);
        assert_same!(
            pt.map(top, pa, 0x2000, rw()),
            Err(MapError::VaOutOfRange {
                va: top,
                size: 0x2000,
                va_bits: 48
            })
        );
        assert_same!(
            pt.map(va, pa, !0xfff_u64, rw()),
            Err(MapError::VaOutOfRange {
                va,
                size: !0xfff_u64,
                va_bits: 48
            })
        );
        // Past the 40-bit output space.
        let high = PhysAddr::new((1 << 40) - 0x1000);
        assert_same!(
            pt.map(va, high, 0x2000, rw()),
            Err(MapError::PaOutOfRange {
                pa: high,
                size: 0x2000,
                oa_bits: 40
            })
        );
        // Overlapping an existing mapping.
        pt.map(GpuVa::new(0x3000), pa, 0x1000, rw()).expect("map");
        assert_same!(
            pt.map(va, pa, 0x4000, rw()),
            Err(MapError::AlreadyMapped {
                va: GpuVa::new(0x3000)
            })
        );
        assert_same!(pt.unmap(va, 0x1000), Err(UnmapError::NotMapped { va }));
        assert_same!(
            pt.unmap(GpuVa::new(0x3000), 0x2000),
            Err(UnmapError::NotMapped {
                va: GpuVa::new(0x4000)
            })
        );
        assert_same!(pt.unmap(va, 0), Err(UnmapError::ZeroSize));
        assert_same!(
            pt.unmap(GpuVa::new(0x3008), 0x1000),
            Err(UnmapError::MisalignedVa {
                va: GpuVa::new(0x3008)
            })
        );
        assert_same!(
            pt.unmap(va, 0x10),
            Err(UnmapError::MisalignedSize { size: 0x10 })
        );
        assert_same!(
            pt.translate(GpuVa::new(1 << 48)),
            Err(TranslateError::VaOutOfRange {
                va: GpuVa::new(1 << 48),
                va_bits: 48
            })
        );
        // The failed calls changed nothing.
        defmt::assert_eq!(pt.table_pages(), 4);
        assert_same!(page_at(&pt, 0x3000), (0x1000, PageSize::Size4K));
    }

    #[test]
    fn running_out_of_table_memory_changes_nothing() {
        // Root plus two tables: one 2 MiB block fits, a level-3 table after it does not.
        let mut pool = TablePool::<3>::new(PhysAddr::ZERO);
        let mut pt = table(&mut pool, &MALI_G610);
        pt.map(GpuVa::new(0), PhysAddr::new(0), M2, rw())
            .expect("the block fits");
        assert_same!(
            pt.map(GpuVa::new(M2), PhysAddr::new(M2), M2 + 0x1000, rw()),
            Err(MapError::OutOfTableMemory)
        );
        assert_same!(
            pt.map(GpuVa::new(1 << 40), PhysAddr::new(0), 0x1000, rw()),
            Err(MapError::OutOfTableMemory)
        );
        // Splitting the block needs a table too.
        assert_same!(
            pt.unmap(GpuVa::new(0x1000), 0x1000),
            Err(UnmapError::OutOfTableMemory)
        );
        defmt::assert_eq!(pt.table_pages(), 3);
        defmt::assert_eq!(pt.memory().live(), 3);
        assert_same!(page_at(&pt, 0x1000), (0x1000, PageSize::Size2M));
        // The map that failed part-way had mapped a 2 MiB block: it was rolled back.
        defmt::assert!(pt.translate(GpuVa::new(M2)).is_err());
        let mut runs = pt.mappings();
        let run = runs.next().expect("one run").expect("no corruption");
        assert_same!((run.va.get(), run.size), (0, M2));
        defmt::assert!(runs.next().is_none());
    }
}
