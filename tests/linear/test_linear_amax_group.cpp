// LinearFP8Options::amax_group: two data-parallel ranks (threads of this process, Gloo over
// loopback) quantize with the scale of their combined amax when the option is on, with their own
// when it is off (the default).

#include "test_support.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fp8nn/fp8nn.h>

#include <array>

#include "gloo_ranks.h"
#include "tolerance.h"

using namespace fp8nn;
using namespace fp8nn::test;

namespace {

constexpr int kRanks = 2;

struct RankResult {
  torch::Tensor y, dx, dw;
};

// Each rank's batch: same shape, rank 1's values 5x larger, so the ranks' amaxes differ.
torch::Tensor batch_of(int rank, int64_t rows, int64_t cols, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed + rank);
  return torch::randn({rows, cols}, generator) * (rank == 0 ? 1.0 : 5.0);
}

std::array<RankResult, kRanks> run_global(bool with_group, const torch::Tensor& weight,
                                          const torch::Tensor& bias, int64_t rows) {
  std::array<RankResult, kRanks> results;
  run_on_gloo_ranks(kRanks, with_group, [&](int rank, const ProcessGroupRef& group) {
    LinearFP8Global layer(LinearFP8Options(weight.size(1), weight.size(0)).amax_group(group));
    {
      torch::NoGradGuard no_grad;
      layer->weight.copy_(weight);
      layer->bias.copy_(bias);
    }
    const auto x = batch_of(rank, rows, weight.size(1), 100).requires_grad_(true);
    const auto dy = batch_of(rank, rows, weight.size(0), 200);
    const auto y = layer(x);
    y.backward(dy);
    results[rank] = {y.detach(), x.grad(), layer->weight.grad()};
  });
  return results;
}

// The oracle's Global layer on both ranks' batches (x seeds 100, dy seeds 200) as one batch.
LinearReference combined_batch_reference(const torch::Tensor& weight, const torch::Tensor& bias,
                                         int64_t rows) {
  const int64_t out = weight.size(0), in = weight.size(1);
  const auto x_all = torch::cat({batch_of(0, rows, in, 100), batch_of(1, rows, in, 100)});
  const auto dy_all = torch::cat({batch_of(0, rows, out, 200), batch_of(1, rows, out, 200)});
  return emulate_global(x_all, weight, bias, dy_all);
}

}  // namespace

TEST_CASE("amax_group: Global ranks quantize x, W and dy with the combined batch's scales") {
  const int64_t rows = 24, in = 48, out = 40;
  torch::manual_seed(5);
  const auto weight = torch::randn({out, in}) * 0.1, bias = torch::randn({out});
  const auto results = run_global(/*with_group=*/true, weight, bias, rows);
  // One process with both ranks' rows: every amax is the max over the ranks.
  const auto ref = combined_batch_reference(weight, bias, rows);
  for (int rank = 0; rank < kRanks; ++rank) {
    CAPTURE(rank);
    const auto part = [&](const Reference& r) {
      return Reference{r.value.narrow(0, rank * rows, rows),
                       r.magnitude.narrow(0, rank * rows, rows)};
    };
    REQUIRE(tolerance_ratio(results[rank].y, part(ref.y), torch::kFloat) <= 1.0);
    REQUIRE(tolerance_ratio(results[rank].dx, part(ref.dx), torch::kFloat) <= 1.0);
  }
  // The ranks' weight gradients add up to the combined batch's (what data parallelism averages).
  REQUIRE(tolerance_ratio(results[0].dw + results[1].dw, ref.dw, torch::kFloat) <= 1.0);
}

TEST_CASE("amax_group: off by default, each Global rank scales by its own amaxes") {
  const int64_t rows = 24, in = 48, out = 40;
  torch::manual_seed(6);
  const auto weight = torch::randn({out, in}) * 0.1, bias = torch::randn({out});
  CHECK_FALSE(static_cast<bool>(LinearFP8Options(in, out).amax_group()));
  const auto results = run_global(/*with_group=*/false, weight, bias, rows);
  const auto combined = combined_batch_reference(weight, bias, rows);
  for (int rank = 0; rank < kRanks; ++rank) {
    CAPTURE(rank);
    const auto own =
        emulate_global(batch_of(rank, rows, in, 100), weight, bias, batch_of(rank, rows, out, 200));
    REQUIRE(tolerance_ratio(results[rank].y, own.y, torch::kFloat) <= 1.0);
    REQUIRE(tolerance_ratio(results[rank].dx, own.dx, torch::kFloat) <= 1.0);
  }
  // Rank 0's amaxes are 5x smaller than the combined ones: its FP8 copies round differently.
  const Reference rank0_part{combined.y.value.narrow(0, 0, rows),
                             combined.y.magnitude.narrow(0, 0, rows)};
  REQUIRE(tolerance_ratio(results[0].y, rank0_part, torch::kFloat) > 10.0);
}

TEST_CASE("amax_group: Mixed ranks with different weights share the weight's scale") {
  const int64_t rows = 16, in = 64, out = 32;
  const int64_t G_in = default_group_size(in), G_out = default_group_size(out);
  std::array<torch::Tensor, kRanks> weights{batch_of(0, out, in, 300) * 0.1,
                                            batch_of(1, out, in, 300) * 0.1};
  std::array<RankResult, kRanks> results;
  run_on_gloo_ranks(kRanks, true, [&](int rank, const ProcessGroupRef& group) {
    LinearFP8Mixed layer(LinearFP8Options(in, out).bias(false).amax_group(group));
    {
      torch::NoGradGuard no_grad;
      layer->weight.copy_(weights[rank]);
    }
    const auto x = batch_of(rank, rows, in, 400).requires_grad_(true);
    const auto y = layer(x);
    y.backward(batch_of(rank, rows, out, 500));
    results[rank] = {y.detach(), x.grad(), layer->weight.grad()};
  });
  for (int rank = 0; rank < kRanks; ++rank) {
    CAPTURE(rank);
    // W quantized with the amax of both ranks' weights: per-tensor over their concatenation.
    const auto wq = fake_quantize(torch::cat({weights[rank], weights[1 - rank]}), Fp8::E4M3, 0)
                        .narrow(0, 0, out);
    const auto xq = fake_quantize(batch_of(rank, rows, in, 400), Fp8::E4M3, G_in);
    const auto dyq = fake_quantize(batch_of(rank, rows, out, 500), Fp8::E5M2, G_out);
    REQUIRE(tolerance_ratio(results[rank].y, product(xq, wq), torch::kFloat) <= 1.0);
    REQUIRE(tolerance_ratio(results[rank].dx, product(dyq, wq.t()), torch::kFloat) <= 1.0);
  }
  // Rank 0's weight alone would have a 5x smaller amax and another scale.
  const auto own = fake_quantize(weights[0], Fp8::E4M3, 0);
  const auto xq = fake_quantize(batch_of(0, rows, in, 400), Fp8::E4M3, G_in);
  REQUIRE(tolerance_ratio(results[0].y, product(xq, own), torch::kFloat) > 10.0);
}
