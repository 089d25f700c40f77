// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * extmem-vgpu: the per-file GPU VM (VM_BIND, VM_QUERY) and the platform callbacks
 * extmem-kcore makes: page-table pages, physical memory access for the copy engine,
 * object segments and binding release.
 *
 * Physical memory is reached through the kernel's linear map (phys_to_virt()): the module
 * builds for 64-bit x86_64 and arm64 only, which have no highmem, so every page with a
 * struct page (pfn_valid()) sits in the linear map, and a physically contiguous range of
 * such pages is virtually contiguous there too. That is what lets the copy engine move a
 * whole contiguous run in one memcpy() instead of mapping it page by page; the checks
 * below still refuse a highmem page, should a 32-bit build ever appear.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/highmem.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include <drm/drm_file.h>
#include <drm/drm_gem.h>

#include "extmem_vgpu.h"

/* Copy-engine bytes between two cond_resched() calls. */
#define EXTMEM_RESCHED_BYTES (256 * 1024)
/*
 * The most one step of a run copy or fill moves: between steps the file's closing is
 * checked (cancellation) and the CPU may be given up, as after each page before.
 */
#define EXTMEM_RUN_STEP (256 * 1024)

/* ---- per-file VM -------------------------------------------------------------------- */

int extmem_file_vm_init(struct extmem_file *efile, struct extmem_device *edev)
{
	size_t size = extmem_kcore_vm_size();
	size_t align = extmem_kcore_vm_align();
	size_t alloc_size;
	int ret;

	if (!size || !is_power_of_2(align) || check_add_overflow(size, align - 1, &alloc_size))
		return -EINVAL;
	efile->vm_alloc = kvzalloc(alloc_size, GFP_KERNEL_ACCOUNT);
	if (!efile->vm_alloc)
		return -ENOMEM;
	efile->vm = PTR_ALIGN(efile->vm_alloc, align);
	efile->plat.edev = edev;
	efile->plat.efile = efile;

	ret = extmem_kcore_vm_init(efile->vm, &efile->plat);
	if (ret) {
		/* Safe on a VM whose init failed: frees whatever it had allocated. */
		extmem_kcore_vm_fini(efile->vm);
		kvfree(efile->vm_alloc);
		efile->vm_alloc = NULL;
		efile->vm = NULL;
	}
	return ret;
}

/* Puts the objects of the bindings on `unbound`, outside the VM lock. */
static void extmem_put_unbound(struct list_head *unbound)
{
	struct extmem_binding *binding, *next;

	list_for_each_entry_safe(binding, next, unbound, link) {
		list_del(&binding->link);
		extmem_bo_bind_finish(to_extmem_bo(binding->obj));
		drm_gem_object_put(binding->obj);
		kfree(binding);
	}
}

/*
 * Drops the VM lock, then releases the bindings kcore let go of while it was held. Every
 * kcore call that can unbind (VM_BIND UNMAP, vm_fini) ends with this, never with a bare
 * mutex_unlock().
 */
void extmem_vm_unlock(struct extmem_file *efile)
{
	LIST_HEAD(unbound);

	list_splice_init(&efile->unbound, &unbound);
	mutex_unlock(&efile->vm_lock);
	extmem_put_unbound(&unbound);
}

void extmem_file_vm_fini(struct extmem_file *efile)
{
	void *vm_alloc;

	mutex_lock(&efile->vm_lock);
	if (efile->vm)
		extmem_kcore_vm_fini(efile->vm);
	/* USERPTR objects released from here on find the ledger gone with the VM. */
	efile->vm_dead = true;
	vm_alloc = efile->vm_alloc;
	efile->vm_alloc = NULL;
	efile->vm = NULL;
	extmem_vm_unlock(efile);
	kvfree(vm_alloc);
}

/* ---- ioctls ------------------------------------------------------------------------- */

