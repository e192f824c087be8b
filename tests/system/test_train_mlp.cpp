// examples/train_mlp on the CPU: every variant learns, the CSV and plot are written, and a run
// resumed from a checkpoint continues the same curve as an uninterrupted one.

#include "test_support.h"

#include <fstream>
#include <iterator>
#include <numeric>
#include <string>

#include "data.h"
#include "files.h"
#include "model.h"
#include "optimizer.h"
#include "report.h"
#include "train_mlp_fixture.h"
#include "trainer.h"

using namespace train_mlp;
using fp8nn::test::small_config;
using fp8nn::test::small_task;

namespace {

std::string scratch_dir(const std::string& name) {
  return make_temp_directory("fp8nn_test_" + name + "_");
}

double mean(const std::vector<double>& v, size_t begin, size_t end) {
  return std::accumulate(v.begin() + begin, v.begin() + end, 0.0) / double(end - begin);
}

torch::nn::Sequential small_mlp() { return fp8nn::test::small_mlp(3); }

}  // namespace

TEST_CASE("train_mlp: each variant's training loss falls on the CPU") {
  const auto base = small_mlp();
  for (auto kind : {LinearKind::HighPrecision, LinearKind::Global, LinearKind::Mixed,
                    LinearKind::GlobalDelayed, LinearKind::Blockwise}) {
    CAPTURE(name_of(kind));
    const auto run = train(with_linear(base, kind), name_of(kind), small_task(), small_config(120));
    REQUIRE(run.train_loss.size() == 120);
    const double first = mean(run.train_loss, 0, 10), last = mean(run.train_loss, 110, 120);
    CHECK(last < 0.8 * first);
    REQUIRE(run.evals.size() == 1);
    CHECK(run.evals[0].accuracy > 0.5);  // 4 classes: chance is 0.25
  }
}

TEST_CASE("train_mlp: FP8 variants convert the hidden layers, the 4-class head stays Linear") {
  const auto model = with_linear(small_mlp(), LinearKind::Global);
  std::ostringstream text;
  text << *model;
  CHECK(text.str().find("fp8nn::LinearFP8Global") != std::string::npos);
  CHECK(text.str().find("torch::nn::Linear(in_features=64, out_features=4") != std::string::npos);
  const auto delayed = with_linear(small_mlp(), LinearKind::GlobalDelayed);
  std::ostringstream delayed_text;
  delayed_text << *delayed;
  CHECK(delayed_text.str().find("recipe=Recipe::global_delayed(1024, 0)") != std::string::npos);
  CHECK(parse_linear_kind("global-delayed") == LinearKind::GlobalDelayed);
  const auto blockwise = with_linear(small_mlp(), LinearKind::Blockwise);
  std::ostringstream blockwise_text;
  blockwise_text << *blockwise;
  CHECK(blockwise_text.str().find("recipe=Recipe::blockwise()") != std::string::npos);
  CHECK(parse_linear_kind("blockwise") == LinearKind::Blockwise);
}

TEST_CASE("train_mlp: the loss CSV and the SVG plot are written") {
  const auto dir = scratch_dir("report");
  std::vector<RunResult> runs;
  for (auto kind : {LinearKind::HighPrecision, LinearKind::Mixed}) {
    runs.push_back(
        train(with_linear(small_mlp(), kind), name_of(kind), small_task(), small_config(20)));
  }
  const auto csv = write_curve_csv(dir, runs[1]);
  std::ifstream in(csv);
  std::string header;
  std::getline(in, header);
  CHECK(header == "step,train_loss,val_loss,val_accuracy");
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  CHECK(lines == 20);
  const auto svg_path = write_plot_svg(dir, runs);
  std::ifstream svg_in(svg_path);
  const std::string svg((std::istreambuf_iterator<char>(svg_in)), std::istreambuf_iterator<char>());
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  // bf16 and mixed overlaid in the first panel, mixed minus bf16 in the second.
  size_t polylines = 0;
  for (size_t at = svg.find("<polyline"); at != std::string::npos;
       at = svg.find("<polyline", at + 1)) {
    ++polylines;
  }
  CHECK(polylines == 3);
  remove_tree(dir);
}

