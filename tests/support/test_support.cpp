#include "test_support.h"

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>

namespace fp8nn::test {

uint64_t fresh_seed() {
  if (const char* fixed = std::getenv("FP8NN_SEED")) return std::strtoull(fixed, nullptr, 10);
  std::random_device device;
  const auto clock = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return (static_cast<uint64_t>(device()) << 32) ^ clock;
}

void seed_torch() {
  const uint64_t seed = fresh_seed();
  torch::manual_seed(seed);
  UNSCOPED_INFO("FP8NN_SEED=" << seed);
}

bool cuda_available() { return torch::cuda::is_available(); }

void report_skip(const std::string& reason) {
  std::cout << "FP8NN-SKIPPED: " << reason << std::endl;
}

bool reduced_test_set() {
  const char* value = std::getenv("FP8NN_TEST_REDUCED");
  return value != nullptr && std::string(value) != "" && std::string(value) != "0";
}

bool skipped_when_reduced(int64_t size, int64_t limit) {
  return reduced_test_set() && size > limit;
}

int64_t count_bit_differences(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  REQUIRE(a.scalar_type() == b.scalar_type());
  if (a.numel() == 0) return 0;
  const auto as_bytes = [](const torch::Tensor& t) {
    return t.cpu().contiguous().reshape({-1}).view(torch::kUInt8).reshape({t.numel(), -1});
  };
  const auto bytes_a = as_bytes(a);
  const auto bytes_b = as_bytes(b);
  return (bytes_a != bytes_b).any(1).sum().item<int64_t>();
}

}  // namespace fp8nn::test
