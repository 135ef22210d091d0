use std::time::Duration;

/// How the client waits between polls and retries failed requests.
///
/// Build one with struct update syntax:
///
/// ```
/// use std::time::Duration;
/// use provisioning::RetryPolicy;
///
/// let policy = RetryPolicy { max_retries: 3, ..RetryPolicy::default() };
/// assert_eq!(policy.initial_backoff, Duration::from_millis(500));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times one request (the register request, or one poll) is retried after a
    /// transient failure (429, 5xx, a connection error, a malformed response) before its error
    /// is returned. Default 6.
    pub max_retries: u32,
    /// The first backoff delay; each further retry doubles it. Default 500 ms.
    pub initial_backoff: Duration,
    /// The longest backoff delay. Default 30 s.
    pub max_backoff: Duration,
    /// Randomise each backoff delay to between half and all of it ("equal jitter"), so that a
    /// fleet does not retry in lockstep. Default on.
    pub jitter: bool,
    /// The longest `Retry-After` the client honours; longer values are cut to it. Default 60 s.
    pub max_retry_after: Duration,
    /// The wait between polls when DPS sends no `Retry-After`. Default 2 s.
    pub default_poll_interval: Duration,
    /// The shortest wait before a poll or a retried request, whatever `Retry-After` says:
    /// a server that answers `Retry-After: 0` is not polled in a tight loop. Default 1 s; the
    /// local `dps-emulator` (tests, benchmarks) may set it to zero.
    pub min_poll_interval: Duration,
    /// How long one request may take (connect, TLS handshake, answer) before it counts as a
    /// connection failure and is retried on a new connection. Default 30 s.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            jitter: true,
            max_retry_after: Duration::from_secs(60),
            default_poll_interval: Duration::from_secs(2),
            min_poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The policy with retries off: every failure is returned at once.
    pub fn no_retries() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The backoff before retry number `retry` (1-based), with jitter if enabled.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        if !self.jitter || full.is_zero() {
            return full;
        }
        // Equal jitter: half fixed, half random. Without an OS RNG, no jitter.
        let random = getrandom::u64().unwrap_or(u64::MAX);
        let half = full / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let extra = if nanos == 0 { 0 } else { random % nanos };
        half + Duration::from_nanos(extra)
    }

    /// The wait a `Retry-After` asks for, clamped to `[min_poll_interval, max_retry_after]`;
    /// `fallback` when there is none.
    pub(crate) fn retry_after(&self, asked: Option<Duration>, fallback: Duration) -> Duration {
        asked
            .unwrap_or(fallback)
            .min(self.max_retry_after)
            .max(self.min_poll_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let policy = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(500));
        assert_eq!(policy.backoff(2), Duration::from_secs(1));
        assert_eq!(policy.backoff(3), Duration::from_secs(2));
        assert_eq!(policy.backoff(100), Duration::from_secs(30));
        let jittered = RetryPolicy::default();
        for retry in 1..10 {
            let d = jittered.backoff(retry);
            let full = policy.backoff(retry);
            assert!(d >= full / 2 && d <= full, "{retry}: {d:?} vs {full:?}");
        }
    }

    #[test]
    fn retry_after_is_clamped_to_the_floor_and_the_ceiling() {
        let policy = RetryPolicy::default();
        let two = Duration::from_secs(2);
        // Retry-After: 0 from a sloppy server: no tight loop.
        assert_eq!(
            policy.retry_after(Some(Duration::ZERO), two),
            Duration::from_secs(1)
        );
        let no_floor = RetryPolicy {
            min_poll_interval: Duration::ZERO,
            ..policy
        };
        assert_eq!(
            no_floor.retry_after(Some(Duration::ZERO), two),
            Duration::ZERO
        );
        assert_eq!(policy.retry_after(None, two), two);
        assert_eq!(
            policy.retry_after(Some(Duration::from_secs(86_400)), two),
            Duration::from_secs(60)
        );
    }
}
