// functional::scaled_mm: the CPU reference and every CUDA path (cuBLASLt FP8 tensor cores, their
// zero-padded form for odd shapes, the on-device reference for what they cannot express) against
// the oracle: the exact fp64 product of the operands dequantized by tests/support/oracle.h.

#include <fp8nn/fp8nn.h>

#include "test_support.h"
#include "tolerance.h"

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

using fp8nn::Format;
using fp8nn::QuantizedTensor;
namespace F = fp8nn::functional;
using fp8nn::test::unit_roundoff;

namespace {

// FP8NN_TEST_REDUCED=1 (compute-sanitizer runs): only products of {M, K, N, ...} with at most
// 2^24 multiply-adds.
bool skipped_product(const std::vector<int64_t>& shape) {
  return fp8nn::test::skipped_when_reduced(shape[0] * shape[1] * shape[2], int64_t{1} << 24);
}

// ---- error bounds -------------------------------------------------------------------------------
// Dequantized values q * scale_inv are exact in fp64 (4 + 24 significant bits), so `truth`, the
// fp64 product, is the exact answer, and S = sum_k |a_ik b_jk| + |bias_j| bounds every partial sum.
//  - fp32 accumulation in any order, plus the roundings of dequantizing (CPU) or applying the two
//    scales (GPU): |err| <= (K + 3) u32 S, u32 = 2^-24.
//  - Hopper FP8 tensor cores add each MMA step (32 products along K, plus the running sum) in an
//    accumulator that keeps 13 fraction bits aligned to its largest addend ("FP22": SageAttention2
//    §4; DeepSeek-V3 §3.3.2 measured ~14 bits). With addends of equal size that errs by 2^-13 of
//    their magnitude sum; we allow 2^-11 per step for unequal ones (the rigorous worst case, every
//    addend truncated at the largest one's grain, is 33 * 2^-13 of the largest).
//    Precise mode promotes the running sum to fp32 every few steps (CUTLASS: 4 steps, 128 of K);
//    we allow 8 for cuBLASLt's unknown interval: <= 8 * 2^-11 S = 2^-8 S.
//    Fast accumulation never promotes: <= ceil(K / 32) * 2^-11 S (K padded to 16).
//  - Output rounding: <= u_out (|truth| + |err|), u_out = 2^-8 (bf16), 2^-11 (fp16), 2^-24 (fp32);
//    a bias converted to a 16-bit output type first adds <= u_out |bias|; fp16's subnormal spacing
//    puts an absolute floor of 2^-25 under that.
constexpr double kFp32UnitRoundoff = 0x1p-24;
constexpr double kTensorCoreStepError = 0x1p-11;  // one MMA step into the FP22 accumulator
constexpr int64_t kTensorCoreStepK = 32;          // K per FP8 MMA step on Hopper
constexpr int64_t kPreciseStepsPerPromotion = 8;  // twice CUTLASS's promotion interval
// Fast accumulation's worst case grows with K, so it is loose for long K; on top of it the error
// over the whole output must stay below this fraction of the result (DeepSeek-V3 measured ~2% worst
// case for K = 4096 without promotion; a wrong layout or scale gives ~100%).
constexpr double kFastAccumulationAggregateRelative = 0x1p-5;
constexpr int64_t kAggregateMinElements = 64;

double subnormal_floor(torch::ScalarType dtype) { return dtype == torch::kHalf ? 0x1p-25 : 0.0; }

enum class Path { Reference, Gpu };

// Accumulation error bound as a multiple of S.
double accumulation_bound(Path path, int64_t K, bool fast_accumulation) {
  const double fp32 = static_cast<double>(K + 3) * kFp32UnitRoundoff;
  if (path == Path::Reference) return fp32;
  const int64_t padded_K = (K + 15) / 16 * 16;
  const int64_t steps = fast_accumulation ? (padded_K + kTensorCoreStepK - 1) / kTensorCoreStepK
                                          : kPreciseStepsPerPromotion;
  return fp32 + static_cast<double>(steps) * kTensorCoreStepError;
}

// ---- operands and the fp64 emulation ------------------------------------------------------------
const std::vector<torch::ScalarType> kOutDtypes = {torch::kFloat, torch::kHalf, torch::kBFloat16};

QuantizedTensor quantize(const torch::Tensor& x, Format format, int64_t group_size) {
  return group_size == 0 ? F::quantize(x, format) : F::quantize_per_group(x, format, group_size);
}

// Random operands (a spread of magnitudes, so the scales are not 1), the exact product and S.
struct Problem {
  QuantizedTensor a, b;
  c10::optional<torch::Tensor> bias;
  torch::Tensor truth, magnitude, bias_magnitude;  // fp64 [M, N], [M, N], [N]

