// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * extmem-vgpu: EXEC jobs, their fences and syncobjs, and implicit sync on dma-bufs.
 *
 * EXEC checks its commands, works out which objects they touch (extmem-kcore walks the
 * file's bindings), takes a reference on each, and queues a job; it returns at once
 * unless EXTMEM_EXEC_WAIT asks it to wait. The job's fence is on the device's one fence
 * context. Before it runs, a job waits for the fences of its wait syncobjs and for the
 * implicit fences of the dma-bufs it touches (every fence for what it writes, the
 * writers' for what it reads, DMA_RESV_USAGE_WRITE); its own fence goes into those
 * reservation objects (WRITE usage for what it writes, READ for what it reads) and into
 * its signal syncobjs. A fault signals the fence with an error; the file goes on.
 *
 * Why an ordered workqueue and not the DRM GPU scheduler: the module builds for 6.1, 6.12
 * and 7.x, and drm_sched's interface changed in each span (6.7 moved it onto a submit
 * workqueue and gave drm_sched_init() more arguments, 6.8 made jobs carry credits, 6.15
 * replaced the arguments with struct drm_sched_init_args, 6.16 gave drm_sched_job_init()
 * a client id), which would be four compat variants of the two calls the driver depends
 * on most; it would also add the gpu-sched module to what the guest loads. What this
 * device needs from a scheduler is small: one engine, jobs in order, a dependency wait
 * with a timeout and cancellation. A single ordered queue does the first two by
 * construction, and the job's worker waits for its dependencies itself (in short slices,
 * so a closing file or the timeout stops it), which is what drm_sched's run queue would
 * do with callbacks. Every job of the device runs after the one queued before it, so the
 * fences of the one context signal in seqno order, as dma_fence requires.
 *
 * Lifetime: a job holds a reference on its file and on every object it touches (and with
 * them their pins and dma-buf attachments) until it has signalled. Its page-table
 * entries stay because VM_BIND UNMAP and the file's close (also the path of a killed
 * process) wait for the file's last fence first; close cancels the file's queued jobs
 * and stops a running one at its next page, so it never waits for long.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/completion.h>
#include <linux/dma-fence.h>
#include <linux/dma-fence-chain.h>
#include <linux/dma-resv.h>
#include <linux/jiffies.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include <drm/drm_file.h>
#include <drm/drm_gem.h>
#include <drm/drm_syncobj.h>

#include "extmem_vgpu.h"

/*
 * How long a job waits for one dependency before it gives up and signals -ETIMEDOUT
 * (a foreign fence that never signals must not hold the engine forever; vgem's own
 * fences time out after 10 s too), and the slice it waits in between checks of its
 * file's closing flag.
 */
#define EXTMEM_DEP_TIMEOUT (10 * HZ)
#define EXTMEM_DEP_SLICE (HZ / 50)

/*
 * A job's fence. It is allocated on its own, not inside the job, and has no release
 * callback: dma_fence_free() frees it (RCU-delayed) without calling into this module, so
 * a fence kept in a syncobj or a dma-buf's reservation object can outlive the job (and
 * the module). The fault fields are written before it signals, for EXEC_WAIT.
 */
struct extmem_fence {
	struct dma_fence base;
	spinlock_t lock;
	/*
	 * Completed once the job has let go of everything it held (after the fence
	 * signalled: releasing objects can take their dma-buf's reservation lock, which a
	 * waiter for the fence may hold). EXEC_WAIT, VM_BIND UNMAP and close wait for this,
	 * so the counters userspace reads next are settled.
	 */
	struct completion done;
	u64 fault_va;
	u32 fault_cmd;
	u32 fault_kind;
};

static const char *extmem_fence_driver_name(struct dma_fence *fence)
{
	return EXTMEM_DRIVER_NAME;
}

static const char *extmem_fence_timeline_name(struct dma_fence *fence)
{
	return "copy-engine";
}

static const struct dma_fence_ops extmem_fence_ops = {
	.get_driver_name = extmem_fence_driver_name,
	.get_timeline_name = extmem_fence_timeline_name,
};

/* An object the job touches; `write` if any command writes it. */
struct extmem_job_object {
	struct drm_gem_object *obj;
	bool write;
};

