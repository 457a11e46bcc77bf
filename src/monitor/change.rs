//! Per-pixel change of a class map against each pixel's previous valid observation.
//!
//! For a date's class map (on the regions' grid) the earlier dates' maps of the same model are
//! read newest first, and each pixel takes the class of the newest one in which it was valid
//! (not nodata, not called cloud or shadow by the model's mask). A pixel valid now and with
//! such a previous class is compared: the change map holds `from * 100 + to` where the class
//! changed, 0 where it did not, and [`NOT_COMPARED`] elsewhere. Per region, the comparison is
//! summarised as a transition matrix (pixels from class i to class j, the diagonal unchanged),
//! from which the rules read class transitions and class-fraction changes. Everything is read
//! and written in blocks of rows: memory stays bounded on any grid.

use crate::error::MonitorError;
use crate::output::quicklook;
use gdal::raster::{Buffer, RasterizeOptions, rasterize};
use gdal::vector::{FieldDefn, Geometry, LayerAccess, LayerOptions, OGRFieldType};
use gdal::{Dataset, DriverManager, Metadata as _};
use std::path::{Path, PathBuf};

/// Change-map value of a pixel that was not compared: not valid now, or no valid earlier
/// observation within the look-back.
pub const NOT_COMPARED: u16 = u16::MAX;
const NONE: u8 = crate::blend::CLASS_NODATA;
const BLOCK_ROWS: usize = 256;

/// A class map of one date, and the mask model's map of the same date with the class values
/// it masks.
#[derive(Debug, Clone)]
pub struct Map {
    /// Date `YYYY-MM-DD`.
    pub date: String,
    /// The class map.
    pub classes: PathBuf,
    /// The mask model's class map and the values that mask a pixel.
    pub mask: Option<(PathBuf, Vec<u8>)>,
}

/// One region's comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionChange {
    /// Pixels compared (valid now and before).
    pub compared: u64,
    /// Transition counts, `from * n + to` (the diagonal: unchanged).
    pub matrix: Vec<u64>,
}

impl RegionChange {
    /// Pixels whose class changed from one of `from` to one of `to` (empty: any).
    #[must_use]
    pub fn transitions(&self, n: usize, from: &[usize], to: &[usize]) -> u64 {
        let mut sum = 0;
        for f in 0..n {
            for t in 0..n {
                if f != t
                    && (from.is_empty() || from.contains(&f))
                    && (to.is_empty() || to.contains(&t))
                {
                    sum += self.matrix.get(f * n + t).copied().unwrap_or(0);
                }
            }
        }
        sum
    }

    /// The change of class `c`'s share among the compared pixels (now minus before).
    #[must_use]
    pub fn fraction_change(&self, n: usize, c: usize) -> f64 {
        if self.compared == 0 {
            return 0.0;
        }
        let into: u64 = (0..n)
            .filter(|&f| f != c)
            .map(|f| self.matrix[f * n + c])
            .sum();
        let out: u64 = (0..n)
            .filter(|&t| t != c)
            .map(|t| self.matrix[c * n + t])
            .sum();
        (into as f64 - out as f64) / self.compared as f64
    }
}

/// A date's comparison.
#[derive(Debug, Clone)]
pub struct Detected {
    /// Class names of the map.
    pub classes: Vec<String>,
    /// Per region, in the order given.
    pub regions: Vec<RegionChange>,
    /// The earlier dates that supplied a previous class to some pixel.
    pub dates_used: Vec<String>,
    /// Earlier dates left out because their map is on another grid.
    pub skipped: Vec<String>,
}

/// The change-map value of a compared pixel.
#[must_use]
pub fn code(from: u8, to: u8) -> u16 {
    if from == to {
        0
    } else {
        u16::from(from) * 100 + u16::from(to)
    }
}

/// Whether each pixel of a class block is valid: a class, and not masked.
#[must_use]
pub fn valid_pixels(classes: &[u8], mask: Option<&[u8]>, masked: &[u8]) -> Vec<bool> {
    classes
        .iter()
        .enumerate()
        .map(|(i, &c)| c != NONE && mask.is_none_or(|m| m[i] != NONE && !masked.contains(&m[i])))
        .collect()
}

