/* layer.cpp - esg_model_layer_input_grad (esg_torch.h): the input gradient
 * of a layer objective under a backward rule (layer_guided_backprop).
 *
 * Same technique as graph.cpp, on its own copy of the forward graph:
 * inline the calls on the path to the layer, clone the layer's output (so
 * in-place ops after it can't touch it) and return it with the model's
 * output, inline the rest, and replace each aten::relu / relu_ by the
 * shim's registered esg::guided_relu / esg::deconv_relu op
 * (rules_guided.cpp).  Kept apart from graph.cpp (written when its helpers
 * were private to it); the layer lookup there gives the detailed messages
 * (lib/attr/layer/layer.c captures first). */
#include "shim/internal.hpp"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

using torch::jit::Graph;
using torch::jit::GraphFunction;
using torch::jit::Node;
using torch::jit::Value;

namespace {

struct LayerError : std::runtime_error {
	using std::runtime_error::runtime_error;
};

void nodes_of(torch::jit::Block *b, std::vector<Node *> &out)
{
	for (Node *n : b->nodes()) {
		out.push_back(n);
		for (torch::jit::Block *sb : n->blocks())
			nodes_of(sb, out);
	}
}

std::string path_of(Value *v, Value *self, bool &ok)
{
	std::vector<std::string> parts;
	for (; v != self; v = v->node()->input(0)) {
		if (v->node()->kind() != c10::prim::GetAttr) {
			ok = false;
			return "";
		}
		parts.push_back(v->node()->s(c10::attr::name));
	}
	std::string r;
	for (auto it = parts.rbegin(); it != parts.rend(); ++it)
		r += (r.empty() ? "" : ".") + *it;
	ok = true;
	return r;
}

std::shared_ptr<Graph> capture_graph(torch::jit::Module &mod, const std::string &name, int call,
				     esg_backward_rule rule)
{
	auto g = torch::jit::toGraphFunction(mod.get_method("forward").function()).graph()->copy();
	Value *self = g->inputs()[0];
	for (bool again = true; again;) {
		again = false;
		std::vector<Node *> nodes;
		nodes_of(g->block(), nodes);
		for (Node *n : nodes) {
			if (n->kind() != c10::prim::CallMethod)
				continue;
			bool ok;
			std::string p = path_of(n->input(0), self, ok);
			if (ok && p != name && (p.empty() || name.compare(0, p.size() + 1, p + ".") == 0)) {
				auto cls = n->input(0)->type()->expect<c10::ClassType>();
				torch::jit::inlineCallTo(n, &torch::jit::toGraphFunction(cls->getMethod(n->s(c10::attr::name))),
							 false);
				again = true;
				break;
			}
		}
	}
	std::vector<Node *> nodes, hits;
	nodes_of(g->block(), nodes);
	for (Node *n : nodes) {
		bool ok;
		if (n->kind() == c10::prim::CallMethod && path_of(n->input(0), self, ok) == name && ok)
			hits.push_back(n);
	}
	if (call < 0 || (size_t)call >= hits.size() || hits[call]->owningBlock() != g->block() ||
	    hits[call]->outputs().size() != 1)
		throw LayerError("layer '" + name + "' call " + std::to_string(call) + " can't be captured");
	Node *t = hits[call];
	Value *out = t->output();
	{
		torch::jit::WithInsertPoint ip(t->next());
		Value *c = g->insert(c10::Symbol::fromQualString("aten::clone"), {out});
		out->replaceAllUsesAfterNodeWith(c->node(), c);
	}
	Value *o = g->outputs()[0];
	Node *tup = g->createTuple({o, out});
	g->appendNode(tup);
	g->eraseOutput(0);
	g->registerOutput(tup->output());
	torch::jit::Inline(*g);
	if (rule == ESG_RULE_GUIDED || rule == ESG_RULE_DECONV) {
		static const c10::Symbol relu = c10::Symbol::fromQualString("aten::relu");
		static const c10::Symbol relu_ = c10::Symbol::fromQualString("aten::relu_");
		const char *op = rule == ESG_RULE_GUIDED ? "esg::guided_relu" : "esg::deconv_relu";
		nodes.clear();
		nodes_of(g->block(), nodes);
		for (Node *n : nodes) {
			if (n->kind() != relu && n->kind() != relu_)
				continue;
			torch::jit::WithInsertPoint ip(n);
			Value *x = n->input(0);
			Value *z = g->insert(c10::Symbol::fromQualString(op), {x});
			if (n->kind() == relu_) {  /* later readers of x read the result */
				std::vector<torch::jit::Use> uses = x->uses();
				for (auto &u : uses)
					if (u.user != n && u.user->isAfter(n))
						u.user->replaceInput(u.offset, z);
			}
			n->output()->replaceAllUsesWith(z);
			n->destroy();
		}
	} else if (rule != ESG_RULE_PLAIN) {
		throw LayerError("layer input gradients support the plain, guided and deconvolution rules");
	}
	torch::jit::EliminateDeadCode(g);
	return g;
}

std::map<std::tuple<void *, std::string, int, int>, std::shared_ptr<GraphFunction>> g_cache;

} // namespace

