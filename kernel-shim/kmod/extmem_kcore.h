/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * The boundary between the extmem-vgpu C glue and extmem-kcore, the no_std Rust core
 * linked into the module (kernel-shim/core, built as a staticlib for x86_64-unknown-none
 * with -C code-model=kernel, or aarch64-unknown-none-softfloat, with -C
 * relocation-model=static; see .cargo/config.toml).
 *
 * Direction:
 *   extmem_kcore_*  are implemented in Rust and called by the C glue;
 *   extmem_plat_*   are implemented in C and called by Rust (the "platform").
 *
 * Rules:
 * - Every extmem_kcore_* function returns 0 or a negative errno (or a plain value where
 *   documented). None of them panics, sleeps on its own, or allocates: memory comes only
 *   through the platform callbacks.
 * - A VM is not thread-safe: the C glue serialises every call that takes a `vm` with the
 *   file's VM mutex. Callbacks may sleep (they run in process context under that mutex).
 * - The VM storage is allocated by C (kvzalloc of extmem_kcore_vm_size() bytes, aligned
 *   to at least extmem_kcore_vm_align()), initialised by extmem_kcore_vm_init and torn
 *   down by extmem_kcore_vm_fini before C frees it.
 * - `object` is an opaque cookie chosen by C (for VM_BIND, the glue's per-binding
 *   struct extmem_binding, which references the GEM object; for the pin ledger, the
 *   struct drm_gem_object pointer); kcore stores it and hands it back through the
 *   callbacks, never dereferences it.
 */
#ifndef EXTMEM_KCORE_H
#define EXTMEM_KCORE_H

#include <linux/types.h>
#include "extmem_vgpu_drm.h"

/* ---- implemented by kcore (Rust) ---------------------------------------------------- */

/*
 * The kernel's PAGE_SHIFT, given once at module init before any other call: GEM_CREATE
 * sizes and GEM_USERPTR ranges must be whole CPU pages, the pin ledger counts CPU pages,
 * and GET_PARAM reports CPU_PAGE_SIZE and MIN_IMPORT_ALIGNMENT from it. (The GPU keeps its
 * 4 KiB granule: VM_BIND and the copy engine work in 4 KiB pages whatever the CPU's.)
 * -EINVAL for a page size outside 4..64 KiB; until it is called, the calls that need it
 * return -EINVAL.
 */
int extmem_kcore_set_cpu_page_shift(u32 shift);

/* Bytes and alignment of the opaque per-file VM state. */
size_t extmem_kcore_vm_size(void);
size_t extmem_kcore_vm_align(void);

/*
 * Initialise the VM in `vm` (zeroed storage of extmem_kcore_vm_size() bytes) for the
 * extmem-vgpu profile; `plat` is handed back to every callback made for this VM.
 * Allocates the root page table. -ENOMEM if that fails.
 */
int extmem_kcore_vm_init(void *vm, void *plat);

/*
 * Tear the VM down: every binding is removed (extmem_plat_object_unbound is called once
 * for each), every page-table page freed, the pin records dropped. Safe on a VM whose
 * init failed (init must have been called, though: it is what makes the zeroed storage
 * valid) and on one torn down already.
 */
void extmem_kcore_vm_fini(void *vm);

/*
 * Argument checks that need no object or VM, so the C glue reports EINVAL/EOVERFLOW/ERANGE
 * before ENOENT for a bad handle. Each returns 0 or -errno.
 */
int extmem_kcore_check_gem_create(const struct drm_extmem_gem_create *args);
int extmem_kcore_check_gem_userptr(const struct drm_extmem_gem_userptr *args);
int extmem_kcore_check_vm_bind(const struct drm_extmem_vm_bind *args);
int extmem_kcore_check_exec(const struct drm_extmem_exec *args);

