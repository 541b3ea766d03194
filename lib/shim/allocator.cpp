/* allocator.cpp - the CPU block allocator: large blocks kept for reuse from
 * one pass to the next (ESG_CPU_CACHE).  Apart from the model code, and on
 * c10's allocator header only, not libtorch's tensor and JIT headers. */
#include <c10/core/CPUAllocator.h>

#include <sys/mman.h>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

namespace {

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
 * turns it off (for comparison). */
class BlockCache final : public c10::Allocator {
public:
	explicit BlockCache(c10::Allocator *small) : small_(small) {}

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
	static size_t in_use_bytes_, kept_bytes_, mark_;

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
		by_size_.emplace(size, p);
		kept_.emplace_back(size, p);
		kept_bytes_ += size;
	}
};

std::mutex BlockCache::mu_;
std::multimap<size_t, void *> BlockCache::by_size_;
std::list<std::pair<size_t, void *>> BlockCache::kept_;
std::unordered_map<void *, size_t> BlockCache::in_use_;
size_t BlockCache::in_use_bytes_, BlockCache::kept_bytes_, BlockCache::mark_;

} // namespace

/* Declared in internal.hpp, which this file leaves out: it brings all of
 * libtorch's headers, and the allocator needs c10's only. */
namespace esg_shim {

/* installed once, before the first model is loaded; never destroyed (tensors
 * may be freed during exit) */
void install_block_cache()
{
	static std::once_flag once;
	std::call_once(once, [] {
		const char *e = getenv("ESG_CPU_CACHE");
		if (e && !strcmp(e, "0"))
			return;
		c10::SetCPUAllocator(new BlockCache(c10::GetCPUAllocator()), 1);
	});
}

} // namespace esg_shim
