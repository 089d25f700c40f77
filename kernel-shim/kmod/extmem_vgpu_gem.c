// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * extmem-vgpu GEM objects, four kinds:
 *
 * SHMEM    GEM_CREATE: drm_gem_shmem helpers; pages pinned while the object is bound.
 * USERPTR  GEM_USERPTR: user pages pinned with FOLL_LONGTERM for the object's lifetime,
 *          charged to RLIMIT_MEMLOCK through mm->pinned_vm (as RDMA's ib_umem does).
 * DMABUF   PRIME import (extmem_gem_prime_import, drm_gem_prime_import_dev's steps): a
 *          static dma-buf attachment, mapped for this device for the object's lifetime.
 * FOREIGN  GEM_USERPTR on a CPU mapping of a dma-buf ("host-mapped foreign memory"):
 *          the dma-buf behind the VMA is attached the same way, and the object is the
 *          window of it the user range covers. Nothing is pinned with GUP.
 *
 * Physical addresses: the device has no IOMMU, so under dma-direct a DMA address is the
 * physical address. That is a property of the device, proven once at probe
 * (extmem_check_dma_is_physical in extmem_vgpu_drv.c). An importer must not look at the
 * pages behind a dma-buf's scatterlist (CONFIG_DMABUF_DEBUG mangles them to catch any
 * that does), so an import checks only its DMA ranges: page-aligned, covering the
 * object, and system RAM, the only memory the copy engine maps.
 *
 * The DMA API: whatever the copy engine reaches, it reaches through a table mapped for
 * the device's own struct device, and the addresses it is given are that table's DMA
 * addresses (bo->dma_runs, or a shared mapping's or attachment's runs). A shmem object
 * uses the shmem helper's table, pinned user pages a table of our own (extmem_user_dma_map)
 * shared by every object over the same pages, an import the attachment of its dma-buf,
 * shared by every object that imports it (extmem_share_* below). On boards whose DMA is not cache-coherent (arm64 -M virt here), the
 * mapping and the syncs around each job (extmem_bo_sync_for_device/_for_cpu) are the
 * cache maintenance; on x86-64 they cost a call and are what DMA-API debugging checks.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/backing-dev.h>
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/dma-resv.h>
#include <linux/ioport.h>
#include <linux/magic.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>

#include <drm/drm_drv.h>
#include <drm/drm_file.h>
#include <drm/drm_gem.h>
#include <drm/drm_prime.h>
#include <drm/drm_print.h>
#include <drm/drm_vma_manager.h>

#include "extmem_vgpu.h"
#include "extmem_vgpu_compat.h"

/*
 * The common part of a shared user mapping and a shared attachment: its place on a list
 * of the device and the number of objects using it, both under edev->share_lock.
 */
struct extmem_share {
	struct list_head link;
	unsigned int users;
};

/*
 * One attachment of a dma-buf to the device, mapped, with the runs of the whole dma-buf:
 * shared by every DMABUF and FOREIGN object that imports it. It holds no reference on
 * the dma-buf; each object holds its own, dropped only after its use of this.
 */
struct extmem_shared_attach {
	struct extmem_share share;
	struct dma_buf_attachment *attach;
	struct sg_table *sgt;
	struct extmem_runs runs;
};

/*
 * One DMA mapping of pinned user pages, shared by every USERPTR object that pinned the
 * same pages in the same order, read-only or writable: the device's only mapping of
 * them. DMA-API debugging tracks at most 7 simultaneous mappings of a cache line that
 * the device may write (and a page mapped once per import costs a mapping each), and an
 * application may import one host buffer any number of times (Vulkan allows it).
 *
 * The mapping is DMA_BIDIRECTIONAL whatever its objects' access (EXTMEM_USER_DMA_DIR),
 * so a writable object never shares a to-device mapping; each object's syncs keep to its
 * own access (extmem_bo_dma_dir). Each object keeps its own pin; the pages the table
 * names stay pinned while any object over them lives, and the last one unmaps before it
 * unpins.
 */
struct extmem_user_map {
	struct extmem_share share;
	unsigned long npages;
	struct sg_table sgt;
	struct extmem_runs dma_runs;
};

static void extmem_count_object(struct drm_device *drm, long delta)
{
	atomic64_add(delta, &to_extmem_device(drm)->counters.live_objects);
}

/* Host pointers and imports are importable only, never exported again (a Vulkan rule for
 * HOST_ALLOCATION memory; a FOREIGN object is a window, not a whole dma-buf). */
static struct dma_buf *extmem_no_export(struct drm_gem_object *obj, int flags)
{
	return ERR_PTR(-EOPNOTSUPP);
}

/* ---- SHMEM -------------------------------------------------------------------------- */

static void extmem_shmem_free(struct drm_gem_object *obj)
{
	struct drm_device *drm = obj->dev;
	struct extmem_bo *bo = to_extmem_bo(obj);
	u64 size = obj->size;

	/* Before drm_gem_shmem_free(), which frees `bo` (and unmaps the helper's table). */
	extmem_runs_free(&bo->dma_runs);
	drm_gem_shmem_free(&bo->shmem);
	atomic64_sub(size, &to_extmem_device(drm)->counters.device_bytes);
	extmem_count_object(drm, -1);
}

static struct dma_buf *extmem_shmem_export(struct drm_gem_object *obj, int flags);

static const struct drm_gem_object_funcs extmem_shmem_funcs = {
	.free = extmem_shmem_free,
	.export = extmem_shmem_export,
	.print_info = drm_gem_shmem_object_print_info,
	.pin = drm_gem_shmem_object_pin,
	.unpin = drm_gem_shmem_object_unpin,
	.get_sg_table = drm_gem_shmem_object_get_sg_table,
	.vmap = drm_gem_shmem_object_vmap,
	.vunmap = drm_gem_shmem_object_vunmap,
	.mmap = drm_gem_shmem_object_mmap,
	.vm_ops = &drm_gem_shmem_vm_ops,
};

/* drm_driver.gem_create_object: drm_gem_shmem_create() allocates through this. */
struct drm_gem_object *extmem_gem_create_object(struct drm_device *drm, size_t size)
{
	struct extmem_bo *bo = kzalloc(sizeof(*bo), GFP_KERNEL);

	if (!bo)
		return ERR_PTR(-ENOMEM);
	bo->kind = EXTMEM_OBJECT_SHMEM;
	/* Cached CPU mappings: the copy engine writes through the kernel's cached map. */
	bo->shmem.map_wc = false;
	bo->shmem.base.funcs = &extmem_shmem_funcs;
	return &bo->shmem.base;
}

int extmem_ioctl_gem_create(struct drm_device *drm, void *data, struct drm_file *file)
{
	struct extmem_device *edev = to_extmem_device(drm);
	struct drm_extmem_gem_create *args = data;
	struct drm_gem_shmem_object *shmem;
	u32 handle;
	int ret;

	ret = extmem_kcore_check_gem_create(args);
	if (ret)
		return ret;

	/* Charge first, so concurrent creates cannot both pass; the object's free uncharges. */
	if (atomic64_add_return(args->size, &edev->counters.device_bytes) > edev->device_budget) {
		atomic64_sub(args->size, &edev->counters.device_bytes);
		return -ENOMEM;
	}
	shmem = drm_gem_shmem_create(drm, args->size);
	if (IS_ERR(shmem)) {
		atomic64_sub(args->size, &edev->counters.device_bytes);
		return PTR_ERR(shmem);
	}
	extmem_count_object(drm, 1);

	ret = drm_gem_handle_create(file, &shmem->base, &handle);
	/* The handle holds the object now (or nothing does and this frees it). */
	drm_gem_object_put(&shmem->base);
	if (ret)
		return ret;
	args->handle = handle;
	return 0;
}

/* ---- SHMEM export: a table per attachment ----------------------------------------- */

static int extmem_shmem_dma_map(struct extmem_bo *bo);

/*
 * DRM's PRIME helpers (drm_gem_map_dma_buf, on 6.1 through 7.x) map for the importer one
 * table that obj->funcs->get_sg_table() built for the exporting device: its segments
 * are as long as *this* device allows, and an importer with a shorter limit (vgem's
 * 64 KiB) receives segments it cannot take, which DMA-API debugging reports. No helper
 * asks the importer, so the export has its own map/unmap: each attachment gets a table
 * built with the attaching device's dma_get_max_seg_size() and mapped for that device.
 *
 * Overlapping mappings: the object's pages are also mapped for this device (the shmem
 * helper's table, made at attach if no bind made it yet, so it always comes first), and
 * a dma-buf is mapped for every importer at once. DMA-API debugging refuses a second
 * mapping of the same cache lines that asks for CPU syncs, so importers' tables are
 * mapped with DMA_ATTR_SKIP_CPU_SYNC, as DRM's helper does, and synced explicitly: for
 * the importer at map (the object's CPU mappings are cached, so on a non-coherent
 * importer what the CPU wrote must be written back) and for the CPU at unmap.
 */
static int extmem_shmem_attach(struct dma_buf *dmabuf, struct dma_buf_attachment *attach)
{
	struct extmem_bo *bo = to_extmem_bo(dmabuf->priv);
	int ret = drm_gem_map_attach(dmabuf, attach);

	if (ret)
		return ret;
	/* Not under the reservation lock here, which the shmem helper takes. */
	ret = extmem_shmem_dma_map(bo);
	if (ret)
		drm_gem_map_detach(dmabuf, attach);
	return ret;
}

static struct sg_table *extmem_shmem_map_dma_buf(struct dma_buf_attachment *attach,
						 enum dma_data_direction dir)
{
	struct drm_gem_object *obj = attach->dmabuf->priv;
	struct extmem_bo *bo = to_extmem_bo(obj);
	unsigned int max_seg = dma_get_max_seg_size(attach->dev);
	struct sg_table *sgt;
	int ret;

	/* drm_gem_map_attach() pinned the object, so shmem.pages stays until detach. */
	if (WARN_ON_ONCE(!bo->shmem.pages))
		return ERR_PTR(-EINVAL);
	/* sg_alloc_table_from_pages_segment() needs at least one page per segment. */
	if (max_seg < PAGE_SIZE) {
		drm_dbg_prime(obj->dev, "export refused: %s takes %u-byte segments, below a page\n",
			      dev_name(attach->dev), max_seg);
		return ERR_PTR(-EINVAL);
	}
	sgt = kzalloc(sizeof(*sgt), GFP_KERNEL);
	if (!sgt)
		return ERR_PTR(-ENOMEM);
	ret = sg_alloc_table_from_pages_segment(sgt, bo->shmem.pages, obj->size >> PAGE_SHIFT,
						0, obj->size, max_seg, GFP_KERNEL);
	if (ret)
		goto err_free;
	ret = dma_map_sgtable(attach->dev, sgt, dir, DMA_ATTR_SKIP_CPU_SYNC);
	if (ret)
		goto err_table;
	dma_sync_sgtable_for_device(attach->dev, sgt, dir);
	return sgt;

err_table:
	sg_free_table(sgt);
err_free:
	kfree(sgt);
	return ERR_PTR(ret);
}

static void extmem_shmem_unmap_dma_buf(struct dma_buf_attachment *attach,
				       struct sg_table *sgt, enum dma_data_direction dir)
{
	dma_sync_sgtable_for_cpu(attach->dev, sgt, dir);
	dma_unmap_sgtable(attach->dev, sgt, dir, DMA_ATTR_SKIP_CPU_SYNC);
	sg_free_table(sgt);
	kfree(sgt);
}

/* drm_gem_prime_dmabuf_ops with the attach, map and unmap above. */
static const struct dma_buf_ops extmem_shmem_dmabuf_ops = {
	.attach = extmem_shmem_attach,
	.detach = drm_gem_map_detach,
	.map_dma_buf = extmem_shmem_map_dma_buf,
	.unmap_dma_buf = extmem_shmem_unmap_dma_buf,
	.release = drm_gem_dmabuf_release,
	.mmap = drm_gem_dmabuf_mmap,
	.vmap = drm_gem_dmabuf_vmap,
	.vunmap = drm_gem_dmabuf_vunmap,
};

/* drm_gem_object_funcs.export: drm_gem_prime_export() with extmem_shmem_dmabuf_ops. */
static struct dma_buf *extmem_shmem_export(struct drm_gem_object *obj, int flags)
{
	struct dma_buf_export_info info = {
		.exp_name = KBUILD_MODNAME,
		.owner = obj->dev->driver->fops->owner,
		.ops = &extmem_shmem_dmabuf_ops,
		.size = obj->size,
		.flags = flags,
		.priv = obj,
		.resv = obj->resv,
	};

	return drm_gem_dmabuf_export(obj->dev, &info);
}

/* ---- the device's view: DMA-mapped runs -------------------------------------------- */

int extmem_bo_segment(struct extmem_bo *bo, u64 offset, u64 *pa, u64 *len)
{
	struct drm_gem_object *obj = &bo->shmem.base;

	if (offset >= obj->size)
		return -ERANGE;
	switch (bo->kind) {
	case EXTMEM_OBJECT_SHMEM:
		/* Built before the first bind. */
		return extmem_runs_lookup(&bo->dma_runs, offset, pa, len);
	case EXTMEM_OBJECT_USERPTR:
		/* The shared mapping covers exactly this object's pages. */
		return extmem_runs_lookup(&bo->user.map->dma_runs, offset, pa, len);
	case EXTMEM_OBJECT_DMABUF:
	case EXTMEM_OBJECT_FOREIGN: {
		/* The object is the window [import.offset, + size) of the dma-buf. */
		int ret = extmem_runs_lookup(&bo->import.shared->runs,
					     bo->import.offset + offset, pa, len);

		if (!ret)
			*len = min(*len, obj->size - offset);
		return ret;
	}
	}
	return -ERANGE;
}

/*
 * A shmem object's pages mapped for the device through the shmem helper's table (made at
 * the first call, kept until the object is freed), and the runs of its DMA addresses.
 * Two files may bind the object at once: the object's reservation lock orders them, and
 * the runs never change once built, so lookups after a bind need no lock.
 */
static int extmem_shmem_dma_map(struct extmem_bo *bo)
{
	struct drm_gem_object *obj = &bo->shmem.base;
	struct sg_table *sgt = drm_gem_shmem_get_pages_sgt(&bo->shmem);
	int ret;

	if (IS_ERR(sgt))
		return PTR_ERR(sgt);
	ret = dma_resv_lock_interruptible(obj->resv, NULL);
	if (ret)
		return ret;
	if (!bo->dma_runs.n)
		ret = extmem_runs_from_sgt(&bo->dma_runs, sgt);
	dma_resv_unlock(obj->resv);
	if (!ret && bo->dma_runs.end < obj->size)
		ret = -EINVAL;
	return ret;
}

/* Before VM_BIND maps `bo`: a shmem object's pages must stay put and mapped while bound. */
int extmem_bo_bind_prepare(struct extmem_bo *bo)
{
	int ret;

	if (bo->kind != EXTMEM_OBJECT_SHMEM)
		return 0;
	ret = drm_gem_shmem_pin(&bo->shmem);
	if (ret)
		return ret;
	ret = extmem_shmem_dma_map(bo);
	if (ret)
		drm_gem_shmem_unpin(&bo->shmem);
	return ret;
}

/* A binding of `bo` is gone (or never came to be): undo extmem_bo_bind_prepare. */
void extmem_bo_bind_finish(struct extmem_bo *bo)
{
	if (bo->kind == EXTMEM_OBJECT_SHMEM)
		drm_gem_shmem_unpin(&bo->shmem);
}

/*
 * The reservation object a job synchronises with for `bo`: the one its dma-buf shares
 * (a shmem object's own, which drm_gem_prime_export() hands to the dma-buf; an import's,
 * which is the dma-buf's; for a FOREIGN window, the whole dma-buf's). NULL for pinned
 * user memory, which no other device can see.
 */
struct dma_resv *extmem_bo_resv(struct extmem_bo *bo)
{
	switch (bo->kind) {
	case EXTMEM_OBJECT_SHMEM:
	case EXTMEM_OBJECT_DMABUF:
		return bo->shmem.base.resv;
	case EXTMEM_OBJECT_FOREIGN:
		return bo->import.shared->attach->dmabuf->resv;
	case EXTMEM_OBJECT_USERPTR:
		return NULL;
	}
	return NULL;
}

/*
 * The direction pinned user pages are mapped in: both ways, read-only pins too. A
 * read-only pin mapped DMA_TO_DEVICE beside a writable pin of the same pages mapped
 * DMA_BIDIRECTIONAL gives DMA-API debugging two entries at one address, and it matches
 * a sync to an entry by best fit: the fuzzer had a writable object's sync for the CPU
 * checked against the to-device entry ("syncs DMA memory with different direction").
 * With one direction the pages need only one mapping. What keeps the device from
 * writing a read-only object is its page-table entries, not the DMA direction; its
 * syncs stay to-device (extmem_bo_dma_dir), and no sync or unmap copies back into it.
 */
#define EXTMEM_USER_DMA_DIR DMA_BIDIRECTIONAL

/*
 * The directions the syncs of `bo` use: what the object lets the device do. A read-only
 * USERPTR is synced to the device only; everything else both ways.
 */
static enum dma_data_direction extmem_bo_dma_dir(struct extmem_bo *bo)
{
	if (bo->kind == EXTMEM_OBJECT_USERPTR && !bo->user.writable)
		return DMA_TO_DEVICE;
	return DMA_BIDIRECTIONAL;
}

/*
 * The table `bo`'s DMA addresses came from, for the syncs of a job: the shmem helper's
 * or the pinned pages' shared one. NULL for imports, whose table is the exporter's
 * (below). A shared user mapping is synced whole: it is shared only by objects over
 * exactly the same pages in the same direction, so the whole mapping is the object.
 */
static struct sg_table *extmem_bo_own_sgt(struct extmem_bo *bo)
{
	switch (bo->kind) {
	case EXTMEM_OBJECT_SHMEM:
		return bo->shmem.sgt;
	case EXTMEM_OBJECT_USERPTR:
		return &bo->user.map->sgt;
	case EXTMEM_OBJECT_DMABUF:
	case EXTMEM_OBJECT_FOREIGN:
		return NULL;
	}
	return NULL;
}

/*
 * Before the copy engine runs a job that touches `bo`: what the CPU wrote reaches memory
 * (and, for what the job writes, no dirty line is left to be evicted over the device's
 * writes later).
 *
 * Imports are not synced here. The dma-buf rules (Documentation/driver-api/dma-buf.rst,
 * "CPU Access to DMA Buffer Objects") put coherency with the exporter: the mapping it
 * hands an importer is valid for the device when dma_buf_map_attachment() returns, and
 * CPU access is bracketed by DMA_BUF_IOCTL_SYNC / dma_buf_begin_cpu_access(), whose
 * exporter callbacks sync every attachment's table (the system heap and udmabuf do).
 * The table belongs to the exporter, which may even have mapped it with
 * DMA_ATTR_SKIP_CPU_SYNC for its own reasons; an importer syncing it would do the
 * exporter's maintenance a second time, on a table it does not own. GPU importers in the
 * tree (panfrost, lima, v3d through drm_gem_shmem_prime_import_sg_table) do the same.
 */
void extmem_bo_sync_for_device(struct extmem_bo *bo, bool write,
			       struct extmem_sync_stats *stats)
{
	struct sg_table *sgt = extmem_bo_own_sgt(bo);

	if (!sgt)
		return;
	/*
	 * A read-only USERPTR is synced to the device only: a job that targets it for a
	 * write faults on its read-only entries without writing a byte.
	 */
	dma_sync_sgtable_for_device(bo->shmem.base.dev->dev, sgt,
				    write && extmem_bo_dma_dir(bo) == DMA_BIDIRECTIONAL ?
					    DMA_BIDIRECTIONAL : DMA_TO_DEVICE);
	stats->for_device++;
	stats->for_device_bytes += bo->shmem.base.size;
}

/* After the copy engine ran a job that wrote `bo`: the CPU reads what the device wrote. */
void extmem_bo_sync_for_cpu(struct extmem_bo *bo, struct extmem_sync_stats *stats)
{
	struct sg_table *sgt = extmem_bo_own_sgt(bo);

	/* A read-only USERPTR: the device cannot have written it through this object. */
	if (!sgt || extmem_bo_dma_dir(bo) != DMA_BIDIRECTIONAL)
		return;
	dma_sync_sgtable_for_cpu(bo->shmem.base.dev->dev, sgt, DMA_FROM_DEVICE);
	stats->for_cpu++;
	stats->for_cpu_bytes += bo->shmem.base.size;
}

/* ---- dma-buf imports (DMABUF and FOREIGN) ------------------------------------------- */

/*
 * Checks a mapped attachment before the device uses it: every DMA segment page-aligned,
 * together covering `size` bytes, and (where the exporter gave pages) each DMA address
 * equal to the physical address, which is what dma-direct without an IOMMU gives.
 */
static int extmem_check_sgt(struct drm_device *drm, struct sg_table *sgt, u64 size)
{
	struct scatterlist *sg;
	u64 total = 0;
	unsigned int i;

	for_each_sgtable_dma_sg(sgt, sg, i) {
		dma_addr_t addr = sg_dma_address(sg);
		unsigned int len = sg_dma_len(sg);

		if (!PAGE_ALIGNED(addr) || !PAGE_ALIGNED(len))
			return -EINVAL;
		/* Not RAM (a peer device's BAR, an MMIO window): the engine cannot reach it. */
		if (region_intersects(addr, len, IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE) !=
		    REGION_INTERSECTS) {
			drm_dbg_prime(drm, "import refused: DMA range %pad+%u is not system RAM\n",
				      &addr, len);
			return -EOPNOTSUPP;
		}
		total += len;
	}
	if (total < size)
		return -EINVAL;
	return 0;
}

/* ---- what objects share: user mappings and dma-buf attachments -------------------- */

void extmem_share_init(struct extmem_device *edev)
{
	mutex_init(&edev->share_lock);
	INIT_LIST_HEAD(&edev->user_maps);
	INIT_LIST_HEAD(&edev->attaches);
}

/* At unload, after every object is gone: an entry left means an object leaked its use. */
void extmem_share_fini(struct extmem_device *edev)
{
	WARN_ON(!list_empty(&edev->user_maps));
	WARN_ON(!list_empty(&edev->attaches));
	mutex_destroy(&edev->share_lock);
}

/*
 * The entry of `list` that `match` accepts for `key`, with one more user, or a new one
 * from `create` (which counts it), used by its first object. Under share_lock, so two
 * imports of the same memory never make two entries.
 */
static struct extmem_share *
extmem_share_get(struct drm_device *drm, struct list_head *list,
		 bool (*match)(struct extmem_share *sh, const void *key),
		 struct extmem_share *(*create)(struct drm_device *drm, const void *key),
		 const void *key)
{
	struct extmem_device *edev = to_extmem_device(drm);
	struct extmem_share *sh;
	int ret;

	ret = mutex_lock_interruptible(&edev->share_lock);
	if (ret)
		return ERR_PTR(ret);
	list_for_each_entry(sh, list, link) {
		if (match(sh, key)) {
			sh->users++;
			goto out_unlock;
		}
	}
	sh = create(drm, key);
	if (!IS_ERR(sh)) {
		sh->users = 1;
		list_add(&sh->link, list);
	}
out_unlock:
	mutex_unlock(&edev->share_lock);
	return sh;
}

/*
 * An object is done with `sh` (it is being freed, so its jobs are done): drops its use,
 * and the last one takes `sh` off its list and has `release` tear it down, still under
 * the lock so that no new mapping of the same memory is made before the old one is gone.
 */
static void extmem_share_put(struct drm_device *drm, struct extmem_share *sh,
			     void (*release)(struct drm_device *drm, struct extmem_share *sh))
{
	struct extmem_device *edev = to_extmem_device(drm);

	mutex_lock(&edev->share_lock);
	if (!--sh->users) {
		list_del(&sh->link);
		release(drm, sh);
	}
	mutex_unlock(&edev->share_lock);
}

static bool extmem_shared_attach_matches(struct extmem_share *sh, const void *dmabuf)
{
	return container_of(sh, struct extmem_shared_attach, share)->attach->dmabuf == dmabuf;
}

/*
 * Attaches `dmabuf` to the device and maps the attachment, timing the two calls into
 * LAST_ATTACH_NS (the reference the benchmark holds an import against). On success the
 * caller owns the attachment and the mapping.
 */
static int extmem_attach_map(struct drm_device *drm, struct dma_buf *dmabuf,
			     struct dma_buf_attachment **attach_out, struct sg_table **sgt_out)
{
	struct dma_buf_attachment *attach;
	struct sg_table *sgt;
	u64 t0 = ktime_get_ns();

	attach = dma_buf_attach(dmabuf, drm->dev);
	if (IS_ERR(attach))
		return PTR_ERR(attach);
	sgt = dma_buf_map_attachment_unlocked(attach, DMA_BIDIRECTIONAL);
	WRITE_ONCE(to_extmem_device(drm)->last_attach_ns, ktime_get_ns() - t0);
	if (IS_ERR(sgt)) {
		dma_buf_detach(dmabuf, attach);
		return PTR_ERR(sgt);
	}
	*attach_out = attach;
	*sgt_out = sgt;
	return 0;
}

/*
 * A new attachment of `key` (the dma-buf): attached, mapped, checked. Through
 * extmem_share_get, the device's attachment of a dma-buf is made by its first import and
 * used by every later one. A second attachment would have the exporter map
 * the same pages for the same device a second time: udmabuf does so with CPU syncs,
 * which DMA-API debugging refuses ("overlapping mappings aren't supported"), and it
 * would cost a mapping per import. LAST_ATTACH_NS times only a new attachment.
 */
static struct extmem_share *extmem_shared_attach_create(struct drm_device *drm,
							const void *key)
{
	struct dma_buf *dmabuf = (struct dma_buf *)key;
	struct extmem_shared_attach *sa;
	int ret;

	sa = kzalloc(sizeof(*sa), GFP_KERNEL);
	if (!sa)
		return ERR_PTR(-ENOMEM);
	ret = extmem_attach_map(drm, dmabuf, &sa->attach, &sa->sgt);
	if (ret)
		goto err_free;
	ret = extmem_check_sgt(drm, sa->sgt, dmabuf->size);
	if (!ret)
		ret = extmem_runs_from_sgt(&sa->runs, sa->sgt);
	if (ret)
		goto err_unmap;
	atomic64_inc(&to_extmem_device(drm)->counters.attachments);
	return &sa->share;

err_unmap:
	dma_buf_unmap_attachment_unlocked(sa->attach, sa->sgt, DMA_BIDIRECTIONAL);
	dma_buf_detach(dmabuf, sa->attach);
err_free:
	kfree(sa);
	return ERR_PTR(ret);
}

/* The last object is done with an attachment: unmapped, detached, freed. */
static void extmem_shared_attach_release(struct drm_device *drm, struct extmem_share *sh)
{
	struct extmem_shared_attach *sa = container_of(sh, struct extmem_shared_attach, share);

	dma_buf_unmap_attachment_unlocked(sa->attach, sa->sgt, DMA_BIDIRECTIONAL);
	dma_buf_detach(sa->attach->dmabuf, sa->attach);
	extmem_runs_free(&sa->runs);
	kfree(sa);
	atomic64_dec(&to_extmem_device(drm)->counters.attachments);
}

/* Frees a DMABUF or FOREIGN object: its use of the attachment, then its dma-buf. */
static void extmem_import_free(struct drm_gem_object *obj)
{
	struct extmem_bo *bo = to_extmem_bo(obj);
	struct dma_buf *dmabuf = bo->import.shared->attach->dmabuf;
	struct drm_device *drm = obj->dev;

	/* The attachment goes (if this was its last object) before the dma-buf reference. */
	extmem_share_put(drm, &bo->import.shared->share, extmem_shared_attach_release);
	dma_buf_put(dmabuf);
	drm_gem_object_release(obj);
	kfree(bo);
	extmem_count_object(drm, -1);
}

/*
 * A DMABUF or FOREIGN object: the window [offset, offset + size) of `dmabuf`, through the
 * device's shared attachment of it. Takes over the caller's reference on `dmabuf` on
 * success only.
 */
static const struct drm_gem_object_funcs extmem_import_funcs = {
	.free = extmem_import_free,
	/*
	 * drm_gem_prime_handle_to_fd() re-exports the original dma-buf for a DMABUF object;
	 * a FOREIGN object is a window, not a whole dma-buf.
	 */
	.export = extmem_no_export,
};

static struct drm_gem_object *extmem_import_create(struct drm_device *drm,
						   struct dma_buf *dmabuf, u32 kind, u64 offset,
						   u64 size, bool read_only)
{
	struct extmem_shared_attach *sa;
	struct extmem_share *sh;
	struct extmem_bo *bo;

	bo = kzalloc(sizeof(*bo), GFP_KERNEL);
	if (!bo)
		return ERR_PTR(-ENOMEM);
	sh = extmem_share_get(drm, &to_extmem_device(drm)->attaches,
			      extmem_shared_attach_matches, extmem_shared_attach_create, dmabuf);
	if (IS_ERR(sh)) {
		kfree(bo);
		return ERR_CAST(sh);
	}
	sa = container_of(sh, struct extmem_shared_attach, share);
	bo->kind = kind;
	bo->read_only = read_only;
	bo->import.shared = sa;
	bo->import.offset = offset;
	bo->shmem.base.funcs = &extmem_import_funcs;
	drm_gem_private_object_init(drm, &bo->shmem.base, size);
	extmem_count_object(drm, 1);
	return &bo->shmem.base;
}

/*
 * drm_driver.gem_prime_import: drm_gem_prime_import_dev() of 6.12, with the device's
 * attachment of the dma-buf shared (extmem_share_get): two files importing one
 * dma-buf, or a PRIME import beside a FOREIGN window of it, attach it once. An object of
 * this device comes back as itself; anything else is wrapped, and extmem_import_free()
 * undoes it (not drm_prime_gem_destroy(), which would detach a shared attachment).
 */
struct drm_gem_object *extmem_gem_prime_import(struct drm_device *drm, struct dma_buf *dmabuf)
{
	struct drm_gem_object *obj;
	size_t size = dmabuf->size;

	/*
	 * DRM's own test is dmabuf->ops == &drm_gem_prime_dmabuf_ops, which is not exported;
	 * every exporter whose mmap is drm_gem_dmabuf_mmap keeps a GEM object in priv.
	 */
	if (dmabuf->ops->mmap == drm_gem_dmabuf_mmap) {
		obj = dmabuf->priv;
		if (obj->dev == drm) {
			drm_gem_object_get(obj);
			return obj;
		}
	}
	/* drm_gem_private_object_init() insists on whole pages. */
	if (!size || !PAGE_ALIGNED(size))
		return ERR_PTR(-EINVAL);

	/* The object's reference on the dma-buf, dropped by extmem_import_free(). */
	get_dma_buf(dmabuf);
	obj = extmem_import_create(drm, dmabuf, EXTMEM_OBJECT_DMABUF, 0, size, false);
	if (IS_ERR(obj)) {
		dma_buf_put(dmabuf);
		return obj;
	}
	/* Read by DRM (re-export, fdinfo) only; the object's free does not detach it. */
	obj->import_attach = to_extmem_bo(obj)->import.shared->attach;
	obj->resv = dmabuf->resv;
	return obj;
}

/* ---- USERPTR ------------------------------------------------------------------------ */

/*
 * Takes the pin of `obj` off its file's kcore ledger, unless the file's VM (and with it
 * the ledger) is gone. Never called under the VM lock: objects are put only after it is
 * dropped (extmem_vm_unlock).
 */
static void extmem_userptr_unrecord(struct drm_gem_object *obj, struct extmem_file *efile)
{
	int ret = 0;

	mutex_lock(&efile->vm_lock);
	if (!efile->vm_dead)
		ret = extmem_kcore_pin_remove(efile->vm, (u64)(uintptr_t)obj, NULL);
	mutex_unlock(&efile->vm_lock);
	/* Every USERPTR object was recorded at creation: a missing record is a glue bug. */
	WARN_ON_ONCE(ret);
}

/*
 * Unpins `npages` pinned pages recorded one pointer each (`pages`) or, with `pages` NULL,
 * as `runs`; with `dirty`, marks them dirty first.
 */
static void extmem_unpin_recorded(struct page **pages, const struct extmem_runs *runs,
				  unsigned long npages, bool dirty)
{
	if (pages)
		unpin_user_pages_dirty_lock(pages, npages, dirty);
	else
		extmem_runs_unpin(runs, dirty);
}

/*
 * A scatterlist over pinned pages recorded as runs (huge pages): each run in entries of
 * at most `max_seg` bytes, so the table is as compact as the runs and needs no page
 * array.
 */
static int extmem_sgt_from_runs(struct sg_table *sgt, const struct extmem_runs *runs,
				unsigned int max_seg)
{
	u64 chunk = ALIGN_DOWN((u64)max_seg, PAGE_SIZE);
	struct scatterlist *sg;
	unsigned long nents = 0;
	unsigned long i;
	int ret;

	for (i = 0; i < runs->n; i++) {
		u64 end = i + 1 < runs->n ? runs->run[i + 1].start : runs->end;

		nents += DIV_ROUND_UP(end - runs->run[i].start, chunk);
	}
	if (!nents || nents > UINT_MAX)
		return -EINVAL;
	ret = sg_alloc_table(sgt, nents, GFP_KERNEL);
	if (ret)
		return ret;
	sg = sgt->sgl;
	for (i = 0; i < runs->n; i++) {
		u64 end = i + 1 < runs->n ? runs->run[i + 1].start : runs->end;
		u64 pa = runs->run[i].pa;
		u64 left = end - runs->run[i].start;

		while (left) {
			u64 len = min(left, chunk);

			/* len <= chunk <= max_seg, an unsigned int. */
			sg_set_page(sg, pfn_to_page(PHYS_PFN(pa)), (unsigned int)len, 0);
			sg = sg_next(sg);
			pa += len;
			left -= len;
		}
	}
	return 0;
}

/*
 * Maps pinned user pages (`pages`, or with `pages` NULL the runs `runs`) for the device:
 * a table in segments no longer than the device takes, mapped with dma_map_sgtable(),
 * and the runs of its DMA addresses, which the copy engine is given. Called once the pin
 * is complete; extmem_user_dma_unmap() undoes it before the pages are unpinned.
 */
static int extmem_user_dma_map(struct device *dev, struct page **pages,
			       const struct extmem_runs *runs, unsigned long npages,
			       struct sg_table *sgt, struct extmem_runs *dma_runs)
{
	unsigned int max_seg = dma_get_max_seg_size(dev);
	int ret;

	/* A table counts its pages and segment lengths in unsigned ints. */
	if (max_seg < PAGE_SIZE || npages > UINT_MAX)
		return -EINVAL;
	if (pages)
		ret = sg_alloc_table_from_pages_segment(sgt, pages, npages, 0,
							npages << PAGE_SHIFT, max_seg,
							GFP_KERNEL);
	else
		ret = extmem_sgt_from_runs(sgt, runs, max_seg);
	if (ret)
		return ret;
	/*
	 * No CPU sync here or at unmap: every job syncs the table for the device before the
	 * copy engine runs and for the CPU after it wrote (job.c), and the device touches the
	 * pages at no other time. Skipping it also lets two objects over overlapping but
	 * different ranges (each its own mapping; equal ranges share one) be mapped at
	 * once, which DMA-API debugging refuses for mappings that sync.
	 */
	ret = dma_map_sgtable(dev, sgt, EXTMEM_USER_DMA_DIR, DMA_ATTR_SKIP_CPU_SYNC);
	if (ret)
		goto err_table;
	ret = extmem_runs_from_sgt(dma_runs, sgt);
	if (ret)
		goto err_unmap;
	return 0;

err_unmap:
	dma_unmap_sgtable(dev, sgt, EXTMEM_USER_DMA_DIR, DMA_ATTR_SKIP_CPU_SYNC);
err_table:
	sg_free_table(sgt);
	return ret;
}

/* Undoes extmem_user_dma_map(); the pages are still pinned. */
static void extmem_user_dma_unmap(struct device *dev, struct sg_table *sgt,
				  struct extmem_runs *dma_runs)
{
	extmem_runs_free(dma_runs);
	dma_unmap_sgtable(dev, sgt, EXTMEM_USER_DMA_DIR, DMA_ATTR_SKIP_CPU_SYNC);
	sg_free_table(sgt);
}

/* A pin looking for a mapping: its pages (`pages`, or with `pages` NULL the runs). */
struct extmem_user_pin {
	struct page **pages;
	const struct extmem_runs *runs;
	unsigned long npages;
};

/*
 * Whether the CPU side of `sgt` (the pages it was built from) is, in order, the pages of
 * `pin`, which has as many pages as the table. Linear in the table's entries and the
 * pin's pages or runs, and it stops at the first difference (in a mapping of other
 * pages, the first page).
 */
static bool extmem_sgt_is_pin(struct sg_table *sgt, const struct extmem_user_pin *pin)
{
	struct scatterlist *sg;
	unsigned long idx = 0;
	unsigned int i;

	for_each_sgtable_sg(sgt, sg, i) {
		u64 pa = sg_phys(sg);
		u64 left = sg->length;

		while (left) {
			u64 pin_pa, len;

			if (idx >= pin->npages)
				return false;
			if (pin->pages) {
				pin_pa = page_to_phys(pin->pages[idx]);
				len = PAGE_SIZE;
			} else if (extmem_runs_lookup(pin->runs, (u64)idx << PAGE_SHIFT, &pin_pa,
						      &len)) {
				return false;
			}
			if (pin_pa != pa)
				return false;
			len = min(len, left);
			pa += len;
			left -= len;
			idx += len >> PAGE_SHIFT;
		}
	}
	return idx == pin->npages;
}

static bool extmem_user_map_matches(struct extmem_share *sh, const void *key)
{
	struct extmem_user_map *map = container_of(sh, struct extmem_user_map, share);
	const struct extmem_user_pin *pin = key;

	return map->npages == pin->npages &&
	       extmem_sgt_is_pin(&map->sgt, pin);
}

/*
 * A new mapping of the pages of `key` (a struct extmem_user_pin). Through
 * extmem_share_get, an existing mapping of the same pages is used instead.
 */
static struct extmem_share *extmem_user_map_create(struct drm_device *drm, const void *key)
{
	const struct extmem_user_pin *pin = key;
	struct extmem_user_map *map;
	int ret;

	map = kzalloc(sizeof(*map), GFP_KERNEL);
	if (!map)
		return ERR_PTR(-ENOMEM);
	ret = extmem_user_dma_map(drm->dev, pin->pages, pin->runs, pin->npages, &map->sgt,
				  &map->dma_runs);
	if (ret) {
		kfree(map);
		return ERR_PTR(ret);
	}
	map->npages = pin->npages;
	atomic64_inc(&to_extmem_device(drm)->counters.user_dma_maps);
	return &map->share;
}

/* The last object is done with a user mapping: unmapped (its pages still pinned), freed. */
static void extmem_user_map_release(struct drm_device *drm, struct extmem_share *sh)
{
	struct extmem_user_map *map = container_of(sh, struct extmem_user_map, share);

	extmem_user_dma_unmap(drm->dev, &map->sgt, &map->dma_runs);
	kfree(map);
	atomic64_dec(&to_extmem_device(drm)->counters.user_dma_maps);
}

static void extmem_userptr_free(struct drm_gem_object *obj)
{
	struct extmem_bo *bo = to_extmem_bo(obj);
	struct extmem_device *edev = to_extmem_device(obj->dev);
	unsigned long npages = bo->user.npages;

	extmem_userptr_unrecord(obj, bo->user.efile);
	extmem_file_put(bo->user.efile);
	/* Put before unpinned: the DMA API's mapping must not outlive the last pin. */
	extmem_share_put(obj->dev, &bo->user.map->share, extmem_user_map_release);
	/* The GPU may have written through a writable pin: dirty the pages for writeback. */
	extmem_unpin_recorded(bo->user.pages, &bo->user.runs, npages, bo->user.writable);
	atomic64_sub(npages, &bo->user.mm->pinned_vm);
	mmdrop(bo->user.mm);
	kvfree(bo->user.pages);
	extmem_runs_free(&bo->user.runs);
	drm_gem_object_release(obj);
	kfree(bo);
	atomic64_sub(npages, &edev->counters.pinned_pages);
	extmem_count_object(&edev->drm, -1);
}

static const struct drm_gem_object_funcs extmem_userptr_funcs = {
	.free = extmem_userptr_free,
	.export = extmem_no_export,
};

/* Whether `npages` more pinned pages fit the caller's RLIMIT_MEMLOCK (ib_umem's rule). */
static bool extmem_pin_within_limit(struct mm_struct *mm, unsigned long npages)
{
	unsigned long limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;

	return capable(CAP_IPC_LOCK) || atomic64_read(&mm->pinned_vm) + npages <= limit;
}

/* Pages per pin_user_pages_fast() call while a pin may still end up as runs. */
#define EXTMEM_PIN_BATCH 512UL
/*
 * A pin stays in runs while they average at least this many pages; below that, one
 * page pointer each (8 bytes a page) is smaller than a run each (16 bytes).
 */
#define EXTMEM_RUN_MIN_PAGES 8

/* A pin in progress: its pages as runs (`pages` NULL) or as one pointer per page. */
struct extmem_pin {
	struct page **pages;
	struct extmem_runs runs;
	unsigned long pinned;
};

/* Unpins and forgets everything `pin` recorded (an import that failed). */
static void extmem_pin_release(struct extmem_pin *pin)
{
	extmem_unpin_recorded(pin->pages, &pin->runs, pin->pinned, false);
	kvfree(pin->pages);
	pin->pages = NULL;
	extmem_runs_free(&pin->runs);
	pin->pinned = 0;
}

/* A page array for all `npages`, holding what `pin` recorded as runs so far. */
static int extmem_pin_to_pages(struct extmem_pin *pin, unsigned long npages)
{
	pin->pages = kvmalloc_array(npages, sizeof(*pin->pages), GFP_KERNEL);
	if (!pin->pages)
		return -ENOMEM;
	extmem_runs_to_pages(&pin->runs, pin->pages);
	extmem_runs_free(&pin->runs);
	return 0;
}

/*
 * Records the `got` pages just pinned into `batch`: as runs while they stay compact (huge
 * pages), else as a page array for all `npages` from now on. If recording fails for
 * memory, the pages of `batch` not yet recorded are unpinned here; what was recorded
 * stays recorded.
 */
static int extmem_pin_record(struct extmem_pin *pin, struct page **batch, unsigned long got,
			     unsigned long npages)
{
	/* A first batch whose two ends cannot be one run goes straight to the page array. */
	bool scattered = !pin->pinned && batch[got - 1] != nth_page(batch[0], got - 1);
	unsigned long done = 0;
	int ret = 0;

	while (!scattered && done < got) {
		unsigned long took = extmem_runs_add_pages(&pin->runs, batch + done, got - done);

		done += took;
		pin->pinned += took;
		if (done == got)
			return 0;
		/* The runs are full: grow them while they pay, else switch to pages. */
		if (pin->runs.n * EXTMEM_RUN_MIN_PAGES > pin->pinned)
			break;
		ret = extmem_runs_grow(&pin->runs);
		if (ret)
			goto err_unpin;
	}
	ret = extmem_pin_to_pages(pin, npages);
	if (ret)
		goto err_unpin;
	memcpy(pin->pages + pin->pinned, batch + done, (got - done) * sizeof(*batch));
	pin->pinned += got - done;
	return 0;

err_unpin:
	unpin_user_pages(batch + done, got - done);
	return ret;
}

/*
 * The file's spare pin batch buffer, or a new one. Debian's kernel zeroes every kmalloc()
 * (init_on_alloc=1), and zeroing the 4 KiB buffer was most of the ~17 us by which the
 * setup of a >= 2 MiB import exceeded a 4 KiB one's under TCG; a file keeps one buffer
 * (taken and given back with xchg/cmpxchg, so concurrent imports just allocate).
 */
static struct page **extmem_batch_get(struct extmem_file *efile)
{
	struct page **batch = xchg(&efile->pin_batch, NULL);

	return batch ?: kmalloc_array(EXTMEM_PIN_BATCH, sizeof(*batch), GFP_KERNEL);
}

static void extmem_batch_put(struct extmem_file *efile, struct page **batch)
{
	if (batch && cmpxchg(&efile->pin_batch, NULL, batch))
		kfree(batch);
}

static struct drm_gem_object *extmem_userptr_create(struct drm_device *drm,
						    struct extmem_file *efile,
						    unsigned long start, u64 size, bool writable)
{
	struct extmem_device *edev = to_extmem_device(drm);
	unsigned long npages = size >> PAGE_SHIFT;
	unsigned int gup_flags = FOLL_LONGTERM | (writable ? FOLL_WRITE : 0);
	unsigned long lock_limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	struct mm_struct *mm = current->mm;
	struct extmem_pin pin = {};
	struct extmem_user_pin key;
	struct extmem_share *sh;
	struct page **batch;
	struct extmem_bo *bo;
	/* Phase times for LAST_PIN_NS and LAST_USERPTR_*_NS; setup is what the others leave. */
	u64 started = ktime_get_ns(), pin_ns = 0, record_ns = 0, ledger_ns = 0, t0;
	int ret;

	/* Charge first, as ib_umem_get() does, so concurrent pins cannot both pass. */
	if (atomic64_add_return(npages, &mm->pinned_vm) > lock_limit && !capable(CAP_IPC_LOCK)) {
		atomic64_sub(npages, &mm->pinned_vm);
		return ERR_PTR(-ENOMEM);
	}

	/*
	 * From 2 MiB on, pinned in batches while the pages may stay runs: a page array for
	 * the whole range would cost more to allocate (zeroed under init_on_alloc) than
	 * pinning huge pages does. Below that, straight into a page array.
	 */
	if (npages < EXTMEM_PIN_BATCH) {
		batch = NULL;
		pin.pages = kvmalloc_array(npages, sizeof(*pin.pages), GFP_KERNEL);
	} else {
		batch = extmem_batch_get(efile);
	}
	if (!batch && !pin.pages) {
		ret = -ENOMEM;
		goto err_uncharge;
	}

	t0 = ktime_get_ns();
	while (pin.pinned < npages) {
		unsigned long left = npages - pin.pinned;
		unsigned long addr = start + (pin.pinned << PAGE_SHIFT);
		struct page **dst = pin.pages ? pin.pages + pin.pinned : batch;
		/* Batches end on 2 MiB boundaries, where a huge page would. */
		unsigned long room = EXTMEM_PIN_BATCH - ((addr >> PAGE_SHIFT) % EXTMEM_PIN_BATCH);
		int chunk = min(left, pin.pages ? (unsigned long)SZ_64K : room);
		u64 pin_t0 = ktime_get_ns();
		int got;

		got = pin_user_pages_fast(addr, chunk, gup_flags, dst);
		pin_ns += ktime_get_ns() - pin_t0;
		if (got < 0) {
			ret = got;
			goto err_unpin;
		}
		if (got == 0) {
			ret = -EFAULT;
			goto err_unpin;
		}
		if (dst == batch) {
			ret = extmem_pin_record(&pin, batch, got, npages);
			if (ret)
				goto err_unpin;
		} else {
			pin.pinned += got;
		}
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			goto err_unpin;
		}
	}
	/* Recording is the loop's time beyond the pins: no clock read per batch for it. */
	record_ns = ktime_get_ns() - t0 - pin_ns;
	extmem_batch_put(efile, batch);
	batch = NULL;
	WRITE_ONCE(efile->last_pin_ns, pin_ns);

	bo = kzalloc(sizeof(*bo), GFP_KERNEL);
	if (!bo) {
		ret = -ENOMEM;
		goto err_unpin;
	}
	key = (struct extmem_user_pin){
		.pages = pin.pages,
		.runs = &pin.runs,
		.npages = npages,
	};
	sh = extmem_share_get(drm, &edev->user_maps, extmem_user_map_matches,
			      extmem_user_map_create, &key);
	if (IS_ERR(sh)) {
		ret = PTR_ERR(sh);
		goto err_free;
	}
	bo->user.map = container_of(sh, struct extmem_user_map, share);
	/* The file's ledger of pins (kcore): one record per object, ENOSPC when full. */
	t0 = ktime_get_ns();
	ret = mutex_lock_interruptible(&efile->vm_lock);
	if (ret)
		goto err_unmap;
	ret = extmem_kcore_pin_add(efile->vm, (u64)(uintptr_t)&bo->shmem.base, start, npages);
	mutex_unlock(&efile->vm_lock);
	ledger_ns = ktime_get_ns() - t0;
	if (ret)
		goto err_unmap;
	kref_get(&efile->ref);
	bo->user.efile = efile;
	bo->kind = EXTMEM_OBJECT_USERPTR;
	bo->read_only = !writable;
	bo->user.pages = pin.pages;
	bo->user.runs = pin.runs;
	bo->user.npages = npages;
	bo->user.writable = writable;
	bo->user.mm = mm;
	mmgrab(mm);
	bo->shmem.base.funcs = &extmem_userptr_funcs;
	drm_gem_private_object_init(drm, &bo->shmem.base, size);

	atomic64_add(npages, &edev->counters.pinned_pages);
	extmem_count_object(drm, 1);
	WRITE_ONCE(efile->last_record_ns, record_ns);
	WRITE_ONCE(efile->last_ledger_ns, ledger_ns);
	WRITE_ONCE(efile->last_setup_ns, ktime_get_ns() - started - pin_ns - record_ns - ledger_ns);
	return &bo->shmem.base;

err_unmap:
	extmem_share_put(drm, &bo->user.map->share, extmem_user_map_release);
err_free:
	kfree(bo);
err_unpin:
	WRITE_ONCE(efile->last_pin_ns, pin_ns);
	extmem_batch_put(efile, batch);
	extmem_pin_release(&pin);
err_uncharge:
	atomic64_sub(npages, &mm->pinned_vm);
	return ERR_PTR(ret);
}

