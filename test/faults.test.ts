/**
 * Faults under load: Redis (append-only) stopped and restarted while clients log in, refresh and call a
 * protected route; an upstream that dies in the middle of a response; SIGTERM to the real process while
 * requests are in flight. Real redis-server, real upstreams, real HTTP. Every wait is bounded and event-based;
 * nothing asserts on how long something took.
 */
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { stringify } from 'yaml'
import { CookieClient, send, type Reply } from './helpers/client.js'
import { startGateway, writeKeys, writeUsers } from './helpers/gateway.js'
import { freePort, startRedis } from './helpers/redis-server.js'
import { startUpstream, type RecordedRequest } from './helpers/upstream.js'

const root = resolve(import.meta.dirname, '..')
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Polls `check` (bounded: `tries` × 50 ms) until it holds. */
async function eventually(check: () => boolean | Promise<boolean>, tries = 300): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    try {
      if (await check()) return true
    } catch {
      // not yet
    }
    await sleep(50)
  }
  return false
}

t.before(() => {
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore' })
})

t.test('Redis (append-only) stopped and restarted under load: 503 only, nothing unauthenticated forwarded, no session lost', async (t) => {
  const redis = await startRedis({ appendonly: true })
  t.teardown(() => redis.stop())
  const ISSUER = 'https://gateway.test'
  const AUDIENCE = 'test-api'
  /** Every sid the test was given at a login: the only sessions whose tokens may reach the upstream. */
  const ourSids = new Set<string>()
  const badForwards: string[] = []
  let jwks: ReturnType<typeof createLocalJWKSet> | undefined
  // The upstream verifies every request it receives against the gateway's JWKS before answering (allowing 2 s
  // for the time between the gateway's check and its own; the gateway itself has no clock tolerance here).
  const upstream = await startUpstream((_req: IncomingMessage, res: ServerResponse, recorded: RecordedRequest) => {
    const token = /^Bearer (.+)$/.exec(recorded.headers.authorization ?? '')?.[1]
    const check = token === undefined || jwks === undefined
      ? Promise.reject(new Error('no Bearer'))
      : jwtVerify(token, jwks, { issuer: ISSUER, audience: AUDIENCE, typ: 'at+jwt', clockTolerance: 2 }).then(({ payload }) => {
          if (!ourSids.has(payload.sid as string)) throw new Error(`unknown sid ${String(payload.sid)}`)
        })
    check
      .catch((err: Error) => badForwards.push(`${recorded.url}: ${err.message}`))
      .finally(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'))
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway({
    redisUrl: redis.url,
    config: {
      tokens: { accessTtl: '2s', refreshAhead: '1s', reuseGrace: '10s', clockTolerance: 0 },
      routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }],
    },
  })
  t.teardown(() => gw.close())
  jwks = createLocalJWKSet((await send(`${gw.url}/.well-known/jwks.json`)).json)

  type Phase = 'before' | 'outage' | 'after'
  type Kind = 'cookie-api' | 'bearer-api' | 'cookie-refresh' | 'token-refresh' | 'login'
  let phase: Phase = 'before'
  let stop = false
  const log: { phase: Phase; kind: Kind; reply: Reply }[] = []
  const record = (kind: Kind, reply: Reply) => {
    log.push({ phase, kind, reply })
    return reply
  }
  const noteSid = (accessToken: string | undefined) => {
    if (accessToken) ourSids.add(decodeJwt(accessToken).sid as string)
  }
  const users = [['alice', 'alice-pw'], ['bob', 'bob-pw']] as const

  interface Worker {
    browser: CookieClient
    extraBrowsers: CookieClient[]
    token: { access: string; refresh: string }
  }
  async function newWorker(i: number): Promise<Worker> {
    const [username, password] = users[i % 2]!
    const browser = new CookieClient(gw.url)
    const login = await browser.login(username, password)
    if (login.status !== 200) throw new Error(`login failed: ${login.status}`)
    noteSid(browser.jar.get('sg_access'))
    const tokens = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username, password } })
    noteSid(tokens.json.accessToken)
    return { browser, extraBrowsers: [], token: { access: tokens.json.accessToken, refresh: tokens.json.refreshToken } }
  }
  const workers = await Promise.all(Array.from({ length: 6 }, (_, i) => newWorker(i)))
  const preOutage = workers.map((w) => ({ browser: w.browser, token: w.token }))

  async function run(w: Worker, index: number): Promise<void> {
    const [username, password] = users[index % 2]!
    for (let i = 0; i < 2000 && !stop; i++) {
      const step = (i + index) % 8
      if (step === 3) {
        const browser = new CookieClient(gw.url)
        const res = record('login', await browser.login(username, password))
        if (res.status === 200) {
          noteSid(browser.jar.get('sg_access'))
          w.extraBrowsers.push(browser)
        }
      } else if (step === 5) {
        record('cookie-refresh', await w.browser.send('/auth/refresh', { method: 'POST' }))
      } else if (step % 2 === 0) {
        const browser = w.extraBrowsers.length > 0 && step === 6 ? w.extraBrowsers[i % w.extraBrowsers.length]! : w.browser
        record('cookie-api', await browser.send(`/api/orders?w=${index}&i=${i}`))
      } else {
        const res = record('bearer-api', await send(`${gw.url}/api/orders?w=${index}&i=${i}`, { headers: { authorization: `Bearer ${w.token.access}` } }))
        if (res.status === 401) {
          const next = record('token-refresh', await send(`${gw.url}/auth/refresh`, { body: { refreshToken: w.token.refresh } }))
          if (next.status === 200) w.token = { access: next.json.accessToken, refresh: next.json.refreshToken }
        }
      }
      await sleep(15)
    }
  }
  const load = Promise.all(workers.map((w, i) => run(w, i)))

  await sleep(800)
  phase = 'outage'
  await redis.pause()
  await sleep(1500)
  await redis.resume()
  const recovered = await eventually(async () => (await send(`${gw.url}/readyz`)).status === 200, 300)
  t.ok(recovered, 'the gateway reconnects by itself')
  phase = 'after'
  await sleep(1000)
  stop = true
  await load

  const count = (f: (e: (typeof log)[number]) => boolean) => log.filter(f).length
  t.comment(`requests ${log.length}: before ${count((e) => e.phase === 'before')}, outage ${count((e) => e.phase === 'outage')}, after ${count((e) => e.phase === 'after')}`)
  t.comment(`statuses ${JSON.stringify(Object.fromEntries([...new Set(log.map((e) => e.reply.status))].map((s) => [s, count((e) => e.reply.status === s)])))}`)
  t.comment(`upstream requests ${upstream.requests.length}, sessions ${ourSids.size}, expired Bearer 401s ${count((e) => e.kind === 'bearer-api' && e.reply.status === 401)}, token refreshes ${count((e) => e.kind === 'token-refresh' && e.reply.status === 200)}, transparent refreshes ${count((e) => e.kind === 'cookie-api' && e.reply.setCookies.length > 0)}`)

  t.ok(count((e) => e.phase === 'outage' && e.reply.status === 503) > 0, 'the outage was seen (503s while Redis was down)')
  t.ok(count((e) => e.phase === 'after' && e.reply.status === 200) > 0, 'and requests succeeded after it')
  const otherFailures = log.filter((e) => e.reply.status >= 500 && !(e.reply.status === 503 && e.reply.json?.error === 'session_store_unavailable'))
  t.same(otherFailures.map((e) => `${e.kind} ${e.reply.status} ${e.reply.text}`), [], 'no 5xx other than 503 session_store_unavailable')
  const unavailable = log.filter((e) => e.reply.status === 503)
  t.ok(unavailable.every((e) => e.reply.headers['retry-after'] !== undefined), 'every 503 has Retry-After')
  t.same(unavailable.filter((e) => e.reply.setCookies.length > 0).map((e) => e.kind), [], 'no 503 touches the cookies')
  const unexpected = log.filter((e) => ![200, 503].includes(e.reply.status) && !(e.kind === 'bearer-api' && e.reply.status === 401))
  t.same(unexpected.map((e) => `${e.phase} ${e.kind} ${e.reply.status} ${e.reply.text}`), [], 'nothing but 200 and 503 (and 401 for expired Bearer tokens, which the client then refreshes)')

  t.ok(upstream.requests.length > 0, 'the upstream was called')
  t.same(badForwards, [], "every request the upstream received carried a Bearer of one of the test's sessions, valid against the JWKS")

  for (const [i, session] of preOutage.entries()) {
    const res = await session.browser.send('/api/orders?after=1')
    t.equal(res.status, 200, `browser session ${i} (created before the outage) still works`)
  }
  for (const [i, w] of workers.entries()) {
    const next = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: w.token.refresh } })
    t.equal(next.status, 200, `token session ${i} (created before the outage) still refreshes`)
    if (next.status === 200) noteSid(next.json.accessToken)
    t.equal((await send(`${gw.url}/api/orders`, { headers: { authorization: `Bearer ${next.json?.accessToken}` } })).status, 200, `token session ${i}: its new access token works`)
  }
  t.same(badForwards, [])
})

