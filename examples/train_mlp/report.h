#pragma once
// What train_mlp writes: a loss-curve CSV per variant, one SVG plot with the curves side by side,
// and the comparison table.

#include <string>
#include <vector>

#include "trainer.h"

namespace train_mlp {

/// <dir>/loss_<name>.csv: step,train_loss,val_loss,val_accuracy (val columns empty between evals).
std::string write_curve_csv(const std::string& dir, const RunResult& run);

/// <dir>/loss_curves.svg: one panel per variant, same axes, each with the first variant's curve
/// in grey behind it for reference. Returns the path.
std::string write_plot_svg(const std::string& dir, const std::vector<RunResult>& runs);

/// The comparison table (final losses, accuracy, throughput, time per step, peak memory).
void print_table(const std::vector<RunResult>& runs, int64_t batch);

}  // namespace train_mlp
