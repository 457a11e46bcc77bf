//! Quicklook PNGs: panels of class maps (and masks) coloured by a palette, side by side,
//! scaled to a size people can look at (nearest neighbour: every class pixel stays a block of
//! one colour), written atomically. One renderer for the monitor's before/after alerts and
//! the run previews.

use image::{Rgba, RgbaImage};
use std::path::Path;

/// A colour per byte value (RGBA); value 255 (class nodata) is transparent by default.
pub type Palette = [[u8; 4]; 256];

/// The frame drawn around each panel.
const FRAME: [u8; 4] = [80, 80, 80, 255];

/// Grey for pixels with no value (nodata, masked, not comparable).
pub const NO_VALUE: [u8; 4] = [128, 128, 128, 255];

/// The palette of band 1 of `ds` (its colour table), entries it lacks transparent.
#[must_use]
pub fn palette_of(ds: &gdal::Dataset) -> Palette {
    let mut p = [[0, 0, 0, 0]; 256];
    let Ok(band) = ds.rasterband(1) else {
        return p;
    };
    if let Some(ct) = band.color_table() {
        for (i, e) in p.iter_mut().enumerate().take(ct.entry_count()) {
            if let Some(c) = ct.entry_as_rgb(i) {
                *e = [c.r as u8, c.g as u8, c.b as u8, c.a as u8];
            }
        }
    }
    p
}

/// One panel: `w x h` values drawn with `colour` (of the pixel's index and value).
pub fn panel<T: Copy>(
    values: &[T],
    (w, h): (usize, usize),
    colour: impl Fn(usize, T) -> [u8; 4],
) -> RgbaImage {
    let mut img = RgbaImage::new(w as u32, h as u32);
    for (i, v) in values.iter().enumerate().take(w * h) {
        img.put_pixel((i % w) as u32, (i / w) as u32, Rgba(colour(i, *v)));
    }
    img
}

/// `c` faded towards white (pixels outside the region of interest).
#[must_use]
pub fn faded(c: [u8; 4]) -> [u8; 4] {
    let f = |v: u8| ((u16::from(v) * 3 + 255 * 7) / 10) as u8;
    [f(c[0]), f(c[1]), f(c[2]), 255]
}

/// The integer scale that brings the longer side to at least `min_side` pixels, and the
/// stride (> 1 only when the longer side exceeds `max_side`) that brings it under `max_side`.
#[must_use]
pub fn scale_for((w, h): (usize, usize), min_side: usize, max_side: usize) -> (usize, usize) {
    let long = w.max(h).max(1);
    if long > max_side {
        (1, long.div_ceil(max_side))
    } else {
        ((min_side / long).max(1).min(max_side / long).max(1), 1)
    }
}

/// Panels of one size side by side with a white gap, each scaled up by `scale` or thinned by
/// `stride` (nearest neighbour).
#[must_use]
pub fn side_by_side(panels: &[RgbaImage], scale: usize, stride: usize) -> RgbaImage {
    let (w, h) = panels
        .first()
        .map_or((0, 0), |p| (p.width() as usize, p.height() as usize));
    let (pw, ph) = (w * scale / stride.max(1), h * scale / stride.max(1));
    let gap = 8;
    let n = panels.len();
    let mut out = RgbaImage::from_pixel(
        (pw * n + gap * (n.saturating_sub(1))) as u32,
        ph as u32,
        Rgba([255, 255, 255, 255]),
    );
    for (k, p) in panels.iter().enumerate() {
        let x0 = k * (pw + gap);
        for y in 0..ph {
            for x in 0..pw {
                let sx = (x * stride.max(1) / scale).min(w - 1);
                let sy = (y * stride.max(1) / scale).min(h - 1);
                let px = *p.get_pixel(sx as u32, sy as u32);
                // Transparent pixels (outside the region) are drawn light on the white page.
                let px = if px[3] == 0 {
                    Rgba([235, 235, 235, 255])
                } else {
                    px
                };
                out.put_pixel((x0 + x) as u32, y as u32, px);
            }
        }
        // A thin frame: white classes (clouds) stay visible on the white page.
        for x in 0..pw {
            out.put_pixel((x0 + x) as u32, 0, Rgba(FRAME));
            out.put_pixel((x0 + x) as u32, (ph.max(1) - 1) as u32, Rgba(FRAME));
        }
        for y in 0..ph {
            out.put_pixel(x0 as u32, y as u32, Rgba(FRAME));
            out.put_pixel((x0 + pw.max(1) - 1) as u32, y as u32, Rgba(FRAME));
        }
    }
    out
}