// What --fp8-stats does: a monitor on every FP8 layer, its table appended every N steps, written
// as a CSV and an SVG.
TEST_CASE("train_mlp: FP8 numerics statistics are recorded every N steps and written") {
  const auto dir = scratch_dir("fp8_stats");
  auto model = with_linear(small_mlp(), LinearKind::Global);
  const int64_t layers = fp8nn::enable_numerics(*model, fp8nn::NumericsOptions().error_every(5));
  REQUIRE(layers > 0);
  std::vector<Fp8StatsRow> rows;
  auto config = small_config(20);
  config.after_step = [&](int64_t step, torch::nn::Sequential& trained) {
    if (step % 5 == 0) append_fp8_stats("global", step, *trained, rows);
  };
  train(model, "global", small_task(), config);
  // 4 records of 6 rows a layer (x, weight, grad_output, then the three products).
  REQUIRE(static_cast<int64_t>(rows.size()) == 4 * 6 * layers);
  for (const auto& row : rows) {
    CAPTURE(row.step, row.layer, row.tensor);
    if (row.tensor == "x" || row.tensor == "weight" || row.tensor == "grad_output") {
      CHECK(row.numel > 0);
      CHECK(row.amax > 0);
      CHECK(row.scale_min <= row.scale_max);
      CHECK(row.saturated_fraction >= 0);
      CHECK(row.underflow_fraction >= 0);
      CHECK(row.underflow_fraction <= 1);
    } else if (row.tensor != "grad_input" || row.layer != "0") {
      CHECK(row.relative_error > 0);  // the first layer computes no input gradient
      CHECK(row.relative_error < 0.2);
    }
  }
  std::ifstream csv(write_fp8_stats_csv(dir, rows));
  std::string header;
  std::getline(csv, header);
  CHECK(header ==
        "variant,step,layer,tensor,numel,amax,scale_min,scale_max,saturated_fraction,"
        "underflow_fraction,relative_error");
  int lines = 0;
  for (std::string line; std::getline(csv, line);) ++lines;
  CHECK(lines == static_cast<int>(rows.size()));
  std::ifstream svg_in(write_fp8_stats_svg(dir, rows));
  const std::string svg((std::istreambuf_iterator<char>(svg_in)), std::istreambuf_iterator<char>());
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("<polyline") != std::string::npos);
  remove_tree(dir);
}

TEST_CASE("train_mlp: train 2N steps == train N, save, resume N more") {
  const auto dir = scratch_dir("resume");
  const auto checkpoint = join_path(dir, "ck.pt");
  const std::pair<LinearKind, OptimizerKind> cases[] = {
      {LinearKind::Global, OptimizerKind::AdamW},
      {LinearKind::Mixed, OptimizerKind::AdamW},
      {LinearKind::Global, OptimizerKind::FusedAdamW}};
  for (const auto& [kind, optimizer] : cases) {
    CAPTURE(name_of(kind), name_of(optimizer));
    auto whole_config = small_config(40);
    whole_config.optimizer = optimizer;
    const auto whole = train(with_linear(small_mlp(), kind), "whole", small_task(), whole_config);
    auto first_half = small_config(20);
    first_half.optimizer = optimizer;
    first_half.save = checkpoint;
    train(with_linear(small_mlp(), kind), "first", small_task(), first_half);
    auto second_half = small_config(40);
    second_half.optimizer = optimizer;
    second_half.resume = checkpoint;
    // A differently initialised model: everything must come from the checkpoint.
    torch::manual_seed(999);
    const auto resumed =
        train(with_linear(small_mlp(), kind), "resumed", small_task(), second_half);
    REQUIRE(resumed.train_loss.size() == whole.train_loss.size());
    for (size_t i = 0; i < whole.train_loss.size(); ++i) {
      CAPTURE(i);
      CHECK(resumed.train_loss[i] == whole.train_loss[i]);
    }
  }
  remove_tree(dir);
}

TEST_CASE("train_mlp: a truncated checkpoint is a clear error") {
  const auto dir = scratch_dir("bad_checkpoint");
  const auto path = join_path(dir, "broken.pt");
  std::ofstream(path) << "not a checkpoint";
  auto config = small_config(10);
  config.resume = path;
  try {
    train(with_linear(small_mlp(), LinearKind::Global), "x", small_task(), config);
    FAIL("expected an error");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("broken.pt") != std::string::npos);
  }
  remove_tree(dir);
}

