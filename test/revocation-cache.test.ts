// redis.revocationCache: revocations reach every instance by pub/sub; the propagation delay is measured.
import t, { type Test } from 'tap'
import { send } from './helpers/client.js'
import { startGateway, type GatewayOptions } from './helpers/gateway.js'
import { aclUserUrl, startRedis } from './helpers/redis-server.js'
import { startUpstream } from './helpers/upstream.js'
import { REVOCATION_HOLD_MS } from '../src/sessions/revocation-cache.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls until `check` is true (bounded); resolves to the milliseconds it took. */
async function until(check: () => Promise<boolean>, limitMs = 5000): Promise<number> {
  const started = performance.now()
  while (performance.now() - started < limitMs) {
    if (await check()) return performance.now() - started
    await sleep(2)
  }
  return Number.POSITIVE_INFINITY
}

/**
 * Two revocation-cache gateways (A logging to `logger`) connected as the Redis ACL user `gw`, whose rights a test
 * takes away and gives back; a token-mode session of alice made on A.
 */
async function cacheGatewaysAsAclUser(t: Test, logger?: GatewayOptions['logger']) {
  const redis = await startRedis()
  const asGateway = await aclUserUrl(redis, 'gw', '~*', '&*', '+@all')
  const upstream = await startUpstream()
  const config = { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }], redis: { revocationCache: true } }
  const a = await startGateway({ redisUrl: asGateway, config, ...(logger ? { logger } : {}) })
  const b = await startGateway({ redisUrl: asGateway, config, keysFile: a.keysFile })
  t.teardown(async () => {
    await a.close()
    await b.close()
    await upstream.close()
    await redis.stop()
  })
  const res = await send(`${a.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' }, headers: { 'x-session-mode': 'token' } })
  return { redis, a, b, token: (res.json as { accessToken: string }).accessToken }
}

t.test('local revocation cache across two instances', async (t) => {
  const redis = await startRedis()
  const upstream = await startUpstream()
  const routes = [{ name: 'api', prefix: '/api', upstream: upstream.url }]
  // A short reuse grace, so that a replay can be made quickly below.
  const config = { routes, redis: { revocationCache: true }, tokens: { reuseGrace: '300ms' } }
  const a = await startGateway({ redisUrl: redis.url, config })
  const b = await startGateway({ redisUrl: redis.url, config, keysFile: a.keysFile })
  t.teardown(async () => {
    await a.close()
    await b.close()
    await upstream.close()
    await redis.stop()
  })
  const login = async () => {
    const res = await send(`${a.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' }, headers: { 'x-session-mode': 'token' } })
    t.equal(res.status, 200)
    return res.json as { accessToken: string; refreshToken: string }
  }
  const call = (base: string, token: string) => send(`${base}/api/x`, { headers: { authorization: `Bearer ${token}` } })

  // Logout on A reaches B.
  const first = await login()
  t.equal((await call(b.url, first.accessToken)).status, 200, 'B accepts (and caches) the session')
  t.equal((await call(b.url, first.accessToken)).status, 200, 'B answers from its cache')
  const logout = await send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${first.accessToken}` } })
  t.equal(logout.status, 204)
  const logoutDelay = await until(async () => (await call(b.url, first.accessToken)).status === 401)
  t.ok(Number.isFinite(logoutDelay), 'B refuses the logged-out token')
  t.comment(`logout on A refused on B after ${logoutDelay.toFixed(1)} ms (pub/sub propagation + one poll)`)

  // Reuse detection on A reaches B.
  const second = await login()
  t.equal((await call(b.url, second.accessToken)).status, 200)
  const rotated = await send(`${a.url}/auth/refresh`, { body: { refreshToken: second.refreshToken } })
  t.equal(rotated.status, 200)
  await sleep(800) // past the 300 ms grace
  const replay = await send(`${a.url}/auth/refresh`, { body: { refreshToken: second.refreshToken } })
  t.equal(replay.status, 401)
  t.equal(replay.json.error, 'refresh_token_reused')
  const reuseDelay = await until(async () => (await call(b.url, second.accessToken)).status === 401)
  t.ok(Number.isFinite(reuseDelay), 'B refuses the revoked family')
  t.comment(`reuse detection on A refused on B after ${reuseDelay.toFixed(1)} ms`)

  // A lost subscription empties the cache: B goes back to the store and sees a revocation made behind its back.
  const third = await login()
  t.equal((await call(b.url, third.accessToken)).status, 200)
  const sid = JSON.parse(Buffer.from(third.accessToken.split('.')[1] as string, 'base64url').toString()).sid as string
  await redis.client.del(`sg:{${sid}}:s`)
  t.equal((await call(b.url, third.accessToken)).status, 200, 'a deletion that bypasses pub/sub is not seen while subscribed (the documented trade-off)')
  await redis.client.client('KILL', 'TYPE', 'pubsub')
  const recoverDelay = await until(async () => (await call(b.url, third.accessToken)).status === 401)
  t.ok(Number.isFinite(recoverDelay), 'after the subscription dropped, B asked the store again and refused')
})

t.test('a revocation whose PUBLISH the server refused (an ACL right gone for an instant) still reaches the other cache', async (t) => {
  const warnings: string[] = []
  const stream = { write: (line: string) => void warnings.push(String(JSON.parse(line).msg)) }
  const { redis, a, b, token } = await cacheGatewaysAsAclUser(t, { level: 'warn', stream })
  const onB = () => send(`${b.url}/api/x`, { headers: { authorization: `Bearer ${token}` } })
  t.equal((await onB()).status, 200, 'B caches the session')
  const refusals = () => warnings.filter((w) => /may not PUBLISH/.test(w)).length
  t.equal(refusals(), 0, 'with the right, no refusal is reported')
  await redis.client.call('ACL', 'SETUSER', 'gw', '-publish')
  t.equal((await send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })).status, 204)
  await until(async () => refusals() > 0, 3000)
  t.equal(refusals(), 1, "A's probe reports the refused PUBLISH (once)")
  await redis.client.call('ACL', 'SETUSER', 'gw', '+publish')
  t.equal(await redis.client.get('sg:revocations:unannounced'), '2', 'the store counted the two unannounced revocations (family, jti)')
  const delay = await until(async () => (await onB()).status === 401)
  t.ok(Number.isFinite(delay), 'B forgets its cache at its next probe and refuses the session')
  t.comment(`refused on B after ${delay.toFixed(0)} ms (the probe runs every second)`)
})

t.test('a logout Redis can neither announce nor count answers 503, yet its own instance refuses the session at once; the retry reaches the others', async (t) => {
  const { redis, a, b, token } = await cacheGatewaysAsAclUser(t)
  const on = (gw: { url: string }) => send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${token}` } })
  const logout = () => send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  t.equal((await on(a)).status, 200, 'A caches the session')
  t.equal((await on(b)).status, 200, 'B caches the session')
  await redis.client.call('ACL', 'SETUSER', 'gw', '-publish', '-incr')
  const logoutStarted = performance.now()
  const refused = await logout()
  t.equal(refused.status, 503, 'the revocation could not be announced: the client is asked to retry')
  // Not a timing target: the hold is a promise (a half-made revocation shows no sooner than a whole one would).
  t.ok(performance.now() - logoutStarted >= REVOCATION_HOLD_MS, 'the 503 was held as a 204 would have been')
  t.equal(refused.json.error, 'session_store_unavailable')
  t.equal((await on(a)).status, 401, 'A itself no longer answers the session from its memory')
  await redis.client.call('ACL', 'SETUSER', 'gw', '+publish', '+incr')
  t.equal((await logout()).status, 204, 'the retry succeeds')
  const delay = await until(async () => (await on(b)).status === 401)
  t.ok(Number.isFinite(delay), 'and its announcements reach B')

  // The same for logout-all, whose families each end in a script of their own.
  const tokens = await Promise.all([1, 2].map(async () => {
    const made = await send(`${a.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' }, headers: { 'x-session-mode': 'token' } })
    return (made.json as { accessToken: string }).accessToken
  }))
  const status = (gw: { url: string }, tk: string) => send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${tk}` } }).then((r) => r.status)
  for (const gw of [a, b]) t.same(await Promise.all(tokens.map((tk) => status(gw, tk))), [200, 200], 'both sessions known to both instances')
  await redis.client.call('ACL', 'SETUSER', 'gw', '-publish', '-incr')
  const all = (gw: { url: string }) => send(`${gw.url}/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${tokens[0]}` } })
  const allStarted = performance.now()
  t.equal((await all(a)).status, 503, 'logout-all applied but unannounced: retry')
  t.ok(performance.now() - allStarted >= REVOCATION_HOLD_MS, 'held as well')
  t.same(await Promise.all(tokens.map((tk) => status(a, tk))), [401, 401], 'A refuses both families from its memory at once')
  await redis.client.call('ACL', 'SETUSER', 'gw', '+publish', '+incr')
  t.equal((await all(b)).status, 204, 'the retry (on B, which still knew the session) succeeds')
  t.ok(Number.isFinite(await until(async () => (await Promise.all(tokens.map((tk) => status(b, tk)))).every((s) => s === 401))), 'and B refuses both')
})