t.test('an upstream that dies mid-response: the client sees 502 or an aborted body, and the gateway keeps serving', async (t) => {
  const upstream = await startUpstream((req, res) => {
    const url = req.url ?? ''
    if (url.includes('ok')) {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('complete')
    } else if (url.includes('chunked')) {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('x'.repeat(1000))
      setTimeout(() => req.socket.destroy(), 20)
    } else if (url.includes('headers-only')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5000' })
      res.flushHeaders()
      setTimeout(() => req.socket.destroy(), 20)
    } else {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100000' })
      res.write('x'.repeat(1000))
      setTimeout(() => req.socket.destroy(), 20)
    }
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway({ config: { routes: [{ name: 'p', prefix: '/p', upstream: upstream.url, auth: 'public' }] } })
  t.teardown(() => gw.close())

  for (const kind of ['content-length', 'chunked', 'headers-only']) {
    for (let round = 0; round < 3; round++) {
      let outcome: string
      try {
        const res = await request(`${gw.url}/p/${kind}`)
        const body = await res.body.text()
        outcome = res.statusCode === 502 && (JSON.parse(body) as { error?: string }).error === 'bad_gateway' ? '502 bad_gateway' : `${res.statusCode} with ${body.length} bytes, as if complete`
      } catch {
        outcome = 'an aborted body'
      }
      t.ok(['502 bad_gateway', 'an aborted body'].includes(outcome), `${kind} #${round}: the client sees ${outcome}`)
      const next = await send(`${gw.url}/p/ok`)
      t.equal(next.status, 200, `${kind} #${round}: the next request is served`)
      t.equal(next.text, 'complete')
    }
  }
  t.equal((await send(`${gw.url}/healthz`)).status, 200)
})

t.test('SIGTERM with 20 requests in flight: all 20 complete with 200 and the process exits 0', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const dir = mkdtempSync(join(tmpdir(), 'sg-faults-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // A slow upstream: it holds each request, and answers 500 ms after being released.
  const held: ServerResponse[] = []
  let released = false
  const slow = await startUpstream((_req, res, recorded) => {
    const answer = () => setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ url: recorded.url })), 500)
    if (released) answer()
    else held.push(Object.assign(res, { answer }))
  })
  t.teardown(() => slow.close())

  const port = await freePort()
  const configFile = join(dir, 'gateway.yaml')
  writeFileSync(configFile, stringify({
    server: { host: '127.0.0.1', port },
    redis: { url: redis.url, keyPrefix: 'sigterm:' },
    tokens: { keys: (await writeKeys(dir)).file, issuer: 'https://gateway.test', audience: 'test-api' },
    cookies: { secure: false },
    login: { users: await writeUsers(dir) },
    routes: [{ name: 'slow', prefix: '/slow', upstream: slow.url }],
  }))
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'info' }
  for (const name of ['SESSIONGATE_CONFIG', 'REDIS_URL', 'HOST', 'PORT']) delete env[name]
  const child = spawn(process.execPath, [join(root, 'bin', 'sessiongate.js'), '--config', configFile], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })))
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const url = `http://127.0.0.1:${port}`
  t.ok(await eventually(async () => (await send(`${url}/readyz`)).status === 200, 400), 'the gateway started and reached Redis')

  const login = await send(`${url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  t.equal(login.status, 200)
  const auth = { authorization: `Bearer ${login.json.accessToken}` }
  const inFlight = Array.from({ length: 20 }, (_, i) => send(`${url}/slow/job?i=${i}`, { headers: auth }))
  t.ok(await eventually(() => held.length === 20), 'all 20 requests reached the upstream')
  child.kill('SIGTERM')
  t.ok(await eventually(() => /shutting down/.test(out)), 'the gateway began its shutdown with the requests still in flight')
  t.equal(child.exitCode, null, 'and waits for them')
  released = true
  for (const res of held.splice(0)) (res as ServerResponse & { answer: () => void }).answer()
  const replies = await Promise.all(inFlight)
  t.same(replies.map((r) => r.status), Array(20).fill(200), 'all 20 completed with 200')
  t.same(replies.map((r) => r.json?.url).sort(), Array.from({ length: 20 }, (_, i) => `/slow/job?i=${i}`).sort(), "each with the upstream's answer")
  const { code, signal } = await exited
  t.equal(code, 0, 'exit code 0')
  t.equal(signal, null)
})
