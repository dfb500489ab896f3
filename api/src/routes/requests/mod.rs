//! Send requests: `POST /requests` (`create.rs`) validates a whole request, reserves quota, stores
//! the request and its messages, and answers 202 before publishing their events (`target.rs`
//! decides which agent or pool of agents may send them); `GET /requests/{id}` (`read.rs`) tells
//! how far its messages got. The messages themselves are
//! read through `routes/messages.rs`.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

mod create;
mod read;
mod target;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(create::router())
        .merge(read::router())
}
