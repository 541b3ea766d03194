/* rules_lrp.cpp - layer-wise relevance propagation (ESG_RULE_LRP): the ops
 * esg::lrp_in, esg::lrp_out and esg::lrp_pass, and the rewrite of a fully
 * inlined forward graph that puts them around each op (apply_lrp), from a
 * table of rules per layer type (esg_model_set_lrp).  One file per family of
 * propagation rules; graph.cpp's apply_rule calls apply_lrp.
 *
 * The backward pass carries relevance itself (as Captum's and Zennit's
 * hooks do): the "gradient" arriving at a tensor is its relevance, for a
 * start signal of 1 at the target score.  A linear op y = f(x; W, b) whose
 * rule is a sum of terms z_k = f(m_k(x); W_k, b_k) grouped into one or two
 * denominators Z_g = sum_k s_k z_k (Zennit's BasicHook: input modifier m_k,
 * parameter modifier (W_k, b_k), gradient mapper, reducer) becomes
 *
 *     z_k = f(lrp_in(x, m_k); W_k, b_k),   out = lrp_out(y, Z_1, Z_2)
 *
 * lrp_out's forward is y (the model's own output: the forward pass is never
 * changed); its backward sends c_g R / stab(Z_g) to Z_g (times [y > 0] /
 * [y < 0] for the generalised gamma rule); f's ordinary backward applies
 * W_k^T; lrp_in's backward multiplies by m_k(x) (x, x+, x-, 1, a bound),
 * and autograd sums the terms into x: R_x = sum_k m_k(x) W_k^T (c R / Z).
 * The epsilon rule needs no term of its own: lrp_in goes before the op
 * itself and lrp_out after it (no extra forward work).  stab(z) = z +
 * eps sign(z), sign(0) = +1 (Captum's and Zennit's stabiliser).
 *
 * Layer types come from the op (aten::_convolution's transposed flag and
 * stride length, the pool's kind), so functional calls count as their
 * module.  Nonlinearities (ReLU family, tanh, sigmoid, GELU, SiLU, softplus,
 * dropout) and instance / group / layer norm pass relevance unchanged
 * (lrp_pass); eval batch norm, pools, sums and means, elementwise products
 * (masks), two-tensor additions (residuals) and linear upsampling take the
 * epsilon rule unless the table says otherwise; reshapes, cat, slicing,
 * nearest upsampling and winner-take-all max pools route relevance with
 * their ordinary gradient.  The batch-norm canonizer (canonize=merge_bn)
 * treats a conv / linear op whose only reader is an eval batch norm as one
 * op with the merged parameters W' = s W, b' = s b + t.
 */
#include "shim/internal.hpp"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;
using torch::jit::WithInsertPoint;
using namespace esg_shim;

namespace {

/* ---- the ops ----------------------------------------------------------- */

enum InMode { IN_X = 0, IN_POS, IN_NEG, IN_ONES, IN_LOW, IN_HIGH };

/* The input modifier m(x): x, x+, x-, ones, or a bound (value, or the
 * item's own minimum / maximum when value is NaN). */
at::Tensor in_mod(const at::Tensor &x, int64_t mode, double v)
{
	switch (mode) {
	case IN_X: return x;
	case IN_POS: return x.clamp_min(0);
	case IN_NEG: return x.clamp_max(0);
	case IN_ONES: return at::ones_like(x);
	default:
		if (!std::isnan(v))
			return at::full_like(x, v);
		{
			at::Tensor f = x.detach().flatten(1);
			at::Tensor b = mode == IN_LOW ? std::get<0>(f.min(1)) : std::get<0>(f.max(1));
			std::vector<int64_t> sh(x.dim(), 1);
			sh[0] = x.size(0);
			return b.view(sh).expand_as(x).contiguous();
		}
	}
}

/* forward m(x); backward g * m(x) */
struct LrpIn : public torch::autograd::Function<LrpIn> {
	static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x, int64_t mode, double v)
	{
		at::Tensor m = in_mod(x, mode, v);
		ctx->saved_data["mode"] = mode;
		ctx->saved_data["v"] = v;
		ctx->save_for_backward({x});
		return m; /* IN_X: x itself, which autograd returns as a view (no copy) */
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		at::Tensor x = ctx->get_saved_variables()[0];
		int64_t mode = ctx->saved_data["mode"].toInt();
		at::Tensor gi = mode == IN_ONES ? g[0] : g[0] * in_mod(x, mode, ctx->saved_data["v"].toDouble());
		return {gi, at::Tensor(), at::Tensor()};
	}
};

