'use strict'
// Test consumer (consumer group) on kafkajs, same flags and stdout protocol as tests/java/TestConsumer.java:
//   VERSION kafkajs 2.2.4
//   ASSIGNED t-0,t-1                   after each group join
//   MSG topic partition offset value   one per record
//   ERR what ExceptionClass: message   the consumer carries on
//   DONE received=d                    d distinct (topic, value) pairs >= --expect; exit 0
//   TIMEOUT received=d                 --timeout-sec passed first; exit 4
// Flags: --bootstrap host:port --group G --topic T --expect N --timeout-sec S. Offsets are kafkajs's
// auto-commit (after each batch); a new group starts at the earliest offset.

const { Kafka } = require('kafkajs')
const { out, oneLine, parseArgs, logConfig, version } = require('./common')

const USAGE = 'consumer.js --bootstrap host:port --group G --topic T --expect N --timeout-sec S'

async function main() {
  const a = parseArgs(process.argv.slice(2), ['bootstrap', 'group', 'topic', 'expect', 'timeout-sec', 'prop'], USAGE)
  if (!a.bootstrap || !a.group || !a.topic || a.expect === undefined) {
    process.stderr.write(`usage: ${USAGE}\n`)
    process.exit(2)
  }
  const expect = Number(a.expect)
  const timeoutMs = Number(a['timeout-sec'] || 60) * 1000
  out(`VERSION kafkajs ${version()}`)

  const kafka = new Kafka({ clientId: 'ksc-test-consumer-js', brokers: a.bootstrap.split(','), ...logConfig() })
  const consumer = kafka.consumer({ groupId: a.group, sessionTimeout: 10000, heartbeatInterval: 1000 })
  const seen = new Set()
  let finished = false
  const finish = async (line, code) => {
    if (finished) return
    finished = true
    out(line)
    try {
      await consumer.disconnect()
    } finally {
      process.exit(code)
    }
  }
  const timer = setTimeout(() => finish(`TIMEOUT received=${seen.size}`, 4), timeoutMs)
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    const parts = []
    for (const [t, ps] of Object.entries(e.payload.memberAssignment)) for (const p of ps) parts.push(`${t}-${p}`)
    out(`ASSIGNED ${parts.join(',')}`)
  })
  consumer.on(consumer.events.CRASH, (e) => out(`ERR crash ${oneLine(e.payload.error)}`))
  await consumer.connect()
  await consumer.subscribe({ topic: a.topic, fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      const value = message.value === null ? '' : message.value.toString()
      out(`MSG ${topic} ${partition} ${message.offset} ${value}`)
      seen.add(`${topic}\u0000${value}`)
      if (seen.size >= expect) {
        clearTimeout(timer)
        // disconnect from outside the handler: kafkajs waits for the running batch to finish
        setImmediate(() => finish(`DONE received=${seen.size}`, 0))
      }
    },
  })
}

main().catch((e) => {
  out(`FATAL ${oneLine(e)}`)
  process.exit(3)
})
