//! Pure tile geometry: where the model's tiles fall on the scene grid, and the weight
//! window each tile's probabilities are blended with (no GDAL, no ONNX Runtime).

use crate::error::GridError;
use serde::Serialize;

/// A rectangle of pixels. Offsets may lie outside the raster for padded tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Window {
    /// Column of the left edge.
    pub x: i64,
    /// Row of the top edge.
    pub y: i64,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl Window {
    /// The same window with every coordinate multiplied by `k` (tile-grid units to pixels).
    #[must_use]
    pub fn scaled(&self, k: usize) -> Window {
        Window {
            x: self.x * k as i64,
            y: self.y * k as i64,
            width: self.width * k,
            height: self.height * k,
        }
    }

    /// The part of this window inside a `width` x `height` raster, if any.
    #[must_use]
    pub fn clip(&self, width: usize, height: usize) -> Option<Window> {
        let x0 = self.x.max(0);
        let y0 = self.y.max(0);
        let x1 = (self.x + self.width as i64).min(width as i64);
        let y1 = (self.y + self.height as i64).min(height as i64);
        (x1 > x0 && y1 > y0).then(|| Window {
            x: x0,
            y: y0,
            width: (x1 - x0) as usize,
            height: (y1 - y0) as usize,
        })
    }
}

/// How tiles are laid out and blended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum Tiling {
    /// eoinfer's own scheme: tiles overlap by `overlap` px, edge tiles are shifted inward so
    /// every tile is full, probabilities are blended with a sine window that is positive
    /// everywhere and normalised by the summed weights.
    Blended {
        /// Overlap between neighbouring tiles in pixels.
        overlap: usize,
    },
    /// The model authors' own scheme (ukis-csmask `tile_array`/`untile_array`): symmetric
    /// padding of `int(tile*f)` before and `tile + 1 + int(tile*f)` after each axis, stride
    /// `int(tile - tile*f)`, Tukey window with `alpha = 2f`, weighted sum.
    Reference {
        /// Overlap fraction `f` (ukis-csmask uses 0.2).
        fraction: f64,
    },
}

/// One tile of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tile {
    /// Row-major index of the tile.
    pub id: usize,
    /// Index of the row of tiles.
    pub row: usize,
    /// Index of the column of tiles.
    pub col: usize,
    /// Pixels the tile reads, in scene coordinates (may reach outside the scene).
    pub window: Window,
}

/// The tiles covering a raster, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct TileGrid {
    width: usize,
    height: usize,
    tile: usize,
    tiling: Tiling,
    xs: Vec<i64>,
    ys: Vec<i64>,
}

impl TileGrid {
    /// Lays out `tile` x `tile` tiles over a `width` x `height` raster.
    ///
    /// ```
    /// use eoinfer::grid::{TileGrid, Tiling};
    /// // 600 px with 256 px tiles overlapping by 32 px: the last tile is shifted inward.
    /// let grid = TileGrid::new(600, 300, 256, Tiling::Blended { overlap: 32 }).unwrap();
    /// let xs: Vec<i64> = grid.tiles().filter(|t| t.row == 0).map(|t| t.window.x).collect();
    /// assert_eq!(xs, [0, 224, 344]);
    /// assert_eq!(grid.rows(), 2);
    /// ```
    pub fn new(
        width: usize,
        height: usize,
        tile: usize,
        tiling: Tiling,
    ) -> Result<Self, GridError> {
        if tile == 0 {
            return Err(GridError::ZeroTile);
        }
        let (xs, ys) = match tiling {
            Tiling::Blended { overlap } => {
                if overlap >= tile {
                    return Err(GridError::OverlapTooLarge { overlap, tile });
                }
                (
                    blended_positions(width, tile, overlap),
                    blended_positions(height, tile, overlap),
                )
            }
            Tiling::Reference { fraction } => {
                if !(0.0..=0.5).contains(&fraction) {
                    return Err(GridError::BadFraction(fraction.to_string()));
                }
                (
                    reference_positions(width, tile, fraction),
                    reference_positions(height, tile, fraction),
                )
            }
        };
        Ok(Self {
            width,
            height,
            tile,
            tiling,
            xs,
            ys,
        })
    }

