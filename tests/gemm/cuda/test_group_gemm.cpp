// The group-scaled FP8 GEMM kernels (kernels/group_gemm.h), called directly and through
// functional::scaled_mm with FP8NN_GROUP_GEMM, against the CPU reference (scaled_mm on CPU tensors)
// on ragged shapes, group sizes, both formats of a, every output dtype and extreme scales; the
// path scaled_mm takes for each setting; and cuBLASLt's block scale modes (1x128 and 128x128
// operands) under FP8NN_GROUP_GEMM=cublaslt. Outputs start as NaN (0xff bytes), so an element the
// kernel never writes fails the comparison.

#include <fp8nn/fp8nn.h>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include "gemm/block_operands.h"
#include "gemm/cuda/cublaslt_gemm.h"
#include "gemm/cuda/group_gemm_cuda.h"
#include "gemm/cuda/scaled_mm_cuda.h"
#include "kernels/gemm/group_gemm.h"
#include "kernels/gemm/sm90_tile_scheduler.h"
#include "test_support.h"
#include "tolerance.h"

#include <array>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

using fp8nn::Format;
using fp8nn::QuantizedTensor;
namespace F = fp8nn::functional;
namespace K = fp8nn::kernels;
using fp8nn::test::unit_roundoff;
using Path = F::ScaledMmPath;

