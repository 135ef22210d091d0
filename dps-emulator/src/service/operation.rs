//! `GET .../operations/{id}` (MQTT's `iotdps-get-operationstatus`): the status of a
//! registration in progress; and `POST .../registrations/{id}`: a device's registration state.

use serde_json::json;

use super::{Reply, Request, Service};

impl Service {
    /// Answers a poll: `202 assigning` while polls are left, then the registration state.
    pub(super) fn operation(&self, request: &Request<'_>, operation_id: &str) -> Reply {
        if let Err(reply) = self.authenticate(request, None) {
            return reply;
        }
        let mut state = self.lock();
        let Some(op) = state
            .operations
            .get_mut(operation_id, &self.limits)
            .filter(|op| op.registration_id == request.registration_id)
        else {
            return Reply::error(404, 404001, "The operation is unknown.");
        };
        if op.polls_left > 0 {
            op.polls_left -= 1;
            return Reply::json(
                202,
                &json!({"operationId": operation_id, "status": "assigning"}),
            )
            .with_retry_after(self.settings.retry_after);
        }
        let status = op.state["status"].clone();
        Reply::json(
            200,
            &json!({
                "operationId": operation_id,
                "status": status,
                "registrationState": op.state,
            }),
        )
    }

    /// The device's registration state, if it has registered.
    pub(super) fn status(&self, request: &Request<'_>) -> Reply {
        if let Err(reply) = self.authenticate(request, None) {
            return reply;
        }
        match self.lock().registrations.get(&request.registration_id) {
            Some(r) => Reply::json(
                200,
                &json!({
                    "registrationId": r.registration_id,
                    "createdDateTimeUtc": r.created_date_time_utc,
                    "assignedHub": r.assigned_hub,
                    "deviceId": r.device_id,
                    "status": "assigned",
                    "substatus": "initialAssignment",
                    "lastUpdatedDateTimeUtc": r.last_updated_date_time_utc,
                    "etag": r.etag,
                }),
            ),
            None => Reply::error(404, 404001, "The device is not registered."),
        }
    }
}
