/* rules_deeplift.cpp - DeepLift (rescale): the ops esg::dl_rescale,
 * esg::dl_maxpool and esg::dl_gate, whose backward passes send DeepLift's
 * multipliers.  One file per family of propagation rules, each registering
 * its own ops; graph.cpp's apply_deeplift puts them in the graph (and
 * decides which nodes get them: Captum's hook semantics or the complete
 * rule, see there).
 *
 * DeepLift (rescale) follows Captum's DeepLift: input and baseline run as
 * one batch [x; ref], the target is scored on both halves, and
 *  - elementwise nonlinearities get the rescale multiplier
 *    delta_out / delta_in, or the ordinary gradient where
 *    |delta_in| < 1e-10 (dl_rescale: any f, given x and y = f(x));
 *  - max_pool1d/2d/3d get Captum's maxpool rule (cross maximum of the
 *    input's and the baseline's pooled outputs, gradients routed through
 *    both halves' argmax, divided by delta_in) (dl_maxpool).  The routing
 *    is Captum's max_unpool (overlapping windows overwrite each other, the
 *    later window wins, libtorch's kernel being Captum's) when `captum` is true, the max-pool
 *    backward (overlaps add up: the complete rule) otherwise.  Identical
 *    whenever windows do not overlap (kernel <= stride).
 *  - dl_gate passes the gradient only where |delta_in| < 1e-10: Captum's
 *    backward hook on a nonlinearity *replaces* its input's gradient, so
 *    what other readers of that input send back survives only where the
 *    hook falls back to the gradient.
 *  - softmax gets the plain gradient (Captum's softmax rule is not applied).
 */
#include "shim/internal.hpp"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <tuple>
#include <vector>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using namespace esg_shim;

namespace {

constexpr double DL_EPS = 1e-10;

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
				  at::IntArrayRef d_, bool ceil, bool captum)
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
		ctx->saved_data["captum"] = captum;
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
		bool captum = ctx->saved_data["captum"].toBool();
		at::Tensor go = dims == 1 ? g[0].unsqueeze(-2) : g[0];
		auto unpool = [&](const at::Tensor &t) {
			return dims == 3
				? at::max_pool3d_with_indices_backward(t, xi, k, s, p, d, ceil, idx)
				: at::max_pool2d_with_indices_backward(t, xi, k, s, p, d, ceil, idx);
		};
		/* Captum's F.max_unpool: each element of t written at its argmax,
		 * a later window overwriting an earlier one where windows overlap */
		auto scatter = [&](const at::Tensor &t) {
			if (dims == 3)
				return at::max_unpool3d(t, idx, {xi.size(-3), xi.size(-2), xi.size(-1)},
							s, p);
			return at::max_unpool2d(t, idx, {xi.size(-2), xi.size(-1)});
		};
		TORCH_CHECK(y.size(0) % 2 == 0, "DeepLift needs an even batch [input; baseline]");
		auto yo = y.chunk(2, 0);
		at::Tensor xmax = at::max(yo[0], yo[1]);
		at::Tensor dout = at::cat({xmax - yo[1], yo[0] - xmax}, 0);
		at::Tensor u = captum ? scatter(go * dout) : unpool(go * dout), gi;
		/* where delta_in vanishes: the ordinary gradient; Captum's hook takes
		 * it from the input item (grad_input[0]) for both halves */
		auto fallback = [&]() {
			at::Tensor pg = unpool(go);
			if (!captum)
				return pg;
			at::Tensor h = pg.chunk(2, 0)[0];
			return at::cat({h, h}, 0);
		};
		if (!fused_ok({u, xi})) {
			auto uh = u.chunk(2, 0);
			at::Tensor u2 = uh[0] + uh[1];
			u2 = at::cat({u2, u2}, 0);
			at::Tensor din = half_delta(xi);
			gi = at::where(din.abs() < DL_EPS, fallback(), u2 / din);
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
				gi = at::where(zero_delta(xc), fallback(), gi);
		}
		if (dims == 1)
			gi = gi.squeeze(-2);
		return {gi, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
			at::Tensor(), at::Tensor(), at::Tensor()};
	}
};

/* Identity forward; backward passes the gradient only where the halves of
 * [x; ref] agree to 1e-10 (where a Captum hook on a reader of x falls
 * back to the gradient).  Saves the mask, not x: later in-place ops on x
 * stay legal. */
struct DlGate : public torch::autograd::Function<DlGate> {
	static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x)
	{
		TORCH_CHECK(x.size(0) % 2 == 0, "DeepLift needs an even batch [input; baseline]");
		ctx->save_for_backward({zero_delta(x)});
		return x;
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		at::Tensor small = ctx->get_saved_variables()[0];
		return {at::where(small, g[0], at::zeros({}, g[0].options()))};
	}
};

at::Tensor op_dl_rescale(const at::Tensor &x, const at::Tensor &y) { return DlRescale::apply(x, y); }
at::Tensor op_dl_maxpool(const at::Tensor &x, int64_t dims, at::IntArrayRef k,
			 at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d, bool ceil, bool captum)
{
	return DlMaxPool::apply(x, dims, k, s, p, d, ceil, captum);
}
at::Tensor op_dl_gate(const at::Tensor &x) { return DlGate::apply(x); }

} // namespace

TORCH_LIBRARY_FRAGMENT(esg, m)
{
	m.def("dl_rescale(Tensor x, Tensor y) -> Tensor", op_dl_rescale);
	m.def("dl_maxpool(Tensor x, int dims, int[] kernel_size, int[] stride, int[] padding, "
	      "int[] dilation, bool ceil_mode, bool captum) -> Tensor", op_dl_maxpool);
	m.def("dl_gate(Tensor x) -> Tensor", op_dl_gate);
}
