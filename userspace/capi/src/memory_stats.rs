//! What a device allocated, counted for `EXTMEM_STATS`: an application test (FFmpeg's
//! `hwupload` on lavapipe, `cargo mesa`) needs evidence that the driver really took host
//! memory through libextmem rather than copying it, and the driver's own log is not it.

use std::io::Write;

use extmem::memory::{DeviceMemory, Origin};

/// The environment variable that makes `extmem_device_destroy` print a device's counts
/// on stderr: set and neither empty nor `0`.
pub const STATS_VARIABLE: &str = "EXTMEM_STATS";

/// Successful allocations of one device, by where their pages came from.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct MemoryStats {
    /// Allocated by the device (`create`).
    pub allocated: u64,
    /// Host-pointer imports (`VK_EXT_external_memory_host`).
    pub host_imports: u64,
    /// Opaque-fd and dma-buf imports.
    pub fd_imports: u64,
    /// Win32 imports (never on a C device, which is Linux-only; counted for completeness).
    pub win32_imports: u64,
    /// Fds handed out by `extmem_get_memory_fd`.
    pub fd_exports: u64,
}

impl MemoryStats {
    /// Counts one successful allocation.
    pub fn allocated(&mut self, memory: &DeviceMemory) {
        let counter = match memory.origin() {
            Origin::Allocated => &mut self.allocated,
            Origin::Host { .. } => &mut self.host_imports,
            Origin::Fd(_) => &mut self.fd_imports,
            Origin::Win32(_) => &mut self.win32_imports,
        };
        *counter = counter.saturating_add(1);
    }

    /// Counts one exported fd.
    pub fn exported(&mut self) {
        self.fd_exports = self.fd_exports.saturating_add(1);
    }

    /// The line `extmem_device_destroy` prints.
    pub fn line(&self, device: u64) -> String {
        format!(
            "libextmem: device {device:#x}: {} host imports, {} fd imports, {} allocated, {} fd exports",
            self.host_imports, self.fd_imports, self.allocated, self.fd_exports
        )
    }

    /// Prints [`MemoryStats::line`] on stderr if [`STATS_VARIABLE`] asks for it. A failed
    /// write is ignored: the counts are a diagnostic, and destroying the device must not
    /// fail because stderr is closed.
    pub fn report(&self, device: u64) {
        let wanted = std::env::var_os(STATS_VARIABLE).is_some_and(|v| !v.is_empty() && v != "0");
        if wanted {
            let _ = writeln!(std::io::stderr().lock(), "{}", self.line(device));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_each_count() {
        let stats = MemoryStats {
            allocated: 1,
            host_imports: 12,
            fd_imports: 3,
            win32_imports: 0,
            fd_exports: 2,
        };
        assert_eq!(
            stats.line(0x10001),
            "libextmem: device 0x10001: 12 host imports, 3 fd imports, 1 allocated, 2 fd exports"
        );
    }
}
