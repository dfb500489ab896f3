//! The message event: what the API publishes for each stored message and a dispatcher stages.

use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};

/// One message to stage. The message id is the event's stable id: a redelivered or republished
/// event names the same message and changes nothing the second time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MessageEvent {
    pub message_id: String,
    pub request_id: String,
    /// When the API accepted the message, milliseconds since the epoch.
    pub accepted_at_ms: i64,
}

impl MessageEvent {
    /// The message id, or `None` when it is not an ObjectId (a poison event).
    pub fn message_oid(&self) -> Option<ObjectId> {
        ObjectId::parse_str(&self.message_id).ok()
    }
}
