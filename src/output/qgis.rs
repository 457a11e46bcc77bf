//! QGIS layer styles (`.qml`) written next to the rasters: QGIS loads `<name>.qml` for
//! `<name>.tif` by itself, so a class map opens with the model's class names and colours and
//! a probability raster with a colour ramp, without a styling step.

use crate::error::OutputError;
use crate::model::ClassInfo;
use crate::util::{TempFiles, partial_name};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Writes `text` to a temporary name tracked by `temps`; returns the rename to `fin`.
pub fn stage_text(
    fin: &Path,
    text: &str,
    temps: &mut TempFiles,
) -> Result<(PathBuf, PathBuf), OutputError> {
    let part = temps.track(partial_name(fin));
    std::fs::write(&part, text).map_err(|source| OutputError::Io {
        path: part.clone(),
        source,
    })?;
    Ok((part, fin.to_path_buf()))
}

/// `<name>.qml` beside `<name>.tif`.
#[must_use]
pub fn style_path(raster: &Path) -> PathBuf {
    raster.with_extension("qml")
}

/// Writes the styles of a class map (and of its probabilities) under temporary names and
/// returns the renames that put them beside the final rasters.
pub fn write_styles(
    classes_tif: &Path,
    probs_tif: Option<(&Path, f64)>,
    confidence_tif: Option<&Path>,
    polygons: Option<&Path>,
    classes: &[ClassInfo],
    temps: &mut TempFiles,
) -> Result<Vec<(PathBuf, PathBuf)>, OutputError> {
    let mut moves = Vec::new();
    let mut styles = vec![(style_path(classes_tif), class_map_style(classes))];
    if let Some((p, top)) = probs_tif {
        // The first class after the background one (usually the class of interest).
        styles.push((
            style_path(p),
            probability_style(classes, classes.len().min(2), top),
        ));
    }
    if let Some(p) = confidence_tif {
        styles.push((style_path(p), confidence_style()));
    }
    if let Some(p) = polygons {
        styles.push((style_path(p), polygon_style(classes)));
    }
    for (fin, text) in styles {
        moves.push(stage_text(&fin, &text, temps)?);
    }
    Ok(moves)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

const HEAD: &str = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n<qgis version=\"3.22.0\" styleCategories=\"AllStyleCategories\">\n  <pipe>\n";
const PIPE_TAIL: &str = "    <brightnesscontrast brightness=\"0\" contrast=\"0\" gamma=\"1\"/>\n    <huesaturation saturation=\"0\" grayscaleMode=\"0\" colorizeOn=\"0\" colorizeRed=\"255\" colorizeGreen=\"128\" colorizeBlue=\"128\" colorizeStrength=\"100\" invertColors=\"0\"/>\n    <rasterresampler maxOversampling=\"2\"/>\n";
const MIN_MAX: &str = "      <minMaxOrigin>\n        <limits>None</limits>\n        <extent>WholeRaster</extent>\n        <statAccuracy>Estimated</statAccuracy>\n        <cumulativeCutLower>0.02</cumulativeCutLower>\n        <cumulativeCutUpper>0.98</cumulativeCutUpper>\n        <stdDevFactor>2</stdDevFactor>\n      </minMaxOrigin>\n";
const TAIL: &str = "  </pipe>\n  <blendMode>0</blendMode>\n</qgis>\n";

/// A paletted (unique values) style for a class map: one entry per class with its name and
/// colour; the nodata value 255 stays transparent.
#[must_use]
pub fn class_map_style(classes: &[ClassInfo]) -> String {
    format!("{HEAD}{}{PIPE_TAIL}{TAIL}", class_renderer(classes))
}

fn class_renderer(classes: &[ClassInfo]) -> String {
    let mut s = String::new();
    s.push_str("    <rasterrenderer type=\"paletted\" band=\"1\" opacity=\"1\" alphaBand=\"-1\" nodataColor=\"\">\n      <rasterTransparency/>\n");
    s.push_str(MIN_MAX);
    s.push_str("      <colorPalette>\n");
    for c in classes {
        let _ = writeln!(
            s,
            "        <paletteEntry value=\"{}\" label=\"{}\" color=\"{}\" alpha=\"255\"/>",
            c.value,
            xml_escape(&c.name),
            hex(c.color)
        );
    }
    s.push_str("      </colorPalette>\n    </rasterrenderer>\n");
    s
}

/// A style for a probabilities raster: band `band` (1-based, one band per class) shown with a
/// ramp from transparent (0) to the class's colour (`top`, the stored value of probability 1:
/// 255 for uint8 probabilities, 1 for float32 ones).
#[must_use]
pub fn probability_style(classes: &[ClassInfo], band: usize, top: f64) -> String {
    format!(
        "{HEAD}{}{PIPE_TAIL}{TAIL}",
        probability_renderer(classes, band, top)
    )
}

fn probability_renderer(classes: &[ClassInfo], band: usize, top: f64) -> String {
    let class = &classes[band.clamp(1, classes.len().max(1)) - 1];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "    <rasterrenderer type=\"singlebandpseudocolor\" band=\"{band}\" opacity=\"1\" alphaBand=\"-1\" classificationMin=\"0\" classificationMax=\"{top}\" nodataColor=\"\">\n      <rasterTransparency/>"
    );
    s.push_str(MIN_MAX);
    let _ = writeln!(
        s,
        "      <rastershader>\n        <colorrampshader colorRampType=\"INTERPOLATED\" classificationMode=\"1\" clip=\"0\" minimumValue=\"0\" maximumValue=\"{top}\" labelPrecision=\"0\">\n          <item value=\"0\" label=\"{name} 0 %\" color=\"#ffffff\" alpha=\"0\"/>\n          <item value=\"{top}\" label=\"{name} 100 %\" color=\"{color}\" alpha=\"255\"/>\n        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>",
        name = xml_escape(&class.name),
        color = hex(class.color)
    );
    s
}

