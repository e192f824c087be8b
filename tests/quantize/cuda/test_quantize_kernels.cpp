// The quantize launchers of kernels/ called directly, with every output buffer poisoned (0xff
// bytes: NaN in fp32/fp16/bf16 and in both FP8 formats) plus a poisoned guard after its end, and
// with pointers offset from alignment: every element must be written, with the CPU reference's
// bits, and nothing past the end. Inputs are finite, so a NaN left in an output is an unwritten
// one.

#include <fp8nn/fp8nn.h>

#include <ATen/cuda/CUDAContext.h>

#include "common/scoped_env.h"
#include "kernels/quantize/amax.h"
#include "kernels/quantize/cast.h"
#include "kernels/quantize/cast_transpose.h"
#include "kernels/quantize/dequantize.h"
#include "kernels/quantize/quantize_per_block.h"
#include "kernels/quantize/quantize_per_group.h"
#include "kernels/quantize/quantize_per_group_transpose.h"
#include "quantize/quantize_detail.h"
#include "test_support.h"

#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using fp8nn::Format;
using fp8nn::test::count_bit_differences;
namespace F = fp8nn::functional;
namespace K = fp8nn::kernels;

namespace {

// fp32 sums of up to 4097 terms in two different orders: each differs from the exact sum by at
// most about terms * 2^-24 of the sum of magnitudes.
constexpr double kSumRelative = 4097 * 0x1p-23;
constexpr double kSumAbsolute = 1e-30;
constexpr int64_t kGuardBytes = 64;  // poisoned bytes after each output, checked untouched
constexpr uint8_t kPoison = 0xff;

K::HighPrecision type_of(torch::ScalarType dtype) {
  return dtype == torch::kFloat  ? K::HighPrecision::kFloat32
         : dtype == torch::kHalf ? K::HighPrecision::kFloat16
                                 : K::HighPrecision::kBFloat16;
}

K::Fp8Format format_of(Format f) {
  return f == Format::E4M3 ? K::Fp8Format::kE4M3 : K::Fp8Format::kE5M2;
}

cudaStream_t stream() { return at::cuda::getCurrentCUDAStream(); }

// The monitor's counts [saturated, flushed, amax bits] equal, except that a NaN amax may carry
// another payload on the device (fp16 NaN converted by __half2float) than on the host.
bool same_counts(const torch::Tensor& got, const torch::Tensor& want) {
  const auto g = got.cpu();
  constexpr int64_t kInfBits = 0x7f800000;
  const int64_t got_amax = g[2].item<int64_t>(), want_amax = want[2].item<int64_t>();
  const bool amax_same = want_amax > kInfBits ? got_amax > kInfBits : got_amax == want_amax;
  return torch::equal(g.narrow(0, 0, 2), want.narrow(0, 0, 2)) && amax_same;
}

// A poisoned device buffer for `numel` elements of `dtype`, starting `offset` elements into the
// allocation (to break vector alignment on purpose), with kGuardBytes of poison after it.
struct Output {
  torch::Tensor bytes;  // the whole allocation, uint8
  int64_t offset_bytes, numel;
  torch::ScalarType dtype;

  Output(int64_t n, torch::ScalarType type, int64_t offset = 0)
      : bytes(
            torch::full({(offset + n) * static_cast<int64_t>(c10::elementSize(type)) + kGuardBytes},
                        kPoison, torch::dtype(torch::kUInt8).device(torch::kCUDA))),
        offset_bytes(offset * static_cast<int64_t>(c10::elementSize(type))),
        numel(n),
        dtype(type) {}

  void* ptr() const { return static_cast<uint8_t*>(bytes.data_ptr()) + offset_bytes; }
  uint8_t* u8() const { return static_cast<uint8_t*>(ptr()); }
  float* f32() const { return static_cast<float*>(ptr()); }

  // The written elements as a CPU tensor of `dtype` and `shape`.
  torch::Tensor values(at::IntArrayRef shape) const {
    const int64_t size = numel * static_cast<int64_t>(c10::elementSize(dtype));
    return bytes.narrow(0, offset_bytes, size).cpu().clone().view(dtype).view(shape);
  }
  bool guard_untouched() const {
    const int64_t end = offset_bytes + numel * static_cast<int64_t>(c10::elementSize(dtype));
    return (bytes.narrow(0, end, kGuardBytes).cpu() == kPoison).all().item<bool>();
  }
};

// x on the device, starting `offset` elements into its allocation.
torch::Tensor device_input(const torch::Tensor& x, int64_t offset) {
  auto storage = torch::zeros({x.numel() + offset}, x.options().device(torch::kCUDA));
  auto view = storage.narrow(0, offset, x.numel());
  view.copy_(x.reshape({-1}));
  return view;
}

torch::Tensor reference_group_amax(const torch::Tensor& x, int64_t rows, int64_t cols, int64_t g) {
  const int64_t groups = (cols + g - 1) / g;
  auto m = x.to(torch::kFloat).reshape({rows, cols}).abs();
  m = at::constant_pad_nd(m, {0, groups * g - cols}, 0.0);
  return m.view({rows, groups, g}).amax(-1);
}

const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1},    {1, 4097},  {4097, 3},
                                                          {3, 1000}, {128, 64},  {256, 256},
                                                          {130, 72}, {300, 257}, {64, 4096}};

}  // namespace

