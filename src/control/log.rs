//! The narrow seam between the control plane and a broker: three partitioned logs
//! on one cluster. The decision logic, the follower and the arbiter are written
//! against [`ControlLog`] so their state machines are unit-tested without sockets
//! ([`memory::MemoryLog`], tests only); [`super::client::KafkaControlLog`] is the real one.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// Control topic, partition 0: decisions. Read by every sidecar.
    Decisions,
    /// Fleet topic, partition 0: sidecar reports. Read only by operators.
    Reports,
    /// Fleet topic, partition 1: arbiter votes. Read only by arbiters.
    Votes,
}

impl Part {
    pub fn label(self) -> &'static str {
        match self {
            Part::Decisions => "decisions",
            Part::Reports => "reports",
            Part::Votes => "votes",
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub offset: i64,
    /// The record's timestamp (Unix ms, as written).
    pub timestamp: i64,
    pub value: Bytes,
}

/// Append / read / bounds on one cluster's control logs.
pub trait ControlLog: Send {
    /// Appends records durably (acks=all); returns the offset of the first.
    fn append(
        &mut self,
        part: Part,
        values: &[Bytes],
    ) -> impl Future<Output = anyhow::Result<i64>> + Send;

    /// Records at offsets `>= from`, waiting up to `wait` for the first one if there is
    /// none yet (a long poll). May return an empty list.
    fn read(
        &mut self,
        part: Part,
        from: i64,
        wait: Duration,
    ) -> impl Future<Output = anyhow::Result<Vec<Entry>>> + Send;

    /// (first offset still kept, offset the next record will get).
    fn bounds(&mut self, part: Part) -> impl Future<Output = anyhow::Result<(i64, i64)>> + Send;

    /// The first offset whose record timestamp is `>= ts_ms` (the end if none).
    fn offset_for_time(
        &mut self,
        part: Part,
        ts_ms: i64,
    ) -> impl Future<Output = anyhow::Result<i64>> + Send;
}

/// Reads everything from `from` up to the end known at the call (bounded: stops at
/// `max_records`).
pub async fn read_to_end<L: ControlLog>(
    log: &mut L,
    part: Part,
    from: i64,
    max_records: usize,
) -> anyhow::Result<(Vec<Entry>, i64)> {
    let (start, end) = log.bounds(part).await?;
    let mut next = from.max(start);
    let mut out = Vec::new();
    while next < end && out.len() < max_records {
        let got = log.read(part, next, Duration::ZERO).await?;
        let Some(last) = got.last() else { break };
        next = last.offset + 1;
        out.extend(got);
    }
    Ok((out, next))
}

#[cfg(test)]
pub mod memory {
    //! An in-memory [`ControlLog`] for unit tests of the state machines.
    use std::collections::HashMap;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Inner {
        logs: HashMap<Part, Vec<Entry>>,
        down: bool,
    }

    /// A cluster's logs; clones share them. `set_down(true)` makes every call fail.
    #[derive(Clone, Default)]
    pub struct MemoryLog {
        inner: Arc<Mutex<Inner>>,
        notify: Arc<tokio::sync::Notify>,
        /// Record timestamps (default: the system clock).
        clock: Option<crate::control::Clock>,
    }

    impl MemoryLog {
        /// Logs whose records are stamped by `clock` (e.g. one on paused time, so that
        /// `offset_for_time` agrees with the code under test).
        pub fn with_clock(clock: crate::control::Clock) -> MemoryLog {
            MemoryLog {
                clock: Some(clock),
                ..MemoryLog::default()
            }
        }
        pub fn set_down(&self, down: bool) {
            self.inner.lock().down = down;
        }
        pub fn values(&self, part: Part) -> Vec<Bytes> {
            self.inner
                .lock()
                .logs
                .get(&part)
                .map(|v| v.iter().map(|e| e.value.clone()).collect())
                .unwrap_or_default()
        }
        fn check(&self) -> anyhow::Result<()> {
            anyhow::ensure!(!self.inner.lock().down, "cluster down");
            Ok(())
        }
    }

    impl ControlLog for MemoryLog {
        async fn append(&mut self, part: Part, values: &[Bytes]) -> anyhow::Result<i64> {
            self.check()?;
            let now = self
                .clock
                .as_ref()
                .map_or_else(crate::cluster::now_ms, |c| c());
            let first = {
                let mut g = self.inner.lock();
                let log = g.logs.entry(part).or_default();
                let first = log.len() as i64;
                for v in values {
                    let offset = log.len() as i64;
                    log.push(Entry {
                        offset,
                        timestamp: now,
                        value: v.clone(),
                    });
                }
                first
            };
            self.notify.notify_waiters();
            Ok(first)
        }

        async fn read(
            &mut self,
            part: Part,
            from: i64,
            wait: Duration,
        ) -> anyhow::Result<Vec<Entry>> {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                self.check()?;
                let notified = self.notify.notified();
                let got: Vec<Entry> = self
                    .inner
                    .lock()
                    .logs
                    .get(&part)
                    .map(|v| v.iter().filter(|e| e.offset >= from).cloned().collect())
                    .unwrap_or_default();
                if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(got);
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }

        async fn bounds(&mut self, part: Part) -> anyhow::Result<(i64, i64)> {
            self.check()?;
            let n = self.inner.lock().logs.get(&part).map_or(0, |v| v.len());
            Ok((0, n as i64))
        }

        async fn offset_for_time(&mut self, part: Part, ts_ms: i64) -> anyhow::Result<i64> {
            self.check()?;
            let g = self.inner.lock();
            let log = g.logs.get(&part);
            Ok(log
                .and_then(|v| v.iter().find(|e| e.timestamp >= ts_ms).map(|e| e.offset))
                .unwrap_or_else(|| log.map_or(0, |v| v.len() as i64)))
        }
    }
}
