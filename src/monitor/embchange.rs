//! Per-patch change of an embedding map against each patch's previous valid observation:
//! `1 - cosine` between the patch's embedding now and the newest earlier one where the patch
//! was valid (every band a number, and no pixel of it called cloud or shadow by the mask
//! model's class map). Writes the distance map (Float32, NaN where not compared) and the
//! previous valid embeddings (Float32, one band per dimension), in blocks of rows.

use super::change::{Grid, Map, Stages, burn, cerr, grid_of, publish, window};
use crate::error::MonitorError;
use crate::output::quicklook;
use crate::output::raster::RasterKind;
use gdal::raster::Buffer;
use gdal::vector::Geometry;
use gdal::{Dataset, Metadata as _};
use std::path::Path;

/// A date's comparison, per region: patches compared and the sum of their distances.
#[derive(Debug, Clone)]
pub struct Detected {
    /// Per region, in the order given: (patches compared, sum of `1 - cosine`).
    pub regions: Vec<(u64, f64)>,
    /// The earlier dates that supplied a previous embedding to some patch.
    pub dates_used: Vec<String>,
}

/// `1 - cosine` of two vectors; None if either is zero.
#[must_use]
pub fn distance(a: &[f32], b: &[f32]) -> Option<f32> {
    let (mut ab, mut aa, mut bb) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    (aa > 0.0 && bb > 0.0).then(|| (1.0 - ab / (aa.sqrt() * bb.sqrt())) as f32)
}

/// An embedding map opened for reading blocks, with its mask.
struct Opened {
    date: String,
    ds: Dataset,
    path: std::path::PathBuf,
    dim: usize,
    /// Per band: scale, offset, nodata.
    bands: Vec<(f64, f64, Option<f64>)>,
    mask: Option<(Dataset, std::path::PathBuf, Vec<u8>, Grid)>,
}

impl Opened {
    fn open(m: &Map) -> Result<Self, MonitorError> {
        let ds = Dataset::open(&m.classes).map_err(|e| cerr(&m.classes, e))?;
        let dim = ds.raster_count();
        let mut bands = Vec::with_capacity(dim);
        for b in 1..=dim {
            let r = ds.rasterband(b).map_err(|e| cerr(&m.classes, e))?;
            bands.push((
                r.scale().unwrap_or(1.0),
                r.offset().unwrap_or(0.0),
                r.no_data_value(),
            ));
        }
        let mask = match &m.mask {
            Some((p, values)) => {
                let d = Dataset::open(p).map_err(|e| cerr(p, e))?;
                let g = grid_of(&d, p)?;
                Some((d, p.clone(), values.clone(), g))
            }
            None => None,
        };
        Ok(Self {
            date: m.date.clone(),
            ds,
            path: m.classes.clone(),
            dim,
            bands,
            mask,
        })
    }

    /// The vectors of a window, patch-major (`[patch * dim + band]`), NaN in every band of a
    /// patch where any band has no number.
    fn vectors(
        &self,
        (x0, y0, w, h): (usize, usize, usize, usize),
    ) -> Result<Vec<f32>, MonitorError> {
        let mut v = vec![0.0_f32; w * h * self.dim];
        let mut bad = vec![false; w * h];
        for (b, &(scale, offset, nodata)) in self.bands.iter().enumerate() {
            let data = self
                .ds
                .rasterband(b + 1)
                .and_then(|r| r.read_as::<f64>((x0 as isize, y0 as isize), (w, h), (w, h), None))
                .map_err(|e| cerr(&self.path, e))?
                .data()
                .to_vec();
            for (p, &x) in data.iter().enumerate() {
                if x.is_nan() || nodata == Some(x) {
                    bad[p] = true;
                } else {
                    v[p * self.dim + b] = (x * scale + offset) as f32;
                }
            }
        }
        for (p, &is_bad) in bad.iter().enumerate() {
            if is_bad {
                v[p * self.dim..(p + 1) * self.dim].fill(f32::NAN);
            }
        }
        Ok(v)
    }

