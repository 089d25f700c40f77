/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * extmem-vgpu: shared declarations of the C glue.
 *
 * The glue is thin on purpose: argument validation, the GPU VM (page tables, bindings)
 * and the copy engine live in extmem-kcore (Rust, extmem_kcore.h). What stays in C is
 * what needs the kernel's own objects: the DRM device and files, GEM objects and their
 * memory (shmem, pinned user pages, dma-buf attachments), and the counters userspace
 * reads through GET_PARAM.
 */
#ifndef EXTMEM_VGPU_H
#define EXTMEM_VGPU_H

#include <linux/atomic.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/spinlock.h>
#include <linux/types.h>

#include <drm/drm_device.h>
#include <drm/drm_gem_shmem_helper.h>

#include "extmem_kcore.h"

#define EXTMEM_DRIVER_NAME "extmem-vgpu"

struct dma_buf;
struct dma_buf_attachment;
struct extmem_shared_attach;
struct extmem_user_map;
struct dma_fence;
struct dma_resv;
struct mm_struct;
struct page;
struct platform_device;

/* Device-wide counters, read by GET_PARAM and the debugfs file. */
struct extmem_counters {
	atomic64_t live_objects;	/* GEM objects of this device alive */
	atomic64_t pinned_pages;	/* user pages pinned by GEM_USERPTR */
	atomic64_t pt_pages;		/* page-table pages allocated */
	atomic64_t attachments;		/* dma-buf attachments held (one per dma-buf) */
	atomic64_t user_dma_maps;	/* DMA mappings of pinned user pages (shared) */
	atomic64_t bindings;		/* VM bindings alive */
	atomic64_t device_bytes;	/* bytes of live GEM_CREATE (shmem) objects */
	atomic64_t jobs;		/* EXEC jobs not yet freed (extmem_vgpu_job.c) */
};

/*
 * The cache maintenance of a job (extmem_vgpu_job.c): the tables synced for the device
 * before the copy engine ran and for the CPU after it, their bytes, and the time the
 * syncs took. On a DMA-coherent device the calls still happen (DMA-API debugging checks
 * them) but do no cache work.
 */
struct extmem_sync_stats {
	u64 for_device;
	u64 for_device_bytes;
	u64 for_cpu;
	u64 for_cpu_bytes;
	u64 ns;
};

struct extmem_device {
	struct drm_device drm;
	struct platform_device *pdev;
	struct extmem_counters counters;
	u8 device_uuid[16];
	/* Output-address bits of the profile: table pages must lie below this. */
	u64 oa_limit;
	/*
	 * What GEM_CREATE objects may total: 3/4 of RAM, the device heap userspace reports.
	 * Without it a create of more than RAM succeeds (shmem is lazy) and the first bind
	 * stalls in reclaim for tens of seconds before failing.
	 */
	u64 device_budget;
	/*
	 * LAST_ATTACH_NS: dma_buf_attach + dma_buf_map_attachment time of the last dma-buf
	 * import on this device (PRIME or FOREIGN). Device-wide, because DRM's PRIME import
	 * hook is not told the file.
	 */
	u64 last_attach_ns;
	/*
	 * The copy engine (extmem_vgpu_job.c): an ordered workqueue that runs the EXEC jobs
	 * of every file one at a time, in the order of their fences' seqnos on the device's
	 * one fence context. submit_lock orders seqno assignment, the reservation-object
	 * updates and queueing, so the queue order is the seqno order.
	 */
	struct workqueue_struct *engine;
	u64 fence_context;
	u64 fence_seqno;		/* under submit_lock: the last seqno handed out */
	struct mutex submit_lock;
	/*
	 * Under sync_stats_lock: the last job's cache maintenance and the sum over every job
	 * since load, shown in the debugfs counters file.
	 */
	spinlock_t sync_stats_lock;
	struct extmem_sync_stats last_job_sync;
	struct extmem_sync_stats total_sync;
	/*
	 * What GEM objects share (extmem_vgpu_gem.c): the DMA mappings of pinned user pages
	 * (`user_maps`, one per page range and direction) and the dma-buf attachments
	 * (`attaches`, one per dma-buf). DMA-API debugging refuses more than 7 live mappings
	 * of one cache line that the device may write, and a second attachment of a udmabuf
	 * maps its pages a second time with CPU syncs; sharing keeps both at one.
	 * share_lock guards the lists and their users counts, and is held while an entry is
	 * made or torn down, so no second mapping or attachment of the same memory exists
	 * even for a moment. It is taken before a dma-buf's reservation lock (attaching and
	 * mapping take that), never under it.
	 */
	struct mutex share_lock;
	struct list_head user_maps;
	struct list_head attaches;
};

