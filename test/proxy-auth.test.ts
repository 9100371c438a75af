/**
 * Auth on the proxy path (CONTRACT §5): cookie mode with transparent refresh, bearer mode, concurrency of the
 * refresh (one process and two instances on one Redis), denylist and family revocation, `require` rules,
 * `auth: optional`, CSRF, injected identity headers and the login page redirect.
 */
import { connect } from 'node:net'
import t, { type Test } from 'tap'
import { CookieClient, send, type Reply } from './helpers/client.js'
import { afterOutsideRevocation, startGateway, type GatewayOptions, type StartedGateway } from './helpers/gateway.js'
import { freePort, startRedis } from './helpers/redis-server.js'
import { echo, startUpstream, type TestUpstream } from './helpers/upstream.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

let prefixCounter = 0

interface Setup {
  gw: StartedGateway
  upstream: TestUpstream
  prefix: string
}

/** One upstream and one gateway on the shared Redis, with its own key prefix; torn down after the test. */
async function setup(
  t: Test,
  options: { config?: Record<string, unknown>; routes?: unknown[]; extraRoutes?: unknown[]; handler?: Parameters<typeof startUpstream>[0]; keysFile?: string; prefix?: string } = {},
): Promise<Setup> {
  const upstream = await startUpstream(options.handler ?? echo)
  const prefix = options.prefix ?? `pa${++prefixCounter}:`
  const config = options.config ?? {}
  const gatewayOptions: GatewayOptions = {
    redisUrl: redis.url,
    config: {
      ...config,
      redis: { keyPrefix: prefix, ...((config.redis as object | undefined) ?? {}) },
      routes: [...(options.routes ?? [{ name: 'api', prefix: '/api', upstream: upstream.url }]), ...(options.extraRoutes ?? [])],
    },
    ...(options.keysFile ? { keysFile: options.keysFile } : {}),
  }
  const gw = await startGateway(gatewayOptions)
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
  })
  return { gw, upstream, prefix }
}

/** Login in token mode (`X-Session-Mode: token`): the tokens come in the body, no cookies. */
async function tokenLogin(base: string, username: string, password: string): Promise<{ accessToken: string; refreshToken: string; reply: Reply }> {
  const reply = await send(`${base}/auth/login`, { method: 'POST', headers: { 'x-session-mode': 'token' }, body: { username, password } })
  if (reply.status !== 200) throw new Error(`login failed: ${reply.status} ${reply.text}`)
  return { accessToken: reply.json.accessToken, refreshToken: reply.json.refreshToken, reply }
}

/** The session hashes (`<prefix>{sid}:s`) under a key prefix, found by SCAN. */
async function sessionKeys(prefix: string): Promise<string[]> {
  const found: string[] = []
  let cursor = '0'
  do {
    const [next, keys] = await redis.client.scan(cursor, 'MATCH', `${prefix}*:s`, 'COUNT', 1000)
    cursor = next
    found.push(...keys)
  } while (cursor !== '0')
  return found
}

async function onlySession(t: Test, prefix: string): Promise<Record<string, string>> {
  const keys = await sessionKeys(prefix)
  t.equal(keys.length, 1, 'exactly one session hash in Redis')
  return redis.client.hgetall(keys[0] as string)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function expOf(jwt: string): number {
  return (JSON.parse(Buffer.from(jwt.split('.')[1] as string, 'base64url').toString('utf8')) as { exp: number }).exp * 1000
}

/** Sleeps until the JWT's `exp` has passed (so it is expired with clockTolerance 0). */
async function untilExpired(jwt: string): Promise<void> {
  await sleep(Math.max(0, expOf(jwt) - Date.now()) + 100)
}

/** Sleeps until less than `aheadMs` is left on the JWT (but it has not expired). */
async function untilNearExpiry(jwt: string, aheadMs: number): Promise<void> {
  await sleep(Math.max(0, expOf(jwt) - aheadMs - Date.now()) + 100)
}

/** A raw HTTP/1.1 exchange (undici refuses custom Connection headers); returns the status line and head. */
function rawRequest(port: number, lines: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let data = ''
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      data += chunk
    })
    socket.on('end', () => resolve(data))
    socket.on('error', reject)
    socket.setTimeout(5000, () => {
      socket.destroy()
      reject(new Error('raw request timed out'))
    })
    socket.write(`${lines.join('\r\n')}\r\n\r\n`)
  })
}