/// Fills the pixels of `previous` that have no class yet from an earlier map where that map is
/// valid; whether any pixel is still without one.
pub fn fill_previous(previous: &mut [u8], earlier: &[u8], earlier_ok: &[bool]) -> bool {
    let mut left = false;
    for ((p, &e), &ok) in previous.iter_mut().zip(earlier).zip(earlier_ok) {
        if *p == NONE {
            if ok {
                *p = e;
            } else {
                left = true;
            }
        }
    }
    left
}

pub(super) fn cerr(path: &Path, what: impl std::fmt::Display) -> MonitorError {
    MonitorError::Change {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

pub(super) struct Grid {
    pub(super) size: (usize, usize),
    pub(super) gt: [f64; 6],
    pub(super) wkt: String,
}

pub(super) fn grid_of(ds: &Dataset, path: &Path) -> Result<Grid, MonitorError> {
    Ok(Grid {
        size: ds.raster_size(),
        gt: ds.geo_transform().map_err(|e| cerr(path, e))?,
        wkt: ds.projection(),
    })
}

impl Grid {
    pub(super) fn same(&self, o: &Self) -> bool {
        let tol = self.gt[1].abs() * 1e-6;
        self.size == o.size
            && self.wkt == o.wkt
            && self.gt.iter().zip(&o.gt).all(|(a, b)| (a - b).abs() <= tol)
    }
}

/// A class map opened for reading blocks, with its mask.
struct Opened {
    date: String,
    ds: Dataset,
    path: PathBuf,
    mask: Option<(Dataset, PathBuf, Vec<u8>)>,
}

impl Opened {
    fn open(m: &Map) -> Result<Self, MonitorError> {
        let ds = Dataset::open(&m.classes).map_err(|e| cerr(&m.classes, e))?;
        let mask = match &m.mask {
            Some((p, values)) => Some((
                Dataset::open(p).map_err(|e| cerr(p, e))?,
                p.clone(),
                values.clone(),
            )),
            None => None,
        };
        Ok(Self {
            date: m.date.clone(),
            ds,
            path: m.classes.clone(),
            mask,
        })
    }

    fn read(
        ds: &Dataset,
        path: &Path,
        y: usize,
        (w, h): (usize, usize),
    ) -> Result<Vec<u8>, MonitorError> {
        Ok(ds
            .rasterband(1)
            .and_then(|b| b.read_as::<u8>((0, y as isize), (w, h), (w, h), None))
            .map_err(|e| cerr(path, e))?
            .data()
            .to_vec())
    }

    /// The block's classes and which pixels are valid.
    fn block(&self, y: usize, size: (usize, usize)) -> Result<(Vec<u8>, Vec<bool>), MonitorError> {
        let classes = Self::read(&self.ds, &self.path, y, size)?;
        let ok = match &self.mask {
            Some((ds, p, values)) => {
                let m = Self::read(ds, p, y, size)?;
                valid_pixels(&classes, Some(&m), values)
            }
            None => valid_pixels(&classes, None, &[]),
        };
        Ok((classes, ok))
    }
}

/// A region's pixel window on the grid: (x0, y0, width, height), None if outside.
pub(super) fn window(
    g: &Geometry,
    gt: &[f64; 6],
    (w, h): (usize, usize),
) -> Option<(usize, usize, usize, usize)> {
    let env = g.envelope();
    let x0 = (((env.MinX - gt[0]) / gt[1]).floor() as i64 - 1).max(0);
    let x1 = (((env.MaxX - gt[0]) / gt[1]).ceil() as i64 + 1).min(w as i64);
    let (ya, yb) = ((env.MaxY - gt[3]) / gt[5], (env.MinY - gt[3]) / gt[5]);
    let y0 = (ya.min(yb).floor() as i64 - 1).max(0);
    let y1 = (ya.max(yb).ceil() as i64 + 1).min(h as i64);
    (x1 > x0 && y1 > y0).then(|| {
        (
            x0 as usize,
            y0 as usize,
            (x1 - x0) as usize,
            (y1 - y0) as usize,
        )
    })
}

/// The region's pixels (1 inside) over `rows` rows from `y` of its window.
pub(super) fn burn(
    g: &Geometry,
    gt: &[f64; 6],
    (x0, w): (usize, usize),
    (y, rows): (usize, usize),
    path: &Path,
) -> Result<Vec<u8>, MonitorError> {
    let mem = DriverManager::get_driver_by_name("MEM").map_err(|e| cerr(path, e))?;
    let mut ds = mem
        .create_with_band_type::<u8, _>("", w, rows, 1)
        .map_err(|e| cerr(path, e))?;
    ds.set_geo_transform(&[
        gt[0] + x0 as f64 * gt[1],
        gt[1],
        0.0,
        gt[3] + y as f64 * gt[5],
        0.0,
        gt[5],
    ])
    .map_err(|e| cerr(path, e))?;
    rasterize(
        &mut ds,
        &[1],
        std::slice::from_ref(g),
        &[1.0],
        Some(RasterizeOptions::default()),
    )
    .map_err(|e| cerr(path, e))?;
    Ok(ds
        .rasterband(1)
        .and_then(|b| b.read_as::<u8>((0, 0), (w, rows), (w, rows), None))
        .map_err(|e| cerr(path, e))?
        .data()
        .to_vec())
}

/// The earlier maps that compare with a map on `grid` of `classes` (their masks on it too),
/// and the dates left out.
fn open_earlier(
    earlier: &[Map],
    grid: &Grid,
    classes: &[String],
) -> Result<(Vec<Opened>, Vec<String>), MonitorError> {
    let mut before = Vec::new();
    let mut skipped = Vec::new();
    for m in earlier {
        let o = Opened::open(m)?;
        let mask_ok = match &o.mask {
            Some((mds, mp, _)) => grid_of(mds, mp)?.same(grid),
            None => true,
        };
        // Class ids compare only between maps of the same classes: a map the model wrote
        // with other classes (its manifest changed) is not compared, never mixed.
        let same_classes =
            o.ds.rasterband(1)
                .is_ok_and(|b| crate::output::vectors::category_names(&b) == classes);
        if grid_of(&o.ds, &o.path)?.same(grid) && mask_ok && same_classes {
            before.push(o);
        } else {
            tracing::warn!(
                date = %m.date,
                "{} is on another grid or has other classes: not used for change",
                m.classes.display()
            );
            skipped.push(m.date.clone());
        }
    }
    Ok((before, skipped))
}

/// Compares `current` with the `earlier` maps (newest first) and writes the change map
/// (`change_tif`, UInt16) and the previous-valid class map (`previous_tif`, with the class
/// names and colours) as COGs; per region (WKB in the grid's CRS) the transition counts.
pub fn detect(
    current: &Map,
    earlier: &[Map],
    regions: &[Vec<u8>],
    change_tif: &Path,
    previous_tif: &Path,
) -> Result<Detected, crate::Error> {
    let cur = Opened::open(current)?;
    let grid = grid_of(&cur.ds, &cur.path)?;
    if let Some((mds, mp, _)) = &cur.mask {
        if !grid_of(mds, mp)?.same(&grid) {
            return Err(cerr(
                mp,
                format!(
                    "the mask is on another grid than {}; give the model and its mask the same `resolution`",
                    cur.path.display()
                ),
            )
            .into());
        }
    }
    let band = cur.ds.rasterband(1).map_err(|e| cerr(&cur.path, e))?;
    let classes = crate::output::vectors::category_names(&band);
    let n = classes.len();
    let palette = quicklook::palette_of(&cur.ds);
    let (before, skipped) = open_earlier(earlier, &grid, &classes)?;
    let geoms: Vec<Geometry> = regions
        .iter()
        .map(|w| Geometry::from_wkb(w).map_err(|e| cerr(&cur.path, e)))
        .collect::<Result<_, _>>()?;
    let windows: Vec<_> = geoms
        .iter()
        .map(|g| window(g, &grid.gt, grid.size))
        .collect();
    let mut per_region = vec![
        RegionChange {
            compared: 0,
            matrix: vec![0; n * n],
        };
        geoms.len()
    ];
    let (w, h) = grid.size;
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
    {
        let change_ds = crate::output::raster::staging_dataset_with::<u16>(
            &change_stage,
            (w, h, 1),
            &grid.gt,
            &grid.wkt,
            &creation,
        )?;
        let previous_ds = crate::output::raster::staging_dataset_with::<u8>(
            &previous_stage,
            (w, h, 1),
            &grid.gt,
            &grid.wkt,
            &creation,
        )?;
        let mut y = 0;
        while y < h {
            let rows = BLOCK_ROWS.min(h - y);
            let (now, ok) = cur.block(y, (w, rows))?;
            let mut prev = vec![NONE; w * rows];
            for (k, o) in before.iter().enumerate() {
                let (c, c_ok) = o.block(y, (w, rows))?;
                let had: usize = prev.iter().filter(|&&p| p == NONE).count();
                let left = fill_previous(&mut prev, &c, &c_ok);
                used[k] |= prev.iter().filter(|&&p| p == NONE).count() < had;
                if !left {
                    break;
                }
            }
            let codes: Vec<u16> = (0..w * rows)
                .map(|i| {
                    if ok[i] && prev[i] != NONE {
                        code(prev[i], now[i])
                    } else {
                        NOT_COMPARED
                    }
                })
                .collect();
            change_ds
                .rasterband(1)
                .and_then(|mut b| {
                    b.write(
                        (0, y as isize),
                        (w, rows),
                        &mut Buffer::new((w, rows), codes.clone()),
                    )
                })
                .map_err(|e| cerr(&change_stage, e))?;
            previous_ds
                .rasterband(1)
                .and_then(|mut b| {
                    b.write(
                        (0, y as isize),
                        (w, rows),
                        &mut Buffer::new((w, rows), prev.clone()),
                    )
                })
                .map_err(|e| cerr(&previous_stage, e))?;
            let block = Block {
                y,
                rows,
                width: w,
                codes: &codes,
                previous: &prev,
                now: &now,
            };
            for (r, win) in windows.iter().enumerate() {
                if let Some(win) = win {
                    block.count(&geoms[r], &grid.gt, *win, &mut per_region[r], &cur.path)?;
                }
            }
            y += rows;
        }
        describe(&change_ds, &previous_ds, &classes, &palette, &change_stage)?;
    }
    for (stage, target) in [(&change_stage, change_tif), (&previous_stage, previous_tif)] {
        publish(stage, target, crate::output::raster::RasterKind::Classes)?;
    }
    drop(stages);
    Ok(Detected {
        classes,
        regions: per_region,
        dates_used: before
            .iter()
            .zip(&used)
            .filter(|(_, u)| **u)
            .map(|(o, _)| o.date.clone())
            .collect(),
        skipped,
    })
}

/// Copies a staged map to a COG at `target` (a temporary name, renamed when complete).
pub(super) fn publish(
    stage: &Path,
    target: &Path,
    kind: crate::output::raster::RasterKind,
) -> Result<(), crate::Error> {
    let src = Dataset::open(stage).map_err(|e| cerr(stage, e))?;
    let part = crate::util::partial_name(target);
    crate::output::raster::cog_copy(&src, kind, &part)?;
    // The category names travel in the sidecar GDAL writes beside the copy: renamed first.
    let aux = crate::output::raster::aux_path(&part);
    if aux.exists() {
        std::fs::rename(&aux, crate::output::raster::aux_path(target))
            .map_err(|e| cerr(target, e))?;
    }
    std::fs::rename(&part, target).map_err(|e| cerr(target, e))?;
    Ok(())
}

/// One block of rows of the comparison.
struct Block<'a> {
    y: usize,
    rows: usize,
    width: usize,
    codes: &'a [u16],
    previous: &'a [u8],
    now: &'a [u8],
}

impl Block<'_> {
    /// Adds the compared pixels of the block inside a region (its window on the grid) to the
    /// region's transition counts.
    fn count(
        &self,
        g: &Geometry,
        gt: &[f64; 6],
        (x0, wy0, ww, wh): (usize, usize, usize, usize),
        acc: &mut RegionChange,
        path: &Path,
    ) -> Result<(), MonitorError> {
        let (a, b) = (self.y.max(wy0), (self.y + self.rows).min(wy0 + wh));
        if a >= b {
            return Ok(());
        }
        let n = (acc.matrix.len() as f64).sqrt().round() as usize;
        let inside = burn(g, gt, (x0, ww), (a, b - a), path)?;
        for (k, &m) in inside.iter().enumerate() {
            let i = (a - self.y + k / ww) * self.width + x0 + k % ww;
            if m == 0 || self.codes[i] == NOT_COMPARED {
                continue;
            }
            let (f, t) = (usize::from(self.previous[i]), usize::from(self.now[i]));
            if f < n && t < n {
                acc.compared += 1;
                acc.matrix[f * n + t] += 1;
            }
        }
        Ok(())
    }
}

