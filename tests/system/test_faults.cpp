// Faults and load (issue #8): two host threads training concurrently against the same runs done
// one after the other; a model on cuda:1; checkpoints read back by a second process, bit for bit,
// and damaged checkpoints rejected with a clear error; device memory flat over a long loop.

#include <fp8nn/fp8nn.h>

#include "layer_checks.h"

#ifdef FP8NN_TEST_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace fp8nn::test;
using fp8nn::Recipe;

namespace {

// ---- concurrent training ---------------------------------------------------------------------

// A small model of both recipes, its data and what training it gave.
struct Job {
  torch::nn::Sequential model{nullptr};
  std::vector<torch::Tensor> inputs, targets;
  std::vector<double> losses;
  std::vector<torch::Tensor> final_parameters;
  std::string error;
};

// Every job starts from the same parameters and data, made here on the main thread (the global
// generator is not for concurrent use). Batch sizes change from step to step, and differ between
// the jobs, so that both threads fill the GEMM heuristic cache with new keys at the same time.
Job make_job(int index, int steps, torch::Device device) {
  torch::manual_seed(100 + index);
  const auto projection = torch::randn({48, 24}) / 7.0;  // a task to learn: tanh(x P)
  Job job;
  job.model = torch::nn::Sequential(
      fp8nn::LinearFP8Global(48, 80), torch::nn::ReLU(),
      fp8nn::LinearFP8Mixed(fp8nn::LinearFP8Options(80, 32).group_size_in(16).group_size_out(16)),
      torch::nn::Tanh(), fp8nn::LinearFP8Global(32, 24));
  job.model->to(device);
  for (int step = 0; step < steps; ++step) {
    const int64_t rows = 8 + 3 * ((step + 5 * index) % 11);
    const auto inputs = torch::randn({rows, 48});
    job.inputs.push_back(inputs.to(device));
    job.targets.push_back(torch::tanh(inputs.matmul(projection)).to(device));
  }
  return job;
}

void train(Job& job) {
  try {
    torch::optim::SGD sgd(job.model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
    for (size_t step = 0; step < job.inputs.size(); ++step) {
      sgd.zero_grad();
      const auto loss = torch::mse_loss(job.model->forward(job.inputs[step]), job.targets[step]);
      loss.backward();
      sgd.step();
      job.losses.push_back(loss.item<double>());
    }
    for (const auto& p : job.model->parameters()) job.final_parameters.push_back(p.detach().cpu());
  } catch (const std::exception& e) {
    job.error = e.what();
  }
}

// `run_in_thread(job)` trains job on its own host thread (and, on CUDA, its own stream).
template <typename RunInThread>
void check_concurrent_training(torch::Device device, RunInThread run_in_thread) {
  // Enough steps for every shape of the batch-size cycle; fewer on the (slower) CPU.
  const int steps = reduced_test_set() ? 8 : device.is_cuda() ? 40 : 16;
  constexpr int kJobs = 2;
  std::vector<Job> concurrent, sequential;
  for (int i = 0; i < kJobs; ++i) concurrent.push_back(make_job(i, steps, device));
  for (int i = 0; i < kJobs; ++i) sequential.push_back(make_job(i, steps, device));
  if (device.is_cuda()) torch::cuda::synchronize();  // the data is ready for any stream
  // Concurrent first, while the caches are cold for these shapes; both start together.
  std::promise<void> start;
  const auto go = start.get_future().share();
  std::vector<std::thread> threads;
  for (auto& job : concurrent) {
    threads.emplace_back([&job, go, &run_in_thread] {
      go.wait();
      run_in_thread(job);
    });
  }
  start.set_value();
  for (auto& thread : threads) thread.join();
  for (auto& job : sequential) train(job);
  for (int i = 0; i < kJobs; ++i) {
    CAPTURE(i);
    INFO("concurrent error: " << concurrent[i].error);
    REQUIRE(concurrent[i].error.empty());
    REQUIRE(sequential[i].error.empty());
    REQUIRE(concurrent[i].losses.size() == sequential[i].losses.size());
    const auto& losses = sequential[i].losses;  // it learns (batches differ: first vs last 4)
    if (losses.size() >= 16) {
      CHECK(losses[losses.size() - 1] + losses[losses.size() - 2] + losses[losses.size() - 3] +
                losses[losses.size() - 4] <
            losses[0] + losses[1] + losses[2] + losses[3]);
    }
    // The same kernels on the same data: identical in practice; a race would be far off.
    for (size_t step = 0; step < concurrent[i].losses.size(); ++step) {
      CAPTURE(step);
      CHECK(std::abs(concurrent[i].losses[step] - sequential[i].losses[step]) <=
            1e-5 * std::abs(sequential[i].losses[step]));
    }
    for (size_t p = 0; p < concurrent[i].final_parameters.size(); ++p) {
      CAPTURE(p);
      const auto& got = concurrent[i].final_parameters[p];
      const auto& want = sequential[i].final_parameters[p];
      INFO("elements differing in bits: " << count_bit_differences(got, want));
      CHECK(relative_error(got, want) <= 1e-5);
    }
  }
}

// ---- checkpoints in a second process -----------------------------------------------------------

std::string temp_path(const std::string& tag) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/fp8nn_faults_" + tag + "_" +
         std::to_string(fresh_seed());
}

struct Outcome {
  bool crashed = false;
  int status = -1;
  std::string output;
};

// Runs the helper in a new process: fresh CUDA context, fresh caches, nothing shared.
Outcome run_helper(const std::string& mode, const std::string& recipe, int64_t in, int64_t out,
                   const std::string& checkpoint, const std::string& data) {
  const auto log = temp_path("log");
  const std::string command = std::string("'") + FP8NN_CHECKPOINT_HELPER + "' " + mode + " " +
                              recipe + " " + std::to_string(in) + " " + std::to_string(out) + " '" +
                              checkpoint + "' '" + data + "' > '" + log + "' 2>&1";
  const int raw = std::system(command.c_str());
  Outcome outcome;
  std::ifstream file(log);
  outcome.output.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  std::remove(log.c_str());
  if (raw == -1 || WIFSIGNALED(raw)) {
    outcome.crashed = true;
  } else {
    outcome.status = WEXITSTATUS(raw);
    // The shell reports a signal of its child as 128 + signal.
    outcome.crashed = outcome.status > 128;
  }
  return outcome;
}

std::string read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
}

