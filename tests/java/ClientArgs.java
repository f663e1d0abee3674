import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

/**
 * Tiny flag parser shared by the test clients: {@code --name value} or {@code --name=value}; {@code --prop k=v}
 * may repeat and ends up in {@link #props}. Unknown or value-less flags exit with status 2.
 */
final class ClientArgs {
    private final Map<String, String> values = new HashMap<>();
    final List<String[]> props = new ArrayList<>();
    private final String usage;

    private ClientArgs(String usage) {
        this.usage = usage;
    }

    static ClientArgs parse(String[] argv, Set<String> known, String usage) {
        ClientArgs a = new ClientArgs(usage);
        for (int i = 0; i < argv.length; i++) {
            String arg = argv[i];
            if (arg.equals("-h") || arg.equals("--help")) {
                System.out.println("usage: " + usage);
                System.exit(0);
            }
            if (!arg.startsWith("--")) a.fail("unexpected argument: " + arg);
            String name = arg.substring(2);
            String value;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            } else {
                if (i + 1 >= argv.length) a.fail("missing value for --" + name);
                value = argv[++i];
            }
            if (name.equals("prop")) {
                int e = value.indexOf('=');
                if (e <= 0) a.fail("--prop wants key=value, got: " + value);
                a.props.add(new String[] {value.substring(0, e), value.substring(e + 1)});
            } else if (known.contains(name)) {
                a.values.put(name, value);
            } else {
                a.fail("unknown flag --" + name);
            }
        }
        return a;
    }

    void fail(String why) {
        System.err.println(why);
        System.err.println("usage: " + usage);
        System.exit(2);
    }

    String get(String name, String dflt) {
        return values.getOrDefault(name, dflt);
    }

    String required(String name) {
        String v = values.get(name);
        if (v == null) fail("--" + name + " is required");
        return v;
    }

    long longValue(String name, long dflt) {
        String v = values.get(name);
        if (v == null) return dflt;
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            fail("--" + name + " wants a number, got: " + v);
            return dflt;
        }
    }

    double doubleValue(String name, double dflt) {
        String v = values.get(name);
        if (v == null) return dflt;
        try {
            return Double.parseDouble(v);
        } catch (NumberFormatException e) {
            fail("--" + name + " wants a number, got: " + v);
            return dflt;
        }
    }

    boolean has(String name) {
        return values.containsKey(name);
    }

    /** The last --prop value given for {@code key}, or null. */
    String prop(String key) {
        String v = null;
        for (String[] kv : props) if (kv[0].equals(key)) v = kv[1];
        return v;
    }

    /** Applies the --prop overrides last, so they win over the clients' own defaults. */
    void applyProps(Properties p) {
        for (String[] kv : props) p.setProperty(kv[0], kv[1]);
    }

    /** Every protocol line goes through here: one line, flushed at once. */
    static void out(String line) {
        synchronized (System.out) {
            System.out.println(line);
            System.out.flush();
        }
    }

    /**
     * The kafka-clients version on the classpath, from the jar's {@code kafka/kafka-version.properties} (what
     * AppInfoParser reads; that class moved to an internals package in 4.0, so it is not used here).
     */
    static String kafkaClientsVersion() {
        Properties v = new Properties();
        try (InputStream in = ClientArgs.class.getClassLoader().getResourceAsStream("kafka/kafka-version.properties")) {
            if (in != null) v.load(in);
        } catch (IOException e) {
            // unknown, below
        }
        return v.getProperty("version", "unknown");
    }

    static String oneLine(Throwable t) {
        String m = String.valueOf(t.getMessage());
        return t.getClass().getName() + ": " + m.replace('\n', ' ').replace('\r', ' ');
    }
}
