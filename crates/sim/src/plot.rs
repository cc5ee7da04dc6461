//! A hand-written SVG bar chart of mean and p95 completion time per strategy.

use std::fmt::Write as _;

use super::report::SimReport;

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
const MEAN_COLOR: &str = "#4c78a8";
const P95_COLOR: &str = "#f58518";

/// Escapes text for SVG content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" axis maximum (1, 2 or 5 times a power of ten) at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if !(value.is_finite() && value > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&v| v >= value)
        .unwrap_or(10.0 * magnitude)
}

/// The chart as a standalone SVG document.
pub fn render_svg(report: &SimReport) -> String {
    let names = report.names();
    let rows: Vec<(&str, f64, f64)> = names
        .iter()
        .filter_map(|n| {
            report
                .strategies
                .get(*n)
                .map(|m| (*n, m.mean_completion_s, m.p95_completion_s))
        })
        .collect();
    let max = nice_ceiling(rows.iter().map(|r| r.2.max(r.1)).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">Completion time per strategy — {}</text>\n",
        WIDTH / 2.0,
        escape(&report.workload)
    );
    axis(&mut svg, max, plot_w, plot_h);
    let group = plot_w / rows.len().max(1) as f64;
    let bar = group * 0.35;
    for (i, (name, mean, p95)) in rows.iter().enumerate() {
        let x0 = LEFT + group * i as f64 + group * 0.15;
        bar_rect(&mut svg, x0, bar, *mean, max, plot_h, MEAN_COLOR);
        bar_rect(&mut svg, x0 + bar, bar, *p95, max, plot_h, P95_COLOR);
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x0 + bar,
            TOP + plot_h + 18.0,
            escape(name)
        );
    }
    legend(&mut svg);
    svg.push_str("</svg>\n");
    svg
}

fn axis(svg: &mut String, max: f64, plot_w: f64, plot_h: f64) {
    for step in 0..=5 {
        let value = max * f64::from(step) / 5.0;
        let y = TOP + plot_h - plot_h * f64::from(step) / 5.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            tick_label(value)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">seconds</text>",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
}

/// An axis value without float noise (0.30000000000000004 → "0.3").
fn tick_label(value: f64) -> String {
    let text = if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

fn bar_rect(svg: &mut String, x: f64, w: f64, value: f64, max: f64, plot_h: f64, color: &str) {
    let h = (value / max).clamp(0.0, 1.0) * plot_h;
    let y = TOP + plot_h - h;
    let _ = writeln!(
        svg,
        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{color}\">\
         <title>{value:.2} s</title></rect>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{value:.1}</text>",
        x + w / 2.0,
        y - 3.0
    );
}

fn legend(svg: &mut String) {
    let y = HEIGHT - 24.0;
    for (i, (label, color)) in [
        ("mean completion", MEAN_COLOR),
        ("p95 completion", P95_COLOR),
    ]
    .iter()
    .enumerate()
    {
        let x = LEFT + 170.0 * i as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\">{label}</text>",
            y - 10.0,
            x + 18.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StrategyMetrics;
    use std::collections::BTreeMap;

    fn metrics(mean: f64, p95: f64) -> StrategyMetrics {
        StrategyMetrics {
            mean_completion_s: mean,
            p95_completion_s: p95,
            ..StrategyMetrics::default()
        }
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(40.0), "40");
    }

    #[test]
    fn nice_ceiling_rounds_up() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(17.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn svg_has_two_bars_per_strategy_and_escapes_names() {
        let mut strategies = BTreeMap::new();
        strategies.insert("round_robin".to_owned(), metrics(10.0, 30.0));
        strategies.insert("oracle".to_owned(), metrics(5.0, 9.0));
        let report = SimReport {
            workload: "a<b".into(),
            seed: 1,
            tasks: 1,
            agents: 1,
            strategies,
        };
        let svg = render_svg(&report);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(&format!("fill=\"{MEAN_COLOR}\"")).count(), 3); // 2 bars + legend
        assert_eq!(svg.matches(&format!("fill=\"{P95_COLOR}\"")).count(), 3);
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(svg.contains(">round_robin<") && svg.contains(">oracle<"));
    }
}