/// The colours of the confidence ramp (stored value, colour): red where the model was
/// least sure (a probability near 1 / classes), yellow, green where it was sure; 0 (no class)
/// stays transparent.
pub const CONFIDENCE_RAMP: [(u8, [u8; 3]); 3] = [
    (1, [215, 25, 28]),
    (170, [255, 255, 191]),
    (255, [26, 150, 65]),
];

/// A style for a confidence map (uint8, probability x 255): [`CONFIDENCE_RAMP`] in percent.
#[must_use]
pub fn confidence_style() -> String {
    format!("{HEAD}{}{PIPE_TAIL}{TAIL}", confidence_renderer())
}

fn confidence_renderer() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "    <rasterrenderer type=\"singlebandpseudocolor\" band=\"1\" opacity=\"1\" alphaBand=\"-1\" classificationMin=\"1\" classificationMax=\"255\" nodataColor=\"\">\n      <rasterTransparency/>"
    );
    s.push_str(MIN_MAX);
    s.push_str("      <rastershader>\n        <colorrampshader colorRampType=\"INTERPOLATED\" classificationMode=\"1\" clip=\"0\" minimumValue=\"1\" maximumValue=\"255\" labelPrecision=\"0\">\n");
    for (v, c) in CONFIDENCE_RAMP {
        let _ = writeln!(
            s,
            "          <item value=\"{v}\" label=\"confidence {} %\" color=\"{}\" alpha=\"255\"/>",
            (f64::from(v) / 2.55).round(),
            hex(c)
        );
    }
    s.push_str("        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>\n");
    s
}

