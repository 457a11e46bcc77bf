//! Where a monitor finds acquisitions: a folder of scene files (complete ones only), or a STAC
//! API's `/search` (paged, bounded). Each acquisition has an id, an `updated` stamp (a changed
//! stamp means: process it again and replace its rows), a date and the scene `predict` reads.

use crate::error::MonitorError;
use crate::monitor::config::Source;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One acquisition a source offers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acquisition {
    /// Acquisition date, `YYYY-MM-DD` (first: acquisitions sort by date).
    pub date: String,
    /// Item id, or the file name.
    pub id: String,
    /// The item's `updated` time, or the file's size and modification time.
    pub updated: String,
    /// What `predict` reads: a raster path, or a STAC Item JSON.
    pub scene: String,
}

/// `*` and `?` wildcard match of a file name.
#[must_use]
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The first date in a file name: `YYYYMMDD` or `YYYY-MM-DD`, as `YYYY-MM-DD`.
#[must_use]
pub fn date_in_name(name: &str) -> Option<String> {
    crate::scene::timeseries::parse_date(name).map(|d| d.to_string())
}

/// Size and modification time of a file, as a stamp.
fn stamp(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    let t = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "size {} mtime {}.{:09}",
        m.len(),
        t.as_secs(),
        t.subsec_nanos()
    ))
}

/// The acquisitions in a folder whose files are complete, and the names skipped with why.
fn folder(
    dir: &Path,
    pattern: &str,
    settle: f64,
) -> Result<(Vec<Acquisition>, Vec<String>), MonitorError> {
    let list = || -> Result<Vec<PathBuf>, MonitorError> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| MonitorError::Source {
                what: format!("folder {} cannot be listed: {e}", dir.display()),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| wildcard(pattern, n) && !n.starts_with('.'))
            })
            .collect();
        v.sort();
        Ok(v)
    };
    let first: Vec<(PathBuf, Option<String>)> = list()?
        .into_iter()
        .map(|p| (p.clone(), stamp(&p)))
        .collect();
    let needs_wait = first
        .iter()
        .any(|(p, _)| !crate::util::with_suffix(p, ".done").exists());
    if needs_wait && settle > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(settle));
    }
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (p, s1) in first {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done = crate::util::with_suffix(&p, ".done").exists();
        let s2 = stamp(&p);
        if !done && (s1.is_none() || s1 != s2) {
            skipped.push(format!(
                "{name}: still being written (size or time changed)"
            ));
            continue;
        }
        let Some(date) = date_in_name(&name) else {
            skipped.push(format!(
                "{name}: no date (YYYYMMDD or YYYY-MM-DD) in its name"
            ));
            continue;
        };
        out.push(Acquisition {
            date,
            id: name,
            updated: s2.unwrap_or_default(),
            scene: p.display().to_string(),
        });
    }
    Ok((out, skipped))
}

/// `YYYY-MM-DD` of an RFC 3339 time.
fn day(t: &str) -> Option<String> {
    let d = t.get(..10)?;
    date_in_name(d).filter(|x| x == d)
}

