/* torch_shim.cpp - lib/esg_torch.h on libtorch (1.13, Debian, CPU; 2.x, CPU or CUDA).
 *
 * The only C++ in esegeta.  Every entry point catches c10::Error,
 * std::exception and anything else and reports through esg_set_error():
 * no exception crosses into C.
 *
 * Rule-modified backward passes (guided backprop, deconvolution, DeepLift)
 * rewrite a fully inlined copy of the forward graph: each aten::relu /
 * aten::relu_ (module, functional, in-place, traced or scripted alike) is
 * replaced by a custom op registered below whose autograd backward applies
 * the rule.  Layers are reached by editing a copy of the forward graph:
 * only the calls on the path to the layer are inlined, the layer's call
 * output becomes an extra graph output (capture, gradient) or is replaced
 * by a new graph input (replacement).  Edited graphs are cached per
 * (edit, layer, call, rule).
 *
 * DeepLift (rescale) follows Captum's DeepLift: input and baseline run as
 * one batch [x; ref], the target is scored on both halves, and
 *  - ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus (functional or module,
 *    unlike Captum which only sees modules) get the rescale multiplier
 *    delta_out / delta_in, or the ordinary gradient where |delta_in| < 1e-10;
 *  - max_pool1d/2d/3d get Captum's maxpool rule (cross maximum of the
 *    input's and the baseline's pooled outputs, gradients routed through
 *    both halves' argmax, divided by delta_in).  One difference: Captum
 *    scatters with max_unpool (overlapping windows overwrite each other);
 *    here the max-pool backward accumulates them.  Identical whenever
 *    windows do not overlap (kernel <= stride, e.g. the usual 2x2 pools).
 *  - softmax gets the plain gradient (Captum's softmax rule is not applied).
 *
 * Excitation backprop (ESG_RULE_EXCITATION*, apply_excitation) rewrites the
 * linear ops instead of the ReLUs: each conv / conv-transpose / linear,
 * average pool, mean and eval batch norm y = f(x) becomes
 * eb_out(y, f+(eb_in(x))) with f+ the op on W+ (no bias), whose backward is
 * the marginal-winning-probability rule x * f+^T (P / f+(x)); the last
 * weighted op also gets its dual unit f- (weights -W) for the contrastive
 * rule.  Everything else keeps its ordinary gradient.
 *
 * Limitation: an in-place nonlinearity becomes an out-of-place op whose
 * result later readers of its input see; a *view* of that input taken
 * before the op would still see the old values (in-place ops through
 * views are rare in exported models; none in the fixtures or demo U-Net).
 */
#include <torch/torch.h>
#include <torch/script.h>
#include <c10/core/CPUAllocator.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/graph_rewrite_helper.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <list>
#include <mutex>
#include <sys/mman.h>
#include <unordered_map>
#include <atomic>
#include <sched.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "stream/stream.h"
}
#include "shim/esg_torch.h"
#include "shim/internal.hpp"

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::GraphFunction;
using torch::jit::Node;
using torch::jit::Value;
using torch::jit::WithInsertPoint;
namespace attr = c10::attr;
namespace prim = c10::prim;

namespace {

/* ---- errors ---------------------------------------------------------- */

/* An error of our own (message already final). */
struct ShimError : std::runtime_error {
	using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string &msg) { throw ShimError(msg); }

std::string trim(const std::string &s)
{
	size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
	return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

/* libtorch messages span many lines (TorchScript tracebacks, C++ stacks);
 * keep the line that says what went wrong. */
std::string one_line(const std::string &msg)
{
	std::string m = msg;
	size_t p = m.rfind("RuntimeError: ");
	if (p != std::string::npos)
		m = m.substr(p + 14);
	std::istringstream in(m);
	std::string line;
	while (std::getline(in, line)) {
		line = trim(line);
		if (!line.empty())
			return line;
	}
	return "unknown libtorch error";
}

#define SHIM_CATCH(ret)                                                        \
	catch (const ShimError &e) {                                           \
		esg_set_error("%s", e.what());                                 \
		return ret;                                                    \
	}                                                                      \
	catch (const c10::Error &e) {                                          \
		esg_set_error("libtorch: %s",                                  \
			      one_line(e.what_without_backtrace()).c_str());   \
		return ret;                                                    \
	}                                                                      \
	catch (const std::exception &e) {                                      \
		esg_set_error("libtorch: %s", one_line(e.what()).c_str());     \
		return ret;                                                    \
	}                                                                      \
	catch (...) {                                                          \
		esg_set_error("libtorch: unknown exception");                  \
		return ret;                                                    \
	}

std::string shape_str(at::IntArrayRef s)
{
	std::string r = "[";
	for (size_t i = 0; i < s.size(); i++)
		r += (i ? ", " : "") + std::to_string(s[i]);
	return r + "]";
}

/* ---- CPU memory: large blocks kept for reuse ------------------------- */

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

/* ---- custom ops: rule-modified backward passes ----------------------- */

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr double DL_EPS = 1e-10;

/* The rule ops' backward passes run as one loop over the activation when
 * every tensor is a float or double CPU tensor: written as tensor ops each
 * would allocate five to ten temporaries of the activation's size, which on
 * a 3D U-Net cost as much as the convolutions' own backward.  Other devices
 * and types take the tensor-op form (same formulas). */
bool fused_ok(std::initializer_list<at::Tensor> ts)
{
	for (const at::Tensor &t : ts)
		if (!t.device().is_cpu() || t.scalar_type() != ts.begin()->scalar_type() ||
		    (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble) ||
		    t.sizes() != ts.begin()->sizes())
			return false;
	return true;
}

constexpr int64_t FUSED_GRAIN = 32768;

/* relu forward; backward relu(grad) * [x > 0] (guided) or relu(grad)
 * (deconvolution). */
struct RuleRelu : public torch::autograd::Function<RuleRelu> {
	static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x,
				  bool guided)
	{
		at::Tensor y = at::relu(x);
		ctx->saved_data["guided"] = guided;
		ctx->save_for_backward({y});
		return y;
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		bool guided = ctx->saved_data["guided"].toBool();
		at::Tensor y = ctx->get_saved_variables()[0];
		if (!fused_ok({g[0], y})) {
			at::Tensor gi = at::relu(g[0]);
			return {guided ? gi * (y > 0) : gi, at::Tensor()};
		}
		at::Tensor gc = g[0].contiguous(), yc = y.contiguous(), gi = at::empty_like(gc);
		AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "esg_rule_relu_backward", [&] {
			const scalar_t *gp = gc.data_ptr<scalar_t>(), *yp = yc.data_ptr<scalar_t>();
			scalar_t *op = gi.data_ptr<scalar_t>();
			at::parallel_for(0, gc.numel(), FUSED_GRAIN, [&](int64_t b, int64_t e) {
				for (int64_t i = b; i < e; i++)
					op[i] = gp[i] > 0 && (!guided || yp[i] > 0) ? gp[i] : scalar_t(0);
			});
		});
		return {gi, at::Tensor()};
	}
};

/* Both halves of a [x; ref] batch get the same delta (Captum's
 * _compute_diffs): cat([a - b, a - b]). */
at::Tensor half_delta(const at::Tensor &t)
{
	TORCH_CHECK(t.size(0) % 2 == 0, "DeepLift needs an even batch [input; baseline]");
	auto h = t.chunk(2, 0);
	at::Tensor d = h[0] - h[1];
	return at::cat({d, d}, 0);
}

/* Where DeepLift's delta_in vanishes and the rules fall back to the
 * gradient: |x - ref| < eps, for both halves of [x; ref]. */
at::Tensor zero_delta(const at::Tensor &t) { return half_delta(t).abs() < DL_EPS; }

/* The fused form of a rule's backward pass: for each element i of the
 * first half of a contiguous [x; ref] batch (h = numel / 2), with
 * din = x[i] - x[i + h], calls on_delta(i, i + h, din) where |din| >= eps
 * and on_zero(i, i + h) elsewhere.  True if on_zero was called anywhere
 * (the caller then finishes those elements with tensor ops). */
