//! Raster outputs: rows are streamed into a striped GeoTIFF under a temporary name, then
//! copied to a Cloud-Optimized GeoTIFF (overviews, 512 px blocks, DEFLATE) by GDAL's COG
//! driver, which reads its source block by block, never the whole raster.

use crate::error::OutputError;
use crate::model::ClassInfo;
use crate::scene::xml_escape;
use gdal::raster::{Buffer, ColorEntry, ColorTable, PaletteInterpretation, RasterCreationOptions};
use gdal::spatial_ref::SpatialRef;
use gdal::{Dataset, DriverManager, Metadata};
use sha2::Digest as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a raster output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RasterKind {
    /// One uint8 band of class ids, nodata 255, colour table and category names.
    Classes,
    /// One uint8 band per class, probability * 255.
    Probabilities,
    /// One float32 band per class, the probability, NaN = no data (a per-pixel model's:
    /// its probabilities are compared with the reference to 1e-5).
    ProbabilitiesFloat,
    /// One float32 band per embedding dimension, NaN = no data.
    Embeddings,
    /// One float32 band of a predicted value (a regression head).
    Values,
    /// One uint8 band: the winning class's blended probability x 255 (1..=255), nodata 0.
    Confidence,
}

/// A raster output being written.
pub struct RasterSink {
    ds: Dataset,
    kind: RasterKind,
    width: usize,
    bands: usize,
    staging: PathBuf,
    /// For parts: the sha256 of each band's pixels as written, row after row, to compare
    /// with the file read back once closed.
    written: Option<Written>,
}

/// What was written into a part, to verify the file on disk.
struct Written {
    hashes: Vec<sha2::Sha256>,
    next_row: usize,
    height: usize,
    in_order: bool,
}

impl std::fmt::Debug for RasterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RasterSink")
            .field("staging", &self.staging)
            .finish_non_exhaustive()
    }
}

impl RasterKind {
    /// The probabilities raster: float32 or uint8.
    #[must_use]
    pub fn probabilities(float: bool) -> Self {
        if float {
            RasterKind::ProbabilitiesFloat
        } else {
            RasterKind::Probabilities
        }
    }

    /// Whether its pixels are float32.
    fn is_float(self) -> bool {
        matches!(
            self,
            RasterKind::Embeddings | RasterKind::Values | RasterKind::ProbabilitiesFloat
        )
    }
}

/// Bands of a raster output: one class band, or one band per class.
fn band_count(kind: RasterKind, classes: &[ClassInfo]) -> usize {
    match kind {
        RasterKind::Classes | RasterKind::Values | RasterKind::Confidence => 1,
        RasterKind::Probabilities | RasterKind::ProbabilitiesFloat | RasterKind::Embeddings => {
            classes.len()
        }
    }
}