/// Searches a STAC API: POST `/search` with the collections, the regions' bounding box
/// (lon/lat), the dates from `from` on and the query, following `next` links, at most `cap`
/// items. Each Item is saved under `items_dir` (what `predict` reads).
#[allow(clippy::too_many_arguments)]
fn stac_api(
    url: &str,
    collections: &[String],
    bbox: [f64; 4],
    from: Option<&str>,
    query: Option<&toml::Table>,
    token: Option<&str>,
    cap: usize,
    items_dir: &Path,
) -> Result<Vec<Acquisition>, MonitorError> {
    let err = |what: String| MonitorError::Source { what };
    let mut body = serde_json::json!({
        "collections": collections,
        "bbox": bbox,
        "limit": 100,
    });
    if let Some(f) = from {
        body["datetime"] = Value::String(format!("{f}T00:00:00Z/.."));
    }
    if let Some(q) = query {
        body["query"] = serde_json::to_value(q).map_err(|e| err(e.to_string()))?;
    }
    std::fs::create_dir_all(items_dir).map_err(|e| err(format!("{}: {e}", items_dir.display())))?;
    let search = format!("{}/search", url.trim_end_matches('/'));
    let mut next: Option<(String, String, Value)> = Some(("POST".into(), search, body));
    let mut out = Vec::new();
    let mut pages = 0;
    while let Some((method, href, body)) = next.take() {
        pages += 1;
        let page = crate::monitor::http::request(&method, &href, Some(&body), token, &[])
            .map_err(|e| err(format!("STAC API search {href}: {e}")))?;
        let doc: Value = serde_json::from_str(&page)
            .map_err(|e| err(format!("STAC API search {href}: not JSON: {e}")))?;
        let features = doc
            .get("features")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                err(format!(
                    "STAC API search {href}: no `features` in the answer"
                ))
            })?;
        for item in features {
            let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
            let props = item.get("properties");
            let when = props
                .and_then(|p| p.get("datetime").and_then(Value::as_str))
                .or_else(|| props.and_then(|p| p.get("start_datetime").and_then(Value::as_str)));
            let (Some(date), false) = (when.and_then(day), id.is_empty()) else {
                tracing::warn!(
                    item = id,
                    "a STAC Item without an id or a datetime is skipped"
                );
                continue;
            };
            let updated = props
                .and_then(|p| p.get("updated").and_then(Value::as_str))
                .or(when)
                .unwrap_or_default()
                .to_string();
            let file = items_dir.join(format!("{}.json", safe_name(id)));
            let text = serde_json::to_string_pretty(item).unwrap_or_default();
            crate::util::write_atomic(&file, text.as_bytes())
                .map_err(|e| err(format!("{}: {e}", file.display())))?;
            out.push(Acquisition {
                date,
                id: id.to_string(),
                updated,
                scene: file.display().to_string(),
            });
        }
        if out.len() >= cap || pages >= 1000 {
            break;
        }
        next = doc
            .get("links")
            .and_then(Value::as_array)
            .and_then(|l| {
                l.iter()
                    .find(|l| l.get("rel").and_then(Value::as_str) == Some("next"))
            })
            .and_then(|l| {
                let href = l.get("href")?.as_str()?.to_string();
                let method = l.get("method").and_then(Value::as_str).unwrap_or("GET");
                let body = l.get("body").cloned().unwrap_or(Value::Null);
                Some((method.to_ascii_uppercase(), href, body))
            });
    }
    Ok(out)
}

