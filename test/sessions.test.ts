/**
 * Sessions through real gateways on a real redis-server: login, token mode, rate limit across instances,
 * refresh rotation, reuse grace and reuse detection, forged tokens, idle and absolute expiry, logout,
 * logout-all, /auth/session, JWKS and session fixation (CONTRACT §3, §4).
 */
import { readFileSync } from 'node:fs'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import t, { type Test } from 'tap'
import { request as undiciRequest } from 'undici'
import { loggerOptions } from '../src/server/logger.js'
import { CookieClient, send, type Reply } from './helpers/client.js'
import { DEFAULT_USERS, startGateway, type GatewayOptions, type StartedGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis-server.js'
import { startUpstream } from './helpers/upstream.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const alice = DEFAULT_USERS[0]!
const bob = DEFAULT_USERS[1]!
const TOKEN_MODE = { 'x-session-mode': 'token' }

let prefixes = 0
/** A gateway on the shared Redis under its own key prefix (so rate-limit counters do not leak between tests). */
async function gateway(t: Test, options: GatewayOptions & { keyPrefix?: string } = {}): Promise<StartedGateway> {
  const config = (options.config ?? {}) as Record<string, Record<string, unknown>>
  const started = await startGateway({
    redisUrl: redis.url,
    ...options,
    config: { ...config, redis: { keyPrefix: options.keyPrefix ?? `sess${++prefixes}:`, ...config.redis } },
  })
  t.teardown(() => started.close())
  return started
}

/** Two instances sharing one Redis prefix and one key file. */
async function twoGateways(t: Test, options: GatewayOptions = {}): Promise<[StartedGateway, StartedGateway]> {
  const keyPrefix = `pair${++prefixes}:`
  const first = await gateway(t, { ...options, keyPrefix })
  const second = await gateway(t, { ...options, keyPrefix, keysFile: first.keysFile })
  return [first, second]
}

const login = (gw: StartedGateway, user = alice, headers: Record<string, string> = TOKEN_MODE) =>
  send(`${gw.url}/auth/login`, { headers, body: { username: user.username, password: user.password } })
const refresh = (gw: StartedGateway, refreshToken: string, headers: Record<string, string> = {}) =>
  send(`${gw.url}/auth/refresh`, { headers, body: { refreshToken } })
const sessionWith = (gw: StartedGateway, accessToken: string) =>
  send(`${gw.url}/auth/session`, { headers: { authorization: `Bearer ${accessToken}` } })

interface ParsedCookie {
  name: string
  value: string
  attributes: Map<string, string>
}

function parseCookie(line: string): ParsedCookie {
  const [pair = '', ...rest] = line.split(';').map((p) => p.trim())
  const eq = pair.indexOf('=')
  const attributes = new Map<string, string>()
  for (const a of rest) {
    const i = a.indexOf('=')
    attributes.set((i === -1 ? a : a.slice(0, i)).toLowerCase(), i === -1 ? '' : a.slice(i + 1))
  }
  return { name: pair.slice(0, eq), value: pair.slice(eq + 1), attributes }
}

function cookiesOf(reply: Reply): Map<string, ParsedCookie> {
  return new Map(reply.setCookies.map(parseCookie).map((c) => [c.name, c]))
}

function assertError(t: Test, reply: Reply, status: number, code: string, what = code): void {
  t.equal(reply.status, status, `${what}: status ${status}`)
  t.equal(reply.json?.error, code, `${what}: error ${code}`)
  t.type(reply.json?.message, 'string', `${what}: a message`)
  t.equal(reply.headers['cache-control'], 'no-store', `${what}: no-store`)
}

t.test('login: 200, the documented body, two HttpOnly cookies with the lifetimes as Max-Age, no-store', async (t) => {
  const gw = await gateway(t)
  const before = Date.now()
  const res = await login(gw, alice, {})
  t.equal(res.status, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  t.same(Object.keys(res.json).sort(), ['accessExpiresAt', 'claims', 'sessionExpiresAt', 'sub'])
  t.equal(res.json.sub, 'user-1')
  t.same(res.json.claims, { roles: ['admin'], email: 'alice@example.com' })
  const accessAt = Date.parse(res.json.accessExpiresAt)
  const sessionAt = Date.parse(res.json.sessionExpiresAt)
  t.match(res.json.accessExpiresAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, 'ISO 8601')
  t.ok(Math.abs(accessAt - (before + 15 * 60_000)) < 3000, 'access expiry = now + accessTtl')
  t.ok(Math.abs(sessionAt - (before + 7 * 86_400_000)) < 3000, 'session expiry = now + refreshIdleTtl')
  t.equal(res.setCookies.length, 2, 'two Set-Cookie')
  const cookies = cookiesOf(res)
  const access = cookies.get('sg_access')
  const refreshCookie = cookies.get('sg_refresh')
  t.ok(access && refreshCookie, 'sg_access and sg_refresh')
  for (const c of [access, refreshCookie]) {
    if (!c) continue
    t.ok(c.attributes.has('httponly'), `${c.name}: HttpOnly`)
    t.equal(c.attributes.get('path'), '/', `${c.name}: Path=/`)
    t.equal(c.attributes.get('samesite')?.toLowerCase(), 'lax', `${c.name}: SameSite=Lax`)
    t.notOk(c.attributes.has('secure'), `${c.name}: not Secure when cookies.secure is false`)
  }
  t.equal(access?.attributes.get('max-age'), '900', 'access Max-Age = accessTtl')
  t.equal(refreshCookie?.attributes.get('max-age'), String(7 * 86_400), 'refresh Max-Age = refreshIdleTtl')
  t.notOk('accessToken' in res.json || 'refreshToken' in res.json, 'no tokens in the body in cookie mode')
  // The cookies work.
  const me = await send(`${gw.url}/auth/session`, { headers: { cookie: `sg_access=${access?.value}; sg_refresh=${refreshCookie?.value}` } })
  t.equal(me.status, 200)
  t.equal(me.json.sub, 'user-1')
})

t.test('login: Secure cookies get __Host- names; SameSite follows the config', async (t) => {
  const gw = await gateway(t, { config: { cookies: { secure: true, sameSite: 'strict' } } })
  const res = await login(gw, alice, {})
  t.equal(res.status, 200)
  const cookies = cookiesOf(res)
  t.same([...cookies.keys()].sort(), ['__Host-sg_access', '__Host-sg_refresh'])
  for (const c of cookies.values()) {
    t.ok(c.attributes.has('secure'), `${c.name}: Secure`)
    t.ok(c.attributes.has('httponly'), `${c.name}: HttpOnly`)
    t.equal(c.attributes.get('path'), '/')
    t.notOk(c.attributes.has('domain'), `${c.name}: no Domain (required by __Host-)`)
    t.equal(c.attributes.get('samesite')?.toLowerCase(), 'strict')
  }
})

t.test('login: wrong password and unknown user are the same 401 invalid_credentials', async (t) => {
  const gw = await gateway(t)
  const wrong = await send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'nope' } })
  assertError(t, wrong, 401, 'invalid_credentials', 'wrong password')
  t.equal(wrong.setCookies.length, 0, 'no cookies')
  const unknown = await send(`${gw.url}/auth/login`, { body: { username: 'mallory', password: 'alice-pw' } })
  assertError(t, unknown, 401, 'invalid_credentials', 'unknown user')
  t.equal(unknown.json.message, wrong.json.message, 'the same message: no user enumeration')
  const otherUsersPassword = await send(`${gw.url}/auth/login`, { body: { username: 'bob', password: 'alice-pw' } })
  assertError(t, otherUsersPassword, 401, 'invalid_credentials', "another user's password")
  const caseChanged = await send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'ALICE-PW' } })
  assertError(t, caseChanged, 401, 'invalid_credentials', 'passwords are case-sensitive')
})

