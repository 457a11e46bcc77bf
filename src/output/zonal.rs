//! Zonal statistics of a raster over region polygons: per region, class pixel counts,
//! fractions and areas (class maps) or count / mean / std / min / max per band (continuous
//! rasters), nodata excluded, regions reprojected to the raster's CRS, each region's own
//! attributes kept. Regions are rasterised window by window (row blocks), so a region's size
//! does not set the memory. Written as GeoParquet 1.1 (geometry in the raster's CRS) or CSV.

use crate::error::{OutputError, SceneError};
use crate::util::partial_name;
use gdal::Dataset;
use gdal::Metadata as _;
use gdal::raster::{RasterizeOptions, rasterize};
use gdal::spatial_ref::{AxisMappingStrategy, SpatialRef};
use gdal::vector::{FieldValue, Geometry, LayerAccess};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

/// Rows of the raster read and rasterised at a time.
const BLOCK_ROWS: usize = 512;

/// How the raster's values are summarised.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A class map: band 1 holds class ids (names from its categories).
    Classes(Vec<String>),
    /// Continuous bands (probabilities, embeddings, reflectance).
    Continuous(Vec<String>),
}

/// One attribute value of a region.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// Integer.
    Int(Option<i64>),
    /// Float.
    Real(Option<f64>),
    /// Text (anything else, as text).
    Text(Option<String>),
}

/// Per-region accumulation.
#[derive(Debug, Clone, Default)]
struct Acc {
    /// Pixels inside the region on the raster, valid or not.
    inside: u64,
    pixels: u64,
    counts: Vec<u64>,
    sum: Vec<f64>,
    sum2: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    n: Vec<u64>,
}

/// Statistics of all regions, in region order.
#[derive(Debug, Clone)]
pub struct Table {
    /// What the raster holds.
    pub kind: Kind,
    /// Region attribute names.
    pub attr_names: Vec<String>,
    /// Region attributes.
    pub attrs: Vec<Vec<Attr>>,
    /// Region geometries in the raster CRS (WKB).
    pub wkb: Vec<Vec<u8>>,
    /// Pixel area in CRS units².
    pub pixel_area: f64,
    accs: Vec<Acc>,
    projjson: String,
}

fn serr(path: &Path, m: impl std::fmt::Display) -> SceneError {
    SceneError::NotRaster {
        path: path.to_path_buf(),
        message: m.to_string(),
    }
}

/// Region attribute names, attributes and geometries.
pub(crate) type Regions = (Vec<String>, Vec<Vec<Attr>>, Vec<Geometry>);

/// Reads polygons from any vector file GDAL opens or GeoParquet, reprojected to `srs`.
pub(crate) fn read_polygons(path: &Path, srs: &SpatialRef) -> Result<Regions, crate::Error> {
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("geoparquet"));
    if is_parquet {
        read_regions_parquet(path, srs)
    } else {
        read_regions(path, srs)
    }
}

/// Reads the regions (any vector format GDAL opens: GeoPackage, GeoJSON, Shapefile,
/// FlatGeobuf, ...), reprojected to `srs`.
fn read_regions(path: &Path, srs: &SpatialRef) -> Result<Regions, crate::Error> {
    let ds = Dataset::open(path).map_err(|e| {
        serr(
            path,
            format!("{e}; pass polygons GDAL reads (GeoPackage, GeoJSON, Shapefile, FlatGeobuf)"),
        )
    })?;
    if ds.layer_count() == 0 {
        return Err(serr(path, "has no vector layer; pass a file of region polygons").into());
    }
    let mut layer = ds.layer(0).map_err(|e| serr(path, e))?;
    let layer_srs = layer.spatial_ref();
    let names: Vec<String> = layer.defn().fields().map(|f| f.name()).collect();
    let types: Vec<u32> = layer.defn().fields().map(|f| f.field_type()).collect();
    let mut target = srs.clone();
    target.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut attrs = Vec::new();
    let mut geoms = Vec::new();
    for f in layer.features() {
        let Some(g) = f.geometry() else { continue };
        let mut g = g.clone();
        if let Some(s) = &layer_srs {
            let mut s = s.clone();
            s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
            let t =
                gdal::spatial_ref::CoordTransform::new(&s, &target).map_err(|e| serr(path, e))?;
            g = g.transform(&t).map_err(|e| serr(path, e))?;
        }
        let row = (0..names.len())
            .map(|i| {
                let v = f.field(i).ok().flatten();
                match types[i] {
                    gdal_sys::OGRFieldType::OFTInteger | gdal_sys::OGRFieldType::OFTInteger64 => {
                        Attr::Int(v.and_then(FieldValue::into_int64))
                    }
                    gdal_sys::OGRFieldType::OFTReal => {
                        Attr::Real(v.and_then(FieldValue::into_real))
                    }
                    _ => Attr::Text(v.and_then(|v| match v {
                        FieldValue::StringValue(s) => Some(s),
                        FieldValue::DateValue(d) => Some(d.to_string()),
                        FieldValue::DateTimeValue(d) => Some(d.date_naive().to_string()),
                        other => other.into_string(),
                    })),
                }
            })
            .collect();
        attrs.push(row);
        geoms.push(g);
    }
    if geoms.is_empty() {
        return Err(serr(path, "has no features with a geometry").into());
    }
    Ok((names, attrs, geoms))
}