/// Staging files removed when dropped (done or failed).
pub(super) struct Stages(pub(super) Vec<PathBuf>);

impl Drop for Stages {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(crate::output::raster::aux_path(p));
        }
    }
}

/// Nodata, descriptions, class names and colours of the two staged maps.
fn describe(
    change: &Dataset,
    previous: &Dataset,
    classes: &[String],
    palette: &quicklook::Palette,
    path: &Path,
) -> Result<(), MonitorError> {
    let e = |x: gdal::errors::GdalError| cerr(path, x);
    let mut b = change.rasterband(1).map_err(e)?;
    b.set_no_data_value(Some(f64::from(NOT_COMPARED)))
        .map_err(e)?;
    b.set_description("class change: from * 100 + to (0 = unchanged)")
        .map_err(e)?;
    for (i, c) in classes.iter().enumerate() {
        b.set_metadata_item(&format!("CLASS_{i}"), c, "")
            .map_err(e)?;
    }
    let mut p = previous.rasterband(1).map_err(e)?;
    p.set_no_data_value(Some(f64::from(NONE))).map_err(e)?;
    p.set_description("previous valid class").map_err(e)?;
    let mut ct = gdal::raster::ColorTable::new(gdal::raster::PaletteInterpretation::Rgba);
    for (i, c) in palette.iter().enumerate() {
        ct.set_color_entry(
            i as u16,
            &gdal::raster::ColorEntry::rgba(
                i16::from(c[0]),
                i16::from(c[1]),
                i16::from(c[2]),
                i16::from(c[3]),
            ),
        );
    }
    p.set_color_table(&ct);
    let mut names = gdal::cpl::CslStringList::new();
    for c in classes {
        names.add_string(c).map_err(e)?;
    }
    let rv = unsafe { gdal_sys::GDALSetRasterCategoryNames(p.c_rasterband(), names.as_ptr()) };
    if rv != gdal_sys::CPLErr::CE_None {
        return Err(cerr(path, "cannot set the category names"));
    }
    Ok(())
}