    /// The grid of a model whose tiles are made of whole `unit` x `unit` cells (an
    /// encoder's patches): the raster, the tile and a blended overlap are counted in cells,
    /// the raster rounded up to whole cells.
    pub fn in_units(
        width: usize,
        height: usize,
        tile: usize,
        tiling: Tiling,
        unit: usize,
    ) -> Result<Self, GridError> {
        let u = unit.max(1);
        let tiling = match tiling {
            Tiling::Blended { overlap } => Tiling::Blended {
                overlap: overlap / u,
            },
            other @ Tiling::Reference { .. } => other,
        };
        Self::new(width.div_ceil(u), height.div_ceil(u), tile / u, tiling)
    }

    /// Tile edge length in pixels.
    #[must_use]
    pub fn tile_size(&self) -> usize {
        self.tile
    }

    /// The tiling scheme.
    #[must_use]
    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    /// Number of tiles.
    #[must_use]
    pub fn len(&self) -> usize {
        self.xs.len() * self.ys.len()
    }

    /// True when the grid has no tiles (never for a non-empty raster).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of rows of tiles.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.ys.len()
    }

    /// Number of columns of tiles.
    #[must_use]
    pub fn cols(&self) -> usize {
        self.xs.len()
    }

    /// All tiles in row-major order.
    pub fn tiles(&self) -> impl Iterator<Item = Tile> + '_ {
        self.ys.iter().enumerate().flat_map(move |(row, &y)| {
            self.xs.iter().enumerate().map(move |(col, &x)| Tile {
                id: row * self.xs.len() + col,
                row,
                col,
                window: Window {
                    x,
                    y,
                    width: self.tile,
                    height: self.tile,
                },
            })
        })
    }

    /// Scene rows that are final once every tile of tile row `row` has been blended:
    /// all rows above the next tile row's top edge.
    #[must_use]
    pub fn rows_final_after(&self, row: usize) -> usize {
        match self.ys.get(row + 1) {
            Some(&next) => next.clamp(0, self.height as i64) as usize,
            None => self.height,
        }
    }

    /// Top scene row of tile row `r` clamped to the scene; 0 for the first row and the
    /// scene height past the last.
    #[must_use]
    pub fn row_top(&self, r: usize) -> usize {
        edge(&self.ys, self.height, r)
    }

    /// Left scene column of tile column `c` clamped to the scene; 0 for the first column
    /// and the scene width past the last.
    #[must_use]
    pub fn col_left(&self, c: usize) -> usize {
        edge(&self.xs, self.width, c)
    }

    /// The tile columns of a panel about `width` units wide: every column starting less
    /// than `width` after the first one (at least one).
    #[must_use]
    pub fn cols_for_width(&self, width: usize) -> usize {
        let x0 = self.xs[0];
        self.xs
            .iter()
            .filter(|&&x| x - x0 < width as i64)
            .count()
            .max(1)
    }

    /// The grid cut into blocks of `tile_rows` tile rows and `panel_cols` tile columns
    /// each: the unit of sharding and of resuming. Blocks are numbered panel by panel
    /// (column panels left to right, each top to bottom), so a run of consecutive blocks
    /// is a strip of one panel and memory follows the panel's width, not the scene's.
    /// Block `k` owns the scene rows from its first tile row's top to the next block's
    /// (and the columns likewise); a block that would own no row or column is joined to
    /// the one before.
    ///
    /// ```
    /// use eoinfer::grid::{TileGrid, Tiling};
    /// let grid = TileGrid::new(600, 1000, 256, Tiling::Blended { overlap: 32 }).unwrap();
    /// let blocks = grid.blocks(2, usize::MAX);
    /// assert_eq!(blocks.len(), 3);
    /// assert_eq!((blocks[0].rows, blocks[1].rows, blocks[2].rows), ((0, 448), (448, 744), (744, 1000)));
    /// // Panels of 2 tile columns (tiles at x 0, 224, 344): columns 0..344 and 344..600.
    /// let panels = grid.blocks(2, 2);
    /// assert_eq!(panels.len(), 6);
    /// assert_eq!((panels[2].cols, panels[3].cols, panels[3].rows), ((0, 344), (344, 600), (0, 448)));
    /// ```
    #[must_use]
    pub fn blocks(&self, tile_rows: usize, panel_cols: usize) -> Vec<Block> {
        let rows = groups(&self.ys, self.height, tile_rows);
        let cols = groups(&self.xs, self.width, panel_cols);
        let mut out = Vec::with_capacity(rows.len() * cols.len());
        for (panel, &(tile_cols, cols)) in cols.iter().enumerate() {
            for &(tile_rows, rows) in &rows {
                out.push(Block {
                    index: out.len(),
                    panel,
                    tile_rows,
                    rows,
                    tile_cols,
                    cols,
                });
            }
        }
        out
    }

    /// The first tile row a block starting at tile row `r0` must also run (its halo): every
    /// tile row above `r0` whose tiles reach into the block's rows. Blending those tiles
    /// too makes the block's pixels equal to a run of the whole grid.
    #[must_use]
    pub fn halo_start(&self, r0: usize) -> usize {
        halo(&self.ys, self.height, self.tile, r0)
    }

    /// The first tile column a panel starting at tile column `c0` must also run: every
    /// tile column left of `c0` whose tiles reach into the panel's columns.
    #[must_use]
    pub fn halo_col_start(&self, c0: usize) -> usize {
        halo(&self.xs, self.width, self.tile, c0)
    }

    /// The blending weight of each tile pixel, row-major, `tile * tile` values.
    #[must_use]
    pub fn weights(&self) -> Vec<f32> {
        let w1 = match self.tiling {
            Tiling::Blended { .. } => sine_window(self.tile),
            Tiling::Reference { fraction } => tukey_window(self.tile, 2.0 * fraction),
        };
        let mut w = Vec::with_capacity(self.tile * self.tile);
        for wy in &w1 {
            for wx in &w1 {
                w.push((wy * wx) as f32);
            }
        }
        w
    }
}

