#pragma once

#include <algorithm>
// An emulation of the FP8 linear layers written from plain libtorch ops, independent of the
// library: DESIGN.md §1's quantization (one group at a time, by narrowing columns), dequantization
// and products in fp64. Tests compare the layers' forward and gradients against it.

#include <torch/torch.h>

#include <cfloat>
#include <cstdint>

namespace fp8nn::test {

enum class Fp8 { E4M3, E5M2 };

/// x2d [rows, cols] quantized with one scale per `group` consecutive columns of a row (0: one
/// scale for the whole tensor), returned dequantized in fp64 on the CPU.
inline torch::Tensor fake_quantize(const torch::Tensor& x2d, Fp8 format, int64_t group) {
  const double fmt_max = format == Fp8::E4M3 ? 448.0 : 57344.0;
  const auto fp8 = format == Fp8::E4M3 ? torch::kFloat8_e4m3fn : torch::kFloat8_e5m2;
  const auto v = x2d.detach().cpu().to(torch::kFloat);
  const int64_t cols = v.size(1);
  const int64_t step = group == 0 ? std::max<int64_t>(cols, 1) : group;
  auto out = torch::zeros(v.sizes(), torch::kDouble);
  for (int64_t begin = 0; begin < cols; begin += step) {
    const auto block = v.narrow(1, begin, std::min(step, cols - begin));
    // amax per row of the block (per group), or over everything (per tensor); fp32 throughout.
    // (an empty tensor has amax 0: amax() itself refuses empty input)
    const auto amax = v.size(0) == 0 ? torch::zeros({1, 1})
                      : group == 0   ? block.abs().amax().reshape({1, 1})
                                     : block.abs().amax(1, true);
    auto scale = torch::full_like(amax, fmt_max) / amax;
    scale = torch::where(torch::isposinf(scale), torch::full_like(scale, FLT_MAX), scale);
    scale = torch::where(amax == 0, torch::ones_like(scale), scale);
    const auto q = (block * scale).clamp(-fmt_max, fmt_max).to(fp8);
    const auto scale_inv = torch::ones_like(scale) / scale;  // fp32, as stored by the library
    out.narrow(1, begin, block.size(1)).copy_(q.to(torch::kDouble) * scale_inv.to(torch::kDouble));
  }
  return out;
}

/// One result of a layer in fp64 with the magnitude its fp32 accumulation error scales with
/// (sum of |terms|).
struct Reference {
  torch::Tensor value;
  torch::Tensor magnitude;
};

/// a [M, K] x b [N, K]^T in fp64, with |a| x |b|^T.
inline Reference product(const torch::Tensor& a, const torch::Tensor& b) {
  return {at::matmul(a, b.t()), at::matmul(a.abs(), b.abs().t())};
}

/// The forward and the three gradients of a layer, for x [M, K], weight [N, K], bias [N] (or
/// undefined) and output gradient dy [M, N].
struct LinearReference {
  Reference y, dx, dw, db;
};

inline torch::Tensor f64(const torch::Tensor& t) { return t.detach().cpu().to(torch::kDouble); }

inline Reference bias_terms(const Reference& y, const torch::Tensor& bias) {
  if (!bias.defined()) return y;
  return {y.value + f64(bias), y.magnitude + f64(bias).abs()};
}

inline Reference bias_grad(const torch::Tensor& dy) {
  return {f64(dy).sum(0), f64(dy).abs().sum(0)};
}

/// Global: per-tensor E4M3 x and W, per-tensor E5M2 dy, every product from those copies.
inline LinearReference emulate_global(const torch::Tensor& x, const torch::Tensor& weight,
                                      const torch::Tensor& bias, const torch::Tensor& dy) {
  const auto xq = fake_quantize(x, Fp8::E4M3, 0), wq = fake_quantize(weight, Fp8::E4M3, 0);
  const auto dyq = fake_quantize(dy, Fp8::E5M2, 0);
  return {bias_terms(product(xq, wq), bias), product(dyq, wq.t()), product(dyq.t(), xq.t()),
          bias_grad(dy)};
}

/// Mixed: E4M3 x per G_in columns, per-tensor E4M3 W, E5M2 dy per G_out columns for dx; dW from
/// the unquantized x and dy.
inline LinearReference emulate_mixed(const torch::Tensor& x, const torch::Tensor& weight,
                                     const torch::Tensor& bias, const torch::Tensor& dy,
                                     int64_t G_in, int64_t G_out) {
  const auto xq = fake_quantize(x, Fp8::E4M3, G_in), wq = fake_quantize(weight, Fp8::E4M3, 0);
  const auto dyq = fake_quantize(dy, Fp8::E5M2, G_out);
  return {bias_terms(product(xq, wq), bias), product(dyq, wq.t()), product(f64(dy).t(), f64(x).t()),
          bias_grad(dy)};
}

/// Unit roundoff of a high-precision dtype (the rounding of a result stored in it).
inline double unit_roundoff(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16:
      return 0x1p-8;
    case torch::kHalf:
      return 0x1p-11;
    default:
      return 0x1p-24;
  }
}

