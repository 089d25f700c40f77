//! Every Valid Usage rule `userspace/core/VUIDS.md` lists is checked through the C API by
//! `tests/c/capi_test.c` (its table names the VUID each input must give), except the rules
//! only a Windows device can reach, listed here with that reason: libextmem is the Linux
//! build of the memory manager and has no Win32 entry points.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Rules whose check needs Win32 sharing (`Platform::Windows` with `DeviceCaps::win32`)
/// or a Win32 entry point (`vkGetMemoryWin32HandleKHR`, `...PropertiesKHR`,
/// `vkGetMemoryWin32HandleNV`); on Linux validation stops at 09861 first.
const WINDOWS_ONLY: &[&str] = &[
    "VUID-VkImportMemoryWin32HandleInfoKHR-handle-01441",
    "VUID-VkImportMemoryWin32HandleInfoKHR-handleType-01439",
    "VUID-VkImportMemoryWin32HandleInfoKHR-handle-00659",
    "VUID-VkMemoryGetWin32HandleInfoKHR-handleType-00662",
    "VUID-VkMemoryGetWin32HandleInfoKHR-handleType-00663",
    "VUID-VkMemoryGetWin32HandleInfoKHR-handleType-00664",
    "VUID-vkGetMemoryWin32HandlePropertiesKHR-handleType-00666",
    "VUID-vkGetMemoryWin32HandleNV-handleType-01326",
];

/// Rules of the fence and semaphore fd commands (`extmem::sync`): libextmem's C API is the
/// memory manager and has no synchronisation entry points, so only the ICD (icd-e2e in the
/// guest, the unit tests of `extmem::sync`) reaches them.
const SYNC_ONLY: &[&str] = &[
    "VUID-VkSemaphoreGetFdInfoKHR-handleType-01132",
    "VUID-VkSemaphoreGetFdInfoKHR-handleType-01136",
    "VUID-VkSemaphoreGetFdInfoKHR-handleType-03253",
    "VUID-VkSemaphoreGetFdInfoKHR-handleType-03254",
    "VUID-VkImportSemaphoreFdInfoKHR-handleType-01143",
    "VUID-VkImportSemaphoreFdInfoKHR-fd-01544",
    "VUID-VkImportSemaphoreFdInfoKHR-handleType-07307",
    "VUID-VkImportSemaphoreFdInfoKHR-flags-03323",
    "VUID-VkFenceGetFdInfoKHR-handleType-01453",
    "VUID-VkFenceGetFdInfoKHR-handleType-01454",
    "VUID-VkFenceGetFdInfoKHR-handleType-01456",
    "VUID-VkImportFenceFdInfoKHR-handleType-01464",
    "VUID-VkImportFenceFdInfoKHR-fd-01541",
    "VUID-VkImportFenceFdInfoKHR-handleType-07306",
    "VUID-vkImportSemaphoreFdKHR-semaphore-01142",
    "VUID-vkImportFenceFdKHR-fence-01463",
];

fn read(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The backticked `VUID-...` strings in `text`.
fn vuids(text: &str) -> BTreeSet<String> {
    text.split(['`', '"'])
        .filter(|word| word.starts_with("VUID-") && !word.contains(' '))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_linux_rule_of_vuids_md_is_checked_from_c() {
    // The rules are the rows of its tables; its prose also names rules it does not check.
    let table_rows: String = read("../core/VUIDS.md")
        .lines()
        .filter(|line| line.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    let listed = vuids(&table_rows);
    let in_c = vuids(&read("tests/c/capi_test.c"));
    assert!(listed.len() >= 40, "VUIDS.md lists only {}", listed.len());
    let windows: BTreeSet<String> = WINDOWS_ONLY
        .iter()
        .chain(SYNC_ONLY)
        .map(|s| (*s).to_owned())
        .collect();
    let missing: Vec<&String> = listed
        .iter()
        .filter(|v| !in_c.contains(*v) && !windows.contains(*v))
        .collect();
    assert!(
        missing.is_empty(),
        "not checked by capi_test.c: {missing:?}"
    );
    let stale: Vec<&String> = windows.iter().filter(|v| !listed.contains(*v)).collect();
    assert!(stale.is_empty(), "no longer in VUIDS.md: {stale:?}");
    let unknown: Vec<&String> = in_c.iter().filter(|v| !listed.contains(*v)).collect();
    assert!(
        unknown.is_empty(),
        "capi_test.c expects rules VUIDS.md lacks: {unknown:?}"
    );
}
