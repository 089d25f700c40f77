//! The guest architectures the runner boots: x86_64 on the host's own root, and arm64 with 4 KiB
//! or 16 KiB pages on a provisioned arm64 root (`arm64_root.rs`), each with what differs between
//! them (QEMU binary and machine, console device, Rust target, Debian kernel flavour).

use std::process::Command;

/// One guest architecture and page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestArch {
    /// x86_64 (q35), 4 KiB pages, the host's root shared over 9p.
    X86_64,
    /// arm64 (`-M virt`), Debian's `arm64` kernel with 4 KiB pages, the arm64 root.
    Arm64,
    /// arm64 (`-M virt`), Debian's `arm64-16k` kernel with 16 KiB pages, the arm64 root.
    Arm64Pages16k,
}

impl GuestArch {
    /// Every architecture, in the order `suite` boots them.
    pub const ALL: [GuestArch; 3] = [Self::X86_64, Self::Arm64, Self::Arm64Pages16k];

    /// The name a user gives `--arch`.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
            Self::Arm64Pages16k => "arm64-16k",
        }
    }

    /// The architecture `--arch NAME` names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|arch| arch.name() == name)
    }

    /// The CPU page size of its kernel, in KiB.
    pub fn page_kib(self) -> u32 {
        match self {
            Self::X86_64 | Self::Arm64 => 4,
            Self::Arm64Pages16k => 16,
        }
    }

    /// The Debian kernel flavour: the suffix of `linux-image-<abi>-<flavour>`.
    pub fn kernel_flavour(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Arm64 => "arm64",
            Self::Arm64Pages16k => "arm64-16k",
        }
    }

    /// The Rust target the guest programs and the ICD are built for; `None` is the host's own
    /// (the x86_64 guest runs host-built binaries on the host's root).
    pub fn rust_target(self) -> Option<&'static str> {
        match self {
            Self::X86_64 => None,
            Self::Arm64 | Self::Arm64Pages16k => Some(ARM64_RUST_TARGET),
        }
    }

    /// The serial console the kernel writes to.
    fn console(self) -> &'static str {
        match self {
            Self::X86_64 => "ttyS0",
            // The PL011 UART of QEMU's virt board.
            Self::Arm64 | Self::Arm64Pages16k => "ttyAMA0",
        }
    }

    /// The kernel command line.
    pub fn kernel_command_line(self) -> String {
        // panic=-1 reboots at once on a panic, which -no-reboot turns into QEMU exiting.
        // loglevel=4 keeps routine kernel messages off the console (they would interleave
        // with the programs' KTAP); errors still show, and the init script dumps the whole
        // log at the end.
        format!(
            "console={} panic=-1 loglevel=4 printk.time=1",
            self.console()
        )
    }

    /// `qemu-system-*` with the machine, memory and CPU of this guest under TCG (`kvm` false)
    /// or KVM.
    pub fn qemu_machine(self, kvm: bool) -> Command {
        let mut command;
        match self {
            Self::X86_64 => {
                command = Command::new("qemu-system-x86_64");
                command.args(["-machine", "q35"]);
            }
            Self::Arm64 | Self::Arm64Pages16k => {
                command = Command::new("qemu-system-aarch64");
                command.args(["-machine", "virt"]);
            }
        }
        command.args(["-m", "2G", "-smp", "2"]);
        let cpu = match (self, kvm) {
            (_, true) => "host",
            (Self::X86_64, false) => "max",
            // QEMU's own pointer-authentication algorithm instead of the architected QARMA5,
            // which costs more under TCG than anything else the guest does; the kernel and
            // userspace see PAC either way (Debian's kernel has CONFIG_ARM64_PTR_AUTH).
            (Self::Arm64 | Self::Arm64Pages16k, false) => "max,pauth-impdef=on",
        };
        command.args(["-accel", if kvm { "kvm" } else { "tcg" }, "-cpu", cpu]);
        command
    }
}

/// The Rust target of the arm64 guest's userspace.
pub const ARM64_RUST_TARGET: &str = "aarch64-unknown-linux-gnu";

/// Debian's multiarch directory of the arm64 root's libraries.
pub const ARM64_MULTIARCH: &str = "aarch64-linux-gnu";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_command;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for arch in GuestArch::ALL {
            assert_eq!(GuestArch::from_name(arch.name()), Some(arch));
        }
        for bad in ["", "arm", "aarch64", "arm64-4k", "x86-64", "ARM64"] {
            assert_eq!(GuestArch::from_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn arm64_boots_virt_with_its_own_console_and_userspace() {
        let line = host_command::describe(&GuestArch::Arm64Pages16k.qemu_machine(false));
        assert!(
            line.starts_with("qemu-system-aarch64 -machine virt"),
            "{line}"
        );
        assert!(
            line.contains("-accel tcg -cpu max,pauth-impdef=on"),
            "{line}"
        );
        assert!(GuestArch::Arm64
            .kernel_command_line()
            .starts_with("console=ttyAMA0 "));
        assert_eq!(GuestArch::Arm64Pages16k.page_kib(), 16);
        assert_eq!(GuestArch::Arm64Pages16k.kernel_flavour(), "arm64-16k");
        assert_eq!(GuestArch::X86_64.rust_target(), None);
        assert_eq!(GuestArch::Arm64.rust_target(), Some(ARM64_RUST_TARGET));
    }
}
