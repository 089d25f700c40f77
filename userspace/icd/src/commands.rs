//! Transfer commands translated into copy-engine [`Cmd`]s at record time.
//!
//! A buffer is seen through its [`BufferSpan`]: the GPU VA of its first byte (memory VA +
//! bind offset) and its size. Every region is checked against the buffer with checked
//! arithmetic before it becomes a command; a violation is recorded as a [`RecordError`]
//! naming its VUID, which `vkEndCommandBuffer` returns (as Mesa's runtime does), and the
//! command is dropped, so an invalid command never reaches the kernel.

use ash::vk;
use extmem_hw::GpuVa;
use extmem_uapi::{Cmd, CmdOp};

/// Most bytes one `vkCmdUpdateBuffer` may carry (`VUID-vkCmdUpdateBuffer-dataSize-00037`).
pub const MAX_UPDATE_BYTES: u64 = 65536;

/// Where a bound buffer's bytes are on the GPU.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BufferSpan {
    /// GPU VA of byte 0 of the buffer.
    pub va: GpuVa,
    /// `VkBufferCreateInfo::size`.
    pub size: u64,
}

/// A Valid Usage rule a recorded command broke.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RecordError {
    /// A handle that is not a live buffer (`VUID-vkCmdCopyBuffer-srcBuffer-parameter` and
    /// the like).
    UnknownBuffer,
    /// The buffer has no memory bound (`VUID-vkCmdCopyBuffer-srcBuffer-00119` and the like).
    NotBound,
    /// A copy region of size 0 (`VUID-VkBufferCopy-size-01988`).
    ZeroCopy,
    /// A copy region outside the source (`VUID-vkCmdCopyBuffer-srcOffset-00113`/`-size-00115`).
    SrcOutOfRange {
        /// The region's offset.
        offset: u64,
        /// The region's size.
        size: u64,
        /// The buffer's size.
        buffer: u64,
    },
    /// A copy region outside the destination (`-dstOffset-00114`/`-size-00116`).
    DstOutOfRange {
        /// The region's offset.
        offset: u64,
        /// The region's size.
        size: u64,
        /// The buffer's size.
        buffer: u64,
    },
    /// Source and destination regions overlap in memory (`VUID-vkCmdCopyBuffer-pRegions-00117`).
    Overlap,
    /// Fill or update offset not a multiple of 4, or past the end
    /// (`VUID-vkCmdFillBuffer-dstOffset-00024`/`-00025`, `VUID-vkCmdUpdateBuffer-dstOffset-00032`/`-00036`).
    BadOffset {
        /// The offset.
        offset: u64,
        /// The buffer's size.
        buffer: u64,
    },
    /// Fill or update size zero, not a multiple of 4, too large or past the end
    /// (`VUID-vkCmdFillBuffer-size-00026`/`-00027`/`-00028`,
    /// `VUID-vkCmdUpdateBuffer-dataSize-00033`/`-00037`/`-00038`).
    BadSize {
        /// The size.
        size: u64,
        /// The buffer's size.
        buffer: u64,
    },
    /// A null `pRegions` or `pData` with a non-zero count (`-pRegions-parameter`, `-pData-parameter`).
    NullPointer,
    /// Staging memory for `vkCmdUpdateBuffer` could not be allocated.
    OutOfMemory(vk::Result),
}

