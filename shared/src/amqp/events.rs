//! The events on the broker: the message event the API publishes for each stored message and a
//! dispatcher stages, and the wake event a dispatcher sends after staging.
//!
//! Neither refuses fields it does not know, so a later version may add one without its events
//! being dead-lettered as unparseable by a dispatcher (or ignored by an API) not yet upgraded.

use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};

use super::Lane;

/// One message to stage. The message id is the event's stable id: a redelivered or republished
/// event names the same message and changes nothing the second time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageEvent {
    pub message_id: String,
    pub request_id: String,
    /// When the API accepted the message, milliseconds since the epoch.
    pub accepted_at_ms: i64,
    /// The message's `priority_weight`, which decides its lane. Events of earlier versions carry
    /// none: they are bulk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_weight: Option<i32>,
}

impl MessageEvent {
    /// The message id, or `None` when it is not an ObjectId (a poison event).
    pub fn message_oid(&self) -> Option<ObjectId> {
        ObjectId::parse_str(&self.message_id).ok()
    }

    /// Its lane when the fast lane starts at `fast_lane_priority`.
    pub fn lane(&self, fast_lane_priority: i32) -> Lane {
        Lane::of(self.priority_weight, fast_lane_priority)
    }
}

/// Jobs became leasable: the lanes (`sms_jobs.lanes`, e.g. an agent's id in hex, or `"*"`) of
/// the jobs one staging step inserted. Fanned out to every API process, which wakes the agents
/// long-polling on those lanes. Best effort: a lost wake only delays a phone until its next
/// check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct WakeEvent {
    pub lanes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_earlier_versions_parse_as_bulk() {
        let old = br#"{"message_id":"0123456789abcdef01234567","request_id":"0123456789abcdef01234568","accepted_at_ms":17}"#;
        let event: MessageEvent = serde_json::from_slice(old).expect("an old event parses");
        assert_eq!(event.priority_weight, None);
        assert_eq!(event.lane(80), Lane::Bulk);
        assert_eq!(event.lane(0), Lane::Bulk);
        assert!(event.message_oid().is_some());
    }

    #[test]
    fn priority_travels_with_the_event_and_unknown_fields_are_ignored() {
        let event = MessageEvent {
            message_id: "0123456789abcdef01234567".into(),
            request_id: "0123456789abcdef01234568".into(),
            accepted_at_ms: 17,
            priority_weight: Some(90),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["priority_weight"], 90);
        let back: MessageEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.lane(80), Lane::Fast);
        let later = br#"{"message_id":"0123456789abcdef01234567","request_id":"x","accepted_at_ms":1,"priority_weight":10,"trace":"t"}"#;
        let parsed: MessageEvent = serde_json::from_slice(later).expect("a later event parses");
        assert_eq!(parsed.lane(80), Lane::Bulk);
    }

    #[test]
    fn wake_events_round_trip() {
        let wake = WakeEvent {
            lanes: vec!["67441862c3b2a1f0e9d8c79e".into(), "*".into()],
        };
        let bytes = serde_json::to_vec(&wake).unwrap();
        assert_eq!(serde_json::from_slice::<WakeEvent>(&bytes).unwrap(), wake);
    }
}
