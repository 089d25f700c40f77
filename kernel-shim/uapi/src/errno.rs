//! The errno values of the contract: what the ioctls return (the table in the crate docs)
//! and what the standard DRM and dma-buf calls beside them return, which userspace
//! interprets. Linux's asm-generic numbers, the same on every architecture we target
//! (x86, arm, arm64, riscv); positive, as `errno` holds them (the kernel returns them
//! negated).
//!
//! One definition for the whole project: the kernel core maps its errors to these, the
//! memory manager reads them back, and the software device answers with them.

/// Declares each errno once, with its value and its name for [`name`].
macro_rules! errnos {
    ($($(#[$doc:meta])* $name:ident = $value:expr,)+) => {
        $($(#[$doc])* pub const $name: i32 = $value;)+

        /// Every errno this crate names, with its C name, for messages and for checking
        /// the values against the C library's `<errno.h>`.
        pub const KNOWN: &[(&str, i32)] = &[$((stringify!($name), $name)),+];
    };
}

errnos! {
    /// No such entry: no object with that handle, no binding at that VA.
    ENOENT = 2,
    /// Interrupted: a signal arrived while pinning or waiting; nothing was done.
    EINTR = 4,
    /// I/O error: a GPU fault, or state that should be impossible (corrupt tables).
    EIO = 5,
    /// Bad file descriptor (or, on Windows, a value that is not a handle).
    EBADF = 9,
    /// Out of memory, or over `RLIMIT_MEMLOCK`.
    ENOMEM = 12,
    /// Permission denied: a writable binding of a read-only object.
    EACCES = 13,
    /// Bad address: a user range that is not mapped (or not writable for a write pin).
    EFAULT = 14,
    /// Busy: the VM is already initialised.
    EBUSY = 16,
    /// Exists: the VA range overlaps a binding (or a Win32 name is taken).
    EEXIST = 17,
    /// No such device: the VM is not initialised (or a dma-buf exporter refuses).
    ENODEV = 19,
    /// Invalid argument: unknown flag or op, non-zero padding, zero size, misalignment.
    EINVAL = 22,
    /// No space left: a fixed-capacity table is full.
    ENOSPC = 28,
    /// Out of range: a VA range outside the VA space, an object range outside the object.
    ERANGE = 34,
    /// Value too large: an address plus a size wraps.
    EOVERFLOW = 75,
    /// Operation not supported: the object or the backend cannot do this at all.
    EOPNOTSUPP = 95,
}

/// The C name of `errno` (`"EINVAL"`), or `None` for a value this crate does not name.
#[must_use]
pub fn name(errno: i32) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|(_, value)| *value == errno)
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_unique() {
        for (i, (name_a, a)) in KNOWN.iter().enumerate() {
            for (name_b, b) in KNOWN.iter().skip(i + 1) {
                assert_ne!(a, b, "{name_a} and {name_b} share a value");
                assert_ne!(name_a, name_b);
            }
        }
        assert_eq!(name(EINVAL), Some("EINVAL"));
        assert_eq!(name(0), None);
    }
}