impl RecordError {
    /// The VUID (or family of VUIDs) the error is about.
    pub fn vuid(self) -> &'static str {
        match self {
            RecordError::UnknownBuffer => "VUID-vkCmdCopyBuffer-srcBuffer-parameter",
            RecordError::NotBound => "VUID-vkCmdCopyBuffer-srcBuffer-00119",
            RecordError::ZeroCopy => "VUID-VkBufferCopy-size-01988",
            RecordError::SrcOutOfRange { .. } => "VUID-vkCmdCopyBuffer-srcOffset-00113",
            RecordError::DstOutOfRange { .. } => "VUID-vkCmdCopyBuffer-dstOffset-00114",
            RecordError::Overlap => "VUID-vkCmdCopyBuffer-pRegions-00117",
            RecordError::BadOffset { .. } => "VUID-vkCmdFillBuffer-dstOffset-00024",
            RecordError::BadSize { .. } => "VUID-vkCmdFillBuffer-size-00026",
            RecordError::NullPointer => "VUID-vkCmdCopyBuffer-pRegions-parameter",
            RecordError::OutOfMemory(_) => "(not a VUID: out of memory)",
        }
    }

    /// What `vkEndCommandBuffer` returns for it.
    pub fn result(self) -> vk::Result {
        match self {
            RecordError::OutOfMemory(result) => result,
            RecordError::UnknownBuffer
            | RecordError::NotBound
            | RecordError::ZeroCopy
            | RecordError::SrcOutOfRange { .. }
            | RecordError::DstOutOfRange { .. }
            | RecordError::Overlap
            | RecordError::BadOffset { .. }
            | RecordError::BadSize { .. }
            | RecordError::NullPointer => vk::Result::ERROR_VALIDATION_FAILED_EXT,
        }
    }
}

/// `[offset, offset + size)` of `span` as a GPU VA, if it lies inside the buffer.
fn sub_range(span: BufferSpan, offset: u64, size: u64) -> Option<GpuVa> {
    let end = offset.checked_add(size)?;
    if end > span.size {
        return None;
    }
    span.va.checked_add(offset)
}

/// Whether two VA ranges share a byte.
fn overlaps(a: GpuVa, a_size: u64, b: GpuVa, b_size: u64) -> bool {
    let a_end = a.get().saturating_add(a_size);
    let b_end = b.get().saturating_add(b_size);
    a.get() < b_end && b.get() < a_end
}

/// `vkCmdCopyBuffer`: one COPY per region.
pub fn copy(
    src: BufferSpan,
    dst: BufferSpan,
    regions: &[vk::BufferCopy],
) -> Result<Vec<Cmd>, RecordError> {
    let mut cmds = Vec::with_capacity(regions.len());
    for r in regions {
        if r.size == 0 {
            return Err(RecordError::ZeroCopy);
        }
        let from = sub_range(src, r.src_offset, r.size).ok_or(RecordError::SrcOutOfRange {
            offset: r.src_offset,
            size: r.size,
            buffer: src.size,
        })?;
        let to = sub_range(dst, r.dst_offset, r.size).ok_or(RecordError::DstOutOfRange {
            offset: r.dst_offset,
            size: r.size,
            buffer: dst.size,
        })?;
        cmds.push(Cmd {
            op: CmdOp::COPY,
            value: 0,
            src: from.get(),
            dst: to.get(),
            size: r.size,
        });
    }
    // The union of sources must not overlap the union of destinations.
    for a in &cmds {
        for b in &cmds {
            if overlaps(GpuVa::new(a.src), a.size, GpuVa::new(b.dst), b.size) {
                return Err(RecordError::Overlap);
            }
        }
    }
    Ok(cmds)
}

/// `vkCmdFillBuffer`: one FILL. `VK_WHOLE_SIZE` fills to the end of the buffer, rounded
/// down to a multiple of 4; `None` when that leaves nothing to do.
pub fn fill(
    dst: BufferSpan,
    offset: u64,
    size: u64,
    data: u32,
) -> Result<Option<Cmd>, RecordError> {
    if offset % 4 != 0 || offset >= dst.size {
        return Err(RecordError::BadOffset {
            offset,
            buffer: dst.size,
        });
    }
    let size = if size == vk::WHOLE_SIZE {
        let rest = (dst.size - offset) & !3;
        if rest == 0 {
            return Ok(None);
        }
        rest
    } else {
        size
    };
    let bad_size = RecordError::BadSize {
        size,
        buffer: dst.size,
    };
    if size == 0 || size % 4 != 0 {
        return Err(bad_size);
    }
    let to = sub_range(dst, offset, size).ok_or(bad_size)?;
    Ok(Some(Cmd {
        op: CmdOp::FILL,
        value: data,
        src: 0,
        dst: to.get(),
        size,
    }))
}

