//! Run previews: `<name>.preview.png`, at most [`MAX_SIDE`] px on its longer side, linked as
//! the STAC Item's `thumbnail`. Class maps, window labels and values are drawn as a
//! translucent overlay (the manifest's class colours, the value ramp of the QGIS style) over an
//! RGB of the model's input, embeddings as their first three principal components; a legend
//! says what is shown.
//!
//! The input RGB costs no read of its own: the reader samples it from the raw tiles it reads
//! for the model (the scene pixel at each preview pixel's centre), and each finished block's
//! samples are saved in the job's work folder before the block is journalled, so that
//! `eoinfer merge` of a sharded or resumed run draws the same preview as one process. The composite
//! comes from the model's band names: natural colour (red, green, blue) where the input has
//! them, else a false-colour composite of the bands it has (near infrared, red, green; near
//! infrared, red, blue, as for s2cloudless; SWIR, near infrared, red), else its first bands.
//! One stretch (the 2nd to 98th percentile of the three bands' valid values) keeps the
//! colours' balance.

use super::quicklook::{self, Legend, NO_VALUE, blend, draw_legend};
use crate::error::OutputError;
use crate::model::ClassInfo;
use crate::scene::{Stack, StackBand};
use gdal::Dataset;
use gdal::raster::ResampleAlg;
use image::{Rgba, RgbaImage};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The longest side of a preview.
pub const MAX_SIDE: usize = 1024;

/// Opacity of the class or value overlay over the input (of 255).
pub const OVERLAY_ALPHA: u8 = 140;

pub use super::quicklook::{VALUE_RAMP, ramp};

/// The size of the preview of a `w` x `h` grid: the longer side brought to at most
/// [`MAX_SIDE`] (small grids scaled up by a whole factor, large ones down).
#[must_use]
pub fn preview_size(w: usize, h: usize) -> (usize, usize) {
    let (w, h) = (w.max(1), h.max(1));
    let long = w.max(h);
    if long > MAX_SIDE {
        let s = MAX_SIDE as f64 / long as f64;
        (
            ((w as f64 * s).round() as usize).clamp(1, MAX_SIDE),
            ((h as f64 * s).round() as usize).clamp(1, MAX_SIDE),
        )
    } else {
        let k = (MAX_SIDE / long).max(1);
        (w * k, h * k)
    }
}

/// Composites in order of preference: (name, the bands as common names for red, green,
/// blue).
const COMPOSITES: [(&str, [&str; 3]); 4] = [
    ("natural colour", ["red", "green", "blue"]),
    (
        "false colour: near infrared, red, green",
        ["nir", "red", "green"],
    ),
    (
        "false colour: near infrared, red, blue",
        ["nir", "red", "blue"],
    ),
    (
        "false colour: SWIR 1.6 um, near infrared, red",
        ["swir16", "nir", "red"],
    ),
];

/// The common name of a model band named after Sentinel-2 (`B04`) or by its common name
/// (`red`). Landsat's own numbers (`B4`) are not guessed at.
fn common_name(band: &str) -> Option<&'static str> {
    Some(match band.to_ascii_lowercase().as_str() {
        "b02" | "blue" => "blue",
        "b03" | "green" => "green",
        "b04" | "red" => "red",
        "b08" | "nir" | "nir08" => "nir",
        "b11" | "swir16" => "swir16",
        "b12" | "swir22" => "swir22",
        _ => return None,
    })
}

/// What the input RGB of a preview shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Composite {
    /// `natural colour`, a false-colour composite, or the bands used.
    pub name: String,
    /// The model bands shown as red, green and blue.
    pub bands: Vec<String>,
}