fn gerr(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Gdal {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

pub(crate) fn options(items: &[(&str, &str)]) -> RasterCreationOptions {
    let mut o = RasterCreationOptions::new();
    for (k, v) in items {
        // Keys and values are plain ASCII literals; a failure here is a programming error.
        o.set_name_value(k, v).expect("valid creation option");
    }
    o
}

pub(crate) fn staging_dataset_with<T: gdal::raster::GdalType>(
    staging: &Path,
    (width, height, bands): (usize, usize, usize),
    geo_transform: &[f64; 6],
    srs_wkt: &str,
    creation: &[(&str, &str)],
) -> Result<Dataset, OutputError> {
    let driver = DriverManager::get_driver_by_name("GTiff").map_err(|e| gerr(staging, e))?;
    let opts = options(creation);
    let mut ds = driver
        .create_with_band_type_with_options::<T, _>(staging, width, height, bands, &opts)
        .map_err(|e| gerr(staging, e))?;
    ds.set_geo_transform(geo_transform)
        .map_err(|e| gerr(staging, e))?;
    let srs = SpatialRef::from_wkt(srs_wkt).map_err(|e| gerr(staging, e))?;
    ds.set_spatial_ref(&srs).map_err(|e| gerr(staging, e))?;
    Ok(ds)
}

impl RasterSink {
    /// Creates the part of a class map or probabilities raster holding `rows` rows of a grid
    /// `width` px wide from the row whose top edge the geotransform `gt` places (a striped,
    /// DEFLATE-compressed GeoTIFF).
    pub fn create_part(
        path: &Path,
        (width, rows): (usize, usize),
        gt: &[f64; 6],
        srs_wkt: &str,
        kind: RasterKind,
        classes: &[ClassInfo],
    ) -> Result<Self, OutputError> {
        let bands = band_count(kind, classes);
        let mut creation = vec![
            ("INTERLEAVE", "BAND"),
            ("PHOTOMETRIC", "MINISBLACK"),
            ("COMPRESS", "DEFLATE"),
            ("ZLEVEL", "1"),
            ("BIGTIFF", "IF_SAFER"),
        ];
        let ds = if kind.is_float() {
            creation.push(("PREDICTOR", "3"));
            staging_dataset_with::<f32>(path, (width, rows, bands), gt, srs_wkt, &creation)?
        } else {
            staging_dataset_with::<u8>(path, (width, rows, bands), gt, srs_wkt, &creation)?
        };
        let mut sink = Self::describe(ds, path, kind, classes, width)?;
        sink.written = Some(Written {
            hashes: (0..sink.bands).map(|_| sha2::Sha256::new()).collect(),
            next_row: 0,
            height: rows,
            in_order: true,
        });
        Ok(sink)
    }

    /// Closes a part and verifies it: fsynced, then read back from disk, its pixels must be
    /// the ones written (a disk that filled up leaves a truncated file that GDAL closes
    /// without an error).
    pub fn finish_part(mut self) -> Result<(), OutputError> {
        self.ds.flush_cache().map_err(|e| gerr(&self.staging, e))?;
        let path = self.staging.clone();
        let width = self.width;
        let self_kind = self.kind;
        let written = self.written.take();
        drop(self);
        crate::journal::sync_file(&path).map_err(|source| OutputError::Io {
            path: path.clone(),
            source,
        })?;
        let Some(w) = written else { return Ok(()) };
        let bad = |what: String| {
            let what = format!("the part read back from disk is not what was written: {what}");
            gerr(&path, &what)
        };
        let ds = Dataset::open(&path).map_err(|e| bad(e.to_string()))?;
        if ds.raster_size() != (width, w.height) || ds.raster_count() != w.hashes.len() {
            return Err(bad(format!(
                "{} x {} px, {} bands",
                ds.raster_size().0,
                ds.raster_size().1,
                ds.raster_count()
            )));
        }
        if !w.in_order || w.next_row != w.height {
            return Err(bad(format!(
                "rows were written out of order or incompletely ({} of {})",
                w.next_row, w.height
            )));
        }
        // Read back in chunks of rows, so memory does not grow with the block.
        let chunk = (4 << 20) / width.max(1);
        let chunk = chunk.clamp(1, w.height.max(1));
        let embeddings = self_kind.is_float();
        let mut bytes = vec![0_u8; width * chunk];
        let mut floats = vec![0_f32; if embeddings { width * chunk } else { 0 }];
        for (b, h) in w.hashes.into_iter().enumerate() {
            let band = ds.rasterband(b + 1).map_err(|e| bad(e.to_string()))?;
            let mut read = sha2::Sha256::new();
            let mut y = 0;
            while y < w.height {
                let n = chunk.min(w.height - y);
                let window = ((0, y as isize), (width, n), (width, n));
                if embeddings {
                    let slice = &mut floats[..width * n];
                    band.read_into_slice::<f32>(window.0, window.1, window.2, slice, None)
                        .map_err(|e| bad(e.to_string()))?;
                    for v in slice.iter() {
                        read.update(v.to_ne_bytes());
                    }
                } else {
                    let slice = &mut bytes[..width * n];
                    band.read_into_slice::<u8>(window.0, window.1, window.2, slice, None)
                        .map_err(|e| bad(e.to_string()))?;
                    read.update(&*slice);
                }
                y += n;
            }
            if read.finalize() != h.finalize() {
                return Err(bad(format!("band {} differs", b + 1)));
            }
        }
        Ok(())
    }

    fn describe(
        ds: Dataset,
        staging: &Path,
        kind: RasterKind,
        classes: &[ClassInfo],
        width: usize,
    ) -> Result<Self, OutputError> {
        let bands = ds.raster_count();
        match kind {
            RasterKind::Classes => {
                let mut band = ds.rasterband(1).map_err(|e| gerr(staging, e))?;
                band.set_no_data_value(Some(f64::from(crate::blend::CLASS_NODATA)))
                    .map_err(|e| gerr(staging, e))?;
                let mut ct = ColorTable::new(PaletteInterpretation::Rgba);
                for i in 0..=255_u16 {
                    let entry = match classes.iter().find(|c| u16::from(c.value) == i) {
                        Some(c) => ColorEntry::rgba(
                            i16::from(c.color[0]),
                            i16::from(c.color[1]),
                            i16::from(c.color[2]),
                            255,
                        ),
                        None => ColorEntry::rgba(0, 0, 0, 0),
                    };
                    ct.set_color_entry(i, &entry);
                }
                band.set_color_table(&ct);
                let mut names = gdal::cpl::CslStringList::new();
                for i in 0..classes.len() {
                    let name = classes
                        .iter()
                        .find(|c| usize::from(c.value) == i)
                        .map_or("", |c| c.name.as_str());
                    names.add_string(name).map_err(|e| gerr(staging, e))?;
                }
                let rv = unsafe {
                    gdal_sys::GDALSetRasterCategoryNames(band.c_rasterband(), names.as_ptr())
                };
                if rv != gdal_sys::CPLErr::CE_None {
                    return Err(gerr(staging, "cannot set category names"));
                }
                band.set_description("class")
                    .map_err(|e| gerr(staging, e))?;
            }
            RasterKind::Values => {}
            RasterKind::Confidence => {
                let mut band = ds.rasterband(1).map_err(|e| gerr(staging, e))?;
                band.set_no_data_value(Some(0.0))
                    .map_err(|e| gerr(staging, e))?;
                band.set_scale(1.0 / 255.0).map_err(|e| gerr(staging, e))?;
                band.set_offset(0.0).map_err(|e| gerr(staging, e))?;
                band.set_description("confidence")
                    .map_err(|e| gerr(staging, e))?;
            }
            RasterKind::Probabilities | RasterKind::ProbabilitiesFloat | RasterKind::Embeddings => {
                for (i, c) in classes.iter().enumerate() {
                    let mut band = ds.rasterband(i + 1).map_err(|e| gerr(staging, e))?;
                    band.set_description(&c.name)
                        .map_err(|e| gerr(staging, e))?;
                    if kind == RasterKind::ProbabilitiesFloat {
                        band.set_no_data_value(Some(f64::NAN))
                            .map_err(|e| gerr(staging, e))?;
                    } else {
                        band.set_scale(1.0 / 255.0).map_err(|e| gerr(staging, e))?;
                        band.set_offset(0.0).map_err(|e| gerr(staging, e))?;
                    }
                    band.set_metadata_item("CLASS_VALUE", &c.value.to_string(), "")
                        .map_err(|e| gerr(staging, e))?;
                }
            }
        }
        Ok(Self {
            ds,
            kind,
            width,
            bands,
            staging: staging.to_path_buf(),
            written: None,
        })
    }

    /// Creates the part of an embeddings raster (float32, `dim` bands, NaN = no data)
    /// holding `rows` rows of a patch grid `width` patches wide, as
    /// [`Self::create_part`].
    pub fn create_embeddings_part(
        path: &Path,
        (width, rows): (usize, usize),
        gt: &[f64; 6],
        srs_wkt: &str,
        dim: usize,
    ) -> Result<Self, OutputError> {
        let ds = staging_dataset_with::<f32>(
            path,
            (width, rows, dim),
            gt,
            srs_wkt,
            &[
                ("INTERLEAVE", "BAND"),
                ("PHOTOMETRIC", "MINISBLACK"),
                ("COMPRESS", "DEFLATE"),
                ("ZLEVEL", "1"),
                ("PREDICTOR", "3"),
                ("BIGTIFF", "IF_SAFER"),
            ],
        )?;
        for i in 0..dim {
            let mut band = ds.rasterband(i + 1).map_err(|e| gerr(path, e))?;
            band.set_no_data_value(Some(f64::NAN))
                .map_err(|e| gerr(path, e))?;
        }
        Ok(Self {
            ds,
            kind: RasterKind::Embeddings,
            width,
            bands: dim,
            staging: path.to_path_buf(),
            written: Some(Written {
                hashes: (0..dim).map(|_| sha2::Sha256::new()).collect(),
                next_row: 0,
                height: rows,
                in_order: true,
            }),
        })
    }

    /// Writes `rows` rows from scene row `y`; `data` is band-major (`bands * rows * width`).
    pub fn write_rows<T: gdal::raster::GdalType + Copy>(
        &mut self,
        y: usize,
        rows: usize,
        data: &[T],
    ) -> Result<(), OutputError> {
        let plane = rows * self.width;
        if let Some(w) = self.written.as_mut() {
            w.in_order &= y == w.next_row;
            w.next_row = y + rows;
            for (b, h) in w.hashes.iter_mut().enumerate() {
                let band = &data[b * plane..(b + 1) * plane];
                // Plain numbers (u8 for parts): their bytes as they are in memory.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        band.as_ptr().cast::<u8>(),
                        std::mem::size_of_val(band),
                    )
                };
                h.update(bytes);
            }
        }
        for b in 0..self.bands {
            let mut band = self
                .ds
                .rasterband(b + 1)
                .map_err(|e| gerr(&self.staging, e))?;
            let mut buf = Buffer::new(
                (self.width, rows),
                data[b * plane..(b + 1) * plane].to_vec(),
            );
            band.write((0, y as isize), (self.width, rows), &mut buf)
                .map_err(|e| gerr(&self.staging, e))?;
        }
        Ok(())
    }
}

