#pragma once
// The PTX the Hopper (sm_90a) GEMM kernels build their pipelines from: mbarriers (init, arrive,
// arrive with an expected byte count, a wait that traps instead of hanging, arrivals on another
// CTA's barrier), cluster rank and sync, TMA tile loads into shared memory (multicast too),
// shared-memory matrix descriptors for 128-byte swizzled K-major tiles, wgmma (fences, commit,
// wait, the FP8 m64n128k32 product) and setmaxnreg.
//
// Everything here is device code for sm_90a only: FP8NN_SM90_DEVICE_CODE is 1 in that compilation
// and 0 in every other one (host, sm_89, sm_90 without the "a" features), where this header
// declares nothing and a kernel's body compiles to a stub.

#include <cuda.h>  // CUtensorMap (a type only)

#include <cstdint>

#include "kernels/common/fp8_format.h"

#ifndef FP8NN_SM90_DEVICE_CODE
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FP8NN_SM90_DEVICE_CODE 1
#else
#define FP8NN_SM90_DEVICE_CODE 0
#endif
#endif

namespace fp8nn::kernels::sm90 {

#if FP8NN_SM90_DEVICE_CODE

constexpr unsigned long long kWaitTimeoutNs = 10ull * 1000 * 1000 * 1000;  // barrier_wait

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarriers ---------------------------------------------------------------------------------

__device__ __forceinline__ void barrier_init(uint64_t* barrier, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_address(barrier)), "r"(count));
}

// Releases the barrier_inits before it at cluster scope, where TMA completions and other CTAs'
// arrivals see them; the CTA's own threads still meet at a __syncthreads() before using them.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// Acquire at CTA scope (the default). Waits on barriers that other CTAs of the cluster arrive on
// need no more: what follows such a wait is a TMA issue that reads nothing those CTAs wrote, and
// the stage it overwrites was read by wgmmas that had completed before the arrival. A
// cluster-scope acquire would also invalidate the SM's L1 after every wait (CCTL.IVALL in SASS).
__device__ __forceinline__ bool barrier_try_wait(uint32_t address, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      " selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(address), "r"(parity)
      : "memory");
  return done != 0;
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Waits for the phase of `parity` to complete. A pipeline bug would otherwise hang the GPU: after
// kWaitTimeoutNs the kernel traps, and the host sees a launch failure instead.
// (`address`: the barrier's shared-memory address, smem_address(barrier); hot loops compute it
// once per barrier array, as the conversion reads a special register each time.)
__device__ __forceinline__ void barrier_wait_at(uint32_t address, uint32_t parity) {
  if (barrier_try_wait(address, parity)) return;
  const uint64_t start = global_timer_ns();
  while (!barrier_try_wait(address, parity)) {
    if (global_timer_ns() - start > kWaitTimeoutNs) __trap();
  }
}
__device__ __forceinline__ void barrier_wait(uint64_t* barrier, uint32_t parity) {
  barrier_wait_at(smem_address(barrier), parity);
}

__device__ __forceinline__ void barrier_arrive_at(uint32_t address) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(address) : "memory");
}
__device__ __forceinline__ void barrier_arrive(uint64_t* barrier) {
  barrier_arrive_at(smem_address(barrier));
}

// Arrives and adds `bytes` to the transaction count the phase waits for (the TMA loads that
// complete on this barrier deliver them).
__device__ __forceinline__ void barrier_arrive_expect_bytes(uint64_t* barrier, uint32_t bytes) {
  asm volatile(
      "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_address(barrier)),
      "r"(bytes)
      : "memory");
}

// ---- clusters ----------------------------------------------------------------------------------

// This CTA's rank in its cluster.
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

// Every thread of every CTA of the cluster meets here; writes before it (the mbarrier inits
// included, after fence_barrier_init) are visible to all of them after it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// Arrives on the barrier at the same shared-memory offset as `barrier` in the cluster's CTA of
// rank `cta` (this CTA's own when cta is its rank). The arrival releases at CTA scope (the
// default), as the pipelines' consumers need: they arrive once their wgmmas have completed, so
// no read of theirs is outstanding. A cluster-scope release would put a GPU-wide memory barrier
// (MEMBAR.ALL.GPU) before every arrival, stalling the warp until all its global loads and stores
// (the next K block's scales, the last tile's outputs) have completed.
__device__ __forceinline__ void barrier_arrive_cluster(uint64_t* barrier, uint32_t cta) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
               : "=r"(remote)
               : "r"(smem_address(barrier)), "r"(cta));
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
}

