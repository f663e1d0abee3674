package kafkasidecar;

import static io.gatling.javaapi.core.CoreDsl.constantUsersPerSec;
import static io.gatling.javaapi.core.CoreDsl.exec;
import static io.gatling.javaapi.core.CoreDsl.scenario;
import static io.gatling.javaapi.core.CoreDsl.global;

import io.gatling.javaapi.core.ScenarioBuilder;
import io.gatling.javaapi.core.Simulation;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Fixed-rate produce latency, Gatling's open model: {@code rate} new virtual users a second, each
 * sends one record of {@code size} bytes (acks=all, idempotent, linger.ms=0) and ends. Latency is
 * measured from each user's start, which Gatling schedules regardless of earlier answers, so a slow
 * answer does not hide the ones queued behind it.
 *
 * <p>System properties (scripts/loadtools.sh sets them): {@code bootstrap} (127.0.0.1:9092),
 * {@code topic} (gatling), {@code label} (run), {@code rate} (records/s, 500), {@code seconds}
 * (measured, 20), {@code warmup} (seconds before them, 5), {@code size} (bytes, 512).
 *
 * <p>Prints one line {@code GATLING_RESULT label=... sent=... ok=... ko=... rate=... p50_us=...
 * p99_us=... p999_us=... max_us=...} after the run, with microsecond percentiles of the measured
 * part (Gatling's own report is in milliseconds).
 */
public class ProduceSimulation extends Simulation {
  private final String bootstrap = System.getProperty("bootstrap", "127.0.0.1:9092");
  private final String topic = System.getProperty("topic", "gatling");
  private final String label = System.getProperty("label", "run");
  private final int rate = Integer.getInteger("rate", 500);
  private final int seconds = Integer.getInteger("seconds", 20);
  private final int warmup = Integer.getInteger("warmup", 5);
  private final int size = Integer.getInteger("size", 512);

  private final KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps());
  private final KafkaSendAction.Latencies latencies =
      new KafkaSendAction.Latencies(rate * seconds + rate);
  // set when the simulation starts: sends from then + warmup on are measured
  private final AtomicLong measureFrom = new AtomicLong(Long.MAX_VALUE);

  private Properties producerProps() {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    p.put(ProducerConfig.LINGER_MS_CONFIG, "0");
    p.put(ProducerConfig.CLIENT_ID_CONFIG, "gatling-" + label);
    // bounded: a record not acknowledged in 30 s fails (KO) instead of holding the run open
    p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
    p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
    p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "20000");
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    return p;
  }

  {
    byte[] value = new byte[size];
    for (int i = 0; i < size; i++) {
      value[i] = (byte) ('a' + i % 26);
    }
    ScenarioBuilder scn =
        scenario("produce " + size + " B at " + rate + "/s (" + label + ")")
            .exec(
                exec(session -> {
                  measureFrom.compareAndSet(
                      Long.MAX_VALUE, System.nanoTime() + warmup * 1_000_000_000L);
                  return session;
                }),
                exec(KafkaSendAction.builder(producer, topic, value, measureFrom::get, latencies)));
    setUp(scn.injectOpen(constantUsersPerSec(rate).during(Duration.ofSeconds(warmup + seconds))))
        // every run bounded: users stop at warmup + seconds, stragglers are cut 40 s later
        .maxDuration(Duration.ofSeconds(warmup + seconds + 40L))
        .assertions(global().failedRequests().percent().lt(1.0));
  }

  @Override
  public void before() {
    // metadata (and the topic's auto-creation) before the first user, so no user waits for it
    producer.partitionsFor(topic);
  }

  @Override
  public void after() {
    producer.close(Duration.ofSeconds(10));
    long[] us = latencies.sorted();
    long ok = us.length;
    System.out.printf(
        "GATLING_RESULT label=%s sent=%d ok=%d ko=%d rate=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d%n",
        label,
        latencies.count() + latencies.failed(),
        ok,
        latencies.failed(),
        (latencies.count() + latencies.failed()) / (double) seconds,
        pct(us, 0.50),
        pct(us, 0.99),
        pct(us, 0.999),
        us.length == 0 ? 0 : us[us.length - 1]);
  }

  private static long pct(long[] sorted, double q) {
    if (sorted.length == 0) {
      return 0;
    }
    int i = (int) Math.ceil(q * sorted.length) - 1;
    return sorted[Math.max(0, Math.min(i, sorted.length - 1))];
  }
}
