/**
 * Attacks on sessions (OWASP session management cheat sheet, RFC 9700 §4.14 refresh-token rotation): stolen
 * refresh tokens replayed by either party, tokens moved between families, forged tokens naming a real family,
 * cookie injection and duplicate cookies, fixation by planted cookies, and logout that is more than forgetting.
 * Real gateways on a real redis-server, a recording upstream behind a protected route.
 */
import { generateKeyPairSync, randomBytes, sign as cryptoSign } from 'node:crypto'
import { decodeJwt } from 'jose'
import t, { type Test } from 'tap'
import { CookieClient, rawRequest, send, type Reply } from './helpers/client.js'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis-server.js'
import { startUpstream, type TestUpstream } from './helpers/upstream.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const GRACE = { reuseGrace: '300ms' }
const PAST_GRACE_MS = 450

interface Setup {
  gw: StartedGateway
  upstream: TestUpstream
  prefix: string
}

let prefixes = 0
async function setup(t: Test, tokens: Record<string, unknown> = GRACE): Promise<Setup> {
  const upstream = await startUpstream()
  const prefix = `as${++prefixes}:`
  const gw = await startGateway({
    redisUrl: redis.url,
    config: { tokens, redis: { keyPrefix: prefix }, routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] },
  })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
  })
  return { gw, upstream, prefix }
}

interface TokenPair {
  accessToken: string
  refreshToken: string
  sid: string
}

