//! SVG plots of failover-latency distributions, using nothing beyond `std`.
//!
//! [`latency_svg`] draws one empirical CDF per [`Series`]: for every latency on the x axis, the
//! share of that series' trials that recovered at or below it. A CDF rather than a histogram
//! because failover benches run tens of trials, too few for bins to mean anything, while a CDF
//! shows every trial as one step and puts the percentiles where they can be read off the y axis.
//! Under the curves a strip of dots, one lane per series, shows each trial once more, so that
//! clusters and outliers stand out even where the curves overlap.
//!
//! ```ignore
//! let worker_kill = [212.0, 250.5, 298.0];
//! let svg = latency_svg("Failover latency", &[Series { name: "worker-kill", samples_ms: &worker_kill }]);
//! std::fs::write("failover.svg", svg)?;
//! ```
//!
//! Percentiles are nearest-rank: the p-th percentile of n samples is the ⌈p·n/100⌉-th smallest
//! (the first if that is 0). It is always a latency that was observed, never an interpolation,
//! so with 20 trials p99 is simply the slowest one.

use std::fmt::{self, Write as _};

/// One series of a latency plot: a name (e.g. "worker-kill") and its samples in milliseconds.
///
/// NaN and infinite samples are skipped and negative ones count as 0 ms, so that a stray bad
/// measurement costs one point instead of the whole plot. Positive samples are clamped to
/// 0.001 ms–10¹² ms, the range the axis can label.
#[derive(Clone, Copy, Debug)]
pub struct Series<'a> {
    /// The name shown in the legend and in tooltips.
    pub name: &'a str,
    /// One latency per trial, in milliseconds, in any order.
    pub samples_ms: &'a [f64],
}

