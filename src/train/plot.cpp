// SVG loss curve of a training run (no plotting library on the machine: a small hand-made chart).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "io/svg_chart.h"
#include "train/trainer.h"

namespace jamba {

namespace {

std::string fmt(const char* f, double v) { return format_number(f, v); }
std::string xml_escape(const std::string& s) { return svg_escape(s); }

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about n ticks over span.
double tick_step(double span, int n) {
  const double raw = span / std::max(1, n);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

}  // namespace

std::string loss_curve_svg(const std::vector<StepRecord>& steps,
                           const std::vector<EvalRecord>& evals, const std::string& title) {
  const double W = 800, H = 460, L = 70, R = 20, T = 40, B = 50;
  double x_max = 1, y_lo = 1e30, y_hi = -1e30;
  // Smoothed training loss (exponential moving average, debiased).
  std::vector<double> smooth(steps.size());
  double ema = 0, wsum = 0;
  const double a = 0.9;
  for (size_t i = 0; i < steps.size(); ++i) {
    ema = a * ema + (1 - a) * steps[i].loss;
    wsum = a * wsum + (1 - a);
    smooth[i] = ema / wsum;
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    x_max = std::max(x_max, double(steps[i].step));
    y_lo = std::min(y_lo, double(steps[i].loss));
    // The raw curve's first steps would squash the rest: the y range follows the smoothed one.
    y_hi = std::max(y_hi, smooth[i]);
  }
  for (const EvalRecord& e : evals) {
    x_max = std::max(x_max, double(e.step));
    y_lo = std::min(y_lo, double(e.loss));
    y_hi = std::max(y_hi, double(e.loss));
  }
  if (y_lo > y_hi) y_lo = 0, y_hi = 1;
  if (y_hi - y_lo < 1e-3) y_hi = y_lo + 1e-3;
  const double pad = 0.05 * (y_hi - y_lo);
  y_lo -= pad;
  y_hi += pad;
  auto px = [&](double x) { return L + (W - L - R) * x / x_max; };
  auto py = [&](double y) {
    return T + (H - T - B) * (1 - (std::clamp(y, y_lo, y_hi) - y_lo) / (y_hi - y_lo));
  };
  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"460\" "
       "font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"800\" height=\"460\" fill=\"white\"/>\n";
  s += "<text x=\"400\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" + xml_escape(title) +
       "</text>\n";
  // Grid and ticks.
  const double ys = tick_step(y_hi - y_lo, 6);
  for (double y = std::ceil(y_lo / ys) * ys; y <= y_hi; y += ys) {
    s += "<line x1=\"" + fmt("%.1f", L) + "\" x2=\"" + fmt("%.1f", W - R) + "\" y1=\"" +
         fmt("%.1f", py(y)) + "\" y2=\"" + fmt("%.1f", py(y)) + "\" stroke=\"#e4e4e4\"/>\n";
    s += "<text x=\"" + fmt("%.1f", L - 6) + "\" y=\"" + fmt("%.1f", py(y) + 4) +
         "\" text-anchor=\"end\">" + fmt("%g", std::round(y / ys) * ys) + "</text>\n";
  }
  const double xs = tick_step(x_max, 8);
  for (double x = 0; x <= x_max + 1e-9; x += xs) {
    s += "<line x1=\"" + fmt("%.1f", px(x)) + "\" x2=\"" + fmt("%.1f", px(x)) + "\" y1=\"" +
         fmt("%.1f", T) + "\" y2=\"" + fmt("%.1f", H - B) + "\" stroke=\"#e4e4e4\"/>\n";
    s += "<text x=\"" + fmt("%.1f", px(x)) + "\" y=\"" + fmt("%.1f", H - B + 16) +
         "\" text-anchor=\"middle\">" + fmt("%g", x) + "</text>\n";
  }
  s += "<rect x=\"" + fmt("%.1f", L) + "\" y=\"" + fmt("%.1f", T) + "\" width=\"" +
       fmt("%.1f", W - L - R) + "\" height=\"" + fmt("%.1f", H - T - B) +
       "\" fill=\"none\" stroke=\"#444\"/>\n";
  s += "<text x=\"400\" y=\"450\" text-anchor=\"middle\">optimizer step</text>\n";
  s += "<text x=\"18\" y=\"250\" text-anchor=\"middle\" transform=\"rotate(-90 18 250)\">"
       "loss (nats/token)</text>\n";
  auto polyline = [&](const std::vector<std::pair<double, double>>& pts, const char* style) {
    if (pts.empty()) return;
    s += "<polyline fill=\"none\" " + std::string(style) + " points=\"";
    for (const auto& [x, y] : pts) s += fmt("%.1f", px(x)) + "," + fmt("%.1f", py(y)) + " ";
    s += "\"/>\n";
  };
  std::vector<std::pair<double, double>> raw, sm, ev;
  for (size_t i = 0; i < steps.size(); ++i) {
    raw.emplace_back(double(steps[i].step), double(steps[i].loss));
    sm.emplace_back(double(steps[i].step), smooth[i]);
  }
  for (const EvalRecord& e : evals) ev.emplace_back(double(e.step), double(e.loss));
  polyline(raw, "stroke=\"#9ecae1\" stroke-width=\"1\"");
  polyline(sm, "stroke=\"#08519c\" stroke-width=\"2\"");
  polyline(ev, "stroke=\"#d94801\" stroke-width=\"2\" stroke-dasharray=\"6,3\"");
  for (const auto& [x, y] : ev)
    s += "<circle cx=\"" + fmt("%.1f", px(x)) + "\" cy=\"" + fmt("%.1f", py(y)) +
         "\" r=\"3\" fill=\"#d94801\"/>\n";
  // Legend.
  const double lx = W - R - 200, ly = T + 14;
  s += "<rect x=\"" + fmt("%.1f", lx - 8) + "\" y=\"" + fmt("%.1f", ly - 12) +
       "\" width=\"196\" height=\"58\" fill=\"white\" stroke=\"#ccc\"/>\n";
  const char* names[3] = {"training loss (per step)", "training loss (smoothed)", "held-out loss"};
  const char* colors[3] = {"#9ecae1", "#08519c", "#d94801"};
  for (int i = 0; i < 3; ++i) {
    const double y = ly + 16.0 * i;
    s += "<line x1=\"" + fmt("%.1f", lx) + "\" x2=\"" + fmt("%.1f", lx + 24) + "\" y1=\"" +
         fmt("%.1f", y - 4) + "\" y2=\"" + fmt("%.1f", y - 4) + "\" stroke=\"" + colors[i] +
         "\" stroke-width=\"2\"/>\n";
    s += "<text x=\"" + fmt("%.1f", lx + 30) + "\" y=\"" + fmt("%.1f", y) + "\">" + names[i] +
         "</text>\n";
  }
  if (!evals.empty())
    s += "<text x=\"" + fmt("%.1f", L + 8) + "\" y=\"" + fmt("%.1f", H - B - 8) +
         "\">last held-out loss " + fmt("%.3f", evals.back().loss) + " (perplexity " +
         fmt("%.1f", std::exp(double(evals.back().loss))) + ")</text>\n";
  s += "</svg>\n";
  return s;
}

}  // namespace jamba
