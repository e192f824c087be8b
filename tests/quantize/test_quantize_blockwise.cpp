// Per-block quantization (128 x 128 blocks, fp8nn::functional::quantize_per_block): each block
// quantized as a tensor of its own, bit for bit against the oracle's block-by-block quantization,
// on the CPU reference and on CUDA; the transposed copy; dequantize and scaled_mm of block-scaled
// operands; non-finite values confined to their block; the argument checks.

#include <fp8nn/fp8nn.h>

#include "oracle.h"
#include "test_support.h"
#include "tolerance.h"

#include <cmath>
#include <limits>
#include <vector>

using fp8nn::Format;
using fp8nn::test::count_bit_differences;
namespace F = fp8nn::functional;
namespace oracle = fp8nn::test;

namespace {

const std::vector<Format> kFormats = {Format::E4M3, Format::E5M2};
const std::vector<torch::ScalarType> kInputDtypes = {torch::kFloat, torch::kHalf, torch::kBFloat16};

// Ragged and whole blocks, one row or column, empty, and aligned shapes (the kernel's vector path).
const std::vector<std::vector<int64_t>> kShapes = {{1, 1},     {129, 1},   {1, 300},  {128, 128},
                                                   {300, 257}, {257, 300}, {0, 16},   {16, 0},
                                                   {256, 384}, {130, 72},  {5, 5000}, {640, 1024}};

// A spread of magnitudes (e^-8 .. e^8) that differs between blocks, so that their scales differ.
torch::Tensor random_input(at::IntArrayRef shape, torch::ScalarType dtype) {
  auto x = torch::randn(shape) * torch::exp(torch::randn(shape).clamp(-4, 4) * 2.0);
  return x.to(dtype);
}

void check_block_pair(const fp8nn::QuantizedTensor& q, int64_t rows, int64_t cols) {
  const int64_t blocks_r = (rows + 127) / 128, blocks_c = (cols + 127) / 128;
  CHECK(q.group_size == fp8nn::kBlockSize);
  CHECK(q.group_rows == fp8nn::kBlockSize);
  CHECK(q.data.sizes() == torch::IntArrayRef({rows, cols}));
  CHECK(q.scale_inv.sizes() == torch::IntArrayRef({blocks_r, blocks_c}));
}

}  // namespace

FP8NN_CPU_AND_CUDA_CASE("quantize_per_block equals the oracle's block-by-block quantization",
                        [](torch::Device device) {
                          fp8nn::test::seed_torch();
                          for (const auto& shape : kShapes) {
                            for (auto dtype : kInputDtypes) {
                              for (auto f : kFormats) {
                                CAPTURE(shape, dtype, fp8nn::name_of(f));
                                const auto x = random_input(shape, dtype);
                                const auto q = F::quantize_per_block(x.to(device), f);
                                const auto expected = oracle::quantize_blocks(x, f, 128);
                                check_block_pair(q, shape[0], shape[1]);
                                CHECK(q.data.device() == device);
                                CHECK(count_bit_differences(q.data.cpu(), expected.data) == 0);
                                CHECK(torch::equal(q.scale_inv.cpu(), expected.scale_inv));
                              }
                            }
                          }
                        })

FP8NN_CPU_AND_CUDA_CASE(
    "quantize_per_block_with_transpose: the transposed copy is the quantization of x^T",
    [](torch::Device device) {
      fp8nn::test::seed_torch();
      for (const auto& shape : kShapes) {
        for (auto f : kFormats) {
          CAPTURE(shape, fp8nn::name_of(f));
          const auto x = random_input(shape, torch::kBFloat16).to(device);
          const auto pair = F::quantize_per_block_with_transpose(x, f);
          const auto alone = F::quantize_per_block(x, f);
          const auto of_t = F::quantize_per_block(x.t().contiguous(), f);
          check_block_pair(pair.transposed, shape[1], shape[0]);
          CHECK(count_bit_differences(pair.quantized.data, alone.data) == 0);
          CHECK(torch::equal(pair.quantized.scale_inv, alone.scale_inv));
          CHECK(count_bit_differences(pair.transposed.data, of_t.data) == 0);
          CHECK(torch::equal(pair.transposed.scale_inv, of_t.scale_inv));
          const auto transposed = F::transpose(alone);
          CHECK(count_bit_differences(transposed.data, of_t.data) == 0);
          CHECK(torch::equal(transposed.scale_inv, of_t.scale_inv));
          CHECK(transposed.group_rows == fp8nn::kBlockSize);
        }
      }
    })

