// Layer training step (forward + backward) on the GPU, side by side in one process:
//   bf16   torch::nn::Linear in bf16
//   naive  what a libtorch user can write today: ATen amax/cast + at::_scaled_mm (tensorwise)
//   global fp8nn::LinearFP8Global        mixed  fp8nn::LinearFP8Mixed
// Median of many CUDA-event-timed steps after warm-up, inputs rotated so they come from HBM.
// Also the memory a step keeps saved for backward, and its peak.

#include <fmt/format.h>
#include <fp8nn/fp8nn.h>
#include <torch/torch.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench_layer.h"
#include "bench_timing.h"

namespace fp8nn::bench {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per-tensor current scaling written with ATen ops, as a user would (one scale, fp32).
std::pair<torch::Tensor, torch::Tensor> naive_quantize(const torch::Tensor& t, at::ScalarType fp8,
                                                       double fmt_max) {
  const auto amax = t.abs().amax().to(torch::kFloat).clamp_min(1e-12);
  const auto scale = fmt_max / amax;
  auto q = (t.to(torch::kFloat) * scale).clamp(-fmt_max, fmt_max).to(fp8);
  return {q, scale.reciprocal()};
}

// y = x W^T with all three products through at::_scaled_mm (its mat2 must be column-major).
struct NaiveFP8Linear : public torch::autograd::Function<NaiveFP8Linear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w) {
    auto [xq, xs] = naive_quantize(x, at::kFloat8_e4m3fn, 448.0);
    auto [wq, ws] = naive_quantize(w, at::kFloat8_e4m3fn, 448.0);
    ctx->save_for_backward({xq, xs, wq, ws});
    return at::_scaled_mm(xq, wq.t(), xs, ws, {}, {}, x.scalar_type());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &xq = saved[0], &xs = saved[1], &wq = saved[2], &ws = saved[3];
    auto [gq, gs] = naive_quantize(grads[0], at::kFloat8_e5m2, 57344.0);
    const auto out_dtype = grads[0].scalar_type();
    auto dx = at::_scaled_mm(gq, wq.t().contiguous().t(), gs, ws, {}, {}, out_dtype);
    auto dw =
        at::_scaled_mm(gq.t().contiguous(), xq.t().contiguous().t(), gs, xs, {}, {}, out_dtype);
    return {dx, dw};
  }
};

struct Shape {
  int64_t m, k, n;
};

struct Variant {
  std::string name;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  std::vector<torch::Tensor> parameters;
};

int64_t allocated_bytes() {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return stats.allocated_bytes[0].current;  // 0: aggregate over pools
}

struct Result {
  double ms = 0, saved_mib = 0, peak_mib = 0, host_us = 0;
};

Result measure(const Variant& v, const std::vector<torch::Tensor>& xs, const torch::Tensor& grad,
               int repetitions) {
  auto step = [&](int i) {
    const auto& x = xs[i % xs.size()];
    v.forward(x).backward(grad);
    for (const auto& p : v.parameters) p.mutable_grad() = torch::Tensor();
    x.mutable_grad() = torch::Tensor();
  };
  Result r;
  r.ms = median_ms(step, 10, repetitions);
  // Host time to enqueue one step (the GPU queue is drained first and holds the 20 steps): where
  // it exceeds the GPU time, the step is bound by the host, not by the kernels.
  torch::cuda::synchronize();
  constexpr int kHostSteps = 20;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kHostSteps; ++i) step(i);
  r.host_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
      kHostSteps;
  // Saved for backward: what the graph keeps alive beyond the output once the caller drops its
  // input. The input is a non-leaf copy (a leaf would be held by its AccumulateGrad node), so it
  // stays allocated only if the layer saved it, as bf16 Linear saves x.
  torch::cuda::synchronize();
  auto x = xs[0] * 1;
  const int64_t x_bytes = x.numel() * x.element_size();
  const int64_t before = allocated_bytes();
  auto y = v.forward(x);
  x = torch::Tensor();
  torch::cuda::synchronize();
  const int64_t output_bytes = y.numel() * y.element_size();
  r.saved_mib = double(allocated_bytes() - before + x_bytes - output_bytes) / (1 << 20);
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  const int64_t base = allocated_bytes();
  y.backward(grad);
  torch::cuda::synchronize();
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  r.peak_mib = double(stats.allocated_bytes[0].peak - base) / (1 << 20);
  for (const auto& p : v.parameters) p.mutable_grad() = torch::Tensor();
  xs[0].mutable_grad() = torch::Tensor();
  return r;
}

}  // namespace

