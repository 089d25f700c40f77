//! Test patterns: bytes that differ per seed and per offset, so a wrong page, a stale page or an
//! offset mix-up all show up as a mismatch.

use std::fmt;

use crate::ktap::{CheckResult, Failure};

/// `len` bytes generated from `seed` (xorshift64; no two 4 KiB pages of one pattern repeat).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` bytes of the 32-bit little-endian `value`.
pub fn filled(value: u32, len: usize) -> Vec<u8> {
    value
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// A small seeded generator (xorshift64): the same seed gives the same sequence, so a
/// randomised test that prints its seed can be replayed.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from `seed` (any value; mixed so that 0 works too).
    pub fn new(seed: u64) -> Self {
        let state = seed ^ 0x9e37_79b9_7f4a_7c15;
        Self {
            state: if state == 0 { 1 } else { state },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        u32::try_from(self.next_u64() >> 32).unwrap_or(0)
    }

    /// A value in `0..bound` (0 when `bound` is 0); the slight modulo bias does not matter
    /// to a test.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64().checked_rem(bound).unwrap_or(0)
    }

    /// A value in `0..bound` as a `u32` (0 when `bound` is 0).
    pub fn below_u32(&mut self, bound: u32) -> u32 {
        u32::try_from(self.below(u64::from(bound))).unwrap_or(0)
    }

    /// An index into a slice of `len` elements (0 when empty).
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    /// One element of `items` (`None` when empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.index(items.len()))
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Where two byte strings first differ and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Length of the expected bytes.
    pub expected_len: usize,
    /// Length of the bytes seen.
    pub seen_len: usize,
    /// First differing offset, with the expected and seen byte there (none if only the
    /// lengths differ).
    pub first: Option<(usize, u8, u8)>,
    /// How many offsets (within the shorter length) differ.
    pub differing: usize,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.expected_len != self.seen_len {
            write!(
                f,
                "{} bytes instead of {}; ",
                self.seen_len, self.expected_len
            )?;
        }
        match self.first {
            Some((offset, expected, seen)) => write!(
                f,
                "{} bytes differ, first at offset {offset:#x}: {seen:#04x} instead of {expected:#04x}",
                self.differing
            ),
            None => write!(f, "the common prefix matches"),
        }
    }
}

/// [`compare`] as a KTAP check: `what` shows the bytes written.
pub fn expect_bytes(what: &str, expected: &[u8], seen: &[u8]) -> CheckResult<()> {
    compare(expected, seen).map_err(|m| {
        Failure::new(
            format!("{what} shows the {} bytes written", expected.len()),
            m.to_string(),
        )
    })
}

/// Compares `seen` with `expected`.
pub fn compare(expected: &[u8], seen: &[u8]) -> Result<(), Mismatch> {
    let mut first = None;
    let mut differing = 0_usize;
    for (offset, (&e, &s)) in expected.iter().zip(seen).enumerate() {
        if e != s {
            differing += 1;
            first.get_or_insert((offset, e, s));
        }
    }
    if differing == 0 && expected.len() == seen.len() {
        Ok(())
    } else {
        Err(Mismatch {
            expected_len: expected.len(),
            seen_len: seen.len(),
            first,
            differing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_by_seed_and_by_page() {
        let a = bytes(1, 8192);
        assert_eq!(a.len(), 8192);
        assert_ne!(a, bytes(2, 8192));
        assert_ne!(a[..4096], a[4096..]);
        assert_eq!(a, bytes(1, 8192));
    }

    #[test]
    fn the_generator_replays_from_its_seed_and_stays_in_bounds() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        let first: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..16).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert_eq!(a.below(0), 0);
        assert_eq!(a.pick::<u8>(&[]), None);
        assert_ne!(Rng::new(0).next_u64(), 0);
    }

    #[test]
    fn compare_reports_first_difference_and_count() {
        assert_eq!(compare(b"abcd", b"abcd"), Ok(()));
        let mismatch = compare(b"abcd", b"xbcy").err();
        assert_eq!(
            mismatch,
            Some(Mismatch {
                expected_len: 4,
                seen_len: 4,
                first: Some((0, b'a', b'x')),
                differing: 2
            })
        );
        let short = compare(b"abcd", b"ab").err();
        assert_eq!(short.map(|m| (m.seen_len, m.first)), Some((2, None)));
    }
}
