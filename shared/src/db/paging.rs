//! Lists whose cost does not grow with history.
//!
//! The documents listed here (messages, audit entries) have `_id`s that carry their creation
//! second ([`id_at`]), so an `_id` range is a time range. Lists are sorted by `_id` and each
//! query shape has an index ending in `_id` that serves both its filter and its sort; the
//! filter leads with that index's first field, and the index is named as a hint where the
//! server benefits ([`Hints`](super::hints::Hints)).
//!
//! A newest-first list does not ask for "everything matching, sorted, first N": it walks back
//! in time in `_id` windows — the last hour, then 4 hours before that, then 16, ... — and the
//! last window open-ended, each window a tight index range asked only for what is still missing.
//! A page near the top of a busy list costs about its own size, however long the history.
//! `total` is counted, in windows sized to hold what is still missing, up to
//! [`TOTAL_LOOKAHEAD`] matches past the requested page. A match set the index bounds tightly
//! (one number's or one request's messages) is read in one query and counted exactly.
//!
//! Every database operation is a [`QuerySpec`] value: the list functions execute it and report
//! it in [`Listing::queries`], so a test can `explain` exactly what a list asked.

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::Collection;
use serde::de::DeserializeOwned;

mod ids;
mod spec;

pub use ids::{id_at, id_seconds, second_floor};
use ids::{seconds_ceil, seconds_floor};
pub use spec::{Op, QuerySpec};

/// The span of the first window of a newest-first walk, in seconds.
pub const FIRST_WINDOW_SECS: i64 = 3600;
/// How much longer each next window is than the one before.
pub const WINDOW_GROWTH: i64 = 4;
/// Windows of a walk: 8 bounded ones (an hour up to about 2 years back, 2.5 years in all),
/// then one open-ended.
pub const MAX_WINDOWS: usize = 9;
/// Windows of a capped count, the last one open.
pub const MAX_COUNT_WINDOWS: usize = 16;
/// How many matches past the requested page (`skip + limit`) a capped `total` counts before it
/// says "at least this many". A capped total is always past the page, so a client that pages
/// with `skip` until `skip >= total` still reaches the end.
pub const TOTAL_LOOKAHEAD: u64 = 1_000;

/// An index serving a list: equality on `fields` (in this order), then `_id` descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListIndex {
    pub name: &'static str,
    pub fields: &'static [&'static str],
}

impl ListIndex {
    /// The index's key pattern.
    pub fn keys(&self) -> Document {
        let mut keys: Document = self
            .fields
            .iter()
            .map(|f| ((*f).to_owned(), 1.into()))
            .collect();
        keys.insert("_id", -1);
        keys
    }

    /// The index to create.
    pub fn model(&self) -> mongodb::IndexModel {
        super::index(self.keys(), false, self.name)
    }
}

/// A document listed by `_id`.
pub trait Keyed {
    fn key(&self) -> ObjectId;
}

/// What a list matches and which index serves it.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Equality conditions, the hinted index's leading field first (the test server picks its
    /// index from the first field of the filter).
    pub equals: Document,
    /// The date field `from` and `until` are about (`created_at`, `at`).
    pub time_field: &'static str,
    /// Inclusive lower bound on `time_field`: an `_id` bound plus the exact condition.
    pub from: Option<DateTime>,
    /// Exclusive upper bound on `time_field`: an `_id` bound plus the exact condition.
    pub until: Option<DateTime>,
    /// The index serving filter and sort: the `equals` fields, then `_id`.
    pub index: &'static str,
    /// The index bounds the match set tightly (one number's, one request's messages): the page
    /// is one query, not a walk in windows, and `total` is counted exactly.
    pub bounded: bool,
    /// Name `index` as a hint (see [`Hints`](super::hints::Hints)).
    pub hint: bool,
}

impl ListQuery {
    /// A find of this query's `filter`.
    fn find(&self, filter: Document, sort: i32, skip: u64, limit: u64) -> QuerySpec {
        self.spec(
            filter,
            Op::Find {
                sort: doc! {"_id": sort},
                skip,
                limit,
            },
        )
    }

    /// A count of this query's `filter`, of at most `limit`.
    fn count(&self, filter: Document, limit: Option<u64>) -> QuerySpec {
        self.spec(filter, Op::Count { limit })
    }

