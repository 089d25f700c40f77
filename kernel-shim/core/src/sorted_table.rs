//! A fixed-capacity array kept sorted by a `u64` key: the storage of the binding table
//! and the pin registry. No heap: the kernel core has none.
//!
//! Lookups are binary searches (O(log n)); an insert or a removal moves the entries after
//! it (O(n), at most `N` small `Copy` records, with no allocation and no failure path).

/// A record with a sort key.
pub(crate) trait Keyed: Copy {
    /// The key the table is sorted by.
    fn key(&self) -> u64;
}

/// Why [`SortedTable::insert`] refused a record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum InsertError {
    /// All `N` slots are taken.
    Full,
    /// A record with the same key is there.
    Duplicate,
}

/// Up to `N` records, sorted by key, keys unique.
///
/// # Invariants
/// - `len <= N`, and `slots[..len]` are the records in strictly increasing key order.
/// - The table holds only `len` and `[T; N]`: when all-zero bytes are a valid `T`, they
///   are a valid, empty table. The kernel VM, which C allocates zeroed, relies on this.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SortedTable<T, const N: usize> {
    len: usize,
    slots: [T; N],
}

impl<T: Keyed, const N: usize> SortedTable<T, N> {
    /// An empty table; `filler` fills the unused slots.
    pub(crate) const fn new(filler: T) -> Self {
        Self {
            len: 0,
            slots: [filler; N],
        }
    }

    /// The records, in key order.
    pub(crate) fn as_slice(&self) -> &[T] {
        self.slots.get(..self.len).unwrap_or(&[])
    }

    /// How many records the table holds.
    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The index of the first record whose key is at least `key` (`len` if none).
    pub(crate) fn lower_bound(&self, key: u64) -> usize {
        self.as_slice().partition_point(|r| r.key() < key)
    }

    /// The record with exactly `key`, and its index.
    pub(crate) fn find(&self, key: u64) -> Option<(usize, &T)> {
        let index = self.lower_bound(key);
        self.as_slice()
            .get(index)
            .filter(|r| r.key() == key)
            .map(|r| (index, r))
    }

    /// Inserts `record` in key order; returns its index.
    pub(crate) fn insert(&mut self, record: T) -> Result<usize, InsertError> {
        let index = self.lower_bound(record.key());
        if self.find(record.key()).is_some() {
            return Err(InsertError::Duplicate);
        }
        let len = self.len;
        if len >= N || index > len {
            return Err(InsertError::Full);
        }
        // Move slots[index..len] up by one, from the top down.
        let mut i = len;
        while i > index {
            let below = i - 1;
            if let Some(&moved) = self.slots.get(below) {
                if let Some(slot) = self.slots.get_mut(i) {
                    *slot = moved;
                }
            }
            i = below;
        }
        let slot = self.slots.get_mut(index).ok_or(InsertError::Full)?;
        *slot = record;
        self.len = len + 1;
        Ok(index)
    }

    /// Removes and returns the record at `index`.
    pub(crate) fn remove_at(&mut self, index: usize) -> Option<T> {
        let removed = *self.as_slice().get(index)?;
        let len = self.len;
        // Move slots[index + 1..len] down by one.
        let mut i = index;
        while i + 1 < len {
            if let Some(&moved) = self.slots.get(i + 1) {
                if let Some(slot) = self.slots.get_mut(i) {
                    *slot = moved;
                }
            }
            i += 1;
        }
        self.len = len.saturating_sub(1);
        Some(removed)
    }

    /// Forgets every record.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    impl Keyed for u64 {
        fn key(&self) -> u64 {
            *self
        }
    }

    #[test]
    fn keeps_order_refuses_duplicates_and_overflow() {
        let mut t = SortedTable::<u64, 4>::new(0);
        assert_eq!(t.insert(30), Ok(0));
        assert_eq!(t.insert(10), Ok(0));
        assert_eq!(t.insert(20), Ok(1));
        assert_eq!(t.insert(20), Err(InsertError::Duplicate));
        assert_eq!(t.insert(40), Ok(3));
        assert_eq!(t.insert(5), Err(InsertError::Full));
        assert_eq!(t.as_slice(), &[10, 20, 30, 40]);
        assert_eq!(t.find(30), Some((2, &30)));
        assert_eq!(t.find(31), None);
        assert_eq!(t.lower_bound(31), 3);
        assert_eq!(t.remove_at(1), Some(20));
        assert_eq!(t.remove_at(3), None);
        assert_eq!(t.as_slice(), &[10, 30, 40]);
        assert_eq!(t.remove_at(2), Some(40));
        assert_eq!(t.as_slice(), &[10, 30]);
        t.clear();
        assert_eq!(t.len(), 0);
    }

    proptest::proptest! {
        // Fewer cases under Miri, which is there for undefined behaviour.
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: if cfg!(miri) { 8 } else { 256 },
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn matches_a_btreeset(ops in proptest::collection::vec((0u64..24, proptest::bool::ANY), 0..200)) {
            let mut t = SortedTable::<u64, 8>::new(0);
            let mut model = BTreeSet::new();
            for (key, insert) in ops {
                if insert {
                    let expected = if model.contains(&key) {
                        Err(InsertError::Duplicate)
                    } else if model.len() == 8 {
                        Err(InsertError::Full)
                    } else {
                        model.insert(key);
                        Ok(model.range(..key).count())
                    };
                    proptest::prop_assert_eq!(t.insert(key), expected);
                } else {
                    let removed = t.find(key).map(|(i, _)| i).and_then(|i| t.remove_at(i));
                    proptest::prop_assert_eq!(removed, model.take(&key));
                }
                let contents: Vec<u64> = model.iter().copied().collect();
                proptest::prop_assert_eq!(t.as_slice(), contents.as_slice());
            }
        }
    }
}
