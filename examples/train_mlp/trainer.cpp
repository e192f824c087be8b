#include "trainer.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <stdexcept>

#include <ATen/CPUGeneratorImpl.h>
#if __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define TRAIN_MLP_HAS_CUDA_ALLOCATOR 1
#endif
#if __has_include(<ATen/cuda/CUDAGraph.h>)
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#define TRAIN_MLP_HAS_CUDA_GRAPH 1
#endif
#include <fmt/format.h>
#include <fp8nn/linear.h>

#include "distributed.h"

#ifdef __unix__
#include <unistd.h>
#endif

namespace train_mlp {
namespace {

using Clock = std::chrono::steady_clock;

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
}


EvalPoint evaluate(torch::nn::Sequential& model, const torch::Tensor& x, const torch::Tensor& y,
                   int64_t step, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  // The weights do not change during an evaluation: the FP8 layers quantize each weight once for
  // all its chunks (the copies end with the guard, so no later step can see them).
  const fp8nn::WeightReuseGuard reuse_weights;
  model->eval();
  double loss_sum = 0, correct = 0;
  const int64_t n = x.size(0), chunk = 8192;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t length = std::min(chunk, n - begin);
    const auto logits = model->forward(x.narrow(0, begin, length).to(dtype)).to(torch::kFloat);
    const auto labels = y.narrow(0, begin, length);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, labels,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += (logits.argmax(1) == labels).sum().item<double>();
  }
  model->train();
  return {step, loss_sum / n, correct / n};
}

std::string eta(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return fmt::format("{:02d}:{:02d}", s / 60, s % 60);
}

void report_progress(const TrainConfig& config, const std::string& name, int64_t step, double loss,
                     double samples_per_s, double seconds_left) {
  if (config.progress == Progress::Quiet) return;
  if (config.progress == Progress::Bar) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * step / config.steps);
    fmt::print("\r{:<7} [{}{}] {}/{} loss {:.4f} {:.0f} samples/s ETA {}   ", name,
               std::string(filled, '#'), std::string(kWidth - filled, '.'), step, config.steps,
               loss, samples_per_s, eta(seconds_left));
    if (step == config.steps) fmt::print("\n");
    std::fflush(stdout);
  } else {
    fmt::print("{:<7} step {:>6}/{} loss {:.4f} {:.0f} samples/s ETA {}\n", name, step,
               config.steps, loss, samples_per_s, eta(seconds_left));
  }
}

#ifdef TRAIN_MLP_HAS_CUDA_GRAPH
// One captured training step: its input (the batch's row indices) and output (the loss) are
// fixed tensors that each replay reads and writes.
struct GraphedStep {
  at::cuda::CUDAGraph graph;
  torch::Tensor index, loss;
};
#else
struct GraphedStep {};
#endif

void check_graph_mode(const TrainConfig& config, int world_size) {
  if (!config.cuda_graph) return;
#ifndef TRAIN_MLP_HAS_CUDA_GRAPH
  throw std::invalid_argument("--cuda-graph: this libtorch has no CUDA");
#endif
  if (!config.device.is_cuda()) {
    throw std::invalid_argument("--cuda-graph: expected a CUDA device, got " + config.device.str());
  }
  if (world_size > 1) {
    throw std::invalid_argument("--cuda-graph: expected one process, got " +
                                std::to_string(world_size));
  }
  if (config.optimizer != OptimizerKind::FusedAdamW) {
    // torch::optim::AdamW computes its bias correction on the host: a replay would repeat it.
    throw std::invalid_argument("--cuda-graph: expected --optimizer fused, got " +
                                name_of(config.optimizer));
  }
}

void share_amax(torch::nn::Sequential& model, const fp8nn::ProcessGroupRef& group) {
  for (const auto& module : model->modules(/*include_self=*/false)) {
    if (auto* global = module->as<fp8nn::LinearFP8GlobalImpl>()) global->options.amax_group(group);
    if (auto* mixed = module->as<fp8nn::LinearFP8MixedImpl>()) mixed->options.amax_group(group);
  }
}

void save_checkpoint(const std::string& path, torch::nn::Sequential& model,
                     torch::optim::Optimizer& optimizer, int64_t step, const RunResult& so_far,
                     int world_size) {
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
  model->save(model_archive);
  optimizer.save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("step", torch::tensor(step));
  archive.write("train_loss", torch::tensor(so_far.train_loss, torch::kDouble));
  archive.write("rng", at::detail::getDefaultCPUGenerator().get_state());
  archive.write("world_size", torch::tensor(int64_t{world_size}));
  archive.save_to(path);
}

