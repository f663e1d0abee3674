package org.slf4j.impl;

import org.slf4j.ILoggerFactory;
import org.slf4j.spi.LoggerFactoryBinder;

/**
 * slf4j 1.7 binding for the test clients: Kafka client logs go to stderr, one line each, at the level given by
 * the system property {@code ksc.log} or the environment variable {@code KSC_JAVA_LOG}
 * (trace|debug|info|warn|error|off; default warn).
 */
public final class StaticLoggerBinder implements LoggerFactoryBinder {
    /** Read by slf4j-api to check compatibility. */
    public static String REQUESTED_API_VERSION = "1.6.99";

    private static final StaticLoggerBinder SINGLETON = new StaticLoggerBinder();
    private final ILoggerFactory factory = new KscStderrLoggerFactory();

    private StaticLoggerBinder() {
    }

    public static StaticLoggerBinder getSingleton() {
        return SINGLETON;
    }

    @Override
    public ILoggerFactory getLoggerFactory() {
        return factory;
    }

    @Override
    public String getLoggerFactoryClassStr() {
        return KscStderrLoggerFactory.class.getName();
    }
}
