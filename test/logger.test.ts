/**
 * The per-request logger: made lazily (only when a line is actually written), with the request's bindings and
 * the redaction of credentials intact.
 */
import Fastify from 'fastify'
import t from 'tap'
import { lazyChildLogger, loggerOptions } from '../src/server/logger.js'

function appLogging(level: string) {
  const lines: Record<string, unknown>[] = []
  const stream = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }
  const app = Fastify({ logger: { ...(loggerOptions(level) as object), stream } })
  return { log: app.log, lines }
}

t.test('a request logger writes nothing below its level, and its lines carry the request bindings', async (t) => {
  const { log, lines } = appLogging('warn')
  const child = lazyChildLogger(log, { reqId: 'req-7' }, {})
  t.equal(child.level, 'warn')
  child.info('not written')
  child.debug({ a: 1 }, 'not written')
  t.equal(lines.length, 0)
  child.warn({ route: 'api' }, 'upstream failed')
  child.error('broken')
  t.equal(lines.length, 2)
  t.match(lines[0], { reqId: 'req-7', route: 'api', msg: 'upstream failed', level: 40 })
  t.match(lines[1], { reqId: 'req-7', msg: 'broken', level: 50 })
  const grandchild = child.child({ step: 'auth' })
  grandchild.warn('deeper')
  t.match(lines[2], { reqId: 'req-7', step: 'auth', msg: 'deeper' })
})

t.test('a request logger redacts credentials like the root logger', async (t) => {
  const { log, lines } = appLogging('info')
  const child = lazyChildLogger(log, { reqId: 'req-8' }, {})
  child.info({ req: { headers: { authorization: 'Bearer secret-token', cookie: 'sg_access=secret-cookie' } }, password: 'pw-secret' }, 'incoming')
  t.equal(lines.length, 1)
  const text = JSON.stringify(lines[0])
  for (const secret of ['secret-token', 'secret-cookie', 'pw-secret']) t.notOk(text.includes(secret), `no ${secret}`)
  t.match(lines[0], { reqId: 'req-8', password: '[redacted]' })
})

t.test('the level can be changed on a request logger alone', async (t) => {
  const { log, lines } = appLogging('warn')
  const child = lazyChildLogger(log, { reqId: 'req-9' }, {})
  child.level = 'debug'
  child.debug('now written')
  t.equal(lines.length, 1)
  t.equal(log.level, 'warn', 'the root logger keeps its level')
  log.debug('still not written')
  t.equal(lines.length, 1)
})

t.test('with logging off, requests are still served', async (t) => {
  const app = Fastify({ logger: false, childLoggerFactory: lazyChildLogger })
  app.get('/', async (request) => {
    request.log.warn('nowhere')
    return { ok: true }
  })
  const res = await app.inject('/')
  t.equal(res.statusCode, 200)
  t.same(res.json(), { ok: true })
})

t.test("a route's own logLevel below the root's is honoured", async (t) => {
  const { log, lines } = appLogging('warn')
  const child = lazyChildLogger(log, { reqId: 'req-10' }, { level: 'debug' })
  child.debug('route debug line')
  t.equal(lines.length, 1)
  t.match(lines[0], { reqId: 'req-10', msg: 'route debug line' })
})
