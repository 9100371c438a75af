import t from 'tap'
import { Redis } from 'ioredis'
import { RedisSessionStore } from '../src/session-store/redis-store.js'
import type { RevocationEvent } from '../src/session-store/session-store.js'
import { send } from './helpers/client.js'
import { DEFAULT_USERS, startGateway } from './helpers/gateway.js'
import { aclUserUrl, startRedis } from './helpers/redis-server.js'
import { sleep, storeSuite } from './session-store.shared.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

let stores = 0
storeSuite(t, async () => {
  const client = new Redis(redis.url)
  client.on('error', () => {})
  return new RedisSessionStore(client, `suite${++stores}:`)
})

/** Every key under `prefix`, with its type and everything it holds as text. */
async function dump(prefix: string): Promise<{ key: string; type: string; content: string[] }[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await redis.client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  const out = []
  for (const key of keys) {
    const type = await redis.client.type(key)
    let content: string[] = []
    if (type === 'string') content = [(await redis.client.get(key)) ?? '']
    else if (type === 'hash') content = Object.entries(await redis.client.hgetall(key)).flat()
    else if (type === 'zset') content = await redis.client.zrange(key, 0, -1, 'WITHSCORES')
    else if (type === 'set') content = await redis.client.smembers(key)
    else if (type === 'list') content = await redis.client.lrange(key, 0, -1)
    else content = [`<unexpected type ${type}>`]
    out.push({ key, type, content })
  }
  return out
}

const tagOf = (key: string) => /\{([^}]*)\}/.exec(key)?.[1]

t.test('Redis never holds a raw refresh token; every key of a session shares the hash tag {sid}', async (t) => {
  const prefix = 'scan:'
  const gw = await startGateway({ redisUrl: redis.url, config: { redis: { keyPrefix: prefix } } })
  t.teardown(() => gw.close())
  const tokenMode = { 'x-session-mode': 'token' }
  const alice = DEFAULT_USERS[0]!
  const bob = DEFAULT_USERS[1]!

  // Session A: login, refresh, and the same token again within the grace (the sealed successor is stored).
  const a0 = await send(`${gw.url}/auth/login`, { headers: tokenMode, body: { username: alice.username, password: alice.password } })
  t.equal(a0.status, 200)
  const a1 = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: a0.json.refreshToken } })
  t.equal(a1.status, 200)
  const again = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: a0.json.refreshToken } })
  t.equal(again.json.refreshToken, a1.json.refreshToken, 'grace answer')
  // Session B: login, then logout with its access token (a denylist entry) after a failed login (a counter).
  const failed = await send(`${gw.url}/auth/login`, { body: { username: bob.username, password: 'wrong' } })
  t.equal(failed.status, 401)
  const b0 = await send(`${gw.url}/auth/login`, { headers: tokenMode, body: { username: bob.username, password: bob.password } })
  t.equal(b0.status, 200)
  // Session C: a second session of alice that stays (subject index with two families).
  const c0 = await send(`${gw.url}/auth/login`, { headers: tokenMode, body: { username: alice.username, password: alice.password } })
  const b1 = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: b0.json.refreshToken } })
  const logout = await send(`${gw.url}/auth/logout`, {
    headers: { authorization: `Bearer ${b1.json.accessToken}` },
    body: { refreshToken: b1.json.refreshToken },
  })
  t.equal(logout.status, 204)

  const refreshTokens = [a0, a1, b0, b1, c0].map((r) => r.json.refreshToken as string)
  const secrets = refreshTokens.flatMap((token) => [token, token.split('.')[2] as string, token.split('.')[3] as string])
  const accessTokens = [a0, a1, b0, b1, c0].map((r) => r.json.accessToken as string)
  const keys = await dump(prefix)
  t.ok(keys.length >= 4, `keys found: ${keys.map((k) => k.key).join(', ')}`)
  const haystack = keys.flatMap((k) => [k.key, ...k.content]).join('\n')
  for (const secret of secrets) t.notOk(haystack.includes(secret), `no key name or value holds ${secret.slice(0, 10)}...`)
  for (const token of accessTokens) t.notOk(haystack.includes(token.split('.')[2] as string), 'no access token is stored either')

  const sidOf = (token: string) => token.split('.')[0] as string
  const sids = [sidOf(refreshTokens[0]!), sidOf(refreshTokens[2]!), sidOf(refreshTokens[4]!)]
  for (const key of keys) t.ok(tagOf(key.key), `${key.key} has a hash tag`)
  for (const sid of sids) {
    const mine = keys.filter((k) => k.key.includes(sid) || k.content.some((c) => c === sid))
    const own = mine.filter((k) => k.type !== 'zset')
    for (const k of own) t.equal(tagOf(k.key), sid, `${k.key}: tagged {sid}`)
    for (const k of keys.filter((k) => tagOf(k.key) === sid)) t.ok(k.key.startsWith(`${prefix}{${sid}}:`), `${k.key} is a key of that session`)
  }
  const sessionA = keys.filter((k) => tagOf(k.key) === sids[0]).sort((x, y) => x.key.localeCompare(y.key))
  t.same(sessionA.map((k) => [k.key.slice(-2), k.type]), [[':g', 'hash'], [':s', 'hash']], 'within the grace: the session hash and the grace record (the sealed successor)')
  const graceTtl = await redis.client.pttl(sessionA[0]!.key)
  t.ok(graceTtl > 0 && graceTtl <= 10_000, `the sealed successor lives for the reuse grace only (${graceTtl} ms)`)
  const sessionC = keys.filter((k) => tagOf(k.key) === sids[2])
  t.same(sessionC.map((k) => k.type), ['hash'], 'a session never refreshed is one key')
  const sessionB = keys.filter((k) => tagOf(k.key) === sids[1])
  t.equal(sessionB.length, 1, 'a logged-out session leaves only its denylist entry')
  t.match(sessionB[0]?.key, /:d:/)
  const ttl = await redis.client.pttl(sessionB[0]!.key)
  t.ok(ttl > 0 && ttl <= 15 * 60_000 + 7_000, `the denylist entry expires with the token (${ttl} ms)`)
  for (const k of keys) {
    const pttl = await redis.client.pttl(k.key)
    t.ok(pttl > 0, `${k.key} (${k.type}) expires (pttl ${pttl})`)
  }
})

