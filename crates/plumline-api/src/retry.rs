//! [`RetryPolicy`]: exponential backoff with full jitter, bounded in
//! attempts and in total time.

use std::time::Duration;

/// How transient failures are retried.
///
/// The delay before retry `n` (1-based) is drawn uniformly from
/// `[0, min(max_backoff, initial_backoff * 2^(n-1))]` ("full jitter"), so
/// many clients failing together do not retry together. A server's
/// `Retry-After` replaces the drawn delay when it is longer (the server knows
/// best); a retry whose delay would end past `max_elapsed` since the first
/// attempt is not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first; 1 disables retries.
    pub max_attempts: u32,
    /// The cap of the first backoff.
    pub initial_backoff: Duration,
    /// The largest drawn backoff.
    pub max_backoff: Duration,
    /// No new attempt starts after this much time since the first.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    #[must_use]
    pub fn never() -> Self {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    /// The backoff before retry number `retry` (1 for the first retry),
    /// given what the server asked for.
    #[must_use]
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_backoff);
        let cap_ms = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX);
        let jittered = Duration::from_millis(fastrand::u64(0..=cap_ms));
        match retry_after {
            Some(asked) => jittered.max(asked),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(10),
        };
        for retry in 1..=10 {
            let cap = Duration::from_millis(100 * 2u64.pow(retry - 1)).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.backoff(retry, None) <= cap, "retry {retry}");
            }
        }
        // Retry-After wins when longer; max_elapsed, checked by the caller, bounds it.
        assert!(p.backoff(1, Some(Duration::from_millis(700))) >= Duration::from_millis(700));
        assert_eq!(p.backoff(1, Some(Duration::from_secs(3600))), Duration::from_secs(3600));
    }
}
