//! Exponential backoff with jitter, for reconnects and resync retries: thousands of clients
//! that lost the same server must not come back at the same instant.

use std::time::Duration;

/// Delays between attempts: `initial`, doubling up to `max`, each scaled by a random factor in
/// [0.5, 1.0] ("equal jitter").
///
/// ```
/// use std::time::Duration;
/// use mycosynth_subscriber::Backoff;
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// let third = backoff.delay(3);
/// assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
/// assert!(backoff.delay(50) <= Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
        }
    }

    /// The nominal (jitter-free) delay before retry number `attempt` (1-based).
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `attempt` (1-based), with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.nominal(attempt)
            .mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

impl Default for Backoff {
    /// 250 ms doubling up to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}