/// The pixels of a region (WKB in the map's CRS) in a change map whose code `hit` accepts:
/// their outline as a MultiPolygon (WKB), None when there are none.
pub fn changed_area(
    change_tif: &Path,
    region: &[u8],
    hit: &dyn Fn(u16) -> bool,
) -> Result<Option<Vec<u8>>, crate::Error> {
    let ds = Dataset::open(change_tif).map_err(|e| cerr(change_tif, e))?;
    let grid = grid_of(&ds, change_tif)?;
    let g = Geometry::from_wkb(region).map_err(|e| cerr(change_tif, e))?;
    let Some((x0, y0, ww, wh)) = window(&g, &grid.gt, grid.size) else {
        return Ok(None);
    };
    let codes = ds
        .rasterband(1)
        .and_then(|b| b.read_as::<u16>((x0 as isize, y0 as isize), (ww, wh), (ww, wh), None))
        .map_err(|e| cerr(change_tif, e))?
        .data()
        .to_vec();
    let inside = burn(&g, &grid.gt, (x0, ww), (y0, wh), change_tif)?;
    let marks: Vec<u8> = codes
        .iter()
        .zip(&inside)
        .map(|(&c, &m)| u8::from(m != 0 && c != NOT_COMPARED && hit(c)))
        .collect();
    polygonize_marks(marks, (x0, y0, ww, wh), &grid.gt, change_tif)
}