t.test('Redis memory per session', async (t) => {
  const prefix = 'mem:'
  const graceMs = 8000 // all 1,000 rotations and the measurement fit in it, however slow the machine
  const gw = await startGateway({ redisUrl: redis.url, config: { redis: { keyPrefix: prefix }, tokens: { reuseGrace: `${graceMs}ms` } } })
  t.teardown(() => gw.close())
  const sessions = gw.gateway.current().sessions
  const alice = DEFAULT_USERS[0]!
  const count = 1000
  const started = []
  for (let i = 0; i < count; i += 100) {
    started.push(...(await Promise.all(Array.from({ length: 100 }, () => sessions.start(alice.sub!, alice.claims!)))))
  }
  const sids = new Set(started.map((s) => s.sid))
  const measure = async (when: string) => {
    const keys = await dump(prefix)
    const pipeline = redis.client.pipeline()
    for (const k of keys) pipeline.call('MEMORY', 'USAGE', k.key, 'SAMPLES', '0')
    const sizes = ((await pipeline.exec()) ?? []).map(([, bytes]) => Number(bytes))
    let sessionBytes = 0
    let sessionKeys = 0
    let sharedBytes = 0
    keys.forEach((k, i) => {
      if (sids.has(tagOf(k.key) ?? '')) {
        sessionBytes += sizes[i] ?? 0
        sessionKeys++
      } else sharedBytes += sizes[i] ?? 0
    })
    const r = { perSession: sessionBytes / count, keysPerSession: sessionKeys / count, total: (sessionBytes + sharedBytes) / count }
    t.comment(
      `${when}: ${r.perSession.toFixed(0)} bytes in ${r.keysPerSession} key(s) per session, ` +
        `+ ${(sharedBytes / count).toFixed(0)} bytes per session in the subject index = ${r.total.toFixed(0)} bytes per session`,
    )
    return r
  }
  const fresh = await measure('after login')
  t.equal(fresh.keysPerSession, 1, 'one key per session')
  t.ok(fresh.total < 1024, `under 1 KiB per session after login (${fresh.total.toFixed(0)})`)

  const rotated = []
  for (let i = 0; i < count; i += 100) {
    rotated.push(...(await Promise.all(started.slice(i, i + 100).map((s) => sessions.refresh(s.refreshToken)))))
  }
  const rotatedAt = Date.now()
  t.equal(new Set(rotated.map((r) => r.sid)).size, count)
  const inGrace = await measure('within the reuse grace after a refresh')
  t.equal(inGrace.keysPerSession, 2, 'the sealed successor is a second key during the grace')
  t.ok(inGrace.total < 1024, `under 1 KiB per session within the grace (${inGrace.total.toFixed(0)})`)
  await sleep(Math.max(0, rotatedAt + graceMs - Date.now()) + 200)
  const steady = await measure('after a refresh, past the grace')
  t.equal(steady.keysPerSession, 1, 'one key per session again')
  t.ok(steady.total < 1024, `under 1 KiB per session after a refresh (${steady.total.toFixed(0)})`)
})

