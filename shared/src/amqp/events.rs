//! The events on the broker: the message event the API publishes for each stored message and a
//! dispatcher stages, and the wake event a dispatcher sends after staging.
//!
//! Message events travel in payloads: one broker message carries the events of up to
//! [`EVENTS_PER_PAYLOAD`] messages of one request, published together, so that a request of
//! thousands of messages costs the broker (and the dispatchers' acks) a few hundred deliveries
//! instead of thousands. A payload of one event keeps the shape of earlier versions
//! (`message_id`); a payload of several names them in `message_ids`. [`decode`] reads both.
//!
//! Neither refuses fields it does not know, so a later version may add one without its events
//! being dead-lettered as unparseable by a dispatcher (or ignored by an API) not yet upgraded.

use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};

use super::Lane;

/// The most message events one payload carries.
pub const EVENTS_PER_PAYLOAD: usize = 32;

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

    /// Whether `other` may share a payload with this event: same request, acceptance and
    /// priority (hence lane).
    fn shares_payload_with(&self, other: &MessageEvent) -> bool {
        self.request_id == other.request_id
            && self.accepted_at_ms == other.accepted_at_ms
            && self.priority_weight == other.priority_weight
    }
}

/// A payload of several events: what they share, once.
#[derive(Serialize)]
struct Several<'a> {
    message_ids: Vec<&'a str>,
    request_id: &'a str,
    accepted_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority_weight: Option<i32>,
}

/// A payload as read: one event, or several.
#[derive(Deserialize)]
struct Wire {
    message_id: Option<String>,
    message_ids: Option<Vec<String>>,
    request_id: String,
    accepted_at_ms: i64,
    #[serde(default)]
    priority_weight: Option<i32>,
}

/// Groups `events` into payloads: runs of events that share a payload (see
/// [`MessageEvent::shares_payload_with`]), at most [`EVENTS_PER_PAYLOAD`] each. Returns each
/// payload's positions in `events`, in order.
pub fn payloads(events: &[&MessageEvent]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=events.len() {
        let ends = i == events.len()
            || i - start == EVENTS_PER_PAYLOAD
            || !events[start].shares_payload_with(events[i]);
        if ends {
            out.push(start..i);
            start = i;
        }
    }
    out
}

/// The payload carrying `events`: one of [`payloads`]' groups (not empty).
pub fn encode(events: &[&MessageEvent]) -> Vec<u8> {
    match events {
        [one] => serde_json::to_vec(one).expect("events serialise"),
        [first, ..] => serde_json::to_vec(&Several {
            message_ids: events.iter().map(|e| e.message_id.as_str()).collect(),
            request_id: &first.request_id,
            accepted_at_ms: first.accepted_at_ms,
            priority_weight: first.priority_weight,
        })
        .expect("events serialise"),
        [] => panic!("a payload carries at least one event"),
    }
}

/// The events a payload carries, or why it carries none (a poison payload).
pub fn decode(payload: &[u8]) -> Result<Vec<MessageEvent>, String> {
    let wire: Wire =
        serde_json::from_slice(payload).map_err(|e| format!("unparseable event: {e}"))?;
    let ids = match (wire.message_id, wire.message_ids) {
        (Some(one), None) => vec![one],
        (None, Some(several)) if !several.is_empty() => several,
        _ => {
            return Err(
                "unparseable event: names no message, or both message_id and message_ids".into(),
            )
        }
    };
    Ok(ids
        .into_iter()
        .map(|message_id| MessageEvent {
            message_id,
            request_id: wire.request_id.clone(),
            accepted_at_ms: wire.accepted_at_ms,
            priority_weight: wire.priority_weight,
        })
        .collect())
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
    fn event(n: usize, request: &str, priority: Option<i32>) -> MessageEvent {
        MessageEvent {
            message_id: format!("{n:024x}"),
            request_id: request.into(),
            accepted_at_ms: 17,
            priority_weight: priority,
        }
    }

    #[test]
    fn a_request_s_events_share_payloads_of_at_most_the_limit_and_others_do_not() {
        let mut events: Vec<MessageEvent> = (0..70).map(|n| event(n, "a", Some(50))).collect();
        events.push(event(70, "b", Some(50)));
        events.push(event(71, "b", Some(90)));
        events.push(event(72, "b", Some(90)));
        let refs: Vec<&MessageEvent> = events.iter().collect();
        let groups = payloads(&refs);
        assert_eq!(groups, vec![0..32, 32..64, 64..70, 70..71, 71..73]);

        for group in groups {
            let decoded = decode(&encode(&refs[group.clone()])).expect("a payload decodes");
            assert_eq!(decoded, events[group].to_vec());
        }
        assert!(payloads(&[]).is_empty());
    }

    #[test]
    fn a_payload_of_one_event_keeps_the_earlier_shape() {
        let one = event(5, "r", None);
        let bytes = encode(&[&one]);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["message_id"], one.message_id);
        assert!(json.get("message_ids").is_none());
        assert_eq!(serde_json::from_slice::<MessageEvent>(&bytes).unwrap(), one);
    }

    #[test]
    fn a_payload_naming_no_message_or_both_ways_is_poison() {
        for bad in [
            &br#"{"request_id":"r","accepted_at_ms":1}"#[..],
            br#"{"message_ids":[],"request_id":"r","accepted_at_ms":1}"#,
            br#"{"message_id":"a","message_ids":["b"],"request_id":"r","accepted_at_ms":1}"#,
            b"{broken",
        ] {
            let why = decode(bad).expect_err("poison");
            assert!(why.starts_with("unparseable event"), "{why}");
        }
    }
}
