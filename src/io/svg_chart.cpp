#include "io/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace jamba {

std::string format_number(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string svg_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else if (c == '"')
      o += "&quot;";
    else
      o += c;
  }
  return o;
}

namespace {

std::string fmt(const char* f, double v) { return format_number(f, v); }
std::string px(double v) { return format_number("%.1f", v); }
std::string esc(const std::string& s) { return svg_escape(s); }

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"};
const char* color(size_t i) {
  return kPalette[i % (sizeof kPalette / sizeof kPalette[0])];
}

std::string text(double x, double y, const std::string& s, const char* anchor = "start",
                 const std::string& extra = "") {
  return "<text x=\"" + px(x) + "\" y=\"" + px(y) + "\" text-anchor=\"" + anchor + "\"" + extra +
         ">" + esc(s) + "</text>\n";
}
std::string line(double x1, double y1, double x2, double y2, const std::string& style) {
  return "<line x1=\"" + px(x1) + "\" y1=\"" + px(y1) + "\" x2=\"" + px(x2) + "\" y2=\"" + px(y2) +
         "\" " + style + "/>\n";
}

// A value range drawn onto a pixel range, linearly or by log10.
struct Axis {
  bool log = false;
  double lo = 0, hi = 1, p0 = 0, p1 = 1;  // value lo -> pixel p0, hi -> p1
  double t(double v) const { return log ? std::log10(v) : v; }
  double map(double v) const { return p0 + (p1 - p0) * (t(v) - t(lo)) / (t(hi) - t(lo)); }
  bool usable(double v) const { return std::isfinite(v) && (!log || v > 0); }
};

// A "nice" step (1, 2 or 5 times a power of ten) giving about n ticks over span.
double nice_step(double span, int n) {
  const double raw = span / std::max(1, n);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw * (1 - 1e-9)) return m * p;
  return 10 * p;
}

std::vector<double> auto_ticks(const Axis& a) {
  std::vector<double> t;
  if (!a.log) {
    const double s = nice_step(a.hi - a.lo, 6);
    for (double v = std::ceil(a.lo / s - 1e-9) * s; v <= a.hi * (1 + 1e-9) + 1e-12; v += s)
      t.push_back(std::abs(v) < s * 1e-9 ? 0.0 : v);
    return t;
  }
  // Decades; with fewer than three, 1-2-5 within each.
  const int d0 = int(std::floor(std::log10(a.lo))), d1 = int(std::ceil(std::log10(a.hi)));
  const bool fine = d1 - d0 < 3;
  for (int d = d0; d <= d1; ++d)
    for (double m : fine ? std::vector<double>{1, 2, 5} : std::vector<double>{1}) {
      const double v = m * std::pow(10.0, d);
      if (v >= a.lo * (1 - 1e-9) && v <= a.hi * (1 + 1e-9)) t.push_back(v);
    }
  return t;
}

std::string value_label(double v) {
  const double a = std::abs(v);
  if (a == 0) return "0";
  if (a >= 1e6 || a < 1e-3) return fmt("%.0e", v);
  return fmt("%g", v);
}

// Range of the usable values (padded): linear axes start at 0 when every value is >= 0.
Axis fit_axis(std::vector<double> vals, bool log, double p0, double p1, bool from_zero) {
  Axis a;
  a.log = log;
  a.p0 = p0;
  a.p1 = p1;
  vals.erase(std::remove_if(vals.begin(), vals.end(), [&](double v) { return !a.usable(v); }),
             vals.end());
  if (vals.empty()) {
    a.lo = log ? 1 : 0;
    a.hi = log ? 10 : 1;
    return a;
  }
  const auto [mn, mx] = std::minmax_element(vals.begin(), vals.end());
  double lo = *mn, hi = *mx;
  if (log) {
    if (hi / lo < 1.5) lo /= 1.5, hi *= 1.5;
    a.lo = lo / 1.15;
    a.hi = hi * 1.15;
  } else {
    if (from_zero && lo >= 0) lo = 0;
    if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) hi = lo + std::max(1.0, std::abs(lo));
    const double pad = 0.06 * (hi - lo);
    a.lo = (from_zero && lo == 0) ? 0 : lo - pad;
    a.hi = hi + pad;
  }
  return a;
}