    fn spec(&self, filter: Document, op: Op) -> QuerySpec {
        QuerySpec {
            op,
            filter,
            index: self.index,
            hint: self.hint,
        }
    }

    /// The filter with this `_id` condition: equalities, `_id`, then the exact time condition.
    fn filter(&self, id: Document) -> Document {
        let mut f = self.equals.clone();
        if !id.is_empty() {
            f.insert("_id", id);
        }
        let mut time = doc! {};
        if let Some(t) = self.from {
            time.insert("$gte", t);
        }
        if let Some(t) = self.until {
            time.insert("$lt", t);
        }
        if !time.is_empty() {
            f.insert(self.time_field, time);
        }
        f
    }

    /// `from` as an inclusive `_id` bound.
    fn id_floor(&self) -> Option<ObjectId> {
        self.from.map(|t| second_floor(seconds_floor(t)))
    }

    /// `until` as an exclusive `_id` bound.
    fn id_ceiling(&self) -> Option<ObjectId> {
        self.until.map(|t| second_floor(seconds_ceil(t)))
    }

    /// The `_id` condition of `[lo, hi)`, either side open.
    fn range(lo: Option<ObjectId>, hi: Option<ObjectId>) -> Document {
        let mut id = doc! {};
        if let Some(lo) = lo {
            id.insert("$gte", lo);
        }
        if let Some(hi) = hi {
            id.insert("$lt", hi);
        }
        id
    }
}

/// Which page: `limit` items after `skip` ones, strictly past the `after` cursor.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u64,
    pub skip: u64,
    /// The `next` of the previous page: continue strictly beyond this id.
    pub after: Option<ObjectId>,
    /// How far past the page a capped total counts ([`TOTAL_LOOKAHEAD`] in the API).
    pub total_lookahead: u64,
}

/// A page and what it cost.
#[derive(Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// The last item's id when the page is full: pass it as `after` for the next page.
    pub next: Option<ObjectId>,
    /// How many match over all pages (ignoring `after` and `skip`), or the cap.
    pub total: u64,
    /// `total` is the cap: at least that many match.
    pub total_is_lower_bound: bool,
    /// Every operation the list executed, in order (page queries first, then counts).
    pub queries: Vec<QuerySpec>,
}

/// The `_id` windows `[lo, hi)` of a newest-first walk from `top` (exclusive; `None`: open,
/// starting at `now`) down to `floor` (inclusive; `None`: open), newest first.
pub fn windows(
    top: Option<ObjectId>,
    floor: Option<ObjectId>,
    now: DateTime,
) -> Vec<(Option<ObjectId>, Option<ObjectId>)> {
    let floor_secs = floor.map_or(0, id_seconds);
    let mut hi = top;
    let mut hi_secs = top.map_or_else(|| seconds_floor(now), id_seconds);
    let mut span = FIRST_WINDOW_SECS;
    let mut out = Vec::new();
    loop {
        if let (Some(h), Some(f)) = (hi, floor) {
            if h <= f {
                break;
            }
        }
        let lo_secs = hi_secs - span;
        if out.len() + 1 >= MAX_WINDOWS || lo_secs <= floor_secs {
            out.push((floor, hi));
            break;
        }
        let lo = second_floor(lo_secs);
        out.push((Some(lo), hi));
        hi = Some(lo);
        hi_secs = lo_secs;
        span *= WINDOW_GROWTH;
    }
    out
}

