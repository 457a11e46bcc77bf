//! Reads windows of the model-ready stack: one GDAL dataset handle per reader thread;
//! windows reaching outside the scene are filled by symmetric reflection.

use super::Stack;
use crate::error::SceneError;
use crate::grid::{Window, reflect};
use gdal::Dataset;
use std::path::PathBuf;

/// The distinct files a stack's bands are read from.
fn sources_of(stack: &Stack) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for b in &stack.bands {
        if !b.source.is_empty() && !out.contains(&b.source) {
            out.push(b.source.clone());
        }
    }
    out
}

/// The error of a failed read: the file at fault (each source is opened, and a local one read
/// through, until GDAL complains) and GDAL's own reason.
fn read_error(
    scene: &str,
    sources: &[String],
    what: &str,
    e: &gdal::errors::GdalError,
) -> SceneError {
    let said = crate::take_gdal_errors();
    for f in sources {
        let reason = match Dataset::open(f) {
            Err(e) => Some(format!(
                "GDAL cannot open it ({e}) {}",
                crate::take_gdal_errors()
            )),
            // A remote file is not read through in full to find the fault.
            Ok(_) if f.starts_with("/vsi") => None,
            Ok(ds) => {
                let (w, h) = ds.raster_size();
                for i in 1..=ds.raster_count() {
                    if let Ok(b) = ds.rasterband(i) {
                        // SAFETY: the band handle is valid while `ds` lives; the window is the
                        // whole band.
                        unsafe {
                            gdal_sys::GDALChecksumImage(
                                b.c_rasterband(),
                                0,
                                0,
                                i32::try_from(w).unwrap_or(i32::MAX),
                                i32::try_from(h).unwrap_or(i32::MAX),
                            );
                        }
                    }
                }
                let errs = crate::take_gdal_errors();
                (!errs.is_empty()).then_some(errs)
            }
        };
        if let Some(reason) = reason {
            return SceneError::Corrupt {
                path: PathBuf::from(f),
                message: format!("{what} of {scene}: GDAL says: {}", reason.trim()),
            };
        }
    }
    let reason = if said.is_empty() { e.to_string() } else { said };
    SceneError::Gdal {
        path: PathBuf::from(scene),
        message: format!("{what}: {reason}"),
    }
}

/// A reader over a [`Stack`]'s VRT. Not shared between threads: open one per thread.
pub struct StackReader {
    ds: Dataset,
    width: usize,
    height: usize,
    bands: usize,
    scratch: Vec<f32>,
    name: String,
    /// The files the stack's bands come from, to find the one at fault when a read fails.
    sources: Vec<String>,
}

impl std::fmt::Debug for StackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackReader")
            .field("scene", &self.name)
            .finish_non_exhaustive()
    }
}

impl StackReader {
    /// Opens the stack's VRT.
    pub fn open(stack: &Stack) -> Result<Self, SceneError> {
        let ds = Dataset::open(&stack.vrt).map_err(|e| SceneError::Gdal {
            path: PathBuf::from(&stack.scene),
            message: e.to_string(),
        })?;
        Ok(Self {
            ds,
            width: stack.width,
            height: stack.height,
            bands: stack.vrt_bands,
            scratch: Vec::new(),
            name: stack.scene.clone(),
            sources: sources_of(stack),
        })
    }

    fn err(&self, e: &gdal::errors::GdalError, w: Window) -> SceneError {
        read_error(
            &self.name,
            &self.sources,
            &format!(
                "reading window x={} y={} {}x{}",
                w.x, w.y, w.width, w.height
            ),
            e,
        )
    }

