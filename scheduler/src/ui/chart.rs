//! Charts as inline SVG drawn on the server: no chart library, no script. A chart is a
//! few series over evenly spaced points (minutes, days), drawn as lines with a legend.

use maud::{html, Markup};

/// One line of a chart.
pub(super) struct Series<'a> {
    /// Its name in the legend (`succeeded`, a team).
    pub label: &'a str,
    /// Its CSS class, for its colour.
    pub class: &'a str,
    /// One value per point, all series the same length.
    pub values: Vec<f64>,
}

const W: f64 = 600.0;
const H: f64 = 120.0;
const PAD: f64 = 4.0;

/// A line chart of `series`; `first` and `last` label the two ends of the x axis, and
/// `unit` formats the y axis's top value.
pub(super) fn lines(
    id: &str,
    series: &[Series],
    first: &str,
    last: &str,
    top_label: impl Fn(f64) -> String,
) -> Markup {
    let points = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0_f64, f64::max);
    let scale = if top > 0.0 { (H - 2.0 * PAD) / top } else { 0.0 };
    let step = if points > 1 { W / (points - 1) as f64 } else { 0.0 };
    let path = |values: &[f64]| -> String {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, H - PAD - v * scale))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        figure.chart #(id) {
            svg viewBox=(format!("0 0 {W} {H}")) preserveAspectRatio="none" width="100%" height=(H) role="img"
                aria-label=(series.iter().map(|s| format!("{}: {}", s.label, s.values.iter().sum::<f64>())).collect::<Vec<_>>().join(", ")) {
                line.axis x1="0" y1=(H - PAD) x2=(W) y2=(H - PAD) {}
                @for s in series {
                    polyline class=(s.class) data-series=(s.label) data-total=(s.values.iter().sum::<f64>()) points=(path(&s.values)) {}
                }
            }
            figcaption {
                span.muted { (first) } " · top " (top_label(top)) " · " span.muted { (last) }
                @for s in series { " " span class=(format!("key {}", s.class)) { "■" } " " (s.label) }
            }
        }
    }
}

/// Classes for up to eight teams' lines, in turn.
pub(super) const PALETTE: [&str; 8] = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"];

/// The charts' colours, added to the page's style.
pub(super) const STYLE: &str = "
figure.chart{margin:0} figure.chart svg{display:block;background:#fbfcfd;border:1px solid #eef0f3}
figure.chart polyline{fill:none;stroke-width:2;vector-effect:non-scaling-stroke}
figure.chart line.axis{stroke:#c9ced6;vector-effect:non-scaling-stroke}
.ok{stroke:#2f9e5b;color:#2f9e5b} .bad{stroke:#d64545;color:#d64545}
.c0{stroke:#3b6fd8;color:#3b6fd8} .c1{stroke:#e2a03f;color:#e2a03f} .c2{stroke:#2f9e5b;color:#2f9e5b}
.c3{stroke:#9b59b6;color:#9b59b6} .c4{stroke:#d64545;color:#d64545} .c5{stroke:#16a2b8;color:#16a2b8}
.c6{stroke:#7a8391;color:#7a8391} .c7{stroke:#b5651d;color:#b5651d}
";
