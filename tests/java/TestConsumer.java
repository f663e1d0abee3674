import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Pattern;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.AuthenticationException;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Test consumer in a group. Reports on stdout:
 * <pre>
 *   VERSION kafka-clients 3.9.1
 *   ASSIGNED t-0,t-1                    (after each rebalance; REVOKED/LOST likewise)
 *   MSG topic partition offset value    (one per record)
 *   ERR what ExceptionClass: message    (poll/commit errors, the consumer carries on)
 *   FATAL ExceptionClass: message       (then exit 3)
 *   STATS records=n distinct=d duplicates=x
 *   DONE received=d                     (d distinct (topic, value) pairs &gt;= --expect; exit 0)
 *   TIMEOUT received=d                  (--timeout-sec passed first; exit 4)
 * </pre>
 * Flags: --bootstrap host:port --group G (--topic T | --pattern REGEX) --expect N --timeout-sec S
 * [--prop key=value ...] [--txn-out T]. Offsets are committed synchronously after each poll that returned
 * records. {@code --prop group.protocol=consumer} makes it a KIP-848 member (kafka-clients 3.7+).
 * {@code --txn-out T} makes it an exactly-once application (read_committed): each poll's records are written to
 * T by a transactional producer ({@code transactional.id} = the group + "-txn") and the consumer's positions
 * committed in the same transaction ({@code sendOffsetsToTransaction}), never with commitSync.
 */
public final class TestConsumer {
    private static final String USAGE = "TestConsumer --bootstrap host:port --group G (--topic T | --pattern REGEX)"
        + " --expect N --timeout-sec S [--prop key=value ...] [--txn-out T]";

    public static void main(String[] argv) {
        ClientArgs a = ClientArgs.parse(argv,
            Set.of("bootstrap", "group", "topic", "pattern", "expect", "timeout-sec", "txn-out"), USAGE);
        String bootstrap = a.required("bootstrap");
        String group = a.required("group");
        if (a.has("topic") == a.has("pattern")) a.fail("give exactly one of --topic and --pattern");
        long expect = a.longValue("expect", -1);
        if (expect < 0) a.fail("--expect is required");
        double timeoutSec = a.doubleValue("timeout-sec", 60);

        ClientArgs.out("VERSION kafka-clients " + ClientArgs.kafkaClientsVersion());

        Properties p = new Properties();
        p.setProperty(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.setProperty(ConsumerConfig.CLIENT_ID_CONFIG, "ksc-test-consumer");
        p.setProperty(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.setProperty(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.setProperty(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        // The classic protocol's member timeouts; a KIP-848 member (--prop group.protocol=consumer, kafka-clients
        // 3.7+) gets them from the broker and refuses them as client config.
        if (!"consumer".equalsIgnoreCase(a.prop("group.protocol"))) {
            p.setProperty(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
            p.setProperty(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        }
        p.setProperty(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.setProperty(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        if (a.has("pattern")) p.setProperty(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "1000");
        String txnOut = a.has("txn-out") ? a.get("txn-out", "") : null;
        if (txnOut != null) p.setProperty(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        a.applyProps(p);
        KafkaProducer<String, String> txn = txnOut == null ? null : transactional(bootstrap, group + "-txn");

        ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                if (!parts.isEmpty()) ClientArgs.out("REVOKED " + names(parts));
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                ClientArgs.out("ASSIGNED " + names(parts));
            }

            @Override
            public void onPartitionsLost(Collection<TopicPartition> parts) {
                ClientArgs.out("LOST " + names(parts));
            }
        };

        Set<String> seen = new HashSet<>();
        long records = 0;
        long deadline = System.nanoTime() + (long) (timeoutSec * 1e9);
        int exit;
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p);
        try {
            if (a.has("pattern")) consumer.subscribe(Pattern.compile(a.get("pattern", "")), listener);
            else consumer.subscribe(Set.of(a.get("topic", "")), listener);
            while (true) {
                if (seen.size() >= expect) {
                    exit = 0;
                    break;
                }
                if (System.nanoTime() - deadline > 0) {
                    exit = 4;
                    break;
                }
                ConsumerRecords<String, String> batch;
                try {
                    batch = consumer.poll(Duration.ofMillis(200));
                } catch (AuthenticationException | AuthorizationException e) {
                    throw e;
                } catch (KafkaException e) {
                    ClientArgs.out("ERR poll " + ClientArgs.oneLine(e));
                    sleep(200);
                    continue;
                }
                for (ConsumerRecord<String, String> r : batch) {
                    records++;
                    seen.add(r.topic() + "\u0000" + r.value());
                    ClientArgs.out("MSG " + r.topic() + " " + r.partition() + " " + r.offset() + " " + r.value());
                }
                if (!batch.isEmpty() && txn != null) {
                    commitInTransaction(txn, consumer, batch, txnOut);
                } else if (!batch.isEmpty()) {
                    try {
                        consumer.commitSync(Duration.ofSeconds(10));
                    } catch (AuthenticationException | AuthorizationException e) {
                        throw e;
                    } catch (KafkaException e) {
                        ClientArgs.out("ERR commit " + ClientArgs.oneLine(e));
                    }
                }
            }
        } catch (KafkaException e) {
            ClientArgs.out("FATAL " + ClientArgs.oneLine(e));
            consumer.close(Duration.ZERO);
            System.exit(3);
            return;
        }
        ClientArgs.out("STATS records=" + records + " distinct=" + seen.size() + " duplicates=" + (records - seen.size()));
        try {
            consumer.close(Duration.ofSeconds(5)); // leave the group so the next member joins quickly
        } catch (KafkaException e) {
            ClientArgs.out("ERR close " + ClientArgs.oneLine(e));
        }
        if (txn != null) txn.close(Duration.ofSeconds(5));
        ClientArgs.out((exit == 0 ? "DONE" : "TIMEOUT") + " received=" + seen.size());
        System.exit(exit);
    }

    private static KafkaProducer<String, String> transactional(String bootstrap, String transactionalId) {
        Properties p = new Properties();
        p.setProperty(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.setProperty(ProducerConfig.CLIENT_ID_CONFIG, "ksc-test-consumer-txn");
        p.setProperty(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        p.setProperty(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.setProperty(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        producer.initTransactions();
        return producer;
    }

    /** The batch's records to {@code out} and the consumer's positions, in one transaction (FATAL if it fails:
     * an exactly-once application that cannot commit stops rather than read on). */
    private static void commitInTransaction(KafkaProducer<String, String> producer,
            KafkaConsumer<String, String> consumer, ConsumerRecords<String, String> batch, String out) {
        Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
        producer.beginTransaction();
        for (ConsumerRecord<String, String> r : batch) {
            producer.send(new ProducerRecord<>(out, r.key(), r.value()));
            next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
        }
        producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
        producer.commitTransaction();
    }

    private static String names(Collection<TopicPartition> parts) {
        Set<String> s = new TreeSet<>();
        for (TopicPartition tp : parts) s.add(tp.topic() + "-" + tp.partition());
        return s.isEmpty() ? "-" : String.join(",", s);
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
