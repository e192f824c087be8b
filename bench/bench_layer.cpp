// Layer training step (forward + backward) on the GPU, side by side in one process:
//   bf16   torch::nn::Linear in bf16
//   naive  what a libtorch user can write today: ATen amax/cast + at::_scaled_mm (tensorwise)
//   global fp8nn::LinearFP8Global        mixed  fp8nn::LinearFP8Mixed
//   and variants of these (see the legend printed under the table), some replayed from CUDA graphs.
// Variants are timed interleaved, each step between its own CUDA events, after warm-up; eager
// steps rotate their inputs so they come from HBM.
// Also the memory a step keeps saved for backward, and its peak.

#include <fmt/format.h>
#include <fp8nn/fp8nn.h>
#include <torch/torch.h>

#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_layer.h"
#include "bench_timing.h"
#include "common/scoped_env.h"
#include "src/gemm/cuda/group_gemm_cuda.h"

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
  // Captured in a CUDA graph (forward and backward) and replayed, after eager warm-up steps.
  bool graphed = false;
  // The variant its × column compares with (empty: the first, bf16).
  std::string baseline;
  // FP8NN_GROUP_GEMM for its steps (null: as the process has it).
  const char* route = nullptr;
  // FP8NN_TILE_LOAD for its steps (null: as the process has it).
  const char* tile_load = nullptr;
};

// bf16 autocast around a forward, as torch.autocast does: the cast weights are cached within the
// region only, so every step casts the fp32 weights again.
torch::Tensor autocast_bf16(const std::function<torch::Tensor()>& forward) {
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::increment_nesting();
  auto y = forward();
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  return y;
}

int64_t allocated_bytes() {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return stats.allocated_bytes[0].current;  // 0: aggregate over pools
}

struct Result {
  double ms = 0, ratio = 0, saved_mib = 0, peak_mib = 0, host_us = 0;
};

// One training step of a variant without its parameter and input gradients kept (nothing
// accumulates from step to step).
void eager_step(const Variant& v, const torch::Tensor& x, const torch::Tensor& grad) {
  v.forward(x).backward(grad);
  for (const auto& p : v.parameters) p.mutable_grad() = torch::Tensor();
  x.mutable_grad() = torch::Tensor();
}

// A variant's step as the timing loop runs it: eager on the rotated inputs, or a replay of its
// graph (captured here on a side stream, after 3 eager steps there), whose input is a static copy
// that each sample refreshes before its timed replay.
struct Stepper {
  const Variant* variant = nullptr;
  const std::vector<torch::Tensor>* xs = nullptr;
  torch::Tensor grad;
  std::shared_ptr<at::cuda::CUDAGraph> graph;
  torch::Tensor static_x;

  void prepare(int i) {
    if (graph) static_x.detach().copy_((*xs)[i % xs->size()].detach());
  }
  void run(int i) {
    if (graph) {
      graph->replay();
    } else {
      // Variants of different routes run interleaved: each step sets its own.
      std::unique_ptr<fp8nn::cuda::ScopedGroupGemmRoute> route;
      if (variant->route != nullptr) {
        route = std::make_unique<fp8nn::cuda::ScopedGroupGemmRoute>(variant->route);
      }
      const fp8nn::ScopedEnv tile_load("FP8NN_TILE_LOAD", variant->tile_load);
      eager_step(*variant, (*xs)[i % xs->size()], grad);
    }
  }
  void capture() {
    static_x = (*xs)[0].detach().clone().requires_grad_();
    const auto side = at::cuda::getStreamFromPool();
    torch::cuda::synchronize();
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      for (int i = 0; i < 3; ++i) eager_step(*variant, static_x, grad);
    }
    torch::cuda::synchronize();
    graph = std::make_shared<at::cuda::CUDAGraph>();
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      graph->capture_begin();
      variant->forward(static_x).backward(grad);
      graph->capture_end();
    }
    torch::cuda::synchronize();
  }
};

