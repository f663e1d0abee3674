//! The load: producers (as fast as possible or at a fixed rate), a consumer, idle connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::workloads::Latency;

pub struct LatencyContext {
    pub hist: Arc<Mutex<Histogram<u64>>>,
    pub acked: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        match result {
            Ok(_) => {
                let us = sent.elapsed().as_micros().max(1) as u64;
                let _ = self.hist.lock().expect("histogram").record(us);
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// Where and how a run produces.
pub struct Producing<'a> {
    pub bootstrap: &'a str,
    pub topic: &'a str,
    /// enable.idempotence=true (the Java client's default): after a switch kafka-sidecar
    /// rewrites every batch of such a producer.
    pub idempotent: bool,
}

pub fn producer_config(p: &Producing, linger_ms: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", p.bootstrap)
        .set("acks", "all")
        .set(
            "enable.idempotence",
            if p.idempotent { "true" } else { "false" },
        )
        .set("linger.ms", linger_ms)
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "30000")
        .set("log_level", "3");
    c
}

/// Connects, learns the metadata and (idempotent producers) the producer id before the
/// clock starts: one record sent and acknowledged, bounded by 10 s + 30 s. Without it the
/// first records of each producer wait for InitProducerId, and at a fixed rate that wait
/// would be the p99.
fn prime(p: &ThreadedProducer<LatencyContext>, topic: &str) -> anyhow::Result<()> {
    p.client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let rec = BaseRecord::with_opaque_to(topic, Box::new(Instant::now())).payload(&b"prime"[..]);
    p.send::<(), [u8]>(rec).map_err(|(e, _)| e)?;
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Forgets the priming records.
fn reset(hist: &Mutex<Histogram<u64>>, acked: &AtomicU64) {
    hist.lock().expect("histogram").reset();
    acked.store(0, Ordering::Relaxed);
}

pub struct ProduceOutcome {
    pub produced: u64,
    pub errors: u64,
    pub seconds: f64,
    pub latency: Latency,
    pub series: Vec<(f64, f64)>,
}

pub fn latency_of(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let curve = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]
        .iter()
        .map(|&p| (p, h.value_at_quantile(p / 100.0) as f64))
        .collect();
    Latency {
        p50_us: h.value_at_quantile(0.5) as f64,
        p90_us: h.value_at_quantile(0.9) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        max_us: h.max() as f64,
        count: h.len(),
        curve,
    }
}

/// Produces `size`-byte messages as fast as the client allows, for at most `seconds`
/// and `max` messages, then waits (bounded) for every acknowledgement.
pub fn produce_max(
    p: &Producing,
    size: usize,
    max: u64,
    seconds: f64,
) -> anyhow::Result<ProduceOutcome> {
    let hist = Arc::new(Mutex::new(new_hist()));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ctx = LatencyContext {
        hist: hist.clone(),
        acked: acked.clone(),
        errors: errors.clone(),
    };
    let producer: ThreadedProducer<LatencyContext> =
        producer_config(p, "5").create_with_context(ctx)?;
    let topic = p.topic;
    // Connect and learn the metadata before the clock starts.
    prime(&producer, topic)?;
    reset(&hist, &acked);
    let payload = vec![b'x'; size];
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let mut series = vec![];
    let mut sent = 0u64;
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut out = vec![];
            let mut last = 0u64;
            let mut t = Instant::now();
            let hard_stop = start + Duration::from_secs_f64(seconds + 35.0);
            while !done.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                std::thread::sleep(Duration::from_millis(100));
                let now = acked.load(Ordering::Relaxed);
                let dt = t.elapsed().as_secs_f64();
                t = Instant::now();
                out.push((
                    start.elapsed().as_secs_f64(),
                    (now - last) as f64 * size as f64 / dt / 1e6,
                ));
                last = now;
            }
            out
        });
        let deadline = start + Duration::from_secs_f64(seconds);
        while sent < max && Instant::now() < deadline {
            let rec =
                BaseRecord::with_opaque_to(topic, Box::new(Instant::now())).payload(&payload[..]);
            match producer.send::<(), [u8]>(rec) {
                Ok(()) => sent += 1,
                Err((e, _)) => {
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        std::thread::sleep(Duration::from_micros(200));
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        let _ = producer.flush(Duration::from_secs(30));
        done.store(true, Ordering::Relaxed);
        series = sampler.join().expect("sampler");
    });
    let seconds = start.elapsed().as_secs_f64();
    let latency = latency_of(&hist.lock().expect("histogram"));
    Ok(ProduceOutcome {
        produced: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed) + (sent - acked.load(Ordering::Relaxed).min(sent)),
        seconds,
        latency,
        series,
    })
}

