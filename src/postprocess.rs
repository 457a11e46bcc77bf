//! Pure mask post-processing of a probability plane, as s2cloudless's `get_mask_from_prob`
//! does it (described in a manifest, not hard-wired to one model): the mean over a disk of
//! radius `average_over` px (the border mirrored, `fedcba|abcdef`, OpenCV's BORDER_REFLECT),
//! strictly above `threshold`, then dilated with a disk of radius `dilation_size` px (pixels
//! outside the plane switch nothing on).

/// The parameters of [`mask_from_probability`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskSpec {
    /// A pixel is masked when its (averaged) probability is strictly above this.
    pub threshold: f32,
    /// Radius in pixels of the averaging disk; 0: no averaging.
    pub average_over: usize,
    /// Radius in pixels of the dilation disk; 0: no dilation.
    pub dilation_size: usize,
}

impl MaskSpec {
    /// How far a pixel's mask depends on its neighbours: a tile's mask is exact at least this
    /// far inside its edges (tiles must overlap by more than twice it).
    #[must_use]
    pub fn reach(&self) -> usize {
        self.average_over + self.dilation_size
    }
}

/// The offsets of a disk of radius `r`: `x² + y² <= r²` (skimage's and s2cloudless's disk).
#[must_use]
pub fn disk(r: usize) -> Vec<(isize, isize)> {
    let r = r as isize;
    let mut out = Vec::new();
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r {
                out.push((dx, dy));
            }
        }
    }
    out
}

/// Index `i` mirrored into `0..n` with the edge repeated (`fedcba|abcdef`).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut j = i.rem_euclid(period);
    if j >= n {
        j = period - 1 - j;
    }
    j as usize
}

/// The mean of `p` (`w * h`, row-major) over a disk of radius `r` around each pixel, the
/// border mirrored; only pixels that are `valid` count (all, when `valid` is empty), and a
/// pixel with none in its disk gets 0. Summed in f64, stored as float32.
#[must_use]
pub fn average_disk(p: &[f32], valid: &[bool], (w, h): (usize, usize), r: usize) -> Vec<f32> {
    debug_assert_eq!(p.len(), w * h);
    if r == 0 {
        return p.to_vec();
    }
    let offsets = disk(r);
    let mut out = vec![0.0_f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let (mut sum, mut n) = (0.0_f64, 0_usize);
            for &(dx, dy) in &offsets {
                let s = reflect(y as isize + dy, h) * w + reflect(x as isize + dx, w);
                if valid.is_empty() || valid[s] {
                    sum += f64::from(p[s]);
                    n += 1;
                }
            }
            out[y * w + x] = if n == 0 {
                0.0
            } else {
                (sum * (1.0 / n as f64)) as f32
            };
        }
    }
    out
}

/// `mask` dilated with a disk of radius `r`; pixels outside the plane switch nothing on.
#[must_use]
pub fn dilate_disk(mask: &[bool], (w, h): (usize, usize), r: usize) -> Vec<bool> {
    if r == 0 {
        return mask.to_vec();
    }
    let offsets = disk(r);
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = offsets.iter().any(|&(dx, dy)| {
                let (sx, sy) = (x as isize + dx, y as isize + dy);
                sx >= 0
                    && sy >= 0
                    && (sx as usize) < w
                    && (sy as usize) < h
                    && mask[sy as usize * w + sx as usize]
            });
        }
    }
    out
}

/// The mask of a probability plane: averaged (over the `valid` pixels; all when empty),
/// thresholded, dilated.
#[must_use]
pub fn mask_from_probability(
    p: &[f32],
    valid: &[bool],
    size: (usize, usize),
    spec: &MaskSpec,
) -> Vec<bool> {
    let averaged = average_disk(p, valid, size, spec.average_over);
    let mask: Vec<bool> = averaged.iter().map(|&v| v > spec.threshold).collect();
    dilate_disk(&mask, size, spec.dilation_size)
}

