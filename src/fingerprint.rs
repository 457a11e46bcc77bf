//! Fingerprints of a run's input files, recorded in its plan: a resumed run whose inputs
//! changed at the same path is refused instead of mixing blocks computed from the old file
//! with blocks computed from the new one.
//!
//! A local file is identified by its size, its modification time (to the nanosecond) and the
//! sha256 of its first and last MiB; a file read over the network through GDAL (`/vsicurl/`,
//! `https://`, `/vsis3/`, ...) by its size, `ETag` and `Last-Modified`; a file inside a local
//! archive (`/vsizip/`, `/vsitar/`, `/vsigzip/`) by its archive. The files are the ones GDAL
//! reads for the model-ready stack (`GDALGetFileList` of the stack's VRT: band files, the
//! files behind VRTs, overviews and masks) plus the model manifest. `.aux.xml` sidecars are
//! left out: viewers such as QGIS write statistics into them, and what in them changes the
//! pixels read (nodata, scale and offset, georeferencing) is recorded in the plan itself.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ffi::{CStr, CString};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes hashed at each end of a local file.
const END_BYTES: u64 = 1 << 20;

/// The identity of one input file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputFile {
    /// The file (a path, or a GDAL `/vsi...` name).
    pub path: String,
    /// Size in bytes.
    pub bytes: Option<u64>,
    /// Modification time (RFC 3339; local files to the nanosecond, remote files from
    /// `Last-Modified`).
    pub modified: Option<String>,
    /// sha256 of the first and last MiB (local files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_sha256: Option<String>,
    /// HTTP `ETag` (remote files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// `secs.nanos` since the epoch as RFC 3339 with nanoseconds.
fn rfc3339_nanos(t: std::time::SystemTime) -> Option<String> {
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    let s = crate::util::rfc3339(d.as_secs());
    Some(format!(
        "{}.{:09}Z",
        s.trim_end_matches('Z'),
        d.subsec_nanos()
    ))
}

fn ends_sha256(path: &Path, len: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0_u8; END_BYTES.min(len) as usize];
    f.read_exact(&mut buf)?;
    h.update(&buf);
    if len > END_BYTES {
        let tail = END_BYTES.min(len - END_BYTES);
        f.seek(SeekFrom::Start(len - tail))?;
        let mut buf = vec![0_u8; tail as usize];
        f.read_exact(&mut buf)?;
        h.update(&buf);
    }
    Ok(crate::util::sha256_hex(&h.finalize()))
}

/// GDAL's virtual file systems over the network.
const REMOTE: [&str; 11] = [
    "/vsicurl/",
    "/vsicurl_streaming/",
    "/vsis3/",
    "/vsigs/",
    "/vsiaz/",
    "/vsiadls/",
    "/vsioss/",
    "/vsiswift/",
    "/vsihdfs/",
    "/vsiwebhdfs/",
    "/vsis3_streaming/",
];

/// Whether `name` is a file GDAL reads over the network.
fn is_remote(name: &str) -> bool {
    REMOTE.iter().any(|p| name.starts_with(p))
        || name.starts_with("http://")
        || name.starts_with("https://")
}

/// For a file inside a local archive (`/vsizip/a.zip/b.tif`), the archive (`a.zip`).
fn local_archive(name: &str) -> Option<String> {
    let rest = ["/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/"]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    let rest = rest
        .strip_prefix('{')
        .map_or(rest, |r| r.split('}').next().unwrap_or(r));
    let mut path = std::path::PathBuf::new();
    for part in Path::new(rest).components() {
        path.push(part);
        if path.is_file() {
            return Some(path.display().to_string());
        }
    }
    None
}