/// Half the smallest subnormal of a dtype: the absolute rounding error of a result that lands
/// below its normal range, where the relative bound above does not hold (fp16 from 6.1e-5 down).
inline double subnormal_half_step(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16:
      return 0x1p-134;
    case torch::kHalf:
      return 0x1p-25;
    default:
      return 0x1p-150;
  }
}

// fp32 accumulation of K products differs from fp64 by a few ulp of the sum of |terms| in
// practice (K * 2^-24 in the worst case, ~1e-5 at K = 5000 only for adversarial signs): 2^-16
// leaves ample room for blocked/reordered sums while an FP8 rounding slip (>= 2^-4 of one term)
// still shows.
constexpr double kAccumulationRelative = 0x1p-16;

// FP8 tensor cores (CUDA) add into a narrower accumulator, about 13 fraction bits per 32-deep
// MMA step (see gemm/test_scaled_mm.cpp). Precise accumulation promotes to fp32 every few steps: allow
// two steps' worth, 2^-10 of the sum of |terms| (measured on an H100: <= 2^-12.4). Fast
// accumulation (the forward product) never promotes: ceil(K / 32) steps of 2^-11.
constexpr double kTensorCoreStepRelative = 0x1p-11;
constexpr double kTensorCorePreciseRelative = 0x1p-10;

/// The accumulation tolerance (relative to the sum of |terms|) of a product with reduction
/// length k: fp32 on the CPU; FP8 tensor cores on CUDA, precise or fast.
inline double accumulation_relative(const torch::Device& device, int64_t k, bool fast) {
  if (!device.is_cuda()) return kAccumulationRelative;
  const double fast_bound = double((k + 31) / 32) * kTensorCoreStepRelative;
  return fast ? std::max(kTensorCorePreciseRelative, fast_bound) : kTensorCorePreciseRelative;
}

/// The largest |got - ref| / tolerance, tolerance = accumulation error of the sum plus
/// `roundoff` relative (the rounding of results stored in lower precision) plus `absolute` (that
/// rounding below the normal range). <= 1 passes.
inline double tolerance_ratio(const torch::Tensor& got, const Reference& ref, double roundoff,
                              double accumulation = kAccumulationRelative,
                              double absolute = 1e-30) {
  if (ref.value.numel() == 0) return 0.0;
  const auto tolerance =
      ref.magnitude * accumulation + ref.value.abs() * roundoff + std::max(absolute, 1e-30);
  return ((f64(got) - ref.value).abs() / tolerance).max().item<double>();
}

/// The same for a result rounded once, to `dtype`.
inline double tolerance_ratio(const torch::Tensor& got, const Reference& ref,
                              torch::ScalarType dtype,
                              double accumulation = kAccumulationRelative) {
  return tolerance_ratio(got, ref, unit_roundoff(dtype), accumulation, subnormal_half_step(dtype));
}

/// ||got - ref||_F / ||ref||_F.
inline double relative_error(const torch::Tensor& got, const torch::Tensor& ref) {
  return ((f64(got) - f64(ref)).norm() / f64(ref).norm()).item<double>();
}

}  // namespace fp8nn::test
