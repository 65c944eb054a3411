//! The plot of `BENCHMARKS.md`, wall time against D, drawn as SVG by hand (no plotting
//! dependency).

use std::fmt::Write as _;

use crate::report::{Report, group};
use crate::runs::RunResult;

/// Wall time against D on log–log axes: one colour per concurrency, measured as a solid line
/// with points, the floor as a dashed line.
pub(crate) fn svg_plot(report: &Report) -> String {
    const W: f64 = 760.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 170.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    const COLOURS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let runs = &report.runs;
    let values = || {
        runs.iter()
            .flat_map(|r| [r.wall_s, r.floor_s])
            .filter(|v| *v > 0.0)
    };
    let ds = || runs.iter().map(|r| r.due.max(1) as f64);
    let decade_floor = |v: f64| 10f64.powf(v.log10().floor());
    let decade_ceil = |v: f64| 10f64.powf(v.log10().ceil());
    let x_min = decade_floor(ds().fold(f64::INFINITY, f64::min).min(10.0));
    let mut x_max = decade_ceil(ds().fold(1.0, f64::max));
    if x_max <= x_min {
        x_max = x_min * 10.0;
    }
    let y_min = decade_floor(values().fold(f64::INFINITY, f64::min).min(0.1));
    let mut y_max = decade_ceil(values().fold(1.0, f64::max));
    if y_max <= y_min {
        y_max = y_min * 10.0;
    }
    let px = |d: f64| {
        LEFT + (d.log10() - x_min.log10()) / (x_max.log10() - x_min.log10()) * (W - LEFT - RIGHT)
    };
    let py = |s: f64| {
        H - BOTTOM
            - (s.log10() - y_min.log10()) / (y_max.log10() - y_min.log10()) * (H - TOP - BOTTOM)
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let mut sizes: Vec<(usize, usize)> = runs.iter().map(|r| (r.due, r.rows)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let sizes: Vec<String> = sizes
        .iter()
        .map(|(due, rows)| format!("{}:{}", group(*rows), group(*due)))
        .collect();
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">Wall time of one cycle against due credentials D</text>"#,
        (W - RIGHT + LEFT) / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="34" text-anchor="middle" font-size="11" fill="#555">R:D = {} · Lp = {} ms · Li = {} ms</text>"##,
        (W - RIGHT + LEFT) / 2.0,
        sizes.join(", "),
        report.plan.provider_latency_ms,
        report.plan.instance_latency_ms
    );
    // Grid and ticks at every decade.
    let mut d = x_min;
    while d <= x_max * 1.000_1 {
        let x = px(d);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0,
            group(d.round() as usize)
        );
        d *= 10.0;
    }
    let mut s = y_min;
    while s <= y_max * 1.000_1 {
        let y = py(s);
        let label = if s < 1.0 {
            format!("{} ms", (s * 1_000.0).round())
        } else {
            format!("{} s", s.round())
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
        s *= 10.0;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">due credentials D (log)</text>"#,
        (W - RIGHT + LEFT) / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">wall time (log)</text>"#,
        (H - BOTTOM + TOP) / 2.0,
        (H - BOTTOM + TOP) / 2.0
    );
    let mut legend_y = TOP + 10.0;
    for (i, c) in report.plan.concurrency.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut series: Vec<&RunResult> = runs.iter().filter(|r| r.concurrency == *c).collect();
        if series.is_empty() {
            continue;
        }
        series.sort_by_key(|r| r.due);
        let line = |f: &dyn Fn(&RunResult) -> f64| {
            series
                .iter()
                .map(|r| format!("{:.1},{:.1}", px(r.due.max(1) as f64), py(f(r).max(y_min))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            line(&|r| r.floor_s)
        );
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            line(&|r| r.wall_s)
        );
        for r in &series {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>D={} C={}: {:.2} s (floor {:.2} s)</title></circle>"#,
                px(r.due.max(1) as f64),
                py(r.wall_s.max(y_min)),
                r.due,
                r.concurrency,
                r.wall_s,
                r.floor_s
            );
        }
        let lx = W - RIGHT + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">C = {c} measured</text>"#,
            lx + 24.0,
            lx + 30.0,
            legend_y + 4.0
        );
        legend_y += 18.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{}" y="{}">C = {c} floor</text>"#,
            lx + 24.0,
            lx + 30.0,
            legend_y + 4.0
        );
        legend_y += 24.0;
    }
    let _ = writeln!(svg, "</svg>");
    svg
}
