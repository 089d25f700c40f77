//! The SVG plots `--plots DIR` writes (with `plotters`, SVG backend only): how each cost
//! grows with size, beside its reference, on log-log axes with the min–max spread over
//! the runs as error bars.

use std::fs;
use std::path::Path;

use plotters::prelude::*;

/// One measured point: the median over the runs and its spread.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// Where on the x axis (live ranges, bytes).
    pub x: f64,
    /// The median.
    pub median: f64,
    /// The fastest run.
    pub min: f64,
    /// The slowest run.
    pub max: f64,
}

/// A named line of points.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend's name.
    pub name: String,
    /// Its points, in increasing x.
    pub points: Vec<Point>,
}

/// One chart a group of cases draws.
#[derive(Clone, Debug)]
pub struct Plot {
    /// Its file name in the plots directory.
    pub file: &'static str,
    /// Its title.
    pub title: String,
    /// What the x axis counts.
    pub x_desc: &'static str,
    /// What the y axis measures.
    pub y_desc: &'static str,
    /// Its lines.
    pub series: Vec<Series>,
}

impl Plot {
    /// Writes it into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        chart(
            &dir.join(self.file),
            &self.title,
            self.x_desc,
            self.y_desc,
            &self.series,
        )
    }
}

/// A log-log chart of `series`, written to `path` as SVG.
pub fn chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<(), String> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (Some(x_lo), Some(x_hi)) = (
        all().map(|p| p.x).min_by(f64::total_cmp),
        all().map(|p| p.x).max_by(f64::total_cmp),
    ) else {
        return Err(format!("{}: no points to plot", path.display()));
    };
    let y_lo = all().map(|p| p.min).fold(f64::INFINITY, f64::min).max(1e-3);
    let y_hi = all().map(|p| p.max).fold(0.0, f64::max).max(y_lo * 2.0);
    let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (x_lo / 1.5..x_hi * 1.5).log_scale(),
            (y_lo / 1.5..y_hi * 1.5).log_scale(),
        )
        .map_err(|e| failed(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| si(*x))
        .y_label_formatter(&|y| si(*y))
        .draw()
        .map_err(|e| failed(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line = s.points.iter().map(|p| (p.x, p.median));
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|e| failed(&e))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                s.points.iter().map(|p| {
                    ErrorBar::new_vertical(p.x, p.min, p.median, p.max, color.filled(), 8)
                }),
            )
            .map_err(|e| failed(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))
}

/// `x` with an SI suffix (1k, 2M, 1G; binary for nothing: the axes say what they count).
fn si(x: f64) -> String {
    let (value, suffix) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0}{suffix}")
    } else {
        format!("{value:.1}{suffix}")
    }
}

/// The guest's import rows (`<csv dir>/guest.csv` from `cargo bench-all`, if there is
/// one): `GEM_USERPTR` against `pin_user_pages` alone, over huge and 4 KiB pages, in µs
/// by size, with the spread over the repetitions where the row's note gives it. `None`
/// when no guest run left a CSV.
pub fn guest_imports(csv_dir: &Path) -> Option<Vec<Series>> {
    let text = fs::read_to_string(csv_dir.join("guest.csv")).ok()?;
    let mut series: Vec<Series> = Vec::new();
    let mut push = |name: String, x: f64, (median, min, max): (f64, f64, f64)| {
        let point = Point {
            x,
            median,
            min,
            max,
        };
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(Series {
                name,
                points: vec![point],
            }),
        }
    };
    for line in text.lines().skip(1) {
        // group,case,size,unit,ours_ns,reference,reference_ns,ratio,note (no quoting in
        // the guest's rows).
        let fields: Vec<&str> = line.split(',').collect();
        let [_, case, size, _, ours, _, reference, _, note @ ..] = fields.as_slice() else {
            continue;
        };
        let note = note.first().copied().unwrap_or("");
        let pages = match *case {
            "import GEM_USERPTR" => "huge pages",
            "import GEM_USERPTR 4K pages" => "4 KiB pages",
            _ => continue,
        };
        let (Ok(size), Ok(ours), Ok(reference)) = (
            size.parse::<f64>(),
            ours.parse::<f64>(),
            reference.parse::<f64>(),
        ) else {
            continue;
        };
        let flat = |us: f64| (us, us, us);
        push(
            format!("GEM_USERPTR, {pages}"),
            size,
            note_spread(note, "whole").unwrap_or(flat(ours / 1e3)),
        );
        push(
            format!("pin_user_pages alone, {pages}"),
            size,
            note_spread(note, "pin").unwrap_or(flat(reference / 1e3)),
        );
    }
    (!series.is_empty()).then_some(series)
}

/// `name`'s "median (min–max)" in a guest import note ("µs pin 3.9 (3.0–4.1); record …").
fn note_spread(note: &str, name: &str) -> Option<(f64, f64, f64)> {
    let note = note.strip_prefix("µs ")?;
    let rest = note
        .split("; ")
        .find_map(|part| part.strip_prefix(name)?.strip_prefix(' '))?;
    let (median, range) = rest.split_once(" (")?;
    let (min, max) = range.strip_suffix(')')?.split_once('–')?;
    Some((median.parse().ok()?, min.parse().ok()?, max.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::note_spread;

    #[test]
    fn a_phase_spread_is_read_from_the_note_and_a_missing_one_is_none() {
        let note = "µs pin 3.9 (3.0–15.5); record 0.0 (0.0–0.0); whole 27.3 (23.2–88.1)";
        assert_eq!(note_spread(note, "pin"), Some((3.9, 3.0, 15.5)));
        assert_eq!(note_spread(note, "whole"), Some((27.3, 23.2, 88.1)));
        assert_eq!(note_spread(note, "setup"), None);
        assert_eq!(note_spread("", "pin"), None);
    }
}