FP8NN_CPU_AND_CUDA_CASE(
    "dequantize and scaled_mm of block-scaled operands match the oracle", [](torch::Device device) {
      fp8nn::test::seed_torch();
      const int64_t M = 200, K = 300, N = 260;
      const auto x = random_input({M, K}, torch::kFloat);
      const auto w = random_input({N, K}, torch::kFloat);
      const auto wq = F::quantize_per_block(w.to(device), Format::E4M3);
      const auto w_expected = oracle::dequantize(wq);
      // One fp32 rounding of the exact product (4 + 24 significant bits).
      const auto w_error = (oracle::f64(F::dequantize(wq)) - w_expected).abs();
      CHECK((w_error <= w_expected.abs() * 0x1p-24).all().item<bool>());
      // a per group of 128 along K (x), per block (W), and per block on both.
      const auto xg = F::quantize_per_group(x.to(device), Format::E4M3, 128);
      const auto xb = F::quantize_per_block(x.to(device), Format::E4M3);
      // The accumulation bound relative to the sum of |terms|: fp32 on the
      // CPU; on CUDA the product may run on FP8 tensor cores promoted to
      // fp32 every 128 of K (cuBLASLt's block modes), four 32-deep steps of
      // 2^-11 each. A block's scale applied to the wrong block misses it by
      // far (a third of the magnitude at K = 300).
      const double accumulation = device.is_cuda() ? 4 * fp8nn::test::kTensorCoreStepRelative
                                                   : fp8nn::test::kAccumulationRelative;
      for (const auto* a : {&xg, &xb}) {
        CAPTURE(a == &xg ? "x per 1x128 group" : "x per 128x128 block");
        const auto expected = oracle::product(oracle::dequantize(*a), w_expected);
        const auto y = F::scaled_mm(*a, wq, c10::nullopt, torch::kFloat);
        CHECK(y.device() == device);
        const double ratio = fp8nn::test::tolerance_ratio(y, expected, torch::kFloat, accumulation);
        CAPTURE(ratio);
        CHECK(ratio <= 1.0);
      }
    })

FP8NN_CPU_AND_CUDA_CASE(
    "quantize_per_block keeps NaN and Inf in their block", [](torch::Device device) {
      fp8nn::test::seed_torch();
      for (const double bad : {std::nan(""), double(INFINITY)}) {
        CAPTURE(bad);
        auto x = random_input({300, 260}, torch::kFloat);
        const auto clean = F::quantize_per_block(x.to(device), Format::E4M3);
        x[140][5] = bad;  // block (1, 0)
        const auto q = F::quantize_per_block(x.to(device), Format::E4M3);
        const auto expected = oracle::quantize_blocks(x, Format::E4M3, 128);
        CHECK(count_bit_differences(q.data.cpu(), expected.data) == 0);
        CHECK(torch::equal(q.scale_inv.cpu().isnan(), expected.scale_inv.isnan()));
        // Every other block: as without the bad value.
        const auto same = [&](int64_t r0, int64_t rn, int64_t c0, int64_t cn) {
          return count_bit_differences(q.data.narrow(0, r0, rn).narrow(1, c0, cn).cpu(),
                                       clean.data.narrow(0, r0, rn).narrow(1, c0, cn).cpu()) == 0;
        };
        CHECK(same(0, 128, 0, 260));
        CHECK(same(256, 44, 0, 260));
        CHECK(same(128, 128, 128, 132));
        // The bad value stays non-finite in its copy.
        CHECK_FALSE(std::isfinite(q.data[140][5].item<float>()));
      }
    })

TEST_CASE("quantize_per_block, dequantize and transpose refuse what they cannot take") {
  const auto x = torch::randn({4, 5});
  CHECK_THROWS_AS(F::quantize_per_block(torch::randn({7}), Format::E4M3), c10::ValueError);
  CHECK_THROWS_AS(F::quantize_per_block(torch::randn({2, 3, 4}), Format::E4M3), c10::ValueError);
  CHECK_THROWS_AS(F::quantize_per_block(torch::ones({4, 4}, torch::kInt), Format::E4M3),
                  c10::TypeError);
  // Per-row groups do not transpose into groups of a row.
  CHECK_THROWS_AS(F::transpose(F::quantize_per_group(x, Format::E4M3, 2)), c10::ValueError);
  // A block scale_inv of the wrong shape, and a block height with per-tensor data.
  auto q = F::quantize_per_block(x, Format::E4M3);
  q.scale_inv = torch::ones({2, 1});
  CHECK_THROWS_AS(F::dequantize(q), c10::ValueError);
  auto per_tensor = F::quantize(x, Format::E4M3);
  per_tensor.group_rows = 128;
  CHECK_THROWS_AS(F::dequantize(per_tensor), c10::ValueError);
  CHECK_THROWS_AS(F::scaled_mm(per_tensor, per_tensor, c10::nullopt, torch::kFloat),
                  c10::ValueError);
  // Per group along both axes: 2-d input of a floating type, a positive group size.
  CHECK_THROWS_AS(F::quantize_per_group_with_transpose(torch::randn({7}), Format::E4M3, 128),
                  c10::ValueError);
  CHECK_THROWS_AS(F::quantize_per_group_with_transpose(x, Format::E4M3, 0), c10::ValueError);
  CHECK_THROWS_AS(
      F::quantize_per_group_with_transpose(torch::ones({4, 4}, torch::kInt), Format::E4M3, 128),
      c10::TypeError);
}