/* A signal syncobj: its point (0: binary) and, for a timeline point, the chain node. */
struct extmem_job_signal {
	struct drm_syncobj *syncobj;
	struct dma_fence_chain *chain;
	u64 point;
};

struct extmem_job {
	struct work_struct work;
	struct extmem_device *edev;
	struct extmem_file *efile;		/* referenced */
	struct extmem_fence *fence;		/* the job's reference */
	struct drm_extmem_exec args;		/* kcore's out fields land here */
	struct drm_extmem_cmd *cmds;
	struct extmem_job_object *objs;	/* referenced, each once */
	unsigned int nobjs, objs_cap;
	struct dma_fence **deps;		/* referenced, at most one per context */
	unsigned int ndeps, deps_cap;
	struct extmem_job_signal *signals;
	unsigned int nsignals;
	/* Set while queueing (out of memory): the job runs nothing and signals this. */
	int error;
};

static struct extmem_job *extmem_job_alloc(struct extmem_device *edev,
					   struct extmem_file *efile)
{
	struct extmem_job *job = kzalloc(sizeof(*job), GFP_KERNEL_ACCOUNT);

	if (!job)
		return NULL;
	job->fence = kzalloc(sizeof(*job->fence), GFP_KERNEL_ACCOUNT);
	if (!job->fence) {
		kfree(job);
		return NULL;
	}
	spin_lock_init(&job->fence->lock);
	init_completion(&job->fence->done);
	job->edev = edev;
	kref_get(&efile->ref);
	job->efile = efile;
	atomic64_inc(&edev->counters.jobs);
	return job;
}

/*
 * Drops everything the job holds. `fence_live`: the fence was initialised (its `done` is
 * completed and it is freed through its reference count), else it is a bare allocation.
 */
static void extmem_job_free(struct extmem_job *job, bool fence_live)
{
	struct extmem_fence *fence = job->fence;
	struct extmem_file *efile = job->efile;

	unsigned int i;

	for (i = 0; i < job->ndeps; i++)
		dma_fence_put(job->deps[i]);
	kfree(job->deps);
	for (i = 0; i < job->nobjs; i++)
		drm_gem_object_put(job->objs[i].obj);
	kfree(job->objs);
	for (i = 0; i < job->nsignals; i++) {
		dma_fence_chain_free(job->signals[i].chain);
		drm_syncobj_put(job->signals[i].syncobj);
	}
	kvfree(job->signals);
	kvfree(job->cmds);
	atomic64_dec(&job->edev->counters.jobs);
	kfree(job);
	if (fence_live) {
		complete_all(&fence->done);
		dma_fence_put(&fence->base);
	} else {
		kfree(fence);
	}
	/* Last: the file's VM lock was needed to put USERPTR objects above. */
	extmem_file_put(efile);
}

/*
 * Room for one more element in `*array` of `n` used out of `*cap` (doubling). krealloc,
 * not kvrealloc, whose arguments changed in 6.12: the arrays stay small (a few entries
 * per binding a batch touches).
 */
static int extmem_reserve(void **array, unsigned int n, unsigned int *cap, size_t size)
{
	unsigned int want = max(*cap * 2, 4U);
	void *grown;

	if (n < *cap)
		return 0;
	grown = krealloc_array(*array, want, size, GFP_KERNEL_ACCOUNT);
	if (!grown)
		return -ENOMEM;
	*array = grown;
	*cap = want;
	return 0;
}

/*
 * Adds `fence` (a new reference is taken) to what the job waits for: nothing for a fence
 * of this device (every earlier job has finished when this one runs) or a signalled one,
 * and of two fences of one context only the later.
 */
static int extmem_job_add_dep(struct extmem_job *job, struct dma_fence *fence)
{
	unsigned int i;
	int ret;

	if (fence->context == job->edev->fence_context || dma_fence_is_signaled(fence))
		return 0;
	for (i = 0; i < job->ndeps; i++) {
		if (job->deps[i]->context != fence->context)
			continue;
		if (dma_fence_is_later(fence, job->deps[i])) {
			dma_fence_put(job->deps[i]);
			job->deps[i] = dma_fence_get(fence);
		}
		return 0;
	}
	ret = extmem_reserve((void **)&job->deps, job->ndeps, &job->deps_cap, sizeof(*job->deps));
	if (ret)
		return ret;
	job->deps[job->ndeps++] = dma_fence_get(fence);
	return 0;
}

