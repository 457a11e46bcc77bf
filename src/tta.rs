//! Test-time augmentation: the model runs on flipped / rotated copies of each square tile and
//! the class probabilities, mapped back, are averaged. Pure index arithmetic (no ONNX Runtime).
//!
//! The eight symmetries of a square (the dihedral group D4) are numbered 0..8 by three bits:
//! bit 0 flips columns, bit 1 flips rows, bit 2 transposes (applied first).

use serde::Serialize;

/// Which augmentations to average.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Tta {
    /// The tile as it is (default).
    #[default]
    None,
    /// The tile, its left-right and up-down mirror images and its 180 degree rotation (4 runs).
    Flip,
    /// All eight flips and rotations of the square (8 runs).
    D4,
}

impl Tta {
    /// The symmetries run, as numbers 0..8 (see the module documentation).
    #[must_use]
    pub fn variants(self) -> &'static [u8] {
        match self {
            Tta::None => &[0],
            Tta::Flip => &[0, 1, 2, 3],
            Tta::D4 => &[0, 1, 2, 3, 4, 5, 6, 7],
        }
    }
}

impl std::fmt::Display for Tta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::D4 => "d4",
        })
    }
}

/// Index in the original `n` x `n` plane of the pixel that symmetry `k` puts at `(y, x)`.
#[inline]
#[must_use]
pub fn source_index(k: u8, y: usize, x: usize, n: usize) -> usize {
    let (mut yy, mut xx) = if k & 4 == 0 { (y, x) } else { (x, y) };
    if k & 1 != 0 {
        xx = n - 1 - xx;
    }
    if k & 2 != 0 {
        yy = n - 1 - yy;
    }
    yy * n + xx
}

/// Writes symmetry `k` of every `n` x `n` plane of `src` into `dst` (same length).
pub fn transform_planes(k: u8, src: &[f32], dst: &mut [f32], n: usize) {
    let plane = n * n;
    for (s, d) in src.chunks_exact(plane).zip(dst.chunks_exact_mut(plane)) {
        if k == 0 {
            d.copy_from_slice(s);
            continue;
        }
        for y in 0..n {
            let row = &mut d[y * n..(y + 1) * n];
            for (x, v) in row.iter_mut().enumerate() {
                *v = s[source_index(k, y, x, n)];
            }
        }
    }
}

/// Writes symmetry `k` of every pixel-major `n` x `n` tile of `src` (each pixel `depth`
/// values, as an encoder's `[H, W, T, C]` input) into `dst` (same length).
pub fn transform_pixels(k: u8, src: &[f32], dst: &mut [f32], n: usize, depth: usize) {
    let tile = n * n * depth;
    for (s, d) in src.chunks_exact(tile).zip(dst.chunks_exact_mut(tile)) {
        if k == 0 {
            d.copy_from_slice(s);
            continue;
        }
        for y in 0..n {
            for x in 0..n {
                let from = source_index(k, y, x, n) * depth;
                let to = (y * n + x) * depth;
                d[to..to + depth].copy_from_slice(&s[from..from + depth]);
            }
        }
    }
}

/// Adds the planes of `out` (the model's output on symmetry `k`) back in the original frame:
/// `acc[source_index(k, p)] += out[p]`.
pub fn accumulate_inverse(k: u8, out: &[f32], acc: &mut [f32], n: usize) {
    let plane = n * n;
    for (o, a) in out.chunks_exact(plane).zip(acc.chunks_exact_mut(plane)) {
        if k == 0 {
            for (a, &o) in a.iter_mut().zip(o) {
                *a += o;
            }
            continue;
        }
        for y in 0..n {
            for x in 0..n {
                a[source_index(k, y, x, n)] += o[y * n + x];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_major_tiles_move_whole_pixels_like_planes_move_values() {
        let (n, depth) = (3, 2);
        // Channel c of pixel p is 10 p + c.
        let src: Vec<f32> = (0..n * n)
            .flat_map(|p| (0..depth).map(move |c| (10 * p + c) as f32))
            .collect();
        for k in 0..8 {
            let mut dst = vec![0.0; src.len()];
            transform_pixels(k, &src, &mut dst, n, depth);
            let plane: Vec<f32> = (0..n * n).map(|p| (10 * p) as f32).collect();
            let mut moved = vec![0.0; plane.len()];
            transform_planes(k, &plane, &mut moved, n);
            for p in 0..n * n {
                assert_eq!(dst[p * depth], moved[p], "k {k} pixel {p}");
                assert_eq!(dst[p * depth + 1], moved[p] + 1.0, "k {k} pixel {p}");
            }
        }
    }

    #[test]
    fn every_symmetry_is_a_permutation_undone_by_the_inverse() {
        let n = 5;
        let src: Vec<f32> = (0..2 * n * n).map(|v| v as f32).collect();
        for k in 0..8 {
            let mut t = vec![0.0; src.len()];
            transform_planes(k, &src, &mut t, n);
            let mut sorted = t.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, src, "symmetry {k} is a permutation");
            let mut back = vec![0.0; src.len()];
            accumulate_inverse(k, &t, &mut back, n);
            assert_eq!(back, src, "symmetry {k} is undone");
        }
    }

    #[test]
    fn the_eight_symmetries_are_distinct() {
        let n = 3;
        let src: Vec<f32> = (0..n * n).map(|v| v as f32).collect();
        let mut seen = Vec::new();
        for k in 0..8 {
            let mut t = vec![0.0; src.len()];
            transform_planes(k, &src, &mut t, n);
            assert!(!seen.contains(&t), "symmetry {k} repeats another");
            seen.push(t);
        }
        // Bit 0 mirrors columns: the first row of a 3x3 plane reads 2, 1, 0.
        let mut t = vec![0.0; 9];
        transform_planes(1, &src, &mut t, 3);
        assert_eq!(&t[..3], &[2.0, 1.0, 0.0]);
        // Bit 2 transposes: the first row becomes the first column.
        transform_planes(4, &src, &mut t, 3);
        assert_eq!(&t[..3], &[0.0, 3.0, 6.0]);
    }

    #[test]
    fn an_equivariant_model_is_unchanged_by_averaging() {
        // A per-pixel model (output = input) gives the same result under every symmetry.
        let n = 4;
        let src: Vec<f32> = (0..n * n).map(|v| (v as f32).sin()).collect();
        for tta in [Tta::Flip, Tta::D4] {
            let mut acc = vec![0.0; src.len()];
            let mut t = vec![0.0; src.len()];
            for &k in tta.variants() {
                transform_planes(k, &src, &mut t, n);
                accumulate_inverse(k, &t, &mut acc, n);
            }
            let m = tta.variants().len() as f32;
            for (a, s) in acc.iter().zip(&src) {
                assert!((a / m - s).abs() < 1e-6);
            }
        }
    }
}
