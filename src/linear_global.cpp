// linear_fp8_global: the Global recipe's autograd function. Every product is functional::scaled_mm
// of per-tensor FP8 copies, so the CUDA path of scaled_mm/quantize serves this layer unchanged.

#include <fp8nn/linear_functional.h>
#include <fp8nn/quantize.h>
#include <fp8nn/scaled_mm.h>

#include <torch/autograd.h>

#include "amax_group.h"
#include "linear_common.h"

namespace fp8nn::functional {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Indices of needs_input_grad: it counts tensor arguments only (bias only when present).
enum Input : size_t { kX = 0, kWeight = 1, kBias = 2 };

// x: [M, K], weight: [N, K], bias: [N] or undefined.
class LinearFP8GlobalFunction : public torch::autograd::Function<LinearFP8GlobalFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight,
                               const c10::optional<torch::Tensor>& bias, const std::string& layer,
                               bool check_finite, const std::shared_ptr<WeightCache>& weight_cache,
                               const detail::AmaxGroup& amax_group) {
    // One fused cast+transpose per operand: the row-major copies feed this product, the
    // transposed ones (K-major for the backward products) are all that is saved.
    const bool want_dx = x.requires_grad(), want_dw = weight.requires_grad();
    const auto x_pair = detail::quantize_with_transpose(x, Format::E4M3, amax_group);
    // With a shared amax the ranks must quantize together, so the cache (a per-process decision)
    // stays out of it.
    const auto w_pair =
        amax_group ? detail::quantize_with_transpose(weight, Format::E4M3, amax_group)
                   : detail::quantize_weight(weight, weight_cache.get(), layer);
    // Fast accumulation forward (the forward error is dominated by E4M3 rounding anyway);
    // backward products accumulate precisely, since gradients sum over long reductions.
    auto y = scaled_mm(x_pair.quantized, w_pair.quantized, bias, x.scalar_type(),
                       /*fast_accumulation=*/true);
    // needs_input_grad needs a recorded graph; requires_grad is the same question asked early
    // (under NoGradGuard it over-asks, and the node holding the copies is dropped at once).
    const auto& x_t = x_pair.transposed;  // [K, M]: B operand of dW = dy^T x
    const auto& w_t = w_pair.transposed;  // [K, N]: B operand of dx = dy W
    ctx->save_for_backward(
        {want_dw ? x_t.data : torch::Tensor(), want_dw ? x_t.scale_inv : torch::Tensor(),
         want_dx ? w_t.data : torch::Tensor(), want_dx ? w_t.scale_inv : torch::Tensor()});
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["check_finite"] = check_finite;
    ctx->saved_data["amax_group"] = detail::to_ivalue(amax_group);
    ctx->saved_data["x_dtype"] = x.scalar_type();
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["bias_dtype"] = bias.has_value() ? bias->scalar_type() : weight.scalar_type();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto dy = grad_outputs[0].contiguous();  // [M, N], x's dtype
    const bool want_dx = ctx->needs_input_grad(kX), want_dw = ctx->needs_input_grad(kWeight),
               want_db = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(kBias);
    if (ctx->saved_data["check_finite"].toBool()) {
      detail::check_finite(dy, "the output gradient", ctx->saved_data["layer"].toStringRef());
    }
    const auto saved = ctx->get_saved_variables();
    torch::Tensor dx, dw, db;
    if (want_dx || want_dw) {
      const auto dy_pair = detail::quantize_with_transpose(
          dy, Format::E5M2, detail::amax_group_of(ctx->saved_data["amax_group"]));
      if (want_dx) {
        const QuantizedTensor w_t{saved[2], saved[3], Format::E4M3, 0};
        dx = scaled_mm(dy_pair.quantized, w_t, c10::nullopt,
                       ctx->saved_data["x_dtype"].toScalarType());
      }
      if (want_dw) {
        const QuantizedTensor x_t{saved[0], saved[1], Format::E4M3, 0};
        dw = scaled_mm(dy_pair.transposed, x_t, c10::nullopt,
                       ctx->saved_data["weight_dtype"].toScalarType());
      }
    }
    if (want_db) {
      db =
          dy.sum(0, /*keepdim=*/false, at::kFloat).to(ctx->saved_data["bias_dtype"].toScalarType());
    }
    return {dx,
            dw,
            db,
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor linear_fp8_global(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias, const LinearFP8FuncOptions& options) {
  const auto layer = detail::layer_name(options, "fp8nn::functional::linear_fp8_global");
  detail::check_linear_args(x, weight, bias, layer);
  if (options.check_finite()) {
    detail::check_finite(x, "the input", layer);
    detail::check_finite(weight, "the weight", layer);
  }
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  // An undefined bias must not be a tensor argument of the autograd function.
  const auto optional_bias = bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt;
  const auto y = LinearFP8GlobalFunction::apply(
      x.reshape({-1, in_features}).contiguous(), weight, optional_bias, layer,
      options.check_finite(), options.weight_cache(),
      options.amax_group().get());
  return y.view(detail::output_sizes(x, out_features));
}

}  // namespace fp8nn::functional
