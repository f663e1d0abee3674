//! The README's first command, `kafka-sidecar demo`, run as a test: two embedded mock
//! clusters, an idempotent producer and a consumer group through the proxy, a failover
//! and a failback. It fails if any message is not delivered or the clients see an error.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fails_over_and_back_without_losing_a_message() {
    kafka_sidecar::demo::run(200).await.expect("demo");
}