t.test('cookie mode', async (t) => {
  t.test('a valid access cookie is forwarded as the Bearer; gateway cookies and the client Authorization are not', async (t) => {
    const { gw, upstream } = await setup(t)
    const client = new CookieClient(gw.url)
    t.equal((await client.login('alice', 'alice-pw')).status, 200)
    const access = client.jar.get('sg_access')
    t.ok(access, 'access cookie set at login')
    t.ok(client.jar.get('sg_refresh'), 'refresh cookie set at login')
    client.jar.set('theme', 'dark')
    const res = await client.send('/api/orders', { headers: { authorization: 'Bearer forged.client.token' } })
    t.equal(res.status, 200)
    t.equal(upstream.requests.length, 1)
    const seen = upstream.last()!.headers
    t.equal(seen.authorization, `Bearer ${access}`, 'exactly the access token from the cookie')
    t.equal(seen.cookie, 'theme=dark', 'other cookies pass, the gateway cookies do not')
    t.same(res.setCookies, [], 'no refresh, no new cookies')
  })

  t.test('near expiry with a valid refresh: rotated on the way, new cookies merged with the upstream ones', async (t) => {
    const { gw, upstream, prefix } = await setup(t, {
      config: { tokens: { accessTtl: '2s', refreshAhead: '1500ms', reuseGrace: '500ms' } },
      handler: (_req, res, recorded) => {
        res.setHeader('set-cookie', ['upstream_pref=1; Path=/', 'upstream_other=2; Path=/'])
        echo(_req, res, recorded)
      },
    })
    const client = new CookieClient(gw.url)
    t.equal((await client.login('alice', 'alice-pw')).status, 200)
    const oldAccess = client.jar.get('sg_access') as string
    const oldRefresh = client.jar.get('sg_refresh') as string
    await untilNearExpiry(oldAccess, 1500)
    t.ok(expOf(oldAccess) > Date.now(), 'the access token has not expired yet')
    const res = await client.send('/api/orders')
    t.equal(res.status, 200)
    const forwarded = upstream.last()!.headers.authorization as string
    t.match(forwarded, /^Bearer ey/)
    t.not(forwarded, `Bearer ${oldAccess}`, 'the upstream sees a new access token')
    const names = res.setCookies.map((c) => c.split('=')[0])
    t.same(names.sort(), ['sg_access', 'sg_refresh', 'upstream_other', 'upstream_pref'], 'gateway and upstream cookies together')
    const newAccess = client.jar.get('sg_access')
    t.equal(forwarded, `Bearer ${newAccess}`, 'the forwarded token is the one given to the client')
    t.not(client.jar.get('sg_refresh'), oldRefresh, 'a new refresh token')
    for (const line of res.setCookies.filter((c) => c.startsWith('sg_'))) {
      t.match(line, /HttpOnly/i)
      t.match(line, /Path=\//)
      t.match(line, /Max-Age=\d+/)
    }
    t.equal((await onlySession(t, prefix)).gen, '1')

    await sleep(700)
    const replay = await send(`${gw.url}/auth/refresh`, { method: 'POST', body: { refreshToken: oldRefresh } })
    t.equal(replay.status, 401)
    t.equal(replay.json.error, 'refresh_token_reused', 'the old refresh token is a replay after the grace')
    t.equal((await onlySession(t, prefix)).rev, '1', 'family revoked')
  })

  t.test('near expiry, the same old cookies again within the grace: the same successor pair, sequential or parallel', async (t) => {
    // A grace answer repeats the pair only while the rotation's access token is not near expiry itself
    // (accessTtl − refreshAhead after the rotation): 2.5 s here, so that a slow machine cannot decide.
    const { gw, upstream, prefix } = await setup(t, { config: { tokens: { accessTtl: '4s', refreshAhead: '1500ms', reuseGrace: '5s' } } })
    const client = new CookieClient(gw.url)
    t.equal((await client.login('alice', 'alice-pw')).status, 200)
    const oldCookies = client.cookieHeader()
    await untilNearExpiry(client.jar.get('sg_access') as string, 1500)
    const ours = (lines: string[]) => lines.filter((c) => c.startsWith('sg_')).map((c) => c.split(';')[0]).sort()
    const first = await send(`${gw.url}/api/orders`, { headers: { cookie: oldCookies } })
    t.equal(first.status, 200)
    const pair = ours(first.setCookies)
    t.equal(pair.length, 2, 'the first request rotates')
    const forwarded = upstream.last()!.headers.authorization
    const again = await send(`${gw.url}/api/orders`, { headers: { cookie: oldCookies } })
    t.equal(again.status, 200)
    t.same(ours(again.setCookies), pair, 'a second request with the old cookies gets the same pair')
    t.equal(upstream.last()!.headers.authorization, forwarded, 'and is forwarded with the same new access token')
    const burst = await Promise.all(Array.from({ length: 8 }, () => send(`${gw.url}/api/orders`, { headers: { cookie: oldCookies } })))
    t.same(burst.map((r) => r.status), Array(8).fill(200), 'a parallel burst with the old cookies: all 200')
    t.ok(burst.every((r) => JSON.stringify(ours(r.setCookies)) === JSON.stringify(pair)), 'each with the same pair')
    t.equal((await onlySession(t, prefix)).gen, '1', 'one rotation in all')
    t.equal((await onlySession(t, prefix)).rev, '0', 'no reuse alarm')
  })

  t.test("another session's valid access token does not let a replayed refresh token pass as an early refresh", async (t) => {
    const { gw, upstream, prefix } = await setup(t, { config: { tokens: { accessTtl: '2s', refreshAhead: '1500ms', reuseGrace: '200ms' } } })
    const victim = new CookieClient(gw.url)
    await victim.login('alice', 'alice-pw')
    const stolen = victim.jar.get('sg_refresh') as string
    t.equal((await send(`${gw.url}/auth/refresh`, { method: 'POST', body: { refreshToken: stolen } })).status, 200, 'the victim rotated')
    await sleep(300) // past the grace: presenting the stolen token now is a replay
    const attacker = new CookieClient(gw.url)
    await attacker.login('bob', 'bob-pw')
    await untilNearExpiry(attacker.jar.get('sg_access') as string, 1500)
    const before = upstream.requests.length
    const mixed = await send(`${gw.url}/api/orders`, { headers: { cookie: `sg_access=${attacker.jar.get('sg_access')}; sg_refresh=${stolen}` } })
    t.equal(mixed.status, 401, 'refused')
    t.equal(mixed.json.error, 'unauthenticated')
    t.equal(upstream.requests.length, before, 'the upstream sees nothing')
    const keys = await sessionKeys(prefix)
    const sessions = await Promise.all(keys.map((k) => redis.client.hgetall(k)))
    t.equal(sessions.filter((h) => h.rev === '1').length, 1, "the stolen token's family is revoked (reuse detected)")
    t.equal((await attacker.send('/auth/session')).status, 200, "the other session is not touched")
  })

  t.test('a login always starts a new session, whatever cookies it carries (no fixation)', async (t) => {
    const { gw, upstream, prefix } = await setup(t)
    const client = new CookieClient(gw.url)
    await client.login('alice', 'alice-pw')
    const first = await client.send('/auth/session')
    t.equal(first.status, 200)
    const again = await client.login('bob', 'bob-pw')
    t.equal(again.status, 200)
    const second = await client.send('/auth/session')
    t.not(second.json.sid, first.json.sid, 'a new sid')
    t.equal(second.json.sub, 'user-2')
    t.equal((await sessionKeys(prefix)).length, 2)
    t.equal((await client.send('/api/orders')).status, 200)
    t.match(upstream.last()!.headers.authorization, /^Bearer /)
    const payload = JSON.parse(Buffer.from((upstream.last()!.headers.authorization as string).split('.')[1] as string, 'base64url').toString('utf8'))
    t.equal(payload.sub, 'user-2', 'the upstream sees the new identity')
    t.equal(payload.sid, second.json.sid)
  })

  t.test('expired access and no refresh cookie: 401 unauthenticated, upstream not called', async (t) => {
    const { gw, upstream } = await setup(t, { config: { tokens: { accessTtl: '1s', refreshAhead: '500ms', clockTolerance: 0 } } })
    const client = new CookieClient(gw.url)
    t.equal((await client.login('alice', 'alice-pw')).status, 200)
    client.jar.delete('sg_refresh')
    await untilExpired(client.jar.get('sg_access') as string)
    const res = await client.send('/api/orders', { headers: { accept: 'application/json' } })
    t.equal(res.status, 401)
    t.equal(res.json.error, 'unauthenticated')
    t.equal(res.headers['cache-control'], 'no-store')
    t.equal(upstream.requests.length, 0)
  })

  t.test('a POST body survives a transparent refresh', async (t) => {
    const { gw, upstream, prefix } = await setup(t, { config: { tokens: { accessTtl: '1s', refreshAhead: '500ms', clockTolerance: 0 } } })
    const client = new CookieClient(gw.url)
    t.equal((await client.login('alice', 'alice-pw')).status, 200)
    const oldAccess = client.jar.get('sg_access')
    await untilExpired(oldAccess as string)
    const payload = JSON.stringify({ items: Array.from({ length: 5000 }, (_, i) => ({ i, name: `item-${i}` })) })
    const res = await client.send('/api/orders', {
      method: 'POST',
      headers: { 'x-csrf': '1', 'content-type': 'application/json' },
      body: payload,
    })
    t.equal(res.status, 200)
    const seen = upstream.last()!
    t.equal(seen.method, 'POST')
    t.equal(seen.body.length, payload.length, 'full body length')
    t.equal(seen.body, payload, 'the body reaches the upstream intact')
    t.not(seen.headers.authorization, `Bearer ${oldAccess}`)
    t.equal(seen.headers.authorization, `Bearer ${client.jar.get('sg_access')}`)
    t.equal((await onlySession(t, prefix)).gen, '1')

    const text = 'plain text body, not JSON'
    const res2 = await client.send('/api/notes', { method: 'PUT', headers: { 'x-csrf': '1', 'content-type': 'text/plain' }, body: text })
    t.equal(res2.status, 200)
    t.equal(upstream.last()!.body, text)

    const binary = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251))
    const res3 = await client.send('/api/blobs', { method: 'POST', headers: { 'x-csrf': '1' }, body: binary })
    t.equal(res3.status, 200, 'a body without Content-Type')
    t.equal(upstream.last()!.body, binary.toString('utf8'))

    const head = await rawRequest(gw.port, [
      'POST /api/chunks HTTP/1.1',
      `Host: 127.0.0.1:${gw.port}`,
      `Cookie: ${client.cookieHeader()}`,
      'X-CSRF: 1',
      'Content-Type: text/plain',
      'Transfer-Encoding: chunked',
      'Connection: close',
      '',
      '5\r\nhello\r\n6\r\n world\r\n0\r\n',
    ])
    t.match(head, /^HTTP\/1\.1 200 /)
    t.equal(upstream.last()!.body, 'hello world', 'a chunked body')
  })

  t.test('new cookies reach the client even when the upstream fails after a rotation', async (t) => {
    const closedPort = await freePort()
    const upstream = await startUpstream()
    const { gw, prefix } = await setup(t, {
      config: { tokens: { accessTtl: '2s', refreshAhead: '1500ms', reuseGrace: '300ms' } },
      routes: [
        { name: 'down', prefix: '/down', upstream: `http://127.0.0.1:${closedPort}` },
        { name: 'api', prefix: '/api', upstream: upstream.url },
      ],
    })
    t.teardown(() => upstream.close())
    const client = new CookieClient(gw.url)
    await client.login('alice', 'alice-pw')
    const oldRefresh = client.jar.get('sg_refresh')
    await untilNearExpiry(client.jar.get('sg_access') as string, 1500)
    const res = await client.send('/down/x')
    t.equal(res.status, 502)
    t.equal(res.json.error, 'bad_gateway')
    t.same(res.setCookies.map((c) => c.split('=')[0]).sort(), ['sg_access', 'sg_refresh'], 'the rotated pair is still delivered')
    t.not(client.jar.get('sg_refresh'), oldRefresh)
    t.equal((await onlySession(t, prefix)).gen, '1')
    await sleep(400)
    const after = await client.send('/api/orders')
    t.equal(after.status, 200, 'the session goes on with the delivered pair')
    t.equal((await onlySession(t, prefix)).rev, '0')
  })
})

