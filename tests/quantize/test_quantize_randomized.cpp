// Randomised quantizations with fixed seeds (issue #8): hundreds of random shapes, dtypes, formats,
// group sizes and magnitudes, bit for bit against the oracle (on CUDA: against the CPU too). Case i
// always draws the same case; FP8NN_TEST_REDUCED runs the first few only.

#include <fp8nn/fp8nn.h>

#include "oracle.h"
#include "random_cases.h"

#include <cmath>
#include <vector>

using namespace fp8nn::test;
namespace oracle = fp8nn::test;

namespace {

constexpr int kQuantizeCases = 400;

void check_random_quantize_case(int index, torch::Device device) {
  std::mt19937_64 rng(0x9a9e0000 + index);
  torch::manual_seed(10000 + index);
  const int dims = static_cast<int>(pick(rng, 1, 3));
  std::vector<int64_t> sizes;
  for (int d = 0; d < dims; ++d)
    sizes.push_back(d + 1 == dims ? draw_size(rng, 600) : pick(rng, 1, 9));
  if (pick(rng, 0, 24) == 0) sizes[0] = 0;
  const auto dtype =
      pick_of<torch::ScalarType>(rng, {torch::kFloat, torch::kBFloat16, torch::kHalf});
  const auto format =
      pick_of(rng, std::vector<fp8nn::Format>{fp8nn::Format::E4M3, fp8nn::Format::E5M2});
  const int64_t group = pick_of<int64_t>(rng, {0, 0, 16, 32, 64, 128, 7, 100, 4096});
  // Magnitudes over most of each dtype's range, so scales overflow to FLT_MAX and values saturate
  // and round to subnormals in places.
  const int exponent = dtype == torch::kHalf ? static_cast<int>(pick(rng, -6, 3))
                                             : static_cast<int>(pick(rng, -38, 30));
  auto values = spread_randn(sizes) * std::pow(10.0, exponent);
  if (dtype == torch::kHalf) values.clamp_(-6e4, 6e4);                          // finite in fp16
  if (pick(rng, 0, 4) == 0 && values.numel() > 0) values.select(0, 0).zero_();  // a zero row
  const auto x = values.to(dtype).to(device);
  const bool with_transpose = group == 0 && dims == 2 && pick(rng, 0, 1) == 1;
  CAPTURE(index, sizes, dtype, fp8nn::name_of(format), group, exponent, with_transpose);

  const auto want = oracle::quantize(x, format, group);
  const auto& want_data = want.data;
  const auto& want_scale_inv = want.scale_inv;
  fp8nn::QuantizedTensor got;
  if (with_transpose) {
    const auto pair = fp8nn::functional::quantize_with_transpose(x, format);
    got = pair.quantized;
    CHECK(count_bit_differences(pair.transposed.data, want_data.t().contiguous()) == 0);
  } else if (group == 0) {
    got = fp8nn::functional::quantize(x, format);
  } else {
    got = fp8nn::functional::quantize_per_group(x, format, group);
  }
  REQUIRE(got.data.device() == x.device());
  CHECK(count_bit_differences(got.data, want_data) == 0);
  CHECK(count_bit_differences(got.scale_inv.reshape(want_scale_inv.sizes()), want_scale_inv) == 0);
  if (device.is_cuda()) {  // and the CPU path agrees with both
    const auto cpu = group == 0 ? fp8nn::functional::quantize(x.cpu(), format)
                                : fp8nn::functional::quantize_per_group(x.cpu(), format, group);
    CHECK(count_bit_differences(got.data, cpu.data) == 0);
  }
}

}  // namespace

FP8NN_CPU_AND_CUDA_CASE(
    "400 random quantizations equal the oracle bit for bit (on CUDA, the CPU too)",
    [](torch::Device device) {
      for (int i = 0; i < random_case_count(kQuantizeCases); ++i) {
        check_random_quantize_case(i, device);
      }
    })
