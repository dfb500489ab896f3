//! The message lists: a request's messages (`GET /messages`) and the searches across requests
//! (`GET /messages/all`). Each combination of filters has one index that serves both the filter
//! and the `_id` order, and the query names it (see `db::paging` for the walk and its cost).

use mongodb::bson::{doc, oid::ObjectId};

use super::{Message, MessageFilter, Messages};
use crate::db::paging::{self, Keyed, ListQuery, Listing, PageRequest};

/// The indexes of the message lists.
pub mod indexes {
    use crate::db::paging::ListIndex;

    /// A request's messages, oldest first: `{request_id: 1, _id: 1}`.
    pub const REQUEST: &str = "request";
    /// Every message (operators, no filter): MongoDB's own `{_id: 1}`, read backwards.
    pub const ALL: &str = "_id_";
    pub const TENANT: ListIndex = ListIndex {
        name: "list_tenant",
        fields: &["api_key_id"],
    };
    pub const STATUS: ListIndex = ListIndex {
        name: "list_status",
        fields: &["status"],
    };
    pub const AGENT: ListIndex = ListIndex {
        name: "list_agent",
        fields: &["agent_id"],
    };
    pub const TENANT_STATUS: ListIndex = ListIndex {
        name: "list_tenant_status",
        fields: &["api_key_id", "status"],
    };
    pub const TENANT_AGENT: ListIndex = ListIndex {
        name: "list_tenant_agent",
        fields: &["api_key_id", "agent_id"],
    };
    pub const AGENT_STATUS: ListIndex = ListIndex {
        name: "list_agent_status",
        fields: &["agent_id", "status"],
    };
    pub const TENANT_AGENT_STATUS: ListIndex = ListIndex {
        name: "list_tenant_agent_status",
        fields: &["api_key_id", "agent_id", "status"],
    };
    /// One number's messages; the other filters are checked on them.
    pub const TO: ListIndex = ListIndex {
        name: "list_to",
        fields: &["to"],
    };
}

impl Keyed for Message {
    fn key(&self) -> ObjectId {
        self.id
    }
}

impl MessageFilter {
    /// The list query of these filters: the index that serves them, its fields first.
    /// `request_id` or `to` narrow the list to one request's or one number's messages: their
    /// index leads, the other filters are checked on those messages, and the total is exact.
    pub fn list_query(&self) -> ListQuery {
        let mut equals = doc! {};
        let tenant = self.tenant;
        let agent = self.agent_id;
        let status = self.status.map(|s| s.as_str());
        let narrow = match (&self.request_id, &self.to) {
            (Some(r), _) => {
                equals.insert("request_id", r);
                Some(indexes::REQUEST)
            }
            (None, Some(to)) => {
                equals.insert("to", to);
                Some(indexes::TO.name)
            }
            (None, None) => None,
        };
        if let Some(t) = tenant {
            equals.insert("api_key_id", t);
        }
        if let Some(a) = agent {
            equals.insert("agent_id", a);
        }
        if let Some(s) = status {
            equals.insert("status", s);
        }
        // With a request id the request's own filter would do; `to` is checked too.
        if let (Some(_), Some(to)) = (&self.request_id, &self.to) {
            equals.insert("to", to);
        }
        let index = narrow.unwrap_or(
            match (tenant.is_some(), agent.is_some(), status.is_some()) {
                (false, false, false) => indexes::ALL,
                (true, false, false) => indexes::TENANT.name,
                (false, false, true) => indexes::STATUS.name,
                (false, true, false) => indexes::AGENT.name,
                (true, false, true) => indexes::TENANT_STATUS.name,
                (true, true, false) => indexes::TENANT_AGENT.name,
                (false, true, true) => indexes::AGENT_STATUS.name,
                (true, true, true) => indexes::TENANT_AGENT_STATUS.name,
            },
        );
        ListQuery {
            equals,
            time_field: "created_at",
            from: self.from,
            until: self.until,
            index,
            bounded: narrow.is_some(),
            hint: true,
        }
    }
}

impl Messages {
    /// A page of messages: a request's oldest first, any other list newest first; see
    /// `db::paging` for `after`, `skip` and how `total` is counted.
    pub async fn list(
        &self,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> mongodb::error::Result<Listing<Message>> {
        let mut query = filter.list_query();
        query.hint = self.1.wanted().await?;
        if filter.request_id.is_some() {
            paging::oldest_first(&self.0, &query, page).await
        } else {
            paging::newest_first(&self.0, &query, page, crate::time::bson_now()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::status::Status;

    fn keys(q: &ListQuery) -> Vec<&str> {
        q.equals.keys().map(String::as_str).collect()
    }

    #[test]
    fn every_filter_combination_has_an_index_led_by_its_fields() {
        let (k, a) = (Some(ObjectId::new()), Some(ObjectId::new()));
        let s = Some(Status::Failed);
        for (tenant, agent_id, status, index) in [
            (None, None, None, indexes::ALL),
            (k, None, None, indexes::TENANT.name),
            (None, None, s, indexes::STATUS.name),
            (None, a, None, indexes::AGENT.name),
            (k, None, s, indexes::TENANT_STATUS.name),
            (k, a, None, indexes::TENANT_AGENT.name),
            (None, a, s, indexes::AGENT_STATUS.name),
            (k, a, s, indexes::TENANT_AGENT_STATUS.name),
        ] {
            let q = MessageFilter {
                tenant,
                agent_id,
                status,
                ..Default::default()
            }
            .list_query();
            assert_eq!(q.index, index);
            assert!(!q.bounded);
            let all = [
                indexes::TENANT,
                indexes::STATUS,
                indexes::AGENT,
                indexes::TENANT_STATUS,
                indexes::TENANT_AGENT,
                indexes::AGENT_STATUS,
                indexes::TENANT_AGENT_STATUS,
            ];
            let fields = all
                .iter()
                .find(|i| i.name == index)
                .map_or(&[][..], |i| i.fields);
            assert_eq!(keys(&q), fields, "{index}");
        }
    }

    #[test]
    fn a_number_or_a_request_leads_and_is_counted_exactly() {
        let to = MessageFilter {
            tenant: Some(ObjectId::new()),
            status: Some(Status::Sent),
            to: Some("+84901234567".into()),
            ..Default::default()
        }
        .list_query();
        assert_eq!((to.index, to.bounded), (indexes::TO.name, true));
        assert_eq!(keys(&to), ["to", "api_key_id", "status"]);
        let request = MessageFilter {
            tenant: Some(ObjectId::new()),
            request_id: Some(ObjectId::new()),
            ..Default::default()
        }
        .list_query();
        assert_eq!((request.index, request.bounded), (indexes::REQUEST, true));
        assert_eq!(keys(&request), ["request_id", "api_key_id"]);
    }
}
