// SPDX-License-Identifier: MIT OR Apache-2.0
//
// libextmem through its C header, as a driver calls it: a backend of C callbacks over
// memfds (device memory and "other devices' dma-bufs" are memfds; host imports are
// checked with msync, as the kernel would refuse an unmapped range), every Valid Usage
// rule of userspace/core/VUIDS.md that a Linux device can reach driven by a table of
// inputs and the VkResult and VUID each must give, the ownership rules of fds and host
// pointers, and null, stale and foreign handles. Built with -fsanitize=address,undefined;
// prints KTAP, one line per check.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <extmem.h>

// ---- KTAP -----------------------------------------------------------------------------

static int checks, failures;
// Result lines are kept until the end, so the plan line can come first.
static FILE *results;
static char *results_text;
static size_t results_size;

static void check(int ok, const char *name, const char *fmt, ...)
{
	checks++;
	if (ok) {
		fprintf(results, "ok %d %s\n", checks, name);
		return;
	}
	failures++;
	fprintf(results, "not ok %d %s # FAIL: ", checks, name);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(results, fmt, ap);
	va_end(ap);
	fprintf(results, "\n");
}

static const char *str_or_null(const char *s)
{
	return s ? s : "(null)";
}

// ---- the test backend -----------------------------------------------------------------

#define MAX_OBJECTS 64
#define PAGE 4096u
#define TYPE_DEVICE 0u
#define TYPE_HOST 1u

struct object {
	int used;
	int fd; // memfd, or -1 for a host import
	uint64_t size;
	uint32_t origin;
};

struct test_backend {
	struct object objects[MAX_OBJECTS];
	// Every buffer this device ever created, as a dma-buf remembers its exporter: an
	// fd of one imports as this device's own memory even after its handle was closed.
	struct { dev_t dev; ino_t ino; } native[4 * MAX_OBJECTS];
	int natives;
	int creates, closes, binds, unbinds, maps, unmaps;
};

static int live_objects(const struct test_backend *tb)
{
	int n = 0;
	for (int i = 0; i < MAX_OBJECTS; i++)
		n += tb->objects[i].used;
	return n;
}

static int new_object(struct test_backend *tb, int fd, uint64_t size, uint32_t origin,
		      uint32_t *handle)
{
	for (int i = 0; i < MAX_OBJECTS; i++) {
		if (!tb->objects[i].used) {
			tb->objects[i] = (struct object){ 1, fd, size, origin };
			*handle = (uint32_t)i + 1;
			return 0;
		}
	}
	return ENOSPC;
}

static struct object *lookup(struct test_backend *tb, uint32_t handle)
{
	if (handle == 0 || handle > MAX_OBJECTS || !tb->objects[handle - 1].used)
		return NULL;
	return &tb->objects[handle - 1];
}

static int tb_create(void *user, uint64_t size, uint32_t *handle)
{
	struct test_backend *tb = user;
	int fd = memfd_create("extmem-c-device", MFD_CLOEXEC);
	if (fd < 0)
		return errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = errno;
		close(fd);
		return e;
	}
	tb->creates++;
	struct stat st;
	if (fstat(fd, &st) == 0 && tb->natives < 4 * MAX_OBJECTS) {
		tb->native[tb->natives].dev = st.st_dev;
		tb->native[tb->natives].ino = st.st_ino;
		tb->natives++;
	}
	int rc = new_object(tb, fd, size, EXTMEM_ORIGIN_NATIVE, handle);
	if (rc)
		close(fd);
	return rc;
}

static int tb_import_host(void *user, void *ptr, uint64_t size, bool read_only, bool probe,
			  uint32_t *handle, bool *foreign)
{
	struct test_backend *tb = user;
	(void)read_only;
	// The kernel's GEM_USERPTR refuses a range that is not mapped with EFAULT; msync
	// tells the same (ENOMEM for an unmapped page).
	if (msync(ptr, size, MS_ASYNC) < 0)
		return -EFAULT; // the kernel's sign, which libextmem accepts too
	if (probe)
		return 0;
	*foreign = false;
	return new_object(tb, -1, size, EXTMEM_ORIGIN_USERPTR, handle);
}

static int tb_import_fd(void *user, int fd, uint32_t *handle)
{
	struct test_backend *tb = user;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return errno;
	// Only memfds are "dma-bufs" here: /dev/null, pipes and files are refused.
	if (fcntl(fd, F_GET_SEALS) < 0)
		return EINVAL;
	for (int i = 0; i < MAX_OBJECTS; i++) {
		struct stat mine;
		struct object *o = &tb->objects[i];
		if (o->used && o->fd >= 0 && fstat(o->fd, &mine) == 0 &&
		    mine.st_ino == st.st_ino && mine.st_dev == st.st_dev) {
			*handle = (uint32_t)i + 1; // PRIME gives back the same handle
			return 0;
		}
	}
	uint32_t origin = EXTMEM_ORIGIN_IMPORTED;
	for (int i = 0; i < tb->natives; i++) {
		if (tb->native[i].dev == st.st_dev && tb->native[i].ino == st.st_ino)
			origin = EXTMEM_ORIGIN_NATIVE;
	}
	int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (copy < 0)
		return errno;
	int rc = new_object(tb, copy, (uint64_t)st.st_size, origin, handle);
	if (rc)
		close(copy);
	return rc;
}

static int tb_export_fd(void *user, uint32_t handle, int *fd)
{
	struct object *o = lookup(user, handle);
	if (!o || o->fd < 0)
		return EINVAL;
	// Deliberately without close-on-exec: libextmem must add it.
	*fd = dup(o->fd);
	return *fd < 0 ? errno : 0;
}

static int tb_info(void *user, uint32_t handle, uint64_t *size, uint32_t *origin)
{
	struct object *o = lookup(user, handle);
	if (!o)
		return ENOENT;
	*size = o->size;
	*origin = o->origin;
	return 0;
}