at::Tensor stab(const at::Tensor &z, double eps)
{
	return z + at::where(z >= 0, at::full({}, eps, z.options()), at::full({}, -eps, z.options()));
}

/* forward y; backward c1 g / stab(Z1) to Z1 and c2 g / stab(Z2) to Z2 (when
 * given); mask: group 1 only where y > 0, group 2 only where y < 0 */
struct LrpOut : public torch::autograd::Function<LrpOut> {
	static at::Tensor forward(AutogradContext *ctx, const at::Tensor &y, const at::Tensor &z1,
				  const c10::optional<at::Tensor> &z2, double c1, double c2, double eps,
				  bool mask)
	{
		bool two = z2.has_value() && z2->defined();
		ctx->saved_data["two"] = two;
		ctx->saved_data["c1"] = c1;
		ctx->saved_data["c2"] = c2;
		ctx->saved_data["eps"] = eps;
		ctx->saved_data["mask"] = mask;
		ctx->save_for_backward({z1, two ? *z2 : z1, mask ? y : z1});
		return y; /* a view of y (no copy); put_out guards in-place readers */
	}
	static variable_list backward(AutogradContext *ctx, variable_list g)
	{
		auto s = ctx->get_saved_variables();
		double c1 = ctx->saved_data["c1"].toDouble(), c2 = ctx->saved_data["c2"].toDouble();
		double eps = ctx->saved_data["eps"].toDouble();
		bool two = ctx->saved_data["two"].toBool(), mask = ctx->saved_data["mask"].toBool();
		at::Tensor g1, g2;
		if (!two && !mask && c1 == 1 && fused_ok({g[0], s[0]})) {
			/* the epsilon rule: one loop, no temporaries */
			at::Tensor gc = g[0].contiguous(), zc = s[0].contiguous();
			g1 = at::empty_like(gc);
			AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "esg_lrp_out_backward", [&] {
				const scalar_t *gp = gc.data_ptr<scalar_t>(), *zp = zc.data_ptr<scalar_t>();
				scalar_t *op = g1.data_ptr<scalar_t>();
				const scalar_t e = (scalar_t)eps;
				at::parallel_for(0, gc.numel(), FUSED_GRAIN, [&](int64_t b, int64_t en) {
					for (int64_t i = b; i < en; i++)
						op[i] = gp[i] / (zp[i] >= 0 ? zp[i] + e : zp[i] - e);
				});
			});
		} else {
			g1 = c1 * g[0] / stab(s[0], eps);
			if (mask)
				g1 = g1 * (s[2] > 0);
			if (two) {
				g2 = c2 * g[0] / stab(s[1], eps);
				if (mask)
					g2 = g2 * (s[2] < 0);
			}
		}
		return {at::Tensor(), g1, g2, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
	}
};

/* forward y; backward g to x (relevance passes unchanged) */
struct LrpPass : public torch::autograd::Function<LrpPass> {
	static at::Tensor forward(AutogradContext *, const at::Tensor &x, const at::Tensor &y)
	{
		(void)x;
		return y; /* a view of y (no copy); wrap_pass guards in-place readers */
	}
	static variable_list backward(AutogradContext *, variable_list g)
	{
		return {g[0], at::Tensor()};
	}
};

at::Tensor op_lrp_in(const at::Tensor &x, int64_t mode, double v) { return LrpIn::apply(x, mode, v); }
at::Tensor op_lrp_out(const at::Tensor &y, const at::Tensor &z1, const c10::optional<at::Tensor> &z2,
		      double c1, double c2, double eps, bool mask)
{
	return LrpOut::apply(y, z1, z2, c1, c2, eps, mask);
}
at::Tensor op_lrp_pass(const at::Tensor &x, const at::Tensor &y) { return LrpPass::apply(x, y); }

