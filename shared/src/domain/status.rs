//! The message status machine shared with the Android agents.

use serde::{Deserialize, Serialize};

/// A message's status, spelled as the agents and clients know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Assigned,
    Sending,
    Sent,
    Delivered,
    Failed,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Assigned,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Assigned => "ASSIGNED",
            Status::Sending => "SENDING",
            Status::Sent => "SENT",
            Status::Delivered => "DELIVERED",
            Status::Failed => "FAILED",
            Status::Canceled => "CANCELED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// `CANCELED`, `FAILED` and `DELIVERED` never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Canceled | Status::Failed | Status::Delivered)
    }

    /// Whether `self -> next` is one of the contract's transitions.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Pending, Assigned | Sending | Sent | Failed)
                | (Assigned, Sending | Sent | Failed)
                | (Sending, Sent | Failed)
                | (Sent, Delivered)
        )
    }

    /// Every status from which `next` may be reached.
    pub fn allowed_predecessors(next: Status) -> Vec<Status> {
        Status::ALL
            .into_iter()
            .filter(|from| from.can_become(next))
            .collect()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Status::{self, *};

    #[test]
    fn transitions_match_the_contract() {
        let allowed = [
            (Pending, Assigned),
            (Pending, Sending),
            (Pending, Sent),
            (Pending, Failed),
            (Assigned, Sending),
            (Assigned, Sent),
            (Assigned, Failed),
            (Sending, Sent),
            (Sending, Failed),
            (Sent, Delivered),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn final_statuses_have_no_successor() {
        for from in Status::ALL.into_iter().filter(|s| s.is_final()) {
            assert!(Status::ALL.into_iter().all(|to| !from.can_become(to)));
        }
    }

    #[test]
    fn predecessors_of_sent() {
        assert_eq!(
            Status::allowed_predecessors(Sent),
            vec![Pending, Assigned, Sending]
        );
    }

    #[test]
    fn round_trips_names() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("pending"), None);
    }
}