t.test('rate limit: a counter found without an expiry gets one (it can never block for ever)', async (t) => {
  const client = new Redis(redis.url)
  t.teardown(() => client.disconnect())
  const store = new RedisSessionStore(client, 'rlx:')
  await store.rateLimitHit(['k'], 60_000)
  const [key] = await redis.client.keys('rlx:*')
  t.ok(key, 'the counter exists')
  await redis.client.persist(key as string) // as an operator's PERSIST or an older version could leave it
  t.equal(await redis.client.pttl(key as string), -1)
  const [state] = await store.rateLimitHit(['k'], 60_000)
  t.equal(state?.count, 2, 'the count goes on')
  t.ok((state?.retryAfterMs ?? 0) > 0 && (state?.retryAfterMs ?? 0) <= 60_000, `a window again (${state?.retryAfterMs})`)
  t.ok((await redis.client.pttl(key as string)) > 0, 'the key expires again')
})

t.test('grace records are bounded: a client rotating as fast as it can leaves at most four', async (t) => {
  const prefix = 'bound:'
  const gw = await startGateway({ redisUrl: redis.url, config: { redis: { keyPrefix: prefix } } })
  t.teardown(() => gw.close())
  const login = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  let token = login.json.refreshToken as string
  for (let i = 0; i < 20; i++) {
    const next = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: token } })
    t.equal(next.status, 200)
    token = next.json.refreshToken
  }
  const sid = token.split('.')[0] as string
  t.equal(await redis.client.hlen(`${prefix}{${sid}}:g`), 4, 'four grace records after 20 rotations within the grace')
})

