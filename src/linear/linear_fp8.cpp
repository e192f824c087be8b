// The FP8 linear engine: one autograd function that runs any supported Recipe. Forward quantizes
// x and W as the recipe says and multiplies them with functional::scaled_mm; backward branches
// on the recipe it saved. linear_fp8_global and linear_fp8_mixed are this function with a preset.
// docs/design.md ("The data path") follows one call through it.

#include <fp8nn/linear_functional.h>
#include <fp8nn/numerics.h>
#include <fp8nn/quantize.h>
#include <fp8nn/recipe.h>
#include <fp8nn/scaled_mm.h>

#include <torch/autograd.h>
#include <torch/custom_class.h>

#include <cmath>

#include "linear/amax_group.h"
#include "linear/linear_checks.h"
#include "quantize/quantize_detail.h"

namespace fp8nn::functional {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Indices of needs_input_grad: it counts tensor arguments only (bias only when present).
enum Input : size_t { kX = 0, kWeight = 1, kBias = 2 };

// What a call needs besides its tensors: the recipe with its group sizes resolved, and the
// options. Backward receives the same object (one capsule in the context, no string keys).
struct LinearPlan : torch::CustomClassHolder {
  Recipe recipe;
  std::string layer;
  bool check_finite = false;
  std::shared_ptr<WeightCache> weight_cache;
  detail::AmaxGroup amax_group;
  // The layer's monitor (or null) and whether this step measures the products' errors.
  std::shared_ptr<NumericsMonitor> numerics;
  bool measure_errors = false;
  // The layer's delayed-scaling state when the recipe asks for delayed scaling, else null.
  std::shared_ptr<DelayedScalingState> delayed_scaling;
  // Filled by forward: the dtypes the gradients come back in.
  at::ScalarType x_dtype = at::kFloat, weight_dtype = at::kFloat, bias_dtype = at::kFloat;
  bool has_bias = false;
  // Filled by forward: backward rebuilds W's transposed FP8 copy from W and its amax (saved in
  // place of the copy and its scale_inv).
  bool rebuild_weight_t = false;
};

bool is_fp8(const ProductRecipe& product) { return product.precision == Precision::FP8; }
bool fast(const ProductRecipe& product) { return product.accumulation == Accumulation::Fast; }

// With delayed scaling (x and dy), the layer's state row of `which`.
detail::DelayedTensors delayed_tensors(const LinearPlan& plan, Format format, Operand which) {
  DelayedScalingState& state = *plan.delayed_scaling;
  const int row = which == Operand::Input ? 0 : 1;
  detail::DelayedTensors delayed;
  delayed.history = state.amax_history.select(0, row);
  delayed.scale = state.scale.narrow(0, row, 1);
  delayed.counts = state.counts.select(0, row);
  delayed.scratch = state.scratch().select(0, row);
  delayed.scaled_max = std::ldexp(max_of(format), -plan.recipe.delayed.margin);
  delayed.most_recent = plan.recipe.delayed.amax_compute == AmaxCompute::MostRecent;
  delayed.first = !state.started(row);
  state.set_started(row);
  return delayed;
}

// An operand quantized as its recipe says: per 128x128 block, per group, or per tensor with the
// amax reduced over the plan's group when there is one, and then with its transposed copy when a
// backward product needs it (per block: the transpose; per group: groups along the other
// dimension); with delayed scaling, per tensor with the scale of the layer's state
// (delayed_tensors). With a monitor, the cast counts into its row for `which` and the scales are
// recorded.
QuantizedPair quantize_operand(const torch::Tensor& t, const OperandRecipe& operand,
                               bool with_transpose, const LinearPlan& plan, Operand which,
                               torch::Tensor* column_sums = nullptr) {
  NumericsMonitor* monitor = plan.numerics.get();
  const auto counts =
      monitor != nullptr ? monitor->begin_operand(which, t.numel(), t.device()) : torch::Tensor();
  QuantizedPair q;
  if (operand.scaling == Scaling::Block128x128) {
    q = detail::quantize_per_block(t, operand.format, with_transpose, counts,
                                   operand.power_of_two_scales);
  } else if (plan.delayed_scaling != nullptr) {
    q = detail::quantize_delayed(t, operand.format, with_transpose,
                                 delayed_tensors(plan, operand.format, which), counts);
  } else if (operand.scaling == Scaling::PerGroup) {
    // The weight gradient reduces over the rows (tokens): its copy has its groups along them, a
    // quantization of t^T of its own (not a transpose of the row copy). The monitor counts each
    // value once, in the row copy.
    if (with_transpose) {
      q = detail::quantize_per_group_with_transpose(t, operand.format, operand.group_size, counts,
                                                    operand.power_of_two_scales);
    } else {
      q.quantized = detail::quantize_per_group(t, operand.format, operand.group_size, counts,
                                               operand.power_of_two_scales);
    }
  } else if (with_transpose) {
    q = detail::quantize_with_transpose(t, operand.format, plan.amax_group, counts, column_sums);
  } else {
    q.quantized = detail::quantize(t, operand.format, plan.amax_group, counts);
  }
  if (monitor != nullptr) monitor->record_scales(which, q.quantized.scale_inv);
  return q;
}

// ||product - reference|| / ||reference|| (Frobenius, fp32) as a 0-d tensor, no host sync.
torch::Tensor relative_error(const torch::Tensor& product, const torch::Tensor& reference) {
  return (product.to(at::kFloat) - reference).norm() / reference.norm();
}

// x: [M, K], weight: [N, K], bias: [N] or none.
class LinearFP8Function : public torch::autograd::Function<LinearFP8Function> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight,
                               const c10::optional<torch::Tensor>& bias,
                               c10::intrusive_ptr<LinearPlan> plan) {
    const Recipe& recipe = plan->recipe;
    // needs_input_grad needs a recorded graph; requires_grad is the same question asked early
    // (under NoGradGuard it over-asks, and the node holding the copies is dropped at once).
    const bool want_dx = x.requires_grad(), want_dw = weight.requires_grad();
    const bool fp8_dgrad = is_fp8(recipe.grad_input) && want_dx;
    const bool fp8_wgrad = is_fp8(recipe.grad_weight) && want_dw;

    // A per-tensor x gets its K-major copy (the B operand of dW = dy^T x) in the same pass.
    const auto x_q = quantize_operand(x, recipe.x, fp8_wgrad, *plan, Operand::Input);
    // W's row-major copy feeds this product, its [K, N] copy dx = dy W. Unless the cache keeps
    // both copies, only the row-major one is made now, and backward rebuilds the [K, N] one from
    // W and w_amax (the same bytes), so that the step keeps no FP8 copy of W alive in between.
    // With a shared amax the ranks must quantize together, so the cache (a per-process decision)
    // stays out of it.
    // A block-scaled W takes no cache yet: its row-major copy now, its transpose rebuilt in
    // backward from W (the same bytes).
    torch::Tensor w_amax;
    const bool block_weight = recipe.weight.scaling == Scaling::Block128x128;
    const auto w_q = plan->amax_group || block_weight
                         ? quantize_operand(weight, recipe.weight, /*with_transpose=*/!block_weight,
                                            *plan, Operand::Weight)
                         : detail::quantize_weight(weight, plan->weight_cache.get(), plan->layer,
                                                   plan->numerics.get(), &w_amax);
    auto y = scaled_mm(x_q.quantized, w_q.quantized, bias, x.scalar_type(), fast(recipe.forward));
    if (plan->measure_errors) {
      auto reference = at::matmul(x.to(at::kFloat), weight.to(at::kFloat).t());
      if (bias.has_value()) reference += bias->to(at::kFloat);
      plan->numerics->record_error(Product::Forward, relative_error(y, reference));
    }

    // Only what the backward products read is kept: FP8 copies for FP8 products, the
    // high-precision tensors for the others.
    torch::Tensor x_saved, x_scale_inv, w_saved, w_scale_inv;
    if (want_dw) {
      x_saved = fp8_wgrad ? x_q.transposed.data : x;
      if (fp8_wgrad) x_scale_inv = x_q.transposed.scale_inv;
    }
    if (want_dx) {
      if (!fp8_dgrad || w_amax.defined() || block_weight) {
        w_saved = weight;  // a reference: autograd's version check guards it
        w_scale_inv = w_amax;
        plan->rebuild_weight_t = fp8_dgrad && !block_weight;
      } else {
        w_saved = w_q.transposed.data;
        w_scale_inv = w_q.transposed.scale_inv;
      }
    }
    // A step that measures the products' errors also keeps x and W (references, not copies).
    if (plan->measure_errors) {
      ctx->save_for_backward({x_saved, x_scale_inv, w_saved, w_scale_inv, x, weight});
    } else {
      ctx->save_for_backward({x_saved, x_scale_inv, w_saved, w_scale_inv});
    }
    plan->x_dtype = x.scalar_type();
    plan->weight_dtype = weight.scalar_type();
    plan->has_bias = bias.has_value();
    plan->bias_dtype = bias.has_value() ? bias->scalar_type() : weight.scalar_type();
    ctx->saved_data[kPlan] = c10::IValue::make_capsule(std::move(plan));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto plan =
        c10::static_intrusive_pointer_cast<LinearPlan>(ctx->saved_data[kPlan].toCapsule());
    const Recipe& recipe = plan->recipe;
    const auto dy = grad_outputs[0].contiguous();  // [M, N], x's dtype
    const bool want_dx = ctx->needs_input_grad(kX), want_dw = ctx->needs_input_grad(kWeight);
    const bool want_db = plan->has_bias && ctx->needs_input_grad(kBias);
    if (plan->check_finite) detail::check_finite(dy, "the output gradient", plan->layer);
    const auto saved = ctx->get_saved_variables();
    const bool fp8_dgrad = want_dx && is_fp8(recipe.grad_input);
    const bool fp8_wgrad = want_dw && is_fp8(recipe.grad_weight);

    // dy's copies: row-major (A of dx = dy W; per group, the groups run along N, dx's K) and,
    // for an FP8 weight gradient, K-major (A of dW = dy^T x) from the same pass.
    // A per-tensor dy with a transposed copy gives the bias gradient from that same pass.
    QuantizedPair dy_q;
    torch::Tensor dy_column_sums;
    if (fp8_wgrad || fp8_dgrad) {
      const bool sums_with_cast = want_db && fp8_wgrad && plan->delayed_scaling == nullptr &&
                                  recipe.grad_output.scaling == Scaling::PerTensor;
      dy_q = quantize_operand(dy, recipe.grad_output, fp8_wgrad, *plan, Operand::GradOutput,
                              sums_with_cast ? &dy_column_sums : nullptr);
    }
    const bool measure = plan->measure_errors && saved.size() == 6;
    torch::Tensor dx, dw, db;
    if (want_dx) {
      if (fp8_dgrad) {
        QuantizedTensor w_t;
        if (recipe.weight.scaling == Scaling::Block128x128) {
          w_t = detail::quantize_per_block(saved[2], recipe.weight.format, /*with_transpose=*/true,
                                           torch::Tensor(), recipe.weight.power_of_two_scales,
                                           /*row_copy=*/false)
                    .transposed;
        } else if (plan->rebuild_weight_t) {
          w_t = detail::quantize_transposed(saved[2], recipe.weight.format, saved[3]);
        } else {
          w_t = QuantizedTensor{saved[2], saved[3], recipe.weight.format, 0};
        }
        dx = scaled_mm(dy_q.quantized, w_t, c10::nullopt, plan->x_dtype, fast(recipe.grad_input));
        if (measure) {
          const auto reference = at::matmul(dy.to(at::kFloat), saved[5].to(at::kFloat));
          plan->numerics->record_error(Product::GradInput, relative_error(dx, reference));
        }
      } else {
        dx = at::matmul(dy, saved[2].to(dy.scalar_type()));
      }
      // dy's row-major copy is done with: free it before the weight gradient's product.
      dy_q.quantized = QuantizedTensor();
    }
    if (want_dw) {
      if (fp8_wgrad) {
        // Per group, x^T was quantized with its groups along the rows of x (quantize_operand).
        const int64_t x_t_group =
            recipe.x.scaling == Scaling::PerGroup ? recipe.x.group_size : int64_t{0};
        const QuantizedTensor x_t{saved[0], saved[1], recipe.x.format, x_t_group};
        dw = scaled_mm(dy_q.transposed, x_t, c10::nullopt, plan->weight_dtype,
                       fast(recipe.grad_weight));
        if (measure) {
          const auto reference = at::matmul(dy.to(at::kFloat).t(), saved[4].to(at::kFloat));
          plan->numerics->record_error(Product::GradWeight, relative_error(dw, reference));
        }
      } else {
        // In x's dtype, as a high-precision torch::nn::Linear computes it (fp32 accumulation).
        dw = at::matmul(dy.t(), saved[0]).to(plan->weight_dtype);
      }
    }
    if (want_db) {
      db = (dy_column_sums.defined() ? dy_column_sums : dy.sum(0, /*keepdim=*/false, at::kFloat))
               .to(plan->bias_dtype);
    }
    return {dx, dw, db, torch::Tensor()};
  }

 private:
  static constexpr const char* kPlan = "plan";
};

