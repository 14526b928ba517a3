//! Inline SVG charts, written by hand: grouped bars with a min-max whisker, and
//! per-job health bands over time.
//!
//! The HTML report must open offline and stay diffable, so there is no chart library
//! and no script: each chart is one `<svg>` element with a `viewBox`, plain shapes and a
//! `<title>` on every mark for a hover tooltip. Numbers are printed with fixed precision
//! so the same runs give byte-identical charts.

use std::fmt::Write as _;

/// Chart width in SVG user units.
const WIDTH: f64 = 860.0;
/// Left margin (y-axis labels).
const LEFT: f64 = 64.0;
/// Right margin (legend room).
const RIGHT: f64 = 16.0;
/// Top margin (title and legend).
const TOP: f64 = 44.0;
/// Bottom margin (x-axis labels).
const BOTTOM: f64 = 40.0;

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One series of a bar chart: a value per x category, with an optional range.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Fill colour (any CSS colour).
    pub color: String,
    /// The bar heights (e.g. means over seeds), one per category.
    pub values: Vec<f64>,
    /// Optional `(low, high)` per category, drawn as a whisker (e.g. min-max over seeds).
    pub ranges: Option<Vec<(f64, f64)>>,
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten at or above `max`.
pub fn nice_ceiling(max: f64) -> f64 {
    if !max.is_finite() || max <= 0.0 {
        return 1.0;
    }
    let exp = max.log10().floor();
    let unit = 10f64.powf(exp);
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * unit >= max * (1.0 - 1e-12) {
            return m * unit;
        }
    }
    10.0 * unit
}

fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn open_svg(out: &mut String, height: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}" font-family="sans-serif" font-size="12">"#,
        num(WIDTH),
        num(height),
        escape(title)
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="18" font-size="15" font-weight="bold">{}</text>"#,
        num(LEFT),
        escape(title)
    );
}

fn legend(out: &mut String, items: &[(&str, &str)]) {
    let mut x = LEFT;
    for (name, color) in items {
        let _ = write!(
            out,
            r#"<rect x="{}" y="26" width="12" height="12" fill="{}"/><text x="{}" y="36">{}</text>"#,
            num(x),
            escape(color),
            num(x + 16.0),
            escape(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
}

/// A grouped bar chart: one group per `categories` entry, one bar per series.
/// Heights scale linearly from zero to a nice ceiling of the largest value or range.
pub fn bar_chart(title: &str, y_label: &str, categories: &[String], series: &[Series]) -> String {
    let height = 300.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = height - TOP - BOTTOM;
    let base_y = TOP + plot_h;
    let max = series
        .iter()
        .flat_map(|s| {
            let highs = s.ranges.iter().flatten().map(|r| r.1);
            s.values.iter().copied().chain(highs)
        })
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let top = nice_ceiling(max);
    let scale = |v: f64| (v.max(0.0) / top) * plot_h;
    let mut out = String::new();
    open_svg(&mut out, height, title);
    let items: Vec<(&str, &str)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.color.as_str()))
        .collect();
    legend(&mut out, &items);
    // Grid and y labels.
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let y = base_y - scale(v);
        let _ = write!(
            out,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            num(LEFT),
            num(y),
            num(LEFT + plot_w),
            num(y),
            num(LEFT - 6.0),
            num(y + 4.0),
            label(v)
        );
    }
    let _ = write!(
        out,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        num(TOP + plot_h / 2.0),
        num(TOP + plot_h / 2.0),
        escape(y_label)
    );
    let groups = categories.len().max(1) as f64;
    let group_w = plot_w / groups;
    let bars = series.len().max(1) as f64;
    let bar_w = (group_w * 0.8 / bars).max(0.5);
    let label_every = (categories.len() / 24).max(1);
    for (g, cat) in categories.iter().enumerate() {
        let gx = LEFT + group_w * g as f64 + group_w * 0.1;
        for (k, s) in series.iter().enumerate() {
            let v = s.values.get(g).copied().unwrap_or(0.0);
            let h = scale(v);
            let x = gx + bar_w * k as f64;
            let _ = write!(
                out,
                r#"<rect class="bar" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} = {}</title></rect>"#,
                num(x),
                num(base_y - h),
                num(bar_w),
                num(h),
                escape(&s.color),
                escape(&s.name),
                escape(cat),
                label(v)
            );
            if let Some((lo, hi)) = s.ranges.as_ref().and_then(|r| r.get(g)).copied()
                && hi > lo
            {
                let cx = x + bar_w / 2.0;
                let _ = write!(
                    out,
                    r##"<line class="range" x1="{}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
                    num(cx),
                    num(base_y - scale(lo)),
                    num(cx),
                    num(base_y - scale(hi))
                );
            }
        }
        if g % label_every == 0 {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                num(gx + bar_w * bars / 2.0),
                num(base_y + 16.0),
                escape(cat)
            );
        }
    }
    let _ = write!(
        out,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
        num(LEFT),
        num(base_y),
        num(LEFT + plot_w),
        num(base_y)
    );
    out.push_str("</svg>");
    out
}