  int64_t K() const { return a.data.size(1); }
};

Problem make_problem(int64_t M, int64_t K, int64_t N, Format format_a, Format format_b,
                     int64_t group_a, int64_t group_b,
                     c10::optional<torch::ScalarType> bias_dtype) {
  Problem p;
  const auto x = torch::randn({M, K}) * torch::exp(torch::randn({M, 1}));
  const auto w = torch::randn({N, K}) * 0.1;
  p.a = quantize(x, format_a, group_a);
  p.b = quantize(w, format_b, group_b);
  const auto a64 = fp8nn::test::dequantize(p.a);
  const auto b64 = fp8nn::test::dequantize(p.b);
  p.truth = torch::matmul(a64, b64.t());
  p.magnitude = torch::matmul(a64.abs(), b64.abs().t());
  p.bias_magnitude = torch::zeros({N}, torch::kDouble);
  if (bias_dtype) {
    p.bias = torch::randn({N}).to(*bias_dtype);
    const auto bias64 = p.bias->to(torch::kDouble);
    p.truth += bias64;
    p.bias_magnitude = bias64.abs();
    p.magnitude += p.bias_magnitude;
  }
  return p;
}

// The same operands on the GPU.
Problem to_cuda(const Problem& p) {
  Problem g = p;
  const auto move = [](const QuantizedTensor& q) {
    return QuantizedTensor{q.data.cuda(), q.scale_inv.cuda(), q.format, q.group_size};
  };
  g.a = move(p.a);
  g.b = move(p.b);
  if (p.bias) g.bias = p.bias->cuda();
  return g;
}

// Checks out against the exact product within the bound of the path; returns nothing, records all.
void check_against_truth(const torch::Tensor& out, const Problem& p, torch::ScalarType out_dtype,
                         Path path, bool fast_accumulation) {
  REQUIRE(out.scalar_type() == out_dtype);
  REQUIRE(out.sizes() == p.truth.sizes());
  const auto got = out.cpu().to(torch::kDouble);
  // Finite operands never give NaN or Inf (nothing here comes near the fp16 range).
  REQUIRE(torch::isfinite(got).all().item<bool>());
  const double u_out = unit_roundoff(out_dtype);
  const double accumulation = accumulation_bound(path, p.K(), fast_accumulation);
  const auto accumulation_error = p.magnitude * accumulation;
  const auto tolerance = accumulation_error * (1.0 + u_out) +
                         (p.truth.abs() + p.bias_magnitude) * u_out + subnormal_floor(out_dtype);
  const auto error = (got - p.truth).abs();
  const auto over = (error > tolerance).sum().item<int64_t>();
  INFO("elements over the bound: " << over << " of " << error.numel() << "; worst error/bound "
                                   << (error / (tolerance + 1e-300)).max().item<double>());
  CHECK(over == 0);
  // Over enough elements that a few near-zero results cannot dominate the norm.
  if (path == Path::Gpu && fast_accumulation && p.truth.numel() >= kAggregateMinElements) {
    const double aggregate =
        (got - p.truth).norm().item<double>() / (p.truth.norm().item<double>() + 1e-300);
    INFO("aggregate relative error " << aggregate);
    CHECK(aggregate <= kFastAccumulationAggregateRelative);
  }
}

std::string describe(int64_t M, int64_t K, int64_t N, Format fa, Format fb) {
  return "M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
         " a=" + fp8nn::name_of(fa) + " b=" + fp8nn::name_of(fb);
}

const std::vector<std::tuple<Format, Format>> kFormatPairs = {
    {Format::E4M3, Format::E4M3},  // forward
    {Format::E5M2, Format::E4M3},  // input gradient: dy (e5m2) x W
    {Format::E4M3, Format::E5M2},  // the mirrored mix
    {Format::E5M2, Format::E5M2},  // no cuBLASLt kernel: the fallback
};

const std::vector<c10::optional<torch::ScalarType>> kBiasDtypes = {c10::nullopt, torch::kFloat,
                                                                   torch::kBFloat16};

}  // namespace

// ---- CPU reference
// -------------------------------------------------------------------------------

TEST_CASE("CPU reference equals the exact product of the dequantized operands within fp32 error") {
  fp8nn::test::seed_torch();
  const std::vector<std::vector<int64_t>> shapes = {{1, 1, 1}, {17, 33, 15}, {64, 130, 48}};
  for (const auto& shape : shapes) {
    for (const auto& [fa, fb] : kFormatPairs) {
      for (const auto& bias_dtype : kBiasDtypes) {
        const auto p = make_problem(shape[0], shape[1], shape[2], fa, fb, 0, 0, bias_dtype);
        for (auto out_dtype : kOutDtypes) {
          CAPTURE(describe(shape[0], shape[1], shape[2], fa, fb), out_dtype,
                  bias_dtype.has_value());
          const auto out = F::scaled_mm(p.a, p.b, p.bias, out_dtype);
          check_against_truth(out, p, out_dtype, Path::Reference, false);
        }
      }
    }
  }
}

