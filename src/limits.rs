//! Limits of a run, checked in the plan before anything is allocated or written: the
//! process's memory limit (`--memory-limit`, else its cgroup's: v2 `memory.max` as under
//! Kubernetes and Slurm, or v1 `memory.limit_in_bytes`, else the machine's RAM), the CPUs it may use, the largest grid, and
//! the memory a run's buffers and batches need.

use std::path::Path;

/// The largest output grid, in pixels, unless `--max-pixels` raises it: 10^10 px, e.g.
/// 100,000 x 100,000 px (a 1,000 km square at 10 m).
pub const DEFAULT_MAX_PIXELS: u64 = 10_000_000_000;

/// `--threads` may be at most this many times the CPUs the process may use.
pub const THREADS_PER_CPU: usize = 4;

/// Working memory of a segmentation model per input pixel and tile in the batch, in f32
/// values: measured with ONNX Runtime 1.31 for the ukis-csmask U-Net (EfficientNet-B4
/// encoder) at 256 px tiles, 29-55 MB per tile (batch 1 -> 8 -> 32: 373 -> 758 -> 1462 MB
/// peak RSS), so 160 floats per pixel.
pub const MODEL_FLOATS_PER_PIXEL: u64 = 160;

/// Bytes of the binary, GDAL, ONNX Runtime and the other fixed costs of a process.
pub const BASE_BYTES: u64 = 96 << 20;

/// Checks the size of a grid of `width` x `height` px at `resolution` against `max` pixels
/// (default [`DEFAULT_MAX_PIXELS`]) before anything of that size exists.
pub fn check_grid(
    width: f64,
    height: f64,
    resolution: f64,
    max: Option<u64>,
) -> Result<(), crate::error::LimitError> {
    let max = max.unwrap_or(DEFAULT_MAX_PIXELS);
    let pixels = width * height;
    if !(resolution.is_finite() && resolution > 0.0) {
        return Err(crate::error::LimitError::Value {
            flag: "--resolution",
            value: resolution.to_string(),
            range: "pass a pixel size above 0 in the CRS's units (e.g. 10 for 10 m)".into(),
        });
    }
    if !pixels.is_finite()
        || pixels > max as f64
        || width > f64::from(i32::MAX)
        || height > f64::from(i32::MAX)
    {
        return Err(crate::error::LimitError::GridTooLarge {
            resolution,
            width: width.min(u64::MAX as f64) as u64,
            height: height.min(u64::MAX as f64) as u64,
            pixels: pixels.min(u64::MAX as f64) as u64,
            max,
        });
    }
    Ok(())
}

/// The memory limit of a run and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes.
    pub bytes: u64,
    /// `--memory-limit`, `cgroup, <file>` or `machine RAM, /proc/meminfo`.
    pub source: String,
}

impl std::fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", human(self.bytes), self.source)
    }
}

/// `bytes` as `1.5 GiB`, `300 MiB`, `12 KiB`.
#[must_use]
pub fn human(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b >= K * K * K * K {
        format!("{:.1} TiB", b / (K * K * K * K))
    } else if b >= K * K * K {
        format!("{:.1} GiB", b / (K * K * K))
    } else if b >= K * K {
        format!("{:.0} MiB", b / (K * K))
    } else {
        format!("{:.0} KiB", (b / K).ceil())
    }
}

/// Parses a size: bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024; `KiB`, `GB`
/// and lower case also read as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{t} is negative; pass a size above 0 such as 4G, 512M or 2147483648"
        ));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{t} is not a size; pass e.g. 4G, 512M or 2147483648 (bytes)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        u => {
            return Err(format!(
                "{t}: unknown unit `{u}`; pass e.g. 4G, 512M or 2147483648 (bytes)"
            ));
        }
    };
    let bytes = value * mult;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("{t} must be above 0; pass e.g. 4G or 512M"));
    }
    Ok(bytes as u64)
}

