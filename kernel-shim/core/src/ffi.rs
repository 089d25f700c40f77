//! The C ABI of `kernel-shim/kmod/extmem_kcore.h`: the `extmem_kcore_*` entry points the
//! C glue calls, and the `extmem_plat_*` callbacks that make up the kernel [`Platform`].
//!
//! Each entry point checks its pointers, turns them into references once, and calls the
//! plain Rust function; the result becomes 0 or `-errno` in [`errno::to_return`]. This is
//! the crate's only module with `unsafe`.

use core::ffi::{c_char, c_int, c_void};
use core::mem::{align_of, size_of};
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU32, Ordering};

use extmem_hw::{HostVa, PhysAddr};
use extmem_uapi::{
    Cmd, Exec, ExecSync, GemCreate, GemUserptr, GetParam, VmBind, VmQuery, MAX_EXEC_CMDS,
};

use crate::args;
use crate::copy_engine::TouchError;
use crate::cpu_page::{CpuPage, CpuPageError};
use crate::errno::{self, to_return, ToErrno};
use crate::params::{self, ParamAnswer};
use crate::pin_registry::{PinRegistry, PINS_MAX};
use crate::platform::{MemoryFault, ObjectId, Platform, RunFault, Segment, SegmentError};
use crate::selftest::{self, Line};
use crate::vm::{BoundObject, Vm};
use crate::PROFILE;

extern "C" {
    fn extmem_plat_alloc_table(plat: *mut c_void) -> u64;
    fn extmem_plat_free_table(plat: *mut c_void, pa: u64);
    fn extmem_plat_read_u64(plat: *mut c_void, pa: u64) -> u64;
    fn extmem_plat_write_u64(plat: *mut c_void, pa: u64, value: u64);
    fn extmem_plat_read_u64s(plat: *mut c_void, pa: u64, out: *mut u64, count: usize);
    fn extmem_plat_write_u64s(plat: *mut c_void, pa: u64, values: *const u64, count: usize);
    fn extmem_plat_copy(plat: *mut c_void, dst_pa: u64, src_pa: u64, len: u64) -> c_int;
    fn extmem_plat_fill(plat: *mut c_void, dst_pa: u64, value: u32, len: u64) -> c_int;
    fn extmem_plat_copy_run(
        plat: *mut c_void,
        dst_pa: u64,
        src_pa: u64,
        len: u64,
        done: *mut u64,
    ) -> c_int;
    fn extmem_plat_fill_run(
        plat: *mut c_void,
        dst_pa: u64,
        value: u32,
        len: u64,
        done: *mut u64,
    ) -> c_int;
    fn extmem_plat_object_segment(
        plat: *mut c_void,
        object: u64,
        offset: u64,
        pa: *mut u64,
        len: *mut u64,
    ) -> c_int;
    fn extmem_plat_object_unbound(plat: *mut c_void, object: u64);
    #[cfg(target_os = "none")]
    fn extmem_plat_panic(msg: *const c_char) -> !;
}

/// The kernel platform: the C glue's opaque `plat` pointer, handed back to every callback.
///
/// A null pointer is a valid value (the zeroed VM storage holds one before init).
#[derive(Clone, Copy, Debug)]
struct KernelPlatform {
    plat: *mut c_void,
}

impl Platform for KernelPlatform {
    fn alloc_table(&self) -> Option<PhysAddr> {
        // SAFETY: the header's contract: any `plat` the glue passed in, in process
        // context under the VM mutex. Returns a page's address or 0.
        let pa = unsafe { extmem_plat_alloc_table(self.plat) };
        (pa != 0).then_some(PhysAddr::new(pa))
    }

    fn free_table(&self, table: PhysAddr) {
        // SAFETY: `table` came from extmem_plat_alloc_table with this `plat` (the page
        // table frees only pages it allocated).
        unsafe { extmem_plat_free_table(self.plat, table.get()) }
    }

