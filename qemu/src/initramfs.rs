//! The "newc" cpio format the kernel unpacks as an initramfs (`Documentation/driver-api/
//! early-userspace/buffer-format.rst`), written directly: directories, files and symlinks with
//! fixed owners and times, so the same inputs give the same archive.
//!
//! The archive is left uncompressed: the kernel takes it as is, and decompressing a few MiB
//! under TCG costs more boot time than QEMU copying them in.

use std::fmt;

/// Permission bits and file type for an entry.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// An archive being built in memory.
#[derive(Debug, Default)]
pub struct NewcArchive {
    bytes: Vec<u8>,
    next_inode: u32,
}

/// An entry the newc format cannot describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewcError {
    /// newc stores sizes in 32 bits.
    TooLarge {
        /// The entry's path.
        path: String,
        /// Its size.
        size: usize,
    },
    /// Paths are stored without the leading `/` and must not be empty or hold NUL.
    BadPath {
        /// The path given.
        path: String,
    },
}

impl fmt::Display for NewcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { path, size } => {
                write!(
                    f,
                    "{path} is {size} bytes, more than newc's 32-bit size field holds"
                )
            }
            Self::BadPath { path } => write!(f, "{path:?} is not a valid archive path"),
        }
    }
}

impl std::error::Error for NewcError {}

impl NewcArchive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (parents must be added first).
    pub fn directory(&mut self, path: &str) -> Result<(), NewcError> {
        self.entry(path, S_IFDIR | 0o755, &[])
    }

    /// Adds a regular file with permission bits `mode` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), NewcError> {
        self.entry(path, S_IFREG | (mode & 0o7777), data)
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), NewcError> {
        self.entry(path, S_IFLNK | 0o777, target.as_bytes())
    }

    /// Adds a character device node `major:minor`.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), NewcError> {
        let name = checked_name(path)?;
        self.next_inode += 1;
        let header = Header {
            inode: self.next_inode,
            mode: S_IFCHR | (mode & 0o7777),
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        };
        self.header(name, &header);
        Ok(())
    }

    /// Adds the trailer and returns the archive bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let trailer = Header {
            inode: 0,
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        self.header("TRAILER!!!", &trailer);
        self.bytes
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), NewcError> {
        let name = checked_name(path)?;
        let size = u32::try_from(data.len()).map_err(|_| NewcError::TooLarge {
            path: path.to_owned(),
            size: data.len(),
        })?;
        self.next_inode += 1;
        let header = Header {
            inode: self.next_inode,
            mode,
            nlink: if mode & S_IFDIR == S_IFDIR { 2 } else { 1 },
            size,
            rdev: (0, 0),
        };
        self.header(name, &header);
        self.bytes.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// Writes `070701`, thirteen 8-digit hex fields, the NUL-terminated name and padding to 4.
    fn header(&mut self, name: &str, header: &Header) {
        let name_size = name.len() + 1;
        let fields = [
            header.inode,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            0, // mtime
            header.size,
            0, // dev major
            0, // dev minor
            header.rdev.0,
            header.rdev.1,
            u32::try_from(name_size).unwrap_or(u32::MAX),
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }
}

/// The variable fields of one newc header (owners, times and the device are fixed at 0).
struct Header {
    inode: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

/// The archive name for `path`: no leading `/`, not empty, no NUL, short enough for newc.
fn checked_name(path: &str) -> Result<&str, NewcError> {
    let name = path.trim_start_matches('/');
    if name.is_empty() || name.contains('\0') || name.len() >= 4096 {
        return Err(NewcError::BadPath {
            path: path.to_owned(),
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back (name, mode, data) triples, checking magic and alignment as the kernel does.
    fn read_back(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut entries = Vec::new();
        let total = bytes.len();
        loop {
            assert_eq!((total - bytes.len()) % 4, 0, "header not 4-byte aligned");
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                let text = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap_or("");
                usize::from_str_radix(text, 16).unwrap_or(usize::MAX)
            };
            let (mode, size, name_size) = (field(1), field(6), field(11));
            let name_end = 110 + name_size;
            let name = String::from_utf8_lossy(&bytes[110..name_end - 1]).into_owned();
            assert_eq!(bytes[name_end - 1], 0);
            let data_start = name_end.next_multiple_of(4);
            let data = bytes[data_start..data_start + size].to_vec();
            bytes = &bytes[(data_start + size).next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty());
                return entries;
            }
            entries.push((name, u32::try_from(mode).unwrap_or(0), data));
        }
    }

    #[test]
    fn entries_round_trip_with_types_and_alignment() -> Result<(), NewcError> {
        let mut archive = NewcArchive::new();
        archive.directory("/bin")?;
        archive.file("/bin/busybox", 0o755, b"\x7fELF1")?;
        archive.symlink("/bin/sh", "busybox")?;
        archive.file("init", 0o755, b"#!/bin/sh\n")?;
        archive.char_device("/dev/console", 0o600, 5, 1)?;
        let entries = read_back(&archive.finish());
        assert_eq!(
            entries,
            [
                ("bin".to_owned(), 0o040_755, vec![]),
                ("bin/busybox".to_owned(), 0o100_755, b"\x7fELF1".to_vec()),
                ("bin/sh".to_owned(), 0o120_777, b"busybox".to_vec()),
                ("init".to_owned(), 0o100_755, b"#!/bin/sh\n".to_vec()),
                ("dev/console".to_owned(), 0o020_600, vec![]),
            ]
        );
        Ok(())
    }

    #[test]
    fn header_layout_matches_the_kernel_documentation() -> Result<(), NewcError> {
        let mut archive = NewcArchive::new();
        archive.file("a", 0o644, b"xyz")?;
        let bytes = archive.finish();
        let header = String::from_utf8_lossy(&bytes[..110]).into_owned();
        let fields = [
            "00000001", // inode
            "000081a4", // mode: regular file, 0644
            "00000000", // uid
            "00000000", // gid
            "00000001", // nlink
            "00000000", // mtime
            "00000003", // file size
            "00000000", // dev major
            "00000000", // dev minor
            "00000000", // rdev major
            "00000000", // rdev minor
            "00000002", // name size, with the NUL
            "00000000", // check
        ];
        assert_eq!(header, format!("070701{}", fields.concat()));
        // name "a\0" ends at 112, data "xyz" at 112..115, padded to 116.
        assert_eq!(&bytes[110..116], b"a\0xyz\0");
        Ok(())
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut archive = NewcArchive::new();
        assert!(archive.file("/", 0o644, b"").is_err());
        assert!(archive.file("a\0b", 0o644, b"").is_err());
    }
}
