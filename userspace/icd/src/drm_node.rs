//! The DRM nodes of a kernel device, as `VK_EXT_physical_device_drm` reports them: the
//! render node the device opened, and the primary node of the same DRM device.
//!
//! An application uses the numbers to match a Vulkan device with a DRM device it already
//! knows (a compositor's scanout device, a dma-buf's exporter). The render node's number
//! comes from `fstat` of the very file the device opened. The primary node (the kernel
//! registers one beside the render node for every DRM driver that is not a compute
//! accelerator, extmem-vgpu included) is found through sysfs: the render node's device
//! directory lists the DRM minors of the same device, and each minor's `dev` file holds
//! its number. A primary node that sysfs does not show is reported as absent.

use ash::vk;

/// A character device's number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DeviceNumber {
    /// The major number (226 for DRM).
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

/// The DRM nodes of one device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DrmNodes {
    /// The render node the device opened (`/dev/dri/renderD*`).
    pub render: DeviceNumber,
    /// The primary node (`/dev/dri/card*`) of the same DRM device, if sysfs shows one.
    pub primary: Option<DeviceNumber>,
}

/// `VkPhysicalDeviceDrmPropertiesEXT` of a device with these nodes, or of one with none
/// (all false and zero).
pub fn properties(nodes: Option<&DrmNodes>) -> vk::PhysicalDeviceDrmPropertiesEXT<'static> {
    let render = nodes.map(|n| n.render);
    let primary = nodes.and_then(|n| n.primary);
    vk::PhysicalDeviceDrmPropertiesEXT {
        has_primary: vk::Bool32::from(primary.is_some()),
        has_render: vk::Bool32::from(render.is_some()),
        primary_major: primary.map_or(0, |n| i64::from(n.major)),
        primary_minor: primary.map_or(0, |n| i64::from(n.minor)),
        render_major: render.map_or(0, |n| i64::from(n.major)),
        render_minor: render.map_or(0, |n| i64::from(n.minor)),
        ..Default::default()
    }
}

