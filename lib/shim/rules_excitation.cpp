/* rules_excitation.cpp - excitation backprop: the ops esg::eb_in and
 * esg::eb_out around each rewritten linear op.  One file per family of
 * propagation rules, each registering its own ops; graph.cpp's
 * apply_excitation puts them in the graph.
 *
 * Excitation backprop (ESG_RULE_EXCITATION*, apply_excitation in graph.cpp)
 * rewrites the linear ops instead of the ReLUs: each conv / conv-transpose /
 * linear, average pool, mean and eval batch norm y = f(x) becomes
 * eb_out(y, f+(eb_in(x))) with f+ the op on W+ (no bias), whose backward is
 * the marginal-winning-probability rule x * f+^T (P / f+(x)); the last
 * weighted op also gets its dual unit f- (weights -W) for the contrastive
 * rule.  Everything else keeps its ordinary gradient.
 */
#include "shim/internal.hpp"

#include <torch/library.h>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

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

} // namespace

TORCH_LIBRARY_FRAGMENT(esg, m)
{
	m.def("eb_in(Tensor x) -> Tensor", op_eb_in);
	m.def("eb_out(Tensor y, Tensor zp, Tensor? zn) -> Tensor", op_eb_out);
}