template <typename scalar_t, typename OnDelta, typename OnZero>
bool over_halves(const at::Tensor &x, OnDelta on_delta, OnZero on_zero)
{
	const scalar_t *xp = x.data_ptr<scalar_t>();
	const int64_t h = x.numel() / 2;
	const scalar_t eps = static_cast<scalar_t>(DL_EPS);
	std::atomic<bool> any_zero{false};
	at::parallel_for(0, h, FUSED_GRAIN, [&](int64_t b, int64_t e) {
		bool zero = false;
		for (int64_t i = b; i < e; i++) {
			scalar_t din = xp[i] - xp[i + h];
			if (std::abs(din) < eps) {
				on_zero(i, i + h);
				zero = true;
			} else {
				on_delta(i, i + h, din);
			}
		}
		if (zero)
			any_zero = true;
	});
	return any_zero;
}

/* DeepLift rescale at an elementwise nonlinearity y = f(x): forward passes
 * y through; backward sends grad * delta_out / delta_in to x where
 * |delta_in| >= eps, and grad back through y (so through f's own
 * derivative, the ordinary gradient) elsewhere.  Works for any f. */
struct DlRescale : public torch::autograd::Function<DlRescale> {
	static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x,
				  const at::Tensor &y)
	{
		ctx->save_for_backward({x, y});
		return y; /* returned as a view of y: no copy */
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		auto s = ctx->get_saved_variables();
		TORCH_CHECK(s[0].size(0) % 2 == 0, "DeepLift needs an even batch [input; baseline]");
		at::Tensor zero = at::zeros({}, g[0].options());
		if (!fused_ok({s[0], s[1], g[0]})) {
			at::Tensor din = half_delta(s[0]), dout = half_delta(s[1]);
			at::Tensor small = din.abs() < DL_EPS;
			return {at::where(small, zero, g[0] * dout / din), at::where(small, g[0], zero)};
		}
		at::Tensor xc = s[0].contiguous(), yc = s[1].contiguous(), gc = g[0].contiguous();
		at::Tensor gx = at::empty_like(xc);
		bool any_zero = false;
		AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "esg_dl_rescale_backward", [&] {
			const scalar_t *yp = yc.data_ptr<scalar_t>(), *gp = gc.data_ptr<scalar_t>();
			scalar_t *op = gx.data_ptr<scalar_t>();
			any_zero = over_halves<scalar_t>(
				xc,
				[&](int64_t i, int64_t j, scalar_t din) {
					scalar_t dout = yp[i] - yp[j];
					op[i] = gp[i] * dout / din;
					op[j] = gp[j] * dout / din;
				},
				[&](int64_t i, int64_t j) { op[i] = op[j] = 0; });
		});
		/* where delta_in vanishes the gradient goes through f itself (rare:
		 * only then is a second tensor needed) */
		at::Tensor gy;
		if (any_zero)
			gy = at::where(zero_delta(xc), gc, zero);
		return {gx, gy};
	}
};

std::vector<int64_t> expand_arg(at::IntArrayRef v, int dims, const std::vector<int64_t> &dflt)
{
	if (v.empty())
		return dflt;
	if (v.size() == 1)
		return std::vector<int64_t>(dims, v[0]);
	return v.vec();
}

/* DeepLift at max pooling (Captum's maxpool rule).  1D pools run as 2D. */
struct DlMaxPool : public torch::autograd::Function<DlMaxPool> {
	static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x, int64_t dims,
				  at::IntArrayRef k_, at::IntArrayRef s_, at::IntArrayRef p_,
				  at::IntArrayRef d_, bool ceil)
	{
		TORCH_CHECK(dims >= 1 && dims <= 3, "max pool dims");
		auto k = expand_arg(k_, dims, {});
		auto s = expand_arg(s_, dims, k);
		auto p = expand_arg(p_, dims, std::vector<int64_t>(dims, 0));
		auto d = expand_arg(d_, dims, std::vector<int64_t>(dims, 1));
		at::Tensor xi = x;
		if (dims == 1) {
			xi = x.unsqueeze(-2);
			k.insert(k.begin(), 1); s.insert(s.begin(), 1);
			p.insert(p.begin(), 0); d.insert(d.begin(), 1);
		}
		std::tuple<at::Tensor, at::Tensor> r = dims == 3
			? at::max_pool3d_with_indices(xi, k, s, p, d, ceil)
			: at::max_pool2d_with_indices(xi, k, s, p, d, ceil);
		at::Tensor y = std::get<0>(r);
		ctx->save_for_backward({xi, y, std::get<1>(r)});
		ctx->saved_data["dims"] = dims;
		ctx->saved_data["k"] = k; ctx->saved_data["s"] = s;
		ctx->saved_data["p"] = p; ctx->saved_data["d"] = d;
		ctx->saved_data["ceil"] = ceil;
		return dims == 1 ? y.squeeze(-2) : y;
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		auto sv = ctx->get_saved_variables();
		at::Tensor xi = sv[0], y = sv[1], idx = sv[2];
		int64_t dims = ctx->saved_data["dims"].toInt();
		auto k = ctx->saved_data["k"].toIntVector(), s = ctx->saved_data["s"].toIntVector();
		auto p = ctx->saved_data["p"].toIntVector(), d = ctx->saved_data["d"].toIntVector();
		bool ceil = ctx->saved_data["ceil"].toBool();
		at::Tensor go = dims == 1 ? g[0].unsqueeze(-2) : g[0];
		auto unpool = [&](const at::Tensor &t) {
			return dims == 3
				? at::max_pool3d_with_indices_backward(t, xi, k, s, p, d, ceil, idx)
				: at::max_pool2d_with_indices_backward(t, xi, k, s, p, d, ceil, idx);
		};
		TORCH_CHECK(y.size(0) % 2 == 0, "DeepLift needs an even batch [input; baseline]");
		auto yo = y.chunk(2, 0);
		at::Tensor xmax = at::max(yo[0], yo[1]);
		at::Tensor dout = at::cat({xmax - yo[1], yo[0] - xmax}, 0);
		at::Tensor u = unpool(go * dout), gi;
		if (!fused_ok({u, xi})) {
			auto uh = u.chunk(2, 0);
			at::Tensor u2 = uh[0] + uh[1];
			u2 = at::cat({u2, u2}, 0);
			at::Tensor din = half_delta(xi);
			gi = at::where(din.abs() < DL_EPS, unpool(go), u2 / din);
		} else {
			at::Tensor xc = xi.contiguous(), uc = u.contiguous();
			gi = at::empty_like(xc);
			bool any_zero = false;
			AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "esg_dl_maxpool_backward", [&] {
				const scalar_t *up = uc.data_ptr<scalar_t>();
				scalar_t *op = gi.data_ptr<scalar_t>();
				any_zero = over_halves<scalar_t>(
					xc,
					[&](int64_t i, int64_t j, scalar_t din) { op[i] = op[j] = (up[i] + up[j]) / din; },
					[](int64_t, int64_t) {});
			});
			if (any_zero)
				gi = at::where(zero_delta(xc), unpool(go), gi);
		}
		if (dims == 1)
			gi = gi.squeeze(-2);
		return {gi, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
			at::Tensor(), at::Tensor()};
	}
};

/* Excitation backprop.  A linear op y = f(x) (with W+ or its own positive
 * weights, no bias) is rewritten as out = eb_out(y, f+(eb_in(x))): forward
 * y; backward P_out / stab(f+(x)) into f+'s ordinary backward (W+^T),
 * then times x at eb_in -- P_in = x * W+^T (P_out / (W+ x)). */
constexpr double EB_EPS = 1e-12;

/* z + eps * sign(z) (sign 0 = +): never 0, same sign as z */
at::Tensor eb_stab(const at::Tensor &z)
{
	return z + at::where(z >= 0, at::full({}, EB_EPS, z.options()),
			     at::full({}, -EB_EPS, z.options()));
}

struct EbIn : public torch::autograd::Function<EbIn> {
	static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x)
	{
		ctx->save_for_backward({x});
		return x.clone();
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		return {g[0] * ctx->get_saved_variables()[0]};
	}
};

/* forward y; backward g / stab(zp) to zp and, when zn is given (the dual
 * unit of the contrastive rule), -g / stab(zn) to zn; nothing to y */