/// Whether `s` is an http(s) URL.
#[must_use]
pub fn is_http(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// `href` resolved against the document at `base` (a path or URL): absolute hrefs as they
/// are, relative ones against `base`'s folder with `.` and `..` applied.
#[must_use]
pub fn resolve(base: &str, href: &str) -> String {
    if is_http(href) || href.contains("://") {
        return href.to_string();
    }
    if is_http(base) {
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let host_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        if let Some(abs) = href.strip_prefix('/') {
            return format!("{}/{abs}", &base[..host_end]);
        }
        let dir = &base[host_end
            ..base
                .rfind('/')
                .filter(|&i| i >= host_end)
                .unwrap_or(host_end)];
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for seg in href.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        return format!("{}/{}", &base[..host_end], parts.join("/"));
    }
    if href.starts_with('/') {
        return href.to_string();
    }
    let mut out = PathBuf::from(Path::new(base).parent().unwrap_or(Path::new("")));
    for seg in href.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.display().to_string()
}

/// Walks a static STAC catalog from `root` (its `child` and `item` links, Items inline in
/// ItemCollections too): the Items of `collections` (all if empty) dated from `from` on whose
/// bounding box meets `bbox`. Each Item is saved under `items_dir` with its asset hrefs made
/// absolute; its `updated` stamp is the Item's own, else a hash of its JSON (a changed Item is
/// processed again).
fn stac_catalog(
    root: &str,
    collections: &[String],
    bbox: [f64; 4],
    from: Option<&str>,
    token: Option<&str>,
    cap: usize,
    items_dir: &Path,
) -> Result<Vec<Acquisition>, MonitorError> {
    let err = |what: String| MonitorError::Source { what };
    let load = |href: &str| -> Result<Value, MonitorError> {
        let text = if is_http(href) {
            crate::monitor::http::request("GET", href, None, token, &[])
                .map_err(|e| err(format!("STAC catalog {href}: {e}")))?
        } else {
            std::fs::read_to_string(href).map_err(|e| err(format!("STAC catalog {href}: {e}")))?
        };
        serde_json::from_str(&text).map_err(|e| err(format!("STAC catalog {href}: not JSON: {e}")))
    };
    std::fs::create_dir_all(items_dir).map_err(|e| err(format!("{}: {e}", items_dir.display())))?;
    let mut queue = std::collections::VecDeque::from([root.to_string()]);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    while let Some(href) = queue.pop_front() {
        if !seen.insert(href.clone()) || seen.len() > 100_000 || out.len() >= cap {
            continue;
        }
        let doc = load(&href)?;
        let mut items: Vec<Value> = Vec::new();
        match doc.get("type").and_then(Value::as_str) {
            Some("Feature") => items.push(doc.clone()),
            Some("FeatureCollection") => {
                items.extend(
                    doc.get("features")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            _ => {}
        }
        for l in doc
            .get("links")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let rel = l.get("rel").and_then(Value::as_str).unwrap_or_default();
            if let (true, Some(h)) = (
                rel == "child" || rel == "item",
                l.get("href").and_then(Value::as_str),
            ) {
                queue.push_back(resolve(&href, h));
            }
        }
        for mut item in items {
            if let Some(a) = catalog_item(&mut item, &href, collections, bbox, from) {
                let file = items_dir.join(format!("{}.json", safe_name(&a.id)));
                let text = serde_json::to_string_pretty(&item).unwrap_or_default();
                crate::util::write_atomic(&file, text.as_bytes())
                    .map_err(|e| err(format!("{}: {e}", file.display())))?;
                out.push(Acquisition {
                    scene: file.display().to_string(),
                    ..a
                });
            }
        }
    }
    Ok(out)
}

/// An Item of a static catalog, if it passes the filters: its acquisition (the scene filled
/// in by the caller), its asset hrefs made absolute against `href`.
fn catalog_item(
    item: &mut Value,
    href: &str,
    collections: &[String],
    bbox: [f64; 4],
    from: Option<&str>,
) -> Option<Acquisition> {
    let id = item.get("id").and_then(Value::as_str)?.to_string();
    let props = item.get("properties")?;
    let when = props
        .get("datetime")
        .and_then(Value::as_str)
        .or_else(|| props.get("start_datetime").and_then(Value::as_str))?
        .to_string();
    let date = day(&when)?;
    if from.is_some_and(|f| date.as_str() < f) {
        return None;
    }
    let collection = item
        .get("collection")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !collections.is_empty() && !collections.iter().any(|c| c == collection) {
        return None;
    }
    if let Some(b) = item.get("bbox").and_then(Value::as_array) {
        let v: Vec<f64> = b.iter().filter_map(Value::as_f64).collect();
        let (w, s, e, n) = match v.len() {
            4 => (v[0], v[1], v[2], v[3]),
            6 => (v[0], v[1], v[3], v[4]),
            _ => (-180.0, -90.0, 180.0, 90.0),
        };
        if e < bbox[0] || w > bbox[2] || n < bbox[1] || s > bbox[3] {
            return None;
        }
    }
    let updated = match props.get("updated").and_then(Value::as_str) {
        Some(u) => u.to_string(),
        None => format!(
            "sha256:{}",
            crate::util::sha256_hex(item.to_string().as_bytes())
        ),
    };
    if let Some(assets) = item.get_mut("assets").and_then(Value::as_object_mut) {
        for a in assets.values_mut() {
            if let Some(h) = a.get("href").and_then(Value::as_str) {
                let abs = resolve(href, h);
                a["href"] = Value::String(abs);
            }
        }
    }
    Some(Acquisition {
        date,
        id,
        updated,
        scene: String::new(),
    })
}

/// A file name made of an Item id.
fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What a source offers now: the acquisitions, and files skipped with the reason.
pub struct Listing {
    /// Acquisitions, sorted by date and id.
    pub acquisitions: Vec<Acquisition>,
    /// Files not taken this cycle (incomplete, undated).
    pub skipped: Vec<String>,
}

/// Lists the source. `bbox`: the regions in lon/lat; `from`: the first date asked for.
pub fn list(
    source: &Source,
    bbox: [f64; 4],
    from: Option<&str>,
    cap: usize,
    items_dir: &Path,
) -> Result<Listing, MonitorError> {
    let (mut acquisitions, skipped) = match source {
        Source::Folder {
            path,
            pattern,
            settle_seconds,
        } => folder(path, pattern, *settle_seconds)?,
        Source::StacApi {
            url,
            collections,
            query,
            token_env,
            token_file,
            ..
        } => {
            let token = crate::monitor::config::secret(token_env.as_ref(), token_file.as_ref())?;
            (
                stac_api(
                    url,
                    collections,
                    bbox,
                    from,
                    query.as_ref(),
                    token.as_deref(),
                    cap,
                    items_dir,
                )?,
                Vec::new(),
            )
        }
        Source::StacCatalog {
            url,
            collections,
            token_env,
            token_file,
            ..
        } => {
            let token = crate::monitor::config::secret(token_env.as_ref(), token_file.as_ref())?;
            (
                stac_catalog(
                    url,
                    collections,
                    bbox,
                    from,
                    token.as_deref(),
                    cap,
                    items_dir,
                )?,
                Vec::new(),
            )
        }
    };
    acquisitions.sort();
    acquisitions.dedup_by(|a, b| a.id == b.id);
    Ok(Listing {
        acquisitions,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_file_names() {
        assert!(wildcard("*.tif", "S2_20150711.tif"));
        assert!(!wildcard("*.tif", "S2_20150711.tif.done"));
        assert!(wildcard("S2_*_13band.tif", "S2_L1C_20150711_13band.tif"));
        assert!(wildcard("a?c", "abc") && !wildcard("a?c", "abbc"));
        assert!(wildcard("*", ""));
    }

    #[test]
    fn catalog_hrefs_resolve_against_their_document() {
        let b = "http://h:8/cat/s2/collection.json";
        assert_eq!(
            resolve(b, "./items/a.json"),
            "http://h:8/cat/s2/items/a.json"
        );
        assert_eq!(resolve(b, "../../B01.tif"), "http://h:8/B01.tif");
        assert_eq!(resolve(b, "/x/y.tif"), "http://h:8/x/y.tif");
        assert_eq!(resolve(b, "https://o/z.tif"), "https://o/z.tif");
        assert_eq!(resolve("http://h", "a.json"), "http://h/a.json");
        assert_eq!(
            resolve("/d/cat/catalog.json", "./s2/c.json"),
            "/d/cat/s2/c.json"
        );
        assert_eq!(
            resolve("/d/cat/s2/items/i.json", "../../../B01.tif"),
            "/d/B01.tif"
        );
        assert_eq!(resolve("/d/cat/catalog.json", "/abs/x.tif"), "/abs/x.tif");
    }

    #[test]
    fn dates_are_found_in_names() {
        assert_eq!(
            date_in_name("S2_L1C_20150711_13band.tif").as_deref(),
            Some("2015-07-11")
        );
        assert_eq!(
            date_in_name("scene_2021-03-04.tif").as_deref(),
            Some("2021-03-04")
        );
        // 8 digits that are no date, and digits glued to more digits, are not dates.
        assert_eq!(date_in_name("tile_12345678.tif"), None);
        assert_eq!(date_in_name("x_120150711.tif"), None);
        assert_eq!(day("2015-07-11T10:00:08Z").as_deref(), Some("2015-07-11"));
    }
}
