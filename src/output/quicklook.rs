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