// Saves a trained layer (`checked`: fp8nn::save_checkpoint, else torch::save) and its output on
// an input; a second process loads it into a differently initialised layer and must reproduce
// the output bit for bit. Then damaged copies: truncated at many lengths and with bytes flipped
// all over the file. The checked format must reject each with a c10::Error naming the file, or
// (where the damaged bytes were irrelevant) reproduce the output exactly; nothing may crash.
template <typename Layer>
void check_checkpoint_in_second_process(torch::Device device, bool checked, size_t cases,
                                        bool flips) {
  seed_torch();
  const char* recipe = std::is_same_v<Layer, fp8nn::LinearFP8Global> ? "global" : "mixed";
  const char* mode = checked ? "checked" : "torch";
  CAPTURE(recipe, mode);
  const int64_t in = 40, out = 24;
  Layer layer(fp8nn::LinearFP8Options(in, out).group_size_in(16));
  layer->to(device);
  {
    torch::optim::SGD sgd(layer->parameters(), torch::optim::SGDOptions(0.1));
    layer(torch::randn({8, in}, device)).square().sum().backward();
    sgd.step();  // parameters no fresh initialisation would give
  }
  const auto x = torch::randn({3, 5, in}, device);
  const auto y = layer(x).detach();
  const auto checkpoint = temp_path("ckpt"), data = temp_path("data"),
             damaged = temp_path("damaged");
  if (checked) {
    fp8nn::save_checkpoint(*layer, checkpoint);
  } else {
    torch::save(layer, checkpoint);
  }
  torch::save(std::vector<torch::Tensor>{x, y}, data);
  const auto good = run_helper(mode, recipe, in, out, checkpoint, data);
  INFO(good.output);
  CHECK_FALSE(good.crashed);
  CHECK(good.status == 0);

  const auto bytes = read_bytes(checkpoint);
  REQUIRE(bytes.size() > 64);
  if (reduced_test_set()) cases = std::min<size_t>(cases, 4);
  std::vector<size_t> lengths = {0, 7, bytes.size() - 1, bytes.size() - 22};
  for (size_t i = 1; i < cases; ++i) lengths.push_back(bytes.size() * i / cases);
  for (const size_t length : lengths) {
    CAPTURE(length, bytes.size());
    write_bytes(damaged, bytes.substr(0, length));
    const auto outcome = run_helper(mode, recipe, in, out, damaged, data);
    INFO(outcome.output);
    CHECK_FALSE(outcome.crashed);
    CHECK(outcome.status == 2);
    CHECK(outcome.output.find(checked ? damaged : std::string("error:")) != std::string::npos);
  }
  // torch's reader does not verify its CRCs: only the checked format is held to flipped bytes.
  if (!checked || !flips) {
    std::remove(checkpoint.c_str());
    std::remove(data.c_str());
    std::remove(damaged.c_str());
    return;
  }
  int rejected = 0;
  const size_t flip_count = 2 * cases;
  for (size_t i = 0; i < flip_count; ++i) {
    const size_t position = (bytes.size() - 1) * i / (flip_count - 1);
    CAPTURE(position, bytes.size());
    auto flipped = bytes;
    flipped[position] = static_cast<char>(flipped[position] ^ 0x5a);
    write_bytes(damaged, flipped);
    const auto outcome = run_helper(mode, recipe, in, out, damaged, data);
    INFO(outcome.output);
    CHECK_FALSE(outcome.crashed);
    CHECK((outcome.status == 0 || outcome.status == 2));  // identical output, or a clear error
    if (outcome.status == 2) {
      ++rejected;
      CHECK(outcome.output.find(damaged) != std::string::npos);
    }
  }
  CHECK(rejected >= static_cast<int>(flip_count / 4));  // most of the file matters
  std::remove(checkpoint.c_str());
  std::remove(data.c_str());
  std::remove(damaged.c_str());
}

