//! [`Deadline`]: when a wait gives up, and how long its next nap may be. Every timed wait in
//! mproc asks these three questions the same way.

use std::time::{Duration, Instant};

/// When a wait gives up: never, or at an instant.
///
/// ```
/// use std::time::Duration;
/// use mproc_sync::Deadline;
/// let d = Deadline::after(Duration::from_secs(5));
/// assert!(!d.passed());
/// assert!(d.remaining().unwrap() <= Duration::from_secs(5));
/// assert!(Deadline::NEVER.remaining().is_none() && !Deadline::NEVER.passed());
/// // A nap of 100 ms ends no later than the deadline.
/// assert!(Deadline::after(Duration::ZERO).nap_end(Duration::from_millis(100)) <= std::time::Instant::now());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// A wait that never gives up.
    pub const NEVER: Deadline = Deadline(None);

    /// Gives up `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Some(Instant::now() + timeout))
    }

    /// Gives up at `instant` (never if `None`).
    pub fn at(instant: Option<Instant>) -> Deadline {
        Deadline(instant)
    }

    /// The instant, if any.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// Whether the deadline has passed (never, for [`NEVER`](Self::NEVER)).
    pub fn passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// Time left (`None`: forever; zero once passed).
    pub fn remaining(self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// When a nap of `nap` that starts now must end: after `nap`, or at the deadline if that
    /// comes first.
    pub fn nap_end(self, nap: Duration) -> Instant {
        let end = Instant::now() + nap;
        self.0.map_or(end, |d| d.min(end))
    }
}

impl From<Option<Instant>> for Deadline {
    fn from(instant: Option<Instant>) -> Deadline {
        Deadline(instant)
    }
}
