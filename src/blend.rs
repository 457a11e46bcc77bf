//! Pure blending: overlapping tiles' class probabilities are accumulated with a weight window
//! in a rolling band of rows; rows are handed on (argmax, quantised probabilities) as soon as
//! no later tile can touch them, so memory follows the scene's width, never its height.

use crate::grid::Window;

/// Class id written where a pixel has no valid input.
pub const CLASS_NODATA: u8 = 255;

/// Finished rows handed to the writers.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRows {
    /// First scene row of the block.
    pub y: usize,
    /// Number of rows.
    pub rows: usize,
    /// Class per pixel (`rows * width`), [`CLASS_NODATA`] where no valid input.
    pub classes: Vec<u8>,
    /// Per class, probability 0..=255 per pixel (`classes * rows * width`, class-major);
    /// 0 where no valid input. Empty when probabilities are not kept or kept as floats.
    pub probs: Vec<u8>,
    /// The same as float32 probabilities 0..=1, NaN where no valid input, for an accumulator
    /// [`BandAccumulator::with_decisions`] set to floats. Empty otherwise.
    pub probs_f32: Vec<f32>,
    /// The winning class's blended probability x 255 per pixel (`rows * width`), at least 1
    /// where the pixel has a class, 0 where it has none (`--confidence`). Empty when not kept.
    pub confidence: Vec<u8>,
}

/// Finished rows of a continuous output (embeddings): weighted means per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedMeans {
    /// First row of the block.
    pub y: usize,
    /// Number of rows.
    pub rows: usize,
    /// Channel-major means (`channels * rows * width`), NaN where no valid input.
    pub values: Vec<f32>,
    /// Whether each pixel had valid input (`rows * width`).
    pub valid: Vec<bool>,
}

/// Weighted accumulation of tile probabilities over a rolling band of rows.
#[derive(Debug)]
pub struct BandAccumulator {
    width: usize,
    height: usize,
    classes: usize,
    cap: usize,
    base: usize,
    keep_probs: bool,
    /// The leading channels whose argmax is the class; the rest are the probabilities
    /// reported (all channels do both when it equals `classes`).
    decide: usize,
    /// Probabilities handed on as float32 rather than 0..=255.
    float_probs: bool,
    /// Hand on the winning class's probability ([`FinishedRows::confidence`]).
    keep_confidence: bool,
    sums: Vec<f32>,
    weights: Vec<f32>,
    valid: Vec<bool>,
}

impl BandAccumulator {
    /// An accumulator for a `width` x `height` scene that holds `cap_rows` rows at a time
    /// (at least one tile's height).
    #[must_use]
    pub fn new(
        width: usize,
        height: usize,
        classes: usize,
        cap_rows: usize,
        keep_probs: bool,
    ) -> Self {
        let cap = cap_rows.min(height).max(1);
        Self {
            width,
            height,
            classes,
            cap,
            base: 0,
            keep_probs,
            decide: classes,
            float_probs: false,
            keep_confidence: false,
            sums: vec![0.0; cap * width * classes],
            weights: vec![0.0; cap * width],
            valid: vec![false; cap * width],
        }
    }

    /// The class is the argmax of the first `decide` channels only, and the probabilities
    /// handed on are the channels after them (a per-pixel model's mask decides, its
    /// probabilities are reported); `float_probs`: as float32 in
    /// [`FinishedRows::probs_f32`].
    #[must_use]
    pub fn with_decisions(mut self, decide: usize, float_probs: bool) -> Self {
        self.decide = decide.clamp(1, self.classes);
        self.float_probs = float_probs;
        self
    }

    /// Also hand on the winning class's blended probability: the reported channel of the
    /// class the pixel gets (the maximum probability for a softmax model; for a per-pixel
    /// model's mask, the probability of the class its mask decided).
    #[must_use]
    pub fn with_confidence(mut self, keep: bool) -> Self {
        self.keep_confidence = keep;
        self
    }

    /// The probability channels handed on.
    fn reported(&self) -> std::ops::Range<usize> {
        if self.decide < self.classes {
            self.decide..self.classes
        } else {
            0..self.classes
        }
    }

