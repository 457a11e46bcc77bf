//! Several scenes on one AOI grid: each scene's model-ready stack is built on the grid
//! directly (same CRS) or warped onto it with GDAL (another CRS, bilinear), and the stacks
//! are layered in one VRT so that where scenes overlap the scene with the highest priority
//! gives the pixel: least cloud cover first (scenes without a known cover after those with
//! one), then the newest, then the order given. Lower-priority scenes fill its nodata.

use super::timeseries::{SceneEntry, mosaic_entries};
use super::{SceneOptions, Stack, StackRequest, open_stack_request, xml_escape};
use crate::aoi::Aoi;
use crate::error::{AoiError, Error, SceneError};
use gdal::Dataset;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::vector::Geometry;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One scene of a mosaic, as the run summary and the plan record it.
#[derive(Debug, Clone, Serialize)]
pub struct MosaicScene {
    /// The scene.
    pub scene: String,
    /// Priority rank: 0 is on top.
    pub rank: usize,
    /// Acquisition date, when known.
    pub date: Option<String>,
    /// Cloud cover in percent, when known.
    pub cloud_cover: Option<f64>,
    /// Its CRS (EPSG code when it has one).
    pub crs: String,
    /// Whether it was warped from another CRS.
    pub warped: bool,
    /// What GDAL reads for it (its VRT and band files), for the plan's input fingerprints.
    #[serde(skip)]
    pub files: Vec<String>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn gdal_err(path: &str, e: impl std::fmt::Display) -> SceneError {
    SceneError::Gdal {
        path: path.into(),
        message: e.to_string(),
    }
}

/// Sorts scenes by the mosaic priority (highest first).
fn by_priority(entries: Vec<SceneEntry>) -> Vec<SceneEntry> {
    let mut indexed: Vec<(usize, SceneEntry)> = entries.into_iter().enumerate().collect();
    indexed.sort_by(|(ia, a), (ib, b)| {
        let cloud = |e: &SceneEntry| e.cloud_cover.unwrap_or(f64::INFINITY);
        cloud(a)
            .total_cmp(&cloud(b))
            .then_with(|| {
                b.date
                    .as_ref()
                    .map(|d| d.0)
                    .cmp(&a.date.as_ref().map(|d| d.0))
            })
            .then(ia.cmp(ib))
    });
    indexed.into_iter().map(|(_, e)| e).collect()
}

/// The stack's footprint as a polygon in `target`'s CRS.
fn footprint(stack: &Stack, target: &SpatialRef) -> Result<Geometry, SceneError> {
    let gt = stack.geo_transform;
    let (x0, y1) = (gt[0], gt[3]);
    let (x1, y0) = (
        gt[0] + stack.width as f64 * gt[1],
        gt[3] + stack.height as f64 * gt[5],
    );
    let wkt = crate::aoi::dense_box([x0, y0, x1, y1], 16);
    let g = Geometry::from_wkt(&wkt).map_err(|e| gdal_err(&stack.scene, e))?;
    let mut src = SpatialRef::from_wkt(&stack.srs_wkt).map_err(|e| gdal_err(&stack.scene, e))?;
    src.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let t = CoordTransform::new(&src, target).map_err(|e| gdal_err(&stack.scene, e))?;
    g.transform(&t).map_err(|e| gdal_err(&stack.scene, e))
}

/// Warps the stack VRT at `src` onto the AOI grid, writing a warped VRT at `dst`.
fn warp(src: &str, dst: &str, aoi: &Aoi) -> Result<(), SceneError> {
    let g = &aoi.grid;
    let gt = g.geo_transform;
    let (x0, y1) = (gt[0], gt[3]);
    let (x1, y0) = (
        gt[0] + g.width as f64 * gt[1],
        gt[3] + g.height as f64 * gt[5],
    );
    let args: Vec<String> = [
        "-of",
        "VRT",
        "-t_srs",
        &g.srs_wkt,
        "-te",
        &format!("{x0:.17e}"),
        &format!("{y0:.17e}"),
        &format!("{x1:.17e}"),
        &format!("{y1:.17e}"),
        "-ts",
        &g.width.to_string(),
        &g.height.to_string(),
        "-r",
        "bilinear",
        "-srcnodata",
        "nan",
        "-dstnodata",
        "nan",
        "-ot",
        "Float32",
        "-wo",
        "INIT_DEST=NO_DATA",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    gdalwarp(src, dst, &args)
        .map_err(|m| gdal_err(src, format!("warping onto the AOI grid failed: {m}")))
}

/// Runs GDAL's warper (the `gdalwarp` program's library form) from `src` to `dst` with the
/// program's `args`; the error is GDAL's message.
pub(crate) fn gdalwarp(src: &str, dst: &str, args: &[String]) -> Result<(), String> {
    let mut list = gdal::cpl::CslStringList::new();
    for a in args {
        list.add_string(a).map_err(|e| e.to_string())?;
    }
    let ds = Dataset::open(src).map_err(|e| e.to_string())?;
    let dst_c = std::ffi::CString::new(dst).map_err(|e| e.to_string())?;
    // SAFETY: the options, the source handle and the output path live across the call; the
    // output dataset is closed at once.
    unsafe {
        let opts = gdal_sys::GDALWarpAppOptionsNew(list.as_ptr(), std::ptr::null_mut());
        if opts.is_null() {
            return Err("gdalwarp options were refused".into());
        }
        let mut srcs = [ds.c_dataset()];
        let mut usage = 0;
        let out = gdal_sys::GDALWarp(
            dst_c.as_ptr(),
            std::ptr::null_mut(),
            1,
            srcs.as_mut_ptr(),
            opts,
            &raw mut usage,
        );
        gdal_sys::GDALWarpAppOptionsFree(opts);
        if out.is_null() {
            let said = crate::take_gdal_errors();
            return Err(if said.is_empty() {
                gdal_last_error()
            } else {
                said
            });
        }
        gdal_sys::GDALClose(out);
    }
    Ok(())
}

fn gdal_last_error() -> String {
    unsafe {
        let p = gdal_sys::CPLGetLastErrorMsg();
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// The warnings of the mosaic's scenes, each once.
fn warnings_of(layers: &[(String, Stack)]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for (_, s) in layers {
        crate::util::push_new(&mut all, s.warnings.iter().cloned());
    }
    all
}

/// Refuses a scene whose pixels are more than 2x coarser than the AOI grid's (a metric CRS),
/// unless `--resolution` or `--allow-upsample` was given.
fn check_upsample(native: &Stack, opts: &SceneOptions, resolution: f64) -> Result<(), Error> {
    if opts.resolution.is_some() || opts.read.allow_upsample {
        return Ok(());
    }
    let srs = SpatialRef::from_wkt(&native.srs_wkt).map_err(|e| gdal_err(&native.scene, e))?;
    if !(srs.is_projected() && srs.linear_units() == 1.0) {
        return Ok(());
    }
    let Some(finest) = native
        .bands
        .iter()
        .filter(|b| b.vrt_band.is_some())
        .map(|b| b.source_resolution)
        .min_by(f64::total_cmp)
    else {
        return Ok(());
    };
    if finest > 2.0 * resolution {
        return Err(SceneError::Upsample {
            path: native.scene.clone().into(),
            native: finest,
            resolution,
            unit: "m".into(),
        }
        .into());
    }
    Ok(())
}

/// Builds the model-ready stack of `scenes` on the AOI grid (see the module docs for the
/// priority). Scenes that do not overlap the AOI are left out; none overlapping is an error.
pub fn open_mosaic(
    scenes: &[String],
    req: &StackRequest,
    opts: &SceneOptions,
    aoi: &Aoi,
    name: &str,
) -> Result<(Stack, Vec<MosaicScene>), Error> {
    mosaic_of(mosaic_entries(scenes)?, req, opts, aoi, name)
}

/// Builds the model-ready stack of the scenes `entries` on the AOI grid, as [`open_mosaic`].
pub fn mosaic_of(
    entries: Vec<SceneEntry>,
    req: &StackRequest,
    opts: &SceneOptions,
    aoi: &Aoi,
    name: &str,
) -> Result<(Stack, Vec<MosaicScene>), Error> {
    let entries = by_priority(entries);
    let scenes: Vec<String> = entries
        .iter()
        .map(|e| e.source.label().to_string())
        .collect();
    let mut grid_srs = SpatialRef::from_wkt(&aoi.grid.srs_wkt).map_err(|e| AoiError::Gdal {
        aoi: aoi.source.clone(),
        message: e.to_string(),
    })?;
    grid_srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let polygon = aoi.geometry()?;
    let dir = format!(
        "/vsimem/eoinfer-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let native_opts = SceneOptions {
        resolution: Some(aoi.grid.geo_transform[1]),
        ..opts.clone()
    };
    // (vsimem path, stack) per scene, highest priority first.
    let mut layers: Vec<(String, Stack)> = Vec::new();
    let mut info = Vec::new();
    for entry in &entries {
        let native = open_stack_request(&entry.source, req, &native_opts)?;
        check_upsample(&native, opts, aoi.grid.geo_transform[1])?;
        if !footprint(&native, &grid_srs)?.intersects(&polygon) {
            tracing::info!(scene = %native.scene, "does not overlap the AOI; left out");
            continue;
        }
        let mut native_srs =
            SpatialRef::from_wkt(&native.srs_wkt).map_err(|e| gdal_err(&native.scene, e))?;
        native_srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let k = layers.len();
        let same = native_srs == grid_srs;
        let (path, stack) = if same {
            let on_grid = StackRequest {
                grid: Some(aoi.grid.clone()),
                ..req.clone()
            };
            let stack = open_stack_request(&entry.source, &on_grid, opts)?;
            let path = format!("{dir}/scene-{k}.vrt");
            gdal::vsi::create_mem_file(&path, stack.vrt.clone().into_bytes())
                .map_err(|e| gdal_err(&path, e))?;
            (path, stack)
        } else {
            let src = format!("{dir}/scene-{k}.native.vrt");
            gdal::vsi::create_mem_file(&src, native.vrt.clone().into_bytes())
                .map_err(|e| gdal_err(&src, e))?;
            let path = format!("{dir}/scene-{k}.warped.vrt");
            warp(&src, &path, aoi)?;
            (path, native)
        };
        info.push(MosaicScene {
            scene: stack.scene.clone(),
            rank: k,
            date: entry.date.as_ref().map(|d| d.0.to_string()),
            cloud_cover: entry.cloud_cover,
            crs: stack
                .epsg
                .map_or_else(|| "unknown".to_string(), |e| format!("EPSG:{e}")),
            warped: !same,
            files: std::iter::once(stack.vrt.clone())
                .chain(stack.bands.iter().map(|b| b.source.clone()))
                .collect(),
        });
        layers.push((path, stack));
    }
    if layers.is_empty() {
        return Err(AoiError::NoOverlap {
            aoi: aoi.source.clone(),
            scenes: scenes.join(", "),
        }
        .into());
    }
    let g = &aoi.grid;
    let (width, height) = (g.width, g.height);
    let first = &layers[0].1;
    let mut vrt = format!(
        "<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\">\n  <SRS>{}</SRS>\n  <GeoTransform>{}</GeoTransform>\n",
        xml_escape(&g.srs_wkt),
        g.geo_transform
            .iter()
            .map(|v| format!("{v:.17e}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut bands = Vec::new();
    for (i, band) in first.bands.iter().enumerate() {
        let _ = write!(
            vrt,
            "  <VRTRasterBand dataType=\"Float32\" band=\"{}\">\n    <Description>{}</Description>\n    <NoDataValue>nan</NoDataValue>\n",
            i + 1,
            xml_escape(&band.model_band)
        );
        // Lowest priority first: later sources are drawn over earlier ones.
        for (path, stack) in layers.iter().rev() {
            let b = &stack.bands[i];
            let Some(vb) = b.vrt_band else { continue };
            let _ = write!(
                vrt,
                "    <ComplexSource>\n      <SourceFilename relativeToVRT=\"0\">{}</SourceFilename>\n      <SourceBand>{vb}</SourceBand>\n      <SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{width}\" ySize=\"{height}\"/>\n      <DstRect xOff=\"0\" yOff=\"0\" xSize=\"{width}\" ySize=\"{height}\"/>\n      <NODATA>nan</NODATA>\n      <ScaleOffset>{:.17e}</ScaleOffset>\n      <ScaleRatio>{:.17e}</ScaleRatio>\n    </ComplexSource>\n",
                xml_escape(path),
                b.rescale.offset_dn * b.rescale.scale,
                b.rescale.scale
            );
        }
        vrt.push_str("  </VRTRasterBand>\n");
        bands.push(super::StackBand {
            rescale: crate::normalize::Rescale::IDENTITY,
            vrt_band: Some(i + 1),
            ..band.clone()
        });
    }
    vrt.push_str("</VRTDataset>\n");
    let stack = Stack {
        scene: format!(
            "AOI {} over {} scene(s): {}",
            aoi.source,
            layers.len(),
            layers
                .iter()
                .map(|(_, s)| s.scene.clone())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        name: name.to_string(),
        width,
        height,
        resolution: g.geo_transform[1],
        geo_transform: g.geo_transform,
        srs_wkt: g.srs_wkt.clone(),
        projjson: grid_srs.to_projjson().unwrap_or_default(),
        epsg: aoi.epsg,
        vrt_bands: bands.len(),
        bands,
        s2_offset_source: layers
            .iter()
            .map(|(_, s)| s.s2_offset_source.clone())
            .collect::<Vec<_>>()
            .join("; "),
        sensor: layers.first().and_then(|(_, s)| s.sensor.clone()),
        warnings: warnings_of(&layers),
        vrt,
    };
    Ok((stack, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::timeseries::Date;

    fn entry(name: &str, date: Option<(i32, u32, u32)>, cloud: Option<f64>) -> SceneEntry {
        SceneEntry {
            source: crate::scene::SceneSource::Path(name.into()),
            date: date.map(|(year, month, day)| (Date { year, month, day }, String::new())),
            cloud_cover: cloud,
        }
    }

    #[test]
    fn priority_is_least_cloud_then_newest_then_order_given() {
        let sorted = by_priority(vec![
            entry("a", Some((2020, 1, 1)), None),
            entry("b", Some((2020, 1, 2)), None),
            entry("c", Some((2019, 1, 1)), Some(30.0)),
            entry("d", Some((2018, 1, 1)), Some(5.0)),
            entry("e", None, None),
            entry("f", Some((2020, 1, 2)), None),
        ]);
        let names: Vec<&str> = sorted.iter().map(|e| e.source.label()).collect();
        assert_eq!(names, ["d", "c", "b", "f", "a", "e"]);
    }
}