/// The smallest memory limit in `file` (`memory.max` or `memory.limit_in_bytes`) of the
/// cgroup folder `dir` and the folders above it up to `top`.
fn smallest_in_tree(dir: &Path, top: &Path, file: &str) -> Option<(u64, String)> {
    let mut dir = dir.to_path_buf();
    let mut best: Option<(u64, String)> = None;
    loop {
        let f = dir.join(file);
        // "max" (v2) and values near 2^63 (v1's "no limit") are no limit.
        if let Some(v) = std::fs::read_to_string(&f)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|&v| v < 1 << 60)
        {
            if best.as_ref().is_none_or(|(b, _)| v < *b) {
                best = Some((v, f.display().to_string()));
            }
        }
        if dir == top || !dir.pop() || !dir.starts_with(top) {
            break;
        }
    }
    best
}

/// The memory limit of this process's cgroup, from the text of `/proc/self/cgroup` and
/// `/proc/self/mountinfo`: cgroup v2 `memory.max` (the unified hierarchy, as under current
/// Kubernetes and Slurm) or cgroup v1 `memory.limit_in_bytes`, the smallest along the path
/// to the root of the hierarchy.
fn cgroup_limit(proc_cgroup: &str, mountinfo: &str) -> Option<(u64, String)> {
    let mut best: Option<(u64, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(point), Some(fstype), Some(opts)) = (
            fields.get(3),
            fields.get(4),
            fields.get(dash + 1),
            fields.get(dash + 3),
        ) else {
            continue;
        };
        let (path, file) = match *fstype {
            "cgroup2" => (
                proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")),
                "memory.max",
            ),
            "cgroup" if opts.split(',').any(|o| o == "memory") => (
                proc_cgroup.lines().find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let _id = parts.next()?;
                    let controllers = parts.next()?;
                    let path = parts.next()?;
                    controllers
                        .split(',')
                        .any(|c| c == "memory")
                        .then_some(path)
                }),
                "memory.limit_in_bytes",
            ),
            _ => continue,
        };
        let Some(path) = path else { continue };
        let rel = path
            .trim()
            .strip_prefix(root.trim_end_matches('/'))
            .unwrap_or(path.trim())
            .trim_start_matches('/');
        let top = Path::new(point);
        if let Some(found) = smallest_in_tree(&top.join(rel), top, file) {
            if best.as_ref().is_none_or(|(b, _)| found.0 < *b) {
                best = Some(found);
            }
        }
    }
    best
}

/// Total RAM from `/proc/meminfo`.
fn machine_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory limit: `given` (`--memory-limit`), else the cgroup's (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), else the machine's RAM.
#[must_use]
pub fn memory_limit(given: Option<u64>) -> MemoryLimit {
    if let Some(b) = given {
        return MemoryLimit {
            bytes: b,
            source: "--memory-limit".into(),
        };
    }
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    if let Some((b, file)) = cgroup_limit(&read("/proc/self/cgroup"), &read("/proc/self/mountinfo"))
    {
        return MemoryLimit {
            bytes: b,
            source: format!("cgroup, {file}"),
        };
    }
    MemoryLimit {
        bytes: machine_ram().unwrap_or(u64::MAX),
        source: "machine RAM, /proc/meminfo".into(),
    }
}

/// CPUs this process may use (affinity and cgroup CPU quota).
#[must_use]
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The largest `--threads`.
#[must_use]
pub fn max_threads() -> usize {
    cpus() * THREADS_PER_CPU
}

/// The allowed `--threads`, in words.
#[must_use]
pub fn threads_range() -> String {
    format!(
        "pass 0 (all {} CPUs this process may use) up to {} ({THREADS_PER_CPU} x those CPUs)",
        cpus(),
        max_threads()
    )
}

/// Checks `--threads` against [`max_threads`]; 0 means all CPUs. Returns the threads.
pub fn check_threads(threads: usize) -> Result<usize, crate::error::LimitError> {
    if threads > max_threads() {
        return Err(crate::error::LimitError::Value {
            flag: "--threads",
            value: threads.to_string(),
            range: threads_range(),
        });
    }
    Ok(if threads == 0 { cpus() } else { threads })
}