/*
 * Whether get_user_pages(FOLL_LONGTERM | FOLL_WRITE) refuses a file mapping because the
 * filesystem tracks dirty pages (mm/gup.c writable_file_mapping_allowed() and
 * mm/mmap.c vma_needs_dirty_tracking() of 6.12, which are not exported).
 */
static bool extmem_vma_needs_dirty_tracking(struct vm_area_struct *vma)
{
	if ((vma->vm_flags & (VM_SHARED | VM_WRITE)) != (VM_SHARED | VM_WRITE))
		return false;
	if (vma->vm_ops && (vma->vm_ops->page_mkwrite || vma->vm_ops->pfn_mkwrite))
		return true;
	return vma->vm_file && mapping_can_writeback(vma->vm_file->f_mapping);
}

static bool extmem_vma_is_dma_buf(struct vm_area_struct *vma)
{
	/* dma_buf_fops is private to dma-buf.c; every dma-buf file lives on its own fs. */
	return vma->vm_file && file_inode(vma->vm_file)->i_sb->s_magic == DMA_BUF_MAGIC;
}

/*
 * PROBE of a plain user range, under the mmap lock: what pin_user_pages() would check
 * (mm/gup.c check_vma_flags()), without faulting anything in or pinning.
 */
static int extmem_probe_user_range(struct mm_struct *mm, unsigned long start,
				   unsigned long end, bool writable)
{
	unsigned long addr = start;

	while (addr < end) {
		struct vm_area_struct *vma = vma_lookup(mm, addr);

		if (!vma || extmem_vma_is_dma_buf(vma))
			return -EFAULT;
		if (vma->vm_flags & (VM_IO | VM_PFNMAP))
			return -EFAULT;
		if (!(vma->vm_flags & VM_READ))
			return -EFAULT;
		if (writable && !(vma->vm_flags & VM_WRITE))
			return -EFAULT;
		if (writable && !vma_is_anonymous(vma) && extmem_vma_needs_dirty_tracking(vma))
			return -EFAULT;
		addr = vma->vm_end;
	}
	return 0;
}

