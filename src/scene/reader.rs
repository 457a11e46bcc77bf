//! Reads windows of the model-ready stack: one GDAL dataset handle per reader thread;
//! windows reaching outside the scene are filled by symmetric reflection.

use super::Stack;
use crate::error::SceneError;
use crate::grid::{Window, reflect};
use gdal::Dataset;
use std::path::PathBuf;

/// A reader over a [`Stack`]'s VRT. Not shared between threads: open one per thread.
pub struct StackReader {
    ds: Dataset,
    width: usize,
    height: usize,
    bands: usize,
    scratch: Vec<f32>,
    name: String,
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
        })
    }

    fn err(&self, e: &gdal::errors::GdalError, w: Window) -> SceneError {
        SceneError::Gdal {
            path: PathBuf::from(&self.name),
            message: format!(
                "reading window x={} y={} {}x{}: {e}",
                w.x, w.y, w.width, w.height
            ),
        }
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