/// Copies `src` to a COG at `target` with the options of `kind` (GDAL reads the source block
/// by block: a VRT of parts streams).
pub(crate) fn cog_copy(src: &Dataset, kind: RasterKind, target: &Path) -> Result<(), OutputError> {
    {
        let driver = DriverManager::get_driver_by_name("COG").map_err(|e| gerr(target, e))?;
        let resampling = match kind {
            RasterKind::Classes => "MODE",
            RasterKind::Probabilities
            | RasterKind::ProbabilitiesFloat
            | RasterKind::Embeddings
            | RasterKind::Values
            | RasterKind::Confidence => "AVERAGE",
        };
        let predictor = if kind.is_float() { "YES" } else { "NO" };
        // COG is pixel-interleaved for several bands (GDAL 3.6): a block holds every band, so
        // embedding maps (D bands) get small blocks.
        let blocksize = if kind == RasterKind::Embeddings {
            "64"
        } else {
            "512"
        };
        let opts = options(&[
            ("COMPRESS", "DEFLATE"),
            ("PREDICTOR", predictor),
            ("BLOCKSIZE", blocksize),
            ("OVERVIEWS", "IGNORE_EXISTING"),
            ("OVERVIEW_RESAMPLING", resampling),
            ("BIGTIFF", "IF_SAFER"),
            ("NUM_THREADS", "ALL_CPUS"),
        ]);
        let out = with_cog_temps(target, || src.create_copy(&driver, target, &opts))
            .map_err(|e| gerr(target, e))?;
        drop(out);
        Ok(())
    }
}