/*
 * extmem_kcore_exec_objects' visitor, under the VM lock: `object` is a binding's cookie
 * (struct extmem_binding, alive while bound). Each object is referenced once.
 */
static int extmem_job_visit(void *ctx, u64 object, bool write)
{
	struct extmem_job *job = ctx;
	struct drm_gem_object *obj = ((struct extmem_binding *)(uintptr_t)object)->obj;
	unsigned int i;
	int ret;

	for (i = 0; i < job->nobjs; i++) {
		if (job->objs[i].obj == obj) {
			job->objs[i].write |= write;
			return 0;
		}
	}
	ret = extmem_reserve((void **)&job->objs, job->nobjs, &job->objs_cap, sizeof(*job->objs));
	if (ret)
		return ret;
	drm_gem_object_get(obj);
	job->objs[job->nobjs].obj = obj;
	job->objs[job->nobjs].write = write;
	job->nobjs++;
	return 0;
}

/* Copies `count` syncs from user memory, each with known flags. */
static struct drm_extmem_exec_sync *extmem_copy_syncs(u64 ptr, u32 count)
{
	struct drm_extmem_exec_sync *syncs;
	unsigned int i;
	int ret;

	/* check_exec bounded count by EXTMEM_MAX_EXEC_SYNCS. */
	syncs = kvmalloc_array(count, sizeof(*syncs), GFP_KERNEL);
	if (!syncs)
		return ERR_PTR(-ENOMEM);
	if (copy_from_user(syncs, u64_to_user_ptr(ptr), array_size(count, sizeof(*syncs)))) {
		ret = -EFAULT;
		goto err;
	}
	for (i = 0; i < count; i++) {
		ret = extmem_kcore_check_exec_sync(&syncs[i]);
		if (ret)
			goto err;
	}
	return syncs;
err:
	kvfree(syncs);
	return ERR_PTR(ret);
}

/* The wait syncobjs' fences become dependencies (ENOENT, EINVAL from the DRM core). */
static int extmem_job_add_waits(struct extmem_job *job, struct drm_file *file,
				const struct drm_extmem_exec *args)
{
	struct drm_extmem_exec_sync *syncs;
	unsigned int i;
	int ret = 0;

	if (!args->wait_count)
		return 0;
	syncs = extmem_copy_syncs(args->waits, args->wait_count);
	if (IS_ERR(syncs))
		return PTR_ERR(syncs);
	for (i = 0; i < args->wait_count && !ret; i++) {
		struct dma_fence *fence;

		ret = drm_syncobj_find_fence(file, syncs[i].handle, syncs[i].point, 0, &fence);
		if (ret)
			break;
		ret = extmem_job_add_dep(job, fence);
		dma_fence_put(fence);
	}
	kvfree(syncs);
	return ret;
}

/*
 * Looks up the signal syncobjs (ENOENT for a handle that names none) and allocates the
 * chain node of each timeline point, so nothing can fail once the job is queued.
 */
static int extmem_job_get_signals(struct extmem_job *job, struct drm_file *file,
				  const struct drm_extmem_exec *args)
{
	struct drm_extmem_exec_sync *syncs;
	unsigned int i;
	int ret = 0;

	if (!args->signal_count)
		return 0;
	syncs = extmem_copy_syncs(args->signals, args->signal_count);
	if (IS_ERR(syncs))
		return PTR_ERR(syncs);
	job->signals = kvcalloc(args->signal_count, sizeof(*job->signals), GFP_KERNEL);
	if (!job->signals) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < args->signal_count; i++) {
		struct extmem_job_signal *signal = &job->signals[i];

		signal->syncobj = drm_syncobj_find(file, syncs[i].handle);
		if (!signal->syncobj) {
			ret = -ENOENT;
			break;
		}
		/* Counted now, so extmem_job_free() puts what was found so far. */
		job->nsignals++;
		signal->point = syncs[i].point;
		if (signal->point) {
			signal->chain = dma_fence_chain_alloc();
			if (!signal->chain) {
				ret = -ENOMEM;
				break;
			}
		}
	}
