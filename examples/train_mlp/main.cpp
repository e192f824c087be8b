// train_mlp: trains an MLP with torch::nn::Linear ("bf16") or fp8nn's FP8 layers and compares
// them. By default on a built-in synthetic task, on the GPU when there is one.
//   train_mlp                         # all three variants, comparison table, CSVs and a plot
//   train_mlp --linear global --width 4096 --depth 4 --batch 8192 --steps 500
//   train_mlp --data mnist_dir/ | --data table.csv
//   train_mlp --linear mixed --steps 200 --save ck.pt ; train_mlp --linear mixed --steps 400 --resume ck.pt
//   bash scripts/launch 2 -- --linear global --sync-amax   # 2 processes (data parallel); by hand:
//   train_mlp --world-size 2 --rank R --master-addr A --master-port P, or torchrun's RANK, ...

#include <cxxopts.hpp>
#include <fp8nn/numerics.h>
#include <fp8nn/scaled_mm.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <stdexcept>

#include "data.h"
#include "distributed.h"
#include "model.h"
#include "report.h"
#include "trainer.h"

#ifdef __unix__
#include <unistd.h>
#endif

using namespace train_mlp;

namespace {

cxxopts::Options make_options() {
  cxxopts::Options options("train_mlp",
                           "Trains an MLP with torch::nn::Linear or fp8nn's FP8 layers and compares "
                           "loss, accuracy, speed and memory.");
  options.add_options()
      ("linear", "bf16 (torch::nn::Linear in the parameter dtype), global (fp8nn::LinearFP8Global), "
                 "mixed (fp8nn::LinearFP8Mixed), global-delayed (fp8nn::LinearFP8 with delayed "
                 "scaling), blockwise (fp8nn::LinearFP8 with Recipe::blockwise()), "
                 "or all (bf16, global and mixed): each from the same initial weights and "
                 "batches, then a comparison table", cxxopts::value<std::string>()->default_value("all"))
      ("device", "auto (cuda when available), cpu, cuda or cuda:N",
       cxxopts::value<std::string>()->default_value("auto"))
      ("dtype", "parameter/activation dtype: auto (bf16 on cuda, fp32 on cpu), fp32 or bf16",
       cxxopts::value<std::string>()->default_value("auto"))
      ("depth", "number of Linear layers", cxxopts::value<int64_t>()->default_value("4"))
      ("width", "hidden width", cxxopts::value<int64_t>()->default_value("256"))
      ("activation", "relu, gelu, tanh or silu", cxxopts::value<std::string>()->default_value("gelu"))
      ("data", "CSV file (features..., integer label; optional header) or a folder with MNIST IDX "
               "files; default: the built-in synthetic task", cxxopts::value<std::string>())
      ("features", "synthetic task: input features", cxxopts::value<int64_t>()->default_value("64"))
      ("classes", "synthetic task: classes", cxxopts::value<int64_t>()->default_value("10"))
      ("train-size", "synthetic task: training rows (generated on the training device)", cxxopts::value<int64_t>()->default_value("32768"))
      ("val-size", "synthetic task: validation rows", cxxopts::value<int64_t>()->default_value("4096"))
      ("val-fraction", "CSV data: fraction held out for validation",
       cxxopts::value<double>()->default_value("0.2"))
      ("steps", "total optimizer steps", cxxopts::value<int64_t>()->default_value("300"))
      ("batch", "rows per step", cxxopts::value<int64_t>()->default_value("256"))
      ("optimizer", "fused: AdamW in one fused pass per step (at::_fused_adamw_, Python's "
                    "AdamW(fused=True)); adamw: torch::optim::AdamW (about ten passes)",
       cxxopts::value<std::string>()->default_value("fused"))
      ("cuda-graph", "on the GPU (one process, --optimizer fused): after 5 warm-up steps, capture "
                     "one training step in a CUDA graph and replay it for the rest")
      ("lr", "AdamW learning rate", cxxopts::value<double>()->default_value("0.001"))
      ("weight-decay", "AdamW weight decay", cxxopts::value<double>()->default_value("0.01"))
      ("eval-every", "validate every N steps (and at the end)",
       cxxopts::value<int64_t>()->default_value("100"))
      ("log-every", "progress every N steps", cxxopts::value<int64_t>()->default_value("25"))
      ("seed", "seed of the data, the initial weights and the batch order",
       cxxopts::value<uint64_t>()->default_value("0"))
      ("out", "folder for loss_<variant>.csv and loss_curves.svg",
       cxxopts::value<std::string>()->default_value("train_mlp_out"))
      ("fp8-stats", "every N steps, record each FP8 layer's numerics (amax, scale range, saturated "
                    "and underflow fractions of x, weight and grad_output; the products' relative "
                    "error against fp32, measured every N steps from step 1) into "
                    "<out>/fp8_stats.csv and fp8_stats.svg; 0: off. Each record waits for the GPU",
       cxxopts::value<int64_t>()->default_value("0"))
      ("save", "write a checkpoint (model, optimizer, step, RNG, curve) at the end (one variant)",
       cxxopts::value<std::string>())
      ("resume", "continue from a checkpoint written by --save, up to --steps (one variant)",
       cxxopts::value<std::string>())
      ("gemm-autotune", "on the GPU, time cuBLASLt's candidate FP8 GEMM algorithms once per shape "
       "and keep the fastest (fp8nn::functional::set_gemm_autotuning); --gemm-autotune=false: "
       "the heuristic's choice",
       cxxopts::value<bool>()->default_value("true"))
      ("progress", "auto (a bar on a terminal, lines otherwise), bar, lines or none",
       cxxopts::value<std::string>()->default_value("auto"))
      ("world-size", "data parallelism over this many processes, each training on its share of "
                     "every batch (default: $WORLD_SIZE; without either, one process and no "
                     "process group)", cxxopts::value<int>())
      ("rank", "this process's rank in 0..world-size-1 (default: $RANK)", cxxopts::value<int>())
      ("local-rank", "rank on this machine, picks the GPU (default: $LOCAL_RANK, else --rank)",
       cxxopts::value<int>())
      ("master-addr", "host of rank 0's rendezvous store (default: $MASTER_ADDR, else 127.0.0.1)",
       cxxopts::value<std::string>())
      ("master-port", "its port (default: $MASTER_PORT, else 29500)", cxxopts::value<int>())
      ("sync-amax", "with several processes: FP8 layers all-reduce their per-tensor amaxes so "
                    "that every rank uses one scale")
      ("bucket-mb", "with several processes: MiB of gradients per all-reduce bucket",
       cxxopts::value<double>()->default_value("25"))
      ("h,help", "show this help");
  return options;
}

// Several processes: the flags, else torchrun's environment variables. nullopt: one process.
std::optional<DistributedSetup> pick_distributed(const cxxopts::ParseResult& args) {
  const auto from = [&](const char* flag, const char* variable) -> std::optional<std::string> {
    if (args.count(flag)) return args[flag].as<std::string>();
    const char* value = std::getenv(variable);
    if (value != nullptr && *value != '\0') return std::string(value);
    return std::nullopt;
  };
  const auto number = [&](const char* flag, const char* variable) -> std::optional<int> {
    if (args.count(flag)) return args[flag].as<int>();
    const auto text = from(flag, variable);
    if (!text) return std::nullopt;
    try {
      size_t used = 0;
      const int value = std::stoi(*text, &used);
      if (used == text->size()) return value;
    } catch (const std::exception&) {
    }
    throw std::invalid_argument(fmt::format("${}: expected an integer, got '{}'", variable, *text));
  };
  const auto world_size = number("world-size", "WORLD_SIZE");
  if (!world_size) return std::nullopt;
  DistributedSetup setup;
  setup.world_size = *world_size;
  const auto rank = number("rank", "RANK");
  if (!rank) throw std::invalid_argument("--world-size: expected --rank (or $RANK) as well");
  setup.rank = *rank;
  setup.local_rank = number("local-rank", "LOCAL_RANK").value_or(setup.rank);
  setup.master_addr = from("master-addr", "MASTER_ADDR").value_or("127.0.0.1");
  setup.master_port = number("master-port", "MASTER_PORT").value_or(29500);
  if (setup.world_size < 1 || setup.rank < 0 || setup.rank >= setup.world_size) {
    throw std::invalid_argument(fmt::format("--rank {}: expected 0 <= rank < world size {}",
                                            setup.rank, setup.world_size));
  }
  return setup;
}

torch::Device pick_device(const std::string& name, const std::optional<DistributedSetup>& setup) {
  // Several processes on one machine: each takes the GPU of its local rank.
  if (setup && (name == "auto" || name == "cuda") && torch::cuda::is_available()) {
    const auto gpus = static_cast<int>(torch::cuda::device_count());
    if (setup->local_rank >= gpus) {
      throw std::runtime_error(fmt::format("local rank {} needs GPU {}, but {} GPU(s) are visible",
                                           setup->local_rank, setup->local_rank, gpus));
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(setup->local_rank));
  }
  if (name == "auto") return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  torch::Device device(name);  // throws c10::Error on a bad name
  if (device.is_cuda() && !torch::cuda::is_available()) {
    throw std::runtime_error("--device " + name + ": no CUDA device is available");
  }
  return device;
}

torch::ScalarType pick_dtype(const std::string& name, const torch::Device& device) {
  if (name == "auto") return device.is_cuda() ? torch::kBFloat16 : torch::kFloat;
  if (name == "fp32") return torch::kFloat;
  if (name == "bf16") return torch::kBFloat16;
  throw std::invalid_argument("--dtype: expected auto, fp32 or bf16, got '" + name + "'");
}

Progress pick_progress(const std::string& name) {
  if (name == "auto") {
#ifdef __unix__
    return isatty(fileno(stdout)) ? Progress::Bar : Progress::Lines;
#else
    return Progress::Lines;
#endif
  }
  if (name == "bar") return Progress::Bar;
  if (name == "lines") return Progress::Lines;
  if (name == "none") return Progress::Quiet;
  throw std::invalid_argument("--progress: expected auto, bar, lines or none, got '" + name + "'");
}

void require_positive(const cxxopts::ParseResult& args, const char* name) {
  if (args[name].as<int64_t>() <= 0) {
    throw std::invalid_argument(fmt::format("--{}: expected a positive number, got {}", name,
                                            args[name].as<int64_t>()));
  }
}

int run(int argc, char** argv) {
  auto options = make_options();
  const auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << std::endl;
    return 0;
  }
  if (!args.unmatched().empty()) {
    throw std::invalid_argument("unexpected argument '" + args.unmatched().front() + "'");
  }
  for (const char* name : {"depth", "width", "steps", "batch", "log-every", "features", "classes",
                           "train-size", "val-size"}) {
    require_positive(args, name);
  }
  const std::string linear = args["linear"].as<std::string>();
  std::vector<LinearKind> kinds;
  if (linear == "all") {
    kinds = {LinearKind::HighPrecision, LinearKind::Global, LinearKind::Mixed};
  } else {
    kinds = {parse_linear_kind(linear)};
  }
  if ((args.count("save") || args.count("resume")) && kinds.size() != 1) {
    throw std::invalid_argument("--save/--resume: expected a single --linear variant, got 'all'");
  }