/*
 * What kcore hands back to every platform callback: the device the memory is counted
 * against. One per open file (and one for the load-time self-test).
 */
struct extmem_plat {
	struct extmem_device *edev;
	/* The file whose VM this is; NULL for the self-test, which binds no GEM object. */
	struct extmem_file *efile;
	/* Bytes copied since the last cond_resched(), so a long EXEC yields the CPU. */
	u64 since_resched;
};

/*
 * Per open DRM file. Referenced by the drm_file and by every USERPTR object made through
 * it (whose pin is recorded in the file's kcore ledger), since such an object can outlive
 * the file (GEM_FLINK on the primary node).
 */
struct extmem_file {
	struct kref ref;
	/* Serialises every kcore call that takes `vm` (kcore VMs are not thread-safe). */
	struct mutex vm_lock;
	struct extmem_plat plat;
	void *vm;		/* extmem_kcore_vm_align()-aligned, inside vm_alloc */
	void *vm_alloc;		/* what kvfree() gets */
	/* Under vm_lock: vm_fini ran (at postclose); `vm` must not be used any more. */
	bool vm_dead;
	/*
	 * Under vm_lock: bindings kcore has let go of (extmem_plat_object_unbound), whose
	 * objects are put after the lock is dropped (extmem_vm_unlock). Putting them inside
	 * the callback could free an object whose release calls back into kcore for the same
	 * VM (the pin ledger) while kcore is still running.
	 */
	struct list_head unbound;
	u64 last_pin_ns;	/* LAST_PIN_NS: pin_user_pages time of the last GEM_USERPTR */
	/* LAST_USERPTR_*_NS: the other phases of the last GEM_USERPTR, and its whole time. */
	u64 last_record_ns;
	u64 last_ledger_ns;
	u64 last_setup_ns;
	u64 last_userptr_ns;
	u64 last_exec_ns;	/* LAST_EXEC_NS: kcore's run of the file's last EXEC job */
	/* GEM_USERPTR's spare batch buffer (EXTMEM_PIN_BATCH pointers), or NULL. */
	struct page **pin_batch;
	/*
	 * The fence of the file's last EXEC job (under fence_lock; NULL before the first).
	 * Jobs finish in order, so once it signals every job of the file has: VM_BIND UNMAP
	 * and the file's close wait for it before they take a binding away.
	 */
	spinlock_t fence_lock;
	struct dma_fence *last_fence;
	/* Set at close: queued jobs of the file are cancelled, a running one stops early. */
	bool closing;
	/*
	 * JOB_FAULTS: jobs of the file that signalled with an error other than a cancellation
	 * at close. Bumped before the fence signals, so a waiter that wakes reads it counted.
	 */
	atomic64_t job_faults;
};

/*
 * One binding of an object in a VM: the cookie kcore stores for it and hands back to
 * extmem_plat_object_segment / extmem_plat_object_unbound. It holds a reference on the
 * object (and, for shmem, a pin of its pages) until the binding is gone.
 */
struct extmem_binding {
	struct list_head link;	/* on extmem_file.unbound once kcore dropped it */
	struct drm_gem_object *obj;
};

/* Bytes [start, the next run's start or extmem_runs.end) of an object are at `pa`. */
struct extmem_run {
	u64 start;
	u64 pa;
};

/* An object's memory as physically contiguous runs (extmem_vgpu_runs.c). */
struct extmem_runs {
	struct extmem_run *run;	/* kvmalloc()ed, `cap` entries, `n` used */
	unsigned long n;
	unsigned long cap;
	u64 end;		/* bytes the runs cover */
};

/*
 * One GEM object of any kind. The shmem object comes first for every kind because
 * drm_gem_shmem_free() kfree()s the shmem pointer; for the other kinds only its `base`
 * (the drm_gem_object) is used and the shmem fields stay zero.
 */