namespace {

// Error bounds, as multiples of S = sum_k |a_ik sa b_jk sb| + |bias_j| (gemm/test_scaled_mm.cpp
// explains the model):
//  - both sides accumulate in fp32 in some order: (K + 3) 2^-24 each;
//  - group_gemm_mma: exact fp16 products; each m16n8k16 step adds 17 terms aligned to the largest
//    and truncated at its fp32 grain (Fasi et al. 2021), <= 17 * 2^-23 of the step's magnitude;
//    two steps per promoted chunk: 2^-17;
//  - group_gemm_sm90: FP8 wgmma keeps ~13 fraction bits per 32-deep step (<= 2^-11 S per step),
//    promoted to fp32 every 4 steps (128 of K): 4 * 2^-11;
//  - output rounding u_out (|truth| + |err|) and the bias conversion u_out |bias| <= u_out S,
//    with fp16's subnormal spacing as an absolute floor.
constexpr double kFp32UnitRoundoff = 0x1p-24;
constexpr double kMmaTensorCoreAdds = 0x1p-17;
constexpr double kSm90PromotionInterval = 4 * 0x1p-11;
// Accumulating across K (GroupGemmArgs::accumulate_across_k) never promotes: every 32-deep step
// may lose 2^-11 S, ceil(K / 32) steps (as fast accumulation in gemm/test_scaled_mm.cpp).
constexpr double kWgmmaStep = 0x1p-11;
constexpr int64_t kWgmmaStepK = 32;

// Through scaled_mm a route may still end on cuBLASLt (precise mode: 8 steps of 2^-11 allowed, as
// in gemm/test_scaled_mm.cpp) when the named kernel does not apply.
constexpr double kCublasLtPrecise = 8 * 0x1p-11;

// Sm90StagedA: group_gemm_sm90 with a's scales group-major (GroupGemmArgs::a_scale_inv_k_major),
// still promoting per 128 of K.
enum class Kernel { Mma, Sm90, AnyRoute, Sm90AcrossK, Sm90StagedA };

double relative_bound(Kernel kernel, int64_t K, torch::ScalarType out) {
  const double fp32 = 2.0 * static_cast<double>(K + 3) * kFp32UnitRoundoff;
  const double across_k = static_cast<double>((K + kWgmmaStepK - 1) / kWgmmaStepK) * kWgmmaStep;
  const double tensor_cores = kernel == Kernel::Mma ? kMmaTensorCoreAdds
                              : kernel == Kernel::Sm90 || kernel == Kernel::Sm90StagedA
                                  ? kSm90PromotionInterval
                              : kernel == Kernel::Sm90AcrossK ? across_k
                                                              : kCublasLtPrecise;
  return fp32 + tensor_cores + 2.0 * unit_roundoff(out);
}

QuantizedTensor quantize_cpu(const torch::Tensor& x, Format format, int64_t group_size) {
  return group_size == 0 ? F::quantize(x, format) : F::quantize_per_group(x, format, group_size);
}

QuantizedTensor to_cuda(const QuantizedTensor& q) {
  return {q.data.cuda(), q.scale_inv.cuda(), q.format, q.group_size, q.group_rows};
}

// |dequantize(a)| @ |dequantize(b)|^T + |bias|, in fp64 on the CPU.
torch::Tensor magnitude_sum(const QuantizedTensor& a, const QuantizedTensor& b,
                            const c10::optional<torch::Tensor>& bias) {
  auto sum = fp8nn::test::dequantize(a).abs().matmul(fp8nn::test::dequantize(b).abs().t());
  if (bias) sum = sum + bias->to(torch::kDouble).abs();
  return sum;
}

K::GroupGemmArgs args_for(const QuantizedTensor& a, const QuantizedTensor& b,
                          const c10::optional<torch::Tensor>& bias, torch::Tensor& out) {
  K::GroupGemmArgs args;
  args.a = a.data.data_ptr();
  args.b = b.data.data_ptr();
  args.a_scale_inv = a.scale_inv.data_ptr<float>();
  args.b_scale_inv = b.scale_inv.data_ptr<float>();
  args.a_group_size = a.group_size;
  args.b_group_size = b.group_size;
  args.a_group_rows = a.group_rows;
  args.b_group_rows = b.group_rows;
  args.c = out.data_ptr();
  args.bias = bias ? bias->data_ptr() : nullptr;
  args.m = a.data.size(0);
  args.n = b.data.size(0);
  args.k = a.data.size(1);
  args.lda = std::max<int64_t>(args.k, 1);
  args.ldb = std::max<int64_t>(args.k, 1);
  args.ldc = std::max<int64_t>(args.n, 1);
  args.a_format = a.format == Format::E4M3 ? K::Fp8Format::kE4M3 : K::Fp8Format::kE5M2;
  args.b_format = b.format == Format::E4M3 ? K::Fp8Format::kE4M3 : K::Fp8Format::kE5M2;
  args.out_type = out.scalar_type() == torch::kFloat  ? K::HighPrecision::kFloat32
                  : out.scalar_type() == torch::kHalf ? K::HighPrecision::kFloat16
                                                      : K::HighPrecision::kBFloat16;
  return args;
}

struct Case {
  int64_t M, N, K;
  int64_t group_a;  // 0: per tensor
  Format format_a;
  torch::ScalarType out;
  bool bias;
  bool b_blocks = false;         // b per 128x128 block instead of per tensor
  int tile_m = 0;                // group_gemm_sm90's tile height (0: its choice)
  bool b_row_groups = false;     // b per row and 128 of K instead of per tensor
  int cluster_m = 0;             // group_gemm_sm90's CTAs per cluster (0: its choice)
  bool staged_epilogue = false;  // group_gemm_sm90's output through shared memory
  int cluster_n = 0;             // group_gemm_sm90's CTAs per cluster along N (0: its choice)
};

// Runs `kernel` (Mma, Sm90, Sm90AcrossK or Sm90StagedA) directly into `out` on the current
// stream.
void launch_kernel(Kernel kernel, const QuantizedTensor& a, const QuantizedTensor& b,
                   const c10::optional<torch::Tensor>& bias, torch::Tensor& out, int tile_m = 0,
                   int cluster_m = 0, bool staged_epilogue = false, int cluster_n = 0) {
  const bool across_k = kernel == Kernel::Sm90AcrossK;
  const bool staged_a = kernel == Kernel::Sm90StagedA;
  if (across_k || staged_a) kernel = Kernel::Sm90;
  auto args = args_for(a, b, bias, out);
  args.accumulate_across_k = across_k;
  torch::Tensor a_k_major;  // a's scales group-major, rows padded to a multiple of 4 (and poisoned)
  if (staged_a) {
    const int64_t M = a.data.size(0), ld = (M + 3) / 4 * 4;
    a_k_major = torch::full({a.scale_inv.size(1), ld}, std::numeric_limits<float>::quiet_NaN(),
                            a.scale_inv.options());
    a_k_major.narrow(1, 0, M).copy_(a.scale_inv.t());
    args.a_scale_inv_k_major = a_k_major.data_ptr<float>();
    args.a_scale_k_major_ld = ld;
  }
  args.tile_m = tile_m;
  args.cluster_m = cluster_m;
  args.staged_epilogue = staged_epilogue;
  args.cluster_n = cluster_n;
  torch::Tensor b_k_major;  // freed after the launch: later work on the stream runs after it
  if (b.group_size > 0 && b.group_rows == 1) {
    b_k_major = b.scale_inv.t().contiguous();
    args.b_scale_inv_k_major = b_k_major.data_ptr<float>();
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cudaError_t status =
      kernel == Kernel::Sm90 ? K::group_gemm_sm90(args, stream) : K::group_gemm_mma(args, stream);
  REQUIRE(std::string(cudaGetErrorString(status)) == cudaGetErrorString(cudaSuccess));
  if (kernel == Kernel::Sm90) {  // the configuration asked for is the one that ran
    const auto ran = K::group_gemm_sm90_last_launch();
    const int sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    const bool row_group_b = b.group_size > 0 && b.group_rows == 1;
    const auto chosen = K::sm90::default_configuration(args.m, args.n, tile_m, row_group_b,
                                                       across_k, staged_epilogue, sm_count);
    const bool chooses = cluster_m == 0 && cluster_n == 0;
    const bool staged = chooses ? chosen.staged_epilogue : staged_epilogue;
    CHECK(ran.tile_m == chosen.tile_m);
    CHECK(ran.cluster_m == (chooses ? chosen.cluster_m : cluster_m == 0 ? 1 : cluster_m));
    CHECK(ran.cluster_n == (chooses ? chosen.cluster_n : cluster_n == 0 ? 1 : cluster_n));
    CHECK(ran.staged_epilogue == staged);
    CHECK(ran.first_kernel == (b.group_size == 0 && ran.tile_m == 128 && ran.cluster_m == 1 &&
                               ran.cluster_n == 1 && !staged && !across_k));
    CHECK(ran.across_k == across_k);
    CHECK(ran.staged_a_scales == staged_a);
  }
}

// Runs `kernel` (or scaled_mm when use_api) on CUDA copies and compares with CPU scaled_mm.
// Under FP8NN_TEST_REDUCED (compute-sanitizer runs) the kernels' own cases run only for products
// of at most 2^28 multiply-adds: the ragged, edge and multi-tile shapes stay; the largest, which
// add only time under the tools, are left out. (The routing cases, use_api, are small and always
// run: their callers count the one product each makes.)
void check_case(const Case& c, Kernel kernel, bool use_api) {
  if (!use_api && fp8nn::test::skipped_when_reduced(c.M * c.N * c.K, int64_t{1} << 28)) return;
  CAPTURE(c.M, c.N, c.K, c.group_a, fp8nn::name_of(c.format_a), c.out, c.bias, c.b_blocks, c.tile_m,
          c.b_row_groups, c.cluster_m, c.cluster_n, c.staged_epilogue, use_api);
  // Magnitudes spread across a's rows, and across b's rows and K (so across b's blocks), so that
  // a kernel applying another row's or block's scale misses the bound by more than the rounding.
  // Scaled, and the spreads' tails clamped, so that the largest sums stay far inside fp16 (about
  // 7e3 at K = 4096 over 3000 draws).
  const auto spread = [](torch::Tensor z, double sigma, double bound) {
    return torch::exp(z.clamp(-bound, bound) * sigma);
  };
  const auto a =
      quantize_cpu(torch::randn({c.M, c.K}) * 0.2 * spread(torch::randn({c.M, 1}), 0.5, 3.0),
                   c.format_a, c.group_a);
  const auto b_values = torch::randn({c.N, c.K}) * spread(torch::randn({1, c.K}), 1.5, 3.0) *
                        spread(torch::randn({c.N, 1}), 0.5, 3.0);
  const auto b = c.b_blocks       ? F::quantize_per_block(b_values, Format::E4M3)
                 : c.b_row_groups ? quantize_cpu(b_values, Format::E4M3, fp8nn::kBlockSize)
                                  : quantize_cpu(b_values, Format::E4M3, 0);
  c10::optional<torch::Tensor> bias;
  if (c.bias) bias = torch::randn({c.N}).to(c.out);
  const auto expected = F::scaled_mm(a, b, bias, c.out).to(torch::kDouble);

  const auto a_gpu = to_cuda(a);
  const auto b_gpu = to_cuda(b);
  c10::optional<torch::Tensor> bias_gpu;
  if (bias) bias_gpu = bias->cuda();
  torch::Tensor got;
  if (use_api) {
    got = F::scaled_mm(a_gpu, b_gpu, bias_gpu, c.out);
  } else {
    got = torch::full({c.M, c.N}, std::numeric_limits<float>::quiet_NaN(),
                      torch::dtype(c.out).device(torch::kCUDA));
    launch_kernel(kernel, a_gpu, b_gpu, bias_gpu, got, c.tile_m, c.cluster_m, c.staged_epilogue,
                  c.cluster_n);
  }
  const auto error = (got.cpu().to(torch::kDouble) - expected).abs();
  const auto allowed = magnitude_sum(a, b, bias) * relative_bound(kernel, c.K, c.out) + 0x1p-24;
  CHECK(torch::isfinite(got).all().item<bool>());
  CHECK((error <= allowed).all().item<bool>());
}

bool sm90_available() {
  const cudaDeviceProp* properties = at::cuda::getCurrentDeviceProperties();
  bool compiled = false;
  REQUIRE(K::group_gemm_sm90_compiled(&compiled) == cudaSuccess);
  return properties->major == 9 && properties->minor == 0 && compiled;
}

// cuBLASLt FP8 and the hand-written kernels need Ada (8.9) or later.
bool fp8_tensor_cores() {
  const cudaDeviceProp* properties = at::cuda::getCurrentDeviceProperties();
  return properties->major * 10 + properties->minor >= 89;
}

// cuBLASLt's block scale modes (scaled_mm_cuda.cpp's block_product) run on Hopper only.
bool cublaslt_block_modes() { return at::cuda::getCurrentDeviceProperties()->major == 9; }

// The path scaled_mm took in `product`, which must make exactly one CUDA scaled_mm call (read from
// the per-path call counters of src/cuda/scaled_mm_cuda.h).
template <typename Product>
Path path_of(Product&& product) {
  std::array<int64_t, F::kScaledMmPathCount> before{};
  for (int p = 0; p < F::kScaledMmPathCount; ++p) before[p] = F::scaled_mm_path_count(Path(p));
  product();
  int taken = -1, calls = 0;
  for (int p = 0; p < F::kScaledMmPathCount; ++p) {
    const int64_t added = F::scaled_mm_path_count(Path(p)) - before[p];
    if (added > 0) taken = p;
    calls += static_cast<int>(added);
  }
  REQUIRE(calls == 1);
  return Path(taken);
}

// The path scaled_mm_cuda.cpp sends a Case to under FP8NN_GROUP_GEMM=`route`, for a group-scaled a
// whose groups split rows (b is per tensor E4M3, as check_case makes it).
Path expected_group_path(const Case& c, const std::string& route) {
  if (!fp8_tensor_cores()) return Path::Reference;
  // auto and cublaslt restate a's groups of 128 * j (E4M3 or E5M2), with b per tensor, in
  // cuBLASLt's block modes on Hopper (gemm/block_operands.h).
  if ((route == "auto" || route == "cublaslt") && cublaslt_block_modes() && c.group_a % 128 == 0) {
    return Path::CublasLtBlock;
  }
  // Else auto means sm90 (kAutoGroupGemmRoute). The sm90 kernel's conditions for these operands
  // (group_gemm_sm90_unsupported_reason): K and N multiples of 16, groups multiples of 128.
  const bool sm90_takes =
      sm90_available() && c.K % 16 == 0 && c.N % 16 == 0 && c.group_a % 128 == 0;
  if ((route == "sm90" || route == "auto") && sm90_takes) return Path::GroupGemmSm90;
  // The K split slices at group boundaries: cuBLASLt needs them at multiples of 16.
  if (route != "mma" && c.group_a % 16 == 0) return Path::CublasLtKSplit;
  return route == "cublaslt" ? Path::Reference : Path::GroupGemmMma;
}

// FP8NN_GROUP_GEMM for the scope of a test, restored after.
using ScopedRoute = fp8nn::cuda::ScopedGroupGemmRoute;

const std::vector<torch::ScalarType> kOutDtypes = {torch::kBFloat16, torch::kHalf, torch::kFloat};

}  // namespace

TEST_CASE("group_gemm_mma matches the CPU reference on ragged shapes and any group size") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1, 1}, {1, 15, 17}, {15, 17, 33}, {33, 100, 1}, {100, 33, 1000}, {65, 130, 4097}};
  int index = 0;
  for (const auto& s : shapes) {
    for (int64_t group : {int64_t{0}, int64_t{100}, int64_t{128}, int64_t{256}, int64_t{4096}}) {
      const Case c{s[0],
                   s[1],
                   s[2],
                   group,
                   index % 2 == 0 ? Format::E4M3 : Format::E5M2,
                   kOutDtypes[index % 3],
                   index % 4 != 3};
      ++index;
      check_case(c, Kernel::Mma, /*use_api=*/false);
    }
  }
}

