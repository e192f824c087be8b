#pragma once
// Private helpers of the FP8 linear functions: argument checks (before any work is done, so an
// error leaves everything as it was) and the [..., K] <-> [M, K] reshapes.

#include <fp8nn/linear_functional.h>

#include <torch/autograd.h>
#include <torch/types.h>

#include <memory>

#include <string>
#include <vector>

namespace fp8nn::detail {

/// The layer name for messages: options.name(), or `fallback` when it is empty.
std::string layer_name(const functional::LinearFP8FuncOptions& options, const char* fallback);

/// Shapes, dtypes and devices of a linear call; c10::ValueError / TypeError / Error naming
/// `layer`, expected and got.
void check_linear_args(const torch::Tensor& x, const torch::Tensor& weight,
                       const torch::Tensor& bias, const std::string& layer);

/// Group sizes of the Mixed recipe must be positive.
void check_group_size(int64_t group_size, const char* which, const std::string& layer);

/// Opt-in NaN/Inf check (one host synchronisation): a c10::ValueError naming `layer` and `what`.
void check_finite(const torch::Tensor& t, const char* what, const std::string& layer);

/// The weight's per-tensor E4M3 copies (row-major and transposed): from `cache` when it holds
/// them for this very weight, else quantized now (and stored in `cache` when `store`).
QuantizedPair quantize_weight(const torch::Tensor& weight, functional::WeightCache* cache,
                              bool store);

/// Whether a call should leave the weight's copies in `cache`: not when autograd records the
/// weight's gradient, since that backward drops them again (unless reuse_across_backward) and
/// keeping them would only hold memory between forward and backward.
bool should_store_weight(const torch::Tensor& weight, const functional::WeightCache* cache);

/// Forward: lets the backward pass reach `cache` (weakly; nothing when it is null).
void keep_cache_for_backward(torch::autograd::AutogradContext* ctx,
                             const std::shared_ptr<functional::WeightCache>& cache);
/// Backward, once the weight's gradient is computed: tells the cache (see WeightCache).
void weight_gradient_computed(torch::autograd::AutogradContext* ctx);

/// The output's shape: x's leading dims, then out_features.
std::vector<int64_t> output_sizes(const torch::Tensor& x, int64_t out_features);

}  // namespace fp8nn::detail
