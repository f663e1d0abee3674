#!/usr/bin/env python3
"""Test consumer (consumer group) on confluent-kafka, same flags and stdout protocol as tests/java/TestConsumer.java.

    VERSION confluent-kafka 2.16.1 librdkafka 2.16.1
    ASSIGNED t-0,t-1                    after each rebalance
    MSG topic partition offset value    one per record
    ERR what Error: message             the consumer carries on
    FATAL Error: message                librdkafka's fatal error (e.g. a KIP-848 member fenced for good); exit 3
    DONE received=d                     d distinct (topic, value) pairs >= --expect; exit 0
    TIMEOUT received=d                  --timeout-sec passed first; exit 4

Flags: --bootstrap host:port --group G --topic T --expect N --timeout-sec S [--prop key=value ...]
(librdkafka property names). Auto-commit on, a new group starts at the earliest offset.
`--prop group.protocol=consumer` makes it a KIP-848 member (the classic member timeouts are then left out:
the broker sets them).
"""
import argparse
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer


def out(line):
    sys.stdout.write(line.replace("\n", " ").replace("\r", " ") + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--timeout-sec", type=float, default=60.0)
    ap.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()

    out("VERSION confluent-kafka %s librdkafka %s" % (confluent_kafka.__version__, confluent_kafka.libversion()[0]))
    conf = {
        "bootstrap.servers": a.bootstrap,
        "client.id": "ksc-test-consumer-confluent",
        "group.id": a.group,
        "auto.offset.reset": "earliest",
    }
    for kv in a.prop:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error("--prop wants key=value, got %r" % kv)
        conf[k] = v
    if conf.get("group.protocol", "classic") == "classic":
        conf.setdefault("session.timeout.ms", 10000)
        conf.setdefault("heartbeat.interval.ms", 1000)
    c = Consumer(conf)

    def on_assign(consumer, parts):
        out("ASSIGNED " + ",".join("%s-%d" % (p.topic, p.partition) for p in parts))

    c.subscribe([a.topic], on_assign=on_assign)
    seen = set()
    deadline = time.monotonic() + a.timeout_sec
    while len(seen) < a.expect and time.monotonic() < deadline:
        m = c.poll(min(0.5, max(0.0, deadline - time.monotonic())))
        if m is None:
            continue
        if m.error() is not None:
            if m.error().fatal() or m.error().code() == confluent_kafka.KafkaError._FATAL:
                out("FATAL %s: %s" % (m.error().name(), m.error().str()))
                c.close()
                sys.exit(3)
            out("ERR poll %s: %s" % (m.error().name(), m.error().str()))
            continue
        value = (m.value() or b"").decode("utf-8", "replace")
        out("MSG %s %d %d %s" % (m.topic(), m.partition(), m.offset(), value))
        seen.add((m.topic(), value))
    c.close()
    if len(seen) >= a.expect:
        out("DONE received=%d" % len(seen))
        sys.exit(0)
    out("TIMEOUT received=%d" % len(seen))
    sys.exit(4)


if __name__ == "__main__":
    main()