TEST_CASE("group_gemm_sm90 matches the CPU reference on aligned K and N with ragged M") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!sm90_available()) FP8NN_SKIP_TEST("needs an sm_90 device and a 9.0a build");
  fp8nn::test::seed_torch();
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 16, 16}, {17, 32, 144}, {100, 128, 256}, {129, 272, 1040}, {300, 512, 4096}};
  int index = 0;
  for (const auto& s : shapes) {
    for (int64_t group : {int64_t{0}, int64_t{128}, int64_t{256}, int64_t{4096}}) {
      for (Format format : {Format::E4M3, Format::E5M2}) {
        const Case c{s[0], s[1], s[2], group, format, kOutDtypes[index % 3], index % 4 != 3};
        ++index;
        check_case(c, Kernel::Sm90, /*use_api=*/false);
      }
    }
  }
}

TEST_CASE(
    "group_gemm_sm90 accumulating across K matches the CPU reference, and says what it needs") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!sm90_available()) FP8NN_SKIP_TEST("needs an sm_90 device and a 9.0a build");
  fp8nn::test::seed_torch();
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 16, 16}, {17, 32, 144}, {129, 272, 1040}, {300, 512, 4096}, {520, 256, 384}};
  int index = 0;
  for (const auto& s : shapes) {
    for (int64_t group : {int64_t{0}, s[2]}) {  // per tensor, per row
      for (Format format : {Format::E4M3, Format::E5M2}) {
        // One CTA with either tile, and 256-row tiles in pairs along N.
        for (const auto& [tile_m, cluster_n] :
             std::vector<std::pair<int, int>>{{128, 0}, {256, 0}, {256, 2}}) {
          for (bool staged : {false, true}) {
            Case c{s[0], s[1], s[2], group, format, kOutDtypes[index % 3], index % 4 != 3};
            c.tile_m = tile_m;
            c.cluster_m = cluster_n == 2 ? 1 : 0;
            c.cluster_n = cluster_n;
            c.staged_epilogue = staged;
            ++index;
            check_case(c, Kernel::Sm90AcrossK, /*use_api=*/false);
          }
        }
      }
    }
  }
  // Scales that change along K, or pairs along M: refused with the reason.
  const auto x = torch::randn({256, 512});
  const auto a_groups = to_cuda(F::quantize_per_group(x, Format::E4M3, 128));
  const auto a_rows = to_cuda(F::quantize_per_group(x, Format::E4M3, 512));
  const auto b_tensor = to_cuda(F::quantize(x, Format::E4M3));
  const auto b_blocks = to_cuda(F::quantize_per_block(x, Format::E4M3));
  auto out = torch::empty({256, 256}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  const auto reason = [&](const QuantizedTensor& a, const QuantizedTensor& b, int cluster_m) {
    auto args = args_for(a, b, c10::nullopt, out);
    args.accumulate_across_k = true;
    args.cluster_m = cluster_m;
    const char* why = K::group_gemm_sm90_unsupported_reason(args, 90);
    return std::string(why == nullptr ? "" : why);
  };
  CHECK(reason(a_rows, b_tensor, 1).empty());
  CHECK(reason(a_groups, b_tensor, 1).find("constant along K") != std::string::npos);
  CHECK(reason(a_rows, b_blocks, 1).find("constant along K") != std::string::npos);
  CHECK(reason(a_rows, b_tensor, 2).find("pairs along N") != std::string::npos);
}

TEST_CASE(
    "group_gemm_sm90 with a's scales staged by TMA matches the CPU reference, and says what it "
    "needs") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!sm90_available()) FP8NN_SKIP_TEST("needs an sm_90 device and a 9.0a build");
  fp8nn::test::seed_torch();
  // Ragged M (a second wave partly or wholly past M; M not a multiple of 4, so the group-major
  // copy's rows are padded), N past one pair or with a spare rank, K with a short last block, one
  // K block and many; more cluster tiles than the device holds clusters (3700 x 2320); a per row
  // group (one and two K blocks per group) or per row; b per tensor (a E4M3 or E5M2) and per
  // block; both epilogues.
  const std::vector<std::array<int64_t, 3>> shapes = {{1, 16, 16},      {100, 128, 256},
                                                      {129, 272, 1040}, {300, 512, 4096},
                                                      {513, 384, 640},  {3700, 2320, 256}};
  int index = 0;
  for (const auto& s : shapes) {
    for (int64_t group : {int64_t{128}, int64_t{256}, s[2]}) {
      for (bool b_blocks : {false, true}) {
        for (bool staged : {false, true}) {
          const Format format = b_blocks || index % 2 == 0 ? Format::E4M3 : Format::E5M2;
          Case c{s[0],           s[1],     s[2], group, format, kOutDtypes[index % 3],
                 index % 4 != 3, b_blocks, 256};
          c.cluster_m = 1;
          c.cluster_n = 2;
          c.staged_epilogue = staged;
          ++index;
          check_case(c, Kernel::Sm90StagedA, /*use_api=*/false);
        }
      }
    }
  }
  // a per tensor, other tiles and clusters, a misaligned or short copy: refused with the reason.
  const auto x = torch::randn({256, 512});
  const auto a_groups = to_cuda(F::quantize_per_group(x, Format::E4M3, 128));
  const auto a_tensor = to_cuda(F::quantize(x, Format::E4M3));
  const auto b_tensor = to_cuda(F::quantize(x, Format::E4M3));
  const auto copy = torch::zeros({4, 260}, torch::dtype(torch::kFloat).device(torch::kCUDA));
  auto out = torch::empty({256, 256}, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  const auto reason = [&](const QuantizedTensor& a, int tile_m, int cluster_n, int64_t ld,
                          int64_t offset) {
    auto args = args_for(a, b_tensor, c10::nullopt, out);
    args.a_scale_inv_k_major = copy.data_ptr<float>() + offset;
    args.a_scale_k_major_ld = ld;
    args.tile_m = tile_m;
    args.cluster_m = cluster_n == 2 ? 1 : 0;
    args.cluster_n = cluster_n;
    const char* why = K::group_gemm_sm90_unsupported_reason(args, 90);
    return std::string(why == nullptr ? "" : why);
  };
  CHECK(reason(a_groups, 256, 2, 256, 0).empty());
  CHECK(reason(a_tensor, 256, 2, 256, 0).find("per row or row group") != std::string::npos);
  CHECK(reason(a_groups, 128, 0, 256, 0).find("pairs along N") != std::string::npos);
  CHECK(reason(a_groups, 256, 1, 256, 0).find("pairs along N") != std::string::npos);
  CHECK(reason(a_groups, 256, 2, 252, 0).find("16-byte aligned") != std::string::npos);
  CHECK(reason(a_groups, 256, 2, 258, 0).find("16-byte aligned") != std::string::npos);
  CHECK(reason(a_groups, 256, 2, 256, 1).find("16-byte aligned") != std::string::npos);
}