struct EbOut : public torch::autograd::Function<EbOut> {
	static at::Tensor forward(AutogradContext *ctx, const at::Tensor &y,
				  const at::Tensor &zp, const c10::optional<at::Tensor> &zn)
	{
		bool dual = zn.has_value() && zn->defined();
		ctx->saved_data["dual"] = dual;
		ctx->save_for_backward({zp, dual ? *zn : zp});
		return y.clone();
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		auto s = ctx->get_saved_variables();
		at::Tensor gp = g[0] / eb_stab(s[0]);
		at::Tensor gn = ctx->saved_data["dual"].toBool() ? -g[0] / eb_stab(s[1]) : at::Tensor();
		return {at::Tensor(), gp, gn};
	}
};

at::Tensor op_eb_in(const at::Tensor &x) { return EbIn::apply(x); }
at::Tensor op_eb_out(const at::Tensor &y, const at::Tensor &zp, const c10::optional<at::Tensor> &zn)
{
	return EbOut::apply(y, zp, zn);
}

at::Tensor op_guided_relu(const at::Tensor &x) { return RuleRelu::apply(x, true); }
at::Tensor op_deconv_relu(const at::Tensor &x) { return RuleRelu::apply(x, false); }
at::Tensor op_dl_rescale(const at::Tensor &x, const at::Tensor &y) { return DlRescale::apply(x, y); }
at::Tensor op_dl_maxpool(const at::Tensor &x, int64_t dims, at::IntArrayRef k,
			 at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d, bool ceil)
{
	return DlMaxPool::apply(x, dims, k, s, p, d, ceil);
}

} // namespace

TORCH_LIBRARY(esg, m)
{
	m.def("guided_relu(Tensor x) -> Tensor", op_guided_relu);
	m.def("deconv_relu(Tensor x) -> Tensor", op_deconv_relu);
	m.def("dl_rescale(Tensor x, Tensor y) -> Tensor", op_dl_rescale);
	m.def("dl_maxpool(Tensor x, int dims, int[] kernel_size, int[] stride, int[] padding, "
	      "int[] dilation, bool ceil_mode) -> Tensor", op_dl_maxpool);
	m.def("eb_in(Tensor x) -> Tensor", op_eb_in);
	m.def("eb_out(Tensor y, Tensor zp, Tensor? zn) -> Tensor", op_eb_out);
}

/* ---- the model handle ------------------------------------------------ */

struct esg_model {
	torch::jit::Module mod;
	c10::Device dev{c10::kCPU};
	/* forward's arguments after self and x, with their defaults */
	std::vector<c10::IValue> extra_args;
	std::map<std::string, std::shared_ptr<GraphFunction>> cache;
	/* mixed precision: autocast dtype of forward passes (kFloat: off) */
	at::ScalarType amp = at::kFloat;
};

namespace {

bool g_threads_set = false;

/* Float32 means float32 on a GPU too: libtorch lets cuDNN run float32
 * convolutions in TF32 (a 10-bit mantissa) by default on Ampere and later,
 * so maps would depend on the GPU generation.  Measured on an H100 with the
 * shipped U-Net against the CPU, TF32 off brought the median relative
 * difference over the significant voxels from 1.5e-4 to 1.1e-5 (saliency),
 * 9e-5 to 3e-7 (guided backprop), 2e-4 to 4e-7 (deconvolution), and the 2D
 * classifier's integrated gradients from 1.8e-4 to 3.3e-6 (max).  --amp is
 * the explicit way to trade precision for speed.  (Matrix products already
 * default to full float32.) */
void no_tf32()
{
	at::globalContext().setAllowTF32CuDNN(false);
}

/* Cores this process may run on (taskset, cgroup cpusets), not the host's. */
int all_cores()
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	unsigned n = std::thread::hardware_concurrency();
	return n ? (int)n : 1;
}

/* ---- tensors across the boundary ------------------------------------ */

int64_t check_shape(int ndim, const int64_t *shape)
{
	if (ndim < 1 || ndim > ESG_MAX_DIMS || !shape)
		fail("input must have 1 to " + std::to_string(ESG_MAX_DIMS) +
		     " dimensions (got " + std::to_string(ndim) + ")");
	int64_t n = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] <= 0)
			fail("input shape " + shape_str(at::IntArrayRef(shape, ndim)) +
			     " has an empty dimension");
		n *= shape[i];
	}
	return n;
}

at::Tensor from_f32(const float *x, int ndim, const int64_t *shape, c10::Device dev)
{
	check_shape(ndim, shape);
	if (!x)
		fail("input data is NULL");
	at::Tensor t = torch::from_blob(const_cast<float *>(x),
					at::IntArrayRef(shape, ndim), at::kFloat);
	return t.to(dev, at::kFloat, false, /*copy=*/true);
}

at::ScalarType scalar_type(esg_dtype d)
{
	switch (d) {
	case ESG_F32: return at::kFloat;
	case ESG_F64: return at::kDouble;
	case ESG_F16: return at::kHalf;
	case ESG_BF16: return at::kBFloat16;
	case ESG_I64: return at::kLong;
	case ESG_I32: return at::kInt;
	case ESG_I16: return at::kShort;
	case ESG_I8: return at::kChar;
	case ESG_U8: return at::kByte;
	case ESG_BOOL: return at::kBool;
	default: fail("unknown tensor dtype");
	}
}

at::Tensor from_esg(const esg_tensor *t, c10::Device dev, bool as_float)
{
	if (!t)
		fail("tensor is NULL");
	std::vector<int64_t> shape(t->shape, t->shape + t->ndim);
	at::Tensor a = torch::from_blob(t->data, shape, scalar_type(t->dtype));
	return as_float ? a.to(dev, at::kFloat, false, true) : a.to(dev, a.scalar_type(), false, true);
}

/* New esg_tensor (float32, C order, on the host) from a libtorch tensor. */
esg_tensor *to_esg(const char *name, const at::Tensor &src)
{
	at::Tensor t = src.detach().to(at::kCPU, at::kFloat).contiguous();
	if (t.dim() > ESG_MAX_DIMS)
		fail("tensor has " + std::to_string(t.dim()) + " dimensions (max " +
		     std::to_string(ESG_MAX_DIMS) + ")");
	esg_tensor *e = (esg_tensor *)calloc(1, sizeof *e);
	if (!e)
		throw std::bad_alloc();
	e->name = strdup(name);
	e->dtype = ESG_F32;
	e->ndim = (int)t.dim();
	for (int i = 0; i < e->ndim; i++)
		e->shape[i] = t.size(i);
	size_t nb = (size_t)t.numel() * sizeof(float);
	e->data = malloc(nb ? nb : 1);
	if (!e->name || !e->data) {
		esg_torch_tensor_free(e);
		throw std::bad_alloc();
	}
	memcpy(e->data, t.data_ptr<float>(), nb);
	return e;
}

void copy_out(float *dst, const at::Tensor &src)
{
	at::Tensor t = src.detach().to(at::kCPU, at::kFloat).contiguous();
	memcpy(dst, t.data_ptr<float>(), (size_t)t.numel() * sizeof(float));
}

at::Tensor as_tensor(const c10::IValue &v, const char *what)
{
	if (v.isTensor())
		return v.toTensor();
	fail(std::string(what) + " is a " + v.tagKind() + ", expected a tensor");
}

/* ---- running ---------------------------------------------------------- */

std::vector<c10::IValue> make_stack(esg_model *m, const at::Tensor &x)
{
	std::vector<c10::IValue> st{m->mod._ivalue(), x};
	st.insert(st.end(), m->extra_args.begin(), m->extra_args.end());
	return st;
}

c10::IValue run_fn(esg_model *m, GraphFunction &fn, std::vector<c10::IValue> st)
{
	fn.run(st);
	return st.back();
}

/* Per-class scores output[b, target[b % B]] of an output that must be
 * [rows, C]; rows = B or 2B (DeepLift, target repeated). */
