//! `--plot FILE.svg`: a latency-by-percentile chart, written as plain SVG text.
//!
//! The x axis is HdrHistogram's usual log scale of 1/(1-q) (0%, 90%, 99%, 99.9%, ...), so the
//! tail gets as much room as the median; the y axis is linear latency. One polyline per
//! series, so several runs (the e2e legs) can share one chart. Pure: returns a `String`.

use std::fmt::Write as _;

use super::stats::PercentilePoint;

const W: f64 = 800.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// The tail is drawn up to 99.999% (x = 5 nines).
const MAX_NINES: f64 = 5.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One named curve.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Points from [`super::stats::Report::percentiles`].
    pub points: &'a [PercentilePoint],
}

fn nines(percentile: f64) -> f64 {
    let rest = 1.0 - percentile / 100.0;
    if rest <= 10f64.powf(-MAX_NINES) {
        MAX_NINES
    } else {
        -rest.log10()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the chart.
pub fn render_svg(title: &str, series: &[Series<'_>]) -> String {
    let max_us = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.percentile < 100.0)
        .map(|p| p.latency_us)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let (unit, div) = if max_us >= 10_000.0 {
        ("ms", 1000.0)
    } else {
        ("us", 1.0)
    };
    let y_max = nice_ceiling(max_us / div);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |n: f64| LEFT + pw * n / MAX_NINES;
    let y = |v: f64| TOP + ph * (1.0 - (v / y_max).min(1.0));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"##,
        W / 2.0,
        escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let xi = x(i as f64);
        let _ = write!(
            svg,
            r##"<line x1="{xi:.1}" y1="{TOP}" x2="{xi:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xi:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let yi = y(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{yi:.1}" x2="{:.1}" y2="{yi:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yi + 4.0,
            trim(v)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">latency ({unit})</text>"##,
        LEFT + pw / 2.0,
        H - 14.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.percentile < 100.0)
            .map(|p| format!("{:.1},{:.1}", x(nines(p.percentile)), y(p.latency_us / div)))
            .collect();
        let ly = TOP + 16.0 + 18.0 * i as f64;
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/><rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            pts.join(" "),
            W - RIGHT + 12.0,
            ly - 10.0,
            W - RIGHT + 30.0,
            ly,
            escape(s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Rounds up to 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_polyline_per_series_with_escaped_labels() {
        let pts: Vec<PercentilePoint> = [(0.0, 10.0), (90.0, 20.0), (99.9, 80.0), (100.0, 5000.0)]
            .iter()
            .map(|&(percentile, latency_us)| PercentilePoint {
                percentile,
                latency_us,
            })
            .collect();
        let svg = render_svg(
            "a < b",
            &[
                Series {
                    label: "x&y",
                    points: &pts,
                },
                Series {
                    label: "z",
                    points: &pts,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt; b") && svg.contains("x&amp;y"));
        // The 100% point (max) is excluded, so the y scale tops out at 100 us, not 5 ms.
        assert!(svg.contains("latency (us)"));
        assert!(svg.contains(">100<"));
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
    }
}