TEST_CASE("kernel launchers write every output element, exactly, and nothing past the end") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for (const auto& [rows, cols] : kShapes) {
    // FP8NN_TEST_REDUCED=1 (compute-sanitizer runs): the shapes up to 2^17 elements.
    if (fp8nn::test::skipped_when_reduced(rows * cols, int64_t{1} << 17)) continue;
    for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
      for (auto f : {Format::E4M3, Format::E5M2}) {
        // offset 0: the vector paths where the shape allows; offset 1: every pointer misaligned.
        for (int64_t offset : {0, 1}) {
          CAPTURE(rows, cols, dtype, fp8nn::name_of(f), offset);
          const auto x = (torch::randn({rows, cols}) * 10).to(dtype);
          const auto x_gpu = device_input(x, offset);
          const int64_t n = rows * cols;
          const auto reference = F::quantize(x, f);

          Output amax(1, torch::kFloat);
          K::amax_per_tensor(x_gpu.data_ptr(), type_of(dtype), n, amax.f32(), stream());
          CHECK(amax.values({}).item<float>() == x.to(torch::kFloat).abs().max().item<float>());

          Output data(n, fp8nn::dtype_of(f), offset), scale_inv(1, torch::kFloat);
          K::cast_per_tensor(x_gpu.data_ptr(), type_of(dtype), n, format_of(f), amax.f32(),
                             data.u8(), scale_inv.f32(), stream());
          CHECK(count_bit_differences(data.values({rows, cols}), reference.data) == 0);
          CHECK(scale_inv.values({}).item<float>() == reference.scale_inv.item<float>());
          CHECK((data.guard_untouched() && scale_inv.guard_untouched()));

          Output out(n, fp8nn::dtype_of(f), offset), out_t(n, fp8nn::dtype_of(f), offset);
          Output scale_inv_t(1, torch::kFloat);
          K::cast_transpose_per_tensor(x_gpu.data_ptr(), type_of(dtype), rows, cols, format_of(f),
                                       amax.f32(), out.u8(), out_t.u8(), scale_inv_t.f32(),
                                       stream());
          CHECK(count_bit_differences(out.values({rows, cols}), reference.data) == 0);
          CHECK(count_bit_differences(out_t.values({cols, rows}),
                                      reference.data.t().contiguous()) == 0);
          CHECK(scale_inv_t.values({}).item<float>() == reference.scale_inv.item<float>());
          CHECK(
              (out.guard_untouched() && out_t.guard_untouched() && scale_inv_t.guard_untouched()));

          // One launch (amax + cast): the same bytes from a poisoned scratch, with the grid
          // filling the device and with one block or three walking every vector and tile.
          int64_t words = 0;
          REQUIRE(K::amax_cast_scratch_words(&words) == cudaSuccess);
          for (int64_t scratch_words : {words, int64_t{1}, int64_t{3}}) {
            CAPTURE(scratch_words);
            Output scratch(scratch_words, torch::kInt);
            auto* scratch_u32 = reinterpret_cast<unsigned*>(scratch.ptr());
            Output one(n, fp8nn::dtype_of(f), offset), one_scale_inv(1, torch::kFloat),
                one_amax(1, torch::kFloat);
            REQUIRE(K::amax_cast_per_tensor(x_gpu.data_ptr(), type_of(dtype), n, format_of(f),
                                            one.u8(), one_scale_inv.f32(), scratch_u32,
                                            scratch_words, stream(), nullptr,
                                            one_amax.f32()) == cudaSuccess);
            CHECK(count_bit_differences(one.values({rows, cols}), reference.data) == 0);
            CHECK(one_scale_inv.values({}).item<float>() == reference.scale_inv.item<float>());
            CHECK(one_amax.values({}).item<float>() == amax.values({}).item<float>());
            CHECK((one.guard_untouched() && one_scale_inv.guard_untouched() &&
                   one_amax.guard_untouched() && scratch.guard_untouched()));

            Output one_out(n, fp8nn::dtype_of(f), offset), one_out_t(n, fp8nn::dtype_of(f), offset);
            Output one_scale_inv_t(1, torch::kFloat);
            REQUIRE(K::amax_cast_transpose_per_tensor(x_gpu.data_ptr(), type_of(dtype), rows, cols,
                                                      format_of(f), one_out.u8(), one_out_t.u8(),
                                                      one_scale_inv_t.f32(), scratch_u32,
                                                      scratch_words, stream()) == cudaSuccess);
            CHECK(count_bit_differences(one_out.values({rows, cols}), reference.data) == 0);
            CHECK(count_bit_differences(one_out_t.values({cols, rows}),
                                        reference.data.t().contiguous()) == 0);
            CHECK(one_scale_inv_t.values({}).item<float>() == reference.scale_inv.item<float>());
            CHECK((one_out.guard_untouched() && one_out_t.guard_untouched() &&
                   one_scale_inv_t.guard_untouched() && scratch.guard_untouched()));

            // With the column sums (a bias gradient): the same bytes, and x.sum(0) in fp32 up to
            // the order of the additions, the same bits when repeated.
            Output sum_out(n, fp8nn::dtype_of(f), offset), sum_out_t(n, fp8nn::dtype_of(f), offset);
            Output sum_scale_inv(1, torch::kFloat), sums(cols, torch::kFloat),
                partial(K::column_sums_partial_rows(rows) * cols, torch::kFloat);
            const auto launch_with_sums = [&] {
              return K::amax_cast_transpose_per_tensor(
                  x_gpu.data_ptr(), type_of(dtype), rows, cols, format_of(f), sum_out.u8(),
                  sum_out_t.u8(), sum_scale_inv.f32(), scratch_u32, scratch_words, stream(),
                  nullptr, sums.f32(), partial.f32());
            };
            REQUIRE(launch_with_sums() == cudaSuccess);
            CHECK(count_bit_differences(sum_out.values({rows, cols}), reference.data) == 0);
            CHECK(count_bit_differences(sum_out_t.values({cols, rows}),
                                        reference.data.t().contiguous()) == 0);
            const auto x32 = x.to(torch::kFloat);
            const auto got_sums = sums.values({cols});
            const auto bound = x32.abs().sum(0) * kSumRelative + kSumAbsolute;
            CHECK(((got_sums - x32.sum(0)).abs() <= bound).all().item<bool>());
            REQUIRE(launch_with_sums() == cudaSuccess);
            CHECK(count_bit_differences(sums.values({cols}), got_sums) == 0);
            CHECK((sum_out.guard_untouched() && sum_out_t.guard_untouched() &&
                   sums.guard_untouched() && partial.guard_untouched()));
          }

          for (auto out_dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
            CAPTURE(out_dtype);
            Output back(n, out_dtype, offset);
            K::dequantize(data.u8(), format_of(f), 1, n, 0, scale_inv.f32(), back.ptr(),
                          type_of(out_dtype), stream());
            CHECK(count_bit_differences(back.values({rows, cols}),
                                        F::dequantize(reference, out_dtype)) == 0);
            CHECK(back.guard_untouched());
          }

          // 2112: groups longer than the registers hold, the last of a row shorter.
          for (int64_t g : {64, 128, 4096, 5, 2112}) {
            CAPTURE(g);
            const int64_t groups = (cols + g - 1) / g;
            const auto grouped = F::quantize_per_group(x, f, g);
            Output group_data(n, fp8nn::dtype_of(f), offset),
                group_scale_inv(rows * groups, torch::kFloat);
            K::quantize_per_group(x_gpu.data_ptr(), type_of(dtype), rows, cols, g, format_of(f),
                                  group_data.u8(), group_scale_inv.f32(), stream());
            CHECK(count_bit_differences(group_data.values({rows, cols}), grouped.data) == 0);
            CHECK(count_bit_differences(group_scale_inv.values({rows, groups}),
                                        grouped.scale_inv) == 0);
            CHECK((group_data.guard_untouched() && group_scale_inv.guard_untouched()));
            // Long groups staged in shared memory (where they are long and fit): the same.
            Output staged_data(n, fp8nn::dtype_of(f), offset),
                staged_scale_inv(rows * groups, torch::kFloat);
            REQUIRE(K::quantize_per_group(x_gpu.data_ptr(), type_of(dtype), rows, cols, g,
                                          format_of(f), staged_data.u8(), staged_scale_inv.f32(),
                                          stream(), nullptr, false,
                                          K::TileLoad::kShared) == cudaSuccess);
            CHECK(count_bit_differences(staged_data.values({rows, cols}), grouped.data) == 0);
            CHECK(count_bit_differences(staged_scale_inv.values({rows, groups}),
                                        grouped.scale_inv) == 0);
            CHECK((staged_data.guard_untouched() && staged_scale_inv.guard_untouched()));

            Output group_amax(rows * groups, torch::kFloat);
            K::amax_per_group(x_gpu.data_ptr(), type_of(dtype), rows, cols, g, group_amax.f32(),
                              stream());
            CHECK(count_bit_differences(group_amax.values({rows, groups}),
                                        reference_group_amax(x, rows, cols, g)) == 0);
            CHECK(group_amax.guard_untouched());

            Output back(n, torch::kFloat, offset);
            K::dequantize(group_data.u8(), format_of(f), rows, cols, g, group_scale_inv.f32(),
                          back.ptr(), K::HighPrecision::kFloat32, stream());
            CHECK(count_bit_differences(back.values({rows, cols}),
                                        F::dequantize(grouped, torch::kFloat)) == 0);
            CHECK(back.guard_untouched());
          }
        }
      }
    }
  }
}