/* ---- the table of rules ------------------------------------------------ */

struct Rule {
	std::string name;      /* epsilon gamma alpha_beta zplus flat wsquare zbox pass gradient */
	double p1 = 0, p2 = 0;
};

struct Table {
	std::map<std::string, Rule> by_type;
	bool merge_bn = false;
};

double num(const std::string &s, const std::string &entry)
{
	if (s == "auto")
		return std::numeric_limits<double>::quiet_NaN();
	try {
		size_t k;
		double v = std::stod(s, &k);
		if (k == s.size())
			return v;
	} catch (...) {
	}
	fail("LRP rule table: bad number '" + s + "' in '" + entry + "'");
}

/* "TYPE=RULE[:P1[:P2]];...;canonize=none|merge_bn" (lib/attr/lrp.c writes it) */
Table parse_table(const std::string &spec)
{
	static const std::set<std::string> rules = {"epsilon", "gamma", "alpha_beta", "zplus", "flat",
						    "wsquare", "zbox", "pass", "gradient"};
	Table t;
	std::stringstream ss(spec);
	std::string e;
	while (std::getline(ss, e, ';')) {
		if (e.empty())
			continue;
		size_t eq = e.find('=');
		if (eq == std::string::npos)
			fail("LRP rule table: '" + e + "' is not TYPE=RULE");
		std::string type = e.substr(0, eq), v = e.substr(eq + 1);
		if (type == "canonize") {
			t.merge_bn = v == "merge_bn";
			continue;
		}
		std::vector<std::string> parts;
		std::stringstream vs(v);
		std::string p;
		while (std::getline(vs, p, ':'))
			parts.push_back(p);
		if (parts.empty() || !rules.count(parts[0]))
			fail("LRP rule table: unknown rule in '" + e + "'");
		Rule r;
		r.name = parts[0];
		if (parts.size() > 1)
			r.p1 = num(parts[1], e);
		if (parts.size() > 2)
			r.p2 = num(parts[2], e);
		t.by_type[type] = r;
	}
	return t;
}

/* ---- graph helpers ------------------------------------------------------ */

c10::Symbol sym(const char *q) { return c10::Symbol::fromQualString(q); }
std::string kind_of(Node *n) { return n->kind().toQualString(); }
bool is_none(Value *v) { return v->type()->kind() == c10::TypeKind::NoneType; }
bool is_tensor(Value *v) { return v->type()->isSubtypeOf(*c10::TensorType::get()); }

/* A parameter: read by GetAttr (or a constant of a frozen model), possibly
 * transposed. */
bool weight_like(Value *v)
{
	for (int depth = 0; depth < 4; depth++) {
		std::string k = kind_of(v->node());
		if (k == "prim::GetAttr" || k == "prim::Constant")
			return true;
		if (k != "aten::t" && k != "aten::transpose" && k != "aten::permute")
			return false;
		v = v->node()->input(0);
	}
	return false;
}

/* An in-place op (name ending in '_') as its out-of-place twin, inserted
 * before it; later readers of its first input read the new value. */
Node *out_of_place(Graph &g, Node *n)
{
	std::string k = kind_of(n);
	if (k.empty() || k.back() != '_')
		return n;
	/* the same inputs under the out-of-place name (a raw node: keyword-only
	 * arguments such as add's alpha stay where they are) */
	Node *o = g.create(sym(k.substr(0, k.size() - 1).c_str()), n->inputs(), 1);
	o->insertBefore(n);
	o->output()->setType(n->output()->type());
	if (!o->maybeSchema())
		fail("LRP: no out-of-place form of " + k);
	Value *y = o->output();
	Value *x = n->input(0);
	std::vector<torch::jit::Use> uses = x->uses();
	for (auto &u : uses)
		if (u.user != n && u.user->isAfter(n))
			u.user->replaceInput(u.offset, y);
	n->output()->replaceAllUsesWith(y);
	n->destroy();
	return y->node();
}