t.test("JSON sent as text/plain or with no Content-Type (fetch's and undici's default for a string body) is read as JSON, except from a page of another origin (audit)", async (t) => {
  const gw = await gateway(t)
  const credentials = JSON.stringify({ username: 'alice', password: 'alice-pw' })
  const viaFetch = await fetch(`${gw.url}/auth/login`, { method: 'POST', body: credentials, headers: { 'x-session-mode': 'token' } })
  t.equal(viaFetch.status, 200, 'fetch() with a string body (text/plain;charset=UTF-8)')
  const tokens = (await viaFetch.json()) as { refreshToken: string }
  const untyped = await undiciRequest(`${gw.url}/auth/login`, { method: 'POST', body: credentials })
  t.equal(untyped.statusCode, 200, 'no Content-Type at all')
  await untyped.body.dump()
  const refreshed = await fetch(`${gw.url}/auth/refresh`, { method: 'POST', body: JSON.stringify({ refreshToken: tokens.refreshToken }) })
  t.equal(refreshed.status, 200, 'POST /auth/refresh reads its refreshToken the same way')
  t.type(((await refreshed.json()) as { accessToken?: unknown }).accessToken, 'string', 'answered in token mode: the token came in the body')
  const browser = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/68.0'
  for (const [what, headers] of [
    ['text/plain from a cross-site page', { 'content-type': 'text/plain', 'sec-fetch-site': 'cross-site' }],
    ['no Content-Type from a page of another origin', { origin: 'https://evil.example' }],
    ['text/plain from a browser that sends neither Origin nor Sec-Fetch-Site', { 'content-type': 'text/plain', 'user-agent': browser }],
  ] as const) {
    const res = await send(`${gw.url}/auth/login`, { method: 'POST', headers, body: credentials })
    assertError(t, res, 400, 'invalid_request', `${what}: the body is not read`)
    t.match(res.json.message, /Content-Type: application\/json/, 'the message says what to send')
    t.same(res.setCookies, [], 'no session')
  }
  for (const [what, headers] of [
    ['a browser that says same-origin', { 'sec-fetch-site': 'same-origin' }],
    ["a browser whose Origin is the gateway's", { origin: gw.url }],
  ] as const) {
    const res = await send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'text/plain', 'user-agent': browser, ...headers }, body: credentials })
    t.equal(res.status, 200, `${what}: read`)
  }
  const fresh = (await login(gw)).json
  const foreignPage = { 'content-type': 'text/plain;charset=UTF-8', origin: 'https://app.other.example', 'sec-fetch-site': 'cross-site', 'user-agent': browser }
  const foreignRefresh = await send(`${gw.url}/auth/refresh`, { method: 'POST', headers: foreignPage, body: JSON.stringify({ refreshToken: fresh.refreshToken }) })
  t.equal(foreignRefresh.status, 200, "a token-mode page of another origin refreshes with fetch()'s text/plain: the token is its own")
  const foreignLogout = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: foreignPage, body: JSON.stringify({ refreshToken: foreignRefresh.json.refreshToken }) })
  t.equal(foreignLogout.status, 204)
  t.equal((await refresh(gw, foreignRefresh.json.refreshToken)).status, 401, 'and logs out with it: the family ended')
  const notJson = await send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'alice:alice-pw' })
  assertError(t, notJson, 400, 'invalid_request', 'text/plain that is not JSON: no body')
  const compressed = await send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'text/plain', 'content-encoding': 'gzip' }, body: credentials })
  assertError(t, compressed, 400, 'invalid_request', 'a compressed one is not read either')
})

t.test('login: malformed bodies are 400 invalid_request', async (t) => {
  const gw = await gateway(t)
  const json = { 'content-type': 'application/json' }
  const cases: [string, { body?: string | object; headers?: Record<string, string> }][] = [
    ['not JSON', { body: '{"username": "alice", ', headers: json }],
    ['JSON garbage', { body: 'username=alice&password=alice-pw', headers: json }],
    ['missing password', { body: { username: 'alice' } }],
    ['missing username', { body: { password: 'alice-pw' } }],
    ['numbers', { body: { username: 1, password: 2 } }],
    ['password as a list', { body: { username: 'alice', password: ['alice-pw'] } }],
    ['username as an object', { body: { username: { $ne: null }, password: 'alice-pw' } }],
    ['empty strings', { body: { username: '', password: '' } }],
    ['empty password', { body: { username: 'alice', password: '' } }],
    ['empty object', { body: {} }],
    ['empty body', { body: '', headers: json }],
    ['no body at all', {}],
    ['JSON null', { body: 'null', headers: json }],
    ['JSON array', { body: '[]', headers: json }],
    ['JSON string', { body: '"alice"', headers: json }],
  ]
  for (const [what, options] of cases) {
    const res = await send(`${gw.url}/auth/login`, { method: 'POST', ...options })
    assertError(t, res, 400, 'invalid_request', what)
  }
})

t.test('login: a body over server.bodyLimit is 413', async (t) => {
  const gw = await gateway(t, { config: { server: { bodyLimit: 2048 } } })
  const res = await send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'x'.repeat(4000) } })
  assertError(t, res, 413, 'payload_too_large')
  const ok = await login(gw, alice, {})
  t.equal(ok.status, 200, 'a normal login still fits')
})

t.test('login in token mode: tokens in the body, no cookies; the access token is an RFC 9068 JWT', async (t) => {
  const gw = await gateway(t)
  const before = Math.floor(Date.now() / 1000)
  const res = await login(gw)
  t.equal(res.status, 200)
  t.equal(res.setCookies.length, 0, 'no cookies')
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.json.tokenType, 'Bearer')
  t.type(res.json.accessToken, 'string')
  t.type(res.json.refreshToken, 'string')
  t.ok(res.json.expiresIn >= 899 && res.json.expiresIn <= 900, `expiresIn is accessTtl in seconds, counted from now (${res.json.expiresIn})`)
  t.equal(res.json.sub, 'user-1')
  t.same(res.json.claims, alice.claims)

  const header = decodeProtectedHeader(res.json.accessToken)
  const kid = (JSON.parse(readFileSync(gw.keysFile, 'utf8')) as { keys: { kid: string }[] }).keys[0]?.kid
  t.same(header, { alg: 'EdDSA', kid, typ: 'at+jwt' }, 'header: alg, kid, typ at+jwt and nothing else')
  const claims = decodeJwt(res.json.accessToken)
  t.equal(claims.iss, 'https://gateway.test')
  t.equal(claims.aud, 'test-api')
  t.equal(claims.sub, 'user-1')
  t.type(claims.iat, 'number')
  t.ok((claims.iat as number) >= before - 1 && (claims.iat as number) <= before + 2, 'iat is now')
  t.equal(claims.nbf, claims.iat, 'nbf = iat')
  const lifetime = (claims.exp as number) - (claims.iat as number)
  t.equal(lifetime, 900, 'exp = iat + accessTtl')
  t.match(claims.jti, /^[A-Za-z0-9_-]{16,}$/)
  t.match(claims.sid, /^[A-Za-z0-9_-]{16,}$/)
  t.same(claims.roles, ['admin'])
  t.equal(claims.email, 'alice@example.com')
  t.equal(Date.parse(res.json.accessExpiresAt), (claims.exp as number) * 1000, 'accessExpiresAt is the exp')

  const parts = (res.json.refreshToken as string).split('.')
  t.equal(parts[0], claims.sid, 'the refresh token names the family')
  t.ok(Buffer.from(parts[2] as string, 'base64url').length >= 32, 'at least 256 bits of randomness')
  t.not(res.json.refreshToken, (await login(gw)).json.refreshToken, 'every login makes a new token')

  const me = await sessionWith(gw, res.json.accessToken)
  t.equal(me.status, 200, 'the access token works as a Bearer token')
  t.equal(me.json.sid, claims.sid)
})