// The chart's elements in the box [0, W] x [0, H] (no <svg> wrapper).
std::string chart_body(const LineChart& c, double W, double H) {
  const double L = 72, R = 150, T = 38, B = c.note.empty() ? 48 : 64;
  std::vector<double> xs, ys;
  for (const ChartSeries& s : c.series)
    for (const auto& [x, y] : s.points) xs.push_back(x), ys.push_back(y);
  for (const ChartTick& t : c.x_ticks) xs.push_back(t.at);
  Axis ax = fit_axis(xs, c.log_x, L, W - R, false);
  Axis ay = fit_axis(ys, c.log_y, H - B, T, true);
  std::string s;
  s += "<rect width=\"" + px(W) + "\" height=\"" + px(H) + "\" fill=\"white\"/>\n";
  s += text((L + W - R) / 2, 22, c.title, "middle", " font-size=\"14\"");
  for (double v : auto_ticks(ay)) {
    s += line(L, ay.map(v), W - R, ay.map(v), "stroke=\"#e4e4e4\"");
    s += text(L - 6, ay.map(v) + 4, value_label(v), "end");
  }
  std::vector<ChartTick> xt = c.x_ticks;
  if (xt.empty())
    for (double v : auto_ticks(ax)) xt.push_back({v, value_label(v)});
  for (const ChartTick& t : xt) {
    if (!ax.usable(t.at) || t.at < ax.lo || t.at > ax.hi) continue;
    s += line(ax.map(t.at), T, ax.map(t.at), H - B, "stroke=\"#e4e4e4\"");
    s += text(ax.map(t.at), H - B + 16, t.label, "middle");
  }
  s += "<rect x=\"" + px(L) + "\" y=\"" + px(T) + "\" width=\"" + px(W - L - R) + "\" height=\"" +
       px(H - T - B) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  s += text((L + W - R) / 2, H - B + 34, c.x_label, "middle");
  const double ym = (T + H - B) / 2;
  s += text(16, ym, c.y_label, "middle", " transform=\"rotate(-90 16 " + px(ym) + ")\"");
  if (!c.note.empty()) s += text(L, H - 10, c.note, "start", " font-size=\"11\" fill=\"#555\"");
  for (size_t i = 0; i < c.series.size(); ++i) {
    const ChartSeries& sr = c.series[i];
    std::string pts, dots;
    for (const auto& [x, y] : sr.points) {
      if (!ax.usable(x) || !ay.usable(y)) continue;
      pts += px(ax.map(x)) + "," + px(ay.map(y)) + " ";
      dots += "<circle cx=\"" + px(ax.map(x)) + "\" cy=\"" + px(ay.map(y)) + "\" r=\"3\" fill=\"" +
              color(i) + "\"><title>" + esc(sr.name) + ": " + value_label(x) + ", " +
              fmt("%.4g", y) + "</title></circle>\n";
    }
    if (!pts.empty())
      s += "<polyline fill=\"none\" stroke=\"" + std::string(color(i)) +
           "\" stroke-width=\"2\" points=\"" + pts + "\"/>\n" + dots;
    const double ly = T + 10 + 18.0 * double(i);
    s += line(W - R + 12, ly - 4, W - R + 36, ly - 4,
              "stroke=\"" + std::string(color(i)) + "\" stroke-width=\"2\"");
    s += text(W - R + 42, ly, sr.name);
  }
  return s;
}

std::string svg_open(double w, double h) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + px(w) + "\" height=\"" + px(h) +
         "\" viewBox=\"0 0 " + px(w) + " " + px(h) +
         "\" font-family=\"sans-serif\" font-size=\"12\">\n";
}

}  // namespace

std::string line_chart_svg(const LineChart& chart, double width, double height) {
  return svg_open(width, height) + chart_body(chart, width, height) + "</svg>\n";
}

std::string line_charts_svg(const std::vector<LineChart>& charts, double width, double height) {
  std::string s = svg_open(width * double(std::max<size_t>(1, charts.size())), height);
  for (size_t i = 0; i < charts.size(); ++i)
    s += "<g transform=\"translate(" + px(width * double(i)) + ",0)\">\n" +
         chart_body(charts[i], width, height) + "</g>\n";
  return s + "</svg>\n";
}

std::string bar_chart_svg(const BarChart& c, double W, double H) {
  const double L = 72, R = 20, T = 38, B = c.note.empty() ? 48 : 64;
  std::vector<double> vals;
  for (const auto& b : c.bars) vals.push_back(b.second);
  Axis ay = fit_axis(vals, false, H - B, T, true);
  std::string s = svg_open(W, H);
  s += "<rect width=\"" + px(W) + "\" height=\"" + px(H) + "\" fill=\"white\"/>\n";
  s += text(W / 2, 22, c.title, "middle", " font-size=\"14\"");
  for (double v : auto_ticks(ay)) {
    s += line(L, ay.map(v), W - R, ay.map(v), "stroke=\"#e4e4e4\"");
    s += text(L - 6, ay.map(v) + 4, value_label(v), "end");
  }
  const double slot = (W - L - R) / double(std::max<size_t>(1, c.bars.size()));
  for (size_t i = 0; i < c.bars.size(); ++i) {
    const auto& [label, v] = c.bars[i];
    const double x = L + slot * double(i), cx = x + slot / 2;
    s += text(cx, H - B + 16, label, "middle");
    if (!std::isfinite(v)) continue;
    const double y = ay.map(std::max(v, ay.lo)), y0 = ay.map(std::max(0.0, ay.lo));
    s += "<rect x=\"" + px(x + slot * 0.2) + "\" y=\"" + px(std::min(y, y0)) + "\" width=\"" +
         px(slot * 0.6) + "\" height=\"" + px(std::abs(y0 - y)) + "\" fill=\"" + color(i) +
         "\"><title>" + esc(label) + ": " + fmt("%.6g", v) + "</title></rect>\n";
    s += text(cx, std::min(y, y0) - 5, fmt(c.value_format.c_str(), v), "middle");
  }
  s += "<rect x=\"" + px(L) + "\" y=\"" + px(T) + "\" width=\"" + px(W - L - R) + "\" height=\"" +
       px(H - T - B) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  const double ym = (T + H - B) / 2;
  s += text(16, ym, c.y_label, "middle", " transform=\"rotate(-90 16 " + px(ym) + ")\"");
  if (!c.note.empty()) s += text(L, H - 10, c.note, "start", " font-size=\"11\" fill=\"#555\"");
  return s + "</svg>\n";
}

std::string binary_count_label(double v) {
  const char* units[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (std::abs(v) >= 1024 && u < 4) v /= 1024, ++u;
  return fmt("%g", v) + units[u];
}

}  // namespace jamba
