//! The monitor's state: an SQLite database in the output folder (items seen, processed and
//! failed; per-region observations; alerts and their delivery outbox). An acquisition's rows,
//! its status and its alerts are written in one transaction once its outputs are complete, so
//! a cycle killed at any point leaves every acquisition either done or to do.

use crate::error::MonitorError;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
  id TEXT PRIMARY KEY, updated TEXT NOT NULL, date TEXT NOT NULL, scene TEXT NOT NULL,
  status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, processed_at TEXT);
CREATE TABLE IF NOT EXISTS observations (
  region TEXT NOT NULL, date TEXT NOT NULL, model TEXT NOT NULL, items TEXT NOT NULL,
  region_pixels INTEGER NOT NULL, valid_pixels INTEGER NOT NULL, classes TEXT NOT NULL,
  counts TEXT NOT NULL, pixel_area REAL NOT NULL, output TEXT NOT NULL,
  PRIMARY KEY (region, date, model));
CREATE TABLE IF NOT EXISTS regions (
  region TEXT PRIMARY KEY, wkb BLOB NOT NULL, projjson TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
  key TEXT PRIMARY KEY, region TEXT NOT NULL, date TEXT NOT NULL, rule TEXT NOT NULL,
  model TEXT NOT NULL, value REAL NOT NULL, threshold REAL NOT NULL, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
  region TEXT NOT NULL, date TEXT NOT NULL, model TEXT NOT NULL, compared INTEGER NOT NULL,
  changed INTEGER NOT NULL, matrix TEXT NOT NULL, dates_used TEXT NOT NULL, output TEXT NOT NULL,
  PRIMARY KEY (region, date, model));
CREATE TABLE IF NOT EXISTS outbox (
  key TEXT PRIMARY KEY, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_try INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0, last_error TEXT);
";

/// A region's id, geometry (WKB) and the PROJJSON of the geometry's CRS.
pub type RegionRow = (String, Vec<u8>, String);

/// The open state database.
pub struct State {
    conn: Connection,
    path: PathBuf,
}

/// An acquisition's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    /// `updated` when last processed or failed.
    pub updated: String,
    /// `done` or `failed`.
    pub status: String,
    /// Failed attempts with this `updated`.
    pub attempts: u32,
}

/// One region's statistics of one model's output on one date.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Region id.
    pub region: String,
    /// Date `YYYY-MM-DD`.
    pub date: String,
    /// Model name.
    pub model: String,
    /// The acquisitions mosaicked into it (ids, comma-separated).
    pub items: String,
    /// Pixels of the region on the output grid.
    pub region_pixels: u64,
    /// Of them, pixels with a valid class.
    pub valid_pixels: u64,
    /// Class names.
    pub classes: Vec<String>,
    /// Pixels per class.
    pub counts: Vec<u64>,
    /// Pixel area in m².
    pub pixel_area: f64,
    /// The class map (or value or embedding map) it was computed from.
    pub output: String,
    /// For value and embedding maps: per band the mean over the region's valid pixels (then
    /// `classes` holds the band names and `counts` is empty).
    pub means: Vec<f64>,
    /// For value maps: per band the standard deviation.
    pub stds: Vec<f64>,
}

/// An alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Idempotency key: the same alert always has the same key.
    pub key: String,
    /// Region id.
    pub region: String,
    /// Date.
    pub date: String,
    /// Rule (`cloud-free-share-below`).
    pub rule: String,
    /// The model the rule reads.
    pub model: String,
    /// The measured value.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// A sentence for people.
    pub message: String,
    /// The changed area (MultiPolygon WKB in the regions' CRS) for change rules; the region
    /// otherwise.
    pub geometry: Option<Vec<u8>>,
    /// The before/after quicklook PNG, relative to the output folder.
    pub quicklook: Option<String>,
}

/// One region's change of one model's map on one date.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Region id.
    pub region: String,
    /// Date.
    pub date: String,
    /// Model name.
    pub model: String,
    /// Pixels compared with their previous valid observation.
    pub compared: u64,
    /// Of them, pixels whose class changed.
    pub changed: u64,
    /// Transition counts (`from * n + to`).
    pub matrix: Vec<u64>,
    /// The earlier dates the previous classes came from.
    pub dates_used: Vec<String>,
    /// The change map.
    pub output: String,
    /// For embedding models: the mean `1 - cosine` of the compared patches.
    pub mean_distance: Option<f64>,
}