/// A job's state during a band of the health timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Health {
    /// Within its heartbeat threshold and its last run produced output.
    Ok,
    /// Within its threshold, but its last run produced nothing.
    Failing,
    /// Past its heartbeat threshold without output (or the runner was not running).
    Down,
}

impl Health {
    /// Every state, in legend order.
    pub const ALL: [Self; 3] = [Self::Ok, Self::Failing, Self::Down];

    /// Its legend text.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failing => "failing",
            Self::Down => "down",
        }
    }

    /// Its colour.
    pub fn color(self) -> &'static str {
        match self {
            Self::Ok => "#4caf50",
            Self::Failing => "#ffb300",
            Self::Down => "#d32f2f",
        }
    }
}

/// A run of one state: `[start, end)` in hours from the world's start.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Band {
    /// Start, hours from the start.
    pub start: f64,
    /// End, hours from the start.
    pub end: f64,
    /// The state.
    pub health: Health,
}

/// Per-job health bands over `hours`: one row per `(job, bands)`.
pub fn timeline(title: &str, hours: f64, rows: &[(String, Vec<Band>)]) -> String {
    let row_h = 18.0;
    let gap = 6.0;
    let left = 150.0;
    let plot_w = WIDTH - left - RIGHT;
    let height = TOP + rows.len() as f64 * (row_h + gap) + BOTTOM;
    let hours = if hours > 0.0 { hours } else { 1.0 };
    let x_of = |h: f64| left + (h.clamp(0.0, hours) / hours) * plot_w;
    let mut out = String::new();
    open_svg(&mut out, height, title);
    let items: Vec<(&str, &str)> = Health::ALL.iter().map(|h| (h.name(), h.color())).collect();
    legend(&mut out, &items);
    for (i, (job, bands)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * (row_h + gap);
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            num(left - 6.0),
            num(y + row_h - 5.0),
            escape(job)
        );
        for b in bands {
            let x0 = x_of(b.start);
            let w = (x_of(b.end) - x0).max(0.0);
            if w <= 0.0 {
                continue;
            }
            let _ = write!(
                out,
                r#"<rect class="band" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}: {} h to {} h</title></rect>"#,
                num(x0),
                num(y),
                num(w),
                num(row_h),
                b.health.color(),
                escape(job),
                b.health.name(),
                label(b.start),
                label(b.end)
            );
        }
    }
    // Day ticks.
    let axis_y = TOP + rows.len() as f64 * (row_h + gap);
    let days = (hours / 24.0).ceil() as u64;
    let step = (days / 12).max(1);
    let mut d = 0;
    while d <= days {
        let x = x_of(d as f64 * 24.0);
        let _ = write!(
            out,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/><text x="{}" y="{}" text-anchor="middle">day {}</text>"##,
            num(x),
            num(axis_y),
            num(x),
            num(axis_y + 4.0),
            num(x),
            num(axis_y + 18.0),
            d
        );
        d += step;
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks that every tag is closed in order; returns the open/close tag names seen.
    pub(crate) fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let close = after.find('>').expect("a tag is never left open");
            let tag = &after[..close];
            assert!(!tag.contains('<'), "nested `<` in tag: {tag}");
            // Quotes inside a tag must balance (attribute values are quoted).
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag}"
            );
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack
                    .pop()
                    .unwrap_or_else(|| panic!("`</{name}>` closes nothing"));
                assert_eq!(top, name.trim(), "`</{name}>` closes `<{top}>`");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or("").to_string();
                stack.push(name);
            }
            // Text between tags must not hold a raw `&` that is not an entity.
            let text_end = after[close + 1..]
                .find('<')
                .map_or(after.len(), |n| close + 1 + n);
            let text = &after[close + 1..text_end];
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "raw & in text: {text}"
                );
            }
            rest = &after[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("viewBox=\"0 0 "), "no viewBox");
    }

    fn attr(tag: &str, name: &str) -> f64 {
        let key = format!(" {name}=\"");
        let start = tag.find(&key).unwrap() + key.len();
        let end = tag[start..].find('"').unwrap() + start;
        tag[start..end].parse().unwrap()
    }

    fn rects<'a>(svg: &'a str, class: &str) -> Vec<&'a str> {
        let key = format!("<rect class=\"{class}\"");
        svg.match_indices(&key)
            .map(|(i, _)| {
                let end = svg[i..].find('>').unwrap() + i;
                &svg[i..end]
            })
            .collect()
    }

    #[test]
    fn bar_chart_is_well_formed_and_heights_scale_with_values() {
        let series = vec![
            Series {
                name: "naive <& co>".into(),
                color: "#c00".into(),
                values: vec![10.0, 5.0, 0.0],
                ranges: Some(vec![(8.0, 12.0), (5.0, 5.0), (0.0, 0.0)]),
            },
            Series {
                name: "self-healing".into(),
                color: "#0a0".into(),
                values: vec![2.5, 1.0, 7.5],
                ranges: None,
            },
        ];
        let cats: Vec<String> = vec!["day 1".into(), "day 2".into(), "day 3".into()];
        let svg = bar_chart("lost tasks per day", "tasks", &cats, &series);
        assert_well_formed(&svg);
        assert!(svg.contains("naive &lt;&amp; co&gt;"));
        let bars = rects(&svg, "bar");
        assert_eq!(bars.len(), 6);
        let h: Vec<f64> = bars.iter().map(|t| attr(t, "height")).collect();
        // Order: category-major, series-minor.
        assert!((h[0] - 2.0 * h[2]).abs() < 0.02, "10 is twice 5: {h:?}");
        assert!(
            (h[0] - 4.0 * h[1]).abs() < 0.02,
            "10 is four times 2.5: {h:?}"
        );
        assert_eq!(h[4], 0.0);
        // The largest value (a range top of 12) fits under the ceiling of 20.
        let plot_h = 300.0 - TOP - BOTTOM;
        assert!((h[0] - plot_h * 10.0 / 20.0).abs() < 0.02);
        // Every bar sits on the baseline.
        for t in &bars {
            assert!((attr(t, "y") + attr(t, "height") - (TOP + plot_h)).abs() < 0.02);
        }
        // One whisker: only the range that is not a point.
        assert_eq!(svg.matches("class=\"range\"").count(), 1);
    }

    #[test]
    fn all_zero_chart_still_renders() {
        let svg = bar_chart(
            "nothing",
            "n",
            &["a".to_string()],
            &[Series {
                name: "s".into(),
                color: "red".into(),
                values: vec![0.0],
                ranges: None,
            }],
        );
        assert_well_formed(&svg);
        assert_eq!(attr(rects(&svg, "bar")[0], "height"), 0.0);
    }

    #[test]
    fn nice_ceiling_rounds_up_to_1_2_5() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(20.0), 20.0);
        assert_eq!(nice_ceiling(31.0), 50.0);
        assert!((nice_ceiling(0.03) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn timeline_widths_are_proportional_to_time() {
        let rows = vec![
            (
                "blog".to_string(),
                vec![
                    Band {
                        start: 0.0,
                        end: 36.0,
                        health: Health::Ok,
                    },
                    Band {
                        start: 36.0,
                        end: 48.0,
                        health: Health::Down,
                    },
                ],
            ),
            (
                "mail".to_string(),
                vec![Band {
                    start: 0.0,
                    end: 48.0,
                    health: Health::Failing,
                }],
            ),
        ];
        let svg = timeline("health", 48.0, &rows);
        assert_well_formed(&svg);
        let bands = rects(&svg, "band");
        assert_eq!(bands.len(), 3);
        let w: Vec<f64> = bands.iter().map(|t| attr(t, "width")).collect();
        assert!(
            (w[0] - 3.0 * w[1]).abs() < 0.05,
            "36 h is three times 12 h: {w:?}"
        );
        assert!((w[2] - (w[0] + w[1])).abs() < 0.05);
        assert!(svg.contains(Health::Down.color()));
        assert!(svg.contains("day 2"));
    }
}
