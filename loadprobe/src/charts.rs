//! The charts of the HTML reports (`compare` and `report` alike), drawn as inline SVG with
//! `plotters` (its SVG backend only: text is left to the browser's fonts, so nothing is loaded
//! from the system or the network).
//!
//! Each record keeps one colour in every chart, the first (compare's base) first.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::format::{fit, number, tenths};
use crate::model::{Side, TimeWaitPoint};
use crate::page::escape;
use crate::report::{RunRecord, decode_histogram};

/// A record as the charts draw it: the label its lines carry in legends, and its figures.
#[derive(Debug, Clone, Copy)]
pub struct Plotted<'a> {
    pub label: &'a str,
    pub record: &'a RunRecord,
}

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

/// Lines that are not a record's: budgets and failures.
const GREY: RGBColor = RGBColor(110, 110, 110);
const RED: RGBColor = RGBColor(198, 40, 40);

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
            escape(&e)
        ),
    }
}

/// The frame of a line chart: its caption, margins and room for the axes' labels.
fn line_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FONT, 16))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(36)
        .y_label_area_size(64);
    builder
}

/// A line: its legend label, colour and points.
struct Series {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// A moment marked on a time chart with a vertical line and a note.
struct Mark {
    x: f64,
    note: String,
}

/// The colour of record `i`.
fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// One latency curve: its legend label and the encoded histogram it is read from.
#[derive(Debug, Clone, Copy)]
pub struct Curve<'a> {
    pub label: &'a str,
    pub histogram: &'a str,
}

