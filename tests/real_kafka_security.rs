//! The proxy in front of a real Apache Kafka broker that enforces security: a SASL_SSL listener with the
//! broker's own SCRAM-SHA-512 users, a TLS certificate from a test CA (the proxy verifies it with that CA),
//! `connections.max.reauth.ms` of 3 s (KIP-368: the proxy must re-authenticate its upstream connections
//! mid-session) and the StandardAuthorizer with ACLs. The client talks plaintext to the proxy.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::harness::metric;
use common::kafka::{self, lease, unique, Kafka, Security, Spec};
use common::tools::{ChildClient, JavaClients, ProducerArgs};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

const REAUTH_MS: u64 = 3000;
const CLUSTER: &str = "secure";

fn secure_cluster() -> Kafka {
    lease(
        "rk-sec",
        &Spec {
            security: Security::SaslSsl,
            acl: true,
            reauth_ms: Some(REAUTH_MS),
            partitions: 2,
            ..Spec::default()
        },
    )
}

/// A Java producer (default config) writes through the proxy for ~15 s while the broker demands
/// re-authentication every 3 s; then an rdkafka consumer group reads everything back through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sasl_ssl_producer_and_consumer_across_reauthentications() {
    // the metrics recorder must be there before the proxy counts anything
    kafka_sidecar::admin::install_recorder().unwrap();
    let k = secure_cluster();
    let t0 = Instant::now();
    let topic = unique("sec");
    k.create_topic(&topic, 2, None).await;
    let tp = kafka::start_proxy(&[(CLUSTER, &k)], CLUSTER, "").await;
    const COUNT: u64 = 600;
    let mut producer = ChildClient::java_producer(
        JavaClients::V3_9,
        &ProducerArgs::new(&tp.bootstrap, &topic, COUNT).rate(40.0),
    )
    .unwrap();
    let run = producer.wait(Duration::from_secs(120)).await.unwrap();
    assert!(
        run.fatal().is_none() && run.errors().is_empty() && run.done().is_some(),
        "{}",
        run.describe()
    );
    let acked: BTreeSet<u64> = run.acked_ids().into_iter().collect();
    assert_eq!(acked.len() as u64, COUNT, "{}", run.describe());
    let on_cluster = k.read_all(&topic);
    let missing: Vec<u64> = acked
        .iter()
        .filter(|i| !on_cluster.contains_key(i))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged, not on the broker: {missing:?}"
    );

    // the read path and the group coordinator through the same SASL_SSL upstream
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("group.id", unique("sec-group"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut read = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while read.len() < COUNT as usize {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {COUNT} read back", read.len()))
            .unwrap();
        read.insert(
            String::from_utf8_lossy(m.payload().unwrap())
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert_eq!(read, acked);
    drop(consumer);

    let ok = metric(
        kafka_sidecar::admin::names::SASL_REAUTHENTICATIONS_TOTAL,
        &[("cluster", CLUSTER), ("result", "ok")],
    );
    // abs: the sum over no sample is -0.0
    let failed = metric(
        kafka_sidecar::admin::names::SASL_REAUTHENTICATIONS_TOTAL,
        &[("cluster", CLUSTER), ("result", "error")],
    )
    .abs();
    println!(
        "SCRAM-SHA-512 over SASL_SSL (test CA), reauth every {REAUTH_MS} ms: {COUNT} produced and read back, {ok} re-authentications ok, {failed} failed, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // 15 s of producing on at least one connection with a 3 s session lifetime
    assert!(ok >= 3.0, "re-authentications ok = {ok}");
    assert_eq!(failed, 0.0);
    tp.proxy.shutdown().await;
}

/// A topic the proxy's user may not write to (a DENY ACL on WRITE): the client gets
/// TOPIC_AUTHORIZATION_FAILED (not a timeout, not a dropped connection), nothing is written, and the same
/// client keeps writing to topics it may write to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_refusal_reaches_the_client_as_topic_authorization_failed() {
    let k = secure_cluster();
    let locked = unique("locked");
    let open = unique("open");
    k.create_topic(&locked, 1, None).await;
    k.create_topic(&open, 1, None).await;
    let kk = k.clone();
    let l = locked.clone();
    tokio::task::spawn_blocking(move || {
        kk.tool(
            "org.apache.kafka.tools.AclCommand",
            &[
                "--add",
                "--deny-principal",
                "User:app",
                "--operation",
                "Write",
                "--topic",
                &l,
            ],
        )
    })
    .await
    .unwrap();
    let tp = kafka::start_proxy(&[(CLUSTER, &k)], CLUSTER, "").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    let t0 = Instant::now();
    let r = producer
        .send(
            FutureRecord::to(&locked).payload("nope").key("nope"),
            Duration::from_secs(30),
        )
        .await;
    let took = t0.elapsed();
    match r {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed), _)) => {}
        other => panic!("expected TopicAuthorizationFailed, got {other:?}"),
    }
    println!("ACL refusal reported to the client after {took:?}");
    producer
        .send(
            FutureRecord::to(&open).payload("yes").key("yes"),
            Duration::from_secs(30),
        )
        .await
        .expect("the same client still writes to a topic it may write to");
    assert!(
        k.read_records(&locked).is_empty(),
        "nothing on the locked topic"
    );
    assert_eq!(k.read_records(&open).len(), 1);
    tp.proxy.shutdown().await;
}
