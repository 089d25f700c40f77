//! Win32 errors as the errno values `extmem` interprets, in one place: the memory manager
//! and its tests speak errno on both systems (`ENOENT` for an unknown name or token,
//! `EBADF` for a value that is not a handle, `EEXIST` for a taken name).

use extmem_uapi::errno;
use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_COMMITMENT_LIMIT,
    ERROR_FILE_NOT_FOUND, ERROR_INVALID_HANDLE, ERROR_NOT_ENOUGH_MEMORY, ERROR_OUTOFMEMORY,
    WIN32_ERROR,
};

use crate::error::OsError;
use crate::shared_memory::MemoryError;

/// The errno for a Win32 error code; `EINVAL` for every code without a closer one.
pub fn errno_of(code: WIN32_ERROR) -> i32 {
    match code {
        ERROR_INVALID_HANDLE => errno::EBADF,
        ERROR_FILE_NOT_FOUND => errno::ENOENT,
        ERROR_ALREADY_EXISTS => errno::EEXIST,
        ERROR_ACCESS_DENIED => errno::EACCES,
        ERROR_NOT_ENOUGH_MEMORY | ERROR_OUTOFMEMORY | ERROR_COMMITMENT_LIMIT => errno::ENOMEM,
        _ => errno::EINVAL,
    }
}

/// The calling thread's last Win32 error, as the failure of `call`.
pub fn last_error(call: &'static str) -> MemoryError {
    // SAFETY: reads the calling thread's last-error value; no arguments.
    let code = unsafe { GetLastError() };
    MemoryError::Os(OsError {
        call,
        errno: errno_of(code),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_core_relies_on_map_to_their_errno() {
        assert_eq!(errno_of(ERROR_INVALID_HANDLE), errno::EBADF);
        assert_eq!(errno_of(ERROR_FILE_NOT_FOUND), errno::ENOENT);
        assert_eq!(errno_of(ERROR_ALREADY_EXISTS), errno::EEXIST);
        assert_eq!(errno_of(ERROR_ACCESS_DENIED), errno::EACCES);
        assert_eq!(errno_of(ERROR_COMMITMENT_LIMIT), errno::ENOMEM);
        assert_eq!(errno_of(87), errno::EINVAL, "ERROR_INVALID_PARAMETER");
    }
}