/*
 * GET_PARAM for the parameters the core owns (API version, VA/OA bits, GPU page sizes,
 * import alignment, max mapping, CPU page size). Returns 0 with args->value set, -EINVAL for non-zero pad or an
 * unknown param, or EXTMEM_KCORE_PLATFORM_PARAM (positive) for a param the C glue owns
 * (UUIDs, counters, LAST_PIN_NS).
 */
#define EXTMEM_KCORE_PLATFORM_PARAM 1
int extmem_kcore_get_param(struct drm_extmem_get_param *args);

/*
 * VM_BIND, op MAP: map [offset, offset + size) of `object` (object_size bytes, read-only
 * to the GPU if object_read_only) at args->va. Checks: VA range inside the VA space,
 * 4 KiB alignment, object range inside the object (-ERANGE), no overlap with an existing
 * binding (-EEXIST), binding table not full (-ENOSPC), READ_ONLY required for a read-only
 * object (-EACCES). Physical memory comes from extmem_plat_object_segment. On success the
 * binding holds `object` until it is unbound: the C glue takes one reference on it right
 * after a successful call (under the same VM mutex). On failure nothing has changed.
 *
 * VM_BIND, op UNMAP: remove the binding that starts at args->va with exactly args->size
 * bytes (-ENOENT if there is none); extmem_plat_object_unbound is called for its object.
 * `object`, object_size and object_read_only are ignored.
 */
int extmem_kcore_vm_bind(void *vm, const struct drm_extmem_vm_bind *args, u64 object,
			 u64 object_size, bool object_read_only);

/*
 * VM_QUERY: translate args->va. args->pa is filled only if `privileged`. 0 even when
 * unmapped (flags tell); -EINVAL for non-zero pad, -ERANGE outside the VA space.
 */
int extmem_kcore_vm_query(void *vm, struct drm_extmem_vm_query *args, bool privileged);

/*
 * EXEC: run `cmds` (args->count of them, already copied into the kernel and checked by
 * extmem_kcore_check_exec) in order. Every byte is accessed through the VM's page tables
 * via extmem_plat_copy_run / extmem_plat_fill_run, one contiguous stretch at a time.
 * Returns 0, or -EINVAL for a malformed command (bad op, non-zero unused field, zero
 * size, wrapping range, unaligned FILL) with args->fault_cmd set to its index: every
 * command is checked before any runs, so then nothing has run. Or -EIO on a GPU fault
 * with fault_va (the first byte that could not be accessed) / fault_cmd / fault_kind set:
 * commands before the faulting one have run, and the faulting one up to fault_va. Or
 * -EFAULT if the platform refused (fault_cmd, fault_va set, fault_kind NONE).
 */
int extmem_kcore_exec(void *vm, struct drm_extmem_exec *args, const struct drm_extmem_cmd *cmds);

/* EXEC: one wait or signal syncobj's flags (0 or -EINVAL). */
int extmem_kcore_check_exec_sync(const struct drm_extmem_exec_sync *sync);

/*
 * EXEC at submission: checks args and every command as extmem_kcore_exec would (-EINVAL
 * with args->fault_cmd naming a malformed command; nothing is visited then), then calls
 * visit(ctx, object, write) for every binding a command side overlaps as the bindings
 * stand now: a COPY's source as a read, every destination as a write (an object can come
 * more than once). A negative return from `visit` stops the walk and is returned. `visit`
 * must not call into this VM; the caller holds the VM mutex.
 */
int extmem_kcore_exec_objects(const void *vm, struct drm_extmem_exec *args,
			      const struct drm_extmem_cmd *cmds, void *ctx,
			      int (*visit)(void *ctx, u64 object, bool write));

/* Counters of one VM: page-table pages held (root included), bindings alive. */
u64 extmem_kcore_vm_table_pages(const void *vm);
u64 extmem_kcore_vm_bindings(const void *vm);