int extmem_ioctl_vm_bind(struct drm_device *drm, void *data, struct drm_file *file)
{
	struct extmem_device *edev = to_extmem_device(drm);
	struct extmem_file *efile = file->driver_priv;
	struct drm_extmem_vm_bind *args = data;
	struct extmem_binding *binding;
	struct drm_gem_object *obj;
	struct extmem_bo *bo;
	int ret;

	/* Argument errors first, so a bad handle does not hide them. */
	ret = extmem_kcore_check_vm_bind(args);
	if (ret)
		return ret;

	if (args->op == EXTMEM_BIND_UNMAP) {
		/*
		 * A queued job may still use the binding's page-table entries (and its object):
		 * they go only once every job of the file has finished.
		 */
		ret = extmem_file_wait_idle(efile, true);
		if (ret)
			return ret;
		ret = mutex_lock_interruptible(&efile->vm_lock);
		if (ret)
			return ret;
		ret = extmem_kcore_vm_bind(efile->vm, args, 0, 0, false);
		extmem_vm_unlock(efile);
		return ret;
	}

	obj = drm_gem_object_lookup(file, args->handle);
	if (!obj)
		return -ENOENT;
	bo = to_extmem_bo(obj);

	binding = kzalloc(sizeof(*binding), GFP_KERNEL_ACCOUNT);
	if (!binding) {
		ret = -ENOMEM;
		goto out_put;
	}
	binding->obj = obj;
	ret = extmem_bo_bind_prepare(bo);
	if (ret)
		goto out_free;
	ret = mutex_lock_interruptible(&efile->vm_lock);
	if (ret)
		goto out_finish;
	ret = extmem_kcore_vm_bind(efile->vm, args, (u64)(uintptr_t)binding, obj->size,
				   bo->read_only);
	if (!ret) {
		/* The binding's reference, dropped when kcore lets go of the binding. */
		drm_gem_object_get(obj);
		atomic64_inc(&edev->counters.bindings);
	}
	extmem_vm_unlock(efile);
	if (!ret)
		goto out_put;
out_finish:
	extmem_bo_bind_finish(bo);
out_free:
	kfree(binding);
out_put:
	drm_gem_object_put(obj);
	return ret;
}

int extmem_ioctl_vm_query(struct drm_device *drm, void *data, struct drm_file *file)
{
	struct extmem_file *efile = file->driver_priv;
	struct drm_extmem_vm_query *args = data;
	/* Physical addresses only for CAP_SYS_ADMIN (no info leak to render-node users). */
	bool privileged = capable(CAP_SYS_ADMIN);
	int ret;

	ret = mutex_lock_interruptible(&efile->vm_lock);
	if (ret)
		return ret;
	ret = extmem_kcore_vm_query(efile->vm, args, privileged);
	extmem_vm_unlock(efile);
	return ret;
}

/* ---- platform callbacks (called by kcore under the VM lock, process context) -------- */

static struct extmem_plat *to_plat(void *plat)
{
	return plat;
}

u64 extmem_plat_alloc_table(void *plat)
{
	struct extmem_device *edev = to_plat(plat)->edev;
	/* Charged to the caller's memory cgroup: userspace decides how many tables exist. */
	struct page *page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	u64 pa;

	if (!page)
		return 0;
	pa = page_to_phys(page);
	/* A descriptor holds output addresses below 1 << oa_bits only. */
	if (pa >= edev->oa_limit) {
		__free_page(page);
		return 0;
	}
	atomic64_inc(&edev->counters.pt_pages);
	return pa;
}

void extmem_plat_free_table(void *plat, u64 pa)
{
	if (WARN_ON_ONCE(!pfn_valid(PHYS_PFN(pa))))
		return;
	__free_page(pfn_to_page(PHYS_PFN(pa)));
	atomic64_dec(&to_plat(plat)->edev->counters.pt_pages);
}

/* Descriptor access: `pa` is inside a page from extmem_plat_alloc_table (kcore's rule). */
u64 extmem_plat_read_u64(void *plat, u64 pa)
{
	if (WARN_ON_ONCE(!IS_ALIGNED(pa, 8) || !pfn_valid(PHYS_PFN(pa))))
		return 0;
	return READ_ONCE(*(u64 *)phys_to_virt(pa));
}

void extmem_plat_write_u64(void *plat, u64 pa, u64 value)
{
	if (WARN_ON_ONCE(!IS_ALIGNED(pa, 8) || !pfn_valid(PHYS_PFN(pa))))
		return;
	WRITE_ONCE(*(u64 *)phys_to_virt(pa), value);
}

/*
 * `count` descriptors from `pa` within one table page. A plain word loop, not memcpy():
 * `rep movsb` is slow under emulation (see extmem_plat_copy), and a table scan is hot.
 */
static bool extmem_words_ok(u64 pa, size_t count)
{
	return IS_ALIGNED(pa, 8) && count <= (PAGE_SIZE - offset_in_page(pa)) / 8 &&
	       pfn_valid(PHYS_PFN(pa));
}

