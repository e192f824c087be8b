#include "report.h"

#include "files.h"
#include "svg.h"

#include <fmt/format.h>
#include <fp8nn/numerics.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <utility>

namespace train_mlp {
namespace {

std::ofstream open_for_writing(const std::string& path) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  return out;
}

// ---- numbers ------------------------------------------------------------------------------------

// Moving average over `window` steps, so the plotted curve shows the trend, not batch noise.
// NaN wherever the window holds a non-finite value: a diverged run shows a gap, never a
// finite-looking average.
std::vector<double> moving_average(const std::vector<double>& values, size_t window) {
  std::vector<double> out(values.size());
  double sum = 0;
  size_t non_finite = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const bool entering_finite = std::isfinite(values[i]);
    sum += entering_finite ? values[i] : 0;
    non_finite += entering_finite ? 0 : 1;
    if (i >= window) {
      const bool leaving_finite = std::isfinite(values[i - window]);
      sum -= leaving_finite ? values[i - window] : 0;
      non_finite -= leaving_finite ? 0 : 1;
    }
    out[i] = non_finite > 0 ? NAN : sum / double(std::min(i + 1, window));
  }
  return out;
}

// The steps the table compares: the last 10% (at least 1), since one batch's loss is too noisy.
size_t tail_steps(size_t steps) { return std::max<size_t>(1, steps / 10); }

// Mean train loss over the tail steps; NaN when any of them is.
double final_train_loss(const RunResult& run) {
  const size_t n = run.train_loss.size();
  if (n == 0) return NAN;
  double sum = 0;
  for (size_t i = n - tail_steps(n); i < n; ++i) sum += run.train_loss[i];
  return sum / double(tail_steps(n));
}

// run's train loss minus reference's at the same step (same batch), over the steps both have.
std::vector<double> loss_difference(const RunResult& run, const RunResult& reference) {
  const size_t n = std::min(run.train_loss.size(), reference.train_loss.size());
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = run.train_loss[i] - reference.train_loss[i];
  return out;
}

struct Estimate {
  double mean, half_width;  ///< 95% band: mean +- half_width
};

// Mean of `values` over the tail steps and 1.96 standard errors of it (sample standard deviation
// / sqrt(count), the steps taken as independent). A non-finite value makes the result so.
Estimate tail_mean_with_band(const std::vector<double>& values) {
  const size_t n = values.size();
  if (n == 0) return {NAN, NAN};
  const size_t tail = tail_steps(n);
  double sum = 0;
  for (size_t i = n - tail; i < n; ++i) sum += values[i];
  const double mean = sum / double(tail);
  if (tail < 2) return {mean, NAN};
  double squares = 0;
  for (size_t i = n - tail; i < n; ++i) squares += (values[i] - mean) * (values[i] - mean);
  return {mean, 1.96 * std::sqrt(squares / double(tail - 1) / double(tail))};
}

// "+0.00121 +/- 0.00083": decimals enough for two significant digits of the band.
std::string format_estimate(const Estimate& estimate) {
  int decimals = 4;
  if (std::isfinite(estimate.half_width) && estimate.half_width > 0) {
    decimals = std::clamp(1 - int(std::floor(std::log10(estimate.half_width))), 2, 6);
  }
  // NaN as "nan" whatever its sign bit (inf - inf gives "-nan").
  const std::string mean =
      std::isnan(estimate.mean) ? "nan" : fmt::format("{:+.{}f}", estimate.mean, decimals);
  const std::string half_width = std::isnan(estimate.half_width)
                                     ? "nan"
                                     : fmt::format("{:.{}f}", estimate.half_width, decimals);
  return mean + " +/- " + half_width;
}

