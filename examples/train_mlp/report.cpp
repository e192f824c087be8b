#include "report.h"

#include "files.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

namespace train_mlp {
namespace {

std::ofstream open_for_writing(const std::string& path) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  return out;
}

// Moving average over `window` steps, so the plotted curve shows the trend, not batch noise.
std::vector<double> smooth(const std::vector<double>& values, size_t window) {
  std::vector<double> out(values.size());
  double sum = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    sum += values[i];
    if (i >= window) sum -= values[i - window];
    out[i] = sum / double(std::min(i + 1, window));
  }
  return out;
}

double final_train_loss(const RunResult& run) {
  // Mean of the last 10% of steps (at least 1): one batch's loss is too noisy to compare.
  const size_t n = run.train_loss.size();
  const size_t tail = std::max<size_t>(1, n / 10);
  double sum = 0;
  for (size_t i = n - tail; i < n; ++i) sum += run.train_loss[i];
  return n == 0 ? NAN : sum / double(tail);
}

}  // namespace

std::string write_curve_csv(const std::string& dir, const RunResult& run) {
  make_directories(dir);
  const std::string path = join_path(dir, "loss_" + run.name + ".csv");
  auto out = open_for_writing(path);
  out << "step,train_loss,val_loss,val_accuracy\n";
  size_t next_eval = 0;
  for (size_t i = 0; i < run.train_loss.size(); ++i) {
    const int64_t step = static_cast<int64_t>(i) + 1;
    out << step << ',' << fmt::format("{:.6g}", run.train_loss[i]);
    while (next_eval < run.evals.size() && run.evals[next_eval].step < step) ++next_eval;
    if (next_eval < run.evals.size() && run.evals[next_eval].step == step) {
      out << fmt::format(",{:.6g},{:.6g}", run.evals[next_eval].loss, run.evals[next_eval].accuracy);
    } else {
      out << ",,";
    }
    out << '\n';
  }
  return path;
}

std::string write_plot_svg(const std::string& dir, const std::vector<RunResult>& runs) {
  make_directories(dir);
  const std::string path = join_path(dir, "loss_curves.svg");
  constexpr double kPanelW = 360, kPanelH = 260, kMarginL = 50, kMarginT = 40, kGap = 60;
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
  size_t steps = 1;
  double lo = INFINITY, hi = -INFINITY;
  std::vector<std::vector<double>> curves;
  for (const auto& run : runs) {
    curves.push_back(smooth(run.train_loss, std::max<size_t>(1, run.train_loss.size() / 50)));
    steps = std::max(steps, run.train_loss.size());
    for (double v : curves.back()) {
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
  }
  if (!(hi > lo)) lo = 0, hi = 1;
  const double width = kMarginL + runs.size() * (kPanelW + kGap), height = kMarginT + kPanelH + 50;
  auto out = open_for_writing(path);
  out << fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{:.0f}\" y=\"20\" font-size=\"15\">train loss (moving "
      "average) per step: fp8nn layers vs {}</text>\n",
      width, height, kMarginL, runs.empty() ? "" : runs[0].name);
  auto polyline = [&](const std::vector<double>& curve, double x0, const char* color, double w) {
    std::string points;
    for (size_t i = 0; i < curve.size(); ++i) {
      if (!std::isfinite(curve[i])) continue;
      const double x = x0 + kPanelW * double(i) / double(std::max<size_t>(1, steps - 1));
      const double y = kMarginT + kPanelH * (hi - curve[i]) / (hi - lo);
      points += fmt::format("{:.1f},{:.1f} ", x, y);
    }
    return fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" points=\"{}\"/>\n",
                       color, w, points);
  };
  for (size_t p = 0; p < runs.size(); ++p) {
    const double x0 = kMarginL + p * (kPanelW + kGap);
    out << fmt::format("<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"{:.0f}\" height=\"{:.0f}\" "
                       "fill=\"none\" stroke=\"#888\"/>\n",
                       x0, kMarginT, kPanelW, kPanelH);
    for (int t = 0; t <= 4; ++t) {  // y ticks
      const double v = lo + (hi - lo) * t / 4.0, y = kMarginT + kPanelH * (1 - t / 4.0);
      out << fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" text-anchor=\"end\">{:.3g}</text>\n",
                         x0 - 4, y + 4, v);
    }
    out << fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" text-anchor=\"middle\">step (0 .. {})"
                       "</text>\n",
                       x0 + kPanelW / 2, kMarginT + kPanelH + 18, steps);
    if (p > 0) out << polyline(curves[0], x0, "#bbbbbb", 1.5);
    out << polyline(curves[p], x0, colors[p % 4], 2);
    out << fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" fill=\"{}\" font-size=\"14\">{}: final "
                       "{:.4f}</text>\n",
                       x0 + 8, kMarginT + 18, colors[p % 4], runs[p].name, final_train_loss(runs[p]));
  }
  out << fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" fill=\"#888\">grey: {} for reference"
                     "</text>\n</svg>\n",
                     kMarginL, kMarginT + kPanelH + 40, runs.empty() ? "" : runs[0].name);
  return path;
}

void print_table(const std::vector<RunResult>& runs, int64_t batch) {
  fmt::print("\n{:<8} {:>11} {:>9} {:>9} {:>8} {:>12} {:>9} {:>8} {:>9}\n", "linear",
             "train loss", "val loss", "val vs 1st", "val acc", "samples/s", "ms/step", "speedup",
             "peak MiB");
  const double base = runs.empty() ? 0 : runs[0].samples_per_s;
  const auto last_eval = [](const RunResult& run) {
    return run.evals.empty() ? EvalPoint{0, NAN, NAN} : run.evals.back();
  };
  const double base_val = runs.empty() ? NAN : last_eval(runs[0]).loss;
  for (const auto& run : runs) {
    const auto last = last_eval(run);
    fmt::print("{:<8} {:>11.4f} {:>9.4f} {:>+8.2f}% {:>7.2f}% {:>12.0f} {:>9.3f} {:>7.2f}x {:>9}\n",
               run.name, final_train_loss(run), last.loss, 100 * (last.loss / base_val - 1),
               100 * last.accuracy, run.samples_per_s, run.ms_per_step,
               base > 0 ? run.samples_per_s / base : 0.0,
               run.peak_mib < 0 ? std::string("-") : fmt::format("{:.0f}", run.peak_mib));
  }
  fmt::print("(batch {}; train loss: mean of the last 10% of steps; val vs 1st: final validation "
             "loss against {}'s; speedup: samples/s over {})\n",
             batch, runs.empty() ? "" : runs[0].name, runs.empty() ? "" : runs[0].name);
}

}  // namespace train_mlp