  const auto distributed = pick_distributed(args);
  TrainConfig config;
  config.device = pick_device(args["device"].as<std::string>(), distributed);
  config.dtype = pick_dtype(args["dtype"].as<std::string>(), config.device);
  config.steps = args["steps"].as<int64_t>();
  config.batch = args["batch"].as<int64_t>();
  config.lr = args["lr"].as<double>();
  config.weight_decay = args["weight-decay"].as<double>();
  config.optimizer = parse_optimizer_kind(args["optimizer"].as<std::string>());
  config.cuda_graph = args.count("cuda-graph") > 0;
  config.eval_every = args["eval-every"].as<int64_t>();
  config.log_every = args["log-every"].as<int64_t>();
  config.seed = args["seed"].as<uint64_t>();
  config.progress = pick_progress(args["progress"].as<std::string>());
  fp8nn::functional::set_gemm_autotuning(config.device.is_cuda() &&
                                         args["gemm-autotune"].as<bool>());
  if (args.count("save")) config.save = args["save"].as<std::string>();
  if (args.count("resume")) config.resume = args["resume"].as<std::string>();
  if (distributed) {
    config.group = make_process_group(*distributed, config.device);
    config.sync_amax = args.count("sync-amax") > 0;
    const double bucket_mb = args["bucket-mb"].as<double>();
    if (!(bucket_mb > 0)) {
      throw std::invalid_argument(
          fmt::format("--bucket-mb: expected a positive size, got {}", bucket_mb));
    }
    config.bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
  } else if (args.count("sync-amax")) {
    throw std::invalid_argument("--sync-amax: expected several processes (--world-size)");
  }
  const bool main_rank = !distributed || distributed->rank == 0;

