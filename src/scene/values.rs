//! A look at the values before a run: a few windows of the model-ready stack are read and
//! each band's values, converted as the run will convert them, are compared with what the
//! model was trained on. Values far outside it (DN read as reflectance, a wrong offset, 1e30)
//! stop the run; a constant band and infinite values are warnings naming the band.

use super::{Stack, StackReader};
use crate::error::SceneError;
use crate::grid::Window;
use crate::normalize::ValueScaling;

/// Windows per side of the sample grid, and their edge in pixels.
const SAMPLE_GRID: usize = 3;
const SAMPLE_EDGE: usize = 64;

/// Valid sampled values a band needs before it is judged.
const MIN_SAMPLES: usize = 64;

/// What the sample says of one band.
#[derive(Debug, Clone, PartialEq)]
pub struct BandSample {
    /// Finite values seen.
    pub finite: usize,
    /// Infinite values seen.
    pub infinite: usize,
    /// Median of the finite values, in the model's units.
    pub median: f64,
    /// Their 10th percentile.
    pub p10: f64,
    /// Smallest and largest finite value.
    pub range: (f64, f64),
}

/// Sums up one band's sampled values (model units; NaN is nodata).
#[must_use]
pub fn summarise(values: &[f32]) -> Option<BandSample> {
    let infinite = values.iter().filter(|v| v.is_infinite()).count();
    let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (infinite > 0).then_some(BandSample {
            finite: 0,
            infinite,
            median: f64::NAN,
            p10: f64::NAN,
            range: (f64::NAN, f64::NAN),
        });
    }
    finite.sort_by(f32::total_cmp);
    Some(BandSample {
        finite: finite.len(),
        infinite,
        median: f64::from(finite[finite.len() / 2]),
        p10: f64::from(finite[finite.len() / 10]),
        range: (f64::from(finite[0]), f64::from(finite[finite.len() - 1])),
    })
}

/// Why a band's sample lies outside what the model was trained on, if it does.
/// `float_scale` turns reflectance into the model's units.
#[must_use]
pub fn out_of_range(s: &BandSample, scaling: &ValueScaling, float_scale: f64) -> Option<String> {
    if s.finite < MIN_SAMPLES {
        return None;
    }
    let reflectance = s.median / float_scale;
    if !(-0.5..=2.0).contains(&reflectance) {
        return Some(format!(
            "median reflectance {reflectance:.4} (reflectance lies between about 0 and 1.5)"
        ));
    }
    match *scaling {
        ValueScaling::ZScore { mean, stddev } if stddev > 0.0 => {
            let z = (s.median - mean) / stddev;
            (z.abs() > 5.0).then(|| {
                format!(
                    "median {:.4} is {z:.1} standard deviations from the training mean {mean:.4} (stddev {stddev:.4})",
                    s.median
                )
            })
        }
        ValueScaling::MinMax { minimum, maximum } if maximum > minimum => {
            let f = (s.median - minimum) / (maximum - minimum);
            (!(-1.0..=2.0).contains(&f)).then(|| {
                format!(
                    "median {:.4} is far outside the training range {minimum}..{maximum}",
                    s.median
                )
            })
        }
        _ => None,
    }
}

