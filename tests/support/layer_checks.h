#pragma once
// Checks shared by the error and reliability tests: expected errors with their message, a module's
// state before and after (nothing half-written), the two recipes as LayerFns checked against the
// emulation, and "non-finite wherever high precision is".

#include <fp8nn/fp8nn.h>

#include "linear_cases.h"
#include "test_support.h"

#include <string>
#include <vector>

namespace fp8nn::test {

/// Runs `call`, which must throw `Error` whose message contains every fragment.
template <typename Error, typename Call>
void check_error(Call&& call, const std::vector<std::string>& fragments) {
  bool thrown = false;
  try {
    call();
  } catch (const Error& e) {
    thrown = true;
    const std::string message = e.what_without_backtrace();
    INFO(message);
    for (const auto& fragment : fragments) CHECK(message.find(fragment) != std::string::npos);
  }
  CHECK(thrown);
}

/// The name a module's messages use.
template <typename Layer>
const char* name_of();
template <>
inline const char* name_of<fp8nn::LinearFP8Global>() {
  return "fp8nn::LinearFP8Global";
}
template <>
inline const char* name_of<fp8nn::LinearFP8Mixed>() {
  return "fp8nn::LinearFP8Mixed";
}

/// A module's parameters and gradients, copied.
struct Snapshot {
  std::vector<torch::Tensor> values, grads;
};

inline Snapshot snapshot(const torch::nn::Module& module) {
  Snapshot s;
  for (const auto& p : module.parameters()) {
    s.values.push_back(p.detach().clone());
    s.grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  }
  return s;
}

/// Parameters and gradients bit for bit as in `before` (NaN compares equal to NaN).
inline bool unchanged(const torch::nn::Module& module, const Snapshot& before) {
  const auto params = module.parameters();
  if (params.size() != before.values.size()) return false;
  const auto same = [](const torch::Tensor& a, const torch::Tensor& b) {
    return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
           a.device() == b.device() && count_bit_differences(a, b) == 0;
  };
  for (size_t i = 0; i < params.size(); ++i) {
    if (!same(params[i].detach(), before.values[i])) return false;
    if (params[i].grad().defined() != before.grads[i].defined()) return false;
    if (before.grads[i].defined() && !same(params[i].grad(), before.grads[i])) return false;
  }
  return true;
}

/// A recipe as a LayerFn; group sizes 0 take the table's (default_group_size).
inline LayerFn recipe_fn(fp8nn::Recipe recipe, int64_t G_in = 0, int64_t G_out = 0,
                         bool check_finite = false) {
  const auto options = functional::LinearFP8FuncOptions().check_finite(check_finite);
  if (recipe == fp8nn::Recipe::Global) {
    return [options](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
      return functional::linear_fp8_global(x, w, b, options);
    };
  }
  return [=](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
    return functional::linear_fp8_mixed(x, w, b, G_in > 0 ? G_in : default_group_size(w.size(1)),
                                        G_out > 0 ? G_out : default_group_size(w.size(0)), options);
  };
}

inline const char* name_of(fp8nn::Recipe recipe) {
  return recipe == fp8nn::Recipe::Global ? "Global" : "Mixed";
}

/// `run` (of recipe_fn(recipe, G_in, G_out)) against the emulation, with check_matches' bounds.
/// Mixed's weight gradient is a high-precision product in x's dtype: on CUDA, cuBLAS may reduce
/// fp16/bf16 partial sums in that dtype, so it gets one rounding of the sum of |terms| in x's
/// dtype there.
inline void check_recipe_matches(const LayerRun& run, fp8nn::Recipe recipe, int64_t G_in = 0,
                                 int64_t G_out = 0) {
  const auto x_dtype = run.x.scalar_type(), w_dtype = run.weight.scalar_type();
  if (recipe == fp8nn::Recipe::Global) {
    const auto ref = emulate_global(run.x2d(), run.weight, run.bias, run.dy2d());
    check_matches(run, ref, unit_roundoff(w_dtype));
    return;
  }
  G_in = G_in > 0 ? G_in : default_group_size(run.in_features());
  G_out = G_out > 0 ? G_out : default_group_size(run.out_features());
  const auto ref = emulate_mixed(run.x2d(), run.weight, run.bias, run.dy2d(), G_in, G_out);
  const bool low_precision_on_cuda = run.x.is_cuda() && x_dtype != torch::kFloat;
  if (!low_precision_on_cuda) {
    check_matches(run, ref, unit_roundoff(x_dtype) + unit_roundoff(w_dtype), false);
    return;
  }
  REQUIRE(run.x.grad().defined());
  REQUIRE(run.weight.grad().defined());
  CHECK(tolerance_ratio(run.weight.grad(), ref.dw, unit_roundoff(x_dtype) + unit_roundoff(w_dtype),
                        unit_roundoff(x_dtype),
                        subnormal_half_step(x_dtype) + subnormal_half_step(w_dtype)) <= 1.0);
  const auto device = run.x.device();
  CHECK(tolerance_ratio(run.y.reshape({-1, run.out_features()}), ref.y, x_dtype,
                        accumulation_relative(device, run.in_features(), true)) <= 1.0);
  CHECK(tolerance_ratio(run.x.grad().reshape({-1, run.in_features()}), ref.dx, x_dtype,
                        accumulation_relative(device, run.out_features(), false)) <= 1.0);
  if (run.bias.defined()) {
    CHECK(tolerance_ratio(run.bias.grad(), ref.db, run.bias.scalar_type()) <= 1.0);
  }
}

/// Wherever `hp` (high precision) is non-finite, `fp8` is too; `fp8` may be non-finite in more
/// places (one NaN poisons a shared scale).
inline void check_never_finite_where(const torch::Tensor& fp8, const torch::Tensor& hp) {
  const auto hp_bad = ~torch::isfinite(hp.cpu());
  CHECK((~torch::isfinite(fp8.cpu())).masked_select(hp_bad).all().item<bool>());
}

}  // namespace fp8nn::test
