#pragma once
// Mixed's product (a scaled per row and group of 128 * j along K, b per tensor) restated in the
// block scale modes: a per row and 128 of K, b per 128x128 block. Library-internal; the CUDA path
// sends the restated operands to cuBLASLt's block modes (scaled_mm_cuda.cpp).

#include <fp8nn/quantize.h>

#include <c10/util/Optional.h>

#include <utility>

namespace fp8nn::functional::detail {

/// When a's groups split its rows into multiples of kBlockSize (a.group_size = 128 * j < K, one
/// row per group) and b is scaled per tensor: the same operands with a's scales repeated per 128
/// of K (group_size kBlockSize) and b's one value as a grid of 128x128 blocks (group_rows
/// kBlockSize). Every element keeps the scale it had, so any exact product of the pair equals
/// that of the originals. Else nullopt.
c10::optional<std::pair<QuantizedTensor, QuantizedTensor>> row_groups_as_blocks(
    const QuantizedTensor& a, const QuantizedTensor& b);

}  // namespace fp8nn::functional::detail