// Times the variants interleaved: each sample runs every variant once, each between its own pair
// of CUDA events, in an order rotated from sample to sample (so that each variant follows each
// other one about equally often and drift falls on all alike), with one synchronisation at the
// end. Returns each variant's median and the median over samples of t_b / t_v, the ratio paired
// within a sample, b = baselines[v] (bf16 for eager variants, bf16 replayed for graphed ones).
void time_interleaved(std::vector<Stepper>& steppers, const std::vector<size_t>& baselines,
                      int warmup, int samples, std::vector<Result>& results) {
  const size_t count = steppers.size();
  for (int i = 0; i < warmup; ++i) {
    for (auto& s : steppers) {
      s.prepare(i);
      s.run(i);
    }
  }
  std::vector<at::cuda::CUDAEvent> starts, stops;  // with timing (the default flags have none)
  for (size_t e = 0; e < count * samples; ++e) {
    starts.emplace_back(cudaEventDefault);
    stops.emplace_back(cudaEventDefault);
  }
  for (int sample = 0; sample < samples; ++sample) {
    for (size_t j = 0; j < count; ++j) {
      const size_t v = (sample + j) % count;
      steppers[v].prepare(warmup + sample);
      starts[sample * count + v].record();
      steppers[v].run(warmup + sample);
      stops[sample * count + v].record();
    }
  }
  for (auto& e : stops) e.synchronize();
  std::vector<std::vector<double>> ms(count, std::vector<double>(samples));
  for (int sample = 0; sample < samples; ++sample) {
    for (size_t v = 0; v < count; ++v) {
      ms[v][sample] = starts[sample * count + v].elapsed_time(stops[sample * count + v]);
    }
  }
  auto median = [](std::vector<double> values) {
    std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
    return values[values.size() / 2];
  };
  for (size_t v = 0; v < count; ++v) {
    std::vector<double> ratios(samples);
    for (int sample = 0; sample < samples; ++sample) {
      ratios[sample] = ms[baselines[v]][sample] / ms[v][sample];
    }
    results[v].ms = median(ms[v]);
    results[v].ratio = median(ratios);
  }
}

// Host time, saved-for-backward and peak memory of one eager variant.
void measure_memory_and_host(const Variant& v, const std::vector<torch::Tensor>& xs,
                             const torch::Tensor& grad, Result& r) {
  std::unique_ptr<fp8nn::cuda::ScopedGroupGemmRoute> route;
  if (v.route != nullptr) route = std::make_unique<fp8nn::cuda::ScopedGroupGemmRoute>(v.route);
  const fp8nn::ScopedEnv tile_load("FP8NN_TILE_LOAD", v.tile_load);
  // Host time to enqueue one step (the GPU queue is drained first and holds the 20 steps): where
  // it exceeds the GPU time, the step is bound by the host, not by the kernels.
  torch::cuda::synchronize();
  constexpr int kHostSteps = 20;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kHostSteps; ++i) eager_step(v, xs[i % xs.size()], grad);
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
}

}  // namespace

