//! Fault injection: make the emulator misbehave on purpose so clients can be tested against it.

use std::sync::Mutex;
use std::time::Duration;

/// What an injected fault does to one request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FaultKind {
    /// Answer `429 Too Many Requests` with this `Retry-After` (seconds).
    Throttle {
        /// The `Retry-After` value, in seconds.
        #[serde(default = "one")]
        retry_after: u32,
    },
    /// Answer with this status (500, 503, ...) and a DPS error body.
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// Wait this long before answering normally.
    Delay {
        /// The delay, in milliseconds.
        delay_ms: u64,
    },
    /// Close the connection without answering.
    Drop,
    /// Answer with status 200/202 and a body that is not JSON.
    MalformedBody,
}

fn one() -> u32 {
    1
}

/// A fault, applied to the next `count` requests that match it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Fault {
    /// What it does.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many requests it applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Only requests for this registration id (default: all).
    #[serde(default)]
    pub registration_id: Option<String>,
    /// Only these requests (default: all).
    #[serde(default)]
    pub on: FaultTarget,
}

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FaultTarget {
    /// Register and poll requests alike.
    #[default]
    Any,
    /// Only the register request.
    Register,
    /// Only operation-status polls.
    Poll,
    /// Only certificate requests to a hub (`$iothub/credentials`): `throttle` answers 429
    /// with `retryAfter`, `status` that status, `drop` accepts (202) and never answers,
    /// `malformed_body` answers 200 with a body that is not JSON. Never matched by `any`.
    Certificate,
}

impl Fault {
    /// A fault of this kind for the next `count` requests.
    pub fn new(kind: FaultKind, count: u32) -> Self {
        Self {
            kind,
            count,
            registration_id: None,
            on: FaultTarget::Any,
        }
    }

    /// Restricts the fault to one registration id.
    #[must_use]
    pub fn for_registration(mut self, registration_id: impl Into<String>) -> Self {
        self.registration_id = Some(registration_id.into());
        self
    }

    /// Restricts the fault to register requests or to polls.
    #[must_use]
    pub fn on(mut self, target: FaultTarget) -> Self {
        self.on = target;
        self
    }

    /// The delay this fault adds, if it is a delay.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.kind {
            FaultKind::Delay { delay_ms } => Some(Duration::from_millis(delay_ms)),
            _ => None,
        }
    }
}

/// The queue of pending faults.
#[derive(Debug, Default)]
pub(crate) struct Faults(Mutex<Vec<Fault>>);

impl Faults {
    pub(crate) fn inject(&self, fault: Fault) {
        if fault.count > 0 {
            self.lock().push(fault);
        }
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Takes one use of the first fault matching this request (`request`: `Register`,
    /// `Poll` or `Certificate`).
    pub(crate) fn take(&self, registration_id: &str, request: FaultTarget) -> Option<Fault> {
        let mut faults = self.lock();
        let index = faults.iter().position(|f| {
            f.registration_id
                .as_deref()
                .is_none_or(|id| id == registration_id)
                && (f.on == request
                    || f.on == FaultTarget::Any && request != FaultTarget::Certificate)
        })?;
        let fault = &mut faults[index];
        fault.count -= 1;
        let taken = fault.clone();
        if fault.count == 0 {
            faults.remove(index);
        }
        Some(taken)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        // A panic while holding this lock cannot leave the list inconsistent: recover it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn counts_down_and_filters() {
        let faults = Faults::default();
        faults.inject(Fault::new(FaultKind::Drop, 2).for_registration("a"));
        faults.inject(Fault::new(FaultKind::Status { status: 503 }, 1).on(FaultTarget::Poll));
        assert_eq!(faults.take("b", FaultTarget::Register), None);
        assert_eq!(
            faults.take("a", FaultTarget::Register).unwrap().kind,
            FaultKind::Drop
        );
        assert_eq!(
            faults.take("a", FaultTarget::Register).unwrap().kind,
            FaultKind::Drop
        );
        assert_eq!(faults.take("a", FaultTarget::Register), None);
        assert_eq!(
            faults.take("a", FaultTarget::Poll).unwrap().kind,
            FaultKind::Status { status: 503 }
        );
        assert_eq!(faults.take("a", FaultTarget::Poll), None);
        // `any` is for DPS requests; certificate requests only take their own faults.
        faults.inject(Fault::new(FaultKind::Drop, 1));
        assert_eq!(faults.take("a", FaultTarget::Certificate), None);
        faults.inject(Fault::new(FaultKind::Drop, 1).on(FaultTarget::Certificate));
        assert_eq!(
            faults.take("a", FaultTarget::Certificate).unwrap().kind,
            FaultKind::Drop
        );
    }

    #[test]
    fn parses_from_toml() {
        let f: Fault = toml::from_str("kind = \"throttle\"\nretry_after = 2\ncount = 3").unwrap();
        assert_eq!(f.kind, FaultKind::Throttle { retry_after: 2 });
        assert_eq!(f.count, 3);
    }
}