/// Runs `f`, GDAL's COG driver writing `target`: the temporary overview files it writes
/// beside it (`<target>.ovr.tmp`, `<target>.msk.ovr.tmp`) are registered for SIGINT / SIGTERM
/// meanwhile (GDAL removes them itself when it finishes or fails).
fn with_cog_temps<R>(target: &Path, f: impl FnOnce() -> R) -> R {
    let temps = [".ovr.tmp", ".msk.ovr.tmp"].map(|ext| crate::util::with_suffix(target, ext));
    for t in &temps {
        crate::interrupt::register(t);
    }
    let r = f();
    for t in &temps {
        crate::interrupt::forget(t);
    }
    r
}

/// One part of a raster: a file holding grid rows `y..y + rows`.
#[derive(Debug, Clone)]
pub struct Part {
    /// The part file.
    pub path: PathBuf,
    /// First grid column.
    pub x: usize,
    /// First grid row.
    pub y: usize,
    /// Columns.
    pub cols: usize,
    /// Rows.
    pub rows: usize,
}

impl Part {
    /// A whole raster of `cols` x `rows` as one part.
    #[must_use]
    pub fn whole(path: PathBuf, (cols, rows): (usize, usize)) -> Self {
        Self {
            path,
            x: 0,
            y: 0,
            cols,
            rows,
        }
    }

    /// The part files of finished blocks, in block order, each at its block's rows and
    /// columns of the output raster.
    #[must_use]
    pub fn of_blocks(records: &[&crate::journal::BlockRecord], parts_path: &Path) -> Vec<Part> {
        records
            .iter()
            .flat_map(|r| {
                r.parts.iter().map(move |p| Part {
                    path: parts_path.join(&p.file),
                    x: r.cols.0,
                    y: r.rows.0,
                    cols: r.cols.1 - r.cols.0,
                    rows: r.rows.1 - r.rows.0,
                })
            })
            .collect()
    }