/// Writes panels of `size` side by side, scaled for people (256 to 1024 px on the long side),
/// as PNG to `path`.
pub fn write_panels(
    path: &Path,
    panels: &[RgbaImage],
    size: (usize, usize),
) -> std::io::Result<()> {
    let (scale, stride) = scale_for(size, 256, 1024);
    write_png(path, &side_by_side(panels, scale, stride))
}

/// Panels as [`write_panels`] does, with a strip below them holding `legend` under `title`.
pub fn write_panels_with_legend(
    path: &Path,
    panels: &[RgbaImage],
    size: (usize, usize),
    title: &str,
    legend: &Legend,
) -> std::io::Result<()> {
    let (scale, stride) = scale_for(size, 256, 1024);
    let top = side_by_side(panels, scale, stride);
    let lines = 1 + match legend {
        Legend::Classes(c) => c.len(),
        Legend::Ramp { .. } => 3,
        Legend::Text(_) => 1,
    };
    let strip = lines as u32 * 11 + 8;
    let mut img = RgbaImage::from_pixel(
        top.width(),
        top.height() + strip,
        Rgba([255, 255, 255, 255]),
    );
    image::imageops::replace(&mut img, &top, 0, 0);
    let mut below = RgbaImage::from_pixel(top.width(), strip, Rgba([255, 255, 255, 255]));
    draw_legend(&mut below, title, legend);
    image::imageops::replace(&mut img, &below, 0, i64::from(top.height()));
    write_png(path, &img)
}

/// The category names of band 1 of `ds` (a class map's class names), by value.
#[must_use]
pub fn category_names(ds: &gdal::Dataset) -> Vec<String> {
    let Ok(band) = ds.rasterband(1) else {
        return Vec::new();
    };
    // SAFETY: the band handle is valid while `ds` lives; GDAL owns the returned list, which
    // is only read here.
    let list = unsafe { gdal_sys::GDALGetRasterCategoryNames(band.c_rasterband()) };
    let mut names = Vec::new();
    if list.is_null() {
        return names;
    }
    for i in 0.. {
        // SAFETY: a NULL-terminated list of C strings.
        let p = unsafe { *list.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: each entry is a NUL-terminated string.
        names.push(
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned(),
        );
    }
    names
}

/// Writes `img` as PNG to `path` (a temporary name, renamed when complete).
pub fn write_png(path: &Path, img: &RgbaImage) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::util::write_atomic(path, &bytes)
}

/// The top `k` principal axes of `rows` (each `dim` long) by power iteration with deflation,
/// and their mean.
#[must_use]
pub fn principal_axes(rows: &[&[f32]], dim: usize, k: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; dim];
    for r in rows {
        for (m, &x) in mean.iter_mut().zip(*r) {
            *m += f64::from(x) / n;
        }
    }
    let mut cov = vec![0.0; dim * dim];
    for r in rows {
        let c: Vec<f64> = r
            .iter()
            .zip(&mean)
            .map(|(&x, m)| f64::from(x) - m)
            .collect();
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] += c[i] * c[j] / n;
            }
        }
    }
    let mut axes = Vec::new();
    for a in 0..k {
        let mut v: Vec<f64> = (0..dim)
            .map(|i| 1.0 + ((i * 7 + a * 13) % 11) as f64 / 11.0)
            .collect();
        for _ in 0..100 {
            let mut next: Vec<f64> = (0..dim)
                .map(|i| (0..dim).map(|j| cov[i * dim + j] * v[j]).sum())
                .collect();
            let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            for x in &mut next {
                *x /= norm;
            }
            v = next;
        }
        let lambda: f64 = (0..dim)
            .map(|i| v[i] * (0..dim).map(|j| cov[i * dim + j] * v[j]).sum::<f64>())
            .sum();
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] -= lambda * v[i] * v[j];
            }
        }
        axes.push(v);
    }
    (mean, axes)
}