static void tb_close(void *user, uint32_t handle)
{
	struct test_backend *tb = user;
	struct object *o = lookup(tb, handle);
	if (!o)
		return;
	if (o->fd >= 0)
		close(o->fd);
	o->used = 0;
	tb->closes++;
}

static int tb_map(void *user, uint32_t handle, uint64_t size, bool writable, void **ptr)
{
	struct test_backend *tb = user;
	struct object *o = lookup(tb, handle);
	if (!o || o->fd < 0)
		return EINVAL;
	void *p = mmap(NULL, size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, o->fd, 0);
	if (p == MAP_FAILED)
		return errno;
	tb->maps++;
	*ptr = p;
	return 0;
}

static void tb_unmap(void *user, void *ptr, uint64_t size)
{
	struct test_backend *tb = user;
	munmap(ptr, size);
	tb->unmaps++;
}

static int tb_bind(void *user, uint32_t handle, uint64_t va, uint64_t offset, uint64_t size,
		   bool read_only)
{
	struct test_backend *tb = user;
	(void)va, (void)offset, (void)size, (void)read_only;
	if (!lookup(tb, handle))
		return ENOENT;
	tb->binds++;
	return 0;
}

static int tb_unbind(void *user, uint64_t va, uint64_t size)
{
	struct test_backend *tb = user;
	(void)va, (void)size;
	tb->unbinds++;
	return 0;
}

// A device with every Linux capability; dma-bufs import into device memory only, so
// VUID 00648 (the wrong memory type for a dma-buf) can be broken.
static extmem_backend full_table(struct test_backend *tb)
{
	return (extmem_backend){
		.version = EXTMEM_BACKEND_VERSION,
		.caps = EXTMEM_CAP_OPAQUE_FD | EXTMEM_CAP_DMA_BUF | EXTMEM_CAP_HOST_ALLOCATION |
			EXTMEM_CAP_HOST_MAPPED_FOREIGN,
		.memory_type_count = 2,
		.host_pointer_types = 1u << TYPE_HOST,
		.dma_buf_types = 1u << TYPE_DEVICE,
		.min_import_alignment = PAGE,
		.va_bits = 48,
		.page_sizes = 0x1000 | 0x200000,
		.user = tb,
		.create = tb_create,
		.import_host = tb_import_host,
		.import_fd = tb_import_fd,
		.export_fd = tb_export_fd,
		.info = tb_info,
		.close = tb_close,
		.map = tb_map,
		.unmap = tb_unmap,
		.bind = tb_bind,
		.unbind = tb_unbind,
	};
}

// ---- the table of Valid Usage cases ---------------------------------------------------

enum call { ALLOCATE, HOST_PROPS, FD_PROPS, GET_FD };
enum device_kind { FULL, LIMITED }; // LIMITED: opaque fds and host allocations only
enum ptr_kind { PTR_NONE, PTR_MAPPED, PTR_MISALIGNED, PTR_UNMAPPED };
enum fd_kind { FD_NONE, FD_OWN_EXPORT, FD_FOREIGN_MEMFD, FD_DEV_NULL, FD_CLOSED, FD_NEGATIVE };
enum extra {
	EXTRA_NONE = 0,
	EXTRA_DEDICATED = 1 << 0,
	EXTRA_DEDICATED_NV = 1 << 1,
	EXTRA_CAPTURE_ADDRESS = 1 << 2,
	EXTRA_SECOND_IMPORT = 1 << 3,
	EXTRA_DUPLICATE_EXPORT = 1 << 4,
	EXTRA_RUNAWAY_CHAIN = 1 << 5,
	EXTRA_WIN32_IMPORT = 1 << 6,
	EXTRA_WIN32_NV_IMPORT = 1 << 7,
	EXTRA_WIN32_EXPORT_INFO = 1 << 8,
};

struct vu_case {
	const char *name;
	enum call call;
	enum device_kind device;
	uint64_t size;
	uint32_t type_index;
	VkExternalMemoryHandleTypeFlags handle_type; // of the import, query or export
	enum ptr_kind ptr;
	enum fd_kind fd;
	VkExternalMemoryHandleTypeFlags export_types;
	unsigned extra;
	VkResult expect;
	const char *vuid; // NULL: no VUID (a handle refused, or success)
};

#define HOST VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT
#define FOREIGN VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_MAPPED_FOREIGN_MEMORY_BIT_EXT
#define OPAQUE VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT
#define DMABUF VK_EXTERNAL_MEMORY_HANDLE_TYPE_DMA_BUF_BIT_EXT
#define WIN32 VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_WIN32_BIT
#define INVALID VK_ERROR_INVALID_EXTERNAL_HANDLE
#define VALIDATION VK_ERROR_VALIDATION_FAILED_EXT

