// Bare FP8 GEMM benchmark: fp8nn::functional::scaled_mm with bf16 output, fast
// accumulation on and off, against at::_scaled_mm with tensorwise scales (same two accumulation
// modes) and bf16 at::matmul, on the benchmark's (M, K, N) shapes. Entry points:
// fp8nn::bench::run_gemm_bench() (bench_gemm.h), called by the bench binary's main.
//
// Method: per shape and accumulation mode, at::_scaled_mm, fp8nn's scaled_mm (and, with fast
// accumulation, bf16 at::matmul) are timed interleaved: `warmup` untimed rounds, then `iters`
// rounds of one run each, every run bracketed by CUDA events on the current stream. The ms column
// is each method's median, the speed-up the median of the per-round ratios (bench_timing.h). The
// group-scaled rows time each route in turn against a tensorwise run of their own, the blockwise
// rows cuBLASLt's block scale modes interleaved with a tensorwise run. Inputs rotate
// over enough copies that the operands of small shapes do not sit in L2 between runs. Each run
// allocates its output through the caching allocator, as a caller of either API would. A "check"
// column compares fp8nn's result with at::_scaled_mm's (same operands, same accumulation mode) as a
// guard against a fast but wrong kernel.

#include "bench_gemm.h"
#include "bench_timing.h"
#include "src/gemm/cuda/group_gemm_cuda.h"
#include "src/gemm/cuda/scaled_mm_cuda.h"

#include <fp8nn/fp8nn.h>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace fp8nn::bench {
namespace {

namespace F = fp8nn::functional;
using Shape = std::array<int64_t, 3>;  // M, K, N

constexpr int kMinIters = 50;
// Operand bytes the rotation should exceed: several times an H100's 50 MB L2.
constexpr int64_t kRotationBytes = int64_t{256} << 20;
constexpr int64_t kMaxRotations = 64;

const std::vector<Shape> kDefaultShapes = {{1024, 1024, 1024},  {4096, 4096, 4096},
                                           {8192, 4096, 4096},  {8192, 4096, 14336},
                                           {8192, 14336, 4096}, {16384, 8192, 8192}};

bool parse_shapes(const std::string& text, std::vector<Shape>& shapes) {
  shapes.clear();
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(':', start), text.size());
    Shape shape{};
    if (std::sscanf(text.substr(start, end - start).c_str(), "%ld,%ld,%ld", &shape[0], &shape[1],
                    &shape[2]) != 3 ||
        shape[0] <= 0 || shape[1] <= 0 || shape[2] <= 0) {
      return false;
    }
    shapes.push_back(shape);
    start = end + 1;
  }
  return !shapes.empty();
}

bool parse_options(int argc, char** argv, GemmBenchOptions& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--iters" && has_value) {
      options.iters = std::atoi(argv[++i]);
    } else if (arg == "--warmup" && has_value) {
      options.warmup = std::atoi(argv[++i]);
    } else if (arg == "--shapes" && has_value) {
      if (!parse_shapes(argv[++i], options.shapes)) {
        std::cerr << "bench gemm: --shapes expects M,K,N[:M,K,N...], got " << argv[i] << "\n";
        return false;
      }
    } else {
      std::cerr << "bench gemm: unknown option " << arg
                << " (known: --iters N, --warmup N, --shapes M,K,N[:M,K,N...])\n";
      return false;
    }
  }
  return true;
}

// One rotation slot: the same random operands in bf16 and quantized per tensor to e4m3.
struct Operands {
  torch::Tensor a_bf16, b_bf16;
  fp8nn::QuantizedTensor a, b;
};

std::vector<Operands> make_operands(const Shape& shape) {
  const auto [M, K, N] = shape;
  const int64_t bytes = (M + N) * K * 2;
  const int64_t rotations =
      std::clamp<int64_t>((kRotationBytes + bytes - 1) / bytes, 1, kMaxRotations);
  const auto options = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  std::vector<Operands> operands;
  for (int64_t r = 0; r < rotations; ++r) {
    Operands o;
    o.a_bf16 = torch::randn({M, K}, options);
    o.b_bf16 = torch::randn({N, K}, options) * 0.05;
    o.a = F::quantize(o.a_bf16, fp8nn::Format::E4M3);
    o.b = F::quantize(o.b_bf16, fp8nn::Format::E4M3);
    operands.push_back(std::move(o));
  }
  return operands;
}

