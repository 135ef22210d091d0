//! [`Clock`]: the service's time as the device knows it, the system clock plus an offset
//! learned from the service, so that SAS tokens stay valid on a device whose clock is wrong
//! (no RTC battery, no NTP yet, a clock reset to 1970 or set a day ahead).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hsm_core::Expiry;

/// Offsets smaller than this are not corrected: an HTTP `Date` has a resolution of one second
/// and arrives after a network delay, and a SAS token lives an hour.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(30);

/// The time SAS tokens are built with: the system clock plus the offset learned from the
/// service (DPS's HTTP `Date`; a refused token makes the client ask again).
///
/// Cheap to clone; the clones share the offset, so what a registration learns, the hub
/// connection uses.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    /// A clock with no offset.
    pub fn new() -> Self {
        Self::default()
    }

    /// The offset in seconds: the service's time minus the device's.
    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Sets the offset (seconds, the service's time minus the device's).
    pub fn set_offset(&self, seconds: i64) {
        self.offset.store(seconds, Ordering::Relaxed);
    }

    /// The service's time now, in seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        system_now().saturating_add_signed(self.offset())
    }

    /// The service's time now.
    pub fn now_system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.now())
    }

    /// An expiry `ttl` from the service's now.
    pub fn expiry(&self, ttl: Duration) -> Expiry {
        Expiry::At(self.now().saturating_add(ttl.as_secs()))
    }

    /// Learns the offset from the time the service said it was (an HTTP `Date`). Offsets
    /// within [`CLOCK_TOLERANCE`] count as none. Returns `true` when the offset changed by
    /// more than the tolerance (tokens signed before are off by that much).
    pub fn observe(&self, service_time: SystemTime) -> bool {
        let service = match service_time.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => return false,
        };
        let device = i64::try_from(system_now()).unwrap_or(i64::MAX);
        let mut offset = service.saturating_sub(device);
        let tolerance = CLOCK_TOLERANCE.as_secs().cast_signed();
        if offset.abs() <= tolerance {
            offset = 0;
        }
        let before = self.offset.swap(offset, Ordering::Relaxed);
        let changed = offset.abs_diff(before) > CLOCK_TOLERANCE.as_secs();
        if changed {
            tracing::warn!(
                offset_seconds = offset,
                "the device clock differs from the service's: SAS tokens use the service's time"
            );
        }
        changed
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_and_ignores_small_offsets() {
        let clock = Clock::new();
        let day = Duration::from_secs(86_400);
        assert!(clock.observe(SystemTime::now() + day));
        assert!((clock.offset() - 86_400).abs() <= 2);
        assert!(clock.now() >= system_now() + 86_398);
        // The same again: no change.
        assert!(!clock.observe(SystemTime::now() + day));
        // Back within the tolerance: the offset is dropped, which is a change.
        assert!(clock.observe(SystemTime::now() + Duration::from_secs(5)));
        assert_eq!(clock.offset(), 0);
        assert!(!clock.observe(SystemTime::now() - Duration::from_secs(10)));
        assert!(clock.observe(SystemTime::now() - day));
        assert!(clock.offset() <= -86_398);
        let Expiry::At(at) = clock.expiry(Duration::from_secs(3600)) else {
            panic!("an absolute expiry");
        };
        assert!(at < system_now() - 80_000);
        // Clones share the offset.
        let other = clock.clone();
        other.set_offset(7);
        assert_eq!(clock.offset(), 7);
        assert!(!clock.observe(UNIX_EPOCH - Duration::from_secs(1)));
    }
}