/// A rectangle of whole tile rows and columns of a [`TileGrid`]: the unit of work that shards share out and
/// the journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Block {
    /// Index of the block: panel by panel, top to bottom within a panel.
    pub index: usize,
    /// Index of its column panel, left to right.
    pub panel: usize,
    /// Tile rows `[first, end)` of the block.
    pub tile_rows: (usize, usize),
    /// Scene rows `[first, end)` the block writes.
    pub rows: (usize, usize),
    /// Tile columns `[first, end)` of its panel.
    pub tile_cols: (usize, usize),
    /// Scene columns `[first, end)` the block writes.
    pub cols: (usize, usize),
}

/// The blocks shard `index` of `count` runs: an even, contiguous share of `blocks` blocks.
///
/// ```
/// let shares: Vec<_> = (0..3).map(|i| eoinfer::grid::shard_blocks(4, i, 3)).collect();
/// assert_eq!(shares, [0..1, 1..2, 2..4]);
/// ```
#[must_use]
pub fn shard_blocks(blocks: usize, index: usize, count: usize) -> std::ops::Range<usize> {
    let count = count.max(1);
    (index * blocks / count)..((index + 1) * blocks / count)
}

/// Start of tile `i` along an axis clamped to `[0, len]`: 0 for the first tile, `len` past
/// the last.
fn edge(ps: &[i64], len: usize, i: usize) -> usize {
    if i == 0 {
        0
    } else {
        ps.get(i).map_or(len, |&p| p.clamp(0, len as i64) as usize)
    }
}