/// HTTP headers GDAL saw for a `/vsicurl/` file (empty for other files).
fn headers(name: &str) -> Vec<(String, String)> {
    let Ok(c) = CString::new(name) else {
        return Vec::new();
    };
    let domain = c"HEADERS";
    let list =
        unsafe { gdal_sys::VSIGetFileMetadata(c.as_ptr(), domain.as_ptr(), std::ptr::null_mut()) };
    take_list(list)
        .iter()
        .filter_map(|text| text.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// The strings of a GDAL string list, which is then freed.
fn take_list(list: *mut *mut std::ffi::c_char) -> Vec<String> {
    let mut out = Vec::new();
    if list.is_null() {
        return out;
    }
    let mut i = 0;
    loop {
        let item = unsafe { *list.add(i) };
        if item.is_null() {
            break;
        }
        out.push(
            unsafe { CStr::from_ptr(item) }
                .to_string_lossy()
                .into_owned(),
        );
        i += 1;
    }
    unsafe { gdal_sys::CSLDestroy(list) };
    out
}

/// The fingerprint of one file; `None` for files that do not exist (GDAL lists sidecars it
/// may create) and for in-memory datasets.
#[must_use]
pub fn fingerprint(name: &str) -> Option<InputFile> {
    if name.starts_with("/vsimem/") || name.trim().starts_with('<') {
        return None;
    }
    if let Some(archive) = local_archive(name) {
        return fingerprint(&archive);
    }
    if is_remote(name) {
        let gdal_name = if name.starts_with("http") {
            format!("/vsicurl/{name}")
        } else {
            name.to_string()
        };
        let c = CString::new(gdal_name.clone()).ok()?;
        // VSIStatBufL is the C library's `struct stat64`.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        if unsafe { gdal_sys::VSIStatL(c.as_ptr(), (&raw mut st).cast()) } != 0 {
            return None;
        }
        let h = headers(&gdal_name);
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        return Some(InputFile {
            path: name.to_string(),
            bytes: u64::try_from(st.st_size).ok(),
            modified: get("last-modified")
                .or_else(|| (st.st_mtime > 0).then(|| crate::util::rfc3339(st.st_mtime as u64))),
            ends_sha256: None,
            etag: get("etag"),
        });
    }
    let path = Path::new(name);
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    Some(InputFile {
        path: name.to_string(),
        bytes: Some(meta.len()),
        modified: meta.modified().ok().and_then(rfc3339_nanos),
        ends_sha256: ends_sha256(path, meta.len()).ok(),
        etag: None,
    })
}

/// The files GDAL reads for `dataset` (a path, GDAL name or VRT XML), itself included.
#[must_use]
pub fn gdal_files(dataset: &str) -> Vec<String> {
    let Ok(ds) = gdal::Dataset::open(dataset) else {
        return Vec::new();
    };
    take_list(unsafe { gdal_sys::GDALGetFileList(ds.c_dataset()) })
}

/// Fingerprints of `names` and of every file GDAL reads for them, sorted by path, each once.
#[must_use]
pub fn fingerprints(names: &[String]) -> Vec<InputFile> {
    let mut all: Vec<String> = Vec::new();
    for n in names {
        if n.is_empty() {
            continue;
        }
        all.push(n.clone());
        all.extend(gdal_files(n));
    }
    let mut all: Vec<String> = all
        .into_iter()
        .filter(|n| !n.to_ascii_lowercase().ends_with(".aux.xml"))
        .map(|n| local_archive(&n).unwrap_or(n))
        .map(|n| {
            if n.starts_with("/vsi") || is_remote(&n) || n.starts_with('<') {
                n
            } else {
                std::path::absolute(&n).map_or(n, |p| p.display().to_string())
            }
        })
        .collect();
    all.sort();
    all.dedup();
    all.iter().filter_map(|n| fingerprint(n)).collect()
}

/// What changed in the files a plan recorded since it recorded them (the same files, not
/// their GDAL file lists again): one line per changed or missing file.
#[must_use]
pub fn recheck(recorded: &[InputFile]) -> Vec<String> {
    let now: Vec<InputFile> = recorded
        .iter()
        .filter_map(|f| fingerprint(&f.path))
        .collect();
    changes(recorded, &now)
}

/// What differs between the fingerprints a plan recorded (`old`) and today's (`new`): one
/// line per changed, missing or added file.
#[must_use]
pub fn changes(old: &[InputFile], new: &[InputFile]) -> Vec<String> {
    let mut out = Vec::new();
    for o in old {
        match new.iter().find(|n| n.path == o.path) {
            None => out.push(format!("{} is gone", o.path)),
            Some(n) if n != o => {
                let mut what = Vec::new();
                if n.bytes != o.bytes {
                    what.push(format!(
                        "size {} -> {} bytes",
                        o.bytes.map_or("?".into(), |b| b.to_string()),
                        n.bytes.map_or("?".into(), |b| b.to_string())
                    ));
                }
                if n.modified != o.modified {
                    what.push(format!(
                        "modified {} -> {}",
                        o.modified.as_deref().unwrap_or("?"),
                        n.modified.as_deref().unwrap_or("?")
                    ));
                }
                if n.ends_sha256 != o.ends_sha256 {
                    what.push("content of its first or last MiB differs".into());
                }
                if n.etag != o.etag {
                    what.push(format!(
                        "ETag {} -> {}",
                        o.etag.as_deref().unwrap_or("?"),
                        n.etag.as_deref().unwrap_or("?")
                    ));
                }
                out.push(format!("{} changed ({})", o.path, what.join(", ")));
            }
            Some(_) => {}
        }
    }
    for n in new {
        if !old.iter().any(|o| o.path == n.path) {
            out.push(format!("{} is new", n.path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rewritten_at_the_same_path_and_size_is_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.tif");
        let name = p.display().to_string();
        let set_mtime = |secs: u64| {
            std::fs::File::options()
                .write(true)
                .open(&p)
                .expect("open")
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .expect("set mtime");
        };
        std::fs::write(&p, vec![1_u8; 3 << 20]).expect("write");
        set_mtime(1_700_000_000);
        let a = fingerprint(&name).expect("fingerprint");
        assert_eq!(a.bytes, Some(3 << 20));
        assert_eq!(
            a.modified.as_deref(),
            Some("2023-11-14T22:13:20.000000000Z")
        );
        assert!(changes(std::slice::from_ref(&a), std::slice::from_ref(&a)).is_empty());
        // Same size, same modification time, one byte of the last MiB changed.
        let mut bytes = vec![1_u8; 3 << 20];
        bytes[(3 << 20) - 10] = 2;
        std::fs::write(&p, &bytes).expect("write");
        set_mtime(1_700_000_000);
        let c = changes(
            std::slice::from_ref(&a),
            &[fingerprint(&name).expect("fingerprint")],
        );
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].contains("first or last MiB"), "{c:?}");
        // A change in the middle at the same size shows in the modification time.
        std::fs::write(&p, vec![1_u8; 3 << 20]).expect("write");
        set_mtime(1_700_000_001);
        let c = changes(&[a], &[fingerprint(&name).expect("fingerprint")]);
        assert!(c[0].contains("modified") && !c[0].contains("MiB"), "{c:?}");
    }

    #[test]
    fn a_file_in_a_local_archive_is_known_by_its_archive_and_sidecars_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zip = dir.path().join("scene.zip");
        std::fs::write(&zip, b"PK not really").expect("write");
        let inner = format!("/vsizip/{}/B02.tif", zip.display());
        assert_eq!(local_archive(&inner), Some(zip.display().to_string()));
        let f = fingerprint(&inner).expect("fingerprint");
        assert_eq!(f.path, zip.display().to_string());
        assert!(f.ends_sha256.is_some());
        assert!(!is_remote(&inner));
        assert!(is_remote("/vsis3/bucket/a.tif") && is_remote("https://x/a.tif"));
        let aux = dir.path().join("a.tif.aux.xml");
        std::fs::write(&aux, b"<PAMDataset/>").expect("write");
        assert!(fingerprints(&[aux.display().to_string()]).is_empty());
    }

    #[test]
    fn missing_and_new_files_are_named() {
        let f = |p: &str| InputFile {
            path: p.into(),
            bytes: Some(1),
            modified: None,
            ends_sha256: None,
            etag: None,
        };
        assert_eq!(
            changes(&[f("a")], &[f("b")]),
            ["a is gone".to_string(), "b is new".to_string()]
        );
    }
}
