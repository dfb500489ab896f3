//! Ids that carry their document's creation second, so that an `_id` range is a time range.

use mongodb::bson::{oid::ObjectId, DateTime};

/// A new unique id whose timestamp is `at`'s second: ordering by `_id` is ordering by that
/// time, to the second. The other 8 bytes are those of a fresh [`ObjectId`] (unique per
/// process and counter).
pub fn id_at(at: DateTime) -> ObjectId {
    let mut bytes = ObjectId::new().bytes();
    bytes[..4].copy_from_slice(&clamp_secs(seconds_floor(at)).to_be_bytes());
    ObjectId::from_bytes(bytes)
}

/// The lowest id of second `secs` (Unix time): every id of that second or later is `>=` it,
/// every id of an earlier second `<` it.
pub fn second_floor(secs: i64) -> ObjectId {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&clamp_secs(secs).to_be_bytes());
    ObjectId::from_bytes(bytes)
}

/// The second (Unix time) an id carries.
pub fn id_seconds(id: ObjectId) -> i64 {
    let b = id.bytes();
    i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn clamp_secs(secs: i64) -> u32 {
    secs.clamp(0, i64::from(u32::MAX)) as u32
}

pub(super) fn seconds_floor(t: DateTime) -> i64 {
    t.timestamp_millis().div_euclid(1000)
}

pub(super) fn seconds_ceil(t: DateTime) -> i64 {
    let ms = t.timestamp_millis();
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_564_800; // 2026-11-25T00:00:00Z

    #[test]
    fn ids_carry_their_second_and_stay_unique() {
        let at = DateTime::from_millis(T0 * 1000 + 999);
        let ids: std::collections::HashSet<ObjectId> = (0..10_000).map(|_| id_at(at)).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id_seconds(*id) == T0));
        assert!(ids.iter().all(|id| *id >= second_floor(T0)));
        assert!(ids.iter().all(|id| *id < second_floor(T0 + 1)));
    }
}
