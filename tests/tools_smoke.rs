//! Proves the test tooling works on this machine (scripts/install-test-deps.sh, tests/common/tools.rs): real
//! clients straight against tansu, and through the SASL-enforcing upstream. No proxy involved.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::tools::*;

#[test]
fn java_producer_acks_20_against_tansu() {
    let tansu = Tansu::start().expect("start tansu");
    tansu.create_topic("smoke", 2).expect("create topic");
    let mut p = ChildClient::java_producer(
        JavaClients::V3_9,
        &ProducerArgs::new(tansu.bootstrap(), "smoke", 20).rate(100.0),
    )
    .unwrap();
    let run = p.wait_blocking(Duration::from_secs(90)).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(
        run.version().map(String::as_str),
        Some("VERSION kafka-clients 3.9.1")
    );
    let acks = run.acks();
    assert_eq!(acks.len(), 20, "{}", run.describe());
    assert_eq!(run.acked_ids(), (0..20).collect::<HashSet<u64>>());
    assert_eq!(
        run.done().map(String::as_str),
        Some("DONE acked=20 errors=0")
    );
    // two partitions, offsets dense from 0 in each
    for part in 0..2 {
        let mut offs: Vec<i64> = acks
            .iter()
            .filter(|a| a.partition == part)
            .map(|a| a.offset)
            .collect();
        offs.sort();
        assert_eq!(offs, (0..offs.len() as i64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn kcat_python_producer_and_java_consumer_against_tansu() {
    let tansu = Tansu::builder()
        .cluster_id("smoke-dc")
        .start()
        .expect("start tansu");
    tansu.create_topic("mixed", 1).unwrap();
    let b = tansu.bootstrap();

    let out = kcat_stdin(
        &["-b", &b, "-P", "-t", "mixed", "-K:"],
        b"k1:kcat-1\nk2:kcat-2\n",
    );
    assert!(
        out.status.success(),
        "kcat -P: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut py =
        ChildClient::python_producer(&ProducerArgs::new(&b, "mixed", 5).start_at(100)).unwrap();
    let run = py.wait(Duration::from_secs(60)).await.unwrap();
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(
        run.acked_ids(),
        (100..105).collect::<HashSet<u64>>(),
        "{}",
        run.describe()
    );
    assert!(run.version().unwrap().starts_with("VERSION kafka-python "));

    let out = kcat(&[
        "-b",
        &b,
        "-C",
        "-t",
        "mixed",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%s\\n",
    ]);
    assert!(
        out.status.success(),
        "kcat -C: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        values,
        ["kcat-1", "kcat-2", "100", "101", "102", "103", "104"]
    );

    let out = kcat(&["-b", &b, "-L", "-J"]);
    let meta = String::from_utf8_lossy(&out.stdout);
    assert!(
        meta.contains("\"id\":111"),
        "tansu's node id is 111: {meta}"
    );

    let mut c = ChildClient::java_consumer(
        JavaClients::V3_9,
        &ConsumerArgs::pattern(&b, "smoke-group", "mix.*", 7).timeout_sec(45.0),
    )
    .unwrap();
    c.wait_for_line(Duration::from_secs(45), |l| l.starts_with("ASSIGNED "))
        .await
        .unwrap();
    let run = c.wait(Duration::from_secs(60)).await.unwrap();
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(run.msgs().len(), 7, "{}", run.describe());
    assert_eq!(run.done().map(String::as_str), Some("DONE received=7"));
}

#[test]
fn sasl_upstream_in_front_of_tansu() {
    let (_tansu, gw) = tansu_behind_sasl("smoke-sasl", |b| b.user("alice", "alice-secret"))
        .expect("tansu behind SASL gateway");
    _tansu.create_topic("secure", 1).unwrap();
    let b = gw.bootstrap();

    let mut args = vec!["-b", b.as_str(), "-P", "-t", "secure"];
    let sasl = kcat_sasl_args("SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret");
    args.extend(sasl.iter().map(String::as_str));
    let out = kcat_stdin(&args, b"via-sasl\n");
    assert!(
        out.status.success(),
        "kcat SASL -P: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );

    let props = java_sasl_props("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", "alice-secret");
    let mut p = ChildClient::java_producer(
        JavaClients::V3_9,
        &ProducerArgs::new(&b, "secure", 3).props(props),
    )
    .unwrap();
    let run = p.wait_blocking(Duration::from_secs(90)).unwrap();
    assert_eq!(run.acks().len(), 3, "{}", run.describe());

    // a wrong password is refused by Kafka's own authenticator
    let mut args = vec!["-b", b.as_str(), "-L", "-m", "3"];
    let bad = kcat_sasl_args("SASL_PLAINTEXT", "PLAIN", "alice", "wrong");
    args.extend(bad.iter().map(String::as_str));
    let out = kcat_with(&args, None, Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(gw.count_log("auth-ok") >= 2, "{}", gw.log());
    assert!(gw.count_log("auth-failed") >= 1, "{}", gw.log());
}

#[test]
fn env_file_lines_parse() {
    let m = parse_env_file("# c\nexport A='/x y/z'\nB=plain\nexport C=\"q\"\n\n");
    assert_eq!(m["A"], "/x y/z");
    assert_eq!(m["B"], "plain");
    assert_eq!(m["C"], "q");
    assert_eq!(
        parse_ack("ACK 7 1 42"),
        Some(Ack {
            i: 7,
            partition: 1,
            offset: 42
        })
    );
    assert_eq!(
        parse_msg("MSG t 0 3 hello world").unwrap().value,
        "hello world"
    );
    assert_eq!(line_field("DONE acked=20 errors=1", "errors"), Some(1));
}