/// Reads regions from GeoParquet (the `geo` metadata names the geometry column and its CRS;
/// WKB geometries), reprojected to `srs`. Attributes: every other top-level column.
fn read_regions_parquet(path: &Path, srs: &SpatialRef) -> Result<Regions, crate::Error> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file = std::fs::File::open(path).map_err(|e| serr(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| serr(path, format!("{e}; pass a GeoParquet file")))?;
    let geo: serde_json::Value = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| {
            kv.iter()
                .find(|k| k.key == "geo")
                .and_then(|k| k.value.clone())
        })
        .and_then(|v| serde_json::from_str(&v).ok())
        .ok_or_else(|| {
            serr(
                path,
                "has no GeoParquet `geo` metadata; write it with geopandas' to_parquet",
            )
        })?;
    let geom_col = geo["primary_column"]
        .as_str()
        .unwrap_or("geometry")
        .to_string();
    let crs = &geo["columns"][&geom_col]["crs"];
    let mut region_srs = if crs.is_null() {
        SpatialRef::from_epsg(4326).map_err(|e| serr(path, e))?
    } else {
        SpatialRef::from_definition(&crs.to_string()).map_err(|e| serr(path, e))?
    };
    region_srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut target = srs.clone();
    target.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let t =
        gdal::spatial_ref::CoordTransform::new(&region_srs, &target).map_err(|e| serr(path, e))?;
    let mut names: Vec<String> = Vec::new();
    let mut attrs = Vec::new();
    let mut geoms = Vec::new();
    for row in reader.get_row_iter(None).map_err(|e| serr(path, e))? {
        let row = row.map_err(|e| serr(path, e))?;
        let mut geom = None;
        let mut vals = Vec::new();
        let first = names.is_empty() && attrs.is_empty();
        for (name, field) in row.get_column_iter() {
            if *name == geom_col {
                if let Field::Bytes(b) = field {
                    geom = Some(Geometry::from_wkb(b.data()).map_err(|e| serr(path, e))?);
                }
                continue;
            }
            if first {
                names.push(name.clone());
            }
            vals.push(match field {
                Field::Null => Attr::Text(None),
                Field::Byte(v) => Attr::Int(Some(i64::from(*v))),
                Field::Short(v) => Attr::Int(Some(i64::from(*v))),
                Field::Int(v) => Attr::Int(Some(i64::from(*v))),
                Field::Long(v) => Attr::Int(Some(*v)),
                Field::UByte(v) => Attr::Int(Some(i64::from(*v))),
                Field::UShort(v) => Attr::Int(Some(i64::from(*v))),
                Field::UInt(v) => Attr::Int(Some(i64::from(*v))),
                Field::Float(v) => Attr::Real(Some(f64::from(*v))),
                Field::Double(v) => Attr::Real(Some(*v)),
                Field::Str(v) => Attr::Text(Some(v.clone())),
                other => Attr::Text(Some(other.to_string())),
            });
        }
        let Some(g) = geom else { continue };
        geoms.push(g.transform(&t).map_err(|e| serr(path, e))?);
        attrs.push(vals);
    }
    if geoms.is_empty() {
        return Err(serr(path, "has no rows with a WKB geometry").into());
    }
    // A column is typed by its first non-null value; nulls take that type.
    for i in 0..names.len() {
        let kind = attrs
            .iter()
            .map(|a: &Vec<Attr>| &a[i])
            .find(|a| !matches!(a, Attr::Text(None)))
            .cloned();
        for a in &mut attrs {
            if matches!(a[i], Attr::Text(None)) {
                a[i] = match kind {
                    Some(Attr::Int(_)) => Attr::Int(None),
                    Some(Attr::Real(_)) => Attr::Real(None),
                    _ => Attr::Text(None),
                };
            }
        }
    }
    Ok((names, attrs, geoms))
}

