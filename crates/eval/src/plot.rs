//! SVG figures for the report: line charts with linear or log axes, labelled operating points
//! and a legend, and score histograms. Plain SVG text, so the HTML report embeds them with no
//! fonts, scripts or files fetched from anywhere.

use std::fmt::Write as _;

pub const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

pub struct Axis {
    pub label: String,
    pub log: bool,
    pub min: f64,
    pub max: f64,
}

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Operating points marked with a dot and a label.
    pub marks: Vec<(f64, f64, String)>,
}

pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

impl Axis {
    /// Position of `v` in 0..=1 along the axis (clamped).
    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            let (a, b) = (self.min.log10(), self.max.log10());
            (v.max(self.min).log10() - a) / (b - a)
        } else {
            (v - self.min) / (self.max - self.min)
        };
        f.clamp(0.0, 1.0)
    }

    /// Tick values: each decade on a log axis, five steps on a linear one.
    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            let (a, b) = (
                self.min.log10().ceil() as i32,
                self.max.log10().floor() as i32,
            );
            (a..=b).map(|e| (10f64.powi(e), format!("1e{e}"))).collect()
        } else {
            (0..=5)
                .map(|k| {
                    let v = self.min + (self.max - self.min) * k as f64 / 5.0;
                    (
                        v,
                        format!("{v:.3}")
                            .trim_end_matches('0')
                            .trim_end_matches('.')
                            .to_string(),
                    )
                })
                .collect()
        }
    }
}

impl Chart {
    pub fn svg(&self) -> String {
        let (w, h, l, b, r, t) = (720.0, 460.0, 70.0, 50.0, 20.0, 34.0);
        let x = |v: f64| l + self.x.frac(v) * (w - l - r);
        let y = |v: f64| t + (1.0 - self.y.frac(v)) * (h - t - b);
        let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}' font-family='sans-serif' font-size='12'><rect width='{w}' height='{h}' fill='white'/>");
        let _ = write!(
            s,
            "<text x='{}' y='20' text-anchor='middle' font-size='14'>{}</text>",
            w / 2.0,
            escape(&self.title)
        );
        for (v, label) in self.x.ticks() {
            let xv = x(v);
            let _ = write!(s, "<line x1='{xv:.1}' y1='{t}' x2='{xv:.1}' y2='{}' stroke='#ddd'/><text x='{xv:.1}' y='{}' text-anchor='middle'>{label}</text>", h - b, h - b + 16.0);
        }
        for (v, label) in self.y.ticks() {
            let yv = y(v);
            let _ = write!(s, "<line x1='{l}' y1='{yv:.1}' x2='{}' y2='{yv:.1}' stroke='#ddd'/><text x='{}' y='{:.1}' text-anchor='end'>{label}</text>", w - r, l - 6.0, yv + 4.0);
        }
        let _ = write!(
            s,
            "<rect x='{l}' y='{t}' width='{}' height='{}' fill='none' stroke='#999'/>",
            w - l - r,
            h - t - b
        );
        let _ = write!(
            s,
            "<text x='{}' y='{}' text-anchor='middle'>{}</text>",
            (l + w - r) / 2.0,
            h - 10.0,
            escape(&self.x.label)
        );
        let my = (t + h - b) / 2.0;
        let _ = write!(
            s,
            "<text x='16' y='{my}' transform='rotate(-90 16 {my})' text-anchor='middle'>{}</text>",
            escape(&self.y.label)
        );
        for (i, se) in self.series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let pts: Vec<String> = se
                .points
                .iter()
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
                .collect();
            let _ = write!(
                s,
                "<polyline fill='none' stroke='{c}' stroke-width='2' points='{}'/>",
                pts.join(" ")
            );
            for (a, b, label) in &se.marks {
                let _ = write!(s, "<circle cx='{:.1}' cy='{:.1}' r='4' fill='{c}'/><text x='{:.1}' y='{:.1}' fill='{c}'>{}</text>", x(*a), y(*b), x(*a) + 6.0, y(*b) - 6.0, escape(label));
            }
            let ly = t + 12.0 + 18.0 * i as f64;
            let _ = write!(s, "<rect x='{}' y='{}' width='14' height='4' fill='{c}'/><text x='{}' y='{}'>{}</text>", w - r - 200.0, ly - 4.0, w - r - 180.0, ly + 1.0, escape(&se.name));
        }
        s.push_str("</svg>");
        s
    }
}