    fn read_u64(&self, pa: PhysAddr) -> u64 {
        // SAFETY: `pa` is a descriptor (or self-test word) inside a page from
        // extmem_plat_alloc_table.
        unsafe { extmem_plat_read_u64(self.plat, pa.get()) }
    }

    fn write_u64(&self, pa: PhysAddr, value: u64) {
        // SAFETY: as for read_u64.
        unsafe { extmem_plat_write_u64(self.plat, pa.get(), value) }
    }

    fn read_u64s(&self, pa: PhysAddr, out: &mut [u64]) {
        // SAFETY: `out` is valid for `out.len()` writes; the words are descriptors of one
        // page from extmem_plat_alloc_table (the C side checks the range stays in it).
        unsafe { extmem_plat_read_u64s(self.plat, pa.get(), out.as_mut_ptr(), out.len()) }
    }

    fn write_u64s(&self, pa: PhysAddr, values: &[u64]) {
        // SAFETY: `values` is valid for `values.len()` reads; as for read_u64s.
        unsafe { extmem_plat_write_u64s(self.plat, pa.get(), values.as_ptr(), values.len()) }
    }

    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemoryFault> {
        // SAFETY: the copy engine passes ranges inside one 4 KiB page on each side, taken
        // from the page tables; the platform checks that they are RAM it may touch.
        let rc = unsafe { extmem_plat_copy(self.plat, dst.get(), src.get(), len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(MemoryFault)
        }
    }

    fn copy_run(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), RunFault> {
        let mut done = 0u64;
        // SAFETY: the copy engine passes two physically contiguous ranges taken from the
        // page tables; the platform checks every page is RAM it may touch before it moves
        // a byte of it. `done` is valid for writes for the duration of the call.
        let rc = unsafe { extmem_plat_copy_run(self.plat, dst.get(), src.get(), len, &mut done) };
        run_result(rc, done, len)
    }

    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault> {
        // SAFETY: as for copy.
        let rc = unsafe { extmem_plat_fill(self.plat, dst.get(), value, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(MemoryFault)
        }
    }

    fn fill_run(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), RunFault> {
        let mut done = 0u64;
        // SAFETY: as for copy_run.
        let rc = unsafe { extmem_plat_fill_run(self.plat, dst.get(), value, len, &mut done) };
        run_result(rc, done, len)
    }

    fn object_segment(&self, object: ObjectId, offset: u64) -> Result<Segment, SegmentError> {
        let (mut pa, mut len) = (0u64, 0u64);
        // SAFETY: `object` is the cookie the glue gave for this bind; `pa` and `len` are
        // valid for writes for the duration of the call.
        let rc =
            unsafe { extmem_plat_object_segment(self.plat, object.0, offset, &mut pa, &mut len) };
        match rc {
            0 => Ok(Segment {
                pa: PhysAddr::new(pa),
                len,
            }),
            rc if rc == -errno::ERANGE => Err(SegmentError::PastEnd),
            rc => Err(SegmentError::Failed {
                errno: rc.checked_neg().unwrap_or(errno::EIO),
            }),
        }
    }

    fn object_unbound(&self, object: ObjectId) {
        // SAFETY: `object` is the cookie of a binding that is gone; the glue drops the
        // reference it took for it.
        unsafe { extmem_plat_object_unbound(self.plat, object.0) }
    }
}

/// A run callback's answer: 0 when all `len` bytes moved, else a fault after `done` bytes
/// (clamped to the run: the C side never reports more than it was given).
fn run_result(rc: c_int, done: u64, len: u64) -> Result<(), RunFault> {
    if rc == 0 {
        Ok(())
    } else {
        Err(RunFault {
            done: done.min(len),
        })
    }
}

/// What the C glue allocates per file: the VM and the pin registry.
///
/// # Invariants
/// Every field is valid as all-zero bytes except `vm.table`, which
/// [`extmem_kcore_vm_init`] writes before anything else reads the storage.
struct KernelFile {
    vm: Vm<KernelPlatform>,
    pins: PinRegistry<PINS_MAX>,
}

/// The file state at `vm`, or `None` for a null or misaligned pointer.
///
/// # Safety
/// `vm` is null or points to `extmem_kcore_vm_size()` bytes that `extmem_kcore_vm_init`
/// initialised, not yet freed, and no other reference to them is alive (the glue holds
/// the VM mutex for the call).
unsafe fn file<'a>(vm: *mut c_void) -> Option<&'a mut KernelFile> {
    let file = vm.cast::<KernelFile>();
    if file.is_null() || !file.is_aligned() {
        return None;
    }
    // SAFETY: non-null and aligned (checked); initialised and exclusively ours for the
    // call (the caller's contract).
    Some(unsafe { &mut *file })
}

/// As [`file`], shared.
///
/// # Safety
/// As for [`file`], except that other shared references may be alive.
unsafe fn file_ref<'a>(vm: *const c_void) -> Option<&'a KernelFile> {
    let file = vm.cast::<KernelFile>();
    if file.is_null() || !file.is_aligned() {
        return None;
    }
    // SAFETY: non-null and aligned (checked); initialised (the caller's contract).
    Some(unsafe { &*file })
}

/// `*ptr`, or `None` if null or misaligned.
///
/// # Safety
/// `ptr` is null or points to a valid `T` for the call.
unsafe fn arg<'a, T>(ptr: *const T) -> Option<&'a T> {
    if ptr.is_null() || !ptr.is_aligned() {
        return None;
    }
    // SAFETY: non-null and aligned (checked), valid (the caller's contract).
    Some(unsafe { &*ptr })
}

/// `*ptr`, mutable, or `None` if null or misaligned.
///
/// # Safety
/// `ptr` is null or points to a valid `T` that nothing else references for the call.
unsafe fn arg_mut<'a, T>(ptr: *mut T) -> Option<&'a mut T> {
    if ptr.is_null() || !ptr.is_aligned() {
        return None;
    }
    // SAFETY: non-null and aligned (checked), valid and exclusive (the caller's contract).
    Some(unsafe { &mut *ptr })
}

const EINVAL: c_int = -errno::EINVAL;

/// The running kernel's `PAGE_SHIFT`, from `extmem_kcore_set_cpu_page_shift` at module
/// init; 0 until then. An atomic rather than a field of each file because GET_PARAM and
/// the argument checks run without one.
static CPU_PAGE_SHIFT: AtomicU32 = AtomicU32::new(0);

/// The CPU page the glue gave; an error until it has.
fn cpu_page() -> Result<CpuPage, CpuPageError> {
    match CPU_PAGE_SHIFT.load(Ordering::Relaxed) {
        0 => Err(CpuPageError::Unset),
        shift => CpuPage::from_shift(shift),
    }
}

/// Tells kcore the kernel's `PAGE_SHIFT`, before any other entry point runs: it decides
/// what `GEM_CREATE` and `GEM_USERPTR` accept, the pin ledger's unit and what GET_PARAM
/// reports. 0, or -EINVAL for a page size kcore does not support (outside 4..=64 KiB).
#[no_mangle]
pub extern "C" fn extmem_kcore_set_cpu_page_shift(shift: u32) -> c_int {
    match CpuPage::from_shift(shift) {
        Ok(_) => {
            CPU_PAGE_SHIFT.store(shift, Ordering::Relaxed);
            0
        }
        Err(e) => to_return(Err(e)),
    }
}

/// Bytes of the opaque per-file state.
#[no_mangle]
pub extern "C" fn extmem_kcore_vm_size() -> usize {
    size_of::<KernelFile>()
}

/// Alignment of the opaque per-file state.
#[no_mangle]
pub extern "C" fn extmem_kcore_vm_align() -> usize {
    align_of::<KernelFile>()
}

/// Initialises the per-file state in zeroed storage.
///
/// # Safety
/// `vm` points to `extmem_kcore_vm_size()` zeroed bytes aligned to
/// `extmem_kcore_vm_align()`, owned by the caller; `plat` is what the callbacks expect.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_vm_init(vm: *mut c_void, plat: *mut c_void) -> c_int {
    let storage = vm.cast::<KernelFile>();
    if storage.is_null() || !storage.is_aligned() {
        return EINVAL;
    }
    // SAFETY: `storage` is non-null, aligned and points to zeroed bytes the caller owns
    // (checked / the caller's contract). `vm.table` is the one field for which zero bytes
    // are not known to be valid, so it is written in place first; no reference to the
    // storage exists yet.
    unsafe { addr_of_mut!((*storage).vm.table).write(None) };
    // SAFETY: every other field is valid as zero bytes (`KernelFile`'s invariant), so the
    // storage now holds a valid `KernelFile`; the caller gives us exclusive access.
    let Some(file) = (unsafe { file(vm) }) else {
        return EINVAL;
    };
    to_return(file.vm.init(KernelPlatform { plat }))
}

/// Tears the per-file state down: every binding goes, every table page is freed.
///
/// # Safety
/// As for [`file`]: `vm` went through `extmem_kcore_vm_init` (successful or not).
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_vm_fini(vm: *mut c_void) {
    // SAFETY: the caller's contract.
    if let Some(file) = unsafe { file(vm) } {
        file.vm.fini();
        file.pins.clear();
    }
}

/// `GEM_CREATE` argument checks.
///
/// # Safety
/// `args` is null or points to a valid struct.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_check_gem_create(args: *const GemCreate) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { arg(args) } {
        Some(args) => match cpu_page() {
            Ok(page) => to_return(args::check_gem_create(args, PROFILE, page)),
            Err(e) => to_return(Err(e)),
        },
        None => EINVAL,
    }
}