at::Tensor scores(const at::Tensor &out, const int64_t *target, int64_t B, int64_t rows)
{
	if (out.dim() != 2 || out.size(0) != rows)
		fail("model output has shape " + shape_str(out.sizes()) +
		     "; gradient methods need per-class scores [B, C] (B = " +
		     std::to_string(rows) + "): wrap a segmentation model with esg-wrap first");
	if (!target)
		fail("target is NULL");
	int64_t C = out.size(1);
	std::vector<int64_t> tg(rows);
	for (int64_t b = 0; b < rows; b++) {
		int64_t t = target[b % B];
		if (t < 0 || t >= C)
			fail("target " + std::to_string(t) + " out of range: the model has " +
			     std::to_string(C) + " classes (0.." + std::to_string(C - 1) + ")");
		tg[b] = t;
	}
	at::Tensor idx = torch::tensor(tg, at::kLong).to(out.device()).unsqueeze(1);
	return out.gather(1, idx).squeeze(1);
}

/* ---- graph editing ---------------------------------------------------- */

const char *rule_name(esg_backward_rule r)
{
	switch (r) {
	case ESG_RULE_PLAIN: return "plain";
	case ESG_RULE_GUIDED: return "guided";
	case ESG_RULE_DECONV: return "deconv";
	case ESG_RULE_DEEPLIFT: return "deeplift";
	case ESG_RULE_EXCITATION: return "excitation";
	case ESG_RULE_EXCITATION_CONTRAST: return "excitation_contrast";
	}
	fail("unknown backward rule " + std::to_string((int)r));
}

/* All nodes of a block and its sub-blocks, in order (pre-order). */
void all_nodes(Block *b, std::vector<Node *> &out)
{
	for (Node *n : b->nodes()) {
		out.push_back(n);
		for (Block *sb : n->blocks())
			all_nodes(sb, out);
	}
}

/* The dotted path of a module value reached by GetAttr from self, or ""
 * with ok = false. */
std::string attr_path(Value *v, Value *self, bool &ok)
{
	std::vector<std::string> parts;
	while (v != self) {
		Node *n = v->node();
		if (n->kind() != prim::GetAttr) {
			ok = false;
			return "";
		}
		parts.push_back(n->s(attr::name));
		v = n->input(0);
	}
	std::string r;
	for (auto it = parts.rbegin(); it != parts.rend(); ++it)
		r += (r.empty() ? "" : ".") + *it;
	ok = true;
	return r;
}

GraphFunction &callee_of(Node *call)
{
	auto cls = call->input(0)->type()->expect<c10::ClassType>();
	return torch::jit::toGraphFunction(cls->getMethod(call->s(attr::name)));
}

const std::set<c10::Symbol> &inplace_kinds()
{
	static const std::set<c10::Symbol> s = {
		c10::Symbol::fromQualString("aten::relu_"),
		c10::Symbol::fromQualString("aten::sigmoid_"),
		c10::Symbol::fromQualString("aten::tanh_"),
		c10::Symbol::fromQualString("aten::elu_"),
		c10::Symbol::fromQualString("aten::leaky_relu_")};
	return s;
}

c10::Symbol out_of_place(c10::Symbol k)
{
	std::string q = k.toQualString();
	if (inplace_kinds().count(k))
		q.pop_back();
	return c10::Symbol::fromQualString(q);
}

/* Replace node (a nonlinearity whose first input is x) by value z; if it
 * was in place, later readers of x read z. */
void replace_node(Graph &g, Node *node, Value *z)
{
	Value *x = node->input(0);
	if (inplace_kinds().count(node->kind())) {
		std::vector<torch::jit::Use> uses = x->uses();
		for (auto &u : uses)
			if (u.user != node && u.user->isAfter(node))
				u.user->replaceInput(u.offset, z);
	}
	node->output()->replaceAllUsesWith(z);
	node->destroy();
}

/* ---- excitation backprop: rewrite the linear ops -------------------- */

bool is_none(Value *v) { return v->type()->kind() == c10::TypeKind::NoneType; }

/* out = eb_out(y, f+(eb_in(x)) [, f-(eb_in(x))]) after node n (y = n's
 * output, x its input xi); f+ is a copy of n with x = eb_in(x) and the
 * inputs in `repl` replaced; later readers of y read out. */
void eb_wrap(Graph &g, Node *n, size_t xi, const std::map<size_t, Value *> &repl,
	     const std::map<size_t, Value *> *dual)
{
	static const c10::Symbol eb_in = c10::Symbol::fromQualString("esg::eb_in");
	static const c10::Symbol eb_out = c10::Symbol::fromQualString("esg::eb_out");
	WithInsertPoint ip(n);
	Value *xp = g.insert(eb_in, {n->input(xi)});
	auto copy = [&](const std::map<size_t, Value *> &r) {
		Node *c = g.insertNode(g.createClone(n, [](Value *v) { return v; }));
		c->replaceInput(xi, xp);
		for (const auto &kv : r)
			c->replaceInput(kv.first, kv.second);
		return c->output();
	};
	Value *zp = copy(repl);
	Value *zn = dual ? copy(*dual) : g.insertConstant(c10::IValue());
	WithInsertPoint after(n->next());
	Value *out = g.insert(eb_out, {n->output(), zp, zn});
	n->output()->replaceAllUsesAfterNodeWith(out->node(), out);
}

/* A parameter: read by GetAttr (or a constant of a frozen model), possibly
 * transposed, as the weight of addmm(b, x, W.t()) (Linear in old exports). */
bool weight_like(Value *v)
{
	for (int depth = 0; depth < 4; depth++) {
		std::string k = v->node()->kind().toQualString();
		if (k == "prim::GetAttr" || k == "prim::Constant")
			return true;
		if (k != "aten::t" && k != "aten::transpose" && k != "aten::permute")
			return false;
		v = v->node()->input(0);
	}
	return false;
}

/* Rewrite a fully inlined graph for excitation backprop (module and
 * functional ops alike; ops inside loops / ifs too).  The contrastive
 * rule also gives the last weighted op its dual unit. */
void apply_excitation(Graph &g, bool contrast)
{
	static const std::set<std::string> weighted = {
		"aten::_convolution", "aten::convolution", "aten::conv1d", "aten::conv2d",
		"aten::conv3d", "aten::conv_transpose1d", "aten::conv_transpose2d",
		"aten::conv_transpose3d", "aten::linear"};
	static const std::set<std::string> positive = {
		"aten::avg_pool1d", "aten::avg_pool2d", "aten::avg_pool3d",
		"aten::adaptive_avg_pool1d", "aten::adaptive_avg_pool2d",
		"aten::adaptive_avg_pool3d", "aten::mean"};
	static const c10::Symbol relu = c10::Symbol::fromQualString("aten::relu");
	static const c10::Symbol neg = c10::Symbol::fromQualString("aten::neg");
	static const c10::Symbol zeros_like = c10::Symbol::fromQualString("aten::zeros_like");
	std::vector<Node *> nodes, lin;
	all_nodes(g.block(), nodes);
	for (Node *n : nodes) {
		std::string k = n->kind().toQualString();
		if ((weighted.count(k) && n->outputs().size() == 1) ||
		    (k == "aten::addmm" && n->inputs().size() == 5 && weight_like(n->input(2))))
			lin.push_back(n);
		else if (positive.count(k) && n->outputs().size() == 1 &&
			 n->output()->type()->isSubtypeOf(*c10::TensorType::get()))
			eb_wrap(g, n, 0, {}, nullptr);
		else if (k == "aten::batch_norm" && !is_none(n->input(3)) && !is_none(n->input(4))) {
			/* eval BN is x * s + t per channel, s = w / sqrt(var + eps):
			 * f+ = batch_norm(x, relu(w), None, 0, var) = s+ x */
			WithInsertPoint ip(n);
			std::map<size_t, Value *> r;
			if (!is_none(n->input(1)))
				r[1] = g.insert(relu, {n->input(1)});
			r[2] = g.insertConstant(c10::IValue());
			r[3] = g.insert(zeros_like, {n->input(3)});
			r[5] = g.insertConstant(false);
			eb_wrap(g, n, 0, r, nullptr);
		}
	}
	for (size_t i = 0; i < lin.size(); i++) {
		Node *n = lin[i];
		WithInsertPoint ip(n);
		/* (x, W, b, ...) or addmm(b, x, W^T, beta, alpha): beta = 0 drops b */
		bool mm = n->kind().toQualString() == std::string("aten::addmm");
		size_t xi = mm ? 1 : 0, wi = mm ? 2 : 1, bi = mm ? 3 : 2;
		Value *nob = mm ? g.insertConstant(0) : g.insertConstant(c10::IValue());
		std::map<size_t, Value *> rp{{wi, g.insert(relu, {n->input(wi)})}, {bi, nob}};
		if (contrast && i + 1 == lin.size()) {
			std::map<size_t, Value *> rn{
				{wi, g.insert(relu, {g.insert(neg, {n->input(wi)})})}, {bi, nob}};
			eb_wrap(g, n, xi, rp, &rn);
		} else {
			eb_wrap(g, n, xi, rp, nullptr);
		}
	}
	torch::jit::EliminateDeadCode(g.block());
}

