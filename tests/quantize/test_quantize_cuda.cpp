// The CUDA quantize kernels through the public API: bit-exact agreement with the CPU reference
// (docs/design.md, "Quantization") for every op, input dtype and format, per tensor and per group,
// on odd shapes, at the format edges, with non-finite and non-contiguous inputs. Every test needs a
// GPU.

#include <fp8nn/fp8nn.h>

#include "test_support.h"

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <vector>

using fp8nn::Format;
namespace F = fp8nn::functional;

namespace {

const std::vector<Format> kFormats = {Format::E4M3, Format::E5M2};
const std::vector<torch::ScalarType> kInputDtypes = {torch::kFloat, torch::kHalf, torch::kBFloat16};
const std::vector<int64_t> kGroupSizes = {64, 128, 4096, 5};

// Odd and edge shapes: single elements, one row, one column, ragged tiles (the transpose tile is
// 128 x 64) and ragged groups, tall and wide, plus aligned ones that take the vector paths.
const std::vector<std::vector<int64_t>> kShapes = {
    {1, 1},       {1, 4097},    {4097, 3}, {3, 1000},  {17, 15},    {5, 64},
    {129, 1},     {2000, 8},    {6, 5000}, {300, 257}, {256, 128},  {130, 72},
    {1024, 4096}, {4099, 1030}, {0, 16},   {16, 0},    {2, 3, 130}, {7}};

// FP8NN_TEST_REDUCED=1 (compute-sanitizer runs): shapes of at most this many elements.
constexpr int64_t kReducedMaxElements = int64_t{1} << 18;

bool skipped_shape(const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t size : shape) numel *= size;
  return fp8nn::test::skipped_when_reduced(numel, kReducedMaxElements);
}

torch::Tensor random_input(at::IntArrayRef shape, torch::ScalarType dtype) {
  // Magnitudes e^-8 .. e^8: small values land in the subnormal range after scaling, the largest
  // stay finite in fp16.
  auto x = torch::randn(shape) * torch::exp(torch::randn(shape).clamp(-4, 4) * 2.0);
  return x.to(dtype);
}

// Elements whose bits differ, not counting places where both are NaN (NaN payloads and signs are
// not part of the definition: libtorch's CPU NaN is negative, the GPU's canonical NaN positive).
int64_t mismatches(const torch::Tensor& gpu, const torch::Tensor& cpu) {
  REQUIRE(gpu.sizes() == cpu.sizes());
  REQUIRE(gpu.scalar_type() == cpu.scalar_type());
  if (cpu.numel() == 0) return 0;
  const auto a = gpu.cpu().contiguous();
  const auto b = cpu.cpu().contiguous();
  const auto bits = [](const torch::Tensor& t) {
    switch (t.element_size()) {
      case 1:
        return t.view(torch::kUInt8).to(torch::kInt32);
      case 2:
        return t.view(torch::kInt16).to(torch::kInt32);
      default:
        return t.view(torch::kInt32);
    }
  };
  const auto both_nan = torch::isnan(a.to(torch::kFloat)) & torch::isnan(b.to(torch::kFloat));
  return ((bits(a) != bits(b)) & ~both_nan).sum().item<int64_t>();
}

void check_same(const fp8nn::QuantizedTensor& gpu, const fp8nn::QuantizedTensor& cpu) {
  REQUIRE(gpu.data.is_cuda());
  REQUIRE(gpu.scale_inv.is_cuda());
  CHECK(gpu.format == cpu.format);
  CHECK(gpu.group_size == cpu.group_size);
  CHECK(mismatches(gpu.data, cpu.data) == 0);
  CHECK(mismatches(gpu.scale_inv, cpu.scale_inv) == 0);
}

// Every op on one input: per tensor, per group for each size, with transpose when 2-d.
void check_all_ops(const torch::Tensor& x_gpu, const torch::Tensor& x_cpu, Format f) {
  check_same(F::quantize(x_gpu, f), F::quantize(x_cpu, f));
  if (x_cpu.dim() >= 1) {
    for (int64_t group_size : kGroupSizes) {
      CAPTURE(group_size);
      check_same(F::quantize_per_group(x_gpu, f, group_size),
                 F::quantize_per_group(x_cpu, f, group_size));
    }
  }
  if (x_cpu.dim() == 2) {
    const auto gpu = F::quantize_with_transpose(x_gpu, f);
    const auto cpu = F::quantize_with_transpose(x_cpu, f);
    check_same(gpu.quantized, cpu.quantized);
    check_same(gpu.transposed, cpu.transposed);
    REQUIRE(gpu.transposed.data.sizes() == torch::IntArrayRef({x_cpu.size(1), x_cpu.size(0)}));
    CHECK(gpu.transposed.scale_inv.data_ptr() == gpu.quantized.scale_inv.data_ptr());
    // Element by element against the GPU's own row-major copy.
    CHECK(mismatches(gpu.transposed.data.t().contiguous(), gpu.quantized.data) == 0);
  }
}

}  // namespace

