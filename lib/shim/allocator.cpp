/* allocator.cpp - the CPU block allocator: large blocks kept for reuse from
 * one pass to the next (ESG_CPU_CACHE).  Apart from the model code, and on
 * c10's allocator header only, not libtorch's tensor and JIT headers. */
#include "shim/memory.hpp"

#include <c10/core/CPUAllocator.h>

#include <sys/mman.h>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <unordered_map>
#include <utility>

namespace {
using esg_shim::MemCounts;

/* A method runs the same model calls again and again (steps, samples,
 * baselines), so the same activation sizes are allocated and freed pass
 * after pass.  glibc maps each block over 32 MB afresh and unmaps it on
 * free, so every pass pays its page faults and the kernel's zeroing again
 * (a third of a 64^3 U-Net pass in the kernel).  This allocator keeps the
 * freed pages of blocks of 1 MiB or more mapped and hands them out again:
 * a request takes the smallest kept region that holds it (the rest stays
 * kept), and a freed block merges with the kept regions beside it.  The
 * sizes of a pass vary (a 3D convolution's column buffer, then two smaller
 * activations where it was), so keeping blocks only for a request of the
 * same size churned: a fresh mapping for most requests, 1.5x the time of
 * the same loop in PyTorch.  Mapped memory (in use + kept) never exceeds
 * the most ever in use by more than a quarter, nor the budget's limit:
 * kept pages are unmapped, largest region first, before a new mapping
 * would go past that.  The quarter absorbs the fragmentation of a pass's
 * varying sizes (with none, the 32^3 U-Net's 54 MiB column buffer found no
 * whole region and was mapped afresh every step; with it, 4 MB more peak
 * and one seventh of the page faults).  Smaller requests go to libtorch's
 * default allocator.  ESG_CPU_CACHE=0 turns the keeping off (for
 * comparison); the counting stays.
 *
 * It is also where the memory budget is enforced (esg_torch_set_memory): a
 * request that would take the large blocks in use past the limit is
 * refused (std::bad_alloc), and the refusal is recorded so that the entry
 * point reports it as the budget's, not as libtorch's. */
class BlockCache final : public c10::Allocator {
public:
	BlockCache(c10::Allocator *small, bool keep) : small_(small) { keep_ = keep; }

	static MemCounts counts()
	{
		std::lock_guard<std::mutex> lock(mu_);
		return { in_use_bytes_, kept_bytes_, peak_ };
	}
	static void reset_peak()
	{
		std::lock_guard<std::mutex> lock(mu_);
		peak_ = in_use_bytes_;
	}
	static void set_limit(size_t limit)
	{
		std::lock_guard<std::mutex> lock(mu_);
		limit_ = limit;
	}
	static bool take_refusal(size_t *wanted, size_t *limit)
	{
		std::lock_guard<std::mutex> lock(mu_);
		if (!refused_wanted_)
			return false;
		*wanted = refused_wanted_;
		*limit = refused_limit_;
		refused_wanted_ = 0;
		return true;
	}

	/* libtorch before 2.3 declares allocate const, later ones not and add
	 * copy_data: both forms, so that this overrides either */
	c10::DataPtr allocate(size_t n) const { return get(n); }
	c10::DataPtr allocate(size_t n) { return get(n); }
	void copy_data(void *dest, const void *src, std::size_t n) const { memcpy(dest, src, n); }
	c10::DeleterFnPtr raw_deleter() const override { return &release; }

private:
	static constexpr size_t LARGE = 1 << 20, PAGE = 4096;
	c10::Allocator *small_;
	static std::mutex mu_;
	/* the kept regions, by start and by (size, start) */
	static std::map<char *, size_t> kept_at_;
	static std::set<std::pair<size_t, char *>> kept_by_size_;
	static std::unordered_map<void *, size_t> in_use_;
	static size_t in_use_bytes_, kept_bytes_, mark_, peak_, limit_;
	static size_t refused_wanted_, refused_limit_;
	static bool keep_;

	c10::DataPtr get(size_t n) const
	{
		if (n < LARGE)
			return small_->allocate(n);
		size_t size = (n + PAGE - 1) / PAGE * PAGE;
		void *p = take(size);
		if (!p)
			throw std::bad_alloc();
		return {p, p, &release, c10::Device(c10::kCPU)};
	}