TEST_CASE(
    "group_gemm_sm90 with b per row and 128 of K (the 1D1D product) matches the CPU reference") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!sm90_available()) FP8NN_SKIP_TEST("needs an sm_90 device and a 9.0a build");
  fp8nn::test::seed_torch();
  // N not a multiple of 128 (the scale box's tail reads zeros), one and several K blocks, a short
  // last K block; a per tensor and per row group; more tiles than SMs (CTAs take a second tile,
  // and the tile order a second raster column).
  const std::vector<std::array<int64_t, 3>> shapes = {{1, 16, 16},      {100, 128, 256},
                                                      {129, 272, 1040}, {300, 512, 4096},
                                                      {513, 400, 640},  {1100, 2320, 256}};
  int index = 0;
  for (const auto& s : shapes) {
    for (int64_t group : {int64_t{0}, int64_t{128}, int64_t{256}}) {
      // cluster_m 2: b and its column scales shared by two CTAs; both epilogues
      for (const auto& [cluster_m, staged] :
           std::vector<std::pair<int, bool>>{{1, false}, {1, true}, {2, false}, {2, true}}) {
        Case c{s[0], s[1], s[2], group, Format::E4M3, kOutDtypes[index % 3], index % 4 != 3};
        c.b_row_groups = true;
        c.cluster_m = cluster_m;
        c.staged_epilogue = staged;
        ++index;
        check_case(c, Kernel::Sm90, /*use_api=*/false);
      }
    }
  }
}

TEST_CASE(
    "group_gemm_sm90's 256-row tile, 128x128 block-scaled b and staged epilogue match the CPU "
    "reference") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!sm90_available()) FP8NN_SKIP_TEST("needs an sm_90 device and a 9.0a build");
  fp8nn::test::seed_torch();
  // Ragged M (a tile's second wave partly or wholly past M), one and several tiles along N, K
  // with a short last block; a per tensor, per row group and per row; more tiles than SMs (CTAs
  // take a second tile at 3700 x 2320).
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 16, 16},     {100, 128, 256},   {129, 272, 1040}, {300, 512, 4096},
      {513, 384, 640}, {1100, 2320, 256}, {3700, 2320, 256}};
  int index = 0;
  for (const auto& s : shapes) {
    for (int64_t group : {int64_t{0}, int64_t{128}, int64_t{256}, int64_t{4096}}) {
      for (int tile_m : {128, 256}) {
        for (bool b_blocks : {false, true}) {
          // Both epilogues; the first kernel's configuration (128 rows, b per tensor, stores
          // from the registers) is the test above's.
          for (bool staged : {false, true}) {
            if (!b_blocks && tile_m == 128 && !staged) continue;
            // A block-scaled b takes E4M3 a only (group_gemm_sm90_unsupported_reason).
            const Format format = b_blocks || index % 2 == 0 ? Format::E4M3 : Format::E5M2;
            Case c{s[0],           s[1],     s[2],  group, format, kOutDtypes[index % 3],
                   index % 4 != 3, b_blocks, tile_m};
            c.staged_epilogue = staged;
            ++index;
            check_case(c, Kernel::Sm90, /*use_api=*/false);
          }
        }
      }
    }
  }
}

TEST_CASE("group_gemm_sm90 in clusters of two CTAs sharing a tile matches the CPU reference") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!sm90_available()) FP8NN_SKIP_TEST("needs an sm_90 device and a 9.0a build");
  fp8nn::test::seed_torch();
  // Pairs along M (sharing b's tile) for both tile heights, and along N (sharing a's 256-row
  // tile). M- and N-block counts odd and even, 1 included (the cluster's second CTA then has no
  // tile of its own and runs for its peer only); more cluster tiles than the device holds
  // clusters at 4000 x 2048 and 3700 x 2320, the latter with odd block counts, so that CTAs go
  // on after a spare tile, and a second, narrower raster column; K with a short last block.
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 16, 16},     {100, 128, 256},   {129, 272, 1040}, {300, 512, 4096},
      {513, 384, 640}, {4000, 2048, 256}, {3700, 2320, 256}};
  int index = 0;
  for (const auto& s : shapes) {
    for (int64_t group : {int64_t{0}, int64_t{128}, int64_t{4096}}) {
      for (const auto& [tile_m, along_n] :
           std::vector<std::pair<int, bool>>{{128, false}, {256, false}, {256, true}}) {
        for (bool b_blocks : {false, true}) {
          for (bool staged : {false, true}) {  // both epilogues
            const Format format = b_blocks || index % 2 == 0 ? Format::E4M3 : Format::E5M2;
            Case c{s[0],           s[1],     s[2],  group, format, kOutDtypes[index % 3],
                   index % 4 != 3, b_blocks, tile_m};
            c.cluster_m = along_n ? 1 : 2;
            c.cluster_n = along_n ? 2 : 1;
            c.staged_epilogue = staged;
            ++index;
            check_case(c, Kernel::Sm90, /*use_api=*/false);
          }
        }
      }
    }
  }
}

namespace {

// rows x K data drawn from `values` (each exact in `format`) with every scale_inv equal to
// `scale_inv`: one for the tensor (group_size 0) or one per group.
QuantizedTensor with_scale_inv(const std::vector<float>& values, int64_t rows, int64_t K,
                               Format format, int64_t group_size, float scale_inv) {
  const auto table = torch::tensor(values);
  const auto picks = torch::randint(static_cast<int64_t>(values.size()), {rows, K}, torch::kLong);
  const auto data = table.index({picks}).to(fp8nn::dtype_of(format));
  const int64_t groups = group_size == 0 ? 1 : (K + group_size - 1) / group_size;
  const auto scales =
      group_size == 0 ? torch::full({}, scale_inv) : torch::full({rows, groups}, scale_inv);
  return {data, scales, format, group_size};
}

}  // namespace

