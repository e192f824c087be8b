#pragma once
// Tolerances of comparing a result against the oracle (oracle.h): the rounding of the dtype a
// result is stored in, and the accumulation error of its products, on the CPU and on CUDA.

#include "oracle.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>

namespace fp8nn::test {

/// How a high-precision dtype rounds a result stored in it: unit roundoff (relative), and half
/// its smallest subnormal (the absolute error of a result below its normal range, where the
/// relative bound does not hold: fp16 from 6.1e-5 down).
struct DtypeRounding {
  double unit_roundoff, subnormal_half_step;
};

inline DtypeRounding rounding_of(torch::ScalarType dtype) {
  if (dtype == torch::kBFloat16) return {0x1p-8, 0x1p-134};
  if (dtype == torch::kHalf) return {0x1p-11, 0x1p-25};
  return {0x1p-24, 0x1p-150};
}

inline double unit_roundoff(torch::ScalarType dtype) { return rounding_of(dtype).unit_roundoff; }
inline double subnormal_half_step(torch::ScalarType dtype) {
  return rounding_of(dtype).subnormal_half_step;
}

// fp32 accumulation of K products differs from fp64 by a few ulp of the sum of |terms| in
// practice (K * 2^-24 in the worst case, ~1e-5 at K = 5000 only for adversarial signs): 2^-16
// leaves ample room for blocked/reordered sums while an FP8 rounding slip (>= 2^-4 of one term)
// still shows.
constexpr double kAccumulationRelative = 0x1p-16;

// FP8 tensor cores (CUDA) add into a narrower accumulator, about 13 fraction bits per 32-deep
// MMA step (see gemm/test_scaled_mm.cpp). Precise accumulation promotes to fp32 every few steps:
// allow two steps' worth, 2^-10 of the sum of |terms| (measured on an H100: <= 2^-12.4). Fast
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