/// The ramp of value maps (as in their QGIS style, [`super::qgis::value_style`]).
pub const VALUE_RAMP: [[u8; 3]; 5] = [
    [0x44, 0x01, 0x54],
    [0x3b, 0x52, 0x8b],
    [0x21, 0x91, 0x8c],
    [0x5e, 0xc9, 0x62],
    [0xfd, 0xe7, 0x25],
];

/// `under` with `over` laid on it at opacity `alpha` (of 255).
#[must_use]
pub fn blend(under: [u8; 4], over: [u8; 3], alpha: u8) -> [u8; 4] {
    let a = u16::from(alpha);
    let mix = |u: u8, o: u8| ((u16::from(u) * (255 - a) + u16::from(o) * a + 127) / 255) as u8;
    [
        mix(under[0], over[0]),
        mix(under[1], over[1]),
        mix(under[2], over[2]),
        255,
    ]
}

/// The ramp colour of `t` in 0..=1.
#[must_use]
pub fn ramp(t: f64) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * (VALUE_RAMP.len() - 1) as f64;
    let i = (t.floor() as usize).min(VALUE_RAMP.len() - 2);
    let f = t - i as f64;
    let (a, b) = (VALUE_RAMP[i], VALUE_RAMP[i + 1]);
    let m = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as u8;
    [m(a[0], b[0]), m(a[1], b[1]), m(a[2], b[2])]
}

/// What a legend lists.
#[derive(Debug, Clone)]
pub enum Legend {
    /// Names, each with a swatch of its exact colour.
    Classes(Vec<(String, [u8; 3])>),
    /// A value ramp ([`VALUE_RAMP`]) from `low` to `high`.
    Ramp {
        /// The value's name and unit.
        label: String,
        /// The value at the ramp's start.
        low: f64,
        /// The value at its end.
        high: f64,
    },
    /// A line of text.
    Text(String),
}

/// The 8 x 8 glyph of `c` (ASCII and Latin-1; others are drawn as `?`).
fn glyph(c: char) -> [u8; 8] {
    let i = c as usize;
    if i < 128 {
        font8x8::legacy::BASIC_LEGACY[i]
    } else if (0xA0..0x100).contains(&i) {
        font8x8::legacy::LATIN_LEGACY[i - 0xA0]
    } else {
        font8x8::legacy::BASIC_LEGACY['?' as usize]
    }
}

/// Draws `text` at (`x`, `y`) in `colour`, each glyph pixel `s` x `s`; clipped to the image.
pub fn draw_text(img: &mut RgbaImage, text: &str, (x, y): (u32, u32), s: u32, colour: [u8; 4]) {
    for (k, ch) in text.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..s {
                    for dx in 0..s {
                        let px = x + (k as u32 * 8 + col) * s + dx;
                        let py = y + row as u32 * s + dy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, Rgba(colour));
                        }
                    }
                }
            }
        }
    }
}

fn fill(img: &mut RgbaImage, (x0, y0, w, h): (u32, u32, u32, u32), colour: [u8; 4]) {
    for y in y0..(y0 + h).min(img.height()) {
        for x in x0..(x0 + w).min(img.width()) {
            let p = img.get_pixel_mut(x, y);
            *p = Rgba(if colour[3] == 255 {
                colour
            } else {
                blend(p.0, [colour[0], colour[1], colour[2]], colour[3])
            });
        }
    }
}

