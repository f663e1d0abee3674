//! The data path with a second real broker implementation (tansu) and more real
//! clients: kcat (librdkafka) and the Java `kafka-clients` producer and consumer.

mod common;

use std::time::Duration;

use common::harness::TestProxy;
use common::tools::{
    kcat, kcat_stdin, ChildClient, ConsumerArgs, JavaClients, ProducerArgs, Tansu,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_only_proxy_addresses_and_round_trips_through_tansu() {
    let tansu = Tansu::builder().cluster_id("dc-north").start().unwrap();
    tansu.create_topic("kc", 2).unwrap();
    let tp = TestProxy::start(&[("north", tansu.bootstrap())], "north").await;

    let out = kcat(&["-b", &tp.bootstrap, "-L", "-J"]);
    assert!(
        out.status.success(),
        "kcat -L: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let brokers = md["brokers"].as_array().unwrap();
    assert!(!brokers.is_empty());
    let upstream_port = tansu.bootstrap().rsplit(':').next().unwrap().to_string();
    for b in brokers {
        let name = b["name"].as_str().unwrap();
        let (host, port) = name.rsplit_once(':').unwrap();
        assert_eq!(host, "127.0.0.1", "{name}");
        let id = b["id"].as_i64().unwrap();
        assert_eq!(
            port.parse::<i64>().unwrap(),
            i64::from(tp.ports.broker_base) + id,
            "{name}"
        );
        assert_ne!(port, upstream_port, "upstream address leaked: {name}");
    }

    let input: String = (0..20).map(|i| format!("kcat-{i}\n")).collect();
    let out = kcat_stdin(&["-b", &tp.bootstrap, "-P", "-t", "kc"], input.as_bytes());
    assert!(
        out.status.success(),
        "kcat -P: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kcat(&[
        "-b",
        &tp.bootstrap,
        "-C",
        "-t",
        "kc",
        "-o",
        "beginning",
        "-e",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "kcat -C: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("kcat-{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_producer_and_consumer_group_through_tansu() {
    let tansu = Tansu::builder().cluster_id("dc-north").start().unwrap();
    tansu.create_topic("jv", 3).unwrap();
    let tp = TestProxy::start(&[("north", tansu.bootstrap())], "north").await;

    // The Java client's defaults: idempotent, acks=all.
    let mut producer = ChildClient::java_producer(
        JavaClients::V3_9,
        &ProducerArgs::new(&tp.bootstrap, "jv", 200),
    )
    .unwrap();
    let run = producer.wait(Duration::from_secs(120)).await.unwrap();
    assert!(run.fatal().is_none(), "{}", run.describe());
    assert!(run.done().is_some(), "{}", run.describe());
    assert_eq!(run.acked_ids().len(), 200, "{}", run.describe());

    let mut consumer = ChildClient::java_consumer(
        JavaClients::V3_9,
        &ConsumerArgs::topic(&tp.bootstrap, "jv-group", "jv", 200).timeout_sec(90.0),
    )
    .unwrap();
    let run = consumer.wait(Duration::from_secs(120)).await.unwrap();
    assert!(run.done().is_some(), "{}", run.describe());
    let values: std::collections::BTreeSet<String> =
        run.msgs().iter().map(|m| m.value.clone()).collect();
    assert_eq!(values.len(), 200, "{}", run.describe());
    tp.proxy.shutdown().await;
}