struct extmem_bo {
	struct drm_gem_shmem_object shmem;
	u32 kind;		/* EXTMEM_OBJECT_* */
	bool read_only;		/* the GPU may only read it */
	/*
	 * SHMEM: the object as this device's DMA addresses, taken from the shmem helper's
	 * table. This, not the pages, is what the copy engine is given. Built at the first
	 * bind, under the object's reservation lock, and it stays until the object is freed.
	 * (A USERPTR object's are its shared mapping's, user.map->dma_runs.)
	 */
	struct extmem_runs dma_runs;
	union {
		/* EXTMEM_OBJECT_USERPTR */
		struct {
			/*
			 * The pinned pages: one pointer per page when they are scattered
			 * (`pages`), or, when that would be mostly repetition (huge pages), as
			 * runs with `pages` NULL.
			 */
			struct page **pages;
			struct extmem_runs runs;
			/*
			 * The pinned pages mapped for the device: one mapping per page range
			 * and direction, shared with every object that pinned the same pages
			 * (extmem_user_map_get). This object's own pin keeps them pinned.
			 */
			struct extmem_user_map *map;
			unsigned long npages;
			struct mm_struct *mm;	/* charged with pinned_vm; mmgrab()ed */
			bool writable;
			/* The file whose kcore ledger records the pin (referenced). */
			struct extmem_file *efile;
		} user;
		/*
		 * EXTMEM_OBJECT_DMABUF (the whole dma-buf, set up by extmem_gem_prime_import)
		 * and EXTMEM_OBJECT_FOREIGN (a window [offset, offset + size) of it). Both use
		 * the device's one attachment of the dma-buf, shared by every object that
		 * imports it (extmem_shared_attach_get); each object also holds its own
		 * reference on the dma-buf.
		 */
		struct {
			struct extmem_shared_attach *shared;
			u64 offset;
		} import;
	};
};

static inline struct extmem_device *to_extmem_device(struct drm_device *drm)
{
	return container_of(drm, struct extmem_device, drm);
}

static inline struct extmem_bo *to_extmem_bo(struct drm_gem_object *obj)
{
	return container_of(obj, struct extmem_bo, shmem.base);
}

/* extmem_vgpu_gem.c */
struct drm_gem_object *extmem_gem_create_object(struct drm_device *drm, size_t size);
struct drm_gem_object *extmem_gem_prime_import(struct drm_device *drm,
					       struct dma_buf *dmabuf);
int extmem_bo_segment(struct extmem_bo *bo, u64 offset, u64 *pa, u64 *len);
int extmem_bo_bind_prepare(struct extmem_bo *bo);
void extmem_bo_bind_finish(struct extmem_bo *bo);
struct dma_resv *extmem_bo_resv(struct extmem_bo *bo);
void extmem_bo_sync_for_device(struct extmem_bo *bo, bool write,
			       struct extmem_sync_stats *stats);
void extmem_bo_sync_for_cpu(struct extmem_bo *bo, struct extmem_sync_stats *stats);
int extmem_ioctl_gem_create(struct drm_device *drm, void *data, struct drm_file *file);
int extmem_ioctl_gem_userptr(struct drm_device *drm, void *data, struct drm_file *file);
int extmem_ioctl_gem_info(struct drm_device *drm, void *data, struct drm_file *file);
void extmem_share_init(struct extmem_device *edev);
void extmem_share_fini(struct extmem_device *edev);

/*
 * extmem_vgpu_runs.c. add_pages appends pages while the array has room and says how many
 * it took; grow at least doubles the room (-ENOMEM leaves `runs` as it was).
 */
unsigned long extmem_runs_add_pages(struct extmem_runs *runs, struct page **pages,
				    unsigned long count);
int extmem_runs_grow(struct extmem_runs *runs);
int extmem_runs_from_sgt(struct extmem_runs *runs, struct sg_table *sgt);
void extmem_runs_to_pages(const struct extmem_runs *runs, struct page **pages);
void extmem_runs_unpin(const struct extmem_runs *runs, bool dirty);
int extmem_runs_lookup(const struct extmem_runs *runs, u64 pos, u64 *pa, u64 *len);
void extmem_runs_free(struct extmem_runs *runs);

/* extmem_vgpu_job.c */
int extmem_ioctl_exec(struct drm_device *drm, void *data, struct drm_file *file);
int extmem_engine_init(struct extmem_device *edev);
void extmem_engine_fini(struct extmem_device *edev);
int extmem_file_wait_idle(struct extmem_file *efile, bool interruptible);

/* extmem_vgpu_vm.c */
int extmem_ioctl_vm_bind(struct drm_device *drm, void *data, struct drm_file *file);
int extmem_ioctl_vm_query(struct drm_device *drm, void *data, struct drm_file *file);
int extmem_file_vm_init(struct extmem_file *efile, struct extmem_device *edev);
void extmem_file_vm_fini(struct extmem_file *efile);
void extmem_vm_unlock(struct extmem_file *efile);

/* extmem_vgpu_drv.c */
void extmem_file_put(struct extmem_file *efile);

#endif /* EXTMEM_VGPU_H */