void extmem_plat_read_u64s(void *plat, u64 pa, u64 *out, size_t count)
{
	const u64 *table;
	size_t i;

	if (WARN_ON_ONCE(!extmem_words_ok(pa, count))) {
		for (i = 0; i < count; i++)
			out[i] = 0;
		return;
	}
	table = phys_to_virt(pa);
	for (i = 0; i < count; i++)
		out[i] = READ_ONCE(table[i]);
}

void extmem_plat_write_u64s(void *plat, u64 pa, const u64 *values, size_t count)
{
	u64 *table;
	size_t i;

	if (WARN_ON_ONCE(!extmem_words_ok(pa, count)))
		return;
	table = phys_to_virt(pa);
	for (i = 0; i < count; i++)
		WRITE_ONCE(table[i], values[i]);
}

/* `len` bytes at `pa` within one page, in RAM with a struct page. */
static bool extmem_pa_ok(u64 pa, u64 len)
{
	return len <= PAGE_SIZE - offset_in_page(pa) && pfn_valid(PHYS_PFN(pa));
}

/*
 * Whether the copy engine should stop: the file that runs the job is being closed (a
 * killed process), so its job ends at the next page with -EFAULT, which the job turns
 * into -ECANCELED.
 */
static bool extmem_plat_cancelled(struct extmem_plat *p)
{
	return p->efile && READ_ONCE(p->efile->closing);
}

static void extmem_plat_maybe_resched(struct extmem_plat *p, u64 len)
{
	p->since_resched += len;
	if (p->since_resched >= EXTMEM_RESCHED_BYTES) {
		p->since_resched = 0;
		cond_resched();
	}
}

int extmem_plat_copy(void *plat, u64 dst_pa, u64 src_pa, u64 len)
{
	void *dst, *src;

	if (!extmem_pa_ok(dst_pa, len) || !extmem_pa_ok(src_pa, len) || extmem_plat_cancelled(plat))
		return -EFAULT;
	dst = kmap_local_page(pfn_to_page(PHYS_PFN(dst_pa)));
	src = kmap_local_page(pfn_to_page(PHYS_PFN(src_pa)));
	/*
	 * Whole distinct pages go through copy_page(): memmove() is `rep movsb` on CPUs with
	 * ERMS/FSRM, one byte per iteration, which emulators (QEMU TCG) run several times
	 * slower than copy_page()'s `rep movsq` or register loop. Anything else may overlap
	 * (source and destination may be the same page: a copy inside one buffer).
	 */
	if (len == PAGE_SIZE && dst != src && !offset_in_page(dst_pa) && !offset_in_page(src_pa))
		copy_page(dst, src);
	else
		memmove(dst + offset_in_page(dst_pa), src + offset_in_page(src_pa), len);
	kunmap_local(src);
	kunmap_local(dst);
	extmem_plat_maybe_resched(plat, len);
	return 0;
}

int extmem_plat_fill(void *plat, u64 dst_pa, u32 value, u64 len)
{
	void *dst;

	/* FILL is 4-byte aligned (kcore checks dst and size; chunks keep the alignment). */
	if (!IS_ALIGNED(dst_pa | len, 4) || !extmem_pa_ok(dst_pa, len) || extmem_plat_cancelled(plat))
		return -EFAULT;
	dst = kmap_local_page(pfn_to_page(PHYS_PFN(dst_pa)));
	memset32(dst + offset_in_page(dst_pa), value, len / 4);
	kunmap_local(dst);
	extmem_plat_maybe_resched(plat, len);
	return 0;
}

/*
 * Whether [pa, pa + len) is RAM in the linear map: every page has a struct page and is not
 * highmem (never true on 64-bit; see the top of the file). `len` > 0.
 */
static bool extmem_linear_ok(u64 pa, u64 len)
{
	unsigned long pfn, last;
	u64 end;

	if (check_add_overflow(pa, len - 1, &end))
		return false;
	for (pfn = PHYS_PFN(pa), last = PHYS_PFN(end); pfn <= last; pfn++)
		if (!pfn_valid(pfn) || PageHighMem(pfn_to_page(pfn)))
			return false;
	return true;
}

/*
 * Copies `len` bytes between two non-overlapping ranges of the linear map. When both sit
 * at the same offset in their pages, the whole pages in between go through copy_page()
 * (see extmem_plat_copy for why not memcpy()), the partial ends through memcpy().
 */
