// linear_fp8_mixed: the Mixed recipe's autograd function. Forward and input gradient are
// functional::scaled_mm products with group-scaled activations/gradients and a per-tensor weight;
// the weight gradient is an ordinary high-precision product, as in the original research layer.

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
class LinearFP8MixedFunction : public torch::autograd::Function<LinearFP8MixedFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight,
                               const c10::optional<torch::Tensor>& bias, int64_t G_in,
                               int64_t G_out, const std::string& layer, bool check_finite,
                               const std::shared_ptr<WeightCache>& weight_cache,
                               const detail::AmaxGroup& amax_group) {
    const auto x_q = quantize_per_group(x, Format::E4M3, G_in);
    // W's cast+transpose writes the row-major copy for this product and the K-major [K, N] one
    // that dx = dy W needs, in one pass. With a shared amax the ranks must quantize together, so
    // the cache (a per-process decision) stays out of it.
    const auto w_pair =
        amax_group ? detail::quantize_with_transpose(weight, Format::E4M3, amax_group)
                   : detail::quantize_weight(weight, weight_cache.get(), layer);
    const auto& w_t = w_pair.transposed;
    // Fast accumulation forward; the backward product accumulates precisely.
    auto y = scaled_mm(x_q, w_pair.quantized, bias, x.scalar_type(), /*fast_accumulation=*/true);
    // dW = dy^T x needs x itself (unquantized); dx needs W's FP8 copy.
    // needs_input_grad needs a recorded graph; requires_grad is the same question asked early
    // (under NoGradGuard it over-asks, and the node holding the copies is dropped at once).
    const bool want_dx = x.requires_grad(), want_dw = weight.requires_grad();
    ctx->save_for_backward({want_dw ? x : torch::Tensor(), want_dx ? w_t.data : torch::Tensor(),
                            want_dx ? w_t.scale_inv : torch::Tensor()});
    ctx->saved_data["G_out"] = G_out;
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["check_finite"] = check_finite;
    ctx->saved_data["x_dtype"] = x.scalar_type();
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["bias_dtype"] = bias.has_value() ? bias->scalar_type() : weight.scalar_type();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto dy = grad_outputs[0].contiguous();  // [M, N], x's dtype
    if (ctx->saved_data["check_finite"].toBool()) {
      detail::check_finite(dy, "the output gradient", ctx->saved_data["layer"].toStringRef());
    }
    const auto saved = ctx->get_saved_variables();
    torch::Tensor dx, dw, db;
    if (ctx->needs_input_grad(kX)) {
      // dy's groups run along N, which is this product's K.
      const auto dy_q = quantize_per_group(dy, Format::E5M2, ctx->saved_data["G_out"].toInt());
      const QuantizedTensor w_t{saved[1], saved[2], Format::E4M3, 0};
      dx = scaled_mm(dy_q, w_t, c10::nullopt, ctx->saved_data["x_dtype"].toScalarType());
    }
    if (ctx->needs_input_grad(kWeight)) {
      // In x's dtype, as a high-precision torch::nn::Linear would compute it (fp32 accumulation).
      dw = at::matmul(dy.t(), saved[0]).to(ctx->saved_data["weight_dtype"].toScalarType());
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(kBias)) {
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
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor linear_fp8_mixed(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, int64_t G_in, int64_t G_out,
                               const LinearFP8FuncOptions& options) {
  const auto layer = detail::layer_name(options, "fp8nn::functional::linear_fp8_mixed");
  detail::check_linear_args(x, weight, bias, layer);
  detail::check_group_size(G_in, "G_in", layer);
  detail::check_group_size(G_out, "G_out", layer);
  if (options.check_finite()) {
    detail::check_finite(x, "the input", layer);
    detail::check_finite(weight, "the weight", layer);
  }
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  // An undefined bias must not be a tensor argument of the autograd function.
  const auto optional_bias = bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt;
  const auto y = LinearFP8MixedFunction::apply(
      x.reshape({-1, in_features}).contiguous(), weight, optional_bias, G_in, G_out, layer,
      options.check_finite(), options.weight_cache(),
      options.amax_group().get());
  return y.view(detail::output_sizes(x, out_features));
}

}  // namespace fp8nn::functional