/*
 * The file's ledger of pinned host ranges (GEM_USERPTR), one record per object; serialised
 * like every call that takes `vm`. The C glue pins and charges RLIMIT_MEMLOCK itself; the
 * ledger keeps the file's count exact and refuses a second record for one object.
 * Overlapping ranges of different objects are fine (Vulkan may import a pointer twice).
 *
 * pin_add: `pages` are CPU pages (PAGE_SIZE); -EINVAL for zero pages or a start not
 * aligned to PAGE_SIZE, -EOVERFLOW if start + pages * PAGE_SIZE wraps, -EEXIST if `object`
 * has a record, -ENOSPC when full (1024 records per file).
 * pin_remove: forgets the record of `object` and stores its page count in *pages (if
 * `pages` is not NULL); -ENOENT if there is none.
 * vm_pinned_pages: pages recorded for this file. vm_fini drops every record.
 */
int extmem_kcore_pin_add(void *vm, u64 object, u64 start, u64 pages);
int extmem_kcore_pin_remove(void *vm, u64 object, u64 *pages);
u64 extmem_kcore_vm_pinned_pages(const void *vm);

/*
 * Run the core's self-tests (hw descriptor encoding, page-table map/unmap/split, VM bind
 * validation, copy engine over a VM) inside the kernel. Each KTAP line is passed to
 * `emit` without a trailing newline. Returns the number of failed tests. Uses the
 * platform's table callbacks with `plat` for its VMs.
 */
int extmem_kcore_selftest(void *plat, void (*emit)(const char *line));

/* ---- implemented by the C glue (platform) ------------------------------------------- */

/* A zeroed, 4 KiB-aligned page for a page table: its physical address, or 0. */
u64 extmem_plat_alloc_table(void *plat);
/* Give back a page from extmem_plat_alloc_table. */
void extmem_plat_free_table(void *plat, u64 pa);
/* Read / write the 64-bit descriptor at physical address `pa` of a table page. */
u64 extmem_plat_read_u64(void *plat, u64 pa);
void extmem_plat_write_u64(void *plat, u64 pa, u64 value);
/* The same for `count` consecutive descriptors from `pa`, all inside one table page. */
void extmem_plat_read_u64s(void *plat, u64 pa, u64 *out, size_t count);
void extmem_plat_write_u64s(void *plat, u64 pa, const u64 *values, size_t count);

/*
 * Copy-engine memory access. `len` bytes, never crossing a 4 KiB page boundary on either
 * side. Return 0, or -EFAULT if a physical address is not RAM the device may touch.
 */
int extmem_plat_copy(void *plat, u64 dst_pa, u64 src_pa, u64 len);
int extmem_plat_fill(void *plat, u64 dst_pa, u32 value, u64 len);
/*
 * The same over one physically contiguous range per side that may cross pages, with the
 * effect of extmem_plat_copy / extmem_plat_fill on each page-bounded piece in turn (a
 * COPY's sides may overlap). *done is set to the bytes moved: all `len` on 0; on -EFAULT,
 * those of the pieces before the one that faulted.
 */
int extmem_plat_copy_run(void *plat, u64 dst_pa, u64 src_pa, u64 len, u64 *done);
int extmem_plat_fill_run(void *plat, u64 dst_pa, u32 value, u64 len, u64 *done);

/*
 * The physically contiguous run of `object` that holds byte `offset`: its physical
 * address and how many bytes of the object follow from `offset` in it (> 0, page-
 * aligned). -ERANGE if offset is past the end.
 */
int extmem_plat_object_segment(void *plat, u64 object, u64 offset, u64 *pa, u64 *len);

/* A binding that held `object` is gone: drop the reference taken when it was bound. */
void extmem_plat_object_unbound(void *plat, u64 object);

/*
 * kcore's panic handler calls this. kcore is built so that no panic is reachable
 * (kernel-shim/core/tests/no_panic.rs checks the object), so the shipped object does not
 * reference it; if a future object does, it must not return (BUG()).
 */
void extmem_plat_panic(const char *msg) __attribute__((noreturn));

#endif /* EXTMEM_KCORE_H */