/* Rewrite ReLUs (and, for DeepLift, the other supported nonlinearities
 * and max pools) of a fully inlined graph for the rule. */
void apply_rule(Graph &g, esg_backward_rule rule)
{
	if (rule == ESG_RULE_PLAIN)
		return;
	if (rule == ESG_RULE_EXCITATION || rule == ESG_RULE_EXCITATION_CONTRAST)
		return apply_excitation(g, rule == ESG_RULE_EXCITATION_CONTRAST);
	static const c10::Symbol relu = c10::Symbol::fromQualString("aten::relu");
	static const c10::Symbol relu_ = c10::Symbol::fromQualString("aten::relu_");
	static const std::set<std::string> dl_elementwise = {
		"aten::relu", "aten::relu_", "aten::elu", "aten::elu_",
		"aten::leaky_relu", "aten::leaky_relu_", "aten::sigmoid", "aten::sigmoid_",
		"aten::tanh", "aten::tanh_", "aten::softplus"};
	static const std::map<std::string, int64_t> pools = {
		{"aten::max_pool1d", 1}, {"aten::max_pool2d", 2}, {"aten::max_pool3d", 3}};
	std::vector<Node *> nodes;
	all_nodes(g.block(), nodes);
	for (Node *n : nodes) {
		std::string k = n->kind().toQualString();
		WithInsertPoint ip(n);
		if (rule == ESG_RULE_GUIDED || rule == ESG_RULE_DECONV) {
			if (n->kind() != relu && n->kind() != relu_)
				continue;
			const char *op = rule == ESG_RULE_GUIDED ? "esg::guided_relu" : "esg::deconv_relu";
			Value *z = g.insert(c10::Symbol::fromQualString(op), {n->input(0)});
			replace_node(g, n, z);
		} else if (dl_elementwise.count(k)) {
			std::vector<torch::jit::NamedValue> args(n->inputs().begin(), n->inputs().end());
			Value *y = g.insert(out_of_place(n->kind()), args);
			Value *z = g.insert(c10::Symbol::fromQualString("esg::dl_rescale"),
					    {n->input(0), y});
			replace_node(g, n, z);
		} else if (pools.count(k)) {
			Value *dims = g.insertConstant(pools.at(k));
			Value *z = g.insert(c10::Symbol::fromQualString("esg::dl_maxpool"),
					    {n->input(0), dims, n->input(1), n->input(2),
					     n->input(3), n->input(4), n->input(5)});
			replace_node(g, n, z);
		}
	}
	torch::jit::EliminateDeadCode(g.block());
}

std::shared_ptr<Graph> forward_graph(esg_model *m)
{
	return torch::jit::toGraphFunction(m->mod.get_method("forward").function()).graph()->copy();
}

std::vector<std::string> module_names(esg_model *m)
{
	std::vector<std::string> names;
	for (const auto &nm : m->mod.named_modules())
		if (!nm.name.empty())
			names.push_back(nm.name);
	return names;
}

size_t edit_distance(const std::string &a, const std::string &b)
{
	std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
	for (size_t j = 0; j <= b.size(); j++)
		prev[j] = j;
	for (size_t i = 1; i <= a.size(); i++) {
		cur[0] = i;
		for (size_t j = 1; j <= b.size(); j++)
			cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1,
					   prev[j - 1] + (a[i - 1] != b[j - 1])});
		std::swap(prev, cur);
	}
	return prev[b.size()];
}

[[noreturn]] void no_such_layer(esg_model *m, const std::string &name)
{
	std::vector<std::string> names = module_names(m);
	if (names.empty())
		fail("model has no submodules (frozen with torch.jit.freeze?): layers can't be "
		     "named in it; export the model without freezing");
	std::vector<std::pair<size_t, std::string>> scored;
	for (const auto &n : names) {
		size_t d = edit_distance(name, n);
		if (n.find(name) != std::string::npos || name.find(n) != std::string::npos)
			d = std::min<size_t>(d, 1);
		scored.push_back({d, n});
	}
	std::stable_sort(scored.begin(), scored.end(),
			 [](const auto &a, const auto &b) { return a.first < b.first; });
	std::string list;
	for (size_t i = 0; i < scored.size() && i < 5; i++)
		list += (i ? ", " : "") + scored[i].second;
	fail("model has no layer '" + name + "' (closest: " + list +
	     "; esg-attr --list-layers shows all)");
}

/* Find call number `call` of layer `name` in g (a copy of forward),
 * inlining the calls on the path to it. */
Node *locate(esg_model *m, Graph &g, const std::string &name, int call)
{
	if (name.empty())
		fail("empty layer name");
	Value *self = g.inputs()[0];
	for (bool again = true; again;) {
		again = false;
		std::vector<Node *> nodes;
		all_nodes(g.block(), nodes);
		for (Node *n : nodes) {
			if (n->kind() != prim::CallMethod)
				continue;
			bool ok;
			std::string p = attr_path(n->input(0), self, ok);
			if (!ok || p == name)
				continue;
			if (p.empty() || name.compare(0, p.size() + 1, p + ".") == 0) {
				torch::jit::inlineCallTo(n, &callee_of(n), false);
				again = true;
				break;
			}
		}
	}
	std::vector<Node *> nodes, hits;
	all_nodes(g.block(), nodes);
	for (Node *n : nodes) {
		bool ok;
		if (n->kind() == prim::CallMethod && attr_path(n->input(0), self, ok) == name && ok)
			hits.push_back(n);
	}
	if (hits.empty()) {
		std::vector<std::string> names = module_names(m);
		if (std::find(names.begin(), names.end(), name) == names.end())
			no_such_layer(m, name);
		fail("layer '" + name + "' is never called by the model's forward");
	}
	if (call < 0 || (size_t)call >= hits.size())
		fail("layer '" + name + "' has " + std::to_string(hits.size()) +
		     " call site(s); call index " + std::to_string(call) + " is out of range");
	Node *t = hits[call];
	if (t->owningBlock() != g.block())
		fail("layer '" + name + "' is called inside a loop or an if in the model's "
		     "forward: it can't be captured or replaced");
	if (t->outputs().size() != 1 || !t->output()->type()->isSubtypeOf(*c10::TensorType::get()))
		fail("layer '" + name + "' does not return a single tensor (returns " +
		     t->output()->type()->str() + ")");
	return t;
}

/* Insert c = clone(v) right after v's node; every other reader of v reads c
 * (in-place ops downstream then can't touch v).  Returns c. */
Value *clone_after(Graph &g, Value *v, Node *after)
{
	WithInsertPoint ip(after->next());
	Value *c = g.insert(c10::Symbol::fromQualString("aten::clone"), {v});
	v->replaceAllUsesAfterNodeWith(c->node(), c);
	return c;
}

void make_tuple_output(Graph &g, Value *extra)
{
	Value *o = g.outputs()[0];
	Node *t = g.createTuple({o, extra});
	g.appendNode(t);
	g.eraseOutput(0);
	g.registerOutput(t->output());
}

enum Edit { EDIT_RULE, EDIT_CAPTURE, EDIT_REPLACE };

