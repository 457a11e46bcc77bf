//! `eoinfer prepare`: writes the model-ready reflectance stack (every input band on the
//! model's grid, DN already converted) as a float32 GeoTIFF, so other tools can be run on
//! exactly the pixels eoinfer feeds the model.

use crate::error::{Error, OutputError};
use crate::grid::Window;
use crate::scene::{Stack, StackReader};
use gdal::raster::{Buffer, RasterCreationOptions};
use gdal::spatial_ref::SpatialRef;
use gdal::{DriverManager, Metadata};
use std::path::Path;

/// Writes `stack` as a float32 GeoTIFF (NaN = no data) at `path`, via a temporary name.
pub fn write_stack(stack: &Stack, path: &Path) -> Result<(), Error> {
    let part = crate::util::partial_name(path);
    let mut temps = crate::util::TempFiles::new();
    temps.track(part.clone());
    temps.track(crate::output::raster::aux_path(&part));
    let gerr = |e: gdal::errors::GdalError| OutputError::Gdal {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let driver = DriverManager::get_driver_by_name("GTiff").map_err(gerr)?;
    let mut opts = RasterCreationOptions::new();
    for (k, v) in [
        ("TILED", "YES"),
        ("INTERLEAVE", "BAND"),
        ("BIGTIFF", "IF_SAFER"),
    ] {
        opts.set_name_value(k, v).map_err(gerr)?;
    }
    let n = stack.bands.len();
    let mut ds = driver
        .create_with_band_type_with_options::<f32, _>(&part, stack.width, stack.height, n, &opts)
        .map_err(gerr)?;
    ds.set_geo_transform(&stack.geo_transform).map_err(gerr)?;
    ds.set_spatial_ref(&SpatialRef::from_wkt(&stack.srs_wkt).map_err(gerr)?)
        .map_err(gerr)?;
    for (i, b) in stack.bands.iter().enumerate() {
        let mut band = ds.rasterband(i + 1).map_err(gerr)?;
        band.set_description(&b.model_band).map_err(gerr)?;
        band.set_no_data_value(Some(f64::NAN)).map_err(gerr)?;
    }
    ds.set_metadata_item("EOINFER_SCENE", &stack.scene, "")
        .map_err(gerr)?;
    let mut reader = StackReader::open(stack)?;
    let strip = 256;
    let mut y = 0;
    while y < stack.height {
        let rows = strip.min(stack.height - y);
        let plane = rows * stack.width;
        let mut data = vec![0.0_f32; stack.vrt_bands * plane];
        reader.read(
            Window {
                x: 0,
                y: y as i64,
                width: stack.width,
                height: rows,
            },
            &mut data,
        )?;
        for (i, b) in stack.bands.iter().enumerate() {
            let mut vals: Vec<f32> = match b.vrt_band {
                Some(k) => data[(k - 1) * plane..k * plane]
                    .iter()
                    .map(|&v| {
                        if v.is_finite() {
                            b.rescale.apply(v)
                        } else {
                            f32::NAN
                        }
                    })
                    .collect(),
                None => vec![f32::NAN; plane],
            };
            let mut band = ds.rasterband(i + 1).map_err(gerr)?;
            let mut buf = Buffer::new((stack.width, rows), std::mem::take(&mut vals));
            band.write((0, y as isize), (stack.width, rows), &mut buf)
                .map_err(gerr)?;
        }
        y += rows;
    }
    ds.flush_cache().map_err(gerr)?;
    drop(ds);
    std::fs::rename(&part, path).map_err(|source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let aux = crate::output::raster::aux_path(&part);
    if aux.exists() {
        let _ = std::fs::rename(&aux, crate::output::raster::aux_path(path));
    }
    temps.disarm();
    Ok(())
}