FP8NN_CPU_AND_CUDA_CASE(
    "quantize_per_group_with_transpose: the row copy quantizes x per group, the column copy x^T",
    [](torch::Device device) {
      fp8nn::test::seed_torch();
      for (const auto& shape : kShapes) {
        // 128: one pass on CUDA; the other sizes take two per-group quantizations there.
        for (int64_t group : {int64_t{128}, int64_t{64}, int64_t{200}}) {
          for (auto f : kFormats) {
            CAPTURE(shape, group, fp8nn::name_of(f));
            const auto x = random_input(shape, torch::kBFloat16).to(device);
            const auto pair = F::quantize_per_group_with_transpose(x, f, group);
            const auto rows = F::quantize_per_group(x, f, group);
            const auto columns = F::quantize_per_group(x.t().contiguous(), f, group);
            CHECK(pair.quantized.group_size == group);
            CHECK(pair.transposed.group_size == group);
            CHECK(pair.transposed.data.sizes() == torch::IntArrayRef({shape[1], shape[0]}));
            CHECK(count_bit_differences(pair.quantized.data, rows.data) == 0);
            CHECK(torch::equal(pair.quantized.scale_inv, rows.scale_inv));
            CHECK(count_bit_differences(pair.transposed.data, columns.data) == 0);
            CHECK(torch::equal(pair.transposed.scale_inv, columns.scale_inv));
          }
        }
      }
    })

FP8NN_CPU_AND_CUDA_CASE(
    "power-of-two scales: per group, per block and along both axes, equal to the oracle's",
    [](torch::Device device) {
      fp8nn::test::seed_torch();
      constexpr auto kPowerOfTwo = F::ScaleRounding::PowerOfTwo;
      // Every finite, non-zero scale_inv is a power of two (frexp's mantissa 0.5), and no value
      // scales past the format: the largest |q| of a group lies in [max / 2, max].
      const auto powers_of_two = [](const torch::Tensor& scale_inv) {
        const auto s = scale_inv.cpu();
        const auto regular = s.isfinite() & (s != 0);
        const auto [mantissa, exponent] = torch::frexp(s);
        return (mantissa.masked_select(regular) == 0.5).all().item<bool>();
      };
      for (const auto& shape : kShapes) {
        // (The oracle's per-group scale_inv of an empty tensor is shaped differently.)
        if (shape[0] == 0 || shape[1] == 0) continue;
        for (auto f : kFormats) {
          CAPTURE(shape, fp8nn::name_of(f));
          const auto x = random_input(shape, torch::kBFloat16);
          const auto x_device = x.to(device);

          const auto grouped = F::quantize_per_group(x_device, f, 128, kPowerOfTwo);
          const auto grouped_expected = oracle::quantize(x, f, 128, /*power_of_two=*/true);
          CHECK(count_bit_differences(grouped.data.cpu(), grouped_expected.data) == 0);
          CHECK(torch::equal(grouped.scale_inv.cpu(), grouped_expected.scale_inv));
          CHECK(powers_of_two(grouped.scale_inv));

          const auto blocks = F::quantize_per_block_with_transpose(x_device, f, kPowerOfTwo);
          const auto blocks_expected = oracle::quantize_blocks(x, f, 128, /*power_of_two=*/true);
          CHECK(count_bit_differences(blocks.quantized.data.cpu(), blocks_expected.data) == 0);
          CHECK(torch::equal(blocks.quantized.scale_inv.cpu(), blocks_expected.scale_inv));
          CHECK(count_bit_differences(blocks.transposed.data.cpu(),
                                      blocks_expected.data.t().contiguous()) == 0);
          CHECK(powers_of_two(blocks.quantized.scale_inv));

          const auto both = F::quantize_per_group_with_transpose(x_device, f, 128, kPowerOfTwo);
          const auto columns_expected =
              oracle::quantize(x.t().contiguous(), f, 128, /*power_of_two=*/true);
          CHECK(count_bit_differences(both.quantized.data.cpu(), grouped_expected.data) == 0);
          CHECK(count_bit_differences(both.transposed.data.cpu(), columns_expected.data) == 0);
          CHECK(torch::equal(both.transposed.scale_inv.cpu(), columns_expected.scale_inv));
        }
      }
    })