std::shared_ptr<GraphFunction> edited(esg_model *m, Edit edit, const esg_layer_ref *layer,
				      esg_backward_rule rule)
{
	std::string lname = layer ? (layer->name ? layer->name : "") : "";
	int call = layer ? layer->call : 0;
	bool amp = m->amp != at::kFloat;
	std::string key = std::to_string((int)edit) + "|" + rule_name(rule) + "|" + lname + "|" +
			  std::to_string(call) + (amp ? "|amp" : "");
	auto it = m->cache.find(key);
	if (it != m->cache.end())
		return it->second;

	std::shared_ptr<Graph> g = forward_graph(m);
	if (edit != EDIT_RULE) {
		Node *t = locate(m, *g, lname, call);
		Value *out = t->output();
		if (edit == EDIT_CAPTURE) {
			clone_after(*g, out, t);
			make_tuple_output(*g, out);
		} else {
			Value *a = g->addInput("esg_replacement");
			a->setType(c10::TensorType::get());
			WithInsertPoint ip(t->next());
			Value *c = g->insert(c10::Symbol::fromQualString("aten::clone"), {a});
			out->replaceAllUsesWith(c);
			t->destroy();
		}
	}
	if (rule != ESG_RULE_PLAIN || amp) {
		torch::jit::Inline(*g);
		apply_rule(*g, rule);
	}
	esg_amp_rewrite_(m, g);
	torch::jit::EliminateDeadCode(g);
	auto fn = std::make_shared<GraphFunction>("esg_edited_forward", g, nullptr);
	m->cache[key] = fn;
	return fn;
}

/* Input batch for a rule: [x; ref] for DeepLift. */
at::Tensor rule_input(esg_model *m, esg_backward_rule rule, const float *x, const float *ref,
		      int ndim, const int64_t *shape)
{
	rule_name(rule);
	at::Tensor xi = from_f32(x, ndim, shape, m->dev);
	if (rule == ESG_RULE_DEEPLIFT) {
		if (!ref)
			fail("DeepLift needs a baseline (ref is NULL)");
		xi = at::cat({xi, from_f32(ref, ndim, shape, m->dev)}, 0);
	}
	return xi;
}

/* Rules whose backward divides small differences of activations (DeepLift's
 * delta_out / delta_in, excitation backprop's P / f+(x)): reduced precision
 * turns them into noise, so they are refused under amp rather than run. */
void check_amp_rule(esg_model *m, esg_backward_rule rule)
{
	if (m->amp == at::kFloat || rule == ESG_RULE_PLAIN || rule == ESG_RULE_GUIDED ||
	    rule == ESG_RULE_DECONV)
		return;
	fail(std::string("mixed precision (--amp) is not supported with the ") + rule_name(rule) +
	     " backward rule (its ratios of small differences are not meaningful in " +
	     (m->amp == at::kHalf ? "fp16" : "bf16") + "); run it without --amp");
}

/* The model's output as float32 (a no-op without amp): scores, sums and
 * everything downstream are computed in float32. */
at::Tensor out_f32(const c10::IValue &v)
{
	return as_tensor(v, "model output").to(at::kFloat);
}

/* ---- layer listing ---------------------------------------------------- */

struct LayerEntry {
	std::string type;
	int calls = 0;
};

void list_calls(const std::shared_ptr<Graph> &g, const std::string &prefix,
		std::vector<std::string> &order, std::map<std::string, LayerEntry> &seen,
		int depth)
{
	if (depth > 64)
		return;
	Value *self = g->inputs()[0];
	std::vector<Node *> nodes;
	all_nodes(g->block(), nodes);
	for (Node *n : nodes) {
		if (n->kind() != prim::CallMethod)
			continue;
		bool ok;
		std::string p = attr_path(n->input(0), self, ok);
		auto cls = n->input(0)->type()->cast<c10::ClassType>();
		if (!ok || !cls || !cls->is_module())
			continue;
		auto *fn = cls->findMethod(n->s(attr::name));
		if (p.empty()) {
			/* a helper method of the same module (self.head(x)) */
			if (fn)
				list_calls(torch::jit::toGraphFunction(*fn).graph(), prefix, order,
					   seen, depth + 1);
			continue;
		}
		std::string full = prefix + p;
		auto &e = seen[full];
		if (e.calls++ == 0) {
			order.push_back(full);
			e.type = cls->name() ? cls->name()->name() : "Module";
		}
		if (fn)
			list_calls(torch::jit::toGraphFunction(*fn).graph(), full + ".", order,
				   seen, depth + 1);
	}
}

} // namespace

/* ---- the C API ---------------------------------------------------------- */

/* Model calls of this process by (autograd?, batch size): what a method
 * really cost, for the benchmark to replay in plain PyTorch. */
static std::map<std::pair<bool, int64_t>, int64_t> g_calls;

void esg_torch_log_call_(bool grad, int64_t batch)
{
	g_calls[{grad, batch}]++;
}

