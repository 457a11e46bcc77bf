//! A task model's temporal contract (`eoinfer:temporal`, generated from the rslearn dataset
//! configuration it was trained with): how many time steps it takes, the period each step
//! stands for, and for event models the image groups before and after the event. `predict`
//! checks a run's dates against it and refuses a series that breaks it, saying what the
//! model needs.

use crate::scene::timeseries::Date;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// An image group of an event model (`pre`, `post`): its number of steps and the days
/// relative to the event date its images come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group's name (`pre`, `post`).
    pub name: String,
    /// Its number of time steps, in the order of the model's input.
    pub time_steps: usize,
    /// First and last day relative to the event date (inclusive).
    pub offset_days: [i64; 2],
}

/// The contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemporalContract {
    /// Exactly this many time steps.
    pub time_steps: usize,
    /// `legacy`: the model numbers its steps as months 0..T-1 (rslearn's legacy
    /// timestamps), whatever the dates; `dates`: it is given the acquisition dates.
    #[serde(default)]
    pub timestamps: Option<String>,
    /// `per-period-mosaic` (one mosaic per period) or `scenes` (single acquisitions).
    #[serde(default)]
    pub mode: Option<String>,
    /// Days each step stands for (a per-period mosaic), when fixed.
    #[serde(default)]
    pub period_days: Option<f64>,
    /// Days the whole series spans.
    #[serde(default)]
    pub span_days: Option<f64>,
    /// Image groups of an event model (pre/post), in input order.
    #[serde(default)]
    pub groups: Vec<Group>,
    /// The order of the model's time axis: `newest-first` (rslearn's per-period mosaics:
    /// step 0 is the most recent period), else oldest first.
    #[serde(default)]
    pub order: Option<String>,
    /// Where the contract came from (the configuration's fields).
    #[serde(default)]
    pub source: Option<String>,
}

/// Days since 1970-01-01.
fn day_number(d: Date) -> i64 {
    crate::util::days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day))
}

/// The date `days` after `d`.
#[must_use]
pub fn add_days(d: Date, days: i64) -> Date {
    let (y, m, dd) = crate::util::civil_from_days(day_number(d) + days);
    Date {
        year: y as i32,
        month: m as u32,
        day: dd as u32,
    }
}

/// A series' dates against the contract: `Ok(warnings)` or `Err(why)`.
pub type Checked = Result<Vec<String>, String>;

impl TemporalContract {
    /// Whether the model takes its steps newest first.
    #[must_use]
    pub fn newest_first(&self) -> bool {
        self.order.as_deref() == Some("newest-first")
    }