TEST_CASE("amax kernels propagate NaN and Inf") {
  FP8NN_SKIP_WITHOUT_CUDA();
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    CAPTURE(bad);
    auto x = torch::randn({33, 200});
    x[32][199] = bad;
    x[0][0] = 1e30f;
    const auto x_gpu = x.cuda();
    Output amax(1, torch::kFloat);
    K::amax_per_tensor(x_gpu.data_ptr(), K::HighPrecision::kFloat32, x.numel(), amax.f32(),
                       stream());
    const float expected = std::isnan(bad) ? NAN : INFINITY;
    const float got = amax.values({}).item<float>();
    CHECK((std::isnan(expected) ? std::isnan(got) : got == expected));
    // The one-launch cast: the same amax, and the bytes of the two-launch cast (NaN stays NaN, an
    // Inf becomes E4M3's NaN; docs/design.md).
    int64_t words = 0;
    REQUIRE(K::amax_cast_scratch_words(&words) == cudaSuccess);
    Output scratch(words, torch::kInt), one(x.numel(), fp8nn::dtype_of(Format::E4M3)),
        one_scale_inv(1, torch::kFloat), one_amax(1, torch::kFloat);
    REQUIRE(K::amax_cast_per_tensor(x_gpu.data_ptr(), K::HighPrecision::kFloat32, x.numel(),
                                    K::Fp8Format::kE4M3, one.u8(), one_scale_inv.f32(),
                                    reinterpret_cast<unsigned*>(scratch.ptr()), words, stream(),
                                    nullptr, one_amax.f32()) == cudaSuccess);
    const float one_got = one_amax.values({}).item<float>();
    CHECK((std::isnan(expected) ? std::isnan(one_got) : one_got == expected));
    Output two(x.numel(), fp8nn::dtype_of(Format::E4M3)), two_scale_inv(1, torch::kFloat);
    K::cast_per_tensor(x_gpu.data_ptr(), K::HighPrecision::kFloat32, x.numel(), K::Fp8Format::kE4M3,
                       amax.f32(), two.u8(), two_scale_inv.f32(), stream());
    CHECK(count_bit_differences(one.values({33, 200}), two.values({33, 200})) == 0);
    Output group_amax(33 * 4, torch::kFloat);
    K::amax_per_group(x_gpu.data_ptr(), K::HighPrecision::kFloat32, 33, 200, 64, group_amax.f32(),
                      stream());
    const auto groups = group_amax.values({33, 4});
    const float last = groups[32][3].item<float>();
    CHECK((std::isnan(expected) ? std::isnan(last) : last == expected));
    CHECK(torch::isfinite(groups.narrow(0, 0, 32)).all().item<bool>());
  }
}