/// A style for a value map: band 1 on a viridis-like colour ramp over the value's expected
/// range (`low`..`high`), labelled with its name and unit.
#[must_use]
pub fn value_style(name: &str, unit: &str, low: f64, high: f64) -> String {
    const RAMP: [&str; 5] = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "    <rasterrenderer type=\"singlebandpseudocolor\" band=\"1\" opacity=\"1\" alphaBand=\"-1\" classificationMin=\"{low}\" classificationMax=\"{high}\" nodataColor=\"\">\n      <rasterTransparency/>"
    );
    s.push_str(MIN_MAX);
    let _ = writeln!(
        s,
        "      <rastershader>\n        <colorrampshader colorRampType=\"INTERPOLATED\" classificationMode=\"1\" clip=\"0\" minimumValue=\"{low}\" maximumValue=\"{high}\" labelPrecision=\"2\">"
    );
    for (i, c) in RAMP.iter().enumerate() {
        let v = low + (high - low) * i as f64 / (RAMP.len() - 1) as f64;
        let _ = writeln!(
            s,
            "          <item value=\"{v}\" label=\"{} {v} {}\" color=\"{c}\" alpha=\"255\"/>",
            xml_escape(name),
            xml_escape(unit)
        );
    }
    s.push_str("        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>\n");
    format!("{HEAD}{s}{PIPE_TAIL}{TAIL}")
}

fn rgba(c: [u8; 3]) -> String {
    format!("{},{},{},255", c[0], c[1], c[2])
}

/// A categorised renderer of polygons by their `class` field, filled with the class colours.
fn polygon_renderer(classes: &[ClassInfo]) -> String {
    let mut s = String::from(
        "  <renderer-v2 type=\"categorizedSymbol\" attr=\"class\" symbollevels=\"0\" enableorderby=\"0\" forceraster=\"0\">\n    <categories>\n",
    );
    for (i, c) in classes.iter().enumerate() {
        let _ = writeln!(
            s,
            "      <category value=\"{}\" label=\"{}\" symbol=\"{i}\" render=\"true\"/>",
            c.value,
            xml_escape(&c.name)
        );
    }
    s.push_str("    </categories>\n    <symbols>\n");
    for (i, c) in classes.iter().enumerate() {
        let _ = writeln!(
            s,
            "      <symbol type=\"fill\" name=\"{i}\" alpha=\"0.7\" clip_to_extent=\"1\" force_rhr=\"0\">\n        <layer class=\"SimpleFill\" pass=\"0\" locked=\"0\" enabled=\"1\">\n          <Option type=\"Map\">\n            <Option name=\"color\" value=\"{}\" type=\"QString\"/>\n            <Option name=\"outline_color\" value=\"35,35,35,255\" type=\"QString\"/>\n            <Option name=\"outline_width\" value=\"0.1\" type=\"QString\"/>\n            <Option name=\"style\" value=\"solid\" type=\"QString\"/>\n          </Option>\n        </layer>\n      </symbol>",
            rgba(c.color)
        );
    }
    s.push_str("    </symbols>\n  </renderer-v2>\n");
    s
}

/// A style for the polygons (`<name>.polygons.qml` beside `<name>.polygons.gpkg`).
#[must_use]
pub fn polygon_style(classes: &[ClassInfo]) -> String {
    format!(
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n<qgis version=\"3.22.0\" styleCategories=\"AllStyleCategories\">\n{}</qgis>\n",
        polygon_renderer(classes)
    )
}