    /// Which patches of a window on `grid` have a pixel the mask model calls cloud or
    /// shadow (each mask pixel counts for the patch its centre is in).
    fn masked(
        &self,
        grid: &Grid,
        (x0, y0, w, h): (usize, usize, usize, usize),
    ) -> Result<Vec<bool>, MonitorError> {
        let mut out = vec![false; w * h];
        let Some((ds, path, values, mg)) = &self.mask else {
            return Ok(out);
        };
        if mg.wkt != grid.wkt {
            return Err(cerr(
                path,
                format!(
                    "the mask is in another CRS than {}; run the model and its mask on the same regions' grid",
                    self.path.display()
                ),
            ));
        }
        let gt = &grid.gt;
        let (ax, bx) = (gt[0] + x0 as f64 * gt[1], gt[0] + (x0 + w) as f64 * gt[1]);
        let (ay, by) = (gt[3] + y0 as f64 * gt[5], gt[3] + (y0 + h) as f64 * gt[5]);
        let m = &mg.gt;
        let col = |x: f64| (x - m[0]) / m[1];
        let row = |y: f64| (y - m[3]) / m[5];
        let c0 = col(ax.min(bx)).floor().max(0.0) as usize;
        let c1 = (col(ax.max(bx)).ceil().max(0.0) as usize).min(mg.size.0);
        let (ra, rb) = (row(ay), row(by));
        let r0 = ra.min(rb).floor().max(0.0) as usize;
        let r1 = (ra.max(rb).ceil().max(0.0) as usize).min(mg.size.1);
        if c1 <= c0 || r1 <= r0 {
            return Ok(out);
        }
        let (mw, mh) = (c1 - c0, r1 - r0);
        let data = ds
            .rasterband(1)
            .and_then(|b| b.read_as::<u8>((c0 as isize, r0 as isize), (mw, mh), (mw, mh), None))
            .map_err(|e| cerr(path, e))?
            .data()
            .to_vec();
        for (k, v) in data.iter().enumerate() {
            if !values.contains(v) {
                continue;
            }
            let cx = m[0] + ((c0 + k % mw) as f64 + 0.5) * m[1];
            let cy = m[3] + ((r0 + k / mw) as f64 + 0.5) * m[5];
            let px = ((cx - gt[0]) / gt[1]).floor() - x0 as f64;
            let py = ((cy - gt[3]) / gt[5]).floor() - y0 as f64;
            if px >= 0.0 && py >= 0.0 && (px as usize) < w && (py as usize) < h {
                out[py as usize * w + px as usize] = true;
            }
        }
        Ok(out)
    }

    /// The window's vectors with masked patches set to NaN.
    fn valid_vectors(
        &self,
        grid: &Grid,
        win: (usize, usize, usize, usize),
    ) -> Result<Vec<f32>, MonitorError> {
        let mut v = self.vectors(win)?;
        for (p, m) in self.masked(grid, win)?.into_iter().enumerate() {
            if m {
                v[p * self.dim..(p + 1) * self.dim].fill(f32::NAN);
            }
        }
        Ok(v)
    }
}

/// Fills the patches of `previous` without a vector from an earlier window's valid vectors;
/// whether any patch is still without one, and whether this one supplied any.
fn fill(previous: &mut [f32], earlier: &[f32], dim: usize) -> (bool, bool) {
    let (mut left, mut used) = (false, false);
    for (p, e) in previous.chunks_mut(dim).zip(earlier.chunks(dim)) {
        if p[0].is_nan() {
            if e[0].is_nan() {
                left = true;
            } else {
                p.copy_from_slice(e);
                used = true;
            }
        }
    }
    (left, used)
}

/// The previous valid vectors of a window, walking back over `before` (newest first).
fn previous(
    before: &[Opened],
    grid: &Grid,
    win: (usize, usize, usize, usize),
    dim: usize,
    used: &mut [bool],
) -> Result<Vec<f32>, MonitorError> {
    let mut prev = vec![f32::NAN; win.2 * win.3 * dim];
    for (k, o) in before.iter().enumerate() {
        let (left, u) = fill(&mut prev, &o.valid_vectors(grid, win)?, dim);
        used[k] |= u;
        if !left {
            break;
        }
    }
    Ok(prev)
}

/// The distance per patch of two windows of vectors (NaN where either has none).
fn distances(now: &[f32], prev: &[f32], dim: usize) -> Vec<f32> {
    now.chunks(dim)
        .zip(prev.chunks(dim))
        .map(|(a, b)| {
            if a[0].is_nan() || b[0].is_nan() {
                f32::NAN
            } else {
                distance(a, b).unwrap_or(f32::NAN)
            }
        })
        .collect()
}

