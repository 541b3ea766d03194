/* torch_internal.hpp - what lib/torch_shim.cpp lends the other C++ files of
 * the shim (lib/torch_params.cpp).  Not part of the C API. */
#ifndef ESG_TORCH_INTERNAL_HPP
#define ESG_TORCH_INTERNAL_HPP

#include <torch/script.h>
extern "C" {
#include "esg.h"
}
#include "esg_torch.h"

/* The TorchScript module inside a model handle (borrowed). */
torch::jit::Module *esg_model_module_(esg_model *m);
/* Count one model call (with or without autograd) of `batch` items. */
void esg_torch_log_call_(bool grad, int64_t batch);

#endif