torch::Tensor torch_scaled_mm(const Operands& o, bool fast_accumulation) {
  // _scaled_mm wants the second operand column-major: b [N, K] row-major, transposed, is that.
  return at::_scaled_mm(o.a.data, o.b.data.t(), o.a.scale_inv, o.b.scale_inv, c10::nullopt,
                        c10::nullopt, torch::kBFloat16, fast_accumulation);
}

torch::Tensor fp8nn_scaled_mm(const Operands& o, bool fast_accumulation) {
  return F::scaled_mm(o.a, o.b, c10::nullopt, torch::kBFloat16, fast_accumulation);
}

// FP8NN_BENCH_ROWS=part[,part...] (e.g. for a profiler run): of the group- and block-scaled rows,
// only those whose name contains one of the parts run; unset or empty, all. The tensorwise rows
// always run.
bool row_wanted(const std::string& name) {
  static const std::vector<std::string> parts = [] {
    std::vector<std::string> list;
    const char* value = std::getenv("FP8NN_BENCH_ROWS");
    std::stringstream text(value == nullptr ? "" : value);
    std::string part;
    while (std::getline(text, part, ',')) {
      if (!part.empty()) list.push_back(part);
    }
    return list;
  }();
  if (parts.empty()) return true;
  return std::any_of(parts.begin(), parts.end(),
                     [&](const std::string& part) { return name.find(part) != std::string::npos; });
}

