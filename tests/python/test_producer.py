#!/usr/bin/env python3
"""Test producer on kafka-python, same flags and stdout protocol as tests/java/TestProducer.java.

    VERSION kafka-python 3.0.12
    ACK i partition offset              one per acknowledged record
    ERR i ExceptionClass: message       one per failed record
    FATAL [i] ExceptionClass: message   then exit 3
    DONE acked=n errors=m               then exit 0

Flags: --bootstrap host:port --topic T --count N --rate-per-sec R (0 = as fast as possible) [--start S]
[--acks all|1|0] [--idempotence true|false|default] [--prop key=value ...] (kafka-python option names, dots
or underscores: --prop linger_ms=5, --prop security.protocol=SASL_PLAINTEXT; numbers are parsed).
Otherwise kafka-python's own defaults apply. Client logs go to stderr (level: KSC_PY_LOG, default WARNING).
Run it with $KSC_PYTHON (the venv install-test-deps.sh makes).
"""
import argparse
import logging
import os
import sys
import threading
import time

import kafka
from kafka import KafkaProducer
from kafka import errors as kerr

_out_lock = threading.Lock()


def out(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def one_line(e):
    name = type(e).__name__
    msg = str(e).replace("\n", " ").replace("\r", " ")
    if msg.startswith(name + ":"):  # kafka-python's errors already start with their class name
        msg = msg[len(name) + 1:].lstrip()
    return "%s: %s" % (name, msg)


FATAL_ERRORS = tuple(
    getattr(kerr, n)
    for n in (
        "ProducerFencedError",
        "OutOfOrderSequenceNumberError",
        "InvalidProducerIdMappingError",
        "UnsupportedVersionError",
        "AuthenticationFailedError",
        "SaslAuthenticationFailedError",
        "AuthorizationError",
        "TopicAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
    )
    if hasattr(kerr, n)
)


def prop_value(v):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


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

    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, os.environ.get("KSC_PY_LOG", "WARNING").upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    out("VERSION kafka-python %s" % kafka.__version__)

    conf = {"bootstrap_servers": a.bootstrap, "client_id": "ksc-test-producer-py"}
    if a.acks is not None:
        conf["acks"] = a.acks if a.acks == "all" else int(a.acks)
    if a.idempotence != "default":
        conf["enable_idempotence"] = a.idempotence == "true"
    for kv in a.prop:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error("--prop wants key=value, got %r" % kv)
        conf[k.replace(".", "_")] = prop_value(v)

    counts = {"acked": 0, "errors": 0}
    fatal = []
    lock = threading.Lock()

    def on_ack(i):
        def cb(md):
            with lock:
                counts["acked"] += 1
            out("ACK %d %d %d" % (i, md.partition, md.offset))
        return cb

    def on_err(i):
        def cb(e):
            with lock:
                counts["errors"] += 1
                if isinstance(e, FATAL_ERRORS) and not fatal:
                    fatal.append("%d %s" % (i, one_line(e)))
            out("ERR %d %s" % (i, one_line(e)))
        return cb

    try:
        producer = KafkaProducer(**conf)
    except Exception as e:  # bad config, or no broker reachable within its bootstrap timeout
        out("FATAL %s" % one_line(e))
        sys.exit(3)

    t0 = time.monotonic()
    try:
        for n in range(a.count):
            if fatal:
                break
            if a.rate_per_sec > 0:
                wait = t0 + n / a.rate_per_sec - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            i = a.start + n
            v = str(i).encode()
            f = producer.send(a.topic, key=v, value=v)
            f.add_callback(on_ack(i))
            f.add_errback(on_err(i))
        producer.flush()
    except Exception as e:  # send() itself raising (metadata timeout, closed or failed producer)
        if not fatal:
            fatal.append(one_line(e))
    if fatal:
        out("FATAL %s" % fatal[0])
        try:
            producer.close(timeout=0)
        finally:
            os._exit(3)
    producer.close(timeout=30)
    out("DONE acked=%d errors=%d" % (counts["acked"], counts["errors"]))
    sys.exit(0)


if __name__ == "__main__":
    main()
