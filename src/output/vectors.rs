//! Polygons of a class map: every 4-connected region of one class becomes one polygon with its
//! class id, class name and area. The whole final class map is polygonised (GDAL's
//! `GDALPolygonize`, which walks the raster scanline by scanline and keeps only the polygons
//! still open on the current line), so regions that cross tile edges are one polygon: no
//! seams along tile boundaries, and memory follows the number of open polygons, not the
//! raster size. Written as GeoPackage (default), GeoParquet 1.1 or FlatGeobuf.

use crate::error::OutputError;
use crate::util::partial_name;
use gdal::spatial_ref::SpatialRef;
use gdal::vector::{Feature, FieldDefn, Geometry, LayerAccess, LayerOptions, OGRFieldType};
use gdal::{Dataset, DriverManager};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Vector output formats.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum VectorFormat {
    /// GeoPackage (`.gpkg`): opens in every QGIS.
    #[default]
    Gpkg,
    /// GeoParquet 1.1 (`.parquet`): geopandas, DuckDB.
    Parquet,
    /// FlatGeobuf (`.fgb`).
    Fgb,
}

impl VectorFormat {
    /// File extension.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            VectorFormat::Gpkg => "gpkg",
            VectorFormat::Parquet => "parquet",
            VectorFormat::Fgb => "fgb",
        }
    }
}

/// How to polygonise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, Default)]
pub struct PolygonizeOptions {
    /// Output format.
    pub format: VectorFormat,
    /// Polygons smaller than this (m²) are dropped.
    pub min_area: f64,
    /// Simplification tolerance in CRS units (0: none). Topology is preserved per polygon.
    pub simplify: f64,
}

/// What was written.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PolygonStats {
    /// Polygons written.
    pub polygons: u64,
    /// Polygons dropped by `min_area`.
    pub dropped: u64,
    /// Area (m², before simplification) per class name.
    pub area_m2: BTreeMap<String, f64>,
    /// Polygons per class name.
    pub count: BTreeMap<String, u64>,
}

fn verr(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Category names of a band (index = class value), from the raster or its `.aux.xml`.
#[must_use]
pub fn category_names(band: &gdal::raster::RasterBand<'_>) -> Vec<String> {
    let mut names = Vec::new();
    // GeoTIFF loads the `.aux.xml` lazily, on the first georeferencing or nodata query, and
    // the category names do not trigger it (GDAL 3.6): ask for nodata first.
    let _ = band.no_data_value();
    unsafe {
        let list = gdal_sys::GDALGetRasterCategoryNames(band.c_rasterband());
        if list.is_null() {
            return names;
        }
        let mut i = 0;
        loop {
            let p = *list.add(i);
            if p.is_null() {
                break;
            }
            names.push(std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned());
            i += 1;
        }
    }
    names
}

/// Polygonises band 1 of `classes` (its nodata pixels excluded) into layer `layer` of `out`,
/// written under a temporary name and renamed when complete.
pub fn polygonize(
    classes: &Path,
    out: &Path,
    layer_name: &str,
    opts: &PolygonizeOptions,
) -> Result<PolygonStats, crate::Error> {
    let scene_err = |m: String| crate::error::SceneError::NotRaster {
        path: classes.to_path_buf(),
        message: m,
    };
    let ds = Dataset::open(classes).map_err(|e| scene_err(e.to_string()))?;
    let band = ds.rasterband(1).map_err(|e| scene_err(e.to_string()))?;
    if band.band_type() != gdal::raster::GdalDataType::UInt8 {
        return Err(scene_err(
            "band 1 is not 8-bit: polygonize takes a class map (e.g. <name>.classes.tif)".into(),
        )
        .into());
    }
    let srs = ds.spatial_ref().map_err(|_| {
        scene_err("the class map has no CRS; polygons need one to carry areas".into())
    })?;
    if srs.is_geographic() {
        return Err(scene_err(
            "the class map is in a geographic CRS (degrees); areas in m² need a projected CRS \
             (reproject it with gdalwarp -t_srs EPSG:<UTM zone>)"
                .into(),
        )
        .into());
    }
    let names = category_names(&band);
    let name_of = |c: i32| {
        usize::try_from(c)
            .ok()
            .and_then(|i| names.get(i))
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| c.to_string())
    };

    // 1. GDALPolygonize into a temporary GeoPackage beside the output.
    let dir = out.parent().unwrap_or_else(|| Path::new("."));
    let stem = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let raw_path = dir.join(format!(".{stem}.polygonize.gpkg"));
    let _ = std::fs::remove_file(&raw_path);
    let cleanup = Cleanup(vec![raw_path.clone(), partial_name(out)]);
    {
        let gpkg = DriverManager::get_driver_by_name("GPKG").map_err(|e| verr(&raw_path, e))?;
        let mut raw = gpkg
            .create_vector_only(&raw_path)
            .map_err(|e| verr(&raw_path, e))?;
        let layer = raw
            .create_layer(LayerOptions {
                name: "raw",
                srs: Some(&srs),
                ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
                options: None,
            })
            .map_err(|e| verr(&raw_path, e))?;
        FieldDefn::new("class", OGRFieldType::OFTInteger)
            .and_then(|f| f.add_to_layer(&layer))
            .map_err(|e| verr(&raw_path, e))?;
        let rc = unsafe {
            let l = layer.c_layer();
            gdal_sys::OGR_L_StartTransaction(l);
            let mask = gdal_sys::GDALGetMaskBand(band.c_rasterband());
            let rc = gdal_sys::GDALPolygonize(
                band.c_rasterband(),
                mask,
                l,
                0,
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
            );
            gdal_sys::OGR_L_CommitTransaction(l);
            rc
        };
        if rc != gdal_sys::CPLErr::CE_None {
            return Err(verr(&raw_path, "GDALPolygonize failed").into());
        }
    }

    // 2. Copy with class names and areas (and the filters) into the output format.
    let raw = Dataset::open(&raw_path).map_err(|e| verr(&raw_path, e))?;
    let mut layer = raw.layer(0).map_err(|e| verr(&raw_path, e))?;
    let part = partial_name(out);
    let _ = std::fs::remove_file(&part);
    let mut stats = PolygonStats::default();
    let mut sink = Sink::create(&part, opts.format, &srs, layer_name)?;
    for f in layer.features() {
        let class = f.field_as_integer(0).ok().flatten().unwrap_or(-1);
        let Some(geom) = f.geometry() else { continue };
        let area = geom.area();
        if area < opts.min_area {
            stats.dropped += 1;
            continue;
        }
        let name = name_of(class);
        let geom = if opts.simplify > 0.0 {
            geom.simplify_preserve_topology(opts.simplify)
                .map_err(|e| verr(out, e))?
        } else {
            geom.clone()
        };
        sink.add(class, &name, area, &geom)?;
        stats.polygons += 1;
        *stats.area_m2.entry(name.clone()).or_default() += area;
        *stats.count.entry(name).or_default() += 1;
    }
    drop(raw);
    sink.finish()?;
    std::fs::rename(&part, out).map_err(|source| OutputError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    drop(cleanup);
    Ok(stats)
}

/// Removes temporary files when dropped (success or error).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Sink {
    Ogr {
        ds: Dataset,
        path: PathBuf,
    },
    Parquet {
        path: PathBuf,
        writer: Option<SerializedFileWriter<std::fs::File>>,
        class: Vec<i32>,
        name: Vec<ByteArray>,
        area: Vec<f64>,
        wkb: Vec<ByteArray>,
        bbox: [f64; 4],
        projjson: String,
    },
}

