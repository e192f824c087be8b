#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace fp8nn::bench {
/// Prints the host time to enqueue each piece of a layer step (quantize, scaled_mm, a bf16
/// matmul, whole steps of bf16 Linear, Global and Global with delayed scaling) per shape.
int run_host_bench(const std::vector<std::array<int64_t, 3>>& shapes, int calls);
}  // namespace fp8nn::bench