t.test('bearer mode', async (t) => {
  t.test('a valid Bearer is forwarded; an invalid one is 401 invalid_token without calling the upstream', async (t) => {
    const { gw, upstream } = await setup(t)
    const { accessToken, reply } = await tokenLogin(gw.url, 'alice', 'alice-pw')
    t.same(reply.setCookies, [], 'token mode login sets no cookies')
    const ok = await send(`${gw.url}/api/orders`, { headers: { authorization: `Bearer ${accessToken}` } })
    t.equal(ok.status, 200)
    t.equal(upstream.last()!.headers.authorization, `Bearer ${accessToken}`)

    const before = upstream.requests.length
    for (const header of ['Bearer not-a-token', `Bearer ${accessToken.slice(0, -3)}abc`, 'Basic YWxpY2U6YWxpY2UtcHc=', 'Bearer ']) {
      const bad = await send(`${gw.url}/api/orders`, { headers: { authorization: header } })
      t.equal(bad.status, 401, header)
      t.equal(bad.json.error, 'unauthenticated')
      t.equal(bad.headers['www-authenticate'], 'Bearer error="invalid_token"')
      t.same(bad.setCookies, [], 'bearer mode never touches cookies')
    }
    t.equal(upstream.requests.length, before, 'upstream never called')
  })

  t.test('no refresh in bearer mode, even near expiry', async (t) => {
    const { gw, upstream, prefix } = await setup(t, { config: { tokens: { accessTtl: '2s', refreshAhead: '1500ms' } } })
    const { accessToken } = await tokenLogin(gw.url, 'alice', 'alice-pw')
    await untilNearExpiry(accessToken, 1500)
    const res = await send(`${gw.url}/api/orders`, { headers: { authorization: `Bearer ${accessToken}` } })
    t.equal(res.status, 200)
    t.equal(upstream.last()!.headers.authorization, `Bearer ${accessToken}`, 'forwarded as is')
    t.same(res.setCookies, [])
    t.equal((await onlySession(t, prefix)).gen, '0', 'no rotation')
  })
})

