//! Transfer commands translated into the memory manager's copy-engine [`Command`]s at
//! record time.
//!
//! A buffer is seen through its [`BufferSpan`]: the GPU VA of its first byte (memory VA +
//! bind offset) and its size. Every region is checked against the buffer with checked
//! arithmetic before it becomes a command; a violation is recorded as a [`RecordError`]
//! naming its VUID, which `vkEndCommandBuffer` returns (as Mesa's runtime does), and the
//! command is dropped, so an invalid command never reaches the kernel.

use ash::vk;
use extmem::exec::Command;
use extmem_hw::GpuVa;

use crate::image::ImageLayout;

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
    /// Staging memory for `vkCmdUpdateBuffer` could not be allocated or mapped (the
    /// memory manager's refusal, kept for `vkEndCommandBuffer`).
    OutOfMemory(extmem::Error),
    /// A handle that is not a live image (`VUID-vkCmdCopyBufferToImage-dstImage-parameter`).
    UnknownImage,
    /// The image lacks the transfer usage the copy needs
    /// (`VUID-vkCmdCopyBufferToImage-dstImage-00177`, `VUID-vkCmdCopyImageToBuffer-srcImage-00186`).
    ImageUsage,
    /// A layout other than `GENERAL` or the matching `TRANSFER_*_OPTIMAL`
    /// (`VUID-vkCmdCopyBufferToImage-dstImageLayout-01396`).
    ImageLayout(vk::ImageLayout),
    /// A subresource other than colour, level 0, layer 0, one layer
    /// (`VUID-vkCmdCopyBufferToImage-imageSubresource-07967`/`-07968`, `-aspectMask-00211`).
    ImageSubresource,
    /// A region outside the image, or empty (`VUID-vkCmdCopyBufferToImage-pRegions-06218`/
    /// `-06219`, `VUID-VkBufferImageCopy-imageExtent-06659`/`-06660`).
    ImageRegion {
        /// `imageOffset.x`.
        x: i32,
        /// `imageOffset.y`.
        y: i32,
        /// `imageExtent.width`.
        width: u32,
        /// `imageExtent.height`.
        height: u32,
    },
    /// `bufferOffset` not a multiple of 4 and of the texel size, or `bufferRowLength` /
    /// `bufferImageHeight` non-zero and below the extent
    /// (`VUID-vkCmdCopyBufferToImage-commandBuffer-07737`, `-dstImage-07975`,
    /// `VUID-VkBufferImageCopy-bufferRowLength-09101`, `-bufferImageHeight-09102`).
    BufferLayout {
        /// `bufferOffset`.
        offset: u64,
    },
    /// The region's bytes run past the end of the buffer
    /// (`VUID-vkCmdCopyBufferToImage-pRegions-00171`).
    BufferRange {
        /// `bufferOffset`.
        offset: u64,
        /// Bytes the region spans in the buffer.
        size: u64,
        /// The buffer's size.
        buffer: u64,
    },
    /// The image region and the buffer region share memory
    /// (`VUID-vkCmdCopyBufferToImage-pRegions-00173`).
    ImageOverlap,
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
            RecordError::UnknownImage => "VUID-vkCmdCopyBufferToImage-dstImage-parameter",
            RecordError::ImageUsage => "VUID-vkCmdCopyBufferToImage-dstImage-00177",
            RecordError::ImageLayout(_) => "VUID-vkCmdCopyBufferToImage-dstImageLayout-01396",
            RecordError::ImageSubresource => "VUID-vkCmdCopyBufferToImage-imageSubresource-07967",
            RecordError::ImageRegion { .. } => "VUID-vkCmdCopyBufferToImage-pRegions-06218",
            RecordError::BufferLayout { .. } => "VUID-vkCmdCopyBufferToImage-commandBuffer-07737",
            RecordError::BufferRange { .. } => "VUID-vkCmdCopyBufferToImage-pRegions-00171",
            RecordError::ImageOverlap => "VUID-vkCmdCopyBufferToImage-pRegions-00173",
        }
    }

    /// What `vkEndCommandBuffer` returns for it.
    pub fn result(self) -> vk::Result {
        match self {
            RecordError::OutOfMemory(e) => e.result(),
            RecordError::UnknownBuffer
            | RecordError::NotBound
            | RecordError::ZeroCopy
            | RecordError::SrcOutOfRange { .. }
            | RecordError::DstOutOfRange { .. }
            | RecordError::Overlap
            | RecordError::BadOffset { .. }
            | RecordError::BadSize { .. }
            | RecordError::NullPointer
            | RecordError::UnknownImage
            | RecordError::ImageUsage
            | RecordError::ImageLayout(_)
            | RecordError::ImageSubresource
            | RecordError::ImageRegion { .. }
            | RecordError::BufferLayout { .. }
            | RecordError::BufferRange { .. }
            | RecordError::ImageOverlap => vk::Result::ERROR_VALIDATION_FAILED_EXT,
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
) -> Result<Vec<Command>, RecordError> {
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
        cmds.push(Command::Copy {
            src: from,
            dst: to,
            size: r.size,
        });
    }
    if sources_overlap_destinations(&cmds) {
        return Err(RecordError::Overlap);
    }
    Ok(cmds)
}