t.test('rate limit: failures on two instances sharing one Redis count together; 429 with Retry-After', async (t) => {
  const [one, two] = await twoGateways(t, { config: { login: { rateLimit: { max: 3, window: '2s' } } } })
  const wrong = (gw: StartedGateway, username = 'alice') => send(`${gw.url}/auth/login`, { body: { username, password: 'wrong' } })
  assertError(t, await wrong(one), 401, 'invalid_credentials', 'failure 1 (instance one)')
  assertError(t, await wrong(two), 401, 'invalid_credentials', 'failure 2 (instance two)')
  assertError(t, await wrong(one), 401, 'invalid_credentials', 'failure 3 (instance one)')
  for (const [name, gw] of [['two', two], ['one', one]] as const) {
    const limited = await login(gw, alice, {})
    assertError(t, limited, 429, 'rate_limited', `instance ${name}, right password`)
    const retryAfter = Number(limited.headers['retry-after'])
    t.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 2, `Retry-After in seconds within the window (${retryAfter})`)
    t.equal(limited.setCookies.length, 0)
  }
  assertError(t, await login(two, bob, {}), 429, 'rate_limited', 'the same IP for another user (per-IP limit)')
  await sleep(2200)
  const again = await login(two, alice, {})
  t.equal(again.status, 200, 'the window ended: logins work again')
})

t.test('rate limit: attempts refused with 429 are no failed logins: a client blocked by its IP cannot lock other users out (audit)', async (t) => {
  const gw = await gateway(t, { config: { server: { trustProxy: ['127.0.0.1'] }, login: { rateLimit: { max: 3, window: '1m' } } } })
  const from = (ip: string, username: string, password: string) =>
    send(`${gw.url}/auth/login`, { body: { username, password }, headers: { 'x-forwarded-for': ip } })
  for (let i = 1; i <= 3; i++) assertError(t, await from('10.0.0.1', 'alice', 'wrong'), 401, 'invalid_credentials', `failure ${i} from 10.0.0.1`)
  for (let i = 1; i <= 5; i++) assertError(t, await from('10.0.0.1', 'bob', 'wrong'), 429, 'rate_limited', `attempt ${i} for bob from the blocked IP`)
  for (let i = 1; i <= 3; i++) {
    assertError(t, await from(`10.0.1.${i}`, 'bob', 'wrong'), 401, 'invalid_credentials', `bob's own failure ${i} from another IP: checked, not refused`)
  }
  assertError(t, await from('10.0.2.1', 'bob', 'bob-pw'), 429, 'rate_limited', 'bob is blocked by his own three failures only')
  assertError(t, await from('10.0.0.1', 'alice', 'alice-pw'), 429, 'rate_limited', 'the blocked IP stays blocked (its refused attempts were not counted, nor taken below the limit)')
})

t.test('rate limit: attempts sent at once cannot pass the limit together; good logins do not count', async (t) => {
  const gw = await gateway(t, { config: { login: { rateLimit: { max: 3, window: '1m' } } } })
  for (let i = 0; i < 6; i++) t.equal((await login(gw, alice, {})).status, 200, `good login ${i + 1}`)
  const replies = await Promise.all(
    Array.from({ length: 30 }, () => send(`${gw.url}/auth/login`, { body: { username: 'bob', password: 'wrong' } })),
  )
  const statuses = replies.map((r) => r.status)
  t.equal(statuses.filter((s) => s === 401).length, 3, 'exactly max passwords were checked')
  t.equal(statuses.filter((s) => s === 429).length, 27, 'the rest were refused before any check')
})

t.test('refresh rotates: a new pair; the old token after the grace revokes the family at once', async (t) => {
  const gw = await gateway(t, { config: { tokens: { reuseGrace: '300ms' } } })
  const first = await login(gw)
  await sleep(1100) // a new second: a new iat, so also a visibly new access token
  const second = await refresh(gw, first.json.refreshToken)
  t.equal(second.status, 200)
  t.equal(second.headers['cache-control'], 'no-store')
  t.equal(second.setCookies.length, 0, 'a body token gets a body answer, no cookies')
  t.same(Object.keys(second.json).sort(), ['accessExpiresAt', 'accessToken', 'claims', 'expiresIn', 'refreshToken', 'sessionExpiresAt', 'sub', 'tokenType'])
  t.not(second.json.refreshToken, first.json.refreshToken, 'a new refresh token')
  t.not(second.json.accessToken, first.json.accessToken, 'a new access token')
  const a1 = decodeJwt(first.json.accessToken)
  const a2 = decodeJwt(second.json.accessToken)
  t.equal(a2.sid, a1.sid, 'the same family')
  t.not(a2.jti, a1.jti, 'a new jti')
  t.ok((a2.iat as number) > (a1.iat as number), 'issued later')
  t.equal((await sessionWith(gw, second.json.accessToken)).status, 200, 'the new access token works')
  t.equal((await sessionWith(gw, first.json.accessToken)).status, 200, 'the earlier access token of a healthy family still works until its exp')

  await sleep(400)
  const replay = await refresh(gw, first.json.refreshToken)
  assertError(t, replay, 401, 'refresh_token_reused', 'replay after the grace')
  const live = await sessionWith(gw, second.json.accessToken)
  assertError(t, live, 401, 'unauthenticated', "the family's live access token, at once")
  t.equal((await sessionWith(gw, first.json.accessToken)).status, 401, 'and the older one')
  const successor = await refresh(gw, second.json.refreshToken)
  t.equal(successor.status, 401, 'the successor refresh token is dead too')
  t.equal(successor.json.error, 'refresh_token_reused')
  const replayAgain = await refresh(gw, first.json.refreshToken)
  t.equal(replayAgain.status, 401)
  t.same([...cookiesOf(replay).keys()].sort(), ['sg_access', 'sg_refresh'], 'a reuse clears the cookies, even for a token sent in the body')
  const other = (await login(gw, bob)).json.refreshToken as string
  const withOtherCookies = await refresh(gw, first.json.refreshToken, { cookie: `sg_refresh=${other}` })
  t.equal(withOtherCookies.json.error, 'refresh_token_reused')
  t.equal(withOtherCookies.setCookies.length, 0, "but not the cookies of another session the request carried")
})

t.test('a page of another origin cannot log the user out (logout CSRF): 204, nothing ended, cookies kept', async (t) => {
  const gw = await gateway(t)
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const cookie = client.cookieHeader()
  const forged: [string, Record<string, string>][] = [
    ['a cross-site form', { 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' }],
    ['a same-site page of another origin', { 'sec-fetch-site': 'same-site', origin: 'http://localhost:1' }],
    ['a foreign Origin from a browser without Sec-Fetch-Site', { origin: 'https://evil.example' }],
    ['an opaque origin', { origin: 'null' }],
  ]
  for (const [what, headers] of forged) {
    const res = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { cookie, ...headers } })
    t.equal(res.status, 204, `${what}: 204`)
    t.equal(res.setCookies.length, 0, `${what}: no cookie cleared`)
    t.notOk(res.headers['clear-site-data'], `${what}: no Clear-Site-Data`)
    t.equal((await send(`${gw.url}/auth/session`, { headers: { cookie } })).status, 200, `${what}: the session goes on`)
    const all = await send(`${gw.url}/auth/logout-all`, { method: 'POST', headers: { cookie, ...headers } })
    assertError(t, all, 403, 'csrf', `${what}: logout-all refused`)
  }
  const own = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { cookie, 'sec-fetch-site': 'same-origin', origin: gw.url } })
  t.equal(own.status, 204)
  t.equal(own.headers['clear-site-data'], '"cookies"', "the gateway's own page logs out")
  t.equal((await send(`${gw.url}/auth/session`, { headers: { cookie } })).status, 401, 'the session ended')
})