t.test('concurrent requests right after the access token expired', async (t) => {
  // accessTtl − refreshAhead = 2.5 s: the burst's grace answers all fall well within it, however slow the machine.
  const tokens = { accessTtl: '3s', refreshAhead: '500ms', clockTolerance: 0 }

  async function burst(t: Test, gateways: StartedGateway[], upstream: TestUpstream, prefix: string): Promise<void> {
    const client = new CookieClient(gateways[0]!.url)
    t.equal((await client.login('alice', 'alice-pw')).status, 200)
    const oldAccess = client.jar.get('sg_access')
    const cookie = client.cookieHeader()
    await untilExpired(oldAccess as string)
    const before = upstream.requests.length
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) => send(`${gateways[i % gateways.length]!.url}/api/orders?i=${i}`, { headers: { cookie } })),
    )
    t.same(replies.map((r) => r.status), Array(50).fill(200), 'all 50 answered 200')
    const forwarded = new Set(upstream.requests.slice(before).map((r) => r.headers.authorization))
    t.equal(forwarded.size, 1, 'every request forwarded with the same successor access token')
    t.notOk(forwarded.has(`Bearer ${oldAccess}`))
    const accessCookies = new Set(replies.map((r) => r.setCookies.find((c) => c.startsWith('sg_access='))))
    const refreshCookies = new Set(replies.map((r) => r.setCookies.find((c) => c.startsWith('sg_refresh='))))
    t.equal(accessCookies.size, 1, 'one successor access cookie')
    t.equal(refreshCookies.size, 1, 'one successor refresh cookie')
    const session = await onlySession(t, prefix)
    t.equal(session.gen, '1', 'exactly one new generation')
    t.equal(session.rev, '0', 'not revoked')

    client.absorb(replies[0]!.setCookies)
    for (const gw of gateways) {
      const again = await send(`${gw.url}/api/orders`, { headers: { cookie: client.cookieHeader() } })
      t.equal(again.status, 200, 'the session still works')
      client.absorb(again.setCookies)
    }
    t.equal((await onlySession(t, prefix)).rev, '0', 'still not revoked')
  }

  t.test('one gateway', async (t) => {
    const { gw, upstream, prefix } = await setup(t, { config: { tokens } })
    await burst(t, [gw], upstream, prefix)
  })

  t.test('two gateways on one Redis with the same keys', async (t) => {
    const first = await setup(t, { config: { tokens } })
    const gw2 = await startGateway({
      redisUrl: redis.url,
      keysFile: first.gw.keysFile,
      config: { tokens, redis: { keyPrefix: first.prefix }, routes: [{ name: 'api', prefix: '/api', upstream: first.upstream.url }] },
    })
    t.teardown(() => gw2.close())
    await burst(t, [first.gw, gw2], first.upstream, first.prefix)
  })
})