int run_layer_bench(const std::vector<std::array<int64_t, 3>>& shapes, int repetitions) {
  const auto device = torch::Device(torch::kCUDA);
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16).device(device);
  fmt::print(
      "# layer step (forward + backward), bf16 activations, no bias, median of {} steps; "
      "GEMM autotuning {}\n",
      repetitions, fp8nn::functional::gemm_autotuning() ? "on" : "off");
  const std::vector<std::string> names = {"bf16",      "naive",      "global",    "global-mb",
                                          "mixed",     "mixed-mb",   "global-nm", "mixed-nm"};
  std::string header = fmt::format("| {:>6} {:>6} {:>6} |", "M", "K", "N");
  for (const auto& n : names) header += fmt::format(" {:>9}", n == "bf16" ? "bf16 ms" : n);
  header += " |";
  for (size_t i = 1; i < names.size(); ++i) header += fmt::format(" {:>9}", names[i] + "×");
  header += " |";
  for (const auto& n : names) header += fmt::format(" {:>9}", "sv " + n);
  header += " |";
  for (const auto& n : names) header += fmt::format(" {:>9}", "pk " + n);
  header += " |";
  for (const auto& n : names) header += fmt::format(" {:>9}", "host " + n);
  fmt::print("{} |\n", header);
  for (const auto& [m, k, n] : shapes) {
    torch::manual_seed(0);
    // Rotate among enough inputs that each step reads its x from HBM (> 50 MB L2 in total).
    const int64_t x_bytes = m * k * 2;
    const int copies = static_cast<int>(std::max<int64_t>(2, (200LL << 20) / x_bytes + 1));
    std::vector<torch::Tensor> xs;
    for (int i = 0; i < std::min(copies, 8); ++i) {
      xs.push_back(torch::randn({m, k}, bf16).requires_grad_());
    }
    const auto grad = torch::randn({m, n}, bf16);

    torch::nn::Linear linear(torch::nn::LinearOptions(k, n).bias(false));
    linear->to(device, torch::kBFloat16);
    // Default modules quantize W at every forward (the weight cache reuses nothing unless asked),
    // as in training, where each step changes W. The -mb variants reuse W's copies while its
    // version counter stands (WeightReuse::UntilVersionChange; W never changes here), as the
    // micro-batches of a gradient-accumulation step inside a WeightReuseGuard do.
    LinearFP8Global global(LinearFP8Options(k, n).bias(false));
    global->to(device, torch::kBFloat16);
    LinearFP8Global global_mb(LinearFP8Options(k, n).bias(false));
    global_mb->to(device, torch::kBFloat16);
    global_mb->weight_cache->set_reuse(fp8nn::functional::WeightReuse::UntilVersionChange);
    LinearFP8Mixed mixed(LinearFP8Options(k, n).bias(false));
    mixed->to(device, torch::kBFloat16);
    LinearFP8Mixed mixed_mb(LinearFP8Options(k, n).bias(false));
    mixed_mb->to(device, torch::kBFloat16);
    mixed_mb->weight_cache->set_reuse(fp8nn::functional::WeightReuse::UntilVersionChange);
    // The -nm variants run with a numerics monitor (counts of every cast, no product errors).
    LinearFP8Global global_nm(LinearFP8Options(k, n).bias(false));
    global_nm->to(device, torch::kBFloat16);
    fp8nn::enable_numerics(*global_nm);
    LinearFP8Mixed mixed_nm(LinearFP8Options(k, n).bias(false));
    mixed_nm->to(device, torch::kBFloat16);
    fp8nn::enable_numerics(*mixed_nm);
    auto naive_weight = linear->weight.detach().clone().requires_grad_();

    const std::vector<Variant> variants = {
        {"bf16", [&](const torch::Tensor& x) { return linear(x); }, {linear->weight}},
        {"naive",
         [&](const torch::Tensor& x) { return NaiveFP8Linear::apply(x, naive_weight); },
         {naive_weight}},
        {"global", [&](const torch::Tensor& x) { return global(x); }, {global->weight}},
        {"global-mb", [&](const torch::Tensor& x) { return global_mb(x); }, {global_mb->weight}},
        {"mixed", [&](const torch::Tensor& x) { return mixed(x); }, {mixed->weight}},
        {"mixed-mb", [&](const torch::Tensor& x) { return mixed_mb(x); }, {mixed_mb->weight}},
        {"global-nm", [&](const torch::Tensor& x) { return global_nm(x); }, {global_nm->weight}},
        {"mixed-nm", [&](const torch::Tensor& x) { return mixed_nm(x); }, {mixed_nm->weight}},
    };
    std::vector<Result> results;
    for (const auto& v : variants) {
      // FP8NN_BENCH_VARIANTS=global-nc,mixed-nc (for a profiler run) times only those and bf16.
      const char* only = std::getenv("FP8NN_BENCH_VARIANTS");
      const bool wanted =
          only == nullptr || v.name == "bf16" ||
          ("," + std::string(only) + ",").find("," + v.name + ",") != std::string::npos;
      results.push_back(wanted ? measure(v, xs, grad, repetitions) : Result{});
    }
    const double base = results[0].ms;
    std::string row = fmt::format("| {:>6} {:>6} {:>6} |", m, k, n);
    for (const auto& r : results) row += fmt::format(" {:>9.3f}", r.ms);
    row += " |";
    for (size_t i = 1; i < results.size(); ++i)
      row += fmt::format(" {:>8.2f}x", base / results[i].ms);
    row += " |";
    for (const auto& r : results) row += fmt::format(" {:>9.1f}", r.saved_mib);
    row += " |";
    for (const auto& r : results) row += fmt::format(" {:>9.1f}", r.peak_mib);
    row += " |";
    for (const auto& r : results) row += fmt::format(" {:>9.1f}", r.host_us);
    fmt::print("{} |\n", row);
  }
  fmt::print(
      "# ×: speedup over bf16 (higher is better); -mb: micro-batches (W's FP8 copies "
      "reused while W is unchanged; the default re-quantizes W every step); -nm: with a numerics "
      "monitor (fp8nn::enable_numerics); sv: MiB saved for backward "
      "beyond the output (x included where the graph "
      "keeps it; a weight copy the cache already held is not counted); pk: peak MiB allocated "
      "during backward; host: µs of host time to enqueue one step\n");
  return 0;
}

}  // namespace fp8nn::bench
