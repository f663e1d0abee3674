import java.time.Duration;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.errors.AuthenticationException;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.InvalidPidMappingException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Test producer. Sends values/keys "i" for i = start..start+count-1 at a steady rate and reports on stdout:
 * <pre>
 *   VERSION kafka-clients 3.9.1
 *   ACK i partition offset            (one per acknowledged record, in ack order)
 *   ERR i ExceptionClass: message     (one per failed record)
 *   FATAL [i] ExceptionClass: message (then exit 3)
 *   DONE acked=n errors=m             (then exit 0)
 * </pre>
 * Flags: --bootstrap host:port --topic T --count N --rate-per-sec R (0 = as fast as possible) [--start S]
 * [--acks all|1|0] [--idempotence true|false|default] [--prop key=value ...]. Client logs go to stderr
 * (level: KSC_JAVA_LOG, default warn).
 */
public final class TestProducer {
    private static final String USAGE = "TestProducer --bootstrap host:port --topic T --count N --rate-per-sec R"
        + " [--start S] [--acks all|1|0] [--idempotence true|false|default] [--prop key=value ...]";

    public static void main(String[] argv) throws Exception {
        ClientArgs a = ClientArgs.parse(argv,
            Set.of("bootstrap", "topic", "count", "rate-per-sec", "start", "acks", "idempotence"), USAGE);
        String bootstrap = a.required("bootstrap");
        String topic = a.required("topic");
        long count = a.longValue("count", -1);
        if (count < 0) a.fail("--count is required");
        double rate = a.doubleValue("rate-per-sec", 0);
        long start = a.longValue("start", 0);
        String idempotence = a.get("idempotence", "default");
        if (!Set.of("true", "false", "default").contains(idempotence)) a.fail("--idempotence true|false|default");

        ClientArgs.out("VERSION kafka-clients " + ClientArgs.kafkaClientsVersion());

        Properties p = new Properties();
        p.setProperty(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.setProperty(ProducerConfig.CLIENT_ID_CONFIG, "ksc-test-producer");
        p.setProperty(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.setProperty(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        // long enough to ride out a proxy switching clusters; retries keep their default (Integer.MAX_VALUE)
        p.setProperty(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        if (a.has("acks")) p.setProperty(ProducerConfig.ACKS_CONFIG, a.get("acks", "all"));
        if (!idempotence.equals("default")) p.setProperty(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, idempotence);
        a.applyProps(p);

        AtomicInteger acked = new AtomicInteger();
        AtomicInteger errors = new AtomicInteger();
        AtomicReference<String> fatal = new AtomicReference<>();
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        try {
            // fetch metadata first, so the rate schedule starts when records can actually be sent
            producer.partitionsFor(topic);
        } catch (KafkaException e) {
            // the sends below will report it
        }
        long t0 = System.nanoTime();
        try {
            for (long n = 0; n < count && fatal.get() == null; n++) {
                if (rate > 0) {
                    long due = t0 + (long) (n * 1e9 / rate);
                    long wait = due - System.nanoTime();
                    if (wait > 0) Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
                }
                final long i = start + n;
                String v = Long.toString(i);
                producer.send(new ProducerRecord<>(topic, v, v), (md, e) -> {
                    if (e == null) {
                        acked.incrementAndGet();
                        ClientArgs.out("ACK " + i + " " + md.partition() + " " + md.offset());
                    } else {
                        errors.incrementAndGet();
                        ClientArgs.out("ERR " + i + " " + ClientArgs.oneLine(e));
                        if (isFatal(e)) fatal.compareAndSet(null, i + " " + ClientArgs.oneLine(e));
                    }
                });
            }
            producer.flush();
        } catch (KafkaException e) {
            // send() itself throws only for non-retriable states (fatal producer errors, closed producer, ...)
            fatal.compareAndSet(null, ClientArgs.oneLine(e));
        }
        if (fatal.get() != null) {
            ClientArgs.out("FATAL " + fatal.get());
            producer.close(Duration.ZERO);
            System.exit(3);
        }
        producer.close(Duration.ofSeconds(30));
        ClientArgs.out("DONE acked=" + acked.get() + " errors=" + errors.get());
        System.exit(0);
    }

    /** Errors after which this producer instance can't go on (KafkaProducer's own fatal set, plus auth). */
    private static boolean isFatal(Exception e) {
        return e instanceof ProducerFencedException
            || e instanceof OutOfOrderSequenceException
            || e instanceof InvalidPidMappingException
            || e instanceof UnsupportedVersionException
            || e instanceof AuthenticationException
            || e instanceof AuthorizationException;
    }
}
