#include "report.h"

#include "files.h"

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

// ---- SVG ----------------------------------------------------------------------------------------

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                               "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
constexpr size_t kColorCount = sizeof(kColors) / sizeof(kColors[0]);
constexpr double kCharWidth = 7;  // of the 12px sans-serif text, for laying out labels
constexpr double kZeroGap = 20;   // log axes: pixels between zero (the bottom edge) and 10^lo

std::string escape_xml(const std::string& text) {
  std::string out;
  for (char c : text) {
    out += c == '&'   ? "&amp;"
           : c == '<' ? "&lt;"
           : c == '>' ? "&gt;"
           : c == '"' ? "&quot;"
                      : std::string(1, c);
  }
  return out;
}

// A spacing of 1, 2, 2.5 or 5 times a power of ten that puts about `target` ticks in [lo, hi]
// (whole numbers only when `whole`).
double tick_spacing(double lo, double hi, int target, bool whole) {
  const double power = std::pow(10.0, std::floor(std::log10((hi - lo) / (target - 1))));
  double best = whole ? std::max(1.0, power) : power;
  int best_miss = INT_MAX;
  for (double decade : {power / 10, power, power * 10}) {
    for (double mantissa : {1.0, 2.0, 5.0, 2.5}) {
      const double spacing = decade * mantissa;
      if (whole && spacing != std::floor(spacing)) continue;
      const double count = std::floor(hi / spacing + 1e-9) - std::ceil(lo / spacing - 1e-9) + 1;
      const int miss = int(std::abs(count - target));
      if (miss < best_miss) best = spacing, best_miss = miss;
    }
  }
  return best;
}

std::vector<double> ticks_within(double lo, double hi, double spacing) {
  std::vector<double> ticks;
  for (double k = std::ceil(lo / spacing - 1e-9); k <= std::floor(hi / spacing + 1e-9); ++k) {
    ticks.push_back(std::abs(k) < 0.5 ? 0.0 : k * spacing);  // no "-0.0"
  }
  return ticks;
}

// The value with as many decimals as the spacing of its ticks needs.
std::string tick_label(double value, double spacing) {
  int decimals = 0;
  while (decimals < 12 && std::abs(spacing * std::pow(10.0, decimals) -
                                   std::round(spacing * std::pow(10.0, decimals))) > 1e-6) {
    ++decimals;
  }
  return fmt::format("{:.{}f}", value, decimals);
}

// A plot area of the SVG and the data ranges it shows. log_y: y_lo and y_hi are exponents of ten
// and values <= 0 sit on the bottom edge, kZeroGap pixels below 10^y_lo.
struct Panel {
  double left, top, width, height;
  double x_lo, x_hi, y_lo, y_hi;
  bool log_y = false;
  double y_spacing = 0;  ///< linear y ticks; 0: chosen from the range

  double x_at(double x) const { return left + width * (x - x_lo) / (x_hi - x_lo); }
  double y_at(double y) const {
    if (!log_y) return top + height * (y_hi - y) / (y_hi - y_lo);
    if (!(y > 0)) return top + height;
    const double exponent = std::clamp(std::log10(y), y_lo, y_hi);
    return top + (height - kZeroGap) * (y_hi - exponent) / (y_hi - y_lo);
  }
};

// Widens a linear panel's y range to whole ticks, so its top and bottom edges are labelled.
void round_y_range(Panel& panel) {
  panel.y_spacing = tick_spacing(panel.y_lo, panel.y_hi, 5, false);
  panel.y_lo = std::floor(panel.y_lo / panel.y_spacing + 1e-9) * panel.y_spacing;
  panel.y_hi = std::ceil(panel.y_hi / panel.y_spacing - 1e-9) * panel.y_spacing;
}