/// `vkCmdUpdateBuffer`: checks the destination; the caller copies the data into staging
/// memory and records `copy_from_staging`.
pub fn update_target(dst: BufferSpan, offset: u64, size: u64) -> Result<GpuVa, RecordError> {
    if offset % 4 != 0 || offset >= dst.size {
        return Err(RecordError::BadOffset {
            offset,
            buffer: dst.size,
        });
    }
    let bad_size = RecordError::BadSize {
        size,
        buffer: dst.size,
    };
    if size == 0 || size % 4 != 0 || size > MAX_UPDATE_BYTES {
        return Err(bad_size);
    }
    sub_range(dst, offset, size).ok_or(bad_size)
}

/// The COPY that moves update data from staging memory at `staging` to `dst`.
pub fn copy_from_staging(staging: GpuVa, dst: GpuVa, size: u64) -> Cmd {
    Cmd {
        op: CmdOp::COPY,
        value: 0,
        src: staging.get(),
        dst: dst.get(),
        size,
    }
}

/// Sub-allocates update data in fixed-size staging chunks (one GEM object each).
///
/// # Invariants
/// `used <= CHUNK` for the current (last) chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct StagingCursor {
    /// Bytes used in the current chunk.
    pub used: u64,
}

impl StagingCursor {
    /// Size of one staging chunk: the largest update, so any update fits in a fresh one.
    pub const CHUNK: u64 = MAX_UPDATE_BYTES;