static const struct vu_case cases[] = {
	{ "pNext-pNext: a runaway chain of 65 structures", ALLOCATE, FULL, PAGE, TYPE_DEVICE, 0,
	  PTR_NONE, FD_NONE, 0, EXTRA_RUNAWAY_CHAIN, VALIDATION,
	  "VUID-VkMemoryAllocateInfo-pNext-pNext" },
	{ "sType-unique: two VkExportMemoryAllocateInfo", ALLOCATE, FULL, PAGE, TYPE_DEVICE, 0,
	  PTR_NONE, FD_NONE, OPAQUE, EXTRA_DUPLICATE_EXPORT, VALIDATION,
	  "VUID-VkMemoryAllocateInfo-sType-unique" },
	{ "None-06657: a host pointer and an fd import", ALLOCATE, FULL, PAGE, TYPE_HOST, HOST,
	  PTR_MAPPED, FD_OWN_EXPORT, 0, EXTRA_SECOND_IMPORT, VALIDATION,
	  "VUID-VkMemoryAllocateInfo-None-06657" },
	{ "allocationSize-07897: size 0", ALLOCATE, FULL, 0, TYPE_DEVICE, 0, PTR_NONE, FD_NONE, 0,
	  EXTRA_NONE, VALIDATION, "VUID-VkMemoryAllocateInfo-allocationSize-07897" },
	{ "allocationSize-07899: size 0 for an export", ALLOCATE, FULL, 0, TYPE_DEVICE, 0,
	  PTR_NONE, FD_NONE, OPAQUE, EXTRA_NONE, VALIDATION,
	  "VUID-VkMemoryAllocateInfo-allocationSize-07899" },
	{ "handleTypes-09860: exporting a host allocation type", ALLOCATE, FULL, PAGE,
	  TYPE_DEVICE, 0, PTR_NONE, FD_NONE, HOST, EXTRA_NONE, VALIDATION,
	  "VUID-VkExportMemoryAllocateInfo-handleTypes-09860" },
	{ "handleTypes-09860: exporting a host-pointer import", ALLOCATE, FULL, PAGE, TYPE_HOST,
	  HOST, PTR_MAPPED, FD_NONE, OPAQUE, EXTRA_NONE, VALIDATION,
	  "VUID-VkExportMemoryAllocateInfo-handleTypes-09860" },
	{ "pAllocateInfo-01714: memoryTypeIndex 5 of 2", ALLOCATE, FULL, PAGE, 5, 0, PTR_NONE,
	  FD_NONE, 0, EXTRA_NONE, VALIDATION, "VUID-vkAllocateMemory-pAllocateInfo-01714" },
	{ "handleType-01748: a host import of type OPAQUE_FD", ALLOCATE, FULL, PAGE, TYPE_HOST,
	  OPAQUE, PTR_MAPPED, FD_NONE, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryHostPointerInfoEXT-handleType-01748" },
	{ "handleType-01747: HOST_MAPPED_FOREIGN on a device without it", ALLOCATE, LIMITED,
	  PAGE, TYPE_HOST, FOREIGN, PTR_MAPPED, FD_NONE, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryHostPointerInfoEXT-handleType-01747" },
	{ "pHostPointer-01749: a pointer 64 bytes into a page", ALLOCATE, FULL, PAGE, TYPE_HOST,
	  HOST, PTR_MISALIGNED, FD_NONE, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryHostPointerInfoEXT-pHostPointer-01749" },
	{ "allocationSize-01745: a host import of 6000 bytes", ALLOCATE, FULL, 6000, TYPE_HOST,
	  HOST, PTR_MAPPED, FD_NONE, 0, EXTRA_NONE, INVALID,
	  "VUID-VkMemoryAllocateInfo-allocationSize-01745" },
	{ "memoryTypeIndex-01744: a host import into device memory", ALLOCATE, FULL, PAGE,
	  TYPE_DEVICE, HOST, PTR_MAPPED, FD_NONE, 0, EXTRA_NONE, INVALID,
	  "VUID-VkMemoryAllocateInfo-memoryTypeIndex-01744" },
	{ "pNext-02806: a dedicated host import", ALLOCATE, FULL, PAGE, TYPE_HOST, HOST,
	  PTR_MAPPED, FD_NONE, 0, EXTRA_DEDICATED, VALIDATION,
	  "VUID-VkMemoryAllocateInfo-pNext-02806" },
	{ "pNext-02805: an NV-dedicated host import", ALLOCATE, FULL, PAGE, TYPE_HOST, HOST,
	  PTR_MAPPED, FD_NONE, 0, EXTRA_DEDICATED_NV, VALIDATION,
	  "VUID-VkMemoryAllocateInfo-pNext-02805" },
	{ "pNext-03332: a host import with a capture address", ALLOCATE, FULL, PAGE, TYPE_HOST,
	  HOST, PTR_MAPPED, FD_NONE, 0, EXTRA_CAPTURE_ADDRESS, VALIDATION,
	  "VUID-VkMemoryAllocateInfo-pNext-03332" },
	{ "opaqueCaptureAddress-03333: an fd import with a capture address", ALLOCATE, FULL,
	  PAGE, TYPE_DEVICE, OPAQUE, PTR_NONE, FD_OWN_EXPORT, 0, EXTRA_CAPTURE_ADDRESS,
	  VALIDATION, "VUID-VkMemoryAllocateInfo-opaqueCaptureAddress-03333" },
	{ "handleType-01752: host pointer properties of OPAQUE_FD", HOST_PROPS, FULL, 0, 0,
	  OPAQUE, PTR_MAPPED, FD_NONE, 0, EXTRA_NONE, INVALID,
	  "VUID-vkGetMemoryHostPointerPropertiesEXT-handleType-01752" },
	{ "pHostPointer-01753: host pointer properties of a misaligned pointer", HOST_PROPS,
	  FULL, 0, 0, HOST, PTR_MISALIGNED, FD_NONE, 0, EXTRA_NONE, INVALID,
	  "VUID-vkGetMemoryHostPointerPropertiesEXT-pHostPointer-01753" },
	{ "handleType-00669: an fd import of type HOST_ALLOCATION", ALLOCATE, FULL, PAGE,
	  TYPE_DEVICE, HOST, PTR_NONE, FD_FOREIGN_MEMFD, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryFdInfoKHR-handleType-00669" },
	{ "handleType-09862: a dma-buf import on a device without dma-bufs", ALLOCATE, LIMITED,
	  PAGE, TYPE_DEVICE, DMABUF, PTR_NONE, FD_FOREIGN_MEMFD, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryFdInfoKHR-handleType-09862" },
	{ "handleType-parameter: an fd import of OPAQUE_FD|DMA_BUF", ALLOCATE, FULL, PAGE,
	  TYPE_DEVICE, OPAQUE | DMABUF, PTR_NONE, FD_FOREIGN_MEMFD, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryFdInfoKHR-handleType-parameter" },
	{ "handleType-00670: an fd import of a closed fd", ALLOCATE, FULL, PAGE, TYPE_DEVICE,
	  OPAQUE, PTR_NONE, FD_CLOSED, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryFdInfoKHR-handleType-00670" },
	{ "handleType-00670: an fd import of fd -1", ALLOCATE, FULL, PAGE, TYPE_DEVICE, DMABUF,
	  PTR_NONE, FD_NEGATIVE, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryFdInfoKHR-handleType-00670" },
	{ "fd-00668: an opaque fd of another device", ALLOCATE, FULL, PAGE, TYPE_DEVICE, OPAQUE,
	  PTR_NONE, FD_FOREIGN_MEMFD, 0, EXTRA_NONE, INVALID,
	  "VUID-VkImportMemoryFdInfoKHR-fd-00668" },
	{ "memoryTypeIndex-00648: a dma-buf into a type it cannot go to", ALLOCATE, FULL, PAGE,
	  TYPE_HOST, DMABUF, PTR_NONE, FD_FOREIGN_MEMFD, 0, EXTRA_NONE, INVALID,
	  "VUID-VkMemoryAllocateInfo-memoryTypeIndex-00648" },
	{ "handleType-00671: vkGetMemoryFdKHR of a type not exported", GET_FD, FULL, PAGE,
	  TYPE_DEVICE, DMABUF, PTR_NONE, FD_NONE, OPAQUE, EXTRA_NONE, VALIDATION,
	  "VUID-VkMemoryGetFdInfoKHR-handleType-00671" },
	{ "handleType-00672: vkGetMemoryFdKHR of HOST_ALLOCATION", GET_FD, FULL, PAGE,
	  TYPE_DEVICE, HOST, PTR_NONE, FD_NONE, OPAQUE, EXTRA_NONE, VALIDATION,
	  "VUID-VkMemoryGetFdInfoKHR-handleType-00672" },
	{ "fd-00673: fd properties of /dev/null", FD_PROPS, FULL, 0, 0, DMABUF, PTR_NONE,
	  FD_DEV_NULL, 0, EXTRA_NONE, INVALID, "VUID-vkGetMemoryFdPropertiesKHR-fd-00673" },
	{ "fd-00673: fd properties of a closed fd", FD_PROPS, FULL, 0, 0, DMABUF, PTR_NONE,
	  FD_CLOSED, 0, EXTRA_NONE, INVALID, "VUID-vkGetMemoryFdPropertiesKHR-fd-00673" },
	{ "fd-00673: fd properties of fd -1", FD_PROPS, FULL, 0, 0, DMABUF, PTR_NONE,
	  FD_NEGATIVE, 0, EXTRA_NONE, INVALID, "VUID-vkGetMemoryFdPropertiesKHR-fd-00673" },
	{ "handleType-00674: fd properties of OPAQUE_FD", FD_PROPS, FULL, 0, 0, OPAQUE, PTR_NONE,
	  FD_FOREIGN_MEMFD, 0, EXTRA_NONE, INVALID,
	  "VUID-vkGetMemoryFdPropertiesKHR-handleType-00674" },
	{ "handleType-00660: a Win32 import of type OPAQUE_FD", ALLOCATE, FULL, PAGE,
	  TYPE_DEVICE, OPAQUE, PTR_NONE, FD_NONE, 0, EXTRA_WIN32_IMPORT, INVALID,
	  "VUID-VkImportMemoryWin32HandleInfoKHR-handleType-00660" },
	{ "handleType-09861: a Win32 import on Linux", ALLOCATE, FULL, PAGE, TYPE_DEVICE, WIN32,
	  PTR_NONE, FD_NONE, 0, EXTRA_WIN32_IMPORT, INVALID,
	  "VUID-VkImportMemoryWin32HandleInfoKHR-handleType-09861" },
	{ "handleTypes-00657: VkExportMemoryWin32HandleInfoKHR without OPAQUE_WIN32", ALLOCATE,
	  FULL, PAGE, TYPE_DEVICE, 0, PTR_NONE, FD_NONE, 0, EXTRA_WIN32_EXPORT_INFO, VALIDATION,
	  "VUID-VkExportMemoryWin32HandleInfoKHR-handleTypes-00657" },
	{ "handleType-01327: an NV Win32 import of two types", ALLOCATE, FULL, PAGE, TYPE_DEVICE,
	  0, PTR_NONE, FD_NONE, 0, EXTRA_WIN32_NV_IMPORT, INVALID,
	  "VUID-VkImportMemoryWin32HandleInfoNV-handleType-01327" },
	// Not rules, but the other answers of the same calls.
	{ "an unmapped host pointer is refused by the backend (EFAULT)", ALLOCATE, FULL, PAGE,
	  TYPE_HOST, HOST, PTR_UNMAPPED, FD_NONE, 0, EXTRA_NONE, INVALID, NULL },
	{ "host pointer properties of an unmapped page", HOST_PROPS, FULL, 0, 0, HOST,
	  PTR_UNMAPPED, FD_NONE, 0, EXTRA_NONE, INVALID, NULL },
	{ "a plain allocation", ALLOCATE, FULL, PAGE, TYPE_DEVICE, 0, PTR_NONE, FD_NONE, OPAQUE,
	  EXTRA_NONE, VK_SUCCESS, NULL },
	{ "a host-pointer import", ALLOCATE, FULL, 2 * PAGE, TYPE_HOST, HOST, PTR_MAPPED,
	  FD_NONE, 0, EXTRA_NONE, VK_SUCCESS, NULL },
	{ "an opaque fd of this device", ALLOCATE, FULL, PAGE, TYPE_DEVICE, OPAQUE, PTR_NONE,
	  FD_OWN_EXPORT, 0, EXTRA_NONE, VK_SUCCESS, NULL },
	{ "a dma-buf of another device", ALLOCATE, FULL, PAGE, TYPE_DEVICE, DMABUF, PTR_NONE,
	  FD_FOREIGN_MEMFD, 0, EXTRA_NONE, VK_SUCCESS, NULL },
	{ "fd properties of another device's dma-buf", FD_PROPS, FULL, 0, 0, DMABUF, PTR_NONE,
	  FD_FOREIGN_MEMFD, 0, EXTRA_NONE, VK_SUCCESS, NULL },
	{ "host pointer properties of a mapped page", HOST_PROPS, FULL, 0, 0, HOST, PTR_MAPPED,
	  FD_NONE, 0, EXTRA_NONE, VK_SUCCESS, NULL },
};

// Layouts of the Win32 structures (vulkan_win32.h needs <windows.h>); HANDLE and LPCWSTR
// are pointers, DWORD 32 bits.
struct win32_import {
	VkStructureType sType;
	const void *pNext;
	VkExternalMemoryHandleTypeFlagBits handleType;
	void *handle;
	const uint16_t *name;
};
struct win32_import_nv {
	VkStructureType sType;
	const void *pNext;
	uint32_t handleType;
	void *handle;
};
struct win32_export {
	VkStructureType sType;
	const void *pNext;
	const void *pAttributes;
	uint32_t dwAccess;
	const uint16_t *name;
};

struct fixture {
	struct test_backend full_tb, limited_tb;
	extmem_device full, limited;
	uint8_t *pages;   // 4 mapped pages, page-aligned
	uint8_t *unmapped; // a page-aligned address with nothing mapped
};

static int closed_fd(void)
{
	int fd = memfd_create("extmem-c-closed", MFD_CLOEXEC);
	close(fd);
	return fd;
}

static int foreign_memfd(uint64_t size)
{
	int fd = memfd_create("extmem-c-foreign", MFD_CLOEXEC);
	if (fd >= 0 && ftruncate(fd, (off_t)(size ? size : PAGE)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

// An opaque fd exported by `device`, from a fresh exportable allocation that is freed
// again (the fd keeps the memory alive, as a dma-buf does).
static int own_export(extmem_device device, uint64_t size)
{
	VkExportMemoryAllocateInfo export = { VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO,
					      NULL, OPAQUE };
	VkMemoryAllocateInfo info = { VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &export,
				      size ? size : PAGE, TYPE_DEVICE };
	extmem_memory mem = 0;
	int fd = -1;
	if (extmem_allocate_memory(device, &info, &mem) != VK_SUCCESS)
		return -1;
	if (extmem_get_memory_fd(device, mem, OPAQUE, &fd) != VK_SUCCESS)
		fd = -1;
	extmem_free_memory(device, mem);
	return fd;
}

static int make_fd(struct fixture *fx, extmem_device device, enum fd_kind kind, uint64_t size)
{
	switch (kind) {
	case FD_NONE:
	case FD_NEGATIVE:
		return -1;
	case FD_OWN_EXPORT:
		return own_export(device, size);
	case FD_FOREIGN_MEMFD:
		return foreign_memfd(size);
	case FD_DEV_NULL:
		return open("/dev/null", O_RDWR | O_CLOEXEC);
	case FD_CLOSED:
		return closed_fd();
	}
	(void)fx;
	return -1;
}

static void *make_ptr(struct fixture *fx, enum ptr_kind kind)
{
	switch (kind) {
	case PTR_NONE:
		return NULL;
	case PTR_MAPPED:
		return fx->pages;
	case PTR_MISALIGNED:
		return fx->pages + 64;
	case PTR_UNMAPPED:
		return fx->unmapped;
	}
	return NULL;
}

static int fd_is_open(int fd)
{
	return fd >= 0 && fcntl(fd, F_GETFD) >= 0;
}

static void run_case(struct fixture *fx, const struct vu_case *c)
{
	extmem_device device = c->device == FULL ? fx->full : fx->limited;
	int fd = make_fd(fx, fx->full, c->fd, c->size);
	int fd_expected_open_after = fd >= 0 && c->fd != FD_CLOSED; // flipped on success below
	void *ptr = make_ptr(fx, c->ptr);
	VkResult got = VK_SUCCESS;
	extmem_memory mem = 0;

	if (c->call == ALLOCATE) {
		// The chain, built back to front.
		const void *next = NULL;
		VkBaseInStructure runaway[65];
		VkExportMemoryAllocateInfo export = { VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO,
						      NULL, c->export_types };
		VkExportMemoryAllocateInfo export2 = export;
		VkImportMemoryHostPointerInfoEXT host = {
			VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT, NULL, c->handle_type, ptr
		};
		VkImportMemoryFdInfoKHR fd_import = { VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR,
						      NULL, c->handle_type, fd };
		VkMemoryDedicatedAllocateInfo dedicated = {
			VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO, NULL, VK_NULL_HANDLE,
			(VkBuffer)(uintptr_t)0x1234
		};
		VkDedicatedAllocationMemoryAllocateInfoNV dedicated_nv = {
			VK_STRUCTURE_TYPE_DEDICATED_ALLOCATION_MEMORY_ALLOCATE_INFO_NV, NULL,
			VK_NULL_HANDLE, (VkBuffer)(uintptr_t)0x1234
		};
		VkMemoryOpaqueCaptureAddressAllocateInfo capture = {
			VK_STRUCTURE_TYPE_MEMORY_OPAQUE_CAPTURE_ADDRESS_ALLOCATE_INFO, NULL, 0x10000
		};
		struct win32_import win32 = { VK_STRUCTURE_TYPE_IMPORT_MEMORY_WIN32_HANDLE_INFO_KHR,
					      NULL, c->handle_type, (void *)(uintptr_t)0x44, NULL };
		struct win32_import_nv win32_nv = {
			VK_STRUCTURE_TYPE_IMPORT_MEMORY_WIN32_HANDLE_INFO_NV, NULL, 0x3,
			(void *)(uintptr_t)0x44
		};
		struct win32_export win32_export = {
			VK_STRUCTURE_TYPE_EXPORT_MEMORY_WIN32_HANDLE_INFO_KHR, NULL, NULL, 0, NULL
		};
#define PUSH(s)                     \
	do {                        \
		(s).pNext = next;   \
		next = &(s);        \
	} while (0)
		if (c->extra & EXTRA_RUNAWAY_CHAIN) {
			// 65 distinct structure types this library does not know: skipped, but
			// more than it follows.
			for (int i = 64; i >= 0; i--) {
				runaway[i].sType = (VkStructureType)(1000999000 + i);
				runaway[i].pNext = next;
				next = &runaway[i];
			}
		}
		if (c->export_types)
			PUSH(export);
		if (c->extra & EXTRA_DUPLICATE_EXPORT)
			PUSH(export2);
		if (c->ptr != PTR_NONE)
			PUSH(host);
		if (c->fd != FD_NONE)
			PUSH(fd_import);
		if (c->extra & EXTRA_DEDICATED)
			PUSH(dedicated);
		if (c->extra & EXTRA_DEDICATED_NV)
			PUSH(dedicated_nv);
		if (c->extra & EXTRA_CAPTURE_ADDRESS)
			PUSH(capture);
		if (c->extra & EXTRA_WIN32_IMPORT)
			PUSH(win32);
		if (c->extra & EXTRA_WIN32_NV_IMPORT)
			PUSH(win32_nv);
		if (c->extra & EXTRA_WIN32_EXPORT_INFO)
			PUSH(win32_export);
#undef PUSH
		VkMemoryAllocateInfo info = { VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, next, c->size,
					      c->type_index };
		got = extmem_allocate_memory(device, &info, &mem);
		// A successful fd import took the fd; a failed one left it with us.
		if (got == VK_SUCCESS && c->fd != FD_NONE)
			fd_expected_open_after = 0;
	} else if (c->call == HOST_PROPS) {
		uint32_t bits = 0;
		got = extmem_get_memory_host_pointer_properties(device, c->handle_type, ptr, &bits);
		if (got == VK_SUCCESS && bits != 1u << TYPE_HOST)
			got = VK_ERROR_UNKNOWN;
	} else if (c->call == FD_PROPS) {
		uint32_t bits = 0;
		got = extmem_get_memory_fd_properties(device, c->handle_type, fd, &bits);
		if (got == VK_SUCCESS && bits != 1u << TYPE_DEVICE)
			got = VK_ERROR_UNKNOWN;
	} else {
		VkExportMemoryAllocateInfo export = { VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO,
						      NULL, c->export_types };
		VkMemoryAllocateInfo info = { VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &export,
					      c->size, c->type_index };
		int out = -1;
		got = extmem_allocate_memory(device, &info, &mem);
		if (got == VK_SUCCESS)
			got = extmem_get_memory_fd(device, mem, c->handle_type, &out);
		if (out >= 0)
			close(out);
	}
	extmem_error e = extmem_last_error();
	int vuid_ok = c->vuid ? (e.vuid && strcmp(e.vuid, c->vuid) == 0) : e.vuid == NULL;
	check(got == c->expect && e.result == got && vuid_ok, c->name,
	      "got VkResult %d (last error %d) VUID %s, want %d VUID %s", got, e.result,
	      str_or_null(e.vuid), c->expect, str_or_null(c->vuid));
	char name[256];
	if (c->ptr == PTR_UNMAPPED && c->expect != VK_SUCCESS) {
		snprintf(name, sizeof name, "%s: names ImportHost and errno 14", c->name);
		check(e.operation && strcmp(e.operation, "ImportHost") == 0 &&
			      e.error_number == EFAULT,
		      name,
		      "operation %s errno %d", str_or_null(e.operation), e.error_number);
	}
	if (c->fd != FD_NONE && c->fd != FD_NEGATIVE && c->fd != FD_CLOSED) {
		snprintf(name, sizeof name, "%s: the fd is %s", c->name,
			 fd_expected_open_after ? "still the caller's" : "taken");
		check(fd_is_open(fd) == fd_expected_open_after, name,
		      "fd %d open=%d, want %d (%s)", fd, fd_is_open(fd), fd_expected_open_after,
		      c->name);
	}
	if (fd_is_open(fd))
		close(fd);
	if (mem)
		extmem_free_memory(device, mem);
}

// ---- flows and handles ----------------------------------------------------------------

static void flows(struct fixture *fx)
{
	struct test_backend *tb = &fx->full_tb;
	int live = live_objects(tb);
	VkExportMemoryAllocateInfo export = { VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO, NULL,
					      OPAQUE };
	VkMemoryAllocateInfo info = { VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &export, 3 * PAGE,
				      TYPE_DEVICE };
	extmem_memory mem = 0, again = 0;
	int binds = tb->binds;
	VkResult r = extmem_allocate_memory(fx->full, &info, &mem);
	check(r == VK_SUCCESS && mem != 0 && tb->binds == binds + 1,
	      "vkAllocateMemory creates and binds through the callbacks", "r=%d binds %d->%d", r,
	      binds, tb->binds);
	uint64_t va = 0;
	r = extmem_memory_gpu_va(fx->full, mem, &va);
	check(r == VK_SUCCESS && va >= (2u << 20) && va % PAGE == 0,
	      "the GPU VA is page-aligned and above 2 MiB", "r=%d va=%#llx", r,
	      (unsigned long long)va);
	void *p = NULL, *p2 = NULL;
	r = extmem_map_memory(fx->full, mem, &p);
	VkResult r2 = extmem_map_memory(fx->full, mem, &p2);
	if (r == VK_SUCCESS)
		memset(p, 0x5a, 3 * PAGE);
	check(r == VK_SUCCESS && r2 == VK_SUCCESS && p == p2 && tb->maps == 1,
	      "vkMapMemory maps once and writes land", "r=%d r2=%d p=%p p2=%p maps=%d", r, r2, p,
	      p2, tb->maps);
	int fd = -1;
	r = extmem_get_memory_fd(fx->full, mem, OPAQUE, &fd);
	int flags = fd >= 0 ? fcntl(fd, F_GETFD) : -1;
	check(r == VK_SUCCESS && fd >= 0 && flags >= 0 && (flags & FD_CLOEXEC),
	      "an exported fd is close-on-exec though the backend's dup() was not",
	      "r=%d fd=%d flags=%d", r, fd, flags);
	VkImportMemoryFdInfoKHR import = { VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR, NULL,
					   OPAQUE, fd };
	VkMemoryAllocateInfo import_info = { VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &import,
					     3 * PAGE, TYPE_DEVICE };
	r = extmem_allocate_memory(fx->full, &import_info, &again);
	check(r == VK_SUCCESS && !fd_is_open(fd), "importing it back takes the fd",
	      "r=%d fd open=%d", r, fd_is_open(fd));
	void *q = NULL;
	r = extmem_map_memory(fx->full, again, &q);
	check(r == VK_SUCCESS && q && ((uint8_t *)q)[PAGE + 7] == 0x5a,
	      "the import maps the same bytes", "r=%d", r);
	int closes = tb->closes;
	extmem_free_memory(fx->full, mem);
	check(tb->closes == closes, "one object imported twice is not closed while in use",
	      "closes %d->%d", closes, tb->closes);
	extmem_free_memory(fx->full, again);
	check(tb->closes == closes + 1 && live_objects(tb) == live && tb->unmaps == tb->maps &&
		      tb->unbinds == tb->binds,
	      "freeing both closes it once, unmapped and unbound",
	      "closes %d->%d live %d->%d maps %d unmaps %d binds %d unbinds %d", closes,
	      tb->closes, live, live_objects(tb), tb->maps, tb->unmaps, tb->binds, tb->unbinds);

	// Host import maps back to the application's pointer.
	VkImportMemoryHostPointerInfoEXT host = {
		VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT, NULL, HOST, fx->pages
	};
	VkMemoryAllocateInfo host_info = { VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &host, PAGE,
					   TYPE_HOST };
	r = extmem_allocate_memory(fx->full, &host_info, &mem);
	p = NULL;
	if (r == VK_SUCCESS)
		r = extmem_map_memory(fx->full, mem, &p);
	check(r == VK_SUCCESS && p == fx->pages, "a host import maps to the application's pointer",
	      "r=%d p=%p pages=%p", r, p, (void *)fx->pages);
	uint32_t handle = 0;
	r = extmem_memory_handle(fx->full, mem, &handle);
	struct object *obj = r == VK_SUCCESS ? lookup(tb, handle) : NULL;
	check(obj && obj->fd == -1 && obj->size == PAGE,
	      "extmem_memory_handle gives back the backend's own object", "r=%d handle=%u", r,
	      handle);
	extmem_free_memory(fx->full, mem);
	r = extmem_memory_handle(fx->full, mem, &handle);
	check(r != VK_SUCCESS, "extmem_memory_handle of freed memory is an error", "r=%d", r);

	// The error message names the rule.
	VkMemoryAllocateInfo zero = { VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, NULL, 0,
				      TYPE_DEVICE };
	extmem_allocate_memory(fx->full, &zero, &mem);
	char small[8], big[256];
	size_t n = extmem_last_error_message(small, sizeof small);
	size_t m = extmem_last_error_message(big, sizeof big);
	check(n == m && n >= sizeof small && strlen(small) == sizeof small - 1 &&
		      strstr(big, "VUID-VkMemoryAllocateInfo-allocationSize-07897"),
	      "the message names the VUID and is cut like snprintf", "n=%zu m=%zu big=%s", n, m,
	      big);
	check(extmem_last_error_message(NULL, 0) == m, "the message length without a buffer",
	      "got %zu", extmem_last_error_message(NULL, 0));
	uint32_t bits = 0;
	extmem_get_memory_host_pointer_properties(fx->full, HOST, fx->pages, &bits);
	extmem_error e = extmem_last_error();
	check(e.result == VK_SUCCESS && !e.vuid && !e.operation && e.error_number == 0 &&
		      extmem_last_error_message(big, sizeof big) == 0 && big[0] == 0,
	      "a success clears the last error", "result %d", e.result);
}

// What a CPU driver's import_host asks instead of a kernel (lavapipe's, in tests/mesa).
static void host_ranges(struct fixture *fx)
{
	void *ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	check(extmem_host_range_importable(fx->pages, 4 * PAGE, true) == 0,
	      "host range: the test's own pages are importable writable", "pages=%p",
	      (void *)fx->pages);
	check(ro != MAP_FAILED && extmem_host_range_importable(ro, PAGE, false) == 0 &&
		      extmem_host_range_importable(ro, PAGE, true) == EFAULT,
	      "host range: a read-only mapping is importable read-only, not writable (EFAULT)",
	      "ro=%p", ro);
	// A hole made here and checked at once: fx->unmapped may have been mapped again
	// since main() made it (the sanitizers' allocator maps memory as the test runs).
	uint8_t *two = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
	int hole = two != MAP_FAILED && munmap(two + PAGE, PAGE) == 0;
	int spans = hole ? extmem_host_range_importable(two, 2 * PAGE, false) : -1;
	int inside = hole ? extmem_host_range_importable(two + PAGE, PAGE, false) : -1;
	check(spans == EFAULT && inside == EFAULT &&
		      extmem_host_range_importable(NULL, PAGE, false) == EFAULT &&
		      extmem_host_range_importable(fx->pages, 0, false) == EFAULT,
	      "host range: unmapped (whole or in part), NULL and empty ranges are refused with EFAULT",
	      "spans=%d inside=%d", spans, inside);
	if (two != MAP_FAILED)
		munmap(two, PAGE);
	if (ro != MAP_FAILED)
		munmap(ro, PAGE);
}

static void handles(struct fixture *fx)
{
	VkMemoryAllocateInfo info = { VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, NULL, PAGE,
				      TYPE_DEVICE };
	extmem_memory mem = 0, other = 0;
	void *p;
	VkResult r;

	r = extmem_allocate_memory(0, &info, &mem);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT && mem == 0, "a null device handle is refused",
	      "r=%d", r);
	r = extmem_allocate_memory(0x1234567800000001ull, &info, &mem);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "a made-up device handle is refused", "r=%d",
	      r);
	r = extmem_allocate_memory(fx->full, NULL, &mem);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "a NULL VkMemoryAllocateInfo is refused",
	      "r=%d", r);
	r = extmem_allocate_memory(fx->full, &info, NULL);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "a NULL out-pointer is refused", "r=%d", r);
	r = extmem_map_memory(fx->full, 0, &p);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "a null memory handle is refused", "r=%d", r);

	r = extmem_allocate_memory(fx->full, &info, &mem);
	VkResult r2 = extmem_allocate_memory(fx->limited, &info, &other);
	check(r == VK_SUCCESS && r2 == VK_SUCCESS, "two devices allocate", "r=%d r2=%d", r, r2);
	r = extmem_map_memory(fx->full, other, &p);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "memory of another device is refused",
	      "r=%d", r);
	r = extmem_free_memory(fx->limited, mem);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "freeing memory on the wrong device is refused",
	      "r=%d", r);
	r = extmem_free_memory(fx->full, mem);
	check(r == VK_SUCCESS, "freeing it on its device works", "r=%d", r);
	r = extmem_free_memory(fx->full, mem);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "a double free is refused", "r=%d", r);
	uint64_t va;
	r = extmem_memory_gpu_va(fx->full, mem, &va);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "a freed memory handle is stale", "r=%d", r);

	// Destroying a device frees what it still holds and makes its handles stale.
	struct test_backend tb = { 0 };
	extmem_backend table = full_table(&tb);
	extmem_device dev = 0;
	r = extmem_device_create(&table, &dev);
	extmem_memory a = 0, b = 0;
	extmem_allocate_memory(dev, &info, &a);
	extmem_allocate_memory(dev, &info, &b);
	extmem_map_memory(dev, b, &p);
	check(r == VK_SUCCESS && live_objects(&tb) == 2, "a third device holds two objects",
	      "r=%d live=%d", r, live_objects(&tb));
	r = extmem_device_destroy(dev);
	check(r == VK_SUCCESS && live_objects(&tb) == 0 && tb.unmaps == 1 && tb.unbinds == 2,
	      "destroying it closes, unmaps and unbinds everything", "r=%d live=%d unmaps=%d",
	      r, live_objects(&tb), tb.unmaps);
	r = extmem_map_memory(dev, b, &p);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "a destroyed device's handle is stale", "r=%d",
	      r);
	r = extmem_device_destroy(dev);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "destroying it twice is refused", "r=%d", r);
}