TEST_CASE("the kernels apply extreme scales like the CPU reference: finite, and to fp32 accuracy") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  constexpr float kFloatMax = std::numeric_limits<float>::max();
  struct Extreme {
    const char* what;
    std::vector<float> a_values, b_values;
    Format format_a;
    float a_scale_inv, b_scale_inv;
  };
  const std::vector<Extreme> extremes = {
      // sa = FLT_MAX / 448 (what an amax of FLT_MAX quantizes to), sb = 512: sa * sb overflows
      // fp32, while every dequantized value, product and sum stays below 2^127 (values <= 2^-5,
      // K = 256). Applying sa * sb as one factor gives Inf.
      {"sa * sb overflows",
       {0x1p-9f, 0x3p-9f, 0x1p-6f, 0x1.8p-6f, 0x1p-5f},
       {0x1p-9f, 0x3p-9f, 0x1p-6f, 0x1.8p-6f, 0x1p-5f},
       Format::E4M3,
       kFloatMax / 448.0f,
       512.0f},
      // sa = 1 / FLT_MAX (what a tiny amax quantizes to, itself subnormal: 2^-128), sb ~ 1.6e-4:
      // sa * sb = 1.3 2^-141 keeps 9 bits in the subnormals (off by 6e-4 relative), while every
      // dequantized value, product and sum is a normal fp32 number (products >= 2^-119).
      {"sa * sb rounds in the subnormals",
       {0x1p14f, 0x1.8p14f, 0x1p15f, 0x1.8p15f, 0x1.cp15f},
       {256.0f, 288.0f, 320.0f, 384.0f, 448.0f},
       Format::E5M2,
       1.0f / kFloatMax,
       std::ldexp(1.3f, -13)},
      // With E4M3 a, which group_gemm_sm90 also takes with a 128x128 block-scaled b: its
      // one-factor promotion, partial * (sa * sb), must give way to the two multiplies. sa =
      // 2^-128,
      // sb = 0x1.02p-15: sa * sb = 64.5 2^-149 rounds to 64 2^-149 (off by 0.78 %, about 4 times
      // the bound), while every product (>= 384^2 sa sb ~ 2^-125.8) and partial * sa (>= 2^-104)
      // is a normal fp32 number.
      {"sa * sb rounds in the subnormals, E4M3 a",
       {384.0f, 416.0f, 448.0f},
       {384.0f, 416.0f, 448.0f},
       Format::E4M3,
       1.0f / kFloatMax,
       0x1.02p-15f},
  };
  std::vector<Kernel> kernels = {Kernel::Mma};
  if (sm90_available()) kernels.push_back(Kernel::Sm90);
  constexpr int64_t M = 40, N = 48, K_size = 256;  // sm90: N and K multiples of 16
  for (const auto& extreme : extremes) {
    for (int64_t group_a : {int64_t{0}, int64_t{128}}) {
      // b per 128x128 block (group_gemm_sm90 only, with E4M3 a), and, with a per row group, rows
      // 20..39 at scale_inv 1 (warps whose rows' sa * sb are partly normal).
      for (bool b_blocks : {false, true}) {
        if (b_blocks && extreme.format_a != Format::E4M3) continue;
        auto a = with_scale_inv(extreme.a_values, M, K_size, extreme.format_a, group_a,
                                extreme.a_scale_inv);
        if (b_blocks && group_a > 0) a.scale_inv.narrow(0, 20, 20).fill_(1.0f);
        auto b = with_scale_inv(extreme.b_values, N, K_size, Format::E4M3, b_blocks ? 128 : 0,
                                extreme.b_scale_inv);
        if (b_blocks) {
          b.scale_inv = torch::full({1, 2}, extreme.b_scale_inv);  // [ceil(N/128), ceil(K/128)]
          b.group_rows = 128;
        }
        const auto expected = F::scaled_mm(a, b, c10::nullopt, torch::kFloat);
        REQUIRE(torch::isfinite(expected).all().item<bool>());
        // Every term is positive, so the result is its own magnitude sum and is compared with no
        // absolute floor (the second case's results are ~2^-110).
        const auto magnitude = magnitude_sum(a, b, c10::nullopt);
        for (Kernel kernel : kernels) {
          if (b_blocks && kernel != Kernel::Sm90) continue;  // group_gemm_mma: one row per group
          CAPTURE(extreme.what, group_a, b_blocks, kernel == Kernel::Sm90 ? "sm90" : "mma");
          auto got = torch::full({M, N}, std::numeric_limits<float>::quiet_NaN(),
                                 torch::dtype(torch::kFloat).device(torch::kCUDA));
          const auto a_gpu = to_cuda(a);
          const auto b_gpu = to_cuda(b);
          launch_kernel(kernel, a_gpu, b_gpu, c10::nullopt, got);
          CHECK(torch::isfinite(got).all().item<bool>());
          const auto error = (got.cpu().to(torch::kDouble) - expected.to(torch::kDouble)).abs();
          const auto allowed = magnitude * relative_bound(kernel, K_size, torch::kFloat);
          CHECK((error <= allowed).all().item<bool>());
        }
      }
    }
  }
}

TEST_CASE("scaled_mm routes group-scaled products to the kernel FP8NN_GROUP_GEMM names") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  const std::vector<Case> cases = {
      {64, 128, 512, 128, Format::E4M3, torch::kBFloat16, true},  // sm90, else the K split
      {17, 33, 300, 100, Format::E5M2, torch::kFloat, false},     // mma, else the reference
      {200, 256, 1024, 256, Format::E5M2, torch::kHalf, true},    // sm90, else the K split
      // K neither a multiple of 16 nor of the group (a short last group and K block): cuBLASLt's
      // block modes under auto and cublaslt on Hopper, else the K split (or mma).
      {96, 160, 1100, 256, Format::E4M3, torch::kFloat, true},
  };
  for (const char* route : {"mma", "sm90", "cublaslt", "auto"}) {
    const ScopedRoute scoped(route);
    for (const auto& c : cases) {
      CAPTURE(route, c.M, c.N, c.K, c.group_a);
      const Path taken = path_of([&] { check_case(c, Kernel::AnyRoute, /*use_api=*/true); });
      CHECK(std::string(F::path_name(taken)) == F::path_name(expected_group_path(c, route)));
    }
  }
}

TEST_CASE("scaled_mm under sm90 stages a's scales where the kernel pairs 256-row tiles along N") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!sm90_available()) FP8NN_SKIP_TEST("needs an sm_90 device and a 9.0a build");
  fp8nn::test::seed_torch();
  // Enough 256-row tiles for every SM (sm90::default_tile_rows), N past one tile: the kernel's
  // choice is 256-row tiles in pairs along N, and with a per row group group_gemm_product gives
  // it a's scales group-major.
  const int sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t N = 17 * 128, M = 256 * ((sm_count + 16) / 17);
  Case groups{M, N, 256, 128, Format::E4M3, torch::kBFloat16, true};
  Case blocks{M, N, 384, 128, Format::E4M3, torch::kFloat, false};
  blocks.b_blocks = true;
  const Case two_blocks{M, N, 512, 256, Format::E5M2, torch::kHalf, true};  // groups of 2 K blocks
  const ScopedRoute scoped("sm90");
  for (const auto& c : {groups, blocks, two_blocks}) {
    CAPTURE(c.M, c.N, c.K, c.group_a, c.b_blocks);
    const Path taken = path_of([&] { check_case(c, Kernel::AnyRoute, /*use_api=*/true); });
    CHECK(std::string(F::path_name(taken)) == F::path_name(Path::GroupGemmSm90));
    const auto ran = K::group_gemm_sm90_last_launch();
    CHECK(ran.tile_m == 256);
    CHECK(ran.cluster_n == 2);
    CHECK(ran.staged_epilogue);
    CHECK(ran.staged_a_scales);
  }
}

