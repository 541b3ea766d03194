/* graph.cpp - editing copies of a model's forward graph: layer lookup,
 * capture and replacement, the rule rewrites, the cache of edited graphs,
 * module and call listing.  TorchScript IR surgery, apart from the calls
 * that run its results (model.cpp) and from the rule ops (rules_*.cpp).
 *
 * Rule-modified backward passes (guided backprop, deconvolution, DeepLift)
 * rewrite a fully inlined copy of the forward graph: each aten::relu /
 * aten::relu_ (module, functional, in-place, traced or scripted alike) is
 * replaced by a custom op (DeepLift: the nonlinearities and max pools that
 * apply_deeplift chooses) (rules_guided.cpp, rules_deeplift.cpp) whose
 * autograd backward applies the rule; excitation backprop rewrites the
 * linear ops instead (apply_excitation, rules_excitation.cpp).  A new family
 * of rules adds its rules_*.cpp and a branch in apply_rule.  Layers are
 * reached by editing a copy of the forward graph: only the calls on the path
 * to the layer are inlined, the layer's call output becomes an extra graph
 * output (capture, gradient) or is replaced by a new graph input
 * (replacement).  Edited graphs are cached per (edit, layer, call, rule).
 *
 * Limitation: an in-place nonlinearity becomes an out-of-place op whose
 * result later readers of its input see; a *view* of that input taken
 * before the op would still see the old values (in-place ops through
 * views are rare in exported models; none in the fixtures or demo U-Net).
 */
#include "shim/internal.hpp"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::GraphFunction;
using torch::jit::Node;
using torch::jit::Value;
using torch::jit::WithInsertPoint;
namespace attr = c10::attr;
namespace prim = c10::prim;
using namespace esg_shim;

