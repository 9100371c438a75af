// The default, strict revocation check on one Redis: sessions an instance has seen are answered from memory past a
// revocation barrier (one PING on the pub/sub connection, shared), never past a revocation made anywhere before it.
import { connect, createServer, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { send } from './helpers/client.js'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { aclUserUrl, startRedis, type TestRedis } from './helpers/redis-server.js'
import { startStack } from './helpers/stack.js'
import { startUpstream } from './helpers/upstream.js'
import { REVOCATION_COVER_MS } from '../src/sessions/revocation-cache.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Pair {
  accessToken: string
  refreshToken: string
}

async function twoInstances(t: Test, redis: TestRedis, extra: { redisUrl?: string; aUrl?: string } = {}) {
  const upstream = await startUpstream()
  const config = { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }], tokens: { reuseGrace: '200ms' } }
  const a = await startGateway({ redisUrl: extra.aUrl ?? redis.url, config })
  const b = await startGateway({ redisUrl: extra.redisUrl ?? redis.url, config, keysFile: a.keysFile })
  t.teardown(async () => {
    await a.close()
    await b.close()
    await upstream.close()
  })
  return { a, b, upstream }
}

const login = async (gw: StartedGateway): Promise<Pair> => {
  const res = await send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' }, headers: { 'x-session-mode': 'token' } })
  if (res.status !== 200) throw new Error(`login: ${res.status}`)
  return res.json as Pair
}
const call = (gw: StartedGateway, token: string) => send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${token}` } })

/** Redis calls so far by command (INFO commandstats); `scripts`: EVALSHA and EVAL (a script's first call on a connection). */
async function commandCalls(redis: TestRedis): Promise<Record<string, number>> {
  const stats = String(await redis.client.info('commandstats'))
  const calls: Record<string, number> = Object.fromEntries([...stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1], Number(m[2])]))
  return { ...calls, scripts: (calls.evalsha ?? 0) + (calls.eval ?? 0) }
}

t.test('strict mode: a revocation made on one instance is refused by the next request on another, whose memory knew the session', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { a, b } = await twoInstances(t, redis)
  for (let round = 0; round < 10; round++) {
    const pair = await login(a)
    t.equal((await call(b, pair.accessToken)).status, 200, 'B knows the session now')
    t.equal((await call(b, pair.accessToken)).status, 200, 'and answers it from memory')
    const logout = await send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${pair.accessToken}` } })
    t.equal(logout.status, 204)
    const next = await call(b, pair.accessToken)
    t.equal(next.status, 401, `round ${round}: the very next request on B, no waiting`)
  }

  const victim = await login(a)
  t.equal((await call(b, victim.accessToken)).status, 200)
  t.equal((await send(`${a.url}/auth/refresh`, { body: { refreshToken: victim.refreshToken } })).status, 200)
  await sleep(400) // past the 200 ms grace
  const replay = await send(`${a.url}/auth/refresh`, { body: { refreshToken: victim.refreshToken } })
  t.equal(replay.json.error, 'refresh_token_reused')
  t.equal((await call(b, victim.accessToken)).status, 401, 'a reuse detected on A: the family is refused on B at once')

  const one = await login(a)
  const two = await login(a)
  for (const p of [one, two]) t.equal((await call(b, p.accessToken)).status, 200)
  t.equal((await send(`${a.url}/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${one.accessToken}` } })).status, 204)
  for (const p of [one, two]) t.equal((await call(b, p.accessToken)).status, 401, 'logout-all on A: every family refused on B at once')
})

/**
 * A TCP relay to Redis whose answers to the gateway can be held back (`hold()`, then `release()`): what a slow or
 * congested link does to one instance's pub/sub, in order, nothing lost.
 */
async function holdingRelay(t: Test, redis: TestRedis, { subscriberOnly = false } = {}) {
  const downstream = new Set<Socket>()
  let held = false
  const server = createServer((client) => {
    const toRedis = connect(redis.port, '127.0.0.1')
    // subscriberOnly: only the connection that subscribes is held (the revocations, the barrier answers).
    client.on('data', (chunk: Buffer) => {
      if (!subscriberOnly || /subscribe/i.test(chunk.toString('latin1'))) {
        downstream.add(toRedis)
        if (held) toRedis.pause()
      }
      toRedis.write(chunk)
    })
    toRedis.on('data', (chunk: Buffer) => client.write(chunk))
    const end = () => {
      downstream.delete(toRedis)
      client.destroy()
      toRedis.destroy()
    }
    client.on('error', end).on('close', end)
    toRedis.on('error', end).on('close', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of downstream) socket.destroy()
    server.close()
  })
  return {
    url: `redis://127.0.0.1:${(server.address() as { port: number }).port}/0`,
    hold: () => {
      held = true
      for (const socket of downstream) socket.pause()
    },
    release: () => {
      held = false
      for (const socket of downstream) socket.resume()
    },
  }
}