    /// The VRT source rectangles placing this part.
    #[must_use]
    pub fn rects(&self) -> String {
        format!(
            "<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{c}\" ySize=\"{r}\"/><DstRect xOff=\"{x}\" yOff=\"{y}\" xSize=\"{c}\" ySize=\"{r}\"/>",
            c = self.cols,
            r = self.rows,
            x = self.x,
            y = self.y
        )
    }
}

/// The opening of a VRT document of a `width` x `height` raster on `gt` in `srs_wkt`.
pub(crate) fn vrt_header((width, height): (usize, usize), gt: &[f64; 6], srs_wkt: &str) -> String {
    format!(
        "<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\"><SRS>{}</SRS><GeoTransform>{}</GeoTransform>",
        xml_escape(srs_wkt),
        gt.iter()
            .map(|v| format!("{v:.17e}"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Joins the parts of a class map or probabilities raster (a VRT that carries the colour
/// table, category names, band names and scaling) and copies it to a COG at `target`.
pub fn cog_from_parts(
    parts: &[Part],
    (width, height): (usize, usize),
    gt: &[f64; 6],
    srs_wkt: &str,
    kind: RasterKind,
    classes: &[ClassInfo],
    target: &Path,
) -> Result<(), OutputError> {
    let esc = xml_escape;
    let mut xml = vrt_header((width, height), gt, srs_wkt);
    let bands = band_count(kind, classes);
    let data_type = if kind.is_float() { "Float32" } else { "Byte" };
    for b in 1..=bands {
        let _ = write!(xml, "<VRTRasterBand dataType=\"{data_type}\" band=\"{b}\">");
        match kind {
            RasterKind::Classes => {
                let _ = write!(
                    xml,
                    "<Description>class</Description><NoDataValue>{}</NoDataValue><ColorInterp>Palette</ColorInterp><CategoryNames>",
                    crate::blend::CLASS_NODATA
                );
                for i in 0..classes.len() {
                    let name = classes
                        .iter()
                        .find(|c| usize::from(c.value) == i)
                        .map_or("", |c| c.name.as_str());
                    let _ = write!(xml, "<Category>{}</Category>", esc(name));
                }
                xml.push_str("</CategoryNames><ColorTable>");
                for i in 0..=255_u16 {
                    match classes.iter().find(|c| u16::from(c.value) == i) {
                        Some(c) => {
                            let _ = write!(
                                xml,
                                "<Entry c1=\"{}\" c2=\"{}\" c3=\"{}\" c4=\"255\"/>",
                                c.color[0], c.color[1], c.color[2]
                            );
                        }
                        None => xml.push_str("<Entry c1=\"0\" c2=\"0\" c3=\"0\" c4=\"0\"/>"),
                    }
                }
                xml.push_str("</ColorTable>");
            }
            RasterKind::Values => {}
            RasterKind::Confidence => {
                let _ = write!(
                    xml,
                    "<Description>confidence</Description><NoDataValue>0</NoDataValue><Offset>0</Offset><Scale>{:.17e}</Scale>",
                    1.0 / 255.0
                );
            }
            RasterKind::ProbabilitiesFloat => {
                let c = &classes[b - 1];
                let _ = write!(
                    xml,
                    "<Description>{}</Description><NoDataValue>nan</NoDataValue><Metadata><MDI key=\"CLASS_VALUE\">{}</MDI></Metadata>",
                    esc(&c.name),
                    c.value,
                );
            }
            RasterKind::Probabilities | RasterKind::Embeddings => {
                let c = &classes[b - 1];
                let _ = write!(
                    xml,
                    "<Description>{}</Description><Metadata><MDI key=\"CLASS_VALUE\">{}</MDI></Metadata><Offset>0</Offset><Scale>{:.17e}</Scale>",
                    esc(&c.name),
                    c.value,
                    1.0 / 255.0
                );
            }
        }
        for p in parts {
            let _ = write!(
                xml,
                "<SimpleSource><SourceFilename relativeToVRT=\"0\">{}</SourceFilename><SourceBand>{b}</SourceBand>{}</SimpleSource>",
                esc(&p.path.to_string_lossy()),
                p.rects()
            );
        }
        xml.push_str("</VRTRasterBand>");
    }
    xml.push_str("</VRTDataset>");
    let src = Dataset::open(&xml).map_err(|e| gerr(target, e))?;
    cog_copy(&src, kind, target)
}

/// Smallest and largest finite value per band over every part of an embeddings raster:
/// the quantisation range of a uint8 COG, from the whole run.
pub fn band_ranges(parts: &[Part], dim: usize) -> Result<Vec<(f32, f32)>, OutputError> {
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); dim];
    for p in parts {
        let width = p.cols;
        let ds = Dataset::open(&p.path).map_err(|e| gerr(&p.path, e))?;
        let chunk = ((4 << 20) / width.max(1)).clamp(1, p.rows.max(1));
        let mut buf = vec![0_f32; width * chunk];
        for (b, r) in ranges.iter_mut().enumerate() {
            let band = ds.rasterband(b + 1).map_err(|e| gerr(&p.path, e))?;
            let mut y = 0;
            while y < p.rows {
                let n = chunk.min(p.rows - y);
                let slice = &mut buf[..width * n];
                band.read_into_slice::<f32>((0, y as isize), (width, n), (width, n), slice, None)
                    .map_err(|e| gerr(&p.path, e))?;
                for &v in slice.iter().filter(|v| v.is_finite()) {
                    *r = (r.0.min(v), r.1.max(v));
                }
                y += n;
            }
        }
    }
    Ok(ranges)
}

/// Joins the parts of an embeddings raster into a COG at `target`: float32 with NaN as no
/// data, or (with `ranges`) uint8 quantised per band as [`RasterSink::finish_cog_uint8`].
pub fn embeddings_cog_from_parts(
    parts: &[Part],
    (width, height): (usize, usize),
    gt: &[f64; 6],
    srs_wkt: &str,
    dim: usize,
    ranges: Option<&[(f32, f32)]>,
    target: &Path,
) -> Result<(), OutputError> {
    let esc = xml_escape;
    let mut xml = vrt_header((width, height), gt, srs_wkt);
    for b in 0..dim {
        let source = |p: &Part, extra: &str| {
            format!(
                "<SourceFilename relativeToVRT=\"0\">{}</SourceFilename><SourceBand>{}</SourceBand>{}{extra}",
                esc(&p.path.to_string_lossy()),
                b + 1,
                p.rects()
            )
        };
        match ranges {
            None => {
                let _ = write!(
                    xml,
                    "<VRTRasterBand dataType=\"Float32\" band=\"{}\"><Description>embedding_{b}</Description><NoDataValue>nan</NoDataValue>",
                    b + 1
                );
                for p in parts {
                    let _ = write!(xml, "<SimpleSource>{}</SimpleSource>", source(p, ""));
                }
            }
            Some(ranges) => {
                let (lo, hi) = ranges.get(b).copied().unwrap_or((0.0, 0.0));
                let span = f64::from(hi - lo).max(f64::from(f32::EPSILON));
                let ratio = 254.0 / span;
                let offset = 1.0 - f64::from(lo) * ratio;
                let scale = span / 254.0;
                let _ = write!(
                    xml,
                    "<VRTRasterBand dataType=\"Byte\" band=\"{}\"><Description>embedding_{b}</Description><NoDataValue>0</NoDataValue>\
                     <Offset>{:.17e}</Offset><Scale>{scale:.17e}</Scale>",
                    b + 1,
                    f64::from(lo) - scale,
                );
                let extra = format!(
                    "<NODATA>nan</NODATA><ScaleOffset>{offset:.17e}</ScaleOffset><ScaleRatio>{ratio:.17e}</ScaleRatio>"
                );
                for p in parts {
                    let _ = write!(xml, "<ComplexSource>{}</ComplexSource>", source(p, &extra));
                }
            }
        }
        xml.push_str("</VRTRasterBand>");
    }
    xml.push_str("</VRTDataset>");
    let src = Dataset::open(&xml).map_err(|e| gerr(target, e))?;
    if ranges.is_none() {
        return cog_copy(&src, RasterKind::Embeddings, target);
    }
    let driver = DriverManager::get_driver_by_name("COG").map_err(|e| gerr(target, e))?;
    let opts = options(&[
        ("COMPRESS", "DEFLATE"),
        ("BLOCKSIZE", "64"),
        ("OVERVIEW_RESAMPLING", "AVERAGE"),
        ("BIGTIFF", "IF_SAFER"),
        ("NUM_THREADS", "ALL_CPUS"),
    ]);
    drop(
        with_cog_temps(target, || src.create_copy(&driver, target, &opts))
            .map_err(|e| gerr(target, e))?,
    );
    Ok(())
}

/// The PAM sidecar GDAL writes beside `path`.
#[must_use]
pub fn aux_path(path: &Path) -> PathBuf {
    crate::util::with_suffix(path, ".aux.xml")
}
