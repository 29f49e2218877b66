//! The HTML report's charts, drawn as inline SVG with `plotters` (its SVG backend only: text is
//! left to the browser's fonts, so nothing is loaded from the system or the network).
//!
//! Each run keeps one colour in every chart, the base first.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Run;
use crate::report::decode_histogram;

/// Run colours: a categorical palette readable on white and for most colour blindness.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(230, 120, 20),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// The colour of run `i` in every chart, as CSS, for legends drawn in HTML.
pub fn run_color(i: usize) -> String {
    let RGBColor(r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

const SIZE: (u32, u32) = (560, 300);
/// The width of full-width charts (the closer bars).
const WIDE: u32 = 1120;
const FONT: &str = "sans-serif";

/// Draws with `draw` on a fresh SVG canvas; a drawing error becomes a note in its place.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => out,
        Err(e) => format!(
            "<p class=\"chart-error\">chart not drawn: {}</p>",
            super::html::escape(&e)
        ),
    }
}

/// A series: a run's label, colour index and points.
struct Series {
    label: String,
    color: usize,
    points: Vec<(f64, f64)>,
}

/// Latency percentiles of every run on one plot, both axes logarithmic: x is the percentile
/// spread out as `1 / (1 - q)` (so 90 %, 99 %, 99.9 % are equally far apart), y the latency.
pub fn latency_curves(runs: &[Run]) -> String {
    let series: Vec<Series> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let h = decode_histogram(&r.record.histograms.total).ok()?;
            if h.is_empty() {
                return None;
            }
            // Up to the run's own resolution: beyond 1/(1-q) = count every quantile is the max.
            let reach = (h.len() as f64).clamp(1.0, 1e5);
            let steps = 200;
            let points = (0..=steps)
                .map(|k| 10f64.powf(5.0 * k as f64 / steps as f64))
                .take_while(|x| *x <= reach)
                .map(|x| {
                    let q = 1.0 - 1.0 / x;
                    (x, h.value_at_quantile(q).max(1) as f64)
                })
                .collect();
            Some(Series {
                label: r.label.clone(),
                color: i,
                points,
            })
        })
        .collect();
    if series.is_empty() {
        return no_data("no latencies recorded");
    }
    let (y_min, y_max) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let x_max = series
        .iter()
        .flat_map(|s| s.points.last().map(|p| p.0))
        .fold(10.0, f64::max);
    svg(SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Latency by percentile (total, log scales)", (FONT, 16))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (1f64..x_max).log_scale(),
                ((y_min / 1.5).max(1.0)..y_max * 1.5).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| micros(*y))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines(&mut chart, &series, SeriesLabelPosition::UpperLeft)
    })
}

/// Completions per second over the measured window, one line per run. Each second is drawn at
/// its middle; a last second that the window covers less than half of is left out, as its
/// count would read as a collapse at the end.
pub fn throughput(runs: &[Run]) -> String {
    let series: Vec<Series> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            label: r.label.clone(),
            color: i,
            points: r
                .record
                .throughput
                .timeline
                .iter()
                .filter(|s| r.record.duration_s - s.t as f64 >= 0.5)
                .map(|s| (s.t as f64 + 0.5, s.ok.saturating_add(s.errors) as f64))
                .collect(),
        })
        .collect();
    let end = runs.iter().map(|r| r.record.duration_s).fold(0.0, f64::max);
    let title = "Throughput (requests completed per second)";
    time_chart(
        title,
        "req/s",
        &series,
        end,
        None,
        SeriesLabelPosition::LowerRight,
    )
}

/// TIME_WAIT sockets held on `side` (`client` or `server`) over time, one line per run, on a
/// y scale of `y_max` shared by both sides' charts so their heights compare. Lines start at 0
/// when the load starts: the run's own sockets (those of its target port) did not exist before.
pub fn time_wait(runs: &[Run], side: &str, y_max: f64) -> String {
    let series: Vec<Series> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let timeline = &r.record.time_wait.timeline;
            let start = timeline.first().filter(|p| p.t_ms > 0).map(|_| (0.0, 0.0));
            let points = start
                .into_iter()
                .chain(timeline.iter().map(|p| {
                    let n = if side == "client" { p.client } else { p.server };
                    (p.t_ms as f64 / 1e3, n as f64)
                }))
                .collect();
            Series {
                label: r.label.clone(),
                color: i,
                points,
            }
        })
        .collect();
    let title = format!("TIME_WAIT held on the {side} side");
    // Held counts sit at the top or at 0: the middle is free for the legend.
    time_chart(
        &title,
        "sockets",
        &series,
        0.0,
        Some(y_max),
        SeriesLabelPosition::MiddleRight,
    )
}

/// The largest TIME_WAIT count of either side in any run's timeline.
pub fn time_wait_max(runs: &[Run]) -> f64 {
    runs.iter()
        .flat_map(|r| r.record.time_wait.timeline.iter())
        .map(|p| p.client.max(p.server) as f64)
        .fold(0.0, f64::max)
}