namespace {

// Runs `steps` AdamW steps of `kind` on a copy of `params` with fixed random gradients; returns
// the parameters after them.
std::vector<torch::Tensor> adamw_steps(OptimizerKind kind, const std::vector<torch::Tensor>& start,
                                       const std::vector<std::vector<torch::Tensor>>& grads) {
  std::vector<torch::Tensor> params;
  for (const auto& p : start) params.push_back(p.detach().clone().requires_grad_(true));
  auto optimizer = make_optimizer(kind, params, /*lr=*/1e-2, /*weight_decay=*/0.05);
  for (const auto& step_grads : grads) {
    for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = step_grads[i].clone();
    optimizer->step();
  }
  return params;
}

void check_fused_matches_adamw(const torch::Device& device) {
  fp8nn::test::seed_torch();
  const auto on = torch::TensorOptions().device(device);
  const std::vector<torch::Tensor> start = {torch::randn({37, 19}, on), torch::randn({19}, on),
                                            torch::randn({5, 3, 2}, on)};
  std::vector<std::vector<torch::Tensor>> grads(12);
  for (auto& step : grads) {
    for (const auto& p : start) step.push_back(torch::randn_like(p) * 0.3);
  }
  const auto reference = adamw_steps(OptimizerKind::AdamW, start, grads);
  const auto fused = adamw_steps(OptimizerKind::FusedAdamW, start, grads);
  for (size_t i = 0; i < start.size(); ++i) {
    CAPTURE(i);
    // Both compute AdamW in fp32; only the order of a few operations differs.
    constexpr double kFp32OrderTolerance = 1e-5;
    const double moved = (reference[i] - start[i]).abs().max().item<double>();
    CHECK(moved > 1e-2);  // the steps did move the parameters
    CHECK(torch::allclose(fused[i], reference[i], kFp32OrderTolerance, kFp32OrderTolerance));
  }
}

}  // namespace

FP8NN_CPU_AND_CUDA_CASE("train_mlp: FusedAdamW takes the same steps as torch::optim::AdamW (fp32)",
                        check_fused_matches_adamw)

TEST_CASE("train_mlp: a torch::optim::AdamW checkpoint continues under FusedAdamW") {
  // Same state layout: 20 steps of AdamW, saved, 20 more fused == 20 + 20 AdamW within fp32.
  const auto dir = scratch_dir("optimizer_switch");
  const auto checkpoint = join_path(dir, "ck.pt");
  const auto whole = train(with_linear(small_mlp(), LinearKind::HighPrecision), "whole",
                           small_task(), small_config(40));
  auto first_half = small_config(20);
  first_half.save = checkpoint;
  train(with_linear(small_mlp(), LinearKind::HighPrecision), "first", small_task(), first_half);
  auto second_half = small_config(40);
  second_half.resume = checkpoint;
  second_half.optimizer = OptimizerKind::FusedAdamW;
  const auto resumed = train(with_linear(small_mlp(), LinearKind::HighPrecision), "resumed",
                             small_task(), second_half);
  REQUIRE(resumed.train_loss.size() == 40);
  for (size_t i = 0; i < 20; ++i) CHECK(resumed.train_loss[i] == whole.train_loss[i]);
  // Had the step counts restarted at 0, the bias correction would change the first steps a lot.
  for (size_t i = 20; i < 40; ++i) {
    CAPTURE(i);
    CHECK(std::abs(resumed.train_loss[i] - whole.train_loss[i]) <=
          1e-4 * whole.train_loss[i] + 1e-5);
  }
  remove_tree(dir);
}

TEST_CASE("train_mlp: the synthetic task drawn on the GPU is reproducible and learnable") {
  FP8NN_SKIP_WITHOUT_CUDA();
  const auto a = make_synthetic(32, 4, 4096, 512, 7, torch::kCUDA);
  const auto b = make_synthetic(32, 4, 4096, 512, 7, torch::kCUDA);
  CHECK(a.train_x.is_cuda());
  CHECK(torch::equal(a.train_x, b.train_x));
  CHECK(torch::equal(a.train_y, b.train_y));
  const auto counts = torch::bincount(a.train_y, {}, 4).cpu();
  for (int64_t c = 0; c < 4; ++c) CHECK(counts[c].item<int64_t>() > 4096 / 20);  // every class
  auto config = small_config(120);
  config.device = torch::kCUDA;
  config.optimizer = OptimizerKind::FusedAdamW;
  const auto run = train(with_linear(small_mlp(), LinearKind::Global), "global", a, config);
  CHECK(mean(run.train_loss, 110, 120) < 0.8 * mean(run.train_loss, 0, 10));
  CHECK(run.evals.at(0).accuracy > 0.5);
}

