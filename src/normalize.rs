//! Pure band scaling: scene values -> reflectance (DN scale and offset) -> the model's
//! normalisation from its manifest (`value_scaling`), with invalid pixels masked.

/// Linear conversion of stored values to the physical quantity the model expects:
/// `(value + offset_dn) * scale + add` (Sentinel-2 DN to reflectance: `(DN - 1000) * 0.0001`;
/// Landsat Collection 2 surface reflectance: `DN * 2.75e-5 - 0.2`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rescale {
    /// Multiplier applied after the DN offset.
    pub scale: f64,
    /// Added to the stored value before scaling (Sentinel-2 baseline >= 04.00: -1000).
    pub offset_dn: f64,
    /// Added after scaling (Landsat Collection 2 Level-2: -0.2).
    #[serde(skip_serializing_if = "is_zero")]
    pub add: f64,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Rescale {
    /// Values are used as they are.
    pub const IDENTITY: Rescale = Rescale {
        scale: 1.0,
        offset_dn: 0.0,
        add: 0.0,
    };

    /// `value * scale + add`.
    #[must_use]
    pub fn linear(scale: f64, add: f64) -> Rescale {
        Rescale {
            scale,
            offset_dn: 0.0,
            add,
        }
    }

    /// Stored value to physical value, in float32 as the model consumes it.
    #[must_use]
    pub fn apply(&self, v: f32) -> f32 {
        if self.scale == 1.0 && self.offset_dn == 0.0 && self.add == 0.0 {
            v
        } else {
            ((f64::from(v) + self.offset_dn) * self.scale + self.add) as f32
        }
    }

    /// The conversion in words: `value x 2.75e-5 - 0.2`.
    #[must_use]
    pub fn formula(&self) -> String {
        if *self == Rescale::IDENTITY {
            return "value as stored".into();
        }
        let mut s = if self.offset_dn == 0.0 {
            "value".to_string()
        } else if self.offset_dn < 0.0 {
            format!("(value - {})", -self.offset_dn)
        } else {
            format!("(value + {})", self.offset_dn)
        };
        if self.scale != 1.0 {
            s = format!("{s} x {}", self.scale);
        }
        if self.add < 0.0 {
            s = format!("{s} - {}", -self.add);
        } else if self.add > 0.0 {
            s = format!("{s} + {}", self.add);
        }
        s
    }
}

/// The model's input normalisation, one entry per input band.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ValueScaling {
    /// `(x - mean) / stddev`.
    ZScore {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
    },
    /// `(x - minimum) / (maximum - minimum)`.
    MinMax {
        /// Minimum.
        minimum: f64,
        /// Maximum.
        maximum: f64,
    },
}

impl ValueScaling {
    /// Normalises one value. Each step rounds to float32 the way numpy's in-place
    /// `img -= mean; img /= std` on a float32 array does, so inputs match the reference.
    #[must_use]
    pub fn apply(&self, v: f32) -> f32 {
        match *self {
            ValueScaling::ZScore { mean, stddev } => {
                let centred = (f64::from(v) - mean) as f32;
                (f64::from(centred) / stddev) as f32
            }
            ValueScaling::MinMax { minimum, maximum } => {
                let centred = (f64::from(v) - minimum) as f32;
                (f64::from(centred) / (maximum - minimum)) as f32
            }
        }
    }
}

/// Turns a raw tile (band-major, `bands * plane` values as read) into model input in place.
/// A pixel is valid when every band is finite; invalid pixels become 0 in every band and
/// `false` in `valid`. Returns the number of valid pixels.
pub fn prepare_tile(
    data: &mut [f32],
    valid: &mut [bool],
    rescale: &[Rescale],
    scaling: &[ValueScaling],
) -> usize {
    let bands = rescale.len();
    let plane = valid.len();
    debug_assert_eq!(data.len(), bands * plane);
    valid.fill(true);
    for b in 0..bands {
        for (i, v) in data[b * plane..(b + 1) * plane].iter().enumerate() {
            if !v.is_finite() {
                valid[i] = false;
            }
        }
    }
    for b in 0..bands {
        let band = &mut data[b * plane..(b + 1) * plane];
        for (v, &ok) in band.iter_mut().zip(valid.iter()) {
            *v = if ok {
                scaling[b].apply(rescale[b].apply(*v))
            } else {
                0.0
            };
        }
    }
    valid.iter().filter(|&&v| v).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel2_dn_becomes_reflectance_with_the_baseline_offset() {
        let r = Rescale {
            scale: 1e-4,
            offset_dn: -1000.0,
            add: 0.0,
        };
        assert!((r.apply(3000.0) - 0.2).abs() < 1e-7);
        assert_eq!(r.formula(), "(value - 1000) x 0.0001");
        assert_eq!(Rescale::IDENTITY.apply(0.123), 0.123);
        let landsat = Rescale::linear(2.75e-5, -0.2);
        assert!((landsat.apply(10_000.0) - 0.075).abs() < 1e-7);
        assert_eq!(landsat.formula(), "value x 0.0000275 - 0.2");
    }

    #[test]
    fn zscore_rounds_like_numpy_float32_in_place_ops() {
        let s = ValueScaling::ZScore {
            mean: 0.275_522_530_078_887_94,
            stddev: 0.244_880_020_618_438_72,
        };
        let x = 0.1234_f32;
        let expected = (f64::from((f64::from(x) - 0.275_522_530_078_887_94) as f32)
            / 0.244_880_020_618_438_72) as f32;
        assert_eq!(s.apply(x), expected);
    }

    #[test]
    fn nan_in_any_band_masks_the_pixel_in_all_bands() {
        let mut data = vec![1.0, f32::NAN, 3.0, 4.0];
        let mut valid = vec![true; 2];
        let n = prepare_tile(
            &mut data,
            &mut valid,
            &[Rescale::IDENTITY; 2],
            &[
                ValueScaling::ZScore {
                    mean: 0.0,
                    stddev: 1.0,
                },
                ValueScaling::ZScore {
                    mean: 1.0,
                    stddev: 2.0,
                },
            ],
        );
        assert_eq!(n, 1);
        assert_eq!(valid, vec![true, false]);
        assert_eq!(data, vec![1.0, 0.0, 1.0, 0.0]);
    }
}
