//! The PNG chart of `BENCHMARKS.md`: one bar per ratio row, with its target.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Fonts the chart can use, first found wins (Debian: `fonts-dejavu-core`).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Draws `bars` (label, measured ratio, target ratio, whether higher is
/// better) into `file`.
pub fn ratios(file: &Path, title: &str, bars: &[(String, f64, f64, bool)]) -> Result<(), String> {
    let font = FONTS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("no TrueType font found (install fonts-dejavu-core)")?;
    // plotters keeps registered fonts for the life of the process.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| "unreadable font")?;

    let (width, row, top, left) = (1100u32, 34u32, 70u32, 430i32);
    let height = top + row * bars.len() as u32 + 50;
    let root = BitMapBackend::new(file, (width, height)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let text = |size: u32| ("sans-serif", size).into_font().color(&BLACK);
    root.draw_text(title, &text(20), (20, 18)).map_err(e)?;
    root.draw_text(
        "bar: measured ratio (median of alternating pairs); red tick: target (throughput: at least, latency: at most); orange: missed",
        &("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
        (20, 44),
    )
    .map_err(e)?;

    let max = bars
        .iter()
        .map(|b| b.1.max(b.2))
        .fold(1.2f64, f64::max)
        .min(3.0);
    let scale = f64::from(width - left as u32 - 80) / max;
    let x = |r: f64| left + (r.min(max) * scale) as i32;
    for (i, (label, ratio, target, higher)) in bars.iter().enumerate() {
        let y = (top + row * i as u32) as i32;
        root.draw_text(label, &text(15), (20, y + 8)).map_err(e)?;
        let met = if *higher {
            ratio >= target
        } else {
            ratio <= target
        };
        let color = if met {
            RGBColor(60, 130, 200)
        } else {
            RGBColor(230, 140, 40)
        };
        root.draw(&Rectangle::new(
            [(left, y + 5), (x(*ratio), y + row as i32 - 5)],
            color.filled(),
        ))
        .map_err(e)?;
        root.draw(&Rectangle::new(
            [
                (x(*target) - 1, y + 1),
                (x(*target) + 1, y + row as i32 - 1),
            ],
            RED.filled(),
        ))
        .map_err(e)?;
        root.draw_text(&format!("{ratio:.2}"), &text(14), (x(*ratio) + 6, y + 9))
            .map_err(e)?;
    }
    // The 1.0 line: as fast as the baseline.
    let bottom = (top + row * bars.len() as u32) as i32;
    root.draw(&PathElement::new(
        vec![(x(1.0), top as i32 - 4), (x(1.0), bottom + 4)],
        BLACK.stroke_width(1),
    ))
    .map_err(e)?;
    root.draw_text("1.0 = baseline", &text(13), (x(1.0) - 40, bottom + 12))
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
