package org.slf4j.impl;

import java.time.LocalTime;
import org.slf4j.helpers.FormattingTuple;
import org.slf4j.helpers.MarkerIgnoringBase;
import org.slf4j.helpers.MessageFormatter;

/** One line per event on stderr: {@code HH:mm:ss.SSS LEVEL [thread] ShortLoggerName: message}. */
final class KscStderrLogger extends MarkerIgnoringBase {
    private static final long serialVersionUID = 1L;
    private static final String[] LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};

    private final int threshold;
    private final String shortName;

    KscStderrLogger(String name, int threshold) {
        this.name = name;
        this.threshold = threshold;
        this.shortName = name.substring(name.lastIndexOf('.') + 1);
    }

    private boolean on(int level) {
        return level >= threshold;
    }

    private void emit(int level, String format, Object[] args) {
        if (!on(level)) return;
        FormattingTuple t = MessageFormatter.arrayFormat(format, args);
        write(level, t.getMessage(), t.getThrowable());
    }

    private void write(int level, String msg, Throwable error) {
        if (!on(level)) return;
        StringBuilder sb = new StringBuilder(128);
        String time = LocalTime.now().toString();
        sb.append(time.length() > 12 ? time.substring(0, 12) : time).append(' ').append(LEVELS[level])
          .append(" [").append(Thread.currentThread().getName()).append("] ").append(shortName).append(": ")
          .append(msg);
        synchronized (System.err) {
            System.err.println(sb);
            if (error != null) error.printStackTrace(System.err);
            System.err.flush();
        }
    }

    @Override public boolean isTraceEnabled() { return on(KscStderrLoggerFactory.TRACE); }
    @Override public void trace(String msg) { write(KscStderrLoggerFactory.TRACE, msg, null); }
    @Override public void trace(String f, Object a) { emit(KscStderrLoggerFactory.TRACE, f, new Object[] {a}); }
    @Override public void trace(String f, Object a, Object b) { emit(KscStderrLoggerFactory.TRACE, f, new Object[] {a, b}); }
    @Override public void trace(String f, Object... args) { emit(KscStderrLoggerFactory.TRACE, f, args); }
    @Override public void trace(String msg, Throwable t) { write(KscStderrLoggerFactory.TRACE, msg, t); }

    @Override public boolean isDebugEnabled() { return on(KscStderrLoggerFactory.DEBUG); }
    @Override public void debug(String msg) { write(KscStderrLoggerFactory.DEBUG, msg, null); }
    @Override public void debug(String f, Object a) { emit(KscStderrLoggerFactory.DEBUG, f, new Object[] {a}); }
    @Override public void debug(String f, Object a, Object b) { emit(KscStderrLoggerFactory.DEBUG, f, new Object[] {a, b}); }
    @Override public void debug(String f, Object... args) { emit(KscStderrLoggerFactory.DEBUG, f, args); }
    @Override public void debug(String msg, Throwable t) { write(KscStderrLoggerFactory.DEBUG, msg, t); }

    @Override public boolean isInfoEnabled() { return on(KscStderrLoggerFactory.INFO); }
    @Override public void info(String msg) { write(KscStderrLoggerFactory.INFO, msg, null); }
    @Override public void info(String f, Object a) { emit(KscStderrLoggerFactory.INFO, f, new Object[] {a}); }
    @Override public void info(String f, Object a, Object b) { emit(KscStderrLoggerFactory.INFO, f, new Object[] {a, b}); }
    @Override public void info(String f, Object... args) { emit(KscStderrLoggerFactory.INFO, f, args); }
    @Override public void info(String msg, Throwable t) { write(KscStderrLoggerFactory.INFO, msg, t); }

    @Override public boolean isWarnEnabled() { return on(KscStderrLoggerFactory.WARN); }
    @Override public void warn(String msg) { write(KscStderrLoggerFactory.WARN, msg, null); }
    @Override public void warn(String f, Object a) { emit(KscStderrLoggerFactory.WARN, f, new Object[] {a}); }
    @Override public void warn(String f, Object a, Object b) { emit(KscStderrLoggerFactory.WARN, f, new Object[] {a, b}); }
    @Override public void warn(String f, Object... args) { emit(KscStderrLoggerFactory.WARN, f, args); }
    @Override public void warn(String msg, Throwable t) { write(KscStderrLoggerFactory.WARN, msg, t); }

    @Override public boolean isErrorEnabled() { return on(KscStderrLoggerFactory.ERROR); }
    @Override public void error(String msg) { write(KscStderrLoggerFactory.ERROR, msg, null); }
    @Override public void error(String f, Object a) { emit(KscStderrLoggerFactory.ERROR, f, new Object[] {a}); }
    @Override public void error(String f, Object a, Object b) { emit(KscStderrLoggerFactory.ERROR, f, new Object[] {a, b}); }
    @Override public void error(String f, Object... args) { emit(KscStderrLoggerFactory.ERROR, f, args); }
    @Override public void error(String msg, Throwable t) { write(KscStderrLoggerFactory.ERROR, msg, t); }
}