/// The first tile along an axis before `i0` whose extent reaches past tile `i0`'s start.
fn halo(ps: &[i64], len: usize, tile: usize, i0: usize) -> usize {
    let start = edge(ps, len, i0) as i64;
    (0..i0).find(|&i| ps[i] + tile as i64 > start).unwrap_or(i0)
}

/// Tiles along an axis in groups of `k`: per group its tiles `[first, end)` and the pixels
/// `[first, end)` it owns (from its first tile's start to the next group's); a group that
/// would own no pixel is joined to the one before (or, first, to the next).
fn groups(ps: &[i64], len: usize, k: usize) -> Vec<((usize, usize), (usize, usize))> {
    let k = k.max(1);
    let n = ps.len();
    let mut out: Vec<((usize, usize), (usize, usize))> = Vec::new();
    let mut start = 0;
    let mut i0 = 0;
    while i0 < n {
        let i1 = i0.saturating_add(k).min(n);
        let own = (edge(ps, len, start), edge(ps, len, i1));
        match out.last_mut() {
            Some(prev) if own.1 <= own.0 => {
                prev.0.1 = i1;
                start = i1;
            }
            None if own.1 <= own.0 && i1 < n => {}
            _ => {
                out.push(((start, i1), own));
                start = i1;
            }
        }
        i0 = i1;
    }
    out
}

/// Tile origins along one axis: stride `tile - overlap`, the last tile shifted inward so it
/// ends at the raster edge; one tile at 0 when the axis is shorter than a tile.
fn blended_positions(len: usize, tile: usize, overlap: usize) -> Vec<i64> {
    let mut out = vec![0_i64];
    if len <= tile {
        return out;
    }
    let stride = tile - overlap;
    let last = len - tile;
    let mut pos = 0;
    while pos < last {
        pos = (pos + stride).min(last);
        out.push(pos as i64);
    }
    out
}

/// Tile origins of ukis-csmask's `tile_array` along one axis, in unpadded coordinates.
fn reference_positions(len: usize, tile: usize, fraction: f64) -> Vec<i64> {
    let before = (tile as f64 * fraction) as usize;
    let after = tile + 1 + before;
    let stride = ((tile as f64 - tile as f64 * fraction) as usize).max(1);
    let padded = len + before + after;
    let n = (padded - tile) / stride + 1;
    (0..n)
        .map(|k| (k * stride) as i64 - before as i64)
        .collect()
}

/// The blended scheme's 2-D weight window for a `n` x `n` tile (row-major).
#[must_use]
pub fn sine_weights(n: usize) -> Vec<f32> {
    let w1 = sine_window(n);
    w1.iter()
        .flat_map(|wy| w1.iter().map(move |wx| (wy * wx) as f32))
        .collect()
}

/// A sine window, positive at every index, so every pixel of a tile counts.
fn sine_window(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (std::f64::consts::PI * (i as f64 + 0.5) / n as f64).sin())
        .collect()
}

/// `scipy.signal.windows.tukey(n, alpha, sym=True)`, value for value.
fn tukey_window(n: usize, alpha: f64) -> Vec<f64> {
    if alpha <= 0.0 {
        return vec![1.0; n];
    }
    if n <= 1 {
        return vec![1.0; n];
    }
    let m1 = (n - 1) as f64;
    if alpha >= 1.0 {
        return (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / m1).cos())
            .collect();
    }
    let width = (alpha * m1 / 2.0).floor() as usize;
    (0..n)
        .map(|i| {
            let x = i as f64;
            if i <= width {
                0.5 * (1.0 + (std::f64::consts::PI * (-1.0 + 2.0 * x / alpha / m1)).cos())
            } else if i < n - width - 1 {
                1.0
            } else {
                0.5 * (1.0
                    + (std::f64::consts::PI * (-2.0 / alpha + 1.0 + 2.0 * x / alpha / m1)).cos())
            }
        })
        .collect()
}

