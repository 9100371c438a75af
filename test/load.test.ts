/**
 * Load with short-lived tokens: 30 simulated browsers in cookie mode, each firing parallel bursts across TWO
 * gateway instances on one Redis (same key file) while access tokens expire every 1-2 s. Each browser keeps a
 * cookie jar the way a browser does: every Set-Cookie is applied as its response arrives (a burst's responses
 * come back in any order), and a cookie whose Max-Age has run out is no longer sent.
 *
 * Nobody may be logged out by the gateway's own rotations: no false reuse alarm, no lost session, and nothing
 * forwarded to the upstream without a Bearer token. Bounded: about 8 s of traffic.
 */
import { decodeJwt } from 'jose'
import t, { type Test } from 'tap'
import { request } from 'undici'
import type { ServerResponse } from 'node:http'
import { send, type Reply } from './helpers/client.js'
import { startGateway, type StartedGateway, type TestUser } from './helpers/gateway.js'
import { startRedis } from './helpers/redis-server.js'
import { echo, startUpstream } from './helpers/upstream.js'

const USERS: TestUser[] = Array.from({ length: 5 }, (_, i) => ({ username: `user${i}`, password: `pw-${i}`, sub: `sub-${i}`, claims: { roles: ['user'] } }))
const SIMULATED = 30
const LOAD_MS = 6000
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Polls `check` (bounded: `tries` × 20 ms) until it holds. */
async function eventually(check: () => boolean, tries = 250): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (check()) return true
    await sleep(20)
  }
  return false
}

/** A browser's cookie jar: Set-Cookie applied in arrival order, Max-Age honoured. */
class Jar {
  private readonly cookies = new Map<string, { value: string; expiresAt: number }>()

  header(now = Date.now()): string {
    const pairs: string[] = []
    for (const [name, c] of this.cookies) {
      if (c.expiresAt <= now) this.cookies.delete(name)
      else pairs.push(`${name}=${c.value}`)
    }
    return pairs.join('; ')
  }

  get(name: string): string | undefined {
    return this.cookies.get(name)?.value
  }

  apply(setCookies: string[], now = Date.now()): void {
    for (const line of setCookies) {
      const [pair = '', ...attributes] = line.split(';').map((s) => s.trim())
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq)
      const value = pair.slice(eq + 1)
      const maxAge = attributes.find((a) => /^max-age=/i.test(a))
      const seconds = maxAge === undefined ? Infinity : Number(maxAge.slice(8))
      if (value === '' || seconds <= 0) this.cookies.delete(name)
      else this.cookies.set(name, { value, expiresAt: now + seconds * 1000 })
    }
  }
}

interface Outcome {
  status: number
  setCookies: string[]
  error?: string
}

async function call(base: string, path: string, jar: Jar, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Outcome> {
  const cookie = jar.header()
  const res = await request(base + path, {
    method: (init.method ?? 'GET') as 'GET',
    headers: { ...(cookie ? { cookie } : {}), ...init.headers },
    body: init.body,
  })
  const text = await res.body.text()
  const raw = res.headers['set-cookie']
  const setCookies = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]
  jar.apply(setCookies) // as the response arrives, like a browser
  let error: string | undefined
  if (res.statusCode >= 400) {
    try {
      error = (JSON.parse(text) as { error?: string }).error
    } catch {
      error = text.slice(0, 80)
    }
  }
  return { status: res.statusCode, setCookies, ...(error === undefined ? {} : { error }) }
}

async function metric(gw: StartedGateway, name: string): Promise<number> {
  const res = await request(`${gw.url}/metrics`)
  const text = await res.body.text()
  return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? 'NaN')
}

const redis = await startRedis()
t.teardown(() => redis.stop())