t.test('a token-mode client on another origin logs out: its Bearer token and body refresh token are acted on, the browser cookies beside them are not (audit)', async (t) => {
  const gw = await gateway(t)
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  const cookie = browser.cookieHeader()
  const foreign = { origin: 'https://app.other.example', 'sec-fetch-site': 'cross-site' }
  const tokens = (await login(gw)).json
  const out = await send(`${gw.url}/auth/logout`, {
    method: 'POST', headers: { ...foreign, cookie, authorization: `Bearer ${tokens.accessToken}` }, body: { refreshToken: tokens.refreshToken },
  })
  t.equal(out.status, 204)
  t.equal(out.setCookies.length, 0, "the browser's cookies are not cleared by a page of another origin")
  t.notOk(out.headers['clear-site-data'])
  t.equal((await sessionWith(gw, tokens.accessToken)).status, 401, 'the Bearer token is refused at once')
  t.equal((await refresh(gw, tokens.refreshToken)).status, 401, 'the refresh token from the body is dead')
  t.equal((await send(`${gw.url}/auth/session`, { headers: { cookie } })).status, 200, "the browser's own session goes on")

  const second = (await login(gw)).json
  const bearerOnly = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { origin: 'https://app.other.example', authorization: `Bearer ${second.accessToken}` } })
  t.equal(bearerOnly.status, 204)
  t.equal((await sessionWith(gw, second.accessToken)).status, 401, 'a Bearer token alone, with a foreign Origin and no Sec-Fetch-Site')

  const third = (await login(gw)).json
  const all = await send(`${gw.url}/auth/logout-all`, { method: 'POST', headers: { ...foreign, cookie, authorization: `Bearer ${third.accessToken}` } })
  t.equal(all.status, 204, 'logout-all with a Bearer token from another origin')
  t.equal(all.setCookies.length, 0)
  t.equal((await refresh(gw, third.refreshToken)).status, 401, "every family of the Bearer token's subject ended")
  for (const authorization of ['Basic YWxpY2U6YWxpY2UtcHc=', '', 'Bearer ']) {
    const notBearer = await send(`${gw.url}/auth/logout-all`, { method: 'POST', headers: { ...foreign, cookie, authorization } })
    assertError(t, notBearer, 403, 'csrf', `logout-all from another origin with Authorization ${JSON.stringify(authorization)}: no Bearer token, 403`)
  }
  const badBearer = await send(`${gw.url}/auth/logout-all`, { method: 'POST', headers: { ...foreign, cookie, authorization: 'Bearer nope' } })
  assertError(t, badBearer, 401, 'unauthenticated', 'a bad Bearer token: 401, not the cookies')
  t.equal(badBearer.setCookies.length, 0, "and the browser's cookies are not cleared")
})

t.test('a detected reuse is logged (warn, with the sid, never a token)', async (t) => {
  const lines: Record<string, unknown>[] = []
  const stream = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }
  const gw = await gateway(t, { config: { tokens: { reuseGrace: '100ms' } }, logger: { ...(loggerOptions('warn') as object), stream } })
  const first = (await login(gw)).json.refreshToken as string
  t.equal((await refresh(gw, first)).status, 200)
  await sleep(200)
  t.equal((await refresh(gw, first)).json.error, 'refresh_token_reused')
  const line = lines.find((l) => String(l.msg).startsWith('refresh token reuse'))
  t.ok(line, 'one warn line')
  t.equal(line?.level, 40)
  t.equal(line?.sid, first.split('.')[0])
  t.notOk(JSON.stringify(lines).includes(first), 'the refresh token itself is never logged')
})

t.test('a route reading a claim no login sets is logged at start and at every reload (warn, with its YAML path)', async (t) => {
  const lines: Record<string, unknown>[] = []
  const stream = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }
  const route = { name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:1', headers: { 'X-Team': '{team}' } }
  const gw = await gateway(t, { config: { routes: [route] }, logger: { ...(loggerOptions('warn') as object), stream } })
  const warned = () => lines.filter((l) => l.path === 'routes[0].headers.X-Team')
  t.equal(warned().length, 1, 'at start')
  t.equal(warned()[0]?.level, 40)
  t.match(String(warned()[0]?.msg), /reads \{team\}, a claim no login sets/)
  const { loadConfig } = await import('../src/config/load.js')
  await gw.gateway.reload(await loadConfig(gw.configFile, {}))
  t.equal(warned().length, 2, 'and again at a reload')
})

t.test('a start with Redis up logs no error (the store is waited for, not taken for down)', async (t) => {
  const lines: Record<string, unknown>[] = []
  const stream = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }
  for (let i = 0; i < 3; i++) {
    const gw = await gateway(t, { logger: { ...(loggerOptions('warn') as object), stream } })
    t.equal((await login(gw)).status, 200)
  }
  t.same(lines.filter((l) => Number(l.level) >= 50).map((l) => l.msg), [], 'no error lines')
})

