//! cloudflared's retry policy (spec §1.5) and error classification (§1.6), as pure values.
//!
//! Each wait is uniformly random in `[0, base·2^k)` with k = 1, 2, … capped at `--retries`;
//! a successful registration resets k. Time and randomness are inputs: the caller sleeps.

use std::time::Duration;

/// Backoff state of one HA connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max_retries: u32,
    /// Retries since the last success; also sent as `numPreviousAttempts`.
    retries: u32,
}

impl Backoff {
    pub fn new(base: Duration, max_retries: u32) -> Backoff {
        Backoff {
            base,
            max_retries: max_retries.max(1),
            retries: 0,
        }
    }

    /// Retries since the last success.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Whether the exponent reached its cap.
    pub fn reached_max(&self) -> bool {
        self.retries >= self.max_retries
    }

    /// The next wait for a uniform `random` in [0, 1), and the upper bound cloudflared logs.
    pub fn next(&mut self, random: f64) -> (Duration, Duration) {
        self.retries = self.retries.saturating_add(1);
        let k = self.retries.min(self.max_retries);
        let cap = self.base.saturating_mul(1u32 << k.min(20));
        (cap.mul_f64(random.clamp(0.0, 1.0)), cap)
    }

    /// After a successful registration.
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

/// A uniform number in [0, 1) from the OS random source (via a v4 UUID).
pub fn random_unit() -> f64 {
    let (hi, _) = uuid::Uuid::new_v4().as_u64_pair();
    (hi >> 11) as f64 / (1u64 << 53) as f64
}

/// Go's `time.Duration.String()` for whole seconds and sub-second values, as logs print it.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs > 0 {
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        return match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, _) => format!("{m}m{s}s"),
            _ => format!("{h}h{m}m{s}s"),
        };
    }
    if secs == 0 && d.as_millis() > 0 {
        return format!("{}ms", d.as_millis());
    }
    format!("{:.3}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), 3);
        let caps: Vec<u64> = (0..5).map(|_| b.next(0.5).1.as_secs()).collect();
        assert_eq!(caps, [2, 4, 8, 8, 8]);
        assert!(b.reached_max());
        b.reset();
        let (wait, cap) = b.next(0.5);
        assert_eq!(
            (wait, cap),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        assert!(b.next(0.999).0 < Duration::from_secs(4));
        let r = random_unit();
        assert!((0.0..1.0).contains(&r));
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_secs(64)), "1m4s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }
}