/// `GEM_USERPTR` argument checks.
///
/// # Safety
/// `args` is null or points to a valid struct.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_check_gem_userptr(args: *const GemUserptr) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { arg(args) } {
        Some(args) => match cpu_page() {
            Ok(page) => to_return(args::check_gem_userptr(args, PROFILE, page)),
            Err(e) => to_return(Err(e)),
        },
        None => EINVAL,
    }
}

/// `VM_BIND` argument checks.
///
/// # Safety
/// `args` is null or points to a valid struct.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_check_vm_bind(args: *const VmBind) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { arg(args) } {
        Some(args) => to_return(args::check_vm_bind(args, PROFILE)),
        None => EINVAL,
    }
}

/// `EXEC` argument checks.
///
/// # Safety
/// `args` is null or points to a valid struct.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_check_exec(args: *const Exec) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { arg(args) } {
        Some(args) => to_return(args::check_exec(args)),
        None => EINVAL,
    }
}

/// `GET_PARAM` for the parameters the core owns.
///
/// # Safety
/// `args` is null or points to a valid struct nothing else references.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_get_param(args: *mut GetParam) -> c_int {
    /// `EXTMEM_KCORE_PLATFORM_PARAM`.
    const PLATFORM_PARAM: c_int = 1;
    // SAFETY: the caller's contract.
    let Some(args) = (unsafe { arg_mut(args) }) else {
        return EINVAL;
    };
    let page = match cpu_page() {
        Ok(page) => page,
        Err(e) => return to_return(Err(e)),
    };
    match params::get_param(args, PROFILE, page) {
        Ok(ParamAnswer::Core(_)) => 0,
        Ok(ParamAnswer::Platform) => PLATFORM_PARAM,
        Err(e) => to_return(Err(e)),
    }
}