/// The composite of `bands` (the stack's model bands; only those the scene has count) and
/// the index of each of its three bands in `bands`.
#[must_use]
pub fn choose_composite(bands: &[StackBand]) -> Option<(Composite, [usize; 3])> {
    let present: Vec<usize> = (0..bands.len())
        .filter(|&i| bands[i].vrt_band.is_some())
        .collect();
    let find = |name: &str| {
        present
            .iter()
            .copied()
            .find(|&i| common_name(&bands[i].model_band) == Some(name))
    };
    for (name, rgb) in COMPOSITES {
        if let (Some(r), Some(g), Some(b)) = (find(rgb[0]), find(rgb[1]), find(rgb[2])) {
            let idx = [r, g, b];
            return Some((
                Composite {
                    name: name.to_string(),
                    bands: idx.iter().map(|&i| bands[i].model_band.clone()).collect(),
                },
                idx,
            ));
        }
    }
    let first = *present.first()?;
    let idx = [
        first,
        present.get(1).copied().unwrap_or(first),
        present.get(2).copied().unwrap_or(first),
    ];
    let names: Vec<String> = idx.iter().map(|&i| bands[i].model_band.clone()).collect();
    Some((
        Composite {
            name: if present.len() >= 3 {
                format!("bands {}", names.join(", "))
            } else {
                format!("band {} (grey)", names[0])
            },
            bands: names,
        },
        idx,
    ))
}

/// The description of a job's input preview, beside its samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputPreview {
    /// What the RGB shows.
    pub composite: Composite,
    /// The date of the input shown (a time series: its newest step).
    pub date: Option<String>,
    /// Width and height.
    pub size: [usize; 2],
}

/// The folder of a job's input samples (`<work>/preview-<plan hash>`).
#[must_use]
pub fn input_dir(work: &Path, plan_hash: &str) -> PathBuf {
    let key: String = plan_hash.chars().take(16).collect();
    work.join(format!("preview-{key}"))
}

/// The value at fraction `q` of `v` (reordered in place).
fn quantile(v: &mut [f32], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let k = ((v.len() - 1) as f64 * q).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    f64::from(*x)
}

/// Samples the input's RGB at the preview's pixels from the raw tiles the reader reads (no
/// read of its own): each preview pixel takes the scene pixel at its centre. The samples of
/// each finished block are saved in the job's work folder before the block is journalled, so
/// a resumed or sharded run's merge draws the same preview as one process.
#[derive(Debug)]
pub struct InputSampler {
    size: (usize, usize),
    /// Scene column and row of each preview column and row.
    sx: Vec<usize>,
    sy: Vec<usize>,
    /// Per composite band: its plane in the raw window, stored value -> physical value, nodata.
    bands: [(usize, crate::normalize::Rescale, Option<f64>); 3],
    desc: InputPreview,
    /// Three planes of `size`, NaN until sampled.
    values: Vec<f32>,
}

impl InputSampler {
    /// The sampler of `stack` (dated `date`) for the preview of a `grid` (pixels); `None`
    /// when the stack has no band to show.
    #[must_use]
    pub fn new(stack: &Stack, date: Option<String>, grid: (usize, usize)) -> Option<Self> {
        let (composite, idx) = choose_composite(&stack.bands)?;
        let (pw, ph) = preview_size(grid.0, grid.1);
        let centre = |p: usize, n: usize, of: usize| {
            (((p as f64 + 0.5) * of as f64 / n as f64) as usize).min(of.max(1) - 1)
        };
        let band = |i: usize| {
            let b = &stack.bands[i];
            (b.vrt_band.unwrap_or(1) - 1, b.rescale, b.nodata)
        };
        Some(Self {
            size: (pw, ph),
            sx: (0..pw).map(|p| centre(p, pw, grid.0)).collect(),
            sy: (0..ph).map(|p| centre(p, ph, grid.1)).collect(),
            bands: [band(idx[0]), band(idx[1]), band(idx[2])],
            desc: InputPreview {
                composite,
                date,
                size: [pw, ph],
            },
            values: vec![f32::NAN; 3 * pw * ph],
        })
    }

    /// The preview columns (or rows) whose scene column (row) lies in `lo..hi`.
    fn range(of: &[usize], lo: i64, hi: i64) -> std::ops::Range<usize> {
        let a = of.partition_point(|&v| (v as i64) < lo);
        let b = of.partition_point(|&v| (v as i64) < hi);
        a..b
    }

    /// Takes the samples inside `win` (scene pixels) from its raw window `raw` (planes of
    /// `win.width * win.height` stored values, one per band of the stack's VRT).
    pub fn sample(&mut self, win: crate::grid::Window, raw: &[f32]) {
        let (pw, ph) = self.size;
        let plane = win.width * win.height;
        let xs = Self::range(&self.sx, win.x, win.x + win.width as i64);
        let ys = Self::range(&self.sy, win.y, win.y + win.height as i64);
        for py in ys {
            let ty = (self.sy[py] as i64 - win.y) as usize;
            for px in xs.clone() {
                let tx = (self.sx[px] as i64 - win.x) as usize;
                for (k, (plane_of, rescale, nodata)) in self.bands.iter().enumerate() {
                    let Some(&v) = raw.get(plane_of * plane + ty * win.width + tx) else {
                        continue;
                    };
                    self.values[(k * ph + py) * pw + px] =
                        if !v.is_finite() || nodata.is_some_and(|n| f64::from(v) == n) {
                            f32::NAN
                        } else {
                            rescale.apply(v)
                        };
                }
            }
        }
    }