	static void add_region(char *p, size_t size)
	{
		kept_at_.emplace(p, size);
		kept_by_size_.emplace(size, p);
	}
	static void drop_region(std::map<char *, size_t>::iterator it)
	{
		kept_by_size_.erase({it->second, it->first});
		kept_at_.erase(it);
	}

	/* a freed block joins the kept regions, merged with its neighbours */
	static void keep(char *p, size_t size)
	{
		kept_bytes_ += size;
		auto next = kept_at_.lower_bound(p);
		if (next != kept_at_.end() && p + size == next->first) {
			size += next->second;
			drop_region(next++);
		}
		if (next != kept_at_.begin()) {
			auto prev = std::prev(next);
			if (prev->first + prev->second == p) {
				p = prev->first;
				size += prev->second;
				drop_region(prev);
			}
		}
		add_region(p, size);
	}

	/* unmaps at least excess bytes of kept pages, from the largest region */
	static void unmap_kept(size_t excess)
	{
		while (excess > 0 && !kept_by_size_.empty()) {
			auto [size, p] = *std::prev(kept_by_size_.end());
			size_t cut = std::min(size, (excess + PAGE - 1) / PAGE * PAGE);
			drop_region(kept_at_.find(p));
			if (cut < size)
				add_region(p, size - cut);
			munmap(p + size - cut, cut);
			kept_bytes_ -= cut;
			excess -= std::min(excess, cut);
		}
	}

	static void *take(size_t size)
	{
		std::lock_guard<std::mutex> lock(mu_);
		if (in_use_bytes_ + size > limit_) {
			/* the first refusal of a call is the one to report: a later
			 * one may come from the unwinding */
			if (!refused_wanted_) {
				refused_wanted_ = in_use_bytes_ + size;
				refused_limit_ = limit_;
			}
			return nullptr;
		}
		char *p;
		auto fit = kept_by_size_.lower_bound({size, nullptr});
		if (fit != kept_by_size_.end()) {
			auto [have, at] = *fit;
			drop_region(kept_at_.find(at));
			if (have > size)
				add_region(at + size, have - size);
			kept_bytes_ -= size;
			p = at;
		} else {
			mark_ = std::max(mark_, in_use_bytes_ + size);
			size_t cap = std::min(mark_ + mark_ / 4, limit_);
			if (in_use_bytes_ + kept_bytes_ + size > cap)
				unmap_kept(in_use_bytes_ + kept_bytes_ + size - cap);
			void *m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m == MAP_FAILED)
				return nullptr;
			p = static_cast<char *>(m);
		}
		in_use_[p] = size;
		in_use_bytes_ += size;
		peak_ = std::max(peak_, in_use_bytes_);
		return p;
	}

	static void release(void *p)
	{
		std::lock_guard<std::mutex> lock(mu_);
		auto it = in_use_.find(p);
		if (it == in_use_.end())
			return;
		size_t size = it->second;
		in_use_.erase(it);
		in_use_bytes_ -= size;
		if (keep_)
			keep(static_cast<char *>(p), size);
		else
			munmap(p, size);
	}
};

std::mutex BlockCache::mu_;
std::map<char *, size_t> BlockCache::kept_at_;
std::set<std::pair<size_t, char *>> BlockCache::kept_by_size_;
std::unordered_map<void *, size_t> BlockCache::in_use_;
size_t BlockCache::in_use_bytes_, BlockCache::kept_bytes_, BlockCache::mark_, BlockCache::peak_;
size_t BlockCache::limit_ = SIZE_MAX, BlockCache::refused_wanted_, BlockCache::refused_limit_;
bool BlockCache::keep_ = true;

} // namespace

namespace esg_shim {

/* installed once, before the first model is loaded; never destroyed (tensors
 * may be freed during exit) */
void install_block_cache()
{
	static std::once_flag once;
	std::call_once(once, [] {
		const char *e = getenv("ESG_CPU_CACHE");
		c10::SetCPUAllocator(new BlockCache(c10::GetCPUAllocator(), !(e && !strcmp(e, "0"))), 1);
	});
}

MemCounts cpu_mem_counts() { return BlockCache::counts(); }
void cpu_mem_reset_peak() { BlockCache::reset_peak(); }
void cpu_mem_set_limit(size_t limit) { BlockCache::set_limit(limit); }
bool cpu_mem_take_refusal(size_t *wanted, size_t *limit) { return BlockCache::take_refusal(wanted, limit); }

} // namespace esg_shim