t.test('every revocation is announced by the script that applies it (no separate PUBLISH that could be lost)', async (t) => {
  const client = new Redis(redis.url)
  client.on('error', () => {})
  const store = new RedisSessionStore(client, 'announce:')
  t.teardown(() => store.close())
  const events: RevocationEvent[] = []
  await new Promise<void>((resolve) => void store.onRevocation((e) => events.push(e), (up) => up && resolve()))
  // A PUBLISH of its own, after the change, is lost when the instance dies or Redis fails in between: refuse any.
  let ownPublishes = 0
  client.publish = (() => {
    ownPublishes++
    return Promise.reject(new Error('no separate PUBLISH'))
  }) as typeof client.publish
  const base = { claims: {}, idleTtlMs: 60_000, absoluteTtlMs: 600_000 }
  await store.createSession({ ...base, sid: 'fam-a', sub: 'ann', refreshHash: 'h-a0' })
  await store.createSession({ ...base, sid: 'fam-b', sub: 'ann', refreshHash: 'h-b0' })
  await store.createSession({ ...base, sid: 'fam-c', sub: 'other', refreshHash: 'h-c0' })
  await store.createSession({ ...base, sid: 'fam-d', sub: 'other', refreshHash: 'h-d0' })
  const expiresAt = Date.now() + 60_000
  await store.denyAccessToken('fam-c', 'jti-1', expiresAt)
  const rotate = { sid: 'fam-c', presentedHash: 'h-c0', presentedGen: 0, nextHash: 'h-c1', sealedSuccessor: 'sealed', idleTtlMs: 60_000, graceMs: 0 }
  t.equal((await store.rotate(rotate)).kind, 'rotated')
  t.equal((await store.rotate(rotate)).kind, 'reused', 'the replay revokes the family')
  t.equal(await store.deleteSession('fam-d'), true)
  t.equal((await store.deleteSessionsOf('ann')).length, 2)
  const wanted = 5
  for (let i = 0; i < 100 && events.length < wanted; i++) await sleep(20)
  t.equal(ownPublishes, 0, 'the store never publishes on its own')
  t.same(
    events.map((e) => (e.type === 'jti' ? `jti ${e.sid} ${e.jti} ${e.expiresAt}` : `session ${e.sid}`)).sort(),
    ['jti fam-c jti-1 ' + expiresAt, 'session fam-a', 'session fam-b', 'session fam-c', 'session fam-d'].sort(),
    'the denial, the replay, the logout and both families of the logout-all are announced',
  )
  t.equal(await redis.client.exists('announce:{fam-a}:s', 'announce:{fam-b}:s', 'announce:{fam-d}:s'), 0, 'and applied')
  t.equal(await redis.client.exists('announce:{fam-c}:d:jti-1'), 1)
})

t.test('a PUBLISH the server refuses (ACL without channel rights) never fails the revocation itself (review)', async (t) => {
  const url = await aclUserUrl(redis, 'nochannels', '~*', '+@all', 'resetchannels')
  t.teardown(() => redis.client.call('ACL', 'DELUSER', 'nochannels'))
  const client = new Redis(url)
  client.on('error', () => {})
  const warnings: string[] = []
  const log = { warn: (_o: unknown, m: string) => warnings.push(m), error: () => {}, info: () => {}, debug: () => {} } as unknown as ConstructorParameters<typeof RedisSessionStore>[2]
  const store = new RedisSessionStore(client, 'acl:', log)
  t.teardown(() => store.close())
  const base = { claims: {}, idleTtlMs: 60_000, absoluteTtlMs: 600_000 }
  await store.createSession({ ...base, sid: 'acl-a', sub: 'acl', refreshHash: 'h-a0' })
  await store.createSession({ ...base, sid: 'acl-b', sub: 'acl', refreshHash: 'h-b0' })
  await store.denyAccessToken('acl-a', 'jti-1', Date.now() + 60_000)
  t.equal(await redis.client.exists('acl:{acl-a}:d:jti-1'), 1, 'the denial is applied')
  t.equal(await store.deleteSession('acl-a'), true, 'the logout is applied')
  const rotate = { sid: 'acl-b', presentedHash: 'h-b0', presentedGen: 0, nextHash: 'h-b1', sealedSuccessor: 'sealed', idleTtlMs: 60_000, graceMs: 0 }
  t.equal((await store.rotate(rotate)).kind, 'rotated')
  t.equal((await store.rotate(rotate)).kind, 'reused', 'the replay is still detected and answered as such')
  t.equal(await redis.client.hget('acl:{acl-b}:s', 'rev'), '1', 'and the family revoked')
  t.equal(warnings.filter((w) => /not announced/.test(w)).length, 3, 'each unannounced revocation is logged')
  t.equal(await redis.client.get('acl:revocations:unannounced'), '3', 'and counted in the store')
  t.same(await store.announcements(), { allowed: false, unannounced: 3 }, 'what the probe reads: refused, three missed')
  const allowed = new RedisSessionStore(new Redis(redis.url), 'acl:', log)
  t.teardown(() => allowed.close())
  t.same(await allowed.announcements(), { allowed: true, unannounced: 3 }, 'a user with the right: allowed, the same count')
})
