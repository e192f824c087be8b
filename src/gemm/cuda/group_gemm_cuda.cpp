#include "gemm/cuda/group_gemm_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "common/cuda/device_memory.h"
#include "common/error.h"
#include "common/format.h"
#include "kernels/gemm/group_gemm.h"
#include "kernels/gemm/sm90_tile_scheduler.h"

namespace fp8nn::cuda {
namespace {

// FP8NN_GROUP_GEMM=auto (or unset) takes the sm90 kernel for activations whose groups split rows,
// which beats the cuBLASLt K split at every benchmarked shape (docs/kernels.md). Rows of one group
// (per-row scales) stay on cuBLASLt's OUTER_VEC path either way (the kernel is not asked).
// The route, and the sm90 tile after a colon ("sm90:256x2").
struct RouteSetting {
  GroupGemmRoute route = GroupGemmRoute::Auto;
  Sm90Tile tile;
};

RouteSetting parse_route(const char* value) {
  const std::string text = value == nullptr ? "" : value;
  const auto colon = text.find(':');
  const std::string name = text.substr(0, colon);
  RouteSetting setting;
  if (name.empty() || name == "auto") {
    setting.route = GroupGemmRoute::Auto;
  } else if (name == "cublaslt") {
    setting.route = GroupGemmRoute::CublasLt;
  } else if (name == "mma") {
    setting.route = GroupGemmRoute::Mma;
  } else if (name == "sm90") {
    setting.route = GroupGemmRoute::Sm90;
  } else {
    TORCH_CHECK_VALUE(false,
                      "fp8nn: FP8NN_GROUP_GEMM must be cublaslt, mma, sm90 or auto (sm90 and auto "
                      "optionally with a tile, e.g. sm90:256x2), got '",
                      text, "'");
  }
  if (colon == std::string::npos) return setting;
  std::string tile = text.substr(colon + 1);
  const bool takes_tile =
      setting.route == GroupGemmRoute::Sm90 || setting.route == GroupGemmRoute::Auto;
  const bool staged = !tile.empty() && tile.back() == 's';
  if (staged) tile.pop_back();
  const auto ends_with = [&](const char* tail) {
    return tile.size() > 2 && tile.compare(tile.size() - 2, 2, tail) == 0;
  };
  const bool pairs_m = ends_with("x2"), pairs_n = ends_with("n2");
  const std::string height = pairs_m || pairs_n ? tile.substr(0, tile.size() - 2) : tile;
  TORCH_CHECK_VALUE(
      takes_tile && (height == "128" || height == "256") && (!pairs_n || height == "256"),
      "fp8nn: FP8NN_GROUP_GEMM's tile (after the colon) must be 128 or 256, then "
      "optionally x2 (pairs along M) or, after 256, n2 (pairs along N), then "
      "optionally s (e.g. 256x2s), after sm90 or auto, got '",
      text, "'");
  setting.tile.tile_m = height == "256" ? 256 : 128;
  setting.tile.cluster_m = pairs_m ? 2 : 1;
  setting.tile.cluster_n = pairs_n ? 2 : 1;
  setting.tile.staged_epilogue = staged;
  return setting;
}

// FP8 data as [rows, K] with unit stride along K; the leading dim is the row stride.
torch::Tensor k_major(const torch::Tensor& data) {
  const int64_t K = data.size(1);
  const bool usable =
      data.stride(1) == 1 && (data.size(0) <= 1 || data.stride(0) >= std::max<int64_t>(K, 1));
  return usable ? data : data.contiguous();
}

int64_t leading_dim(const torch::Tensor& data) {
  return data.size(0) <= 1 ? std::max<int64_t>(data.size(1), 1) : data.stride(0);
}

int device_sm(c10::DeviceIndex device) {
  const cudaDeviceProp* properties = at::cuda::getDeviceProperties(device);
  return properties->major * 10 + properties->minor;
}

}  // namespace

namespace {
// The parsed FP8NN_GROUP_GEMM (route, then the tile's height, cluster_m, staged epilogue and
// cluster_n packed into one value), or -1 before it is read (or after reload_group_gemm_route).
std::atomic<int> cached_route{-1};

RouteSetting route_setting() {
  const int cached = cached_route.load();
  if (cached >= 0) {
    RouteSetting setting;
    setting.route = static_cast<GroupGemmRoute>(cached & 0xff);
    setting.tile.tile_m = (cached >> 8) & 0x1ff;
    setting.tile.cluster_m = (cached >> 17) & 0x3;
    setting.tile.staged_epilogue = ((cached >> 19) & 0x1) != 0;
    setting.tile.cluster_n = (cached >> 20) & 0x3;
    return setting;
  }
  const RouteSetting setting = parse_route(std::getenv("FP8NN_GROUP_GEMM"));  // may throw
  cached_route.store(
      static_cast<int>(setting.route) | setting.tile.tile_m << 8 | setting.tile.cluster_m << 17 |
      static_cast<int>(setting.tile.staged_epilogue) << 19 | setting.tile.cluster_n << 20);
  return setting;
}
}  // namespace

GroupGemmRoute group_gemm_route() { return route_setting().route; }

Sm90Tile group_gemm_sm90_tile() { return route_setting().tile; }

void reload_group_gemm_route() { cached_route.store(-1); }

ScopedGroupGemmRoute::ScopedGroupGemmRoute(const char* route)
    : setting_("FP8NN_GROUP_GEMM", route) {
  reload_group_gemm_route();
}

// setting_ puts the environment back after this body: the route is read again on the next product.
ScopedGroupGemmRoute::~ScopedGroupGemmRoute() { reload_group_gemm_route(); }

namespace {
// Whether a tile leaves group_gemm_sm90's height, cluster and epilogue open (zeros), and asks for
// no accumulation across K.
bool leaves_shape_open(const Sm90Tile& tile) {
  return tile.tile_m == 0 && tile.cluster_m == 0 && tile.cluster_n == 0 && !tile.staged_epilogue &&
         !tile.accumulate_across_k;
}
}  // namespace

c10::optional<torch::Tensor> group_gemm_product(const QuantizedTensor& a, const QuantizedTensor& b,
                                                const c10::optional<torch::Tensor>& bias,
                                                at::ScalarType out_dtype, GroupGemmKernel kernel,
                                                Sm90Tile tile) {
  if (kernel == GroupGemmKernel::Sm90 && leaves_shape_open(tile) && !tile.stage_a_scales) {
    tile = group_gemm_sm90_tile();
    // b per row group (the weight gradient) takes 128-row tiles and pairs along M only: the rest
    // of the named configuration still applies to it.
    if (b.group_size > 0 && b.group_rows == 1) {
      if (tile.tile_m == 256) tile.tile_m = 128;
      if (tile.cluster_n == 2) {
        tile.cluster_n = 1;
        tile.cluster_m = 2;
      }
    }
  }
  const int64_t M = a.data.size(0), K = a.data.size(1), N = b.data.size(0);
  // Left to the kernel, a product with a per row or row group and b per tensor or per block that
  // the kernel runs in 256-row tiles paired along N (sm90::default_configuration) also takes a's
  // scales by TMA with each stage: measured faster, its group-major copy included.
  if (kernel == GroupGemmKernel::Sm90 && leaves_shape_open(tile) && a.group_size > 0 &&
      a.group_rows == 1 && !(b.group_size > 0 && b.group_rows == 1)) {
    const int sm_count =
        at::cuda::getDeviceProperties(a.data.device().index())->multiProcessorCount;
    const auto chosen =
        kernels::sm90::default_configuration(M, N, 0, false, false, false, sm_count);
    if (chosen.tile_m == 256 && chosen.cluster_n == 2) {
      tile = {chosen.tile_m, 1, chosen.staged_epilogue, 2, false, true};
    }
  }
  const auto a_data = k_major(a.data);
  const auto b_data = k_major(b.data);
  // group_gemm_mma reads one scale row per data row: block scales are repeated down their rows.
  const auto scales_for = [&](const QuantizedTensor& q) {
    if (kernel == GroupGemmKernel::Mma && q.group_rows > 1) {
      return q.scale_inv.repeat_interleave(q.group_rows, 0)
          .narrow(0, 0, q.data.size(0))
          .contiguous();
    }
    return q.scale_inv.contiguous();
  };
  const auto a_scale = scales_for(a);
  const auto b_scale = scales_for(b);
  // group_gemm_sm90 loads b's per-row-group scales K-block-major, with its operand tiles.
  torch::Tensor b_scale_k_major;
  if (kernel == GroupGemmKernel::Sm90 && b.group_size > 0 && b.group_rows == 1) {
    b_scale_k_major = b_scale.t().contiguous();
  }
  // a's scales group-major for the stage's TMA, rows padded to 16 bytes.
  torch::Tensor a_scale_k_major;
  if (kernel == GroupGemmKernel::Sm90 && tile.stage_a_scales && a.group_size > 0 &&
      a.group_rows == 1) {
    const int64_t ld = (M + 3) / 4 * 4;
    a_scale_k_major = at::empty({a_scale.size(1), ld}, a_scale.options());  // (pad never read)
    a_scale_k_major.narrow(1, 0, M).copy_(a_scale.t());
  }
  c10::optional<torch::Tensor> epilogue_bias;
  if (bias.has_value() && bias->defined()) epilogue_bias = bias->to(out_dtype).contiguous();
  auto out = empty({M, N}, out_dtype, a.data.device());

  kernels::GroupGemmArgs args;
  args.a = a_data.data_ptr();
  args.b = b_data.data_ptr();
  args.a_scale_inv = a_scale.data_ptr<float>();
  args.b_scale_inv = b_scale.data_ptr<float>();
  args.a_group_size = a.group_size;
  args.b_group_size = b.group_size;
  args.a_group_rows = kernel == GroupGemmKernel::Mma ? 1 : a.group_rows;
  args.b_group_rows = kernel == GroupGemmKernel::Mma ? 1 : b.group_rows;
  args.tile_m = tile.tile_m;
  args.cluster_m = tile.cluster_m;
  args.cluster_n = tile.cluster_n;
  args.staged_epilogue = tile.staged_epilogue;
  args.accumulate_across_k = tile.accumulate_across_k;
  if (a_scale_k_major.defined()) {
    args.a_scale_inv_k_major = a_scale_k_major.data_ptr<float>();
    args.a_scale_k_major_ld = a_scale_k_major.size(1);
  }
  if (b_scale_k_major.defined()) args.b_scale_inv_k_major = b_scale_k_major.data_ptr<float>();
  args.c = out.data_ptr();
  args.bias = epilogue_bias ? epilogue_bias->data_ptr() : nullptr;
  args.m = M;
  args.n = N;
  args.k = K;
  args.lda = leading_dim(a_data);
  args.ldb = leading_dim(b_data);
  args.ldc = std::max<int64_t>(N, 1);
  args.a_format = kernel_format_of(a.format);
  args.b_format = kernel_format_of(b.format);
  args.out_type = high_precision_of(out_dtype, "scaled_mm");
  const char* invalid = kernels::group_gemm_invalid_reason(args);
  TORCH_INTERNAL_ASSERT(invalid == nullptr, "fp8nn: group GEMM arguments: ", invalid);

  const auto device = a.data.device().index();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device).stream();
  if (kernel == GroupGemmKernel::Sm90) {
    if (!kernels::group_gemm_sm90_supported(args, device_sm(device))) return c10::nullopt;
    bool compiled = false;
    FP8NN_CUDA_CHECK(kernels::group_gemm_sm90_compiled(&compiled));
    if (!compiled) return c10::nullopt;
    FP8NN_CUDA_CHECK(kernels::group_gemm_sm90(args, stream));
  } else {
    FP8NN_CUDA_CHECK(kernels::group_gemm_mma(args, stream));
  }
  return out;
}

}  // namespace fp8nn::cuda