// Breaks one thing in a good table: case `i` of backend_tables.
static void spoil(size_t i, extmem_backend *t)
{
	switch (i) {
	case 0: t->version = 99; break;
	case 1: t->caps |= 1u << 20; break;
	case 2: t->import_host = NULL; break;
	case 3: t->close = NULL; break;
	case 4: t->unbind = NULL; break;
	case 5: t->min_import_alignment = 3000; break;
	case 6: t->va_bits = 64; break;
	case 7: t->page_sizes = 0x200000; break;
	case 8: t->memory_type_count = 0; break;
	case 9: t->host_pointer_types = 0x4; break;
	}
}

static void backend_tables(struct fixture *fx)
{
	static const struct {
		const char *name;
		const char *says;
	} bad[] = {
		{ "a backend table of another version", "version is 99" },
		{ "unknown caps bits", "unknown caps" },
		{ "a host cap without import_host", "import_host is NULL" },
		{ "no close callback", "close is NULL" },
		{ "bind without unbind", "unbind is NULL" },
		{ "min_import_alignment 3000", "MinImportAlignment" },
		{ "va_bits 64", "VaBits" },
		{ "page sizes without 4 KiB", "PageSizes" },
		{ "no memory types", "memory_type_count 0" },
		{ "host types past the count", "host_pointer_types 0x4" },
	};
	struct test_backend tb = { 0 };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		extmem_backend table = full_table(&tb);
		spoil(i, &table);
		extmem_device dev = 0;
		VkResult r = extmem_device_create(&table, &dev);
		char msg[256];
		extmem_last_error_message(msg, sizeof msg);
		check(r == VK_ERROR_INITIALIZATION_FAILED && dev == 0 && strstr(msg, bad[i].says),
		      bad[i].name, "r=%d dev=%llu message \"%s\", want \"%s\"", r,
		      (unsigned long long)dev, msg, bad[i].says);
	}
	extmem_device dev = 0;
	VkResult r = extmem_device_create(NULL, &dev);
	check(r == VK_ERROR_VALIDATION_FAILED_EXT, "a NULL backend table is refused", "r=%d", r);
	(void)fx;
}

