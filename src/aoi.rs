//! Areas of interest: `--aoi` read into one polygon, the output grid it defines (one CRS, the
//! model's resolution, an origin on a whole multiple of the pixel size, so neighbouring runs
//! line up pixel for pixel) and the pixel mask that turns everything outside it into nodata.

use crate::error::AoiError;
use crate::grid::Window;
use crate::scene::GridSpec;
use gdal::DriverManager;
use gdal::raster::{RasterizeOptions, rasterize};
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::vector::{Geometry, LayerAccess};
use std::path::Path;

/// The area of interest and the output grid it defines.
#[derive(Debug, Clone)]
pub struct Aoi {
    /// `--aoi` as given.
    pub source: String,
    /// The AOI polygon in the grid's CRS (WKT).
    pub wkt: String,
    /// The output grid.
    pub grid: GridSpec,
    /// EPSG code of the grid's CRS.
    pub epsg: Option<i32>,
}

fn gerr(aoi: &str, e: impl std::fmt::Display) -> AoiError {
    AoiError::Gdal {
        aoi: aoi.to_string(),
        message: e.to_string(),
    }
}

/// A spatial reference from `EPSG:n`, WKT or PROJ, in x/y (longitude, latitude) order.
pub fn srs_from(flag: &'static str, value: &str) -> Result<SpatialRef, AoiError> {
    let mut srs = SpatialRef::from_definition(value).map_err(|e| AoiError::Crs {
        flag,
        value: value.to_string(),
        message: e.to_string(),
    })?;
    srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    Ok(srs)
}

fn wgs84() -> SpatialRef {
    let mut s = SpatialRef::from_epsg(4326).expect("EPSG:4326 is in every PROJ database");
    s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    s
}

/// The EPSG code of the WGS 84 / UTM zone holding a longitude and latitude (north: 326zz,
/// south: 327zz).
///
/// ```
/// assert_eq!(eoinfer::aoi::utm_epsg(13.4, 52.5), 32633); // Berlin
/// assert_eq!(eoinfer::aoi::utm_epsg(-70.6, -33.4), 32719); // Santiago
/// ```
#[must_use]
pub fn utm_epsg(lon: f64, lat: f64) -> u32 {
    let zone = (((lon + 180.0) / 6.0).floor() as i64).clamp(0, 59) as u32 + 1;
    if lat >= 0.0 {
        32600 + zone
    } else {
        32700 + zone
    }
}

/// `minx,miny,maxx,maxy` as four numbers, if it is that.
fn parse_bbox(s: &str) -> Option<[f64; 4]> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    let b: [f64; 4] = v.try_into().ok()?;
    (b.iter().all(|x| x.is_finite()) && b[0] < b[2] && b[1] < b[3]).then_some(b)
}

/// A rectangle as a polygon with `n` points per edge (edges stay true after reprojection).
pub(crate) fn dense_box(b: [f64; 4], n: usize) -> String {
    let [x0, y0, x1, y1] = b;
    let mut pts = Vec::new();
    let lerp = |a: f64, c: f64, t: f64| a + (c - a) * t;
    for i in 0..n {
        pts.push((lerp(x0, x1, i as f64 / n as f64), y0));
    }
    for i in 0..n {
        pts.push((x1, lerp(y0, y1, i as f64 / n as f64)));
    }
    for i in 0..n {
        pts.push((lerp(x1, x0, i as f64 / n as f64), y1));
    }
    for i in 0..n {
        pts.push((x0, lerp(y1, y0, i as f64 / n as f64)));
    }
    pts.push((x0, y0));
    let coords: Vec<String> = pts
        .iter()
        .map(|(x, y)| format!("{x:.12} {y:.12}"))
        .collect();
    format!("POLYGON (({}))", coords.join(", "))
}

/// The bounding box in longitude / latitude (minx, miny, maxx, maxy) of an AOI value (a
/// vector file's features, a WKT polygon, a bounding box).
pub fn lonlat_bbox(value: &str) -> Result<[f64; 4], AoiError> {
    let (geom, srs) = read(value, None)?;
    let mut g = geom.clone();
    let mut ll = wgs84();
    ll.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    g.set_spatial_ref(srs);
    let g = g.transform_to(&ll).map_err(|e| AoiError::Parse {
        aoi: value.to_string(),
        message: format!("cannot be transformed to longitude / latitude: {e}"),
    })?;
    let e = g.envelope();
    Ok([e.MinX, e.MinY, e.MaxX, e.MaxY])
}

