//! Recipients the API accepts: distinct, valid Vietnamese mobile numbers, and the body of an OTP
//! request sending one code to each, through one agent or the pool of every agent.

use serde_json::{json, Value};

/// Vietnamese mobile prefixes the numbers are drawn from (each holds 10^7 numbers).
const PREFIXES: [&str; 7] = ["090", "091", "093", "094", "096", "097", "098"];

/// The national number of recipient `i`: distinct for every `i` below 7 × 10^7.
pub fn phone(i: usize) -> String {
    let prefix = PREFIXES[(i / 10_000_000) % PREFIXES.len()];
    format!("{prefix}{:07}", i % 10_000_000)
}

/// `n` recipients `(to, code)` from number `offset` on: distinct numbers (so the anti-duplicate
/// rule never cancels one), all with the code `100000 + offset`.
pub fn recipients(offset: usize, n: usize) -> Vec<(String, String)> {
    (offset..offset + n)
        .map(|i| (phone(i), format!("{}", 100_000 + offset)))
        .collect()
}

/// The body of `POST /requests` sending `template_id` (whose one variable is `{CODE}`) through
/// `agent_id` to each `(to, code)`.
pub fn otp_request(
    template_id: &str,
    agent_id: &str,
    recipients: impl IntoIterator<Item = (String, String)>,
) -> Value {
    let messages: Vec<Value> = recipients
        .into_iter()
        .map(|(to, code)| json!({"to": to, "variables": {"CODE": code}}))
        .collect();
    json!({"template_id": template_id, "agent_id": agent_id, "messages": messages})
}

/// The body of `POST /requests` sending `template_id` to each `(to, code)` through the pool of
/// every active agent: no `agent_id`.
pub fn pool_request(
    template_id: &str,
    recipients: impl IntoIterator<Item = (String, String)>,
) -> Value {
    let mut body = otp_request(template_id, "", recipients);
    if let Some(fields) = body.as_object_mut() {
        fields.remove("agent_id");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn phones_are_distinct_valid_vietnamese_mobiles() {
        for i in (0..70_000_000).step_by(997_331).chain(0..2_000) {
            let e164 = sms_shared::domain::phone::normalize(&phone(i), "+84", true)
                .unwrap_or_else(|e| panic!("{} is refused: {e}", phone(i)));
            assert!(e164.starts_with("+849"), "{e164}");
        }
        let distinct: HashSet<_> = (0..5_000).map(phone).collect();
        assert_eq!(distinct.len(), 5_000);
    }

    #[test]
    fn recipients_follow_on_from_their_offset() {
        let first = recipients(0, 3);
        let next = recipients(3, 2);
        assert_eq!(first[2].0, phone(2));
        assert_eq!(next[0].0, phone(3));
        assert!(first.iter().all(|(_, code)| code == "100000"));
        assert!(next.iter().all(|(_, code)| code == "100003"));
    }

    #[test]
    fn an_otp_request_has_one_message_per_recipient() {
        let body = otp_request("t1", "a1", recipients(7, 2));
        assert_eq!(body["template_id"], "t1");
        assert_eq!(body["agent_id"], "a1");
        assert_eq!(
            body["messages"],
            json!([
                {"to": phone(7), "variables": {"CODE": "100007"}},
                {"to": phone(8), "variables": {"CODE": "100007"}},
            ])
        );
    }

    #[test]
    fn a_pool_request_names_no_agent() {
        let body = pool_request("t1", recipients(0, 3));
        assert!(body.get("agent_id").is_none(), "{body}");
        assert_eq!(body["template_id"], "t1");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(3));
    }
}
