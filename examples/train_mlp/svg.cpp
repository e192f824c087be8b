#include "svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>

namespace train_mlp {
namespace {

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

std::string stroke(const LineStyle& style) {
  std::string out =
      fmt::format("fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"", style.color, style.width);
  if (*style.dash != '\0') out += fmt::format(" stroke-dasharray=\"{}\"", style.dash);
  return out;
}

}  // namespace

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

// Widens a linear panel's y range to whole ticks, so its top and bottom edges are labelled.
void round_y_range(Panel& panel) {
  panel.y_spacing = tick_spacing(panel.y_lo, panel.y_hi, 5, false);
  panel.y_lo = std::floor(panel.y_lo / panel.y_spacing + 1e-9) * panel.y_spacing;
  panel.y_hi = std::ceil(panel.y_hi / panel.y_spacing - 1e-9) * panel.y_spacing;
}

// The frame, the title above it (and above `legend_rows` rows of legend), labelled ticks with
// faint grid lines, and the axis titles.
void draw_axes(std::string& svg, const Panel& panel, const std::string& title,
               const std::string& x_title, const std::string& y_title, int legend_rows) {
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

// The curve through (xs[i], ys[i]), one polyline per stretch of finite values; with `markers`, a
// dot at every point as well (a lone point draws no line).
void draw_curve(std::string& svg, const Panel& panel, const std::vector<double>& xs,
                const std::vector<double>& ys, const LineStyle& style, bool markers) {
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

}  // namespace train_mlp