/* The rule ops return their input as a view (autograd's rule for a custom
 * Function returning an input): an in-place op may not modify such a view,
 * so in-place readers of v (kind ending in '_', v as their first input) read
 * a copy instead. */
void guard_inplace(Graph &g, Value *v)
{
	std::vector<torch::jit::Use> uses = v->uses();
	Value *c = nullptr;
	for (auto &u : uses) {
		std::string k = u.user->kind().toQualString();
		if (u.offset != 0 || k.empty() || k.back() != '_' || k.rfind("aten::", 0) != 0)
			continue;
		if (!c) {
			WithInsertPoint ip(v->node()->next());
			c = g.insert(sym("aten::clone"), {v});
		}
		/* the copy stands for v from here on: later readers see the in-place result */
		v->replaceAllUsesAfterNodeWith(c->node(), c);
		return;
	}
}

/* y (output `oi` of `last`): later readers read lrp_out(y, z1, z2, ...),
 * inserted before `before` (after last and after z1, z2) */
void put_out(Graph &g, Node *last, Node *before, size_t oi, Value *z1, Value *z2, double c1, double c2,
	     double eps, bool mask)
{
	Value *y = last->output(oi);
	WithInsertPoint ip(before);
	Value *out = g.insert(sym("esg::lrp_out"),
			      {y, z1, z2 ? z2 : g.insertConstant(c10::IValue()), c1, c2, eps, mask});
	y->replaceAllUsesAfterNodeWith(out->node(), out);
}

/* The epsilon rule on first..last (one op, or a conv and its merged batch
 * norm): lrp_in before `first` at each input index of `xi`, lrp_out after
 * `last`. */
void wrap_epsilon(Graph &g, Node *first, Node *last, const std::vector<size_t> &xi, double eps)
{
	for (size_t i : xi) {
		WithInsertPoint ip(first);
		Value *xin = g.insert(sym("esg::lrp_in"), {first->input(i), (int64_t)IN_X, 0.0});
		first->replaceInput(i, xin);
	}
	put_out(g, last, last->next(), 0, last->output(0), nullptr, 1, 0, eps, false);
}

/* nonlinearity -> lrp_pass(x, op(x)) */
void wrap_pass(Graph &g, Node *n)
{
	n = out_of_place(g, n);
	Value *x = n->input(0), *y = n->output(0);
	WithInsertPoint ip(n->next());
	Value *z = g.insert(sym("esg::lrp_pass"), {x, y});
	y->replaceAllUsesAfterNodeWith(z->node(), z);
}

/* ---- weighted ops ------------------------------------------------------- */

/* Where a weighted op keeps its input, weight and bias, and what it is. */
struct Weighted {
	size_t xi, wi, bi;
	bool addmm = false;       /* addmm(b, x, W^T, beta, alpha): no bias = beta 0 */
	bool transposed = false;
	int64_t dims = 0;         /* spatial axes (0: linear) */
	std::string type;
};

int64_t list_len(Value *v)
{
	Node *n = v->node();
	if (n->kind() == c10::prim::ListConstruct)
		return (int64_t)n->inputs().size();
	if (n->kind() == c10::prim::Constant) {
		c10::IValue iv = torch::jit::toIValue(v).value();
		if (iv.isIntList())
			return (int64_t)iv.toIntList().size();
	}
	return -1;
}

bool const_bool(Value *v, bool &out)
{
	auto iv = torch::jit::toIValue(v);
	if (!iv || !iv->isBool())
		return false;
	out = iv->toBool();
	return true;
}