// The frame, the title above it (and above `legend_rows` rows of legend), labelled ticks with
// faint grid lines, and the axis titles.
void draw_axes(std::string& svg, const Panel& panel, const std::string& title,
               const std::string& x_title, const std::string& y_title, int legend_rows = 0) {
  const double bottom = panel.top + panel.height, right = panel.left + panel.width;
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-weight=\"bold\">{}</text>\n", panel.left,
                     panel.top - 14 - 18 * legend_rows, escape_xml(title));
  const double x_spacing = tick_spacing(panel.x_lo, panel.x_hi, 5, true);
  for (double x : ticks_within(panel.x_lo, panel.x_hi, x_spacing)) {
    const double at = panel.x_at(x);
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#eee\"/>\n"
        "<line x1=\"{0:.1f}\" y1=\"{2:.1f}\" x2=\"{0:.1f}\" y2=\"{3:.1f}\" stroke=\"#444\"/>\n"
        "<text x=\"{0:.1f}\" y=\"{4:.1f}\" text-anchor=\"middle\">{5}</text>\n",
        at, panel.top, bottom, bottom + 4, bottom + 17, tick_label(x, x_spacing));
  }
  std::vector<std::pair<double, std::string>> y_ticks;  // (pixel, label)
  if (panel.log_y) {
    y_ticks.emplace_back(bottom, "0");
    const int every = panel.y_hi - panel.y_lo > 8 ? 2 : 1;
    for (double e = panel.y_hi; e >= panel.y_lo - 1e-9; e -= every) {
      y_ticks.emplace_back(panel.y_at(std::pow(10.0, e)),
                           e == 0 ? std::string("1") : fmt::format("1e{:.0f}", e));
    }
  } else {
    const double y_spacing =
        panel.y_spacing > 0 ? panel.y_spacing : tick_spacing(panel.y_lo, panel.y_hi, 5, false);
    for (double y : ticks_within(panel.y_lo, panel.y_hi, y_spacing)) {
      y_ticks.emplace_back(panel.y_at(y), tick_label(y, y_spacing));
    }
  }
  size_t widest = 0;
  for (const auto& [at, label] : y_ticks) {
    widest = std::max(widest, label.size());
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>\n"
        "<line x1=\"{3:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{1:.1f}\" stroke=\"#444\"/>\n"
        "<text x=\"{4:.1f}\" y=\"{5:.1f}\" text-anchor=\"end\">{6}</text>\n",
        panel.left, at, right, panel.left - 4, panel.left - 7, at + 4, label);
  }
  svg += fmt::format(
      "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" "
      "fill=\"none\" stroke=\"#444\"/>\n",
      panel.left, panel.top, panel.width, panel.height);
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                     panel.left + panel.width / 2, bottom + 36, escape_xml(x_title));
  svg += fmt::format(
      "<text transform=\"translate({:.1f},{:.1f}) rotate(-90)\" "
      "text-anchor=\"middle\">{}</text>\n",
      panel.left - 14 - kCharWidth * double(widest), panel.top + panel.height / 2,
      escape_xml(y_title));
}

struct LineStyle {
  const char* color;
  double width;
  const char* dash;  ///< stroke-dasharray, "" for solid
};

std::string stroke(const LineStyle& style) {
  std::string out =
      fmt::format("fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"", style.color, style.width);
  if (*style.dash != '\0') out += fmt::format(" stroke-dasharray=\"{}\"", style.dash);
  return out;
}

// The curve through (xs[i], ys[i]), one polyline per stretch of finite values; with `markers`, a
// dot at every point as well (a lone point draws no line).
void draw_curve(std::string& svg, const Panel& panel, const std::vector<double>& xs,
                const std::vector<double>& ys, const LineStyle& style, bool markers = false) {
  std::string points;
  const auto flush = [&] {
    if (!points.empty()) {
      svg += fmt::format("<polyline {} points=\"{}\"/>\n", stroke(style), points);
    }
    points.clear();
  };
  for (size_t i = 0; i < xs.size() && i < ys.size(); ++i) {
    if (!std::isfinite(ys[i])) {
      flush();
      continue;
    }
    const double x = panel.x_at(xs[i]), y = panel.y_at(ys[i]);
    points += fmt::format("{:.1f},{:.1f} ", x, y);
    if (markers) {
      svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>\n", x, y,
                         style.color);
    }
  }
  flush();
}

struct LegendEntry {
  std::string label;
  LineStyle style;
};

// Entries left to right from (x, y), wrapping at max_width; returns the rows used. svg null:
// only counts the rows.
int draw_legend_rows(std::string* svg, double x, double y, double max_width,
                     const std::vector<LegendEntry>& entries) {
  double at = x;
  int rows = entries.empty() ? 0 : 1;
  for (const auto& entry : entries) {
    const double entry_width = 30 + kCharWidth * double(entry.label.size()) + 18;
    if (at > x && at + entry_width > x + max_width) at = x, y += 18, ++rows;
    if (svg != nullptr) {
      *svg += fmt::format(
          "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" {}/>\n"
          "<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n",
          at, y - 4, at + 24, y - 4, stroke(entry.style), at + 30, y, escape_xml(entry.label));
    }
    at += entry_width;
  }
  return rows;
}

// A heading, then one entry a line, from (x, y); returns the y below it.
double draw_legend_column(std::string& svg, double x, double y, const std::string& heading,
                          const std::vector<LegendEntry>& entries) {
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-weight=\"bold\">{}</text>\n", x, y,
                     escape_xml(heading));
  for (const auto& entry : entries) {
    y += 18;
    svg += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" {}/>\n"
        "<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n",
        x, y - 4, x + 28, y - 4, stroke(entry.style), x + 34, y, escape_xml(entry.label));
  }
  return y + 28;
}

std::string svg_header(double width, double height, const std::string& title) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"20\" y=\"24\" font-size=\"15\">{}</text>\n",
      width, height, escape_xml(title));
}

// Smallest and largest finite value of the curves (and 0 with include_zero), never empty.
std::pair<double, double> finite_range(const std::vector<std::vector<double>>& curves,
                                       bool include_zero) {
  double lo = include_zero ? 0 : INFINITY, hi = include_zero ? 0 : -INFINITY;
  for (const auto& curve : curves) {
    for (double v : curve) {
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
  }
  if (!std::isfinite(lo)) return {0, 1};
  if (!(hi > lo)) {
    const double pad = std::max(std::abs(hi), 1e-3) / 2;
    return {lo - pad, hi + pad};
  }
  return {lo, hi};
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
