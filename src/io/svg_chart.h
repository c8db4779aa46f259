// Small SVG charts without a plotting library: line charts (linear or log axes, one line per
// series, several charts side by side in one file) and bar charts. Used by `jamba explore`;
// the training loss curve (src/train/plot.cpp) predates it and keeps its own layout.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace jamba {

struct ChartSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y); non-finite values are skipped, and
                                                  // values <= 0 on a log axis
};

struct ChartTick {
  double at = 0;
  std::string label;
};

struct LineChart {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  std::vector<ChartTick> x_ticks;  // empty: chosen from the data (1-2-5 steps / decades)
  std::vector<ChartSeries> series;
  std::string note;  // optional line of small text under the plot area
};

// One chart of width x height pixels, a complete <svg> document.
std::string line_chart_svg(const LineChart& chart, double width = 800, double height = 460);
// Charts side by side in one <svg> document, each width x height.
std::string line_charts_svg(const std::vector<LineChart>& charts, double width = 560,
                            double height = 420);

struct BarChart {
  std::string title, y_label;
  std::vector<std::pair<std::string, double>> bars;  // label, value (>= 0)
  std::string value_format = "%.2f";                 // printf format of the value above a bar
  std::string note;
};
std::string bar_chart_svg(const BarChart& chart, double width = 640, double height = 400);

// printf of one double ("%.1f", "%g", ...) as a string; text escaped for SVG/XML (< > & ").
std::string format_number(const char* f, double v);
std::string svg_escape(const std::string& s);

// Tick labels of token counts and byte sizes in binary units: 1024 -> "1K", 262144 -> "256K".
std::string binary_count_label(double v);

}  // namespace jamba