TEST_CASE("one launch up to kOneLaunchMaxElements, two above: the same bytes and column sums") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  int64_t words = 0;
  REQUIRE(K::amax_cast_scratch_words(&words) == cudaSuccess);
  // 2048 x 2048 is the largest shape of the one launch; 2048 x 2049 takes the two launches.
  for (const int64_t cols : {int64_t{2048}, int64_t{2049}}) {
    const int64_t rows = 2048, n = rows * cols;
    const bool one_launch = n <= K::kOneLaunchMaxElements;
    CAPTURE(cols, one_launch);
    const auto x = (torch::randn({rows, cols}) * 10).to(torch::kBFloat16);
    const auto x_gpu = x.cuda();
    const auto reference = F::quantize(x, Format::E4M3);
    const auto x32 = x.to(torch::kFloat);
    const auto bound = x32.abs().sum(0) * kSumRelative + kSumAbsolute;
    Output scratch(words, torch::kInt);
    auto* scratch_u32 = reinterpret_cast<unsigned*>(scratch.ptr());

    Output data(n, torch::kFloat8_e4m3fn), scale_inv(1, torch::kFloat), amax(1, torch::kFloat);
    REQUIRE(K::amax_cast_per_tensor(x_gpu.data_ptr(), K::HighPrecision::kBFloat16, n,
                                    K::Fp8Format::kE4M3, data.u8(), scale_inv.f32(), scratch_u32,
                                    words, stream(), nullptr, amax.f32()) == cudaSuccess);
    CHECK(count_bit_differences(data.values({rows, cols}), reference.data) == 0);
    CHECK(scale_inv.values({}).item<float>() == reference.scale_inv.item<float>());
    CHECK(amax.values({}).item<float>() == x32.abs().max().item<float>());

    Output out(n, torch::kFloat8_e4m3fn), out_t(n, torch::kFloat8_e4m3fn);
    Output sums(cols, torch::kFloat),
        partial(K::column_sums_partial_rows(rows) * cols, torch::kFloat);
    const cudaError_t with_sums = K::amax_cast_transpose_per_tensor(
        x_gpu.data_ptr(), K::HighPrecision::kBFloat16, rows, cols, K::Fp8Format::kE4M3, out.u8(),
        out_t.u8(), scale_inv.f32(), scratch_u32, words, stream(), nullptr, sums.f32(),
        partial.f32());
    if (one_launch) {
      REQUIRE(with_sums == cudaSuccess);
      CHECK(((sums.values({cols}) - x32.sum(0)).abs() <= bound).all().item<bool>());
    } else {
      // Above the bound the launcher declines the sums and writes nothing: still all poison.
      REQUIRE(with_sums == cudaErrorNotSupported);
      CHECK(torch::isnan(sums.values({cols})).all().item<bool>());
      REQUIRE(K::amax_cast_transpose_per_tensor(x_gpu.data_ptr(), K::HighPrecision::kBFloat16, rows,
                                                cols, K::Fp8Format::kE4M3, out.u8(), out_t.u8(),
                                                scale_inv.f32(), scratch_u32, words,
                                                stream()) == cudaSuccess);
    }
    CHECK(count_bit_differences(out.values({rows, cols}), reference.data) == 0);
    CHECK(count_bit_differences(out_t.values({cols, rows}), reference.data.t().contiguous()) == 0);

    // The engine's call: the column sums either way (at::sum where the launcher declines).
    torch::Tensor column_sums;
    const auto pair = fp8nn::detail::quantize_with_transpose(x_gpu, Format::E4M3, torch::Tensor(),
                                                             torch::Tensor(), &column_sums);
    CHECK(count_bit_differences(pair.transposed.data.cpu(), reference.data.t().contiguous()) == 0);
    REQUIRE(column_sums.defined());
    CHECK(((column_sums.cpu() - x32.sum(0)).abs() <= bound).all().item<bool>());
  }
}