torch::Tensor run_linear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const Recipe& recipe,
                         const LinearFP8FuncOptions& options, const std::string& layer) {
  if (options.check_finite()) {
    detail::check_finite(x, "the input", layer);
    detail::check_finite(weight, "the weight", layer);
  }
  const int64_t in_features = weight.size(1), out_features = weight.size(0);
  auto plan = c10::make_intrusive<LinearPlan>();
  plan->recipe = recipe.resolved(in_features, out_features);
  plan->layer = layer;
  plan->check_finite = options.check_finite();
  plan->weight_cache = options.weight_cache();
  plan->amax_group = options.amax_group().get();
  plan->numerics = options.numerics();
  if (plan->recipe.delayed.enabled()) {
    const auto& state = options.delayed_scaling();
    TORCH_CHECK_VALUE(state != nullptr, layer,
                      ": a recipe with delayed scaling needs its layer's state: pass "
                      "LinearFP8FuncOptions::delayed_scaling, or use fp8nn::LinearFP8");
    TORCH_CHECK_VALUE(state->history_len() == plan->recipe.delayed.history_len, layer,
                      ": expected a delayed-scaling state with history_len ",
                      plan->recipe.delayed.history_len, " (the recipe's), got ",
                      state->history_len());
    TORCH_CHECK(state->amax_history.device() == x.device(), layer,
                ": expected the delayed-scaling state on x's device ", x.device(), ", got ",
                state->amax_history.device());
    TORCH_CHECK_VALUE(!plan->amax_group, layer,
                      ": delayed scaling with an amax group is not supported yet (the ranks' "
                      "histories would differ); use current scaling with amax_group");
    plan->delayed_scaling = state;
  }
  // A forward that autograd records is a training step of the monitor (error_every counts them).
  if (plan->numerics && torch::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad())) {
    plan->measure_errors = plan->numerics->begin_forward();
  }
  // An undefined bias must not be a tensor argument of the autograd function.
  const auto optional_bias = bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt;
  // A 2-d x goes in as it is (contiguous() of a contiguous tensor is itself): no view ops.
  if (x.dim() == 2) {
    return LinearFP8Function::apply(x.contiguous(), weight, optional_bias, std::move(plan));
  }
  const auto y = LinearFP8Function::apply(x.reshape({-1, in_features}).contiguous(), weight,
                                          optional_bias, std::move(plan));
  return y.view(detail::output_sizes(x, out_features));
}

}  // namespace

torch::Tensor linear_fp8(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const Recipe& recipe,
                         const LinearFP8FuncOptions& options) {
  const auto layer = detail::layer_name(options, "fp8nn::functional::linear_fp8");
  check_recipe(recipe, layer);
  detail::check_linear_args(x, weight, bias, layer);
  return run_linear(x, weight, bias, recipe, options, layer);
}

torch::Tensor linear_fp8_global(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias, const LinearFP8FuncOptions& options) {
  const auto layer = detail::layer_name(options, "fp8nn::functional::linear_fp8_global");
  detail::check_linear_args(x, weight, bias, layer);
  return run_linear(x, weight, bias, Recipe::global(), options, layer);
}

torch::Tensor linear_fp8_mixed(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, int64_t G_in, int64_t G_out,
                               const LinearFP8FuncOptions& options) {
  const auto layer = detail::layer_name(options, "fp8nn::functional::linear_fp8_mixed");
  detail::check_linear_args(x, weight, bias, layer);
  detail::check_group_size(G_in, "G_in", layer);
  detail::check_group_size(G_out, "G_out", layer);
  return run_linear(x, weight, bias, Recipe::mixed(G_in, G_out), options, layer);
}

}  // namespace fp8nn::functional
