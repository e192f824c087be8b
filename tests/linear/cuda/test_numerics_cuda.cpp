// The numerics monitor below the layers: the counting quantize calls (src/quantize/
// quantize_detail.h) give the same counts on CUDA as the CPU reference, also for a scale forced
// too large (saturation, Inf) and for every operand shape the kernels split into paths; and a
// layer's monitor follows the data of CUDA-graph replays.

#include <fp8nn/fp8nn.h>

#include "quantize/quantize_detail.h"
#include "test_support.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

using fp8nn::Format;

torch::Tensor fresh_counts(const torch::Device& device) {
  return torch::zeros({3}, torch::TensorOptions(device).dtype(torch::kLong));
}

// counts on CUDA == counts on the CPU, and the FP8 data too, for one quantize call.
template <typename Quantize>
void check_same_counts(const torch::Tensor& x, Quantize&& quantize, const char* what) {
  CAPTURE(what);
  const auto cpu_counts = fresh_counts(torch::kCPU), cuda_counts = fresh_counts(torch::kCUDA);
  const auto cpu = quantize(x, cpu_counts);
  const auto cuda = quantize(x.to(torch::kCUDA), cuda_counts);
  CHECK(torch::equal(cpu_counts, cuda_counts.cpu()));
  CHECK(fp8nn::test::count_bit_differences(cpu.data, cuda.data.cpu()) == 0);
}

TEST_CASE("Counting quantize: CUDA counts equal the CPU reference's on every kernel path") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  // Aligned and ragged shapes (vector and scalar paths, partial tiles), three dtypes, both formats.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{64, 256}, {37, 100}, {130, 72}, {1, 8}};
  for (const auto& [rows, cols] : shapes) {
    for (const auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
      for (const auto format : {Format::E4M3, Format::E5M2}) {
        CAPTURE(rows, cols, dtype, fp8nn::name_of(format));
        auto x = torch::randn({rows, cols}) * std::pow(10.0, (rows % 3) - 1);
        x.index_put_({torch::rand({rows, cols}) < 0.3}, 1e-7);
        x = x.to(dtype);
        check_same_counts(
            x,
            [&](const torch::Tensor& t, const torch::Tensor& counts) {
              return fp8nn::detail::quantize(t, format, torch::Tensor(), counts);
            },
            "per tensor");
        check_same_counts(
            x,
            [&](const torch::Tensor& t, const torch::Tensor& counts) {
              return fp8nn::detail::quantize_with_transpose(t, format, torch::Tensor(), counts)
                  .quantized;
            },
            "per tensor with transpose");
        for (const int64_t group : {16, 64, 1000}) {
          check_same_counts(
              x,
              [&](const torch::Tensor& t, const torch::Tensor& counts) {
                return fp8nn::detail::quantize_per_group(t, format, group, counts);
              },
              "per group");
        }
      }
    }
  }
}

// An amax given smaller than the data's (a stale or forced scale) saturates the larger elements;
// Inf saturates too. Counted as this test counts them, on the CPU and on CUDA.
void check_forced_scale(const torch::Device& device) {
  fp8nn::test::seed_torch();
  const int64_t rows = 64, cols = 128;
  auto x = torch::randn({rows, cols});
  x[5][7] = INFINITY;
  const float forced_amax = 0.5f;  // far below the data's ~4
  const float scale = 448.0f / forced_amax;
  const auto scaled_abs = (x * scale).abs();
  const int64_t expected = scaled_abs.gt(464.0f).sum().item<int64_t>();
  REQUIRE(expected > 100);
  const auto amax = torch::full({1}, forced_amax, torch::TensorOptions(device));
  for (const bool transpose : {false, true}) {
    CAPTURE(transpose);
    auto counts = fresh_counts(device);
    const auto t = x.to(device);
    if (transpose) {
      fp8nn::detail::quantize_with_transpose(t, Format::E4M3, amax, counts);
    } else {
      fp8nn::detail::quantize(t, Format::E4M3, amax, counts);
    }
    const auto c = counts.cpu();
    CHECK(c[0].item<int64_t>() == expected);
    CHECK(c[1].item<int64_t>() ==
          (x.ne(0) & scaled_abs.le(std::ldexp(1.0f, -10))).sum().item<int64_t>());
    // [2] holds the bits of the amax the scale came from: the forced one.
    const auto bits = static_cast<uint32_t>(c[2].item<int64_t>());
    float used = 0;
    std::memcpy(&used, &bits, sizeof used);
    CHECK(used == forced_amax);
  }
}

FP8NN_CPU_AND_CUDA_CASE("Counting quantize: a scale forced too large shows as saturation",
                        check_forced_scale)

TEST_CASE("Numerics monitor: CUDA-graph replays update the figures with the replayed data") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const auto device = torch::Device(torch::kCUDA);
  fp8nn::LinearFP8Global layer(fp8nn::LinearFP8Options(64, 32));
  layer->to(device);
  fp8nn::enable_numerics(*layer);
  auto static_x = torch::randn({128, 64}, torch::TensorOptions(device));

  const auto side = at::cuda::getStreamFromPool();
  torch::cuda::synchronize();
  torch::NoGradGuard no_grad;
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    for (int i = 0; i < 2; ++i) layer->forward(static_x);  // warm-up: monitor tensors, handles
  }
  torch::cuda::synchronize();
  at::cuda::CUDAGraph graph;
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    graph.capture_begin();
    layer->forward(static_x);
    graph.capture_end();
  }
  for (const double magnitude : {1.0, 1e-3, 1e3}) {
    CAPTURE(magnitude);
    auto x = torch::randn({128, 64}, torch::TensorOptions(device)) * magnitude;
    x.index_put_({torch::rand({128, 64}, torch::TensorOptions(device)) < 0.25}, 1e-9 * magnitude);
    static_x.copy_(x);
    graph.replay();
    torch::cuda::synchronize();
    const auto figures = layer->numerics->read().operands[0];
    const float amax = x.abs().max().item<float>();
    CHECK(figures.amax == amax);
    const float scale = 448.0f / amax;
    const auto scaled_abs = (x * scale).abs();
    CHECK(figures.underflow ==
          (x.ne(0) & scaled_abs.le(std::ldexp(1.0f, -10))).sum().item<int64_t>());
    CHECK(figures.underflow > 0);
    CHECK(figures.saturated == 0);
  }
}

}  // namespace