fn open_all(current: &Map, earlier: &[Map]) -> Result<(Opened, Grid, Vec<Opened>), MonitorError> {
    let cur = Opened::open(current)?;
    let grid = grid_of(&cur.ds, &cur.path)?;
    let mut before = Vec::new();
    for m in earlier {
        let o = Opened::open(m)?;
        if grid_of(&o.ds, &o.path)?.same(&grid) && o.dim == cur.dim {
            before.push(o);
        } else {
            tracing::warn!(date = %m.date, "{} is on another grid: not used for change", m.classes.display());
        }
    }
    Ok((cur, grid, before))
}

/// Compares `current` with the `earlier` embedding maps (newest first) and writes the
/// distance map (`change_tif`) and the previous valid embeddings (`previous_tif`) as COGs;
/// per region (WKB in the grid's CRS) the patches compared and their summed distance.
pub fn detect(
    current: &Map,
    earlier: &[Map],
    regions: &[Vec<u8>],
    change_tif: &Path,
    previous_tif: &Path,
) -> Result<Detected, crate::Error> {
    let (cur, grid, before) = open_all(current, earlier)?;
    let (w, h) = grid.size;
    let dim = cur.dim;
    let geoms: Vec<Geometry> = regions
        .iter()
        .map(|b| Geometry::from_wkb(b).map_err(|e| cerr(&cur.path, e)))
        .collect::<Result<_, _>>()?;
    let windows: Vec<_> = geoms
        .iter()
        .map(|g| window(g, &grid.gt, grid.size))
        .collect();
    let mut per_region = vec![(0_u64, 0.0_f64); geoms.len()];
    let change_stage = crate::util::with_suffix(change_tif, ".staging.tif");
    let previous_stage = crate::util::with_suffix(previous_tif, ".staging.tif");
    let stages = Stages(vec![change_stage.clone(), previous_stage.clone()]);
    let creation = [
        ("TILED", "YES"),
        ("COMPRESS", "DEFLATE"),
        ("ZLEVEL", "1"),
        ("BIGTIFF", "IF_SAFER"),
    ];
    let mut used = vec![false; before.len()];
    // About 16 MB of vectors per map and block.
    let block = (4_000_000 / (w * dim).max(1)).clamp(1, 512);
    {
        let change_ds = crate::output::raster::staging_dataset_with::<f32>(
            &change_stage,
            (w, h, 1),
            &grid.gt,
            &grid.wkt,
            &creation,
        )?;
        let previous_ds = crate::output::raster::staging_dataset_with::<f32>(
            &previous_stage,
            (w, h, dim),
            &grid.gt,
            &grid.wkt,
            &creation,
        )?;
        let mut y = 0;
        while y < h {
            let rows = block.min(h - y);
            let win = (0, y, w, rows);
            let now = cur.valid_vectors(&grid, win)?;
            let prev = previous(&before, &grid, win, dim, &mut used)?;
            let d = distances(&now, &prev, dim);
            change_ds
                .rasterband(1)
                .and_then(|mut b| {
                    b.write(
                        (0, y as isize),
                        (w, rows),
                        &mut Buffer::new((w, rows), d.clone()),
                    )
                })
                .map_err(|x| cerr(&change_stage, x))?;
            for b in 0..dim {
                let plane: Vec<f32> = prev.chunks(dim).map(|v| v[b]).collect();
                previous_ds
                    .rasterband(b + 1)
                    .and_then(|mut r| {
                        r.write(
                            (0, y as isize),
                            (w, rows),
                            &mut Buffer::new((w, rows), plane),
                        )
                    })
                    .map_err(|x| cerr(&previous_stage, x))?;
            }
            for (r, win) in windows.iter().enumerate() {
                let Some((x0, wy0, ww, wh)) = *win else {
                    continue;
                };
                let (a, b) = (y.max(wy0), (y + rows).min(wy0 + wh));
                if a >= b {
                    continue;
                }
                let inside = burn(&geoms[r], &grid.gt, (x0, ww), (a, b - a), &cur.path)?;
                for (k, &m) in inside.iter().enumerate() {
                    let dist = d[(a - y + k / ww) * w + x0 + k % ww];
                    if m != 0 && dist.is_finite() {
                        per_region[r].0 += 1;
                        per_region[r].1 += f64::from(dist);
                    }
                }
            }
            y += rows;
        }
        describe(&change_ds, &previous_ds, dim, &change_stage)?;
    }
    publish(&change_stage, change_tif, RasterKind::Values)?;
    publish(&previous_stage, previous_tif, RasterKind::Embeddings)?;
    drop(stages);
    Ok(Detected {
        regions: per_region,
        dates_used: before
            .iter()
            .zip(&used)
            .filter(|(_, u)| **u)
            .map(|(o, _)| o.date.clone())
            .collect(),
    })
}

