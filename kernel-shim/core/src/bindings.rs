//! The bindings of one VM: which object range is mapped at which GPU VA.
//!
//! A fixed-capacity table sorted by VA. Since bindings never overlap, a new range can only
//! collide with the binding just below it or the one just above, so the overlap check is
//! one binary search.

use extmem_hw::GpuVa;

use crate::platform::ObjectId;
use crate::sorted_table::{InsertError, Keyed, SortedTable};

/// Bindings one VM holds at most (`VM_BIND` fails with `ENOSPC` beyond).
pub const BINDINGS_MAX: usize = 4096;

/// One mapping of an object range.
///
/// All-zero bytes are a valid (meaningless) `Binding`: every field is an integer or a
/// bool. [`BindingTable`] relies on it for its zeroed kernel storage.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Binding {
    /// First GPU VA.
    pub va: GpuVa,
    /// Bytes mapped.
    pub size: u64,
    /// The object (the C glue holds one reference for the binding).
    pub object: ObjectId,
    /// Offset of the first mapped byte in the object.
    pub offset: u64,
    /// Mapped read-only.
    pub read_only: bool,
}

impl Binding {
    /// One past the last VA. Bindings are checked not to wrap before they are made.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.va.get().saturating_add(self.size)
    }
}

impl Keyed for Binding {
    fn key(&self) -> u64 {
        self.va.get()
    }
}

/// Why the binding table refused a change.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BindingError {
    /// `[va, va + size)` overlaps `existing` (`EEXIST`).
    Overlap {
        /// Start of the new range.
        va: GpuVa,
        /// Its size.
        size: u64,
        /// The binding it overlaps.
        existing: Binding,
    },
    /// The table is full (`ENOSPC`).
    Full {
        /// Its capacity.
        capacity: usize,
    },
    /// No binding starts at `va` with exactly `size` bytes (`ENOENT`).
    NotFound {
        /// The VA asked for.
        va: GpuVa,
        /// The size asked for.
        size: u64,
    },
}

/// Up to `N` bindings, sorted by VA, never overlapping.
///
/// # Invariants
/// The records of the inner table are non-empty, non-wrapping and pairwise disjoint.
/// All-zero bytes are a valid, empty table (see [`Binding`]).
#[derive(Clone, Copy, Debug)]
pub struct BindingTable<const N: usize> {
    table: SortedTable<Binding, N>,
}

impl<const N: usize> Default for BindingTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> BindingTable<N> {
    /// An empty table.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            table: SortedTable::new(Binding {
                va: GpuVa::ZERO,
                size: 0,
                object: ObjectId(0),
                offset: 0,
                read_only: false,
            }),
        }
    }

    /// The bindings in VA order.
    #[must_use]
    pub fn as_slice(&self) -> &[Binding] {
        self.table.as_slice()
    }

    /// How many bindings there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `[va, va + size)` (non-empty, not wrapping) could be bound: it overlaps no
    /// binding and the table has room.
    pub fn check_vacant(&self, va: GpuVa, size: u64) -> Result<(), BindingError> {
        let end = va.get().saturating_add(size);
        let index = self.table.lower_bound(va.get());
        let below = index
            .checked_sub(1)
            .and_then(|i| self.as_slice().get(i))
            .filter(|b| b.end() > va.get());
        let above = self.as_slice().get(index).filter(|b| b.va.get() < end);
        if let Some(&existing) = below.or(above) {
            return Err(BindingError::Overlap { va, size, existing });
        }
        if self.len() >= N {
            return Err(BindingError::Full { capacity: N });
        }
        Ok(())
    }

    /// Adds `binding` after the same checks as [`BindingTable::check_vacant`].
    pub fn insert(&mut self, binding: Binding) -> Result<(), BindingError> {
        self.check_vacant(binding.va, binding.size)?;
        match self.table.insert(binding) {
            Ok(_) => Ok(()),
            Err(InsertError::Full) => Err(BindingError::Full { capacity: N }),
            // check_vacant found no binding at this VA.
            Err(InsertError::Duplicate) => Err(BindingError::Overlap {
                va: binding.va,
                size: binding.size,
                existing: binding,
            }),
        }
    }

    /// The binding that starts at `va` with exactly `size` bytes.
    pub fn find_exact(&self, va: GpuVa, size: u64) -> Result<&Binding, BindingError> {
        self.table
            .find(va.get())
            .map(|(_, b)| b)
            .filter(|b| b.size == size)
            .ok_or(BindingError::NotFound { va, size })
    }

    /// Removes the binding that starts at `va` with exactly `size` bytes.
    pub fn remove_exact(&mut self, va: GpuVa, size: u64) -> Result<Binding, BindingError> {
        let not_found = BindingError::NotFound { va, size };
        let index = match self.table.find(va.get()) {
            Some((index, b)) if b.size == size => index,
            _ => return Err(not_found),
        };
        self.table.remove_at(index).ok_or(not_found)
    }

    /// Forgets every binding.
    pub fn clear(&mut self) {
        self.table.clear();
    }
}