/// Reads `--aoi` into one polygon (the union of a file's features) and its CRS.
fn read(value: &str, aoi_crs: Option<&str>) -> Result<(Geometry, SpatialRef), AoiError> {
    let parse = |m: String| AoiError::Parse {
        aoi: value.to_string(),
        message: m,
    };
    let given_srs = || -> Result<SpatialRef, AoiError> {
        match aoi_crs {
            Some(c) => srs_from("--aoi-crs", c),
            None => Ok(wgs84()),
        }
    };
    let path = Path::new(value);
    let (geom, srs) = if path.is_file() {
        let ds = gdal::Dataset::open(path).map_err(|e| parse(e.to_string()))?;
        if ds.layer_count() == 0 {
            return Err(parse("it has no vector layer".into()));
        }
        let mut layer = ds.layer(0).map_err(|e| parse(e.to_string()))?;
        let srs = match (aoi_crs, layer.spatial_ref()) {
            (Some(c), _) => srs_from("--aoi-crs", c)?,
            (None, Some(mut s)) => {
                s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
                s
            }
            (None, None) => wgs84(),
        };
        let mut union: Option<Geometry> = None;
        for f in layer.features() {
            let Some(g) = f.geometry() else { continue };
            union = Some(match union {
                None => g.clone(),
                Some(u) => u
                    .union(g)
                    .ok_or_else(|| parse("the union of its polygons failed".into()))?,
            });
        }
        (
            union.ok_or_else(|| AoiError::Empty {
                aoi: value.to_string(),
            })?,
            srs,
        )
    } else if let Some(b) = parse_bbox(value) {
        let g = Geometry::from_wkt(&dense_box(b, 64)).map_err(|e| parse(e.to_string()))?;
        (g, given_srs()?)
    } else if value
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("POLYGON")
        || value
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("MULTIPOLYGON")
    {
        let g = Geometry::from_wkt(value).map_err(|e| parse(e.to_string()))?;
        (g, given_srs()?)
    } else {
        return Err(parse(
            "it is not a file, a WKT polygon or four comma-separated numbers minx,miny,maxx,maxy with minx < maxx and miny < maxy".into(),
        ));
    };
    if geom.area() <= 0.0 {
        return Err(AoiError::Empty {
            aoi: value.to_string(),
        });
    }
    if srs.is_geographic() {
        // Long edges in degrees curve once projected: add a point every 0.01 degree.
        unsafe { gdal_sys::OGR_G_Segmentize(geom.c_geometry(), 0.01) };
    }
    Ok((geom, srs))
}

impl Aoi {
    /// Reads `--aoi` (with `--aoi-crs` for a bounding box or WKT, default EPSG:4326) and lays
    /// the output grid over it: `crs` or the UTM zone of the AOI's centroid, `resolution`
    /// metres, origin and extent snapped outward to whole multiples of `resolution`.
    pub fn build(
        value: &str,
        aoi_crs: Option<&str>,
        crs: Option<&str>,
        resolution: f64,
    ) -> Result<Self, AoiError> {
        let (geom, srs) = read(value, aoi_crs)?;
        let to = |target: &SpatialRef| -> Result<Geometry, AoiError> {
            let t = CoordTransform::new(&srs, target).map_err(|e| gerr(value, e))?;
            geom.transform(&t).map_err(|e| gerr(value, e))
        };
        let target = if let Some(c) = crs {
            let s = srs_from("--crs", c)?;
            if !s.is_projected() {
                return Err(AoiError::Geographic { crs: c.to_string() });
            }
            s
        } else {
            let ll = to(&wgs84())?;
            let centroid = Geometry::empty(gdal_sys::OGRwkbGeometryType::wkbPoint)
                .map_err(|e| gerr(value, e))?;
            let rv = unsafe { gdal_sys::OGR_G_Centroid(ll.c_geometry(), centroid.c_geometry()) };
            if rv != gdal_sys::OGRErr::OGRERR_NONE as i32 {
                return Err(gerr(value, "its centroid cannot be computed"));
            }
            let (lon, lat, _) = centroid.get_point(0);
            let mut s = SpatialRef::from_epsg(utm_epsg(lon, lat)).map_err(|e| gerr(value, e))?;
            s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
            s
        };
        let g = to(&target)?;
        let env = g.envelope();
        let r = resolution;
        let (x0, x1) = ((env.MinX / r).floor() * r, (env.MaxX / r).ceil() * r);
        let (y0, y1) = ((env.MinY / r).floor() * r, (env.MaxY / r).ceil() * r);
        let width = ((x1 - x0) / r).round().max(1.0) as usize;
        let height = ((y1 - y0) / r).round().max(1.0) as usize;
        Ok(Self {
            source: value.to_string(),
            wkt: g.wkt().map_err(|e| gerr(value, e))?,
            grid: GridSpec {
                width,
                height,
                geo_transform: [x0, r, 0.0, y1, 0.0, -r],
                srs_wkt: target.to_wkt().map_err(|e| gerr(value, e))?,
            },
            epsg: target.auth_code().ok(),
        })
    }