    /// Reads `window` of every band into `out` (band-major, `bands * h * w`), reflecting
    /// coordinates outside the scene back inside.
    pub fn read(&mut self, window: Window, out: &mut [f32]) -> Result<(), SceneError> {
        let (w, h) = (window.width, window.height);
        debug_assert_eq!(out.len(), self.bands * w * h);
        let inside = window.x >= 0
            && window.y >= 0
            && window.x as usize + w <= self.width
            && window.y as usize + h <= self.height;
        if inside {
            for b in 0..self.bands {
                let band = self
                    .ds
                    .rasterband(b + 1)
                    .map_err(|e| self.err(&e, window))?;
                band.read_into_slice::<f32>(
                    (window.x as isize, window.y as isize),
                    (w, h),
                    (w, h),
                    &mut out[b * w * h..(b + 1) * w * h],
                    None,
                )
                .map_err(|e| self.err(&e, window))?;
            }
            return Ok(());
        }
        let xs: Vec<usize> = (0..w)
            .map(|i| reflect(window.x + i as i64, self.width))
            .collect();
        let ys: Vec<usize> = (0..h)
            .map(|i| reflect(window.y + i as i64, self.height))
            .collect();
        let (x0, x1) = (
            xs.iter().copied().min().unwrap_or(0),
            xs.iter().copied().max().unwrap_or(0),
        );
        let (y0, y1) = (
            ys.iter().copied().min().unwrap_or(0),
            ys.iter().copied().max().unwrap_or(0),
        );
        let (sw, sh) = (x1 - x0 + 1, y1 - y0 + 1);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(sw * sh, 0.0);
        for b in 0..self.bands {
            let band = self
                .ds
                .rasterband(b + 1)
                .map_err(|e| self.err(&e, window))?;
            band.read_into_slice::<f32>(
                (x0 as isize, y0 as isize),
                (sw, sh),
                (sw, sh),
                &mut scratch,
                None,
            )
            .map_err(|e| self.err(&e, window))?;
            let dst = &mut out[b * w * h..(b + 1) * w * h];
            for (ty, &sy) in ys.iter().enumerate() {
                let src_row = &scratch[(sy - y0) * sw..(sy - y0 + 1) * sw];
                for (tx, &sx) in xs.iter().enumerate() {
                    dst[ty * w + tx] = src_row[sx - x0];
                }
            }
        }
        self.scratch = scratch;
        Ok(())
    }
}

/// Reads tiles of a stack in row order from a rolling buffer of rows spanning a range of
/// columns (the whole width, or a column panel set with [`Self::set_columns`]): each row of
/// the span is read from GDAL once, in chunks of rows, however much the tiles overlap.
/// Strip reads let GDAL decode each source block once (a tile-by-tile, band-by-band read
/// decodes a pixel-interleaved block once per band and per overlapping tile).
pub struct StripReader {
    ds: Dataset,
    width: usize,
    height: usize,
    bands: usize,
    /// First scene column held.
    x0: usize,
    /// Columns held.
    span: usize,
    chunk: usize,
    cap: usize,
    /// First scene row held.
    y0: usize,
    /// Rows held.
    rows: usize,
    /// Band-major planes of `cap` rows each.
    buf: Vec<f32>,
    name: String,
    /// The files the stack's bands come from, to find the one at fault when a read fails.
    sources: Vec<String>,
}

impl std::fmt::Debug for StripReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripReader")
            .field("scene", &self.name)
            .field("rows", &(self.y0..self.y0 + self.rows))
            .finish_non_exhaustive()
    }
}

impl StripReader {
    /// Rows per GDAL read.
    pub const CHUNK: usize = 64;

    /// Opens the stack's VRT with a buffer for windows up to `tile_rows` rows high.
    pub fn open(stack: &Stack, tile_rows: usize) -> Result<Self, SceneError> {
        let ds = Dataset::open(&stack.vrt).map_err(|e| SceneError::Gdal {
            path: PathBuf::from(&stack.scene),
            message: e.to_string(),
        })?;
        let chunk = Self::CHUNK.min(stack.height.max(1));
        let cap = (tile_rows + 1 + chunk).min(stack.height.max(1));
        Ok(Self {
            ds,
            width: stack.width,
            height: stack.height,
            bands: stack.vrt_bands,
            x0: 0,
            span: stack.width,
            chunk,
            cap,
            y0: 0,
            rows: 0,
            buf: vec![0.0; stack.vrt_bands * cap * stack.width],
            name: stack.scene.clone(),
            sources: sources_of(stack),
        })
    }

