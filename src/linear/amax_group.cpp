// Amax reduction across data-parallel ranks for the per-tensor FP8 scales.

#include "linear/amax_group.h"

#include "quantize/quantize_detail.h"

#include <utility>
#include <vector>

namespace fp8nn {

// Out of line: copying or destroying the reference needs c10d::ProcessGroup's definition.
ProcessGroupRef::ProcessGroupRef() = default;
ProcessGroupRef::ProcessGroupRef(c10::intrusive_ptr<c10d::ProcessGroup> group)
    : group_(std::move(group)) {}
ProcessGroupRef::ProcessGroupRef(const ProcessGroupRef& other) = default;
ProcessGroupRef::ProcessGroupRef(ProcessGroupRef&& other) noexcept = default;
ProcessGroupRef& ProcessGroupRef::operator=(const ProcessGroupRef& other) = default;
ProcessGroupRef& ProcessGroupRef::operator=(ProcessGroupRef&& other) noexcept = default;
ProcessGroupRef::~ProcessGroupRef() = default;
ProcessGroupRef::operator bool() const { return group_.defined(); }
c10::intrusive_ptr<c10d::ProcessGroup> ProcessGroupRef::get() const { return group_; }

namespace detail {

torch::Tensor group_amax(const torch::Tensor& x, const AmaxGroup& group) {
  auto amax = x.numel() == 0 ? torch::zeros({1}, x.options().dtype(at::kFloat))
                             : x.abs().amax().to(at::kFloat).reshape({1});
  if (group) {
    std::vector<torch::Tensor> tensors{amax};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::MAX;
    // NCCL: wait() makes the current stream wait for the reduction (no host synchronisation);
    // Gloo (CPU tensors): it blocks until the reduced value is there.
    group->allreduce(tensors, options)->wait();
  }
  return amax;
}

QuantizedPair quantize_with_transpose(const torch::Tensor& x2d, Format format,
                                      const AmaxGroup& group, const torch::Tensor& counts,
                                      torch::Tensor* column_sums) {
  const auto amax = group ? group_amax(x2d, group) : torch::Tensor();
  return quantize_with_transpose(x2d, format, amax, counts, column_sums);
}

QuantizedTensor quantize(const torch::Tensor& x, Format format, const AmaxGroup& group,
                         const torch::Tensor& counts) {
  return quantize(x, format, group ? group_amax(x, group) : torch::Tensor(), counts);
}

}  // namespace detail
}  // namespace fp8nn
