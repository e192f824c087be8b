// The one quantization definition (docs/design.md, "Quantization") on the CPU reference path:
// bit-exact agreement with libtorch's own (x.float() * scale).clamp(-max, max).to(fp8), at the
// format edges, on odd shapes, per tensor and per group.

#include <fp8nn/fp8nn.h>

#include "oracle.h"
#include "test_support.h"

#include <cfloat>
#include <cmath>
#include <vector>

using fp8nn::Format;
using fp8nn::test::count_bit_differences;
namespace F = fp8nn::functional;

namespace {

// Half a step of the format's mantissa: E4M3 has 3 mantissa bits, E5M2 has 2.
double relative_half_step(Format f) { return f == Format::E4M3 ? 0x1p-4 : 0x1p-3; }
// Half the smallest subnormal, the absolute error floor near zero (before scale_inv).
double subnormal_half_step(Format f) { return f == Format::E4M3 ? 0x1p-10 : 0x1p-17; }

const std::vector<Format> kFormats = {Format::E4M3, Format::E5M2};
const std::vector<torch::ScalarType> kInputDtypes = {torch::kFloat, torch::kHalf, torch::kBFloat16};

// The oracle (docs/design.md's quantization, written out independently of the library).
namespace oracle = fp8nn::test;

float amax_of(const torch::Tensor& values) {
  return values.numel() == 0 ? 0.0f : values.to(torch::kFloat).abs().max().item<float>();
}

torch::Tensor random_input(at::IntArrayRef shape, torch::ScalarType dtype) {
  // A spread of magnitudes (e^-8 .. e^8), so that small values meet the subnormal range after
  // scaling, while the largest stay finite in fp16.
  auto x = torch::randn(shape) * torch::exp(torch::randn(shape).clamp(-4, 4) * 2.0);
  return x.to(dtype);
}

const std::vector<std::vector<int64_t>> kOddShapes = {{1, 1},  {3, 1000},   {1, 4097}, {17, 15},
                                                      {5, 64}, {2, 3, 130}, {7},       {129, 1}};

// check(x, f) for a fresh random input of each odd shape, input dtype and format.
template <typename Check>
void for_each_odd_input(const Check& check) {
  for (const auto& shape : kOddShapes) {
    for (auto dtype : kInputDtypes) {
      for (auto f : kFormats) {
        CAPTURE(shape, dtype, fp8nn::name_of(f));
        check(random_input(shape, dtype), f);
      }
    }
  }
}

}  // namespace

TEST_CASE("per-tensor quantize equals libtorch's cast bit for bit on odd shapes") {
  fp8nn::test::seed_torch();
  for_each_odd_input([](const torch::Tensor& x, Format f) {
    const auto q = F::quantize(x, f);
    const float scale = oracle::scale_for(amax_of(x), f);
    REQUIRE(q.data.scalar_type() == fp8nn::dtype_of(f));
    REQUIRE(q.data.sizes() == x.sizes());
    REQUIRE(q.scale_inv.dim() == 0);
    REQUIRE(q.scale_inv.scalar_type() == torch::kFloat);
    CHECK(q.scale_inv.item<float>() == 1.0f / scale);
    CHECK(count_bit_differences(q.data, oracle::cast(x, scale, f)) == 0);
    // The oracle's whole quantization agrees.
    const auto want = oracle::quantize(x, f);
    CHECK(count_bit_differences(q.data, want.data) == 0);
    CHECK(count_bit_differences(q.scale_inv, want.scale_inv) == 0);
  });
}

TEST_CASE("per-group quantize equals libtorch's cast group by group, groups never straddle rows") {
  fp8nn::test::seed_torch();
  for (int64_t group_size : {64, 128, 4096, 5}) {
    for (const auto& shape : kOddShapes) {
      for (auto dtype : kInputDtypes) {
        for (auto f : kFormats) {
          CAPTURE(group_size, shape, dtype, fp8nn::name_of(f));
          const auto x = random_input(shape, dtype);
          const auto q = F::quantize_per_group(x, f, group_size);
          const int64_t cols = shape.back();
          const int64_t rows = x.numel() / cols;
          const int64_t groups = (cols + group_size - 1) / group_size;
          REQUIRE(q.group_size == group_size);
          REQUIRE(q.data.sizes() == x.sizes());
          REQUIRE(q.scale_inv.sizes() == torch::IntArrayRef({rows, groups}));
          const auto x_rows = x.reshape({rows, cols});
          const auto q_rows = q.data.reshape({rows, cols});
          int64_t wrong_scales = 0, wrong_values = 0;
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t g = 0; g < groups; ++g) {
              const int64_t begin = g * group_size;
              const int64_t length = std::min(group_size, cols - begin);
              const auto values = x_rows[r].narrow(0, begin, length);
              const float scale = oracle::scale_for(amax_of(values), f);
              wrong_scales += q.scale_inv[r][g].item<float>() != 1.0f / scale;
              wrong_values += count_bit_differences(q_rows[r].narrow(0, begin, length),
                                                    oracle::cast(values, scale, f));
            }
          }
          CHECK(wrong_scales == 0);
          CHECK(wrong_values == 0);
        }
      }
    }
  }
}

