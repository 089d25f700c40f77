// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * extmem-vgpu: a virtual GPU whose MMU uses a real page-table format, so the external-
 * memory stack of extmem runs for real (pin_user_pages, dma-buf attachments, page tables,
 * a copy engine that only reaches memory through them). Like vgem it has no hardware: one
 * platform device, one DRM device with a render node.
 *
 * This file: the module, the DRM driver, per-file state, GET_PARAM, the counters and the
 * load-time self-test of the Rust core.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/dma-fence.h>
#include <linux/dma-map-ops.h>
#include <linux/dma-mapping.h>
#include <linux/iommu.h>
#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/xxhash.h>

#include <drm/drm_debugfs.h>
#include <drm/drm_drv.h>
#include <drm/drm_file.h>
#include <drm/drm_gem.h>
#include <drm/drm_ioctl.h>
#include <drm/drm_managed.h>
#include <drm/drm_prime.h>

#include "extmem_vgpu.h"
#include "extmem_vgpu_compat.h"

#define DRIVER_DESC "extmem virtual GPU (external-memory test device)"
#define DRIVER_MAJOR 1
#define DRIVER_MINOR 0

static bool selftest;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest, "Run the extmem-kcore self-tests at load and print their KTAP report");

/*
 * The driver UUID changes with the build: Kbuild passes the first 16 bytes of a SHA-256
 * over the module's sources and the shipped core object (see Kbuild).
 */
#ifndef EXTMEM_DRIVER_UUID_BYTES
#error "Kbuild must define EXTMEM_DRIVER_UUID_BYTES"
#endif
static const u8 extmem_driver_uuid[16] = { EXTMEM_DRIVER_UUID_BYTES };

static struct extmem_device *extmem_dev;

/*
 * The device UUID must not change across processes, reloads and reboots (Vulkan's
 * deviceUUID), and a virtual device has no serial number: derive it from the device's
 * name, as an RFC 9562 version-8 (vendor-specific) UUID.
 */
static void extmem_make_device_uuid(struct extmem_device *edev)
{
	const char *name = dev_name(&edev->pdev->dev);
	u64 lo = xxh64(name, strlen(name), 0x6578746d656d3030ull);
	u64 hi = xxh64(name, strlen(name), 0x6578746d656d3031ull);

	put_unaligned_le64(lo, &edev->device_uuid[0]);
	put_unaligned_le64(hi, &edev->device_uuid[8]);
	edev->device_uuid[6] = (edev->device_uuid[6] & 0x0f) | 0x80;	/* version 8 */
	edev->device_uuid[8] = (edev->device_uuid[8] & 0x3f) | 0x80;	/* RFC variant */
}

static void extmem_file_release(struct kref *ref)
{
	struct extmem_file *efile = container_of(ref, struct extmem_file, ref);

	dma_fence_put(efile->last_fence);
	mutex_destroy(&efile->vm_lock);
	kfree(efile->pin_batch);
	kfree(efile);
}

void extmem_file_put(struct extmem_file *efile)
{
	kref_put(&efile->ref, extmem_file_release);
}

static int extmem_open(struct drm_device *drm, struct drm_file *file)
{
	struct extmem_file *efile;
	int ret;

	efile = kzalloc(sizeof(*efile), GFP_KERNEL);
	if (!efile)
		return -ENOMEM;
	kref_init(&efile->ref);
	mutex_init(&efile->vm_lock);
	spin_lock_init(&efile->fence_lock);
	INIT_LIST_HEAD(&efile->unbound);
	ret = extmem_file_vm_init(efile, to_extmem_device(drm));
	if (ret) {
		extmem_file_put(efile);
		return ret;
	}
	file->driver_priv = efile;
	return 0;
}

/*
 * Runs after drm_gem_release() dropped the file's handles; the bindings still hold their
 * objects, so tearing the VM down here releases the last pins, page-table pages and
 * dma-buf attachments of the file. This is also the path of a killed process: its files
 * are closed on exit.
 */
static void extmem_postclose(struct drm_device *drm, struct drm_file *file)
{
	struct extmem_file *efile = file->driver_priv;

	/*
	 * The file's jobs still use its VM: cancel those not yet run, stop the running one
	 * at its next page, and wait for the last to signal before the VM goes.
	 */
	WRITE_ONCE(efile->closing, true);
	extmem_file_wait_idle(efile, false);
	extmem_file_vm_fini(efile);
	extmem_file_put(efile);
}

