/* internal.hpp - what the shim's C++ files (lib/shim) share: the model
 * handle, error plumbing, graph edits, amp.  Not part of the C API: only
 * the .cpp files of lib/shim include it; everything else sees
 * lib/shim/esg_torch.h. */
#ifndef ESG_TORCH_INTERNAL_HPP
#define ESG_TORCH_INTERNAL_HPP

#include <torch/script.h>
#include <torch/version.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <ATen/autocast_mode.h>

#include <initializer_list>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>
extern "C" {
#include "stream/stream.h"
}
#include "shim/esg_torch.h"
#include "shim/memory.hpp"

/* ---- the model handle ------------------------------------------------ */

struct esg_model {
	torch::jit::Module mod;
	c10::Device dev{c10::kCPU};
	/* forward's arguments after self and x, with their defaults */
	std::vector<c10::IValue> extra_args;
	std::map<std::string, std::shared_ptr<torch::jit::GraphFunction>> cache;
	/* mixed precision: autocast dtype of forward passes (kFloat: off) */
	at::ScalarType amp = at::kFloat;
	/* LRP: the table of rules per layer type (esg_model_set_lrp) */
	std::string lrp;
	/* the most a call took per input value, in large CPU blocks, without
	 * and with autograd (memory.cpp; 0: not measured yet) */
	double bytes_per_value[2] = { 0, 0 };
	/* patch batches (esg_model_set_windows): the whole mask while windows
	 * are in use, and the next call's mask of win_rows rows (0: none set) */
	bool win_on = false;
	at::Tensor win_full, win_mask;
	int64_t win_rows = 0;
};
/* A call of `rows` rows begins: under patch batches, give the wrapper the
 * mask of its windows (model.cpp); throws if none were set or they do not
 * fit the rows. */
void use_windows_(esg_model *m, int64_t rows);

/* The TorchScript module inside a model handle (borrowed). */
torch::jit::Module *esg_model_module_(esg_model *m);
/* The model's mixed-precision dtype (at::kFloat when off) and device. */
at::ScalarType esg_model_amp_(esg_model *m);
c10::Device esg_model_device_(esg_model *m);
/* Under amp, rewrite an inlined graph so that autocast runs it correctly
 * (aten::_convolution -> conv / conv_transpose); nothing without amp.
 * Throws on what it can't rewrite. */
void esg_amp_rewrite_(esg_model *m, std::shared_ptr<torch::jit::Graph> &g);

/* Scope of one forward pass: under autocast for the model's device in its
 * amp dtype (nothing when amp is off), as Python's torch.autocast does it;
 * the destructor restores the previous state and clears autocast's cache
 * of cast weights (and of cast inputs that require grad). */