TEST_CASE(
    "CUDA quantize, per-group quantize and quantize_with_transpose equal the CPU reference "
    "bit for bit on odd shapes") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for (const auto& shape : kShapes) {
    if (skipped_shape(shape)) continue;
    for (auto dtype : kInputDtypes) {
      for (auto f : kFormats) {
        CAPTURE(shape, dtype, fp8nn::name_of(f));
        const auto x = random_input(shape, dtype);
        check_all_ops(x.cuda(), x, f);
      }
    }
  }
}

TEST_CASE("CUDA quantize at the format edges: every FP8 value, the ties between them, saturation") {
  FP8NN_SKIP_WITHOUT_CUDA();
  for (auto f : kFormats) {
    // Every finite FP8 value of the format and every midpoint between neighbours (exact ties in
    // fp32, fp16 and bf16), so that amax is the format's max and scale 1, then the same values
    // scaled by 3 (amax above max, an inexact scale) and by 2^-20 (tiny amax, huge scale).
    auto all_bytes = torch::arange(256, torch::kInt32).to(torch::kUInt8).view(fp8nn::dtype_of(f));
    auto values = all_bytes.to(torch::kFloat);
    values = std::get<0>(values.masked_select(torch::isfinite(values)).sort());
    const auto ties =
        (values.narrow(0, 0, values.numel() - 1) + values.narrow(0, 1, values.numel() - 1)) / 2;
    auto edges = torch::cat({values, ties, -ties});
    // Zero-padded to rows of 64, so that the vector paths see them too.
    edges = torch::cat({edges, torch::zeros({(64 - edges.numel() % 64) % 64})}).reshape({-1, 64});
    for (double factor : {1.0, 3.0, 0x1p-20}) {
      for (auto dtype : kInputDtypes) {
        CAPTURE(fp8nn::name_of(f), factor, dtype);
        const auto x = (edges * factor).to(dtype);
        check_all_ops(x.cuda(), x, f);
      }
    }
    // Just above max saturates to max, never to NaN.
    const float m = fp8nn::max_of(f);
    const auto x = torch::tensor({std::nextafter(m, 2 * m), -std::nextafter(m, 2 * m), 1.0f, 0.0f});
    check_all_ops(x.cuda().reshape({2, 2}), x.reshape({2, 2}), f);
    CHECK(torch::isfinite(F::dequantize(F::quantize(x.cuda(), f))).all().item<bool>());
  }
}

TEST_CASE("CUDA quantize of zeros gives scale 1 and zero data, fp32 subnormal inputs stay exact") {
  FP8NN_SKIP_WITHOUT_CUDA();
  for (auto f : kFormats) {
    const auto zeros = torch::zeros({37, 300}, torch::kCUDA);
    const auto q = F::quantize(zeros, f);
    CHECK(q.scale_inv.item<float>() == 1.0f);
    CHECK(q.data.to(torch::kFloat).abs().max().item<float>() == 0.0f);
    CHECK(torch::equal(F::quantize_per_group(zeros, f, 128).scale_inv.cpu(), torch::ones({37, 3})));
    check_all_ops(zeros, zeros.cpu(), f);
    const auto tiny = torch::tensor({1e-40f, -3e-41f, 0.0f, 7e-45f}).reshape({2, 2});
    check_all_ops(tiny.cuda(), tiny, f);
  }
}

TEST_CASE("CUDA quantize keeps NaN and Inf non-finite, like the CPU reference") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for (auto f : kFormats) {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      for (auto dtype : kInputDtypes) {
        CAPTURE(fp8nn::name_of(f), bad, dtype);
        auto x = torch::randn({40, 300});
        x[1][70] = bad;
        x = x.to(dtype);
        check_all_ops(x.cuda(), x, f);
        const auto per_tensor = F::dequantize(F::quantize(x.cuda(), f)).cpu();
        CHECK_FALSE(std::isfinite(per_tensor[1][70].item<float>()));
        const auto per_group = F::dequantize(F::quantize_per_group(x.cuda(), f, 64)).cpu();
        CHECK_FALSE(std::isfinite(per_group[1][70].item<float>()));
        CHECK(torch::isfinite(per_group[0]).all().item<bool>());
      }
    }
  }
}