out:
	kvfree(syncs);
	return ret;
}

/* Installs the job's fence in its signal syncobjs; the chain nodes are used up. */
static void extmem_job_signal_syncobjs(struct extmem_job *job)
{
	struct dma_fence *fence = &job->fence->base;
	unsigned int i;

	for (i = 0; i < job->nsignals; i++) {
		struct extmem_job_signal *signal = &job->signals[i];

		if (signal->point) {
			drm_syncobj_add_point(signal->syncobj, signal->chain, fence, signal->point);
			signal->chain = NULL;
		} else {
			drm_syncobj_replace_fence(signal->syncobj, fence);
		}
	}
}

/*
 * Implicit sync with one reservation object: the fences the job must wait for (all of
 * them if it writes, the writers' if it only reads) become dependencies, and its own
 * fence is added with the matching usage. A failure (out of memory) is recorded in
 * job->error: the fence may already be in other reservation objects, so the job is still
 * queued, and signals with the error without running.
 */
static void extmem_job_sync_resv(struct extmem_job *job, struct dma_resv *resv, bool write)
{
	struct dma_resv_iter cursor;
	struct dma_fence *fence;
	int ret = 0;

	dma_resv_lock(resv, NULL);
	dma_resv_for_each_fence(&cursor, resv, dma_resv_usage_rw(write), fence) {
		ret = extmem_job_add_dep(job, fence);
		if (ret)
			break;
	}
	if (!ret)
		ret = dma_resv_reserve_fences(resv, 1);
	if (!ret)
		dma_resv_add_fence(resv, &job->fence->base,
				   write ? DMA_RESV_USAGE_WRITE : DMA_RESV_USAGE_READ);
	dma_resv_unlock(resv);
	if (ret && !job->error)
		job->error = ret;
}

/* Waits for one dependency: -ETIMEDOUT after EXTMEM_DEP_TIMEOUT, -ECANCELED at close. */
static int extmem_job_wait_dep(struct extmem_job *job, struct dma_fence *dep)
{
	unsigned long deadline = jiffies + EXTMEM_DEP_TIMEOUT;

	while (!dma_fence_is_signaled(dep)) {
		long left = (long)(deadline - jiffies);

		if (READ_ONCE(job->efile->closing))
			return -ECANCELED;
		if (left <= 0)
			return -ETIMEDOUT;
		dma_fence_wait_timeout(dep, false, min_t(long, left, EXTMEM_DEP_SLICE));
	}
	return 0;
}

/*
 * The cache maintenance around a run: every object synced for the device before it
 * (`before`), each object it writes synced for the CPU after it. Timed, and recorded as
 * the last job's and in the running totals (the debugfs counters file).
 */
static void extmem_job_sync(struct extmem_job *job, bool before,
			    struct extmem_sync_stats *stats)
{
	u64 t0 = ktime_get_ns();
	unsigned int i;

	for (i = 0; i < job->nobjs; i++) {
		struct extmem_bo *bo = to_extmem_bo(job->objs[i].obj);

		if (before)
			extmem_bo_sync_for_device(bo, job->objs[i].write, stats);
		else if (job->objs[i].write)
			extmem_bo_sync_for_cpu(bo, stats);
	}
	stats->ns += ktime_get_ns() - t0;
}

static void extmem_job_record_sync(struct extmem_device *edev,
				   const struct extmem_sync_stats *stats)
{
	struct extmem_sync_stats *total = &edev->total_sync;

	spin_lock(&edev->sync_stats_lock);
	edev->last_job_sync = *stats;
	total->for_device += stats->for_device;
	total->for_device_bytes += stats->for_device_bytes;
	total->for_cpu += stats->for_cpu;
	total->for_cpu_bytes += stats->for_cpu_bytes;
	total->ns += stats->ns;
	spin_unlock(&edev->sync_stats_lock);
}

