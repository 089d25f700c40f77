// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * Physically contiguous runs of an object's memory: the compact form of a pinned user
 * range over huge pages (one run per 2 MiB folio instead of 512 page pointers) and of a
 * mapped dma-buf attachment (adjacent scatterlist entries merged). A run is looked up by
 * binary search, so binding an object is linear in its runs, not quadratic.
 */

#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#include "extmem_vgpu.h"
#include "extmem_vgpu_compat.h"

/* Byte length of run `i`. */
static u64 extmem_run_len(const struct extmem_runs *runs, unsigned long i)
{
	u64 next = i + 1 < runs->n ? runs->run[i + 1].start : runs->end;

	return next - runs->run[i].start;
}

/* Room for at least `want` runs; the array at least doubles so appends stay linear. */
static int extmem_runs_reserve(struct extmem_runs *runs, unsigned long want)
{
	unsigned long cap = max3(want, 2 * runs->cap, 16UL);
	struct extmem_run *grown;

	if (want <= runs->cap)
		return 0;
	grown = kvmalloc_array(cap, sizeof(*grown), GFP_KERNEL);
	if (!grown)
		return -ENOMEM;
	if (runs->n)
		memcpy(grown, runs->run, runs->n * sizeof(*grown));
	kvfree(runs->run);
	runs->run = grown;
	runs->cap = cap;
	return 0;
}

/* Appends a run of `len` bytes at `pa`, merged into the last run if it continues it. */
static void extmem_runs_push(struct extmem_runs *runs, u64 pa, u64 len)
{
	struct extmem_run *last = runs->n ? &runs->run[runs->n - 1] : NULL;

	if (!last || last->pa + (runs->end - last->start) != pa) {
		runs->run[runs->n].start = runs->end;
		runs->run[runs->n].pa = pa;
		runs->n++;
	}
	runs->end += len;
}

/*
 * The end of the run of consecutive frames that starts at pages[i]: the first j > i with
 * pages[j] not the page after pages[j - 1], or `count`. Eight pointers per test, their
 * differences OR-ed: under emulation (QEMU TCG) each guest branch and loop step costs as
 * much as the load, and a huge page's 512 pointers are the import's largest cost after
 * the pin itself.
 */
static unsigned long extmem_run_end(struct page **pages, unsigned long i, unsigned long count)
{
	struct page *page = pages[i];
	unsigned long j = i + 1;

	while (count - j >= 8) {
		unsigned long diff = 0, k;

		for (k = 0; k < 8; k++)
			diff |= (uintptr_t)pages[j + k] ^ (uintptr_t)nth_page(page, j + k - i);
		if (diff)
			break;
		j += 8;
	}
	while (j < count && pages[j] == nth_page(page, j - i))
		j++;
	return j;
}

unsigned long extmem_runs_add_pages(struct extmem_runs *runs, struct page **pages,
				    unsigned long count)
{
	struct extmem_run *run = runs->run;
	unsigned long n = runs->n;
	u64 end = runs->end;
	struct page *next = NULL;
	unsigned long i;

	/*
	 * The page that would continue the last run. nth_page() is plain pointer arithmetic
	 * where struct pages of consecutive frames are consecutive (the vmemmap), so a run is
	 * then a run of consecutive pointers.
	 */
	if (n)
		next = pfn_to_page(PHYS_PFN(run[n - 1].pa + (end - run[n - 1].start)));
	/* One pass; extmem_run_end walks a huge page's 512 pointers. */
	i = 0;
	while (i < count) {
		struct page *page = pages[i];
		unsigned long j;

		if (page != next) {
			if (n == runs->cap)
				break;
			run[n].start = end;
			run[n].pa = PFN_PHYS(page_to_pfn(page));
			n++;
		}
		j = extmem_run_end(pages, i, count);
		end += (u64)(j - i) << PAGE_SHIFT;
		next = nth_page(page, j - i);
		i = j;
	}
	runs->n = n;
	runs->end = end;
	return i;
}

int extmem_runs_grow(struct extmem_runs *runs)
{
	return extmem_runs_reserve(runs, runs->cap + 1);
}

int extmem_runs_from_sgt(struct extmem_runs *runs, struct sg_table *sgt)
{
	struct scatterlist *sg;
	unsigned int i;
	int ret;

	/* At most one run per DMA entry; the entries are few next to the pages. */
	ret = extmem_runs_reserve(runs, max(sgt->nents, 1U));
	if (ret)
		return ret;
	for_each_sgtable_dma_sg(sgt, sg, i)
		extmem_runs_push(runs, sg_dma_address(sg), sg_dma_len(sg));
	return 0;
}

void extmem_runs_to_pages(const struct extmem_runs *runs, struct page **pages)
{
	unsigned long i, k, idx = 0;

	for (i = 0; i < runs->n; i++) {
		unsigned long pfn = PHYS_PFN(runs->run[i].pa);
		unsigned long count = extmem_run_len(runs, i) >> PAGE_SHIFT;

		for (k = 0; k < count; k++)
			pages[idx++] = pfn_to_page(pfn + k);
	}
}

void extmem_runs_unpin(const struct extmem_runs *runs, bool dirty)
{
	unsigned long i;

	for (i = 0; i < runs->n; i++)
		unpin_user_page_range_dirty_lock(pfn_to_page(PHYS_PFN(runs->run[i].pa)),
						 extmem_run_len(runs, i) >> PAGE_SHIFT, dirty);
}

int extmem_runs_lookup(const struct extmem_runs *runs, u64 pos, u64 *pa, u64 *len)
{
	unsigned long lo = 0, hi = runs->n;

	if (pos >= runs->end || !runs->n)
		return -ERANGE;
	/* The last run whose start is <= pos: run[0].start is 0, so it exists. */
	while (hi - lo > 1) {
		unsigned long mid = lo + (hi - lo) / 2;

		if (runs->run[mid].start <= pos)
			lo = mid;
		else
			hi = mid;
	}
	*pa = runs->run[lo].pa + (pos - runs->run[lo].start);
	*len = extmem_run_len(runs, lo) - (pos - runs->run[lo].start);
	return 0;
}

void extmem_runs_free(struct extmem_runs *runs)
{
	kvfree(runs->run);
	*runs = (struct extmem_runs){};
}
