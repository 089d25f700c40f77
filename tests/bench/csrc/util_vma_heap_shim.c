/* The bench's side of Mesa's util_vma_heap: an opaque heap handle for Rust, the hole walk
 * the fragmentation figures need, and the counters behind vma.c's calloc and free (the
 * build renames them to the functions below), so metadata bytes can be reported.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */

#undef calloc
#undef free

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "util/vma.h"

/* vma.c's own hole record (private to vma.c); the walk below reads the list through it.
 * vma.h's list_head is its first member. */
struct extmem_bench_hole {
   struct list_head link;
   uint64_t offset;
   uint64_t size;
};

static size_t live_holes;
static size_t hole_bytes;

void *extmem_bench_vma_calloc(size_t count, size_t size)
{
   void *p = calloc(count, size);
   if (p) {
      live_holes++;
      hole_bytes = count * size;
   }
   return p;
}

void extmem_bench_vma_free_hole(void *p)
{
   if (p)
      live_holes--;
   free(p);
}

/* Bytes of hole records util_vma_heap holds now (every one is the same size). */
size_t extmem_bench_vma_metadata_bytes(void)
{
   return live_holes * hole_bytes;
}

struct util_vma_heap *extmem_bench_vma_new(uint64_t start, uint64_t size, bool alloc_high)
{
   struct util_vma_heap *heap = calloc(1, sizeof(*heap));
   if (!heap)
      return NULL;
   util_vma_heap_init(heap, start, size);
   heap->alloc_high = alloc_high;
   return heap;
}

void extmem_bench_vma_destroy(struct util_vma_heap *heap)
{
   util_vma_heap_finish(heap);
   free(heap);
}

uint64_t extmem_bench_vma_alloc(struct util_vma_heap *heap, uint64_t size, uint64_t align)
{
   return util_vma_heap_alloc(heap, size, align);
}

void extmem_bench_vma_free(struct util_vma_heap *heap, uint64_t offset, uint64_t size)
{
   util_vma_heap_free(heap, offset, size);
}

/* The largest hole, the free bytes, and whether some hole holds `size` bytes at `align`. */
void extmem_bench_vma_holes(const struct util_vma_heap *heap, uint64_t size, uint64_t align,
                            uint64_t *largest, uint64_t *free_bytes, bool *fits)
{
   *largest = 0;
   *free_bytes = heap->free_size;
   *fits = false;
   list_for_each_entry(struct extmem_bench_hole, hole, &heap->holes, link) {
      if (hole->size > *largest)
         *largest = hole->size;
      uint64_t at = (hole->offset + align - 1) & ~(align - 1);
      if (at >= hole->offset && at - hole->offset <= hole->size &&
          hole->size - (at - hole->offset) >= size)
         *fits = true;
   }
}