/// `VM_BIND`.
///
/// # Safety
/// `vm` as for [`file`]; `args` null or valid.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_vm_bind(
    vm: *mut c_void,
    args: *const VmBind,
    object: u64,
    object_size: u64,
    object_read_only: bool,
) -> c_int {
    // SAFETY: the caller's contract.
    let (Some(file), Some(args)) = (unsafe { file(vm) }, unsafe { arg(args) }) else {
        return EINVAL;
    };
    let object = BoundObject {
        id: ObjectId(object),
        size: object_size,
        read_only: object_read_only,
    };
    to_return(file.vm.bind(args, object))
}

/// `VM_QUERY`.
///
/// # Safety
/// `vm` as for [`file`]; `args` null or valid and not referenced elsewhere.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_vm_query(
    vm: *mut c_void,
    args: *mut VmQuery,
    privileged: bool,
) -> c_int {
    // SAFETY: the caller's contract.
    let (Some(file), Some(args)) = (unsafe { file_ref(vm) }, unsafe { arg_mut(args) }) else {
        return EINVAL;
    };
    to_return(file.vm.query(args, privileged))
}

/// `EXEC`.
///
/// # Safety
/// `vm` as for [`file`]; `args` null or valid and not referenced elsewhere; `cmds` points
/// to `args->count` commands (checked to be at most `MAX_EXEC_CMDS`).
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_exec(
    vm: *mut c_void,
    args: *mut Exec,
    cmds: *const Cmd,
) -> c_int {
    // SAFETY: the caller's contract, which is `batch`'s.
    match unsafe { batch(vm, args, cmds) } {
        Ok((file, args, cmds)) => to_return(file.vm.exec(args, cmds)),
        Err(ret) => ret,
    }
}