TEST_CASE("rounding at the format edges: ties to even, subnormals, saturation at max") {
  // amax is exactly fmt_max, so scale == 1 and the cast sees the values unchanged.
  SECTION("e4m3") {
    const auto x = torch::tensor({448.0f, -448.0f, 1.0625f, 1.1875f, -1.0625f, 0x1p-9f, 0x1p-10f,
                                  3 * 0x1p-10f, 0x1p-11f, 240.0f, 0.0f, -0.0f});
    const auto q = F::quantize(x, Format::E4M3);
    REQUIRE(q.scale_inv.item<float>() == 1.0f);
    const auto back = q.data.to(torch::kFloat);
    const auto expected = torch::tensor(
        {448.0f, -448.0f, 1.0f, 1.25f, -1.0f, 0x1p-9f, 0.0f, 0x1p-8f, 0.0f, 240.0f, 0.0f, -0.0f});
    CHECK(torch::equal(back, expected));
    CHECK(count_bit_differences(q.data, oracle::cast(x, 1.0f, Format::E4M3)) == 0);
  }
  SECTION("e5m2") {
    const auto x = torch::tensor({57344.0f, 1.125f, 1.375f, 0x1p-16f, 0x1p-17f, 3 * 0x1p-17f});
    const auto q = F::quantize(x, Format::E5M2);
    REQUIRE(q.scale_inv.item<float>() == 1.0f);
    const auto expected = torch::tensor({57344.0f, 1.0f, 1.5f, 0x1p-16f, 0.0f, 0x1p-15f});
    CHECK(torch::equal(q.data.to(torch::kFloat), expected));
  }
  SECTION("values scaled past max saturate to max, never to NaN") {
    // amax / 448 scaling of 449 can round to just above 448 in fp32: the clamp keeps it finite.
    for (auto f : kFormats) {
      const float m = fp8nn::max_of(f);
      const auto x = torch::tensor({std::nextafter(m, 2 * m), -std::nextafter(m, 2 * m), 1.0f});
      const auto q = F::quantize(x, f);
      const auto back = q.data.to(torch::kFloat);
      CHECK(back[0].item<float>() == m);
      CHECK(back[1].item<float>() == -m);
      CHECK(torch::isfinite(back).all().item<bool>());
    }
  }
}

TEST_CASE("all-zero input gives scale 1 and zero data, empty input gives empty data") {
  for (auto f : kFormats) {
    const auto q = F::quantize(torch::zeros({4, 33}), f);
    CHECK(q.scale_inv.item<float>() == 1.0f);
    CHECK(q.data.to(torch::kFloat).abs().max().item<float>() == 0.0f);
    const auto g = F::quantize_per_group(torch::zeros({3, 200}), f, 64);
    CHECK(torch::equal(g.scale_inv, torch::ones({3, 4})));
    const auto empty = F::quantize(torch::zeros({0, 16}), f);
    CHECK(empty.data.sizes() == torch::IntArrayRef({0, 16}));
    CHECK(empty.scale_inv.item<float>() == 1.0f);
    const auto empty_groups = F::quantize_per_group(torch::zeros({0, 16}), f, 8);
    CHECK(empty_groups.scale_inv.sizes() == torch::IntArrayRef({0, 2}));
  }
}

TEST_CASE("tiny amax overflows the scale division to FLT_MAX, and stays accurate") {
  const auto x = torch::tensor({1e-40f, -3e-41f, 0.0f});  // fp32 subnormals
  for (auto f : kFormats) {
    const auto q = F::quantize(x, f);
    CHECK(q.scale_inv.item<float>() == 1.0f / FLT_MAX);
    CHECK(count_bit_differences(q.data, oracle::cast(x, FLT_MAX, f)) == 0);
    CHECK(torch::isfinite(q.data.to(torch::kFloat)).all().item<bool>());
  }
}

TEST_CASE("NaN and Inf are never turned into finite results") {
  for (auto f : kFormats) {
    CAPTURE(fp8nn::name_of(f));
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      CAPTURE(bad);
      auto x = torch::randn({4, 256});
      x[1][70] = bad;
      const auto per_tensor = F::dequantize(F::quantize(x, f));
      CHECK_FALSE(std::isfinite(per_tensor[1][70].item<float>()));
      const auto per_group = F::dequantize(F::quantize_per_group(x, f, 64));
      CHECK_FALSE(std::isfinite(per_group[1][70].item<float>()));
      // Other groups keep their own scales and stay finite.
      CHECK(torch::isfinite(per_group[0]).all().item<bool>());
      CHECK(torch::isfinite(per_group[1].narrow(0, 128, 128)).all().item<bool>());
    }
  }
}