TEST_CASE("CPU reference applies per-group scales of a and b group by group") {
  fp8nn::test::seed_torch();
  for (int64_t group : {16, 128, 4096}) {
    const auto p = make_problem(9, 300, 7, Format::E4M3, Format::E4M3, group, 0, torch::kFloat);
    const auto q = make_problem(9, 300, 7, Format::E5M2, Format::E4M3, 0, group, c10::nullopt);
    CAPTURE(group);
    check_against_truth(F::scaled_mm(p.a, p.b, p.bias, torch::kFloat), p, torch::kFloat,
                        Path::Reference, false);
    check_against_truth(F::scaled_mm(q.a, q.b, q.bias, torch::kFloat), q, torch::kFloat,
                        Path::Reference, false);
  }
}

TEST_CASE("empty K gives the bias or zeros, empty M or N an empty result") {
  const auto a = F::quantize(torch::zeros({3, 0}), Format::E4M3);
  const auto b = F::quantize(torch::zeros({4, 0}), Format::E4M3);
  const auto bias = torch::arange(4, torch::kFloat);
  CHECK(torch::equal(F::scaled_mm(a, b, bias, torch::kFloat), bias.expand({3, 4})));
  CHECK(torch::equal(F::scaled_mm(a, b, c10::nullopt, torch::kFloat), torch::zeros({3, 4})));
  const auto empty_rows = F::quantize(torch::ones({0, 8}), Format::E4M3);
  const auto b8 = F::quantize(torch::ones({4, 8}), Format::E4M3);
  CHECK(F::scaled_mm(empty_rows, b8, c10::nullopt, torch::kBFloat16).sizes() ==
        std::vector<int64_t>{0, 4});
}

TEST_CASE("bad arguments raise errors naming scaled_mm, expected and got") {
  const auto a = F::quantize(torch::randn({4, 8}), Format::E4M3);
  const auto b = F::quantize(torch::randn({5, 8}), Format::E4M3);
  const auto b_other_k = F::quantize(torch::randn({5, 9}), Format::E4M3);
  CHECK_THROWS_AS(F::scaled_mm(a, b_other_k, c10::nullopt, torch::kFloat), c10::ValueError);
  CHECK_THROWS_AS(F::scaled_mm(a, b, c10::nullopt, torch::kInt), c10::TypeError);
  CHECK_THROWS_AS(F::scaled_mm(a, b, torch::zeros({4}), torch::kFloat), c10::ValueError);
  CHECK_THROWS_AS(F::scaled_mm(a, b, torch::zeros({5}, torch::kInt), torch::kFloat),
                  c10::TypeError);
  auto wrong_format = a;
  wrong_format.format = Format::E5M2;
  CHECK_THROWS_AS(F::scaled_mm(wrong_format, b, c10::nullopt, torch::kFloat), c10::TypeError);
  auto wrong_scale = a;
  wrong_scale.scale_inv = torch::ones({2});
  CHECK_THROWS_AS(F::scaled_mm(wrong_scale, b, c10::nullopt, torch::kFloat), c10::ValueError);
  auto wrong_groups = F::quantize_per_group(torch::randn({4, 8}), Format::E4M3, 4);
  wrong_groups.scale_inv = torch::ones({4, 1});
  CHECK_THROWS_AS(F::scaled_mm(wrong_groups, b, c10::nullopt, torch::kFloat), c10::ValueError);
  try {
    F::scaled_mm(a, b_other_k, c10::nullopt, torch::kFloat);
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    CHECK(message.find("fp8nn::scaled_mm") != std::string::npos);
    CHECK(message.find("same K") != std::string::npos);
  }
}

// ---- CUDA
// ----------------------------------------------------------------------------------------

TEST_CASE(
    "CUDA scaled_mm matches the exact product: all shapes, formats, dtypes, bias, accumulation") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  // Aligned shapes take cuBLASLt directly; the others its padded form (K or N not multiples of 16).
  const std::vector<std::vector<int64_t>> shapes = {
      {1, 1, 1}, {17, 33, 15}, {64, 4097, 48}, {256, 512, 128}, {1000, 1024, 1000}};
  for (const auto& shape : shapes) {
    if (skipped_product(shape)) continue;
    for (const auto& [fa, fb] : kFormatPairs) {
      for (const auto& bias_dtype : kBiasDtypes) {
        const auto p = make_problem(shape[0], shape[1], shape[2], fa, fb, 0, 0, bias_dtype);
        const auto g = to_cuda(p);
        for (auto out_dtype : kOutDtypes) {
          CAPTURE(describe(shape[0], shape[1], shape[2], fa, fb), out_dtype,
                  bias_dtype.has_value());
          // The CPU reference and the GPU each within their own bound of the exact product.
          check_against_truth(F::scaled_mm(p.a, p.b, p.bias, out_dtype), p, out_dtype,
                              Path::Reference, false);
          for (bool fast : {false, true}) {
            CAPTURE(fast);
            const auto out = F::scaled_mm(g.a, g.b, g.bias, out_dtype, fast);
            REQUIRE(out.is_cuda());
            check_against_truth(out, g, out_dtype, Path::Gpu, fast);
          }
        }
      }
    }
  }
}

