#pragma once
// Private helpers of the FP8 linear functions: argument checks (before any work is done, so an
// error leaves everything as it was) and the [..., K] <-> [M, K] reshapes.

#include <fp8nn/linear_functional.h>
#include <fp8nn/numerics.h>

#include <torch/types.h>

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

/// The weight's per-tensor E4M3 copies (row-major and transposed): from `cache` when reuse is
/// allowed now and it holds them for this very weight (checked anew when cache->verify(), a
/// c10::Error naming `layer` if stale), else quantized now (and kept in `cache` when reuse is
/// allowed). A quantization now counts into `monitor` (when not null) and records its scale;
/// reused copies leave the monitor's weight figures at those of the quantization that made them.
/// With `amax` not null, a quantization that the cache does not keep makes the row-major copy
/// alone (the transposed one is left undefined) and stores the weight's amax in *amax, from
/// which quantize_transposed rebuilds the same transposed bytes later; *amax stays undefined when
/// both copies are returned.
QuantizedPair quantize_weight(const torch::Tensor& weight, functional::WeightCache* cache,
                              const std::string& layer, NumericsMonitor* monitor = nullptr,
                              torch::Tensor* amax = nullptr);

/// The output's shape: x's leading dims, then out_features.
std::vector<int64_t> output_sizes(const torch::Tensor& x, int64_t out_features);

}  // namespace fp8nn::detail