fn describe(
    change: &Dataset,
    previous: &Dataset,
    dim: usize,
    path: &Path,
) -> Result<(), MonitorError> {
    let e = |x: gdal::errors::GdalError| cerr(path, x);
    let mut b = change.rasterband(1).map_err(e)?;
    b.set_no_data_value(Some(f64::NAN)).map_err(e)?;
    b.set_description("1 - cosine to the previous valid embedding")
        .map_err(e)?;
    for i in 0..dim {
        let mut p = previous.rasterband(i + 1).map_err(e)?;
        p.set_no_data_value(Some(f64::NAN)).map_err(e)?;
        p.set_description(&format!("embedding_{i}")).map_err(e)?;
    }
    Ok(())
}

/// The patches of a region whose distance exceeds `threshold`: their count and outline
/// (MultiPolygon WKB, None when there are none).
pub fn changed(
    change_tif: &Path,
    region: &[u8],
    threshold: f64,
) -> Result<(u64, Option<Vec<u8>>), crate::Error> {
    let ds = Dataset::open(change_tif).map_err(|e| cerr(change_tif, e))?;
    let grid = grid_of(&ds, change_tif)?;
    let g = Geometry::from_wkb(region).map_err(|e| cerr(change_tif, e))?;
    let Some((x0, y0, ww, wh)) = window(&g, &grid.gt, grid.size) else {
        return Ok((0, None));
    };
    let d = ds
        .rasterband(1)
        .and_then(|b| b.read_as::<f32>((x0 as isize, y0 as isize), (ww, wh), (ww, wh), None))
        .map_err(|e| cerr(change_tif, e))?
        .data()
        .to_vec();
    let inside = burn(&g, &grid.gt, (x0, ww), (y0, wh), change_tif)?;
    let marks: Vec<u8> = d
        .iter()
        .zip(&inside)
        .map(|(&v, &m)| u8::from(m != 0 && v.is_finite() && f64::from(v) > threshold))
        .collect();
    let n = marks.iter().filter(|&&m| m == 1).count() as u64;
    Ok((
        n,
        super::change::polygonize_marks(marks, (x0, y0, ww, wh), &grid.gt, change_tif)?,
    ))
}