TEST_CASE("scaled_mm takes cuBLASLt for per-tensor and per-row operands under every route") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!fp8_tensor_cores()) FP8NN_SKIP_TEST("needs FP8 tensor cores (compute capability 8.9+)");
  fp8nn::test::seed_torch();
  // Aligned (multiples of 16) per tensor, and groups that cover whole rows (per-row scales,
  // cuBLASLt's OUTER_VEC mode); then a ragged per-tensor shape, which cuBLASLt takes on padded
  // copies. None of them is for the hand-written kernels, whichever FP8NN_GROUP_GEMM says.
  const std::vector<Case> cases = {
      {64, 128, 256, 0, Format::E4M3, torch::kBFloat16, true},
      {128, 256, 512, 512, Format::E4M3, torch::kFloat, false},
      {32, 64, 128, 4096, Format::E5M2, torch::kHalf, true},
      {17, 33, 100, 0, Format::E5M2, torch::kBFloat16, true},
  };
  for (const char* route : {"mma", "sm90", "cublaslt", "auto"}) {
    const ScopedRoute scoped(route);
    for (const auto& c : cases) {
      CAPTURE(route, c.M, c.N, c.K, c.group_a);
      const Path taken = path_of([&] { check_case(c, Kernel::AnyRoute, /*use_api=*/true); });
      CHECK(std::string(F::path_name(taken)) == F::path_name(Path::CublasLt));
    }
  }
}

TEST_CASE("scaled_mm rejects an unknown FP8NN_GROUP_GEMM value, naming it") {
  FP8NN_SKIP_WITHOUT_CUDA();
  const ScopedRoute scoped("fastest");
  const auto a = to_cuda(quantize_cpu(torch::randn({4, 256}), Format::E4M3, 128));
  const auto b = to_cuda(quantize_cpu(torch::randn({8, 256}), Format::E4M3, 0));
  CHECK_THROWS_AS(F::scaled_mm(a, b, c10::nullopt, torch::kFloat), c10::ValueError);
  try {
    F::scaled_mm(a, b, c10::nullopt, torch::kFloat);
  } catch (const c10::Error& e) {
    const std::string message = e.what();
    CHECK(message.find("FP8NN_GROUP_GEMM") != std::string::npos);
    CHECK(message.find("'fastest'") != std::string::npos);
  }
}

TEST_CASE("FP8NN_GROUP_GEMM names group_gemm_sm90's tile after the route") {
  using fp8nn::cuda::group_gemm_route;
  using fp8nn::cuda::group_gemm_sm90_tile;
  using fp8nn::cuda::GroupGemmRoute;
  const auto tile_is = [](int tile_m, int cluster_m, bool staged = false, int cluster_n = 1) {
    const auto tile = group_gemm_sm90_tile();
    return tile.tile_m == tile_m && tile.cluster_m == cluster_m && tile.staged_epilogue == staged &&
           tile.cluster_n == (tile_m == 0 ? 0 : cluster_n);
  };
  {
    const ScopedRoute scoped("sm90");
    CHECK(group_gemm_route() == GroupGemmRoute::Sm90);
    CHECK(tile_is(0, 0));
  }
  {
    const ScopedRoute scoped("sm90:256x2");
    CHECK(group_gemm_route() == GroupGemmRoute::Sm90);
    CHECK(tile_is(256, 2));
  }
  {
    const ScopedRoute scoped("auto:128");
    CHECK(group_gemm_route() == GroupGemmRoute::Auto);
    CHECK(tile_is(128, 1));
  }
  {
    const ScopedRoute scoped("sm90:128x2");
    CHECK(tile_is(128, 2));  // the tile is read first here, with the route
    CHECK(group_gemm_route() == GroupGemmRoute::Sm90);
  }
  {
    const ScopedRoute scoped("sm90:256x2s");
    CHECK(tile_is(256, 2, true));
  }
  {
    const ScopedRoute scoped("auto:128s");
    CHECK(tile_is(128, 1, true));
  }
  {
    const ScopedRoute scoped("sm90:256n2s");
    CHECK(tile_is(256, 1, true, 2));
  }
  for (const char* bad : {"sm90:64", "cublaslt:256", "mma:128x2", "sm90:", "sm90:256x4", "sm90:s",
                          "sm90:256sx2", "sm90:128n2"}) {
    CAPTURE(bad);
    const ScopedRoute scoped(bad);
    CHECK_THROWS_AS(group_gemm_route(), c10::ValueError);
    CHECK_THROWS_AS(group_gemm_sm90_tile(), c10::ValueError);
    try {
      group_gemm_sm90_tile();
    } catch (const c10::Error& e) {
      CHECK(std::string(e.what()).find(std::string("'") + bad + "'") != std::string::npos);
    }
  }
}

TEST_CASE("the hand-written kernels are captured in a CUDA graph and replay with current scales") {
  FP8NN_SKIP_WITHOUT_CUDA();
  fp8nn::test::seed_torch();
  for (const char* route : {"mma", "sm90"}) {
    CAPTURE(route);
    const ScopedRoute scoped(route);
    auto a = to_cuda(quantize_cpu(torch::randn({96, 512}), Format::E4M3, 128));
    const auto b = to_cuda(quantize_cpu(torch::randn({64, 512}), Format::E4M3, 0));
    const auto bias = torch::randn({64}).to(torch::kBFloat16).cuda();
    F::scaled_mm(a, b, bias, torch::kBFloat16);  // warm-up: attributes, driver entry point
    torch::cuda::synchronize();

    at::cuda::CUDAGraph graph;
    torch::Tensor captured;
    {
      const c10::cuda::CUDAStreamGuard guard(at::cuda::getStreamFromPool());
      graph.capture_begin();
      captured = F::scaled_mm(a, b, bias, torch::kBFloat16);
      graph.capture_end();
    }
    const auto fresh = to_cuda(quantize_cpu(torch::randn({96, 512}) * 3.0, Format::E4M3, 128));
    a.data.copy_(fresh.data);
    a.scale_inv.copy_(fresh.scale_inv);
    captured.fill_(std::numeric_limits<float>::quiet_NaN());
    graph.replay();
    torch::cuda::synchronize();
    const auto eager = F::scaled_mm(fresh, b, bias, torch::kBFloat16);
    CHECK(torch::isfinite(captured).all().item<bool>());
    CHECK(fp8nn::test::count_bit_differences(captured, eager) == 0);
  }
}

namespace {

// A block-scaled operand on the CPU: per group of 128 along K (1x128) or per 128x128 block.
enum class Blocks { Row128, Square128 };

QuantizedTensor quantize_blocks_cpu(const torch::Tensor& x, Format format, Blocks blocks) {
  return blocks == Blocks::Row128 ? F::quantize_per_group(x, format, fp8nn::kBlockSize)
                                  : F::quantize_per_block(x, format);
}

}  // namespace