/// Refuses 0 for a count where 0 means nothing (`--batch-size`, `--block-rows`).
pub fn check_nonzero(
    flag: &'static str,
    value: Option<usize>,
) -> Result<(), crate::error::LimitError> {
    if value == Some(0) {
        return Err(crate::error::LimitError::Value {
            flag,
            value: "0".into(),
            range: "0 means nothing here; pass a whole number of at least 1".into(),
        });
    }
    Ok(())
}

/// The memory a run needs, by what holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryNeed {
    /// The reader's rolling band of full-width rows (all input bands, f32).
    pub reader: u64,
    /// The blending accumulator (one tile high, full width) and the rows it hands on.
    pub blend: u64,
    /// Tiles queued between the stages and the batch's input and output tensors.
    pub tensors: u64,
    /// The model's working memory for a batch (estimate).
    pub model: u64,
    /// GDAL's block cache.
    pub gdal_cache: u64,
    /// The model file, the binary and the libraries.
    pub fixed: u64,
}

impl MemoryNeed {
    /// All of it.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.reader
            .saturating_add(self.blend)
            .saturating_add(self.tensors)
            .saturating_add(self.model)
            .saturating_add(self.gdal_cache)
            .saturating_add(self.fixed)
    }

    /// `reader 1.2 GiB, blend 300 MiB, ...`, largest first.
    #[must_use]
    pub fn breakdown(&self) -> String {
        let mut parts = [
            ("the reader's full-width rows", self.reader),
            ("blending (full-width rows)", self.blend),
            ("the batch's tensors and queued tiles", self.tensors),
            ("the model's working memory (estimate)", self.model),
            ("GDAL's block cache", self.gdal_cache),
            ("model file and libraries", self.fixed),
        ];
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        parts
            .iter()
            .filter(|(_, b)| *b > 0)
            .map(|(n, b)| format!("{n} {}", human(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a segmentation run holds in memory, from its sizes.
#[derive(Debug, Clone, Copy)]
pub struct RunShape {
    /// Grid width in pixels.
    pub width: u64,
    /// Tile edge in pixels.
    pub tile: u64,
    /// Bands the reader holds.
    pub read_bands: u64,
    /// Model input bands.
    pub bands: u64,
    /// Output classes.
    pub classes: u64,
    /// Tiles per batch.
    pub batch: u64,
    /// Model runs per tile (test-time augmentation).
    pub runs_per_tile: u64,
    /// GDAL's block cache in bytes.
    pub gdal_cache: u64,
    /// Model file bytes.
    pub model_bytes: u64,
    /// The model runs on a GPU: its working memory is not the process's.
    pub device_model: bool,
}

impl RunShape {
    /// The memory this run needs.
    #[must_use]
    pub fn need(&self) -> MemoryNeed {
        let f = 4_u64;
        let plane = self.tile.saturating_mul(self.tile);
        let row_band = self.width.saturating_mul(f);
        let reader_rows = self.tile + 1 + 64;
        let per_tile = plane
            .saturating_mul(self.bands + self.classes + 1)
            .saturating_mul(f);
        MemoryNeed {
            reader: row_band
                .saturating_mul(reader_rows)
                .saturating_mul(self.read_bands),
            // Sums, weights and validity; finished rows as class ids and probabilities.
            blend: self
                .width
                .saturating_mul(self.tile)
                .saturating_mul(self.classes * f + f + 1 + 1 + self.classes),
            // Two bounded queues and the pending tiles hold up to 6 batches, plus the
            // batch's input and output tensors.
            tensors: per_tile.saturating_mul(self.batch).saturating_mul(7),
            model: if self.device_model {
                0
            } else {
                plane
                    .saturating_mul(MODEL_FLOATS_PER_PIXEL * f)
                    .saturating_mul(self.batch)
                    .saturating_mul(self.runs_per_tile.min(2))
            },
            gdal_cache: self.gdal_cache,
            fixed: BASE_BYTES.saturating_add(self.model_bytes.saturating_mul(2)),
        }
    }

    /// The largest batch whose need fits in `limit` bytes (0 if even one tile does not).
    #[must_use]
    pub fn max_batch(&self, limit: u64) -> u64 {
        let (mut lo, mut hi) = (0_u64, 1_u64 << 32);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let fits = Self {
                batch: mid,
                ..*self
            }
            .need()
            .total()
                <= limit;
            if fits {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_units_and_refuse_negative_or_zero() {
        assert_eq!(parse_size("2147483648"), Ok(2_147_483_648));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert!(parse_size("-1G").unwrap_err().contains("negative"));
        assert!(parse_size("0").unwrap_err().contains("above 0"));
        assert!(parse_size("4X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn the_cgroup_limit_is_the_smallest_memory_max_above_the_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("unified");
        let leaf = root.join("kubepods/pod1/ctr");
        std::fs::create_dir_all(&leaf).expect("mkdir");
        std::fs::write(root.join("kubepods/memory.max"), "max\n").expect("write");
        std::fs::write(root.join("kubepods/pod1/memory.max"), "2147483648\n").expect("write");
        std::fs::write(leaf.join("memory.max"), "max\n").expect("write");
        let mountinfo = format!(
            "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n40 31 0:35 / {} rw - cgroup2 cgroup2 rw\n",
            root.display()
        );
        let (b, file) = cgroup_limit("0::/kubepods/pod1/ctr\n", &mountinfo).expect("limit");
        assert_eq!(b, 2_147_483_648);
        assert!(file.ends_with("kubepods/pod1/memory.max"), "{file}");
        // No limit anywhere: none.
        std::fs::write(root.join("kubepods/pod1/memory.max"), "max\n").expect("write");
        assert_eq!(cgroup_limit("0::/kubepods/pod1/ctr\n", &mountinfo), None);
    }

    #[test]
    fn a_cgroup_v1_memory_limit_counts_and_its_no_limit_value_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("memory");
        let leaf = root.join("slurm/uid_0/job_7");
        std::fs::create_dir_all(&leaf).expect("mkdir");
        std::fs::write(root.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        std::fs::write(leaf.join("memory.limit_in_bytes"), "1073741824\n").expect("write");
        let mountinfo = format!(
            "36 31 0:33 / {} rw - cgroup cgroup rw,memory\n35 31 0:32 / /x rw - cgroup cgroup rw,cpu\n",
            root.display()
        );
        let cgroup = "8:pids:/\n4:memory:/slurm/uid_0/job_7\n0::/\n";
        let (b, file) = cgroup_limit(cgroup, &mountinfo).expect("limit");
        assert_eq!(b, 1 << 30);
        assert!(file.ends_with("job_7/memory.limit_in_bytes"), "{file}");
        std::fs::write(leaf.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        assert_eq!(cgroup_limit(cgroup, &mountinfo), None);
    }

    #[test]
    fn the_largest_batch_fits_and_one_more_does_not() {
        let shape = RunShape {
            width: 3660,
            tile: 256,
            read_bands: 6,
            bands: 6,
            classes: 3,
            batch: 4,
            runs_per_tile: 1,
            gdal_cache: 128 << 20,
            model_bytes: 80 << 20,
            device_model: false,
        };
        let limit = 2_u64 << 30;
        let max = shape.max_batch(limit);
        assert!(max > 4, "{max}");
        assert!(
            RunShape {
                batch: max,
                ..shape
            }
            .need()
            .total()
                <= limit
        );
        assert!(
            RunShape {
                batch: max + 1,
                ..shape
            }
            .need()
            .total()
                > limit
        );
        assert_eq!(shape.max_batch(1 << 20), 0);
        // The measured ukis-csmask U-Net: batch 8 at 10 m over the demo scene peaked at
        // 758 MB; the estimate must not be below it.
        let demo = RunShape {
            width: 1536,
            batch: 8,
            ..shape
        };
        assert!(demo.need().total() >= 758_000_000, "{:?}", demo.need());
    }
}