t.test('a frozen Redis (connections open, no answers) is noticed: the cache stops answering, 503 until it thaws', async (t) => {
  const redis = await startRedis()
  const upstream = await startUpstream()
  const gw = await startGateway({ redisUrl: redis.url, config: { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }], redis: { revocationCache: true } } })
  t.teardown(async () => {
    redis.thaw()
    await gw.close()
    await upstream.close()
    await redis.stop()
  })
  const login = await send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' }, headers: { 'x-session-mode': 'token' } })
  const call = () => send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${login.json.accessToken}` } })
  t.equal((await call()).status, 200, 'known to the cache')
  redis.freeze()
  const noticed = await until(async () => (await call()).status === 503, 10_000)
  t.ok(Number.isFinite(noticed), 'the cache gives up its answers: 503 session_store_unavailable')
  t.comment(`a frozen Redis noticed after ${noticed.toFixed(0)} ms (heartbeat 1 s, command timeout 1 s)`)
  redis.thaw()
  t.ok(Number.isFinite(await until(async () => (await call()).status === 200, 10_000)), 'back once Redis answers again')
})

t.test('a revocation-cache gateway started while Redis is down stays up, fails closed and recovers', async (t) => {
  const redis = await startRedis()
  await redis.pause()
  const upstream = await startUpstream()
  const gw = await startGateway({ redisUrl: redis.url, config: { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }], redis: { revocationCache: true } } })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
    await redis.stop()
  })
  const down = await send(`${gw.url}/api/x`, { headers: { authorization: 'Bearer x.y.z' } })
  t.equal((await send(`${gw.url}/healthz`)).status, 200, 'the process is up')
  t.equal((await send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' } })).status, 503, 'login fails closed')
  t.ok([401, 503].includes(down.status), `a protected route is refused (${down.status})`)
  await redis.resume()
  const login = async () => send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' }, headers: { 'x-session-mode': 'token' } })
  t.ok(Number.isFinite(await until(async () => (await login()).status === 200, 10_000)), 'logins work once Redis is there')
  const token = (await login()).json.accessToken as string
  t.ok(Number.isFinite(await until(async () => (await send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${token}` } })).status === 200, 10_000)), 'and proxying')
})

