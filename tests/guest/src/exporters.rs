//! The dma-buf exporters the import tests use besides vgem, chosen by what the running kernel
//! offers.
//!
//! The tests want a udmabuf (memfd pages, seen through the memfd's own mapping too) and a
//! system dma-heap buffer. Debian's 6.1 kernel builds neither (`CONFIG_UDMABUF` and
//! `CONFIG_DMABUF_HEAPS` are unset), so where the device node is absent the tests import a
//! virtio-gpu dumb buffer instead: DRM's shmem helpers export it, as every kernel with
//! virtio-gpu does. Only absence is a reason to fall back; any other error opening the node
//! fails the check. Each choice says which exporter and why, and the check names it, so a
//! report never shows one exporter's pass under another's name. On kernels that have udmabuf
//! and the heaps (6.12 and later), the `guest-env` suite checks the nodes exist.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::dri::{self, NodeKind};
use crate::gbm_buffer::VIRTIO_GPU_DRIVER;
use crate::ktap::{io_op, CheckResult, Failure};
use crate::{dma_heap, udmabuf};

/// Where a dma-buf comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// `/dev/udmabuf`: a dma-buf over a sealed memfd.
    Udmabuf,
    /// `/dev/dma_heap/system`: pages from the page allocator.
    SystemHeap,
    /// A virtio-gpu dumb buffer exported by `PRIME_HANDLE_TO_FD` (shmem pages).
    VirtioGpu,
}

impl Exporter {
    /// Its name in a check's description.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udmabuf => "udmabuf",
            Self::SystemHeap => "system dma-heap buffer",
            Self::VirtioGpu => "virtio-gpu dumb buffer",
        }
    }

    /// The device node its driver creates, if it has one of its own (virtio-gpu's DRM nodes
    /// are found by driver name instead).
    fn node(self) -> Option<&'static str> {
        match self {
            Self::Udmabuf => Some("/dev/udmabuf"),
            Self::SystemHeap => Some("/dev/dma_heap/system"),
            Self::VirtioGpu => None,
        }
    }

    /// A new `size`-byte dma-buf from this exporter, read-write (so it maps writable).
    pub fn export(self, size: u64) -> CheckResult<Exported> {
        match self {
            Self::Udmabuf => {
                let (memfd, dma_buf) = io_op(
                    "a udmabuf over a sealed memfd",
                    udmabuf::over_sealed_memfd("extmem-export", size),
                )?;
                Ok(Exported {
                    dma_buf,
                    memfd: Some(memfd),
                })
            }
            Self::SystemHeap => {
                let heap = io_op(
                    "open(/dev/dma_heap/system)",
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/dma_heap/system"),
                )?;
                let dma_buf = io_op(
                    "DMA_HEAP_IOCTL_ALLOC",
                    dma_heap::allocate(heap.as_fd(), size),
                )?;
                Ok(Exported {
                    dma_buf,
                    memfd: None,
                })
            }
            Self::VirtioGpu => {
                let node = dri::open_by_driver(VIRTIO_GPU_DRIVER, NodeKind::Primary)
                    .map_err(|e| Failure::new("a virtio-gpu card* node", e.to_string()))?;
                // The dma-buf holds the buffer and its device; the node may close.
                Ok(Exported {
                    dma_buf: node.dumb_dma_buf(size)?,
                    memfd: None,
                })
            }
        }
    }
}

/// A dma-buf a test made, with what else shows its pages.
#[derive(Debug)]
pub struct Exported {
    /// The dma-buf.
    pub dma_buf: OwnedFd,
    /// The memfd under a udmabuf, whose mapping shows the same pages without
    /// `DMA_BUF_IOCTL_SYNC`; `None` where the dma-buf's own mapping is the CPU's view.
    pub memfd: Option<OwnedFd>,
}

/// The exporter a test uses and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The exporter.
    pub exporter: Exporter,
    /// Why it, where it is not the one the test wanted (`None` when it is).
    pub instead: Option<String>,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.instead {
            None => write!(f, "{}", self.exporter.name()),
            Some(why) => write!(f, "{} ({why})", self.exporter.name()),
        }
    }
}

/// `wanted` if the running kernel has its device node, else a virtio-gpu dumb buffer with the
/// reason; an error other than the node's absence is the caller's failure.
pub fn choose(wanted: Exporter) -> io::Result<Choice> {
    let Some(node) = wanted.node() else {
        return Ok(Choice {
            exporter: wanted,
            instead: None,
        });
    };
    choose_by(
        wanted,
        node,
        &kernel_release(),
        Path::new(node).try_exists(),
    )
}

/// [`choose`] given the release and what `try_exists` answered for the node.
fn choose_by(
    wanted: Exporter,
    node: &str,
    release: &str,
    exists: io::Result<bool>,
) -> io::Result<Choice> {
    match exists {
        Ok(true) => Ok(Choice {
            exporter: wanted,
            instead: None,
        }),
        Ok(false) => Ok(Choice {
            exporter: Exporter::VirtioGpu,
            instead: Some(format!(
                "in place of a {}: Linux {release} has no {node}",
                wanted.name()
            )),
        }),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("looking for {node}: {err}"),
        )),
    }
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_node_is_the_choice() -> io::Result<()> {
        let choice = choose_by(Exporter::Udmabuf, "/dev/udmabuf", "6.12.1", Ok(true))?;
        assert_eq!(choice.exporter, Exporter::Udmabuf);
        assert_eq!(choice.to_string(), "udmabuf");
        Ok(())
    }

    #[test]
    fn an_absent_node_falls_back_to_virtio_gpu_and_says_why() -> io::Result<()> {
        let choice = choose_by(
            Exporter::SystemHeap,
            "/dev/dma_heap/system",
            "6.1.0-57-amd64",
            Ok(false),
        )?;
        assert_eq!(choice.exporter, Exporter::VirtioGpu);
        assert_eq!(
            choice.to_string(),
            "virtio-gpu dumb buffer (in place of a system dma-heap buffer: Linux \
             6.1.0-57-amd64 has no /dev/dma_heap/system)"
        );
        Ok(())
    }

    #[test]
    fn another_error_is_not_a_reason_to_fall_back() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let answer = choose_by(Exporter::Udmabuf, "/dev/udmabuf", "7.3.4", Err(denied));
        assert_eq!(
            answer.map_err(|e| e.kind()),
            Err(io::ErrorKind::PermissionDenied)
        );
    }

    #[test]
    fn virtio_gpu_needs_no_node() -> io::Result<()> {
        assert_eq!(choose(Exporter::VirtioGpu)?.instead, None);
        Ok(())
    }
}
