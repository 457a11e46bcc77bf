//! Sentinel-2 metadata: the DN offset of processing baseline 04.00 and later
//! (reflectance = (DN - 1000) / 10000), read from the product's own metadata.

use std::path::{Path, PathBuf};

fn baseline_offset(baseline: &str) -> Option<f64> {
    let v: f64 = baseline.trim().parse().ok()?;
    Some(if v >= 4.0 { -1000.0 } else { 0.0 })
}

/// The text of the first XML element `tag` in `xml`.
fn xml_value<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}");
    let start = xml.find(&open)?;
    let rest = &xml[start + open.len()..];
    let body = &rest[rest.find('>')? + 1..];
    Some(body[..body.find('<')?].trim())
}

/// The offset a STAC Item states (`s2:processing_baseline`, `earthsearch:boa_offset_applied`,
/// or the `_N0400_` of its `s2:product_uri`).
pub fn from_item(path: &Path, doc: &serde_json::Value) -> Option<(f64, String)> {
    let props = doc.get("properties")?;
    let baseline = props
        .get("s2:processing_baseline")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            props
                .get("s2:product_uri")
                .and_then(serde_json::Value::as_str)
                .and_then(safe_name_baseline)
        })?;
    let baseline = baseline.as_str();
    if props
        .get("earthsearch:boa_offset_applied")
        .and_then(serde_json::Value::as_bool)
        == Some(true)
    {
        return Some((
            0.0,
            format!(
                "{}: baseline {baseline}, offset already applied",
                path.display()
            ),
        ));
    }
    Some((
        baseline_offset(baseline)?,
        format!("{}: s2:processing_baseline {baseline}", path.display()),
    ))
}

/// From a SAFE product's `MTD_MSIL1C.xml` / `MTD_MSIL2A.xml`.
fn from_safe(path: &Path) -> Option<(f64, String)> {
    let xml = std::fs::read_to_string(path).ok()?;
    for tag in ["BOA_ADD_OFFSET", "RADIO_ADD_OFFSET"] {
        if let Some(v) = xml_value(&xml, tag).and_then(|v| v.parse::<f64>().ok()) {
            return Some((v, format!("{}: {tag} {v}", path.display())));
        }
    }
    let baseline = xml_value(&xml, "PROCESSING_BASELINE")?;
    Some((
        baseline_offset(baseline)?,
        format!("{}: PROCESSING_BASELINE {baseline}", path.display()),
    ))
}

/// The baseline in a SAFE product name (`S2A_MSIL1C_20170115T102101_N0204_R065_T33UUU`):
/// `N0204` is 02.04.
fn safe_name_baseline(name: &str) -> Option<String> {
    if !name.contains("_MSIL") {
        return None;
    }
    name.split(['_', '.', '/']).find_map(|t| {
        let digits = t.strip_prefix('N')?;
        (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("{}.{}", &digits[..2], &digits[2..]))
    })
}

/// Finds the DN offset for a scene in its metadata: a STAC Item JSON beside the band files,
/// SAFE metadata in a parent folder, or GDAL metadata (`PROCESSING_BASELINE`). `None` when no
/// metadata states the processing baseline.
pub fn detect_offset<'a>(
    scene: &str,
    files: impl Iterator<Item = &'a str>,
) -> Option<(f64, String)> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut gdal_files = Vec::new();
    for f in files {
        gdal_files.push(f.to_string());
        if let Some(parent) = Path::new(f).parent() {
            let mut d = Some(parent.to_path_buf());
            for _ in 0..5 {
                let Some(dir) = d else { break };
                if !dirs.contains(&dir) {
                    dirs.push(dir.clone());
                }
                d = dir.parent().map(Path::to_path_buf);
            }
        }
    }
    let scene_path = Path::new(scene);
    if scene_path.is_dir() && !dirs.iter().any(|d| d == scene_path) {
        dirs.insert(0, scene_path.to_path_buf());
    }
    for dir in &dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with("MTD_MSIL") && name.to_ascii_lowercase().ends_with(".xml") {
                if let Some(found) = from_safe(&p) {
                    return Some(found);
                }
            }
        }
        if let Some(found) = super::sensor::items_in(dir)
            .iter()
            .find_map(|(p, doc)| from_item(p, doc))
        {
            return Some(found);
        }
    }
    // The SAFE product name in the files' paths carries the baseline too.
    for f in &gdal_files {
        for part in Path::new(f).ancestors() {
            let name = part
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some((b, o)) =
                safe_name_baseline(&name).and_then(|b| baseline_offset(&b).map(|o| (b, o)))
            {
                return Some((o, format!("{name}: baseline {b} in the SAFE product name")));
            }
        }
    }
    for f in gdal_files {
        if let Ok(ds) = gdal::Dataset::open(&f) {
            use gdal::Metadata;
            if let Some(b) = ds.metadata_item("PROCESSING_BASELINE", "") {
                if let Some(o) = baseline_offset(&b) {
                    return Some((o, format!("{f}: GDAL metadata PROCESSING_BASELINE {b}")));
                }
            }
        }
    }
    None
}

/// The day processing baseline 04.00 (the DN offset of -1000) began.
pub const BASELINE_04_START: (i32, u32, u32) = (2022, 1, 25);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_four_and_later_subtracts_a_thousand() {
        assert_eq!(baseline_offset("04.00"), Some(-1000.0));
        assert_eq!(baseline_offset("05.09"), Some(-1000.0));
        assert_eq!(baseline_offset("02.14"), Some(0.0));
        assert_eq!(baseline_offset("n/a"), None);
    }

    #[test]
    fn safe_product_names_carry_the_baseline() {
        assert_eq!(
            safe_name_baseline("S2A_MSIL1C_20170115T102101_N0204_R065_T33UUU.SAFE"),
            Some("02.04".into())
        );
        assert_eq!(
            safe_name_baseline("S2B_MSIL2A_20230601T102559_N0509_R108_T32TMT_20230601T143102"),
            Some("05.09".into())
        );
        assert_eq!(safe_name_baseline("T33UUU_20170216T102101_B02"), None);
    }

    #[test]
    fn safe_xml_values_are_found() {
        let xml = "<a><PROCESSING_BASELINE>04.00</PROCESSING_BASELINE><BOA_ADD_OFFSET band_id=\"0\">-1000</BOA_ADD_OFFSET></a>";
        assert_eq!(xml_value(xml, "PROCESSING_BASELINE"), Some("04.00"));
        assert_eq!(xml_value(xml, "BOA_ADD_OFFSET"), Some("-1000"));
    }
}
