use super::*;
use crate::config::ReplicationPolicy;
use proptest::prelude::*;

/// A new cluster in memory: each copy is a list of (source offset, timestamp) in
/// target offset order.
#[derive(Default)]
struct Model {
    logs: HashMap<(String, i32), Vec<(i64, i64)>>,
    committed: HashMap<(String, i32), i64>,
    active: bool,
    writes: Vec<(String, i32, i64)>,
}

impl Target for Model {
    async fn committed(
        &mut self,
        _group: &str,
        parts: &[(String, i32)],
    ) -> anyhow::Result<HashMap<(String, i32), i64>> {
        Ok(parts
            .iter()
            .map(|k| (k.clone(), self.committed.get(k).copied().unwrap_or(-1)))
            .collect())
    }

    async fn offsets_for_times(
        &mut self,
        query: &[(String, i32, i64)],
    ) -> HashMap<(String, i32), Lookup> {
        query
            .iter()
            .map(|(t, p, ts)| {
                let key = (t.clone(), *p);
                let found = match self.logs.get(&key) {
                    None => Lookup::Absent,
                    Some(_) if *ts == EARLIEST => Lookup::At(0),
                    Some(log) => {
                        Lookup::At(log.iter().position(|r| r.1 >= *ts).unwrap_or(log.len()) as i64)
                    }
                };
                (key, found)
            })
            .collect()
    }

    async fn commit_if_empty(
        &mut self,
        _group: &str,
        offsets: &[(String, i32, i64)],
    ) -> CommitResult {
        if self.active {
            return CommitResult::GroupActive;
        }
        for (t, p, o) in offsets {
            self.committed.insert((t.clone(), *p), *o);
        }
        self.writes.extend_from_slice(offsets);
        CommitResult::Written
    }
}

fn names(policy: ReplicationPolicy) -> Names {
    Names {
        policy,
        separator: ".".into(),
        aliases: vec![
            ("north".into(), "north".into()),
            ("west".into(), "west".into()),
        ],
    }
}

fn run<T: Target>(t: &mut T, n: &Names, commits: &[Committed]) -> Vec<Outcome> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(carry_group(t, n, "north", "west", "g", commits))
        .unwrap()
}

fn committed(topic: &str, offset: i64, anchor: Option<(i64, i64)>) -> Committed {
    Committed {
        topic: topic.into(),
        partition: 0,
        offset,
        anchor: anchor.map(|(offset, timestamp)| Anchor { offset, timestamp }),
    }
}

#[test]
fn the_later_of_translation_and_sync_wins_and_nothing_means_reset() {
    assert_eq!(decide(Some(10), 4), (Some(10), Path::Translated, true));
    assert_eq!(decide(Some(10), 10), (Some(10), Path::Translated, false));
    assert_eq!(decide(Some(10), 12), (Some(12), Path::Synced, false));
    assert_eq!(decide(None, 12), (Some(12), Path::Synced, false));
    assert_eq!(decide(None, -1), (None, Path::Reset, false));
}

#[test]
fn translated_by_timestamp_onto_the_prefixed_copy_and_written() {
    let mut m = Model::default();
    // west's copy of north's orders starts 100 records later in offsets
    let log: Vec<(i64, i64)> = (0..50).map(|i| (i, 1_000 + i * 10)).collect();
    m.logs.insert(("north.orders".into(), 0), log);
    m.committed.insert(("north.orders".into(), 0), 5); // synced, behind
    let out = run(
        &mut m,
        &names(ReplicationPolicy::Prefix),
        &[committed("orders", 30, Some((27, 1_270)))],
    );
    assert_eq!(out[0].path, Path::Translated);
    assert_eq!(out[0].offset, Some(27), "the anchor batch's first record");
    assert_eq!(m.writes, vec![("north.orders".to_string(), 0, 27)]);
}

