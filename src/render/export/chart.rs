//! Charts drawn with plotters, to SVG (text) or PNG (pixels): traffic per period and
//! direction with human units on both axes and times in the export's zone, penalty
//! periods shaded, and — when a quota rule applies — its count through the range
//! against the limit in a second panel. One drawing routine serves both backends.

use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::series::{Report, Series};
use crate::model::calendar::Granularity;
use crate::model::human::{human_bytes, human_rate};
use crate::model::percentile::INTERVAL_SECS;

pub const WIDTH: u32 = 1000;
const TRAFFIC_HEIGHT: u32 = 420;
const QUOTA_HEIGHT: u32 = 220;
const FONT: &str = "sans-serif";

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error(
        "no font to draw text with: {0} (install fonts-dejavu-core, or dejavu-sans-fonts on rpm systems)"
    )]
    Font(String),
    #[error("drawing the chart: {0}")]
    Draw(String),
    #[error("encoding the PNG: {0}")]
    Png(String),
}

fn draw_err(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Where DejaVu Sans lives on Debian, Fedora/RHEL and Arch.
const FONT_FILES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Load the system's DejaVu Sans once for the process (plotters keeps `'static` bytes).
fn font() -> Result<(), ChartError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let (path, bytes) = FONT_FILES
                .iter()
                .find_map(|p| std::fs::read(p).ok().map(|b| (p, b)))
                .ok_or_else(|| format!("none of {}", FONT_FILES.join(", ")))?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a usable font"))
        })
        .clone()
        .map_err(ChartError::Font)
}

/// Colours of one theme.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub background: RGBColor,
    pub text: RGBColor,
    pub grid: RGBColor,
    pub upload: RGBColor,
    pub download: RGBColor,
    pub penalty: RGBColor,
    pub quota: RGBColor,
}

impl Theme {
    pub fn new(dark: bool) -> Theme {
        if dark {
            Theme {
                background: RGBColor(0x16, 0x1b, 0x22),
                text: RGBColor(0xe6, 0xed, 0xf3),
                grid: RGBColor(0x30, 0x36, 0x3d),
                upload: RGBColor(0xff, 0x9e, 0x3d),
                download: RGBColor(0x4c, 0xb8, 0xff),
                penalty: RGBColor(0xf8, 0x51, 0x49),
                quota: RGBColor(0xd2, 0xa8, 0xff),
            }
        } else {
            Theme {
                background: WHITE,
                text: RGBColor(0x1f, 0x23, 0x28),
                grid: RGBColor(0xd0, 0xd7, 0xde),
                upload: RGBColor(0xd9, 0x6c, 0x00),
                download: RGBColor(0x09, 0x69, 0xda),
                penalty: RGBColor(0xcf, 0x22, 0x2e),
                quota: RGBColor(0x82, 0x50, 0xdf),
            }
        }
    }
}

/// Height of one instance's chart (a second panel when a quota rule applies).
pub fn height(series: &Series) -> u32 {
    TRAFFIC_HEIGHT
        + if series.quota.is_some() {
            QUOTA_HEIGHT
        } else {
            0
        }
}

/// "14:05", "11-23 14:00", "11-23", "2026-11": what a tick label needs at this scale.
fn time_label(t: i64, by: Granularity, span_secs: i64, tz: &TimeZone) -> String {
    let Ok(at) = Timestamp::from_second(t) else {
        return String::new();
    };
    let z = at.to_zoned_datetime(tz.clone());
    let pattern = match by {
        Granularity::Month => "%Y-%m",
        Granularity::Day => "%m-%d",
        _ if span_secs > 86_400 => "%m-%d %H:%M",
        _ => "%H:%M",
    };
    z.strftime(pattern).to_string()
}

/// Round instants for the time axis: the smallest step from a ladder (5 minutes … a
/// month) giving at most 8 labels, aligned to the zone's clock and calendar.
fn time_keys(x0: i64, x1: i64, tz: &TimeZone) -> Vec<i64> {
    use jiff::ToSpan;
    const LADDER: [(i64, i64); 10] = [
        (300, 0),
        (900, 0),
        (1800, 0),
        (3600, 0),
        (3 * 3600, 0),
        (6 * 3600, 0),
        (12 * 3600, 0),
        (86_400, 1),
        (7 * 86_400, 7),
        (31 * 86_400, 31),
    ];
    let span = x1 - x0;
    let (secs, days) = LADDER
        .iter()
        .copied()
        .find(|(s, _)| span / s <= 8)
        .unwrap_or((31 * 86_400, 31));
    let Ok(start) = Timestamp::from_second(x0) else {
        return Vec::new();
    };
    let z = start.to_zoned_datetime(tz.clone());
    let mut keys = Vec::new();
    if days == 0 {
        // Sub-day steps: multiples of the step past the local midnight.
        let Ok(midnight) = z.start_of_day() else {
            return keys;
        };
        let mut t = midnight.timestamp().as_second();
        while t < x1 {
            if t >= x0 {
                keys.push(t);
            }
            t += secs;
        }
        return keys;
    }
    let Ok(mut day) = z.start_of_day() else {
        return keys;
    };
    if days == 31
        && let Ok(m) = day.first_of_month()
    {
        day = m;
    }
    while day.timestamp().as_second() < x1 {
        if day.timestamp().as_second() >= x0 {
            keys.push(day.timestamp().as_second());
        }
        let next = match days {
            31 => day.checked_add(1.month()),
            n => day.checked_add(n.days()),
        };
        match next {
            Ok(n) => day = n,
            Err(_) => break,
        }
    }
    keys
}

/// Draw one instance's chart onto `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    series: &Series,
    theme: &Theme,
    tz: &TimeZone,
) -> Result<(), ChartError> {
    root.fill(&theme.background).map_err(draw_err)?;
    let by: Granularity = report.by.parse().map_err(ChartError::Draw)?;
    let (top, bottom) = if series.quota.is_some() {
        let (a, b) = root.split_vertically(TRAFFIC_HEIGHT);
        (a, Some(b))
    } else {
        (root.clone(), None)
    };
    let x0 = report.from.as_second();
    let x1 = report.to.as_second().max(x0 + 1);
    let span = x1 - x0;
    let up = report.directions.upload();
    let down = report.directions.download();
    let peak = series
        .points
        .iter()
        .map(|p| {
            let u = if up { p.upload_bytes } else { 0 };
            let d = if down { p.download_bytes } else { 0 };
            u.max(d)
        })
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let who = match (&series.name, &series.interface) {
        (None, Some(i)) => format!("{} ({i})", series.instance),
        (Some(_), Some(i)) => format!("{}, {i}", series.label()),
        (_, None) => series.label(),
    };
    let title = format!(
        "Instance {who} · per {} ({}) · up {} · down {}",
        report.by,
        report.timezone,
        human_bytes(series.upload_bytes),
        human_bytes(series.download_bytes)
    );
    let text = |size: i32| (FONT, size).into_font().color(&theme.text);
    let mut chart = ChartBuilder::on(&top)
        .caption(title, text(20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x0..x1).with_key_points(time_keys(x0, x1, tz)),
            0f64..peak * 1.15,
        )
        .map_err(draw_err)?;
    let x_fmt = |t: &i64| time_label(*t, by, span, tz);
    let y_fmt = |b: &f64| human_bytes(*b as u64);
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .y_desc(format!("bytes per {}", report.by))
        .label_style(text(13))
        .axis_desc_style(text(13))
        .axis_style(theme.grid)
        .bold_line_style(theme.grid.mix(0.6))
        .light_line_style(theme.grid.mix(0.2))
        .draw()
        .map_err(draw_err)?;
    let y_top = peak * 1.15;
    if !series.penalties.is_empty() {
        chart
            .draw_series(series.penalties.iter().map(|p| {
                Rectangle::new(
                    [
                        (p.start.as_second().max(x0), y_top),
                        (p.end.as_second().min(x1), 0.0),
                    ],
                    theme.penalty.mix(0.15).filled(),
                )
            }))
            .map_err(draw_err)?
            .label("penalty")
            .legend(move |(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 18, y + 5)],
                    theme.penalty.mix(0.3).filled(),
                )
            });
    }
    // Each period's volume is held flat across it (a step), ending at the range's end.
    let steps = |f: fn(&super::series::Point) -> u64| -> Vec<(i64, f64)> {
        let mut out = Vec::with_capacity(series.points.len() * 2);
        for (i, p) in series.points.iter().enumerate() {
            let start = p.start.as_second().max(x0);
            let end = series.points.get(i + 1).map_or(x1, |n| n.start.as_second());
            out.push((start, f(p) as f64));
            out.push((end, f(p) as f64));
        }
        out
    };
    if up {
        let c = theme.upload;
        chart
            .draw_series(
                AreaSeries::new(steps(|p| p.upload_bytes), 0.0, c.mix(0.25))
                    .border_style(c.stroke_width(2)),
            )
            .map_err(draw_err)?
            .label("upload")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
    }
    if down {
        let c = theme.download;
        chart
            .draw_series(
                AreaSeries::new(steps(|p| p.download_bytes), 0.0, c.mix(0.15))
                    .border_style(c.stroke_width(2)),
            )
            .map_err(draw_err)?
            .label("download")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
    }
    // The 95th percentile of 5-minute rates, as transit is billed: a dashed line per
    // direction at the bytes per interval that rate moves.
    if let Some(p) = &series.percentiles {
        let lines = [
            (up, p.upload, theme.upload, "upload"),
            (down, p.download, theme.download, "download"),
        ];
        for (shown, rate, c, what) in lines {
            let Some(rate) = rate.filter(|_| shown) else {
                continue;
            };
            let y = rate.bits_per_sec() as f64 * INTERVAL_SECS as f64 / 8.0;
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0, y), (x1, y)],
                    6,
                    4,
                    c.stroke_width(1),
                ))
                .map_err(draw_err)?
                .label(format!("{what} 95th: {}", human_rate(rate.bits_per_sec())))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(1))
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(theme.background.mix(0.85))
        .border_style(theme.grid)
        .label_font(text(13))
        .draw()
        .map_err(draw_err)?;

    if let (Some(area), Some(q)) = (bottom, &series.quota) {
        let used_max = q.used_bytes.iter().copied().max().unwrap_or(0);
        let limit = q.limit_bytes as f64;
        let y_max = (used_max as f64).max(limit) * 1.15;
        let share = used_max as f64 / limit.max(1.0) * 100.0;
        let caption = format!(
            "Rule {} ({}): {} of {} ({share:.0}%)",
            q.rule,
            q.direction,
            human_bytes(used_max),
            human_bytes(q.limit_bytes)
        );
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, text(16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(80)
            .build_cartesian_2d(
                (x0..x1).with_key_points(time_keys(x0, x1, tz)),
                0f64..y_max.max(1.0),
            )
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(4)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .y_desc("period count")
            .label_style(text(12))
            .axis_desc_style(text(12))
            .axis_style(theme.grid)
            .bold_line_style(theme.grid.mix(0.6))
            .light_line_style(theme.grid.mix(0.2))
            .draw()
            .map_err(draw_err)?;
        let c = theme.quota;
        // The count at the end of each point, from zero at the range's start.
        let counts: Vec<(i64, f64)> = std::iter::once((x0, 0.0))
            .chain(q.used_bytes.iter().enumerate().map(|(i, used)| {
                let end = series.points.get(i + 1).map_or(x1, |n| n.start.as_second());
                (end, *used as f64)
            }))
            .collect();
        chart
            .draw_series(LineSeries::new(counts, c.stroke_width(2)))
            .map_err(draw_err)?
            .label("count")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
        let p = theme.penalty;
        chart
            .draw_series(DashedLineSeries::new(
                [(x0, limit), (x1, limit)],
                8,
                5,
                p.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label("limit")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], p.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(theme.background.mix(0.85))
            .border_style(theme.grid)
            .label_font(text(12))
            .draw()
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)
}

/// The top talkers of a report as horizontal bars (at most 20).
fn draw_summary<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    theme: &Theme,
) -> Result<(), ChartError> {
    root.fill(&theme.background).map_err(draw_err)?;
    let top: Vec<&Series> = report.series.iter().take(20).collect();
    let n = top.len().max(1) as i32;
    let peak = top.iter().map(|s| s.total()).max().unwrap_or(0).max(1) as f64;
    let text = |size: i32| (FONT, size).into_font().color(&theme.text);
    let title = format!(
        "Top talkers · {} instances · up {} · down {}",
        report.series.len(),
        human_bytes(report.upload_bytes),
        human_bytes(report.download_bytes)
    );
    let names: Vec<String> = top.iter().map(|s| s.label()).collect();
    // Row i (from the top) is the band [100(n-1-i), 100(n-i)); its label sits at the
    // band's middle (integer coordinates: plotters labels those through key points).
    let y_fmt = |y: &i32| {
        let row = y.div_euclid(100);
        names
            .get(usize::try_from(n - 1 - row).unwrap_or(usize::MAX))
            .cloned()
            .unwrap_or_default()
    };
    let x_fmt = |b: &f64| human_bytes(*b as u64);
    let mut chart = ChartBuilder::on(root)
        .caption(title, text(20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d(
            0f64..peak * 1.1,
            (0i32..n * 100).with_key_points((0..n).map(|i| i * 100 + 50).collect()),
        )
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(top.len().max(1))
        .x_labels(6)
        .y_label_formatter(&y_fmt)
        .x_label_formatter(&x_fmt)
        .label_style(text(13))
        .axis_style(theme.grid)
        .bold_line_style(theme.grid.mix(0.6))
        .light_line_style(theme.grid.mix(0.2))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(top.iter().enumerate().flat_map(|(i, s)| {
            let row = (n - 1 - i as i32) * 100;
            let up = s.upload_bytes as f64;
            let total = s.total() as f64;
            let (lo, hi) = (row + 15, row + 85);
            [
                Rectangle::new([(0.0, lo), (up, hi)], theme.upload.mix(0.8).filled()),
                Rectangle::new([(up, lo), (total, hi)], theme.download.mix(0.8).filled()),
            ]
        }))
        .map_err(draw_err)?;
    root.present().map_err(draw_err)
}

/// What to draw: one instance, or the summary of a report.
pub enum Figure<'a> {
    Instance(&'a Series),
    Summary,
}

fn size(report: &Report, figure: &Figure<'_>) -> (u32, u32) {
    match figure {
        Figure::Instance(s) => (WIDTH, height(s)),
        Figure::Summary => (WIDTH, 120 + 28 * report.series.len().clamp(1, 20) as u32),
    }
}

/// The figure as an SVG document.
pub fn svg(
    report: &Report,
    figure: &Figure<'_>,
    theme: &Theme,
    tz: &TimeZone,
) -> Result<String, ChartError> {
    font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size(report, figure)).into_drawing_area();
        match figure {
            Figure::Instance(s) => draw(&root, report, s, theme, tz)?,
            Figure::Summary => draw_summary(&root, report, theme)?,
        }
    }
    Ok(out)
}

/// The figure as a PNG file's bytes.
pub fn png(
    report: &Report,
    figure: &Figure<'_>,
    theme: &Theme,
    tz: &TimeZone,
) -> Result<Vec<u8>, ChartError> {
    font()?;
    let (w, h) = size(report, figure);
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        match figure {
            Figure::Instance(s) => draw(&root, report, s, theme, tz)?,
            Figure::Summary => draw_summary(&root, report, theme)?,
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc
        .write_header()
        .map_err(|e| ChartError::Png(e.to_string()))?;
    writer
        .write_image_data(&rgb)
        .map_err(|e| ChartError::Png(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| ChartError::Png(e.to_string()))?;
    Ok(out)
}