std::string csv_cell(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_number(double value) {
  return std::isnan(value) ? std::string() : fmt::format("{:.7g}", value);
}

// The tensors whose casts the stats plot shows, and the line each is drawn with.
const char* const kStatsTensors[] = {"x", "weight", "grad_output"};
const char* const kStatsDashes[] = {"", "7,3", "2,2"};

struct StatsPoint {
  double step, saturated, underflow;
};

struct StatsSeries {
  size_t variant, layer, tensor;   ///< indices into StatsSeriesSet's names and kStatsTensors
  std::vector<StatsPoint> points;  ///< in step order
};

struct StatsSeriesSet {
  std::vector<std::string> variants, layers;  ///< in the order of their first rows
  std::vector<StatsSeries> series;            ///< by layer, then tensor
};

// The x, weight and grad_output rows as one series per (variant, layer, tensor); product rows
// (relative error only) left out.
StatsSeriesSet collect_stats_series(const std::vector<Fp8StatsRow>& rows) {
  StatsSeriesSet set;
  const auto index_in = [](std::vector<std::string>& names, const std::string& name) {
    const auto at = std::find(names.begin(), names.end(), name);
    if (at != names.end()) return size_t(at - names.begin());
    names.push_back(name);
    return names.size() - 1;
  };
  for (const auto& row : rows) {
    const auto tensor = std::find(std::begin(kStatsTensors), std::end(kStatsTensors), row.tensor);
    if (tensor == std::end(kStatsTensors)) continue;
    const StatsSeries key{index_in(set.variants, row.variant), index_in(set.layers, row.layer),
                          size_t(tensor - std::begin(kStatsTensors))};
    auto at = std::find_if(set.series.begin(), set.series.end(), [&](const StatsSeries& s) {
      return s.variant == key.variant && s.layer == key.layer && s.tensor == key.tensor;
    });
    if (at == set.series.end()) at = set.series.insert(set.series.end(), key);
    at->points.push_back({double(row.step), row.saturated_fraction, row.underflow_fraction});
  }
  for (auto& s : set.series) {
    std::stable_sort(s.points.begin(), s.points.end(),
                     [](const StatsPoint& a, const StatsPoint& b) { return a.step < b.step; });
  }
  std::stable_sort(set.series.begin(), set.series.end(),
                   [](const StatsSeries& a, const StatsSeries& b) {
                     return std::make_pair(a.layer, a.tensor) < std::make_pair(b.layer, b.tensor);
                   });
  return set;
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
      out << fmt::format(",{:.6g},{:.6g}", run.evals[next_eval].loss,
                         run.evals[next_eval].accuracy);
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
  constexpr double kLeft = 80, kWidth = 460, kHeight = 300, kGap = 110;
  const std::string first = runs.empty() ? "" : runs[0].name;
  size_t steps = 1;
  for (const auto& run : runs) steps = std::max(steps, run.train_loss.size());
  const size_t window = std::max<size_t>(1, steps / 25);
  std::vector<double> step_of(steps);  // the i-th value is step i + 1's
  for (size_t i = 0; i < steps; ++i) step_of[i] = double(i + 1);

  std::vector<std::vector<double>> losses, differences;
  std::vector<LegendEntry> loss_legend, difference_legend;
  for (size_t r = 0; r < runs.size(); ++r) {
    losses.push_back(moving_average(runs[r].train_loss, window));
    const auto& loss = runs[r].train_loss;
    const auto bad =
        std::find_if(loss.begin(), loss.end(), [](double v) { return !std::isfinite(v); });
    std::string label = runs[r].name;
    if (bad != loss.end()) {
      label += fmt::format(" (non-finite from step {})", bad - loss.begin() + 1);
    }
    // The first variant drawn wide underneath, so the others show on top of it where they agree.
    loss_legend.push_back({label, {kColors[r % kColorCount], r == 0 ? 4.0 : 1.5, ""}});
    if (r > 0) {
      differences.push_back(moving_average(loss_difference(runs[r], runs[0]), window));
      difference_legend.push_back({runs[r].name + " - " + first, loss_legend.back().style});
    }
  }
  const int legend_rows = std::max({1, draw_legend_rows(nullptr, 0, 0, kWidth, loss_legend),
                                    draw_legend_rows(nullptr, 0, 0, kWidth, difference_legend)});
  const double top = 66 + 18 * legend_rows, legend_y = top - 12 - 18 * (legend_rows - 1);
  const auto [loss_lo, loss_hi] = finite_range(losses, false);
  const auto [difference_lo, difference_hi] = finite_range(differences, true);
  Panel loss_panel{kLeft, top, kWidth, kHeight, 0, double(steps), loss_lo, loss_hi};
  Panel difference_panel = loss_panel;
  difference_panel.left += kWidth + kGap;
  difference_panel.y_lo = difference_lo, difference_panel.y_hi = difference_hi;
  round_y_range(loss_panel);
  round_y_range(difference_panel);

  std::string svg = svg_header(
      2 * kWidth + kGap + kLeft + 30, top + kHeight + 50,
      fmt::format("train loss per step, moving average over {} step{}: fp8nn layers vs {}", window,
                  window == 1 ? "" : "s", first));
  draw_axes(svg, loss_panel, "train loss, all variants", "step", "train loss", legend_rows);
  draw_legend_rows(&svg, loss_panel.left, legend_y, kWidth, loss_legend);
  for (size_t r = 0; r < runs.size(); ++r) {
    draw_curve(svg, loss_panel, step_of, losses[r], loss_legend[r].style);
  }
  draw_axes(svg, difference_panel, "train loss minus " + first + "'s at the same step", "step",
            "loss difference", legend_rows);
  draw_legend_rows(&svg, difference_panel.left, legend_y, kWidth, difference_legend);
  const double zero = difference_panel.y_at(0);
  svg += fmt::format(
      "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" "
      "stroke=\"#444\" stroke-dasharray=\"5,3\"/>\n",
      difference_panel.left, zero, difference_panel.left + kWidth, zero);
  for (size_t d = 0; d < differences.size(); ++d) {
    draw_curve(svg, difference_panel, step_of, differences[d],
               {difference_legend[d].style.color, 1.5, ""});
  }
  if (differences.empty()) {
    svg += fmt::format(
        "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" fill=\"#888\">"
        "one variant: nothing to compare</text>\n",
        difference_panel.left + kWidth / 2, top + kHeight / 2 - 10);
  }
  svg += "</svg>\n";
  open_for_writing(path) << svg;
  return path;
}

void print_table(const std::vector<RunResult>& runs, int64_t batch) {
  const std::string first = runs.empty() ? "" : runs[0].name;
  fmt::print("\n{:<8} {:>11} {:>22} {:>9} {:>10} {:>8} {:>12} {:>9} {:>8} {:>9}\n", "linear",
             "train loss", "train vs 1st (95%)", "val loss", "val vs 1st", "val acc", "samples/s",
             "ms/step", "speedup", "peak MiB");
  const double base = runs.empty() ? 0 : runs[0].samples_per_s;
  const auto last_eval = [](const RunResult& run) {
    return run.evals.empty() ? EvalPoint{0, NAN, NAN} : run.evals.back();
  };
  const double base_val = runs.empty() ? NAN : last_eval(runs[0]).loss;
  for (size_t r = 0; r < runs.size(); ++r) {
    const auto& run = runs[r];
    const auto last = last_eval(run);
    const std::string train_vs_first =
        r == 0 ? "-" : format_estimate(tail_mean_with_band(loss_difference(run, runs[0])));
    fmt::print(
        "{:<8} {:>11.4f} {:>22} {:>9.4f} {:>+9.2f}% {:>7.2f}% {:>12.0f} {:>9.3f} {:>7.2f}x {:>9}\n",
        run.name, final_train_loss(run), train_vs_first, last.loss,
        100 * (last.loss / base_val - 1), 100 * last.accuracy, run.samples_per_s, run.ms_per_step,
        base > 0 ? run.samples_per_s / base : 0.0,
        run.peak_mib < 0 ? std::string("-") : fmt::format("{:.0f}", run.peak_mib));
  }
  fmt::print(
      "batch {0}. train loss: mean over the last 10% of steps. train vs 1st: mean over those\n"
      "steps of (train loss - {1}'s train loss at the same step, same batch) +/- 1.96 standard\n"
      "errors (sample standard deviation of the per-step differences / sqrt(number of steps)),\n"
      "a 95% band that takes the steps as independent; nan where a loss is not finite.\n"
      "val vs 1st: final validation loss against {1}'s. speedup: samples/s over {1}'s.\n",
      batch, first);
}

void append_fp8_stats(const std::string& variant, int64_t step, const torch::nn::Module& model,
                      std::vector<Fp8StatsRow>& out) {
  for (const auto& row : fp8nn::numerics_table(model)) {
    // Product rows ("forward", "grad_input", "grad_weight") carry only the relative error.
    const bool product = row.tensor != "x" && row.tensor != "weight" && row.tensor != "grad_output";
    const auto& f = row.figures;
    out.push_back({variant, step, row.layer, row.tensor, f.numel, product ? NAN : f.amax,
                   product ? NAN : f.scale_min, product ? NAN : f.scale_max, f.saturated_fraction(),
                   f.underflow_fraction(), row.relative_error});
  }
}

std::string write_fp8_stats_csv(const std::string& dir, const std::vector<Fp8StatsRow>& rows) {
  make_directories(dir);
  const std::string path = join_path(dir, "fp8_stats.csv");
  auto out = open_for_writing(path);
  out << "variant,step,layer,tensor,numel,amax,scale_min,scale_max,saturated_fraction,"
         "underflow_fraction,relative_error\n";
  for (const auto& row : rows) {
    out << fmt::format("{},{},{},{},{},{},{},{},{},{},{}\n", csv_cell(row.variant), row.step,
                       csv_cell(row.layer), csv_cell(row.tensor), row.numel, csv_number(row.amax),
                       csv_number(row.scale_min), csv_number(row.scale_max),
                       csv_number(row.saturated_fraction), csv_number(row.underflow_fraction),
                       csv_number(row.relative_error));
  }
  return path;
}

std::string write_fp8_stats_svg(const std::string& dir, const std::vector<Fp8StatsRow>& rows) {
  make_directories(dir);
  const std::string path = join_path(dir, "fp8_stats.svg");
  const auto [variants, layers, series] = collect_stats_series(rows);
  double max_step = 1, min_positive = INFINITY;
  for (const auto& s : series) {
    for (const auto& point : s.points) {
      max_step = std::max(max_step, point.step);
      for (double v : {point.saturated, point.underflow}) {
        if (v > 0) min_positive = std::min(min_positive, v);
      }
    }
  }
  // Lowest decade: the smallest nonzero fraction's (1e-7 when there is none), at most 1e-1.
  const double lowest_decade = std::isfinite(min_positive)
                                   ? std::clamp(std::floor(std::log10(min_positive)), -12.0, -1.0)
                                   : -7.0;

  constexpr double kLeft = 80, kWidth = 420, kHeight = 220, kGap = 100, kRowHeight = kHeight + 100;
  const double legend_x = kLeft + 2 * kWidth + kGap + 30;
  std::vector<LegendEntry> layer_legend, tensor_legend;
  for (size_t l = 0; l < layers.size(); ++l) {
    layer_legend.push_back(
        {layers[l].empty() ? "(the model)" : layers[l], {kColors[l % kColorCount], 2, ""}});
  }
  for (size_t t = 0; t < std::size(kStatsTensors); ++t) {
    tensor_legend.push_back({kStatsTensors[t], {"#444", 2, kStatsDashes[t]}});
  }
  const double legend_height = 2 * 28 + 18 * double(layers.size() + std::size(kStatsTensors)) + 100;
  const double height =
      std::max(90 + kRowHeight * double(std::max<size_t>(1, variants.size())), legend_height);
  std::string svg = svg_header(
      legend_x + 200, height,
      "FP8 casts per step: fraction of a tensor's elements saturated (clamped to the format's "
      "max) and flushed to zero (log axis, 0 on the bottom edge)");
  if (series.empty()) {
    svg +=
        "<text x=\"20\" y=\"60\" fill=\"#888\">no statistics of x, weight or grad_output "
        "rows</text>\n</svg>\n";
    open_for_writing(path) << svg;
    return path;
  }
  for (size_t v = 0; v < variants.size(); ++v) {
    const double top = 110 + kRowHeight * double(v);
    svg += fmt::format(
        "<text x=\"20\" y=\"{:.1f}\" font-size=\"14\" font-weight=\"bold\">"
        "{}</text>\n",
        top - 44, escape_xml(variants[v]));
    for (int figure = 0; figure < 2; ++figure) {
      Panel panel{kLeft + figure * (kWidth + kGap), top, kWidth, kHeight, 0, max_step};
      panel.y_lo = lowest_decade, panel.y_hi = 0, panel.log_y = true;
      draw_axes(svg, panel, figure == 0 ? "saturated fraction" : "underflow fraction", "step",
                "fraction of elements");
      for (const auto& s : series) {
        if (s.variant != v) continue;
        std::vector<double> steps, fractions;
        for (const auto& point : s.points) {
          steps.push_back(point.step);
          fractions.push_back(figure == 0 ? point.saturated : point.underflow);
        }
        const LineStyle style{kColors[s.layer % kColorCount], 1.5, kStatsDashes[s.tensor]};
        draw_curve(svg, panel, steps, fractions, style, /*markers=*/steps.size() <= 40);
      }
    }
  }
  const double below = draw_legend_column(svg, legend_x, 70, "layer (colour)", layer_legend);
  draw_legend_column(svg, legend_x, below, "tensor (line)", tensor_legend);
  svg += "</svg>\n";
  open_for_writing(path) << svg;
  return path;
}

}  // namespace train_mlp