/*
 * If `vma` maps a dma-buf: the dma-buf and the byte offset in it that `addr` maps.
 *
 * DRM exporters (vgem, virtio-gpu, this driver) map through drm_gem_prime_mmap(), which
 * adds the object's fake mmap offset to vm_pgoff; it is taken off again here. Other
 * exporters (udmabuf, dma-heaps) leave vm_pgoff as the page offset in the buffer.
 * Caller holds the mmap lock, which keeps the VMA and so its file (the dma-buf) alive.
 */
static struct dma_buf *extmem_vma_dma_buf(struct vm_area_struct *vma, unsigned long addr,
					  u64 *offset)
{
	struct dma_buf *dmabuf;
	unsigned long pgoff = vma->vm_pgoff;

	if (!extmem_vma_is_dma_buf(vma))
		return NULL;
	dmabuf = vma->vm_file->private_data;
	if (dmabuf->ops->mmap == drm_gem_dmabuf_mmap) {
		struct drm_gem_object *obj = dmabuf->priv;
		unsigned long node_start = drm_vma_node_start(&obj->vma_node);

		if (pgoff < node_start)
			return NULL;
		pgoff -= node_start;
	}
	*offset = ((u64)pgoff << PAGE_SHIFT) + (addr - vma->vm_start);
	return dmabuf;
}