class EsgAmpGuard {
public:
	explicit EsgAmpGuard(esg_model *m)
		: dt_(esg_model_amp_(m)), cuda_(esg_model_device_(m).is_cuda())
	{
		if (dt_ == at::kFloat)
			return;
		prev_on_ = enabled();
		prev_dt_ = dtype();
		set(true, dt_);
		at::autocast::increment_nesting();
	}
	~EsgAmpGuard()
	{
		if (dt_ == at::kFloat)
			return;
		if (at::autocast::decrement_nesting() == 0)
			at::autocast::clear_cache();
		set(prev_on_, prev_dt_);
	}
	EsgAmpGuard(const EsgAmpGuard &) = delete;
	EsgAmpGuard &operator=(const EsgAmpGuard &) = delete;

private:
	/* libtorch 2.4 made autocast's state per device type
	 * (is_autocast_enabled(kCUDA)); the per-device functions of 1.x
	 * (is_enabled() for CUDA, is_cpu_enabled()) warn there, and may go. */
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
	c10::DeviceType type() const { return cuda_ ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }
	bool enabled() const { return at::autocast::is_autocast_enabled(type()); }
	at::ScalarType dtype() const { return at::autocast::get_autocast_dtype(type()); }
	void set(bool on, at::ScalarType dt) const
	{
		at::autocast::set_autocast_dtype(type(), dt);
		at::autocast::set_autocast_enabled(type(), on);
	}
#else
	bool enabled() const { return cuda_ ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
	at::ScalarType dtype() const
	{
		return cuda_ ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
	}
	void set(bool on, at::ScalarType dt) const
	{
		if (cuda_) {
			at::autocast::set_autocast_gpu_dtype(dt);
			at::autocast::set_enabled(on);
		} else {
			at::autocast::set_autocast_cpu_dtype(dt);
			at::autocast::set_cpu_enabled(on);
		}
	}
#endif
	at::ScalarType dt_;
	bool cuda_;
	bool prev_on_ = false;
	at::ScalarType prev_dt_ = at::kFloat;
};

/* Count one model call (with or without autograd) of `batch` items. */
void esg_torch_log_call_(bool grad, int64_t batch);

namespace esg_shim {

/* ---- errors (model.cpp) ---------------------------------------------- */

/* An error of our own (message already final). */
struct ShimError : std::runtime_error {
	using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string &msg);
/* esg_set_error(prefix + msg), unless the memory budget refused a request
 * (budget_refusal): then that is the error, whatever it became on the way. */
void report_error(const char *prefix, const std::string &msg);
/* The line of a libtorch message that says what went wrong. */
std::string one_line(const std::string &msg);
/* "[2, 1, 64, 64]", for messages. */
std::string shape_str(at::IntArrayRef s);

/* ---- memory: the CPU block allocator (allocator.cpp) and the budget -- */

/* install_block_cache, cpu_mem_counts ...: shim/memory.hpp, included above */

/* One model call of `rows` rows (the caller's `items`, whose input has
 * `shape`), for its whole scope: counts it (esg_torch_log_call_), runs it
 * under the memory budget's limit and records what it took per input value
 * when it returns normally (memory.cpp). */
class CallMeter {
public:
	CallMeter(esg_model *m, bool grad, int64_t rows, int64_t items, int ndim,
		  const int64_t *shape);
	~CallMeter();
	CallMeter(const CallMeter &) = delete;
	CallMeter &operator=(const CallMeter &) = delete;

private:
	esg_model *m_;
	bool grad_, metered_ = false;
	double values_;
	size_t start_ = 0;
};
/* "3.1G", "512M" */
std::string format_bytes(double bytes);
/* The budget's one-line message when the allocator refused a request since
 * the last time it was asked, else "". */
std::string budget_refusal();

/* ---- graph editing (graph.cpp) --------------------------------------- */

/* The rule's name; throws on an unknown rule. */
const char *rule_name(esg_backward_rule r);
/* All nodes of a block and its sub-blocks, in order (pre-order). */
void all_nodes(torch::jit::Block *b, std::vector<torch::jit::Node *> &out);

/* EDIT_CUT: the layer's output is the graph's only output, so nothing
 * after the layer is computed (esg-explain's objectives). */
enum Edit { EDIT_RULE, EDIT_CAPTURE, EDIT_REPLACE, EDIT_CUT };

/* The model's forward, edited (capture or replace the layer's output, the
 * rule applied, rewritten for amp) and cached. */
std::shared_ptr<torch::jit::GraphFunction> edited(esg_model *m, Edit edit, const esg_layer_ref *layer,
						  esg_backward_rule rule);

/* LRP (rules_lrp.cpp): rewrite a fully inlined graph with the rule table
 * `spec` (esg_model_set_lrp's format).  Throws on what it can't rewrite. */
void apply_lrp(torch::jit::Graph &g, const std::string &spec);

/* ---- mixed precision (autocast.cpp) ---------------------------------- */

/* Throws if the rule is refused under the model's amp setting. */
void check_amp_rule(esg_model *m, esg_backward_rule rule);

/* ---- propagation rules (rules_*.cpp) --------------------------------- */

/* One file per family: autograd Functions, the ops on them, and a
 * TORCH_LIBRARY_FRAGMENT(esg, m) that registers the ops; graph.cpp's
 * apply_rule puts them in the graph. */

/* The rule ops' backward passes run as one loop over the activation when
 * every tensor is a float or double CPU tensor: written as tensor ops each
 * would allocate five to ten temporaries of the activation's size, which on
 * a 3D U-Net cost as much as the convolutions' own backward.  Other devices
 * and types take the tensor-op form (same formulas). */
inline bool fused_ok(std::initializer_list<at::Tensor> ts)
{
	for (const at::Tensor &t : ts)
		if (!t.device().is_cpu() || t.scalar_type() != ts.begin()->scalar_type() ||
		    (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble) ||
		    t.sizes() != ts.begin()->sizes())
			return false;
	return true;
}

constexpr int64_t FUSED_GRAIN = 32768;

} // namespace esg_shim

/* The end of every C API entry point's try block: the error, one line,
 * into esg_set_error() and `ret` returned. */
#define SHIM_CATCH(ret)                                                        \
	catch (const esg_shim::ShimError &e) {                                 \
		esg_shim::report_error("", e.what());                          \
		return ret;                                                    \
	}                                                                      \
	catch (const c10::Error &e) {                                          \
		esg_shim::report_error("libtorch: ",                           \
				       esg_shim::one_line(e.what_without_backtrace())); \
		return ret;                                                    \
	}                                                                      \
	catch (const std::exception &e) {                                      \
		esg_shim::report_error("libtorch: ", esg_shim::one_line(e.what())); \
		return ret;                                                    \
	}                                                                      \
	catch (...) {                                                          \
		esg_shim::report_error("libtorch: ", "unknown exception");     \
		return ret;                                                    \
	}

#endif