/// Whether the union of the commands' sources overlaps the union of their destinations.
fn sources_overlap_destinations(cmds: &[Command]) -> bool {
    cmds.iter()
        .filter_map(Command::source)
        .any(|(src, src_size)| {
            cmds.iter().any(|b| {
                let (dst, dst_size) = b.destination();
                overlaps(src, src_size, dst, dst_size)
            })
        })
}

/// Where a bound linear image's bytes are on the GPU.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ImageSpan {
    /// GPU VA of the image's byte 0 (memory VA + bind offset).
    pub va: GpuVa,
    /// Its layout.
    pub layout: ImageLayout,
}

/// Which way a buffer-image copy goes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// `vkCmdCopyBufferToImage`.
    BufferToImage,
    /// `vkCmdCopyImageToBuffer`.
    ImageToBuffer,
}

/// `vkCmdCopyBufferToImage` / `vkCmdCopyImageToBuffer`: one COPY per image row, merged
/// where consecutive rows are contiguous on both sides (a tightly packed buffer and an
/// image whose rows need no padding make one COPY). The image is in `layout`.
pub fn buffer_image_copy(
    buffer: BufferSpan,
    image: ImageSpan,
    layout: vk::ImageLayout,
    regions: &[vk::BufferImageCopy],
    direction: Direction,
) -> Result<Vec<Command>, RecordError> {
    let (usage, transfer_layout) = match direction {
        Direction::BufferToImage => (
            vk::ImageUsageFlags::TRANSFER_DST,
            vk::ImageLayout::TRANSFER_DST_OPTIMAL,
        ),
        Direction::ImageToBuffer => (
            vk::ImageUsageFlags::TRANSFER_SRC,
            vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
        ),
    };
    if !image.layout.usage.contains(usage) {
        return Err(RecordError::ImageUsage);
    }
    if layout != vk::ImageLayout::GENERAL && layout != transfer_layout {
        return Err(RecordError::ImageLayout(layout));
    }
    let mut cmds: Vec<Command> = Vec::new();
    for r in regions {
        for (buffer_va, image_va, size) in region_rows(buffer, image, r)? {
            let (src, dst) = match direction {
                Direction::BufferToImage => (buffer_va, image_va),
                Direction::ImageToBuffer => (image_va, buffer_va),
            };
            match cmds.last_mut() {
                Some(Command::Copy {
                    src: last_src,
                    dst: last_dst,
                    size: last_size,
                }) if last_src.checked_add(*last_size) == Some(src)
                    && last_dst.checked_add(*last_size) == Some(dst) =>
                {
                    *last_size += size;
                }
                _ => cmds.push(Command::Copy { src, dst, size }),
            }
        }
    }
    if sources_overlap_destinations(&cmds) {
        return Err(RecordError::ImageOverlap);
    }
    Ok(cmds)
}

