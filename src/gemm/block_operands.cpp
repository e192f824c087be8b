// Mixed's operands in the block scale modes (block_operands.h).

#include "gemm/block_operands.h"

namespace fp8nn::functional::detail {

c10::optional<std::pair<QuantizedTensor, QuantizedTensor>> row_groups_as_blocks(
    const QuantizedTensor& a, const QuantizedTensor& b) {
  const int64_t K = a.data.size(1);
  const bool a_row_groups =
      a.group_rows == 1 && a.group_size > 0 && a.group_size < K && a.group_size % kBlockSize == 0;
  if (!a_row_groups || b.group_size != 0) return c10::nullopt;
  const int64_t k_blocks = (K + kBlockSize - 1) / kBlockSize;
  const int64_t n_blocks = (b.data.size(0) + kBlockSize - 1) / kBlockSize;
  // [M, ceil(K / G)] -> [M, ceil(K / 128)]: group g covers the K blocks g * G / 128 onwards; the
  // last group may end inside its blocks, so the repeated columns past K's last block go.
  const int64_t repeats = a.group_size / kBlockSize;
  // (unsqueeze + expand + reshape: the repeat on the device with no host round trip)
  const int64_t M = a.scale_inv.size(0), groups = a.scale_inv.size(1);
  auto a_scales = repeats == 1 ? a.scale_inv
                               : a.scale_inv.unsqueeze(2)
                                     .expand({M, groups, repeats})
                                     .reshape({M, groups * repeats})
                                     .narrow(1, 0, k_blocks)
                                     .contiguous();
  auto b_scales = b.scale_inv.reshape({1, 1}).expand({n_blocks, k_blocks}).contiguous();
  return std::make_pair(
      QuantizedTensor{a.data, std::move(a_scales), a.format, kBlockSize, 1},
      QuantizedTensor{b.data, std::move(b_scales), b.format, kBlockSize, kBlockSize});
}

}  // namespace fp8nn::functional::detail