/// A page of `query`'s matches newest first (`_id` descending), walked in windows.
pub async fn newest_first<T>(
    coll: &Collection<T>,
    query: &ListQuery,
    page: &PageRequest,
    now: DateTime,
) -> mongodb::error::Result<Listing<T>>
where
    T: DeserializeOwned + Keyed + Send + Sync,
{
    let ceiling = query.id_ceiling();
    let top = match (page.after, ceiling) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    };
    let walk = async {
        if query.bounded {
            // The index bounds the set to one number's messages: one query.
            let filter = query.filter(ListQuery::range(query.id_floor(), top));
            let find = query.find(filter, -1, page.skip, page.limit);
            return Ok((find.find(coll).await?, vec![find]));
        }
        let mut items: Vec<T> = Vec::new();
        let mut queries = Vec::new();
        let mut skip_left = page.skip;
        for (lo, hi) in windows(top, query.id_floor(), now) {
            let need = page.limit.saturating_sub(items.len() as u64);
            if need == 0 {
                break;
            }
            let filter = query.filter(ListQuery::range(lo, hi));
            if skip_left > 0 {
                // Skip whole windows by counting them, not by reading them.
                let count = query.count(filter.clone(), Some(skip_left + 1));
                let n = count.count(coll).await?;
                queries.push(count);
                if n <= skip_left {
                    skip_left -= n;
                    continue;
                }
            }
            let find = query.find(filter, -1, skip_left, need);
            items.extend(find.find(coll).await?);
            queries.push(find);
            skip_left = 0;
        }
        Ok::<_, mongodb::error::Error>((items, queries))
    };
    let cap = page.skip + page.limit + page.total_lookahead;
    let total = async {
        if query.bounded {
            exact_total(coll, query).await
        } else {
            capped_total(coll, query, cap, now).await
        }
    };
    let ((items, mut queries), (counted, count_queries)) = futures::try_join!(walk, total)?;
    queries.extend(count_queries);
    let lower_bound = !query.bounded && counted > cap;
    Ok(Listing {
        next: next_cursor(&items, page.limit),
        items,
        total: if lower_bound { cap } else { counted },
        total_is_lower_bound: lower_bound,
        queries,
    })
}

/// A page of `query`'s matches oldest first (`_id` ascending), for match sets the index bounds
/// tightly (a request's messages): one query for the page, an exact count for `total`.
pub async fn oldest_first<T>(
    coll: &Collection<T>,
    query: &ListQuery,
    page: &PageRequest,
) -> mongodb::error::Result<Listing<T>>
where
    T: DeserializeOwned + Keyed + Send + Sync,
{
    let mut id = ListQuery::range(query.id_floor(), query.id_ceiling());
    if let Some(after) = page.after {
        id.insert("$gt", after);
    }
    let find = query.find(query.filter(id), 1, page.skip, page.limit);
    let (items, (total, count_queries)) =
        futures::try_join!(find.find(coll), exact_total(coll, query))?;
    let mut queries = vec![find];
    queries.extend(count_queries);
    Ok(Listing {
        next: next_cursor(&items, page.limit),
        items,
        total,
        total_is_lower_bound: false,
        queries,
    })
}

/// Counts `query`'s matches newest first up to `cap + 1`, window by window. The first window is
/// the last hour below `until` (or now); each next one is sized by the rate counted so far to
/// hold what is still missing (and a quarter more), at most 4 times the one before, so the
/// count reads little more than `cap` index entries however long the history; the last of
/// [`MAX_COUNT_WINDOWS`] is open.
async fn capped_total<T: Send + Sync>(
    coll: &Collection<T>,
    query: &ListQuery,
    cap: u64,
    now: DateTime,
) -> mongodb::error::Result<(u64, Vec<QuerySpec>)> {
    let floor = query.id_floor();
    let floor_secs = floor.map_or(0, id_seconds);
    let mut hi = query.id_ceiling();
    let mut hi_secs = hi.map_or_else(|| seconds_floor(now), id_seconds);
    let mut span = FIRST_WINDOW_SECS;
    let (mut counted, mut covered) = (0u64, 0i64);
    let mut queries = Vec::new();
    while counted <= cap && queries.len() < MAX_COUNT_WINDOWS {
        if let (Some(h), Some(f)) = (hi, floor) {
            if h <= f {
                break;
            }
        }
        let lo_secs = hi_secs - span;
        let last = queries.len() + 1 == MAX_COUNT_WINDOWS || lo_secs <= floor_secs;
        let lo = if last {
            floor
        } else {
            Some(second_floor(lo_secs))
        };
        let count = query.count(
            query.filter(ListQuery::range(lo, hi)),
            Some(cap + 1 - counted),
        );
        counted += count.count(coll).await?;
        queries.push(count);
        if last {
            break;
        }
        covered += span;
        (hi, hi_secs) = (lo, lo_secs);
        let grown = span * WINDOW_GROWTH;
        span = match cap.checked_sub(counted) {
            Some(missing) if counted > 0 => {
                let per_sec = counted as f64 / covered as f64;
                ((missing + 1) as f64 * 1.25 / per_sec).clamp(60.0, grown as f64) as i64
            }
            _ => grown,
        };
    }
    Ok((counted, queries))
}