/*
 * GEM_USERPTR for a range inside a dma-buf mapping. The mmap lock is held on entry and
 * dropped here. Returns the object (NULL for PROBE) or an ERR_PTR.
 */
static struct drm_gem_object *extmem_userptr_foreign(struct drm_device *drm,
						     struct mm_struct *mm,
						     struct vm_area_struct *vma,
						     struct dma_buf *dmabuf, u64 offset,
						     unsigned long start, u64 size, u32 flags)
{
	bool read_only = flags & EXTMEM_FLAG_READ_ONLY;
	struct drm_gem_object *obj;
	u64 end;
	int ret = 0;

	/* The whole range must lie in this one mapping of this one dma-buf. */
	if (size > vma->vm_end - start)
		ret = -EFAULT;
	else if (!(vma->vm_flags & VM_READ))
		ret = -EFAULT;
	else if (!read_only && !(vma->vm_flags & VM_WRITE))
		ret = -EFAULT;
	else if (check_add_overflow(offset, size, &end) || end > dmabuf->size)
		ret = -EFAULT;
	if (!ret)
		get_dma_buf(dmabuf);
	mmap_read_unlock(mm);
	if (ret)
		return ERR_PTR(ret);

	if (flags & EXTMEM_USERPTR_PROBE) {
		dma_buf_put(dmabuf);
		return NULL;
	}
	/*
	 * drm_gem_prime_import_dev() without its own-device shortcut (an object of ours
	 * mapped through its dma-buf is attached like any other exporter's), with a window.
	 */
	obj = extmem_import_create(drm, dmabuf, EXTMEM_OBJECT_FOREIGN, offset, size, read_only);
	if (IS_ERR(obj))
		dma_buf_put(dmabuf);
	return obj;
}

