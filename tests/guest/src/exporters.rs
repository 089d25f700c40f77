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

/// The variable the runner's plan sets to the Kconfig symbols the booted kernel is built
/// without (`qemu/src/guest_plan.rs`, `KERNEL_WITHOUT_VAR`).
pub const KERNEL_WITHOUT_VAR: &str = "EXTMEM_KERNEL_WITHOUT";

impl Exporter {
    /// The Kconfig symbol that gives the exporter's device node, if it needs one.
    fn config(self) -> Option<&'static str> {
        match self {
            Self::Udmabuf => Some("CONFIG_UDMABUF"),
            Self::SystemHeap => Some("CONFIG_DMABUF_HEAPS_SYSTEM"),
            Self::VirtioGpu => None,
        }
    }
}

/// `wanted`, unless the runner says the booted kernel is built without it
/// ([`KERNEL_WITHOUT_VAR`]); then `instead`, with the reason. What the kernel is expected to
/// have decides, not what it shows: an expected node that is missing fails where the flow
/// opens it, and a node present on a kernel declared without it is an error here (the
/// runner's feature table is wrong). An unset variable is an error too.
pub fn choose_expected(wanted: Exporter, instead: Exporter) -> io::Result<Choice> {
    let without = std::env::var(KERNEL_WITHOUT_VAR).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{KERNEL_WITHOUT_VAR} (set by the runner's plan): {e}"),
        )
    })?;
    let exists = match wanted.node() {
        Some(node) => Path::new(node).try_exists(),
        None => Ok(false),
    };
    choose_expected_by(wanted, instead, &without, &kernel_release(), exists)
}

/// [`choose_expected`] given the variable's value, the release and what `try_exists`
/// answered for `wanted`'s node.
fn choose_expected_by(
    wanted: Exporter,
    instead: Exporter,
    without: &str,
    release: &str,
    exists: io::Result<bool>,
) -> io::Result<Choice> {
    let (Some(config), Some(node)) = (wanted.config(), wanted.node()) else {
        return Ok(Choice {
            exporter: wanted,
            instead: None,
        });
    };
    if !without.split(',').any(|symbol| symbol == config) {
        return Ok(Choice {
            exporter: wanted,
            instead: None,
        });
    }
    match exists {
        Ok(false) => Ok(Choice {
            exporter: instead,
            instead: Some(format!(
                "in place of a {}: Linux {release} is built without {config}, so it has no {node}",
                wanted.name()
            )),
        }),
        Ok(true) => Err(io::Error::other(format!(
            "the runner says Linux {release} is built without {config}, yet {node} exists"
        ))),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("looking for {node}: {err}"),
        )),
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

    const ARM64_WITHOUT: &str = "CONFIG_DMABUF_HEAPS_SYSTEM";

    #[test]
    fn an_expected_exporter_is_chosen_even_when_its_node_is_missing() -> io::Result<()> {
        // Its flow then fails opening the node: a kernel that should have it must not pass.
        let choice = choose_expected_by(
            Exporter::Udmabuf,
            Exporter::VirtioGpu,
            ARM64_WITHOUT,
            "6.12.1",
            Ok(false),
        )?;
        assert_eq!(choice.exporter, Exporter::Udmabuf);
        assert_eq!(choice.instead, None);
        Ok(())
    }

    #[test]
    fn a_declared_absent_exporter_is_substituted_and_says_why() -> io::Result<()> {
        let choice = choose_expected_by(
            Exporter::SystemHeap,
            Exporter::Udmabuf,
            "CONFIG_UDMABUF_X,CONFIG_DMABUF_HEAPS_SYSTEM",
            "6.12.57+deb12-arm64",
            Ok(false),
        )?;
        assert_eq!(choice.exporter, Exporter::Udmabuf);
        assert_eq!(
            choice.to_string(),
            "udmabuf (in place of a system dma-heap buffer: Linux 6.12.57+deb12-arm64 is built \
             without CONFIG_DMABUF_HEAPS_SYSTEM, so it has no /dev/dma_heap/system)"
        );
        Ok(())
    }

    #[test]
    fn a_declared_absent_node_that_exists_is_an_error() {
        let answer = choose_expected_by(
            Exporter::SystemHeap,
            Exporter::VirtioGpu,
            ARM64_WITHOUT,
            "6.12.1",
            Ok(true),
        );
        let message = answer.map_err(|e| e.to_string());
        assert_eq!(
            message,
            Err(
                "the runner says Linux 6.12.1 is built without CONFIG_DMABUF_HEAPS_SYSTEM, \
                 yet /dev/dma_heap/system exists"
                    .to_owned()
            )
        );
    }

    #[test]
    fn virtio_gpu_needs_no_node() -> io::Result<()> {
        assert_eq!(choose(Exporter::VirtioGpu)?.instead, None);
        Ok(())
    }
}