/// The VM, the arguments and the commands of an `EXEC` entry point, checked, or the
/// return value that refuses them.
///
/// # Safety
/// `vm` as for [`file_ref`]; `args` null or valid and not referenced elsewhere; `cmds`
/// points to `args->count` commands (checked to be at most `MAX_EXEC_CMDS`), which
/// nothing mutates while the returned slice lives.
unsafe fn batch<'a>(
    vm: *const c_void,
    args: *mut Exec,
    cmds: *const Cmd,
) -> Result<(&'a KernelFile, &'a mut Exec, &'a [Cmd]), c_int> {
    // SAFETY: the caller's contract.
    let (Some(file), Some(args)) = (unsafe { file_ref(vm) }, unsafe { arg_mut(args) }) else {
        return Err(EINVAL);
    };
    if let Err(e) = args::check_exec(args) {
        return Err(to_return(Err(e)));
    }
    if cmds.is_null() || !cmds.is_aligned() || args.count > MAX_EXEC_CMDS {
        return Err(EINVAL);
    }
    let Ok(count) = usize::try_from(args.count) else {
        return Err(EINVAL);
    };
    // SAFETY: non-null and aligned (checked); the caller copied `count` commands there
    // (at most MAX_EXEC_CMDS, checked), which nothing mutates during the call.
    let cmds = unsafe { core::slice::from_raw_parts(cmds, count) };
    Ok((file, args, cmds))
}

/// One wait or signal syncobj of `EXEC`: known flags.
///
/// # Safety
/// `sync` is null or points to a valid struct.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_check_exec_sync(sync: *const ExecSync) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { arg(sync) } {
        Some(sync) => to_return(args::check_exec_sync(sync)),
        None => EINVAL,
    }
}

/// The objects an `EXEC` batch reads and writes through the VM's bindings, each command
/// checked first. `visit` returns 0 to go on, or a negative errno that stops the walk and
/// is returned. (Its type is spelled out, not aliased, so that cbindgen prints the C
/// function-pointer type `extmem_kcore.h` is checked against.)
///
/// # Safety
/// `vm` as for [`file_ref`]; `args` null or valid and not referenced elsewhere; `cmds`
/// points to `args->count` commands (checked to be at most `MAX_EXEC_CMDS`); `visit` may
/// be called with `ctx` and must not call back into this VM.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_exec_objects(
    vm: *const c_void,
    args: *mut Exec,
    cmds: *const Cmd,
    ctx: *mut c_void,
    visit: Option<unsafe extern "C" fn(ctx: *mut c_void, object: u64, write: bool) -> c_int>,
) -> c_int {
    let Some(visit) = visit else {
        return EINVAL;
    };
    // SAFETY: the caller's contract, which is `batch`'s.
    let (file, args, cmds) = match unsafe { batch(vm, args, cmds) } {
        Ok(checked) => checked,
        Err(ret) => return ret,
    };
    let result = file.vm.touched(args, cmds, |object, write| {
        // SAFETY: the caller's contract for `visit` and `ctx`.
        match unsafe { visit(ctx, object.0, write) } {
            0 => Ok(()),
            ret => Err(ret),
        }
    });
    match result {
        Ok(()) => 0,
        Err(TouchError::Exec(e)) => to_return(Err(e)),
        // A visitor's own errno, negative already; anything else is the glue's mistake.
        Err(TouchError::Visit(ret)) if ret < 0 => ret,
        Err(TouchError::Visit(_)) => EINVAL,
    }
}

