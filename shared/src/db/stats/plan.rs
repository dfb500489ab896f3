//! How a summary's range is cut so that no piece of it grows with history: the whole UTC days
//! inside it come from day counters, the whole hours of its partial edge days from hour
//! counters, and only what is left (less than an hour at each end) from the messages.

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// One piece of a summary's range, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Whole UTC days, day documents with `day` in `[lo, hi)`; `None`: unbounded.
    Days(Option<i64>, Option<i64>),
    /// Whole hours, hour documents with `hour` in `[lo, hi)`.
    Hours(i64, i64),
    /// The messages created in `[lo, hi)`: at most two hours, at the ends of the range.
    Messages(i64, i64),
}

fn floor(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

fn ceil(t: i64, step: i64) -> i64 {
    let f = floor(t, step);
    if f == t {
        t
    } else {
        f + step
    }
}

/// The pieces of `[from, to)` (`None`: unbounded), whole days first.
pub fn plan(from: Option<i64>, to: Option<i64>) -> Vec<Piece> {
    let lo = from.map(|t| ceil(t, DAY));
    let hi = to.map(|t| floor(t, DAY));
    if let (Some(from), Some(to), Some(lo), Some(hi)) = (from, to, lo, hi) {
        if lo >= hi {
            return edge(from, to);
        }
    }
    let mut pieces = vec![Piece::Days(lo, hi)];
    if let (Some(from), Some(lo)) = (from, lo) {
        if from < lo {
            pieces.extend(edge(from, lo));
        }
    }
    if let (Some(to), Some(hi)) = (to, hi) {
        if hi < to {
            pieces.extend(edge(hi, to));
        }
    }
    pieces
}

/// The pieces of a range holding no whole day: its whole hours, and the messages around them.
fn edge(from: i64, to: i64) -> Vec<Piece> {
    let (lo, hi) = (ceil(from, HOUR), floor(to, HOUR));
    if lo >= hi {
        return vec![Piece::Messages(from, to)];
    }
    let mut pieces = vec![Piece::Hours(lo, hi)];
    if from < lo {
        pieces.push(Piece::Messages(from, lo));
    }
    if hi < to {
        pieces.push(Piece::Messages(hi, to));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T00:00:00Z
    const D: i64 = 1_795_564_800_000;

    fn at(day: i64, hour: i64, minute: i64) -> i64 {
        D + day * DAY + hour * HOUR + minute * 60_000
    }

    #[test]
    fn whole_days_come_from_day_documents() {
        use Piece::*;
        assert_eq!(plan(None, None), vec![Days(None, None)]);
        assert_eq!(plan(Some(D), None), vec![Days(Some(D), None)]);
        assert_eq!(plan(None, Some(D)), vec![Days(None, Some(D))]);
        assert_eq!(
            plan(Some(at(0, 0, 0)), Some(at(3, 0, 0))),
            vec![Days(Some(at(0, 0, 0)), Some(at(3, 0, 0)))]
        );
    }

    #[test]
    fn partial_days_use_hours_then_at_most_two_partial_hours_of_messages() {
        use Piece::*;
        // From 22:17 to 01:42 two days later.
        assert_eq!(
            plan(Some(at(0, 22, 17)), Some(at(2, 1, 42))),
            vec![
                Days(Some(at(1, 0, 0)), Some(at(2, 0, 0))),
                Hours(at(0, 23, 0), at(1, 0, 0)),
                Messages(at(0, 22, 17), at(0, 23, 0)),
                Hours(at(2, 0, 0), at(2, 1, 0)),
                Messages(at(2, 1, 0), at(2, 1, 42)),
            ]
        );
        // Less than a day, across midnight: the hours in between, the minutes around them.
        assert_eq!(
            plan(Some(at(0, 21, 30)), Some(at(1, 2, 15))),
            vec![
                Hours(at(0, 22, 0), at(1, 2, 0)),
                Messages(at(0, 21, 30), at(0, 22, 0)),
                Messages(at(1, 2, 0), at(1, 2, 15)),
            ]
        );
        // No whole hour: the messages alone, even across midnight.
        assert_eq!(
            plan(Some(at(0, 23, 30)), Some(at(1, 0, 30))),
            vec![Messages(at(0, 23, 30), at(1, 0, 30))]
        );
        assert_eq!(
            plan(Some(at(0, 10, 0)), Some(at(0, 10, 45))),
            vec![Messages(at(0, 10, 0), at(0, 10, 45))]
        );
        // Open ends keep whole days on their side.
        assert_eq!(
            plan(Some(at(0, 10, 0)), None),
            vec![
                Days(Some(at(1, 0, 0)), None),
                Hours(at(0, 10, 0), at(1, 0, 0))
            ]
        );
        assert_eq!(
            plan(None, Some(at(0, 0, 1))),
            vec![
                Days(None, Some(at(0, 0, 0))),
                Messages(at(0, 0, 0), at(0, 0, 1))
            ]
        );
    }
}
