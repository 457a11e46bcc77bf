//! Tile sources: what the reader stage hands the model for one tile. One scene (or a mosaic
//! of scenes on an AOI grid) is read through one strip reader; a time series through one
//! strip reader per time step and modality, the steps read in parallel. Each source
//! normalises its values with the manifest's scaling and says which pixels are valid.

use crate::error::Error;
use crate::grid::{Tile, Window};
use crate::normalize::{Rescale, ValueScaling, prepare_tile};
use crate::plan::PredictPlan;
use crate::scene::{Stack, StripReader};
use rayon::prelude::*;

/// One tile read and normalised.
#[derive(Debug, Default)]
pub struct TileInput {
    /// Model input (`bands * h * w` for a single-date model, `h * w * T * bands` for a
    /// time series); empty when no pixel is valid.
    pub data: Vec<f32>,
    /// A time series' Sentinel-1 input (`h * w * T * bands`), empty without one.
    pub s1: Vec<f32>,
    /// Validity per value of the model's output grid: per pixel, or per patch for
    /// embeddings (a patch is valid when one of its pixels inside the scene is).
    pub valid: Vec<bool>,
    /// Whether the model runs on the tile (one valid pixel).
    pub inferred: bool,
}

/// A stack's reader with each model band's place in it and its conversion.
struct BandReader {
    reader: StripReader,
    /// Per model band: its VRT band (1-based; `None` = the scene lacks it, 0 after
    /// normalisation) and its stored-value conversion.
    bands: Vec<(Option<usize>, Rescale)>,
    scaling: Vec<ValueScaling>,
    /// Each value stands alone (Sentinel-1: a missing vh does not void vv); else a pixel is
    /// valid only when every present band is finite.
    per_value: bool,
    buf: Vec<f32>,
    /// Normalised values, band-major (`bands * plane`).
    values: Vec<f32>,
    /// Whether every present band of the pixel is finite.
    ok: Vec<bool>,
}

impl BandReader {
    fn open(
        stack: &Stack,
        rows: usize,
        scaling: &[ValueScaling],
        per_value: bool,
    ) -> Result<Self, Error> {
        Ok(Self {
            reader: StripReader::open(stack, rows)?,
            bands: stack
                .bands
                .iter()
                .map(|b| (b.vrt_band, b.rescale))
                .collect(),
            scaling: scaling.to_vec(),
            per_value,
            buf: Vec::new(),
            values: Vec::new(),
            ok: Vec::new(),
        })
    }

    /// Reads `win` (pixels) and normalises it into `values` / `ok`.
    fn read(&mut self, win: Window, vrt_bands: usize) -> Result<(), Error> {
        let plane = win.width * win.height;
        self.buf.resize(vrt_bands * plane, 0.0);
        self.reader.read(win, &mut self.buf)?;
        self.values.clear();
        self.values.resize(self.bands.len() * plane, 0.0);
        self.ok.clear();
        self.ok.resize(plane, true);
        for &(vb, _) in self.bands.iter().filter(|_| !self.per_value) {
            if let Some(k) = vb {
                for (ok, v) in self
                    .ok
                    .iter_mut()
                    .zip(&self.buf[(k - 1) * plane..k * plane])
                {
                    *ok &= v.is_finite();
                }
            }
        }
        for (c, &(vb, rescale)) in self.bands.iter().enumerate() {
            let Some(k) = vb else { continue };
            let src = &self.buf[(k - 1) * plane..k * plane];
            let dst = &mut self.values[c * plane..(c + 1) * plane];
            for i in 0..plane {
                if self.ok[i] && src[i].is_finite() {
                    dst[i] = self.scaling[c].apply(rescale.apply(src[i]));
                }
            }
        }
        Ok(())
    }
}

/// One time step's readers.
struct StepReader {
    s2: BandReader,
    s2_vrt_bands: usize,
    s1: Option<(BandReader, usize)>,
}