async function tokenLogin(gw: StartedGateway, username = 'alice', password = `${username}-pw`): Promise<TokenPair> {
  const res = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username, password } })
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${res.text}`)
  return { accessToken: res.json.accessToken, refreshToken: res.json.refreshToken, sid: decodeJwt(res.json.accessToken).sid as string }
}

const refresh = (gw: StartedGateway, refreshToken: string) => send(`${gw.url}/auth/refresh`, { body: { refreshToken } })
const api = (gw: StartedGateway, headers: Record<string, string>) => send(`${gw.url}/api/orders`, { headers })
const asBearer = (token: string) => ({ authorization: `Bearer ${token}` })

async function reuseAlarms(gw: StartedGateway): Promise<number> {
  const text = (await send(`${gw.url}/metrics`)).text
  return Number(/^sessiongate_refresh_reuse_detections_total (\d+)/m.exec(text)?.[1] ?? 'NaN')
}

async function sessionHash(s: Setup, sid: string): Promise<Record<string, string>> {
  return redis.client.hgetall(`${s.prefix}{${sid}}:s`)
}

/** 401 and the upstream not called. */
async function refusedOnApi(t: Test, s: Setup, headers: Record<string, string>, what: string): Promise<Reply> {
  const before = s.upstream.requests.length
  const res = await api(s.gw, headers)
  t.equal(res.status, 401, `${what}: 401`)
  t.equal(res.json?.error, 'unauthenticated', `${what}: unauthenticated`)
  t.equal(s.upstream.requests.length, before, `${what}: the upstream is not called`)
  return res
}

/** A well-formed access token that does not verify: the genuine one with its signature changed. */
function forgedFrom(token: string): string {
  const [h, p, sig] = token.split('.') as [string, string, string]
  return `${h}.${p}.${(sig[0] === 'A' ? 'B' : 'A') + sig.slice(1)}`
}

/** A validly-signed token for this gateway's issuer and audience, by a key the gateway does not hold. */
function attackerToken(victim: string): string {
  const { privateKey } = generateKeyPairSync('ed25519')
  const header = Buffer.from(JSON.stringify({ ...decodeHeader(victim) })).toString('base64url')
  const payload = Buffer.from(JSON.stringify({ ...decodeJwt(victim), sub: 'attacker', jti: randomBytes(8).toString('hex') })).toString('base64url')
  const sig = cryptoSign(null, Buffer.from(`${header}.${payload}`), privateKey).toString('base64url')
  return `${header}.${payload}.${sig}`
}

function decodeHeader(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString('utf8')) as Record<string, unknown>
}

/** The gateway cookies never reach the upstream, and what is forwarded is never a token the client forged. */
function checkForwarded(t: Test, s: Setup, forged: string[], sub: string, what: string): void {
  const seen = s.upstream.last()!.headers
  t.notMatch(seen.cookie ?? '', /sg_(access|refresh)/, `${what}: no gateway cookie reaches the upstream`)
  const token = (seen.authorization ?? '').replace(/^Bearer /, '')
  t.notOk(forged.includes(token), `${what}: the forwarded token is not the forged one`)
  t.equal(decodeJwt(token).sub, sub, `${what}: forwarded as the genuine user`)
}

t.test('refresh-token replay after the grace revokes the whole family (RFC 9700 §4.14.2)', async (t) => {
  t.test('the victim rotates, then the attacker replays the stolen token', async (t) => {
    const s = await setup(t)
    const alarms = await reuseAlarms(s.gw)
    const stolen = await tokenLogin(s.gw)
    const victim = await refresh(s.gw, stolen.refreshToken)
    t.equal(victim.status, 200)
    t.equal((await api(s.gw, asBearer(victim.json.accessToken))).status, 200, "the victim's new access token works")
    await sleep(PAST_GRACE_MS)
    const replay = await refresh(s.gw, stolen.refreshToken)
    t.equal(replay.status, 401)
    t.equal(replay.json.error, 'refresh_token_reused')
    t.equal((await sessionHash(s, stolen.sid)).rev, '1', 'the family is revoked in the store')
    t.equal(await reuseAlarms(s.gw), alarms + 1, 'one reuse alarm')
    const current = await refresh(s.gw, victim.json.refreshToken)
    t.equal(current.status, 401, "the family's current refresh token fails too")
    t.equal(current.json.error, 'refresh_token_reused')
    await refusedOnApi(t, s, asBearer(victim.json.accessToken), 'the current access token (not yet expired) at once')
    await refusedOnApi(t, s, asBearer(stolen.accessToken), 'the first access token')
  })

  t.test('the attacker rotates first, then the victim presents the same token', async (t) => {
    const s = await setup(t)
    const stolen = await tokenLogin(s.gw)
    const attacker = await refresh(s.gw, stolen.refreshToken)
    t.equal(attacker.status, 200)
    await sleep(PAST_GRACE_MS)
    const victim = await refresh(s.gw, stolen.refreshToken)
    t.equal(victim.status, 401)
    t.equal(victim.json.error, 'refresh_token_reused')
    const again = await refresh(s.gw, attacker.json.refreshToken)
    t.equal(again.status, 401, "the attacker's successor refresh token is dead")
    t.equal(again.json.error, 'refresh_token_reused')
    await refusedOnApi(t, s, asBearer(attacker.json.accessToken), "the attacker's access token")
  })

  t.test('in cookie mode the replay clears the cookies, and the family stays dead for every later cookie', async (t) => {
    const s = await setup(t)
    const victim = new CookieClient(s.gw.url)
    t.equal((await victim.login('alice', 'alice-pw')).status, 200)
    const stolen = victim.jar.get('sg_refresh') as string
    t.equal((await victim.send('/auth/refresh', { method: 'POST' })).status, 200)
    await sleep(PAST_GRACE_MS)
    const replay = await send(`${s.gw.url}/auth/refresh`, { method: 'POST', headers: { cookie: `sg_refresh=${stolen}` } })
    t.equal(replay.json.error, 'refresh_token_reused')
    t.ok(replay.setCookies.some((c) => c.startsWith('sg_refresh=;')), 'the replayed cookie is cleared')
    await refusedOnApi(t, s, { cookie: victim.cookieHeader() }, "the victim's current cookies")
  })
})

t.test("a refresh token moved to another family (sid swapped) is refused and revokes nothing", async (t) => {
  const s = await setup(t)
  const alarms = await reuseAlarms(s.gw)
  const alice = await tokenLogin(s.gw, 'alice')
  const bob = await tokenLogin(s.gw, 'bob')
  const rest = (token: string) => token.slice(token.indexOf('.'))
  const swaps: [string, string][] = [
    ["alice's token under bob's sid", `${bob.sid}${rest(alice.refreshToken)}`],
    ["bob's token under alice's sid", `${alice.sid}${rest(bob.refreshToken)}`],
    ["alice's token under a made-up sid", `${randomBytes(16).toString('base64url')}${rest(alice.refreshToken)}`],
  ]
  for (const [what, token] of swaps) {
    const res = await refresh(s.gw, token)
    t.equal(res.status, 401, `${what}: 401`)
    t.equal(res.json.error, 'session_expired', `${what}: session_expired, no reuse alarm`)
  }
  for (const [who, pair] of [['alice', alice], ['bob', bob]] as const) {
    const hash = await sessionHash(s, pair.sid)
    t.equal(hash.rev, '0', `${who}: not revoked`)
    t.equal(hash.gen, '0', `${who}: not rotated`)
    t.equal((await api(s.gw, asBearer(pair.accessToken))).status, 200, `${who}: the access token works`)
    t.equal((await refresh(s.gw, pair.refreshToken)).status, 200, `${who}: the genuine refresh token rotates`)
  }
  t.equal(await reuseAlarms(s.gw), alarms, 'no reuse alarm')
})

t.test('access tokens of a revoked family are refused at once (logout-all, cookie and bearer mode)', async (t) => {
  const s = await setup(t)
  const browser = new CookieClient(s.gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  t.equal((await browser.send('/api/orders')).status, 200)
  const browserAccess = browser.jar.get('sg_access') as string
  const cookies = browser.cookieHeader()
  const api1 = await tokenLogin(s.gw)
  const api2 = await tokenLogin(s.gw)
  const bob = await tokenLogin(s.gw, 'bob')
  t.equal((await send(`${s.gw.url}/auth/logout-all`, { method: 'POST', headers: asBearer(api1.accessToken) })).status, 204)
  await refusedOnApi(t, s, { cookie: cookies }, 'the browser session (unexpired access cookie, valid-looking refresh cookie)')
  await refusedOnApi(t, s, asBearer(browserAccess), "the browser's access token as a Bearer")
  await refusedOnApi(t, s, asBearer(api2.accessToken), 'another API session of the same user')
  t.equal((await refresh(s.gw, api2.refreshToken)).status, 401, 'its refresh token is dead')
  t.equal((await api(s.gw, asBearer(bob.accessToken))).status, 200, "another user's session is untouched")
})

t.test('cookie injection: a value holding "; sg_access=..." never authenticates with the injected token', async (t) => {
  const s = await setup(t)
  const victim = new CookieClient(s.gw.url)
  t.equal((await victim.login('alice', 'alice-pw')).status, 200)
  const access = victim.jar.get('sg_access') as string
  const refreshCookie = victim.jar.get('sg_refresh') as string
  const forged = [forgedFrom(access), attackerToken(access)]
  for (const [i, bad] of forged.entries()) {
    const kind = i === 0 ? 'a forged signature' : "a token signed by the attacker's key"
    await refusedOnApi(t, s, { cookie: `theme=x; sg_access=${bad}` }, `${kind} injected after a cookie value, no session`)
    await refusedOnApi(t, s, { cookie: `theme="x; sg_access=${bad}"` }, `${kind} inside a quoted cookie value, no session`)
    await refusedOnApi(t, s, { cookie: `theme=x%3B%20sg_access%3D${bad}` }, `${kind} percent-encoded inside a cookie value`)

    // Injected after the genuine cookies: the first occurrence (genuine) wins.
    const after = await api(s.gw, { cookie: `sg_access=${access}; sg_refresh=${refreshCookie}; theme=x; sg_access=${bad}` })
    t.equal(after.status, 200, `${kind} injected after the genuine cookies: 200`)
    checkForwarded(t, s, forged, 'user-1', `${kind} after`)
    t.match(s.upstream.last()!.headers.cookie, /^theme=x$/, 'the other cookie passes alone')
  }
  // Injected before the genuine cookies: the injected (first) one is refused, the genuine one beside it serves.
  const bad = forged[1] as string
  const before = await api(s.gw, { cookie: `theme=x; sg_access=${bad}; sg_access=${access}; sg_refresh=${refreshCookie}` })
  t.equal(before.status, 200, 'injected before the genuine cookies: 200 through the genuine access cookie')
  checkForwarded(t, s, forged, 'user-1', 'injected before')
  t.equal(s.upstream.last()!.headers.authorization, `Bearer ${access}`, 'the genuine access token itself, no rotation needed')
})

t.test('duplicate cookies with the same name: never the forged one, the genuine one beside it wins, never a crash', async (t) => {
  const s = await setup(t)
  const victim = new CookieClient(s.gw.url)
  t.equal((await victim.login('alice', 'alice-pw')).status, 200)
  const access = victim.jar.get('sg_access') as string
  let refreshCookie = victim.jar.get('sg_refresh') as string
  const forgedAccess = attackerToken(access)
  const forgedRefresh = `${refreshCookie.split('.').slice(0, 3).join('.')}.${randomBytes(16).toString('base64url').slice(0, 22)}`
  const forged = [forgedAccess, forgedFrom(access)]

  const cases: [string, () => string, number][] = [
    ['access: genuine then forged', () => `sg_access=${access}; sg_access=${forgedAccess}`, 200],
    // A cookie planted from a sibling subdomain comes first or last; the genuine one beside it still serves (audit:
    // the first value alone decided, so a planted cookie ended the session's cookies).
    ['access: forged then genuine, no refresh cookie', () => `sg_access=${forgedAccess}; sg_access=${access}`, 200],
    ['access: altered then genuine', () => `sg_access=${forgedFrom(access)}; sg_access=${access}`, 200],
    ['access: forged twice', () => `sg_access=${forgedAccess}; sg_access=${forgedFrom(access)}`, 401],
    ['access: forged then genuine, genuine refresh', () => `sg_access=${forgedAccess}; sg_access=${access}; sg_refresh=${refreshCookie}`, 200],
    ['refresh: forged then genuine, no access', () => `sg_refresh=${forgedRefresh}; sg_refresh=${refreshCookie}`, 200],
    ['refresh: forged twice, no access', () => `sg_refresh=${forgedRefresh}; sg_refresh=${forgedRefresh.slice(0, -1)}${forgedRefresh.endsWith('A') ? 'B' : 'A'}`, 401],
    ['refresh: genuine then forged, no access', () => `sg_refresh=${refreshCookie}; sg_refresh=${forgedRefresh}`, 200],
    ['both doubled, forged first', () => `sg_access=${forgedAccess}; sg_refresh=${forgedRefresh}; sg_access=${access}; sg_refresh=${refreshCookie}`, 200],
    ['both doubled, genuine first', () => `sg_access=${access}; sg_refresh=${refreshCookie}; sg_access=${forgedAccess}; sg_refresh=${forgedRefresh}`, 200],
    ['an empty first access cookie', () => `sg_access=; sg_access=${forgedAccess}`, 401],
  ]
  for (const [what, cookie, expected] of cases) {
    const before = s.upstream.requests.length
    const res = await api(s.gw, { cookie: cookie() })
    t.equal(res.status, expected, `${what}: ${expected}`)
    if (expected === 200) {
      checkForwarded(t, s, forged, 'user-1', what)
      const rotated = res.setCookies.find((c) => c.startsWith('sg_refresh='))
      if (rotated) refreshCookie = rotated.slice('sg_refresh='.length, rotated.indexOf(';'))
    } else {
      t.equal(s.upstream.requests.length, before, `${what}: the upstream is not called`)
      t.equal(res.json?.error, 'unauthenticated')
    }
  }
  // The same through two separate Cookie header lines (joined by Node's parser) on a raw socket.
  for (const order of [[forgedAccess, access], [access, forgedAccess]]) {
    const res = await rawRequest(s.gw.port, { path: '/api/orders', headers: [['Cookie', `sg_access=${order[0]}`], ['Cookie', `sg_access=${order[1]}`]] })
    const first = order[0] === access ? 'genuine' : 'forged'
    t.equal(res.status, 200, `two Cookie lines, ${first} first: 200`)
    checkForwarded(t, s, forged, 'user-1', `two Cookie lines, ${first} first`)
  }
  const sid = decodeJwt(access).sid as string
  t.equal((await sessionHash(s, sid)).rev, '0', 'the forged duplicates revoked nothing')
  // The auth endpoints read the cookies the same way: a refresh, then a logout, each behind a planted cookie.
  const viaEndpoint = await send(`${s.gw.url}/auth/refresh`, { method: 'POST', headers: { cookie: `sg_refresh=${forgedRefresh}; sg_refresh=${refreshCookie}`, 'x-csrf': '1' } })
  t.equal(viaEndpoint.status, 200, 'POST /auth/refresh: the genuine refresh cookie beside a planted one rotates')
  const newAccess = viaEndpoint.setCookies.find((c) => c.startsWith('sg_access='))?.split(';')[0]?.slice('sg_access='.length) as string
  const newRefresh = viaEndpoint.setCookies.find((c) => c.startsWith('sg_refresh='))?.split(';')[0]?.slice('sg_refresh='.length) as string
  const logout = await send(`${s.gw.url}/auth/logout`, { method: 'POST', headers: { cookie: `sg_access=${forgedAccess}; sg_refresh=${forgedRefresh}; sg_access=${newAccess}; sg_refresh=${newRefresh}`, 'x-csrf': '1' } })
  t.equal(logout.status, 204)
  await refusedOnApi(t, s, { cookie: `sg_access=${newAccess}; sg_refresh=${newRefresh}` }, 'after a logout behind planted cookies: the genuine session ended')
  t.equal((await send(`${s.gw.url}/healthz`)).status, 200)
})

t.test('a login ignores cookies planted beforehand (no fixation)', async (t) => {
  const s = await setup(t)
  const attacker = new CookieClient(s.gw.url)
  t.equal((await attacker.login('bob', 'bob-pw')).status, 200)
  const plantedSid = decodeJwt(attacker.jar.get('sg_access') as string).sid
  for (const mode of ['cookie', 'token'] as const) {
    const res = await send(`${s.gw.url}/auth/login`, {
      headers: { cookie: attacker.cookieHeader(), ...(mode === 'token' ? { 'x-session-mode': 'token' } : {}) },
      body: { username: 'alice', password: 'alice-pw' },
    })
    t.equal(res.status, 200)
    const token = mode === 'token' ? (res.json.accessToken as string) : (res.setCookies.find((c) => c.startsWith('sg_access='))?.split(';')[0]?.slice(10) as string)
    const claims = decodeJwt(token)
    t.not(claims.sid, plantedSid, `${mode} mode: a new sid`)
    t.equal(claims.sub, 'user-1', `${mode} mode: the victim's identity`)
  }
  t.equal((await sessionHash(s, plantedSid as string)).sub, 'user-2', "the planted family is still the attacker's, not adopted")
  t.equal((await attacker.send('/api/orders')).status, 200, "and the attacker's own session is untouched")
})