// max |x - y| / max |y|.
double relative_difference(const torch::Tensor& x, const torch::Tensor& y) {
  const auto reference = y.to(torch::kFloat);
  return ((x.to(torch::kFloat) - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
      .item<double>();
}

void print_row(const Shape& shape, const std::string& method, double ms, double speedup,
               const std::string& check) {
  const auto [M, K, N] = shape;
  const double tflops = 2.0 * static_cast<double>(M) * static_cast<double>(K) *
                        static_cast<double>(N) / (ms * 1e-3) / 1e12;
  std::printf("| %6ld | %6ld | %6ld | %-22s | %9.4f | %8.1f | %6.3fx | %-10s |\n", M, K, N,
              method.c_str(), ms, tflops, speedup, check.c_str());
}

// Mixed's group-scaled products: a quantized per group of G along K (E4M3), b per tensor, through
// each FP8NN_GROUP_GEMM route (set, then read again by the library): cublaslt (on Hopper its block
// scale modes with the scales restated per 128 of K and per 128x128 block, as auto does; else one
// product per row-group slice of K; OUTER_VEC scales when one group spans the row), the
// hand-written sm90 kernel (its choice of tile) and auto, then that kernel's other tiles (with
// G >= K also accumulating across K without promotions, "acc-K": the pipeline's ceiling). Speed-up
// against at::_scaled_mm tensorwise with fast accumulation (the ceiling a group-scaled product is
// measured against); check: relative difference to the cublaslt route.
void group_scaled_rows(const Shape& shape, const std::vector<Operands>& operands,
                       const GemmBenchOptions& options) {
  using Tiles = std::vector<std::pair<const char*, fp8nn::cuda::Sm90Tile>>;
  // group_gemm_sm90's other tiles (the sm90 row: the kernel's choice).
  const Tiles tiles = {{"sm90 256", {256, 1}},
                       {"sm90 128x2", {128, 2}},
                       {"sm90 256x2", {256, 2}},
                       {"sm90 256x2 st", {256, 2, true}},
                       {"sm90 256n2", {256, 1, false, 2}},
                       {"sm90 256n2 st", {256, 1, true, 2}},
                       // Without promotions (G >= K only): the tensor cores accumulate across K.
                       {"sm90 128 acc-K", {128, 1, false, 1, true}},
                       {"sm90 256 acc-K", {256, 1, false, 1, true}},
                       {"sm90 256n2 st acc-K", {256, 1, true, 2, true}},
                       // a's row scales by TMA with each stage.
                       {"sm90 256n2 st sa", {256, 1, true, 2, false, true}}};
  const auto route_row = [&](int64_t group, const char* route) {
    return "G=" + std::to_string(group) + (group >= shape[1] ? " (row) " : " ") + route;
  };
  const auto tile_row = [&](int64_t group, const char* tile) {
    return "G=" + std::to_string(group) + " " + tile;
  };
  bool any = false;
  for (int64_t group : {int64_t{128}, int64_t{4096}}) {
    for (const char* route : {"cublaslt", "sm90", "auto"})
      any |= row_wanted(route_row(group, route));
    for (const auto& tile : tiles) any |= row_wanted(tile_row(group, tile.first));
  }
  if (!any) return;
  const double tensorwise_ms =
      median_ms([&](int i) { torch_scaled_mm(operands[i % operands.size()], true); },
                options.warmup, options.iters);
  for (int64_t group : {int64_t{128}, int64_t{4096}}) {
    std::vector<fp8nn::QuantizedTensor> grouped;
    for (const auto& o : operands) {
      grouped.push_back(F::quantize_per_group(o.a_bf16, fp8nn::Format::E4M3, group));
    }
    const auto run = [&](int i) {
      F::scaled_mm(grouped[i % grouped.size()], operands[i % operands.size()].b, c10::nullopt,
                   torch::kBFloat16, /*fast_accumulation=*/false);
    };
    torch::Tensor reference;  // the cublaslt route's result
    {
      const fp8nn::cuda::ScopedGroupGemmRoute scope("cublaslt");
      reference = F::scaled_mm(grouped[0], operands[0].b, c10::nullopt, torch::kBFloat16, false);
    }
    for (const char* route : {"cublaslt", "sm90", "auto"}) {
      const std::string what = route_row(group, route);
      if (!row_wanted(what)) continue;
      const fp8nn::cuda::ScopedGroupGemmRoute scope(route);
      const double ms = median_ms(run, options.warmup, options.iters);
      const auto result =
          F::scaled_mm(grouped[0], operands[0].b, c10::nullopt, torch::kBFloat16, false);
      char check[32] = "";
      if (std::string(route) != "cublaslt") {
        std::snprintf(check, sizeof(check), "%.1e", relative_difference(result, reference));
      }
      print_row(shape, what, ms, tensorwise_ms / ms, check);
    }
    for (const auto& [name, tile] : tiles) {
      const std::string what = tile_row(group, name);
      if (!row_wanted(what)) continue;
      const auto product = [&, tile = tile](int i) {
        return fp8nn::cuda::group_gemm_product(
            grouped[i % grouped.size()], operands[i % operands.size()].b, c10::nullopt,
            torch::kBFloat16, fp8nn::cuda::GroupGemmKernel::Sm90, tile);
      };
      const auto result = product(0);
      // Not an sm_90 device or build (the sm90 row above says as much), or a configuration the
      // kernel refuses for this product (across K with groups along K).
      if (!result) continue;
      const double ms = median_ms([&](int i) { product(i); }, options.warmup, options.iters);
      char check[32];
      std::snprintf(check, sizeof(check), "%.1e", relative_difference(*result, reference));
      print_row(shape, what, ms, tensorwise_ms / ms, check);
    }
  }
}

// The blockwise (DeepSeek-V3) products: "1D2D", a per 1x128 (E4M3) times b per 128x128 block (the
// forward and the input gradient), on cuBLASLt's block scale mode (FP8NN_GROUP_GEMM=cublaslt, the
// peer) and on group_gemm_sm90 with 128- and 256-row tiles, alone or in clusters of two CTAs
// ("x2": pairs along M; "n2": along N), with the staged epilogue ("st"), and with a's row scales
// coming by TMA with each stage ("sa"); "1D1D", a times b per
// 1x128 (the weight gradient's form), on cuBLASLt and on group_gemm_sm90 (alone and in clusters of
// two). The variants of a form are timed interleaved with at::_scaled_mm tensorwise with fast
// accumulation, the ceiling a blockwise product is measured against. Every variant promotes per 128
// of K (cuBLASLt's block modes accumulate precisely only). check: relative difference to the
// product of the dequantized operands.
void block_scaled_rows(const Shape& shape, const std::vector<Operands>& operands,
                       const GemmBenchOptions& options) {
  std::vector<fp8nn::QuantizedTensor> a_rows, b_rows, b_blocks;
  for (const auto& o : operands) {
    a_rows.push_back(F::quantize_per_group(o.a_bf16, fp8nn::Format::E4M3, fp8nn::kBlockSize));
    b_rows.push_back(F::quantize_per_group(o.b_bf16, fp8nn::Format::E4M3, fp8nn::kBlockSize));
    b_blocks.push_back(F::quantize_per_block(o.b_bf16, fp8nn::Format::E4M3));
  }
  const auto slot = [&](int i) { return static_cast<size_t>(i) % operands.size(); };
  struct Variant {
    std::string name;
    std::function<torch::Tensor(size_t)> product;
  };
  // scaled_mm takes cuBLASLt's block modes under this route; the sm90 rows call the kernel.
  const fp8nn::cuda::ScopedGroupGemmRoute scope("cublaslt");
  const auto cublaslt = [&](const std::vector<fp8nn::QuantizedTensor>& b) {
    return [&b, &a_rows](size_t i) {
      return F::scaled_mm(a_rows[i], b[i], c10::nullopt, torch::kBFloat16, false);
    };
  };
  const auto sm90_tile = [&](const std::vector<fp8nn::QuantizedTensor>& b, int tile_m,
                             int cluster_m, bool staged = false, int cluster_n = 1,
                             bool stage_a_scales = false) {
    return [&b, &a_rows, tile_m, cluster_m, staged, cluster_n, stage_a_scales](size_t i) {
      auto out = fp8nn::cuda::group_gemm_product(
          a_rows[i], b[i], c10::nullopt, torch::kBFloat16, fp8nn::cuda::GroupGemmKernel::Sm90,
          {tile_m, cluster_m, staged, cluster_n, false, stage_a_scales});
      return out ? *out : torch::Tensor();
    };
  };
  const std::vector<std::pair<const std::vector<fp8nn::QuantizedTensor>*, std::vector<Variant>>>
      forms = {{&b_blocks,
                {{"bw 1D2D cublaslt", cublaslt(b_blocks)},
                 {"bw 1D2D sm90 128", sm90_tile(b_blocks, 128, 1)},
                 {"bw 1D2D sm90 256", sm90_tile(b_blocks, 256, 1)},
                 {"bw 1D2D sm90 128x2", sm90_tile(b_blocks, 128, 2)},
                 {"bw 1D2D sm90 256x2", sm90_tile(b_blocks, 256, 2)},
                 {"bw 1D2D sm90 256x2 st", sm90_tile(b_blocks, 256, 2, true)},
                 {"bw 1D2D sm90 256n2", sm90_tile(b_blocks, 256, 1, false, 2)},
                 {"bw 1D2D sm90 256n2 st", sm90_tile(b_blocks, 256, 1, true, 2)},
                 {"bw 1D2D sm90 256n2 st sa", sm90_tile(b_blocks, 256, 1, true, 2, true)}}},
               {&b_rows,
                {{"bw 1D1D cublaslt", cublaslt(b_rows)},
                 {"bw 1D1D sm90", sm90_tile(b_rows, 128, 1)},
                 {"bw 1D1D sm90 x2", sm90_tile(b_rows, 128, 2)},
                 {"bw 1D1D sm90 x2 st", sm90_tile(b_rows, 128, 2, true)}}}};
  for (const auto& [b, variants] : forms) {
    if (std::none_of(variants.begin(), variants.end(),
                     [](const Variant& v) { return row_wanted(v.name); })) {
      continue;
    }
    // The exact product of the dequantized operands, up to fp32 accumulation.
    const auto reference = at::matmul(F::dequantize(a_rows[0]), F::dequantize((*b)[0]).t());
    std::vector<std::function<void(int)>> runs = {
        [&](int i) { torch_scaled_mm(operands[slot(i)], true); }};
    std::vector<const Variant*> running;
    for (const auto& variant : variants) {
      if (!row_wanted(variant.name)) continue;
      const int64_t block_calls = F::scaled_mm_path_count(F::ScaledMmPath::CublasLtBlock);
      const auto first = variant.product(0);
      if (variant.name.find("cublaslt") != std::string::npos &&
          F::scaled_mm_path_count(F::ScaledMmPath::CublasLtBlock) == block_calls) {
        std::printf(
            "# %s: cuBLASLt refused the block modes at %ld,%ld,%ld; the row times "
            "scaled_mm's fallback\n",
            variant.name.c_str(), shape[0], shape[1], shape[2]);
      }
      if (!first.defined()) {
        std::printf("# %s: the kernel refused %ld,%ld,%ld\n", variant.name.c_str(), shape[0],
                    shape[1], shape[2]);
        continue;
      }
      running.push_back(&variant);
      runs.push_back([&variant, &slot](int i) { variant.product(slot(i)); });
    }
    const auto times = interleaved_median_ms(runs, options.warmup, options.iters);
    for (size_t v = 0; v < running.size(); ++v) {
      char check[32];
      std::snprintf(check, sizeof(check), "%.1e",
                    relative_difference(running[v]->product(0), reference));
      print_row(shape, running[v]->name, times.median_ms[v + 1], times.paired_speedup[v + 1],
                check);
    }
  }
}

}  // namespace

int run_gemm_bench(int argc, char** argv) {
  GemmBenchOptions options;
  if (!parse_options(argc, argv, options)) return 2;
  return run_gemm_bench(options);
}

int run_gemm_bench(const GemmBenchOptions& options) {
  if (options.iters < kMinIters || options.warmup < 0) {
    std::cerr << "bench gemm: expected iters >= " << kMinIters << " and warmup >= 0, got "
              << options.iters << " and " << options.warmup << "\n";
    return 2;
  }
  const auto& shapes = options.shapes.empty() ? kDefaultShapes : options.shapes;
  if (!torch::cuda::is_available()) {
    std::cout << "bench gemm: skipped, no CUDA device available\n";
    return 0;
  }
  torch::NoGradGuard no_grad;
  std::printf("# %s\n", at::cuda::getCurrentDeviceProperties()->name);
  std::printf(
      "# FP8 GEMM, bf16 output; median of %d runs after %d warm-up runs, the methods of a "
      "shape and mode interleaved; speed-up: median of the per-round ratios against "
      "at::_scaled_mm (tensorwise) with the same accumulation mode, bf16 matmul against the fast "
      "one; fp8nn GEMM autotuning %s\n",
      options.iters, options.warmup, F::gemm_autotuning() ? "on" : "off");
  std::printf("| %6s | %6s | %6s | %-22s | %9s | %8s | %7s | %-10s |\n", "M", "K", "N", "method",
              "ms", "TFLOP/s", "vs _smm", "check");
  std::printf(
      "|--------|--------|--------|------------------------|-----------|----------|-----"
      "----|------------|\n");
  for (const auto& shape : shapes) {
    const auto operands = make_operands(shape);
    const auto slot = [&](int i) -> const Operands& { return operands[i % operands.size()]; };
    for (bool fast : {true, false}) {
      const std::string mode = fast ? "fast accum" : "precise";
      std::vector<std::function<void(int)>> runs = {[&](int i) { torch_scaled_mm(slot(i), fast); },
                                                    [&](int i) { fp8nn_scaled_mm(slot(i), fast); }};
      if (fast) runs.push_back([&](int i) { at::matmul(slot(i).a_bf16, slot(i).b_bf16.t()); });
      const auto times = interleaved_median_ms(runs, options.warmup, options.iters);
      char check[32];
      std::snprintf(check, sizeof(check), "%.1e",
                    relative_difference(fp8nn_scaled_mm(operands[0], fast),
                                        torch_scaled_mm(operands[0], fast)));
      const double torch_ms = times.median_ms[0];
      print_row(shape, "fp8nn scaled_mm " + mode, times.median_ms[1], times.paired_speedup[1],
                check);
      print_row(shape, "at::_scaled_mm " + mode, torch_ms, 1.0, "");
      if (fast)
        print_row(shape, "bf16 at::matmul", times.median_ms[2], times.paired_speedup[2], "");
    }
    if (shape[0] >= 4096) {
      group_scaled_rows(shape, operands, options);
      block_scaled_rows(shape, operands, options);
    }
  }
  return 0;
}

}  // namespace fp8nn::bench