/// What a raster holds: classes (one uint8 band with category names) or values (every
/// band, named by its description).
fn kind_of(ds: &Dataset, raster: &Path) -> Result<Kind, crate::Error> {
    let n_bands = ds.raster_count();
    let band1 = ds.rasterband(1).map_err(|e| serr(raster, e))?;
    let cats = crate::output::vectors::category_names(&band1);
    Ok(
        if n_bands == 1
            && band1.band_type() == gdal::raster::GdalDataType::UInt8
            && !cats.is_empty()
        {
            Kind::Classes(cats)
        } else {
            Kind::Continuous(
                (1..=n_bands)
                    .map(|b| {
                        ds.rasterband(b)
                            .ok()
                            .map(|r| r.description().unwrap_or_default())
                            .filter(|d| !d.is_empty())
                            .unwrap_or_else(|| format!("band{b}"))
                    })
                    .collect(),
            )
        },
    )
}

/// Computes the statistics of `raster` over the polygons in `regions`.
pub fn zonal(raster: &Path, regions: &Path, all_touched: bool) -> Result<Table, crate::Error> {
    let ds = Dataset::open(raster).map_err(|e| serr(raster, e))?;
    let srs = ds
        .spatial_ref()
        .map_err(|_| serr(raster, "has no CRS; zonal statistics need one"))?;
    let gt = ds.geo_transform().map_err(|e| serr(raster, e))?;
    if gt[2] != 0.0 || gt[4] != 0.0 {
        return Err(serr(raster, "is rotated; warp it north-up with gdalwarp first").into());
    }
    let (width, height) = ds.raster_size();
    let n_bands = ds.raster_count();
    let kind = kind_of(&ds, raster)?;
    let nodata: Vec<Option<f64>> = (1..=n_bands)
        .map(|b| ds.rasterband(b).ok().and_then(|r| r.no_data_value()))
        .collect();
    let scale_offset: Vec<(f64, f64)> = (1..=n_bands)
        .map(|b| {
            ds.rasterband(b).map_or((1.0, 0.0), |r| {
                (r.scale().unwrap_or(1.0), r.offset().unwrap_or(0.0))
            })
        })
        .collect();
    let (attr_names, attrs, geoms) = read_polygons(regions, &srs)?;
    let n_classes = match &kind {
        Kind::Classes(c) => c.len(),
        Kind::Continuous(_) => 0,
    };
    let mem = gdal::DriverManager::get_driver_by_name("MEM").map_err(|e| serr(raster, e))?;
    let mut accs = Vec::with_capacity(geoms.len());
    let mut wkb = Vec::with_capacity(geoms.len());
    for g in &geoms {
        wkb.push(g.wkb().map_err(|e| serr(regions, e))?);
        let mut acc = Acc {
            counts: vec![0; n_classes],
            sum: vec![0.0; n_bands],
            sum2: vec![0.0; n_bands],
            min: vec![f64::INFINITY; n_bands],
            max: vec![f64::NEG_INFINITY; n_bands],
            n: vec![0; n_bands],
            ..Acc::default()
        };
        let env = g.envelope();
        // Pixel window of the envelope (one pixel of margin for all-touched), clipped.
        let x0 = (((env.MinX - gt[0]) / gt[1]).floor() as i64 - 1).max(0);
        let x1 = (((env.MaxX - gt[0]) / gt[1]).ceil() as i64 + 1).min(width as i64);
        let (ya, yb) = ((env.MaxY - gt[3]) / gt[5], (env.MinY - gt[3]) / gt[5]);
        let y0 = (ya.min(yb).floor() as i64 - 1).max(0);
        let y1 = (ya.max(yb).ceil() as i64 + 1).min(height as i64);
        if x1 <= x0 || y1 <= y0 {
            accs.push(acc);
            continue;
        }
        let w = (x1 - x0) as usize;
        let mut y = y0;
        while y < y1 {
            let h = (BLOCK_ROWS as i64).min(y1 - y) as usize;
            let mut mask_ds = mem
                .create_with_band_type::<u8, _>("", w, h, 1)
                .map_err(|e| serr(raster, e))?;
            mask_ds
                .set_geo_transform(&[
                    gt[0] + x0 as f64 * gt[1],
                    gt[1],
                    0.0,
                    gt[3] + y as f64 * gt[5],
                    0.0,
                    gt[5],
                ])
                .map_err(|e| serr(raster, e))?;
            rasterize(
                &mut mask_ds,
                &[1],
                std::slice::from_ref(g),
                &[1.0],
                Some(RasterizeOptions {
                    all_touched,
                    ..RasterizeOptions::default()
                }),
            )
            .map_err(|e| serr(regions, e))?;
            let mask = mask_ds
                .rasterband(1)
                .and_then(|b| b.read_as::<u8>((0, 0), (w, h), (w, h), None))
                .map_err(|e| serr(raster, e))?
                .data()
                .to_vec();
            acc.inside += mask.iter().filter(|&&m| m != 0).count() as u64;
            if mask.iter().any(|&m| m != 0) {
                for b in 0..n_bands {
                    let vals = ds
                        .rasterband(b + 1)
                        .and_then(|r| {
                            r.read_as::<f64>((x0 as isize, y as isize), (w, h), (w, h), None)
                        })
                        .map_err(|e| serr(raster, e))?
                        .data()
                        .to_vec();
                    let (scale, offset) = scale_offset[b];
                    for (&m, &v) in mask.iter().zip(&vals) {
                        if m == 0 || v.is_nan() || nodata[b] == Some(v) {
                            continue;
                        }
                        if n_classes > 0 {
                            acc.pixels += 1;
                            let c = v as usize;
                            if c < n_classes {
                                acc.counts[c] += 1;
                            }
                        } else {
                            let v = v * scale + offset;
                            acc.n[b] += 1;
                            acc.sum[b] += v;
                            acc.sum2[b] += v * v;
                            acc.min[b] = acc.min[b].min(v);
                            acc.max[b] = acc.max[b].max(v);
                        }
                    }
                }
            }
            y += h as i64;
        }
        accs.push(acc);
    }
    Ok(Table {
        kind,
        attr_names,
        attrs,
        wkb,
        pixel_area: (gt[1] * gt[5]).abs(),
        accs,
        projjson: srs.to_projjson().unwrap_or_default(),
    })
}