/*
 * Runs the commands through the file's VM, between the syncs for the device and for the
 * CPU; the fault fields go to the fence. A run that stops early (a fault, the file's
 * close) may have written part of what it writes, so the syncs for the CPU happen
 * whatever it returns.
 */
static int extmem_job_execute(struct extmem_job *job)
{
	struct extmem_file *efile = job->efile;
	struct extmem_fence *fence = job->fence;
	struct extmem_sync_stats sync = {};
	int ret;

	mutex_lock(&efile->vm_lock);
	if (efile->vm_dead) {
		ret = -ECANCELED;
	} else {
		/*
		 * LAST_EXEC_NS: the engine's own time, without the queue and the wakeups, nor
		 * the syncs around it (timed on their own, in the debugfs counters).
		 */
		u64 t0;

		extmem_job_sync(job, true, &sync);
		t0 = ktime_get_ns();
		ret = extmem_kcore_exec(efile->vm, &job->args, job->cmds);
		WRITE_ONCE(efile->last_exec_ns, ktime_get_ns() - t0);
		extmem_job_sync(job, false, &sync);
		extmem_job_record_sync(job->edev, &sync);
	}
	extmem_vm_unlock(efile);
	fence->fault_va = job->args.fault_va;
	fence->fault_cmd = job->args.fault_cmd;
	fence->fault_kind = job->args.fault_kind;
	/* A copy stopped by the file's close (extmem_plat_copy) is a cancellation. */
	if (ret && READ_ONCE(efile->closing))
		ret = -ECANCELED;
	return ret;
}

static void extmem_job_work(struct work_struct *work)
{
	struct extmem_job *job = container_of(work, struct extmem_job, work);
	struct dma_fence *fence = &job->fence->base;
	unsigned int i;
	int ret = job->error;

	for (i = 0; i < job->ndeps && !ret; i++)
		ret = extmem_job_wait_dep(job, job->deps[i]);
	if (!ret && READ_ONCE(job->efile->closing))
		ret = -ECANCELED;
	if (!ret)
		ret = extmem_job_execute(job);
	if (ret)
		dma_fence_set_error(fence, ret);
	/*
	 * Counted before the signal: a client that wakes from a wait on this fence (or on a
	 * timeline point after it, whose chain node does not carry the error) reads the count
	 * with this job in it. A cancellation is the file's own close, which nobody reads.
	 */
	if (ret && ret != -ECANCELED)
		atomic64_inc(&job->efile->job_faults);
	dma_fence_signal(fence);
	/* Only now do the objects (their pins, attachments) go; then `done` completes. */
	extmem_job_free(job, true);
}

/*
 * Gives the job its fence, synchronises with the reservation objects of what it touches
 * and queues it. Cannot fail: from here on the job signals, with an error if need be.
 * Returns a reference to the fence for the caller.
 */
static struct dma_fence *extmem_job_queue(struct extmem_job *job)
{
	struct extmem_device *edev = job->edev;
	struct extmem_file *efile = job->efile;
	struct dma_fence *fence = &job->fence->base;
	struct dma_fence *old;
	unsigned int i;

	mutex_lock(&edev->submit_lock);
	dma_fence_init(fence, &extmem_fence_ops, &job->fence->lock, edev->fence_context,
		       ++edev->fence_seqno);
	for (i = 0; i < job->nobjs; i++) {
		struct dma_resv *resv = extmem_bo_resv(to_extmem_bo(job->objs[i].obj));

		if (resv)
			extmem_job_sync_resv(job, resv, job->objs[i].write);
	}
	extmem_job_signal_syncobjs(job);
	dma_fence_get(fence);		/* the caller's */
	spin_lock(&efile->fence_lock);
	old = efile->last_fence;
	efile->last_fence = dma_fence_get(fence);
	spin_unlock(&efile->fence_lock);
	INIT_WORK(&job->work, extmem_job_work);
	queue_work(edev->engine, &job->work);
	mutex_unlock(&edev->submit_lock);
	dma_fence_put(old);
	return fence;
}