/// The error of a database operation on the state at `path`.
fn state_err(path: &Path) -> impl Fn(rusqlite::Error) -> MonitorError + Copy + '_ {
    move |source| MonitorError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl State {
    /// Opens (creating) `<out>/state.sqlite`.
    pub fn open(out: &Path) -> Result<Self, MonitorError> {
        let path = out.join("state.sqlite");
        let conn = Connection::open(&path).map_err(|source| MonitorError::State {
            path: path.clone(),
            source,
        })?;
        let s = Self { conn, path };
        s.conn
            .execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; {SCHEMA}"
            ))
            .map_err(|e| s.err(e))?;
        // Columns added since the first schema.
        for (table, column, ty) in [
            ("alerts", "geometry", "BLOB"),
            ("alerts", "quicklook", "TEXT"),
            ("observations", "means", "TEXT"),
            ("observations", "stds", "TEXT"),
            ("changes", "mean_distance", "REAL"),
        ] {
            let has: bool = s
                .conn
                .query_row(
                    &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                    [column],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(|e| s.err(e))?
                > 0;
            if !has {
                s.conn
                    .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))
                    .map_err(|e| s.err(e))?;
            }
        }
        Ok(s)
    }

    fn err(&self, source: rusqlite::Error) -> MonitorError {
        state_err(&self.path)(source)
    }

    /// The row of acquisition `id`.
    pub fn item(&self, id: &str) -> Result<Option<ItemRow>, MonitorError> {
        self.conn
            .query_row(
                "SELECT updated, status, attempts FROM items WHERE id = ?1",
                [id],
                |r| {
                    Ok(ItemRow {
                        updated: r.get(0)?,
                        status: r.get(1)?,
                        attempts: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest date processed.
    pub fn newest_done(&self) -> Result<Option<String>, MonitorError> {
        self.conn
            .query_row(
                "SELECT max(date) FROM items WHERE status = 'done'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Records a date's acquisitions as done, with the observations and alerts they gave,
    /// in one transaction (replacing the date's earlier rows).
    pub fn commit_date(
        &mut self,
        items: &[crate::monitor::source::Acquisition],
        observations: &[Observation],
        changes: &[Change],
        regions: &[RegionRow],
        alerts: &[Alert],
        deliver: bool,
    ) -> Result<(), MonitorError> {
        let path = self.path.clone();
        let err = state_err(&path);
        let tx = self.conn.transaction().map_err(err)?;
        let stamp = now_secs().to_string();
        for a in items {
            tx.execute(
                "INSERT INTO items (id, updated, date, scene, status, attempts, error, processed_at)
                 VALUES (?1, ?2, ?3, ?4, 'done', 0, NULL, ?5)
                 ON CONFLICT(id) DO UPDATE SET updated = ?2, date = ?3, scene = ?4,
                 status = 'done', attempts = 0, error = NULL, processed_at = ?5",
                params![a.id, a.updated, a.date, a.scene, stamp],
            )
            .map_err(err)?;
        }
        for (region, wkb, projjson) in regions {
            tx.execute(
                "INSERT OR REPLACE INTO regions (region, wkb, projjson) VALUES (?1, ?2, ?3)",
                params![region, wkb, projjson],
            )
            .map_err(err)?;
        }
        for o in observations {
            tx.execute(
                "INSERT OR REPLACE INTO observations
                 (region, date, model, items, region_pixels, valid_pixels, classes, counts, pixel_area, output, means, stds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    o.region,
                    o.date,
                    o.model,
                    o.items,
                    o.region_pixels as i64,
                    o.valid_pixels as i64,
                    serde_json::to_string(&o.classes).unwrap_or_default(),
                    serde_json::to_string(&o.counts).unwrap_or_default(),
                    o.pixel_area,
                    o.output,
                    json_floats(&o.means),
                    json_floats(&o.stds)
                ],
            )
            .map_err(err)?;
        }
        for ch in changes {
            tx.execute(
                "INSERT OR REPLACE INTO changes
                 (region, date, model, compared, changed, matrix, dates_used, output, mean_distance)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    ch.region,
                    ch.date,
                    ch.model,
                    ch.compared as i64,
                    ch.changed as i64,
                    serde_json::to_string(&ch.matrix).unwrap_or_default(),
                    serde_json::to_string(&ch.dates_used).unwrap_or_default(),
                    ch.output,
                    ch.mean_distance
                ],
            )
            .map_err(err)?;
        }
        for a in alerts {
            let new = tx
                .execute(
                    "INSERT OR IGNORE INTO alerts (key, region, date, rule, model, value, threshold, message, geometry, quicklook)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![a.key, a.region, a.date, a.rule, a.model, a.value, a.threshold, a.message, a.geometry, a.quicklook],
                )
                .map_err(err)?;
            if new > 0 && deliver {
                tx.execute(
                    "INSERT OR IGNORE INTO outbox (key, payload) VALUES (?1, ?2)",
                    params![a.key, alert_json(a).to_string()],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Records a failed attempt of `items` with the reason.
    pub fn fail(
        &mut self,
        items: &[crate::monitor::source::Acquisition],
        reason: &str,
    ) -> Result<(), MonitorError> {
        let path = self.path.clone();
        let err = state_err(&path);
        let tx = self.conn.transaction().map_err(err)?;
        for a in items {
            tx.execute(
                "INSERT INTO items (id, updated, date, scene, status, attempts, error, processed_at)
                 VALUES (?1, ?2, ?3, ?4, 'failed', 1, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET
                   attempts = CASE WHEN items.updated = ?2 AND items.status = 'failed' THEN items.attempts + 1 ELSE 1 END,
                   updated = ?2, date = ?3, scene = ?4, status = 'failed', error = ?5, processed_at = ?6",
                params![a.id, a.updated, a.date, a.scene, reason, now_secs().to_string()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Every observation, by region, date and model.
    pub fn observations(&self) -> Result<Vec<Observation>, MonitorError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT region, date, model, items, region_pixels, valid_pixels, classes, counts, pixel_area, output, means, stds
                 FROM observations ORDER BY region, date, model",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let classes: String = r.get(6)?;
                let counts: String = r.get(7)?;
                Ok(Observation {
                    region: r.get(0)?,
                    date: r.get(1)?,
                    model: r.get(2)?,
                    items: r.get(3)?,
                    region_pixels: r.get::<_, i64>(4)? as u64,
                    valid_pixels: r.get::<_, i64>(5)? as u64,
                    classes: serde_json::from_str(&classes).unwrap_or_default(),
                    counts: serde_json::from_str(&counts).unwrap_or_default(),
                    pixel_area: r.get(8)?,
                    output: r.get(9)?,
                    means: floats(r.get::<_, Option<String>>(10)?),
                    stds: floats(r.get::<_, Option<String>>(11)?),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every change row, by region, date and model.
    pub fn changes(&self) -> Result<Vec<Change>, MonitorError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT region, date, model, compared, changed, matrix, dates_used, output, mean_distance
                 FROM changes ORDER BY region, date, model",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let matrix: String = r.get(5)?;
                let used: String = r.get(6)?;
                Ok(Change {
                    region: r.get(0)?,
                    date: r.get(1)?,
                    model: r.get(2)?,
                    compared: r.get::<_, i64>(3)? as u64,
                    changed: r.get::<_, i64>(4)? as u64,
                    matrix: serde_json::from_str(&matrix).unwrap_or_default(),
                    dates_used: serde_json::from_str(&used).unwrap_or_default(),
                    output: r.get(7)?,
                    mean_distance: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The class maps of `model` on the dates before `date`, newest first (at most `limit`).
    pub fn maps_before(
        &self,
        model: &str,
        date: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, MonitorError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT DISTINCT date, output FROM observations WHERE model = ?1 AND date < ?2
                 ORDER BY date DESC LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![model, date, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The class map of `model` on `date`, if observed.
    pub fn map_of(&self, model: &str, date: &str) -> Result<Option<String>, MonitorError> {
        self.conn
            .query_row(
                "SELECT output FROM observations WHERE model = ?1 AND date = ?2 LIMIT 1",
                params![model, date],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Region geometries (WKB and the PROJJSON of their CRS).
    pub fn regions(&self) -> Result<Vec<RegionRow>, MonitorError> {
        let mut st = self
            .conn
            .prepare("SELECT region, wkb, projjson FROM regions ORDER BY region")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Every alert, by date and region.
    pub fn alerts(&self) -> Result<Vec<Alert>, MonitorError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT key, region, date, rule, model, value, threshold, message, geometry, quicklook FROM alerts ORDER BY date, region, rule, key",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(Alert {
                    key: r.get(0)?,
                    region: r.get(1)?,
                    date: r.get(2)?,
                    rule: r.get(3)?,
                    model: r.get(4)?,
                    value: r.get(5)?,
                    threshold: r.get(6)?,
                    message: r.get(7)?,
                    geometry: r.get(8)?,
                    quicklook: r.get(9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Alerts waiting for delivery whose next try is due: (key, payload, attempts).
    pub fn due(&self) -> Result<Vec<(String, String, u32)>, MonitorError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT key, payload, attempts FROM outbox WHERE delivered = 0 AND next_try <= ?1 ORDER BY key",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([now_secs()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records a delivery attempt: delivered, or failed with the reason and a later try
    /// (back-off doubling from 1 minute, at most 1 hour).
    pub fn delivered(&self, key: &str, result: Result<(), String>) -> Result<(), MonitorError> {
        match result {
            Ok(()) => self
                .conn
                .execute(
                    "UPDATE outbox SET delivered = 1, attempts = attempts + 1, last_error = NULL WHERE key = ?1",
                    [key],
                )
                .map(|_| ())
                .map_err(|e| self.err(e)),
            Err(reason) => {
                let attempts: u32 = self
                    .conn
                    .query_row("SELECT attempts FROM outbox WHERE key = ?1", [key], |r| {
                        r.get(0)
                    })
                    .map_err(|e| self.err(e))?;
                let wait = (60_i64 << attempts.min(6)).min(3600);
                self.conn
                    .execute(
                        "UPDATE outbox SET attempts = attempts + 1, next_try = ?2, last_error = ?3 WHERE key = ?1",
                        params![key, now_secs() + wait, reason],
                    )
                    .map(|_| ())
                    .map_err(|e| self.err(e))
            }
        }
    }

    /// Counts for `monitor status`: items by status, observations, alerts, undelivered.
    pub fn counts(&self) -> Result<serde_json::Value, MonitorError> {
        let one = |sql: &str| -> Result<i64, MonitorError> {
            self.conn
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let mut failed = Vec::new();
        let mut st = self
            .conn
            .prepare("SELECT id, attempts, error FROM items WHERE status = 'failed' ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "attempts": r.get::<_, i64>(1)?, "error": r.get::<_, Option<String>>(2)?}))
            })
            .map_err(|e| self.err(e))?;
        for r in rows {
            failed.push(r.map_err(|e| self.err(e))?);
        }
        Ok(serde_json::json!({
            "items_done": one("SELECT count(*) FROM items WHERE status = 'done'")?,
            "items_failed": failed,
            "dates": one("SELECT count(DISTINCT date) FROM observations")?,
            "observations": one("SELECT count(*) FROM observations")?,
            "alerts": one("SELECT count(*) FROM alerts")?,
            "alerts_undelivered": one("SELECT count(*) FROM outbox WHERE delivered = 0")?,
            "newest_date": self.newest_done()?,
        }))
    }
}

/// Floats as a JSON array (NaN, a band without valid pixels, as null).
fn json_floats(v: &[f64]) -> String {
    serde_json::to_string(
        &v.iter()
            .map(|x| x.is_finite().then_some(*x))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default()
}

/// The floats of [`json_floats`] (null as NaN).
fn floats(text: Option<String>) -> Vec<f64> {
    text.and_then(|t| serde_json::from_str::<Vec<Option<f64>>>(&t).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|x| x.unwrap_or(f64::NAN))
        .collect()
}

/// The JSON of an alert as files and webhooks carry it.
#[must_use]
pub fn alert_json(a: &Alert) -> serde_json::Value {
    serde_json::json!({
        "key": a.key, "region": a.region, "date": a.date, "rule": a.rule, "model": a.model,
        "value": a.value, "threshold": a.threshold, "message": a.message,
        "quicklook": a.quicklook,
    })
}
