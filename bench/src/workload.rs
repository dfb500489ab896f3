//! The benchmark's traffic: an OTP template, one distinct recipient and code per message, and
//! how the messages are split into requests and spread across agents.

use std::collections::HashMap;

use serde_json::Value;
use sms_testkit::recipients::phone;

/// The template every benchmark message uses: a typical one-segment GSM-7 OTP text.
pub const TEMPLATE: &str =
    "SafeCare: ma xac thuc cua ban la {CODE}. Ma co hieu luc trong 5 phut, khong chia se ma nay.";

/// The code of message `i` of run `run`: distinct per message and per run, so anti-duplicate
/// staging never cancels a benchmark message, not even one of an earlier run.
pub fn code(run: &str, i: usize) -> String {
    format!("{run}{i:06}")
}

/// The text the API renders for `code`.
pub fn text(code: &str) -> String {
    let values = HashMap::from([("CODE".to_owned(), code.to_owned())]);
    sms_shared::domain::template::render(TEMPLATE, &values, usize::MAX)
        .expect("the template has only CODE")
}

/// One `POST /requests` of the run: which agent gets it and which messages it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPlan {
    pub agent: usize,
    /// Message indexes (into `0..messages`).
    pub messages: std::ops::Range<usize>,
}

/// Spreads `messages` evenly across `agents` (the first ones get one more when it does not
/// divide), each agent's share split into requests of at most `batch` recipients.
pub fn plan(messages: usize, agents: usize, batch: usize) -> Vec<RequestPlan> {
    let agents = agents.max(1);
    let batch = batch.max(1);
    // (offset within the agent's share, plan)
    let mut out = Vec::new();
    let mut start = 0;
    for agent in 0..agents {
        let share = messages / agents + usize::from(agent < messages % agents);
        let end = start + share;
        let mut from = start;
        while from < end {
            let to = (from + batch).min(end);
            out.push((
                from - start,
                RequestPlan {
                    agent,
                    messages: from..to,
                },
            ));
            from = to;
        }
        start = end;
    }
    // Interleave agents so that concurrent clients serve different agents at once.
    out.sort_by_key(|(offset, p)| (*offset, p.agent));
    out.into_iter().map(|(_, p)| p).collect()
}

/// The JSON body of one request.
pub fn request_body(run: &str, template_id: &str, agent_id: &str, plan: &RequestPlan) -> Value {
    let recipients = plan.messages.clone().map(|i| (phone(i), code(run, i)));
    sms_testkit::recipients::otp_request(template_id, agent_id, recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_differ_per_message_and_stay_one_segment() {
        let a = text(&code("r1", 1));
        let b = text(&code("r1", 2));
        assert_ne!(a, b);
        let (encoding, parts) = sms_shared::domain::segments::count(&a);
        assert_eq!(encoding.as_str(), "GSM-7");
        assert_eq!(parts, 1);
    }

    #[test]
    fn plan_covers_every_message_once_in_bounded_requests() {
        for (n, agents, batch) in [
            (20_000, 20, 5_000),
            (300, 3, 5_000),
            (12_001, 2, 5_000),
            (7, 3, 2),
        ] {
            let plans = plan(n, agents, batch);
            let mut covered = vec![0u8; n];
            for p in &plans {
                assert!(p.messages.len() <= batch && !p.messages.is_empty());
                assert!(p.agent < agents);
                for i in p.messages.clone() {
                    covered[i] += 1;
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{n}/{agents}/{batch}");
            let per_agent: Vec<usize> = (0..agents)
                .map(|a| {
                    plans
                        .iter()
                        .filter(|p| p.agent == a)
                        .map(|p| p.messages.len())
                        .sum()
                })
                .collect();
            let (min, max) = (
                per_agent.iter().min().unwrap(),
                per_agent.iter().max().unwrap(),
            );
            assert!(max - min <= 1, "{per_agent:?}");
        }
    }

    #[test]
    fn large_shares_are_split_and_agents_interleaved() {
        let plans = plan(12_000, 2, 5_000);
        let agents: Vec<usize> = plans.iter().map(|p| p.agent).collect();
        assert_eq!(agents, [0, 1, 0, 1]);
        assert_eq!(plans[0].messages, 0..5_000);
        assert_eq!(plans[1].messages, 6_000..11_000);
        assert_eq!(plans[3].messages, 11_000..12_000);
    }
}
