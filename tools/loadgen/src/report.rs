//! The SVG report: latency percentiles and throughput per second over the
//! run, with injected faults drawn as vertical lines.

use std::fmt::Write;

use crate::run::{Marker, Summary};
use crate::stats::Point;

const W: f64 = 1100.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One panel: series of (label, colour, values) over seconds.
struct Panel<'a> {
    title: &'a str,
    unit: &'a str,
    top: f64,
    height: f64,
    log: bool,
    series: Vec<(&'a str, &'a str, Vec<f64>)>,
}

fn draw(out: &mut String, p: &Panel<'_>, seconds: usize, markers: &[Marker]) {
    let width = W - LEFT - RIGHT;
    let max = p
        .series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let (lo, hi) = if p.log {
        (0.0_f64, max.log10().ceil().max(1.0))
    } else {
        (0.0, max * 1.1)
    };
    let y = |v: f64| {
        let v = if p.log { v.max(1.0).log10() } else { v };
        p.top + p.height - (v - lo) / (hi - lo) * p.height
    };
    let span = seconds.max(1) as f64;
    let x = |s: f64| LEFT + s / span * width;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{}" width="{width}" height="{}" fill="#fafafa" stroke="#999"/>"##,
        p.top, p.height
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        p.top - 6.0,
        esc(p.title)
    );
    // Grid and y labels.
    let ticks: Vec<f64> = if p.log {
        (0..=hi as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=4).map(|i| hi * f64::from(i) / 4.0).collect()
    };
    for t in ticks {
        let yy = y(t);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{} {}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            yy + 3.0,
            if t >= 10.0 {
                format!("{t:.0}")
            } else {
                format!("{t:.1}")
            },
            esc(p.unit)
        );
    }
    // x labels every ~10 % of the run.
    let step = (seconds / 10).max(1);
    for s in (0..=seconds).step_by(step) {
        let xx = x(s as f64);
        let _ = writeln!(
            out,
            r#"<text x="{xx:.1}" y="{:.1}" font-size="10" text-anchor="middle">{s}s</text>"#,
            p.top + p.height + 12.0
        );
    }
    for m in markers {
        let xx = x(m.second);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{}" y2="{}" stroke="#d33" stroke-dasharray="3,3"><title>{}</title></line>"##,
            p.top,
            p.top + p.height,
            esc(&m.label)
        );
    }
    for (i, (label, colour, values)) in p.series.iter().enumerate() {
        let mut path = String::new();
        for (s, v) in values.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if s == 0 { "M" } else { " L" },
                x(s as f64 + 0.5),
                y(*v)
            );
        }
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#
        );
        let lx = LEFT + 10.0 + 190.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{}" width="12" height="3" fill="{colour}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            p.top + 10.0,
            lx + 16.0,
            p.top + 14.0,
            esc(label)
        );
    }
}

/// Renders the report.
pub(crate) fn svg(summary: &Summary, series: &[Point], markers: &[Marker]) -> String {
    let seconds = series.len();
    let mut out = String::new();
    let h = 760.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let a = &summary.accept;
    let f = &summary.accept_to_fiscalized;
    let lines = [
        format!(
            "Counterfoil load run — {}: {} flows in {:.1} s, {:.1} flows/s, {:.1} fiscalized/s",
            summary.mode,
            summary.flows_finished,
            summary.elapsed_s,
            summary.flows_per_s,
            summary.fiscalized_per_s
        ),
        format!(
            "accept: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | accept→fiscalized: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            a.p50_ms, a.p99_ms, a.max_ms, f.p50_ms, f.p90_ms, f.p99_ms, f.p999_ms, f.max_ms
        ),
        format!(
            "fiscalized {}, declined {}, voided {}, parked {}, no outcome {}, refunds {} (reversed {}), duplicates {} (mismatches {}), Z reports {}, HTTP retries {}, faults {}",
            summary.fiscalized,
            summary.declined,
            summary.voided,
            summary.parked,
            summary.no_outcome,
            summary.refunds,
            summary.reversed,
            summary.duplicates_sent,
            summary.duplicate_mismatches,
            summary.z_reports,
            summary.http_retries,
            markers.len()
        ),
    ];
    for (i, l) in lines.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{}" font-size="{}">{}</text>"#,
            22.0 + 18.0 * i as f64,
            if i == 0 { 15 } else { 12 },
            esc(l)
        );
    }
    let col = |f: fn(&Point) -> f64| series.iter().map(f).collect::<Vec<_>>();
    draw(
        &mut out,
        &Panel {
            title: "Latency per second (log scale; red dashes: injected faults)",
            unit: "ms",
            top: 100.0,
            height: 330.0,
            log: true,
            series: vec![
                ("accept p99", "#2a7", col(|p| p.accept_p99_ms)),
                ("accept→fiscalized p50", "#36c", col(|p| p.fiscal_p50_ms)),
                ("accept→fiscalized p99", "#c33", col(|p| p.fiscal_p99_ms)),
                ("accept→fiscalized max", "#c9c", col(|p| p.fiscal_max_ms)),
            ],
        },
        seconds,
        markers,
    );
    draw(
        &mut out,
        &Panel {
            title: "Throughput per second",
            unit: "/s",
            top: 480.0,
            height: 240.0,
            log: false,
            series: vec![
                ("accepted", "#2a7", col(|p| p.accepted as f64)),
                ("fiscalized", "#36c", col(|p| p.fiscalized as f64)),
            ],
        },
        seconds,
        markers,
    );
    let _ = writeln!(out, "</svg>");
    out
}