t.test('strict mode: a revocation whose announcement is slow to reach B is refused by B once the client is told of it (the barrier cover and the hold)', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const relay = await holdingRelay(t, redis)
  const { a, b } = await twoInstances(t, redis, { redisUrl: relay.url })
  for (let round = 0; round < 3; round++) {
    const pair = await login(a)
    t.equal((await call(b, pair.accessToken)).status, 200, 'B knows the session')
    t.equal((await call(b, pair.accessToken)).status, 200, 'and answers it from memory, within a barrier cover')
    relay.hold() // nothing from Redis reaches B now: neither the revocation nor any barrier answer
    const logout = await send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${pair.accessToken}` } })
    t.equal(logout.status, 204)
    // Told of the logout, the client asks B at once. B's cover, from before the logout, must not answer it.
    const next = call(b, pair.accessToken)
    await sleep(100)
    relay.release()
    t.equal((await next).status, 401, `round ${round}: refused, though the announcement reached B late`)
  }
  // Told by a 401 instead: the client sees its token refused on A (which applied the logout) before the logout's
  // own answer, and asks B at once; as a Bearer token, then as an access cookie.
  for (let round = 0; round < 6; round++) {
    const viaCookie = round >= 3
    const onA = (token: string) => (viaCookie ? send(`${a.url}/api/x`, { headers: { cookie: `sg_access=${token}` } }) : call(a, token))
    const pair = await login(a)
    t.equal((await call(b, pair.accessToken)).status, 200)
    t.equal((await call(b, pair.accessToken)).status, 200)
    relay.hold()
    const logout = send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${pair.accessToken}` } })
    let refusedOnA = false
    for (let i = 0; i < 500 && !refusedOnA; i++) refusedOnA = (await onA(pair.accessToken)).status === 401
    t.ok(refusedOnA, `A refuses the token (${viaCookie ? 'cookie' : 'Bearer'})`)
    const next = call(b, pair.accessToken)
    await sleep(100)
    relay.release()
    t.equal((await next).status, 401, `round ${round}: then B refuses it too, though the announcement reached B late`)
    t.equal((await logout).status, 204)
  }
})

t.test('strict mode, cookie mode: a revoked copy of the access cookie beside a valid one still holds the answer, and the denial is counted after the hold (re-review)', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const relay = await holdingRelay(t, redis)
  const { a, b } = await twoInstances(t, redis, { redisUrl: relay.url })
  const denials = async () => [...(await send(`${a.url}/metrics`)).text.matchAll(/^sessiongate_denials_total\{reason="(?:denied|revoked|missing)"\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0)
  for (let round = 0; round < 3; round++) {
    const revoked = await login(a)
    const other = await login(a)
    t.equal((await call(b, revoked.accessToken)).status, 200)
    t.equal((await call(b, revoked.accessToken)).status, 200)
    relay.hold()
    const before = await denials()
    // The client does not wait for the logout's own (held) answer: once the session is gone from the store, it asks
    // A with both copies. An answer at once would show the revoked copy refused while B's cover still holds.
    const logout = send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${revoked.accessToken}` } })
    const sid = JSON.parse(Buffer.from(revoked.accessToken.split('.')[1] as string, 'base64url').toString()).sid as string
    for (let i = 0; i < 500 && (await redis.client.exists(`sg:{${sid}}:s`)) === 1; i++) await sleep(1)
    const both = send(`${a.url}/auth/session`, { headers: { cookie: `sg_access=${revoked.accessToken}; sg_access=${other.accessToken}` } })
    t.equal(await denials(), before, 'not counted while the answer is held')
    const session = await both
    t.equal(session.status, 200, 'the valid copy serves')
    t.equal(session.json.sid, JSON.parse(Buffer.from(other.accessToken.split('.')[1] as string, 'base64url').toString()).sid)
    t.equal(await denials(), before + 1, 'counted once the answer went out')
    const next = call(b, revoked.accessToken)
    await sleep(100)
    relay.release()
    t.equal((await next).status, 401, `round ${round}: the revoked copy is refused by B too`)
    t.equal((await logout).status, 204)
  }
})

t.test('strict mode: /auth/session that finds the session gone after the token passed from the cover holds its 401 too (review)', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const relay = await holdingRelay(t, redis, { subscriberOnly: true })
  const { a, b } = await twoInstances(t, redis, { redisUrl: relay.url })
  for (let round = 0; round < 3; round++) {
    const pair = await login(a)
    const sid = JSON.parse(Buffer.from(pair.accessToken.split('.')[1] as string, 'base64url').toString()).sid as string
    t.equal((await call(b, pair.accessToken)).status, 200)
    t.equal((await call(b, pair.accessToken)).status, 200)
    relay.hold() // B's store reads still work; what B hears of revocations does not come
    const logout = send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${pair.accessToken}` } })
    for (let i = 0; i < 500 && (await redis.client.exists(`sg:{${sid}}:s`)) === 1; i++) await sleep(1)
    const session = await send(`${b.url}/auth/session`, { headers: { authorization: `Bearer ${pair.accessToken}` } })
    t.equal(session.status, 401, 'B finds the session gone in the store')
    const next = call(b, pair.accessToken)
    await sleep(100)
    relay.release()
    t.equal((await next).status, 401, `round ${round}: told so, the client finds the token refused by B`)
    t.equal((await logout).status, 204)
  }
})