/// Maps a coordinate outside `[0, len)` back inside by symmetric reflection
/// (numpy's `mode="symmetric"`: the edge pixel is repeated).
#[must_use]
pub fn reflect(i: i64, len: usize) -> usize {
    let n = len as i64;
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_tiles_are_shifted_inward_so_every_tile_is_full() {
        assert_eq!(blended_positions(600, 256, 32), vec![0, 224, 344]);
        assert_eq!(blended_positions(256, 256, 32), vec![0]);
        assert_eq!(blended_positions(100, 256, 32), vec![0]);
    }

    #[test]
    fn reference_positions_match_ukis_csmask_tile_array() {
        // numpy: pad 51 before, 308 after; rolling window of 256 with step 204.
        // 512 + 359 = 871 padded px -> (871 - 256) // 204 + 1 = 4 tiles.
        assert_eq!(reference_positions(512, 256, 0.2), vec![-51, 153, 357, 561]);
        assert_eq!(reference_positions(256, 256, 0.2), vec![-51, 153]);
    }

    #[test]
    fn tukey_matches_scipy() {
        // scipy.signal.windows.tukey(10, 0.4)
        let w = tukey_window(10, 0.4);
        let expected = [
            0.0,
            0.586_824_088_833_465_3,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            0.586_824_088_833_464_9,
            0.0,
        ];
        for (a, b) in w.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{w:?}");
        }
        let w = tukey_window(256, 0.4);
        assert!((w[51] - 1.0).abs() < 1e-12);
        assert!(w[50] < 1.0);
        assert_eq!(w[0], 0.0);
    }

    #[test]
    fn reflect_repeats_the_edge_pixel_like_numpy_symmetric() {
        let got: Vec<usize> = (-4..8).map(|i| reflect(i, 3)).collect();
        // np.pad([0, 1, 2], 4, mode="symmetric") == [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
        assert_eq!(got, vec![2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1]);
    }

    #[test]
    fn rows_become_final_at_the_next_tile_rows_top() {
        let g = TileGrid::new(600, 600, 256, Tiling::Blended { overlap: 32 }).expect("grid");
        assert_eq!(g.rows_final_after(0), 224);
        assert_eq!(g.rows_final_after(1), 344);
        assert_eq!(g.rows_final_after(2), 600);
    }

    #[test]
    fn overlap_not_smaller_than_tile_is_an_error() {
        assert_eq!(
            TileGrid::new(600, 600, 256, Tiling::Blended { overlap: 256 }),
            Err(GridError::OverlapTooLarge {
                overlap: 256,
                tile: 256
            })
        );
    }

    #[test]
    fn halo_reaches_the_tile_rows_that_overlap_a_block() {
        let g = TileGrid::new(600, 1000, 256, Tiling::Blended { overlap: 32 }).expect("grid");
        // Tile rows start at 0, 224, 448, 672, 744.
        assert_eq!(g.halo_start(0), 0);
        assert_eq!(g.halo_start(2), 1);
        // Tile row 3 (672..928) reaches into block rows from 744; tile row 2 ends at 704.
        assert_eq!(g.halo_start(4), 3);
    }

    proptest! {
        #[test]
        fn every_pixel_is_covered(len in 1usize..3000, tile in 1usize..400, ov in 0usize..400) {
            prop_assume!(ov < tile);
            let xs = blended_positions(len, tile, ov);
            let mut covered = vec![false; len];
            for &x in &xs {
                prop_assert!(x >= 0);
                prop_assert!(len <= tile || x as usize + tile <= len, "tile leaves the raster");
                for c in covered.iter_mut().skip(x as usize).take(tile) { *c = true; }
            }
            prop_assert!(covered.iter().all(|&c| c));
            prop_assert!(xs.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn reference_grid_covers_every_pixel_with_positive_weight(len in 1usize..2000) {
            let xs = reference_positions(len, 256, 0.2);
            let w = tukey_window(256, 0.4);
            for p in 0..len as i64 {
                let total: f64 = xs.iter().filter(|&&x| x <= p && p < x + 256).map(|&x| w[(p - x) as usize]).sum();
                prop_assert!(total > 0.0, "pixel {} uncovered", p);
            }
        }

        #[test]
        fn blocks_own_every_row_once_and_shards_every_block_once(
            len in 1usize..3000, ov in 0usize..200, k in 1usize..6, n in 1usize..9, reference in any::<bool>()
        ) {
            let tiling = if reference { Tiling::Reference { fraction: [0.2, 0.5][k % 2] } } else { Tiling::Blended { overlap: ov } };
            let g = TileGrid::new(300, len, 256, tiling).expect("grid");
            let blocks = g.blocks(k, usize::MAX);
            prop_assert_eq!(blocks[0].rows.0, 0);
            prop_assert!(blocks.iter().all(|b| b.rows.0 < b.rows.1));
            prop_assert_eq!(blocks.last().expect("a block").rows.1, len);
            prop_assert_eq!(blocks.last().expect("a block").tile_rows.1, g.rows());
            for w in blocks.windows(2) {
                prop_assert_eq!(w[0].rows.1, w[1].rows.0);
                prop_assert_eq!(w[0].tile_rows.1, w[1].tile_rows.0);
                prop_assert!(w[0].rows.0 < w[0].rows.1);
            }
            for b in &blocks {
                // Tile rows from the halo on cover every tile touching the block's rows.
                let h = g.halo_start(b.tile_rows.0);
                for r in 0..g.rows() {
                    let top = g.ys[r];
                    let touches = top < b.rows.1 as i64 && top + 256 > b.rows.0 as i64;
                    prop_assert!(!touches || (h..b.tile_rows.1).contains(&r) || r >= b.tile_rows.1 && top >= b.rows.1 as i64);
                }
            }
            let mut seen = vec![0; blocks.len()];
            for i in 0..n {
                for b in shard_blocks(blocks.len(), i, n) { seen[b] += 1; }
            }
            prop_assert!(seen.iter().all(|&c| c == 1));
        }

        #[test]
        fn panels_own_every_pixel_once_and_their_halo_covers_every_tile_reaching_in(
            width in 1usize..2500, height in 1usize..900, ov in 0usize..200, k in 1usize..4, p in 1usize..6, reference in any::<bool>()
        ) {
            let tiling = if reference { Tiling::Reference { fraction: 0.2 } } else { Tiling::Blended { overlap: ov } };
            let g = TileGrid::new(width, height, 256, tiling).expect("grid");
            let blocks = g.blocks(k, p);
            let mut owned = vec![0u8; width * height];
            for (i, b) in blocks.iter().enumerate() {
                prop_assert_eq!(b.index, i);
                prop_assert!(b.cols.0 < b.cols.1 && b.rows.0 < b.rows.1);
                for y in b.rows.0..b.rows.1 {
                    for x in b.cols.0..b.cols.1 {
                        owned[y * width + x] += 1;
                    }
                }
                let h = g.halo_col_start(b.tile_cols.0);
                for (c, &left) in g.xs.iter().enumerate() {
                    let touches = left < b.cols.1 as i64 && left + 256 > b.cols.0 as i64;
                    prop_assert!(!touches || (h..b.tile_cols.1).contains(&c));
                }
            }
            prop_assert!(owned.iter().all(|&n| n == 1));
            // Blocks of one panel are consecutive and top to bottom.
            for w in blocks.windows(2) {
                prop_assert!(w[0].panel == w[1].panel && w[0].rows.1 == w[1].rows.0 || w[0].panel + 1 == w[1].panel && w[1].rows.0 == 0);
            }
        }

        #[test]
        fn sine_weights_are_positive(n in 1usize..600) {
            prop_assert!(sine_window(n).iter().all(|&w| w > 0.0));
        }

        #[test]
        fn reflect_lands_inside(i in -5000i64..5000, len in 1usize..300) {
            prop_assert!(reflect(i, len) < len);
        }
    }
}