extern "C" {

void esg_torch_tensor_free(esg_tensor *t)
{
	if (!t)
		return;
	free(t->name);
	free(t->data);
	free(t);
}

int esg_torch_set_threads(int n)
{
	try {
		at::set_num_threads(n > 0 ? n : all_cores());
		g_threads_set = true;
		return 0;
	}
	SHIM_CATCH(-1)
}

void esg_torch_calls_reset(void)
{
	g_calls.clear();
}

char *esg_torch_calls_json(void)
{
	try {
		std::ostringstream js;
		js << "[";
		bool first = true;
		for (const auto &c : g_calls) {
			js << (first ? "" : ",") << "{\"grad\":" << (c.first.first ? "true" : "false")
			   << ",\"batch\":" << c.first.second << ",\"count\":" << c.second << "}";
			first = false;
		}
		js << "]";
		return strdup(js.str().c_str());
	} catch (...) {
		esg_set_error("out of memory");
		return nullptr;
	}
}

void esg_torch_seed(uint64_t seed)
{
	try {
		torch::manual_seed(seed);
	} catch (...) {
	}
}

esg_model *esg_model_load(const char *path, const char *device)
{
	try {
		if (!path)
			fail("model path is NULL");
		FILE *f = fopen(path, "rb");
		if (!f)
			fail(std::string("cannot open model '") + path + "': " + strerror(errno));
		fclose(f);
		std::string ds = device && *device ? device : "cpu";
		c10::Device dev(c10::kCPU);
		try {
			dev = c10::Device(ds);
		} catch (const c10::Error &) {
			fail("bad device '" + ds + "' (expected cpu or cuda:N)");
		}
		if (dev.is_cuda() && !torch::cuda::is_available())
			fail("device '" + ds + "' requested, but this libtorch has no CUDA support "
			     "or no GPU is visible");
		if (dev.is_cuda() && dev.has_index() && dev.index() >= (int)torch::cuda::device_count())
			fail("device '" + ds + "': only " + std::to_string(torch::cuda::device_count()) +
			     " GPU(s) visible");
		if (dev.is_cuda())
			no_tf32();
		if (!g_threads_set)
			esg_torch_set_threads(0);
		install_block_cache();
		auto m = std::make_unique<esg_model>();
		try {
			m->mod = torch::jit::load(path, dev);
		} catch (const c10::Error &e) {
			fail(std::string("cannot load TorchScript model '") + path + "': " +
			     one_line(e.what_without_backtrace()));
		}
		m->dev = dev;
		m->mod.eval();
		for (auto p : m->mod.parameters())
			p.set_requires_grad(false);
		auto fn = m->mod.find_method("forward");
		if (!fn)
			fail(std::string("model '") + path + "' has no forward method");
		const auto &args = fn->function().getSchema().arguments();
		if (args.size() < 2)
			fail(std::string("model '") + path + "': forward takes no input");
		for (size_t i = 2; i < args.size(); i++) {
			if (!args[i].default_value())
				fail(std::string("model '") + path + "': forward needs more than one "
				     "input (argument '" + args[i].name() + "' has no default)");
			m->extra_args.push_back(*args[i].default_value());
		}
		return m.release();
	}
	SHIM_CATCH(nullptr)
}

int esg_model_on_cpu(const esg_model *m)
{
	return m && m->dev.is_cpu();
}

void esg_model_free(esg_model *m)
{
	try {
		delete m;
	} catch (...) {
	}
}

int esg_model_save(esg_model *m, const char *path)
{
	try {
		if (!m || !path)
			fail("esg_model_save: NULL argument");
		/* Saved parameters keep their usual requires_grad=True, and are
		 * saved from the CPU whatever the model's device: a file written on
		 * cuda:0 loads on a machine without a GPU (and in Python without
		 * map_location), like any other. */
		auto restore = [m] {
			if (m->dev.is_cuda())
				m->mod.to(m->dev);
			for (auto p : m->mod.parameters())
				p.set_requires_grad(false);
		};
		for (auto p : m->mod.parameters())
			p.set_requires_grad(true);
		try {
			if (m->dev.is_cuda())
				m->mod.to(c10::Device(c10::kCPU));
			m->mod.save(path);
		} catch (...) {
			restore();
			throw;
		}
		restore();
		return 0;
	}
	SHIM_CATCH(-1)
}

int esg_model_forward(esg_model *m, const float *x, int ndim, const int64_t *shape,
		      esg_tensor **out)
{
	try {
		if (!m || !out)
			fail("esg_model_forward: NULL argument");
		*out = nullptr;
		torch::NoGradGuard ng;
		at::Tensor xi = from_f32(x, ndim, shape, m->dev);
		auto st = make_stack(m, xi);
		st.erase(st.begin());
		esg_torch_log_call_(false, xi.size(0));
		c10::IValue ov;
		{
			EsgAmpGuard amp(m);
			if (m->amp == at::kFloat)
				ov = m->mod.forward(st);
			else /* the graph rewritten for autocast (esg_amp_rewrite_) */
				ov = run_fn(m, *edited(m, EDIT_RULE, nullptr, ESG_RULE_PLAIN),
					    make_stack(m, xi));
		}
		*out = to_esg("output", out_f32(ov));
		return 0;
	}
	SHIM_CATCH(-1)
}

int esg_model_grad(esg_model *m, esg_backward_rule rule, const float *x, const float *ref,
		   int ndim, const int64_t *shape, const int64_t *target, float *grad,
		   float *score)
{
	try {
		if (!m || !grad)
			fail("esg_model_grad: NULL argument");
		check_amp_rule(m, rule);
		torch::AutoGradMode gm(true);
		at::Tensor xi = rule_input(m, rule, x, ref, ndim, shape).requires_grad_(true);
		int64_t B = shape[0];
		/* the model sees a copy: in-place ops on its input must not hit the leaf */
		at::Tensor xm = xi.clone();
		esg_torch_log_call_(true, xi.size(0));
		c10::IValue ov;
		{
			EsgAmpGuard amp(m);
			if (rule == ESG_RULE_PLAIN && m->amp == at::kFloat) {
				auto st = make_stack(m, xm);
				st.erase(st.begin());
				ov = m->mod.forward(st);
			} else {
				ov = run_fn(m, *edited(m, EDIT_RULE, nullptr, rule), make_stack(m, xm));
			}
		}
		at::Tensor o = out_f32(ov);
		at::Tensor s = scores(o, target, B, xi.size(0));
		auto g = torch::autograd::grad({s.sum()}, {xi}, {}, false, false, true);
		at::Tensor gx = g[0].defined() ? g[0] : at::zeros_like(xi);
		copy_out(grad, gx.narrow(0, 0, B));
		if (score && rule == ESG_RULE_DEEPLIFT) /* the rules leave f itself unchanged */
			copy_out(score, s.narrow(0, 0, B) - s.narrow(0, B, B));
		else if (score)
			copy_out(score, s.narrow(0, 0, B));
		return 0;
	}
	SHIM_CATCH(-1)
}

int esg_model_set_amp(esg_model *m, esg_amp amp)
{
	try {
		if (!m)
			fail("esg_model_set_amp: NULL model");
		if (amp == ESG_AMP_AUTO)
			amp = m->dev.is_cuda() ? ESG_AMP_FP16 : ESG_AMP_BF16;
		switch (amp) {
		case ESG_AMP_OFF: m->amp = at::kFloat; break;
		case ESG_AMP_BF16: m->amp = at::kBFloat16; break;
		case ESG_AMP_FP16:
			if (!m->dev.is_cuda())
				fail("mixed precision in fp16 needs a CUDA device: libtorch's CPU autocast "
				     "knows bf16 only (use bf16 on the CPU)");
			m->amp = at::kHalf;
			break;
		default: fail("esg_model_set_amp: unknown mode " + std::to_string((int)amp));
		}
		return 0;
	}
	SHIM_CATCH(-1)
}

esg_amp esg_model_amp(const esg_model *m)
{
	if (!m || m->amp == at::kFloat)
		return ESG_AMP_OFF;
	return m->amp == at::kHalf ? ESG_AMP_FP16 : ESG_AMP_BF16;
}

const char *esg_amp_name(esg_amp amp)
{
	switch (amp) {
	case ESG_AMP_OFF: return "off";
	case ESG_AMP_AUTO: return "auto";
	case ESG_AMP_BF16: return "bf16";
	case ESG_AMP_FP16: return "fp16";
	}
	return "?";
}

esg_layer_info *esg_model_layers(esg_model *m, size_t *n)
{
	try {
		if (!m || !n)
			fail("esg_model_layers: NULL argument");
		*n = 0;
		std::vector<std::string> order;
		std::map<std::string, LayerEntry> seen;
		auto g = torch::jit::toGraphFunction(m->mod.get_method("forward").function()).graph();
		list_calls(g, "", order, seen, 0);
		for (const auto &nm : m->mod.named_modules()) {
			if (nm.name.empty() || seen.count(nm.name))
				continue;
			auto t = nm.value.type();
			seen[nm.name] = {t->name() ? t->name()->name() : "Module", 0};
			order.push_back(nm.name);
		}
		esg_layer_info *l = (esg_layer_info *)calloc(order.size() ? order.size() : 1,
							     sizeof *l);
		if (!l)
			throw std::bad_alloc();
		for (size_t i = 0; i < order.size(); i++) {
			l[i].name = strdup(order[i].c_str());
			l[i].type = strdup(seen[order[i]].type.c_str());
			l[i].calls = seen[order[i]].calls;
			if (!l[i].name || !l[i].type) {
				esg_layers_free(l, i + 1);
				throw std::bad_alloc();
			}
		}
		*n = order.size();
		return l;
	}
	SHIM_CATCH(nullptr)
}

void esg_layers_free(esg_layer_info *l, size_t n)
{
	if (!l)
		return;
	for (size_t i = 0; i < n; i++) {
		free(l[i].name);
		free(l[i].type);
	}
	free(l);
}

int esg_model_forward_capture(esg_model *m, esg_layer_ref layer, const float *x, int ndim,
			      const int64_t *shape, esg_tensor **act, esg_tensor **out)
{
	try {
		if (!m)
			fail("esg_model_forward_capture: NULL model");
		if (act)
			*act = nullptr;
		if (out)
			*out = nullptr;
		torch::NoGradGuard ng;
		at::Tensor xi = from_f32(x, ndim, shape, m->dev);
		auto fn = edited(m, EDIT_CAPTURE, &layer, ESG_RULE_PLAIN);
		esg_torch_log_call_(false, xi.size(0));
		c10::intrusive_ptr<c10::ivalue::Tuple> tup;
		{
			EsgAmpGuard amp(m);
			tup = run_fn(m, *fn, make_stack(m, xi)).toTuple();
		}
		at::Tensor o = out_f32(tup->elements()[0]);
		at::Tensor a = as_tensor(tup->elements()[1], "layer output");
		esg_tensor *ea = act ? to_esg("activation", a) : nullptr;
		esg_tensor *eo = nullptr;
		try {
			if (out)
				eo = to_esg("output", o);
		} catch (...) {
			esg_torch_tensor_free(ea);
			throw;
		}
		if (act)
			*act = ea;
		if (out)
			*out = eo;
		return 0;
	}
	SHIM_CATCH(-1)
}

int esg_model_layer_grad(esg_model *m, esg_layer_ref layer, esg_backward_rule rule,
			 const float *x, const float *ref, int ndim, const int64_t *shape,
			 const int64_t *target, esg_tensor **act, esg_tensor **grad_act,
			 float *score)
{
	try {
		if (!m || !act || !grad_act)
			fail("esg_model_layer_grad: NULL argument");
		*act = *grad_act = nullptr;
		check_amp_rule(m, rule);
		torch::AutoGradMode gm(true);
		at::Tensor xi = rule_input(m, rule, x, ref, ndim, shape).requires_grad_(true);
		int64_t B = shape[0];
		auto fn = edited(m, EDIT_CAPTURE, &layer, rule);
		esg_torch_log_call_(true, xi.size(0));
		c10::intrusive_ptr<c10::ivalue::Tuple> tup;
		{
			EsgAmpGuard amp(m);
			tup = run_fn(m, *fn, make_stack(m, xi.clone())).toTuple();
		}
		at::Tensor o = out_f32(tup->elements()[0]);
		at::Tensor a = as_tensor(tup->elements()[1], "layer output");
		at::Tensor s = scores(o, target, B, xi.size(0));
		if (!a.requires_grad())
			fail(std::string("layer '") + layer.name + "' output does not depend on the input");
		auto g = torch::autograd::grad({s.sum()}, {a}, {}, false, false, true);
		at::Tensor ga = g[0].defined() ? g[0] : at::zeros_like(a);
		esg_tensor *ea = to_esg("activation", a);
		esg_tensor *eg = nullptr;
		try {
			eg = to_esg("grad_activation", ga);
			if (score)
				copy_out(score, s.narrow(0, 0, B));
		} catch (...) {
			esg_torch_tensor_free(ea);
			esg_torch_tensor_free(eg);
			throw;
		}
		*act = ea;
		*grad_act = eg;
		return 0;
	}
	SHIM_CATCH(-1)
}

int esg_model_forward_replace(esg_model *m, esg_layer_ref layer, const float *x, int ndim,
			      const int64_t *shape, const esg_tensor *act,
			      const int64_t *target, float *grad_act, esg_tensor **out)
{
	try {
		if (!m || !act)
			fail("esg_model_forward_replace: NULL argument");
		if (out)
			*out = nullptr;
		if (target && !grad_act)
			fail("esg_model_forward_replace: target given without grad_act buffer");
		bool want_grad = target != nullptr;
		torch::AutoGradMode gm(want_grad);
		at::Tensor xi = from_f32(x, ndim, shape, m->dev);
		at::Tensor a = from_esg(act, m->dev, true);
		if (want_grad)
			a.requires_grad_(true);
		auto fn = edited(m, EDIT_REPLACE, &layer, ESG_RULE_PLAIN);
		auto st = make_stack(m, xi);
		st.push_back(a);
		esg_torch_log_call_(want_grad, xi.size(0));
		c10::IValue ov;
		{
			EsgAmpGuard amp(m);
			ov = run_fn(m, *fn, st);
		}
		at::Tensor o = out_f32(ov);
		if (want_grad) {
			at::Tensor s = scores(o, target, o.dim() ? o.size(0) : 1,
					      o.dim() ? o.size(0) : 1);
			auto g = torch::autograd::grad({s.sum()}, {a}, {}, false, false, true);
			copy_out(grad_act, g[0].defined() ? g[0] : at::zeros_like(a));
		}
		if (out)
			*out = to_esg("output", o);
		return 0;
	}
	SHIM_CATCH(-1)
}

esg_model *esg_model_wrap(esg_model *m, const char *source, const esg_tensor *buffers,
			  size_t n_buffers)
{
	try {
		if (!m || !source)
			fail("esg_model_wrap: NULL argument");
		auto cu = std::make_shared<torch::jit::CompilationUnit>();
		torch::jit::Module w(c10::QualifiedName("__torch__.esegeta.Wrapped"), cu, true);
		w.register_attribute("training", c10::BoolType::get(), false);
		w.register_module("model", m->mod);
		for (size_t i = 0; i < n_buffers; i++) {
			const esg_tensor *b = &buffers[i];
			if (!b->name || !*b->name)
				fail("wrapper buffer " + std::to_string(i) + " has no name");
			w.register_buffer(b->name, from_esg(b, m->dev, false));
			/* a mask gets the window origin that lets the wrapper score
			 * a patch of the volume (esg_model_set_origin) */
			if (!strcmp(b->name, "mask"))
				w.register_attribute("origin", c10::ListType::ofInts(),
						     c10::List<int64_t>(std::vector<int64_t>(
							     b->ndim > 2 ? (size_t)b->ndim - 2 : 0, 0)));
		}
		try {
			w.define(source);
		} catch (const c10::Error &e) {
			fail("wrapper source does not compile: " + one_line(e.what_without_backtrace()));
		} catch (const std::exception &e) {
			fail(std::string("wrapper source does not compile: ") + one_line(e.what()));
		}
		if (!w.find_method("forward"))
			fail("wrapper source defines no forward method");
		auto r = std::make_unique<esg_model>();
		r->mod = w;
		r->dev = m->dev;
		const auto &args = w.get_method("forward").function().getSchema().arguments();
		for (size_t i = 2; i < args.size(); i++) {
			if (!args[i].default_value())
				fail("wrapper forward takes more than one input");
			r->extra_args.push_back(*args[i].default_value());
		}
		return r.release();
	}
	SHIM_CATCH(nullptr)
}

int esg_model_set_origin(esg_model *m, const int64_t *origin, const int64_t *size, int nsp)
{
	try {
		if (!m || !origin || !size || nsp < 1)
			fail("esg_model_set_origin: bad argument");
		auto &mod = m->mod;
		bool has_origin = mod.hasattr("origin");
		std::string at = "[", sz = "[";
		for (int d = 0; d < nsp; d++) {
			at += (d ? ", " : "") + std::to_string(origin[d]);
			sz += (d ? ", " : "") + std::to_string(size[d]);
		}
		at += "]";
		sz += "]";
		c10::IValue mv = mod.hasattr("mask") ? mod.attr("mask") : c10::IValue();
		if (mv.isTensor() && mv.toTensor().dim() >= 3) {
			at::Tensor mask = mv.toTensor();
			if (mask.dim() - 2 != nsp)
				fail("the model's fixed mask " + shape_str(mask.sizes()) + " has " +
				     std::to_string(mask.dim() - 2) + " spatial axes, the patch " + sz + " " +
				     std::to_string(nsp));
			bool same = true, fits = true;
			for (int d = 0; d < nsp; d++) {
				same = same && mask.size(2 + d) == size[d];
				fits = fits && origin[d] >= 0 && origin[d] + size[d] <= mask.size(2 + d);
			}
			if (!has_origin && !same)
				fail("the model's fixed mask is " + shape_str(mask.sizes()) + " and a patch " + sz +
				     ", and the model has no 'origin' to place a patch in its mask "
				     "(wrapped by an older esg-wrap? wrap it again)");
			if (has_origin && !fits)
				fail("the model's fixed mask " + shape_str(mask.sizes()) + " does not cover the patch " +
				     sz + " at " + at + " (the mask must be the whole volume's)");
		}
		if (!has_origin)
			return 0;
		mod.setattr("origin", c10::List<int64_t>(std::vector<int64_t>(origin, origin + nsp)));
		return 1;
	}
	SHIM_CATCH(-1)
}

} /* extern "C" */