int64_t load_checkpoint(const std::string& path, torch::nn::Sequential& model,
                        torch::optim::Optimizer& optimizer, RunResult& so_far,
                        const torch::Device& device, int world_size) {
  torch::serialize::InputArchive archive, model_archive, optimizer_archive;
  try {
    archive.load_from(path, device);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot read checkpoint '" + path + "': " + e.what_without_backtrace());
  }
  torch::Tensor saved_world_size;
  const int64_t written_by =
      archive.try_read("world_size", saved_world_size) ? saved_world_size.item<int64_t>() : 1;
  if (written_by != world_size) {
    throw std::runtime_error(fmt::format(
        "checkpoint '{}' was written by {} process(es), this run has {}: resume with the same "
        "world size",
        path, written_by, world_size));
  }
  archive.read("model", model_archive);
  model->load(model_archive);
  archive.read("optimizer", optimizer_archive);
  optimizer.load(optimizer_archive);
  torch::Tensor step, losses, rng;
  archive.read("step", step);
  archive.read("train_loss", losses);
  archive.read("rng", rng);
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(rng.cpu());  // load_from(path, device) put it on the training device
  losses = losses.cpu().contiguous();
  so_far.train_loss.assign(losses.data_ptr<double>(), losses.data_ptr<double>() + losses.numel());
  return step.item<int64_t>();
}

}  // namespace

