//! `--from` / `--to`: offsets per partition or a time, resolved to one `[start, end)` range per
//! partition against the broker (watermarks, offsets-for-times).

use std::collections::BTreeMap;

use rdkafka::consumer::BaseConsumer;

use crate::scan::{self, Range};

/// One end of a replay range as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// The same offset in every partition.
    Offset(i64),
    /// `P:OFFSET` pairs; partitions not listed are left out (`--from`) or read to the end (`--to`).
    Offsets(BTreeMap<i32, i64>),
    /// A time in epoch milliseconds (RFC 3339 or an age like `2h` on the command line).
    Time(i64),
}

/// Parses `42`, `0:10,1:20`, `2024-05-01T10:00:00Z` or `2h`.
pub fn parse_bound(s: &str) -> Result<Bound, String> {
    let s = s.trim();
    if let Ok(o) = s.parse::<i64>() {
        return if o >= 0 {
            Ok(Bound::Offset(o))
        } else {
            Err(format!("offset {o} is negative"))
        };
    }
    let pairs: Option<BTreeMap<i32, i64>> = s
        .split(',')
        .map(|part| {
            let (p, o) = part.trim().split_once(':')?;
            Some((p.parse().ok()?, o.parse().ok().filter(|o: &i64| *o >= 0)?))
        })
        .collect();
    if let Some(pairs) = pairs {
        return Ok(Bound::Offsets(pairs));
    }
    crate::dlq::parse_time(s).map(Bound::Time).map_err(|_| {
        format!("{s:?} is not an offset, a P:OFFSET list, an RFC 3339 time or an age like 2h")
    })
}

/// Resolves the bounds to ranges, clamped to what the partitions hold now. The end is fixed
/// here, before anything is copied, so a replay into its own source never reads its copies.
pub fn resolve(
    consumer: &BaseConsumer,
    topic: &str,
    from: Option<&Bound>,
    to: Option<&Bound>,
) -> anyhow::Result<Vec<Range>> {
    let partitions = scan::partitions(consumer, topic)?;
    let marks = scan::watermarks(consumer, topic, &partitions)?;
    let at = |bound: Option<&Bound>| -> anyhow::Result<Option<BTreeMap<i32, i64>>> {
        Ok(match bound {
            None => None,
            Some(Bound::Offset(o)) => Some(partitions.iter().map(|p| (*p, *o)).collect()),
            Some(Bound::Offsets(m)) => Some(m.clone()),
            Some(Bound::Time(ms)) => {
                Some(scan::offsets_for_time(consumer, topic, &partitions, *ms)?)
            }
        })
    };
    let starts = at(from)?;
    let ends = at(to)?;
    for m in [from, to].into_iter().flatten().filter_map(|b| match b {
        Bound::Offsets(m) => Some(m),
        _ => None,
    }) {
        for p in m.keys() {
            anyhow::ensure!(
                marks.contains_key(p),
                "{topic} has no partition {p} (it has {})",
                partitions.len()
            );
        }
    }
    let mut out = Vec::new();
    for (&p, &(low, high)) in &marks {
        let start = match &starts {
            None => low,
            Some(m) => match m.get(&p) {
                Some(o) => (*o).max(low),
                None => continue,
            },
        };
        let end = ends
            .as_ref()
            .and_then(|m| m.get(&p).copied())
            .unwrap_or(high)
            .min(high);
        out.push(Range {
            partition: p,
            start: start.min(end),
            end,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse() {
        assert_eq!(parse_bound("42"), Ok(Bound::Offset(42)));
        assert_eq!(
            parse_bound("0:10, 1:20"),
            Ok(Bound::Offsets([(0, 10), (1, 20)].into()))
        );
        assert_eq!(
            parse_bound("2023-11-14T22:13:20Z"),
            Ok(Bound::Time(1_700_000_000_000))
        );
        let Ok(Bound::Time(t)) = parse_bound("2h") else {
            panic!("an age is a time");
        };
        assert!((notify_runtime::now_ms() - t - 7_200_000).abs() < 60_000);
        assert!(parse_bound("-3").is_err());
        assert!(parse_bound("0:-1").is_err());
        assert!(parse_bound("yesterday").is_err());
    }
}