    /// Holds scene columns `lo..hi` from now on (a column panel): windows must fall inside
    /// them once reflected. The buffer shrinks to the span.
    pub fn set_columns(&mut self, lo: usize, hi: usize) {
        let (lo, hi) = (lo.min(self.width), hi.min(self.width).max(lo + 1));
        if (lo, hi - lo) == (self.x0, self.span) {
            return;
        }
        self.x0 = lo;
        self.span = hi - lo;
        self.rows = 0;
        self.buf = vec![0.0; self.bands * self.cap * self.span];
    }

    /// Makes the buffer hold scene rows `lo..hi`.
    fn ensure(&mut self, lo: usize, hi: usize) -> Result<(), SceneError> {
        debug_assert!(hi <= self.height && hi - lo < self.cap);
        let span = self.span;
        let plane = self.cap * span;
        if lo < self.y0 || lo >= self.y0 + self.rows {
            self.y0 = lo;
            self.rows = 0;
        } else if lo > self.y0 {
            let drop = lo - self.y0;
            for b in 0..self.bands {
                let start = b * plane;
                self.buf
                    .copy_within(start + drop * span..start + self.rows * span, start);
            }
            self.y0 = lo;
            self.rows -= drop;
        }
        while self.y0 + self.rows < hi {
            let y = self.y0 + self.rows;
            let n = self.chunk.min(self.height - y).min(self.cap - self.rows);
            for b in 0..self.bands {
                let band = self.ds.rasterband(b + 1).map_err(|e| self.err(&e, y, n))?;
                let start = b * plane + self.rows * span;
                band.read_into_slice::<f32>(
                    (self.x0 as isize, y as isize),
                    (span, n),
                    (span, n),
                    &mut self.buf[start..start + n * span],
                    None,
                )
                .map_err(|e| self.err(&e, y, n))?;
            }
            self.rows += n;
        }
        Ok(())
    }

    fn err(&self, e: &gdal::errors::GdalError, y: usize, n: usize) -> SceneError {
        read_error(
            &self.name,
            &self.sources,
            &format!("reading rows {y}..{}", y + n),
            e,
        )
    }

