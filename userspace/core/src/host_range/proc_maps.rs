//! The lines of `/proc/self/maps` and `/proc/self/mountinfo` that the import check reads,
//! parsed from text so that the rules can be tested on any input (see `proc(5)`).

/// A device number as the kernel prints it (`major:minor`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// One mapping: a line of `/proc/self/maps`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r`: `VM_READ`.
    pub readable: bool,
    /// `w`: `VM_WRITE`.
    pub writable: bool,
    /// `s` (`VM_SHARED`), not `p`.
    pub shared: bool,
    /// The device of the mapped file's superblock (`00:00` when anonymous).
    pub dev: DevNum,
    /// The mapped file's inode, 0 when anonymous.
    pub inode: u64,
}

/// `maj:min` in the given radix (hexadecimal in maps, decimal in mountinfo).
fn dev_num(text: &str, radix: u32) -> Option<DevNum> {
    let (major, minor) = text.split_once(':')?;
    Some(DevNum {
        major: u32::from_str_radix(major, radix).ok()?,
        minor: u32::from_str_radix(minor, radix).ok()?,
    })
}

/// Parses one line of `/proc/self/maps`:
/// `start-end perms offset dev inode [path]`, addresses and device in hexadecimal.
pub fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.as_bytes();
    let _offset = fields.next()?;
    let dev = dev_num(fields.next()?, 16)?;
    let inode = fields.next()?.parse().ok()?;
    let perm = |at: usize, set: u8| perms.get(at) == Some(&set);
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perm(0, b'r'),
        writable: perm(1, b'w'),
        shared: perm(3, b's'),
        dev,
        inode,
    })
}

/// The filesystem type of the mount whose superblock is `dev`, from the text of
/// `/proc/self/mountinfo`: `id parent maj:min root mountpoint options [optional...] -
/// fstype source superoptions`, the device in decimal.
pub fn fs_type_of(mountinfo: &str, dev: DevNum) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let this = dev_num(fields.nth(2)?, 10)?;
        if this != dev {
            return None;
        }
        let (_, after) = line.split_once(" - ")?;
        after.split_ascii_whitespace().next()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_range_permissions_and_backing() {
        let anon = parse_mapping("7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 ");
        assert_eq!(
            anon,
            Some(Mapping {
                start: 0x7f1c_2a00_0000,
                end: 0x7f1c_2a02_1000,
                readable: true,
                writable: true,
                shared: false,
                dev: DevNum { major: 0, minor: 0 },
                inode: 0,
            })
        );
        let file = parse_mapping("7f00000-7f01000 r--s 00002000 fe:1a 123456   /srv/a file")
            .unwrap_or_else(|| panic!("a file mapping"));
        assert_eq!(
            (file.readable, file.writable, file.shared),
            (true, false, true)
        );
        assert_eq!(
            (file.dev, file.inode),
            (
                DevNum {
                    major: 0xfe,
                    minor: 0x1a
                },
                123_456
            )
        );
        let none = parse_mapping("1000-2000 ---p 00000000 00:00 0").map(|m| m.readable);
        assert_eq!(none, Some(false));
        for bad in [
            "",
            "zz-2000 rw-p 0 00:00 0",
            "1000-2000 rw-p 0 0000 0",
            "1000 rw-p",
        ] {
            assert_eq!(parse_mapping(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn mountinfo_names_the_filesystem_of_a_device() {
        let text = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:23 / /tmp rw,nosuid master:3 - tmpfs tmpfs rw,size=100k
26 22 0:41 / /mnt rw - 9p host0 rw,trans=virtio
";
        let fs = |major, minor| fs_type_of(text, DevNum { major, minor });
        assert_eq!(fs(254, 1), Some("ext4"));
        assert_eq!(fs(0, 23), Some("tmpfs"));
        assert_eq!(fs(0, 41), Some("9p"));
        assert_eq!(fs(0, 1), None);
    }
}