static int extmem_ioctl_get_param(struct drm_device *drm, void *data, struct drm_file *file)
{
	struct extmem_device *edev = to_extmem_device(drm);
	struct extmem_file *efile = file->driver_priv;
	struct drm_extmem_get_param *args = data;
	const struct extmem_counters *c = &edev->counters;
	int ret;

	ret = extmem_kcore_get_param(args);
	if (ret != EXTMEM_KCORE_PLATFORM_PARAM)
		return ret;

	switch (args->param) {
	case EXTMEM_PARAM_DEVICE_UUID_LO:
		args->value = get_unaligned_le64(&edev->device_uuid[0]);
		break;
	case EXTMEM_PARAM_DEVICE_UUID_HI:
		args->value = get_unaligned_le64(&edev->device_uuid[8]);
		break;
	case EXTMEM_PARAM_DRIVER_UUID_LO:
		args->value = get_unaligned_le64(&extmem_driver_uuid[0]);
		break;
	case EXTMEM_PARAM_DRIVER_UUID_HI:
		args->value = get_unaligned_le64(&extmem_driver_uuid[8]);
		break;
	case EXTMEM_PARAM_LIVE_OBJECTS:
		args->value = atomic64_read(&c->live_objects);
		break;
	case EXTMEM_PARAM_PINNED_PAGES:
		args->value = atomic64_read(&c->pinned_pages);
		break;
	case EXTMEM_PARAM_PT_PAGES:
		args->value = atomic64_read(&c->pt_pages);
		break;
	case EXTMEM_PARAM_ATTACHMENTS:
		args->value = atomic64_read(&c->attachments);
		break;
	case EXTMEM_PARAM_BINDINGS:
		args->value = atomic64_read(&c->bindings);
		break;
	case EXTMEM_PARAM_LAST_PIN_NS:
		args->value = READ_ONCE(efile->last_pin_ns);
		break;
	case EXTMEM_PARAM_LAST_ATTACH_NS:
		args->value = READ_ONCE(edev->last_attach_ns);
		break;
	case EXTMEM_PARAM_LAST_USERPTR_RECORD_NS:
		args->value = READ_ONCE(efile->last_record_ns);
		break;
	case EXTMEM_PARAM_LAST_USERPTR_LEDGER_NS:
		args->value = READ_ONCE(efile->last_ledger_ns);
		break;
	case EXTMEM_PARAM_LAST_USERPTR_SETUP_NS:
		args->value = READ_ONCE(efile->last_setup_ns);
		break;
	case EXTMEM_PARAM_LAST_USERPTR_NS:
		args->value = READ_ONCE(efile->last_userptr_ns);
		break;
	case EXTMEM_PARAM_LAST_EXEC_NS:
		args->value = READ_ONCE(efile->last_exec_ns);
		break;
	case EXTMEM_PARAM_JOBS:
		args->value = atomic64_read(&c->jobs);
		break;
	case EXTMEM_PARAM_JOB_FAULTS:
		args->value = atomic64_read(&efile->job_faults);
		break;
	default:
		/* kcore named a parameter this glue does not know: the two disagree. */
		return -EINVAL;
	}
	return 0;
}

