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
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

namespace {
using esg_shim::MemCounts;

/* A method runs the same model calls again and again (steps, samples,
 * baselines), so the same large activation sizes are allocated and freed
 * pass after pass.  glibc maps each block over 32 MB afresh and unmaps it
 * on free, so every pass pays its page faults and the kernel's zeroing
 * again (a third of a 64^3 U-Net pass in the kernel).  This allocator keeps
 * freed blocks of 1 MiB or more and hands them back for a request of the
 * same size.  It never lets mapped memory (in use + kept) exceed the most
 * ever in use: a kept block is unmapped before a new mapping would go
 * past that mark, so peak memory is what it would be without keeping.
 * Smaller requests go to libtorch's default allocator.  ESG_CPU_CACHE=0
 * turns the keeping off (for comparison); the counting stays.
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
	static std::multimap<size_t, void *> by_size_;
	static std::list<std::pair<size_t, void *>> kept_; /* oldest first */
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

	static void unmap_oldest()
	{
		auto [size, p] = kept_.front();
		kept_.pop_front();
		auto r = by_size_.equal_range(size);
		for (auto it = r.first; it != r.second; ++it)
			if (it->second == p) {
				by_size_.erase(it);
				break;
			}
		munmap(p, size);
		kept_bytes_ -= size;
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
		void *p = nullptr;
		auto it = by_size_.find(size);
		if (it != by_size_.end()) {
			p = it->second;
			by_size_.erase(it);
			kept_.remove(std::make_pair(size, p));
			kept_bytes_ -= size;
		} else {
			mark_ = std::max(mark_, in_use_bytes_ + size);
			while (!kept_.empty() && in_use_bytes_ + kept_bytes_ + size > mark_)
				unmap_oldest();
			p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				return nullptr;
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
		if (!keep_) {
			munmap(p, size);
			return;
		}
		by_size_.emplace(size, p);
		kept_.emplace_back(size, p);
		kept_bytes_ += size;
	}
};

std::mutex BlockCache::mu_;
std::multimap<size_t, void *> BlockCache::by_size_;
std::list<std::pair<size_t, void *>> BlockCache::kept_;
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
