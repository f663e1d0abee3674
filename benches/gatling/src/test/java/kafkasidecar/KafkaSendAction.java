package kafkasidecar;

import com.typesafe.scalalogging.Logger;
import io.gatling.commons.stats.KO$;
import io.gatling.commons.stats.OK$;
import io.gatling.commons.stats.Status;
import io.gatling.core.action.Action;
import io.gatling.core.session.Session;
import io.gatling.core.stats.StatsEngine;
import io.gatling.core.structure.ScenarioContext;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.function.LongSupplier;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.slf4j.LoggerFactory;
import scala.Option;

/**
 * One Kafka produce per virtual user step, recorded in Gatling's report as a request.
 *
 * <p>No Kafka protocol plugin for Gatling is served by Maven Central here, so this is the smallest
 * custom action: {@code producer.send} with a callback, which logs the response to Gatling's stats
 * engine and hands the virtual user back to its own event loop. The send never blocks a Gatling
 * thread (except when the producer's buffer is full), so the open injection model keeps its
 * schedule and latency includes any queueing (no coordinated omission).
 *
 * <p>Gatling records milliseconds; {@link Latencies} keeps microseconds for the script's ratios.
 */
final class KafkaSendAction implements Action {
  private static final Logger LOGGER =
      Logger.apply(LoggerFactory.getLogger(KafkaSendAction.class));

  private final KafkaProducer<byte[], byte[]> producer;
  private final String topic;
  private final byte[] value;
  private final LongSupplier measureFromNanos;
  private final Latencies latencies;
  private final StatsEngine stats;
  private final Action next;

  KafkaSendAction(
      KafkaProducer<byte[], byte[]> producer,
      String topic,
      byte[] value,
      LongSupplier measureFromNanos,
      Latencies latencies,
      StatsEngine stats,
      Action next) {
    this.producer = producer;
    this.topic = topic;
    this.value = value;
    this.measureFromNanos = measureFromNanos;
    this.latencies = latencies;
    this.stats = stats;
    this.next = next;
  }

  @Override
  public String name() {
    return "kafka-send";
  }

  @Override
  public Logger logger() {
    return LOGGER;
  }

  // Scala's StrictLogging initialises its val through this setter; the field above is static instead.
  @Override
  public void com$typesafe$scalalogging$StrictLogging$_setter_$logger_$eq(Logger logger) {}

  @Override
  public void execute(Session session) {
    long startMs = System.currentTimeMillis();
    long startNs = System.nanoTime();
    // records sent during the warm-up go to the report under their own name and not into the figures
    boolean measured = startNs >= measureFromNanos.getAsLong();
    String request = measured ? "produce" : "produce (warm-up)";
    try {
      producer.send(
          new ProducerRecord<>(topic, value),
          (metadata, error) -> {
            long micros = (System.nanoTime() - startNs) / 1_000;
            long endMs = System.currentTimeMillis();
            Status status = error == null ? OK$.MODULE$ : KO$.MODULE$;
            Option<String> message =
                error == null ? Option.empty() : Option.apply(error.toString());
            stats.logResponse(
                session.scenario(),
                session.groups(),
                request,
                startMs,
                endMs,
                status,
                Option.empty(),
                message);
            if (measured) {
              latencies.record(micros, error == null);
            }
            Session after = error == null ? session : session.markAsFailed();
            // the callback runs on the producer's I/O thread; Gatling wants the user on its event loop
            session.eventLoop().execute(() -> next.$bang(after));
          });
    } catch (RuntimeException e) {
      stats.logResponse(
          session.scenario(),
          session.groups(),
          request,
          startMs,
          System.currentTimeMillis(),
          KO$.MODULE$,
          Option.empty(),
          Option.apply(e.toString()));
      next.$bang(session.markAsFailed());
    }
  }

  /** The Java DSL's handle on this action ({@code exec(KafkaSendAction.builder(...))}). */
  static io.gatling.javaapi.core.ActionBuilder builder(
      KafkaProducer<byte[], byte[]> producer,
      String topic,
      byte[] value,
      LongSupplier measureFromNanos,
      Latencies latencies) {
    io.gatling.core.action.builder.ActionBuilder scala =
        (ScenarioContext ctx, Action next) ->
            new KafkaSendAction(
                producer,
                topic,
                value,
                measureFromNanos,
                latencies,
                ctx.coreComponents().statsEngine(),
                next);
    return () -> scala;
  }

  /** Microsecond latencies of measured sends, bounded: samples past the capacity are counted only. */
  static final class Latencies {
    private final AtomicLongArray micros;
    private final AtomicLong next = new AtomicLong();
    private final AtomicLong failed = new AtomicLong();

    Latencies(int capacity) {
      micros = new AtomicLongArray(capacity);
    }

    void record(long us, boolean ok) {
      if (!ok) {
        failed.incrementAndGet();
        return;
      }
      long i = next.getAndIncrement();
      if (i < micros.length()) {
        micros.set((int) i, us);
      }
    }

    long failed() {
      return failed.get();
    }

    long count() {
      return next.get();
    }

    /** Sorted copy of the kept samples. */
    long[] sorted() {
      int n = (int) Math.min(next.get(), micros.length());
      long[] out = new long[n];
      for (int i = 0; i < n; i++) {
        out[i] = micros.get(i);
      }
      java.util.Arrays.sort(out);
      return out;
    }
  }
}