static const struct drm_ioctl_desc extmem_ioctls[] = {
	DRM_IOCTL_DEF_DRV(EXTMEM_GET_PARAM, extmem_ioctl_get_param, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(EXTMEM_GEM_CREATE, extmem_ioctl_gem_create, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(EXTMEM_GEM_USERPTR, extmem_ioctl_gem_userptr, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(EXTMEM_GEM_INFO, extmem_ioctl_gem_info, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(EXTMEM_VM_BIND, extmem_ioctl_vm_bind, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(EXTMEM_EXEC, extmem_ioctl_exec, DRM_RENDER_ALLOW),
	DRM_IOCTL_DEF_DRV(EXTMEM_VM_QUERY, extmem_ioctl_vm_query, DRM_RENDER_ALLOW),
};

DEFINE_DRM_GEM_FOPS(extmem_fops);

static void extmem_sync_stats_show(struct seq_file *m, const char *prefix,
				   const struct extmem_sync_stats *s)
{
	seq_printf(m, "%s_for_device %llu\n", prefix, s->for_device);
	seq_printf(m, "%s_for_device_bytes %llu\n", prefix, s->for_device_bytes);
	seq_printf(m, "%s_for_cpu %llu\n", prefix, s->for_cpu);
	seq_printf(m, "%s_for_cpu_bytes %llu\n", prefix, s->for_cpu_bytes);
	seq_printf(m, "%s_ns %llu\n", prefix, s->ns);
}

static int extmem_counters_show(struct seq_file *m, void *data)
{
	struct extmem_device *edev = to_extmem_device(extmem_debugfs_drm(m));
	const struct extmem_counters *c = &edev->counters;
	struct extmem_sync_stats last, total;

	spin_lock(&edev->sync_stats_lock);
	last = edev->last_job_sync;
	total = edev->total_sync;
	spin_unlock(&edev->sync_stats_lock);

	seq_printf(m, "live_objects %lld\n", atomic64_read(&c->live_objects));
	seq_printf(m, "pinned_pages %lld\n", atomic64_read(&c->pinned_pages));
	seq_printf(m, "pt_pages %lld\n", atomic64_read(&c->pt_pages));
	seq_printf(m, "attachments %lld\n", atomic64_read(&c->attachments));
	/* Not in GET_PARAM: the guest checks read it here, beside the sync counts. */
	seq_printf(m, "user_dma_maps %lld\n", atomic64_read(&c->user_dma_maps));
	seq_printf(m, "bindings %lld\n", atomic64_read(&c->bindings));
	seq_printf(m, "device_bytes %lld\n", atomic64_read(&c->device_bytes));
	seq_printf(m, "jobs %lld\n", atomic64_read(&c->jobs));
	/*
	 * Whether the DMA API does cache maintenance for the device: not on arm64's -M virt,
	 * where a platform device that no firmware node calls dma-coherent is not.
	 */
	seq_printf(m, "dma_coherent %d\n", dev_is_dma_coherent(&edev->pdev->dev));
	seq_printf(m, "dma_max_seg_size %u\n", dma_get_max_seg_size(&edev->pdev->dev));
	/* The cache maintenance of the last job that ran, and of every job since load. */
	extmem_sync_stats_show(m, "last_job_sync", &last);
	extmem_sync_stats_show(m, "total_sync", &total);
	return 0;
}

/* The counters file, see extmem_debugfs_add_file() below. */
EXTMEM_DEBUGFS_INIT(extmem_debugfs_init, "extmem_counters", extmem_counters_show)

static const struct drm_driver extmem_driver = {
	/* Syncobjs (binary and timeline) for EXEC's waits and signals (extmem_vgpu_job.c). */
	.driver_features = DRIVER_GEM | DRIVER_RENDER | DRIVER_SYNCOBJ | DRIVER_SYNCOBJ_TIMELINE,
	.open = extmem_open,
	.postclose = extmem_postclose,
	.ioctls = extmem_ioctls,
	.num_ioctls = ARRAY_SIZE(extmem_ioctls),
	.fops = &extmem_fops,
	/* GEM_CREATE objects come from the shmem helpers, allocated as our extmem_bo. */
	.gem_create_object = extmem_gem_create_object,
	/* PRIME import: drm_gem_prime_import() with the attachment mapping timed. */
	.gem_prime_import = extmem_gem_prime_import,
	EXTMEM_DRM_DRIVER_PRIME_FD
	.name = EXTMEM_DRIVER_NAME,
	.desc = DRIVER_DESC,
	EXTMEM_DRM_DRIVER_DATE
	EXTMEM_DRM_DRIVER_DEBUGFS_INIT(extmem_debugfs_init)
	.major = DRIVER_MAJOR,
	.minor = DRIVER_MINOR,
};

static void extmem_selftest_emit(const char *line)
{
	/* The runner picks these lines out of the kernel log by this prefix. */
	pr_info("selftest: %s\n", line);
}

static void extmem_run_selftest(struct extmem_device *edev)
{
	struct extmem_plat plat = { .edev = edev };
	int failed;

	failed = extmem_kcore_selftest(&plat, extmem_selftest_emit);
	if (failed)
		pr_err("selftest: %d test(s) failed\n", failed);
	if (atomic64_read(&edev->counters.pt_pages))
		pr_err("selftest: %lld page-table page(s) left allocated\n",
		       atomic64_read(&edev->counters.pt_pages));
}

/* The profile's output-address width, from the core, which owns the profile. */
static int extmem_oa_bits(u64 *bits)
{
	struct drm_extmem_get_param param = { .param = EXTMEM_PARAM_OA_BITS };
	int ret = extmem_kcore_get_param(&param);

	if (ret)
		return ret < 0 ? ret : -EINVAL;
	if (param.value < 32 || param.value > 63)
		return -EINVAL;
	*bits = param.value;
	return 0;
}

/*
 * The copy engine treats the DMA addresses exporters map for this device as physical
 * addresses (extmem_vgpu_gem.c). Proven once for the device rather than per import, since
 * an importer may not look at the pages behind a dma-buf's scatterlist: no IOMMU
 * translates for it, and a page mapped for it comes back at its physical address (no
 * swiotlb bounce, no DMA offset).
 */
static int extmem_check_dma_is_physical(struct device *dev)
{
	struct page *page;
	phys_addr_t phys;
	dma_addr_t addr;
	int ret = 0;

	if (device_iommu_mapped(dev)) {
		dev_err(dev, "an IOMMU translates for the device; its page tables need physical addresses\n");
		return -ENODEV;
	}
	page = alloc_page(GFP_KERNEL);
	if (!page)
		return -ENOMEM;
	addr = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
	if (dma_mapping_error(dev, addr)) {
		ret = -EIO;
		goto out;
	}
	phys = page_to_phys(page);
	if (addr != phys) {
		dev_err(dev, "DMA address %pad is not the physical address %pa\n", &addr, &phys);
		ret = -ENODEV;
	}
	dma_unmap_page(dev, addr, PAGE_SIZE, DMA_BIDIRECTIONAL);
out:
	__free_page(page);
	return ret;
}

static int __init extmem_init(void)
{
	struct platform_device *pdev;
	struct extmem_device *edev;
	u64 oa_bits;
	int ret;

	/*
	 * The core takes the page size from the kernel it is loaded into (4 KiB, or 16 or 64
	 * KiB on arm64), before anything asks it a question that depends on it.
	 */
	ret = extmem_kcore_set_cpu_page_shift(PAGE_SHIFT);
	if (ret) {
		pr_err("the core does not support %lu-byte pages (%d)\n", PAGE_SIZE, ret);
		return ret;
	}

	ret = extmem_oa_bits(&oa_bits);
	if (ret) {
		pr_err("the core reports no usable OA_BITS (%d)\n", ret);
		return ret;
	}

	pdev = platform_device_register_simple(EXTMEM_DRIVER_NAME, -1, NULL, 0);
	if (IS_ERR(pdev))
		return PTR_ERR(pdev);

	if (!devres_open_group(&pdev->dev, NULL, GFP_KERNEL)) {
		ret = -ENOMEM;
		goto out_unregister;
	}

	/*
	 * The device reaches memory only through its page tables, whose output addresses
	 * are oa_bits wide; importers map dma-bufs for it with this mask. The platform
	 * device sits behind no IOMMU, so dma-direct hands out physical addresses: checked
	 * here, not assumed.
	 */
	ret = dma_coerce_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(oa_bits));
	if (ret)
		goto out_devres;
	/*
	 * The device reaches memory through its page tables, so a DMA segment of any length
	 * is fine; without this it would claim dma-direct's default 64 KiB, and the shmem
	 * helper's table (segments as long as dma_max_mapping_size() allows) would exceed it.
	 * The platform core gave the device its dma_parms.
	 */
	dma_set_max_seg_size(&pdev->dev, UINT_MAX);
	ret = extmem_check_dma_is_physical(&pdev->dev);
	if (ret)
		goto out_devres;

	edev = devm_drm_dev_alloc(&pdev->dev, &extmem_driver, struct extmem_device, drm);
	if (IS_ERR(edev)) {
		ret = PTR_ERR(edev);
		goto out_devres;
	}
	edev->pdev = pdev;
	edev->oa_limit = BIT_ULL(oa_bits);
	edev->device_budget = ((u64)totalram_pages() * 3 / 4) << PAGE_SHIFT;
	extmem_make_device_uuid(edev);
	extmem_share_init(edev);

	ret = extmem_engine_init(edev);
	if (ret)
		goto out_devres;

	if (selftest)
		extmem_run_selftest(edev);

	extmem_debugfs_add_file(&edev->drm, "extmem_counters", extmem_counters_show);

	ret = drm_dev_register(&edev->drm, 0);
	if (ret)
		goto out_engine;

	extmem_dev = edev;
	return 0;

out_engine:
	extmem_engine_fini(edev);
out_devres:
	devres_release_group(&pdev->dev, NULL);
out_unregister:
	platform_device_unregister(pdev);
	return ret;
}

static void __exit extmem_exit(void)
{
	struct platform_device *pdev = extmem_dev->pdev;

	drm_dev_unregister(&extmem_dev->drm);
	/* Every file is closed (they hold the module), so no job is left to wait for. */
	extmem_engine_fini(extmem_dev);
	extmem_share_fini(extmem_dev);
	devres_release_group(&pdev->dev, NULL);
	platform_device_unregister(pdev);
}

module_init(extmem_init);
module_exit(extmem_exit);

MODULE_DESCRIPTION(DRIVER_DESC);
MODULE_LICENSE("Dual MIT/GPL");
EXTMEM_IMPORT_NS_DMA_BUF();
