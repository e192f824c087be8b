#pragma once
// The SVG drawing train_mlp's plots share: panels with linear or log axes, curves, legends, plain
// SVG text written with fmt.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace train_mlp {

inline const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
inline constexpr size_t kColorCount = sizeof(kColors) / sizeof(kColors[0]);
inline constexpr double kCharWidth = 7;  // of the 12px sans-serif text, for laying out labels
inline constexpr double kZeroGap = 20;  // log axes: pixels between zero (the bottom edge) and 10^lo

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

struct LineStyle {
  const char* color;
  double width;
  const char* dash;  ///< stroke-dasharray, "" for solid
};

struct LegendEntry {
  std::string label;
  LineStyle style;
};

std::string escape_xml(const std::string& text);

// Widens a linear panel's y range to whole ticks, so its top and bottom edges are labelled.
void round_y_range(Panel& panel);

// The frame, the title above it (and above `legend_rows` rows of legend), labelled ticks with
// faint grid lines, and the axis titles.
void draw_axes(std::string& svg, const Panel& panel, const std::string& title,
               const std::string& x_title, const std::string& y_title, int legend_rows = 0);

// The curve through (xs[i], ys[i]), one polyline per stretch of finite values; with `markers`, a
// dot at every point as well (a lone point draws no line).
void draw_curve(std::string& svg, const Panel& panel, const std::vector<double>& xs,
                const std::vector<double>& ys, const LineStyle& style, bool markers = false);

// Entries left to right from (x, y), wrapping at max_width; returns the rows used. svg null:
// only counts the rows.
int draw_legend_rows(std::string* svg, double x, double y, double max_width,
                     const std::vector<LegendEntry>& entries);

// A heading, then one entry a line, from (x, y); returns the y below it.
double draw_legend_column(std::string& svg, double x, double y, const std::string& heading,
                          const std::vector<LegendEntry>& entries);

// The <svg> element's opening, a white background and the title.
std::string svg_header(double width, double height, const std::string& title);

// Smallest and largest finite value of the curves (and 0 with include_zero), never empty.
std::pair<double, double> finite_range(const std::vector<std::vector<double>>& curves,
                                       bool include_zero);

}  // namespace train_mlp
