#pragma once
// Data parallelism for train_mlp through c10d, PyTorch's distributed engine inside libtorch: the
// process group (TCPStore rendezvous; Gloo for CPU tensors, NCCL for CUDA tensors), rank 0's
// parameters broadcast at the start, and gradients averaged by bucketed all-reduces that overlap
// with backward. Each rank runs the same program on its shard of every batch.

// c10d's own headers stay in distributed.cpp: they define logging macros (CHECK, ...).
#include <fp8nn/linear_functional.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace c10d {
class Work;
}  // namespace c10d

namespace train_mlp {

/// Where this process stands among the ranks, and where rank 0's TCPStore listens.
struct DistributedSetup {
  int world_size = 1, rank = 0;
  int local_rank = 0;  ///< rank on this machine: the GPU it uses
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

/// The process group of `setup`'s ranks: a c10d::TCPStore at master_addr:master_port (served by
/// rank 0), a Gloo backend for CPU tensors and, when `device` is CUDA, an NCCL backend for CUDA
/// tensors. Returns once every rank has joined; throws after `timeout` otherwise.
fp8nn::ProcessGroupRef make_process_group(
    const DistributedSetup& setup, const torch::Device& device,
    std::chrono::milliseconds timeout = std::chrono::minutes(5));

/// Copies rank 0's parameters and buffers of `module` to every rank of `group`.
void broadcast_parameters(torch::nn::Module& module, const fp8nn::ProcessGroupRef& group);

/// Ends the group's backends (NCCL wants this before exit); every rank calls it. None: nothing.
void shutdown(const fp8nn::ProcessGroupRef& group);

/// This process's rank in the group, and the number of ranks.
int rank_of(const fp8nn::ProcessGroupRef& group);
int size_of(const fp8nn::ProcessGroupRef& group);

/// The mean of `t` over the ranks, as a new tensor. A collective: every rank calls it.
torch::Tensor mean_over_ranks(const torch::Tensor& t, const fp8nn::ProcessGroupRef& group);

/// The largest |difference| between any rank's parameters of `module` and rank 0's (0 when the
/// replicas are identical), the same on every rank. A collective: every rank calls it.
double parameter_divergence(torch::nn::Module& module, const fp8nn::ProcessGroupRef& group);

/// Averages the gradients of `parameters` (those requiring one) over the ranks as torch's
/// DistributedDataParallel does. Parameters, in reverse order (the order backward produces their
/// gradients), are packed into buckets of about `bucket_bytes`; a hook on each parameter copies its
/// gradient into its bucket, and each full bucket is all-reduced asynchronously, in bucket order,
/// while backward goes on. finish(), after backward, waits for the reductions and writes the
/// averages into the parameters' .grad. Every rank must run the same backward (same parameters
/// receiving gradients, same order).
class GradientAverager {
 public:
  static constexpr int64_t kDefaultBucketBytes = int64_t{25} << 20;  // DDP's bucket_cap_mb = 25

  GradientAverager(std::vector<torch::Tensor> parameters, const fp8nn::ProcessGroupRef& group,
                   int64_t bucket_bytes = kDefaultBucketBytes);
  ~GradientAverager();
  GradientAverager(const GradientAverager&) = delete;
  GradientAverager& operator=(const GradientAverager&) = delete;

  /// After loss.backward(): every parameter's .grad holds the average over the ranks.
  void finish();
  /// Number of buckets (for tests and logs).
  size_t buckets() const { return buckets_.size(); }

 private:
  struct Slot {
    size_t bucket;
    int64_t offset;  ///< in elements of the bucket's flat buffer
    bool filled = false;
  };
  struct Bucket {
    torch::Tensor flat;           ///< the members' gradients, concatenated
    std::vector<size_t> members;  ///< parameter indices
    size_t filled = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };

  void on_gradient(size_t parameter, const torch::Tensor& grad);
  void launch_ready_buckets();

  std::vector<torch::Tensor> parameters_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::vector<Slot> slots_;  ///< per parameter
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hooks_;  ///< per parameter
  size_t next_launch_ = 0;       ///< buckets are launched in order on every rank
};

}  // namespace train_mlp
