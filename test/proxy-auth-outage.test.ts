/**
 * The proxy path while the session store is away (CONTRACT §5): protected routes fail closed with 503
 * `session_store_unavailable` + Retry-After, quickly and without touching cookies; public routes keep working;
 * the gateway recovers by itself; `redis.onOutage: verify-only` accepts valid tokens meanwhile.
 */
import { connect } from 'node:net'
import t, { type Test } from 'tap'
import { CookieClient, send, type Reply } from './helpers/client.js'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { startRedis, type TestRedis } from './helpers/redis-server.js'
import { startUpstream, type TestUpstream } from './helpers/upstream.js'

const CLIENT_TIMEOUT_MS = 5000
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Fails the request if the gateway does not answer within the client timeout (it must not queue). */
async function within<T>(work: Promise<T>, ms = CLIENT_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms}ms`)), ms)
  })
  try {
    return await Promise.race([work, timeout])
  } finally {
    clearTimeout(timer)
  }
}

function expOf(jwt: string): number {
  return (JSON.parse(Buffer.from(jwt.split('.')[1] as string, 'base64url').toString('utf8')) as { exp: number }).exp * 1000
}

interface Setup {
  redis: TestRedis
  upstream: TestUpstream
  gw: StartedGateway
}

async function setup(t: Test, config: Record<string, unknown> = {}): Promise<Setup> {
  // appendonly: the sessions survive the pause, as they would a real Redis restart with persistence.
  const redis = await startRedis({ appendonly: true })
  const upstream = await startUpstream()
  const gw = await startGateway({
    redisUrl: redis.url,
    config: {
      ...config,
      routes: [
        { name: 'api', prefix: '/api', upstream: upstream.url },
        { name: 'live', prefix: '/live', upstream: upstream.url, websocket: true },
        { name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public' },
      ],
    },
  })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
    await redis.stop()
  })
  return { redis, upstream, gw }
}

function storeUnavailable(t: Test, res: Reply, what: string): void {
  t.equal(res.status, 503, `${what}: 503`)
  t.equal(res.json?.error, 'session_store_unavailable', `${what}: session_store_unavailable`)
  t.match(res.headers['retry-after'], /^\d+$/, `${what}: Retry-After`)
  t.equal(res.headers['cache-control'], 'no-store', `${what}: not cached`)
  t.same(res.setCookies, [], `${what}: cookies untouched`)
}

/** Polls until the protected route answers 200 again (bounded). */
/** A WebSocket upgrade by hand: the first line of the gateway's answer. */
function rawUpgrade(port: number, path: string, cookie: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: ${cookie}\r\n\r\n`)
    })
    let text = ''
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')))
    socket.on('end', () => resolve(text))
    socket.on('error', reject)
  })
}

async function recovered(client: CookieClient, path: string, timeoutMs = 20_000): Promise<Reply> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const res = await within(client.send(path))
    if (res.status === 200 || Date.now() > deadline) return res
    await sleep(100)
  }
}

t.test('fail-closed (default): 503 on protected routes, public routes work, recovery without restart', async (t) => {
  const { redis, upstream, gw } = await setup(t)
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const bearerLogin = await send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'x-session-mode': 'token' }, body: { username: 'bob', password: 'bob-pw' } })
  t.equal(bearerLogin.status, 200)
  const bearer = { authorization: `Bearer ${bearerLogin.json.accessToken as string}` }
  t.equal((await client.send('/api/orders')).status, 200)
  t.equal((await send(`${gw.url}/api/orders`, { headers: bearer })).status, 200)
  const jar = new Map(client.jar)

  await redis.pause()
  const before = upstream.requests.length

  const started = Date.now()
  const cookieRes = await within(client.send('/api/orders'))
  t.ok(Date.now() - started < CLIENT_TIMEOUT_MS, 'answered within the client timeout')
  storeUnavailable(t, cookieRes, 'cookie mode')
  t.same(client.jar, jar, 'the client keeps its cookies')

  const csrfPost = await within(client.send('/api/orders', { method: 'POST', headers: { 'x-csrf': '1' }, body: 'a=1' }))
  storeUnavailable(t, csrfPost, 'cookie-mode POST')

  const bearerRes = await within(send(`${gw.url}/api/orders`, { headers: bearer }))
  storeUnavailable(t, bearerRes, 'bearer mode')
  t.notOk(bearerRes.headers['www-authenticate'], 'not presented as a token problem')

  // Many at once: none is queued behind the others.
  const burst = await within(Promise.all(Array.from({ length: 20 }, () => send(`${gw.url}/api/orders`, { headers: { cookie: client.cookieHeader() } }))))
  t.same(burst.map((r) => r.status), Array(20).fill(503), 'a burst is answered 503 too')
  t.equal(upstream.requests.length, before, 'nothing reached the upstream')

  const publicRes = await within(send(`${gw.url}/pub/status`))
  t.equal(publicRes.status, 200, 'public routes still work')
  t.equal(upstream.requests.length, before + 1)
  const publicWithCookies = await within(client.send('/pub/status'))
  t.equal(publicWithCookies.status, 200, 'public routes work with session cookies too')
  t.notOk(upstream.last()!.headers.cookie, 'and still strip the gateway cookies')

  const storeErrors = async () => Number(/^sessiongate_store_errors_total (\d+)/m.exec((await send(`${gw.url}/metrics`)).text)?.[1])
  const errorsBefore = await storeErrors()
  const login = await within(send(`${gw.url}/auth/login`, { method: 'POST', body: { username: 'alice', password: 'alice-pw' } }))
  storeUnavailable(t, login, 'login')
  t.equal(await storeErrors(), errorsBefore + 1, 'a login answered 503 counts as a store error, as a proxied request does')
  const upgrade = await within(rawUpgrade(gw.port, '/live/x', client.cookieHeader()))
  t.match(upgrade, /^HTTP\/1\.1 503 /, 'a WebSocket upgrade is refused 503 too')
  t.equal(await storeErrors(), errorsBefore + 2, 'and counted')

  const refresh = await within(client.send('/auth/refresh', { method: 'POST', headers: { 'x-csrf': '1' } }))
  storeUnavailable(t, refresh, 'refresh')
  t.same(client.jar, jar, 'a failed refresh clears no cookie')

  const session = await within(client.send('/auth/session'))
  storeUnavailable(t, session, 'session')
  t.equal((await within(send(`${gw.url}/readyz`))).status, 503, 'not ready')
  t.equal((await within(send(`${gw.url}/healthz`))).status, 200, 'but alive')

  await redis.resume()
  const back = await recovered(client, '/api/orders')
  t.equal(back.status, 200, 'the protected route works again without a restart')
  t.equal(upstream.last()!.headers.authorization, `Bearer ${jar.get('sg_access')}`, 'with the same session')
  t.equal((await send(`${gw.url}/api/orders`, { headers: bearer })).status, 200, 'bearer too')
  t.equal((await send(`${gw.url}/auth/login`, { method: 'POST', body: { username: 'alice', password: 'alice-pw' } })).status, 200, 'login too')
  t.equal((await send(`${gw.url}/readyz`)).status, 200)
})