// With a given amax (the amax group's, a delayed scale's) the scale stays finite and positive, so
// v * scale alone cannot keep an infinite v from the clamp to +-max.
namespace {
void check_inf_with_given_amax(torch::Device device) {
  const auto amax = torch::tensor(3.0f, device);
  for (auto f : kFormats) {
    CAPTURE(fp8nn::name_of(f));
    for (float bad : {INFINITY, -INFINITY}) {
      CAPTURE(bad);
      auto x_cpu = torch::randn({4, 256});
      x_cpu[1][70] = bad;
      x_cpu[2][3] = 1e30f;  // finite and far above amax: clamps to +max, as before
      const auto x = x_cpu.to(device);
      const auto q = F::quantize(x, f, amax);
      const auto back = F::dequantize(q).cpu();
      CHECK_FALSE(std::isfinite(back[1][70].item<float>()));
      if (f == Format::E5M2) CHECK(back[1][70].item<float>() == bad);  // E5M2 keeps the sign
      CHECK(back[2][3].item<float>() == static_cast<float>(fp8nn::max_of(f)) *
                                            q.scale_inv.item<float>());
      CHECK(count_bit_differences(q.data.cpu(), oracle::cast(x_cpu, oracle::scale_for(3.0f, f),
                                                             f)) == 0);
      const auto pair = F::quantize_with_transpose(x, f, amax);
      CHECK(count_bit_differences(pair.quantized.data, q.data) == 0);
      CHECK_FALSE(std::isfinite(F::dequantize(pair.transposed)[70][1].item<float>()));
    }
  }
}
}  // namespace

FP8NN_CPU_AND_CUDA_CASE("an infinite input stays non-finite with a given amax",
                        check_inf_with_given_amax)

TEST_CASE("dequantize(quantize(x)) is within half a format step of x") {
  fp8nn::test::seed_torch();
  for (auto dtype : kInputDtypes) {
    for (auto f : kFormats) {
      for (int64_t group_size : {0, 64, 128}) {
        CAPTURE(dtype, fp8nn::name_of(f), group_size);
        const auto x = random_input({37, 300}, dtype);
        const auto q =
            group_size == 0 ? F::quantize(x, f) : F::quantize_per_group(x, f, group_size);
        const auto back = F::dequantize(q);
        const auto x_float = x.to(torch::kFloat);
        // Absolute floor: half the smallest subnormal, in the units of each value's scale.
        const auto scale_inv = group_size == 0
                                   ? q.scale_inv.expand({37, 300})
                                   : q.scale_inv.repeat_interleave(group_size, 1).narrow(1, 0, 300);
        const auto bound =
            x_float.abs() * relative_half_step(f) + scale_inv * subnormal_half_step(f) * 1.000001;
        CHECK(((back - x_float).abs() <= bound).all().item<bool>());
        CHECK(F::dequantize(q, dtype).scalar_type() == dtype);
      }
    }
  }
}

TEST_CASE("bad input raises a clear error naming the operation") {
  const auto ints = torch::ones({2, 2}, torch::kInt);
  CHECK_THROWS_AS(F::quantize(ints, Format::E4M3), c10::TypeError);
  CHECK_THROWS_AS(F::quantize_per_group(torch::ones({2, 2}), Format::E4M3, 0), c10::ValueError);
  CHECK_THROWS_AS(F::quantize_per_group(torch::tensor(1.0f), Format::E4M3, 64), c10::ValueError);
  try {
    F::quantize(ints, Format::E5M2);
    FAIL("expected an error");
  } catch (const c10::TypeError& e) {
    const std::string message = e.what_without_backtrace();
    CHECK(message.find("fp8nn::quantize") != std::string::npos);
    CHECK(message.find("Int") != std::string::npos);
  }
}

TEST_CASE("quantize on a CUDA tensor equals the CPU reference bit for bit") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for_each_odd_input([](const torch::Tensor& x, Format f) {
    const auto cpu = F::quantize_per_group(x, f, 64);
    const auto gpu = F::quantize_per_group(x.cuda(), f, 64);
    CHECK(count_bit_differences(gpu.data, cpu.data) == 0);
    CHECK(count_bit_differences(gpu.scale_inv, cpu.scale_inv) == 0);
    const auto cpu_t = F::quantize(x, f);
    const auto gpu_t = F::quantize(x.cuda(), f);
    CHECK(count_bit_differences(gpu_t.data, cpu_t.data) == 0);
    CHECK(count_bit_differences(gpu_t.scale_inv, cpu_t.scale_inv) == 0);
  });
}