// ---- TMA ---------------------------------------------------------------------------------------

// Loads the box of `map` at (inner, outer) elements into `destination`; its bytes complete on
// `barrier`. Parts of the box outside the tensor read as zeros (maps of encode_tensor_map_2d).
__device__ __forceinline__ void tma_load_2d(void* destination, const CUtensorMap* map,
                                            uint64_t* barrier, int inner, int outer) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];" ::"r"(smem_address(destination)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(smem_address(barrier))
      : "memory");
}

// tma_load_2d into every CTA of the cluster named in `cta_mask` (bit r: rank r): the box lands at
// the same shared-memory offset as `destination` in each, and its bytes complete on the barrier at
// `barrier`'s offset in each.
__device__ __forceinline__ void tma_load_2d_multicast(void* destination, const CUtensorMap* map,
                                                      uint64_t* barrier, int inner, int outer,
                                                      uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;" ::"r"(smem_address(destination)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(smem_address(barrier)),
      "h"(cta_mask)
      : "memory");
}

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// ---- wgmma -------------------------------------------------------------------------------------

// Shared-memory matrix descriptor of a K-major tile with 128-byte swizzle: rows of 128 bytes,
// 8-row groups 1024 bytes apart (stride byte offset); the leading byte offset is unused for this
// layout. Fields are in 16-byte units; bits 62-63 = 1 selects the 128-byte swizzle.
__device__ __forceinline__ uint64_t smem_descriptor_at(uint32_t tile_address) {
  const uint64_t address = tile_address;
  uint64_t descriptor = (address & 0x3FFFF) >> 4;
  descriptor |= uint64_t{1} << 16;          // leading byte offset: 16 bytes (ignored)
  descriptor |= uint64_t{1024 >> 4} << 32;  // stride byte offset
  descriptor |= uint64_t{1} << 62;          // SWIZZLE_128B
  return descriptor;
}
__device__ __forceinline__ uint64_t smem_descriptor(const void* tile) {
  return smem_descriptor_at(smem_address(tile));
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}
// Waits until at most N committed wgmma groups are still in flight.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// Keeps the compiler from moving accumulator reads/writes across wgmma issue and wait.
template <int N>
__device__ __forceinline__ void fence_registers(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The 64 accumulators of an m64n128 f32 wgmma as asm operands %0..%63 (d is a float[64]), and the
// register list that names them.
#define FP8NN_WGMMA_OPERANDS                                                                      \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),    \
      "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),  \
      "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),  \
      "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),  \
      "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),  \
      "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),  \
      "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),  \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

#define FP8NN_WGMMA_REGISTERS                                                                   \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63}"

// d (+)= A (64 x 32, smem) * B (128 x 32, smem)^T; accumulate when `accumulate`, else overwrite.
// B is E4M3; A is FormatA.
template <Fp8Format FormatA>
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                                 int accumulate) {
  if constexpr (FormatA == Fp8Format::kE4M3) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
        " wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " FP8NN_WGMMA_REGISTERS
        ", %64, %65, p, 1, 1;\n}\n"
        : FP8NN_WGMMA_OPERANDS
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
  } else {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
        " wgmma.mma_async.sync.aligned.m64n128k32.f32.e5m2.e4m3 " FP8NN_WGMMA_REGISTERS
        ", %64, %65, p, 1, 1;\n}\n"
        : FP8NN_WGMMA_OPERANDS
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
  }
}

// ---- registers per warpgroup -------------------------------------------------------------------

// setmaxnreg: the calling warpgroup gives back registers down to `Registers` per thread (dec), or
// asks for up to `Registers` (inc), so that producers can hand theirs to consumers.
template <int Registers>
__device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(Registers % 8 == 0 && Registers >= 24 && Registers <= 256, "setmaxnreg range");
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(Registers));
}
template <int Registers>
__device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(Registers % 8 == 0 && Registers >= 24 && Registers <= 256, "setmaxnreg range");
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(Registers));
}

#endif  // FP8NN_SM90_DEVICE_CODE

}  // namespace fp8nn::kernels::sm90