    /// The whole of an existing grid as the area (the scenes of one date in a time series,
    /// mosaicked on the first date's grid).
    #[must_use]
    pub fn from_grid(label: &str, grid: &GridSpec, epsg: Option<i32>) -> Self {
        let gt = grid.geo_transform;
        let (x0, y1) = (gt[0], gt[3]);
        let (x1, y0) = (
            gt[0] + grid.width as f64 * gt[1],
            gt[3] + grid.height as f64 * gt[5],
        );
        Self {
            source: label.to_string(),
            wkt: format!("POLYGON (({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"),
            grid: grid.clone(),
            epsg,
        }
    }

    /// The AOI polygon in the grid's CRS.
    pub fn geometry(&self) -> Result<Geometry, AoiError> {
        Geometry::from_wkt(&self.wkt).map_err(|e| gerr(&self.source, e))
    }

    /// Whether the pixels of `window` (grid coordinates) touch the AOI polygon.
    #[must_use]
    pub fn touches(&self, polygon: &Geometry, window: Window) -> bool {
        let gt = &self.grid.geo_transform;
        let (x0, x1) = (
            gt[0] + window.x as f64 * gt[1],
            gt[0] + (window.x + window.width as i64) as f64 * gt[1],
        );
        let (y1, y0) = (
            gt[3] + window.y as f64 * gt[5],
            gt[3] + (window.y + window.height as i64) as f64 * gt[5],
        );
        Geometry::bbox(x0, y0, x1, y1).is_ok_and(|b| polygon.intersects(&b))
    }

    /// The AOI mask of grid rows `y..y + rows`: 1 where the pixel's centre is inside.
    pub fn mask(&self, polygon: &Geometry, y: usize, rows: usize) -> Result<Vec<u8>, AoiError> {
        let w = self.grid.width;
        self.mask_scaled(polygon, (0, y), (w, rows), 1)
    }

    /// The AOI mask of the `w` x `rows` cells at column `x`, row `y` of the grid coarsened
    /// by `scale` (an encoder's patch grid: one cell per `scale` x `scale` pixels): 1 where
    /// the cell's centre is inside.
    pub fn mask_scaled(
        &self,
        polygon: &Geometry,
        (x, y): (usize, usize),
        (w, rows): (usize, usize),
        scale: usize,
    ) -> Result<Vec<u8>, AoiError> {
        let g = &self.grid.geo_transform;
        let s = scale.max(1) as f64;
        let gt = &[g[0], g[1] * s, 0.0, g[3], 0.0, g[5] * s];
        let mem = DriverManager::get_driver_by_name("MEM").map_err(|e| gerr(&self.source, e))?;
        let mut ds = mem
            .create_with_band_type::<u8, _>("", w, rows, 1)
            .map_err(|e| gerr(&self.source, e))?;
        ds.set_geo_transform(&[
            gt[0] + x as f64 * gt[1],
            gt[1],
            0.0,
            gt[3] + y as f64 * gt[5],
            0.0,
            gt[5],
        ])
        .map_err(|e| gerr(&self.source, e))?;
        rasterize(
            &mut ds,
            &[1],
            std::slice::from_ref(polygon),
            &[1.0],
            Some(RasterizeOptions::default()),
        )
        .map_err(|e| gerr(&self.source, e))?;
        Ok(ds
            .rasterband(1)
            .and_then(|b| b.read_as::<u8>((0, 0), (w, rows), (w, rows), None))
            .map_err(|e| gerr(&self.source, e))?
            .data()
            .to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounding_box_gets_a_utm_grid_on_whole_multiples_of_the_pixel_size() {
        let a = Aoi::build("13.0,52.0,13.1,52.05", None, None, 30.0).expect("aoi");
        assert_eq!(a.epsg, Some(32633));
        let gt = a.grid.geo_transform;
        assert_eq!(gt[0] % 30.0, 0.0);
        assert_eq!(gt[3] % 30.0, 0.0);
        // About 6.9 km x 5.6 km.
        assert!((220..240).contains(&a.grid.width), "{}", a.grid.width);
        assert!((180..200).contains(&a.grid.height), "{}", a.grid.height);
        let poly = a.geometry().expect("polygon");
        let mask = a.mask(&poly, 0, a.grid.height).expect("mask");
        let inside = mask.iter().filter(|&&m| m == 1).count();
        // The box is slightly rotated in UTM: most but not all of its bounding grid.
        assert!(
            inside > mask.len() * 9 / 10 && inside < mask.len(),
            "{inside}"
        );
    }

    #[test]
    fn crs_can_be_chosen_and_geographic_crs_is_refused() {
        let a = Aoi::build("13.0,52.0,13.1,52.05", None, Some("EPSG:32632"), 10.0).expect("aoi");
        assert_eq!(a.epsg, Some(32632));
        assert!(matches!(
            Aoi::build("13.0,52.0,13.1,52.05", None, Some("EPSG:4326"), 10.0),
            Err(AoiError::Geographic { .. })
        ));
        assert!(matches!(
            Aoi::build("13.1,52.0,13.0,52.05", None, None, 10.0),
            Err(AoiError::Parse { .. })
        ));
    }
}