namespace {

// train() with `config` throws std::invalid_argument whose message contains `expected`.
void check_refused(const TrainConfig& config, const std::string& expected) {
  try {
    train(with_linear(small_mlp(), LinearKind::Global), "x", small_task(), config);
    FAIL("expected an error");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find(expected) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("train_mlp: --cuda-graph is refused on the CPU") {
  auto config = small_config(10);
  config.cuda_graph = true;
  config.optimizer = OptimizerKind::FusedAdamW;
  check_refused(config, "--cuda-graph: expected a CUDA device");
}

TEST_CASE("train_mlp: --cuda-graph is refused without the fused optimizer") {
  FP8NN_SKIP_WITHOUT_CUDA();
  auto config = small_config(10);
  config.cuda_graph = true;
  config.device = torch::kCUDA;
  config.optimizer = OptimizerKind::AdamW;
  check_refused(config, "expected --optimizer fused");
}

TEST_CASE("train_mlp: steps replayed from a CUDA graph equal eager steps, and checkpoint") {
  FP8NN_SKIP_WITHOUT_CUDA();
  const auto dir = scratch_dir("graph");
  const auto checkpoint = join_path(dir, "graph.pt");
  const auto data = make_synthetic(32, 4, 4096, 512, 7, torch::kCUDA);
  for (auto kind : {LinearKind::HighPrecision, LinearKind::Global, LinearKind::Mixed}) {
    CAPTURE(name_of(kind));
    auto config = small_config(30);
    config.device = torch::kCUDA;
    config.optimizer = OptimizerKind::FusedAdamW;
    config.eval_every = 10;  // evaluations between replays read the current weights
    // The parameters after the last step, cloned on the stream the step ran on.
    std::vector<torch::Tensor> final_parameters;
    config.after_step = [&](int64_t step, torch::nn::Sequential& model) {
      if (step != config.steps) return;
      final_parameters.clear();
      for (const auto& p : model->parameters()) final_parameters.push_back(p.detach().clone());
    };
    const auto eager = train(with_linear(small_mlp(), kind), "eager", data, config);
    const auto eager_parameters = final_parameters;
    config.cuda_graph = true;
    config.save = checkpoint;
    const auto graphed = train(with_linear(small_mlp(), kind), "graphed", data, config);
    config.after_step = nullptr;
    // A replay runs the kernels the eager step launched, with the same arguments on the same
    // data, so every step is bit-identical to eager (README.md says so): no tolerance. Losses are
    // compared as fp64 tensors, which torch::equal compares element by element.
    REQUIRE(graphed.train_loss.size() == eager.train_loss.size());
    const auto as_tensor = [](const std::vector<double>& v) {
      return torch::tensor(at::ArrayRef<double>(v), torch::kDouble);
    };
    size_t first_difference = 0;
    while (first_difference < eager.train_loss.size() &&
           graphed.train_loss[first_difference] == eager.train_loss[first_difference]) {
      ++first_difference;
    }
    INFO("losses equal up to step " << first_difference << " of " << eager.train_loss.size());
    CHECK(torch::equal(as_tensor(graphed.train_loss), as_tensor(eager.train_loss)));
    REQUIRE(final_parameters.size() == eager_parameters.size());
    REQUIRE(!final_parameters.empty());
    for (size_t p = 0; p < eager_parameters.size(); ++p) {
      CAPTURE(p);
      CHECK(torch::equal(final_parameters[p], eager_parameters[p]));
    }
    REQUIRE(graphed.evals.size() == eager.evals.size());
    for (size_t e = 0; e < eager.evals.size(); ++e) {
      CAPTURE(e);  // stale FP8 weight copies would show here
      CHECK(std::abs(graphed.evals[e].loss - eager.evals[e].loss) <= 1e-4 * eager.evals[e].loss);
    }
    // The checkpoint of the graphed run counts every step, the replayed ones included (AdamW's
    // bias correction depends on it), and continues like the eager run.
    {
      auto model = with_linear(small_mlp(), kind);
      model->to(torch::kCUDA);
      torch::optim::AdamW reader(model->parameters());
      torch::serialize::InputArchive archive, optimizer_archive;
      archive.load_from(checkpoint, torch::kCUDA);
      archive.read("optimizer", optimizer_archive);
      reader.load(optimizer_archive);
      REQUIRE(!reader.state().empty());
      for (const auto& [key, state] : reader.state()) {
        CHECK(static_cast<const torch::optim::AdamWParamState&>(*state).step() == 30);
      }
    }
    auto more = config;
    more.steps = 40;
    more.cuda_graph = false;
    more.save.clear();
    more.resume = checkpoint;
    const auto resumed = train(with_linear(small_mlp(), kind), "resumed", data, more);
    auto whole_config = config;
    whole_config.steps = 40;
    whole_config.cuda_graph = false;
    whole_config.save.clear();
    const auto whole = train(with_linear(small_mlp(), kind), "whole", data, whole_config);
    for (size_t i = 30; i < 40; ++i) {
      CAPTURE(i);
      CHECK(std::abs(resumed.train_loss[i] - whole.train_loss[i]) <= 1e-4 * whole.train_loss[i]);
    }
  }
  remove_tree(dir);
}