/// A statistics column.
enum Col {
    Int(String, Vec<i64>),
    Real(String, Vec<f64>),
}

impl Table {
    /// Per region (in region order): its pixels on the raster, of them the valid ones, and
    /// the pixels of each class (empty for continuous rasters).
    #[must_use]
    pub fn class_counts(&self) -> Vec<(u64, u64, Vec<u64>)> {
        self.accs
            .iter()
            .map(|a| (a.inside, a.pixels, a.counts.clone()))
            .collect()
    }

    /// Per region (in region order), per band of a continuous raster: valid pixels, mean and
    /// standard deviation (scale and offset applied).
    #[must_use]
    pub fn band_stats(&self) -> Vec<Vec<(u64, f64, f64)>> {
        self.accs
            .iter()
            .map(|a| {
                (0..a.n.len())
                    .map(|b| {
                        let n = a.n[b];
                        if n == 0 {
                            return (0, f64::NAN, f64::NAN);
                        }
                        let mean = a.sum[b] / n as f64;
                        let var = (a.sum2[b] / n as f64 - mean * mean).max(0.0);
                        (n, mean, var.sqrt())
                    })
                    .collect()
            })
            .collect()
    }

    /// The raster's CRS as PROJJSON (the CRS of [`Self::wkb`]).
    #[must_use]
    pub fn projjson(&self) -> &str {
        &self.projjson
    }

