/* memory.hpp - the CPU block allocator's counts and the memory budget's
 * limit (allocator.cpp), on the standard library only: allocator.cpp
 * includes this and c10's allocator header, not libtorch's. */
#ifndef ESG_SHIM_MEMORY_HPP
#define ESG_SHIM_MEMORY_HPP

#include <cstddef>

namespace esg_shim {

/* Installs the allocator, once (before the first model is loaded). */
void install_block_cache();

/* Bytes of large blocks (1 MiB or more) in use, kept for reuse, and the
 * most in use since cpu_mem_reset_peak. */
struct MemCounts {
	size_t in_use, kept, peak;
};
MemCounts cpu_mem_counts();
void cpu_mem_reset_peak();
/* Refuse a request that would take the bytes in use past limit (SIZE_MAX:
 * none). */
void cpu_mem_set_limit(size_t limit);
/* The first refusal since the last call: what the blocks in use would
 * have been, and the limit then.  Clears it. */
bool cpu_mem_take_refusal(size_t *wanted, size_t *limit);

} // namespace esg_shim

#endif