t.test('strict mode: sessions seen before cost no check of their own, only the shared barrier; a new session is asked once', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { b, a } = await twoInstances(t, redis)
  const pairs = await Promise.all(Array.from({ length: 8 }, () => login(a)))
  const before = await commandCalls(redis)
  for (const p of pairs) t.equal((await call(b, p.accessToken)).status, 200)
  const seen = await commandCalls(redis)
  t.equal(seen.scripts - before.scripts, 8, 'each session B had not seen: one check')
  await Promise.all(pairs.flatMap((p) => [call(b, p.accessToken), call(b, p.accessToken), call(b, p.accessToken)]))
  for (const p of pairs) t.equal((await call(b, p.accessToken)).status, 200)
  const after = await commandCalls(redis)
  t.equal(after.scripts - seen.scripts, 0, '32 more requests of those sessions: no check script')
  const pings = (after.ping ?? 0) - (seen.ping ?? 0)
  t.ok(pings >= 1 && pings <= 32 + 4, `barriers instead (${pings} PINGs, shared by requests waiting together, plus heartbeats)`)
})

t.test('strict mode without the barrier: a Redis user that may not PUBLISH gets a store check per request, still strict', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const limited = await aclUserUrl(redis, 'nochannels', '~*', '+@all', 'resetchannels')
  const { a, b } = await twoInstances(t, redis, { redisUrl: limited })
  const pair = await login(a)
  t.equal((await call(b, pair.accessToken)).status, 200)
  const before = await commandCalls(redis)
  t.equal((await call(b, pair.accessToken)).status, 200)
  t.equal((await commandCalls(redis)).scripts - before.scripts, 1, 'the check script ran for a session B had seen')
  t.equal((await send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${pair.accessToken}` } })).status, 204)
  t.equal((await call(b, pair.accessToken)).status, 401, 'and a revocation is refused at once')
})

t.test('strict mode: a PUBLISH right taken away at runtime, for good or for an instant, ends the answers from memory that could be stale', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const asGateway = await aclUserUrl(redis, 'gw', '~*', '&*', '+@all')
  const { a, b } = await twoInstances(t, redis, { redisUrl: asGateway, aUrl: asGateway })
  /** A session B has seen: whether B now answers it from memory (no check script for it). */
  const seenOnB = async () => {
    const pair = await login(a)
    t.equal((await call(b, pair.accessToken)).status, 200)
    const before = await commandCalls(redis)
    t.equal((await call(b, pair.accessToken)).status, 200)
    return { pair, fromMemory: (await commandCalls(redis)).scripts === before.scripts }
  }
  const logoutOnA = async (pair: Pair) =>
    t.equal((await send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${pair.accessToken}` } })).status, 204)
  /** Polls B (up to 5 s: its probe runs every second) until the session is refused. */
  const refusedByB = async (pair: Pair) => {
    for (let i = 0; i < 50; i++) {
      if ((await call(b, pair.accessToken)).status === 401) return true
      await sleep(100)
    }
    return false
  }

  // For an instant: the right goes and comes back between two of B's probes, with a revocation in between that
  // nobody could announce. B knew the session from memory.
  const flapped = await seenOnB()
  t.ok(flapped.fromMemory, 'with the right, B answers a session it has seen from memory')
  await redis.client.call('ACL', 'SETUSER', 'gw', '-publish')
  await logoutOnA(flapped.pair)
  await redis.client.call('ACL', 'SETUSER', 'gw', '+publish')
  t.ok(await refusedByB(flapped.pair), 'B refuses the session revoked unannounced (the store counts such revocations)')

  // For good: B stops answering from memory, and a session it knew before is refused once revoked.
  const knownBefore = await seenOnB()
  t.ok(knownBefore.fromMemory)
  await redis.client.call('ACL', 'SETUSER', 'gw', '-publish')
  let fromMemory = true
  for (let i = 0; i < 50 && fromMemory; i++) {
    await sleep(100)
    fromMemory = (await seenOnB()).fromMemory
  }
  t.notOk(fromMemory, 'B noticed within 5 s and asks the store for every request')
  await logoutOnA(knownBefore.pair)
  t.equal((await call(b, knownBefore.pair.accessToken)).status, 401, 'a session B knew from memory before the refusal: refused at once')

  await redis.client.call('ACL', 'SETUSER', 'gw', '+publish')
  for (let i = 0; i < 50 && !fromMemory; i++) {
    await sleep(100)
    fromMemory = (await seenOnB()).fromMemory
  }
  t.ok(fromMemory, 'the right given back: B answers from memory again within 5 s')
  t.equal((await call(b, knownBefore.pair.accessToken)).status, 401, 'and the session revoked meanwhile stays refused')
})