/// `users` producers, each sending `requests` messages on a fixed schedule so that
/// together they offer `rate` messages per second. Latency is measured from the
/// scheduled send time (no coordinated omission).
pub fn produce_fixed_rate(
    prod: &Producing,
    size: usize,
    users: usize,
    requests: usize,
    rate: f64,
) -> anyhow::Result<ProduceOutcome> {
    let hist = Arc::new(Mutex::new(new_hist()));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut producers = vec![];
    for _ in 0..users {
        let ctx = LatencyContext {
            hist: hist.clone(),
            acked: acked.clone(),
            errors: errors.clone(),
        };
        let p: ThreadedProducer<LatencyContext> =
            producer_config(prod, "0").create_with_context(ctx)?;
        prime(&p, prod.topic)?;
        producers.push(p);
    }
    reset(&hist, &acked);
    let interval = Duration::from_secs_f64(users as f64 / rate);
    let payload = vec![b'r'; size];
    let topic = prod.topic;
    let start = Instant::now() + Duration::from_millis(50);
    let series = Mutex::new(vec![]);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut last = 0u64;
            let mut t = Instant::now();
            let hard_stop = Instant::now() + interval * requests as u32 + Duration::from_secs(35);
            while !done.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                std::thread::sleep(Duration::from_millis(100));
                let now = acked.load(Ordering::Relaxed);
                let dt = t.elapsed().as_secs_f64();
                t = Instant::now();
                series.lock().expect("series").push((
                    start.elapsed().as_secs_f64(),
                    (now - last) as f64 * size as f64 / dt / 1e6,
                ));
                last = now;
            }
        });
        let handles: Vec<_> = producers
            .iter()
            .enumerate()
            .map(|(u, p)| {
                let payload = &payload;
                let errors = &errors;
                s.spawn(move || {
                    // Users are staggered evenly within one interval.
                    let offset = interval.mul_f64(u as f64 / users as f64);
                    for i in 0..requests {
                        let due = start + offset + interval * i as u32;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let rec =
                            BaseRecord::with_opaque_to(topic, Box::new(due)).payload(&payload[..]);
                        if p.send::<(), [u8]>(rec).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let _ = p.flush(Duration::from_secs(30));
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
    });
    let seconds = start.elapsed().as_secs_f64();
    let latency = latency_of(&hist.lock().expect("histogram"));
    Ok(ProduceOutcome {
        produced: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds,
        latency,
        series: series.into_inner().expect("series"),
    })
}

/// What one consume phase read, and the CPU each party spent on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Consumed {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// CPU seconds per second of the phase (cores). The consumer is the load generator's
    /// process (with the mock target, the mock cluster's threads too).
    pub cores: ConsumeCores,
}

/// Cores busy during a consume phase, by party: on a machine the consumer, the broker and
/// the relays share, what one party spends the others cannot.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ConsumeCores {
    pub consumer: f64,
    /// The upstream's processes, when they are not in the load generator's.
    pub broker: Option<f64>,
    /// Every relay of the chain (none: direct).
    pub relays: Option<f64>,
}

/// Reads every message the upstream still holds, from the low watermark of every
/// partition (bounded in time). The mock cluster keeps only the newest ~5 MB of each
/// partition, so this reads at most that much of what was produced. `broker` and
/// `relays` are the processes whose CPU the phase is charged with besides its own;
/// `tck`: clock ticks per second.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    produced: u64,
    (broker, relays): (&[u32], &[u32]),
    tck: f64,
) -> anyhow::Result<Consumed> {
    if produced == 0 {
        return Ok(Consumed::default());
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "loadtest")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "1")
        .set("log_level", "3")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let mut expected = 0u64;
    for p in 0..partitions {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        expected += (hi - lo).max(0) as u64;
    }
    let cpu = |pids: &[u32]| -> f64 {
        pids.iter()
            .map(|p| crate::sampling::cpu_seconds(*p, tck))
            .sum()
    };
    let me = [std::process::id()];
    let cpu0 = (cpu(&me), cpu(broker), cpu(relays));
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut last_msg = Instant::now();
    while n < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload_len() as u64;
                last_msg = Instant::now();
            }
            Some(Err(_)) => {}
            None => {
                if last_msg.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cores = |pids: &[u32], before: f64| (cpu(pids) - before).max(0.0) / seconds;
    Ok(Consumed {
        messages: n,
        bytes,
        seconds,
        cores: ConsumeCores {
            consumer: cores(&me, cpu0.0),
            broker: (!broker.is_empty()).then(|| cores(broker, cpu0.1)),
            relays: (!relays.is_empty()).then(|| cores(relays, cpu0.2)),
        },
    })
}

/// Opens up to `n` client connections (8 threads) that each complete one ApiVersions
/// round trip and then stay idle. Bounded: 20 s in all; returns what it got.
pub fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    // ApiVersions v0, header v1: api key 18, version 0, correlation id, null client id.
    const REQ: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    let deadline = Instant::now() + Duration::from_secs(20);
    let threads = 8;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut conns = vec![];
                    for _ in (t..n).step_by(threads) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let Ok(mut c) =
                            TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(5)))
                        else {
                            continue;
                        };
                        let ok = c
                            .set_read_timeout(Some(left.max(Duration::from_millis(100))))
                            .is_ok()
                            && c.write_all(&REQ).is_ok()
                            && {
                                let mut len = [0u8; 4];
                                c.read_exact(&mut len).is_ok() && {
                                    let mut body = vec![
                                        0u8;
                                        i32::from_be_bytes(len).clamp(0, 1 << 20)
                                            as usize
                                    ];
                                    c.read_exact(&mut body).is_ok()
                                }
                            };
                        if ok {
                            conns.push(c);
                        }
                    }
                    conns
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}