t.test('revocationCache: true with the in-process store says it has no effect, and nothing that contradicts it (audit)', async (t) => {
  const warnings: string[] = []
  const stream = { write: (line: string) => void warnings.push(String(JSON.parse(line).msg)) }
  const gw = await startGateway({ config: { redis: { revocationCache: true } }, logger: { level: 'warn', stream } })
  t.teardown(() => gw.close())
  t.ok(warnings.some((w) => /have no effect with the in-process store/.test(w)), 'the warning that it has no effect')
  t.notOk(warnings.some((w) => /local revocation cache on/.test(w)), 'and no line saying the cache is on')
})

t.test('a reuse Redis detects but can neither announce nor count answers 503, yet its own instance refuses the family at once (review)', async (t) => {
  const redis = await startRedis()
  const asGateway = await aclUserUrl(redis, 'gw', '~*', '&*', '+@all')
  const upstream = await startUpstream()
  const config = { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }], redis: { revocationCache: true }, tokens: { reuseGrace: '200ms' } }
  const a = await startGateway({ redisUrl: asGateway, config })
  t.teardown(async () => {
    await a.close()
    await upstream.close()
    await redis.stop()
  })
  const made = await send(`${a.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' }, headers: { 'x-session-mode': 'token' } })
  const first = made.json as { accessToken: string; refreshToken: string }
  const rotated = await send(`${a.url}/auth/refresh`, { body: { refreshToken: first.refreshToken } })
  const second = rotated.json as { accessToken: string }
  const on = (token: string) => send(`${a.url}/api/x`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status)
  t.equal(await on(second.accessToken), 200, 'A caches the session')
  await new Promise((r) => setTimeout(r, 300)) // past the grace
  await redis.client.call('ACL', 'SETUSER', 'gw', '-publish', '-incr')
  const replay = await send(`${a.url}/auth/refresh`, { body: { refreshToken: first.refreshToken } })
  t.equal(replay.status, 503, 'the reuse is revoked in the store but could not be announced: 503')
  t.equal(await on(second.accessToken), 401, 'A no longer answers the family from its memory')
  await redis.client.call('ACL', 'SETUSER', 'gw', '+publish', '+incr')
})
