//! Device twins: desired properties (from the enrollment's initial twin, changed by admin
//! calls) and reported properties (patched by the device), each with a `$version` that grows
//! by one at every change. Patches follow IoT Hub's rules: a JSON object, `null` deletes a
//! property, objects merge, no `$` names, at most 10 levels and 32 KiB.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

/// A reported-properties patch larger than this is refused (IoT Hub's limit for the
/// reported section).
pub(crate) const MAX_PATCH: usize = 32 * 1024;

/// Objects nested deeper than this are refused (IoT Hub's limit).
const MAX_DEPTH: usize = 10;

/// Why a patch was refused: the device gets status 400 and this message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TwinError {
    #[error("the patch is not a JSON object")]
    NotAnObject,
    #[error("the patch is larger than 32 KiB")]
    TooLarge,
    #[error("the patch nests objects deeper than 10 levels")]
    TooDeep,
    #[error("property names may not start with '$'")]
    DollarName,
}

#[derive(Debug)]
struct Twin {
    desired: Map<String, Value>,
    desired_version: u64,
    reported: Map<String, Value>,
    reported_version: u64,
}

impl Twin {
    fn new(initial: Option<&Value>) -> Self {
        let desired = initial
            .and_then(|t| t.pointer("/properties/desired"))
            .and_then(Value::as_object)
            .map(|d| {
                d.iter()
                    .filter(|(k, _)| !k.starts_with('$'))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            desired,
            desired_version: 1,
            reported: Map::new(),
            reported_version: 1,
        }
    }

    fn document(&self) -> Value {
        let section = |props: &Map<String, Value>, version: u64| {
            let mut section = props.clone();
            section.insert("$version".into(), json!(version));
            Value::Object(section)
        };
        json!({
            "desired": section(&self.desired, self.desired_version),
            "reported": section(&self.reported, self.reported_version),
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct Twins(Mutex<HashMap<String, Twin>>);

impl Twins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Twin>> {
        // Patches are checked before they are applied: a poisoned lock holds whole twins.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn create(&self, device_id: &str, initial: Option<&Value>) {
        self.lock()
            .entry(device_id.to_owned())
            .or_insert_with(|| Twin::new(initial));
    }

    pub(crate) fn document(&self, device_id: &str) -> Value {
        self.lock()
            .entry(device_id.to_owned())
            .or_insert_with(|| Twin::new(None))
            .document()
    }

    pub(crate) fn patch_reported(&self, device_id: &str, patch: &[u8]) -> Result<u64, TwinError> {
        if patch.len() > MAX_PATCH {
            return Err(TwinError::TooLarge);
        }
        let patch: Value = serde_json::from_slice(patch).map_err(|_| TwinError::NotAnObject)?;
        let patch = checked(&patch)?;
        let mut twins = self.lock();
        let twin = twins
            .entry(device_id.to_owned())
            .or_insert_with(|| Twin::new(None));
        merge(&mut twin.reported, patch);
        twin.reported_version += 1;
        Ok(twin.reported_version)
    }

    /// Applies a desired patch; returns the new version and the notification body.
    pub(crate) fn patch_desired(
        &self,
        device_id: &str,
        patch: &Value,
    ) -> Result<(u64, Vec<u8>), TwinError> {
        let patch = checked(patch)?;
        let mut twins = self.lock();
        let twin = twins
            .entry(device_id.to_owned())
            .or_insert_with(|| Twin::new(None));
        merge(&mut twin.desired, patch);
        twin.desired_version += 1;
        let mut notification = patch.clone();
        notification.insert("$version".into(), json!(twin.desired_version));
        let body = serde_json::to_vec(&notification).unwrap_or_default();
        Ok((twin.desired_version, body))
    }
}

/// The patch as an object, if it follows the rules.
fn checked(patch: &Value) -> Result<&Map<String, Value>, TwinError> {
    let object = patch.as_object().ok_or(TwinError::NotAnObject)?;
    check(object, 1)?;
    Ok(object)
}

fn check(object: &Map<String, Value>, depth: usize) -> Result<(), TwinError> {
    if depth > MAX_DEPTH {
        return Err(TwinError::TooDeep);
    }
    for (name, value) in object {
        if name.starts_with('$') {
            return Err(TwinError::DollarName);
        }
        if let Value::Object(inner) = value {
            check(inner, depth + 1)?;
        }
    }
    Ok(())
}

/// Merges `patch` into `target`: `null` removes, objects merge, anything else replaces.
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (name, value) in patch {
        match value {
            Value::Null => {
                target.remove(name);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge(existing, inner);
                }
            }
            other => {
                target.insert(name.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn patches_merge_delete_and_version() {
        let twins = Twins::default();
        twins.create(
            "d",
            Some(&json!({"properties": {"desired": {"interval": 5}}})),
        );
        assert_eq!(
            twins.document("d"),
            json!({"desired": {"interval": 5, "$version": 1}, "reported": {"$version": 1}})
        );
        assert_eq!(
            twins.patch_reported("d", br#"{"fw": {"version": "1.0", "ok": true}, "x": 1}"#),
            Ok(2)
        );
        assert_eq!(
            twins.patch_reported("d", br#"{"fw": {"ok": null}, "x": null}"#),
            Ok(3)
        );
        assert_eq!(
            twins.document("d")["reported"],
            json!({"fw": {"version": "1.0"}, "$version": 3})
        );
        let (version, body) = twins.patch_desired("d", &json!({"interval": 10})).unwrap();
        assert_eq!(version, 2);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"interval": 10, "$version": 2})
        );
    }

    #[test]
    fn bad_patches_are_refused_and_change_nothing() {
        let twins = Twins::default();
        let mut deep = json!(1);
        for _ in 0..11 {
            deep = json!({ "a": deep });
        }
        for (patch, error) in [
            (b"[1]".to_vec(), TwinError::NotAnObject),
            (b"not json".to_vec(), TwinError::NotAnObject),
            (br#"{"$version": 9}"#.to_vec(), TwinError::DollarName),
            (serde_json::to_vec(&deep).unwrap(), TwinError::TooDeep),
            (
                format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_PATCH)).into_bytes(),
                TwinError::TooLarge,
            ),
        ] {
            assert_eq!(twins.patch_reported("d", &patch), Err(error));
        }
        assert_eq!(twins.document("d")["reported"], json!({"$version": 1}));
    }
}
