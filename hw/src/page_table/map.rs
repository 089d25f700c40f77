//! Mapping a physically contiguous range: [`PageTable::map`], the batched path with one run.

use core::convert::Infallible;

use crate::addr::{range_end, GpuVa, PhysAddr};
use crate::page_table::{
    BlockTables, MapError, MapFlags, MapRunsError, PageTable, Run, TableMemory,
};
use crate::profile::MIN_PAGE;

impl<M: TableMemory> PageTable<M> {
    /// Maps `[va, va + size)` to `[pa, pa + size)`, with 1 GiB and 2 MiB blocks wherever
    /// the profile allows them and VA, PA and size line up, 4 KiB pages elsewhere.
    pub fn map(
        &mut self,
        va: GpuVa,
        pa: PhysAddr,
        size: u64,
        flags: MapFlags,
    ) -> Result<(), MapError> {
        // VA first, then PA: the order of errors callers see.
        self.checked_va_range(va, size)?;
        if !pa.is_aligned(MIN_PAGE) {
            return Err(MapError::MisalignedPa { pa });
        }
        match range_end(pa.get(), size) {
            Some(pa_end) if pa_end <= 1u64 << self.oa_bits => {}
            _ => {
                return Err(MapError::PaOutOfRange {
                    pa,
                    size,
                    oa_bits: self.oa_bits,
                })
            }
        }
        // The batched path with a single run: the checks above already ruled out every
        // error that is about the run.
        let run = core::iter::once(Ok::<_, Infallible>(Run { pa, len: size }));
        self.map_runs(va, size, run, flags)
            .map_err(|error| match error {
                MapRunsError::Map(error) => error,
                MapRunsError::Source(never) => match never {},
                // Cannot happen: the one run covers the range.
                MapRunsError::RunsEnded { size, .. } => MapError::MisalignedSize { size },
            })
    }

    /// Fails with the first mapped address in `[va, end)`. Runs before anything is
    /// allocated, so the error does not depend on how much table memory is left.
    pub(super) fn check_vacant(&self, va: GpuVa, end: u64) -> Result<(), MapError> {
        // A map has nothing to free: what the check notes is dropped.
        let mut unused = BlockTables::NONE;
        match self
            .first_where(true, (self.root, self.start), (va.get(), end), &mut unused)
            .map_err(MapError::Corrupt)?
        {
            Some(mapped) => Err(MapError::AlreadyMapped {
                va: GpuVa::new(mapped),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{Access, AttrIndex, Shareability};
    use crate::page_size::PageSize;
    use crate::profile::{ADRENO_6XX, VGPU};
    use crate::table_pool::TablePool;
    use crate::test_cases::page_table::{page_at, rw, table, G1, M2};
    use std::vec::Vec;

    /// Room for every test here.
    type Pool = TablePool<16>;
    const POOL_BASE: PhysAddr = PhysAddr::new(0x100_0000);

    #[test]
    fn aligned_ranges_use_the_largest_block_the_profile_allows() {
        let mut pool = Pool::new(POOL_BASE);
        let mut mali = table(&mut pool, &VGPU);
        mali.map(GpuVa::new(G1), PhysAddr::new(4 * G1), G1, rw())
            .expect("map");
        // Mali has no 1 GiB blocks: 512 2 MiB blocks under one level-2 table.
        assert_eq!(
            page_at(&mali, G1 + 0x1234),
            (4 * G1 + 0x1234, PageSize::Size2M)
        );
        assert_eq!(mali.table_pages(), 3);

        let mut pool = Pool::new(POOL_BASE);
        let mut adreno = table(&mut pool, &ADRENO_6XX);
        adreno
            .map(GpuVa::new(G1), PhysAddr::new(4 * G1), G1, rw())
            .expect("map");
        assert_eq!(page_at(&adreno, 2 * G1 - 8), (5 * G1 - 8, PageSize::Size1G));
        assert_eq!(adreno.table_pages(), 2);

        // PA only 4 KiB aligned: pages throughout, even where VA and size allow blocks.
        let mut pool = Pool::new(POOL_BASE);
        let mut odd = table(&mut pool, &VGPU);
        odd.map(GpuVa::new(0), PhysAddr::new(0x1000), 2 * M2, rw())
            .expect("map");
        assert_eq!(page_at(&odd, M2), (M2 + 0x1000, PageSize::Size4K));
        assert_eq!(odd.table_pages(), 5);
    }

    #[test]
    fn a_range_mixes_pages_and_blocks_at_its_edges() {
        let mut pool = Pool::new(POOL_BASE);
        let mut pt = table(&mut pool, &VGPU);
        let va = M2 - 0x1000;
        pt.map(GpuVa::new(va), PhysAddr::new(va), M2 + 0x2000, rw())
            .expect("map");
        assert_eq!(page_at(&pt, va).1, PageSize::Size4K);
        assert_eq!(page_at(&pt, M2).1, PageSize::Size2M);
        assert_eq!(page_at(&pt, 2 * M2).1, PageSize::Size4K);
        let runs: Vec<_> = pt.mappings().collect::<Result<_, _>>().expect("walk");
        assert_eq!(
            runs.len(),
            1,
            "contiguous leaves merge into one run: {runs:?}"
        );
        assert_eq!((runs[0].va.get(), runs[0].size), (va, M2 + 0x2000));
    }

    #[test]
    fn flags_reach_the_leaf() {
        let mut pool = Pool::new(POOL_BASE);
        let mut pt = table(&mut pool, &VGPU);
        let flags = MapFlags {
            access: Access::ReadOnly,
            executable: true,
            attr_index: AttrIndex::new(2).expect("index"),
            shareability: Shareability::OuterShareable,
            privileged: false,
        };
        pt.map(GpuVa::new(0x5000), PhysAddr::new(0x9000), 0x1000, flags)
            .expect("map");
        let t = pt.translate(GpuVa::new(0x5000)).expect("mapped");
        assert_eq!(t.attrs, flags.attrs());
        assert_eq!(t.attrs.access, Access::ReadOnly);
        assert!(!t.attrs.execute_never && t.attrs.access_flag && t.attrs.unprivileged);
    }
}