t.test(`${SIMULATED} browsers, bursts across two instances, access tokens expiring every 1-2 s`, async (t) => {
  // Most answers are immediate; `/api/slow/...` (a report, an upload) takes 1.5-2.5 s, longer than an access token lives.
  const timers = new Set<NodeJS.Timeout>()
  const upstream = await startUpstream((_req, res, recorded) => {
    const answer = () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, url: recorded.url }))
    if (!recorded.url.startsWith('/api/slow/')) return answer()
    const timer = setTimeout(() => {
      timers.delete(timer)
      answer()
    }, 1500 + Math.floor(Math.random() * 1000))
    timers.add(timer)
  })
  t.teardown(() => timers.forEach(clearTimeout))
  t.teardown(() => upstream.close())
  const config = {
    tokens: { accessTtl: '1s', refreshAhead: '500ms', reuseGrace: '5s', clockTolerance: 0 },
    redis: { keyPrefix: 'load:' },
    routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }],
  }
  const a = await startGateway({ redisUrl: redis.url, users: USERS, config })
  const b = await startGateway({ redisUrl: redis.url, users: USERS, config, keysFile: a.keysFile })
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const instances = [a, b]
  const pick = () => instances[Math.floor(Math.random() * 2)]!.url

  let requests = 0
  let ok = 0
  let unauthorized = 0
  let transparentRefreshes = 0
  const otherStatuses = new Map<string, number>()
  const lost = new Map<number, string>()
  const sids = new Set<string>()

  /** Logs a browser in (one at a time: parallel attempts from one IP count against the login rate limit). */
  async function loggedIn(index: number): Promise<{ jar: Jar; sid: string }> {
    const user = USERS[index % USERS.length]!
    const jar = new Jar()
    const login = await call(pick(), '/auth/login', jar, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: user.username, password: user.password }),
    })
    if (login.status !== 200) throw new Error(`login ${login.status} ${login.error}`)
    const sid = decodeJwt(jar.get('sg_access') as string).sid as string
    sids.add(sid)
    return { jar, sid }
  }

  async function browser(index: number, { jar, sid }: { jar: Jar; sid: string }): Promise<void> {
    const deadline = Date.now() + LOAD_MS
    const slow: Promise<void>[] = []
    const tally = (round: number) => (o: Outcome) => {
      requests++
      if (o.status === 200) ok++
      else if (o.status === 401) {
        unauthorized++
        if (!lost.has(index)) lost.set(index, `round ${round}: ${o.error}`)
      } else otherStatuses.set(`${o.status} ${o.error}`, (otherStatuses.get(`${o.status} ${o.error}`) ?? 0) + 1)
      if (o.status === 200 && o.setCookies.some((c) => c.startsWith('sg_access='))) transparentRefreshes++
    }
    for (let round = 0; round < 200 && Date.now() < deadline; round++) {
      // Now and then a slow request the page does not wait for: it stays in flight across the next bursts.
      if (round % 4 === index % 4) slow.push(call(pick(), `/api/slow/report?u=${index}&r=${round}`, jar).then(tally(round)))
      const size = 3 + Math.floor(Math.random() * 4)
      const burst = Array.from({ length: size }, (_, i) => {
        const base = pick()
        if (i === 0 && round % 3 === 0) return call(base, `/api/items?u=${index}&r=${round}`, jar, { method: 'POST', headers: { 'x-csrf': '1', 'content-type': 'application/json' }, body: '{"n":1}' })
        if (i === 1 && round % 5 === 0) return call(base, '/auth/session', jar)
        return call(base, `/api/items/${i}?u=${index}&r=${round}`, jar)
      })
      for (const o of await Promise.all(burst)) tally(round)(o)
      const current = jar.get('sg_access')
      if (current && decodeJwt(current).sid !== sid) lost.set(index, 'the session changed')
      await sleep(50 + Math.floor(Math.random() * 400))
    }
    await Promise.all(slow)
    // A last request: the session must still be there.
    const last = await call(pick(), '/api/items/last', jar)
    requests++
    if (last.status === 200) ok++
    else {
      if (last.status === 401) unauthorized++
      lost.set(index, `${lost.get(index) ?? ''} final: ${last.status} ${last.error}`)
    }
  }

  const sessions = []
  for (let i = 0; i < SIMULATED; i++) sessions.push(await loggedIn(i))
  await Promise.all(sessions.map((session, i) => browser(i, session)))

  const reuseAlarms = (await metric(a, 'sessiongate_refresh_reuse_detections_total')) + (await metric(b, 'sessiongate_refresh_reuse_detections_total'))
  const unauthenticatedForwards = upstream.requests.filter((r) => !/^Bearer ey/.test(r.headers.authorization ?? '')).length
  const forwardedSids = new Set(upstream.requests.map((r) => decodeJwt((r.headers.authorization ?? '').slice(7)).sid))

  t.comment(`requests ${requests}, 200s ${ok}, 401s ${unauthorized}, transparent refreshes ${transparentRefreshes}`)
  t.comment(`reuse alarms ${reuseAlarms}, sessions lost ${lost.size}, unauthenticated forwards ${unauthenticatedForwards}`)
  if (otherStatuses.size > 0) t.comment(`other statuses ${JSON.stringify(Object.fromEntries(otherStatuses))}`)
  for (const [index, why] of lost) t.comment(`lost: browser ${index}: ${why}`)

  t.ok(transparentRefreshes >= SIMULATED, 'tokens did expire and were refreshed on the way (at least once per browser)')
  t.equal(reuseAlarms, 0, 'no false reuse alarm')
  t.equal(lost.size, 0, 'no session lost')
  t.equal(unauthorized, 0, 'no 401')
  t.equal(otherStatuses.size, 0, 'nothing but 200 and 401')
  t.equal(unauthenticatedForwards, 0, 'nothing forwarded without a Bearer token')
  t.ok([...forwardedSids].every((sid) => sids.has(sid as string)), "every forwarded token belongs to one of the browsers' sessions")
})

