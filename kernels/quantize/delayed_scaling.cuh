#pragma once
// The device side of delayed scaling (delayed_scaling.h): a Counter (quantize_common.cuh) that
// records a cast's amax and saturations into a layer's state, and whose last block to finish
// turns the recorded window into the next scale. No block waits for another: the last block is
// found by a counter of finished blocks, the pattern of CUDA's threadFenceReduction sample.

#include "kernels/quantize/delayed_scaling.h"
#include "kernels/quantize/quantize_common.cuh"

namespace fp8nn::kernels {

// Inner: the numerics monitor's counter (CastCounter<F> or NoCounter), which sees every value
// too; its amax is this call's, known only once the block is done.
template <Fp8Format F, typename Inner>
struct DelayedCounter {
  Inner inner;
  DelayedScalingArgs args;
  unsigned amax_bits = 0, saturated = 0;

  __device__ __forceinline__ void begin(const DelayedScalingArgs& delayed) { args = delayed; }

  __device__ __forceinline__ void add(float v, float scaled) {
    inner.add(v, scaled);
    amax_bits = max(amax_bits, abs_bits(v));
    saturated += fabsf(scaled) >= saturation_bound(F) ? 1u : 0u;
  }
  __device__ __forceinline__ void add_amax(float) {}

  template <int kThreads>
  __device__ __forceinline__ void flush(unsigned long long* counts) {
    __shared__ bool last_block;
    const unsigned block_amax = block_max<kThreads>(amax_bits);  // valid in thread 0
    const unsigned block_saturated = block_sum<kThreads>(saturated);
    if (threadIdx.x == 0) inner.add_amax(__uint_as_float(block_amax));
    inner.template flush<kThreads>(counts);
    if (threadIdx.x == 0) {
      if (block_amax != 0) atomicMax(&args.scratch[0], block_amax);
      if (block_saturated != 0) {
        atomicAdd(reinterpret_cast<unsigned long long*>(&args.counts[1]),
                  static_cast<unsigned long long>(block_saturated));
      }
      __threadfence();  // this block's atomics before its "done"
      last_block = atomicAdd(&args.scratch[1], 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (last_block) update<kThreads>();
  }

 private:
  // Run by the last block only, after every block's amax is in scratch[0]. A non-finite amax is
  // counted and not recorded: the scale and the window stay as they were.
  template <int kThreads>
  __device__ __forceinline__ void update() {
    __shared__ long long recorded;
    __shared__ unsigned call_amax;
    if (threadIdx.x == 0) {
      __threadfence();
      call_amax = atomicExch(&args.scratch[0], 0u);
      args.scratch[1] = 0u;
      recorded = args.counts[0];
      if (call_amax >= 0x7f800000u) {
        args.counts[2] += 1;
      } else {
        args.history[recorded % args.history_len] = __uint_as_float(call_amax);
        args.counts[0] = recorded + 1;
      }
    }
    __syncthreads();
    if (call_amax >= 0x7f800000u) return;
    unsigned window = call_amax;
    if (!args.most_recent) {
      const long long filled = recorded + 1 < args.history_len ? recorded + 1 : args.history_len;
      unsigned bits = 0;
      for (long long i = threadIdx.x; i < filled; i += kThreads) {
        bits = max(bits, abs_bits(args.history[i]));
      }
      window = block_max<kThreads>(bits);
    }
    if (threadIdx.x == 0 && window != 0) {
      const float scale = __fdiv_rn(args.scaled_max, __uint_as_float(window));
      *args.next_scale = scale == INFINITY ? FLT_MAX : scale;
    }
  }
};

// The start of a per-tensor cast kernel: hands `delayed` to the counter and returns the scale,
// *delayed.scale when set, else scale_from_amax(*amax) (current scaling). Block 0's thread 0
// writes *scale_inv = 1 / scale and, with current scaling, gives the amax to the counter.
template <Fp8Format F, typename Counter>
__device__ __forceinline__ float begin_per_tensor_cast(Counter& counter,
                                                       const DelayedScalingArgs& delayed,
                                                       const float* amax, float* scale_inv) {
  counter.begin(delayed);
  const float scale =
      delayed.scale != nullptr ? *delayed.scale : scale_from_amax(*amax, fp8_max(F));
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    *scale_inv = __frcp_rn(scale);
    if (delayed.scale == nullptr) counter.add_amax(*amax);
  }
  return scale;
}

template <typename T>
struct CounterTag {
  using type = T;
};

// launch(CounterTag<Counter>{}) with CastCounter<F> when the numerics monitor counts (counts not
// null), else NoCounter (the kernels without counters): for casts that never record into a
// delayed-scaling state.
template <Fp8Format F, typename Launch>
cudaError_t launch_with_monitor_counter(const unsigned long long* counts, Launch&& launch) {
  return counts != nullptr ? launch(CounterTag<CastCounter<F>>{}) : launch(CounterTag<NoCounter>{});
}

// launch_with_monitor_counter, or, when the cast records into a delayed-scaling state,
// DelayedCounter around the monitor's counter.
template <Fp8Format F, typename Launch>
cudaError_t launch_with_counter(const unsigned long long* counts, const DelayedScalingArgs& delayed,
                                Launch&& launch) {
  if (delayed.records()) {
    return counts != nullptr ? launch(CounterTag<DelayedCounter<F, CastCounter<F>>>{})
                             : launch(CounterTag<DelayedCounter<F, NoCounter>>{});
  }
  return launch_with_monitor_counter<F>(counts, launch);
}

}  // namespace fp8nn::kernels