    /// Where `size` bytes go in the current chunk, or `None` if a new chunk is needed.
    /// Updates are 4-byte multiples, so every offset stays 4-byte aligned.
    pub fn place(&mut self, size: u64) -> Option<u64> {
        let end = self.used.checked_add(size)?;
        if end > Self::CHUNK {
            return None;
        }
        let at = self.used;
        self.used = end;
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: BufferSpan = BufferSpan {
        va: GpuVa::new(0x20_0000),
        size: 0x1000,
    };
    const DST: BufferSpan = BufferSpan {
        va: GpuVa::new(0x40_0100),
        size: 0x800,
    };

    fn region(src_offset: u64, dst_offset: u64, size: u64) -> vk::BufferCopy {
        vk::BufferCopy {
            src_offset,
            dst_offset,
            size,
        }
    }

    #[test]
    fn copies_become_one_cmd_per_region_at_buffer_va_plus_offset() {
        let cmds = copy(
            SRC,
            DST,
            &[region(0x10, 0x20, 0x30), region(0xff0, 0, 0x10)],
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            cmds,
            vec![
                Cmd {
                    op: CmdOp::COPY,
                    value: 0,
                    src: 0x20_0010,
                    dst: 0x40_0120,
                    size: 0x30
                },
                Cmd {
                    op: CmdOp::COPY,
                    value: 0,
                    src: 0x20_0ff0,
                    dst: 0x40_0100,
                    size: 0x10
                },
            ]
        );
        assert_eq!(copy(SRC, DST, &[]), Ok(vec![]));
    }

    #[test]
    fn copies_outside_a_buffer_or_overlapping_are_refused() {
        assert_eq!(
            copy(SRC, DST, &[region(0xff0, 0, 0x11)]),
            Err(RecordError::SrcOutOfRange {
                offset: 0xff0,
                size: 0x11,
                buffer: 0x1000
            })
        );
        assert!(matches!(
            copy(SRC, DST, &[region(0, 0x7ff, 2)]),
            Err(RecordError::DstOutOfRange { .. })
        ));
        assert!(matches!(
            copy(SRC, DST, &[region(u64::MAX, 0, 2)]),
            Err(RecordError::SrcOutOfRange { .. })
        ));
        assert_eq!(
            copy(SRC, DST, &[region(0, 0, 0)]),
            Err(RecordError::ZeroCopy)
        );
        // The same buffer on both sides: disjoint is fine, overlapping is not.
        assert!(copy(SRC, SRC, &[region(0, 0x100, 0x100)]).is_ok());
        assert_eq!(
            copy(SRC, SRC, &[region(0, 0x80, 0x100)]),
            Err(RecordError::Overlap)
        );
        // Overlap between different regions counts too.
        assert_eq!(
            copy(SRC, SRC, &[region(0, 0x800, 0x10), region(0x808, 0x400, 8)]),
            Err(RecordError::Overlap)
        );
    }

    #[test]
    fn fills_check_alignment_and_whole_size_rounds_down() {
        assert_eq!(
            fill(DST, 4, 8, 0xabcd),
            Ok(Some(Cmd {
                op: CmdOp::FILL,
                value: 0xabcd,
                src: 0,
                dst: 0x40_0104,
                size: 8
            }))
        );
        let odd = BufferSpan {
            va: GpuVa::new(0x1000),
            size: 0x13,
        };
        assert_eq!(
            fill(odd, 0, vk::WHOLE_SIZE, 7).map(|c| c.map(|c| c.size)),
            Ok(Some(0x10))
        );
        assert_eq!(fill(odd, 0x10, vk::WHOLE_SIZE, 7), Ok(None));
        assert!(matches!(
            fill(DST, 2, 4, 0),
            Err(RecordError::BadOffset { .. })
        ));
        assert!(matches!(
            fill(DST, 0x800, 4, 0),
            Err(RecordError::BadOffset { .. })
        ));
        assert!(matches!(
            fill(DST, 0, 6, 0),
            Err(RecordError::BadSize { .. })
        ));
        assert!(matches!(
            fill(DST, 0, 0, 0),
            Err(RecordError::BadSize { .. })
        ));
        assert!(matches!(
            fill(DST, 0x7fc, 8, 0),
            Err(RecordError::BadSize { .. })
        ));
    }

    #[test]
    fn updates_check_size_limit_and_range() {
        assert_eq!(update_target(DST, 0x10, 0x20), Ok(GpuVa::new(0x40_0110)));
        let big = BufferSpan {
            va: GpuVa::new(0),
            size: 1 << 20,
        };
        assert!(update_target(big, 0, MAX_UPDATE_BYTES).is_ok());
        assert!(matches!(
            update_target(big, 0, MAX_UPDATE_BYTES + 4),
            Err(RecordError::BadSize { .. })
        ));
        assert!(matches!(
            update_target(DST, 0x7fc, 8),
            Err(RecordError::BadSize { .. })
        ));
        assert!(matches!(
            update_target(DST, 1, 4),
            Err(RecordError::BadOffset { .. })
        ));
        assert_eq!(
            copy_from_staging(GpuVa::new(0x10), GpuVa::new(0x20), 4).src,
            0x10
        );
    }

    #[test]
    fn staging_cursor_packs_updates_into_chunks() {
        let mut cursor = StagingCursor::default();
        assert_eq!(cursor.place(0x8000), Some(0));
        assert_eq!(cursor.place(0x8000), Some(0x8000));
        assert_eq!(cursor.place(4), None);
        assert_eq!(cursor.used, StagingCursor::CHUNK);
    }

    #[test]
    fn every_record_error_maps_to_an_error_result() {
        for e in [
            RecordError::UnknownBuffer,
            RecordError::NotBound,
            RecordError::ZeroCopy,
            RecordError::Overlap,
            RecordError::NullPointer,
            RecordError::OutOfMemory(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY),
        ] {
            assert!(e.result().as_raw() < 0);
            assert!(!e.vuid().is_empty());
        }
    }
}
