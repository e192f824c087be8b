#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace fp8nn::bench {
/// The (M, K, N) shapes the layer benchmark uses by default (a small one and the layer sizes of a
/// 4096-wide transformer MLP with batch 8192).
inline const std::vector<std::array<int64_t, 3>> kLayerShapes = {
    {1024, 1024, 1024}, {8192, 4096, 4096}, {8192, 4096, 14336}, {8192, 14336, 4096},
    {16384, 8192, 8192}};
/// Times a Linear training step in bf16, naive libtorch FP8, fp8nn Global and Mixed per shape
/// (M, K, N); prints one "|" table line per shape.
int run_layer_bench(const std::vector<std::array<int64_t, 3>>& shapes, int repetitions);
}  // namespace fp8nn::bench