t.test('revocation', async (t) => {
  t.test('a logged-out access token (denylisted jti) is refused', async (t) => {
    const { gw, upstream, prefix } = await setup(t)
    const { accessToken } = await tokenLogin(gw.url, 'alice', 'alice-pw')
    const bearer = { authorization: `Bearer ${accessToken}` }
    t.equal((await send(`${gw.url}/api/orders`, { headers: bearer })).status, 200)
    const logout = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: bearer })
    t.equal(logout.status, 204)
    const denied = await redis.client.keys(`${prefix}*:d:*`)
    t.equal(denied.length, 1, 'the jti is on the denylist')
    t.ok((await redis.client.pttl(denied[0] as string)) > 0, 'the denylist entry expires')
    const before = upstream.requests.length
    const res = await send(`${gw.url}/api/orders`, { headers: bearer })
    t.equal(res.status, 401)
    t.equal(res.json.error, 'unauthenticated')
    t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"')
    t.equal(upstream.requests.length, before)
  })

  t.test('a denylisted jti is refused even while its session lives on', async (t) => {
    // Deny the jti only (as logout does first), leaving the family: the denylist alone must refuse the token.
    const { gw, prefix } = await setup(t)
    const { accessToken } = await tokenLogin(gw.url, 'alice', 'alice-pw')
    const verified = await gw.gateway.current().sessions.verifier.verify(accessToken)
    await gw.gateway.store.denyAccessToken(verified.sid, verified.jti, verified.expiresAt)
    await afterOutsideRevocation() // written behind the gateway's back, as another instance would: refused within the cover
    t.equal((await onlySession(t, prefix)).rev, '0')
    const res = await send(`${gw.url}/api/orders`, { headers: { authorization: `Bearer ${accessToken}` } })
    t.equal(res.status, 401)
  })

  t.test('reuse detection revokes the family: its access tokens are refused at once', async (t) => {
    const { gw, upstream, prefix } = await setup(t, { config: { tokens: { reuseGrace: '300ms' } } })
    const client = new CookieClient(gw.url)
    t.equal((await client.login('alice', 'alice-pw')).status, 200)
    const firstRefresh = client.jar.get('sg_refresh') as string
    const refreshed = await client.send('/auth/refresh', { method: 'POST', headers: { 'x-csrf': '1' } })
    t.equal(refreshed.status, 200)
    t.not(client.jar.get('sg_refresh'), firstRefresh)
    t.equal((await client.send('/api/orders')).status, 200, 'the rotated session works')
    const bearerToken = client.jar.get('sg_access') as string
    t.equal((await send(`${gw.url}/api/orders`, { headers: { authorization: `Bearer ${bearerToken}` } })).status, 200)

    await sleep(500)
    const replay = await send(`${gw.url}/auth/refresh`, { method: 'POST', body: { refreshToken: firstRefresh } })
    t.equal(replay.status, 401)
    t.equal(replay.json.error, 'refresh_token_reused')
    t.equal((await onlySession(t, prefix)).rev, '1')

    const before = upstream.requests.length
    const asBearer = await send(`${gw.url}/api/orders`, { headers: { authorization: `Bearer ${bearerToken}` } })
    t.equal(asBearer.status, 401, 'the access token of the revoked family is refused as a Bearer')
    const asCookie = await client.send('/api/orders')
    t.equal(asCookie.status, 401, 'and as a cookie (no refresh from a revoked family)')
    t.equal(asCookie.json.error, 'unauthenticated')
    t.equal(upstream.requests.length, before, 'upstream not called')
    t.equal(client.jar.size, 0, 'the gateway cookies are cleared')
  })
})