/// Parses the contents of a sysfs `dev` file: `"<major>:<minor>\n"`.
pub fn parse_device_number(text: &str) -> Option<DeviceNumber> {
    let (major, minor) = text.trim_end().split_once(':')?;
    Some(DeviceNumber {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}

/// Whether `name` is a DRM primary minor's sysfs name: `card` and a number (connectors
/// such as `card0-HDMI-A-1` are not).
#[cfg(not(windows))]
fn is_primary_name(name: &str) -> bool {
    name.strip_prefix("card")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The DRM nodes of the render node open as `fd`, with sysfs mounted at `sysfs`
/// (normally `/sys`). `None` if `fd` is not a character device.
#[cfg(not(windows))]
pub fn of_render_node(fd: rustix::fd::BorrowedFd<'_>, sysfs: &std::path::Path) -> Option<DrmNodes> {
    let stat = rustix::fs::fstat(fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::CharacterDevice {
        return None;
    }
    let render = DeviceNumber {
        major: rustix::fs::major(stat.st_rdev),
        minor: rustix::fs::minor(stat.st_rdev),
    };
    Some(DrmNodes {
        render,
        primary: primary_of(sysfs, render),
    })
}

/// The primary node of the DRM device whose render node is `render`: the `card<N>` entry
/// of `<sysfs>/dev/char/<major>:<minor>/device/drm`, by its `dev` file.
#[cfg(not(windows))]
pub fn primary_of(sysfs: &std::path::Path, render: DeviceNumber) -> Option<DeviceNumber> {
    let minors = sysfs
        .join("dev/char")
        .join(format!("{}:{}", render.major, render.minor))
        .join("device/drm");
    let mut names: Vec<String> = std::fs::read_dir(&minors)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_primary_name(name))
        .collect();
    names.sort();
    names.iter().find_map(|name| {
        let text = std::fs::read_to_string(minors.join(name).join("dev")).ok()?;
        parse_device_number(&text)
    })
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("extmem-icd-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            Self(dir)
        }

        fn write(&self, path: &str, text: &str) {
            let file = self.0.join(path);
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
            }
            fs::write(&file, text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const RENDER: DeviceNumber = DeviceNumber {
        major: 226,
        minor: 129,
    };

    #[test]
    fn sysfs_dev_files_parse_and_garbage_does_not() {
        assert_eq!(
            parse_device_number("226:1\n"),
            Some(DeviceNumber {
                major: 226,
                minor: 1
            })
        );
        for bad in ["", "226", "226:", ":1", "a:b", "226:1:2", "-1:3", "226: 1"] {
            assert_eq!(parse_device_number(bad), None, "{bad:?}");
        }
        assert!(is_primary_name("card0") && is_primary_name("card12"));
        for other in [
            "card",
            "card0-HDMI-A-1",
            "renderD128",
            "controlD64",
            "cardX",
        ] {
            assert!(!is_primary_name(other), "{other}");
        }
    }

    #[test]
    fn the_primary_node_is_the_card_minor_of_the_same_device() {
        let sys = Scratch::new("drm-primary");
        let drm = "dev/char/226:129/device/drm";
        sys.write(&format!("{drm}/renderD129/dev"), "226:129\n");
        // The connector directories sit under the card; a stray one must not count.
        sys.write(&format!("{drm}/card1-Virtual-1/dev"), "226:99\n");
        assert_eq!(primary_of(&sys.0, RENDER), None, "no card minor yet");
        sys.write(&format!("{drm}/card1/dev"), "226:1\n");
        assert_eq!(
            primary_of(&sys.0, RENDER),
            Some(DeviceNumber {
                major: 226,
                minor: 1
            })
        );
        // Another device's render node finds nothing here.
        let other = DeviceNumber {
            major: 226,
            minor: 128,
        };
        assert_eq!(primary_of(&sys.0, other), None);
        // An unreadable number is no number.
        sys.write(&format!("{drm}/card1/dev"), "garbage");
        assert_eq!(primary_of(&sys.0, RENDER), None);
    }

    #[test]
    fn the_render_number_is_the_opened_files_and_needs_a_character_device() {
        let null = fs::File::open("/dev/null").unwrap_or_else(|e| panic!("/dev/null: {e}"));
        let nodes = of_render_node(
            rustix::fd::AsFd::as_fd(&null),
            std::path::Path::new("/nonexistent"),
        )
        .unwrap_or_else(|| panic!("/dev/null is a character device"));
        // /dev/null is 1:3 on every Linux system.
        assert_eq!(
            nodes,
            DrmNodes {
                render: DeviceNumber { major: 1, minor: 3 },
                primary: None
            }
        );
        let regular = fs::File::open("/proc/self/status").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            of_render_node(
                rustix::fd::AsFd::as_fd(&regular),
                std::path::Path::new("/sys")
            ),
            None
        );
    }

    #[test]
    fn properties_carry_the_numbers_or_nothing() {
        let none = properties(None);
        assert_eq!((none.has_render, none.has_primary), (vk::FALSE, vk::FALSE));
        assert_eq!((none.render_major, none.render_minor), (0, 0));
        let both = DrmNodes {
            render: RENDER,
            primary: Some(DeviceNumber {
                major: 226,
                minor: 1,
            }),
        };
        let p = properties(Some(&both));
        assert_eq!((p.has_render, p.has_primary), (vk::TRUE, vk::TRUE));
        assert_eq!(
            (
                p.render_major,
                p.render_minor,
                p.primary_major,
                p.primary_minor
            ),
            (226, 129, 226, 1)
        );
        let render_only = properties(Some(&DrmNodes {
            primary: None,
            ..both
        }));
        assert_eq!(
            (render_only.has_render, render_only.has_primary),
            (vk::TRUE, vk::FALSE)
        );
        assert_eq!(
            (render_only.primary_major, render_only.primary_minor),
            (0, 0)
        );
    }
}