/// Interleaves the steps' normalised windows into the encoder's `[h, w, T, bands]` layout
/// (and `s1`'s); a pixel is valid when one step has all its bands.
fn interleave(
    steps: &[&StepReader],
    plane: usize,
    nb: usize,
    n1: usize,
) -> (Vec<f32>, Vec<f32>, Vec<bool>) {
    let t = steps.len();
    let mut pixel_valid = vec![false; plane];
    let mut data = vec![0.0_f32; plane * t * nb];
    let mut s1 = vec![0.0_f32; plane * t * n1];
    for (ti, step) in steps.iter().enumerate() {
        if let Some((r, _)) = &step.s1 {
            // Backscatter without a value is 0 after normalisation.
            for i in 0..plane {
                let base = (i * t + ti) * n1;
                for c in 0..n1 {
                    s1[base + c] = r.values[c * plane + i];
                }
            }
        }
        let r = &step.s2;
        for (i, valid) in pixel_valid.iter_mut().enumerate() {
            if !r.ok[i] {
                continue;
            }
            *valid = true;
            let base = (i * t + ti) * nb;
            for c in 0..nb {
                data[base + c] = r.values[c * plane + i];
            }
        }
    }
    (data, s1, pixel_valid)
}

/// One time step's readers for the steps of a series.
fn step_readers(
    series: &[crate::scene::series::SeriesStep],
    enc: &crate::model::embedding::EmbeddingSpec,
    tile: usize,
) -> Result<Vec<StepReader>, Error> {
    let s1_scaling = enc
        .sentinel1
        .as_ref()
        .map(|s| s.scaling.clone())
        .unwrap_or_default();
    series
        .iter()
        .map(|s| -> Result<StepReader, Error> {
            Ok(StepReader {
                s2: BandReader::open(&s.stack, tile, &enc.scaling, false)?,
                s2_vrt_bands: s.stack.vrt_bands,
                s1: s
                    .s1
                    .as_ref()
                    .map(|st| -> Result<(BandReader, usize), Error> {
                        Ok((BandReader::open(st, tile, &s1_scaling, true)?, st.vrt_bands))
                    })
                    .transpose()?,
            })
        })
        .collect()
}

/// Windows anywhere on a series' grid, each from its own choice of time steps (the windows
/// of events, each with the images of its date).
pub struct WindowSource {
    steps: Vec<StepReader>,
    bands: usize,
    s1_bands: usize,
}

impl WindowSource {
    /// Opens a reader per step of `series` for windows up to `tile` px high.
    pub fn open(
        series: &[crate::scene::series::SeriesStep],
        enc: &crate::model::embedding::EmbeddingSpec,
        tile: usize,
    ) -> Result<Self, Error> {
        Ok(Self {
            steps: step_readers(series, enc, tile)?,
            bands: enc.bands.len(),
            s1_bands: enc.sentinel1.as_ref().map_or(0, |s| s.bands.len()),
        })
    }

    /// Reads `win` (pixels) of the steps `picked`, in that order, normalised into the
    /// encoder's layout; also returns the share of pixel-steps with every band.
    pub fn read(&mut self, picked: &[usize], win: Window) -> Result<(TileInput, f64), Error> {
        let plane = win.width * win.height;
        let mut valid_values = 0_usize;
        for &i in picked {
            let step = &mut self.steps[i];
            step.s2.read(win, step.s2_vrt_bands)?;
            if let Some((r, n)) = step.s1.as_mut() {
                r.read(win, *n)?;
            }
            valid_values += step.s2.ok.iter().filter(|&&v| v).count();
        }
        let steps: Vec<&StepReader> = picked.iter().map(|&i| &self.steps[i]).collect();
        let (data, s1, valid) = interleave(&steps, plane, self.bands, self.s1_bands);
        let inferred = valid.iter().any(|&v| v);
        let share = valid_values as f64 / (plane * picked.len()).max(1) as f64;
        Ok((
            TileInput {
                data,
                s1,
                valid,
                inferred,
            },
            share,
        ))
    }
}

/// Where the reader stage gets its tiles from.
pub enum TileSource {
    /// One stack (a scene or an AOI mosaic).
    Single {
        /// Its reader.
        reader: StripReader,
        /// Per band: stored value -> physical value.
        rescale: Vec<Rescale>,
        /// Per band: the model's normalisation.
        scaling: Vec<ValueScaling>,
        /// Model bands.
        bands: usize,
        /// Tile edge in pixels.
        tile: usize,
    },
    /// A time series: one reader per step and modality.
    Series(SeriesSource),
}