t.test('route rules', async (t) => {
  t.test('require: roles [admin] -> 403 for bob, 200 for alice', async (t) => {
    const upstream = await startUpstream()
    const { gw } = await setup(t, {
      routes: [
        { name: 'admin', prefix: '/admin', upstream: upstream.url, require: { roles: ['admin'] } },
        { name: 'api', prefix: '/api', upstream: upstream.url },
      ],
    })
    t.teardown(() => upstream.close())
    const bob = new CookieClient(gw.url)
    await bob.login('bob', 'bob-pw')
    const denied = await bob.send('/admin/users')
    t.equal(denied.status, 403)
    t.equal(denied.json.error, 'forbidden')
    t.equal(upstream.requests.length, 0)
    t.equal((await bob.send('/api/orders')).status, 200, 'bob may use the other route')
    t.ok(bob.jar.get('sg_access'), 'a 403 does not clear the session')

    const { accessToken: bobToken } = await tokenLogin(gw.url, 'bob', 'bob-pw')
    t.equal((await send(`${gw.url}/admin/users`, { headers: { authorization: `Bearer ${bobToken}` } })).status, 403, 'bearer too')

    const alice = new CookieClient(gw.url)
    await alice.login('alice', 'alice-pw')
    const allowed = await alice.send('/admin/users')
    t.equal(allowed.status, 200)
    t.equal(upstream.last()!.url, '/admin/users')
  })

  t.test('corsPreflight: a CORS preflight passes without credentials to the upstream; nothing else does', async (t) => {
    const corsAnswer: Parameters<typeof startUpstream>[0] = (req, res) => {
      res.statusCode = 204
      res.setHeader('access-control-allow-origin', req.headers.origin ?? '')
      res.setHeader('access-control-allow-methods', 'PUT')
      res.setHeader('access-control-allow-credentials', 'true')
      res.end()
    }
    const upstream = await startUpstream(corsAnswer)
    t.teardown(() => upstream.close())
    const { gw } = await setup(t, {
      routes: [
        { name: 'cors', prefix: '/cors', upstream: upstream.url, corsPreflight: true, headers: { 'X-User-Id': '{sub}' } },
        { name: 'plain', prefix: '/plain', upstream: upstream.url },
      ],
    })
    const forged = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.'
    const preflight = {
      origin: 'https://spa.example', 'access-control-request-method': 'PUT', 'x-user-id': 'spoofed',
      cookie: 'sg_access=forged; theme=dark', authorization: `Bearer ${forged}`,
    }
    const passed = await send(`${gw.url}/cors/orders/7`, { method: 'OPTIONS', headers: preflight })
    t.equal(passed.status, 204, 'the upstream answers the preflight')
    t.equal(passed.headers['access-control-allow-origin'], 'https://spa.example')
    t.equal(upstream.requests.length, 1)
    const seen = upstream.last()!
    t.equal(seen.method, 'OPTIONS')
    t.notOk(seen.headers.authorization, "no identity goes with a preflight: a client's Authorization is removed, not passed on unchecked")
    t.notOk(seen.headers['x-user-id'], 'a client copy of an injected header is still removed')
    t.equal(seen.headers.cookie, 'theme=dark', "the gateway's cookie names are still removed")

    const plainOptions = await send(`${gw.url}/cors/orders/7`, { method: 'OPTIONS', headers: { origin: 'https://spa.example' } })
    t.equal(plainOptions.status, 401, 'an OPTIONS without Access-Control-Request-Method is no preflight: auth as usual')
    const otherRoute = await send(`${gw.url}/plain/orders/7`, { method: 'OPTIONS', headers: preflight })
    t.equal(otherRoute.status, 401, 'off by default: the preflight needs credentials like any request')
    const put = await send(`${gw.url}/cors/orders/7`, { method: 'PUT', headers: { origin: 'https://spa.example', 'access-control-request-method': 'PUT' } })
    t.equal(put.status, 401, 'only OPTIONS')
    const withBody = await send(`${gw.url}/cors/orders/7`, { method: 'OPTIONS', headers: { origin: 'https://spa.example', 'access-control-request-method': 'PUT' }, body: { drop: 'table' } })
    t.equal(withBody.status, 401, 'an OPTIONS with a body is no preflight (browsers send none): auth as usual')
    t.equal(upstream.requests.length, 1, 'none of those reached the upstream')
  })

  t.test('auth: optional', async (t) => {
    const upstream = await startUpstream()
    const { gw } = await setup(t, {
      routes: [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'optional', headers: { 'X-User-Id': '{sub}', 'X-User-Roles': '{roles}' } }],
    })
    t.teardown(() => upstream.close())
    const anonymous = await send(`${gw.url}/open/feed`, { headers: { 'x-user-id': 'user-1', 'x-user-roles': 'admin' } })
    t.equal(anonymous.status, 200)
    const anon = upstream.last()!.headers
    t.notOk(anon.authorization, 'no Authorization for an anonymous request')
    t.notOk(anon['x-user-id'], 'no spoofed identity header')
    t.notOk(anon['x-user-roles'])

    const client = new CookieClient(gw.url)
    await client.login('alice', 'alice-pw')
    const signedIn = await client.send('/open/feed')
    t.equal(signedIn.status, 200)
    const seen = upstream.last()!.headers
    t.equal(seen.authorization, `Bearer ${client.jar.get('sg_access')}`)
    t.equal(seen['x-user-id'], 'user-1')
    t.equal(seen['x-user-roles'], 'admin')
  })

  t.test('CSRF in cookie mode', async (t) => {
    const { gw, upstream } = await setup(t, { config: { csrf: { allowedOrigins: ['https://app.example'] } } })
    const client = new CookieClient(gw.url)
    await client.login('alice', 'alice-pw')
    const body = 'x=1'
    const headers = { 'content-type': 'application/x-www-form-urlencoded' }

    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      const res = await client.send('/api/orders', { method, headers, body })
      t.equal(res.status, 403, `${method} without X-CSRF`)
      t.equal(res.json.error, 'csrf')
    }
    t.equal(upstream.requests.length, 0, 'upstream not called')
    t.ok(client.jar.get('sg_access'), 'a CSRF refusal leaves the session alone')

    const withHeader = await client.send('/api/orders', { method: 'POST', headers: { ...headers, 'x-csrf': '1' }, body })
    t.equal(withHeader.status, 200)
    t.equal(upstream.last()!.body, body)
    const allowedOrigin = await client.send('/api/orders', { method: 'POST', headers: { ...headers, origin: 'https://app.example' }, body })
    t.equal(allowedOrigin.status, 200, 'allowed Origin')
    const otherOrigin = await client.send('/api/orders', { method: 'POST', headers: { ...headers, origin: 'https://evil.example' }, body })
    t.equal(otherOrigin.status, 403, 'other Origin')
    t.equal(otherOrigin.json.error, 'csrf')
    const wrongValue = await client.send('/api/orders', { method: 'POST', headers: { ...headers, 'x-csrf': '0' }, body })
    t.equal(wrongValue.status, 403, 'X-CSRF must be 1')
    t.equal((await client.send('/api/orders')).status, 200, 'GET needs nothing')

    const { accessToken } = await tokenLogin(gw.url, 'alice', 'alice-pw')
    const bearerPost = await send(`${gw.url}/api/orders`, { method: 'POST', headers: { ...headers, authorization: `Bearer ${accessToken}` }, body })
    t.equal(bearerPost.status, 200, 'bearer mode needs no CSRF header')
  })

  t.test('injected identity headers cannot be spoofed or stripped', async (t) => {
    const upstream = await startUpstream()
    const { gw } = await setup(t, {
      routes: [{ name: 'api', prefix: '/api', upstream: upstream.url, headers: { 'X-User-Id': '{sub}', 'X-User-Roles': '{roles}' } }],
    })
    t.teardown(() => upstream.close())
    const client = new CookieClient(gw.url)
    await client.login('alice', 'alice-pw')
    const access = client.jar.get('sg_access')
    const res = await client.send('/api/orders', { headers: { 'x-user-id': 'admin-spoof', 'X-User-Roles': 'root' } })
    t.equal(res.status, 200)
    const seen = upstream.last()!.headers
    t.equal(seen['x-user-id'], 'user-1', 'the real sub replaces the spoofed one')
    t.equal(seen['x-user-roles'], 'admin')

    const head = await rawRequest(gw.port, [
      'GET /api/orders HTTP/1.1',
      `Host: 127.0.0.1:${gw.port}`,
      `Cookie: ${client.cookieHeader()}`,
      'X-User-Id: spoofed',
      'Connection: close, authorization, x-user-id, x-user-roles',
    ])
    t.match(head, /^HTTP\/1\.1 200 /)
    const stripped = upstream.last()!.headers
    t.equal(stripped.authorization, `Bearer ${access}`, 'Connection cannot strip the Authorization the gateway adds')
    t.equal(stripped['x-user-id'], 'user-1', 'nor the identity headers')
    t.equal(stripped['x-user-roles'], 'admin')
    t.notOk(stripped.connection?.includes('authorization'), 'the client Connection header is not forwarded')
  })
})

