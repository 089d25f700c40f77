//! Test patterns: bytes that differ per seed and per offset, so a wrong page, a stale page or an
//! offset mix-up all show up as a mismatch.

use std::fmt;

/// `len` bytes generated from `seed` (xorshift64; no two 4 KiB pages of one pattern repeat).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
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