/// The readers of a time series and the shape of its tiles.
pub struct SeriesSource {
    steps: Vec<StepReader>,
    bands: usize,
    s1_bands: usize,
    /// Pixels per tile-grid unit (the patch size).
    unit: usize,
    /// Tile edge in pixels.
    tile: usize,
    width: usize,
    height: usize,
    /// Validity per patch (embeddings) instead of per pixel.
    per_patch: bool,
    /// The steps are newest first.
    newest_first: bool,
}

impl std::fmt::Debug for TileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TileSource::Single { reader, .. } => f.debug_tuple("Single").field(reader).finish(),
            TileSource::Series(s) => f
                .debug_struct("Series")
                .field("steps", &s.steps.len())
                .finish_non_exhaustive(),
        }
    }
}

/// The GDAL block cache a time series needs to decode each source block once: what
/// [`crate::block_cache_bytes`] gives one stack, for every stack read at once; at most 2 GiB
/// and a third of the memory limit `limit`, at least one stack's.
#[must_use]
pub fn series_cache_bytes(
    series: &[crate::scene::series::SeriesStep],
    width: usize,
    limit: u64,
) -> u64 {
    let Some(first) = series.first() else {
        return 0;
    };
    let min = crate::block_cache_bytes(&first.stack, width);
    if std::env::var_os("GDAL_CACHEMAX").is_some() {
        return min;
    }
    let total: u64 = series
        .iter()
        .flat_map(|s| std::iter::once(&s.stack).chain(&s.s1))
        .map(|s| crate::block_cache_bytes(s, width))
        .sum();
    total.min(2 << 30).min(limit / 3).max(min)
}

/// Drops every block GDAL holds in its cache (dirty ones are written first): called when a
/// column panel is finished, whose blocks no later read needs, so the cache holds one
/// panel's blocks at most and memory follows the panel's width, not the scene's.
pub fn drop_cached_blocks() {
    // SAFETY: process-wide sizes; a maximum of 0 evicts every unlocked block, and the old
    // maximum is set back at once.
    unsafe {
        let max = gdal_sys::GDALGetCacheMax64();
        gdal_sys::GDALSetCacheMax64(0);
        gdal_sys::GDALSetCacheMax64(max);
    }
    crate::release_free_memory();
}

/// Sizes GDAL's block cache for the plan's scenes (unless `GDAL_CACHEMAX` is set).
pub fn size_cache(plan: &PredictPlan) {
    let width = plan.job.read_width();
    if plan.series.is_empty() {
        crate::size_block_cache(&plan.stack, width);
        return;
    }
    let bytes = series_cache_bytes(&plan.series, width, plan.memory.bytes);
    if std::env::var_os("GDAL_CACHEMAX").is_none() {
        // SAFETY: sets a process-wide size; GDAL takes any non-negative value.
        unsafe { gdal_sys::GDALSetCacheMax64(bytes as i64) };
    }
}

impl TileSource {
    /// Opens the readers of the plan's scenes.
    pub fn open(plan: &PredictPlan) -> Result<Self, Error> {
        let tile = plan.model.tile_size;
        let Some(enc) = plan
            .model
            .encoder
            .as_ref()
            .filter(|_| !plan.series.is_empty())
        else {
            return Ok(TileSource::Single {
                reader: StripReader::open(&plan.stack, tile)?,
                rescale: plan.stack.bands.iter().map(|b| b.rescale).collect(),
                scaling: plan.model.scaling.clone(),
                bands: plan.model.bands.len(),
                tile,
            });
        };
        let mut steps = step_readers(&plan.series, enc, tile)?;
        // The model's time axis: its contract may want the newest step first.
        let newest_first = enc.newest_first();
        if newest_first {
            steps.reverse();
        }
        Ok(TileSource::Series(SeriesSource {
            steps,
            bands: enc.bands.len(),
            s1_bands: enc.sentinel1.as_ref().map_or(0, |s| s.bands.len()),
            unit: plan.job.unit,
            tile,
            width: plan.stack.width,
            height: plan.stack.height,
            per_patch: matches!(
                plan.job.head,
                crate::plan::HeadPlan::Embeddings { .. } | crate::plan::HeadPlan::Classification
            ),
            newest_first,
        }))
    }