/// Latency percentiles, one curve per histogram (coloured by its place in `curves`; an empty
/// histogram draws nothing), both axes logarithmic: x is the percentile spread out as
/// `1 / (1 - q)` (so 90 %, 99 %, 99.9 % are equally far apart), y the latency.
pub fn latency_curves(title: &str, curves: &[Curve<'_>]) -> String {
    let series: Vec<Series> = curves
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let h = decode_histogram(c.histogram).ok()?;
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
                label: c.label.to_string(),
                color: color(i),
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
        let mut chart = line_chart(root, title)
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

/// The seconds of a record's throughput timeline that count: each drawn at its middle, a last
/// second that the window covers less than half of left out, as its count would read as a
/// collapse at the end.
fn whole_seconds(r: &RunRecord) -> impl Iterator<Item = (f64, &crate::report::TimelineSecond)> {
    r.throughput
        .timeline
        .iter()
        .filter(|s| r.duration_s - s.t as f64 >= 0.5)
        .map(|s| (s.t as f64 + 0.5, s))
}

/// Requests of one run per second: those that succeeded and those that failed, the failures'
/// classes (totals over the run) named in the legend.
pub fn requests(p: Plotted<'_>) -> String {
    let r = p.record;
    let classes: Vec<String> = r
        .requests
        .errors
        .iter()
        .map(|(class, n)| format!("{class} {}", number(*n as f64)))
        .collect();
    let failed = if classes.is_empty() {
        "failed".to_string()
    } else {
        fit(&format!("failed: {}", classes.join(", ")), 48)
    };
    let series = [
        Series {
            label: "ok".into(),
            color: PALETTE[2],
            points: whole_seconds(r).map(|(t, s)| (t, s.ok as f64)).collect(),
        },
        Series {
            label: failed,
            color: RED,
            points: whole_seconds(r)
                .map(|(t, s)| (t, s.errors as f64))
                .collect(),
        },
    ];
    time_chart(TimeChart {
        size: SIZE,
        title: "Requests per second, ok and failed",
        y_desc: "req/s",
        series: &series,
        end: r.duration_s,
        y_max: None,
        legend: SeriesLabelPosition::LowerRight,
        marks: &[],
        filled: false,
    })
}

/// Failed requests of one run per second, stacked by class: the largest class over the run at
/// the bottom, each band as high as that class's count, so the top line is all failures.
pub fn errors_by_class(p: Plotted<'_>) -> String {
    let r = p.record;
    let title = "Failed requests per second by class";
    if r.requests.errors.is_empty() {
        return no_data(&format!("{title}: no request failed"));
    }
    let seconds: Vec<(f64, &BTreeMap<String, u64>)> = whole_seconds(r)
        .filter_map(|(t, s)| Some((t, s.error_classes.as_ref()?)))
        .collect();
    if seconds.is_empty() {
        return no_data(&format!(
            "{title}: the record has no per-class counts per second (written before them)"
        ));
    }
    let mut classes: Vec<(&String, &u64)> = r.requests.errors.iter().collect();
    classes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut below = vec![0u64; seconds.len()];
    let mut bands: Vec<Series> = classes
        .iter()
        .enumerate()
        .map(|(i, (class, total))| {
            let points = seconds
                .iter()
                .zip(&mut below)
                .map(|((t, by_class), under)| {
                    *under += by_class.get(*class).copied().unwrap_or(0);
                    (*t, *under as f64)
                })
                .collect();
            Series {
                label: format!("{class} {}", number(**total as f64)),
                color: color(i),
                points,
            }
        })
        .collect();
    // The top band first, so the legend reads as the stack does, and each lower band is
    // painted over the one above it.
    bands.reverse();
    time_chart(TimeChart {
        size: SIZE,
        title,
        y_desc: "failed/s",
        series: &bands,
        end: r.duration_s,
        y_max: None,
        legend: SeriesLabelPosition::UpperRight,
        marks: &[],
        filled: true,
    })
}

/// Timewait sockets of one run per side and substate over time: TIME_WAIT, and the orphaned
/// FIN_WAIT2 sockets (the peer's FIN never came) that hold their port as long but are no
/// TIME_WAIT. A side whose FIN_WAIT2 the record cannot tell is left out.
pub fn time_wait_substates(p: Plotted<'_>) -> String {
    let r = p.record;
    let title = "Timewait sockets by substate";
    let timeline = &r.time_wait.timeline;
    let mut series = Vec::new();
    for (i, side) in Side::ALL.into_iter().enumerate() {
        let time_wait = |p: &TimeWaitPoint| p.time_wait(side);
        let fin_wait2 = |p: &TimeWaitPoint| p.fin_wait2(side);
        if !timeline.iter().any(|p| fin_wait2(p).is_some()) {
            continue;
        }
        series.push(Series {
            label: format!("{side} TIME_WAIT"),
            color: color(2 * i),
            points: from_zero(timeline, time_wait),
        });
        series.push(Series {
            label: format!("{side} FIN_WAIT2"),
            color: color(2 * i + 1),
            points: from_zero(timeline, |p| fin_wait2(p).unwrap_or(0)),
        });
    }
    if series.is_empty() {
        return no_data(&format!(
            "{title}: the record does not tell FIN_WAIT2 from TIME_WAIT over time (TIME_WAIT \
             source {})",
            r.time_wait.source
        ));
    }
    time_chart(TimeChart {
        size: SIZE,
        title,
        y_desc: "sockets",
        series: &series,
        end: 0.0,
        y_max: None,
        legend: SeriesLabelPosition::MiddleRight,
        marks: &[],
        filled: false,
    })
}

/// The port budget of one run towards its target: client ports held in TIME_WAIT each second
/// against the ports that exist towards that destination; where the record forecasts
/// exhaustion, also the line the held ports follow without reuse (closes/s × t plus the
/// connections open at once, up to 60 s of TIME_WAIT) and the second it crosses the budget.
pub fn port_budget(p: Plotted<'_>) -> String {
    let r = p.record;
    let b = &r.port_budget;
    let forecast = b.exhaustion_after_s;
    let end = r
        .duration_s
        .max(forecast.map_or(0.0, |t| t * 1.15))
        .max(1.0);
    let mut series = vec![Series {
        label: "client ports held in TIME_WAIT".into(),
        color: color(0),
        points: from_zero(&r.time_wait.timeline, |p| p.client),
    }];
    if let Some(ports) = b.ports_per_destination {
        series.push(Series {
            label: format!("ports towards the target: {}", number(ports as f64)),
            color: GREY,
            points: vec![(0.0, ports as f64), (end, ports as f64)],
        });
    }
    let mut marks = Vec::new();
    if let Some(t) = forecast {
        let rate = b.client_time_wait_per_s;
        let tw = b.time_wait_s as f64;
        let open = (b.ports_needed - rate * tw).max(0.0);
        let steps = 100;
        series.push(Series {
            label: format!(
                "without reuse: {} closes/s held {} s",
                number(rate.round()),
                b.time_wait_s
            ),
            color: RED,
            points: (0..=steps)
                .map(|k| end * k as f64 / steps as f64)
                .map(|x| (x, open + rate * x.min(tw)))
                .collect(),
        });
        marks.push(Mark {
            x: t,
            note: format!("ports run out at ~{t:.1} s"),
        });
    }
    let title = fit(&format!("Port budget towards {}", r.config.target), 60);
    time_chart(TimeChart {
        size: (WIDE, 340),
        title: &title,
        y_desc: "ports",
        series: &series,
        end,
        y_max: None,
        legend: SeriesLabelPosition::LowerRight,
        marks: &marks,
        filled: false,
    })
}

/// A TIME_WAIT timeline of one side as points, starting at 0 when the load starts: the run's
/// own sockets (those of its target port) did not exist before.
fn from_zero(timeline: &[TimeWaitPoint], side: impl Fn(&TimeWaitPoint) -> u64) -> Vec<(f64, f64)> {
    let start = timeline.first().filter(|p| p.t_ms > 0).map(|_| (0.0, 0.0));
    start
        .into_iter()
        .chain(
            timeline
                .iter()
                .map(|p| (p.t_ms as f64 / 1e3, side(p) as f64)),
        )
        .collect()
}

/// One line per run, in the run's colour, of the points `points` reads from its record.
fn per_run(runs: &[Plotted<'_>], points: impl Fn(&RunRecord) -> Vec<(f64, f64)>) -> Vec<Series> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| Series {
            label: r.label.to_string(),
            color: color(i),
            points: points(r.record),
        })
        .collect()
}

/// Completions per second over the measured window, one line per run (see [`whole_seconds`]).
pub fn throughput(runs: &[Plotted<'_>]) -> String {
    let series = per_run(runs, |r| {
        whole_seconds(r)
            .map(|(t, s)| (t, s.ok.saturating_add(s.errors) as f64))
            .collect()
    });
    let end = runs.iter().map(|r| r.record.duration_s).fold(0.0, f64::max);
    let title = "Throughput (requests completed per second)";
    time_chart(TimeChart {
        size: SIZE,
        title,
        y_desc: "req/s",
        series: &series,
        end,
        y_max: None,
        legend: SeriesLabelPosition::LowerRight,
        marks: &[],
        filled: false,
    })
}

/// TIME_WAIT sockets held on `side` (`client` or `server`) over time, one line per run, on a
/// y scale of `y_max` shared by both sides' charts so their heights compare.
pub fn time_wait(runs: &[Plotted<'_>], side: Side, y_max: f64) -> String {
    let series = per_run(runs, |r| {
        from_zero(&r.time_wait.timeline, |p| p.time_wait(side))
    });
    let title = format!("TIME_WAIT held on the {side} side");
    // Held counts sit at the top or at 0: the middle is free for the legend.
    time_chart(TimeChart {
        size: SIZE,
        title: &title,
        y_desc: "sockets",
        series: &series,
        end: 0.0,
        y_max: Some(y_max),
        legend: SeriesLabelPosition::MiddleRight,
        marks: &[],
        filled: false,
    })
}

/// The largest TIME_WAIT count of either side in any run's timeline.
pub fn time_wait_max(runs: &[Plotted<'_>]) -> f64 {
    runs.iter()
        .flat_map(|r| r.record.time_wait.timeline.iter())
        .map(|p| p.client.max(p.server) as f64)
        .fold(0.0, f64::max)
}

/// What a chart over time shows.
struct TimeChart<'a> {
    size: (u32, u32),
    title: &'a str,
    y_desc: &'a str,
    series: &'a [Series],
    /// Seconds the x axis reaches at least (it reaches the last point in any case).
    end: f64,
    /// The top of the y axis where charts share one; else the highest point sets it.
    y_max: Option<f64>,
    legend: SeriesLabelPosition,
    marks: &'a [Mark],
    /// Each line fills the area down to 0 (stacked bands, drawn top first).
    filled: bool,
}

/// Lines over time in seconds, from 0 to the last point or `end`, whichever is later.
fn time_chart(c: TimeChart<'_>) -> String {
    let TimeChart {
        size,
        title,
        y_desc,
        series,
        end,
        y_max,
        legend,
        marks,
        filled,
    } = c;
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
    svg(size, |root| {
        let mut chart = line_chart(root, title)
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
        for m in marks {
            chart
                .draw_series(LineSeries::new(
                    [(m.x, 0.0), (m.x, top)],
                    RED.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            let style = TextStyle::from((FONT, 13).into_font())
                .color(&RED)
                .pos(Pos::new(HPos::Right, VPos::Top));
            chart
                .draw_series([Text::new(m.note.clone(), (m.x, top * 0.97), style)])
                .map_err(|e| e.to_string())?;
        }
        if filled {
            for s in series {
                chart
                    .draw_series(AreaSeries::new(
                        s.points.iter().copied(),
                        0.0,
                        s.color.mix(0.55),
                    ))
                    .map_err(|e| e.to_string())?;
            }
        }
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
        let color = s.color;
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
pub fn closers(runs: &[Plotted<'_>]) -> String {
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
    // A segmented axis of one row has no extent to map onto: one run gets an empty row below.
    let n = runs.len().max(2) as i32;
    let labels: Vec<&str> = runs.iter().map(|r| r.label).collect();
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
                    fit(labels.get(i).copied().unwrap_or(""), 18)
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
    format!("<p class=\"no-data\">{}</p>", escape(what))
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
        format!("{}ms", tenths(v / 1e3))
    } else {
        format!("{}s", tenths(v / 1e6))
    }
}

/// Axis numbers: `500`, `2.5k`, `12k`, `1.5M`.
fn short(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{}M", tenths(v / 1e6))
    } else if v.abs() >= 1e3 {
        format!("{}k", tenths(v / 1e3))
    } else {
        number(v.round())
    }
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