bool weighted(Node *n, Weighted &w)
{
	std::string k = kind_of(n);
	if (n->outputs().size() != 1)
		return false;
	w = Weighted();
	if (k == "aten::linear") {
		w.xi = 0, w.wi = 1, w.bi = 2, w.type = "Linear";
		return true;
	}
	if (k == "aten::addmm" && n->inputs().size() == 5 && weight_like(n->input(2))) {
		w.xi = 1, w.wi = 2, w.bi = 0, w.addmm = true, w.type = "Linear";
		return true;
	}
	static const std::map<std::string, std::pair<int64_t, bool>> conv = {
		{"aten::conv1d", {1, false}}, {"aten::conv2d", {2, false}}, {"aten::conv3d", {3, false}},
		{"aten::conv_transpose1d", {1, true}}, {"aten::conv_transpose2d", {2, true}},
		{"aten::conv_transpose3d", {3, true}}};
	w.xi = 0, w.wi = 1, w.bi = 2;
	if (conv.count(k)) {
		w.dims = conv.at(k).first;
		w.transposed = conv.at(k).second;
	} else if (k == "aten::_convolution" || k == "aten::convolution") {
		w.dims = list_len(n->input(3));
		if (w.dims < 1 || w.dims > 3 || !const_bool(n->input(6), w.transposed))
			fail("LRP: a convolution whose stride or transposed flag is not a constant");
	} else {
		return false;
	}
	w.type = std::string(w.transposed ? "ConvTranspose" : "Conv") + std::to_string(w.dims) + "d";
	return true;
}

enum PMod { P_ORIG, P_NONE, P_POS, P_NEG, P_GAMMA_POS, P_GAMMA_NEG, P_SQUARE, P_ONES };

/* A modified parameter (None stays None; P_NONE gives None). */
Value *pmod(Graph &g, Value *p, PMod m, double gamma)
{
	if (m == P_NONE || !p || is_none(p))
		return nullptr;
	Value *pos = nullptr;
	auto relu = [&](Value *v) { return g.insert(sym("aten::relu"), {v}); };
	switch (m) {
	case P_ORIG: return p;
	case P_POS: return relu(p);
	case P_NEG: return g.insert(sym("aten::sub"), {p, relu(p)});
	case P_GAMMA_POS:
		pos = relu(p);
		return g.insert(sym("aten::add"), {p, g.insert(sym("aten::mul"), {pos, gamma})});
	case P_GAMMA_NEG:
		pos = g.insert(sym("aten::sub"), {p, relu(p)});
		return g.insert(sym("aten::add"), {p, g.insert(sym("aten::mul"), {pos, gamma})});
	case P_SQUARE: return g.insert(sym("aten::mul"), {p, p});
	case P_ONES: return g.insert(sym("aten::ones_like"), {p});
	default: return p;
	}
}

struct Term {
	InMode in;
	PMod w, b;
	int group;     /* 1 or 2 */
	double sign;   /* +1 or -1 in its group's denominator */
};

/* The weighted op n (y its output, or that of the merged batch norm `bn`)
 * with the rule's terms; W, b: the effective parameters (merged or n's). */
void wrap_terms(Graph &g, Node *n, Node *last, Node *after, const Weighted &w, Value *W, Value *B,
		const std::vector<Term> &terms, double c1, double c2, double eps, bool mask,
		double bound_lo, double bound_hi, double gamma)
{
	WithInsertPoint ip(after);
	Value *Z[3] = {nullptr, nullptr, nullptr};
	for (const Term &t : terms) {
		double v = t.in == IN_LOW ? bound_lo : t.in == IN_HIGH ? bound_hi : 0.0;
		Value *xin = g.insert(sym("esg::lrp_in"), {n->input(w.xi), (int64_t)t.in, v});
		Value *wk = pmod(g, W, t.w, gamma);
		Value *bk = pmod(g, B, t.b, gamma);
		/* constants before the clone that reads them */
		Value *nobias = w.addmm ? g.insertConstant(0) : g.insertConstant(c10::IValue());
		Node *c = g.insertNode(g.createClone(n, [](Value *v) { return v; }));
		c->replaceInput(w.xi, xin);
		c->replaceInput(w.wi, wk);
		if (w.addmm) {
			if (!bk)
				c->replaceInput(3, nobias);
			else
				c->replaceInput(w.bi, bk);
		} else {
			c->replaceInput(w.bi, bk ? bk : nobias);
		}
		Value *z = c->output();
		Value *&acc = Z[t.group];
		if (!acc)
			acc = t.sign > 0 ? z : g.insert(sym("aten::neg"), {z});
		else
			acc = g.insert(sym(t.sign > 0 ? "aten::add" : "aten::sub"), {acc, z});
	}
	put_out(g, last, after, 0, Z[1], Z[2], c1, c2, eps, mask);
}