t.test('logout with a bad JSON body still ends the session its cookies name', async (t) => {
  const gw = await gateway(t)
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const refreshToken = client.jar.get('sg_refresh') as string
  const out = await send(`${gw.url}/auth/logout`, {
    method: 'POST', headers: { cookie: client.cookieHeader(), 'content-type': 'application/json', 'x-csrf': '1' }, body: '{"refreshToken": ',
  })
  t.equal(out.status, 204)
  t.same([...cookiesOf(out).keys()].sort(), ['sg_access', 'sg_refresh'], 'cookies cleared')
  assertError(t, await refresh(gw, refreshToken), 401, 'session_expired', 'the family is gone')
  assertError(t, await send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' }), 400, 'invalid_request', 'other endpoints still refuse bad JSON')
})

t.test('refresh in cookie mode: new cookies; a reused cookie after the grace clears cookies', async (t) => {
  const gw = await gateway(t, { config: { tokens: { reuseGrace: '300ms' } } })
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const oldRefresh = client.jar.get('sg_refresh') as string
  const rotated = await client.send('/auth/refresh', { method: 'POST' })
  t.equal(rotated.status, 200)
  t.notOk('refreshToken' in rotated.json, 'no tokens in the body in cookie mode')
  const cookies = cookiesOf(rotated)
  t.equal(cookies.size, 2, 'both cookies are set again')
  t.not(cookies.get('sg_refresh')?.value, oldRefresh, 'a new refresh cookie')
  t.equal(cookies.get('sg_access')?.attributes.get('max-age'), '900')
  t.equal((await client.send('/auth/session')).status, 200)

  await sleep(400)
  const replay = await send(`${gw.url}/auth/refresh`, { method: 'POST', headers: { cookie: `sg_refresh=${oldRefresh}` } })
  assertError(t, replay, 401, 'refresh_token_reused', 'reused cookie')
  const cleared = cookiesOf(replay)
  t.same([...cleared.keys()].sort(), ['sg_access', 'sg_refresh'], 'both cookies cleared')
  for (const c of cleared.values()) {
    t.equal(c.value, '', `${c.name}: emptied`)
    t.equal(c.attributes.get('max-age'), '0', `${c.name}: Max-Age=0`)
  }
  const victim = await client.send('/auth/session')
  t.equal(victim.status, 401, 'the current cookies of that family are refused at once')
})

t.test('refresh: within the grace the rotated token gets the same successor', async (t) => {
  const gw = await gateway(t)
  const first = await login(gw)
  const a = await refresh(gw, first.json.refreshToken)
  const b = await refresh(gw, first.json.refreshToken)
  const c = await refresh(gw, first.json.refreshToken)
  t.equal(a.status, 200)
  t.equal(b.status, 200)
  t.equal(c.status, 200)
  t.equal(b.json.refreshToken, a.json.refreshToken, 'the same successor refresh token')
  t.equal(c.json.refreshToken, a.json.refreshToken)
  t.equal(decodeJwt(b.json.accessToken).jti, decodeJwt(a.json.accessToken).jti, 'the same access token (jti)')
  t.equal(b.json.accessToken, a.json.accessToken, 'the same access token (EdDSA signatures are deterministic)')
  const next = await refresh(gw, a.json.refreshToken)
  t.equal(next.status, 200, 'the successor is the live token: no reuse alarm was raised')
  t.equal((await sessionWith(gw, next.json.accessToken)).status, 200)
})

t.test('refresh: a token rotated less than the grace ago gets its successor even after that one was rotated too', async (t) => {
  const gw = await gateway(t)
  const first = await login(gw)
  const a = await refresh(gw, first.json.refreshToken)
  const b = await refresh(gw, a.json.refreshToken) // the client had the successor at once and refreshed again
  t.equal(b.status, 200)
  const late = await refresh(gw, first.json.refreshToken) // a request sent with the first token, arriving late
  t.equal(late.status, 200, 'not a reuse alarm: the first token was rotated less than reuseGrace ago')
  t.equal(late.json.refreshToken, a.json.refreshToken, 'the successor it got then')
  t.equal((await sessionWith(gw, late.json.accessToken)).status, 200, 'with a working access token')
  t.equal((await refresh(gw, a.json.refreshToken)).json.refreshToken, b.json.refreshToken, 'which in turn gets its own successor')
  const next = await refresh(gw, b.json.refreshToken)
  t.equal(next.status, 200, 'the family goes on')
  t.equal((await sessionWith(gw, next.json.accessToken)).status, 200)
})

t.test('20 concurrent refreshes with one token over two instances: all 200, one successor, no revocation', async (t) => {
  const [one, two] = await twoGateways(t)
  const first = await login(one)
  const replies = await Promise.all(
    Array.from({ length: 20 }, (_, i) => refresh(i % 2 === 0 ? one : two, first.json.refreshToken)),
  )
  t.same(replies.map((r) => r.status), Array(20).fill(200), 'every request succeeds')
  const successors = new Set(replies.map((r) => r.json.refreshToken))
  t.equal(successors.size, 1, 'one successor refresh token for all')
  const jtis = new Set(replies.map((r) => decodeJwt(r.json.accessToken).jti))
  t.equal(jtis.size, 1, 'one successor access token (jti) for all')
  const successor = [...successors][0] as string
  const next = await refresh(two, successor)
  t.equal(next.status, 200, 'the successor still works (no revocation)')
  t.equal((await sessionWith(one, next.json.accessToken)).status, 200)
  t.equal((await sessionWith(two, replies[0]!.json.accessToken)).status, 200, 'the access token of the shared rotation works on the other instance')
})

t.test('an early and a plain refresh of one token in one process share a rotation, even with reuseGrace 0', async (t) => {
  const gw = await gateway(t, { config: { tokens: { reuseGrace: '0s' } } })
  const sessions = gw.gateway.current().sessions
  for (const order of ['early first', 'plain first'] as const) {
    const first = (await login(gw)).json.refreshToken as string
    const [a, b] = order === 'early first'
      ? await Promise.all([sessions.refreshUnlessSuperseded(first), sessions.refresh(first)])
      : await Promise.all([sessions.refresh(first), sessions.refreshUnlessSuperseded(first)])
    t.ok(a && b, `${order}: both get tokens`)
    t.equal(a?.refreshToken, b?.refreshToken, `${order}: the same successor, one rotation`)
    t.equal((await refresh(gw, a?.refreshToken as string)).status, 200, `${order}: the family is alive (no reuse taken)`)
  }
})

t.test('a forged refresh token naming a real family is refused and does not revoke it', async (t) => {
  const gw = await gateway(t, { config: { tokens: { reuseGrace: '100ms' } } })
  const first = await login(gw)
  const second = await refresh(gw, first.json.refreshToken)
  t.equal(second.status, 200)
  await sleep(200) // past the grace: an older generation that reached the store would be a reuse
  const genuine = second.json.refreshToken as string
  const [sid, gen, secret, mac] = genuine.split('.') as [string, string, string, string]
  const random = (n: number) => Buffer.alloc(n, 7).toString('base64url').slice(0, Math.ceil((n * 4) / 3))
  const flip = (s: string) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1)
  const forgeries: [string, string][] = [
    ['same sid, garbage rest', `${sid}.garbage`],
    ['same sid and generation, random secret and MAC', `${sid}.${gen}.${random(32)}.${random(16)}`],
    ['same sid, an older generation, random secret and MAC', `${sid}.0.${random(32)}.${random(16)}`],
    ['the genuine token with its MAC altered', `${sid}.${gen}.${secret}.${flip(mac)}`],
    ['the genuine token with its secret altered', `${sid}.${gen}.${flip(secret)}.${mac}`],
    ['the genuine token with an older generation', `${sid}.0.${secret}.${mac}`],
    ['the first token with a trailing character', `${first.json.refreshToken}x`],
    ['too long', `${sid}.${gen}.${'A'.repeat(500)}.${mac}`],
    ['empty sid', `.${gen}.${secret}.${mac}`],
  ]
  for (const [what, token] of forgeries) {
    const res = await refresh(gw, token)
    t.equal(res.status, 401, `${what}: 401`)
    t.equal(res.json.error, 'session_expired', `${what}: not a reuse alarm`)
  }
  const cookieForgery = await send(`${gw.url}/auth/refresh`, { method: 'POST', headers: { cookie: `sg_refresh=${sid}.0.${random(32)}.${random(16)}` } })
  t.equal(cookieForgery.status, 401, 'the same as a cookie')
  t.equal((await sessionWith(gw, second.json.accessToken)).status, 200, "the family's access token still works")
  const next = await refresh(gw, genuine)
  t.equal(next.status, 200, 'the genuine refresh token still rotates')
})

t.test('refresh: request errors', async (t) => {
  const gw = await gateway(t)
  assertError(t, await send(`${gw.url}/auth/refresh`, { method: 'POST' }), 401, 'session_expired', 'no token at all')
  assertError(t, await send(`${gw.url}/auth/refresh`, { body: { refreshToken: 12 } }), 400, 'invalid_request', 'a number')
  assertError(t, await send(`${gw.url}/auth/refresh`, { body: { refreshToken: '' } }), 401, 'session_expired', 'an empty string')
  const get = await send(`${gw.url}/auth/refresh`)
  assertError(t, get, 405, 'method_not_allowed', 'GET')
  t.equal(get.headers.allow, 'POST')
})

const SHORT = { accessTtl: '1s', refreshIdleTtl: '2s', refreshAbsoluteTtl: '3s', refreshAhead: '500ms', clockTolerance: '0s' }

t.test('idle expiry: a refresh token unused for refreshIdleTtl dies', async (t) => {
  const gw = await gateway(t, { config: { tokens: SHORT } })
  const cookieLogin = await login(gw, alice, {})
  const cookies = cookiesOf(cookieLogin)
  t.equal(cookies.get('sg_access')?.attributes.get('max-age'), '1', 'access Max-Age = 1 s')
  t.equal(cookies.get('sg_refresh')?.attributes.get('max-age'), '2', 'refresh Max-Age = 2 s')
  const first = await login(gw)
  const used = await login(gw)
  await sleep(1200)
  t.equal((await refresh(gw, used.json.refreshToken)).status, 200, 'a token used within the idle time rotates')
  await sleep(1100)
  const late = await refresh(gw, first.json.refreshToken)
  assertError(t, late, 401, 'session_expired', 'unused for 2.3 s')
  t.equal((await sessionWith(gw, first.json.accessToken)).status, 401, 'its access token is refused too')
  const cookie = cookies.get('sg_refresh')?.value as string
  const viaCookie = await send(`${gw.url}/auth/refresh`, { method: 'POST', headers: { cookie: `sg_refresh=${cookie}` } })
  assertError(t, viaCookie, 401, 'session_expired', 'the idle cookie')
})