/// Lines over time in seconds, from 0 to the last point or `end`, whichever is later.
fn time_chart(
    title: &str,
    y_desc: &str,
    series: &[Series],
    end: f64,
    y_max: Option<f64>,
    legend: SeriesLabelPosition,
) -> String {
    if series.iter().all(|s| s.points.is_empty()) {
        return no_data(&format!("{title}: no timeline in these records"));
    }
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(end.max(1.0), f64::max);
    let top = y_max
        .unwrap_or_else(|| {
            series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .fold(0.0, f64::max)
        })
        .max(1.0)
        * 1.1;
    svg(SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 16))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0f64..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_desc)
            .y_label_formatter(&|y| short(*y))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines(&mut chart, series, legend)
    })
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
    legend: SeriesLabelPosition,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for s in series {
        let color = PALETTE[s.color % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())
}

/// The closer kinds, in the order and colours of the closer bars.
pub const CLOSERS: [(&str, RGBColor); 7] = [
    ("client", RGBColor(66, 133, 244)),
    ("server", RGBColor(234, 67, 53)),
    ("simultaneous", RGBColor(251, 188, 5)),
    ("client-reset", RGBColor(52, 168, 83)),
    ("server-reset", RGBColor(120, 60, 150)),
    ("refused", RGBColor(60, 60, 60)),
    ("unknown", RGBColor(190, 190, 190)),
];

/// Who closed the connections, per run: one bar of 100 %, split by closer, each part labelled
/// with its share where it is wide enough; the legend sits right of the bars, never on them.
pub fn closers(runs: &[Run]) -> String {
    let shares: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            let c = &r.record.connections.closer;
            let counts = [
                c.client,
                c.server,
                c.simultaneous,
                c.client_reset,
                c.server_reset,
                c.refused,
                c.unknown,
            ];
            let total = counts.iter().map(|&n| n as f64).sum::<f64>();
            counts
                .iter()
                .map(|&n| {
                    if total == 0.0 {
                        0.0
                    } else {
                        n as f64 / total * 100.0
                    }
                })
                .collect()
        })
        .collect();
    let n = runs.len().max(1) as i32;
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    let height = 80 + 48 * n as u32;
    svg((WIDE, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Who closed the connections (share of connections)",
                (FONT, 16),
            )
            .margin(12)
            .margin_right(28)
            .x_label_area_size(30)
            .y_label_area_size(130)
            // 100..130 is room for the legend.
            .build_cartesian_2d(0f64..130f64, (0..n - 1).into_segmented())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_x_mesh()
            .y_labels(n as usize)
            .x_label_formatter(&|x| {
                if *x <= 100.0 {
                    format!("{x:.0}%")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| match y {
                // Run 0 (the base) on top.
                SegmentValue::CenterOf(v) => {
                    let i = (n - 1 - v).max(0) as usize;
                    super::format::fit(labels.get(i).map_or("", String::as_str), 18)
                }
                _ => String::new(),
            })
            .draw()
            .map_err(|e| e.to_string())?;
        let row = |i: usize| n - 1 - i as i32;
        for (kind, (name, color)) in CLOSERS.iter().enumerate() {
            let parts: Vec<(usize, f64, f64)> = shares
                .iter()
                .enumerate()
                .filter(|(_, s)| s[kind] > 0.0)
                .map(|(i, s)| (i, s[..kind].iter().sum::<f64>(), s[kind]))
                .collect();
            if parts.is_empty() {
                continue;
            }
            let color = *color;
            chart
                .draw_series(parts.iter().map(|&(i, start, share)| {
                    let mut bar = Rectangle::new(
                        [
                            (start, SegmentValue::Exact(row(i))),
                            (start + share, SegmentValue::Exact(row(i) + 1)),
                        ],
                        color.filled(),
                    );
                    bar.set_margin(7, 7, 0, 0);
                    bar
                }))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            let style = TextStyle::from((FONT, 13).into_font())
                .color(&WHITE)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .draw_series(
                    parts
                        .iter()
                        .filter(|p| p.2 >= 12.0)
                        .map(|&(i, start, share)| {
                            Text::new(
                                format!("{name} {share:.0}%"),
                                (start + share / 2.0, SegmentValue::CenterOf(row(i))),
                                style.clone(),
                            )
                        }),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE)
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 13))
            .draw()
            .map_err(|e| e.to_string())
    })
}

fn no_data(what: &str) -> String {
    format!("<p class=\"no-data\">{}</p>", super::html::escape(what))
}

/// Lowest and highest of `values` (1 and 10 when there are none).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo.is_finite() {
        (lo, hi.max(lo * 10.0))
    } else {
        (1.0, 10.0)
    }
}

/// `1 / (1 - q)` as the percentile it stands for: 10 → `90%`, 1000 → `99.9%`.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let digits = ((x.log10() - 2.0).ceil().max(0.0)) as usize;
    format!("{p:.digits$}%")
}

/// Microseconds in a readable unit: `850µs`, `1.2ms`, `3s`.
fn micros(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0}µs")
    } else if v < 1e6 {
        format!("{}ms", trim(v / 1e3))
    } else {
        format!("{}s", trim(v / 1e6))
    }
}

/// Axis numbers: `500`, `2.5k`, `12k`, `1.5M`.
fn short(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v.abs() >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        super::format::number(v.round())
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(1e4), "99.99%");
        assert_eq!(micros(850.0), "850µs");
        assert_eq!(micros(1500.0), "1.5ms");
        assert_eq!(short(14046.0), "14k");
        assert_eq!(short(2500.0), "2.5k");
        assert_eq!(short(500.0), "500");
    }
}
