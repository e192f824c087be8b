#pragma once
// The functional quantize calls (include/fp8nn/quantize.h) with the numerics monitor's counts:
// what quantize.cpp's public functions run, for the engine (src/linear/) to call with a monitor.
// `amax`: undefined to compute it. `counts`: undefined, or an int64 [3] tensor on x's device that
// the cast adds to ([0] saturated, [1] flushed to zero, [2] max with the amax's bits; see
// kernels/quantize/cast.h), on the GPU and in the CPU reference alike.

#include <fp8nn/quantize.h>

#include <vector>

namespace fp8nn::detail {

/// One operand's row of a delayed-scaling state (functional::DelayedScalingState), as tensors on
/// x's device, and the recipe's constants: what a delayed cast reads and updates
/// (kernels/quantize/delayed_scaling.h has the rule).
struct DelayedTensors {
  torch::Tensor history;  // float [L]
  torch::Tensor scale;    // float [1]: read by this call, replaced by the next scale
  torch::Tensor counts;   // int64 [3]: amaxes recorded, values saturated, non-finite amaxes
  torch::Tensor scratch;  // int32 [2], zero between calls (CUDA only)
  float scaled_max = 0;   // fmt_max * 2^-margin
  bool most_recent = false;
  bool first = false;  // the operand's first call: current scaling, then recorded
};

QuantizedTensor quantize(const torch::Tensor& x, Format format, const torch::Tensor& amax,
                         const torch::Tensor& counts);
/// `power_of_two`: each group's scale rounded down to a power of two (OperandRecipe::
/// power_of_two_scales; kernels/common/fp8_format.h, power_of_two_below).
QuantizedTensor quantize_per_group(const torch::Tensor& x, Format format, int64_t group_size,
                                   const torch::Tensor& counts, bool power_of_two = false);
/// `column_sums`: null, or set to x2d.sum(0) in fp32 ([cols]: a bias gradient), on CUDA taken in
/// the same pass as the cast when the amax is computed there (summed in a fixed order: another
/// order than at::sum's, so the bits may differ from it, never between runs).
QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const torch::Tensor& amax, const torch::Tensor& counts,
                                      torch::Tensor* column_sums = nullptr);

/// Per-tensor quantization of x2d with delayed scaling (Recipe::delayed): cast with
/// delayed.scale (or, when delayed.first, the scale of x2d's own amax), record x2d's amax and
/// saturations into `delayed` and set its next scale, in the same pass on CUDA. With
/// `with_transpose` (x2d 2-d) the transposed copy too, sharing the scale.
QuantizedPair quantize_delayed(const torch::Tensor& x2d, Format format, bool with_transpose,
                               const DelayedTensors& delayed, const torch::Tensor& counts);

/// quantize(x, format, {}, counts) that also sets *amax_out to the amax it computed (a 0-d fp32
/// tensor on x's device), for a later cast with the same scale (quantize_transposed): one pass
/// over x on CUDA, where an amax pass and then a cast would take two.
QuantizedTensor quantize_returning_amax(const torch::Tensor& x, Format format,
                                        const torch::Tensor& counts, torch::Tensor* amax_out);

/// functional::quantize_per_block(x2d, format) with the monitor's counts (their amax word takes the
/// largest block amax), and with `with_transpose` its transpose from the same pass; power-of-two
/// scales as in quantize_per_group. `row_copy` false (with `with_transpose`): only the transposed
/// copy is wanted, and on CUDA the row-major bytes are not written (quantized.data undefined;
/// its scales still come).
QuantizedPair quantize_per_block(const torch::Tensor& x2d, Format format, bool with_transpose,
                                 const torch::Tensor& counts, bool power_of_two = false,
                                 bool row_copy = true);

/// functional::quantize_per_group_with_transpose with the monitor's counts, which count the first
/// copy only (the second holds the same values).
QuantizedPair quantize_per_group_with_transpose(const torch::Tensor& x2d, Format format,
                                                int64_t group_size, const torch::Tensor& counts,
                                                bool power_of_two = false);

/// The shape scale_inv must have for q's data and groups (q.group_size > 0): [rows,
/// ceil(cols / group_size)], or per block [ceil(rows / group_rows), ceil(cols / group_size)].
std::vector<int64_t> group_scale_shape(const QuantizedTensor& q);

/// quantize_with_transpose(x2d, format, amax)'s transposed copy alone (on CUDA the row-major one
/// is not written): the same bytes and scale_inv.
QuantizedTensor quantize_transposed(const torch::Tensor& x2d, Format format,
                                    const torch::Tensor& amax);

}  // namespace fp8nn::detail