    fn columns(&self) -> Vec<Col> {
        let mut cols = Vec::new();
        match &self.kind {
            Kind::Classes(names) => {
                cols.push(Col::Int(
                    "valid_pixels".into(),
                    self.accs.iter().map(|a| a.pixels as i64).collect(),
                ));
                for (c, name) in names.iter().enumerate() {
                    let n = crate::output::parquet::column_name(name);
                    cols.push(Col::Int(
                        format!("count_{n}"),
                        self.accs.iter().map(|a| a.counts[c] as i64).collect(),
                    ));
                    cols.push(Col::Real(
                        format!("fraction_{n}"),
                        self.accs
                            .iter()
                            .map(|a| {
                                if a.pixels == 0 {
                                    0.0
                                } else {
                                    a.counts[c] as f64 / a.pixels as f64
                                }
                            })
                            .collect(),
                    ));
                    cols.push(Col::Real(
                        format!("area_m2_{n}"),
                        self.accs
                            .iter()
                            .map(|a| a.counts[c] as f64 * self.pixel_area)
                            .collect(),
                    ));
                }
            }
            Kind::Continuous(bands) => {
                for (b, name) in bands.iter().enumerate() {
                    let n = crate::output::parquet::column_name(name);
                    let stat = |f: &dyn Fn(&Acc) -> f64| -> Vec<f64> {
                        self.accs
                            .iter()
                            .map(|a| if a.n[b] == 0 { f64::NAN } else { f(a) })
                            .collect()
                    };
                    cols.push(Col::Int(
                        format!("{n}_count"),
                        self.accs.iter().map(|a| a.n[b] as i64).collect(),
                    ));
                    let mean = |a: &Acc| a.sum[b] / a.n[b] as f64;
                    cols.push(Col::Real(format!("{n}_mean"), stat(&mean)));
                    cols.push(Col::Real(
                        format!("{n}_std"),
                        stat(&|a: &Acc| {
                            (a.sum2[b] / a.n[b] as f64 - mean(a).powi(2))
                                .max(0.0)
                                .sqrt()
                        }),
                    ));
                    cols.push(Col::Real(format!("{n}_min"), stat(&|a: &Acc| a.min[b])));
                    cols.push(Col::Real(format!("{n}_max"), stat(&|a: &Acc| a.max[b])));
                }
            }
        }
        cols
    }

