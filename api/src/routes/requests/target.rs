//! Where a request's messages go, as `POST /requests` validates it:
//!
//! | the request names | its messages | lanes of their jobs |
//! | --- | --- | --- |
//! | `agent_id` | pinned to that agent, as always | `[agent]` |
//! | `agent_ids` | a pool of those agents | `[agent, ...]` |
//! | neither | a pool of every active agent, or of the key's agents when it is restricted | `["*"]`, or `[its agents]` |
//!
//! A key restricted to some agents (`agent_ids` on the key) may name only those: any other agent
//! is answered exactly like one that does not exist (`unknown agent` at the same field), whether
//! it exists, is active or not, so a key learns nothing about phones it may not use.

use std::collections::HashSet;

use mongodb::bson::oid::ObjectId;
use sms_shared::db::jobs::{lane, EVERY_AGENT};
use sms_shared::db::messages::Route;

use super::create::push;
use crate::error::{ApiResult, FieldErrors};
use crate::state::AppState;

/// The most agents a request's `agent_ids` (and a key's restriction) may name.
pub const MAX_POOL_AGENTS: usize = 100;

/// Where a valid request's messages go, and what the request records of it.
pub(super) struct Target {
    pub route: Route,
    /// The agent they are pinned to; `None` for a pool.
    pub agent_id: Option<ObjectId>,
    /// A pool's agents; `None` when pinned or for a pool of every active agent.
    pub agent_ids: Option<Vec<ObjectId>>,
}

/// Resolves the `agent_id` or `agent_ids` a request names, for a caller allowed to use
/// `allowed` (`None`: any agent). Problems are added to `errors` (the target is then `None`).
pub(super) async fn resolve(
    state: &AppState,
    allowed: Option<&[ObjectId]>,
    agent_id: Option<&str>,
    agent_ids: Option<&[String]>,
    errors: &mut FieldErrors,
) -> ApiResult<Option<Target>> {
    match (agent_id, agent_ids) {
        (Some(_), Some(_)) => {
            push(
                errors,
                "agent_ids",
                "give either agent_id or agent_ids, not both",
            );
            Ok(None)
        }
        (Some(id), None) => {
            let agent = usable(state, allowed, &[id.to_owned()]).await?;
            match agent[0] {
                Found::Active(id) => Ok(Some(Target {
                    route: Route::Pinned(id),
                    agent_id: Some(id),
                    agent_ids: None,
                })),
                found => {
                    push(errors, "agent_id", found.problem());
                    Ok(None)
                }
            }
        }
        (None, Some(ids)) => subset(state, allowed, ids, errors).await,
        (None, None) => whole_pool(state, allowed, errors).await,
    }
}

/// What a named agent turned out to be, for this caller.
#[derive(Debug, Clone, Copy)]
enum Found {
    Active(ObjectId),
    Disabled,
    /// Malformed, unknown, or outside the caller's restriction.
    Unknown,
}

impl Found {
    fn problem(self) -> &'static str {
        match self {
            Found::Active(_) => "",
            Found::Disabled => "agent is disabled",
            Found::Unknown => "unknown agent",
        }
    }
}

/// What each of `ids` is for a caller allowed to use `allowed`, in order (one read).
async fn usable(
    state: &AppState,
    allowed: Option<&[ObjectId]>,
    ids: &[String],
) -> ApiResult<Vec<Found>> {
    let parsed: Vec<Option<ObjectId>> = ids
        .iter()
        .map(|s| ObjectId::parse_str(s).ok())
        .map(|id| id.filter(|id| allowed.is_none_or(|a| a.contains(id))))
        .collect();
    let wanted: Vec<ObjectId> = parsed.iter().flatten().copied().collect();
    let agents = state.db.agents.find_many(&wanted).await?;
    Ok(parsed
        .into_iter()
        .map(|id| match id.and_then(|id| agents.get(&id)) {
            Some(a) if a.is_active => Found::Active(a.id),
            Some(_) => Found::Disabled,
            None => Found::Unknown,
        })
        .collect())
}

/// A pool of the agents `ids` names: 1 to [`MAX_POOL_AGENTS`], each known, active and within the
/// caller's restriction; duplicates count once.
async fn subset(
    state: &AppState,
    allowed: Option<&[ObjectId]>,
    ids: &[String],
    errors: &mut FieldErrors,
) -> ApiResult<Option<Target>> {
    if ids.is_empty() {
        push(errors, "agent_ids", "at least one agent is required");
        return Ok(None);
    }
    if ids.len() > MAX_POOL_AGENTS {
        push(
            errors,
            "agent_ids",
            format!("at most {MAX_POOL_AGENTS} agents"),
        );
        return Ok(None);
    }
    let mut pool = Vec::new();
    let mut seen = HashSet::new();
    let mut refused = false;
    for (i, found) in usable(state, allowed, ids).await?.into_iter().enumerate() {
        match found {
            Found::Active(id) => {
                if seen.insert(id) {
                    pool.push(id);
                }
            }
            found => {
                push(errors, format!("agent_ids[{i}]"), found.problem());
                refused = true;
            }
        }
    }
    if refused {
        return Ok(None);
    }
    Ok(Some(Target {
        route: Route::Pool(pool.iter().map(|id| lane(*id)).collect()),
        agent_id: None,
        agent_ids: Some(pool),
    }))
}

/// A pool of every active agent, or of the caller's agents when it is restricted; it needs one
/// of them active.
async fn whole_pool(
    state: &AppState,
    allowed: Option<&[ObjectId]>,
    errors: &mut FieldErrors,
) -> ApiResult<Option<Target>> {
    let lanes: Vec<String> = match allowed {
        None => vec![EVERY_AGENT.to_owned()],
        Some(agents) => agents.iter().map(|id| lane(*id)).collect(),
    };
    if !state.db.agents.any_active_in(&lanes, &[]).await? {
        push(
            errors,
            "agent_id",
            "no active agent can send these messages",
        );
        return Ok(None);
    }
    Ok(Some(Target {
        route: Route::Pool(lanes),
        agent_id: None,
        agent_ids: allowed.map(<[ObjectId]>::to_vec),
    }))
}
