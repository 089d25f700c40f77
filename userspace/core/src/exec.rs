//! Copy-engine work in the manager's own terms: the [`Command`]s a front end records and
//! submits through [`crate::backend::CopyEngine`], and what a submission reports when it
//! fails ([`ExecError`], a [`Fault`] of some [`FaultKind`]). OS-neutral: the extmem-vgpu
//! backend ([`crate::vgpu`]) and the software device (extmem-softgpu, which also builds for
//! Windows) both take these and speak the kernel's `EXEC` contract underneath, through the
//! one encoding here ([`encode`]).

use alloc::vec::Vec;

use extmem_hw::GpuVa;
use extmem_uapi as uapi;

use crate::backend::{errno, BackendError, Op};
use crate::sync::SyncPoint;

/// Most commands one submission takes (the kernel's `EXEC` limit); a front end splits
/// longer work into several submissions, which run in order.
pub const MAX_COMMANDS: u32 = uapi::MAX_EXEC_CMDS;

/// One copy-engine command, addressed by GPU VA. Every byte it touches is translated
/// through the GPU page tables; an access the tables do not allow is a [`Fault`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Command {
    /// Copies `size` bytes (non-zero) from `src` to `dst`.
    Copy {
        /// First byte read.
        src: GpuVa,
        /// First byte written.
        dst: GpuVa,
        /// Bytes.
        size: u64,
    },
    /// Writes the 32-bit `value` (little-endian) over `size` bytes at `dst`; `dst` and
    /// `size` are multiples of 4 and `size` is non-zero, as `vkCmdFillBuffer` requires.
    Fill {
        /// First byte written.
        dst: GpuVa,
        /// Bytes.
        size: u64,
        /// The pattern.
        value: u32,
    },
}

impl Command {
    /// The range the command reads, if it reads memory: (first byte, bytes).
    #[must_use]
    pub const fn source(&self) -> Option<(GpuVa, u64)> {
        match *self {
            Command::Copy { src, size, .. } => Some((src, size)),
            Command::Fill { .. } => None,
        }
    }

    /// The range the command writes: (first byte, bytes).
    #[must_use]
    pub const fn destination(&self) -> (GpuVa, u64) {
        match *self {
            Command::Copy { dst, size, .. } | Command::Fill { dst, size, .. } => (dst, size),
        }
    }
}

impl From<Command> for uapi::Cmd {
    fn from(command: Command) -> Self {
        match command {
            Command::Copy { src, dst, size } => uapi::Cmd::copy(src.get(), dst.get(), size),
            Command::Fill { dst, size, value } => uapi::Cmd::fill(dst.get(), value, size),
        }
    }
}

/// `cmds` as the kernel's `EXEC` takes them: the command array, and the argument whose
/// `cmds`/`count` describe it. The argument holds the array's address, which stays valid
/// while the returned `Vec` lives (moving the `Vec` does not move its elements).
///
/// A list longer than `u32::MAX` commands cannot be described and is refused with
/// `EINVAL`, as the kernel refuses more than [`MAX_COMMANDS`].
///
/// With `EXEC_WAIT`: the caller sees a finished copy when the call returns, and a fault as
/// `EIO` with the fault fields, whatever the kernel queues in between.
pub fn encode(cmds: &[Command]) -> Result<(Vec<uapi::Cmd>, uapi::Exec), ExecError> {
    encode_queued(cmds, uapi::EXEC_WAIT)
}

/// [`encode`] with the `EXEC` flags given: without [`uapi::EXEC_WAIT`], the job is only
/// queued and its syncobjs ([`encode_syncs`]) carry its completion.
pub fn encode_queued(
    cmds: &[Command],
    flags: u32,
) -> Result<(Vec<uapi::Cmd>, uapi::Exec), ExecError> {
    let count = u32::try_from(cmds.len()).map_err(|_| {
        ExecError::Kernel(BackendError {
            op: Op::Exec,
            errno: errno::EINVAL,
        })
    })?;
    let encoded: Vec<uapi::Cmd> = cmds.iter().map(|c| uapi::Cmd::from(*c)).collect();
    let args = uapi::Exec {
        cmds: encoded.as_ptr() as usize as u64,
        count,
        flags,
        ..Default::default()
    };
    Ok((encoded, args))
}