static void extmem_copy_linear(void *dst, const void *src, u64 len)
{
	u64 head = 0, pages;

	if (offset_in_page(dst) == offset_in_page(src)) {
		head = min_t(u64, len, (PAGE_SIZE - offset_in_page(dst)) % PAGE_SIZE);
		memcpy(dst, src, head);
		for (pages = (len - head) >> PAGE_SHIFT; pages; pages--) {
			copy_page(dst + head, (void *)src + head);
			head += PAGE_SIZE;
		}
	}
	memcpy(dst + head, src + head, len - head);
}

/*
 * The page-bounded path of a run: extmem_plat_copy on each piece that crosses no page on
 * either side, front to back, as kcore's default copy_run does. Used where the fast path
 * would differ: overlapping ranges (a forward page-by-page copy is what the engine
 * promises) and a step that fails its checks (so `done` stops at the piece that faults).
 */
static int extmem_copy_pieces(struct extmem_plat *p, u64 dst_pa, u64 src_pa, u64 len, u64 *done)
{
	u64 off = 0;

	while (off < len) {
		u64 s = src_pa + off, d = dst_pa + off;
		u64 piece = min3(len - off, PAGE_SIZE - offset_in_page(s),
				 PAGE_SIZE - offset_in_page(d));
		int ret = extmem_plat_copy(p, d, s, piece);

		if (ret)
			return ret;
		off += piece;
		*done += piece;
	}
	return 0;
}

int extmem_plat_copy_run(void *plat, u64 dst_pa, u64 src_pa, u64 len, u64 *done)
{
	struct extmem_plat *p = to_plat(plat);
	u64 src_end, dst_end;

	*done = 0;
	if (!len)
		return 0;
	if (check_add_overflow(src_pa, len, &src_end) || check_add_overflow(dst_pa, len, &dst_end))
		return -EFAULT;
	/* Overlapping sides: piece by piece, the engine's front-to-back semantics. */
	if (src_pa < dst_end && dst_pa < src_end)
		return extmem_copy_pieces(p, dst_pa, src_pa, len, done);
	while (*done < len) {
		u64 off = *done, step = min_t(u64, len - off, EXTMEM_RUN_STEP);

		if (extmem_plat_cancelled(p) || !extmem_linear_ok(dst_pa + off, step) ||
		    !extmem_linear_ok(src_pa + off, step)) {
			/* Finds the piece that faults; what precedes it is copied. */
			int ret = extmem_copy_pieces(p, dst_pa + off, src_pa + off, step, done);

			if (ret)
				return ret;
			continue;
		}
		extmem_copy_linear(phys_to_virt(dst_pa + off), phys_to_virt(src_pa + off), step);
		*done += step;
		extmem_plat_maybe_resched(p, step);
	}
	return 0;
}

int extmem_plat_fill_run(void *plat, u64 dst_pa, u32 value, u64 len, u64 *done)
{
	struct extmem_plat *p = to_plat(plat);

	*done = 0;
	if (!IS_ALIGNED(dst_pa | len, 4))
		return -EFAULT;
	while (*done < len) {
		u64 off = *done, step = min_t(u64, len - off, EXTMEM_RUN_STEP);

		if (extmem_plat_cancelled(p) || !extmem_linear_ok(dst_pa + off, step)) {
			/* Page by page up to the piece that faults, as kcore's default does. */
			while (*done < off + step) {
				u64 d = dst_pa + *done;
				u64 piece = min_t(u64, off + step - *done,
						  PAGE_SIZE - offset_in_page(d));
				int ret = extmem_plat_fill(p, d, value, piece);

				if (ret)
					return ret;
				*done += piece;
			}
			continue;
		}
		memset32(phys_to_virt(dst_pa + off), value, step / 4);
		*done += step;
		extmem_plat_maybe_resched(p, step);
	}
	return 0;
}

/* The object cookie of a binding is its struct extmem_binding (extmem_ioctl_vm_bind). */
static struct extmem_binding *to_binding(u64 object)
{
	return (struct extmem_binding *)(uintptr_t)object;
}

int extmem_plat_object_segment(void *plat, u64 object, u64 offset, u64 *pa, u64 *len)
{
	return extmem_bo_segment(to_extmem_bo(to_binding(object)->obj), offset, pa, len);
}

/*
 * Called under the file's VM lock: the binding is queued and its object put by
 * extmem_vm_unlock(). Never for the self-test, which binds no GEM object.
 */
void extmem_plat_object_unbound(void *plat, u64 object)
{
	struct extmem_plat *p = to_plat(plat);

	if (WARN_ON_ONCE(!p->efile))
		return;
	list_add_tail(&to_binding(object)->link, &p->efile->unbound);
	atomic64_dec(&p->edev->counters.bindings);
}