// Per 128 x 128 block: each block's bytes and scale_inv are the per-tensor quantization of that
// block's values (the CPU reference), in both copies; the monitor's counts add up over the blocks;
// scale_inv's padding words and everything past the outputs stay poisoned.
TEST_CASE("quantize_per_block: every block quantized as its own tensor, in both copies") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  constexpr int64_t kB = K::kScaleBlock;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1}, {128, 128}, {129, 130}, {256, 384}, {300, 257}, {64, 4096}, {4097, 3}, {512, 512}};
  for (const auto& [rows, cols] : shapes) {
    for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
      for (auto f : {Format::E4M3, Format::E5M2}) {
        // Every kernel: the block held in registers, read twice, staged in shared memory.
        for (const auto& [offset, load] :
             std::vector<std::pair<int64_t, K::TileLoad>>{{0, K::TileLoad::kRegisters},
                                                          {1, K::TileLoad::kRegisters},
                                                          {0, K::TileLoad::kReadTwice},
                                                          {1, K::TileLoad::kReadTwice},
                                                          {0, K::TileLoad::kShared},
                                                          {1, K::TileLoad::kShared}}) {
          CAPTURE(rows, cols, dtype, fp8nn::name_of(f), offset, static_cast<int>(load));
          const int64_t n = rows * cols;
          const int64_t blocks_r = (rows + kB - 1) / kB, blocks_c = (cols + kB - 1) / kB;
          // A magnitude per block, so that a scale taken from the wrong block shows.
          const auto block_magnitude = torch::exp(torch::randn({blocks_r, blocks_c}) * 2)
                                           .repeat_interleave(kB, 0)
                                           .repeat_interleave(kB, 1)
                                           .narrow(0, 0, rows)
                                           .narrow(1, 0, cols);
          const auto x = (torch::randn({rows, cols}) * block_magnitude).to(dtype);
          const auto x_gpu = device_input(x, offset);
          const int64_t scale_ld = (blocks_c + 3) / 4 * 4, scale_t_ld = (blocks_r + 3) / 4 * 4;

          auto expected = torch::empty({rows, cols}, fp8nn::dtype_of(f));
          auto expected_scale = torch::empty({blocks_r, blocks_c});
          auto expected_counts = torch::zeros({3}, torch::kLong);
          for (int64_t br = 0; br < blocks_r; ++br) {
            for (int64_t bc = 0; bc < blocks_c; ++bc) {
              const int64_t h = std::min(kB, rows - br * kB), w = std::min(kB, cols - bc * kB);
              const auto block = x.narrow(0, br * kB, h).narrow(1, bc * kB, w).contiguous();
              const auto q = fp8nn::detail::quantize(block, f, torch::Tensor(), expected_counts);
              expected.narrow(0, br * kB, h).narrow(1, bc * kB, w).copy_(q.data);
              expected_scale[br][bc] = q.scale_inv.item<float>();
            }
          }

          Output out(n, fp8nn::dtype_of(f), offset), out_t(n, fp8nn::dtype_of(f), offset);
          Output scale_inv(blocks_r * scale_ld, torch::kFloat),
              scale_inv_t(blocks_c * scale_t_ld, torch::kFloat);
          const auto counts = torch::zeros({3}, torch::dtype(torch::kLong).device(torch::kCUDA));
          REQUIRE(K::quantize_per_block(
                      x_gpu.data_ptr(), type_of(dtype), rows, cols, format_of(f), out.u8(),
                      out_t.u8(), scale_inv.f32(), scale_ld, scale_inv_t.f32(), scale_t_ld,
                      stream(), reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>()),
                      /*power_of_two=*/false, load) == cudaSuccess);
          CHECK(count_bit_differences(out.values({rows, cols}), expected) == 0);
          CHECK(count_bit_differences(out_t.values({cols, rows}), expected.t().contiguous()) == 0);
          const auto scales = scale_inv.values({blocks_r, scale_ld});
          const auto scales_t = scale_inv_t.values({blocks_c, scale_t_ld});
          CHECK(count_bit_differences(scales.narrow(1, 0, blocks_c), expected_scale) == 0);
          CHECK(count_bit_differences(scales_t.narrow(1, 0, blocks_r), expected_scale.t()) == 0);
          // Padding words: never written, still NaN (poison).
          CHECK(torch::isnan(scales.narrow(1, blocks_c, scale_ld - blocks_c)).all().item<bool>());
          CHECK(
              torch::isnan(scales_t.narrow(1, blocks_r, scale_t_ld - blocks_r)).all().item<bool>());
          CHECK(torch::equal(counts.cpu(), expected_counts));
          CHECK((out.guard_untouched() && out_t.guard_untouched() && scale_inv.guard_untouched() &&
                 scale_inv_t.guard_untouched()));
        }
      }
    }
  }
}