// In-process: a damaged file changes nothing of the module it was loaded into.
void check_failed_load_changes_nothing() {
  fp8nn::LinearFP8Mixed saved(40, 24), target(40, 24);
  const auto checkpoint = temp_path("ckpt"), damaged = temp_path("damaged");
  fp8nn::save_checkpoint(*saved, checkpoint);
  target(torch::randn({4, 40})).sum().backward();
  const auto before = snapshot(*target);
  const auto bytes = read_bytes(checkpoint);
  for (const size_t length : {size_t{0}, bytes.size() / 2, bytes.size() - 1}) {
    CAPTURE(length);
    write_bytes(damaged, bytes.substr(0, length));
    check_error<c10::Error>([&] { fp8nn::load_checkpoint(*target, damaged); },
                            {"fp8nn::load_checkpoint", damaged});
    CHECK(unchanged(*target, before));
  }
  // A checkpoint of another module (other shapes) is refused the same way.
  fp8nn::LinearFP8Mixed other(40, 16);
  check_error<c10::Error>([&] { fp8nn::load_checkpoint(*other, checkpoint); },
                          {"fp8nn::load_checkpoint", checkpoint});
  check_error<c10::Error>([&] { fp8nn::load_checkpoint(*target, "/nonexistent/ckpt.pt"); },
                          {"fp8nn::load_checkpoint", "/nonexistent/ckpt.pt"});
  CHECK(unchanged(*target, before));
  fp8nn::load_checkpoint(*target, checkpoint);
  CHECK(torch::equal(target->weight, saved->weight));
  std::remove(checkpoint.c_str());
  std::remove(damaged.c_str());
}

}  // namespace

TEST_CASE("two host threads training their own models concurrently match sequential runs") {
  check_concurrent_training(torch::kCPU, [](Job& job) { train(job); });
}

TEST_CASE("CUDA: two host threads, own streams, training concurrently match sequential runs") {
  FP8NN_SKIP_WITHOUT_CUDA();
#ifdef FP8NN_TEST_WITH_CUDA
  check_concurrent_training(torch::Device(torch::kCUDA, 0), [](Job& job) {
    const auto stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, 0);
    const c10::cuda::CUDAStreamGuard guard(stream);
    train(job);
    stream.synchronize();
  });
#endif
}