RunResult train(torch::nn::Sequential model, const std::string& name, const Dataset& data,
                const TrainConfig& config) {
  model->to(config.device, config.dtype);
  model->train();
  const auto& group = config.group;
  const int rank = group ? rank_of(group) : 0, world_size = group ? size_of(group) : 1;
  if (config.batch % world_size != 0) {
    throw std::invalid_argument(fmt::format("--batch {}: expected a multiple of the world size {}",
                                            config.batch, world_size));
  }
  const bool main_rank = rank == 0;
  std::unique_ptr<GradientAverager> averager;
  if (group) {
    broadcast_parameters(*model, group);  // one initialisation, whatever each rank's seed did
    if (config.sync_amax) share_amax(model, group);
    averager = std::make_unique<GradientAverager>(model->parameters(), group, config.bucket_bytes);
  }
  const auto optimizer_holder =
      make_optimizer(config.optimizer, model->parameters(), config.lr, config.weight_decay);
  auto& optimizer = *optimizer_holder;
  RunResult result;
  result.name = name;
  int64_t step = 0;
  if (!config.resume.empty()) {
    step = load_checkpoint(config.resume, model, optimizer, result, config.device, world_size);
    if (step > config.steps) {
      throw std::runtime_error(fmt::format("checkpoint '{}' is at step {}, past --steps {}",
                                           config.resume, step, config.steps));
    }
  }
  // Stored in the training dtype once, so a step gathers its batch with no conversion.
  const auto train_x = data.train_x.to(config.device, config.dtype);
  const auto train_y = data.train_y.to(config.device);
  const auto val_x = data.val_x.to(config.device);
  const auto val_y = data.val_y.to(config.device);
  const int64_t n = train_x.size(0);
  // Per-step losses stay on the device; read back only at log points (no sync per step).
  auto losses = torch::zeros({config.steps}, torch::TensorOptions().device(config.device));
  const int device_index = config.device.index() < 0 ? 0 : config.device.index();
#ifdef TRAIN_MLP_HAS_CUDA_ALLOCATOR
  if (config.device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device_index);
#endif

  check_graph_mode(config, world_size);
  std::unique_ptr<GraphedStep> graphed;
  int64_t replays = 0;
#ifdef TRAIN_MLP_HAS_CUDA_GRAPH
  // Graph capture needs a stream of its own; warm-up, capture and replays all run on it.
  std::optional<c10::cuda::CUDAStreamGuard> graph_stream;
  if (config.cuda_graph) {
    synchronize(config.device);  // the data and parameters, made on the default stream, are ready
    graph_stream.emplace(at::cuda::getStreamFromPool(false, device_index));
  }
#endif
  // The batch gather, forward, backward and optimizer step; the loss, detached.
  const auto train_step = [&](const torch::Tensor& index) {
    const auto x = train_x.index_select(0, index);
    const auto y = train_y.index_select(0, index);
    const auto loss = torch::nn::functional::cross_entropy(model->forward(x).to(torch::kFloat), y);
    loss.backward();
    if (averager) averager->finish();
    optimizer.step();
    return loss.detach();
  };

  const int64_t first = step, warmup = std::min<int64_t>(5, config.steps - first);
  Clock::time_point timed_start = Clock::now();
  int64_t timed_from = first;
  double eval_seconds = 0;  // inside the timed span, left out of the throughput
  while (step < config.steps) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(config.seed * 1000003ULL + step);
    auto index = torch::randint(n, {config.batch}, gen, torch::kLong);
    if (world_size > 1) index = index.slice(0, rank, config.batch, world_size);  // this rank's rows
    // From pinned memory the copy is asynchronous; from pageable memory it would wait for the
    // GPU to drain every step, exposing the host's launch time.
    if (config.device.is_cuda()) index = index.contiguous().pin_memory();
    torch::Tensor loss;
#ifdef TRAIN_MLP_HAS_CUDA_GRAPH
    if (graphed) {
      graphed->index.copy_(index, /*non_blocking=*/true);
      graphed->graph.replay();
      loss = graphed->loss;
      ++replays;
    }
#endif
    if (!graphed) {
      optimizer.zero_grad(true);
      loss = train_step(index.to(config.device, /*non_blocking=*/true));
    }
    losses[step].copy_(loss);
    ++step;
    if (config.after_step) config.after_step(step, model);
    if (step == first + warmup) {  // time from here: handles, caches and the allocator are warm
#ifdef TRAIN_MLP_HAS_CUDA_GRAPH
      if (config.cuda_graph && step < config.steps) {
        graphed = std::make_unique<GraphedStep>();
        graphed->index = torch::zeros(
            {config.batch}, torch::TensorOptions().dtype(torch::kLong).device(config.device));
        optimizer.zero_grad(true);  // the captured backward then makes the gradients in its pool
        graphed->graph.capture_begin();
        graphed->loss = train_step(graphed->index);
        graphed->graph.capture_end();
      }
#endif
      synchronize(config.device);
      timed_start = Clock::now();
      timed_from = step;
    }
    if (step % config.log_every == 0 || step == config.steps) {
      auto last = losses.narrow(0, step - 1, 1);
      if (group) last = mean_over_ranks(last, group);  // the whole batch's loss
      const double current = last.item<double>();      // syncs
      const double seconds = std::chrono::duration<double>(Clock::now() - timed_start).count();
      const double rate = step > timed_from ? (step - timed_from) * config.batch / seconds : 0;
      if (main_rank) {
        report_progress(config, name, step, current, rate,
                        rate > 0 ? (config.steps - step) * config.batch / rate : 0);
      }
    }
    // Rank 0 records the evaluation. With shared amaxes every rank runs it too: the FP8 layers'
    // amax all-reduces need all ranks in the same forward.
    if ((main_rank || config.sync_amax) && config.eval_every > 0 &&
        (step % config.eval_every == 0 || step == config.steps)) {
      synchronize(config.device);
      const auto eval_start = Clock::now();
      const auto point = evaluate(model, val_x, val_y, step, config.dtype);  // ends synchronised
      if (step >= first + warmup) {  // after the timed span began (it may begin at this step)
        eval_seconds += std::chrono::duration<double>(Clock::now() - eval_start).count();
      }
      if (main_rank) result.evals.push_back(point);
    }
  }
  synchronize(config.device);
  if (graphed) dynamic_cast<FusedAdamW&>(optimizer).graph_replayed(replays);
  const double seconds =
      std::chrono::duration<double>(Clock::now() - timed_start).count() - eval_seconds;
  const int64_t timed_steps = step - timed_from;
  result.ms_per_step = timed_steps > 0 ? 1e3 * seconds / timed_steps : 0;
  result.samples_per_s = timed_steps > 0 ? timed_steps * config.batch / seconds : 0;
  result.peak_mib = -1;
#ifdef TRAIN_MLP_HAS_CUDA_ALLOCATOR
  if (config.device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_index);
    result.peak_mib = stats.allocated_bytes[0].peak / double(1 << 20);
  }
#endif
  if (group) losses = mean_over_ranks(losses, group);
  const auto host_losses = losses.narrow(0, first, config.steps - first).to(torch::kDouble).cpu();
  for (int64_t i = 0; i < host_losses.numel(); ++i) {
    result.train_loss.push_back(host_losses[i].item<double>());
  }
  if (main_rank && !config.save.empty()) {
    save_checkpoint(config.save, model, optimizer, step, result, world_size);
  }
  return result;
}

}  // namespace train_mlp