const ROW_GROUP: usize = 65_536;

impl Sink {
    fn create(
        path: &Path,
        format: VectorFormat,
        srs: &SpatialRef,
        layer: &str,
    ) -> Result<Self, OutputError> {
        let layer = if layer.is_empty() { "polygons" } else { layer }.to_string();
        match format {
            VectorFormat::Gpkg | VectorFormat::Fgb => {
                let driver = DriverManager::get_driver_by_name(if format == VectorFormat::Gpkg {
                    "GPKG"
                } else {
                    "FlatGeobuf"
                })
                .map_err(|e| verr(path, e))?;
                let mut ds = driver.create_vector_only(path).map_err(|e| verr(path, e))?;
                {
                    let l = ds
                        .create_layer(LayerOptions {
                            name: &layer,
                            srs: Some(srs),
                            ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
                            options: None,
                        })
                        .map_err(|e| verr(path, e))?;
                    l.create_defn_fields(&[
                        ("class", OGRFieldType::OFTInteger),
                        ("class_name", OGRFieldType::OFTString),
                        ("area_m2", OGRFieldType::OFTReal),
                    ])
                    .map_err(|e| verr(path, e))?;
                    unsafe { gdal_sys::OGR_L_StartTransaction(l.c_layer()) };
                }
                Ok(Sink::Ogr {
                    ds,
                    path: path.to_path_buf(),
                })
            }
            VectorFormat::Parquet => Ok(Sink::Parquet {
                path: path.to_path_buf(),
                writer: None,
                class: Vec::new(),
                name: Vec::new(),
                area: Vec::new(),
                wkb: Vec::new(),
                bbox: [
                    f64::INFINITY,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::NEG_INFINITY,
                ],
                projjson: srs.to_projjson().unwrap_or_default(),
            }),
        }
    }