t.test('logout: Clear-Site-Data, cookies cleared, and the old cookies replayed afterwards are refused', async (t) => {
  const s = await setup(t)
  const client = new CookieClient(s.gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const stolen = client.cookieHeader()
  const stolenRefresh = client.jar.get('sg_refresh') as string
  const logout = await client.send('/auth/logout', { method: 'POST' })
  t.equal(logout.status, 204)
  t.equal(logout.headers['clear-site-data'], '"cookies"')
  for (const name of ['sg_access', 'sg_refresh']) {
    t.ok(logout.setCookies.some((c) => c.startsWith(`${name}=;`) && /Max-Age=0/i.test(c)), `${name} cleared (Max-Age=0)`)
  }
  await refusedOnApi(t, s, { cookie: stolen }, 'the old cookies replayed by a client that ignored the clearing')
  const again = await send(`${s.gw.url}/auth/refresh`, { method: 'POST', headers: { cookie: `sg_refresh=${stolenRefresh}` } })
  t.equal(again.status, 401, 'the old refresh cookie cannot revive the session')
  t.equal(again.json.error, 'session_expired')
})

t.test('random or forged refresh tokens naming a live family revoke nothing; only a genuine replay does', async (t) => {
  const s = await setup(t)
  const alarms = await reuseAlarms(s.gw)
  const pair = await tokenLogin(s.gw)
  const second = await refresh(s.gw, pair.refreshToken)
  t.equal(second.status, 200)
  await sleep(PAST_GRACE_MS)
  const b64 = (n: number) => randomBytes(n).toString('base64url')
  const forgeries: string[] = []
  for (let gen = 0; gen < 5; gen++) for (let i = 0; i < 20; i++) forgeries.push(`${pair.sid}.${gen}.${b64(32)}.${b64(16)}`)
  const replies = await Promise.all(forgeries.map((token) => refresh(s.gw, token)))
  t.same([...new Set(replies.map((r) => `${r.status} ${r.json?.error}`))], ['401 session_expired'], '100 forgeries over generations 0-4: all 401 session_expired')
  // The same through the proxy path in cookie mode (no access cookie: the gateway tries the refresh cookie).
  for (const token of forgeries.slice(0, 10)) await refusedOnApi(t, s, { cookie: `sg_refresh=${token}` }, 'a forged refresh cookie on a proxied request')
  t.equal((await sessionHash(s, pair.sid)).rev, '0', 'not revoked')
  t.equal(await reuseAlarms(s.gw), alarms, 'no reuse alarm')
  t.equal((await api(s.gw, asBearer(second.json.accessToken))).status, 200, 'the family still works')

  const genuineReplay = await refresh(s.gw, pair.refreshToken)
  t.equal(genuineReplay.json.error, 'refresh_token_reused', 'the genuine rotated token, past the grace: reuse')
  t.equal((await sessionHash(s, pair.sid)).rev, '1', 'revoked')
  t.equal(await reuseAlarms(s.gw), alarms + 1, 'one reuse alarm')
})

t.test('login CSRF: a cross-site form (no JSON, no preflight) cannot log the browser into any account', async (t) => {
  const s = await setup(t)
  const forms: [string, string, string][] = [
    ['an HTML form (urlencoded)', 'application/x-www-form-urlencoded', 'username=bob&password=bob-pw'],
    ['an HTML form (multipart)', 'multipart/form-data; boundary=x', '--x\r\nContent-Disposition: form-data; name="username"\r\n\r\nbob\r\n--x--\r\n'],
    ['text/plain carrying JSON (the enctype trick)', 'text/plain', '{"username":"bob","password":"bob-pw"}'],
  ]
  for (const [what, type, body] of forms) {
    const res = await send(`${s.gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': type, origin: 'https://evil.example' }, body })
    t.equal(res.status, 400, `${what}: 400`)
    t.equal(res.json?.error, 'invalid_request', `${what}: invalid_request`)
    t.same(res.setCookies, [], `${what}: no session cookie is set`)
  }
  const get = await send(`${s.gw.url}/auth/login?username=bob&password=bob-pw`)
  t.equal(get.status, 405, 'a cross-site GET (link, image) cannot log in')
  t.same(get.setCookies, [])
  const keys = await redis.client.keys(`${s.prefix}*:s`)
  t.equal(keys.length, 0, 'no session was created')
})