    /// Writes the table as CSV (region attributes, then the statistics; geometry as WKT is
    /// left out, join on the attributes).
    pub fn write_csv(&self, path: &Path) -> Result<(), OutputError> {
        let cols = self.columns();
        let esc = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let mut head: Vec<String> = self.attr_names.iter().map(|n| esc(n)).collect();
        head.extend(cols.iter().map(|c| match c {
            Col::Int(n, _) | Col::Real(n, _) => esc(n),
        }));
        out.push_str(&head.join(","));
        out.push('\n');
        for (r, attrs) in self.attrs.iter().enumerate() {
            let mut cells: Vec<String> = attrs
                .iter()
                .map(|a| match a {
                    Attr::Int(v) => v.map(|v| v.to_string()).unwrap_or_default(),
                    Attr::Real(v) => v.map(|v| v.to_string()).unwrap_or_default(),
                    Attr::Text(v) => v.as_deref().map(esc).unwrap_or_default(),
                })
                .collect();
            cells.extend(cols.iter().map(|c| match c {
                Col::Int(_, v) => v[r].to_string(),
                Col::Real(_, v) if v[r].is_nan() => String::new(),
                Col::Real(_, v) => v[r].to_string(),
            }));
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        crate::util::write_atomic(path, out.as_bytes()).map_err(|source| OutputError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the table as GeoParquet 1.1: region attributes (nullable), statistics and the
    /// region geometry (WKB, in the raster's CRS).
    pub fn write_parquet(&self, path: &Path) -> Result<(), OutputError> {
        let part = partial_name(path);
        let perr = |e: &dyn std::fmt::Display| OutputError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let cols = self.columns();
        let attr_cols: Vec<String> = self
            .attr_names
            .iter()
            .map(|n| crate::output::parquet::column_name(n))
            .collect();
        let mut schema = String::from("message zonal {\n");
        for (i, n) in attr_cols.iter().enumerate() {
            let ty = match self.attrs.first().map(|a| &a[i]) {
                Some(Attr::Int(_)) => "int64",
                Some(Attr::Real(_)) => "double",
                _ => "binary",
            };
            let ann = if ty == "binary" { " (UTF8)" } else { "" };
            let _ = writeln!(schema, " optional {ty} {n}{ann};");
        }
        for c in &cols {
            match c {
                Col::Int(n, _) => {
                    let _ = writeln!(schema, " required int64 {n};");
                }
                Col::Real(n, _) => {
                    let _ = writeln!(schema, " optional double {n};");
                }
            }
        }
        schema.push_str(" required binary geometry;\n}\n");
        let schema = Arc::new(parse_message_type(&schema).map_err(|e| perr(&e))?);
        let crs: serde_json::Value =
            serde_json::from_str(&self.projjson).unwrap_or(serde_json::Value::Null);
        let geo = serde_json::json!({"version": "1.1.0", "primary_column": "geometry",
            "columns": {"geometry": {"encoding": "WKB", "geometry_types": [], "crs": crs}}});
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![KeyValue::new("geo".into(), geo.to_string())]))
            .build();
        let file = std::fs::File::create(&part).map_err(|source| OutputError::Io {
            path: part.clone(),
            source,
        })?;
        let mut w =
            SerializedFileWriter::new(file, schema, Arc::new(props)).map_err(|e| perr(&e))?;
        let mut rg = w.next_row_group().map_err(|e| perr(&e))?;
        let n = self.attrs.len();
        for i in 0..attr_cols.len() {
            let mut col = rg
                .next_column()
                .map_err(|e| perr(&e))?
                .ok_or_else(|| perr(&"missing column"))?;
            let defs: Vec<i16>;
            match self.attrs.first().map(|a| &a[i]) {
                Some(Attr::Int(_)) => {
                    let v: Vec<Option<i64>> = self
                        .attrs
                        .iter()
                        .map(|a| if let Attr::Int(v) = a[i] { v } else { None })
                        .collect();
                    defs = v.iter().map(|x| i16::from(x.is_some())).collect();
                    let vals: Vec<i64> = v.into_iter().flatten().collect();
                    col.typed::<Int64Type>()
                        .write_batch(&vals, Some(&defs), None)
                        .map_err(|e| perr(&e))?;
                }
                Some(Attr::Real(_)) => {
                    let v: Vec<Option<f64>> = self
                        .attrs
                        .iter()
                        .map(|a| if let Attr::Real(v) = a[i] { v } else { None })
                        .collect();
                    defs = v.iter().map(|x| i16::from(x.is_some())).collect();
                    let vals: Vec<f64> = v.into_iter().flatten().collect();
                    col.typed::<DoubleType>()
                        .write_batch(&vals, Some(&defs), None)
                        .map_err(|e| perr(&e))?;
                }
                _ => {
                    let v: Vec<Option<String>> = self
                        .attrs
                        .iter()
                        .map(|a| match &a[i] {
                            Attr::Text(v) => v.clone(),
                            Attr::Int(v) => v.map(|x| x.to_string()),
                            Attr::Real(v) => v.map(|x| x.to_string()),
                        })
                        .collect();
                    defs = v.iter().map(|x| i16::from(x.is_some())).collect();
                    let vals: Vec<ByteArray> = v
                        .into_iter()
                        .flatten()
                        .map(|s| ByteArray::from(s.into_bytes()))
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&vals, Some(&defs), None)
                        .map_err(|e| perr(&e))?;
                }
            }
            col.close().map_err(|e| perr(&e))?;
        }
        for c in &cols {
            let mut col = rg
                .next_column()
                .map_err(|e| perr(&e))?
                .ok_or_else(|| perr(&"missing column"))?;
            match c {
                Col::Int(_, v) => {
                    col.typed::<Int64Type>()
                        .write_batch(v, None, None)
                        .map_err(|e| perr(&e))?;
                }
                Col::Real(_, v) => {
                    let defs: Vec<i16> = v.iter().map(|x| i16::from(!x.is_nan())).collect();
                    let vals: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
                    col.typed::<DoubleType>()
                        .write_batch(&vals, Some(&defs), None)
                        .map_err(|e| perr(&e))?;
                }
            }
            col.close().map_err(|e| perr(&e))?;
        }
        {
            let mut col = rg
                .next_column()
                .map_err(|e| perr(&e))?
                .ok_or_else(|| perr(&"missing column"))?;
            let vals: Vec<ByteArray> = self
                .wkb
                .iter()
                .map(|b| ByteArray::from(b.clone()))
                .collect();
            debug_assert_eq!(vals.len(), n);
            col.typed::<ByteArrayType>()
                .write_batch(&vals, None, None)
                .map_err(|e| perr(&e))?;
            col.close().map_err(|e| perr(&e))?;
        }
        rg.close().map_err(|e| perr(&e))?;
        w.close().map_err(|e| perr(&e))?;
        std::fs::rename(&part, path).map_err(|source| OutputError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