/// The outline of the pixels marked 1 in a window `(x0, y0, width, height)` of a grid as a
/// MultiPolygon (WKB), None when none is marked.
pub(super) fn polygonize_marks(
    marks: Vec<u8>,
    (x0, y0, ww, wh): (usize, usize, usize, usize),
    gt: &[f64; 6],
    change_tif: &Path,
) -> Result<Option<Vec<u8>>, crate::Error> {
    if !marks.contains(&1) {
        return Ok(None);
    }
    let grid = Grid {
        size: (0, 0),
        gt: *gt,
        wkt: String::new(),
    };
    let e = |x: gdal::errors::GdalError| cerr(change_tif, x);
    let mem = DriverManager::get_driver_by_name("MEM").map_err(e)?;
    let mut mds = mem
        .create_with_band_type::<u8, _>("", ww, wh, 1)
        .map_err(e)?;
    mds.set_geo_transform(&[
        grid.gt[0] + x0 as f64 * grid.gt[1],
        grid.gt[1],
        0.0,
        grid.gt[3] + y0 as f64 * grid.gt[5],
        0.0,
        grid.gt[5],
    ])
    .map_err(e)?;
    let mut band = mds.rasterband(1).map_err(e)?;
    band.write((0, 0), (ww, wh), &mut Buffer::new((ww, wh), marks))
        .map_err(e)?;
    let vdrv = DriverManager::get_driver_by_name("Memory").map_err(e)?;
    let mut vds = vdrv.create_vector_only("").map_err(e)?;
    let mut layer = vds
        .create_layer(LayerOptions {
            name: "changed",
            srs: None,
            ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
            options: None,
        })
        .map_err(e)?;
    FieldDefn::new("v", OGRFieldType::OFTInteger)
        .and_then(|f| f.add_to_layer(&layer))
        .map_err(e)?;
    // The band is its own mask: only marked pixels become polygons.
    let rc = unsafe {
        gdal_sys::GDALPolygonize(
            band.c_rasterband(),
            band.c_rasterband(),
            layer.c_layer(),
            0,
            std::ptr::null_mut(),
            None,
            std::ptr::null_mut(),
        )
    };
    if rc != gdal_sys::CPLErr::CE_None {
        return Err(cerr(change_tif, "GDALPolygonize failed").into());
    }
    let mut multi = Geometry::empty(gdal_sys::OGRwkbGeometryType::wkbMultiPolygon).map_err(e)?;
    for f in layer.features() {
        if let Some(p) = f.geometry() {
            multi.add_geometry(p.clone()).map_err(e)?;
        }
    }
    Ok(Some(multi.wkb().map_err(e)?))
}