/* For the shim's other C++ files (lib/torch_internal.hpp). */
torch::jit::Module *esg_model_module_(esg_model *m)
{
	return m ? &m->mod : nullptr;
}

/* libtorch 1.13's CPU autocast kernel for the 12-argument
 * aten::_convolution (what a traced ConvTranspose becomes on the way through
 * the JIT) runs a transposed convolution as a plain one and fails ("expected
 * input ... to have 16 channels").  Under amp the inlined graph therefore
 * has its _convolution calls replaced by conv1d/2d/3d and
 * conv_transpose1d/2d/3d (libtorch's own rewrite, which autocast handles
 * correctly); one left over is refused rather than run wrong. */
void esg_amp_rewrite_(esg_model *m, std::shared_ptr<Graph> &g)
{
	if (!m || m->amp == at::kFloat)
		return;
	torch::jit::graph_rewrite_helper::replaceConvolutionWithAtenConv(g);
	std::vector<Node *> nodes;
	all_nodes(g->block(), nodes);
	static const c10::Symbol conv = c10::Symbol::fromQualString("aten::_convolution");
	for (Node *n : nodes)
		if (n->kind() == conv)
			fail("mixed precision (--amp): the model has a convolution that libtorch's "
			     "autocast can't run (aten::_convolution with non-constant arguments); "
			     "run without --amp");
}

at::ScalarType esg_model_amp_(esg_model *m)
{
	return m ? m->amp : at::kFloat;
}

c10::Device esg_model_device_(esg_model *m)
{
	return m ? m->dev : c10::Device(c10::kCPU);
}