#[test]
fn an_active_group_is_never_moved_and_absent_topics_fall_back() {
    let mut m = Model {
        active: true,
        ..Model::default()
    };
    m.logs.insert(
        ("north.orders".into(), 0),
        (0..50).map(|i| (i, i)).collect(),
    );
    let out = run(
        &mut m,
        &names(ReplicationPolicy::Prefix),
        &[
            committed("orders", 30, Some((27, 27))),
            committed("payments", 3, Some((1, 1))),
        ],
    );
    assert_eq!(out[0].path, Path::Active);
    assert_eq!(out[1].path, Path::Reset);
    assert!(out[1]
        .why_not
        .as_deref()
        .unwrap()
        .contains("not on the new cluster"));
    assert!(m.writes.is_empty());
}

#[test]
fn same_offset_mirrors_carry_the_offset_itself_and_no_anchor_keeps_the_sync() {
    let mut m = Model::default();
    let out = run(
        &mut m,
        &names(ReplicationPolicy::SameOffsets),
        &[committed("orders", 30, None)],
    );
    assert_eq!((out[0].path, out[0].offset), (Path::Translated, Some(30)));
    let mut m = Model::default();
    m.committed.insert(("north.orders".into(), 0), 12);
    let out = run(
        &mut m,
        &names(ReplicationPolicy::Prefix),
        &[committed("orders", 30, None)],
    );
    assert_eq!((out[0].path, out[0].offset), (Path::Synced, Some(12)));
    assert!(out[0].why_not.is_some(), "says why it did not translate");
}

/// A source partition, its batches, and a copy made as MirrorMaker 2 makes it:
/// timestamps kept, order kept, at-least-once (some records copied twice), the tail
/// maybe not copied yet.
fn scenario() -> impl Strategy<Value = (Vec<i64>, Vec<usize>, Vec<usize>, usize, usize, bool)> {
    (2usize..120).prop_flat_map(|n| {
        (
            proptest::collection::vec(0i64..3, n), // timestamp steps (0: a tie)
            proptest::collection::vec(1usize..8, n), // batch sizes
            proptest::collection::vec(0usize..n, 0..4), // copied again after record i
            1..=n,                                 // committed offset C
            0..=n,                                 // copied so far
            any::<bool>(),                         // strictly increasing timestamps
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn never_skips_and_rereads_one_batch_when_timestamps_are_distinct(
        (steps, sizes, dups, c, copied, strict) in scenario()
    ) {
        let n = steps.len();
        let mut ts = Vec::with_capacity(n);
        let mut t = 1_000i64;
        for s in &steps {
            t += if strict { s + 1 } else { *s };
            ts.push(t);
        }
        // batch bases
        let mut bases = Vec::new();
        let mut at = 0usize;
        for s in &sizes {
            if at >= n { break; }
            bases.push(at);
            at += s;
        }
        let anchor_base = *bases.iter().filter(|&&b| b < c).max().unwrap();
        let mut copy = Vec::new();
        for i in 0..copied {
            copy.push((i as i64, ts[i]));
            if dups.contains(&i) {
                let from = i.saturating_sub(2);
                for (j, t) in ts.iter().enumerate().take(i + 1).skip(from) {
                    copy.push((j as i64, *t));
                }
            }
        }
        let mut m = Model::default();
        m.logs.insert(("north.orders".into(), 0), copy.clone());
        let out = run(
            &mut m,
            &names(ReplicationPolicy::Prefix),
            &[committed("orders", c as i64, Some((anchor_base as i64, ts[anchor_base])))],
        );
        let o = out[0].offset.expect("translated") as usize;
        // nothing skipped: every copied record at or after C has a copy at or after o
        for s in c..copied {
            prop_assert!(copy[o..].iter().any(|r| r.0 == s as i64), "record {s} skipped (start {o})");
        }
        let reread = copy[o.min(copy.len())..].iter().filter(|r| r.0 < c as i64).count();
        if strict && dups.is_empty() {
            let expected = c.min(copied).saturating_sub(anchor_base);
            prop_assert_eq!(reread, expected, "re-read exactly the anchor batch's records before C");
        }
    }
}