TEST_CASE("CUDA per-row scaled operands (group >= K) match the exact product") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const std::vector<std::vector<int64_t>> shapes = {
      {17, 33, 15}, {256, 512, 128}, {1000, 1024, 1000}, {64, 4096, 48}};
  for (const auto& shape : shapes) {
    if (skipped_product(shape)) continue;
    const int64_t K = shape[1];
    // Mixed's forward (rows of a), and both operands per row; a group of exactly K, and a larger
    // one.
    for (const auto& [group_a, group_b] :
         std::vector<std::tuple<int64_t, int64_t>>{{4096, 0}, {K, 0}, {4096, 4096}, {0, K}}) {
      for (const auto& bias_dtype : kBiasDtypes) {
        const auto g = to_cuda(make_problem(shape[0], K, shape[2], Format::E4M3, Format::E4M3,
                                            group_a, group_b, bias_dtype));
        for (auto out_dtype : kOutDtypes) {
          for (bool fast : {false, true}) {
            CAPTURE(describe(shape[0], K, shape[2], Format::E4M3, Format::E4M3), group_a, group_b,
                    out_dtype, bias_dtype.has_value(), fast);
            check_against_truth(F::scaled_mm(g.a, g.b, g.bias, out_dtype, fast), g, out_dtype,
                                Path::Gpu, fast);
          }
        }
      }
    }
  }
}

TEST_CASE("CUDA groups that split rows are split along K into per-row products and stay correct") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  // {M, K, N, group of a, group of b}: ragged last groups, groups of both operands, Mixed's 4096.
  for (const auto& shape : std::vector<std::vector<int64_t>>{
           {17, 33, 15, 128, 0}, {256, 512, 128, 128, 0}, {64, 8200, 48, 4096, 0},
           {96, 512, 64, 128, 256}, {40, 300, 32, 0, 128}}) {
    for (Format fa : {Format::E4M3, Format::E5M2}) {
      const auto g = to_cuda(make_problem(shape[0], shape[1], shape[2], fa, Format::E4M3, shape[3],
                                          shape[4], torch::kBFloat16));
      for (auto out_dtype : kOutDtypes) {
        CAPTURE(describe(shape[0], shape[1], shape[2], fa, Format::E4M3), out_dtype);
        check_against_truth(F::scaled_mm(g.a, g.b, g.bias, out_dtype, true), g, out_dtype,
                            Path::Gpu, true);
      }
    }
  }
}

TEST_CASE("CUDA operands that are strided views or misaligned are handled") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  auto p = make_problem(48, 64, 32, Format::E4M3, Format::E4M3, 0, 0, torch::kFloat);
  auto g = to_cuda(p);
  // The same values one byte into a wider buffer: neither contiguous nor 16-byte aligned.
  auto wide = torch::zeros({48, 65}, g.a.data.options().dtype(torch::kByte));
  wide.narrow(1, 1, 64).copy_(g.a.data.view(torch::kByte));
  g.a.data = wide.narrow(1, 1, 64).view(g.a.data.scalar_type());
  // b given as the transpose of a K-major copy's transpose: a non-contiguous view.
  g.b.data = g.b.data.t().contiguous().t();
  for (auto out_dtype : kOutDtypes) {
    CAPTURE(out_dtype);
    check_against_truth(F::scaled_mm(g.a, g.b, g.bias, out_dtype), g, out_dtype, Path::Gpu, false);
  }
}

TEST_CASE("CUDA NaN in an operand makes exactly the affected outputs non-finite") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for (const auto& shape : std::vector<std::vector<int64_t>>{{32, 64, 48}, {17, 33, 15}}) {
    for (bool fast : {false, true}) {
      auto g = to_cuda(make_problem(shape[0], shape[1], shape[2], Format::E4M3, Format::E4M3, 0, 0,
                                    torch::kBFloat16));
      // 0x7f is NaN in e4m3fn (and in e5m2).
      g.a.data.view(torch::kByte)[0][0].fill_(0x7f);
      const auto out = F::scaled_mm(g.a, g.b, g.bias, torch::kBFloat16, fast).cpu();
      CAPTURE(shape, fast);
      CHECK_FALSE(torch::isfinite(out[0]).any().item<bool>());
      CHECK(torch::isfinite(out.narrow(0, 1, shape[0] - 1)).all().item<bool>());
    }
  }
}
