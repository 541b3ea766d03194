/* rules_guided.cpp - guided backprop and deconvolution: the ops
 * esg::guided_relu and esg::deconv_relu, ReLUs whose backward applies the
 * rule.  One file per family of propagation rules, each registering its own
 * ops; graph.cpp's apply_rule puts them in the graph. */
#include "shim/internal.hpp"

#include <ATen/Parallel.h>
#include <torch/library.h>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using namespace esg_shim;

namespace {

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

at::Tensor op_guided_relu(const at::Tensor &x) { return RuleRelu::apply(x, true); }
at::Tensor op_deconv_relu(const at::Tensor &x) { return RuleRelu::apply(x, false); }

} // namespace

TORCH_LIBRARY_FRAGMENT(esg, m)
{
	m.def("guided_relu(Tensor x) -> Tensor", op_guided_relu);
	m.def("deconv_relu(Tensor x) -> Tensor", op_deconv_relu);
}
