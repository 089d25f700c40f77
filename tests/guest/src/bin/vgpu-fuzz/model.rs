//! What the fuzzer knows the driver holds for its file: live objects, closed handles and the
//! bindings of the VM. Every success the driver reports is checked against it; a success
//! the model says is impossible is an inconsistency.

use std::collections::BTreeMap;

use extmem_uapi::{Cmd, CmdOp, ObjectKind};

/// A live object of the fuzzed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Object {
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its kind.
    pub(crate) kind: ObjectKind,
    /// Whether the GPU may only read it.
    pub(crate) read_only: bool,
}

/// A binding of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binding {
    /// Bytes mapped.
    pub(crate) size: u64,
    /// Mapped read-only.
    pub(crate) read_only: bool,
}

/// The model of one file.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// Live objects by handle.
    pub(crate) objects: BTreeMap<u32, Object>,
    /// Handles closed again (the kernel may reuse them for new objects).
    pub(crate) closed: Vec<u32>,
    /// Bindings by first VA.
    pub(crate) bindings: BTreeMap<u64, Binding>,
    /// The DRM-file mmap offset of live objects that have one, by handle.
    pub(crate) offsets: BTreeMap<u32, u64>,
    /// Offsets of objects whose handle this file closed.
    pub(crate) stale_offsets: Vec<u64>,
}

impl Model {
    /// Whether `[va, va + size)` overlaps a binding.
    pub(crate) fn overlaps(&self, va: u64, size: u64) -> bool {
        let Some(end) = va.checked_add(size) else {
            return true;
        };
        let below = self.bindings.range(..end).next_back();
        below.is_some_and(|(&start, b)| start.saturating_add(b.size) > va)
    }

    /// The binding holding `va`, if any.
    pub(crate) fn binding_at(&self, va: u64) -> Option<(u64, Binding)> {
        let (&start, &binding) = self.bindings.range(..=va).next_back()?;
        (va < start.saturating_add(binding.size)).then_some((start, binding))
    }

    /// Whether every byte of `[va, va + size)` is bound (writable if `write`).
    pub(crate) fn covers(&self, va: u64, size: u64, write: bool) -> bool {
        let Some(end) = va.checked_add(size) else {
            return false;
        };
        let mut at = va;
        while at < end {
            match self.binding_at(at) {
                Some((start, b)) if !(write && b.read_only) => at = start + b.size,
                _ => return false,
            }
        }
        size > 0
    }

    /// Whether the copy engine could run `cmd` without a fault or a rejection.
    pub(crate) fn runs(&self, cmd: &Cmd) -> bool {
        match cmd.op {
            CmdOp::COPY => {
                cmd.value == 0
                    && self.covers(cmd.src, cmd.size, false)
                    && self.covers(cmd.dst, cmd.size, true)
            }
            CmdOp::FILL => {
                cmd.src == 0
                    && cmd.dst % 4 == 0
                    && cmd.size % 4 == 0
                    && self.covers(cmd.dst, cmd.size, true)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_follows_adjacent_bindings_and_stops_at_gaps() {
        let mut model = Model::default();
        let rw = Binding {
            size: 0x2000,
            read_only: false,
        };
        model.bindings.insert(0x10000, rw);
        model.bindings.insert(
            0x12000,
            Binding {
                read_only: true,
                ..rw
            },
        );
        assert!(model.covers(0x11000, 0x2000, false));
        assert!(!model.covers(0x11000, 0x2000, true));
        assert!(!model.covers(0x13000, 0x2000, false));
        assert!(model.overlaps(0xf000, 0x2000));
        assert!(!model.overlaps(0x14000, 0x1000));
        assert!(model.overlaps(u64::MAX, 2));
        assert!(!model.covers(0x10000, 0, false));
    }
}