// The weight's transposed copy alone (the blockwise backward's, row_copy false): the same bytes
// and scales as the transposed copy of the pair.
FP8NN_CPU_AND_CUDA_CASE(
    "quantize_per_block without the row copy gives the pair's transposed copy",
    [](torch::Device device) {
      fp8nn::test::seed_torch();
      const std::vector<std::pair<int64_t, int64_t>> shapes = {
          {1, 1}, {129, 130}, {256, 384}, {300, 257}, {0, 16}};
      for (const auto& [rows, cols] : shapes) {
        for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
          for (const bool power_of_two : {false, true}) {
            CAPTURE(rows, cols, dtype, power_of_two);
            const auto x =
                (torch::randn({rows, cols}) * torch::exp(torch::randn({rows, cols}) * 2.0))
                    .to(dtype)
                    .to(device);
            const auto alone = fp8nn::detail::quantize_per_block(x, Format::E4M3, true,
                                                                 torch::Tensor(), power_of_two,
                                                                 /*row_copy=*/false)
                                   .transposed;
            const auto pair = fp8nn::detail::quantize_per_block(x, Format::E4M3, true,
                                                                torch::Tensor(), power_of_two);
            CHECK(alone.data.device() == device);
            CHECK(alone.group_size == pair.transposed.group_size);
            CHECK(alone.group_rows == pair.transposed.group_rows);
            REQUIRE(alone.data.sizes() == pair.transposed.data.sizes());
            REQUIRE(alone.scale_inv.sizes() == pair.transposed.scale_inv.sizes());
            CHECK(count_bit_differences(alone.data, pair.transposed.data) == 0);
            CHECK(count_bit_differences(alone.scale_inv, pair.transposed.scale_inv) == 0);
          }
        }
      }
    })