/// Samples the stack and checks every present band: returns the warnings (constant bands,
/// infinite values), or the error naming the bands whose values lie far outside the model's
/// training range (unless `accept`, which makes it a warning).
pub fn check_stack(
    stack: &Stack,
    scaling: &[ValueScaling],
    float_scale: f64,
    accept: bool,
) -> Result<Vec<String>, SceneError> {
    let per_band = sample(stack)?;
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    for (i, band) in stack.bands.iter().enumerate() {
        let Some(k) = band.vrt_band else { continue };
        let values: Vec<f32> = per_band[k - 1]
            .iter()
            .map(|&v| {
                if v.is_finite() {
                    band.rescale.apply(v)
                } else {
                    v
                }
            })
            .collect();
        let Some(s) = summarise(&values) else {
            warnings.push(format!(
                "band {} ({}) has no valid value in the {} sampled pixels (all nodata): pixels are valid only where every band is",
                band.model_band,
                band.source,
                values.len()
            ));
            continue;
        };
        if s.infinite > 0 {
            warnings.push(format!(
                "band {} ({}) holds infinite values ({} of {} sampled pixels); those pixels are masked as nodata",
                band.model_band,
                band.source,
                s.infinite,
                values.len()
            ));
        }
        if s.finite >= MIN_SAMPLES && s.range.0 == s.range.1 {
            warnings.push(format!(
                "band {} ({}) is constant ({} in all {} sampled valid pixels): a constant band changes the model's result; check the file",
                band.model_band, band.source, s.range.0, s.finite
            ));
        }
        if let Some(why) = scaling
            .get(i)
            .and_then(|sc| out_of_range(&s, sc, float_scale))
        {
            problems.push(format!(
                "band {} ({}, read as {}): {why}",
                band.model_band, band.source, band.scaling
            ));
        }
    }
    if !problems.is_empty() {
        let what = problems.join("; ");
        if !accept {
            return Err(SceneError::OutOfRange {
                path: stack.scene.clone().into(),
                what,
            });
        }
        warnings.push(format!(
            "--accept-out-of-range: values far outside the model's training range: {what}"
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(warnings)
}

/// Whether Sentinel-1 backscatter is in the units the model takes: a model whose training
/// range is mostly negative takes dB, and linear power (all values at least 0, median below
/// 2) is refused with the conversion; a model taking linear power refuses dB (a negative
/// median) the same way.
pub fn check_s1(stack: &Stack, scaling: &[ValueScaling]) -> Result<(), SceneError> {
    let per_band = sample(stack)?;
    for (i, band) in stack.bands.iter().enumerate() {
        let (Some(k), Some(sc)) = (band.vrt_band, scaling.get(i)) else {
            continue;
        };
        let Some(s) = summarise(&per_band[k - 1]) else {
            continue;
        };
        if s.finite < MIN_SAMPLES {
            continue;
        }
        let (lo, hi) = match *sc {
            ValueScaling::MinMax { minimum, maximum } => (minimum, maximum),
            ValueScaling::ZScore { mean, stddev } => (mean - 2.0 * stddev, mean + 2.0 * stddev),
        };
        let wants_db = lo < 0.0 && f64::midpoint(lo, hi) < 0.0;
        // Backscatter in dB is mostly negative; linear power and amplitude DN never are.
        let problem = if wants_db && s.p10 >= 0.0 {
            Some((
                "linear power or amplitude (90 % of its values are at least 0)",
                "dB",
                "10 x log10(value), e.g. gdal_calc.py -A in.tif --allBands=A --calc=\"10*log10(A)\" --outfile in_db.tif",
            ))
        } else if !wants_db && s.median < 0.0 {
            Some((
                "dB",
                "linear power",
                "10^(value / 10), e.g. gdal_calc.py -A in.tif --allBands=A --calc=\"10**(A/10)\" --outfile in_linear.tif",
            ))
        } else {
            None
        };
        if let Some((have, want, fix)) = problem {
            return Err(SceneError::S1Units {
                path: band.source.clone().into(),
                what: format!(
                    "band {} looks like {have} (median {}), but the model takes {want}: convert it with {fix}",
                    band.model_band, s.median
                ),
            });
        }
    }
    Ok(())
}

/// The values of every VRT band in the sample windows (NaN where nodata).
fn sample(stack: &Stack) -> Result<Vec<Vec<f32>>, SceneError> {
    let mut reader = StackReader::open(stack)?;
    let (w, h) = (SAMPLE_EDGE.min(stack.width), SAMPLE_EDGE.min(stack.height));
    let plane = w * h;
    let mut per_band: Vec<Vec<f32>> = vec![Vec::new(); stack.vrt_bands];
    let mut buf = vec![0.0_f32; stack.vrt_bands * plane];
    // Window origins spread over the scene; a scene smaller than a window is read once.
    let mut origins: Vec<(usize, usize)> = Vec::new();
    for gy in 0..SAMPLE_GRID {
        for gx in 0..SAMPLE_GRID {
            let o = (
                (stack.width - w) * (2 * gx + 1) / (2 * SAMPLE_GRID),
                (stack.height - h) * (2 * gy + 1) / (2 * SAMPLE_GRID),
            );
            if !origins.contains(&o) {
                origins.push(o);
            }
        }
    }
    for (x, y) in origins {
        let window = Window {
            x: x as i64,
            y: y as i64,
            width: w,
            height: h,
        };
        reader.read(window, &mut buf)?;
        for (b, values) in per_band.iter_mut().enumerate() {
            values.extend_from_slice(&buf[b * plane..(b + 1) * plane]);
        }
    }
    Ok(per_band)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: &[f32]) -> BandSample {
        summarise(values).expect("values")
    }

    #[test]
    fn dn_read_as_reflectance_is_out_of_range() {
        let z = ValueScaling::ZScore {
            mean: 0.27,
            stddev: 0.33,
        };
        let dn: Vec<f32> = (0..100).map(|i| 1000.0 + i as f32).collect();
        assert!(out_of_range(&sample(&dn), &z, 1.0).is_some());
        let reflectance: Vec<f32> = (0..100).map(|i| 0.1 + i as f32 * 0.003).collect();
        assert_eq!(out_of_range(&sample(&reflectance), &z, 1.0), None);
        // A model taking DN (reflectance x 10000) is judged in reflectance.
        let olmo = ValueScaling::ZScore {
            mean: 1500.0,
            stddev: 900.0,
        };
        assert_eq!(out_of_range(&sample(&dn), &olmo, 10_000.0), None);
        let huge: Vec<f32> = vec![1e30; 100];
        assert!(out_of_range(&sample(&huge), &olmo, 10_000.0).is_some());
    }

    #[test]
    fn few_values_are_not_judged_and_infinities_are_counted() {
        let z = ValueScaling::ZScore {
            mean: 0.0,
            stddev: 1.0,
        };
        assert_eq!(out_of_range(&sample(&[100.0; 10]), &z, 1.0), None);
        let s = sample(&[1.0, f32::INFINITY, f32::NAN, 2.0]);
        assert_eq!((s.finite, s.infinite), (2, 1));
        assert_eq!(s.range, (1.0, 2.0));
    }
}
