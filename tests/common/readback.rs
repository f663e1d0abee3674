//! Reading a topic back from a cluster directly (not through the proxy), to check that every
//! acknowledged record is there: one kcat read from the beginning to the end of every partition,
//! for a topic nobody writes to any more (kcat's `-e` ends once every partition is at its end). A
//! real Kafka cluster whose topic clients still write to is read with
//! [`super::kafka::Kafka::read_records`], up to the high watermarks it finds when it starts.
#![allow(dead_code)]

use std::collections::BTreeMap;

use super::tools::kcat;

/// A topic as read from one cluster: (partition, offset) -> value.
pub type Log = BTreeMap<(i32, i64), String>;

/// Every record of `topic` on `bootstrap`, read directly with kcat. `None`: the cluster has no such
/// topic. Panics if kcat fails otherwise (or runs out of its 60 s), or prints a line that is not
/// `partition offset value`.
pub fn read_topic(bootstrap: &str, topic: &str) -> Option<Log> {
    let out = kcat(&[
        "-b",
        bootstrap,
        "-C",
        "-t",
        topic,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%p %o %s\n",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(
            stderr.contains("Unknown topic"),
            "kcat -C {topic} on {bootstrap}: {} {stderr}",
            out.status
        );
        return None;
    }
    let mut log = Log::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((at, value)) = parse_line(line) else {
            panic!("kcat -C {topic} on {bootstrap}: not `partition offset value`: {line:?}");
        };
        log.insert(at, value.to_string());
    }
    Some(log)
}

fn parse_line(line: &str) -> Option<((i32, i64), &str)> {
    let mut it = line.splitn(3, ' ');
    let partition = it.next()?.parse().ok()?;
    let offset = it.next()?.parse().ok()?;
    Some(((partition, offset), it.next()?))
}

/// [`read_topic`] on a blocking thread, for async tests (several reads can then run at once).
pub async fn read_topic_async(bootstrap: String, topic: String) -> Option<Log> {
    tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic))
        .await
        .unwrap()
}
