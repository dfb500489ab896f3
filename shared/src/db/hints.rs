//! Index hints, sent only to servers that follow them.
//!
//! The queries that must stay cheap (leases, outbox sweeps, lists, report reads) each name the
//! index built for them. MongoDB takes the name as a hint, which makes its plan deterministic.
//! SecantusDB, the development and test server, answers a hinted query by reading the whole
//! collection, and without a hint reads the index that the filter's first field leads — the same
//! index, since every such filter leads with that field. So hints go to every server except one
//! whose `buildInfo` reports a `secantusVersion`, asked once per [`Db`](super::Db).

use std::sync::Arc;

use mongodb::bson::doc;
use mongodb::options::Hint;
use mongodb::Database;
use tokio::sync::OnceCell;

/// Whether the server is sent index hints, asked once and shared by every collection handle.
#[derive(Debug, Clone)]
pub struct Hints {
    database: Database,
    wanted: Arc<OnceCell<bool>>,
}

impl Hints {
    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            wanted: Arc::new(OnceCell::new()),
        }
    }

    /// `true` unless the server's `buildInfo` reports a `secantusVersion`.
    pub async fn wanted(&self) -> mongodb::error::Result<bool> {
        self.wanted
            .get_or_try_init(|| async {
                let info = self.database.run_command(doc! {"buildInfo": 1}).await?;
                Ok(!info.contains_key("secantusVersion"))
            })
            .await
            .copied()
    }

    /// The hint naming `index`, or `None` when the server is not sent hints.
    pub async fn name(&self, index: &str) -> mongodb::error::Result<Option<Hint>> {
        Ok(self.wanted().await?.then(|| Hint::Name(index.to_owned())))
    }
}
