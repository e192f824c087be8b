// Argument checks shared by linear_fp8_global and linear_fp8_mixed, and the group size table.

#include "linear_common.h"

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

QuantizedPair quantize_weight(const torch::Tensor& weight, functional::WeightCache* cache,
                              bool store) {
  if (cache != nullptr) {
    if (auto copies = cache->find(weight)) return *std::move(copies);
  }
  auto copies = functional::quantize_with_transpose(weight, Format::E4M3);
  if (cache != nullptr && store) cache->store(weight, copies);
  return copies;
}

bool should_store_weight(const torch::Tensor& weight, const functional::WeightCache* cache) {
  if (cache == nullptr) return false;
  const bool records_weight_grad = torch::GradMode::is_enabled() && weight.requires_grad();
  return !records_weight_grad || cache->reuse_across_backward();
}

namespace {

// The cache, as autograd's saved_data can hold it: weakly, so a graph outliving its module keeps
// nothing alive.
struct CacheHandle : torch::CustomClassHolder {
  std::weak_ptr<functional::WeightCache> cache;
  explicit CacheHandle(std::weak_ptr<functional::WeightCache> c) : cache(std::move(c)) {}
};

constexpr const char* kCacheKey = "weight_cache";

}  // namespace

void keep_cache_for_backward(torch::autograd::AutogradContext* ctx,
                             const std::shared_ptr<functional::WeightCache>& cache) {
  if (cache == nullptr) return;
  ctx->saved_data[kCacheKey] = c10::IValue::make_capsule(c10::make_intrusive<CacheHandle>(cache));
}

void weight_gradient_computed(torch::autograd::AutogradContext* ctx) {
  const auto found = ctx->saved_data.find(kCacheKey);
  if (found == ctx->saved_data.end()) return;
  const auto handle = c10::static_intrusive_pointer_cast<CacheHandle>(found->second.toCapsule());
  if (const auto cache = handle->cache.lock()) cache->weight_gradient_computed();
}

std::vector<int64_t> output_sizes(const torch::Tensor& x, int64_t out_features) {
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return sizes;
}

}  // namespace detail
}  // namespace fp8nn
