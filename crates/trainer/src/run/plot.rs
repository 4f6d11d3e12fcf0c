//! Plots of a run's `metrics.jsonl` as SVG (plotters): `plots/metrics.svg` with one panel per
//! curve, and `plots/reward.svg`, the training reward with held-out accuracy.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;
use tinylora::fsutil::write_atomic;

use super::metrics::read_records;

/// One curve: a legend label and `(step, value)` points.
struct Curve {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
}

/// A legend entry's mark: a short line in `color`.
fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color)
}

/// Draws `chart`'s legend: its labelled series in a white box.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// The `(step, record[key])` points of the records of `split` that have a finite `key`.
fn points(records: &[Value], split: &str, key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r["split"] == split)
        .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
        .filter(|(_, y)| y.is_finite())
        .collect()
}

fn curve(records: &[Value], split: &str, key: &str, color: RGBColor) -> Curve {
    Curve {
        label: format!("{split} {key}"),
        points: points(records, split, key),
        color,
    }
}

/// Draws `curves` into `area` with `title`; panels without points stay empty.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    curves: &[Curve],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all: Vec<(f64, f64)> = curves.iter().flat_map(|c| c.points.clone()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let (x0, x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.08).max(1e-9);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing {title}: {e:?}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    for c in curves.iter().filter(|c| !c.points.is_empty()) {
        let color = c.color;
        chart
            .draw_series(LineSeries::new(c.points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(c.label.clone())
            .legend(legend_line(color));
        if c.points.len() == 1 {
            chart
                .draw_series(c.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
    }
    if curves.len() > 1 {
        draw_legend(&mut chart).map_err(err)?;
    }
    Ok(())
}

fn render(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing: {e:?}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("drawing: {e:?}"))?;
    }
    Ok(svg)
}

/// Draws the plots of `run_dir/metrics.jsonl` into `run_dir/plots/`; returns the files.
pub fn write_plots(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let records = read_records(&run_dir.join("metrics.jsonl"))?;
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir)?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let green = RGBColor(44, 160, 44);
    let reward = || {
        vec![
            curve(&records, "train", "reward_mean", blue),
            curve(&records, "eval", "accuracy", orange),
        ]
    };
    let panels: Vec<(&str, Vec<Curve>)> = vec![
        ("reward and held-out accuracy", reward()),
        ("loss", vec![curve(&records, "train", "loss", blue)]),
        (
            "completion length (tokens)",
            vec![
                curve(&records, "train", "completion_len_mean", blue),
                curve(&records, "train", "completion_len_max", green),
            ],
        ),
        (
            "groups without signal / clipped tokens",
            vec![
                curve(&records, "train", "zero_std_fraction", blue),
                curve(&records, "train", "clip_fraction", orange),
            ],
        ),
        ("|v|", vec![curve(&records, "train", "v_norm", blue)]),
        ("learning rate", vec![curve(&records, "train", "lr", blue)]),
    ];
    let metrics = render((1500, 900), |root| {
        for (area, (title, curves)) in root.split_evenly((2, 3)).iter().zip(&panels) {
            panel(area, title, curves)?;
        }
        Ok(())
    })?;
    let reward_svg = render((800, 500), |root| panel(root, "reward", &reward()))?;
    let files = vec![dir.join("metrics.svg"), dir.join("reward.svg")];
    write_atomic(&files[0], metrics.as_bytes())?;
    write_atomic(&files[1], reward_svg.as_bytes())?;
    Ok(files)
}

/// Draws the sweep: held-out accuracy of each run (dots) and the mean per size (line) against
/// trained parameters on a log axis, with the base model's accuracy as a dashed line.
pub fn write_sweep_plot(path: &Path, rows: &[Value], base: Option<f64>) -> Result<()> {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r["parameters"].as_f64()?, r["accuracy"].as_f64()?)))
        .collect();
    let mut sizes: Vec<f64> = points.iter().map(|p| p.0).collect();
    sizes.dedup();
    let means: Vec<(f64, f64)> = sizes
        .iter()
        .map(|&x| {
            let ys: Vec<f64> = points.iter().filter(|p| p.0 == x).map(|p| p.1).collect();
            (x, ys.iter().sum::<f64>() / ys.len() as f64)
        })
        .collect();
    let x1 = sizes.iter().cloned().fold(1.0, f64::max) * 2.0;
    let blue = RGBColor(31, 119, 180);
    let grey = RGBColor(120, 120, 120);
    let svg = render((800, 500), |root| {
        let err = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("drawing the sweep: {e:?}");
        let mut chart = ChartBuilder::on(root)
            .caption(
                "held-out strict accuracy vs trained parameters",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((0.5f64..x1).log_scale(), 0f64..1f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("trained parameters")
            .y_desc("accuracy")
            .draw()
            .map_err(err)?;
        if let Some(b) = base {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.5, b), (x1, b)],
                    6,
                    4,
                    grey.into(),
                ))
                .map_err(err)?
                .label("base model (v = 0)")
                .legend(legend_line(grey));
        }
        chart
            .draw_series(LineSeries::new(means.clone(), blue.stroke_width(2)))
            .map_err(err)?
            .label("mean over seeds")
            .legend(legend_line(blue));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, blue.filled())))
            .map_err(err)?;
        draw_legend(&mut chart).map_err(err)?;
        Ok(())
    })?;
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_the_curves_it_is_given() {
        let dir = std::env::temp_dir().join(format!("tinylora-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines: String = (1..=5)
            .map(|s| {
                format!(
                    "{{\"split\":\"train\",\"step\":{s},\"reward_mean\":{},\"loss\":0.1,\"lr\":1e-5}}\n",
                    0.1 * s as f64
                )
            })
            .chain(["{\"split\":\"eval\",\"step\":5,\"accuracy\":0.4}\n".to_string()])
            .collect();
        std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
        let files = write_plots(&dir).unwrap();
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(
            svg.starts_with("<svg")
                && svg.contains("train reward_mean")
                && svg.contains("eval accuracy")
        );
        // Five training points make one polyline with five vertices.
        let polyline = svg
            .lines()
            .find(|l| l.contains("<polyline") && l.contains("#1F77B4"))
            .unwrap();
        let points = polyline
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split_whitespace().count(), 5, "{polyline}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sweep_plot_has_one_dot_per_run() {
        let path = std::env::temp_dir().join(format!("tinylora-sweep-{}.svg", std::process::id()));
        let rows: Vec<Value> = [(1, 0.1), (1, 0.2), (13, 0.4), (13, 0.5)]
            .iter()
            .map(|&(p, a)| serde_json::json!({"parameters": p, "accuracy": a}))
            .collect();
        write_sweep_plot(&path, &rows, Some(0.05)).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
        assert!(svg.contains("base model (v = 0)"));
        std::fs::remove_file(&path).unwrap();
    }
}
