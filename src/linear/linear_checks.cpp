// Argument checks shared by linear_fp8_global and linear_fp8_mixed, and the group size table.

#include "linear/linear_checks.h"

#include "quantize/quantize_detail.h"

#include <c10/util/Exception.h>

namespace fp8nn {

int64_t default_group_size(int64_t features) {
  TORCH_CHECK_VALUE(features > 0, "fp8nn::default_group_size: expected features > 0, got ",
                    features);
  int64_t pow2 = 1;
  while (pow2 < features && pow2 < 4096) pow2 *= 2;
  return std::max<int64_t>(64, pow2);
}

namespace detail {
namespace {

bool is_high_precision(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16;
}

}  // namespace

std::string layer_name(const functional::LinearFP8FuncOptions& options, const char* fallback) {
  return options.name().empty() ? std::string(fallback) : options.name();
}

void check_linear_args(const torch::Tensor& x, const torch::Tensor& weight,
                       const torch::Tensor& bias, const std::string& layer) {
  TORCH_CHECK_VALUE(x.defined(), layer, ": expected an input tensor, got an undefined one");
  TORCH_CHECK_VALUE(weight.defined() && weight.dim() == 2, layer,
                    ": expected a 2-d weight [out_features, in_features], got ",
                    weight.defined() ? weight.sizes() : at::IntArrayRef{});
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  TORCH_CHECK_VALUE(in_features > 0 && out_features > 0, layer,
                    ": expected a weight with in_features > 0 and out_features > 0, got ",
                    weight.sizes());
  TORCH_CHECK_VALUE(x.dim() >= 2, layer, ": expected input of shape [..., ", in_features,
                    "] with at least 2 dimensions, got a ", x.dim(), "-d tensor of shape ",
                    x.sizes());
  TORCH_CHECK_TYPE(is_high_precision(x.scalar_type()), layer,
                   ": expected input of dtype float, half or bfloat16, got ", x.scalar_type());
  TORCH_CHECK_TYPE(is_high_precision(weight.scalar_type()), layer,
                   ": expected weight of dtype float, half or bfloat16, got ",
                   weight.scalar_type());
  TORCH_CHECK_VALUE(x.size(-1) == in_features, layer, ": expected input of shape [..., ",
                    in_features, "] (in_features=", in_features, "), got shape ", x.sizes());
  TORCH_CHECK(x.device() == weight.device(), layer, ": expected input on the weight's device ",
              weight.device(), ", got input on ", x.device(),
              " (move the module or the input with .to(device))");
  if (bias.defined()) {
    TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == out_features, layer,
                      ": expected bias of shape [", out_features, "], got ", bias.sizes());
    TORCH_CHECK_TYPE(is_high_precision(bias.scalar_type()), layer,
                     ": expected bias of dtype float, half or bfloat16, got ", bias.scalar_type());
    TORCH_CHECK(bias.device() == weight.device(), layer, ": expected bias on the weight's device ",
                weight.device(), ", got ", bias.device());
  }
}

void check_group_size(int64_t group_size, const char* which, const std::string& layer) {
  TORCH_CHECK_VALUE(group_size > 0, layer, ": expected ", which, " > 0, got ", group_size);
}

void check_finite(const torch::Tensor& t, const char* what, const std::string& layer) {
  TORCH_CHECK_VALUE(t.numel() == 0 || torch::isfinite(t).all().item<bool>(), layer, ": ", what,
                    " contains NaN or Inf (check_finite is on)");
}

namespace {

// The byte patterns of two FP8 copies (and their scales) are equal.
bool same_copy(const QuantizedTensor& a, const QuantizedTensor& b) {
  return torch::equal(a.data.view(at::kByte), b.data.view(at::kByte)) &&
         torch::equal(a.scale_inv, b.scale_inv);
}

}  // namespace

QuantizedPair quantize_weight(const torch::Tensor& weight, functional::WeightCache* cache,
                              const std::string& layer, NumericsMonitor* monitor,
                              torch::Tensor* amax) {
  const bool may_reuse = cache != nullptr && cache->reuse_allowed();
  if (may_reuse) {
    if (auto copies = cache->find(weight)) {
      if (cache->verify()) {
        const auto fresh = functional::quantize_with_transpose(weight, Format::E4M3);
        TORCH_CHECK(same_copy(fresh.quantized, copies->quantized) &&
                        same_copy(fresh.transposed, copies->transposed),
                    layer,
                    ": the weight cache holds FP8 copies of an older weight: it was written "
                    "without bumping its version counter (torch::optim::SGD, tensor.data(), a "
                    "CUDA-graph replay) while reuse was on. Call weight_cache->clear() after such "
                    "writes, keep them outside a WeightReuseGuard, or use WeightReuse::Never");
      }
      return *std::move(copies);
    }
  }
  const auto counts = monitor != nullptr
                          ? monitor->begin_operand(Operand::Weight, weight.numel(), weight.device())
                          : torch::Tensor();
  QuantizedPair copies;
  if (may_reuse || amax == nullptr) {
    copies = quantize_with_transpose(weight, Format::E4M3, torch::Tensor(), counts);
  } else {
    copies.quantized = quantize_returning_amax(weight, Format::E4M3, counts, amax);
  }
  if (monitor != nullptr) monitor->record_scales(Operand::Weight, copies.quantized.scale_inv);
  if (may_reuse) cache->store(weight, copies);
  return copies;
}

std::vector<int64_t> output_sizes(const torch::Tensor& x, int64_t out_features) {
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return sizes;
}

}  // namespace detail
}  // namespace fp8nn