    /// The same accumulator starting at scene row `row` (a block or shard that begins
    /// below the top of the scene): tiles must not reach above it.
    #[must_use]
    pub fn starting_at(mut self, row: usize) -> Self {
        self.base = row.min(self.height);
        self
    }

    /// The partial sums of the rows not yet handed on (`carry`), as bytes: what tiles
    /// already added contribute to the rows below. A later run that restores them continues
    /// exactly where this one stopped, without running those tiles again.
    #[must_use]
    pub fn carry(&self) -> Vec<u8> {
        let (w, k) = (self.width, self.classes);
        // Rows below the last one any tile reached are empty.
        let used = (0..self.cap)
            .rev()
            .find(|&r| self.valid[r * w..(r + 1) * w].iter().any(|&v| v))
            .map_or(0, |r| r + 1);
        let mut out = Vec::with_capacity(16 + used * w * (4 * k + 5));
        out.extend_from_slice(&(self.base as u64).to_le_bytes());
        out.extend_from_slice(&(used as u64).to_le_bytes());
        for v in &self.sums[..used * w * k] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in &self.weights[..used * w] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend(self.valid[..used * w].iter().map(|&v| u8::from(v)));
        out
    }

    /// Restores a [`Self::carry`] taken at row `base` of the same scene and model; false
    /// (and nothing changed) when it does not fit.
    pub fn restore(&mut self, carry: &[u8]) -> bool {
        let (w, k) = (self.width, self.classes);
        let word = |i: usize| -> Option<usize> {
            let b: [u8; 8] = carry.get(i..i + 8)?.try_into().ok()?;
            usize::try_from(u64::from_le_bytes(b)).ok()
        };
        let (Some(base), Some(used)) = (word(0), word(8)) else {
            return false;
        };
        if used > self.cap || carry.len() != 16 + used * w * (4 * k + 5) {
            return false;
        }
        let f32s = |bytes: &[u8]| -> Vec<f32> {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let s_end = 16 + used * w * k * 4;
        let w_end = s_end + used * w * 4;
        self.sums.fill(0.0);
        self.weights.fill(0.0);
        self.valid.fill(false);
        self.sums[..used * w * k].copy_from_slice(&f32s(&carry[16..s_end]));
        self.weights[..used * w].copy_from_slice(&f32s(&carry[s_end..w_end]));
        for (v, &b) in self.valid.iter_mut().zip(&carry[w_end..]) {
            *v = b != 0;
        }
        self.base = base;
        true
    }

    /// First scene row not yet handed on.
    #[must_use]
    pub fn base(&self) -> usize {
        self.base
    }

    /// Adds one tile: `probs` is class-major (`classes * h * w`), `weight` and `valid` are
    /// `h * w`, all for `window` (which may reach outside the scene; those pixels are ignored).
    /// Pixels whose input is invalid are not accumulated.
    ///
    /// # Panics
    /// When the tile reaches above the rolling band or below its capacity: tiles must come
    /// in row order and rows must be flushed with [`Self::flush_until`].
    pub fn add(&mut self, window: Window, probs: &[f32], weight: &[f32], valid: &[bool]) {
        let (tw, th) = (window.width, window.height);
        let plane = tw * th;
        debug_assert_eq!(probs.len(), plane * self.classes);
        let Some(clip) = window.clip(self.width, self.height) else {
            return;
        };
        let y_end = clip.y as usize + clip.height;
        assert!(
            clip.y as usize >= self.base && y_end <= self.base + self.cap,
            "tile rows {}..{y_end} outside the rolling band {}..{}",
            clip.y,
            self.base,
            self.base + self.cap
        );
        let tx0 = (clip.x - window.x) as usize;
        for y in clip.y as usize..y_end {
            let ty = (y as i64 - window.y) as usize;
            let r = y - self.base;
            for i in 0..clip.width {
                let t = ty * tw + tx0 + i;
                if !valid[t] {
                    continue;
                }
                let x = clip.x as usize + i;
                let p = r * self.width + x;
                let w = weight[t];
                self.weights[p] += w;
                self.valid[p] = true;
                for c in 0..self.classes {
                    self.sums[(r * self.classes + c) * self.width + x] += w * probs[c * plane + t];
                }
            }
        }
    }

    /// Hands on every row above `row` (clamped to the scene) and moves the band down.
    pub fn flush_until(&mut self, row: usize) -> Option<FinishedRows> {
        let row = row.min(self.height);
        if row <= self.base {
            return None;
        }
        let n = row - self.base;
        assert!(
            n <= self.cap,
            "flush of {n} rows exceeds the band of {}",
            self.cap
        );
        let w = self.width;
        let k = self.classes;
        let reported = self.reported();
        let kr = reported.len();
        let mut classes = vec![CLASS_NODATA; n * w];
        let (bytes, floats) = (
            self.keep_probs && !self.float_probs,
            self.keep_probs && self.float_probs,
        );
        let mut probs = vec![0_u8; if bytes { kr * n * w } else { 0 }];
        let mut probs_f32 = vec![f32::NAN; if floats { kr * n * w } else { 0 }];
        let mut confidence = vec![0_u8; if self.keep_confidence { n * w } else { 0 }];
        for r in 0..n {
            for x in 0..w {
                let p = r * w + x;
                let total = self.weights[p];
                if !self.valid[p] || total <= 0.0 {
                    continue;
                }
                let mut best = 0;
                let mut best_v = f32::NEG_INFINITY;
                for c in 0..self.decide {
                    let v = self.sums[(r * k + c) * w + x];
                    if v > best_v {
                        best_v = v;
                        best = c;
                    }
                }
                if self.keep_probs {
                    for (j, c) in reported.clone().enumerate() {
                        let v = self.sums[(r * k + c) * w + x] / total;
                        if floats {
                            probs_f32[(j * n + r) * w + x] = v;
                        } else {
                            probs[(j * n + r) * w + x] = quantise(v);
                        }
                    }
                }
                classes[p] = best as u8;
                if self.keep_confidence {
                    let ch = reported.start + best;
                    let v = self.sums[(r * k + ch.min(k - 1)) * w + x] / total;
                    confidence[p] = quantise(v).max(1);
                }
            }
        }
        let y = self.base;
        self.advance(n);
        Some(FinishedRows {
            y,
            rows: n,
            classes,
            probs,
            probs_f32,
            confidence,
        })
    }

    /// Hands on every row above `row` as weighted means per channel (`channels * rows *
    /// width`, channel-major; NaN where no valid input) and moves the band down.
    pub fn flush_means_until(&mut self, row: usize) -> Option<FinishedMeans> {
        let row = row.min(self.height);
        if row <= self.base {
            return None;
        }
        let n = row - self.base;
        assert!(
            n <= self.cap,
            "flush of {n} rows exceeds the band of {}",
            self.cap
        );
        let (w, k) = (self.width, self.classes);
        let mut values = vec![f32::NAN; k * n * w];
        let mut valid = vec![false; n * w];
        for r in 0..n {
            for x in 0..w {
                let p = r * w + x;
                let total = self.weights[p];
                if !self.valid[p] || total <= 0.0 {
                    continue;
                }
                valid[p] = true;
                for c in 0..k {
                    values[(c * n + r) * w + x] = self.sums[(r * k + c) * w + x] / total;
                }
            }
        }
        let y = self.base;
        self.advance(n);
        Some(FinishedMeans {
            y,
            rows: n,
            values,
            valid,
        })
    }

    /// Moves the unfinished rows to the front of the band and clears the rest.
    fn advance(&mut self, n: usize) {
        let (w, k) = (self.width, self.classes);
        let keep = self.cap - n;
        self.sums.copy_within(n * w * k.., 0);
        self.sums[keep * w * k..].fill(0.0);
        self.weights.copy_within(n * w.., 0);
        self.weights[keep * w..].fill(0.0);
        self.valid.copy_within(n * w.., 0);
        self.valid[keep * w..].fill(false);
        self.base += n;
    }
}

/// A probability 0..=1 as 0..=255.
fn quantise(p: f32) -> u8 {
    (p * 255.0).round().clamp(0.0, 255.0) as u8
}

/// Softmax over the class axis of class-major logits (`classes * plane`), in place.
pub fn softmax_classes(logits: &mut [f32], classes: usize) {
    let plane = logits.len() / classes;
    for i in 0..plane {
        let mut max = f32::NEG_INFINITY;
        for c in 0..classes {
            max = max.max(logits[c * plane + i]);
        }
        let mut sum = 0.0;
        for c in 0..classes {
            let e = (logits[c * plane + i] - max).exp();
            logits[c * plane + i] = e;
            sum += e;
        }
        for c in 0..classes {
            logits[c * plane + i] /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_carry_continues_to_the_same_rows() {
        let (w, h, tile) = (20, 20, 8);
        let win = |x: i64, y: i64| Window {
            x,
            y,
            width: tile,
            height: tile,
        };
        let probs: Vec<f32> = (0..2 * tile * tile).map(|i| (i % 7) as f32 * 0.1).collect();
        let weight: Vec<f32> = (0..tile * tile).map(|i| 0.5 + (i % 5) as f32).collect();
        let valid = vec![true; tile * tile];
        let tiles = [
            win(0, 0),
            win(12, 0),
            win(0, 6),
            win(12, 6),
            win(0, 12),
            win(12, 12),
        ];
        let mut whole = BandAccumulator::new(w, h, 2, tile, true);
        let mut first = BandAccumulator::new(w, h, 2, tile, true);
        let mut rows_whole = Vec::new();
        for (i, t) in tiles.iter().enumerate() {
            if i == 2 || i == 4 {
                rows_whole.push(whole.flush_until(t.y as usize));
            }
            whole.add(*t, &probs, &weight, &valid);
            if i < 4 {
                if i == 2 {
                    first.flush_until(6);
                }
                first.add(*t, &probs, &weight, &valid);
            }
        }
        rows_whole.push(whole.flush_until(h));
        // Stop after the second tile row, flush its final rows, carry the rest over.
        first.flush_until(12);
        let carry = first.carry();
        let mut second = BandAccumulator::new(w, h, 2, tile, true);
        assert!(second.restore(&carry));
        assert_eq!(second.base(), 12);
        for t in &tiles[4..] {
            second.add(*t, &probs, &weight, &valid);
        }
        let resumed = second.flush_until(h).expect("rows");
        let expected = rows_whole[2].as_ref().expect("rows");
        assert_eq!(resumed.y, expected.y);
        assert_eq!(resumed.classes, expected.classes);
        assert_eq!(resumed.probs, expected.probs);
        assert!(!BandAccumulator::new(w + 1, h, 2, tile, true).restore(&carry));
    }
    use crate::grid::{TileGrid, Tiling};
    use proptest::prelude::*;

    fn run_grid(
        width: usize,
        height: usize,
        tile: usize,
        tiling: Tiling,
        value: impl Fn(usize, usize) -> [f32; 2],
    ) -> Vec<FinishedRows> {
        let grid = TileGrid::new(width, height, tile, tiling).expect("grid");
        let weight = grid.weights();
        let mut acc = BandAccumulator::new(width, height, 2, tile, true);
        let mut out = Vec::new();
        let mut row = 0;
        for t in grid.tiles() {
            if t.row != row {
                out.extend(acc.flush_until(grid.rows_final_after(row)));
                row = t.row;
            }
            let w = t.window;
            let mut probs = vec![0.0; 2 * tile * tile];
            for ty in 0..tile {
                for tx in 0..tile {
                    let x = crate::grid::reflect(w.x + tx as i64, width);
                    let y = crate::grid::reflect(w.y + ty as i64, height);
                    let v = value(x, y);
                    probs[ty * tile + tx] = v[0];
                    probs[tile * tile + ty * tile + tx] = v[1];
                }
            }
            acc.add(w, &probs, &weight, &vec![true; tile * tile]);
        }
        out.extend(acc.flush_until(height));
        out
    }

    #[test]
    fn softmax_sums_to_one_per_pixel() {
        let mut l = vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0];
        softmax_classes(&mut l, 3);
        assert!((l[0] + l[2] + l[4] - 1.0).abs() < 1e-6);
        assert!((l[1] + l[3] + l[5] - 1.0).abs() < 1e-6);
        assert!(l[2] > l[0] && l[0] > l[4]);
    }

    #[test]
    fn invalid_pixels_get_nodata() {
        let mut acc = BandAccumulator::new(2, 1, 2, 1, false);
        let win = Window {
            x: 0,
            y: 0,
            width: 2,
            height: 1,
        };
        acc.add(win, &[0.9, 0.9, 0.1, 0.1], &[1.0, 1.0], &[true, false]);
        let f = acc.flush_until(1).expect("rows");
        assert_eq!(f.classes, vec![0, CLASS_NODATA]);
    }

    #[test]
    fn decision_channels_decide_and_the_others_are_reported_as_floats() {
        // Channels [1 - m, m, 1 - p, p] of a per-pixel model: the mask decides even where
        // the probability says otherwise; the probabilities come out as float32.
        let mut acc = BandAccumulator::new(3, 1, 4, 1, true).with_decisions(2, true);
        let win = Window {
            x: 0,
            y: 0,
            width: 3,
            height: 1,
        };
        let (m, p) = ([1.0, 0.0, 0.0], [0.3, 0.7, 0.2]);
        let mut data = Vec::new();
        data.extend(m.iter().map(|v| 1.0 - v));
        data.extend(m);
        data.extend(p.iter().map(|v| 1.0 - v));
        data.extend(p);
        acc.add(win, &data, &[0.5, 1.0, 1.0], &[true, true, false]);
        acc.add(win, &data, &[0.25, 1.0, 1.0], &[true, true, false]);
        let f = acc.flush_until(1).expect("rows");
        assert_eq!(f.classes, vec![1, 0, CLASS_NODATA]);
        assert!(f.probs.is_empty());
        assert_eq!(f.probs_f32.len(), 6);
        assert!((f.probs_f32[3] - 0.3).abs() < 1e-7 && (f.probs_f32[4] - 0.7).abs() < 1e-7);
        assert!((f.probs_f32[0] - 0.7).abs() < 1e-7);
        assert!(f.probs_f32[2].is_nan() && f.probs_f32[5].is_nan());
    }

    #[test]
    fn rows_are_flushed_in_order_and_cover_the_scene() {
        let out = run_grid(300, 700, 64, Tiling::Blended { overlap: 16 }, |_, _| {
            [0.3, 0.7]
        });
        let mut next = 0;
        for f in &out {
            assert_eq!(f.y, next);
            next += f.rows;
        }
        assert_eq!(next, 700);
    }

    proptest! {
        #[test]
        fn constant_tiles_blend_back_to_the_constant(
            w in 1usize..200, h in 1usize..200, tile in 8usize..80, ov in 0usize..40, p in 0.0f32..1.0, reference in any::<bool>()
        ) {
            prop_assume!(ov < tile);
            let tiling = if reference { Tiling::Reference { fraction: 0.2 } } else { Tiling::Blended { overlap: ov } };
            let out = run_grid(w, h, tile, tiling, |_, _| [p, 1.0 - p]);
            let q = quantise(p);
            for f in out {
                prop_assert!(f.classes.iter().all(|&c| c == u8::from(1.0 - p > p)));
                prop_assert!(f.probs[..f.rows * w].iter().all(|&v| v.abs_diff(q) <= 1));
            }
        }

        #[test]
        fn a_pixels_class_does_not_depend_on_the_tiling(w in 20usize..150, h in 20usize..150, tile in 8usize..64) {
            // Probabilities that depend only on the pixel: any blend gives back the pixel's class.
            let f = |x: usize, y: usize| { let a = ((x * 7 + y * 3) % 10) as f32 / 10.0 + 0.05; [a, 1.0 - a] };
            for f_out in run_grid(w, h, tile, Tiling::Blended { overlap: tile / 4 }, f) {
                for r in 0..f_out.rows {
                    for x in 0..w {
                        let v = f(x, f_out.y + r);
                        prop_assert_eq!(f_out.classes[r * w + x], u8::from(v[1] > v[0]));
                    }
                }
            }
        }
    }
}