/// An SVG document (a String) that plots each series' samples as an empirical CDF.
///
/// The x axis is the latency in ms, on a log10 scale when the largest sample is more than 50
/// times the smallest positive one and linear otherwise; the y axis is the fraction of trials
/// at or below that latency, 0–100%. Each series gets its own colour (eight, then repeated
/// dashed), its p50 and p99 marked as dots on its curve, a legend line
/// "name — p50 X ms, p99 Y ms, n=N", and one dot per sample in a strip under the plot. Series
/// without a usable sample are listed as "name — (no samples)" and not drawn. A name too long
/// for its legend column is shortened with "…" there (and shown whole in tooltips).
///
/// The document is a standalone SVG 1.1 image of 900×520 px; the same input always gives the
/// same bytes.
pub fn latency_svg(title: &str, series: &[Series<'_>]) -> String {
    let series: Vec<Prepared<'_>> = series.iter().map(Prepared::new).collect();
    let axis = XAxis::fit(series.iter().flat_map(|s| s.sorted.iter().copied()));
    let layout = Layout::new(&series);
    let legend: Vec<String> = series.iter().map(|s| s.legend_text(layout.legend_chars())).collect();
    let mut svg = SvgWriter::default();
    svg.line(format_args!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}""#,
            r#" font-family="Helvetica, Arial, sans-serif" fill="{text}">"#
        ),
        w = WIDTH,
        h = HEIGHT,
        text = TEXT
    ));
    svg.line(format_args!("<title>{}</title>", escape(title)));
    svg.line(format_args!(r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##));
    svg.line(format_args!(
        r#"<text x="{}" y="28" font-size="17" font-weight="bold" text-anchor="middle">{}</text>"#,
        num((PLOT_LEFT + PLOT_RIGHT) / 2.0),
        escape(title)
    ));
    draw_y_axis(&mut svg, &layout);
    draw_x_axis(&mut svg, &layout, &axis);
    if series.iter().all(|s| s.sorted.is_empty()) {
        svg.line(format_args!(
            r##"<text x="{}" y="{}" font-size="14" text-anchor="middle" fill="#888888">no samples</text>"##,
            num((PLOT_LEFT + PLOT_RIGHT) / 2.0),
            num((PLOT_TOP + layout.plot_bottom) / 2.0)
        ));
    }
    draw_strip(&mut svg, &layout, &axis, &series);
    for (index, s) in series.iter().enumerate() {
        draw_cdf(&mut svg, &layout, &axis, index, s);
    }
    draw_legend(&mut svg, &layout, &series, &legend);
    svg.line(format_args!("</svg>"));
    svg.out
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 520.0;
const PLOT_LEFT: f64 = 76.0;
const PLOT_RIGHT: f64 = WIDTH - 30.0;
const PLOT_TOP: f64 = 48.0;
/// The vertical room one series' row of sample dots takes in the strip.
const LANE_HEIGHT: f64 = 8.0;
const LEGEND_ROW_HEIGHT: f64 = 19.0;
/// Where a legend line's text starts, right of its colour swatch.
const LEGEND_TEXT_OFFSET: f64 = 32.0;
/// A generous average glyph width of 12 px sans-serif (DejaVu Sans is the widest common
/// fallback), to fit legend lines into their column without measuring text.
const LEGEND_CHAR_WIDTH: f64 = 7.0;
/// When the data reaches to within this fraction of an end of the axis, the axis is extended by
/// as much, so that the end dots are not cut by the frame.
const EDGE_MARGIN: f64 = 0.015;
/// Above this ratio of largest to smallest sample a linear axis squeezes the fast trials into a
/// few pixels, so the axis turns logarithmic.
const LOG_SCALE_RATIO: f64 = 50.0;
/// Roughly how many intervals a linear axis is divided into.
const LINEAR_TICK_TARGET: f64 = 6.0;
/// Beyond this many decades the 2 and 5 labels of a log axis would overlap, so only the
/// decades are labelled.
const LOG_LABEL_MAX_DECADES: f64 = 5.0;
/// Positive samples are clamped to `MIN_MS..=MAX_MS`: below a microsecond the labels would need
/// endless decimals, above 30 years the axis arithmetic could overflow, and neither is a latency.
const MIN_MS: f64 = 1e-3;
const MAX_MS: f64 = 1e12;
/// A log axis labels at most about this many decades; wider ones label every second, third….
const LOG_MAX_DECADE_LABELS: f64 = 8.0;
/// Above this many decades the 3, 4, 6… ticks would fuse into a grey band, so they are left out.
const LOG_MINOR_MAX_DECADES: f64 = 10.0;
/// The strip never takes more height than this, however many series share it.
const STRIP_MAX_HEIGHT: f64 = 72.0;
const TEXT: &str = "#333333";
const GRID: &str = "#e3e3e3";
const MINOR_GRID: &str = "#f1f1f1";
const FRAME: &str = "#9a9a9a";
/// Okabe–Ito's colour-blind-safe palette, without its yellow (unreadable on white), plus a brown.
const PALETTE: [&str; 8] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#8c564b"];

/// A series reduced to what is drawn: its usable samples in ascending order.
struct Prepared<'a> {
    name: &'a str,
    sorted: Vec<f64>,
}

impl<'a> Prepared<'a> {
    fn new(series: &Series<'a>) -> Self {
        let mut sorted: Vec<f64> = series
            .samples_ms
            .iter()
            .filter(|v| v.is_finite())
            // `max(0.0)` would keep -0.0, which prints as "-0".
            .map(|&v| if v > 0.0 { v.clamp(MIN_MS, MAX_MS) } else { 0.0 })
            .collect();
        sorted.sort_by(f64::total_cmp);
        Prepared { name: series.name, sorted }
    }

    /// The legend line, at most about `max_chars` long: the figures are what the legend is
    /// for, so it is the name that gets shortened.
    fn legend_text(&self, max_chars: usize) -> String {
        let figures = if self.sorted.is_empty() {
            "(no samples)".to_owned()
        } else {
            let (_, p50) = nearest_rank(&self.sorted, 50);
            let (_, p99) = nearest_rank(&self.sorted, 99);
            format!("p50 {} ms, p99 {} ms, n={}", format_ms(p50), format_ms(p99), self.sorted.len())
        };
        let room = max_chars.saturating_sub(figures.chars().count() + 3).max(12);
        let name = if self.name.chars().count() > room {
            self.name.chars().take(room - 1).chain(['…']).collect()
        } else {
            self.name.to_owned()
        };
        format!("{name} — {figures}")
    }
}

/// The nearest-rank `percent`-th percentile of `sorted` (ascending, not empty) and its rank,
/// counted from 1: the ⌈percent·n/100⌉-th smallest sample, and at least the first.
fn nearest_rank(sorted: &[f64], percent: usize) -> (usize, f64) {
    let rank = (percent * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    (rank, sorted[rank - 1])
}

/// Milliseconds with about three significant digits: enough to compare runs, few enough to read.
fn format_ms(ms: f64) -> String {
    let decimals = match ms {
        0.0 => return "0".to_owned(),
        ms if ms >= 100.0 => 0,
        ms if ms >= 10.0 => 1,
        ms if ms >= 1.0 => 2,
        _ => 3,
    };
    format!("{ms:.decimals$}")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    Linear,
    Log,
}

/// The scale for samples from `min_positive` (the smallest sample above 0, if any) to `max`.
fn choose_scale(min_positive: Option<f64>, max: f64) -> Scale {
    match min_positive {
        Some(min) if max / min > LOG_SCALE_RATIO => Scale::Log,
        _ => Scale::Linear,
    }
}

/// The shared x axis: its scale, its range in ms and its ticks.
struct XAxis {
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<Tick>,
}

struct Tick {
    value: f64,
    /// Unlabelled ticks are the log axis' 3, 4, 6… which only help the eye to gauge distances.
    label: Option<String>,
    /// Major ticks get a stronger grid line: every linear tick, the decades on a log axis.
    major: bool,
}

impl XAxis {
    fn fit(samples: impl Iterator<Item = f64>) -> XAxis {
        let (mut min, mut max, mut min_positive) = (f64::INFINITY, f64::NEG_INFINITY, None::<f64>);
        for v in samples {
            min = min.min(v);
            max = max.max(v);
            if v > 0.0 {
                min_positive = Some(min_positive.map_or(v, |m| m.min(v)));
            }
        }
        if min > max {
            // No samples at all: the axis that all samples at 0 would get.
            return XAxis::linear(0.0, 0.0);
        }
        match (choose_scale(min_positive, max), min_positive) {
            (Scale::Log, Some(min_positive)) => XAxis::log(min_positive, max),
            _ => XAxis::linear(min, max),
        }
    }

    fn linear(min: f64, max: f64) -> XAxis {
        let (lo, hi) = if max - min <= max * 1e-6 {
            // All samples equal: show the value against a zero-based axis rather than invent a spread.
            (0.0, if max > 0.0 { max * 1.25 } else { 1.0 })
        } else {
            // Starting at 0 keeps distances honest when that costs at most half of the axis;
            // a narrow cluster far from 0 gets the room instead.
            (if min <= max / 2.0 { 0.0 } else { min }, max)
        };
        let (step, exponent) = nice_step((hi - lo) / LINEAR_TICK_TARGET);
        let first = (lo / step).floor() as i64;
        let last = ((hi / step).ceil() as i64).max(first + 1);
        let decimals = (-exponent).max(0) as usize;
        let ticks = (first..=last)
            .map(|k| {
                let value = k as f64 * step;
                Tick { value, label: Some(format!("{value:.decimals$}")), major: true }
            })
            .collect();
        let (lo, hi) = with_margins(first as f64 * step, last as f64 * step, min, max, first == 0);
        XAxis { scale: Scale::Linear, lo, hi, ticks }
    }

    fn log(min: f64, max: f64) -> XAxis {
        let (lo, hi) = (nice_down(min), nice_up(max));
        let decades = (hi / lo).log10();
        let decade_stride = (decades / LOG_MAX_DECADE_LABELS).ceil().max(1.0) as i32;
        let mut ticks = Vec::new();
        for exponent in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
            for mantissa in 1..=9 {
                let value = f64::from(mantissa) * 10f64.powi(exponent);
                let in_range = value >= lo * (1.0 - 1e-9) && value <= hi * (1.0 + 1e-9);
                if !in_range || (mantissa != 1 && decades > LOG_MINOR_MAX_DECADES) {
                    continue;
                }
                let labelled = (mantissa == 1 && exponent.rem_euclid(decade_stride) == 0)
                    || (matches!(mantissa, 2 | 5) && decades <= LOG_LABEL_MAX_DECADES);
                let decimals = (-exponent).max(0) as usize;
                let label = labelled.then(|| format!("{value:.decimals$}"));
                ticks.push(Tick { value, label, major: mantissa == 1 });
            }
        }
        let (lo, hi) = with_margins(lo.log10(), hi.log10(), min.log10(), max.log10(), false);
        XAxis { scale: Scale::Log, lo: 10f64.powf(lo), hi: 10f64.powf(hi), ticks }
    }

    /// Where `ms` lies along the axis, from 0 (left end) to 1 (right end). On a log axis, 0 ms
    /// has no place and is pinned to the left end.
    fn fraction(&self, ms: f64) -> f64 {
        let fraction = match self.scale {
            Scale::Linear => (ms - self.lo) / (self.hi - self.lo),
            Scale::Log => (ms.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
        };
        fraction.clamp(0.0, 1.0)
    }

    fn x(&self, ms: f64) -> f64 {
        PLOT_LEFT + self.fraction(ms) * (PLOT_RIGHT - PLOT_LEFT)
    }

    fn title(&self) -> &'static str {
        match self.scale {
            Scale::Linear => "latency (ms)",
            Scale::Log => "latency (ms, log scale)",
        }
    }
}

/// The axis ends `lo`..`hi`, each pushed out by [`EDGE_MARGIN`] of the span if the data
/// (`min`..`max`) comes that close to it. A linear axis starting at 0 keeps 0 at its end, which
/// is where the eye expects it.
fn with_margins(lo: f64, hi: f64, min: f64, max: f64, keep_lo: bool) -> (f64, f64) {
    let margin = (hi - lo) * EDGE_MARGIN;
    let lo = if !keep_lo && min - lo < margin { lo - margin } else { lo };
    let hi = if hi - max < margin { hi + margin } else { hi };
    (lo, hi)
}

/// A 1, 2 or 5 × 10^k step close to `raw`, with the k of its last significant digit.
fn nice_step(raw: f64) -> (f64, i32) {
    let mut exponent = raw.log10().floor() as i32;
    let magnitude = 10f64.powi(exponent);
    let mantissa = match raw / magnitude {
        n if n < 1.5 => 1.0,
        n if n < 3.5 => 2.0,
        n if n < 7.5 => 5.0,
        _ => {
            exponent += 1;
            1.0
        }
    };
    (mantissa * 10f64.powi(exponent), exponent)
}

/// The largest 1, 2 or 5 × 10^k at or below `v` (> 0).
fn nice_down(v: f64) -> f64 {
    let magnitude = 10f64.powi(v.log10().floor() as i32);
    [5.0, 2.0, 1.0].into_iter().map(|m| m * magnitude).find(|&c| c <= v * (1.0 + 1e-9)).unwrap_or(magnitude / 2.0)
}

/// The smallest 1, 2 or 5 × 10^k at or above `v` (> 0).
fn nice_up(v: f64) -> f64 {
    let magnitude = 10f64.powi(v.log10().floor() as i32);
    [1.0, 2.0, 5.0].into_iter().map(|m| m * magnitude).find(|&c| c >= v * (1.0 - 1e-9)).unwrap_or(magnitude * 10.0)
}

/// Vertical positions, which depend on how many strip lanes and legend rows there are; the
/// CDF takes whatever height is left, so the image keeps its size. That leaves it readable up
/// to a dozen or two series; past that the legend crowds it out.
struct Layout {
    plot_bottom: f64,
    strip_top: f64,
    axis_y: f64,
    lane_height: f64,
    legend_top: f64,
    legend_columns: usize,
}

impl Layout {
    fn new(series: &[Prepared<'_>]) -> Layout {
        let lanes = series.iter().filter(|s| !s.sorted.is_empty()).count().max(1) as f64;
        let lane_height = LANE_HEIGHT.min(STRIP_MAX_HEIGHT / lanes);
        // Two columns keep eight series to four rows, leaving the plot most of the height.
        let legend_columns = if series.len() <= 3 { 1 } else { 2 };
        let legend_rows = series.len().div_ceil(legend_columns).max(1);
        let legend_top = HEIGHT - 12.0 - legend_rows as f64 * LEGEND_ROW_HEIGHT;
        // From the legend up: axis title, tick labels, the axis line under the strip, the strip.
        let axis_y = legend_top - 48.0;
        let strip_top = axis_y - lanes * lane_height - 6.0;
        Layout { plot_bottom: strip_top - 6.0, strip_top, axis_y, lane_height, legend_top, legend_columns }
    }

    fn legend_column_width(&self) -> f64 {
        (PLOT_RIGHT - PLOT_LEFT) / self.legend_columns as f64
    }

    /// How many characters of legend text fit in a column.
    fn legend_chars(&self) -> usize {
        ((self.legend_column_width() - LEGEND_TEXT_OFFSET - 8.0) / LEGEND_CHAR_WIDTH) as usize
    }

    fn y(&self, fraction: f64) -> f64 {
        self.plot_bottom - fraction * (self.plot_bottom - PLOT_TOP)
    }
}

fn draw_y_axis(svg: &mut SvgWriter, layout: &Layout) {
    for percent in [0, 25, 50, 75, 100] {
        let y = num(layout.y(f64::from(percent) / 100.0));
        svg.line(format_args!(
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{GRID}" stroke-width="1"/>"#,
            num(PLOT_LEFT),
            num(PLOT_RIGHT)
        ));
        svg.line(format_args!(
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{percent}%</text>"#,
            num(PLOT_LEFT - 8.0),
            num(layout.y(f64::from(percent) / 100.0) + 4.0)
        ));
    }
    let middle = num((PLOT_TOP + layout.plot_bottom) / 2.0);
    svg.line(format_args!(
        concat!(
            r#"<text x="20" y="{middle}" font-size="12" text-anchor="middle" transform="rotate(-90 20 {middle})">"#,
            "trials at or below latency</text>"
        ),
        middle = middle
    ));
}

/// The x grid runs through both the CDF and the strip, and the axis line with its labels sits
/// under the strip, so that one scale serves both.
fn draw_x_axis(svg: &mut SvgWriter, layout: &Layout, axis: &XAxis) {
    svg.line(format_args!(
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="#f7f7f7"/>"##,
        num(PLOT_LEFT),
        num(layout.strip_top),
        num(PLOT_RIGHT - PLOT_LEFT),
        num(layout.axis_y - layout.strip_top)
    ));
    for tick in &axis.ticks {
        let x = num(axis.x(tick.value));
        let colour = if tick.major { GRID } else { MINOR_GRID };
        svg.line(format_args!(
            r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{colour}" stroke-width="1"/>"#,
            num(PLOT_TOP),
            num(layout.axis_y)
        ));
        let length = if tick.label.is_some() { 5.0 } else { 3.0 };
        svg.line(format_args!(
            r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{FRAME}" stroke-width="1"/>"#,
            num(layout.axis_y),
            num(layout.axis_y + length)
        ));
        if let Some(label) = &tick.label {
            svg.line(format_args!(
                r#"<text x="{x}" y="{}" font-size="11" text-anchor="middle">{label}</text>"#,
                num(layout.axis_y + 18.0)
            ));
        }
    }
    svg.line(format_args!(
        r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="{FRAME}" stroke-width="1"/>"#,
        num(PLOT_LEFT),
        num(PLOT_TOP),
        num(PLOT_RIGHT - PLOT_LEFT),
        num(layout.plot_bottom - PLOT_TOP)
    ));
    svg.line(format_args!(
        r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{FRAME}" stroke-width="1"/>"#,
        num(PLOT_LEFT),
        num(PLOT_RIGHT),
        y = num(layout.axis_y)
    ));
    svg.line(format_args!(
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
        num((PLOT_LEFT + PLOT_RIGHT) / 2.0),
        num(layout.axis_y + 36.0),
        axis.title()
    ));
}

/// One lane of translucent dots per non-empty series, in legend order: overlapping trials show
/// as darker dots instead of vanishing.
fn draw_strip(svg: &mut SvgWriter, layout: &Layout, axis: &XAxis, series: &[Prepared<'_>]) {
    let drawn = series.iter().enumerate().filter(|(_, s)| !s.sorted.is_empty());
    for (lane, (index, s)) in drawn.enumerate() {
        let y = num(layout.strip_top + 3.0 + (lane as f64 + 0.5) * layout.lane_height);
        svg.line(format_args!(r#"<g fill="{}" fill-opacity="0.55">"#, colour(index)));
        for &ms in &s.sorted {
            svg.line(format_args!(
                r#"<circle cx="{}" cy="{y}" r="2.8"><title>{}: {} ms</title></circle>"#,
                num(axis.x(ms)),
                escape(s.name),
                format_ms(ms)
            ));
        }
        svg.line(format_args!("</g>"));
    }
}

/// The empirical CDF as a step line: at each sample it rises by 1/n, so a run of equal samples
/// is one taller step. Then the p50 and p99 dots, where the curve reaches their ranks.
fn draw_cdf(svg: &mut SvgWriter, layout: &Layout, axis: &XAxis, index: usize, s: &Prepared<'_>) {
    if s.sorted.is_empty() {
        return;
    }
    let n = s.sorted.len() as f64;
    let mut points = String::new();
    for (i, &ms) in s.sorted.iter().enumerate() {
        let x = num(axis.x(ms));
        points.push_str(&format!("{x},{} {x},{} ", num(layout.y(i as f64 / n)), num(layout.y((i + 1) as f64 / n))));
    }
    svg.line(format_args!(
        concat!(
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{} stroke-linejoin="round">"#,
            "<title>{}</title></polyline>"
        ),
        points.trim_end(),
        colour(index),
        dash(index),
        escape(s.name)
    ));
    for percent in [50, 99] {
        let (rank, ms) = nearest_rank(&s.sorted, percent);
        svg.line(format_args!(
            concat!(
                r##"<circle cx="{}" cy="{}" r="4.5" fill="{}" stroke="#ffffff" stroke-width="1.5">"##,
                "<title>{} p{}: {} ms</title></circle>"
            ),
            num(axis.x(ms)),
            num(layout.y(rank as f64 / n)),
            colour(index),
            escape(s.name),
            percent,
            format_ms(ms)
        ));
    }
}

fn draw_legend(svg: &mut SvgWriter, layout: &Layout, series: &[Prepared<'_>], legend: &[String]) {
    let column_width = layout.legend_column_width();
    let rows = series.len().div_ceil(layout.legend_columns);
    for (index, (s, text)) in series.iter().zip(legend).enumerate() {
        // Fill columns top to bottom, so the order reads like a list.
        let (column, row) = (index / rows, index % rows);
        let x = PLOT_LEFT + column as f64 * column_width;
        let y = layout.legend_top + (row as f64 + 0.5) * LEGEND_ROW_HEIGHT;
        let opacity = if s.sorted.is_empty() { "0.3" } else { "1" };
        svg.line(format_args!(
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{} stroke-opacity="{opacity}"/>"#,
            num(x),
            num(x + 24.0),
            colour(index),
            dash(index),
            y = num(y)
        ));
        if !s.sorted.is_empty() {
            svg.line(format_args!(
                r##"<circle cx="{}" cy="{}" r="4" fill="{}" stroke="#ffffff" stroke-width="1.5"/>"##,
                num(x + 12.0),
                num(y),
                colour(index)
            ));
        }
        svg.line(format_args!(
            r#"<text x="{}" y="{}" font-size="12"><title>{}</title>{}</text>"#,
            num(x + LEGEND_TEXT_OFFSET),
            num(y + 4.0),
            escape(s.name),
            escape(text)
        ));
    }
}

fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// Past the palette colours repeat, so the second round is dashed to stay distinguishable.
fn dash(index: usize) -> &'static str {
    if index < PALETTE.len() { "" } else { r#" stroke-dasharray="6 3""# }
}

/// A coordinate with one decimal, plenty at this size. Every value drawn is clamped to the plot
/// first, so it is always finite.
fn num(v: f64) -> String {
    format!("{v:.1}")
}

/// `text` made safe for SVG text and attribute values: markup characters become entities, and
/// control characters, which XML 1.0 forbids, become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Collects the document one element per line.
#[derive(Default)]
struct SvgWriter {
    out: String,
}

impl SvgWriter {
    fn line(&mut self, element: fmt::Arguments<'_>) {
        // Writing into a String only fails if a Display impl does, and ours are all std's.
        let _ = self.out.write_fmt(element);
        self.out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series<'a>(name: &'a str, samples_ms: &'a [f64]) -> Series<'a> {
        Series { name, samples_ms }
    }

    fn one_to(n: u32) -> Vec<f64> {
        (1..=n).map(f64::from).collect()
    }

    #[test]
    fn is_a_standalone_svg_document() {
        let svg = latency_svg("failover", &[series("worker-kill", &[200.0, 250.0])]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.contains(r#"width="900" height="520" viewBox="0 0 900 520""#));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn draws_one_curve_per_non_empty_series() {
        let (a, b) = (one_to(20), one_to(5));
        let svg =
            latency_svg("t", &[series("a", &a), series("empty", &[]), series("b", &b), series("nan", &[f64::NAN])]);
        assert_eq!(svg.matches("<polyline").count(), 2);
    }

    #[test]
    fn legend_lists_percentiles_and_counts() {
        let (a, b) = (one_to(100), one_to(20));
        let svg = latency_svg("t", &[series("worker-kill", &a), series("node-kill", &b), series("none", &[])]);
        assert!(svg.contains("worker-kill — p50 50.0 ms, p99 99.0 ms, n=100"), "{svg}");
        // Nearest rank on 20 samples: p50 is the 10th, p99 the 20th.
        assert!(svg.contains("node-kill — p50 10.0 ms, p99 20.0 ms, n=20"), "{svg}");
        assert!(svg.contains("none — (no samples)"), "{svg}");
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[7.0], 50), (1, 7.0));
        assert_eq!(nearest_rank(&[7.0], 99), (1, 7.0));
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50), (2, 2.0));
        assert_eq!(nearest_rank(&one_to(1000), 99), (990, 990.0));
    }

    #[test]
    fn escapes_text() {
        let svg = latency_svg("a \"b\" & 'c' <d>", &[series("<&>", &[1.0, 2.0])]);
        assert!(svg.contains("&lt;&amp;&gt;"));
        assert!(svg.contains("a &quot;b&quot; &amp; &apos;c&apos; &lt;d&gt;"));
        assert!(!svg.contains("<&>"));
        assert!(!svg.contains("<d>"));
        assert!(!svg.contains("& "));

        let svg = latency_svg("bell\u{7}", &[]);
        assert!(svg.contains("bell\u{fffd}") && !svg.contains('\u{7}'));
    }

    #[test]
    fn degenerate_samples_stay_finite() {
        let cases: [&[f64]; 6] = [
            &[250.0],
            &[300.0; 10],
            &[0.0],
            &[-5.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY],
            &[-5.0, 0.0, 1.0, 10_000.0],
            &[f64::MAX, 1e-300],
        ];
        for samples in cases {
            let svg = latency_svg("t", &[series("s", samples)]);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{samples:?}:\n{svg}");
        }
        // Samples from 1 µs to 30 years: decades labelled sparsely enough not to overlap.
        let svg = latency_svg("t", &[series("s", &[1e-300, f64::MAX])]);
        assert!(svg.contains(">0.01<") && svg.contains(">1000000000000<"), "{svg}");
        assert!(svg.matches("<text").count() < 20, "{svg}");

        let svg = latency_svg("t", &[series("negative", &[-5.0, 3.0])]);
        assert!(svg.contains("negative — p50 0 ms, p99 3.00 ms, n=2"), "{svg}");
        assert!(!svg.contains("-0"));
    }

    #[test]
    fn chooses_log_scale_for_wide_ranges() {
        assert_eq!(choose_scale(Some(1.0), 10_000.0), Scale::Log);
        assert_eq!(choose_scale(Some(100.0), 300.0), Scale::Linear);
        assert_eq!(choose_scale(None, 0.0), Scale::Linear);

        let wide = latency_svg("t", &[series("s", &[1.0, 30.0, 10_000.0])]);
        assert!(wide.contains("latency (ms, log scale)"));
        for label in [">1<", ">10<", ">100<", ">1000<", ">10000<", ">2<", ">5000<"] {
            assert!(wide.contains(label), "{label} missing:\n{wide}");
        }
        let narrow = latency_svg("t", &[series("s", &[100.0, 200.0, 300.0])]);
        assert!(narrow.contains("latency (ms)<"));
    }

    #[test]
    fn linear_ticks_are_nice() {
        let labels = |axis: XAxis| axis.ticks.into_iter().filter_map(|t| t.label).collect::<Vec<_>>();
        // Close to 0: the axis starts there.
        assert_eq!(labels(XAxis::linear(100.0, 300.0)), ["0", "50", "100", "150", "200", "250", "300"]);
        // Far from 0: the axis spans the cluster.
        assert_eq!(
            labels(XAxis::linear(1210.0, 1590.0)),
            ["1200", "1250", "1300", "1350", "1400", "1450", "1500", "1550", "1600"]
        );
        assert_eq!(labels(XAxis::linear(0.2, 0.3)), ["0.20", "0.22", "0.24", "0.26", "0.28", "0.30"]);
        // All samples equal.
        assert_eq!(labels(XAxis::linear(250.0, 250.0)), ["0", "50", "100", "150", "200", "250", "300", "350"]);
    }

    #[test]
    fn output_is_deterministic() {
        let (a, b) = (one_to(30), [5.0, 1.0, 3.0]);
        let plot = || latency_svg("t", &[series("a", &a), series("b", &b)]);
        assert_eq!(plot(), plot());
    }
}