namespace esg_shim {

const char *rule_name(esg_backward_rule r)
{
	switch (r) {
	case ESG_RULE_PLAIN: return "plain";
	case ESG_RULE_GUIDED: return "guided";
	case ESG_RULE_DECONV: return "deconv";
	case ESG_RULE_DEEPLIFT: return "deeplift";
	case ESG_RULE_DEEPLIFT_COMPLETE: return "deeplift_complete";
	case ESG_RULE_EXCITATION: return "excitation";
	case ESG_RULE_EXCITATION_CONTRAST: return "excitation_contrast";
	case ESG_RULE_LRP: return "lrp";
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

} // namespace esg_shim

namespace {

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
		c10::Symbol::fromQualString("aten::leaky_relu_"),
		c10::Symbol::fromQualString("aten::silu_"),
		c10::Symbol::fromQualString("aten::mish_"),
		c10::Symbol::fromQualString("aten::hardswish_"),
		c10::Symbol::fromQualString("aten::gelu_")};
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

/* ---- DeepLift ----------------------------------------------------------- */

/* The nonlinearities Captum's DeepLift hooks (its SUPPORTED_NON_LINEAR,
 * Softmax aside), as they appear in an inlined graph, module or functional. */
const std::set<std::string> &dl_captum_elementwise()
{
	static const std::set<std::string> s = {
		"aten::relu", "aten::relu_", "aten::elu", "aten::elu_",
		"aten::leaky_relu", "aten::leaky_relu_", "aten::sigmoid", "aten::sigmoid_",
		"aten::tanh", "aten::tanh_", "aten::softplus"};
	return s;
}

/* Beyond Captum: nonlinearities of current medical models that Captum's
 * DeepLift leaves to the plain gradient; here they get the rescale rule
 * too.  They are not Captum hooks, so they never make a neighbour's rule
 * drop out (see apply_deeplift). */
const std::set<std::string> &dl_extra_elementwise()
{
	static const std::set<std::string> s = {
		"aten::prelu", "aten::gelu", "aten::gelu_", "aten::silu", "aten::silu_",
		"aten::mish", "aten::mish_", "aten::hardswish", "aten::hardswish_"};
	return s;
}

const std::map<std::string, int64_t> &dl_pools()
{
	static const std::map<std::string, int64_t> s = {
		{"aten::max_pool1d", 1}, {"aten::max_pool2d", 2}, {"aten::max_pool3d", 3}};
	return s;
}

/* A copy of n (before n), out of place if n is in place: same inputs,
 * keyword-only ones included (gelu's approximate), so no schema matching. */
Value *same_op_out_of_place(Graph &g, Node *n)
{
	Node *c = g.insertNode(g.create(out_of_place(n->kind()), n->inputs(), 1));
	c->output()->setType(n->output()->type());
	return c->output();
}

bool dl_captum_hooked(Node *n)
{
	std::string k = n->kind().toQualString();
	return dl_captum_elementwise().count(k) || dl_pools().count(k);
}

/* Rewrite a fully inlined graph for DeepLift.
 *
 * complete (captum = false): every supported nonlinearity gets the
 * rescale op, every max pool the maxpool op with overlapping windows
 * accumulated; the multipliers then satisfy the chain rule, and the map
 * sums to f(x) - f(ref).
 *
 * captum: the map Captum 0.8's DeepLift computes, whose rules are module
 * hooks.  Its backward hook on a module M registers a tensor hook on M's
 * output O that records O's gradient, and one on M's input T that replaces
 * T's whole gradient by the rule's.  When M's input is another hooked
 * module P's output (ReLU -> MaxPool, MaxPool -> ReLU), both hooks sit on
 * one tensor and P's records the gradient *before* M's replaces it, so M's
 * rule reaches nothing but P's fallback: M acts as its plain gradient.
 * Where M's input has other readers, their gradient survives only where
 * M's rule falls back to the gradient (|delta_in| < 1e-10).  So here:
 *  - a hooked node whose input comes straight from a hooked node keeps its
 *    ordinary op (an in-place one made out of place);
 *  - any other hooked node gets its rule op, max pools scattering with
 *    max_unpool as Captum does;
 *  - the other readers of such a node's input read it through dl_gate
 *    (of several hooked readers, Captum keeps the last one's rule);
 *  - the nonlinearities beyond Captum get the rescale op and count as
 *    ordinary ops. */
void apply_deeplift(Graph &g, bool captum)
{
	static const c10::Symbol rescale = c10::Symbol::fromQualString("esg::dl_rescale");
	static const c10::Symbol maxpool = c10::Symbol::fromQualString("esg::dl_maxpool");
	static const c10::Symbol gate = c10::Symbol::fromQualString("esg::dl_gate");
	std::vector<Node *> nodes;
	all_nodes(g.block(), nodes);
	/* decide everything on the graph as it is, before any rewrite */
	std::set<Node *> chained;
	std::map<Value *, Node *> winner; /* input -> its last hooked reader */
	std::vector<Value *> gated_inputs;
	for (Node *n : nodes) {
		if (!captum || !dl_captum_hooked(n))
			continue;
		if (dl_captum_hooked(n->input(0)->node())) {
			chained.insert(n);
			continue;
		}
		Value *t = n->input(0);
		if (!winner.count(t))
			gated_inputs.push_back(t);
		winner[t] = n;
	}
	/* the readers each gate serves, collected before the rewrite moves uses */
	std::vector<std::pair<Value *, std::vector<torch::jit::Use>>> gates;
	for (Value *t : gated_inputs) {
		Node *w = winner[t];
		bool inplace = inplace_kinds().count(w->kind()) > 0;
		std::vector<torch::jit::Use> others;
		for (const auto &u : t->uses()) {
			if (u.user == w || (inplace && u.user->isAfter(w)))
				continue;
			others.push_back(u);
		}
		if (!others.empty())
			gates.push_back({t, others});
	}
	/* gates first: a rewrite below may replace the value a gate reads */
	for (auto &gu : gates) {
		Value *t = gu.first;
		Node *def = t->node();
		Node *at = def->kind() == prim::Param ? def->owningBlock()->nodes().front() : def->next();
		WithInsertPoint ip(at);
		Value *z = g.insert(gate, {t});
		for (auto &u : gu.second)
			u.user->replaceInput(u.offset, z);
	}
	for (Node *n : nodes) {
		std::string k = n->kind().toQualString();
		bool hooked = dl_captum_hooked(n);
		if (!hooked && !dl_extra_elementwise().count(k))
			continue;
		WithInsertPoint ip(n);
		if (chained.count(n)) {
			/* its ordinary op; out of place, as the rule op it reads from
			 * saved its output for the backward pass */
			if (inplace_kinds().count(n->kind()))
				replace_node(g, n, same_op_out_of_place(g, n));
			continue;
		}
		if (dl_pools().count(k)) {
			Value *dims = g.insertConstant(dl_pools().at(k));
			Value *z = g.insert(maxpool, {n->input(0), dims, n->input(1), n->input(2),
						      n->input(3), n->input(4), n->input(5),
						      g.insertConstant(captum)});
			replace_node(g, n, z);
		} else {
			Value *y = same_op_out_of_place(g, n);
			replace_node(g, n, g.insert(rescale, {n->input(0), y}));
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
	if (rule == ESG_RULE_DEEPLIFT || rule == ESG_RULE_DEEPLIFT_COMPLETE)
		return apply_deeplift(g, rule == ESG_RULE_DEEPLIFT);
	static const c10::Symbol relu = c10::Symbol::fromQualString("aten::relu");
	static const c10::Symbol relu_ = c10::Symbol::fromQualString("aten::relu_");
	std::vector<Node *> nodes;
	all_nodes(g.block(), nodes);
	for (Node *n : nodes) {
		if (n->kind() != relu && n->kind() != relu_)
			continue;
		WithInsertPoint ip(n);
		const char *op = rule == ESG_RULE_GUIDED ? "esg::guided_relu" : "esg::deconv_relu";
		Value *z = g.insert(c10::Symbol::fromQualString(op), {n->input(0)});
		replace_node(g, n, z);
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

} // namespace

namespace esg_shim {

std::shared_ptr<GraphFunction> edited(esg_model *m, Edit edit, const esg_layer_ref *layer,
				      esg_backward_rule rule)
{
	std::string lname = layer ? (layer->name ? layer->name : "") : "";
	int call = layer ? layer->call : 0;
	bool amp = m->amp != at::kFloat;
	std::string key = std::to_string((int)edit) + "|" + rule_name(rule) + "|" + lname + "|" +
			  std::to_string(call) + (amp ? "|amp" : "") +
			  (rule == ESG_RULE_LRP ? "|" + m->lrp : "");
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
		} else if (edit == EDIT_CUT) {
			clone_after(*g, out, t);
			g->eraseOutput(0);
			g->registerOutput(out);
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
		if (rule == ESG_RULE_LRP)
			apply_lrp(*g, m->lrp);
		else
			apply_rule(*g, rule);
	}
	esg_amp_rewrite_(m, g);
	torch::jit::EliminateDeadCode(g);
	auto fn = std::make_shared<GraphFunction>("esg_edited_forward", g, nullptr);
	m->cache[key] = fn;
	return fn;
}

} // namespace esg_shim

namespace {

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

extern "C" {

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

} /* extern "C" */
