/* autocast.cpp - mixed precision (esg_model_set_amp, --amp): the setting,
 * the graph rewrite autocast needs, the rules refused under amp.  Apart
 * because it is opt-in and tied to libtorch versions (EsgAmpGuard, the scope
 * of one pass under autocast, is in internal.hpp). */
#include "shim/internal.hpp"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/graph_rewrite_helper.h>

#include <memory>
#include <string>
#include <vector>

using torch::jit::Graph;
using torch::jit::Node;
using namespace esg_shim;

namespace esg_shim {

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

} // namespace esg_shim

extern "C" {

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

} /* extern "C" */

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
