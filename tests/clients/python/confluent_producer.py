#!/usr/bin/env python3
"""Test producer on confluent-kafka (librdkafka), same flags and stdout protocol as tests/java/TestProducer.java.

    VERSION confluent-kafka 2.16.1 librdkafka 2.16.1
    ACK i partition offset              one per acknowledged record
    ERR i Error: message                one per failed record
    FATAL [i] Error: message            then exit 3 (also on librdkafka's fatal error, e.g. an idempotence failure)
    DONE acked=n errors=m               then exit 0

Flags: --bootstrap host:port --topic T --count N --rate-per-sec R [--start S] [--acks all|1|0]
[--idempotence true|false|default] [--prop key=value ...] (librdkafka property names). "default" means
enable.idempotence=true (librdkafka's own default is false); message.timeout.ms is 120 s so a record can
outlast a switch. Client logs go to stderr (librdkafka's `debug` property via --prop).
Run it with $KSC_PYTHON (the venv install-test-deps.sh makes).
"""
import argparse
import sys
import time

import confluent_kafka
from confluent_kafka import KafkaError, Producer


def out(line):
    sys.stdout.write(line.replace("\n", " ").replace("\r", " ") + "\n")
    sys.stdout.flush()


def one_line(err):
    if isinstance(err, KafkaError):
        return "%s: %s" % (err.name(), err.str())
    return "%s: %s" % (type(err).__name__, err)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate-per-sec", type=float, default=0.0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--acks")
    ap.add_argument("--idempotence", choices=("true", "false", "default"), default="default")
    ap.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()

    out("VERSION confluent-kafka %s librdkafka %s" % (confluent_kafka.__version__, confluent_kafka.libversion()[0]))
    state = {"acked": 0, "errors": 0, "fatal": None}

    def on_error(err):
        # librdkafka reports transport and fatal errors here; only fatal ones stop the producer
        if err.fatal() and state["fatal"] is None:
            state["fatal"] = one_line(err)
        print("error_cb: %s (fatal=%s)" % (one_line(err), err.fatal()), file=sys.stderr, flush=True)

    conf = {
        "bootstrap.servers": a.bootstrap,
        "client.id": "ksc-test-producer-confluent",
        "enable.idempotence": a.idempotence != "false",
        "message.timeout.ms": 120000,
        "linger.ms": 5,
        "error_cb": on_error,
    }
    if a.acks is not None:
        conf["acks"] = a.acks
    for kv in a.prop:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error("--prop wants key=value, got %r" % kv)
        conf[k] = v
    p = Producer(conf)

    def on_delivery(i):
        def cb(err, msg):
            if err is not None:
                state["errors"] += 1
                if err.fatal() and state["fatal"] is None:
                    state["fatal"] = "%d %s" % (i, one_line(err))
                out("ERR %d %s" % (i, one_line(err)))
            else:
                state["acked"] += 1
                out("ACK %d %d %d" % (i, msg.partition(), msg.offset()))
        return cb

    t0 = time.monotonic()
    for n in range(a.count):
        if state["fatal"] is not None:
            break
        if a.rate_per_sec > 0:
            # serve delivery reports while waiting for the next record's turn
            while True:
                wait = t0 + n / a.rate_per_sec - time.monotonic()
                if wait <= 0:
                    break
                p.poll(min(wait, 0.1))
        i = a.start + n
        v = str(i).encode()
        while True:
            try:
                p.produce(a.topic, key=v, value=v, on_delivery=on_delivery(i))
                break
            except BufferError:  # local queue full: serve reports until there is room
                p.poll(0.1)
        p.poll(0)
    left = p.flush(150)
    if state["fatal"] is not None:
        out("FATAL %s" % state["fatal"])
        sys.exit(3)
    if left:
        out("FATAL %d records still undelivered after flush" % left)
        sys.exit(3)
    out("DONE acked=%d errors=%d" % (state["acked"], state["errors"]))
    sys.exit(0)


if __name__ == "__main__":
    main()
