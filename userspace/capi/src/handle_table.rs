//! The tables behind libextmem's opaque handles: a C caller holds a `u64` that names a
//! slot and the serial number of what was put there, so a handle that was never issued, was
//! freed, or belongs to another table is refused instead of followed.
//!
//! # Invariants
//! A live handle is `serial << 32 | (index + 1)`: the low half is never 0 (so 0 is the
//! null handle) and `serial` comes from one process-wide counter shared by every table, so
//! until it wraps (2^32 - 1 handles later) no two objects, live or freed, in any table,
//! ever had the same handle.

use std::sync::atomic::{AtomicU32, Ordering};

/// The next serial number; 0 is never handed out.
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

fn next_serial() -> u32 {
    loop {
        let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        if serial != 0 {
            return serial;
        }
    }
}

/// Why a handle names nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum HandleLookupError {
    /// The null handle (0).
    Null,
    /// A handle this table never issued, or one whose object is gone.
    Stale {
        /// The handle as given.
        handle: u64,
    },
}

/// Objects of one kind, each named by a handle that is checked on every use.
#[derive(Debug)]
pub struct HandleTable<T> {
    slots: Vec<Option<(u32, T)>>,
    free: Vec<usize>,
}

impl<T> Default for HandleTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The most slots a table has: the index half of a handle is `index + 1` in 32 bits.
const MAX_SLOTS: usize = (u32::MAX - 1) as usize;

impl<T> HandleTable<T> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Whether [`HandleTable::insert`] would succeed.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty() || self.slots.len() < MAX_SLOTS
    }

    /// Stores `value` and returns its handle, or gives `value` back if the table already
    /// holds `u32::MAX - 1` objects (the handle's index half would not fit).
    pub fn insert(&mut self, value: T) -> Result<u64, T> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                if self.slots.len() >= MAX_SLOTS {
                    return Err(value);
                }
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let Ok(low) = u32::try_from(index + 1) else {
            self.free.push(index);
            return Err(value);
        };
        let serial = next_serial();
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Some((serial, value));
        }
        Ok(u64::from(serial) << 32 | u64::from(low))
    }

    fn index_of(&self, handle: u64) -> Result<usize, HandleLookupError> {
        if handle == 0 {
            return Err(HandleLookupError::Null);
        }
        let stale = HandleLookupError::Stale { handle };
        let low = handle & u64::from(u32::MAX);
        let serial = handle >> 32;
        let index = usize::try_from(low)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .ok_or(stale)?;
        match self.slots.get(index) {
            Some(Some((s, _))) if u64::from(*s) == serial => Ok(index),
            _ => Err(stale),
        }
    }

    /// The object `handle` names.
    pub fn get(&self, handle: u64) -> Result<&T, HandleLookupError> {
        let index = self.index_of(handle)?;
        match self.slots.get(index) {
            Some(Some((_, value))) => Ok(value),
            _ => Err(HandleLookupError::Stale { handle }),
        }
    }

    /// The object `handle` names, for changing.
    pub fn get_mut(&mut self, handle: u64) -> Result<&mut T, HandleLookupError> {
        let index = self.index_of(handle)?;
        match self.slots.get_mut(index) {
            Some(Some((_, value))) => Ok(value),
            _ => Err(HandleLookupError::Stale { handle }),
        }
    }

    /// Takes the object out; its handle is stale from now on.
    pub fn remove(&mut self, handle: u64) -> Result<T, HandleLookupError> {
        let index = self.index_of(handle)?;
        let taken = self.slots.get_mut(index).and_then(Option::take);
        match taken {
            Some((_, value)) => {
                self.free.push(index);
                Ok(value)
            }
            None => Err(HandleLookupError::Stale { handle }),
        }
    }

    /// Takes every object out, leaving every handle stale.
    pub fn drain(&mut self) -> Vec<T> {
        self.free.clear();
        let out = self.slots.drain(..).flatten().map(|(_, v)| v).collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_handle_is_stale_even_when_its_slot_is_reused() {
        let mut table = HandleTable::default();
        let a = table.insert("a").unwrap_or(0);
        assert_eq!(table.get(a), Ok(&"a"));
        assert_eq!(table.remove(a), Ok("a"));
        assert_eq!(table.get(a), Err(HandleLookupError::Stale { handle: a }));
        let b = table.insert("b").unwrap_or(0);
        assert_ne!(a, b, "same slot, new serial");
        assert_eq!(a & 0xffff_ffff, b & 0xffff_ffff);
        assert_eq!(table.get(a), Err(HandleLookupError::Stale { handle: a }));
        assert_eq!(table.remove(a), Err(HandleLookupError::Stale { handle: a }));
        assert_eq!(table.get(b), Ok(&"b"));
    }

    #[test]
    fn null_made_up_and_foreign_handles_name_nothing() {
        let mut mine = HandleTable::default();
        let mut other = HandleTable::default();
        let h = mine.insert(1).unwrap_or(0);
        let foreign = other.insert(2).unwrap_or(0);
        assert_eq!(mine.get(0), Err(HandleLookupError::Null));
        for bad in [foreign, 1, u64::MAX, 1 << 32, h + 1, h ^ (1 << 40)] {
            assert_eq!(
                mine.get(bad),
                Err(HandleLookupError::Stale { handle: bad }),
                "{bad:#x}"
            );
        }
        assert_eq!(mine.drain(), [1]);
        assert_eq!(mine.get(h), Err(HandleLookupError::Stale { handle: h }));
    }
}
