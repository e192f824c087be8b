#pragma once
// One-launch per-tensor current scaling: a kernel launched cooperatively (every block resident at
// once, so that a grid-wide barrier cannot deadlock) first reduces the tensor's amax over the whole
// grid, then casts with the scale of that amax, in the same launch. Against an amax launch plus a
// cast launch plus the memset of the amax, it saves two launches and their gaps, which is most of a
// small tensor's quantize time; a tensor that fits in L2 is read from DRAM once. Larger tensors
// stream faster through the two launches (kOneLaunchMaxElements in cast.h).
//
// The grid amax: each block writes its max into its own word of a scratch array, the grid waits at
// cooperative_groups' grid barrier, and every block then reduces the whole array itself. Nothing is
// accumulated into a word that must start at zero, so the scratch needs no memset and no state
// carries from one launch to the next (a CUDA graph replays it as it is). Max of abs_bits is exact
// and order-free, so the result equals amax_per_tensor's bit for bit.

#include <cooperative_groups.h>

#include "kernels/quantize/delayed_scaling.cuh"
#include "kernels/quantize/quantize_common.cuh"

namespace fp8nn::kernels {

// The amax of the whole grid from each thread's `bits` (thread_amax_bits). `partials` holds a word
// per block; written here before the barrier and read after it, so never through the read-only
// cache. Every thread of every block must call it; all get the result.
template <int kThreads>
__device__ __forceinline__ float grid_amax(unsigned bits, unsigned* partials) {
  __shared__ unsigned grid_bits;
  bits = block_reduce<kThreads, false>(bits, WarpMax{});
  if (threadIdx.x == 0) partials[blockIdx.x] = bits;
  cooperative_groups::this_grid().sync();  // a memory fence for the partials as well
  unsigned all = 0;
  for (unsigned i = threadIdx.x; i < gridDim.x; i += kThreads) all = max(all, __ldcg(partials + i));
  all = block_reduce<kThreads, true>(all, WarpMax{});
  if (threadIdx.x == 0) grid_bits = all;
  __syncthreads();
  return __uint_as_float(grid_bits);
}

// The start of the cast half: the scale of `amax` (scale_from_amax); block 0's thread 0 writes
// *scale_inv = 1 / scale and *amax_out = amax (when not null) and gives the amax to the counter
// (CastCounter or NoCounter), as begin_per_tensor_cast does.
template <Fp8Format F, typename Counter>
__device__ __forceinline__ float begin_current_scaling_cast(Counter& counter, float amax,
                                                            float* scale_inv, float* amax_out) {
  const float scale = scale_from_amax(amax, fp8_max(F));
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    *scale_inv = __frcp_rn(scale);
    if (amax_out != nullptr) *amax_out = amax;
    counter.add_amax(amax);
  }
  return scale;
}

// A kernel as a type, for a generic lambda to pick between instantiations.
template <auto kKernel>
struct KernelTag {
  static constexpr auto value = kKernel;
};

constexpr int kMaxCooperativeDevices = 64;

// 256-thread blocks one multiprocessor holds at most (2048 threads on sm_90, 1536 on sm_89): the
// scratch words per multiprocessor that any cooperative grid of the quantize kernels needs.
constexpr int kMaxResidentBlocksPerSm = 8;

// Whether the current device takes cooperative launches, asked once per device.
inline cudaError_t cooperative_launch_supported(bool* supported) {
  static std::atomic<int> answers[kMaxCooperativeDevices] = {};  // 0 unknown, 1 no, 2 yes
  int device = 0;
  FP8NN_KERNELS_TRY(cudaGetDevice(&device));
  int answer =
      device < kMaxCooperativeDevices ? answers[device].load(std::memory_order_relaxed) : 0;
  if (answer == 0) {
    int value = 0;
    FP8NN_KERNELS_TRY(cudaDeviceGetAttribute(&value, cudaDevAttrCooperativeLaunch, device));
    answer = value != 0 ? 2 : 1;
    if (device < kMaxCooperativeDevices) answers[device].store(answer, std::memory_order_relaxed);
  }
  *supported = answer == 2;
  return cudaSuccess;
}

// Launches kKernel(args...) cooperatively with kThreads threads and as many blocks as are wanted,
// as fit on the device at once (its occupancy, asked once per kernel and device) and as `max_grid`
// allows (the caller's scratch). *launched says whether it ran: false where the device takes no
// cooperative launch or refuses this one as too large (e.g. under MPS with fewer SMs); the caller
// then takes its two-launch path. Any other failure is returned.
template <auto kKernel, int kThreads, typename... Args>
cudaError_t launch_cooperative(int64_t wanted_blocks, int64_t max_grid, cudaStream_t stream,
                               bool* launched, Args... args) {
  static std::atomic<int> resident_per_sm[kMaxCooperativeDevices] = {};
  *launched = false;
  bool supported = false;
  FP8NN_KERNELS_TRY(cooperative_launch_supported(&supported));
  if (!supported) return cudaSuccess;
  int device = 0;
  FP8NN_KERNELS_TRY(cudaGetDevice(&device));
  int per_sm = device < kMaxCooperativeDevices ? resident_per_sm[device].load() : 0;
  if (per_sm == 0) {
    FP8NN_KERNELS_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, kThreads, 0));
    if (per_sm == 0) return cudaSuccess;
    if (device < kMaxCooperativeDevices) resident_per_sm[device].store(per_sm);
  }
  int multiprocessors = 0;
  FP8NN_KERNELS_TRY(multiprocessor_count(&multiprocessors));
  int64_t grid = static_cast<int64_t>(per_sm) * multiprocessors;
  grid = grid < wanted_blocks ? grid : wanted_blocks;
  grid = grid < max_grid ? grid : max_grid;
  grid = grid < 1 ? 1 : grid;

  cudaLaunchAttribute cooperative = {};
  cooperative.id = cudaLaunchAttributeCooperative;
  cooperative.val.cooperative = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(grid));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  config.attrs = &cooperative;
  config.numAttrs = 1;
  const cudaError_t status = cudaLaunchKernelEx(&config, kKernel, args...);
  if (status == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();  // a refused configuration, not a fault: clear it, fall back
    return cudaSuccess;
  }
  FP8NN_KERNELS_TRY(status);
  *launched = true;
  return cudaGetLastError();
}

}  // namespace fp8nn::kernels