/// Writes the quicklook of a region's change to `png`: the previous valid classes, the
/// current classes, and the changed pixels (red where `hit` accepts the transition, orange
/// for other changes, light grey unchanged, grey not compared); outside the region faded.
pub fn render_quicklook(
    classes_tif: &Path,
    previous_tif: &Path,
    change_tif: &Path,
    region: &[u8],
    hit: &dyn Fn(u16) -> bool,
    png: &Path,
) -> Result<(), crate::Error> {
    let ds = Dataset::open(classes_tif).map_err(|e| cerr(classes_tif, e))?;
    let grid = grid_of(&ds, classes_tif)?;
    let g = Geometry::from_wkb(region).map_err(|e| cerr(classes_tif, e))?;
    let Some((x0, y0, ww, wh)) = window(&g, &grid.gt, grid.size) else {
        return Ok(());
    };
    let read8 = |p: &Path| -> Result<Vec<u8>, MonitorError> {
        let d = Dataset::open(p).map_err(|e| cerr(p, e))?;
        Ok(d.rasterband(1)
            .and_then(|b| b.read_as::<u8>((x0 as isize, y0 as isize), (ww, wh), (ww, wh), None))
            .map_err(|e| cerr(p, e))?
            .data()
            .to_vec())
    };
    let now = read8(classes_tif)?;
    let before = read8(previous_tif)?;
    let cds = Dataset::open(change_tif).map_err(|e| cerr(change_tif, e))?;
    let codes = cds
        .rasterband(1)
        .and_then(|b| b.read_as::<u16>((x0 as isize, y0 as isize), (ww, wh), (ww, wh), None))
        .map_err(|e| cerr(change_tif, e))?
        .data()
        .to_vec();
    let inside = burn(&g, &grid.gt, (x0, ww), (y0, wh), classes_tif)?;
    let palette = quicklook::palette_of(&ds);
    let shade = |i: usize, c: [u8; 4]| {
        if inside[i] == 0 {
            quicklook::faded(c)
        } else {
            c
        }
    };
    let class = |i: usize, v: u8| {
        let c = palette[usize::from(v)];
        shade(
            i,
            if v == NONE || c[3] == 0 {
                quicklook::NO_VALUE
            } else {
                c
            },
        )
    };
    let change = |i: usize, v: u16| {
        shade(
            i,
            match v {
                NOT_COMPARED => quicklook::NO_VALUE,
                0 => [215, 215, 215, 255],
                v if hit(v) => [228, 26, 28, 255],
                _ => [253, 174, 97, 255],
            },
        )
    };
    let panels = [
        quicklook::panel(&before, (ww, wh), class),
        quicklook::panel(&now, (ww, wh), class),
        quicklook::panel(&codes, (ww, wh), change),
    ];
    // The legend: the classes shown, then the change panel's colours.
    let names = quicklook::category_names(&ds);
    let mut seen = [false; 256];
    for &v in before.iter().chain(&now) {
        seen[usize::from(v)] = true;
    }
    let mut entries: Vec<(String, [u8; 3])> = (0..255)
        .filter(|&v| seen[v] && palette[v][3] != 0)
        .map(|v| {
            let c = palette[v];
            (
                names
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| format!("class {v}")),
                [c[0], c[1], c[2]],
            )
        })
        .collect();
    entries.extend([
        ("unchanged".to_string(), [215, 215, 215]),
        ("changed as the rule says".to_string(), [228, 26, 28]),
        ("other change".to_string(), [253, 174, 97]),
        ("no value / not compared".to_string(), [128, 128, 128]),
    ]);
    quicklook::write_panels_with_legend(
        png,
        &panels,
        (ww, wh),
        "before | now | change",
        &quicklook::Legend::Classes(entries),
    )
    .map_err(|e| cerr(png, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pixel_takes_the_newest_valid_earlier_class() {
        // Now: pixel 0 valid, 1 masked (cloud = 1 in the mask), 2 nodata, 3 valid.
        let now = [2_u8, 0, NONE, 0];
        let ok = valid_pixels(&now, Some(&[0, 1, 0, 0]), &[1]);
        assert_eq!(ok, [true, false, false, true]);
        let mut prev = vec![NONE; 4];
        // The newest earlier date: pixel 0 cloudy, pixel 3 clear with class 1.
        let left = fill_previous(&mut prev, &[0, 0, 0, 1], &[false, true, false, true]);
        assert!(left);
        assert_eq!(prev, [NONE, 0, NONE, 1]);
        // An older one fills pixel 0 and 2 but not the others again.
        let left = fill_previous(&mut prev, &[1, 2, 2, 2], &[true, true, true, true]);
        assert!(!left);
        assert_eq!(prev, [1, 0, 2, 1]);
        let codes: Vec<u16> = (0..4)
            .map(|i| {
                if ok[i] && prev[i] != NONE {
                    code(prev[i], now[i])
                } else {
                    NOT_COMPARED
                }
            })
            .collect();
        assert_eq!(codes, [102, NOT_COMPARED, NOT_COMPARED, 100]);
    }

    #[test]
    fn transitions_and_fraction_changes_read_the_matrix() {
        // 3 classes: 5 unchanged 0, 2 from 0 to 1, 1 from 2 to 1, 2 unchanged 1.
        let r = RegionChange {
            compared: 10,
            matrix: vec![5, 2, 0, 0, 2, 0, 0, 1, 0],
        };
        assert_eq!(r.transitions(3, &[], &[]), 3);
        assert_eq!(r.transitions(3, &[0], &[1]), 2);
        assert_eq!(r.transitions(3, &[2], &[]), 1);
        assert!((r.fraction_change(3, 1) - 0.3).abs() < 1e-12);
        assert!((r.fraction_change(3, 0) + 0.2).abs() < 1e-12);
    }
}