    /// Saves the samples of scene rows `rows` and columns `cols` (a finished block) as
    /// `<dir>/b<index>.bin` and the description once, each written under a temporary name of
    /// this process and renamed (the shards of a job save into the same folder at once).
    pub fn save_block(
        &self,
        dir: &Path,
        index: usize,
        rows: (usize, usize),
        cols: (usize, usize),
    ) -> Result<(), OutputError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OutputError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let desc = dir.join("input.json");
        if !desc.exists() {
            let text = serde_json::to_string_pretty(&self.desc).unwrap_or_default();
            crate::util::write_atomic_shared(&desc, text.as_bytes()).map_err(io(&desc))?;
        }
        let (pw, ph) = self.size;
        let xs = Self::range(&self.sx, cols.0 as i64, cols.1 as i64);
        let ys = Self::range(&self.sy, rows.0 as i64, rows.1 as i64);
        let mut bytes = Vec::with_capacity(16 + 12 * xs.len() * ys.len());
        for v in [xs.start, xs.end, ys.start, ys.end] {
            bytes.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for k in 0..3 {
            for py in ys.clone() {
                for px in xs.clone() {
                    bytes.extend_from_slice(&self.values[(k * ph + py) * pw + px].to_le_bytes());
                }
            }
        }
        let path = dir.join(format!("b{index:06}.bin"));
        crate::util::write_atomic_shared(&path, &bytes).map_err(io(&path))
    }
}