/// The rows of one region: (buffer VA, image VA, bytes) each, after checking the region
/// against the image and the buffer.
fn region_rows(
    buffer: BufferSpan,
    image: ImageSpan,
    r: &vk::BufferImageCopy,
) -> Result<Vec<(GpuVa, GpuVa, u64)>, RecordError> {
    let sub = r.image_subresource;
    if sub.aspect_mask != vk::ImageAspectFlags::COLOR
        || sub.mip_level != 0
        || sub.base_array_layer != 0
        || sub.layer_count != 1
    {
        return Err(RecordError::ImageSubresource);
    }
    let l = image.layout;
    let (o, e) = (r.image_offset, r.image_extent);
    let bad_region = RecordError::ImageRegion {
        x: o.x,
        y: o.y,
        width: e.width,
        height: e.height,
    };
    let (Ok(x), Ok(y)) = (u32::try_from(o.x), u32::try_from(o.y)) else {
        return Err(bad_region);
    };
    let inside = |start: u32, len: u32, limit: u32| {
        len > 0 && start.checked_add(len).is_some_and(|end| end <= limit)
    };
    if o.z != 0 || e.depth != 1 || !inside(x, e.width, l.width) || !inside(y, e.height, l.height) {
        return Err(bad_region);
    }
    let bad_layout = RecordError::BufferLayout {
        offset: r.buffer_offset,
    };
    let row_length = match r.buffer_row_length {
        0 => e.width,
        n if n >= e.width => n,
        _ => return Err(bad_layout),
    };
    if (r.buffer_image_height != 0 && r.buffer_image_height < e.height)
        || r.buffer_offset % 4 != 0
        || r.buffer_offset % l.texel != 0
    {
        return Err(bad_layout);
    }
    let row_bytes = u64::from(e.width) * l.texel;
    let buffer_pitch = u64::from(row_length) * l.texel;
    // The last row ends `row_bytes` after its start, not a whole pitch.
    let span = u64::from(e.height - 1)
        .checked_mul(buffer_pitch)
        .and_then(|rows| rows.checked_add(row_bytes));
    let start = span
        .and_then(|span| sub_range(buffer, r.buffer_offset, span))
        .ok_or(RecordError::BufferRange {
            offset: r.buffer_offset,
            size: span.unwrap_or(u64::MAX),
            buffer: buffer.size,
        })?;
    (0..u64::from(e.height))
        .map(|row| {
            // Inside the buffer (checked above) and the image (rows and columns checked
            // against its extent, whose bytes it holds): no overflow.
            let buffer_va = start.checked_add(row * buffer_pitch);
            let image_offset = (u64::from(y) + row) * l.row_pitch + u64::from(x) * l.texel;
            let image_va = image.va.checked_add(image_offset);
            buffer_va
                .zip(image_va)
                .map(|(b, i)| (b, i, row_bytes))
                .ok_or(bad_region)
        })
        .collect()
}