    /// Reads `window` of every band into `out` (band-major, `bands * h * w`), reflecting
    /// coordinates outside the scene back inside. Windows should come in row order; going
    /// back up re-reads rows.
    ///
    /// # Panics
    /// When a reflected column lies outside the columns held ([`Self::set_columns`]).
    pub fn read(&mut self, window: Window, out: &mut [f32]) -> Result<(), SceneError> {
        let (w, h) = (window.width, window.height);
        debug_assert_eq!(out.len(), self.bands * w * h);
        let ys: Vec<usize> = (0..h)
            .map(|i| reflect(window.y + i as i64, self.height))
            .collect();
        let lo = ys.iter().copied().min().unwrap_or(0);
        let hi = ys.iter().copied().max().unwrap_or(0) + 1;
        self.ensure(lo, hi)?;
        let (x0, span) = (self.x0 as i64, self.span);
        let plane = self.cap * span;
        let inside_x = window.x >= x0 && window.x - x0 + w as i64 <= span as i64;
        let xs: Vec<usize> = if inside_x {
            Vec::new()
        } else {
            (0..w)
                .map(|i| reflect(window.x + i as i64, self.width) - self.x0)
                .collect()
        };
        let first = (window.x - x0).max(0) as usize;
        for b in 0..self.bands {
            let dst = &mut out[b * w * h..(b + 1) * w * h];
            for (ty, &sy) in ys.iter().enumerate() {
                let row_start = b * plane + (sy - self.y0) * span;
                let src = &self.buf[row_start..row_start + span];
                let d = &mut dst[ty * w..(ty + 1) * w];
                if inside_x {
                    d.copy_from_slice(&src[first..first + w]);
                } else {
                    for (v, &sx) in d.iter_mut().zip(&xs) {
                        *v = src[sx];
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{TileGrid, Tiling};
    use std::fmt::Write as _;

    /// A 2-band float raster (values encode band, row and column) behind a VRT, as a Stack.
    fn stack(dir: &std::path::Path, width: usize, height: usize) -> Stack {
        let path = dir.join("src.tif");
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").expect("GTiff driver");
        let ds = driver
            .create_with_band_type::<f32, _>(&path, width, height, 2)
            .expect("create");
        for b in 1..=2 {
            let vals: Vec<f32> = (0..width * height)
                .map(|i| (b * 1_000_000 + (i / width) * 1000 + i % width) as f32)
                .collect();
            let mut buf = gdal::raster::Buffer::new((width, height), vals);
            ds.rasterband(b)
                .expect("band")
                .write((0, 0), (width, height), &mut buf)
                .expect("write");
        }
        drop(ds);
        let mut vrt = format!("<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\">");
        for b in 1..=2 {
            let _ = write!(
                vrt,
                "<VRTRasterBand dataType=\"Float32\" band=\"{b}\"><SimpleSource><SourceFilename>{}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>",
                path.display()
            );
        }
        vrt.push_str("</VRTDataset>");
        Stack {
            scene: path.display().to_string(),
            name: "src".into(),
            width,
            height,
            resolution: 1.0,
            geo_transform: [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
            srs_wkt: String::new(),
            projjson: String::new(),
            epsg: None,
            bands: Vec::new(),
            s2_offset_source: String::new(),
            sensor: None,
            warnings: Vec::new(),
            vrt,
            vrt_bands: 2,
        }
    }

    #[test]
    fn the_strip_reader_reads_what_the_window_reader_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (width, height) in [(300, 170), (50, 40)] {
            let st = stack(dir.path(), width, height);
            for tiling in [
                Tiling::Blended { overlap: 16 },
                Tiling::Reference { fraction: 0.2 },
            ] {
                let grid = TileGrid::new(width, height, 64, tiling).expect("grid");
                let mut windows = StackReader::open(&st).expect("open");
                let mut strips = StripReader::open(&st, 64).expect("open");
                let n = 2 * 64 * 64;
                let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
                for t in grid.tiles() {
                    windows.read(t.window, &mut a).expect("read");
                    strips.read(t.window, &mut b).expect("read");
                    assert_eq!(a, b, "{width}x{height} {tiling:?} tile {t:?}");
                }
                // A column panel: the columns its tiles read (reflected), nothing more.
                for (c0, c1) in [(0, 2), (2, grid.cols())] {
                    let tiles: Vec<_> =
                        grid.tiles().filter(|t| (c0..c1).contains(&t.col)).collect();
                    if tiles.is_empty() {
                        continue;
                    }
                    let cols: Vec<usize> = tiles
                        .iter()
                        .flat_map(|t| {
                            (0..t.window.width).map(move |i| reflect(t.window.x + i as i64, width))
                        })
                        .collect();
                    let lo = cols.iter().copied().min().expect("a column");
                    let hi = cols.iter().copied().max().expect("a column") + 1;
                    let mut panel = StripReader::open(&st, 64).expect("open");
                    panel.set_columns(lo, hi);
                    for t in &tiles {
                        windows.read(t.window, &mut a).expect("read");
                        panel.read(t.window, &mut b).expect("read");
                        assert_eq!(a, b, "{width}x{height} {tiling:?} panel tile {t:?}");
                    }
                }
                // Going back up re-reads.
                let first = grid.tiles().next().expect("a tile");
                windows.read(first.window, &mut a).expect("read");
                strips.read(first.window, &mut b).expect("read");
                assert_eq!(a, b);
            }
        }
    }
}