    /// What the model needs, in words.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut s = format!("{} time steps", self.time_steps);
        if !self.groups.is_empty() {
            let parts: Vec<String> = self
                .groups
                .iter()
                .map(|g| {
                    format!(
                        "{} {} from {} to {} days around the event",
                        g.time_steps, g.name, g.offset_days[0], g.offset_days[1]
                    )
                })
                .collect();
            let _ = write!(s, " ({})", parts.join(", "));
        } else if let Some(p) = self.period_days {
            let _ = write!(s, ", one per {p} days");
            if let Some(span) = self.span_days {
                let _ = write!(s, " over {span} days");
            }
            if self.mode.as_deref() == Some("per-period-mosaic") {
                s.push_str(" (a mosaic per period)");
            }
        }
        if self.newest_first() {
            s.push_str("; fed newest first");
        }
        if self.timestamps.as_deref() == Some("legacy") {
            s.push_str("; the model sees them as months 0..T-1, not their dates");
        }
        s
    }

    /// Checks the dates of a run without event groups. The number of steps is always
    /// enforced (the model was trained on that many); a gap between steps that does not fit
    /// the period is refused unless `relax`, then a warning.
    pub fn check_series(&self, dates: &[Date], relax: bool) -> Checked {
        let listed = || {
            dates
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.groups.is_empty() {
            return Err(format!(
                "the model classifies events: it needs {}; give the events as polygons with --events (their dates in an `event_date` attribute or --event-date)",
                self.describe()
            ));
        }
        if dates.len() != self.time_steps {
            return Err(format!(
                "the model needs {}; the input has {} ({}). Give exactly {} dated scenes or mosaics",
                self.describe(),
                dates.len(),
                listed(),
                self.time_steps
            ));
        }
        let mut warnings = Vec::new();
        if let Some(p) = self.period_days.filter(|p| *p > 0.0) {
            let (lo, hi) = (p * 0.5, p * 1.5);
            for w in dates.windows(2) {
                let gap = (day_number(w[1]) - day_number(w[0])) as f64;
                if gap < lo || gap > hi {
                    let what = format!(
                        "{} days between the time steps {} and {}; the model's steps are {p}-day periods (gaps of {lo} to {hi} days fit)",
                        gap, w[0], w[1]
                    );
                    if !relax {
                        return Err(format!(
                            "{what}. Give one image or mosaic per {p} days, or run anyway with --relax-temporal-contract (recorded in the summary)"
                        ));
                    }
                    warnings.push(format!(
                        "temporal contract relaxed: {what}; the model was trained on another spacing"
                    ));
                }
            }
        }
        Ok(warnings)
    }

    /// The steps of one event: per group, in group order, the indices (into `dates`, sorted)
    /// of its images: those within the group's days around `event`, nearest the event first,
    /// then put in date order. With `relax`, a group short of images takes the nearest ones on
    /// its side of the event instead (a warning).
    pub fn select_event(
        &self,
        dates: &[Date],
        event: Date,
        relax: bool,
    ) -> Result<(Vec<Vec<usize>>, Vec<String>), String> {
        let e = day_number(event);
        let mut picked = Vec::new();
        let mut warnings = Vec::new();
        for g in &self.groups {
            let offset = |i: usize| day_number(dates[i]) - e;
            let within: Vec<usize> = (0..dates.len())
                .filter(|&i| (g.offset_days[0]..=g.offset_days[1]).contains(&offset(i)))
                .collect();
            let mut take = if within.len() >= g.time_steps {
                within
            } else if relax {
                // The nearest images on the group's side of the event.
                let before = g.offset_days[1] < 0;
                let side: Vec<usize> = (0..dates.len())
                    .filter(|&i| if before { offset(i) < 0 } else { offset(i) > 0 })
                    .collect();
                if side.len() < g.time_steps {
                    return Err(format!(
                        "event of {event}: the group `{}` needs {} images {} the event; the series has {}",
                        g.name,
                        g.time_steps,
                        if before { "before" } else { "after" },
                        side.len()
                    ));
                }
                warnings.push(format!(
                    "temporal contract relaxed: event of {event}: only {} of the {} `{}` images lie {} to {} days from the event; the nearest on its side are used",
                    within.len(),
                    g.time_steps,
                    g.name,
                    g.offset_days[0],
                    g.offset_days[1]
                ));
                side
            } else {
                return Err(format!(
                    "event of {event}: the group `{}` needs {} images from {} to {} days around the event ({} to {}); the series has {} there. Add scenes of those dates, or run anyway with --relax-temporal-contract (recorded in the summary)",
                    g.name,
                    g.time_steps,
                    g.offset_days[0],
                    g.offset_days[1],
                    add_days(event, g.offset_days[0]),
                    add_days(event, g.offset_days[1]),
                    within.len()
                ));
            };
            take.sort_by_key(|&i| ((offset(i)).abs(), i));
            take.truncate(g.time_steps);
            take.sort_unstable();
            picked.push(take);
        }
        Ok((picked, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        crate::scene::timeseries::parse_date(s).unwrap()
    }

    fn monthly(n: usize) -> Vec<Date> {
        (0..n)
            .map(|i| Date {
                year: 2020 + ((10 + i) / 12) as i32,
                month: ((10 + i) % 12 + 1) as u32,
                day: 1,
            })
            .collect()
    }

    fn lfmc() -> TemporalContract {
        TemporalContract {
            time_steps: 12,
            timestamps: Some("legacy".into()),
            mode: Some("per-period-mosaic".into()),
            period_days: Some(14.0),
            span_days: Some(168.0),
            groups: Vec::new(),
            order: Some("newest-first".into()),
            source: None,
        }
    }

    fn forest_loss() -> TemporalContract {
        TemporalContract {
            time_steps: 8,
            timestamps: Some("legacy".into()),
            mode: Some("scenes".into()),
            period_days: None,
            span_days: None,
            groups: vec![
                Group {
                    name: "pre".into(),
                    time_steps: 4,
                    offset_days: [-300, -120],
                },
                Group {
                    name: "post".into(),
                    time_steps: 4,
                    offset_days: [7, 187],
                },
            ],
            order: None,
            source: None,
        }
    }

    #[test]
    fn the_number_of_steps_is_always_enforced() {
        let c = lfmc();
        let e = c.check_series(&monthly(5), true).unwrap_err();
        assert!(
            e.contains("needs 12 time steps") && e.contains("has 5"),
            "{e}"
        );
    }

    #[test]
    fn a_period_mismatch_is_refused_unless_relaxed() {
        let c = lfmc();
        let e = c.check_series(&monthly(12), false).unwrap_err();
        assert!(
            e.contains("14-day periods") && e.contains("--relax-temporal-contract"),
            "{e}"
        );
        let w = c.check_series(&monthly(12), true).unwrap();
        assert_eq!(w.len(), 11);
        let fortnightly: Vec<Date> = (0..12).map(|i| add_days(d("2021-01-03"), 14 * i)).collect();
        assert_eq!(
            c.check_series(&fortnightly, false).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn event_groups_take_the_images_nearest_the_event_in_their_window() {
        let c = forest_loss();
        assert!(c.check_series(&monthly(8), false).is_err());
        // Monthly images from 2020-01 to 2021-12; event 2021-01-15.
        let dates: Vec<Date> = (0..24)
            .map(|i| Date {
                year: 2020 + i / 12,
                month: (i % 12 + 1) as u32,
                day: 1,
            })
            .collect();
        let (groups, w) = c.select_event(&dates, d("2021-01-15"), false).unwrap();
        assert!(w.is_empty());
        let show = |g: &[usize]| g.iter().map(|&i| dates[i].to_string()).collect::<Vec<_>>();
        // 120..300 days before: 2020-03-21 .. 2020-09-17, nearest four: 06..09.
        assert_eq!(
            show(&groups[0]),
            ["2020-06-01", "2020-07-01", "2020-08-01", "2020-09-01"]
        );
        // 7..187 days after: 2021-01-22 .. 2021-07-21, nearest four: 02..05.
        assert_eq!(
            show(&groups[1]),
            ["2021-02-01", "2021-03-01", "2021-04-01", "2021-05-01"]
        );
    }

    #[test]
    fn a_short_group_is_refused_or_widened_with_a_warning() {
        let c = forest_loss();
        let dates = monthly(12); // 2020-11 .. 2021-10
        let e = c.select_event(&dates, d("2021-03-15"), false).unwrap_err();
        assert!(
            e.contains("`pre` needs 4 images") && e.contains("2020-05-19"),
            "{e}"
        );
        let (groups, w) = c.select_event(&dates, d("2021-03-15"), true).unwrap();
        assert_eq!(groups[0].len(), 4);
        assert_eq!(dates[groups[0][0]].to_string(), "2020-12-01");
        assert_eq!(dates[groups[0][3]].to_string(), "2021-03-01");
        assert!(!w.is_empty());
        let e = c.select_event(&dates, d("2020-12-15"), true).unwrap_err();
        assert!(e.contains("before the event; the series has 2"), "{e}");
    }
}
