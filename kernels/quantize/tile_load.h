#pragma once
// How the 128 x 128 tile kernels (quantize_per_block, quantize_per_group_with_transpose) read
// their tile. Every way gives the same bytes and scales; which is fastest on a device is
// fp8nn_bench quantize's question.

namespace fp8nn::kernels {

enum class TileLoad {
  /// Every 16-byte vector of the tile loaded into registers before the first use and kept there
  /// for the casts: one read, but the registers bound the tiles resident per multiprocessor.
  kRegisters,
  /// The tile read for its amax, then again part by part (from L2) for the casts: fewer
  /// registers, twice the L2 reads (quantize_per_block only).
  kReadTwice,
  /// The tile copied into shared memory by asynchronous copies (cp.async), which hold no
  /// registers while in flight, and read from there for the amaxes and the casts: one read from
  /// memory, more of it in flight per multiprocessor.
  kShared,
};

}  // namespace fp8nn::kernels