TEST_CASE(
    "cuBLASLt's block modes take 1x128 x 128x128 and 1x128 x 1x128 products and match the "
    "CPU reference") {
  FP8NN_SKIP_WITHOUT_CUDA();
  const cudaDeviceProp* properties = at::cuda::getCurrentDeviceProperties();
  if (properties->major != 9) FP8NN_SKIP_TEST("cuBLASLt's block scale modes need a Hopper GPU");
  fp8nn::test::seed_torch();
  const ScopedRoute scoped("cublaslt");
  // Ragged M (not a multiple of 4 either), K and N not multiples of 16 or 128, one K block, and
  // the DeepSeek-V3 products: x W^T and dy W (1x128 x 128x128), dy^T x (1x128 x 1x128), and the
  // 128x128 operand on the left.
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 16, 128}, {13, 100, 300}, {200, 256, 1024}, {129, 272, 1040}, {256, 384, 4096}};
  const std::vector<std::pair<Blocks, Blocks>> pairings = {{Blocks::Row128, Blocks::Square128},
                                                           {Blocks::Row128, Blocks::Row128},
                                                           {Blocks::Square128, Blocks::Row128}};
  int index = 0;
  for (const auto& s : shapes) {
    for (const auto& [blocks_a, blocks_b] : pairings) {
      const int64_t M = s[0], N = s[1], K_size = s[2];
      const Format format_a = index % 2 == 0 ? Format::E4M3 : Format::E5M2;
      const auto out = kOutDtypes[index % 3];
      const bool with_bias = index % 4 != 3;
      ++index;
      CAPTURE(M, N, K_size, static_cast<int>(blocks_a), static_cast<int>(blocks_b),
              fp8nn::name_of(format_a), out, with_bias);
      // Magnitudes that differ between rows and blocks, so that every scale matters, with sums far
      // inside fp16 (the spreads' tails clamped).
      const auto a = quantize_blocks_cpu(
          torch::randn({M, K_size}) * 0.1 * torch::exp(torch::randn({M, 1}).clamp(-3.0, 3.0)),
          format_a, blocks_a);
      const auto b = quantize_blocks_cpu(
          torch::randn({N, K_size}) * torch::exp(torch::randn({1, K_size}).clamp(-3.0, 3.0) * 1.5),
          Format::E4M3, blocks_b);
      c10::optional<torch::Tensor> bias;
      if (with_bias) bias = torch::randn({N}).to(out);
      const auto expected = F::scaled_mm(a, b, bias, out).to(torch::kDouble);
      c10::optional<torch::Tensor> bias_gpu;
      if (bias) bias_gpu = bias->cuda();
      const auto a_gpu = to_cuda(a);
      const auto b_gpu = to_cuda(b);
      torch::Tensor got;
      const Path taken = path_of([&] { got = F::scaled_mm(a_gpu, b_gpu, bias_gpu, out); });
      // Two 1x128 operands with K <= 128 are per row: cuBLASLt's per-row mode.
      const bool per_row =
          blocks_a == Blocks::Row128 && blocks_b == Blocks::Row128 && K_size <= fp8nn::kBlockSize;
      CHECK(std::string(F::path_name(taken)) ==
            F::path_name(per_row ? Path::CublasLt : Path::CublasLtBlock));
      const auto error = (got.cpu().to(torch::kDouble) - expected).abs();
      const auto allowed =
          magnitude_sum(a, b, bias) * relative_bound(Kernel::AnyRoute, K_size, out) + 0x1p-24;
      CHECK(torch::isfinite(got).all().item<bool>());
      CHECK((error <= allowed).all().item<bool>());
    }
  }
}

TEST_CASE(
    "1x128 x 1x128 products take group_gemm_sm90 under sm90, and cuBLASLt's block modes (on "
    "Hopper) or the K split under auto") {
  // sm90:256n2 too: the weight gradient's product takes 128-row tiles in pairs along M instead
  // (group_gemm_product), not another kernel.
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!fp8_tensor_cores()) FP8NN_SKIP_TEST("needs FP8 tensor cores (compute capability 8.9+)");
  fp8nn::test::seed_torch();
  const int64_t M = 200, N = 256, K_size = 1024;
  const auto a = quantize_blocks_cpu(torch::randn({M, K_size}) * 3.0, Format::E4M3, Blocks::Row128);
  const auto b =
      quantize_blocks_cpu(torch::randn({N, K_size}) * torch::exp(torch::randn({1, K_size}) * 2.0),
                          Format::E4M3, Blocks::Row128);
  const auto expected = F::scaled_mm(a, b, c10::nullopt, torch::kFloat).to(torch::kDouble);
  const auto magnitude = magnitude_sum(a, b, c10::nullopt);
  for (const char* route : {"sm90", "auto", "sm90:256n2", "sm90:256x2s"}) {
    CAPTURE(route);
    const ScopedRoute scoped(route);
    const bool automatic = std::string(route) == "auto";
    const Path expected_path = automatic && cublaslt_block_modes() ? Path::CublasLtBlock
                               : !automatic && sm90_available()    ? Path::GroupGemmSm90
                                                                   : Path::CublasLtKSplit;
    torch::Tensor got;
    const Path taken =
        path_of([&] { got = F::scaled_mm(to_cuda(a), to_cuda(b), c10::nullopt, torch::kFloat); });
    CHECK(std::string(F::path_name(taken)) == F::path_name(expected_path));
    const Kernel kernel = taken == Path::GroupGemmSm90 ? Kernel::Sm90 : Kernel::AnyRoute;
    const auto error = (got.cpu().to(torch::kDouble) - expected).abs();
    CHECK((error <= magnitude * relative_bound(kernel, K_size, torch::kFloat) + 0x1p-24)
              .all()
              .item<bool>());
  }
}

TEST_CASE(
    "block-scaled products take the kernel their route names, and cuBLASLt's block modes (on "
    "Hopper) under auto") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (!fp8_tensor_cores()) FP8NN_SKIP_TEST("needs FP8 tensor cores (compute capability 8.9+)");
  fp8nn::test::seed_torch();
  const std::vector<std::array<int64_t, 3>> shapes = {{64, 256, 384}, {13, 100, 300}};
  const std::vector<std::pair<Blocks, Blocks>> pairings = {{Blocks::Row128, Blocks::Square128},
                                                           {Blocks::Square128, Blocks::Row128}};
  int index = 0;
  for (const auto& s : shapes) {
    for (const auto& [blocks_a, blocks_b] : pairings) {
      const int64_t M = s[0], N = s[1], K_size = s[2];
      const auto out = kOutDtypes[index % 3];
      const bool with_bias = index % 2 == 0;
      ++index;
      // Sums far inside fp16 (below about 1e3 over 30 draws).
      const auto a = quantize_blocks_cpu(torch::randn({M, K_size}) * 0.3, Format::E4M3, blocks_a);
      const auto b = quantize_blocks_cpu(
          torch::randn({N, K_size}) * torch::exp(torch::randn({1, K_size}) * 1.5), Format::E4M3,
          blocks_b);
      c10::optional<torch::Tensor> bias, bias_gpu;
      if (with_bias) {
        bias = torch::randn({N}).to(out);
        bias_gpu = bias->cuda();
      }
      const auto expected = F::scaled_mm(a, b, bias, out).to(torch::kDouble);
      const auto magnitude = magnitude_sum(a, b, bias);
      for (const char* route : {"mma", "sm90", "auto"}) {
        CAPTURE(M, N, K_size, static_cast<int>(blocks_a), route, out, with_bias);
        const ScopedRoute scoped(route);
        // sm90 takes a 1x128 a with a 128x128 b on aligned K and N; mma the rest.
        const bool sm90_takes = std::string(route) == "sm90" && sm90_available() &&
                                blocks_a == Blocks::Row128 && K_size % 16 == 0 && N % 16 == 0;
        const Path expected_path = std::string(route) == "auto" && cublaslt_block_modes()
                                       ? Path::CublasLtBlock
                                   : sm90_takes ? Path::GroupGemmSm90
                                                : Path::GroupGemmMma;
        torch::Tensor got;
        const Path taken =
            path_of([&] { got = F::scaled_mm(to_cuda(a), to_cuda(b), bias_gpu, out); });
        CHECK(std::string(F::path_name(taken)) == F::path_name(expected_path));
        const Kernel kernel = taken == Path::GroupGemmSm90  ? Kernel::Sm90
                              : taken == Path::GroupGemmMma ? Kernel::Mma
                                                            : Kernel::AnyRoute;
        const auto error = (got.cpu().to(torch::kDouble) - expected).abs();
        const auto allowed = magnitude * relative_bound(kernel, K_size, out) + 0x1p-24;
        CHECK(torch::isfinite(got).all().item<bool>());
        CHECK((error <= allowed).all().item<bool>());
      }
    }
  }
}

