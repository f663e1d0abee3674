'use strict'
// What the kafkajs test clients share: the flags and stdout protocol of tests/java/TestProducer.java
// and TestConsumer.java, so tests/common/tools.rs drives every client the same way.

const { logLevel } = require('kafkajs')

function out(line) {
  process.stdout.write(String(line).replace(/[\r\n]/g, ' ') + '\n')
}

function oneLine(e) {
  const name = (e && e.name) || 'Error'
  const msg = String((e && e.message) || e).replace(/[\r\n]/g, ' ')
  return `${name}: ${msg}`
}

// --name value pairs; --prop may repeat
function parseArgs(argv, known, usage) {
  const a = { prop: [] }
  for (let k = 0; k < argv.length; k += 2) {
    const flag = argv[k]
    const value = argv[k + 1]
    const name = flag.startsWith('--') ? flag.slice(2) : null
    if (!name || !known.includes(name) || value === undefined) {
      process.stderr.write(`bad argument ${flag}\nusage: ${usage}\n`)
      process.exit(2)
    }
    if (name === 'prop') a.prop.push(value)
    else a[name] = value
  }
  return a
}

// KSC_JS_LOG=debug|info|warn|error (default warn); logs go to stderr
function logConfig() {
  const level = { debug: logLevel.DEBUG, info: logLevel.INFO, warn: logLevel.WARN, error: logLevel.ERROR }[
    (process.env.KSC_JS_LOG || 'warn').toLowerCase()
  ]
  return {
    logLevel: level === undefined ? logLevel.WARN : level,
    logCreator: () => ({ namespace, level, label, log }) => {
      const { message, ...extra } = log
      process.stderr.write(`${new Date().toISOString()} ${label} [${namespace}] ${message} ${JSON.stringify(extra)}\n`)
    },
  }
}

function version() {
  return require('kafkajs/package.json').version
}

module.exports = { out, oneLine, parseArgs, logConfig, version }