/// Genuine and impostor score histograms on shared bins (share of pairs per bin), with the
/// threshold drawn when given.
pub fn histogram(title: &str, genuine: &[f64], impostor: &[f64], threshold: Option<f64>) -> String {
    let (w, h, l, b) = (720.0, 260.0, 50.0, 40.0);
    let finite = genuine.iter().chain(impostor).filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, z), v| {
        (a.min(*v), z.max(*v))
    });
    if !lo.is_finite() {
        return String::new();
    }
    let bins = 60usize;
    let span = (hi - lo).max(1e-9);
    let hist = |v: &[f64]| {
        let mut c = vec![0f64; bins];
        for d in v.iter().filter(|d| d.is_finite()) {
            c[(((d - lo) / span) * bins as f64)
                .floor()
                .clamp(0.0, bins as f64 - 1.0) as usize] += 1.0;
        }
        let n = v.len().max(1) as f64;
        c.into_iter().map(|x| x / n).collect::<Vec<_>>()
    };
    let (g, i) = (hist(genuine), hist(impostor));
    let top = g.iter().chain(&i).cloned().fold(0.0, f64::max).max(1e-9);
    let plot_w = w - l - 10.0;
    let bw = plot_w / bins as f64;
    let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}' font-family='sans-serif' font-size='12'><rect width='{w}' height='{h}' fill='white'/>");
    for (k, (gv, iv)) in g.iter().zip(&i).enumerate() {
        let x0 = l + k as f64 * bw;
        let gh = gv / top * (h - b - 20.0);
        let ih = iv / top * (h - b - 20.0);
        let _ = write!(s, "<rect x='{x0:.1}' y='{:.1}' width='{bw:.1}' height='{gh:.1}' fill='#2ca02c' fill-opacity='0.6'/>", h - b - gh);
        let _ = write!(s, "<rect x='{x0:.1}' y='{:.1}' width='{bw:.1}' height='{ih:.1}' fill='#d62728' fill-opacity='0.6'/>", h - b - ih);
    }
    if let Some(t) = threshold.filter(|t| t.is_finite() && *t >= lo && *t <= hi) {
        let xt = l + (t - lo) / span * plot_w;
        let _ = write!(s, "<line x1='{xt:.1}' y1='10' x2='{xt:.1}' y2='{}' stroke='black' stroke-dasharray='4 3'/><text x='{:.1}' y='20'>threshold {t:.4}</text>", h - b, xt + 4.0);
    }
    let _ = write!(
        s,
        "<text x='{l}' y='{}'>{lo:.3}</text><text x='{}' y='{}' text-anchor='end'>{hi:.3}</text>",
        h - b + 16.0,
        w - 10.0,
        h - b + 16.0
    );
    let _ = write!(s, "<text x='{}' y='{}' text-anchor='middle'>{}: dissimilarity (green genuine, red impostor; share of pairs per bin)</text></svg>", w / 2.0, h - 8.0, escape(title));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_places_decades_evenly_and_clamps() {
        let a = Axis {
            label: "FMR".into(),
            log: true,
            min: 1e-6,
            max: 1.0,
        };
        assert!((a.frac(1e-3) - 0.5).abs() < 1e-12);
        assert_eq!(a.frac(1e-9), 0.0);
        assert_eq!(a.ticks().len(), 7);
        let c = Chart {
            title: "DET <pack>".into(),
            x: a,
            y: Axis {
                label: "FNMR".into(),
                log: false,
                min: 0.0,
                max: 1.0,
            },
            series: vec![Series {
                name: "dlib".into(),
                points: vec![(1e-4, 0.5), (1e-2, 0.1), (f64::NAN, 0.0)],
                marks: vec![(1e-2, 0.1, "10% @ 1e-2".into())],
            }],
        };
        let svg = c.svg();
        assert!(svg.contains("DET &lt;pack&gt;") && svg.contains("10% @ 1e-2"));
        // Two finite points only; the NaN point is dropped, not drawn at a clamp.
        let poly = svg
            .split("points='")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        assert_eq!(poly.split(' ').count(), 2);
    }
}