int main(void)
{
	static struct fixture fx;
	extmem_backend full = full_table(&fx.full_tb);
	extmem_backend limited = full_table(&fx.limited_tb);
	limited.caps = EXTMEM_CAP_OPAQUE_FD | EXTMEM_CAP_HOST_ALLOCATION;
	results = open_memstream(&results_text, &results_size);
	if (!results)
		return 1;
	printf("KTAP version 1\n");
	if (extmem_device_create(&full, &fx.full) != VK_SUCCESS ||
	    extmem_device_create(&limited, &fx.limited) != VK_SUCCESS) {
		char msg[256];
		extmem_last_error_message(msg, sizeof msg);
		printf("1..1\nnot ok 1 extmem_device_create # %s\n", msg);
		return 1;
	}
	// Four pages to import, and an address with nothing mapped (unmapped after mmap).
	fx.pages = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fx.unmapped = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(fx.unmapped, PAGE);
	if (fx.pages == MAP_FAILED || fx.unmapped == MAP_FAILED)
		return 1;

	size_t n = sizeof cases / sizeof cases[0];
	for (size_t i = 0; i < n; i++)
		run_case(&fx, &cases[i]);
	flows(&fx);
	host_ranges(&fx);
	handles(&fx);
	backend_tables(&fx);

	check(extmem_device_destroy(fx.full) == VK_SUCCESS &&
		      extmem_device_destroy(fx.limited) == VK_SUCCESS &&
		      live_objects(&fx.full_tb) == 0 && live_objects(&fx.limited_tb) == 0,
	      "every object is closed at the end", "full %d limited %d",
	      live_objects(&fx.full_tb), live_objects(&fx.limited_tb));
	munmap(fx.pages, 4 * PAGE);
	fclose(results);
	printf("1..%d\n%s", checks, results_text);
	free(results_text);
	printf("# %d passed, %d failed\n", checks - failures, failures);
	return failures ? 1 : 0;
}
