'use strict'
// Test producer on kafkajs, same flags and stdout protocol as tests/java/TestProducer.java:
//   VERSION kafkajs 2.2.4
//   ACK i partition offset             one per acknowledged record
//   ERR i ExceptionClass: message      one per failed record
//   FATAL [i] ExceptionClass: message  then exit 3
//   DONE acked=n errors=m              then exit 0
// Flags: --bootstrap host:port --topic T --count N --rate-per-sec R [--start S] [--acks all|1|0]
// [--idempotence true|false|default] [--prop metadata.max.age.ms=N]. "default" is kafkajs's idempotent producer as its docs advise it:
// idempotent: true, maxInFlightRequests: 1 (kafkajs's own default is not idempotent). Each record is one
// send() call, not awaited, so records keep flowing at the rate while earlier ones wait for their acks.

const { Kafka } = require('kafkajs')
const { out, oneLine, parseArgs, logConfig, version } = require('./common')

const USAGE = 'producer.js --bootstrap host:port --topic T --count N --rate-per-sec R [--start S] [--acks all|1|0] [--idempotence true|false|default] [--prop metadata.max.age.ms=N]'
// errors after which this producer can't go on
const FATAL = new Set([
  'KafkaJSNonRetriableError',
  'KafkaJSSASLAuthenticationError',
])
const FATAL_TYPES = new Set([
  'OUT_OF_ORDER_SEQUENCE_NUMBER',
  'INVALID_PRODUCER_EPOCH',
  'INVALID_PRODUCER_ID_MAPPING',
  'UNSUPPORTED_VERSION',
  'TOPIC_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
])

async function main() {
  const a = parseArgs(process.argv.slice(2),
    ['bootstrap', 'topic', 'count', 'rate-per-sec', 'start', 'acks', 'idempotence', 'prop'], USAGE)
  if (!a.bootstrap || !a.topic || a.count === undefined) {
    process.stderr.write(`usage: ${USAGE}\n`)
    process.exit(2)
  }
  // the one property taken: metadata.max.age.ms (kafkajs's metadataMaxAge)
  let metadataMaxAge
  for (const kv of a.prop) {
    const [k, v] = kv.split('=', 2)
    if (k !== 'metadata.max.age.ms' || !(Number(v) > 0)) {
      process.stderr.write(`unsupported --prop ${kv} (only metadata.max.age.ms=N)\n`)
      process.exit(2)
    }
    metadataMaxAge = Number(v)
  }
  const count = Number(a.count)
  const rate = Number(a['rate-per-sec'] || 0)
  const start = Number(a.start || 0)
  const acks = a.acks === undefined || a.acks === 'all' ? -1 : Number(a.acks)
  const idempotent = (a.idempotence || 'default') !== 'false'
  out(`VERSION kafkajs ${version()}`)

  const kafka = new Kafka({
    clientId: 'ksc-test-producer-js',
    brokers: a.bootstrap.split(','),
    ...logConfig(),
  })
  const producer = kafka.producer({
    idempotent,
    maxInFlightRequests: idempotent ? 1 : undefined,
    allowAutoTopicCreation: true,
    ...(metadataMaxAge ? { metadataMaxAge } : {}),
  })
  try {
    await producer.connect()
  } catch (e) {
    out(`FATAL ${oneLine(e)}`)
    process.exit(3)
  }

  let acked = 0
  let errors = 0
  let fatal = null
  const pending = []
  const t0 = Date.now()
  for (let n = 0; n < count && fatal === null; n++) {
    if (rate > 0) {
      const wait = t0 + (n * 1000) / rate - Date.now()
      if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    }
    const i = start + n
    const v = String(i)
    pending.push(
      producer
        .send({ topic: a.topic, acks, messages: [{ key: v, value: v }] })
        .then((md) => {
          acked++
          out(`ACK ${i} ${md[0].partition} ${md[0].baseOffset}`)
        })
        .catch((e) => {
          errors++
          out(`ERR ${i} ${oneLine(e)}`)
          if (fatal === null && (FATAL.has(e.name) || FATAL_TYPES.has(e.type))) fatal = `${i} ${oneLine(e)}`
        })
    )
  }
  await Promise.all(pending)
  if (fatal !== null) {
    out(`FATAL ${fatal}`)
    process.exit(3)
  }
  await producer.disconnect()
  out(`DONE acked=${acked} errors=${errors}`)
  process.exit(0)
}

main().catch((e) => {
  out(`FATAL ${oneLine(e)}`)
  process.exit(3)
})