t.test('absolute expiry: rotations cannot keep a session past refreshAbsoluteTtl', async (t) => {
  const gw = await gateway(t, { config: { tokens: SHORT } })
  const started = Date.now()
  const first = await login(gw)
  const loggedIn = Date.now() // the session was created between the two, however slow the login
  const within = (at: number, ms: number) => at >= started + ms - 5 && at <= loggedIn + ms + 5
  t.ok(within(Date.parse(first.json.sessionExpiresAt), 2000), 'sessionExpiresAt = idle expiry at first')
  let token = first.json.refreshToken as string
  let last: Reply | undefined
  for (const at of [800, 1600, 2400]) {
    await sleep(Math.max(0, started + at - Date.now()))
    last = await refresh(gw, token)
    t.equal(last.status, 200, `refresh at ${at} ms`)
    token = last.json.refreshToken
  }
  const absolute = Date.parse(last?.json.sessionExpiresAt)
  t.ok(within(absolute, 3000), `the last rotation's sessionExpiresAt is capped by the absolute expiry (${absolute - started} ms)`)
  t.ok(Date.parse(last?.json.accessExpiresAt) <= absolute, 'accessExpiresAt never past the session')
  const exp = JSON.parse(Buffer.from(String(last?.json.accessToken).split('.')[1] as string, 'base64url').toString()).exp as number
  t.ok(exp * 1000 < absolute + 1000, `nor the token's own exp, beyond the second the session ends (${exp * 1000 - absolute} ms)`)
  await sleep(Math.max(0, absolute + 300 - Date.now()))
  const dead = await refresh(gw, token)
  assertError(t, dead, 401, 'session_expired', 'past the absolute lifetime')
})

t.test('near the absolute end, a token capped at it is not refreshed early on every request (no rotation storm)', async (t) => {
  const gw = await gateway(t, { config: { tokens: { accessTtl: '3s', refreshIdleTtl: '4s', refreshAbsoluteTtl: '5s', refreshAhead: '2s', clockTolerance: '0s' } } })
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const started = Date.now()
  let rotations = 0
  let ended = false
  while (Date.now() - started < 7000 && !ended) {
    const res = await client.send('/auth/session')
    if (res.status === 401) ended = true
    else if (res.setCookies.some((c) => c.startsWith('sg_access='))) rotations++
    await sleep(200)
  }
  t.ok(ended, 'the session ends at its absolute end')
  // Each early refresh before the cap gives about a second more; once the token is capped at the end, none.
  // Refreshing capped tokens early rotated on every request of the last 2 s (about 10 more).
  t.ok(rotations <= 5, `${rotations} rotations over the session's 5 s`)
})

t.test('the refresh cookie never outlives the session: Max-Age capped by the absolute expiry', async (t) => {
  const gw = await gateway(t, { config: { tokens: { accessTtl: '2s', refreshIdleTtl: '4s', refreshAbsoluteTtl: '6s', refreshAhead: '1s' } } })
  const started = Date.now()
  const cookieLogin = await login(gw, bob, {})
  const refreshWith = (reply: Reply) =>
    send(`${gw.url}/auth/refresh`, { method: 'POST', headers: { cookie: `sg_refresh=${cookiesOf(reply).get('sg_refresh')?.value}` } })
  await sleep(2000)
  const first = await refreshWith(cookieLogin) // idle expiry moves to ~6 s: the absolute one
  t.equal(first.status, 200)
  await sleep(Math.max(0, started + 4400 - Date.now()))
  const second = await refreshWith(first) // at most 1.6 s left of the session; the idle lifetime alone would say 4 s
  t.equal(second.status, 200)
  const maxAge = Number(cookiesOf(second).get('sg_refresh')?.attributes.get('max-age'))
  t.ok(maxAge >= 1 && maxAge <= 2, `Max-Age ${maxAge}: what is left of the session, not refreshIdleTtl`)
})

t.test('logout (cookie mode): 204, Clear-Site-Data, cookies cleared, both tokens dead; idempotent; GET is 405', async (t) => {
  const gw = await gateway(t)
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const access = client.jar.get('sg_access') as string
  const refreshToken = client.jar.get('sg_refresh') as string
  const cookieHeader = client.cookieHeader()
  const out = await client.send('/auth/logout', { method: 'POST', headers: { 'x-csrf': '1' } })
  t.equal(out.status, 204)
  t.equal(out.text, '', 'no body')
  t.equal(out.headers['clear-site-data'], '"cookies"')
  t.equal(out.headers['cache-control'], 'no-store')
  const cleared = cookiesOf(out)
  t.same([...cleared.keys()].sort(), ['sg_access', 'sg_refresh'], 'both cookies cleared')
  for (const c of cleared.values()) {
    t.equal(c.value, '')
    t.equal(c.attributes.get('max-age'), '0')
    t.equal(c.attributes.get('path'), '/')
  }
  t.equal(client.jar.size, 0)
  assertError(t, await refresh(gw, refreshToken), 401, 'session_expired', 'the refresh token after logout')
  assertError(t, await sessionWith(gw, access), 401, 'unauthenticated', 'the access token (jti denied) as Bearer')
  t.equal((await send(`${gw.url}/auth/session`, { headers: { cookie: cookieHeader } })).status, 401, 'the old cookies')
  const again = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { cookie: cookieHeader } })
  t.equal(again.status, 204, 'again with the old cookies')
  t.equal(again.headers['clear-site-data'], '"cookies"')
  t.equal((await send(`${gw.url}/auth/logout`, { method: 'POST' })).status, 204, 'with no cookies at all')
  t.equal((await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { authorization: 'Bearer nonsense' } })).status, 204, 'with a garbage token')
  const badJson = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' })
  t.equal(badJson.status, 204, 'with a JSON body that does not parse')
  t.equal(badJson.headers['clear-site-data'], '"cookies"')
  const get = await send(`${gw.url}/auth/logout`)
  assertError(t, get, 405, 'method_not_allowed', 'GET /auth/logout')
  t.equal(get.headers.allow, 'POST')
})