  const Dataset data =
      args.count("data")
          ? load_dataset(args["data"].as<std::string>(), args["val-fraction"].as<double>(),
                         config.seed)
          : make_synthetic(args["features"].as<int64_t>(), args["classes"].as<int64_t>(),
                           args["train-size"].as<int64_t>(), args["val-size"].as<int64_t>(),
                           config.seed, config.device);
  MlpShape shape;
  shape.features = data.train_x.size(1);
  shape.classes = data.classes;
  shape.width = args["width"].as<int64_t>();
  shape.depth = args["depth"].as<int64_t>();
  shape.activation = args["activation"].as<std::string>();

  if (main_rank) {
    fmt::print("data: {}; {} train / {} val rows\n", data.description, data.train_x.size(0),
               data.val_x.size(0));
    fmt::print("model: {} Linear layers, width {}, {}; device {}, dtype {}; {} steps of {} rows, "
               "optimizer {}{}\n",
               shape.depth, shape.width, shape.activation, config.device.str(),
               c10::toString(config.dtype), config.steps, config.batch, name_of(config.optimizer),
               config.cuda_graph ? ", steps replayed from a CUDA graph" : "");
    if (distributed) {
      fmt::print("processes: {} ({}), {} rows each per step{}\n", distributed->world_size,
                 config.device.is_cuda() ? "nccl" : "gloo",
                 config.batch / distributed->world_size,
                 config.sync_amax ? ", FP8 amaxes shared" : "");
    }
  }
  torch::manual_seed(config.seed);
  const auto base = make_mlp(shape);  // one initialisation shared by every variant