t.test('login page', async (t) => {
  // The page is served by a public route of its own (a page under a protected route, or under none, is refused).
  const pageRoute = { name: 'page', prefix: '/login', upstream: 'http://127.0.0.1:9/public', auth: 'public' }
  const { gw, upstream } = await setup(t, { config: { login: { page: '/login' } }, extraRoutes: [pageRoute] })
  const html = await send(`${gw.url}/api/orders?next=https://evil.example`, {
    headers: { accept: 'text/html,application/xhtml+xml', 'x-forwarded-host': 'evil.example', host: 'evil.example' },
  })
  t.equal(html.status, 302)
  t.equal(html.headers.location, '/login', 'exactly the configured page')

  const xhr = await send(`${gw.url}/api/orders`, { headers: { accept: 'application/json' } })
  t.equal(xhr.status, 401)
  t.equal(xhr.json.error, 'unauthenticated')
  t.notOk(xhr.headers.location)

  const htmlPost = await send(`${gw.url}/api/orders`, { method: 'POST', headers: { accept: 'text/html' }, body: 'a=1' })
  t.equal(htmlPost.status, 401, 'only GET navigations are redirected')

  // Not navigations, though they accept HTML: each gets the JSON 401, never a 302.
  const notNavigations: [string, Record<string, string>][] = [
    ['an XHR library (X-Requested-With)', { accept: 'text/html,*/*', 'x-requested-with': 'XMLHttpRequest' }],
    ['fetch() as the browser labels it (Sec-Fetch-Mode: cors)', { accept: 'text/html', 'sec-fetch-mode': 'cors' }],
    ['HTML accepted but not preferred', { accept: 'application/json, text/html;q=0.1' }],
    ['HTML listed first but ranked below JSON (audit)', { accept: 'text/html;q=0.1, application/json' }],
    ['a Bearer client', { accept: 'text/html', authorization: 'Bearer bad' }],
  ]
  for (const [what, headers] of notNavigations) {
    const res = await send(`${gw.url}/api/orders`, { headers })
    t.equal(res.status, 401, what)
    t.equal(res.json?.error, 'unauthenticated', what)
    t.notOk(res.headers.location, what)
  }
  const bearer = await send(`${gw.url}/api/orders`, { headers: { accept: 'text/html', authorization: 'Bearer bad' } })
  t.equal(bearer.headers['www-authenticate'], 'Bearer error="invalid_token"', 'a Bearer 401 keeps its challenge')
  const navigate = await send(`${gw.url}/api/orders`, { headers: { accept: 'text/html', 'sec-fetch-mode': 'navigate' } })
  t.equal(navigate.status, 302, 'a navigation the browser labels as one')
  const ranked = await send(`${gw.url}/api/orders`, { headers: { accept: 'text/html;q=0.9, */*;q=0.1' } })
  t.equal(ranked.status, 302, 'HTML first and ranked above everything else')

  const client = new CookieClient(gw.url)
  await client.login('alice', 'alice-pw')
  const signedIn = await client.send('/api/orders', { headers: { accept: 'text/html' } })
  t.equal(signedIn.status, 200, 'a signed-in navigation is proxied')
  t.equal(upstream.requests.length, 1)
})