t.test('logout (token mode): the Bearer token and the refresh token in the body', async (t) => {
  const gw = await gateway(t)
  const session = await login(gw)
  const out = await send(`${gw.url}/auth/logout`, {
    headers: { authorization: `Bearer ${session.json.accessToken}` },
    body: { refreshToken: session.json.refreshToken },
  })
  t.equal(out.status, 204)
  t.equal((await refresh(gw, session.json.refreshToken)).status, 401, 'refresh token dead')
  t.equal((await sessionWith(gw, session.json.accessToken)).status, 401, 'access token denied')

  const bearerOnly = await login(gw)
  const out2 = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${bearerOnly.json.accessToken}` } })
  t.equal(out2.status, 204)
  t.equal((await sessionWith(gw, bearerOnly.json.accessToken)).status, 401, 'access token denied')
  t.equal((await refresh(gw, bearerOnly.json.refreshToken)).status, 401, "the access token's family ends too")

  const refreshOnly = await login(gw)
  const out3 = await send(`${gw.url}/auth/logout`, { body: { refreshToken: refreshOnly.json.refreshToken } })
  t.equal(out3.status, 204)
  t.equal((await refresh(gw, refreshOnly.json.refreshToken)).status, 401, 'refresh token dead')
  t.equal((await sessionWith(gw, refreshOnly.json.accessToken)).status, 401, "the family's access token is refused")
})

t.test('logout-all revokes every family of the subject, and only those', async (t) => {
  const gw = await gateway(t)
  const one = await login(gw)
  const two = await login(gw)
  const cookieClient = new CookieClient(gw.url)
  await cookieClient.login('alice', 'alice-pw')
  const other = await login(gw, bob)
  assertError(t, await send(`${gw.url}/auth/logout-all`, { method: 'POST' }), 401, 'unauthenticated', 'logout-all without credentials')
  const out = await send(`${gw.url}/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${one.json.accessToken}` } })
  t.equal(out.status, 204)
  t.equal(out.headers['clear-site-data'], '"cookies"')
  for (const [what, s] of [['first', one], ['second', two]] as const) {
    t.equal((await refresh(gw, s.json.refreshToken)).status, 401, `${what} refresh token fails`)
    t.equal((await sessionWith(gw, s.json.accessToken)).status, 401, `${what} access token fails`)
  }
  t.equal((await cookieClient.send('/auth/session')).status, 401, 'the browser session of the same user ends')
  t.equal((await sessionWith(gw, other.json.accessToken)).status, 200, "another user's session is untouched")
  t.equal((await refresh(gw, other.json.refreshToken)).status, 200)
  t.equal((await login(gw)).status, 200, 'the user can log in again')
  t.equal((await send(`${gw.url}/auth/logout-all`)).status, 405, 'GET is 405')
})

t.test('GET /auth/session: 200 with the session, 401 unauthenticated without', async (t) => {
  const gw = await gateway(t)
  const client = new CookieClient(gw.url)
  await client.login('alice', 'alice-pw')
  const viaCookie = await client.send('/auth/session')
  t.equal(viaCookie.status, 200)
  t.equal(viaCookie.headers['cache-control'], 'no-store')
  t.same(Object.keys(viaCookie.json).sort(), ['accessExpiresAt', 'claims', 'sessionExpiresAt', 'sid', 'sub'])
  t.equal(viaCookie.json.sub, 'user-1')
  t.same(viaCookie.json.claims, { roles: ['admin'], email: 'alice@example.com' }, 'user claims only, no registered claims')
  t.equal(viaCookie.json.sid, decodeJwt(client.jar.get('sg_access') as string).sid)
  t.ok(Date.parse(viaCookie.json.accessExpiresAt) > Date.now())
  t.ok(Date.parse(viaCookie.json.sessionExpiresAt) >= Date.parse(viaCookie.json.accessExpiresAt))
  const token = await login(gw, bob)
  const viaBearer = await sessionWith(gw, token.json.accessToken)
  t.equal(viaBearer.status, 200)
  t.equal(viaBearer.json.sub, 'user-2')
  t.equal(viaBearer.json.sid, decodeJwt(token.json.accessToken).sid)
  const anonymous = await send(`${gw.url}/auth/session`)
  assertError(t, anonymous, 401, 'unauthenticated', 'no credentials')
  const garbage = await sessionWith(gw, 'not-a-token')
  assertError(t, garbage, 401, 'unauthenticated', 'garbage Bearer')
  t.equal(garbage.headers['www-authenticate'], 'Bearer error="invalid_token"')
  const emptyCookies = await send(`${gw.url}/auth/session`, { headers: { cookie: 'sg_access=; sg_refresh=' } })
  assertError(t, emptyCookies, 401, 'unauthenticated', 'empty cookies')
  t.equal((await send(`${gw.url}/auth/session`, { method: 'POST', body: {} })).status, 405)
})

t.test('GET /auth/session in cookie mode refreshes transparently when the access cookie is gone', async (t) => {
  const gw = await gateway(t)
  const client = new CookieClient(gw.url)
  await client.login('alice', 'alice-pw')
  const oldRefresh = client.jar.get('sg_refresh')
  client.jar.delete('sg_access')
  const res = await client.send('/auth/session')
  t.equal(res.status, 200)
  t.equal(res.setCookies.length, 2, 'new cookies')
  t.not(client.jar.get('sg_refresh'), oldRefresh, 'rotated')
  t.ok(client.jar.get('sg_access'))
})

t.test('GET /auth/session with a replayed refresh cookie: 401, the family revoked, the cookies cleared', async (t) => {
  const gw = await gateway(t, { config: { tokens: { reuseGrace: '200ms' } } })
  const client = new CookieClient(gw.url)
  await client.login('alice', 'alice-pw')
  const oldRefresh = client.jar.get('sg_refresh') as string
  t.equal((await refresh(gw, oldRefresh)).status, 200, 'rotated once')
  await sleep(300)
  const replay = await send(`${gw.url}/auth/session`, { headers: { cookie: `sg_refresh=${oldRefresh}` } })
  assertError(t, replay, 401, 'unauthenticated')
  t.same([...cookiesOf(replay).keys()].sort(), ['sg_access', 'sg_refresh'], 'cookies cleared')
  const garbage = await send(`${gw.url}/auth/session`, { headers: { cookie: 'sg_access=garbage' } })
  assertError(t, garbage, 401, 'unauthenticated')
  t.equal(cookiesOf(garbage).size, 2, 'a dead access cookie is cleared too')
  const none = await send(`${gw.url}/auth/session`)
  t.equal(none.setCookies.length, 0, 'no cookies, nothing to clear')
})

t.test('GET /.well-known/jwks.json: public keys only, cacheable', async (t) => {
  const gw = await gateway(t)
  const res = await send(`${gw.url}/.well-known/jwks.json`)
  t.equal(res.status, 200)
  t.match(res.headers['cache-control'], /max-age=\d+/)
  const keys = res.json.keys as Record<string, unknown>[]
  const file = (JSON.parse(readFileSync(gw.keysFile, 'utf8')) as { keys: Record<string, unknown>[] }).keys
  t.equal(keys.length, 1)
  t.equal(keys[0]?.kid, file[0]?.kid)
  t.equal(keys[0]?.kty, 'OKP')
  t.equal(keys[0]?.x, file[0]?.x, 'the public part')
  for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']) t.notOk(member in (keys[0] ?? {}), `no ${member}`)
  t.notOk(res.text.includes(String(file[0]?.d)), 'the private key is nowhere in the answer')
})

t.test('a login ignores planted cookies: always a new session (no fixation)', async (t) => {
  const gw = await gateway(t)
  const victim = new CookieClient(gw.url)
  // The attacker's own, valid session cookies, planted in the victim's browser.
  const attacker = new CookieClient(gw.url)
  await attacker.login('bob', 'bob-pw')
  for (const [k, v] of attacker.jar) victim.jar.set(k, v)
  const plantedSid = decodeJwt(attacker.jar.get('sg_access') as string).sid
  const res = await victim.login('alice', 'alice-pw')
  t.equal(res.status, 200)
  t.equal(res.json.sub, 'user-1')
  const sid = decodeJwt(victim.jar.get('sg_access') as string).sid
  t.not(sid, plantedSid, 'a new sid')
  t.not(victim.jar.get('sg_refresh'), attacker.jar.get('sg_refresh'), 'a new refresh token')
  const me = await victim.send('/auth/session')
  t.equal(me.json.sub, 'user-1')
  t.equal(me.json.sid, sid)
  // Garbage or someone's refresh cookie and a fixed sid-like value change nothing either.
  const planted = await send(`${gw.url}/auth/login`, {
    headers: { cookie: `sg_access=garbage; sg_refresh=${attacker.jar.get('sg_refresh')}` },
    body: { username: 'alice', password: 'alice-pw' },
  })
  t.equal(planted.status, 200)
  const plantedAccess = cookiesOf(planted).get('sg_access')?.value as string
  t.not(decodeJwt(plantedAccess).sid, plantedSid)
  t.not(decodeJwt(plantedAccess).sid, sid, 'every login a new sid')
  t.equal((await attacker.send('/auth/session')).json.sub, 'user-2', "the attacker's session is not turned into the victim's")
})

t.test('logout with an access token that has just expired still ends its family', async (t) => {
  const gw = await gateway(t, { config: { tokens: SHORT } })
  const session = await login(gw)
  await sleep(Math.max(0, Date.parse(session.json.accessExpiresAt) - Date.now()) + 200)
  t.equal((await sessionWith(gw, session.json.accessToken)).status, 401, 'the access token has expired')
  const out = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${session.json.accessToken}` } })
  t.equal(out.status, 204)
  t.equal((await refresh(gw, session.json.refreshToken)).status, 401, 'the family ended: its refresh token fails')
})