/// Counts all of `query`'s matches in one operation.
async fn exact_total<T: Send + Sync>(
    coll: &Collection<T>,
    query: &ListQuery,
) -> mongodb::error::Result<(u64, Vec<QuerySpec>)> {
    let count = query.count(
        query.filter(ListQuery::range(query.id_floor(), query.id_ceiling())),
        None,
    );
    Ok((count.count(coll).await?, vec![count]))
}

fn next_cursor<T: Keyed>(items: &[T], limit: u64) -> Option<ObjectId> {
    if limit > 0 && items.len() as u64 >= limit {
        items.last().map(Keyed::key)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_564_800; // 2026-11-25T00:00:00Z

    #[test]
    fn time_bounds_round_outwards_to_whole_seconds() {
        let q = ListQuery {
            equals: doc! {},
            time_field: "created_at",
            from: Some(DateTime::from_millis(T0 * 1000 + 500)),
            until: Some(DateTime::from_millis(T0 * 1000 + 1500)),
            index: "_id_",
            bounded: false,
            hint: true,
        };
        assert_eq!(q.id_floor(), Some(second_floor(T0)));
        assert_eq!(q.id_ceiling(), Some(second_floor(T0 + 2)));
        let whole = ListQuery {
            from: Some(DateTime::from_millis(T0 * 1000)),
            until: Some(DateTime::from_millis(T0 * 1000)),
            ..q
        };
        assert_eq!(whole.id_floor(), Some(second_floor(T0)));
        assert_eq!(whole.id_ceiling(), Some(second_floor(T0)));
    }

    #[test]
    fn windows_grow_fourfold_back_from_now_and_end_open() {
        let now = DateTime::from_millis(T0 * 1000);
        let w = windows(None, None, now);
        assert_eq!(w.len(), MAX_WINDOWS);
        assert_eq!(w[0], (Some(second_floor(T0 - 3600)), None));
        assert_eq!(
            w[1],
            (
                Some(second_floor(T0 - 5 * 3600)),
                Some(second_floor(T0 - 3600))
            )
        );
        assert_eq!(w[2].0, Some(second_floor(T0 - 21 * 3600)));
        assert_eq!(w.last().unwrap().0, None);
        // Contiguous: each window starts where the one before ended.
        for pair in w.windows(2) {
            assert_eq!(pair[1].1, pair[0].0);
        }
    }

    #[test]
    fn windows_start_at_the_cursor_and_stop_at_the_floor() {
        let now = DateTime::from_millis(T0 * 1000);
        let cursor = id_at(DateTime::from_millis((T0 - 100) * 1000));
        let floor = second_floor(T0 - 3 * 3600);
        let w = windows(Some(cursor), Some(floor), now);
        assert_eq!(
            w,
            vec![
                (Some(second_floor(T0 - 100 - 3600)), Some(cursor)),
                (Some(floor), Some(second_floor(T0 - 100 - 3600))),
            ]
        );
        assert!(windows(Some(floor), Some(floor), now).is_empty());
        // A floor in the future leaves one window above it.
        let future = second_floor(T0 + 60);
        assert_eq!(windows(None, Some(future), now), vec![(Some(future), None)]);
    }

    #[test]
    fn filters_lead_with_the_index_fields_then_id_then_time() {
        let q = ListQuery {
            equals: doc! {"api_key_id": 1, "status": "SENT"},
            time_field: "created_at",
            from: Some(DateTime::from_millis(T0 * 1000)),
            until: None,
            index: "list_tenant_status",
            bounded: false,
            hint: true,
        };
        let f = q.filter(ListQuery::range(Some(second_floor(T0)), None));
        let keys: Vec<&str> = f.keys().map(String::as_str).collect();
        assert_eq!(keys, ["api_key_id", "status", "_id", "created_at"]);
        let f = q.filter(doc! {});
        let keys: Vec<&str> = f.keys().map(String::as_str).collect();
        assert_eq!(keys, ["api_key_id", "status", "created_at"]);
    }
}