extern "C" int esg_model_layer_input_grad(esg_model *m, esg_layer_ref layer, esg_backward_rule rule,
					  const float *x, int ndim, const int64_t *shape, int channel,
					  float *grad, esg_tensor **act)
{
	try {
		if (act)
			*act = nullptr;
		torch::jit::Module *mod = esg_model_module_(m);
		if (!mod || !x || !shape || !grad || !layer.name || ndim < 1 || ndim > ESG_MAX_DIMS)
			throw LayerError("esg_model_layer_input_grad: bad argument");
		std::string name = layer.name;
		bool amp = esg_model_amp_(m) != at::kFloat;
		auto key = std::make_tuple((void *)m, name, layer.call, (int)rule + (amp ? 100 : 0));
		auto it = g_cache.find(key);
		if (it == g_cache.end()) {
			auto g = capture_graph(*mod, name, layer.call, rule);
			esg_amp_rewrite_(m, g); /* under amp: convolutions autocast can run */
			it = g_cache.emplace(key, std::make_shared<GraphFunction>(
				"esg_layer_input_grad", g, nullptr)).first;
		}
		c10::Device dev(c10::kCPU);
		for (const auto &p : mod->parameters()) {
			dev = p.device();
			break;
		}
		if (esg_model_amp_(m) != at::kFloat && rule != ESG_RULE_PLAIN && rule != ESG_RULE_GUIDED &&
		    rule != ESG_RULE_DECONV)
			throw LayerError("mixed precision (--amp) supports the plain, guided and deconvolution "
					 "backward rules only; run without --amp");
		torch::AutoGradMode gm(true);
		at::Tensor xi = torch::from_blob(const_cast<float *>(x), at::IntArrayRef(shape, ndim), at::kFloat)
					.to(dev, at::kFloat, false, true)
					.requires_grad_(true);
		std::vector<c10::IValue> st{mod->_ivalue(), xi};
		const auto &args = mod->get_method("forward").function().getSchema().arguments();
		for (size_t i = 2; i < args.size(); i++)
			if (args[i].default_value())
				st.push_back(*args[i].default_value());
		esg_shim::CallMeter meter(m, true, xi.size(0), shape[0], ndim, shape);
		{
			EsgAmpGuard amp(m);
			it->second->run(st);
		}
		auto tup = st.back().toTuple();
		/* float32 before the sum (a no-op without amp) */
		at::Tensor a = tup->elements()[1].toTensor().to(at::kFloat);
		if (!a.requires_grad())
			throw LayerError("layer '" + name + "' output does not depend on the input");
		if (channel >= 0 && (a.dim() < 2 || channel >= a.size(1)))
			throw LayerError("channel " + std::to_string(channel) + " is out of range: layer '" + name +
					 "' has " + std::to_string(a.dim() < 2 ? 0 : a.size(1)) + " channels");
		at::Tensor obj = (channel >= 0 ? a.select(1, channel) : a).abs().sum();
		auto g = torch::autograd::grad({obj}, {xi}, {}, false, false, true);
		at::Tensor gx = (g[0].defined() ? g[0] : at::zeros_like(xi)).detach().to(at::kCPU).contiguous();
		memcpy(grad, gx.data_ptr<float>(), (size_t)gx.numel() * sizeof(float));
		if (act) {
			at::Tensor t = a.detach().to(at::kCPU).contiguous();
			esg_tensor *e = (esg_tensor *)calloc(1, sizeof *e);
			size_t nb = (size_t)t.numel() * sizeof(float);
			if (!e || !(e->name = strdup("activation")) || !(e->data = malloc(nb ? nb : 1))) {
				esg_torch_tensor_free(e);
				throw std::bad_alloc();
			}
			e->dtype = ESG_F32;
			e->ndim = (int)t.dim();
			for (int i = 0; i < e->ndim; i++)
				e->shape[i] = t.size(i);
			memcpy(e->data, t.data_ptr<float>(), nb);
			*act = e;
		}
		return 0;
	} catch (const LayerError &e) {
		esg_shim::report_error("", e.what());
	} catch (const c10::Error &e) {
		std::string w = e.what_without_backtrace();
		esg_shim::report_error("libtorch: ", w.substr(0, w.find('\n')));
	} catch (const std::exception &e) {
		esg_shim::report_error("libtorch: ", e.what());
	} catch (...) {
		esg_shim::report_error("libtorch: ", "unknown exception");
	}
	return -1;
}