TEST_CASE(
    "quantize_per_block: NaN and Inf stay in their block, a short leading dimension is "
    "refused") {
  FP8NN_SKIP_WITHOUT_CUDA();
  for (const auto& [bad, load] :
       std::vector<std::pair<float, K::TileLoad>>{{NAN, K::TileLoad::kRegisters},
                                                  {INFINITY, K::TileLoad::kRegisters},
                                                  {NAN, K::TileLoad::kShared},
                                                  {INFINITY, K::TileLoad::kShared}}) {
    CAPTURE(bad, static_cast<int>(load));
    auto x = torch::randn({256, 256});
    x[200][10] = bad;  // block (1, 0)
    const auto x_gpu = x.cuda();
    Output out(x.numel(), fp8nn::dtype_of(Format::E4M3)), scale_inv(4, torch::kFloat);
    REQUIRE(K::quantize_per_block(x_gpu.data_ptr(), K::HighPrecision::kFloat32, 256, 256,
                                  K::Fp8Format::kE4M3, out.u8(), nullptr, scale_inv.f32(), 2,
                                  nullptr, 0, stream(), nullptr, /*power_of_two=*/false,
                                  load) == cudaSuccess);
    const auto scales = scale_inv.values({2, 2});
    CHECK(std::isnan(scales[1][0].item<float>()) == std::isnan(bad));
    CHECK(torch::isfinite(scales[0]).all().item<bool>());
    CHECK(std::isfinite(scales[1][1].item<float>()));
    // The other blocks are untouched by the bad value: finite bytes (E4M3 NaN is 0x7f / 0xff).
    const auto bytes = out.values({256, 256}).view(torch::kUInt8).to(torch::kInt);
    CHECK(((bytes.narrow(0, 0, 128) & 0x7f) != 0x7f).all().item<bool>());
    const auto bad_block = bytes.narrow(0, 128, 128).narrow(1, 0, 128);
    CHECK(((bad_block[200 - 128][10] & 0x7f) == 0x7f).item<bool>());
  }
  Output out(256 * 256, fp8nn::dtype_of(Format::E4M3)), scale_inv(4, torch::kFloat);
  const auto x_gpu = torch::randn({256, 256}).cuda();
  CHECK(K::quantize_per_block(x_gpu.data_ptr(), K::HighPrecision::kFloat32, 256, 256,
                              K::Fp8Format::kE4M3, out.u8(), nullptr, scale_inv.f32(), 1, nullptr,
                              0, stream()) == cudaErrorInvalidValue);
  // The per-group pair has no read-twice kernel.
  Output out_t(256 * 256, fp8nn::dtype_of(Format::E4M3)), scale_inv_t(512, torch::kFloat),
      row_scales(512, torch::kFloat);
  CHECK(K::quantize_per_group_with_transpose(
            x_gpu.data_ptr(), K::HighPrecision::kFloat32, 256, 256, K::Fp8Format::kE4M3, out.u8(),
            row_scales.f32(), out_t.u8(), scale_inv_t.f32(), stream(), nullptr, false,
            K::TileLoad::kReadTwice) == cudaErrorInvalidValue);
}

// Per group of 128 along both axes in one pass: the row copy is quantize_per_group(x, 128), the
// column copy quantize_per_group(x^T, 128), bit for bit (bytes and scale_inv) against the CPU
// reference, NaN and Inf included; the monitor's counts are the row copy's alone; everything past
// the outputs stays poisoned.
TEST_CASE(
    "quantize_per_group_with_transpose: both copies equal per-group quantizations of x and x^T") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  constexpr int64_t kG = K::kTransposeGroup;
  // scale_inv bit for bit, except that a NaN (the scale of a group holding NaN) may carry another
  // payload on the device than on the host.
  const auto same_scales = [](const torch::Tensor& got, const torch::Tensor& want) {
    const auto nan = want.isnan();
    return torch::equal(got.isnan(), nan) &&
           count_bit_differences(got.masked_fill(nan, 0.0), want.masked_fill(nan, 0.0)) == 0;
  };
  // Vectorized full tiles beside scalar ragged ones in one launch (300 x 384), and full tiles with
  // vectorized loads but scalar transposed stores (136 x 256: rows not a multiple of 16).
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1},     {128, 128}, {129, 130}, {256, 384}, {300, 257},
      {64, 4096}, {4097, 3},  {512, 512}, {300, 384}, {136, 256}};
  int index = 0;
  for (const auto& [rows, cols] : shapes) {
    for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
      for (auto f : {Format::E4M3, Format::E5M2}) {
        for (const auto& [offset, load] :
             std::vector<std::pair<int64_t, K::TileLoad>>{{0, K::TileLoad::kRegisters},
                                                          {1, K::TileLoad::kRegisters},
                                                          {0, K::TileLoad::kShared},
                                                          {1, K::TileLoad::kShared}}) {
          const bool with_bad = index++ % 3 == 0;
          CAPTURE(rows, cols, dtype, fp8nn::name_of(f), offset, static_cast<int>(load), with_bad);
          const int64_t n = rows * cols;
          // Magnitudes that differ along both axes, so that a row scale used for a column (or
          // the other way round) shows.
          auto x = torch::randn({rows, cols}) * torch::exp(torch::randn({rows, 1}) * 2) *
                   torch::exp(torch::randn({1, cols}) * 2);
          if (with_bad) {
            x[rows / 2][cols / 3] = NAN;
            x[rows - 1][0] = -INFINITY;
          }
          x = x.to(dtype);
          const auto x_gpu = device_input(x, offset);
          const int64_t groups = (cols + kG - 1) / kG, groups_t = (rows + kG - 1) / kG;

          auto expected_counts = torch::zeros({3}, torch::kLong);
          const auto expected = fp8nn::detail::quantize_per_group(x, f, kG, expected_counts);
          const auto expected_t =
              fp8nn::detail::quantize_per_group(x.t().contiguous(), f, kG, torch::Tensor());

          Output out(n, fp8nn::dtype_of(f), offset), out_t(n, fp8nn::dtype_of(f), offset);
          Output scale_inv(rows * groups, torch::kFloat),
              scale_inv_t(cols * groups_t, torch::kFloat);
          const auto counts = torch::zeros({3}, torch::dtype(torch::kLong).device(torch::kCUDA));
          REQUIRE(K::quantize_per_group_with_transpose(
                      x_gpu.data_ptr(), type_of(dtype), rows, cols, format_of(f), out.u8(),
                      scale_inv.f32(), out_t.u8(), scale_inv_t.f32(), stream(),
                      reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>()),
                      /*power_of_two=*/false, load) == cudaSuccess);
          CHECK(count_bit_differences(out.values({rows, cols}), expected.data) == 0);
          CHECK(count_bit_differences(out_t.values({cols, rows}), expected_t.data) == 0);
          CHECK(same_scales(scale_inv.values({rows, groups}), expected.scale_inv));
          CHECK(same_scales(scale_inv_t.values({cols, groups_t}), expected_t.scale_inv));
          CHECK(same_counts(counts, expected_counts));
          CHECK((out.guard_untouched() && out_t.guard_untouched() && scale_inv.guard_untouched() &&
                 scale_inv_t.guard_untouched()));
        }
      }
    }
  }
  // The engine's call takes the kernel for groups of 128 and gives the same pair.
  const auto x = torch::randn({300, 260}).to(torch::kBFloat16);
  const auto pair =
      fp8nn::detail::quantize_per_group_with_transpose(x.cuda(), Format::E4M3, kG, torch::Tensor());
  const auto row_copy = fp8nn::detail::quantize_per_group(x, Format::E4M3, kG, torch::Tensor());
  const auto column_copy =
      fp8nn::detail::quantize_per_group(x.t().contiguous(), Format::E4M3, kG, torch::Tensor());
  CHECK(count_bit_differences(pair.quantized.data.cpu(), row_copy.data) == 0);
  CHECK(count_bit_differences(pair.transposed.data.cpu(), column_copy.data) == 0);
  CHECK(torch::equal(pair.transposed.scale_inv.cpu(), column_copy.scale_inv));
}