/// A number for a legend: few digits.
fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e6 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The legend in the lower left corner: a title line, then the classes (a swatch of each
/// class's exact colour and its name), the ramp with its ends, or a line of text.
pub fn draw_legend(img: &mut RgbaImage, title: &str, legend: &Legend) {
    let s: u32 = if img.width().min(img.height()) >= 600 {
        2
    } else {
        1
    };
    let line = 11 * s;
    let pad = 4 * s;
    let max_chars = ((img.width().saturating_sub(2 * pad + 12 * s)) / (8 * s)).max(4) as usize;
    let cut = |t: &str| -> String {
        if t.chars().count() > max_chars {
            t.chars()
                .take(max_chars - 1)
                .chain(std::iter::once('~'))
                .collect()
        } else {
            t.to_string()
        }
    };
    let mut lines: Vec<(Option<[u8; 3]>, String)> = vec![(None, cut(title))];
    match legend {
        Legend::Classes(c) => {
            let fit = ((img.height().saturating_sub(2 * pad)) / line).saturating_sub(1) as usize;
            for (name, colour) in c.iter().take(fit) {
                lines.push((Some(*colour), cut(name)));
            }
        }
        Legend::Ramp { label, low, high } => {
            lines.push((None, cut(label)));
            lines.push((None, String::new()));
            lines.push((None, cut(&format!("{} .. {}", short(*low), short(*high)))));
        }
        Legend::Text(t) => lines.push((None, cut(t))),
    }
    let text_w = lines
        .iter()
        .map(|(_, t)| t.chars().count() as u32)
        .max()
        .unwrap_or(0)
        * 8
        * s;
    let w = (text_w + 12 * s + 2 * pad).min(img.width());
    let h = (lines.len() as u32 * line + 2 * pad).min(img.height());
    let (x0, y0) = (0, img.height() - h);
    fill(img, (x0, y0, w, h), [255, 255, 255, 210]);
    for (i, (swatch, text)) in lines.iter().enumerate() {
        let y = y0 + pad + i as u32 * line;
        let mut x = x0 + pad;
        if let Some(c) = swatch {
            fill(img, (x, y, 8 * s, 8 * s), [c[0], c[1], c[2], 255]);
            // A dark frame: white classes stay visible on the white box.
            for k in 0..8 * s {
                for (px, py) in [
                    (x + k, y),
                    (x + k, y + 8 * s - 1),
                    (x, y + k),
                    (x + 8 * s - 1, y + k),
                ] {
                    if px < img.width()
                        && py < img.height()
                        && (k == 0
                            || k == 8 * s - 1
                            || px == x
                            || px == x + 8 * s - 1
                            || py == y
                            || py == y + 8 * s - 1)
                    {
                        let p = img.get_pixel(px, py).0;
                        if p == [c[0], c[1], c[2], 255]
                            && (px == x || px == x + 8 * s - 1 || py == y || py == y + 8 * s - 1)
                        {
                            img.put_pixel(px, py, Rgba([60, 60, 60, 255]));
                        }
                    }
                }
            }
            x += 12 * s;
        } else if matches!(legend, Legend::Ramp { .. }) && text.is_empty() {
            // The ramp bar, on the empty line.
            let bar = (text_w.max(64 * s)).min(img.width().saturating_sub(x + pad));
            for k in 0..bar {
                let c = ramp(f64::from(k) / f64::from(bar.max(2) - 1));
                fill(img, (x + k, y, 1, 8 * s), [c[0], c[1], c[2], 255]);
            }
        }
        draw_text(img, text, (x, y), s, [20, 20, 20, 255]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_panels_are_scaled_up_and_large_ones_thinned() {
        assert_eq!(scale_for((50, 20), 256, 1024), (5, 1));
        assert_eq!(scale_for((300, 20), 256, 1024), (1, 1));
        assert_eq!(scale_for((5000, 100), 256, 1024), (1, 5));
    }

    #[test]
    fn panels_keep_their_colours_blockwise() {
        let a = panel(&[0_u8, 1, 1, 0], (2, 2), |_, v| [v * 200, 0, 0, 255]);
        let b = panel(&[255_u8, 255, 255, 255], (2, 2), |_, _| [0, 0, 0, 0]);
        let img = side_by_side(&[a, b], 3, 1);
        assert_eq!((img.width(), img.height()), (6 + 8 + 6, 6));
        assert_eq!(img.get_pixel(0, 0).0, FRAME);
        assert_eq!(img.get_pixel(1, 1).0, [0, 0, 0, 255]);
        assert_eq!(img.get_pixel(3, 1).0, [200, 0, 0, 255]);
        assert_eq!(img.get_pixel(4, 2).0, [200, 0, 0, 255]);
        assert_eq!(img.get_pixel(15, 1).0, [235, 235, 235, 255]);
    }
}