/* Zennit's stabiliser for the rules other than epsilon. */
constexpr double RULE_STAB = 1e-6;

void apply_weighted(Graph &g, Node *n, Node *bn, const Weighted &w, const Rule &r)
{
	Node *last = bn ? bn : n;
	if (r.name == "epsilon") {
		wrap_epsilon(g, n, last, {w.xi}, r.p1);
		return;
	}
	if (r.name == "gradient" || r.name == "pass")
		fail("LRP: rule " + r.name + " does not apply to " + w.type);
	Value *W = n->input(w.wi), *B = n->input(w.bi);
	if (w.addmm)
		B = n->input(0);
	/* everything goes after `last`, before what followed it */
	Node *after = last->next();
	if (bn) {
		/* merged: s = bw / sqrt(var + eps), t = bb - mean s; W' = W s, b' = b s + t */
		WithInsertPoint ip(after);
		Value *bw = bn->input(1), *bb = bn->input(2), *mean = bn->input(3), *var = bn->input(4);
		Value *den = g.insert(sym("aten::sqrt"), {g.insert(sym("aten::add"), {var, bn->input(7)})});
		Value *s = is_none(bw) ? g.insert(sym("aten::reciprocal"), {den})
				       : g.insert(sym("aten::div"), {bw, den});
		Value *t = g.insert(sym("aten::neg"), {g.insert(sym("aten::mul"), {mean, s})});
		if (!is_none(bb))
			t = g.insert(sym("aten::add"), {t, bb});
		std::vector<int64_t> shape(w.dims + 2, 1);
		if (w.dims == 0)
			shape.resize(2);
		shape[w.transposed ? 1 : 0] = -1;
		W = g.insert(sym("aten::mul"), {W, g.insert(sym("aten::reshape"), {s, g.insertConstant(shape)})});
		B = is_none(B) ? t : g.insert(sym("aten::add"), {g.insert(sym("aten::mul"), {B, s}), t});
	}
	double lo = r.p1, hi = r.p2, gamma = r.p1;
	std::vector<Term> T;
	if (r.name == "gamma") {
		T = {{IN_POS, P_GAMMA_POS, P_GAMMA_POS, 1, 1}, {IN_NEG, P_GAMMA_NEG, P_NONE, 1, 1},
		     {IN_POS, P_GAMMA_NEG, P_GAMMA_NEG, 2, 1}, {IN_NEG, P_GAMMA_POS, P_NONE, 2, 1}};
		wrap_terms(g, n, last, after, w, W, B, T, 1, 1, RULE_STAB, true, 0, 0, gamma);
	} else if (r.name == "alpha_beta") {
		T = {{IN_POS, P_POS, P_POS, 1, 1}, {IN_NEG, P_NEG, P_NONE, 1, 1},
		     {IN_POS, P_NEG, P_NEG, 2, 1}, {IN_NEG, P_POS, P_NONE, 2, 1}};
		wrap_terms(g, n, last, after, w, W, B, T, r.p1, -r.p2, RULE_STAB, false, 0, 0, 0);
	} else if (r.name == "zplus") {
		T = {{IN_POS, P_POS, P_POS, 1, 1}, {IN_NEG, P_NEG, P_NONE, 1, 1}};
		wrap_terms(g, n, last, after, w, W, B, T, 1, 0, RULE_STAB, false, 0, 0, 0);
	} else if (r.name == "flat") {
		T = {{IN_ONES, P_ONES, P_NONE, 1, 1}};
		wrap_terms(g, n, last, after, w, W, B, T, 1, 0, RULE_STAB, false, 0, 0, 0);
	} else if (r.name == "wsquare") {
		T = {{IN_ONES, P_SQUARE, P_SQUARE, 1, 1}};
		wrap_terms(g, n, last, after, w, W, B, T, 1, 0, RULE_STAB, false, 0, 0, 0);
	} else if (r.name == "zbox") {
		T = {{IN_X, P_ORIG, P_ORIG, 1, 1}, {IN_LOW, P_POS, P_POS, 1, -1}, {IN_HIGH, P_NEG, P_NEG, 1, -1}};
		wrap_terms(g, n, last, after, w, W, B, T, 1, 0, RULE_STAB, false, lo, hi, 0);
	} else {
		fail("LRP: unknown rule " + r.name);
	}
}

