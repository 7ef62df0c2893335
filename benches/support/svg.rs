//! A small SVG chart writer for the benchmark report: line charts (one or more series of
//! points) and horizontal bar charts, with axes, ticks, a legend and a caption. Enough for
//! `docs/benchmarks.md`; no plotting crate needed.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// A line chart.
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// A horizontal bar chart: one bar per (label, value).
pub struct BarChart {
    pub title: String,
    pub value_label: String,
    pub bars: Vec<(String, f64)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A tick label with as many decimals as the step between ticks needs.
fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// A bar's value: three significant digits.
fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    );
}

impl LineChart {
    pub fn to_svg(&self) -> String {
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let x_max = all().map(|p| p.0).fold(0.0, f64::max);
        let x_min = all().map(|p| p.0).fold(x_max, f64::min).min(0.0);
        let y_max = all().map(|p| p.1).fold(0.0, f64::max);
        let x_step = nice_step(x_max - x_min, 8.0);
        let y_step = nice_step(y_max, 6.0);
        let x_top = (x_max / x_step).ceil().max(1.0) * x_step;
        let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - x_min) / (x_top - x_min).max(f64::EPSILON) * plot_w;
        let sy = |y: f64| TOP + plot_h - y / y_top * plot_h;

        let mut out = String::new();
        header(&mut out, &self.title);
        // Grid, ticks and axes.
        let mut y = 0.0;
        while y <= y_top + y_step / 2.0 {
            let py = sy(y);
            let _ = writeln!(
                out,
                "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e0e0e0\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + plot_w,
                LEFT - 6.0,
                py + 4.0,
                fmt_tick(y, y_step)
            );
            y += y_step;
        }
        let mut x = (x_min / x_step).floor() * x_step;
        while x <= x_top + x_step / 2.0 {
            let px = sx(x);
            let _ = writeln!(
                out,
                "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
                 <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + plot_h,
                TOP + plot_h + 5.0,
                TOP + plot_h + 18.0,
                fmt_tick(x, x_step)
            );
            x += x_step;
        }
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b:.1}\" stroke=\"black\"/>\
             <line x1=\"{LEFT}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\" stroke=\"black\"/>\
             <text x=\"{cx:.1}\" y=\"{xl:.1}\" text-anchor=\"middle\">{xlabel}</text>\
             <text transform=\"translate(18 {cy:.1}) rotate(-90)\" text-anchor=\"middle\">{ylabel}</text>",
            b = TOP + plot_h,
            r = LEFT + plot_w,
            cx = LEFT + plot_w / 2.0,
            xl = HEIGHT - 18.0,
            cy = TOP + plot_h / 2.0,
            xlabel = escape(&self.x_label),
            ylabel = escape(&self.y_label),
        );
        // Series and legend.
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                points.join(" ")
            );
            if s.points.len() <= 40 {
                for &(x, y) in &s.points {
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                        sx(x),
                        sy(y)
                    );
                }
            }
            let ly = TOP + 8.0 + 18.0 * i as f64;
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                LEFT + 12.0,
                ly - 10.0,
                LEFT + 30.0,
                ly,
                escape(&s.name)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

impl BarChart {
    pub fn to_svg(&self) -> String {
        let max = self.bars.iter().map(|b| b.1).fold(0.0, f64::max);
        let step = nice_step(max, 6.0);
        let top = (max / step).ceil().max(1.0) * step;
        let left = 230.0;
        let plot_w = WIDTH - left - RIGHT - 40.0;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let n = self.bars.len().max(1) as f64;
        let band = plot_h / n;
        let sx = |v: f64| left + v / top * plot_w;

        let mut out = String::new();
        header(&mut out, &self.title);
        let mut v = 0.0;
        while v <= top + step / 2.0 {
            let px = sx(v);
            let _ = writeln!(
                out,
                "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#e0e0e0\"/>\
                 <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + plot_h,
                TOP + plot_h + 18.0,
                fmt_tick(v, step)
            );
            v += step;
        }
        for (i, (label, value)) in self.bars.iter().enumerate() {
            let y = TOP + band * i as f64 + band * 0.15;
            let h = band * 0.7;
            let colour = COLOURS[i % COLOURS.len()];
            let _ = writeln!(
                out,
                "<rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                (sx(*value) - left).max(0.0),
                left - 8.0,
                y + h / 2.0 + 4.0,
                escape(label),
                sx(*value) + 4.0,
                y + h / 2.0 + 4.0,
                fmt_value(*value)
            );
        }
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{TOP}\" x2=\"{left}\" y2=\"{b:.1}\" stroke=\"black\"/>\
             <text x=\"{cx:.1}\" y=\"{xl:.1}\" text-anchor=\"middle\">{label}</text>",
            b = TOP + plot_h,
            cx = left + plot_w / 2.0,
            xl = HEIGHT - 18.0,
            label = escape(&self.value_label),
        );
        out.push_str("</svg>\n");
        out
    }
}