t.test('redis.revocationCache: revocations reach the other instance at once', async (t) => {
  // The cache serves proxied requests (GET /auth/session also reads the session from the store, so it would
  // refuse a logged-out session whatever the cache says): the checks below go through a proxied route.
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const [one, two] = await twoGateways(t, {
    config: { redis: { revocationCache: true }, tokens: { reuseGrace: '200ms' }, routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] },
  })
  const apiOnTwo = async (token: string) => (await send(`${two.url}/api/x`, { headers: { authorization: `Bearer ${token}` } })).status
  const refusedOnTwo = async (token: string) => {
    const deadline = Date.now() + 300
    for (;;) {
      const status = await apiOnTwo(token)
      if (status !== 200 || Date.now() > deadline) return status === 401
      await sleep(10)
    }
  }

  const a = await login(one)
  t.equal(await apiOnTwo(a.json.accessToken), 200, 'the other instance knows the session')
  await send(`${one.url}/auth/logout`, { headers: { authorization: `Bearer ${a.json.accessToken}` }, body: { refreshToken: a.json.refreshToken } })
  t.ok(await refusedOnTwo(a.json.accessToken), 'logout on one: refused on two')

  const b = await login(one)
  const b2 = await refresh(one, b.json.refreshToken)
  t.equal(await apiOnTwo(b2.json.accessToken), 200)
  await sleep(300)
  t.equal((await refresh(one, b.json.refreshToken)).json.error, 'refresh_token_reused')
  t.ok(await refusedOnTwo(b2.json.accessToken), 'reuse detected on one: the family is refused on two')

  const c = await login(one)
  t.equal(await apiOnTwo(c.json.accessToken), 200)
  await send(`${one.url}/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${c.json.accessToken}` } })
  t.ok(await refusedOnTwo(c.json.accessToken), 'logout-all on one: refused on two')

  // The subscription drops (Redis restarts, a network blip): whatever is published meanwhile is lost, so the
  // cache must forget what it knew and ask the store until it is subscribed again.
  const d = await login(one)
  t.equal(await apiOnTwo(d.json.accessToken), 200, 'cached as ok on two')
  await redis.client.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  await sleep(20)
  await send(`${one.url}/auth/logout`, { headers: { authorization: `Bearer ${d.json.accessToken}` }, body: { refreshToken: d.json.refreshToken } })
  t.equal(await apiOnTwo(d.json.accessToken), 401, 'a logout published while two was not subscribed is not missed')
  await sleep(600)
  const e = await login(one)
  t.equal(await apiOnTwo(e.json.accessToken), 200)
  await send(`${one.url}/auth/logout`, { headers: { authorization: `Bearer ${e.json.accessToken}` }, body: { refreshToken: e.json.refreshToken } })
  t.ok(await refusedOnTwo(e.json.accessToken), 'after the subscription is back, revocations arrive again')
})

t.test('users file (§6): sub defaults to the username; claims reach the token; NFC passwords; bad entries refused', async (t) => {
  const gw = await gateway(t, {
    users: [
      { username: 'carol', password: 'caf\u00e9-pw', claims: { roles: ['ops'], team: { name: 'blue' } } },
      { username: 'dave', password: 'dave-pw', sub: 'user-4' },
    ],
  })
  const carol = await send(`${gw.url}/auth/login`, { headers: TOKEN_MODE, body: { username: 'carol', password: 'cafe\u0301-pw' } })
  t.equal(carol.status, 200, 'the same password in another Unicode normal form')
  t.equal(carol.json.sub, 'carol', 'sub defaults to the username')
  t.same(carol.json.claims, { roles: ['ops'], team: { name: 'blue' } })
  const token = decodeJwt(carol.json.accessToken)
  t.equal(token.sub, 'carol')
  t.same(token.team, { name: 'blue' }, 'claims are copied into the access token')
  const dave = await login(gw, { username: 'dave', password: 'dave-pw' })
  t.equal(dave.json.sub, 'user-4')
  t.same(dave.json.claims, {}, 'no claims: an empty object')
  t.equal((await login(gw, { username: 'Dave', password: 'dave-pw' })).status, 401, 'usernames are exact')

  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { loadUsers } = await import('../src/auth/users-file.js')
  const { hashPassword } = await import('../src/auth/password.js')
  const dir = mkdtempSync(join(tmpdir(), 'sg-users-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const hash = await hashPassword('pw', 10)
  const problemsOf = async (yaml: string) => {
    const file = join(dir, `u${Math.random()}.yaml`)
    writeFileSync(file, yaml)
    const problems: { path: string; message: string }[] = []
    const users = await loadUsers(file, 'login.users', problems)
    return { users, problems }
  }
  const ok = await problemsOf(`users:\n  - username: erin\n    password: "${hash}"\n`)
  t.same(ok.problems, [])
  t.equal(ok.users?.get('erin')?.sub, 'erin')
  for (const [what, yaml, path] of [
    ['plain text', 'users:\n  - username: erin\n    password: hunter2\n', 'users[0].password'],
    ['an unknown hash scheme', 'users:\n  - username: erin\n    password: "md5$abc"\n', 'users[0].password'],
    ['a reserved claim', `users:\n  - username: erin\n    password: "${hash}"\n    claims: { sid: x }\n`, 'users[0].claims'],
    ['a reserved claim (exp)', `users:\n  - username: erin\n    password: "${hash}"\n    claims: { exp: 1 }\n`, 'users[0].claims'],
    ['an unknown key', `users:\n  - username: erin\n    password: "${hash}"\n    admin: true\n`, 'users[0].admin'],
    ['a duplicate username', `users:\n  - username: erin\n    password: "${hash}"\n  - username: erin\n    password: "${hash}"\n`, 'users[1].username'],
    // Review: a refresh reads the user by subject; a shared one could hand one user's session the other's claims.
    ['a duplicate sub', `users:\n  - username: erin\n    password: "${hash}"\n    sub: u1\n  - username: erin-admin\n    password: "${hash}"\n    sub: u1\n`, 'users[1].sub'],
    ['a username equal to another sub', `users:\n  - username: erin\n    password: "${hash}"\n    sub: frank\n  - username: frank\n    password: "${hash}"\n`, 'users[1].username'],
  ] as const) {
    const { users, problems } = await problemsOf(yaml)
    t.ok(problems.length > 0, `${what}: refused (loadConfig throws on any problem)`)
    if (!what.startsWith('a duplicate') && what !== 'a username equal to another sub') t.equal(users, undefined)
    t.ok(problems.some((p) => p.path.endsWith(path)), `${what}: reported at ${path} (${problems.map((p) => `${p.path}: ${p.message}`).join('; ')})`)
  }
})

t.test('tokens the gateway signs are cached as verified with exactly the claims that were signed', async (t) => {
  const gw = await gateway(t)
  const logged = await login(gw)
  t.equal(logged.status, 200)
  const { accessToken, refreshToken } = logged.json as { accessToken: string; refreshToken: string }
  const verifier = gw.gateway.current().sessions.verifier
  // A token found in the cache resolves without jose: its payload must be the one inside the signed token.
  const cached = await verifier.verify(accessToken)
  t.same(cached.payload, decodeJwt(accessToken), 'login: the remembered payload is the signed one')
  t.equal(cached.expiresAt, (decodeJwt(accessToken).exp as number) * 1000)
  const rotated = await refresh(gw, refreshToken)
  t.equal(rotated.status, 200)
  const next = (rotated.json as { accessToken: string }).accessToken
  const again = await verifier.verify(next)
  t.same(again.payload, decodeJwt(next), 'refresh: the remembered payload is the signed one')
  t.equal(again.jti, decodeJwt(next).jti)
  t.equal(again.sid, cached.sid)
  // The cached entry is no shortcut past the store: a logged-out token is refused at once.
  t.equal((await sessionWith(gw, next)).status, 200)
  t.equal((await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${next}` } })).status, 204)
  t.equal((await sessionWith(gw, next)).status, 401)
})

t.test('claims that JSON cannot carry are cached as the token carries them', async (t) => {
  const gw = await gateway(t, { users: [{ username: 'odd', password: 'odd-pw', claims: { big: Infinity, nested: { n: NaN } } }] })
  const logged = await send(`${gw.url}/auth/login`, { headers: TOKEN_MODE, body: { username: 'odd', password: 'odd-pw' } })
  t.equal(logged.status, 200)
  const { accessToken } = logged.json as { accessToken: string }
  const cached = await gw.gateway.current().sessions.verifier.verify(accessToken)
  t.same(cached.payload, decodeJwt(accessToken))
  t.equal(cached.payload.big, null, 'Infinity is null in the token, and in the cache')
})