/* ---- the rewrite --------------------------------------------------------- */

bool eval_bn(Node *n)
{
	return kind_of(n) == "aten::batch_norm" && !is_none(n->input(3)) && !is_none(n->input(4));
}

const Rule &rule_for(const Table &t, const std::string &type)
{
	auto it = t.by_type.find(type);
	if (it == t.by_type.end())
		fail("LRP rule table has no rule for layer type " + type);
	return it->second;
}

/* Apply a rule that is epsilon / gradient / pass to a non-weighted op. */
void apply_simple(Graph &g, Node *n, const Rule &r, const std::vector<size_t> &xi)
{
	if (r.name == "gradient")
		return;
	if (r.name == "pass") {
		wrap_pass(g, n);
		return;
	}
	if (r.name != "epsilon")
		fail("LRP: rule " + r.name + " does not apply to " + kind_of(n));
	wrap_epsilon(g, n, n, xi, r.p1);
}

} // namespace

namespace esg_shim {

void apply_lrp(Graph &g, const std::string &spec)
{
	Table t = parse_table(spec);
	static const std::set<std::string> pass = {
		"aten::relu", "aten::relu_", "aten::leaky_relu", "aten::leaky_relu_", "aten::elu",
		"aten::elu_", "aten::gelu", "aten::silu", "aten::silu_", "aten::sigmoid", "aten::sigmoid_",
		"aten::tanh", "aten::tanh_", "aten::softplus", "aten::hardtanh", "aten::hardtanh_",
		"aten::relu6", "aten::hardswish", "aten::hardswish_", "aten::mish", "aten::prelu",
		"aten::selu", "aten::selu_", "aten::celu", "aten::celu_", "aten::dropout",
		"aten::instance_norm", "aten::group_norm", "aten::layer_norm"};
	static const std::map<std::string, std::string> pools = {
		{"aten::avg_pool1d", "AvgPool1d"}, {"aten::avg_pool2d", "AvgPool2d"},
		{"aten::avg_pool3d", "AvgPool3d"}, {"aten::adaptive_avg_pool1d", "AdaptiveAvgPool1d"},
		{"aten::adaptive_avg_pool2d", "AdaptiveAvgPool2d"},
		{"aten::adaptive_avg_pool3d", "AdaptiveAvgPool3d"}, {"aten::max_pool1d", "MaxPool1d"},
		{"aten::max_pool2d", "MaxPool2d"}, {"aten::max_pool3d", "MaxPool3d"},
		{"aten::adaptive_max_pool1d", "AdaptiveMaxPool1d"},
		{"aten::adaptive_max_pool2d", "AdaptiveMaxPool2d"},
		{"aten::adaptive_max_pool3d", "AdaptiveMaxPool3d"},
		{"aten::upsample_linear1d", "Upsample"}, {"aten::upsample_bilinear2d", "Upsample"},
		{"aten::upsample_trilinear3d", "Upsample"}, {"aten::upsample_bicubic2d", "Upsample"}};
	std::vector<Node *> nodes;
	all_nodes(g.block(), nodes);
	/* the first weighted op, for a composite's first-layer rule */
	Node *first = nullptr;
	Weighted w;
	for (Node *n : nodes)
		if (weighted(n, w)) {
			first = n;
			break;
		}
	std::set<Node *> merged;
	for (Node *n : nodes) {
		if (merged.count(n))
			continue;
		std::string k = kind_of(n);
		if (weighted(n, w)) {
			Node *bn = nullptr;
			auto uses = n->output()->uses();
			if (t.merge_bn && uses.size() == 1 && eval_bn(uses[0].user) && uses[0].offset == 0 &&
			    uses[0].user->owningBlock() == n->owningBlock() && !w.addmm) {
				bn = uses[0].user;
				/* a transposed conv with groups can't take a per-output scale as [1, -1, ...] */
				if (w.transposed) {
					auto gv = torch::jit::toIValue(n->input(kind_of(n) == "aten::_convolution" ? 8 : 6));
					if (!gv || !gv->isInt() || gv->toInt() != 1)
						bn = nullptr;
				}
			}
			if (bn)
				merged.insert(bn);
			const Rule &r = n == first && t.by_type.count("First") ? t.by_type.at("First")
									       : rule_for(t, w.type);
			apply_weighted(g, n, bn, w, r);
		} else if (eval_bn(n)) {
			apply_simple(g, n, rule_for(t, "BatchNorm"), {0});
		} else if (pass.count(k)) {
			wrap_pass(g, n);
		} else if (pools.count(k) && is_tensor(n->output(0))) {
			const Rule &r = rule_for(t, pools.at(k));
			if (r.name == "gradient")
				continue;
			if (r.name != "epsilon")
				fail("LRP: rule " + r.name + " does not apply to " + pools.at(k));
			wrap_epsilon(g, n, n, {0}, r.p1);
		} else if ((k == "aten::sum" || k == "aten::mean") && n->outputs().size() == 1 &&
			   is_tensor(n->input(0)) && is_tensor(n->output())) {
			apply_simple(g, n, rule_for(t, "Sum"), {0});
		} else if ((k == "aten::add" || k == "aten::add_" || k == "aten::sub" || k == "aten::sub_") &&
			   n->inputs().size() == 3 && is_tensor(n->input(0)) && is_tensor(n->input(1)) &&
			   !weight_like(n->input(0)) && !weight_like(n->input(1))) {
			auto alpha = torch::jit::toIValue(n->input(2));
			if (!alpha || !((alpha->isInt() && alpha->toInt() == 1) ||
					(alpha->isDouble() && alpha->toDouble() == 1.0)))
				continue;
			if (rule_for(t, "Add").name == "gradient")
				continue;
			apply_simple(g, out_of_place(g, n), rule_for(t, "Add"), {0, 1});
		} else if ((k == "aten::mul" || k == "aten::mul_" || k == "aten::div" || k == "aten::div_") &&
			   n->inputs().size() == 2 && is_tensor(n->input(0)) && n->outputs().size() == 1) {
			/* products with a mask or a constant: the mask / constant takes no relevance
			 * (autograd drops what reaches a tensor that needs no gradient) */
			std::vector<size_t> xi{0};
			if (is_tensor(n->input(1)) && !weight_like(n->input(1)) && k.rfind("aten::mul", 0) == 0)
				xi.push_back(1);
			if (rule_for(t, "Mul").name == "gradient")
				continue;
			apply_simple(g, out_of_place(g, n), rule_for(t, "Mul"), xi);
		}
	}
	/* last: in-place ops left that would modify a rule op's view get a copy */
	std::vector<Node *> after;
	all_nodes(g.block(), after);
	for (Node *n : after)
		if (n->kind() == sym("esg::lrp_out") || n->kind() == sym("esg::lrp_pass"))
			guard_inplace(g, n->output());
	torch::jit::EliminateDeadCode(g.block());
}

} // namespace esg_shim

TORCH_LIBRARY_FRAGMENT(esg, m)
{
	m.def("lrp_in(Tensor x, int mode, float value) -> Tensor", op_lrp_in);
	m.def("lrp_out(Tensor y, Tensor z1, Tensor? z2, float c1, float c2, float eps, bool mask) -> Tensor",
	      op_lrp_out);
	m.def("lrp_pass(Tensor x, Tensor y) -> Tensor", op_lrp_pass);
}

extern "C" {

int esg_model_set_lrp(esg_model *m, const char *spec)
{
	try {
		if (!m || !spec)
			fail("esg_model_set_lrp: NULL argument");
		parse_table(spec); /* check it now */
		m->lrp = spec;
		return 0;
	}
	SHIM_CATCH(-1)
}

const char *esg_model_lrp(const esg_model *m)
{
	return m && !m->lrp.empty() ? m->lrp.c_str() : nullptr;
}

} /* extern "C" */
