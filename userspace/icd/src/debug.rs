//! `EXTMEM_DEBUG`: the driver's debug output, as Mesa drivers have theirs
//! (`RADV_DEBUG`, `PANVK_DEBUG`).
//!
//! With the variable set (to anything but empty or `0`), every refusal the ICD returns
//! across the C boundary is printed to stderr as one line,
//!
//! ```text
//! extmem: vkGetMemoryHostPointerPropertiesEXT: VK_ERROR_INVALID_EXTERNAL_HANDLE (op ImportHost, errno 14): host range [0x7f.., +0x1000) cannot be imported (errno 14)
//! ```
//!
//! naming the entry point, the `VkResult`, the VUID, backend operation and errno where the
//! refusal has them, and what was wrong; and a panic caught at the boundary is printed
//! with its message. The variable is read once, at the first refusal.

use std::any::Any;
use std::io::Write;
use std::sync::OnceLock;

use crate::error::IcdError;

/// The variable's name.
pub const VARIABLE: &str = "EXTMEM_DEBUG";

/// Whether the debug output is on: the variable is set to something other than empty or
/// `0`.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os(VARIABLE).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// The line for `error`, refused by `entry` (without the newline).
pub fn refusal_line(entry: &str, error: &IcdError) -> String {
    let cause = error.cause();
    let mut known = Vec::new();
    if let Some(vuid) = cause.vuid {
        known.push(vuid.to_owned());
    }
    if let Some(op) = cause.op {
        known.push(format!("op {op:?}"));
    }
    if let Some(errno) = cause.errno {
        known.push(format!("errno {errno}"));
    }
    let result = error.result();
    if known.is_empty() {
        format!("extmem: {entry}: VK_{result:?}: {error}")
    } else {
        format!(
            "extmem: {entry}: VK_{result:?} ({}): {error}",
            known.join(", ")
        )
    }
}

/// The line for a panic with `payload` caught at `entry`.
pub fn panic_line(entry: &str, payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("extmem: {entry}: panic caught at the C boundary: {message}")
}

/// Prints the refusal of `entry` if the debug output is on.
pub fn refusal(entry: &str, error: &IcdError) {
    if enabled() {
        print(&refusal_line(entry, error));
    }
}

/// Prints the panic caught at `entry` if the debug output is on.
pub fn panic(entry: &str, payload: &(dyn Any + Send)) {
    if enabled() {
        print(&panic_line(entry, payload));
    }
}

/// One line to stderr. A failed write is dropped: the debug output must not add a
/// failure (`eprintln!` would panic, and this runs outside the panic guard).
fn print(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Rule;

    #[test]
    fn a_refusal_line_names_entry_result_vuid_op_and_errno() {
        let e = IcdError::from(extmem::Error::InvalidHandle(
            extmem::HandleError::HostRangeRefused {
                ptr: 0x1000,
                size: 0x2000,
                errno: 14,
            },
        ));
        assert_eq!(
            refusal_line("vkAllocateMemory", &e),
            "extmem: vkAllocateMemory: VK_ERROR_INVALID_EXTERNAL_HANDLE (op ImportHost, \
             errno 14): host range [0x1000, +0x2000) cannot be imported (errno 14)"
        );
        let rule = IcdError::rule(Rule::MapTwice, 0);
        assert_eq!(
            refusal_line("vkMapMemory", &rule),
            "extmem: vkMapMemory: VK_ERROR_VALIDATION_FAILED_EXT (VUID-vkMapMemory-memory-00678): \
             memory must not be currently host mapped (value 0x0)"
        );
        let layer = refusal_line(
            "vkEnumerateDeviceExtensionProperties",
            &IcdError::LayerNotPresent,
        );
        assert_eq!(
            layer,
            "extmem: vkEnumerateDeviceExtensionProperties: VK_ERROR_LAYER_NOT_PRESENT: the \
             driver has no layers"
        );
    }

    #[test]
    fn a_panic_line_carries_the_message() {
        let boxed: Box<dyn Any + Send> = Box::new("boom");
        assert_eq!(
            panic_line("vkQueueSubmit", &*boxed),
            "extmem: vkQueueSubmit: panic caught at the C boundary: boom"
        );
        let owned: Box<dyn Any + Send> = Box::new(String::from("index 3 out of range"));
        assert!(panic_line("vkCmdCopyBuffer", &*owned).ends_with("index 3 out of range"));
    }
}
