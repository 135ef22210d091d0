//! Telemetry the devices sent, kept for tests and admin calls: the latest messages, bounded
//! in number and in bytes ([`Limits`]), the oldest dropped first.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::https::Limits;

/// A device-to-cloud message a hub received.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TelemetryMessage {
    /// The hub it was sent to.
    pub hub: String,
    /// The device that sent it.
    pub device_id: String,
    /// Its properties, decoded from the topic's property bag, in order (system properties
    /// as `$.ct`, `$.ce`, `$.mid`, ...; a name without a value has an empty one).
    pub properties: Vec<(String, String)>,
    /// The payload, as sent.
    pub payload: Vec<u8>,
    /// When the hub received it.
    pub received: SystemTime,
}

impl TelemetryMessage {
    /// The value of a property, if the message has it.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The property bag of a telemetry topic (`a=1&%24.ct=application%2Fjson`), decoded. `None`
/// when a name or value is not valid percent-encoded UTF-8.
pub(crate) fn properties(bag: &str) -> Option<Vec<(String, String)>> {
    bag.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                hsm_core::percent::decode_utf8(name)?,
                hsm_core::percent::decode_utf8(value)?,
            ))
        })
        .collect()
}

#[derive(Debug)]
pub(crate) struct Log {
    kept: Mutex<Kept>,
    received: AtomicU64,
    max_messages: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Kept {
    messages: VecDeque<TelemetryMessage>,
    bytes: usize,
}

impl Log {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            kept: Mutex::default(),
            received: AtomicU64::new(0),
            max_messages: limits.max_telemetry_messages,
            max_bytes: limits.max_telemetry_bytes,
        }
    }

    pub(crate) fn record(&self, message: TelemetryMessage) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.bytes += message.payload.len();
        kept.messages.push_back(message);
        while kept.messages.len() > self.max_messages || kept.bytes > self.max_bytes {
            match kept.messages.pop_front() {
                Some(old) => kept.bytes -= old.payload.len(),
                None => break,
            }
        }
    }

    pub(crate) fn messages(&self) -> Vec<TelemetryMessage> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.messages.iter().cloned().collect()
    }

    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn message(payload: usize) -> TelemetryMessage {
        TelemetryMessage {
            hub: "h".into(),
            device_id: "d".into(),
            properties: Vec::new(),
            payload: vec![0; payload],
            received: SystemTime::now(),
        }
    }

    #[test]
    fn property_bags_decode_both_spellings_of_system_properties() {
        assert_eq!(
            properties("%24.ct=application%2Fjson&$.ce=utf-8&alert&k=a%20b").unwrap(),
            vec![
                ("$.ct".into(), "application/json".into()),
                ("$.ce".into(), "utf-8".into()),
                ("alert".into(), String::new()),
                ("k".into(), "a b".into()),
            ]
        );
        assert_eq!(properties("").unwrap(), Vec::new());
        assert_eq!(properties("a=%ff"), None);
    }

    #[test]
    fn the_log_is_bounded_in_messages_and_bytes() {
        let log = Log::new(Limits {
            max_telemetry_messages: 3,
            max_telemetry_bytes: 100,
            ..Limits::default()
        });
        for _ in 0..5 {
            log.record(message(10));
        }
        assert_eq!(log.messages().len(), 3);
        log.record(message(95));
        assert_eq!(log.messages().len(), 1, "the bytes bound drops the rest");
        assert_eq!(log.received(), 6);
    }
}