/// Writes the quicklook of a region's embedding change to `png`: the previous valid and the
/// current embeddings in the first three principal components of both (one projection, so
/// colours compare), and the patches above `threshold` in red (light grey compared, grey not
/// compared); outside the region faded.
pub fn render_quicklook(
    current: &Map,
    previous_tif: &Path,
    change_tif: &Path,
    region: &[u8],
    threshold: f64,
    png: &Path,
) -> Result<(), crate::Error> {
    let cur = Opened::open(current)?;
    let grid = grid_of(&cur.ds, &cur.path)?;
    let g = Geometry::from_wkb(region).map_err(|e| cerr(&cur.path, e))?;
    let Some(win) = window(&g, &grid.gt, grid.size) else {
        return Ok(());
    };
    let (_, _, ww, wh) = win;
    let dim = cur.dim;
    let now = cur.valid_vectors(&grid, win)?;
    let prev = Opened::open(&Map {
        date: String::new(),
        classes: previous_tif.to_path_buf(),
        mask: None,
    })?
    .vectors(win)?;
    let d = Opened::open(&Map {
        date: String::new(),
        classes: change_tif.to_path_buf(),
        mask: None,
    })?
    .vectors(win)?;
    let inside = burn(&g, &grid.gt, (win.0, ww), (win.1, wh), &cur.path)?;
    let rows: Vec<&[f32]> = now
        .chunks(dim)
        .chain(prev.chunks(dim))
        .filter(|v| !v[0].is_nan())
        .collect();
    let (mean, axes) = crate::output::quicklook::principal_axes(&rows, dim, 3);
    let project = |v: &[f32]| -> [f64; 3] {
        let mut out = [0.0; 3];
        for (o, a) in out.iter_mut().zip(&axes) {
            *o = v
                .iter()
                .zip(a)
                .zip(&mean)
                .map(|((&x, a), m)| (f64::from(x) - m) * a)
                .sum();
        }
        out
    };
    // Each component stretched over its 2nd..98th percentile of both dates.
    let projected: Vec<[f64; 3]> = rows.iter().map(|v| project(v)).collect();
    let range: Vec<(f64, f64)> = (0..3)
        .map(|c| {
            let mut v: Vec<f64> = projected.iter().map(|p| p[c]).collect();
            v.sort_by(f64::total_cmp);
            let at = |q: f64| {
                v.get(((v.len().saturating_sub(1)) as f64 * q) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            (at(0.02), at(0.98))
        })
        .collect();
    let colour = |v: &[f32]| -> [u8; 4] {
        if v[0].is_nan() {
            return quicklook::NO_VALUE;
        }
        let p = project(v);
        let c = |i: usize| {
            let (lo, hi) = range[i];
            (((p[i] - lo) / (hi - lo).max(1e-12)).clamp(0.0, 1.0) * 255.0) as u8
        };
        [c(0), c(1), c(2), 255]
    };
    let shade = |i: usize, c: [u8; 4]| {
        if inside[i] == 0 {
            quicklook::faded(c)
        } else {
            c
        }
    };
    let idx: Vec<usize> = (0..ww * wh).collect();
    let panels = [
        quicklook::panel(&idx, (ww, wh), |i, _| {
            shade(i, colour(&prev[i * dim..(i + 1) * dim]))
        }),
        quicklook::panel(&idx, (ww, wh), |i, _| {
            shade(i, colour(&now[i * dim..(i + 1) * dim]))
        }),
        quicklook::panel(&d, (ww, wh), |i, v| {
            shade(
                i,
                if v.is_nan() {
                    quicklook::NO_VALUE
                } else if f64::from(v) > threshold {
                    [228, 26, 28, 255]
                } else {
                    [215, 215, 215, 255]
                },
            )
        }),
    ];
    quicklook::write_panels(png, &panels, (ww, wh)).map_err(|e| cerr(png, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_distance_is_zero_for_parallel_and_one_for_orthogonal_vectors() {
        assert!(distance(&[1.0, 2.0], &[2.0, 4.0]).unwrap().abs() < 1e-7);
        assert!((distance(&[1.0, 0.0], &[0.0, 3.0]).unwrap() - 1.0).abs() < 1e-7);
        assert!((distance(&[1.0, 0.0], &[-1.0, 0.0]).unwrap() - 2.0).abs() < 1e-7);
        assert_eq!(distance(&[0.0, 0.0], &[1.0, 0.0]), None);
    }

    #[test]
    fn each_patch_takes_the_newest_valid_earlier_vector() {
        let nan = f32::NAN;
        let mut prev = vec![nan; 6];
        // 3 patches of 2: the newest earlier date has patch 1 only.
        let (left, used) = fill(&mut prev, &[nan, nan, 1.0, 2.0, nan, nan], 2);
        assert!(left && used);
        let (left, used) = fill(&mut prev, &[5.0, 5.0, 9.0, 9.0, 3.0, 4.0], 2);
        assert!(!left && used);
        assert_eq!(prev, [5.0, 5.0, 1.0, 2.0, 3.0, 4.0]);
        let d = distances(&[1.0, 0.0, nan, nan, 3.0, 4.0], &prev, 2);
        assert!((d[0] - (1.0 - 1.0 / 2.0_f32.sqrt())).abs() < 1e-6);
        assert!(d[1].is_nan());
        assert!(d[2].abs() < 1e-6);
    }

    #[test]
    fn principal_axes_find_the_direction_of_most_spread() {
        let data: Vec<[f32; 2]> = (0..50).map(|i| [i as f32, 0.5 * (i % 3) as f32]).collect();
        let rows: Vec<&[f32]> = data.iter().map(<[f32; 2]>::as_slice).collect();
        let (mean, axes) = crate::output::quicklook::principal_axes(&rows, 2, 2);
        assert!((mean[0] - 24.5).abs() < 1e-9);
        assert!(axes[0][0].abs() > 0.99, "{axes:?}");
    }
}
