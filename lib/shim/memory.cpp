/* memory.cpp - the memory budget (esg_torch_set_memory): the limit each
 * model call runs under, what a call cost per input value (measured by the
 * allocator), how many items fit the next call (esg_model_batch_fit), and
 * the message when a call does not fit.
 *
 * The budget covers the whole process's resident memory.  What a call may
 * take in large blocks is the budget less what the process holds outside
 * them (libtorch's code and small blocks, the tools' own buffers), read from
 * /proc/self/statm at the start of the call; the allocator refuses past it,
 * so a call that does not fit fails with one line instead of meeting the
 * kernel's OOM killer.  On CUDA the budget does not apply (the batch stays
 * at its maximum). */
#include "shim/internal.hpp"

#include <unistd.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>

using namespace esg_shim;

namespace {

uint64_t g_budget;      /* bytes; 0: none */
bool g_auto_batch;      /* esg_model_batch_fit sizes batches */
/* the call in progress, for the message when it is refused */
int64_t g_call_items;
uint64_t g_call_other;
bool g_refused;         /* the last error reported was a budget refusal */

/* Bytes per input value a first call is assumed to take before one has
 * been measured (without autograd, with): above what the shipped U-Net
 * and classifier take (bench/results.md), so that a first batch errs small. */
constexpr double PRIOR_BYTES_PER_VALUE[2] = { 1024, 4096 };
/* the share of what is free that batches are sized to: the rest absorbs
 * small blocks and the outputs' copies */
constexpr double FILL = 0.85;

uint64_t resident_bytes()
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long long size = 0, res = 0;
	if (f) {
		if (fscanf(f, "%llu %llu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* held outside the allocator's large blocks */
uint64_t held_outside(const MemCounts &c)
{
	uint64_t rss = resident_bytes(), blocks = c.in_use + c.kept;
	return rss > blocks ? rss - blocks : 0;
}

/* What a call of m may take now: the budget less what the process holds
 * outside the kept blocks, times FILL; and what it takes per input value. */
double call_room(esg_model *m, int grad, double *per_value)
{
	*per_value = m->bytes_per_value[grad] > 0 ? m->bytes_per_value[grad] : PRIOR_BYTES_PER_VALUE[grad];
	MemCounts c = cpu_mem_counts();
	/* the blocks kept for reuse are free for this call */
	double rss = (double)resident_bytes(), held = rss > c.kept ? rss - c.kept : 0;
	return ((double)g_budget - held) * FILL;
}

} // namespace

namespace esg_shim {

std::string format_bytes(double b)
{
	char s[32];
	if (b >= 1e9)
		snprintf(s, sizeof s, "%.1fG", b / (1 << 30));
	else
		snprintf(s, sizeof s, "%.0fM", b / (1 << 20) + 0.5);
	return s;
}

CallMeter::CallMeter(esg_model *m, bool grad, int64_t rows, int64_t items, int ndim,
		     const int64_t *shape)
	: m_(m), grad_(grad)
{
	use_windows_(m, rows);
	esg_torch_log_call_(grad, rows);
	values_ = 1;
	for (int d = 0; d < ndim; d++)
		values_ *= (double)shape[d];
	g_call_items = items;
	metered_ = g_budget && !m->dev.is_cuda();
	if (!metered_)
		return;
	MemCounts c = cpu_mem_counts();
	g_call_other = held_outside(c);
	uint64_t room = g_budget > g_call_other ? g_budget - g_call_other : 0;
	cpu_mem_set_limit(std::max<uint64_t>(room, c.in_use));
	cpu_mem_reset_peak();
	start_ = c.in_use;
}

CallMeter::~CallMeter()
{
	m_->win_rows = 0;  /* a patch batch's windows serve one call */
	if (!metered_)
		return;
	cpu_mem_set_limit(SIZE_MAX);
	if (std::uncaught_exceptions())
		return;
	MemCounts c = cpu_mem_counts();
	double per = c.peak > start_ ? (double)(c.peak - start_) / values_ : 0;
	m_->bytes_per_value[grad_] = std::max(m_->bytes_per_value[grad_], per);
}

/* The budget's message for a refused call, or "" when none was refused. */
std::string budget_refusal()
{
	size_t wanted, limit;
	if (!cpu_mem_take_refusal(&wanted, &limit))
		return "";
	std::string what = g_call_items > 1
		? "a model call on " + std::to_string(g_call_items) + " items"
		: "a model call on one item";
	std::string advice = g_call_items > 1
		? (g_auto_batch ? "give a larger --memory" : "use a smaller --internal-batch (or auto) or a larger --memory")
		: "run it patch-wise (--patch SIZE) or give a larger --memory";
	return "out of the memory budget: " + what + " needs more than " +
	       format_bytes((double)wanted + (double)g_call_other) + " and --memory allows " +
	       format_bytes((double)g_budget) + " (" + format_bytes((double)g_call_other) +
	       " of it held outside model calls); " + advice;
}

void report_error(const char *prefix, const std::string &msg)
{
	std::string b = budget_refusal();
	g_refused = !b.empty();
	if (g_refused)
		esg_set_error("%s", b.c_str());
	else
		esg_set_error("%s%s", prefix, msg.c_str());
}

} // namespace esg_shim

extern "C" {

void esg_torch_set_memory(uint64_t budget, int auto_batch)
{
	g_budget = budget;
	g_auto_batch = auto_batch != 0;
}

uint64_t esg_torch_resident_bytes(void)
{
	return resident_bytes();
}

int esg_torch_budget_refused(void)
{
	int r = g_refused;
	g_refused = false;
	return r;
}

int64_t esg_model_values_fit(esg_model *m, int grad, double host_bytes_per_value)
{
	if (!m || !g_budget || m->dev.is_cuda())
		return 0;
	double per_value, room = call_room(m, grad != 0, &per_value);
	double n = room / (per_value + host_bytes_per_value);
	return n > 1 ? (int64_t)n : 1;
}

int esg_model_batch_fit(esg_model *m, int grad, int64_t item_values, uint64_t host_bytes_per_item,
			int max)
{
	if (max < 1)
		max = 1;
	if (!m || !g_budget || !g_auto_batch || m->dev.is_cuda() || max == 1)
		return max;
	double per_value, room = call_room(m, grad != 0, &per_value);
	double per_item = per_value * (double)item_values + (double)host_bytes_per_item;
	double n = per_item > 0 ? room / per_item : max;
	return n >= max ? max : n < 1 ? 1 : (int)n;
}

} // extern "C"