/// The wait or signal points of a submission as `EXEC`'s [`uapi::ExecSync`] array, with
/// its count; more than [`uapi::MAX_EXEC_SYNCS`] is `EINVAL` (the kernel's limit).
pub fn encode_syncs(points: &[SyncPoint]) -> Result<(Vec<uapi::ExecSync>, u32), ExecError> {
    let count = u32::try_from(points.len())
        .ok()
        .filter(|n| *n <= uapi::MAX_EXEC_SYNCS)
        .ok_or(ExecError::Kernel(BackendError {
            op: Op::Exec,
            errno: errno::EINVAL,
        }))?;
    let syncs = points
        .iter()
        .map(|p| uapi::ExecSync {
            handle: p.handle.0.get(),
            flags: 0,
            point: p.value,
        })
        .collect();
    Ok((syncs, count))
}

/// Why the GPU faulted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FaultKind {
    /// A translation fault: nothing is mapped at the faulting VA.
    Unmapped,
    /// A permission fault: a write to a read-only mapping.
    ReadOnly,
    /// The kernel reported a fault with a reason this version does not know (a newer
    /// contract), or with none; `raw` is its value.
    Unknown {
        /// The kernel's `fault_kind`.
        raw: u32,
    },
}

impl From<uapi::FaultKind> for FaultKind {
    fn from(kind: uapi::FaultKind) -> Self {
        match kind {
            uapi::FaultKind::UNMAPPED => FaultKind::Unmapped,
            uapi::FaultKind::READ_ONLY => FaultKind::ReadOnly,
            // `NONE` beside `EIO` contradicts itself; anything else is newer than us. Both
            // are still a fault: the commands from `cmd` on did not run.
            uapi::FaultKind(raw) => FaultKind::Unknown { raw },
        }
    }
}

/// A GPU fault reported by a submission.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fault {
    /// Index of the command that faulted.
    pub cmd: u32,
    /// The GPU VA it faulted at.
    pub va: GpuVa,
    /// Why.
    pub kind: FaultKind,
}

/// Why a submission failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ExecError {
    /// The GPU faulted; commands before `cmd` ran.
    Fault(Fault),
    /// The kernel (or the software device) refused the submission.
    Kernel(BackendError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_the_kernel_contract_spells_them() {
        let copy = Command::Copy {
            src: GpuVa::new(0x20_0010),
            dst: GpuVa::new(0x40_0000),
            size: 0x30,
        };
        let fill = Command::Fill {
            dst: GpuVa::new(0x40_0100),
            size: 8,
            value: 0xabcd,
        };
        let (cmds, args) = encode(&[copy, fill]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            cmds,
            [
                uapi::Cmd {
                    op: uapi::CmdOp::COPY,
                    value: 0,
                    src: 0x20_0010,
                    dst: 0x40_0000,
                    size: 0x30,
                },
                uapi::Cmd {
                    op: uapi::CmdOp::FILL,
                    value: 0xabcd,
                    src: 0,
                    dst: 0x40_0100,
                    size: 8,
                },
            ]
        );
        assert_eq!(args.count, 2);
        assert_eq!(args.cmds, cmds.as_ptr() as usize as u64);
        assert_eq!(
            (args.flags, args.fault_cmd, args.fault_va),
            (uapi::EXEC_WAIT, 0, 0),
            "the backend waits for its jobs"
        );
        assert_eq!((args.wait_count, args.signal_count), (0, 0));
        assert_eq!(copy.source(), Some((GpuVa::new(0x20_0010), 0x30)));
        assert_eq!(fill.source(), None);
        assert_eq!(fill.destination(), (GpuVa::new(0x40_0100), 8));
    }

    #[test]
    fn every_fault_the_contract_knows_has_a_kind_and_others_keep_their_value() {
        assert_eq!(
            FaultKind::from(uapi::FaultKind::UNMAPPED),
            FaultKind::Unmapped
        );
        assert_eq!(
            FaultKind::from(uapi::FaultKind::READ_ONLY),
            FaultKind::ReadOnly
        );
        // A reason added to the contract must get a kind of its own here.
        for kind in uapi::FaultKind::KNOWN {
            let ours = FaultKind::from(*kind);
            let unknown = matches!(ours, FaultKind::Unknown { .. });
            assert_eq!(
                unknown,
                *kind == uapi::FaultKind::NONE,
                "{kind:?}: {ours:?}"
            );
        }
        assert_eq!(
            FaultKind::from(uapi::FaultKind(7)),
            FaultKind::Unknown { raw: 7 }
        );
    }
}
