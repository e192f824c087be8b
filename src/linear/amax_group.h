#pragma once
// Amax reduction across data-parallel ranks (LinearFP8FuncOptions::amax_group): the per-tensor
// quantizations of the linear functions, with the amax all-reduced (MAX) over a c10d process
// group when one is given.

#include <fp8nn/linear_functional.h>
#include <fp8nn/quantize.h>

#include <torch/types.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

namespace fp8nn::detail {

using AmaxGroup = c10::intrusive_ptr<c10d::ProcessGroup>;

/// max |x| in fp32 as a one-element tensor on x's device (0 for an empty x), all-reduced with MAX
/// over `group`. On NCCL only the current stream waits for the reduction.
torch::Tensor group_amax(const torch::Tensor& x, const AmaxGroup& group);

/// functional::quantize_with_transpose(x2d, format), with the amax reduced over `group` when it
/// is not null, adding to the monitor's `counts` when defined, and setting *column_sums when not
/// null (quantize/quantize_detail.h).
QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const AmaxGroup& group, const torch::Tensor& counts = {},
                                      torch::Tensor* column_sums = nullptr);

/// functional::quantize(x, format), likewise.
QuantizedTensor quantize(const torch::Tensor& x, Format format, const AmaxGroup& group,
                         const torch::Tensor& counts = {});

}  // namespace fp8nn::detail
