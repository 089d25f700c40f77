/* SPDX-License-Identifier: MIT */
/*
 * The ioctl contract of the extmem-vgpu DRM driver.
 *
 * Mirrors the Rust crate extmem-uapi (kernel-shim/uapi), which is the source of truth;
 * its test compiles generated _Static_asserts against this file, so the two cannot
 * drift. Conventions and error numbers are documented there.
 */
#ifndef EXTMEM_VGPU_DRM_H
#define EXTMEM_VGPU_DRM_H

#include <drm/drm.h>

#define EXTMEM_API_VERSION 2

#define EXTMEM_PARAM_API_VERSION 1
#define EXTMEM_PARAM_VA_BITS 2
#define EXTMEM_PARAM_OA_BITS 3
#define EXTMEM_PARAM_PAGE_SIZES 4
#define EXTMEM_PARAM_MIN_IMPORT_ALIGNMENT 5
#define EXTMEM_PARAM_MAX_MAPPING 6
#define EXTMEM_PARAM_DEVICE_UUID_LO 7
#define EXTMEM_PARAM_DEVICE_UUID_HI 8
#define EXTMEM_PARAM_DRIVER_UUID_LO 9
#define EXTMEM_PARAM_DRIVER_UUID_HI 10
#define EXTMEM_PARAM_LIVE_OBJECTS 11
#define EXTMEM_PARAM_PINNED_PAGES 12
#define EXTMEM_PARAM_PT_PAGES 13
#define EXTMEM_PARAM_ATTACHMENTS 14
#define EXTMEM_PARAM_BINDINGS 15
#define EXTMEM_PARAM_LAST_PIN_NS 16
#define EXTMEM_PARAM_LAST_ATTACH_NS 17
#define EXTMEM_PARAM_JOBS 18
#define EXTMEM_PARAM_CPU_PAGE_SIZE 19
#define EXTMEM_PARAM_LAST_USERPTR_RECORD_NS 20
#define EXTMEM_PARAM_LAST_USERPTR_LEDGER_NS 21
#define EXTMEM_PARAM_LAST_USERPTR_SETUP_NS 22
#define EXTMEM_PARAM_LAST_USERPTR_NS 23
#define EXTMEM_PARAM_LAST_EXEC_NS 24
#define EXTMEM_PARAM_JOB_FAULTS 25

#define EXTMEM_OBJECT_SHMEM 1
#define EXTMEM_OBJECT_USERPTR 2
#define EXTMEM_OBJECT_DMABUF 3
#define EXTMEM_OBJECT_FOREIGN 4

#define EXTMEM_BIND_MAP 1
#define EXTMEM_BIND_UNMAP 2

#define EXTMEM_CMD_COPY 1
#define EXTMEM_CMD_FILL 2

#define EXTMEM_FAULT_NONE 0
#define EXTMEM_FAULT_UNMAPPED 1
#define EXTMEM_FAULT_READ_ONLY 2

#define EXTMEM_FLAG_READ_ONLY (1u << 0)
#define EXTMEM_USERPTR_PROBE (1u << 1)
#define EXTMEM_GEM_CREATE_FLAGS 0u
#define EXTMEM_GEM_USERPTR_FLAGS (EXTMEM_FLAG_READ_ONLY | EXTMEM_USERPTR_PROBE)
#define EXTMEM_VM_BIND_FLAGS EXTMEM_FLAG_READ_ONLY
#define EXTMEM_QUERY_MAPPED (1u << 0)
#define EXTMEM_QUERY_READ_ONLY (1u << 1)
#define EXTMEM_MAX_EXEC_CMDS 1024u
#define EXTMEM_EXEC_WAIT (1u << 0)
#define EXTMEM_EXEC_FLAGS EXTMEM_EXEC_WAIT
#define EXTMEM_MAX_EXEC_SYNCS 64u
#define EXTMEM_EXEC_SYNC_FLAGS 0u

struct drm_extmem_get_param {
	__u32 param;
	__u32 pad;
	__u64 value;
};

struct drm_extmem_gem_create {
	__u64 size;
	__u32 flags;
	__u32 handle;
};

struct drm_extmem_gem_userptr {
	__u64 ptr;
	__u64 size;
	__u32 flags;
	__u32 handle;
	__u32 kind;
	__u32 pad;
};

struct drm_extmem_gem_info {
	__u32 handle;
	__u32 kind;
	__u64 size;
	__u64 mmap_offset;
	__u32 flags;
	__u32 pad;
};

struct drm_extmem_vm_bind {
	__u32 op;
	__u32 flags;
	__u32 handle;
	__u32 pad;
	__u64 va;
	__u64 offset;
	__u64 size;
};

struct drm_extmem_cmd {
	__u32 op;
	__u32 value;
	__u64 src;
	__u64 dst;
	__u64 size;
};

struct drm_extmem_exec_sync {
	__u32 handle;
	__u32 flags;
	__u64 point;
};

struct drm_extmem_exec {
	__u64 cmds;
	__u32 count;
	__u32 flags;
	__u64 fault_va;
	__u32 fault_cmd;
	__u32 fault_kind;
	__u64 waits;
	__u64 signals;
	__u32 wait_count;
	__u32 signal_count;
};

struct drm_extmem_vm_query {
	__u64 va;
	__u64 pa;
	__u64 page_size;
	__u32 flags;
	__u32 pad;
};

#define DRM_EXTMEM_GET_PARAM 0x00
#define DRM_EXTMEM_GEM_CREATE 0x01
#define DRM_EXTMEM_GEM_USERPTR 0x02
#define DRM_EXTMEM_GEM_INFO 0x03
#define DRM_EXTMEM_VM_BIND 0x04
#define DRM_EXTMEM_EXEC 0x05
#define DRM_EXTMEM_VM_QUERY 0x06

#define DRM_IOCTL_EXTMEM_GET_PARAM \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_EXTMEM_GET_PARAM, struct drm_extmem_get_param)
#define DRM_IOCTL_EXTMEM_GEM_CREATE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_EXTMEM_GEM_CREATE, struct drm_extmem_gem_create)
#define DRM_IOCTL_EXTMEM_GEM_USERPTR \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_EXTMEM_GEM_USERPTR, struct drm_extmem_gem_userptr)
#define DRM_IOCTL_EXTMEM_GEM_INFO \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_EXTMEM_GEM_INFO, struct drm_extmem_gem_info)
#define DRM_IOCTL_EXTMEM_VM_BIND \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_EXTMEM_VM_BIND, struct drm_extmem_vm_bind)
#define DRM_IOCTL_EXTMEM_EXEC \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_EXTMEM_EXEC, struct drm_extmem_exec)
#define DRM_IOCTL_EXTMEM_VM_QUERY \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_EXTMEM_VM_QUERY, struct drm_extmem_vm_query)

#endif /* EXTMEM_VGPU_DRM_H */
