//! The bench's simulated phones: one per agent of the run, each leasing and reporting until it
//! has made its share of the messages final, or until stopped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use mongodb::bson::oid::ObjectId;
use sms_testkit::{Api, Behaviour, Ledger, Phone};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Phones at work, and what they saw.
pub struct Crew {
    phones: JoinSet<sms_testkit::phone::Outcome>,
    stop: CancellationToken,
    pub ledger: Arc<Ledger>,
}

impl Crew {
    /// Starts a phone per agent (`(id, token)`), phone `n` (from 1) labelled `label(n)`, each
    /// running `behaviour` until it made its entry of `targets` final; `bar` counts them.
    pub fn start(
        api: &Api,
        agents: &[(ObjectId, String)],
        targets: &[u64],
        behaviour: &Behaviour,
        label: impl Fn(usize) -> String,
        bar: &ProgressBar,
    ) -> Self {
        let (ledger, stop) = (Ledger::new(), CancellationToken::new());
        let mut phones = JoinSet::new();
        for (index, ((agent_id, token), target)) in agents.iter().zip(targets).enumerate() {
            let bar = bar.clone();
            let phone = Phone::new(api.clone(), &agent_id.to_hex(), &label(index + 1), token);
            phones.spawn(phone.run(
                behaviour.clone(),
                ledger.clone(),
                Some(*target),
                stop.clone(),
                move |n| bar.inc(n),
            ));
        }
        Self {
            phones,
            stop,
            ledger,
        }
    }

    /// Waits until every phone made its share final; after `within`, stops them and returns
    /// `false`.
    pub async fn finish(&mut self, within: Duration) -> anyhow::Result<bool> {
        let all_done = async {
            while let Some(r) = self.phones.join_next().await {
                r.context("simulated agent")?;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(within, all_done).await {
            Ok(r) => r.map(|()| true),
            Err(_) => {
                self.stop.cancel();
                while self.phones.join_next().await.is_some() {}
                Ok(false)
            }
        }
    }
}
