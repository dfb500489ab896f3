//! What the agents have used of their limits, for the operators' list: one read of the ledger's
//! last 30 minutes and one of today's counters for all agents at once, so the list costs what
//! the windows hold, never what `sms_messages` holds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId};

use super::daily::{day_id, DayCount};
use super::{within, AgentRate, Caps, LONG_WINDOW_SECONDS, WINDOW_SECONDS};

/// Messages leased to one agent in each window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// In the last 60 seconds.
    pub last_minute: i64,
    /// In the last 30 minutes.
    pub last_30min: i64,
    /// Since 00:00 UTC.
    pub today: i64,
}

/// What an agent may still lease in each window; `None` where it has no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub per_min: i64,
    pub per_30min: Option<i64>,
    pub today: Option<i64>,
}

impl Usage {
    /// What `caps` leave of it, never below 0.
    pub fn remaining(&self, caps: Caps) -> Remaining {
        Remaining {
            per_min: (caps.per_min - self.last_minute).max(0),
            per_30min: caps.per_30min.map(|c| (c - self.last_30min).max(0)),
            today: caps.per_day.map(|c| (c - self.today).max(0)),
        }
    }
}

impl AgentRate {
    /// The usage of each of `agents` at `now` (agents that leased nothing are left out).
    pub async fn usage(
        &self,
        agents: &[ObjectId],
        now: DateTime<Utc>,
    ) -> mongodb::error::Result<HashMap<ObjectId, Usage>> {
        let mut out: HashMap<ObjectId, Usage> = HashMap::new();
        if agents.is_empty() {
            return Ok(out);
        }
        for r in self.window(agents, now, LONG_WINDOW_SECONDS).await? {
            let usage = out.entry(r.agent_id).or_default();
            let n = r.n.max(0);
            usage.last_30min += n;
            if within(&r, now, WINDOW_SECONDS) {
                usage.last_minute += n;
            }
        }
        let ids: Vec<String> = agents.iter().map(|a| day_id(*a, now)).collect();
        let days: Vec<DayCount> = self
            .days
            .find(doc! {"_id": {"$in": ids}})
            .await?
            .try_collect()
            .await?;
        for day in days {
            out.entry(day.agent_id).or_default().today = day.n.max(0);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_is_what_the_caps_leave_and_none_without_a_cap() {
        let used = Usage {
            last_minute: 4,
            last_30min: 31,
            today: 7,
        };
        let capped = Caps {
            per_min: 10,
            per_30min: Some(30),
            per_day: Some(100),
        };
        assert_eq!(
            used.remaining(capped),
            Remaining {
                per_min: 6,
                per_30min: Some(0),
                today: Some(93),
            }
        );
        assert_eq!(
            used.remaining(Caps::per_min(3)),
            Remaining {
                per_min: 0,
                per_30min: None,
                today: None,
            }
        );
    }
}
