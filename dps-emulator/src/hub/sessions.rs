//! Who is connected to the hubs: one live session per device (a newer connection ends the
//! older one, as IoT Hub does), the subscriptions a device keeps across connections when it
//! connects with clean session 0 (IoT Hub persists them; the Node SDK relies on it after its
//! SAS-renewal reconnects), and a way to reach a live session: to end it (device disabled or
//! moved) or to send it a desired-properties patch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::sync::mpsc;

/// What the hub sends a live session from outside it.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Publish this to the device (QoS 0).
    Publish { topic: String, payload: Vec<u8> },
    /// End the connection, for this reason (logged).
    Close(&'static str),
}

/// A session just opened.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    pub(crate) id: u64,
    pub(crate) outbox: mpsc::UnboundedReceiver<Outbound>,
    /// Whether subscriptions were kept from an earlier connection (CONNACK's session present).
    pub(crate) session_present: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<String, Live>,
    /// Granted topic filters and their QoS, by device id.
    subscriptions: HashMap<String, BTreeMap<String, u8>>,
    next_id: u64,
}

#[derive(Debug)]
struct Live {
    id: u64,
    outbox: mpsc::UnboundedSender<Outbound>,
    /// Connected with clean session 1: what it subscribed to ends with it.
    clean: bool,
}

/// The filter a desired-properties notification needs.
const DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent: a poisoned lock is recovered.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the device's session, ending any older one. With `clean`, earlier subscriptions
    /// are forgotten.
    pub(crate) fn open(&self, device_id: &str, clean: bool) -> SessionHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let live = Live {
            id,
            outbox: tx,
            clean,
        };
        if let Some(old) = inner.live.insert(device_id.to_owned(), live) {
            let _ = old
                .outbox
                .send(Outbound::Close("a newer connection for the same device"));
            if old.clean {
                inner.subscriptions.remove(device_id);
            }
        }
        let session_present = if clean {
            inner.subscriptions.remove(device_id);
            false
        } else {
            inner
                .subscriptions
                .get(device_id)
                .is_some_and(|s| !s.is_empty())
        };
        SessionHandle {
            id,
            outbox: rx,
            session_present,
        }
    }

    /// Ends session `id` (if it is still the device's live one).
    pub(crate) fn close(&self, device_id: &str, id: u64) {
        let mut inner = self.lock();
        if inner.live.get(device_id).is_some_and(|l| l.id == id)
            && let Some(live) = inner.live.remove(device_id)
            && live.clean
        {
            inner.subscriptions.remove(device_id);
        }
    }

    pub(crate) fn subscribe(&self, device_id: &str, filter: &str, qos: u8) {
        self.lock()
            .subscriptions
            .entry(device_id.to_owned())
            .or_default()
            .insert(filter.to_owned(), qos);
    }

    pub(crate) fn unsubscribe(&self, device_id: &str, filter: &str) {
        if let Some(filters) = self.lock().subscriptions.get_mut(device_id) {
            filters.remove(filter);
        }
    }

    /// Whether the device has subscribed to `filter` (in this or a kept session).
    pub(crate) fn subscribed(&self, device_id: &str, filter: &str) -> bool {
        self.lock()
            .subscriptions
            .get(device_id)
            .is_some_and(|s| s.contains_key(filter))
    }

    /// Ends the device's live session, if any.
    pub(crate) fn kick(&self, device_id: &str, reason: &'static str) {
        if let Some(live) = self.lock().live.remove(device_id) {
            let _ = live.outbox.send(Outbound::Close(reason));
        }
    }

    /// Sends a desired-properties patch to the device, if it is connected and subscribed.
    pub(crate) fn notify_desired(&self, device_id: &str, version: u64, patch: Vec<u8>) {
        let inner = self.lock();
        let subscribed = inner
            .subscriptions
            .get(device_id)
            .is_some_and(|s| s.contains_key(DESIRED_FILTER));
        if let (true, Some(live)) = (subscribed, inner.live.get(device_id)) {
            let _ = live.outbox.send(Outbound::Publish {
                topic: format!("$iothub/twin/PATCH/properties/desired/?$version={version}"),
                payload: patch,
            });
        }
    }

    /// Whether the device is connected now.
    pub(crate) fn is_connected(&self, device_id: &str) -> bool {
        self.lock().live.contains_key(device_id)
    }

    /// Devices connected now.
    pub(crate) fn connected(&self) -> usize {
        self.lock().live.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_newer_connection_ends_the_older_and_subscriptions_follow_clean_session() {
        let sessions = Sessions::default();
        let mut first = sessions.open("d", false);
        assert!(!first.session_present);
        sessions.subscribe("d", "$iothub/twin/res/#", 0);
        let second = sessions.open("d", false);
        assert!(second.session_present);
        assert!(matches!(
            first.outbox.try_recv().unwrap(),
            Outbound::Close(_)
        ));
        // The old session's end does not end the new one.
        sessions.close("d", first.id);
        assert_eq!(sessions.connected(), 1);
        assert!(sessions.subscribed("d", "$iothub/twin/res/#"));
        let third = sessions.open("d", true);
        assert!(!third.session_present);
        assert!(!sessions.subscribed("d", "$iothub/twin/res/#"));
        sessions.close("d", third.id);
        assert_eq!(sessions.connected(), 0);
    }
}
