// Host cost of the pieces of one layer step: microseconds of host time to enqueue each piece,
// averaged over many calls (the GPU runs behind; the queue is drained before each piece). Where a
// step is host-bound (small shapes), this says which piece the host time goes to.

#include <fmt/format.h>
#include <fp8nn/fp8nn.h>
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench_host.h"

namespace fp8nn::bench {
namespace {

// The framework's share of a custom layer: a torch::autograd::Function that launches nothing
// (outputs from at::empty_like), so its step is the cost of apply, the saved tensors and the
// engine's backward call alone.
class EmptyFunction : public torch::autograd::Function<EmptyFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight) {
    ctx->save_for_backward({x, weight});
    return at::empty({x.size(0), weight.size(0)}, x.options());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    return {at::empty_like(saved[0]), at::empty_like(saved[1])};
  }
};

// Mean host microseconds of one call of `piece`, after 20 untimed calls.
double host_us(const std::function<void()>& piece, int calls) {
  for (int i = 0; i < 20; ++i) piece();
  torch::cuda::synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) piece();
  const auto stop = std::chrono::steady_clock::now();
  torch::cuda::synchronize();
  return std::chrono::duration<double, std::micro>(stop - start).count() / calls;
}

}  // namespace

int run_host_bench(const std::vector<std::array<int64_t, 3>>& shapes, int calls) {
  namespace F = fp8nn::functional;
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  fmt::print("# host µs to enqueue each piece of a layer step (bf16, no bias), mean of {} calls\n",
             calls);
  for (const auto& [m, k, n] : shapes) {
    torch::manual_seed(0);
    const auto x = torch::randn({m, k}, bf16);
    const auto x_grad = torch::randn({m, k}, bf16).requires_grad_();
    const auto dy = torch::randn({m, n}, bf16);
    torch::nn::Linear linear(torch::nn::LinearOptions(k, n).bias(false));
    linear->to(torch::kCUDA, torch::kBFloat16);
    LinearFP8Global global(LinearFP8Options(k, n).bias(false));
    global->to(torch::kCUDA, torch::kBFloat16);
    LinearFP8 delayed(LinearFP8Options(k, n).bias(false).recipe(Recipe::global_delayed()));
    delayed->to(torch::kCUDA, torch::kBFloat16);
    LinearFP8Mixed mixed(LinearFP8Options(k, n).bias(false));
    mixed->to(torch::kCUDA, torch::kBFloat16);
    const auto xq = F::quantize(x, Format::E4M3);
    const auto wq = F::quantize(global->weight.detach(), Format::E4M3);
    auto step = [&](auto& layer) {
      return [&] {
        layer(x_grad).backward(dy);
        layer->weight.mutable_grad() = torch::Tensor();
        x_grad.mutable_grad() = torch::Tensor();
      };
    };
    const std::vector<std::pair<std::string, std::function<void()>>> pieces = {
        {"at::empty",
         [&] {
           (void)at::empty({m, k}, bf16);
         }},
        {"amax (ATen)", [&] { (void)x.abs().amax(); }},
        {"quantize", [&] { (void)F::quantize(x, Format::E4M3); }},
        {"quantize+T", [&] { (void)F::quantize_with_transpose(x, Format::E4M3); }},
        {"scaled_mm", [&] { (void)F::scaled_mm(xq, wq, c10::nullopt, torch::kBFloat16, true); }},
        {"matmul bf16", [&] { (void)at::matmul(x, linear->weight.detach().t()); }},
        {"bf16 fwd",
         [&] {
           const torch::NoGradGuard no_grad;
           (void)linear(x);
         }},
        {"global fwd",
         [&] {
           const torch::NoGradGuard no_grad;
           (void)global(x);
         }},
        {"empty Function step",
         [&] {
           EmptyFunction::apply(x_grad, global->weight).backward(dy);
           global->weight.mutable_grad() = torch::Tensor();
           x_grad.mutable_grad() = torch::Tensor();
         }},
        {"bf16 step", step(linear)},
        {"global step", step(global)},
        {"delayed step", step(delayed)},
        {"mixed step", step(mixed)},
    };
    std::string header = fmt::format("| {:>6} {:>6} {:>6} |", "M", "K", "N");
    std::string row = fmt::format("| {:>6} {:>6} {:>6} |", m, k, n);
    for (const auto& [name, piece] : pieces) {
      header += fmt::format(" {:>12}", name);
      row += fmt::format(" {:>12.1f}", host_us(piece, calls));
    }
    fmt::print("{} |\n{} |\n", header, row);
  }
  return 0;
}

}  // namespace fp8nn::bench