t.test('strict mode: the pub/sub connection killed, revocations made meanwhile are still refused; the barrier comes back', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { a, b } = await twoInstances(t, redis)
  const pair = await login(a)
  t.equal((await call(b, pair.accessToken)).status, 200)
  await redis.client.client('KILL', 'TYPE', 'pubsub')
  t.equal((await send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${pair.accessToken}` } })).status, 204)
  t.equal((await call(b, pair.accessToken)).status, 401, 'refused while (or right after) the subscription was down')
  const fresh = await login(a)
  t.equal((await call(b, fresh.accessToken)).status, 200)
  let barrierBack = false
  for (let i = 0; i < 100 && !barrierBack; i++) {
    const before = await commandCalls(redis)
    t.equal((await call(b, fresh.accessToken)).status, 200)
    barrierBack = (await commandCalls(redis)).scripts === before.scripts
    if (!barrierBack) await sleep(50)
  }
  t.ok(barrierBack, 'once resubscribed, seen sessions are answered past the barrier again')
  t.equal((await send(`${a.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${fresh.accessToken}` } })).status, 204)
  t.equal((await call(b, fresh.accessToken)).status, 401, 'and still refused at once after a logout')
})

t.test('strict mode, a frozen Redis (connections open, no answers): once the last barrier cover has lapsed, no request is answered from memory, 503 until it thaws', async (t) => {
  const { redis, gw } = await startStack(t)
  t.teardown(() => redis.thaw()) // were an assertion to fail while it is frozen
  const pair = await login(gw)
  t.equal((await call(gw, pair.accessToken)).status, 200, 'a session the instance has seen')
  redis.freeze()
  // Within REVOCATION_COVER_MS of the last barrier sent, memory may still answer (no revocation made since can have
  // been told to anyone yet); after it, the frozen barrier holds every request.
  await sleep(REVOCATION_COVER_MS + 20)
  const during = await Promise.all([call(gw, pair.accessToken), call(gw, pair.accessToken), call(gw, pair.accessToken)])
  t.same(during.map((r) => r.status), [503, 503, 503], 'the barrier gets no answer: the store is asked, and cannot say')
  t.equal(during[0]?.json.error, 'session_store_unavailable')
  t.equal((await call(gw, pair.accessToken)).status, 503, 'and the next one too')
  redis.thaw()
  let back = false
  for (let i = 0; i < 200 && !back; i++) {
    back = (await call(gw, pair.accessToken)).status === 200
    if (!back) await sleep(50)
  }
  t.ok(back, 'back once Redis answers again')
})

t.test('a strict gateway started while Redis is down stays up, fails closed, and uses the barrier once Redis is there', async (t) => {
  const { redis, gw } = await startStack(t, { redisDown: true })
  t.equal((await send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' } })).status, 503, 'login fails closed')
  await redis.resume()
  let pair: Pair | undefined
  for (let i = 0; i < 200 && !pair; i++) {
    pair = await login(gw).catch(() => undefined)
    if (!pair) await sleep(50)
  }
  t.ok(pair, 'logins work once Redis is there')
  let barrier = false
  for (let i = 0; i < 200 && !barrier && pair; i++) {
    t.equal((await call(gw, pair.accessToken)).status, 200)
    const before = await commandCalls(redis)
    t.equal((await call(gw, pair.accessToken)).status, 200)
    barrier = (await commandCalls(redis)).scripts === before.scripts
    if (!barrier) await sleep(50)
  }
  t.ok(barrier, 'and, subscribed and probed, the strict check answers a seen session past the barrier')
})