int extmem_ioctl_exec(struct drm_device *drm, void *data, struct drm_file *file)
{
	struct extmem_device *edev = to_extmem_device(drm);
	struct extmem_file *efile = file->driver_priv;
	struct drm_extmem_exec *args = data;
	struct extmem_fence *efence;
	struct extmem_job *job;
	struct dma_fence *fence;
	int ret;

	ret = extmem_kcore_check_exec(args);
	if (ret)
		return ret;
	args->fault_va = 0;
	args->fault_cmd = 0;
	args->fault_kind = EXTMEM_FAULT_NONE;

	job = extmem_job_alloc(edev, efile);
	if (!job)
		return -ENOMEM;
	/* check_exec bounded count by EXTMEM_MAX_EXEC_CMDS. */
	job->cmds = kvmalloc_array(args->count, sizeof(*job->cmds), GFP_KERNEL);
	if (!job->cmds) {
		ret = -ENOMEM;
		goto err_free;
	}
	if (copy_from_user(job->cmds, u64_to_user_ptr(args->cmds),
			   array_size(args->count, sizeof(*job->cmds)))) {
		ret = -EFAULT;
		goto err_free;
	}

	/* Malformed commands first (fault_cmd names one), then the syncobjs. */
	ret = mutex_lock_interruptible(&efile->vm_lock);
	if (ret)
		goto err_free;
	ret = extmem_kcore_exec_objects(efile->vm, args, job->cmds, job, extmem_job_visit);
	extmem_vm_unlock(efile);
	if (ret)
		goto err_free;
	ret = extmem_job_add_waits(job, file, args);
	if (ret)
		goto err_free;
	ret = extmem_job_get_signals(job, file, args);
	if (ret)
		goto err_free;
	job->args = *args;

	fence = extmem_job_queue(job);
	if (!(args->flags & EXTMEM_EXEC_WAIT)) {
		dma_fence_put(fence);
		return 0;
	}
	/*
	 * Not interruptible: an EINTR would have userspace (drmIoctl) submit the job again.
	 * The wait is bounded by the dependency timeout and the job's own run.
	 */
	efence = container_of(fence, struct extmem_fence, base);
	wait_for_completion(&efence->done);
	args->fault_va = efence->fault_va;
	args->fault_cmd = efence->fault_cmd;
	args->fault_kind = efence->fault_kind;
	ret = dma_fence_get_status(fence);
	dma_fence_put(fence);
	/* drm_ioctl() copies *args back even on error, so the fault fields reach userspace. */
	return ret < 0 ? ret : 0;

err_free:
	extmem_job_free(job, false);
	return ret;
}

/*
 * Waits until every job of the file has signalled (its last fence). `interruptible`:
 * a signal ends the wait with -ERESTARTSYS (VM_BIND UNMAP); close waits regardless, but
 * only for as long as cancellation takes.
 */
int extmem_file_wait_idle(struct extmem_file *efile, bool interruptible)
{
	struct extmem_fence *last;
	struct dma_fence *fence;
	int ret = 0;

	spin_lock(&efile->fence_lock);
	fence = dma_fence_get(efile->last_fence);
	spin_unlock(&efile->fence_lock);
	if (!fence)
		return 0;
	/*
	 * The last job's `done`: jobs run one after the other, each freed before the next
	 * starts, so every earlier job of the file has let go of its memory too.
	 */
	last = container_of(fence, struct extmem_fence, base);
	if (interruptible)
		ret = wait_for_completion_interruptible(&last->done);
	else
		wait_for_completion(&last->done);
	dma_fence_put(fence);
	return ret;
}

int extmem_engine_init(struct extmem_device *edev)
{
	/*
	 * WQ_MEM_RECLAIM: reclaim may wait for our fences (a shrinker waiting for a dma-buf's
	 * reservation object), so the engine must make progress without a new worker.
	 */
	edev->engine = alloc_ordered_workqueue("extmem-engine", WQ_MEM_RECLAIM);
	if (!edev->engine)
		return -ENOMEM;
	mutex_init(&edev->submit_lock);
	spin_lock_init(&edev->sync_stats_lock);
	edev->fence_context = dma_fence_context_alloc(1);
	return 0;
}

/* After every file is closed: lets the last jobs finish freeing themselves. */
void extmem_engine_fini(struct extmem_device *edev)
{
	destroy_workqueue(edev->engine);
	mutex_destroy(&edev->submit_lock);
}