  const int64_t stats_every = args["fp8-stats"].as<int64_t>();
  if (stats_every < 0) {
    throw std::invalid_argument(
        fmt::format("--fp8-stats: expected a number of steps >= 0, got {}", stats_every));
  }
  std::vector<RunResult> runs;
  std::vector<Fp8StatsRow> fp8_stats;
  const std::string out_dir = args["out"].as<std::string>();
  for (auto kind : kinds) {
    auto model = with_linear(base, kind);
    TrainConfig run_config = config;
    const std::string variant = name_of(kind);
    const bool monitored = stats_every > 0 && kind != LinearKind::HighPrecision;
    if (monitored) {
      fp8nn::enable_numerics(*model, fp8nn::NumericsOptions().error_every(stats_every));
      run_config.after_step = [&, variant](int64_t step, torch::nn::Sequential& trained) {
        if (config.after_step) config.after_step(step, trained);
        if (main_rank && (step % stats_every == 0 || step == config.steps)) {
          append_fp8_stats(variant, step, *trained, fp8_stats);
        }
      };
    }
    runs.push_back(train(model, variant, data, run_config));
    if (main_rank) fmt::print("wrote {}\n", write_curve_csv(out_dir, runs.back()));
    if (main_rank && monitored) {
      fmt::print("{} numerics after the last step (evaluation included):\n", variant);
      for (const auto& row : fp8nn::numerics_table(*model)) std::cout << "  " << row << "\n";
    }
  }
  if (main_rank) {
    print_table(runs, config.batch);
    fmt::print("plot: {}\n", write_plot_svg(out_dir, runs));
    if (stats_every > 0) {
      fmt::print("fp8 stats: {} and {}\n", write_fp8_stats_csv(out_dir, fp8_stats),
                 write_fp8_stats_svg(out_dir, fp8_stats));
    }
    if (!config.save.empty()) fmt::print("checkpoint: {}\n", config.save);
  }
  shutdown(config.group);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const c10::Error& e) {
    std::cerr << "train_mlp: error: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "train_mlp: error: " << e.what() << "\n(run train_mlp --help for the flags)\n";
  }
  return 2;
}