TEST_CASE("CUDA quantize handles non-contiguous and offset inputs") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for (auto dtype : kInputDtypes) {
    for (auto f : kFormats) {
      CAPTURE(dtype, fp8nn::name_of(f));
      const auto base = random_input({260, 136}, dtype).cuda();
      const auto transposed = base.t();
      const auto sliced = base.narrow(1, 3, 129).narrow(0, 1, 200);
      // Contiguous but starting one element in: every pointer misaligned for the vector paths.
      const auto offset = base.reshape({-1}).narrow(0, 1, 259 * 136).view({259, 136});
      for (const auto& x : {transposed, sliced, offset}) {
        CAPTURE(x.sizes(), x.strides());
        check_all_ops(x, x.cpu(), f);
      }
    }
  }
}

TEST_CASE("CUDA dequantize equals the CPU reference bit for bit") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for (const auto& shape : kShapes) {
    if (skipped_shape(shape)) continue;
    for (auto f : kFormats) {
      const auto x = random_input(shape, torch::kFloat).cuda();
      for (int64_t group_size : {0, 64, 128, 5}) {
        const auto q =
            group_size == 0 ? F::quantize(x, f) : F::quantize_per_group(x, f, group_size);
        const fp8nn::QuantizedTensor q_cpu{q.data.cpu(), q.scale_inv.cpu(), q.format, q.group_size};
        for (auto dtype : kInputDtypes) {
          CAPTURE(shape, fp8nn::name_of(f), group_size, dtype);
          const auto gpu = F::dequantize(q, dtype);
          REQUIRE(gpu.is_cuda());
          CHECK(mismatches(gpu, F::dequantize(q_cpu, dtype)) == 0);
        }
      }
    }
  }
}

TEST_CASE("CUDA quantize ops can be captured in a CUDA graph (no host synchronisation)") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  auto x = random_input({300, 520}, torch::kBFloat16).cuda();
  fp8nn::QuantizedTensor per_tensor, per_group;
  fp8nn::QuantizedPair pair;
  torch::Tensor back;
  at::cuda::CUDAGraph graph;
  {
    // Capture needs a stream other than the legacy default one.
    const c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool());
    F::quantize(x, Format::E4M3);  // first use (device queries, allocator) outside the capture
    c10::cuda::getCurrentCUDAStream().synchronize();
    graph.capture_begin();
    per_tensor = F::quantize(x, Format::E4M3);
    per_group = F::quantize_per_group(x, Format::E5M2, 128);
    pair = F::quantize_with_transpose(x, Format::E4M3);
    back = F::dequantize(per_tensor, torch::kFloat);
    graph.capture_end();
  }
  // New values in the same input: a replay must recompute amax and scales on the device.
  const auto x_new = random_input({300, 520}, torch::kBFloat16) * 7;
  x.copy_(x_new.cuda());
  graph.replay();
  torch::cuda::synchronize();
  check_same(per_tensor, F::quantize(x_new, Format::E4M3));
  check_same(per_group, F::quantize_per_group(x_new, Format::E5M2, 128));
  const auto expected_pair = F::quantize_with_transpose(x_new, Format::E4M3);
  check_same(pair.quantized, expected_pair.quantized);
  check_same(pair.transposed, expected_pair.transposed);
  CHECK(mismatches(back, F::dequantize(F::quantize(x_new, Format::E4M3), torch::kFloat)) == 0);
}

TEST_CASE("CUDA quantize with a given amax equals the CPU reference with the same amax") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for (auto dtype : kInputDtypes) {
    for (auto f : kFormats) {
      for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 1}, {300, 257}, {256, 128}}) {
        CAPTURE(dtype, fp8nn::name_of(f), shape);
        const auto x = random_input(shape, dtype);
        const auto true_amax = x.to(torch::kFloat).abs().amax();
        // The true amax gives the ordinary result; a larger one (an amax from elsewhere) its own.
        for (const auto& amax : {true_amax, true_amax * 3, torch::zeros({1})}) {
          check_same(F::quantize(x.cuda(), f, amax.cuda()), F::quantize(x, f, amax));
          const auto gpu = F::quantize_with_transpose(x.cuda(), f, amax.cuda());
          const auto cpu = F::quantize_with_transpose(x, f, amax);
          check_same(gpu.quantized, cpu.quantized);
          check_same(gpu.transposed, cpu.transposed);
        }
        check_same(F::quantize(x.cuda(), f, true_amax.cuda()), F::quantize(x, f));
      }
    }
  }
}