/// `vkCmdFillBuffer`: one FILL. `VK_WHOLE_SIZE` fills to the end of the buffer, rounded
/// down to a multiple of 4; `None` when that leaves nothing to do.
pub fn fill(
    dst: BufferSpan,
    offset: u64,
    size: u64,
    data: u32,
) -> Result<Option<Command>, RecordError> {
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
    Ok(Some(Command::Fill {
        dst: to,
        size,
        value: data,
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
pub fn copy_from_staging(staging: GpuVa, dst: GpuVa, size: u64) -> Command {
    Command::Copy {
        src: staging,
        dst,
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

    fn copy_cmd(src: u64, dst: u64, size: u64) -> Command {
        Command::Copy {
            src: GpuVa::new(src),
            dst: GpuVa::new(dst),
            size,
        }
    }

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
                copy_cmd(0x20_0010, 0x40_0120, 0x30),
                copy_cmd(0x20_0ff0, 0x40_0100, 0x10),
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
            Ok(Some(Command::Fill {
                dst: GpuVa::new(0x40_0104),
                size: 8,
                value: 0xabcd,
            }))
        );
        let odd = BufferSpan {
            va: GpuVa::new(0x1000),
            size: 0x13,
        };
        assert_eq!(
            fill(odd, 0, vk::WHOLE_SIZE, 7).map(|c| c.map(|c| c.destination().1)),
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
            copy_from_staging(GpuVa::new(0x10), GpuVa::new(0x20), 4),
            copy_cmd(0x10, 0x20, 4)
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

    fn image(width: u32, height: u32) -> ImageSpan {
        let query = crate::image::ImageQuery {
            format: vk::Format::R8G8B8A8_UNORM,
            ty: vk::ImageType::TYPE_2D,
            tiling: vk::ImageTiling::LINEAR,
            usage: crate::image::USAGE,
            flags: vk::ImageCreateFlags::empty(),
        };
        let extent = vk::Extent3D {
            width,
            height,
            depth: 1,
        };
        let one = (1, 1, vk::SampleCountFlags::TYPE_1);
        let layout = ImageLayout::new(&query, extent, one, vk::ImageLayout::UNDEFINED, 1 << 32)
            .unwrap_or_else(|e| panic!("{e:?}"));
        ImageSpan {
            va: GpuVa::new(0x100_0000),
            layout,
        }
    }

    fn image_region(x: i32, y: i32, width: u32, height: u32) -> vk::BufferImageCopy {
        vk::BufferImageCopy {
            buffer_offset: 0,
            buffer_row_length: 0,
            buffer_image_height: 0,
            image_subresource: vk::ImageSubresourceLayers {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                mip_level: 0,
                base_array_layer: 0,
                layer_count: 1,
            },
            image_offset: vk::Offset3D { x, y, z: 0 },
            image_extent: vk::Extent3D {
                width,
                height,
                depth: 1,
            },
        }
    }

    const BUF: BufferSpan = BufferSpan {
        va: GpuVa::new(0x20_0000),
        size: 0x10000,
    };
    const GENERAL: vk::ImageLayout = vk::ImageLayout::GENERAL;

    #[test]
    fn packed_rows_make_one_copy_and_padded_rows_one_each() {
        // 16 RGBA texels are 64 bytes: no row padding, one COPY for the whole image.
        let packed = image(16, 4);
        let cmds = buffer_image_copy(
            BUF,
            packed,
            GENERAL,
            &[image_region(0, 0, 16, 4)],
            Direction::BufferToImage,
        );
        assert_eq!(cmds, Ok(vec![copy_cmd(0x20_0000, 0x100_0000, 256)]));
        // 33 texels are 132 bytes in rows of 192: a COPY per row, at the row pitch.
        let padded = image(33, 3);
        let cmds = buffer_image_copy(
            BUF,
            padded,
            vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
            &[image_region(0, 0, 33, 3)],
            Direction::ImageToBuffer,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            cmds,
            (0..3)
                .map(|row| copy_cmd(0x100_0000 + row * 192, 0x20_0000 + row * 132, 132))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_sub_rectangle_honours_offsets_and_the_buffer_row_length() {
        let img = image(33, 8);
        let region = vk::BufferImageCopy {
            buffer_offset: 0x40,
            buffer_row_length: 10,
            ..image_region(2, 5, 3, 2)
        };
        let cmds = buffer_image_copy(BUF, img, GENERAL, &[region], Direction::BufferToImage);
        assert_eq!(
            cmds,
            Ok(vec![
                copy_cmd(0x20_0040, 0x100_0000 + 5 * 192 + 8, 12),
                copy_cmd(0x20_0040 + 40, 0x100_0000 + 6 * 192 + 8, 12),
            ])
        );
    }

    #[test]
    fn bad_buffer_image_copies_are_refused_with_their_reason() {
        let img = image(8, 8);
        let copy = |layout, r: vk::BufferImageCopy| {
            buffer_image_copy(BUF, img, layout, &[r], Direction::BufferToImage)
        };
        let ok = image_region(0, 0, 8, 8);
        assert!(copy(GENERAL, ok).is_ok());
        assert_eq!(
            copy(vk::ImageLayout::TRANSFER_SRC_OPTIMAL, ok),
            Err(RecordError::ImageLayout(
                vk::ImageLayout::TRANSFER_SRC_OPTIMAL
            ))
        );
        for (x, y, w, h) in [(0, 0, 0, 8), (1, 0, 8, 8), (0, 7, 8, 2), (-1, 0, 1, 1)] {
            assert!(
                matches!(
                    copy(GENERAL, image_region(x, y, w, h)),
                    Err(RecordError::ImageRegion { .. })
                ),
                "{x} {y} {w} {h}"
            );
        }
        let mut layer = ok;
        layer.image_subresource.base_array_layer = 1;
        assert_eq!(copy(GENERAL, layer), Err(RecordError::ImageSubresource));
        for bad in [
            vk::BufferImageCopy {
                buffer_offset: 2,
                ..ok
            },
            vk::BufferImageCopy {
                buffer_row_length: 7,
                ..ok
            },
            vk::BufferImageCopy {
                buffer_image_height: 7,
                ..ok
            },
        ] {
            assert!(matches!(
                copy(GENERAL, bad),
                Err(RecordError::BufferLayout { .. })
            ));
        }
        assert_eq!(
            copy(
                GENERAL,
                vk::BufferImageCopy {
                    buffer_offset: 0xff04,
                    ..ok
                }
            ),
            Err(RecordError::BufferRange {
                offset: 0xff04,
                size: 256,
                buffer: 0x10000
            })
        );
        // The buffer lies inside the image's memory.
        let aliased = BufferSpan {
            va: img.va,
            size: 0x100,
        };
        assert_eq!(
            buffer_image_copy(
                aliased,
                img,
                GENERAL,
                &[image_region(0, 0, 8, 2)],
                Direction::BufferToImage
            ),
            Err(RecordError::ImageOverlap)
        );
        let read_only = ImageSpan {
            layout: ImageLayout {
                usage: vk::ImageUsageFlags::TRANSFER_SRC,
                ..img.layout
            },
            ..img
        };
        assert_eq!(
            buffer_image_copy(BUF, read_only, GENERAL, &[ok], Direction::BufferToImage),
            Err(RecordError::ImageUsage)
        );
    }

    #[test]
    fn every_record_error_maps_to_an_error_result() {
        for e in [
            RecordError::UnknownBuffer,
            RecordError::NotBound,
            RecordError::ZeroCopy,
            RecordError::Overlap,
            RecordError::NullPointer,
            RecordError::OutOfMemory(extmem::Error::OutOfDeviceMemory),
        ] {
            assert!(e.result().as_raw() < 0);
            assert!(!e.vuid().is_empty());
        }
    }
}
