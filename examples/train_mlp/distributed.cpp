#include "distributed.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef FP8NN_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <utility>

namespace train_mlp {
namespace {

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

fp8nn::ProcessGroupRef make_process_group(const DistributedSetup& setup,
                                          const torch::Device& device,
                                          std::chrono::milliseconds timeout) {
  if (setup.world_size < 1 || setup.rank < 0 || setup.rank >= setup.world_size) {
    throw std::invalid_argument("expected 0 <= rank < world size, got rank " +
                                std::to_string(setup.rank) + " of " +
                                std::to_string(setup.world_size));
  }
  if (setup.master_port <= 0 || setup.master_port > 65535) {
    throw std::invalid_argument("expected a master port in 1..65535, got " +
                                std::to_string(setup.master_port));
  }
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(setup.master_port);
  store_options.isServer = setup.rank == 0;
  store_options.numWorkers = setup.world_size;
  store_options.waitWorkers = true;
  store_options.timeout = timeout;
  const auto store = c10::make_intrusive<c10d::TCPStore>(setup.master_addr, store_options);

  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, setup.rank, setup.world_size);
  // Gloo serves CPU tensors on every device (on one machine over loopback, which needs no
  // hostname resolution; GLOO_SOCKET_IFNAME picks the interface otherwise).
  auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
  const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
  if (interface != nullptr && *interface != '\0') {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  } else if (is_loopback(setup.master_addr)) {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
      c10::make_intrusive<c10d::PrefixStore>("gloo", store), setup.rank, setup.world_size,
      gloo_options);
  group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);

  if (device.is_cuda()) {
#ifdef FP8NN_C10D_NCCL
    c10::cuda::set_device(device.has_index() ? device.index() : 0);
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = timeout;
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>("nccl", store), setup.rank, setup.world_size,
        nccl_options);
    group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
#else
    throw std::runtime_error(
        "this train_mlp was built without NCCL (no CUDA libtorch or no nccl.h): use --device cpu");
#endif
  }
  return group;
}

void shutdown(const fp8nn::ProcessGroupRef& group) {
  if (group) group.get()->shutdown();
}

int rank_of(const fp8nn::ProcessGroupRef& group) { return group.get()->getRank(); }
int size_of(const fp8nn::ProcessGroupRef& group) { return group.get()->getSize(); }

torch::Tensor mean_over_ranks(const torch::Tensor& t, const fp8nn::ProcessGroupRef& group) {
  std::vector<torch::Tensor> tensors{t.clone()};
  group.get()->allreduce(tensors)->wait();
  return tensors[0].div_(size_of(group));
}

double parameter_divergence(torch::nn::Module& module, const fp8nn::ProcessGroupRef& group) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (const auto& parameter : module.parameters()) {
    flat.push_back(parameter.detach().reshape({-1}).to(torch::kFloat));
  }
  std::vector<torch::Tensor> input{torch::cat(flat)};
  std::vector<std::vector<torch::Tensor>> gathered(1);
  for (int r = 0; r < size_of(group); ++r) gathered[0].push_back(torch::empty_like(input[0]));
  group.get()->allgather(gathered, input)->wait();
  double divergence = 0;
  for (const auto& other : gathered[0]) {
    divergence = std::max(divergence, (other - gathered[0][0]).abs().max().item<double>());
  }
  return divergence;
}

void broadcast_parameters(torch::nn::Module& module, const fp8nn::ProcessGroupRef& group) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  for (const auto& parameter : module.parameters()) tensors.push_back(parameter.detach());
  for (const auto& buffer : module.buffers()) tensors.push_back(buffer.detach());
  c10d::BroadcastOptions options;
  options.rootRank = 0;
  for (auto& tensor : tensors) {
    std::vector<torch::Tensor> one{tensor};
    group.get()->broadcast(one, options)->wait();
  }
}

GradientAverager::GradientAverager(std::vector<torch::Tensor> parameters,
                                   const fp8nn::ProcessGroupRef& group, int64_t bucket_bytes)
    : group_(group.get()) {
  for (auto& parameter : parameters) {
    if (parameter.requires_grad()) parameters_.push_back(std::move(parameter));
  }
  slots_.resize(parameters_.size());
  int64_t bucket_used = 0;
  for (size_t i = parameters_.size(); i-- > 0;) {
    const auto& parameter = parameters_[i];
    const auto element_bytes = static_cast<int64_t>(parameter.element_size());
    const auto bytes = parameter.numel() * element_bytes;
    const bool fits =
        !buckets_.empty() && bucket_used + bytes <= bucket_bytes &&
        parameters_[buckets_.back().members.front()].options().type_equal(parameter.options());
    if (!fits) {
      buckets_.emplace_back();
      bucket_used = 0;
    }
    auto& bucket = buckets_.back();
    slots_[i] = Slot{buckets_.size() - 1, bucket_used / element_bytes};
    bucket.members.push_back(i);
    bucket_used += bytes;
  }
  for (auto& bucket : buckets_) {
    int64_t numel = 0;
    for (size_t member : bucket.members) numel += parameters_[member].numel();
    bucket.flat =
        torch::zeros({numel}, parameters_[bucket.members.front()].options().requires_grad(false));
  }
  for (size_t i = 0; i < parameters_.size(); ++i) {
    hooks_.push_back(
        parameters_[i].register_hook([this, i](torch::Tensor grad) { on_gradient(i, grad); }));
  }
}

GradientAverager::~GradientAverager() {
  for (size_t i = 0; i < parameters_.size(); ++i) parameters_[i].remove_hook(hooks_[i]);
}

// Runs on the autograd engine's thread, one gradient at a time.
void GradientAverager::on_gradient(size_t parameter, const torch::Tensor& grad) {
  auto& slot = slots_[parameter];
  auto& bucket = buckets_[slot.bucket];
  bucket.flat.narrow(0, slot.offset, grad.numel()).copy_(grad.reshape({-1}));
  if (!slot.filled) {
    slot.filled = true;
    ++bucket.filled;
  }
  launch_ready_buckets();
}

void GradientAverager::launch_ready_buckets() {
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].filled == buckets_[next_launch_].members.size()) {
    std::vector<torch::Tensor> tensors{buckets_[next_launch_].flat};
    buckets_[next_launch_].work = group_->allreduce(tensors);  // SUM
    ++next_launch_;
  }
}

void GradientAverager::finish() {
  // Parameters that received no gradient on this rank contribute zeros.
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto& slot = slots_[i];
    if (slot.filled) continue;
    buckets_[slot.bucket].flat.narrow(0, slot.offset, parameters_[i].numel()).zero_();
    slot.filled = true;
    ++buckets_[slot.bucket].filled;
  }
  launch_ready_buckets();
  torch::NoGradGuard no_grad;
  const double world_size = group_->getSize();
  for (auto& bucket : buckets_) {
    bucket.work->wait();
    bucket.work.reset();
    bucket.flat.div_(world_size);
    for (size_t member : bucket.members) {
      auto& parameter = parameters_[member];
      const auto average =
          bucket.flat.narrow(0, slots_[member].offset, parameter.numel()).view_as(parameter);
      if (parameter.grad().defined()) {
        parameter.mutable_grad().copy_(average);
      } else {
        parameter.mutable_grad() = average.clone();
      }
      slots_[member].filled = false;
    }
    bucket.filled = 0;
  }
  next_launch_ = 0;
}

}  // namespace train_mlp
