//! The README's first command, `kafka-sidecar demo`, run as a test: the binary itself, with
//! two embedded mock clusters, an idempotent producer and a consumer group through the
//! proxy, a failover and a failback, then the fleet part. It fails if any message is not
//! delivered or lost, and checks the story it tells: the log file it names holds the
//! proxies' switches, and both read-backs find every acknowledged message.

use std::process::Command;

#[test]
fn the_demo_fails_over_and_back_without_losing_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let out = Command::new(env!("CARGO_BIN_EXE_kafka-sidecar"))
        .args(["demo", "--messages", "200", "--log-file"])
        .arg(&log)
        .env_remove("RUST_LOG")
        .output()
        .expect("run kafka-sidecar demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");

    // The logs went to the file it named, not to the terminal.
    assert!(
        stdout.contains(&format!("logs go to {}", log.display())),
        "{stdout}"
    );
    let logs = std::fs::read_to_string(&log).expect("the demo's log file");
    assert!(
        logs.contains("switching active cluster") && logs.contains("following decision"),
        "the log file lacks the switches:\n{logs}"
    );
    assert!(
        !stderr.contains("switching active cluster"),
        "logs on the terminal without --verbose:\n{stderr}"
    );

    // Part 1: the failover and failback, and every acknowledged order found.
    assert!(stdout.contains("active_cluster: west"), "{stdout}");
    assert!(stdout.contains("active_cluster: north"), "{stdout}");
    assert!(
        stdout.contains("200 acknowledged: ") && stdout.contains("; 0 lost,"),
        "{stdout}"
    );
    assert!(stdout.contains("The consumer group read "), "{stdout}");
    // Part 2: the same read-back for the fleet's payments.
    let landings = stdout.matches("; 0 lost, ").count();
    assert_eq!(landings, 2, "both parts read every message back:\n{stdout}");
    assert!(stdout.contains("Part 2 done"), "{stdout}");
    assert!(stdout.contains("Demo finished."), "{stdout}");
}
