/* model.cpp - lib/shim/esg_torch.h on libtorch (1.13, Debian, CPU; 2.x, CPU
 * or CUDA): load, save, free, forward and gradient calls (whole model and at
 * a layer), threads, seed, call log, wrap, set_origin.  The shim's entry
 * points and the tensors across the boundary; the other files hold what they
 * call (graph edits, rules, allocator, autocast).
 *
 * Every entry point catches c10::Error, std::exception and anything else
 * and reports through esg_set_error() (SHIM_CATCH, internal.hpp): no
 * exception crosses into C.
 */
#include "shim/internal.hpp"

#include <torch/cuda.h>
#include <torch/utils.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <ATen/Parallel.h>

#include <sched.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using torch::jit::GraphFunction;
using namespace esg_shim;

namespace {

/* ---- errors ---------------------------------------------------------- */

std::string trim(const std::string &s)
{
	size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
	return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

} // namespace

namespace esg_shim {

[[noreturn]] void fail(const std::string &msg) { throw ShimError(msg); }

std::string shape_str(at::IntArrayRef s)
{
	std::string r = "[";
	for (size_t i = 0; i < s.size(); i++)
		r += (i ? ", " : "") + std::to_string(s[i]);
	return r + "]";
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

} // namespace esg_shim

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

/* A new esg_tensor (C order, on the host): float32, or float64 where src is and keep_f64 (model
 * outputs: scores summed in float64, see out_f32). */
esg_tensor *to_esg(const char *name, const at::Tensor &src, bool keep_f64 = false)
{
	bool f64 = keep_f64 && src.scalar_type() == at::kDouble;
	at::Tensor t = src.detach().to(at::kCPU, f64 ? at::kDouble : at::kFloat).contiguous();
	if (t.dim() > ESG_MAX_DIMS)
		fail("tensor has " + std::to_string(t.dim()) + " dimensions (max " +
		     std::to_string(ESG_MAX_DIMS) + ")");
	esg_tensor *e = (esg_tensor *)calloc(1, sizeof *e);
	if (!e)
		throw std::bad_alloc();
	e->name = strdup(name);
	e->dtype = f64 ? ESG_F64 : ESG_F32;
	e->ndim = (int)t.dim();
	for (int i = 0; i < e->ndim; i++)
		e->shape[i] = t.size(i);
	size_t nb = (size_t)t.numel() * t.element_size();
	e->data = malloc(nb ? nb : 1);
	if (!e->name || !e->data) {
		esg_torch_tensor_free(e);
		throw std::bad_alloc();
	}
	memcpy(e->data, t.data_ptr(), nb);
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

/* NaN / Inf anywhere in t is an error (unless esg_torch_set_check_finite(0)):
 * every model output passes here, so no method turns them into a map. */
static bool g_check_finite = true;

void check_finite(const at::Tensor &t, const std::string &what)
{
	if (!g_check_finite || !t.is_floating_point() || !t.numel())
		return;
	int64_t bad = t.numel() - at::isfinite(t.detach()).sum().item<int64_t>();
	if (bad)
		fail(what + " has " + std::to_string(bad) + " non-finite value" +
		     (bad == 1 ? "" : "s") + " (NaN or Inf) of " + std::to_string(t.numel()));
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

/* Input batch for a rule: [x; ref] for DeepLift. */
at::Tensor rule_input(esg_model *m, esg_backward_rule rule, const float *x, const float *ref,
		      int ndim, const int64_t *shape)
{
	rule_name(rule);
	at::Tensor xi = from_f32(x, ndim, shape, m->dev);
	if (esg_rule_is_deeplift(rule)) {
		if (!ref)
			fail("DeepLift needs a baseline (ref is NULL)");
		xi = at::cat({xi, from_f32(ref, ndim, shape, m->dev)}, 0);
	}
	return xi;
}

/* The model's output as float32 (a no-op without amp): scores, sums and
 * everything downstream are computed in float32 -- except [N, C] scores a
 * wrapper summed in float64 (a fixed-mask score over millions of voxels),
 * kept so that the change one voxel makes is not rounded away. */
at::Tensor out_f32(const c10::IValue &v)
{
	at::Tensor t = as_tensor(v, "model output");
	if (!(t.dim() == 2 && t.scalar_type() == at::kDouble))
		t = t.to(at::kFloat);
	check_finite(t, "the model's output");
	return t;
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

void esg_torch_set_check_finite(int on)
{
	g_check_finite = on != 0;
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
		for (const auto &p : m->mod.named_parameters())
			check_finite(p.value, std::string("model '") + path + "': parameter '" +
				     p.name + "'");
		for (const auto &b : m->mod.named_buffers())
			check_finite(b.value, std::string("model '") + path + "': buffer '" +
				     b.name + "'");
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
		CallMeter meter(m, false, xi.size(0), shape[0], ndim, shape);
		c10::IValue ov;
		{
			EsgAmpGuard amp(m);
			if (m->amp == at::kFloat)
				ov = m->mod.forward(st);
			else /* the graph rewritten for autocast (esg_amp_rewrite_) */
				ov = run_fn(m, *edited(m, EDIT_RULE, nullptr, ESG_RULE_PLAIN),
					    make_stack(m, xi));
		}
		*out = to_esg("output", out_f32(ov), true);
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
		CallMeter meter(m, true, xi.size(0), shape[0], ndim, shape);
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
		if (score && esg_rule_is_deeplift(rule)) /* the rules leave f itself unchanged */
			copy_out(score, s.narrow(0, 0, B) - s.narrow(0, B, B));
		else if (score)
			copy_out(score, s.narrow(0, 0, B));
		return 0;
	}
	SHIM_CATCH(-1)
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
		CallMeter meter(m, false, xi.size(0), shape[0], ndim, shape);
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
				eo = to_esg("output", o, true);
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
		CallMeter meter(m, true, xi.size(0), shape[0], ndim, shape);
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
		CallMeter meter(m, want_grad, xi.size(0), shape[0], ndim, shape);
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
			*out = to_esg("output", o, true);
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

int esg_model_set_windows(esg_model *m, int64_t rows, const int64_t *mask_item,
			  const int64_t *origin, const int64_t *size, int nsp)
{
	try {
		if (!m || rows < 0 || (rows && (!mask_item || !origin || !size || nsp < 1)))
			fail("esg_model_set_windows: bad argument");
		m->win_rows = 0;
		if (!rows) {
			if (m->win_on)
				m->mod.setattr("mask", m->win_full);
			m->win_on = false;
			m->win_full = m->win_mask = at::Tensor();
			return 0;
		}
		if (!m->win_on) {
			c10::IValue mv = m->mod.hasattr("mask") ? m->mod.attr("mask") : c10::IValue();
			if (!mv.isTensor() || mv.toTensor().dim() < 3)
				return 0;
			m->win_full = mv.toTensor();
			m->win_on = true;
		}
		const at::Tensor &full = m->win_full;
		if (full.dim() - 2 != nsp)
			fail("the model's fixed mask " + shape_str(full.sizes()) + " has " +
			     std::to_string(full.dim() - 2) + " spatial axes, the patches " + std::to_string(nsp));
		std::vector<at::Tensor> rowmask;
		rowmask.reserve((size_t)rows);
		for (int64_t r = 0; r < rows; r++) {
			at::Tensor t = full.narrow(0, mask_item[r] % full.size(0), 1);
			for (int d = 0; d < nsp; d++) {
				int64_t o = origin[r * nsp + d];
				if (o < 0 || o + size[d] > full.size(2 + d))
					fail("the model's fixed mask " + shape_str(full.sizes()) +
					     " does not cover a patch of " + std::to_string(size[d]) + " at " +
					     std::to_string(o) + " on axis " + std::to_string(d));
				t = t.narrow(2 + d, o, size[d]);
			}
			rowmask.push_back(t);
		}
		m->win_mask = at::cat(rowmask, 0);
		m->win_rows = rows;
		return 1;
	}
	SHIM_CATCH(-1)
}

/* ---- per-voxel outputs of esg-wrap wrappers (lib/attr/local.c) -------- */

int esg_model_voxel_score(esg_model *m, char *buf, size_t n)
{
	try {
		if (!m || !buf || !n)
			fail("esg_model_voxel_score: bad argument");
		buf[0] = 0;
		if (!m->mod.find_method("voxel_score"))
			fail("the model is no esg-wrap wrapper that says how its score sums over voxels "
			     "(no method voxel_score; wrapped by an older esg-wrap? wrap it again)");
		if (!m->mod.hasattr("model") || !m->mod.attr("model").isModule() ||
		    !m->mod.find_method("activation"))
			fail("the wrapper has no submodule 'model' or no method 'activation'");
		c10::IValue v = m->mod.run_method("voxel_score");
		if (!v.isString())
			fail("the wrapper's voxel_score() is not a string");
		snprintf(buf, n, "%s", v.toStringRef().c_str());
		return 0;
	}
	SHIM_CATCH(-1)
}

} /* extern "C" */

namespace {

/* activation(model(x)) of an esg-wrap wrapper, float32 [N, C, spatial...]
 * with x's N and number of axes. */
at::Tensor voxel_outputs(esg_model *m, const at::Tensor &x)
{
	torch::jit::Module inner = m->mod.attr("model").toModule();
	at::Tensor y = as_tensor(inner.forward({x}), "the wrapped model's output").to(at::kFloat);
	y = as_tensor(m->mod.run_method("activation", y), "the wrapper's activation");
	if (y.dim() != x.dim() || y.size(0) != x.size(0))
		fail("the wrapped model's output " + shape_str(y.sizes()) +
		     " is not [N, C, spatial...] like its input " + shape_str(x.sizes()));
	return y;
}

} // namespace

extern "C" {

int esg_model_voxel_forward(esg_model *m, const float *x, int ndim, const int64_t *shape,
			    int check, esg_tensor **out)
{
	try {
		if (!m || !out)
			fail("esg_model_voxel_forward: NULL argument");
		*out = nullptr;
		if (m->amp != at::kFloat)
			fail("per-voxel outputs are not available under --amp");
		torch::NoGradGuard ng;
		at::Tensor xi = from_f32(x, ndim, shape, m->dev);
		CallMeter meter(m, false, xi.size(0), shape[0], ndim, shape);
		at::Tensor y = voxel_outputs(m, xi);
		if (check)
			check_finite(y, "the model's output");
		*out = to_esg("voxels", y);
		return 0;
	}
	SHIM_CATCH(-1)
}

int esg_model_voxel_grad(esg_model *m, const float *x, int ndim, const int64_t *shape,
			 int64_t target, int argmax, const float *w, float *grad, double *score)
{
	try {
		if (!m || !x || !shape || !w || !score || ndim < 3 || shape[0] != 1)
			fail("esg_model_voxel_grad: bad argument");
		if (m->amp != at::kFloat)
			fail("per-voxel outputs are not available under --amp");
		torch::AutoGradMode gm(grad != nullptr);
		at::Tensor xi = from_f32(x, ndim, shape, m->dev);
		if (grad)
			xi.requires_grad_(true);
		CallMeter meter(m, grad != nullptr, 1, 1, ndim, shape);
		/* the model sees a copy: in-place ops on its input must not hit the leaf */
		at::Tensor y = voxel_outputs(m, grad ? xi.clone() : xi);
		if (y.sizes().slice(2) != xi.sizes().slice(2))
			fail("the wrapped model's output " + shape_str(y.sizes()) +
			     " is not the input's spatial size " + shape_str(xi.sizes()));
		if (target < 0 || target >= y.size(1))
			fail("target " + std::to_string(target) + " is not a channel of the per-voxel output " +
			     shape_str(y.sizes()));
		at::Tensor yt = y.select(1, target);
		if (argmax)
			yt = yt * (y.argmax(1) == target).to(at::kFloat);
		std::vector<int64_t> sp(shape + 2, shape + ndim);
		sp.insert(sp.begin(), 1);
		at::Tensor wt = from_f32(w, ndim - 1, sp.data(), m->dev);
		/* in double: a sum over millions of voxels */
		at::Tensor s = (yt.to(at::kDouble) * wt.to(at::kDouble)).sum();
		check_finite(s, "the model's score");
		*score = s.item<double>();
		if (grad) {
			auto g = torch::autograd::grad({s}, {xi}, {}, false, false, true);
			copy_out(grad, g[0].defined() ? g[0] : at::zeros_like(xi));
		}
		return 0;
	}
	SHIM_CATCH(-1)
}

int esg_model_mask_grad(esg_model *m, esg_backward_rule rule, const float *x, const float *ref,
			int ndim, const int64_t *shape, int64_t target, const float *w, float *grad,
			double *score)
{
	at::Tensor saved;
	try {
		if (!m || !x || !shape || !w || !grad || !score || ndim < 3 || shape[0] != 1)
			fail("esg_model_mask_grad: bad argument");
		c10::IValue mv = m->mod.hasattr("mask") ? m->mod.attr("mask") : c10::IValue();
		if (!mv.isTensor() || mv.toTensor().dim() != ndim)
			fail("the model is no fixed-mask wrapper (no mask [N, C, spatial...])");
		saved = mv.toTensor();
		std::vector<int64_t> sp(shape + 2, shape + ndim);
		sp.insert(sp.begin(), { 1, 1 });
		/* the wrapper scores over a mask of the input's size as it is */
		m->mod.setattr("mask", from_f32(w, ndim, sp.data(), m->dev).to(saved.scalar_type()));
	}
	SHIM_CATCH(-1)
	float s = 0;
	int rc = esg_model_grad(m, rule, x, ref, ndim, shape, &target, grad, &s);
	m->mod.setattr("mask", saved);
	*score = s;
	return rc;
}

int esg_model_buffer_get(esg_model *m, const char *name, esg_tensor **out)
{
	try {
		if (!m || !name || !out)
			fail("esg_model_buffer_get: NULL argument");
		*out = nullptr;
		if (!m->mod.hasattr(name) || !m->mod.attr(name).isTensor())
			fail(std::string("the model has no tensor '") + name + "'");
		*out = to_esg(name, m->mod.attr(name).toTensor());
		return 0;
	}
	SHIM_CATCH(-1)
}

} /* extern "C" */

/* For the shim's other C++ files (internal.hpp). */
void use_windows_(esg_model *m, int64_t rows)
{
	if (!m->win_on)
		return;
	if (!m->win_rows || rows % m->win_rows)
		fail("a model call of " + std::to_string(rows) + " rows during a patch batch came " +
		     (m->win_rows ? "with windows for " + std::to_string(m->win_rows) + " rows"
				  : std::string("without its rows' windows")) +
		     " (a method that batches patches must name each call's items)");
	int64_t k = rows / m->win_rows;
	std::vector<int64_t> rep((size_t)m->win_mask.dim(), 1);
	rep[0] = k;
	m->mod.setattr("mask", k == 1 ? m->win_mask : m->win_mask.repeat(rep));
}

torch::jit::Module *esg_model_module_(esg_model *m)
{
	return m ? &m->mod : nullptr;
}
