/* params.cpp - model parameters through the C API (esg_torch.h):
 * enumerate them in the execution order of their modules, read them,
 * overwrite them in place.  Used by esg-randomise.  Like model.cpp,
 * every entry point catches everything and reports via esg_set_error. */
#include "shim/internal.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" {
#include "stream/stream.h"
}

namespace {

struct ParamError : std::runtime_error {
	using std::runtime_error::runtime_error;
};

#define PARAMS_CATCH(ret)                                                      \
	catch (const ParamError &e) {                                          \
		esg_set_error("%s", e.what());                                 \
		return ret;                                                    \
	}                                                                      \
	catch (const c10::Error &e) {                                          \
		std::string w = e.what_without_backtrace();                    \
		esg_set_error("libtorch: %s", w.substr(0, w.find('\n')).c_str()); \
		return ret;                                                    \
	}                                                                      \
	catch (const std::exception &e) {                                      \
		esg_set_error("libtorch: %s", e.what());                       \
		return ret;                                                    \
	}                                                                      \
	catch (...) {                                                          \
		esg_set_error("libtorch: unknown exception");                  \
		return ret;                                                    \
	}

torch::jit::Module &module_of(esg_model *m)
{
	torch::jit::Module *mod = esg_model_module_(m);
	if (!mod)
		throw ParamError("NULL model");
	return *mod;
}

std::string type_name(const torch::jit::Module &m)
{
	auto t = m.type();
	return t->name() ? t->name()->name() : "Module";
}

at::Tensor find_param(torch::jit::Module &mod, const char *name)
{
	if (!name)
		throw ParamError("NULL parameter name");
	for (const auto &p : mod.named_parameters(true))
		if (p.name == name)
			return p.value;
	throw ParamError(std::string("model has no parameter '") + name + "'");
}

char *dup(const std::string &s)
{
	char *r = strdup(s.c_str());
	if (!r)
		throw std::bad_alloc();
	return r;
}

} // namespace

extern "C" {

void esg_model_params_free(esg_param_info *p, size_t n)
{
	if (!p)
		return;
	for (size_t i = 0; i < n; i++) {
		free(p[i].name);
		free(p[i].module);
		free(p[i].module_type);
		free(p[i].leaf);
	}
	free(p);
}

esg_param_info *esg_model_params(esg_model *m, size_t *n)
{
	esg_param_info *out = nullptr;
	size_t k = 0;
	try {
		if (!n)
			throw ParamError("esg_model_params: NULL argument");
		*n = 0;
		torch::jit::Module &mod = module_of(m);
		/* execution order of modules, from the shim */
		std::map<std::string, int> order;
		size_t nl = 0;
		esg_layer_info *layers = esg_model_layers(m, &nl);
		if (!layers)
			return nullptr;
		for (size_t i = 0; i < nl; i++)
			if (layers[i].calls > 0)
				order.emplace(layers[i].name, (int)i);
		esg_layers_free(layers, nl);
		std::map<std::string, std::string> types;
		for (const auto &nm : mod.named_modules())
			types[nm.name] = type_name(nm.value);

		struct Row {
			std::string name, module, leaf;
			at::Tensor t;
			int order;
			size_t reg;
		};
		std::vector<Row> rows;
		for (const auto &p : mod.named_parameters(true)) {
			size_t dot = p.name.rfind('.');
			Row r;
			r.name = p.name;
			r.module = dot == std::string::npos ? "" : p.name.substr(0, dot);
			r.leaf = dot == std::string::npos ? p.name : p.name.substr(dot + 1);
			r.t = p.value;
			auto it = order.find(r.module);
			r.order = r.module.empty() ? 0 : it == order.end() ? -1 : it->second;
			r.reg = rows.size();
			rows.push_back(r);
		}
		std::stable_sort(rows.begin(), rows.end(), [](const Row &a, const Row &b) {
			int oa = a.order < 0 ? INT32_MAX : a.order, ob = b.order < 0 ? INT32_MAX : b.order;
			return oa < ob;
		});
		out = (esg_param_info *)calloc(rows.size() ? rows.size() : 1, sizeof *out);
		if (!out)
			throw std::bad_alloc();
		for (; k < rows.size(); k++) {
			const Row &r = rows[k];
			if (r.t.dim() > ESG_MAX_DIMS)
				throw ParamError("parameter '" + r.name + "' has more than 8 axes");
			out[k].name = dup(r.name);
			out[k].module = dup(r.module);
			out[k].module_type = dup(types.count(r.module) ? types[r.module] : "Module");
			out[k].leaf = dup(r.leaf);
			out[k].ndim = (int)r.t.dim();
			for (int d = 0; d < out[k].ndim; d++)
				out[k].shape[d] = r.t.size(d);
			out[k].order = r.order;
		}
		*n = rows.size();
		return out;
	}
	catch (...) {
		esg_model_params_free(out, out ? k + 1 : 0);
		try {
			throw;
		}
		PARAMS_CATCH(nullptr)
	}
}

int esg_model_param_get(esg_model *m, const char *name, esg_tensor **out)
{
	try {
		if (!out)
			throw ParamError("esg_model_param_get: NULL argument");
		*out = nullptr;
		at::Tensor t = find_param(module_of(m), name).detach().to(at::kCPU, at::kFloat).contiguous();
		esg_tensor *r = (esg_tensor *)calloc(1, sizeof *r);
		if (!r)
			throw std::bad_alloc();
		r->name = strdup(name);
		r->dtype = ESG_F32;
		r->ndim = (int)t.dim();
		for (int d = 0; d < r->ndim; d++)
			r->shape[d] = t.size(d);
		r->data = malloc((size_t)(t.numel() ? t.numel() : 1) * sizeof(float));
		if (!r->name || !r->data) {
			esg_torch_tensor_free(r);
			throw std::bad_alloc();
		}
		memcpy(r->data, t.data_ptr<float>(), (size_t)t.numel() * sizeof(float));
		*out = r;
		return 0;
	}
	PARAMS_CATCH(-1)
}

int esg_model_param_set(esg_model *m, const char *name, const float *data, int64_t numel)
{
	try {
		if (!data)
			throw ParamError("esg_model_param_set: NULL data");
		at::Tensor p = find_param(module_of(m), name);
		if (p.numel() != numel)
			throw ParamError(std::string("parameter '") + name + "' has " +
					 std::to_string(p.numel()) + " values, not " + std::to_string(numel));
		at::NoGradGuard ng;
		at::Tensor src = at::from_blob(const_cast<float *>(data), p.sizes(), at::kFloat);
		p.copy_(src);
		return 0;
	}
	PARAMS_CATCH(-1)
}

} /* extern "C" */
