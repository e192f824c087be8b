#pragma once
// What train_mlp writes: a loss-curve CSV per variant, an SVG plot of the curves and of each
// variant's difference from the first, the comparison table, and the FP8 numerics statistics
// (CSV and SVG).

#include <cstdint>
#include <string>
#include <vector>

#include "trainer.h"

namespace train_mlp {

/// <dir>/loss_<name>.csv: step,train_loss,val_loss,val_accuracy (val columns empty between evals).
std::string write_curve_csv(const std::string& dir, const RunResult& run);

/// <dir>/loss_curves.svg, two panels: every variant's train loss (moving average) overlaid, and
/// each later variant's train loss minus the first variant's at the same step (moving average)
/// around a zero line. Returns the path.
std::string write_plot_svg(const std::string& dir, const std::vector<RunResult>& runs);

/// The comparison table (final losses and their difference from the first variant with a 95%
/// band, accuracy, throughput, time per step, peak memory).
void print_table(const std::vector<RunResult>& runs, int64_t batch);

/// One quantized tensor (x, weight, grad_output) or one product (forward, grad_input,
/// grad_weight) of one FP8 layer of one variant at one step. Product rows carry only
/// relative_error (their other figures are NaN or 0); tensor rows have relative_error NaN.
struct Fp8StatsRow {
  std::string variant;
  int64_t step;
  std::string layer;
  std::string tensor;
  int64_t numel;
  double amax, scale_min, scale_max, saturated_fraction, underflow_fraction, relative_error;
};

/// <dir>/fp8_stats.csv: variant,step,layer,tensor,numel,amax,scale_min,scale_max,
/// saturated_fraction,underflow_fraction,relative_error, one line per row (NaN: an empty cell).
/// Returns the path.
/// Appends the rows of fp8nn::numerics_table(model) (its monitored FP8 layers) after `step`;
/// product rows ("forward", "grad_input", "grad_weight") carry only the relative error.
void append_fp8_stats(const std::string& variant, int64_t step, const torch::nn::Module& model,
                      std::vector<Fp8StatsRow>& out);

std::string write_fp8_stats_csv(const std::string& dir, const std::vector<Fp8StatsRow>& rows);

/// <dir>/fp8_stats.svg: per variant, the saturated and the underflow fraction over the steps,
/// one line per (layer, tensor) of the x, weight and grad_output rows, on a log axis with zero
/// on its bottom edge. Returns the path.
std::string write_fp8_stats_svg(const std::string& dir, const std::vector<Fp8StatsRow>& rows);

}  // namespace train_mlp