/**
 * The three ways the load above used to log browsers out, each forced deterministically with an upstream that
 * holds `/api/slow/...` until released: a slow response whose Set-Cookie is older than what faster responses
 * already set; a late grace answer whose access token had expired; a rotation still on its way to the client
 * taken for a replay. Sleeps only place requests in time; nothing asserts on durations.
 */
t.test('slow responses and late requests across two instances', async (t) => {
  t.jobs = 3 // the three mostly sleep: run them side by side
  let keyPrefixes = 0
  async function setup(t: Test, tokens: Record<string, unknown>) {
    const held: ServerResponse[] = []
    const upstream = await startUpstream((req, res, recorded) => {
      if (!(req.url ?? '').startsWith('/api/slow/')) return echo(req, res, recorded)
      held.push(Object.assign(res, { recorded }))
    })
    const release = () => {
      for (const res of held.splice(0)) echo({} as never, res, (res as ServerResponse & { recorded: never }).recorded)
    }
    const config = { tokens: { clockTolerance: 0, ...tokens }, redis: { keyPrefix: `slow${++keyPrefixes}:` }, routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] }
    const a = await startGateway({ redisUrl: redis.url, config })
    const b = await startGateway({ redisUrl: redis.url, config, keysFile: a.keysFile })
    t.teardown(async () => {
      release()
      await a.close()
      await b.close()
      await upstream.close()
    })
    const login = await send(`${a.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' } })
    const jar = new Jar()
    jar.apply(login.setCookies)
    const alarms = async () => (await metric(a, 'sessiongate_refresh_reuse_detections_total')) + (await metric(b, 'sessiongate_refresh_reuse_detections_total'))
    return { a, b, upstream, held, release, jar, alarms }
  }
  /** The cookies as they are now, ignoring Max-Age (a request sent from a page that still holds them). */
  const cookiesOf = (jar: Jar) => `sg_access=${jar.get('sg_access')}; sg_refresh=${jar.get('sg_refresh')}`
  const get = (gw: StartedGateway, path: string, cookie: string) => send(`${gw.url}${path}`, { headers: { cookie } })
  const expOf = (jwt: string | undefined) => (decodeJwt(jwt as string).exp as number) * 1000
  const until = (at: number) => sleep(Math.max(0, at - Date.now()))
  const ours = (reply: Reply) => reply.setCookies.filter((c) => /^sg_(access|refresh)=/.test(c))

  t.test('a slow response never sets cookies older than those faster responses already set', async (t) => {
    const s = await setup(t, { accessTtl: '1s', refreshAhead: '500ms', reuseGrace: '2s' })
    await until(expOf(s.jar.get('sg_access')) + 100)
    const slow = get(s.a, '/api/slow/report', cookiesOf(s.jar)) // rotates 0 -> 1; its answer is held
    t.ok(await eventually(() => s.held.length === 1), 'the slow request reached the upstream')
    const fast = await get(s.b, '/api/fast/1', cookiesOf(s.jar)) // the same old cookies: the grace answer
    t.equal(fast.status, 200)
    s.jar.apply(fast.setCookies)
    await until(expOf(s.jar.get('sg_access')) + 100)
    const next = await get(s.a, '/api/fast/2', cookiesOf(s.jar)) // rotates 1 -> 2
    t.equal(next.status, 200)
    t.equal(ours(next).length, 2, 'a second rotation')
    s.jar.apply(next.setCookies)
    const newest = s.jar.get('sg_refresh')

    s.release()
    const late = await slow
    t.equal(late.status, 200, 'the slow request completes')
    t.same(ours(late), [], 'its answer does not carry the older pair')
    s.jar.apply(late.setCookies) // as a browser would
    t.equal(s.jar.get('sg_refresh'), newest, 'the browser keeps the newest refresh cookie')
    await sleep(2200) // past the grace of the second rotation: an older refresh cookie would now be a replay
    const after = await get(s.b, '/api/fast/3', cookiesOf(s.jar))
    t.equal(after.status, 200, 'the session goes on')
    t.equal(await s.alarms(), 0, 'no reuse alarm')
  })

  t.test('a response slower than the grace keeps the grace open: the next request with the older cookie is no replay', async (t) => {
    const s = await setup(t, { accessTtl: '2s', refreshAhead: '1500ms', reuseGrace: '1s' })
    await until(expOf(s.jar.get('sg_access')) + 100) // expired: the browser has dropped the access cookie
    const refreshOnly = `sg_refresh=${s.jar.get('sg_refresh')}`
    const slow = get(s.a, '/api/slow/longpoll', refreshOnly) // rotates; the new cookies travel with its held answer
    t.ok(await eventually(() => s.held.length === 1))
    await sleep(2500) // well past reuseGrace; the long poll is still held
    const next = await get(s.b, '/api/fast/poll', refreshOnly)
    t.equal(next.status, 200, 'the page is not logged out')
    t.equal(ours(next).length, 2, 'it gets the successor cookies (a grace answer)')
    s.jar.apply(next.setCookies)
    s.release()
    t.equal((await slow).status, 200)
    t.equal((await get(s.a, '/api/fast/after', cookiesOf(s.jar))).status, 200, 'and the session goes on')
    t.equal(await s.alarms(), 0, 'no reuse alarm')
  })

  t.test('a late grace answer carries a fresh access token, not the expired one of the rotation', async (t) => {
    const s = await setup(t, { accessTtl: '1s', refreshAhead: '500ms', reuseGrace: '5s' })
    await until(expOf(s.jar.get('sg_access')) + 100)
    const old = cookiesOf(s.jar)
    const slow = get(s.a, '/api/slow/upload', old) // rotates; the new cookies travel with its held answer
    t.ok(await eventually(() => s.held.length === 1))
    await sleep(2200) // the rotation's access token (1 s, rounded up to the second) has expired; the grace has not
    const before = s.upstream.requests.length
    const late = await get(s.b, '/api/fast/poll', old)
    t.equal(late.status, 200, 'the page, still holding the old cookies, is not logged out')
    t.equal(ours(late).length, 2, 'it gets the successor cookies')
    t.equal(s.upstream.requests.length, before + 1)
    const forwarded = (s.upstream.last()!.headers.authorization ?? '').slice(7)
    t.ok(expOf(forwarded) > Date.now(), 'the upstream got an access token that has not expired')
    s.jar.apply(late.setCookies)
    s.release()
    t.equal((await slow).status, 200)
    t.equal((await get(s.a, '/api/fast/again', cookiesOf(s.jar))).status, 200)
    t.equal(await s.alarms(), 0, 'no reuse alarm')
  })

  t.test('a rotation still on its way to the client is not taken for a replay by the next request', async (t) => {
    const s = await setup(t, { accessTtl: '6s', refreshAhead: '5s', reuseGrace: '1s' })
    const exp = expOf(s.jar.get('sg_access'))
    await until(exp - 4500) // within refreshAhead of expiry: the next request refreshes early
    const old = cookiesOf(s.jar)
    const slow = get(s.a, '/api/slow/upload', old) // rotates 0 -> 1; the new cookies travel with its held answer
    t.ok(await eventually(() => s.held.length === 1))
    await sleep(1500) // past reuseGrace since the rotation, but its answer is still on its way: the grace is held open
    const poll = await get(s.b, '/api/fast/poll', old)
    t.equal(poll.status, 200, 'a poll with the old cookies is served')
    t.equal(ours(poll).length, 2, 'with the successor pair (a grace answer), not a reuse alarm')
    s.release()
    const done = await slow
    t.equal(done.status, 200)
    const refreshOf = (reply: Reply) => ours(reply).find((c) => c.startsWith('sg_refresh='))?.split(';')[0]
    t.equal(refreshOf(done), refreshOf(poll), 'the slow answer delivers the same successor refresh token')
    s.jar.apply(done.setCookies)

    // Delivered, and the grace over: a request sent with the old cookies before they arrived is served with its
    // still-valid access token, cookies untouched (superseded), and is no replay either.
    await sleep(1700)
    t.ok(Date.now() < exp - 500, 'precondition: the old access token is still valid')
    const late = await get(s.b, '/api/fast/late', old)
    t.equal(late.status, 200, 'a late request with the old cookies is served with the still-valid access token')
    t.same(ours(late), [], 'without touching the cookies')
    t.equal(s.upstream.last()!.headers.authorization, `Bearer ${old.split(';')[0]!.slice('sg_access='.length)}`)
    t.equal((await get(s.b, '/api/fast/after', cookiesOf(s.jar))).status, 200, 'and the session goes on with the new pair')
    t.equal(await s.alarms(), 0, 'no reuse alarm')
  })
})