/// The input's RGB of a job from the samples its blocks saved in `dir` (stretched from the
/// 2nd to the 98th percentile of the three bands' valid values; transparent where no sample
/// is), when they are of this size.
fn load_input(dir: &Path, size: (usize, usize)) -> Option<(RgbaImage, InputPreview)> {
    let desc: InputPreview =
        serde_json::from_str(&std::fs::read_to_string(dir.join("input.json")).ok()?).ok()?;
    if desc.size != [size.0, size.1] {
        return None;
    }
    let (pw, ph) = size;
    let mut values = vec![f32::NAN; 3 * pw * ph];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let word = |i: usize| {
            bytes
                .get(4 * i..4 * i + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (Some(x0), Some(x1), Some(y0), Some(y1)) = (word(0), word(1), word(2), word(3)) else {
            continue;
        };
        if x1 > pw
            || y1 > ph
            || x0 > x1
            || y0 > y1
            || bytes.len() != 16 + 12 * (x1 - x0) * (y1 - y0)
        {
            continue;
        }
        let mut at = 4;
        for k in 0..3 {
            for py in y0..y1 {
                for px in x0..x1 {
                    let b = &bytes[4 * at..4 * at + 4];
                    values[(k * ph + py) * pw + px] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    at += 1;
                }
            }
        }
    }
    let mut all: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = quantile(&mut all, 0.02);
    let mut hi = quantile(&mut all, 0.98);
    if hi <= lo {
        hi = lo + 1.0;
    }
    let plane = pw * ph;
    let img = RgbaImage::from_fn(pw as u32, ph as u32, |x, y| {
        let p = y as usize * pw + x as usize;
        let v = [values[p], values[plane + p], values[2 * plane + p]];
        if v.iter().any(|x| !x.is_finite()) {
            return Rgba([0, 0, 0, 0]);
        }
        let s = |x: f32| {
            ((f64::from(x) - lo) / (hi - lo) * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        };
        Rgba([s(v[0]), s(v[1]), s(v[2]), 255])
    });
    Some((img, desc))
}

/// Removes a job's input samples (its run is merged).
pub fn remove_input(work: &Path, plan_hash: &str) {
    let _ = std::fs::remove_dir_all(input_dir(work, plan_hash));
}

fn gerr(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Gdal {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// What a preview draws over the input.
#[derive(Debug, Clone, Copy)]
pub enum Overlay<'a> {
    /// A class map or window labels (uint8, 255 = none) in the classes' colours.
    Classes {
        /// The raster.
        raster: &'a Path,
        /// The manifest's classes.
        classes: &'a [ClassInfo],
    },
    /// A value map on [`VALUE_RAMP`] over the expected range.
    Values {
        /// The raster (float32, or uint8 with scale and offset).
        raster: &'a Path,
        /// The value's name, unit and range.
        spec: &'a crate::model::embedding::RegressionSpec,
    },
    /// Embeddings (one band per dimension) as their first three principal components.
    Embeddings {
        /// The raster.
        raster: &'a Path,
    },
}

/// The most values a preview reads from a raster (64 MiB of float32).
const MAX_VALUES: usize = 16 << 20;

/// A raster read at `min(its size, size)` (smaller for many bands, see [`MAX_VALUES`]): every
/// band's values (scale and offset applied, nodata NaN, band-major), the number of bands and
/// the size read.
type Read = (Vec<f32>, usize, (usize, usize));

fn read_raster(path: &Path, size: (usize, usize), alg: ResampleAlg) -> Result<Read, OutputError> {
    let ds = Dataset::open(path).map_err(|e| gerr(path, e))?;
    let (w, h) = ds.raster_size();
    let n = ds.raster_count();
    // At most MAX_VALUES values in memory (an embeddings COG has a band per dimension).
    let (mut rw, mut rh) = (w.min(size.0).max(1), h.min(size.1).max(1));
    let all = rw * rh * n;
    if all > MAX_VALUES {
        let f = (MAX_VALUES as f64 / all as f64).sqrt();
        rw = ((rw as f64 * f) as usize).max(1);
        rh = ((rh as f64 * f) as usize).max(1);
    }
    let mut out = Vec::with_capacity(n * rw * rh);
    for b in 1..=n {
        let band = ds.rasterband(b).map_err(|e| gerr(path, e))?;
        let mut buf = vec![0_f32; rw * rh];
        band.read_into_slice::<f32>((0, 0), (w, h), (rw, rh), &mut buf, Some(alg))
            .map_err(|e| gerr(path, e))?;
        let (scale, offset) = (band.scale().unwrap_or(1.0), band.offset().unwrap_or(0.0));
        let nodata = band.no_data_value();
        for v in &mut buf {
            *v = if !v.is_finite() || nodata.is_some_and(|n| f64::from(*v) == n) {
                f32::NAN
            } else {
                (f64::from(*v) * scale + offset) as f32
            };
        }
        out.extend(buf);
    }
    Ok((out, n, (rw, rh)))
}

/// Draws the preview of a run over the grid `grid` into `png` and returns what its thumbnail
/// shows, in words.
pub fn render(
    overlay: Overlay<'_>,
    grid: (usize, usize),
    title: &str,
    work: &Path,
    plan_hash: &str,
    png: &Path,
) -> Result<String, OutputError> {
    let size = preview_size(grid.0, grid.1);
    let (pw, ph) = size;
    let input = load_input(&input_dir(work, plan_hash), size);
    let mut img = match &input {
        Some((rgb, _)) => {
            let mut img = rgb.clone();
            for p in img.pixels_mut() {
                if p[3] == 0 {
                    *p = Rgba(NO_VALUE);
                }
            }
            img
        }
        None => RgbaImage::from_pixel(pw as u32, ph as u32, Rgba(NO_VALUE)),
    };
    let under = input.as_ref().map_or_else(
        || "no input image".to_string(),
        |(_, d)| {
            format!(
                "{} ({}){}",
                d.composite.name,
                d.composite.bands.join(", "),
                d.date
                    .as_deref()
                    .map(|x| format!(" of {x}"))
                    .unwrap_or_default()
            )
        },
    );
    let at = |x: usize, y: usize, (rw, rh): (usize, usize)| (y * rh / ph) * rw + (x * rw / pw);
    let (legend, what) = match overlay {
        Overlay::Classes { raster, classes } => {
            let (v, _, rs) = read_raster(raster, size, ResampleAlg::NearestNeighbour)?;
            let mut seen = vec![false; classes.len()];
            for y in 0..ph {
                for x in 0..pw {
                    let c = v[at(x, y, rs)];
                    if !c.is_finite() {
                        continue;
                    }
                    if let Some(k) = classes.iter().position(|k| f32::from(k.value) == c) {
                        seen[k] = true;
                        let p = img.get_pixel_mut(x as u32, y as u32);
                        *p = Rgba(blend(p.0, classes[k].color, OVERLAY_ALPHA));
                    }
                }
            }
            let shown: Vec<(String, [u8; 3])> = classes
                .iter()
                .zip(&seen)
                .filter(|(_, s)| **s)
                .map(|(c, _)| (c.name.clone(), c.color))
                .collect();
            (Legend::Classes(shown), format!("classes over the {under}"))
        }
        Overlay::Values { raster, spec } => {
            let (v, _, rs) = read_raster(raster, size, ResampleAlg::Average)?;
            let [low, high] = spec.range;
            for y in 0..ph {
                for x in 0..pw {
                    let val = v[at(x, y, rs)];
                    if !val.is_finite() || f64::from(val) == spec.nodata {
                        continue;
                    }
                    let t = (f64::from(val) - low) / (high - low).max(f64::MIN_POSITIVE);
                    let p = img.get_pixel_mut(x as u32, y as u32);
                    *p = Rgba(blend(p.0, ramp(t), OVERLAY_ALPHA));
                }
            }
            (
                Legend::Ramp {
                    label: format!("{} ({})", spec.name, spec.unit),
                    low,
                    high,
                },
                format!("{} over the {under}", spec.name),
            )
        }
        Overlay::Embeddings { raster } => {
            let (v, dim, rs) = read_raster(raster, size, ResampleAlg::NearestNeighbour)?;
            let rgb = principal_rgb(&v, dim, rs.0 * rs.1);
            img = RgbaImage::from_pixel(pw as u32, ph as u32, Rgba(NO_VALUE));
            for y in 0..ph {
                for x in 0..pw {
                    if let Some(c) = rgb[at(x, y, rs)] {
                        img.put_pixel(x as u32, y as u32, Rgba([c[0], c[1], c[2], 255]));
                    }
                }
            }
            (
                Legend::Text(format!(
                    "RGB = principal components 1-3 of {dim} dimensions"
                )),
                format!("the first three principal components of the {dim}-dimensional embeddings"),
            )
        }
    };
    draw_legend(&mut img, title, &legend);
    quicklook::write_png(png, &img).map_err(|source| OutputError::Io {
        path: png.to_path_buf(),
        source,
    })?;
    Ok(what)
}

/// Per pixel (`n` of them, `dim` bands, band-major), its first three principal components
/// stretched to 0..=255 (2nd to 98th percentile each); `None` where a value is missing.
fn principal_rgb(v: &[f32], dim: usize, n: usize) -> Vec<Option<[u8; 3]>> {
    let valid: Vec<bool> = (0..n)
        .map(|p| (0..dim).all(|d| v[d * n + p].is_finite()))
        .collect();
    let row = |p: usize| -> Vec<f32> { (0..dim).map(|d| v[d * n + p]).collect() };
    // The axes from at most 4096 pixels spread over the grid.
    let count = valid.iter().filter(|&&ok| ok).count();
    let sample: Vec<Vec<f32>> = (0..n)
        .filter(|&p| valid[p])
        .step_by((count / 4096).max(1))
        .map(row)
        .collect();
    if sample.is_empty() {
        return vec![None; n];
    }
    let rows: Vec<&[f32]> = sample.iter().map(Vec::as_slice).collect();
    let (mean, axes) = quicklook::principal_axes(&rows, dim, 3.min(dim));
    let proj: Vec<Option<[f64; 3]>> = (0..n)
        .map(|p| {
            valid[p].then(|| {
                let mut c = [0.0; 3];
                for (k, a) in axes.iter().enumerate() {
                    c[k] = (0..dim)
                        .map(|d| (f64::from(v[d * n + p]) - mean[d]) * a[d])
                        .sum();
                }
                c
            })
        })
        .collect();
    let stretch: Vec<(f64, f64)> = (0..axes.len())
        .map(|k| {
            let mut c: Vec<f32> = proj.iter().flatten().map(|p| p[k] as f32).collect();
            let lo = quantile(&mut c, 0.02);
            let hi = quantile(&mut c, 0.98);
            (lo, if hi > lo { hi } else { lo + 1.0 })
        })
        .collect();
    proj.into_iter()
        .map(|p| {
            p.map(|p| {
                let mut c = [128_u8; 3];
                for (k, (lo, hi)) in stretch.iter().enumerate() {
                    c[k] = ((p[k] - lo) / (hi - lo) * 255.0).round().clamp(0.0, 255.0) as u8;
                }
                c
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Rescale;

    fn band(name: &str, present: bool) -> StackBand {
        StackBand {
            model_band: name.into(),
            source: String::new(),
            source_band: 1,
            source_resolution: 10.0,
            rescale: Rescale::IDENTITY,
            scaling: String::new(),
            nodata: None,
            vrt_band: present.then_some(1),
            filled: None,
        }
    }

    #[test]
    fn previews_are_at_most_1024_px_and_small_grids_are_scaled_up() {
        assert_eq!(preview_size(10980, 10980), (1024, 1024));
        assert_eq!(preview_size(5490, 2000), (1024, 373));
        assert_eq!(preview_size(512, 256), (1024, 512));
        assert_eq!(preview_size(300, 100), (900, 300));
        assert_eq!(preview_size(1024, 10), (1024, 10));
    }

    #[test]
    fn composites_follow_the_bands_the_input_has() {
        let s2: Vec<StackBand> = ["B02", "B03", "B04", "B08"]
            .iter()
            .map(|b| band(b, true))
            .collect();
        let (c, idx) = choose_composite(&s2).expect("composite");
        assert_eq!(c.name, "natural colour");
        assert_eq!(idx, [2, 1, 0]);
        // s2cloudless: no green band.
        let s2c: Vec<StackBand> = [
            "B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12",
        ]
        .iter()
        .map(|b| band(b, true))
        .collect();
        let (c, _) = choose_composite(&s2c).expect("composite");
        assert_eq!(c.name, "false colour: near infrared, red, blue");
        assert_eq!(c.bands, ["B08", "B04", "B02"]);
        // A band the scene lacks does not count; Landsat numbers are not guessed at.
        let odd = vec![band("B04", false), band("vv", true), band("vh", true)];
        let (c, idx) = choose_composite(&odd).expect("composite");
        assert_eq!(c.name, "band vv (grey)");
        assert_eq!(idx, [1, 2, 1]);
        assert!(choose_composite(&[band("B04", false)]).is_none());
    }

    #[test]
    fn the_ramp_runs_from_its_first_to_its_last_colour() {
        assert_eq!(ramp(0.0), VALUE_RAMP[0]);
        assert_eq!(ramp(1.0), VALUE_RAMP[4]);
        assert_eq!(ramp(0.5), VALUE_RAMP[2]);
        assert_eq!(ramp(-3.0), VALUE_RAMP[0]);
    }

    #[test]
    fn the_legend_shows_each_class_in_its_exact_colour() {
        let mut img = RgbaImage::from_pixel(400, 300, Rgba([0, 0, 0, 255]));
        let classes = vec![
            ("clear".to_string(), [166, 217, 106]),
            ("cloud".to_string(), [255, 255, 255]),
        ];
        draw_legend(&mut img, "model", &Legend::Classes(classes));
        let has = |c: [u8; 4]| img.pixels().any(|p| p.0 == c);
        assert!(has([166, 217, 106, 255]));
        assert!(has([255, 255, 255, 255]));
        assert!(has([20, 20, 20, 255]), "text drawn");
        // The corner opposite the legend is untouched.
        assert_eq!(img.get_pixel(399, 0).0, [0, 0, 0, 255]);
    }

    #[test]
    fn principal_components_separate_two_groups() {
        // Two groups of 4-dimensional vectors, 50 pixels each, and one missing pixel.
        let (dim, n) = (4, 101);
        let mut v = vec![0.0_f32; dim * n];
        for p in 0..n {
            for d in 0..dim {
                v[d * n + p] = if p == 100 {
                    f32::NAN
                } else if p < 50 {
                    1.0 + (p % 3) as f32 * 0.01
                } else {
                    -1.0 - (p % 5) as f32 * 0.01
                };
            }
        }
        let rgb = principal_rgb(&v, dim, n);
        assert!(rgb[100].is_none());
        let (a, b) = (rgb[0].expect("a")[0], rgb[60].expect("b")[0]);
        assert!(a.abs_diff(b) > 200, "{a} {b}");
    }
}
