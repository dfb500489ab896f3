//! What the reconciler asks of `sms_messages`: failing a message whose job stayed in `SENDING`
//! past its timeout (which jobs those are, `db::jobs` knows).

use mongodb::bson::{doc, oid::ObjectId, DateTime};

use super::Messages;
use crate::db::stats::Transition;
use crate::domain::status::Status;

impl Messages {
    /// Fails message `id` with `SENDING_TIMEOUT` unless it is settled already (a late report
    /// won the race). A message still `ASSIGNED` or `PENDING` (its `SENDING` report reached the
    /// job but not the message) is failed too. Returns the change when this write made it.
    pub async fn fail_sending_timeout(
        &self,
        id: ObjectId,
        now: DateTime,
    ) -> mongodb::error::Result<Option<Transition>> {
        let live = [
            Status::Pending.as_str(),
            Status::Assigned.as_str(),
            Status::Sending.as_str(),
        ];
        self.move_one(
            doc! {"_id": id, "status": {"$in": live.as_slice()}},
            doc! {"$set": {
                "status": Status::Failed.as_str(),
                "last_error": "SENDING_TIMEOUT",
                "failed_at": now,
                "settled_at": now,
                "updated_at": now,
            }},
            Status::Failed,
            None,
        )
        .await
    }
}