// Mixed's operands restated in the block modes (gemm/block_operands.h), on the CPU: every element
// keeps its scale, so both operands dequantize to the same values, bit for bit; and only a per
// row group of 128 * j with a per-tensor b is restated.
TEST_CASE(
    "Mixed's row-group operands restated per 128 of K and per 128x128 block keep every scale") {
  fp8nn::test::seed_torch();
  // (M, N, K, G): one K block per group; a group and a K block cut short at K's end; several K
  // blocks per group with a short last group whose repeats run past K's last block.
  const std::vector<std::array<int64_t, 4>> shapes = {
      {9, 130, 384, 128}, {40, 48, 1000, 256}, {33, 16, 4100, 1024}};
  for (const auto& [M, N, K_size, G] : shapes) {
    CAPTURE(M, N, K_size, G);
    const auto a = F::quantize_per_group(
        torch::randn({M, K_size}) * torch::exp(torch::randn({M, K_size}) * 2.0), Format::E4M3, G);
    const auto b = F::quantize(torch::randn({N, K_size}), Format::E4M3);
    const auto blocks = F::detail::row_groups_as_blocks(a, b);
    REQUIRE(blocks.has_value());
    const auto& [a_blocks, b_blocks] = *blocks;
    const int64_t k_blocks = (K_size + 127) / 128;
    CHECK(a_blocks.group_size == 128);
    CHECK(a_blocks.group_rows == 1);
    CHECK(b_blocks.group_size == 128);
    CHECK(b_blocks.group_rows == 128);
    CHECK(a_blocks.scale_inv.sizes() == torch::IntArrayRef({M, k_blocks}));
    CHECK(b_blocks.scale_inv.sizes() == torch::IntArrayRef({(N + 127) / 128, k_blocks}));
    CHECK(fp8nn::test::count_bit_differences(F::dequantize(a_blocks), F::dequantize(a)) == 0);
    CHECK(fp8nn::test::count_bit_differences(F::dequantize(b_blocks), F::dequantize(b)) == 0);
  }
  const auto x = torch::randn({8, 512});
  const auto per_tensor = F::quantize(x, Format::E4M3);
  const auto restated = [](const QuantizedTensor& a, const QuantizedTensor& b) {
    return F::detail::row_groups_as_blocks(a, b).has_value();
  };
  CHECK_FALSE(restated(F::quantize_per_group(x, Format::E4M3, 64), per_tensor));   // not 128 * j
  CHECK_FALSE(restated(F::quantize_per_group(x, Format::E4M3, 512), per_tensor));  // per row
  CHECK_FALSE(restated(per_tensor, per_tensor));
  CHECK_FALSE(restated(F::quantize_per_group(x, Format::E4M3, 128),
                       F::quantize_per_group(x, Format::E4M3, 128)));
}

// The launchers' argument checks and the cuBLASLt scale layouts are host code: checked here on any
// machine, GPU or not.
TEST_CASE("group_gemm_sm90 names what it refuses among the block-scaled configurations") {
  const auto args = [] {
    K::GroupGemmArgs a;
    alignas(16) static uint8_t data[16 * 256];
    alignas(16) static float scales[64];
    alignas(16) static uint16_t out[16 * 16];
    a.a = data;
    a.b = data;
    a.a_scale_inv = scales;
    a.b_scale_inv = scales;
    a.c = out;
    a.m = 16;
    a.n = 16;
    a.k = 256;
    a.lda = a.ldb = 256;
    a.ldc = 16;
    return a;
  };
  const auto reason = [](const K::GroupGemmArgs& a) {
    const char* text = K::group_gemm_sm90_unsupported_reason(a, 90);
    return std::string(text == nullptr ? "" : text);
  };
  auto blocks = args();
  blocks.a_group_size = 128;
  blocks.b_group_size = 128;
  blocks.b_group_rows = 128;
  CHECK(reason(blocks).empty());
  blocks.tile_m = 256;
  CHECK(reason(blocks).empty());
  blocks.a_format = K::Fp8Format::kE5M2;
  CHECK(reason(blocks) == "a must be E4M3 with a group-scaled b");

  auto row_groups = args();
  row_groups.a_group_size = 128;
  row_groups.b_group_size = 128;
  CHECK(reason(row_groups) == "b per row group needs b_scale_inv_k_major, 16-byte aligned");
  alignas(16) static float k_major[64];
  row_groups.b_scale_inv_k_major = k_major;
  CHECK(reason(row_groups).empty());
  row_groups.tile_m = 256;
  CHECK(reason(row_groups) == "256-row tiles take b per tensor or per block");
  row_groups.tile_m = 128;
  row_groups.cluster_m = 2;
  CHECK(reason(row_groups).empty());
  blocks.a_format = K::Fp8Format::kE4M3;
  blocks.cluster_m = 2;
  CHECK(reason(blocks).empty());
  blocks.cluster_m = 1;
  blocks.cluster_n = 2;
  CHECK(reason(blocks).empty());  // tile_m 256
  blocks.tile_m = 128;
  CHECK(reason(blocks) == "pairs along N take 256-row tiles");
  row_groups.cluster_m = 1;
  row_groups.cluster_n = 2;
  CHECK(reason(row_groups) == "pairs along N take b per tensor or per block");

  auto other_b = args();
  other_b.b_group_size = 64;
  CHECK(reason(other_b) ==
        "b must be scaled per tensor, per 128x128 block or per row and 128 of K");
  auto block_a = args();
  block_a.a_group_size = 128;
  block_a.a_group_rows = 128;
  CHECK(reason(block_a) == "a must be scaled per tensor, per row or per row group");
  auto bad_tile = args();
  bad_tile.tile_m = 64;
  CHECK(std::string(K::group_gemm_invalid_reason(bad_tile)) == "tile_m must be 0, 128 or 256");
  auto bad_cluster = args();
  bad_cluster.cluster_m = 3;
  CHECK(std::string(K::group_gemm_invalid_reason(bad_cluster)) == "cluster_m must be 0, 1 or 2");
  bad_cluster.cluster_m = 0;
  bad_cluster.cluster_n = -1;
  CHECK(std::string(K::group_gemm_invalid_reason(bad_cluster)) == "cluster_n must be 0, 1 or 2");
  bad_cluster.cluster_m = 2;
  bad_cluster.cluster_n = 2;
  CHECK(std::string(K::group_gemm_invalid_reason(bad_cluster)) ==
        "cluster_m and cluster_n are not both 2");
  auto bad_rows = args();
  bad_rows.b_group_rows = 0;
  CHECK(std::string(K::group_gemm_invalid_reason(bad_rows)) == "group rows must be >= 1");
}

TEST_CASE("cuBLASLt's block scale layouts hold the values the modes read") {
  using fp8nn::cuda::scale_count;
  using fp8nn::cuda::ScaleMode;
  CHECK(scale_count(ScaleMode::PerTensor, 300, 1000) == 1);
  CHECK(scale_count(ScaleMode::PerRow, 300, 1000) == 300);
  // 1x128: ceil(K / 128) K blocks of `rows` values each.
  CHECK(scale_count(ScaleMode::Vec128, 300, 1000) == 8 * 300);
  CHECK(scale_count(ScaleMode::Vec128, 13, 128) == 13);
  // 128x128: ceil(rows / 128) rows of K blocks, each padded to a multiple of 4.
  CHECK(scale_count(ScaleMode::Block128x128, 300, 1000) == 3 * 8);
  CHECK(scale_count(ScaleMode::Block128x128, 300, 1040) == 3 * 12);
  CHECK(scale_count(ScaleMode::Block128x128, 1, 128) == 4);
}
