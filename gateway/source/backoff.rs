//! Reconnect delays: exponential, capped, reset once a camera has been
//! stable for a while (a flapping camera keeps backing off).

use std::time::Duration;

/// The reconnect schedule of one camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// First delay after a failure.
    pub initial: Duration,
    /// Delays double up to this.
    pub max: Duration,
    /// Online this long without a failure = healthy: the next failure starts
    /// again from `initial`.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// Where a camera is in its reconnect schedule. Pure: the caller says how
/// long the last online period lasted, so tests need no clock.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            next: policy.initial,
            policy,
        }
    }

    /// The delay before the next attempt, after a failure that ended an
    /// online period of `online_for` (zero when the attempt never got a frame).
    pub fn after_failure(&mut self, online_for: Duration) -> Duration {
        if online_for >= self.policy.stable_after {
            self.next = self.policy.initial;
        }
        let delay = self.next.min(self.policy.max);
        self.next = (delay * 2).min(self.policy.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: f64) -> Duration {
        Duration::from_secs_f64(v)
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let got: Vec<f64> = (0..9)
            .map(|_| b.after_failure(Duration::ZERO).as_secs_f64())
            .collect();
        assert_eq!(got, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
    }

    #[test]
    fn a_stable_period_resets_the_schedule_and_a_short_one_does_not() {
        let mut b = Backoff::new(BackoffPolicy::default());
        for _ in 0..4 {
            b.after_failure(Duration::ZERO);
        }
        // Online for 5 s then down again: still backing off (flapping).
        assert_eq!(b.after_failure(secs(5.0)), secs(8.0));
        // Online for a minute: healthy, start over.
        assert_eq!(b.after_failure(secs(60.0)), secs(0.5));
        assert_eq!(b.after_failure(Duration::ZERO), secs(1.0));
    }

    #[test]
    fn an_initial_delay_above_the_cap_is_capped() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: secs(10.0),
            max: secs(3.0),
            stable_after: secs(1.0),
        });
        assert_eq!(b.after_failure(Duration::ZERO), secs(3.0));
        assert_eq!(b.after_failure(Duration::ZERO), secs(3.0));
    }
}