    /// Reads only scene columns `lo..hi` (pixels) from now on: the columns a column panel's
    /// tiles read.
    pub fn set_columns(&mut self, lo: usize, hi: usize) {
        match self {
            TileSource::Single { reader, .. } => reader.set_columns(lo, hi),
            TileSource::Series(s) => {
                for step in &mut s.steps {
                    step.s2.reader.set_columns(lo, hi);
                    if let Some((r, _)) = step.s1.as_mut() {
                        r.reader.set_columns(lo, hi);
                    }
                }
            }
        }
    }

    /// Reads and normalises tile `t`; `sampler` takes the preview's samples of its raw
    /// values.
    pub fn read(
        &mut self,
        t: Tile,
        sampler: Option<&std::sync::Mutex<crate::output::preview::InputSampler>>,
    ) -> Result<TileInput, Error> {
        match self {
            TileSource::Single {
                reader,
                rescale,
                scaling,
                bands,
                tile,
            } => {
                let plane = *tile * *tile;
                let mut data = vec![0.0_f32; *bands * plane];
                let mut valid = vec![false; plane];
                reader.read(t.window, &mut data)?;
                if let Some(s) = sampler {
                    if let Ok(mut s) = s.lock() {
                        s.sample(t.window, &data);
                    }
                }
                let inferred = prepare_tile(&mut data, &mut valid, rescale, scaling) > 0;
                Ok(TileInput {
                    data: if inferred { data } else { Vec::new() },
                    s1: Vec::new(),
                    valid,
                    inferred,
                })
            }
            TileSource::Series(s) => {
                let input = s.read(t)?;
                if let (Some(sampler), Some(step)) = (sampler, s.newest()) {
                    if let Ok(mut sampler) = sampler.lock() {
                        sampler.sample(t.window.scaled(s.unit), &step.s2.buf);
                    }
                }
                Ok(input)
            }
        }
    }
}

impl SeriesSource {
    /// The newest time step's readers (the steps are in date order, or reversed for a model
    /// that takes the newest first).
    fn newest(&self) -> Option<&StepReader> {
        if self.newest_first {
            self.steps.first()
        } else {
            self.steps.last()
        }
    }

    /// Reads every step's window in parallel, then interleaves the steps into the encoder's
    /// `[h, w, T, bands]` layout.
    fn read(&mut self, t: Tile) -> Result<TileInput, Error> {
        let win = t.window.scaled(self.unit);
        let tile = self.tile;
        let plane = tile * tile;
        self.steps
            .par_iter_mut()
            .try_for_each(|step| -> Result<(), Error> {
                step.s2.read(win, step.s2_vrt_bands)?;
                if let Some((r, n)) = step.s1.as_mut() {
                    r.read(win, *n)?;
                }
                Ok(())
            })?;
        let steps: Vec<&StepReader> = self.steps.iter().collect();
        let (data, s1, pixel_valid) = interleave(&steps, plane, self.bands, self.s1_bands);
        let valid = if self.per_patch {
            let (p, tp) = (self.unit, tile / self.unit);
            let mut valid = vec![false; tp * tp];
            for py in 0..tile {
                for px in 0..tile {
                    let (sx, sy) = (win.x + px as i64, win.y + py as i64);
                    if sx < self.width as i64
                        && sy < self.height as i64
                        && pixel_valid[py * tile + px]
                    {
                        valid[(py / p) * tp + px / p] = true;
                    }
                }
            }
            valid
        } else {
            pixel_valid
        };
        let inferred = valid.iter().any(|&v| v);
        Ok(TileInput {
            data: if inferred { data } else { Vec::new() },
            s1: if inferred { s1 } else { Vec::new() },
            valid,
            inferred,
        })
    }
}
