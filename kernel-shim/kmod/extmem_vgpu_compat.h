/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * extmem-vgpu: the kernel API differences between the kernels the module builds for, in
 * one place, each block naming the version that made the change. The glue is written
 * against the newest API; older kernels get it back here.
 */
#ifndef EXTMEM_VGPU_COMPAT_H
#define EXTMEM_VGPU_COMPAT_H

#include <linux/version.h>

/* 6.12 moved <asm/unaligned.h> to <linux/unaligned.h>. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

/* 6.13 made the namespace of MODULE_IMPORT_NS a string literal. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
#define EXTMEM_IMPORT_NS_DMA_BUF() MODULE_IMPORT_NS("DMA_BUF")
#else
#define EXTMEM_IMPORT_NS_DMA_BUF() MODULE_IMPORT_NS(DMA_BUF)
#endif

/* 6.14 removed drm_driver.date; before it, DRM required one. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 14, 0)
#define EXTMEM_DRM_DRIVER_DATE .date = "20250101",
#else
#define EXTMEM_DRM_DRIVER_DATE
#endif

/*
 * 6.6 made drm_gem_prime_fd_to_handle() and drm_gem_prime_handle_to_fd() what the PRIME
 * ioctls call for every GEM driver, and drm_gem_prime_mmap() what an mmap of an exported
 * dma-buf calls; before it, a driver that does not name them answers both ioctls and the
 * mmap with ENOSYS.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 6, 0)
#define EXTMEM_DRM_DRIVER_PRIME_FD					\
	.prime_fd_to_handle = drm_gem_prime_fd_to_handle,		\
	.prime_handle_to_fd = drm_gem_prime_handle_to_fd,		\
	.gem_prime_mmap = drm_gem_prime_mmap,
#else
#define EXTMEM_DRM_DRIVER_PRIME_FD
#endif

/*
 * 6.3 added drm_debugfs_add_file(), callable before drm_dev_register(), whose show
 * callback finds a struct drm_debugfs_entry in m->private. Before it, a driver creates its
 * files from its debugfs_init hook, and m->private is a struct drm_info_node:
 * EXTMEM_DEBUGFS_INIT(init, name, show) defines that hook for the one file, and
 * EXTMEM_DRM_DRIVER_DEBUGFS_INIT(init) sets it in the struct drm_driver.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
#define extmem_debugfs_drm(m) (((struct drm_debugfs_entry *)(m)->private)->dev)
#define extmem_debugfs_add_file(drm, name, show) drm_debugfs_add_file(drm, name, show, NULL)
#define EXTMEM_DEBUGFS_INIT(init, name, show)
#define EXTMEM_DRM_DRIVER_DEBUGFS_INIT(init)
#else
#define extmem_debugfs_drm(m) (((struct drm_info_node *)(m)->private)->minor->dev)
#define extmem_debugfs_add_file(drm, name, show) do { } while (0)
#define EXTMEM_DEBUGFS_INIT(init, name, show)						\
	static const struct drm_info_list init##_files[] = { { name, show } };		\
	static void init(struct drm_minor *minor)					\
	{										\
		drm_debugfs_create_files(init##_files, ARRAY_SIZE(init##_files),	\
					 minor->debugfs_root, minor);			\
	}
#define EXTMEM_DRM_DRIVER_DEBUGFS_INIT(init) .debugfs_init = (init),
#endif

/*
 * 6.18 removed nth_page(): the glue only compares struct page pointers of pinned pages
 * with it, and on x86-64 and arm64 (SPARSEMEM_VMEMMAP) it was plain pointer arithmetic.
 * Until then it is a macro of <linux/mm.h>.
 */
#include <linux/mm.h>
#ifndef nth_page
#define nth_page(page, n) ((page) + (n))
#endif

#endif /* EXTMEM_VGPU_COMPAT_H */
