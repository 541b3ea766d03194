/* torch_internal.hpp - what lib/torch_shim.cpp lends the other C++ files of
 * the shim (lib/torch_params.cpp).  Not part of the C API. */
#ifndef ESG_TORCH_INTERNAL_HPP
#define ESG_TORCH_INTERNAL_HPP

#include <torch/script.h>
#include <torch/version.h>
#include <ATen/autocast_mode.h>
extern "C" {
#include "stream/stream.h"
}
#include "shim/esg_torch.h"

/* The TorchScript module inside a model handle (borrowed). */
torch::jit::Module *esg_model_module_(esg_model *m);
/* The model's mixed-precision dtype (at::kFloat when off) and device. */
at::ScalarType esg_model_amp_(esg_model *m);
c10::Device esg_model_device_(esg_model *m);
/* Under amp, rewrite an inlined graph so that autocast runs it correctly
 * (aten::_convolution -> conv / conv_transpose); nothing without amp.
 * Throws on what it can't rewrite. */
void esg_amp_rewrite_(esg_model *m, std::shared_ptr<torch::jit::Graph> &g);

/* Scope of one forward pass: under autocast for the model's device in its
 * amp dtype (nothing when amp is off), as Python's torch.autocast does it;
 * the destructor restores the previous state and clears autocast's cache
 * of cast weights (and of cast inputs that require grad). */
class EsgAmpGuard {
public:
	explicit EsgAmpGuard(esg_model *m)
		: dt_(esg_model_amp_(m)), cuda_(esg_model_device_(m).is_cuda())
	{
		if (dt_ == at::kFloat)
			return;
		prev_on_ = enabled();
		prev_dt_ = dtype();
		set(true, dt_);
		at::autocast::increment_nesting();
	}
	~EsgAmpGuard()
	{
		if (dt_ == at::kFloat)
			return;
		if (at::autocast::decrement_nesting() == 0)
			at::autocast::clear_cache();
		set(prev_on_, prev_dt_);
	}
	EsgAmpGuard(const EsgAmpGuard &) = delete;
	EsgAmpGuard &operator=(const EsgAmpGuard &) = delete;

private:
	/* libtorch 2.4 made autocast's state per device type
	 * (is_autocast_enabled(kCUDA)); the per-device functions of 1.x
	 * (is_enabled() for CUDA, is_cpu_enabled()) warn there, and may go. */
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
	c10::DeviceType type() const { return cuda_ ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }
	bool enabled() const { return at::autocast::is_autocast_enabled(type()); }
	at::ScalarType dtype() const { return at::autocast::get_autocast_dtype(type()); }
	void set(bool on, at::ScalarType dt) const
	{
		at::autocast::set_autocast_dtype(type(), dt);
		at::autocast::set_autocast_enabled(type(), on);
	}
#else
	bool enabled() const { return cuda_ ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
	at::ScalarType dtype() const
	{
		return cuda_ ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
	}
	void set(bool on, at::ScalarType dt) const
	{
		if (cuda_) {
			at::autocast::set_autocast_gpu_dtype(dt);
			at::autocast::set_enabled(on);
		} else {
			at::autocast::set_autocast_cpu_dtype(dt);
			at::autocast::set_cpu_enabled(on);
		}
	}
#endif
	at::ScalarType dt_;
	bool cuda_;
	bool prev_on_ = false;
	at::ScalarType prev_dt_ = at::kFloat;
};

/* Count one model call (with or without autograd) of `batch` items. */
void esg_torch_log_call_(bool grad, int64_t batch);

#endif