int extmem_ioctl_gem_userptr(struct drm_device *drm, void *data, struct drm_file *file)
{
	struct drm_extmem_gem_userptr *args = data;
	struct extmem_file *efile = file->driver_priv;
	struct mm_struct *mm = current->mm;
	bool writable = !(args->flags & EXTMEM_FLAG_READ_ONLY);
	bool probe = args->flags & EXTMEM_USERPTR_PROBE;
	struct vm_area_struct *vma;
	struct drm_gem_object *obj;
	struct dma_buf *dmabuf;
	unsigned long start;
	u64 offset, size = args->size, started = ktime_get_ns();
	u32 handle;
	int ret;

	/* Flags, padding, alignment, zero size, wrap-around: the core's rules. */
	ret = extmem_kcore_check_gem_userptr(args);
	if (ret)
		return ret;
	if (!mm || args->ptr > ULONG_MAX || !access_ok(u64_to_user_ptr(args->ptr), size))
		return -EFAULT;
	start = args->ptr;

	ret = mmap_read_lock_killable(mm);
	if (ret)
		return ret;
	vma = vma_lookup(mm, start);
	dmabuf = vma ? extmem_vma_dma_buf(vma, start, &offset) : NULL;
	if (dmabuf) {
		obj = extmem_userptr_foreign(drm, mm, vma, dmabuf, offset, start, size,
					     args->flags);
		if (IS_ERR(obj))
			return PTR_ERR(obj);
		args->kind = EXTMEM_OBJECT_FOREIGN;
	} else if (probe) {
		ret = extmem_probe_user_range(mm, start, start + size, writable);
		if (!ret && !extmem_pin_within_limit(mm, size >> PAGE_SHIFT))
			ret = -ENOMEM;
		mmap_read_unlock(mm);
		if (ret)
			return ret;
		obj = NULL;
		args->kind = EXTMEM_OBJECT_USERPTR;
	} else {
		/* pin_user_pages_fast() takes the mmap lock itself when it must fault. */
		mmap_read_unlock(mm);
		obj = extmem_userptr_create(drm, efile, start, size, writable);
		if (IS_ERR(obj))
			return PTR_ERR(obj);
		args->kind = EXTMEM_OBJECT_USERPTR;
	}

	if (!obj) {
		args->handle = 0;
		return 0;
	}
	ret = drm_gem_handle_create(file, obj, &handle);
	drm_gem_object_put(obj);
	if (ret)
		return ret;
	args->handle = handle;
	WRITE_ONCE(efile->last_userptr_ns, ktime_get_ns() - started);
	return 0;
}

int extmem_ioctl_gem_info(struct drm_device *drm, void *data, struct drm_file *file)
{
	struct drm_extmem_gem_info *args = data;
	struct drm_gem_object *obj;
	struct extmem_bo *bo;

	if (args->pad)
		return -EINVAL;
	obj = drm_gem_object_lookup(file, args->handle);
	if (!obj)
		return -ENOENT;
	bo = to_extmem_bo(obj);
	args->kind = bo->kind;
	args->size = obj->size;
	args->flags = bo->read_only ? EXTMEM_FLAG_READ_ONLY : 0;
	/* Only shmem objects can be mapped through the DRM file. */
	args->mmap_offset = bo->kind == EXTMEM_OBJECT_SHMEM ?
		drm_vma_node_offset_addr(&obj->vma_node) : 0;
	drm_gem_object_put(obj);
	return 0;
}
