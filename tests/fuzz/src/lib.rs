//! What the fuzz targets share: [`Bytes`], which turns the fuzzer's input into numbers, and
//! [`Wire`], which writes seed inputs in the same format (see `src/bin/seeds.rs`).
//!
//! Every value is read as a selector byte and, where the selector asks for it, raw
//! little-endian bytes. Selectors pick the values that matter (aligned addresses, sizes
//! around block boundaries, the known structure types), and a raw escape keeps every other
//! value reachable. An exhausted input reads as zeros, so every input decodes.

#![deny(unsafe_code)]

#[allow(
    unsafe_code,
    reason = "links the pNext chain through raw pointers, as C would"
)]
pub mod alloc_chain;
pub mod kcore_ops;

/// A cursor over the fuzzer's input.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or 0 past the end.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `N` bytes, zero-padded past the end.
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A boolean (the low bit of a byte).
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
}

/// Writes inputs in the format [`Bytes`] reads.
#[derive(Debug, Default)]
pub struct Wire {
    /// The bytes so far.
    pub bytes: Vec<u8>,
}

impl Wire {
    /// A byte.
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }
}

/// A value chosen by a selector byte: below [`RAW`] it is a pick (what `pick` makes of the
/// selector and what it reads after it); [`RAW`] and above, raw bytes follow.
pub const RAW: u8 = 0xF0;
