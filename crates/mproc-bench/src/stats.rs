//! Medians with their spread.

use std::fmt;

/// The median of some repetitions, with min and max.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    /// Statistics of `samples` (at least one).
    pub fn of(mut samples: Vec<f64>) -> Option<Stat> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            (samples[n / 2 - 1] + samples[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: samples[0],
            max: samples[n - 1],
        })
    }

    /// Runs `f` `reps` times; each run returns one sample.
    pub fn repeat(reps: usize, mut f: impl FnMut() -> f64) -> Option<Stat> {
        Stat::of((0..reps).map(|_| f()).collect())
    }
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{} – {}]",
            num(self.median),
            num(self.min),
            num(self.max)
        )
    }
}