/// What one tile of a per-pixel model adds to the blend: from its probability plane `p`
/// (`tile * tile`, for the scene pixels `window` covers) the channels `[1 - m, m, 1 - p, p]`
/// (`m` the mask, 0 or 1) and the pixels whose mask this tile knows exactly.
///
/// The mask is computed on the part of the tile inside the scene (`scene`: width, height),
/// mirrored at its edges; where an edge is the scene's, that is the reference's own border.
/// Where it is another tile's (the scene goes on), pixels closer to it than
/// [`MaskSpec::reach`] are left to the neighbouring tile (returned invalid): with tiles that
/// overlap by at least twice the reach, every pixel's mask comes from a tile that sees all its
/// neighbours, so the blended mask equals the whole-scene mask. Invalid input pixels (nodata)
/// are left out of the averaging (a cloud beside a swath edge is not diluted by it).
#[must_use]
pub fn pixel_tile(
    p: &[f32],
    valid: &[bool],
    window: crate::grid::Window,
    scene: (usize, usize),
    spec: &MaskSpec,
) -> (Vec<f32>, Vec<bool>) {
    let (tw, th) = (window.width, window.height);
    let plane = tw * th;
    debug_assert_eq!(p.len(), plane);
    // The tile's part inside the scene, in tile pixels, and which of its edges are inner.
    let span = |origin: i64, len: usize, size: usize| {
        let a = (-origin).clamp(0, len as i64) as usize;
        let b = (size as i64 - origin).clamp(a as i64, len as i64) as usize;
        (a, b, origin > 0, origin + (len as i64) < size as i64)
    };
    let (x0, x1, inner_left, inner_right) = span(window.x, tw, scene.0);
    let (y0, y1, inner_top, inner_bottom) = span(window.y, th, scene.1);
    let (sw, sh) = (x1 - x0, y1 - y0);
    let mut sub = vec![0.0_f32; sw * sh];
    let mut sub_valid = vec![false; sw * sh];
    for y in 0..sh {
        for x in 0..sw {
            let t = (y0 + y) * tw + x0 + x;
            sub[y * sw + x] = p[t];
            sub_valid[y * sw + x] = valid[t];
        }
    }
    let mask = mask_from_probability(&sub, &sub_valid, (sw, sh), spec);
    let reach = spec.reach();
    let mut out = vec![0.0_f32; 4 * plane];
    let mut known = vec![false; plane];
    for y in 0..sh {
        let row_ok = (!inner_top || y >= reach) && (!inner_bottom || y + reach < sh);
        for x in 0..sw {
            let t = (y0 + y) * tw + x0 + x;
            let m = f32::from(u8::from(mask[y * sw + x]));
            out[t] = 1.0 - m;
            out[plane + t] = m;
            out[2 * plane + t] = 1.0 - p[t];
            out[3 * plane + t] = p[t];
            let col_ok = (!inner_left || x >= reach) && (!inner_right || x + reach < sw);
            known[t] = valid[t] && row_ok && col_ok;
        }
    }
    (out, known)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic, spatially varied probability plane.
    fn field(w: usize, h: usize) -> Vec<f32> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                (0.5 + 0.5 * (x * 0.37).sin() * (y * 0.23).cos()).clamp(0.0, 1.0)
            })
            .collect()
    }

    #[test]
    fn overlapping_tiles_give_the_whole_scene_mask() {
        let spec = MaskSpec {
            threshold: 0.4,
            average_over: 4,
            dilation_size: 2,
        };
        let (w, h) = (70, 45);
        let p = field(w, h);
        let whole = mask_from_probability(&p, &[], (w, h), &spec);
        // 32 px tiles overlapping by 2 * reach = 12 px, the last shifted inward (blended
        // tiling); a tile's mask counts only where it is known.
        let grid = crate::grid::TileGrid::new(
            w,
            h,
            32,
            crate::grid::Tiling::Blended {
                overlap: 2 * spec.reach(),
            },
        )
        .expect("grid");
        let mut got: Vec<Option<bool>> = vec![None; w * h];
        for t in grid.tiles() {
            let win = t.window;
            let tile_p: Vec<f32> = (0..win.height)
                .flat_map(|y| (0..win.width).map(move |x| (x, y)))
                .map(|(x, y)| {
                    let (sx, sy) = (win.x + x as i64, win.y + y as i64);
                    if sx < w as i64 && sy < h as i64 {
                        p[sy as usize * w + sx as usize]
                    } else {
                        0.0
                    }
                })
                .collect();
            let valid = vec![true; win.width * win.height];
            let (ch, known) = pixel_tile(&tile_p, &valid, win, (w, h), &spec);
            let plane = win.width * win.height;
            for (t, &k) in known.iter().enumerate() {
                let (sx, sy) = (
                    win.x + (t % win.width) as i64,
                    win.y + (t / win.width) as i64,
                );
                if !k || sx >= w as i64 || sy >= h as i64 {
                    continue;
                }
                let m = ch[plane + t] > 0.5;
                let s = sy as usize * w + sx as usize;
                assert!(got[s].is_none_or(|g| g == m), "tiles disagree at {sx},{sy}");
                got[s] = Some(m);
                assert_eq!(ch[3 * plane + t], tile_p[t]);
            }
        }
        let got: Vec<bool> = got
            .iter()
            .map(|g| g.expect("every pixel known by a tile"))
            .collect();
        assert_eq!(got, whole);
        assert!(whole.iter().any(|&v| v) && whole.iter().any(|&v| !v));
    }

    #[test]
    fn a_tile_larger_than_the_scene_uses_the_scene_edges() {
        let spec = MaskSpec {
            threshold: 0.4,
            average_over: 1,
            dilation_size: 1,
        };
        let (w, h) = (10, 7);
        let p = field(w, h);
        let whole = mask_from_probability(&p, &[], (w, h), &spec);
        let win = crate::grid::Window {
            x: 0,
            y: 0,
            width: 16,
            height: 16,
        };
        let mut tile_p = vec![0.9; 256];
        let mut valid = vec![false; 256];
        for y in 0..h {
            for x in 0..w {
                tile_p[y * 16 + x] = p[y * w + x];
                valid[y * 16 + x] = true;
            }
        }
        let (ch, known) = pixel_tile(&tile_p, &valid, win, (w, h), &spec);
        for y in 0..h {
            for x in 0..w {
                assert!(known[y * 16 + x]);
                assert_eq!(ch[256 + y * 16 + x] > 0.5, whole[y * w + x]);
            }
        }
        assert!(!known[7 * 16]);
    }

    #[test]
    fn disks_have_skimages_pixel_counts() {
        assert_eq!(disk(0).len(), 1);
        assert_eq!(disk(1).len(), 5);
        assert_eq!(disk(2).len(), 13);
        assert_eq!(disk(4).len(), 49);
    }

    #[test]
    fn the_border_is_mirrored_with_the_edge_repeated() {
        // fedcba|abcdef
        assert_eq!(reflect(-1, 6), 0);
        assert_eq!(reflect(-2, 6), 1);
        assert_eq!(reflect(6, 6), 5);
        assert_eq!(reflect(7, 6), 4);
        assert_eq!(reflect(3, 6), 3);
    }

    #[test]
    fn averaging_at_a_corner_counts_the_mirrored_pixels() {
        // 3 x 1 plane [1, 0, 0], r = 1: the disk is the pixel, left, right, up, down; up and
        // down mirror to the pixel itself.
        let a = average_disk(&[1.0, 0.0, 0.0], &[], (3, 1), 1);
        // x=0: itself 1, left mirrors to x=0 (1), right 0, up 1, down 1 -> 4/5.
        assert!((a[0] - 0.8).abs() < 1e-7);
        // x=1: left 1, itself 0, right 0, up 0, down 0 -> 1/5.
        assert!((a[1] - 0.2).abs() < 1e-7);
        assert!((a[2] - 0.0).abs() < 1e-7);
        // Nodata does not dilute: with x=1 invalid, x=0 averages 1, 1, 1, 1 (itself, its
        // mirror and up / down) -> 1; x=2 averages 0s only; x=1 itself is left out.
        let b = average_disk(&[1.0, 0.5, 0.0], &[true, false, true], (3, 1), 1);
        assert!((b[0] - 1.0).abs() < 1e-7 && b[2].abs() < 1e-7);
        assert!((b[1] - 0.5).abs() < 1e-7);
    }

    #[test]
    fn the_threshold_is_strict_and_dilation_ignores_the_outside() {
        let spec = MaskSpec {
            threshold: 0.4,
            average_over: 0,
            dilation_size: 1,
        };
        let p = [0.4, 0.41, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let m = mask_from_probability(&p, &[], (3, 3), &spec);
        // Only (1, 0) is above 0.4; dilation by the 5-pixel disk.
        assert_eq!(
            m,
            vec![true, true, true, false, true, false, false, false, false]
        );
        assert_eq!(spec.reach(), 1);
        let none = mask_from_probability(&[0.0; 9], &[], (3, 3), &spec);
        assert!(none.iter().all(|v| !v));
    }
}