    fn add(
        &mut self,
        class: i32,
        class_name: &str,
        area: f64,
        geom: &Geometry,
    ) -> Result<(), OutputError> {
        match self {
            Sink::Ogr { ds, path } => {
                let layer = ds.layer(0).map_err(|e| verr(path, e))?;
                let mut f = Feature::new(layer.defn()).map_err(|e| verr(path, e))?;
                f.set_field_integer(0, class).map_err(|e| verr(path, e))?;
                f.set_field_string(1, class_name)
                    .map_err(|e| verr(path, e))?;
                f.set_field_double(2, area).map_err(|e| verr(path, e))?;
                f.set_geometry(geom.clone()).map_err(|e| verr(path, e))?;
                f.create(&layer).map_err(|e| verr(path, e))?;
            }
            Sink::Parquet {
                path,
                class: c,
                name,
                area: a,
                wkb,
                bbox,
                ..
            } => {
                let env = geom.envelope();
                *bbox = [
                    bbox[0].min(env.MinX),
                    bbox[1].min(env.MinY),
                    bbox[2].max(env.MaxX),
                    bbox[3].max(env.MaxY),
                ];
                c.push(class);
                name.push(ByteArray::from(class_name));
                a.push(area);
                wkb.push(ByteArray::from(geom.wkb().map_err(|e| verr(path, e))?));
                if c.len() >= ROW_GROUP {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        let Sink::Parquet {
            path,
            writer,
            class,
            name,
            area,
            wkb,
            ..
        } = self
        else {
            return Ok(());
        };
        let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
            path: path.clone(),
            message: e.to_string(),
        };
        if writer.is_none() {
            // The geo metadata (with the bbox) goes in the footer, written at close.
            let schema = Arc::new(
                parse_message_type(
                    "message polygons {\n required int32 class;\n required binary class_name (UTF8);\n required double area_m2;\n required binary geometry;\n}\n",
                )
                .map_err(|e| perr(&e))?,
            );
            let file = std::fs::File::create(&*path).map_err(|source| OutputError::Io {
                path: path.clone(),
                source,
            })?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            *writer = Some(
                SerializedFileWriter::new(file, schema, Arc::new(props)).map_err(|e| perr(&e))?,
            );
        }
        let Some(w) = writer.as_mut() else {
            return Ok(());
        };
        let mut rg = w.next_row_group().map_err(|e| perr(&e))?;
        macro_rules! column {
            ($ty:ty, $vals:expr) => {{
                let mut col = rg
                    .next_column()
                    .map_err(|e| perr(&e))?
                    .ok_or_else(|| perr(&"missing column"))?;
                col.typed::<$ty>()
                    .write_batch($vals, None, None)
                    .map_err(|e| perr(&e))?;
                col.close().map_err(|e| perr(&e))?;
            }};
        }
        column!(Int32Type, class);
        column!(ByteArrayType, name);
        column!(DoubleType, area);
        column!(ByteArrayType, wkb);
        rg.close().map_err(|e| perr(&e))?;
        class.clear();
        name.clear();
        area.clear();
        wkb.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(), OutputError> {
        self.flush()?;
        match self {
            Sink::Ogr { ds, path } => {
                let layer = ds.layer(0).map_err(|e| verr(&path, e))?;
                let rc = unsafe { gdal_sys::OGR_L_CommitTransaction(layer.c_layer()) };
                if rc != gdal_sys::OGRErr::OGRERR_NONE {
                    return Err(verr(&path, "committing the polygons failed"));
                }
                drop(ds);
                Ok(())
            }
            Sink::Parquet {
                path,
                writer,
                bbox,
                projjson,
                ..
            } => {
                let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                };
                #[allow(clippy::single_match_else)]
                let mut writer = match writer {
                    Some(w) => w,
                    None => {
                        // No polygon at all: an empty file with the schema.
                        let schema = Arc::new(
                            parse_message_type(
                                "message polygons {\n required int32 class;\n required binary class_name (UTF8);\n required double area_m2;\n required binary geometry;\n}\n",
                            )
                            .map_err(|e| perr(&e))?,
                        );
                        let file =
                            std::fs::File::create(&path).map_err(|source| OutputError::Io {
                                path: path.clone(),
                                source,
                            })?;
                        SerializedFileWriter::new(
                            file,
                            schema,
                            Arc::new(WriterProperties::builder().build()),
                        )
                        .map_err(|e| perr(&e))?
                    }
                };
                let crs: serde_json::Value =
                    serde_json::from_str(&projjson).unwrap_or(serde_json::Value::Null);
                let mut col = serde_json::json!({"encoding": "WKB", "geometry_types": ["Polygon"], "crs": crs});
                if bbox[0].is_finite() {
                    col["bbox"] = serde_json::json!(bbox);
                }
                let geo = serde_json::json!({"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": col}});
                writer.append_key_value_metadata(KeyValue::new("geo".to_string(), geo.to_string()));
                writer.close().map_err(|e| perr(&e))?;
                Ok(())
            }
        }
    }
}