t.test('an outage in the middle of a transparent refresh leaves the cookies alone', async (t) => {
  const { redis, gw } = await setup(t, { tokens: { accessTtl: '1s', refreshAhead: '500ms', clockTolerance: 0 } })
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const jar = new Map(client.jar)
  await redis.pause()
  await sleep(Math.max(0, expOf(jar.get('sg_access') as string) - Date.now()) + 100)
  const res = await within(client.send('/api/orders'))
  storeUnavailable(t, res, 'expired access, refresh needed')
  t.same(client.jar, jar)
  await redis.resume()
  const back = await recovered(client, '/api/orders')
  t.equal(back.status, 200, 'the refresh goes through once the store is back')
  t.not(client.jar.get('sg_refresh'), jar.get('sg_refresh'), 'rotated')
})

t.test('verify-only: valid tokens are accepted while the store is away', async (t) => {
  const { redis, upstream, gw } = await setup(t, {
    redis: { onOutage: 'verify-only' },
    tokens: { accessTtl: '3s', refreshAhead: '2s', clockTolerance: 0 },
  })
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const access = client.jar.get('sg_access') as string
  const bearerLogin = await send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'x-session-mode': 'token' }, body: { username: 'bob', password: 'bob-pw' } })
  const bearerToken = bearerLogin.json.accessToken as string
  const jar = new Map(client.jar)

  await redis.pause()
  const bearerRes = await within(send(`${gw.url}/api/orders`, { headers: { authorization: `Bearer ${bearerToken}` } }))
  t.equal(bearerRes.status, 200, 'a valid Bearer is accepted')
  t.equal(upstream.last()!.headers.authorization, `Bearer ${bearerToken}`)
  const cookieRes = await within(client.send('/api/orders'))
  t.equal(cookieRes.status, 200, 'a valid access cookie is accepted')
  t.equal(upstream.last()!.headers.authorization, `Bearer ${access}`)
  t.same(cookieRes.setCookies, [])

  const forged = await within(send(`${gw.url}/api/orders`, { headers: { authorization: `Bearer ${bearerToken.slice(0, -4)}AAAA` } }))
  t.equal(forged.status, 401, 'signatures are still checked')

  const login = await within(send(`${gw.url}/auth/login`, { method: 'POST', body: { username: 'alice', password: 'alice-pw' } }))
  t.equal(login.status, 503, 'login needs the store')

  // Near expiry: the early refresh cannot happen, but the token is still valid, so it is used.
  await sleep(Math.max(0, expOf(access) - 2000 - Date.now()) + 100)
  t.ok(expOf(access) > Date.now() + 200, 'still valid')
  const nearExpiry = await within(client.send('/api/orders'))
  t.equal(nearExpiry.status, 200, 'a near-expiry token is accepted when the refresh cannot be made')
  t.equal(upstream.last()!.headers.authorization, `Bearer ${access}`)
  t.same(nearExpiry.setCookies, [], 'cookies untouched')

  // Expired: only a refresh could help, and it needs the store.
  await sleep(Math.max(0, expOf(access) - Date.now()) + 100)
  const expired = await within(client.send('/api/orders'))
  storeUnavailable(t, expired, 'expired access in verify-only mode')
  t.same(client.jar, jar)

  await redis.resume()
  const back = await recovered(client, '/api/orders')
  t.equal(back.status, 200, 'works again once the store is back')
  t.not(client.jar.get('sg_access'), access, 'after a refresh')
})