/// Page-table pages the VM holds.
///
/// # Safety
/// As for [`file_ref`].
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_vm_table_pages(vm: *const c_void) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { file_ref(vm) }.map_or(0, |f| u64::try_from(f.vm.table_pages()).unwrap_or(u64::MAX))
}

/// Bindings the VM holds.
///
/// # Safety
/// As for [`file_ref`].
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_vm_bindings(vm: *const c_void) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { file_ref(vm) }.map_or(0, |f| {
        u64::try_from(f.vm.bindings().len()).unwrap_or(u64::MAX)
    })
}

/// Records a pin of `pages` pages from host address `start` for `object`.
///
/// # Safety
/// As for [`file`].
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_pin_add(
    vm: *mut c_void,
    object: u64,
    start: u64,
    pages: u64,
) -> c_int {
    // SAFETY: the caller's contract.
    let Some(file) = (unsafe { file(vm) }) else {
        return EINVAL;
    };
    match cpu_page() {
        Ok(page) => to_return(
            file.pins
                .add(ObjectId(object), HostVa::new(start), pages, page),
        ),
        Err(e) => to_return(Err(e)),
    }
}

/// Forgets the pin of `object`; its page count goes to `*pages` (if not null).
///
/// # Safety
/// As for [`file`]; `pages` null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_pin_remove(
    vm: *mut c_void,
    object: u64,
    pages: *mut u64,
) -> c_int {
    // SAFETY: the caller's contract.
    let Some(file) = (unsafe { file(vm) }) else {
        return EINVAL;
    };
    match file.pins.remove(ObjectId(object)) {
        Ok(pin) => {
            // SAFETY: the caller's contract.
            if let Some(out) = unsafe { arg_mut(pages) } {
                *out = pin.pages;
            }
            0
        }
        Err(e) => -e.errno(),
    }
}

/// Pages this file has pinned.
///
/// # Safety
/// As for [`file_ref`].
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_vm_pinned_pages(vm: *const c_void) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { file_ref(vm) }.map_or(0, |f| f.pins.pinned_pages())
}

/// Runs the self-tests, one KTAP line per `emit` call; returns the number that failed.
///
/// # Safety
/// `plat` is what the callbacks expect; `emit` is null or a function that takes a
/// NUL-terminated string valid for the call.
#[no_mangle]
pub unsafe extern "C" fn extmem_kcore_selftest(
    plat: *mut c_void,
    emit: Option<unsafe extern "C" fn(line: *const c_char)>,
) -> c_int {
    let Some(emit) = emit else {
        return EINVAL;
    };
    let failed = selftest::run(&KernelPlatform { plat }, |line: &Line| {
        // SAFETY: the bytes are NUL-terminated (`Line`'s invariant) and live across the
        // call; `emit` takes such a string (the caller's contract).
        unsafe { emit(line.as_bytes_with_nul().as_ptr().cast::<c_char>()) };
    });
    c_int::try_from(failed).unwrap_or(c_int::MAX)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The no-panic test checks that nothing reaches this; if something does, the module
    // stops here (the glue BUG()s) rather than running on in an unknown state.
    // SAFETY: a static NUL-terminated string.
    unsafe { extmem_plat_panic(c"extmem-kcore: panic".as_ptr()) }
}