/// A layer of a QGIS project.
#[derive(Debug, Clone)]
pub enum ProjectLayer {
    /// The class map.
    Classes(PathBuf),
    /// The probabilities, and the stored value of probability 1 (255 or 1).
    Probabilities(PathBuf, f64),
    /// The polygons (GeoPackage, FlatGeobuf or GeoParquet).
    Polygons(PathBuf),
    /// The confidence map.
    Confidence(PathBuf),
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A QGIS project (`.qgs`) with the run's layers in one group, styled like the `.qml` files;
/// sources are relative to the project file, so the output folder can be moved.
#[must_use]
pub fn project(
    title: &str,
    layers: &[ProjectLayer],
    classes: &[ClassInfo],
    srs_wkt: &str,
    epsg: Option<i32>,
) -> String {
    let authid = epsg.map(|e| format!("EPSG:{e}")).unwrap_or_default();
    let srs = format!(
        "<spatialrefsys><wkt>{}</wkt><authid>{authid}</authid></spatialrefsys>",
        xml_escape(srs_wkt)
    );
    let mut tree = String::new();
    let mut maplayers = String::new();
    let mut order = String::new();
    for (i, l) in layers.iter().enumerate() {
        let (kind, name, source, provider, body, extra) = match l {
            ProjectLayer::Classes(p) => (
                "raster",
                "classes",
                format!("./{}", file_name(p)),
                "gdal",
                format!("<pipe>\n{}{PIPE_TAIL}</pipe>\n", class_renderer(classes)),
                "",
            ),
            ProjectLayer::Probabilities(p, top) => (
                "raster",
                "probabilities",
                format!("./{}", file_name(p)),
                "gdal",
                format!(
                    "<pipe>\n{}{PIPE_TAIL}</pipe>\n",
                    probability_renderer(classes, classes.len().min(2), *top)
                ),
                "",
            ),
            ProjectLayer::Confidence(p) => (
                "raster",
                "confidence",
                format!("./{}", file_name(p)),
                "gdal",
                format!("<pipe>\n{}{PIPE_TAIL}</pipe>\n", confidence_renderer()),
                "",
            ),
            ProjectLayer::Polygons(p) => {
                let layer = file_name(p)
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                (
                    "vector",
                    "polygons",
                    format!("./{}|layername={layer}", file_name(p)),
                    "ogr",
                    polygon_renderer(classes),
                    " geometry=\"Polygon\"",
                )
            }
        };
        let id = format!("{name}_{i}");
        let _ = writeln!(
            tree,
            "      <layer-tree-layer id=\"{id}\" name=\"{name}\" source=\"{}\" providerKey=\"{provider}\" checked=\"Qt::Checked\" expanded=\"1\"/>",
            xml_escape(&source)
        );
        let _ = writeln!(order, "      <item>{id}</item>");
        let _ = writeln!(
            maplayers,
            "    <maplayer type=\"{kind}\"{extra}>\n      <id>{id}</id>\n      <datasource>{}</datasource>\n      <layername>{name}</layername>\n      <srs>{srs}</srs>\n      <provider encoding=\"UTF-8\">{provider}</provider>\n{body}    </maplayer>",
            xml_escape(&source)
        );
    }
    format!(
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n<qgis projectname=\"{t}\" version=\"3.22.0\">\n  <homePath path=\"\"/>\n  <title>{t}</title>\n  <projectCrs>{srs}</projectCrs>\n  <layer-tree-group>\n    <layer-tree-group name=\"eoinfer: {t}\" checked=\"Qt::Checked\" expanded=\"1\">\n{tree}    </layer-tree-group>\n    <custom-order enabled=\"0\">\n{order}    </custom-order>\n  </layer-tree-group>\n  <projectlayers>\n{maplayers}  </projectlayers>\n  <properties>\n    <Paths>\n      <Absolute type=\"bool\">false</Absolute>\n    </Paths>\n  </properties>\n</qgis>\n",
        t = xml_escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<ClassInfo> {
        vec![
            ClassInfo {
                value: 0,
                name: "clear".into(),
                color: [0, 200, 0],
            },
            ClassInfo {
                value: 1,
                name: "cloud & haze".into(),
                color: [255, 255, 255],
            },
        ]
    }

    #[test]
    fn class_styles_list_every_class_with_its_colour() {
        let q = class_map_style(&classes());
        assert!(q.contains("type=\"paletted\""));
        assert!(q.contains("<paletteEntry value=\"0\" label=\"clear\" color=\"#00c800\""));
        assert!(q.contains("label=\"cloud &amp; haze\" color=\"#ffffff\""));
        assert_eq!(q.matches("<paletteEntry").count(), 2);
    }

    #[test]
    fn probability_styles_ramp_to_the_class_colour() {
        let q = probability_style(&classes(), 2, 255.0);
        assert!(q.contains("band=\"2\""));
        assert!(q.contains("color=\"#ffffff\" alpha=\"255\""));
        assert!(q.contains("cloud &amp; haze 100 %"));
    }
}
