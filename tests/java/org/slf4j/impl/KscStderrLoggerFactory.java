package org.slf4j.impl;

import java.util.Locale;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import org.slf4j.ILoggerFactory;
import org.slf4j.Logger;

/** Hands out {@link KscStderrLogger}s; the threshold is read once at start. */
public final class KscStderrLoggerFactory implements ILoggerFactory {
    static final int TRACE = 0, DEBUG = 1, INFO = 2, WARN = 3, ERROR = 4, OFF = 5;

    private final ConcurrentMap<String, Logger> loggers = new ConcurrentHashMap<>();
    private final int threshold = threshold();

    private static int threshold() {
        String level = System.getProperty("ksc.log");
        if (level == null) level = System.getenv("KSC_JAVA_LOG");
        if (level == null) return WARN;
        switch (level.trim().toLowerCase(Locale.ROOT)) {
            case "trace": return TRACE;
            case "debug": return DEBUG;
            case "info": return INFO;
            case "error": return ERROR;
            case "off": case "none": return OFF;
            default: return WARN;
        }
    }

    @Override
    public Logger getLogger(String name) {
        return loggers.computeIfAbsent(name, n -> new KscStderrLogger(n, threshold));
    }
}