TEST_CASE("CUDA: a model on cuda:1 matches the emulation and leaves the current device alone") {
  FP8NN_SKIP_WITHOUT_CUDA();
  if (torch::cuda::device_count() < 2) FP8NN_SKIP_TEST("one CUDA device: cuda:1 needs a second");
#ifdef FP8NN_TEST_WITH_CUDA
  seed_torch();
  const torch::Device cuda1(torch::kCUDA, 1);
  const c10::cuda::CUDAGuard current(0);
  for (const auto recipe : {Recipe::Global, Recipe::Mixed}) {
    for (int64_t group : {int64_t{0}, int64_t{16}}) {
      CAPTURE(name_of(recipe), group);
      const auto run = run_layer(recipe_fn(recipe, group, group), {9, 80}, 40, torch::kBFloat16,
                                 torch::kFloat, true, cuda1);
      CHECK(run.y.device() == cuda1);
      CHECK(run.x.grad().device() == cuda1);
      CHECK(c10::cuda::current_device() == 0);
      check_recipe_matches(run, recipe, group, group);
    }
  }
  // A module trained on cuda:1 computes what its CPU copy computes, within the GPU bound.
  fp8nn::LinearFP8Mixed layer(64, 32);
  layer->to(cuda1);
  const auto x = torch::randn({7, 64});
  const auto on_gpu = layer(x.to(cuda1)).cpu();
  layer->to(torch::kCPU);
  const auto on_cpu = layer(x);
  const auto magnitude =
      x.abs().matmul(layer->weight.abs().t()) * (1.0 + 0x1p-3) + layer->bias.abs();
  const double bound = accumulation_relative(torch::kCUDA, 64, true) + kAccumulationRelative;
  CHECK(((on_gpu - on_cpu).abs() <= magnitude * bound + 1e-30).all().item<bool>());
#endif
}

TEST_CASE("torch::save, then torch::load in a second process: bit-identical, truncation an error") {
  check_checkpoint_in_second_process<fp8nn::LinearFP8Mixed>(torch::kCPU, false, 3, false);
}

TEST_CASE("save_checkpoint in a second process: bit-identical, damaged files a clear error") {
  // One recipe: the file format is the same for both (the CUDA test takes both).
  check_checkpoint_in_second_process<fp8nn::LinearFP8Global>(torch::kCPU, true, 4, true);
}

TEST_CASE("CUDA: save_checkpoint in a second process: bit-identical, damaged files an error") {
  FP8NN_SKIP_WITHOUT_CUDA();
  check_checkpoint_in_second_process<fp8nn::LinearFP8Global>(torch::kCUDA, true, 6, true);
  check_checkpoint_in_second_process<fp8nn::LinearFP8Mixed>(torch::kCUDA, true, 3, false);
  check_checkpoint_in_second_process<fp8nn::LinearFP8Mixed>(torch::kCUDA, false, 3, false);
}

TEST_CASE("a failed load_checkpoint leaves the module's parameters and gradients as they were") {
  check_failed_load_changes_nothing();
}

TEST_CASE("CUDA: 1,000 training steps do not grow device memory after warm-up") {
  FP8NN_SKIP_WITHOUT_CUDA();
#ifdef FP8NN_TEST_WITH_CUDA
  if (const char* off = std::getenv("PYTORCH_NO_CUDA_MEMORY_CACHING"); off && *off) {
    FP8NN_SKIP_TEST("PYTORCH_NO_CUDA_MEMORY_CACHING is set: no caching allocator statistics");
  }
  namespace allocator = c10::cuda::CUDACachingAllocator;
  constexpr auto kAggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const int steps = reduced_test_set() ? 60 : 1000, warm_up = 20;
  torch::manual_seed(7);
  torch::nn::Sequential model(fp8nn::LinearFP8Global(96, 256), torch::nn::GELU(),
                              fp8nn::LinearFP8Mixed(256, 128), torch::nn::GELU(),
                              fp8nn::LinearFP8Global(128, 10));
  model->to(torch::kCUDA);
  torch::optim::AdamW adamw(model->parameters(), torch::optim::AdamWOptions(1e-3));
  const auto inputs = torch::randn({64, 96}, torch::kCUDA);
  const auto labels =
      torch::randint(0, 10, {64}, torch::TensorOptions(torch::kLong).device(torch::kCUDA));
  int64_t allocated_after_warm_up = 0, reserved_after_warm_up = 0;
  for (int step = 0; step < steps; ++step) {
    adamw.zero_grad();
    const auto loss = torch::nn::functional::cross_entropy(model->forward(inputs), labels);
    loss.backward();
    adamw.step();
    if (step + 1 == warm_up || step + 1 == steps) {
      torch::cuda::synchronize();
      const auto stats = allocator::getDeviceStats(0);
      const int64_t allocated = stats.allocated_bytes[kAggregate].current;
      const int64_t reserved = stats.reserved_bytes[kAggregate].current;
      if (step + 1 == warm_up) {
        allocated_after_warm_up = allocated;
        reserved_after_warm_up = reserved;
      } else {
        CAPTURE(steps, allocated_after_warm_up, allocated, reserved_after_warm_up, reserved);
        CHECK(allocated == allocated_after_warm_up);
        CHECK(reserved <= reserved_after_warm_up);
        CHECK(std::isfinite(loss.item<double>()));
      }
    }
  }
#endif
}