int run_layer_bench(const std::vector<std::array<int64_t, 3>>& shapes, int repetitions) {
  const auto device = torch::Device(torch::kCUDA);
  const auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16).device(device);
  fmt::print(
      "# layer step (forward + backward), bf16 activations, no bias, median of {} steps; "
      "GEMM autotuning {}\n",
      repetitions, fp8nn::functional::gemm_autotuning() ? "on" : "off");
  const std::vector<std::string> all_names = {
      "bf16",      "naive",     "global",    "global-mb", "mixed",    "mixed-mb",
      "global-nm", "mixed-nm",  "global-dl", "bf16-g",    "global-g", "global-dl-g",
      "bf16-ac",   "global-rs", "bw",        "bw-lt",     "bw-sm90",  "bw-sm90-2",
      "bw-sm90-n", "mixed-2",   "bw-qr",     "mixed-qr"};
  // FP8NN_BENCH_VARIANTS=global,mixed (for a profiler run) times only those and bf16; the table
  // has columns for the variants timed only.
  const char* only = std::getenv("FP8NN_BENCH_VARIANTS");
  const auto wanted = [only](const std::string& name) {
    return only == nullptr || name == "bf16" ||
           ("," + std::string(only) + ",").find("," + name + ",") != std::string::npos;
  };
  std::vector<std::string> names;
  for (const auto& name : all_names) {
    if (wanted(name)) names.push_back(name);
  }
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
    // -dl: delayed scaling of x and dy (Recipe::global_delayed()).
    LinearFP8 global_dl(LinearFP8Options(k, n).bias(false).recipe(Recipe::global_delayed()));
    global_dl->to(device, torch::kBFloat16);
    // bw: Recipe::blockwise() (1x128 x and dy, 128x128 W) with its products on cuBLASLt's block
    // modes (-lt) or on group_gemm_sm90 (-sm90): FP8NN_GROUP_GEMM=cublaslt or sm90 for its steps.
    LinearFP8 blockwise(LinearFP8Options(k, n).bias(false).recipe(Recipe::blockwise()));
    blockwise->to(device, torch::kBFloat16);
    auto naive_weight = linear->weight.detach().clone().requires_grad_();
    // The README's usual setup: fp32 master weights and a bias, bf16 input. Its baseline is
    // torch::nn::Linear in fp32 under bf16 autocast.
    torch::nn::Linear linear_ac(torch::nn::LinearOptions(k, n).bias(true));
    linear_ac->to(device);
    LinearFP8Global global_rs(LinearFP8Options(k, n).bias(true));
    global_rs->to(device);

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
        {"global-dl", [&](const torch::Tensor& x) { return global_dl(x); }, {global_dl->weight}},
        // -g: the same step captured in a CUDA graph and replayed (no host cost per step).
        {"bf16-g", [&](const torch::Tensor& x) { return linear(x); }, {linear->weight}, true},
        {"global-g",
         [&](const torch::Tensor& x) { return global(x); },
         {global->weight},
         true,
         "bf16-g"},
        {"global-dl-g",
         [&](const torch::Tensor& x) { return global_dl(x); },
         {global_dl->weight},
         true,
         "bf16-g"},
        {"bf16-ac",
         [&](const torch::Tensor& x) { return autocast_bf16([&] { return linear_ac(x); }); },
         {linear_ac->weight, linear_ac->bias}},
        {"global-rs",
         [&](const torch::Tensor& x) { return global_rs(x); },
         {global_rs->weight, global_rs->bias},
         false,
         "bf16-ac"},
        {"bw",
         [&](const torch::Tensor& x) { return blockwise(x); },
         {blockwise->weight},
         false,
         "",
         "auto"},
        {"bw-lt",
         [&](const torch::Tensor& x) { return blockwise(x); },
         {blockwise->weight},
         false,
         "",
         "cublaslt"},
        {"bw-sm90",
         [&](const torch::Tensor& x) { return blockwise(x); },
         {blockwise->weight},
         false,
         "",
         "sm90"},
        {"bw-sm90-2",
         [&](const torch::Tensor& x) { return blockwise(x); },
         {blockwise->weight},
         false,
         "",
         "sm90:256x2"},
        {"bw-sm90-n",
         [&](const torch::Tensor& x) { return blockwise(x); },
         {blockwise->weight},
         false,
         "",
         "sm90:256n2"},
        {"mixed-2",
         [&](const torch::Tensor& x) { return mixed(x); },
         {mixed->weight},
         false,
         "",
         "auto:256x2"},
        {"bw-qr",
         [&](const torch::Tensor& x) { return blockwise(x); },
         {blockwise->weight},
         false,
         "",
         nullptr,
         "registers"},
        {"mixed-qr",
         [&](const torch::Tensor& x) { return mixed(x); },
         {mixed->weight},
         false,
         "",
         nullptr,
         "registers"},
    };
    TORCH_CHECK(variants.size() == all_names.size(), "layer bench: ", variants.size(),
                " variants for ", all_names.size(), " column names");
    std::vector<Stepper> steppers;
    std::vector<size_t> timed;  // indices into variants, in the order of `names`
    for (size_t i = 0; i < variants.size(); ++i) {
      const auto& v = variants[i];
      TORCH_CHECK(v.name == all_names[i], "layer bench: variant ", i, " is ", v.name,
                  ", its column ", all_names[i]);
      if (!wanted(v.name)) continue;
      Stepper stepper{&v, &xs, grad};
      if (v.graphed) stepper.capture();
      steppers.push_back(std::move(stepper));
      timed.push_back(i);
    }
    // Each variant against its baseline (like with like), when that is timed; else bf16.
    std::vector<size_t> baselines(timed.size(), 0);
    for (size_t t = 0; t < timed.size(); ++t) {
      for (size_t b = 0; b < timed.size(); ++b) {
        if (variants[timed[b]].name == variants[timed[t]].baseline) baselines[t] = b;
      }
    }
    std::vector<Result> results(steppers.size());  // one per timed variant
    time_interleaved(steppers, baselines, 10, repetitions, results);
    for (size_t t = 0; t < timed.size(); ++t) {
      // A graph replays what eager runs: its memory is that of the eager variant.
      if (!variants[timed[t]].graphed) {
        measure_memory_and_host(variants[timed[t]], xs, grad, results[t]);
      }
    }
    std::string row = fmt::format("| {:>6} {:>6} {:>6} |", m, k, n);
    for (const auto& r : results) row += fmt::format(" {:>9.3f}", r.ms);
    row += " |";
    for (size_t i = 1; i < results.size(); ++i) row += fmt::format(" {:>8.2f}x", results[i].ratio);
    row += " |";
    for (const auto& r : results) row += fmt::format(" {:>9.1f}", r.saved_mib);
    row += " |";
    for (const auto& r : results) row += fmt::format(" {:>9.1f}", r.peak_mib);
    row += " |";
    for (const auto& r : results) row += fmt::format(" {:>9.1f}", r.host_us);
    fmt::print("{} |\n", row);
  }
  fmt::print(
      "# variants timed interleaved (each sample runs every variant once, in a rotated order); "
      "×: median over samples of the paired ratio bf16 / variant (higher is better); -dl: delayed "
      "scaling (Recipe::global_delayed()); -g: the step captured in a CUDA graph and replayed, × "
      "against bf16-g (bf16-g× against eager bf16; memory columns: see the eager variant); "
      "bf16-ac: the README's setup in bf16, torch::nn::Linear with fp32 weights and bias under "
      "bf16 autocast; global-rs: LinearFP8Global in that setup (fp32 weights and bias, bf16 x), × "
      "against bf16-ac; bw: Recipe::blockwise() under the default route (auto); bw-lt, bw-sm90: "
      "with FP8NN_GROUP_GEMM=cublaslt or sm90; bw-sm90-2, mixed-2: blockwise and mixed with "
      "group_gemm_sm90's 256-row tiles in "
      "pairs along M (FP8NN_GROUP_GEMM=sm90:256x2, auto:256x2); bw-sm90-n: blockwise with pairs "
      "along N (sm90:256n2); bw-qr, mixed-qr: blockwise and mixed with every quantize kernel "
      "reading into registers (FP8NN_TILE_LOAD=registers; the default stages some in shared "
      "memory); -mb: micro-batches (W's FP8 "
      "copies "
      "reused while W is unchanged; the default re-quantizes W every step); -nm: with a numerics "
      "monitor (fp8nn::enable_numerics); sv: MiB saved for backward "
      "beyond the output (x included where the graph "
      "keeps it; a weight copy the cache already held is not counted); pk: peak MiB allocated "
      "during backward; host: µs of host time to enqueue one step\n");
  return 0;
}

}  // namespace fp8nn::bench