// FP8NN_TILE_LOAD picks how the engine's tile kernels read (a benchmark's switch): every value
// gives the same pair; anything else is a ValueError naming the variable.
TEST_CASE("FP8NN_TILE_LOAD: every way of reading gives the same copies, a bad value is refused") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const auto x = (torch::randn({384, 640}) * 3).to(torch::kBFloat16).cuda();
  const auto rows = (torch::randn({48, 4096}) * 3).to(torch::kBFloat16).cuda();  // long groups
  const auto quantize_both = [&] {
    return std::make_tuple(
        fp8nn::detail::quantize_per_block(x, Format::E4M3, /*with_transpose=*/true,
                                          torch::Tensor()),
        fp8nn::detail::quantize_per_group_with_transpose(x, Format::E5M2, K::kTransposeGroup,
                                                         torch::Tensor()),
        fp8nn::detail::quantize_per_group(rows, Format::E4M3, 4096, torch::Tensor()));
  };
  const fp8nn::ScopedEnv unset("FP8NN_TILE_LOAD", "");
  const auto [blocks, groups, row_groups] = quantize_both();
  for (const char* setting : {"registers", "twice", "shared"}) {
    CAPTURE(setting);
    const fp8nn::ScopedEnv scoped("FP8NN_TILE_LOAD", setting);
    const auto [b, g, r] = quantize_both();
    CHECK(count_bit_differences(r.data.cpu(), row_groups.data.cpu()) == 0);
    CHECK(count_bit_differences(r.scale_inv.cpu(), row_groups.scale_inv.cpu()) == 0);
    CHECK(count_bit_differences(b.quantized.data.cpu(), blocks.quantized.data.cpu()) == 0);
    CHECK(count_bit_differences(b.transposed.data.cpu(), blocks.transposed.data.cpu()) == 0);
    CHECK(count_bit_differences(b.quantized.scale_inv.cpu(), blocks.quantized.scale_inv.cpu()) ==
          0);
    CHECK(count_bit_differences(g.quantized.data.cpu(), groups.quantized.data.cpu()) == 0);
    CHECK(count_bit_differences(g.transposed.data.cpu(), groups.transposed.data.cpu()) == 0);
    CHECK(count_bit_differences(g.transposed.scale_inv.cpu(), groups.transposed.scale_inv.cpu()) ==
          0);
  }
  const fp8nn::ScopedEnv bad("FP8NN_TILE_LOAD", "fast");
  CHECK_THROWS_AS(quantize_both(), c10::ValueError);
  try {
    quantize_both();
  } catch (const c10::Error& e) {
    CHECK(std::string(e.what()).find("FP8NN_TILE_LOAD") != std::string::npos);
  }
}
