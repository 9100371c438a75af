// A session rotated on the way in must reach the client whatever the answer; what a client presents decides the
// answer, not a stale token beside it. Found by a black-box audit (each test fails on the code before its fix).
import t, { type Test } from 'tap'
import { WebSocket } from 'ws'
import { CookieClient, send } from './helpers/client.js'
import { loadConfig } from '../src/config/load.js'
import { startGateway, writeUsers } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const TOKENS = { accessTtl: '2s', refreshAhead: '1s', reuseGrace: '300ms', clockTolerance: 0 }

async function setup(t: Test, handler?: Parameters<typeof startUpstream>[0]) {
  const up = await startUpstream(handler)
  const gw = await startGateway({
    config: {
      tokens: TOKENS,
      routes: [
        { name: 'api', prefix: '/api', upstream: up.url },
        { name: 'super', prefix: '/super', upstream: up.url, require: { roles: ['superuser'] }, websocket: true },
        { name: 'open-ws', prefix: '/open-ws', upstream: up.url, auth: 'public', websocket: true },
      ],
    },
  })
  t.teardown(async () => {
    await gw.close()
    await up.close()
  })
  return { up, gw }
}

t.test('a require 403 after a transparent refresh carries the new cookies; the session lives on past the grace', async (t) => {
  const { gw } = await setup(t)
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  const spent = browser.jar.get('sg_refresh')
  await sleep(1100) // within refreshAhead: the next request rotates
  const forbidden = await browser.send('/super/x')
  t.equal(forbidden.status, 403)
  t.equal(forbidden.json.error, 'forbidden')
  t.ok(browser.jar.get('sg_refresh'), 'the browser holds a refresh cookie')
  t.not(browser.jar.get('sg_refresh'), spent, 'the 403 carried the rotated refresh cookie')
  await sleep(400) // past reuseGrace: the spent token would now be a replay
  const after = await browser.send('/api/y')
  t.equal(after.status, 200, 'the session was not taken for a replay')
})

t.test('a websocket upgrade refused by require after a refresh carries the new cookies', async (t) => {
  const { gw } = await setup(t)
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  const spent = browser.jar.get('sg_refresh')
  await sleep(1100)
  const refused = await new Promise<{ status: number; cookies: string[] }>((resolve, reject) => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/super/live`, { headers: { cookie: browser.cookieHeader(), origin: gw.url } })
    ws.once('unexpected-response', (_req, res) => {
      const set = res.headers['set-cookie'] ?? []
      res.resume()
      resolve({ status: res.statusCode ?? 0, cookies: set })
    })
    ws.once('open', () => reject(new Error('the upgrade should be refused')))
    ws.once('error', () => {})
  })
  t.equal(refused.status, 403)
  const rotated = refused.cookies.find((c) => c.startsWith('sg_refresh='))
  t.ok(rotated, 'the refusal sets the rotated refresh cookie')
  t.not(rotated?.split(';')[0], `sg_refresh=${spent}`)
})

t.test('a cross-origin websocket upgrade is refused (csrf) before the session is rotated; a public websocket route is not checked', async (t) => {
  const { gw } = await setup(t)
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  const refresh = browser.jar.get('sg_refresh') as string
  await sleep(1100)
  const upgrade = (path: string, origin: string) =>
    new Promise<{ status: number; body: string; cookies: string[] }>((resolve) => {
      const ws = new WebSocket(`${gw.url.replace('http', 'ws')}${path}`, { headers: { cookie: browser.cookieHeader(), origin } })
      ws.once('unexpected-response', (_req, res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, cookies: res.headers['set-cookie'] ?? [] }))
      })
      ws.once('open', () => {
        ws.close()
        resolve({ status: 101, body: '', cookies: [] })
      })
      ws.once('error', () => {})
    })
  const refused = await upgrade('/super/live', 'http://evil.example')
  t.equal(refused.status, 403)
  t.equal(JSON.parse(refused.body).error, 'csrf', 'refused for its origin, before the role check')
  t.same(refused.cookies, [], 'no rotation happened: no new cookies')
  // The refresh token the browser holds is still the family's current one: presented alone, it rotates.
  const rotated = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: refresh } })
  t.equal(rotated.status, 200, 'the refresh token was not spent by the cross-origin attempt')
  const open = await upgrade('/open-ws/live', 'http://evil.example')
  t.not(open.status, 403, 'a public websocket route authenticates nobody: no origin check')
})

t.test('a logged-out access cookie beside a live refresh cookie: the refresh cookie decides', async (t) => {
  const { gw } = await setup(t)
  const old = new CookieClient(gw.url)
  t.equal((await old.login('alice', 'alice-pw')).status, 200)
  const loggedOutAccess = old.jar.get('sg_access') as string
  const loggedOutRefresh = old.jar.get('sg_refresh') as string
  t.equal((await old.send('/auth/logout', { method: 'POST', headers: { 'x-csrf': '1' } })).status, 204)
  const live = new CookieClient(gw.url)
  t.equal((await live.login('alice', 'alice-pw')).status, 200)
  const liveRefresh = live.jar.get('sg_refresh') as string
  const mixed = await send(`${gw.url}/api/y`, { headers: { cookie: `sg_access=${loggedOutAccess}; sg_refresh=${liveRefresh}` } })
  t.equal(mixed.status, 200, 'refreshed with the live session')
  const set = ([] as string[]).concat(mixed.headers['set-cookie'] ?? [])
  t.ok(set.some((c) => /^sg_access=[^;]+/.test(c)), 'with new cookies')
  // The logged-out session's own refresh token still fails: its family ended.
  const ended = await send(`${gw.url}/api/y`, { headers: { cookie: `sg_access=${loggedOutAccess}; sg_refresh=${loggedOutRefresh}` } })
  t.equal(ended.status, 401, "with its own family's refresh cookie, a logged-out access cookie stays refused")
  t.ok(([] as string[]).concat(ended.headers['set-cookie'] ?? []).some((c) => /^sg_refresh=;/.test(c)), 'and the cookies are cleared')
})

t.test("a revoked access cookie with its own family's refresh cookie (reuse detected) is refused, nothing comes back", async (t) => {
  const { gw } = await setup(t)
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  const first = browser.jar.get('sg_refresh') as string
  t.equal((await browser.send('/auth/refresh', { method: 'POST', headers: { 'x-csrf': '1' } })).status, 200)
  const access = browser.jar.get('sg_access') as string
  const latest = browser.jar.get('sg_refresh') as string
  await sleep(400) // past reuseGrace
  t.equal((await send(`${gw.url}/auth/refresh`, { body: { refreshToken: first } })).json.error, 'refresh_token_reused')
  const res = await send(`${gw.url}/api/y`, { headers: { cookie: `sg_access=${access}; sg_refresh=${latest}` } })
  t.equal(res.status, 401, 'the revoked family does not refresh')
  const again = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: latest } })
  t.equal(again.status, 401, 'and its latest refresh token stays dead')
})

t.test('POST /auth/refresh: an empty refreshToken in the body is none, the cookie is used', async (t) => {
  const { gw } = await setup(t)
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  const res = await browser.send('/auth/refresh', { method: 'POST', headers: { 'x-csrf': '1' }, body: { refreshToken: '' } })
  t.equal(res.status, 200)
  t.notOk('refreshToken' in res.json, 'answered in cookie mode, as the token came from the cookie')
  const none = await send(`${gw.url}/auth/refresh`, { method: 'POST', body: { refreshToken: '' } })
  t.equal(none.status, 401, 'without a cookie: nothing presented')
  t.equal(none.json.error, 'session_expired')
})

t.test("an upstream's Clear-Site-Data cannot clear the gateway's cookies; its other directives pass", async (t) => {
  const { gw } = await setup(t, (req, res) => {
    const value = req.url?.includes('all') ? '"*"' : req.url?.includes('only') ? '"cookies"' : '"cache", "Cookies", "storage"'
    res.writeHead(200, { 'content-type': 'application/json', 'clear-site-data': value }).end('{}')
  })
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  const mixed = await browser.send('/api/mixed')
  t.equal(mixed.status, 200)
  t.equal(mixed.headers['clear-site-data'], '"cache", "storage"')
  for (const path of ['/api/only', '/api/all']) {
    const res = await browser.send(path)
    t.equal(res.status, 200)
    t.notOk(res.headers['clear-site-data'], `${path}: removed`)
  }
})

t.test('a token of a family already revoked is counted as revoked, not as a second reuse detection', async (t) => {
  const { gw } = await setup(t)
  const metric = async (line: RegExp) => Number(line.exec((await send(`${gw.url}/metrics`)).text)?.[1] ?? 0)
  const detections = () => metric(/^sessiongate_refresh_reuse_detections_total (\d+)/m)
  const revokedCount = () => metric(/^sessiongate_refreshes_total\{result="revoked"\} (\d+)/m)
  const login = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  const first = login.json.refreshToken as string
  const next = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: first } })
  t.equal(next.status, 200)
  await sleep(400)
  const replay = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: first } })
  t.equal(replay.json.error, 'refresh_token_reused')
  t.equal(await detections(), 1)
  const latest = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: next.json.refreshToken } })
  t.equal(latest.status, 401, 'the family is revoked')
  t.equal(await detections(), 1, 'still one detection')
  t.equal(await revokedCount(), 1, 'counted as revoked')
})

t.test('POST /auth/logout: an empty refreshToken in the body is none, the refresh cookie is ended', async (t) => {
  const { gw } = await setup(t)
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)
  const refresh = browser.jar.get('sg_refresh') as string
  // Only the refresh cookie, so that the family's end comes from it and not from the access token's sid.
  const out = await send(`${gw.url}/auth/logout`, { headers: { cookie: `sg_refresh=${refresh}`, 'x-csrf': '1' }, body: { refreshToken: '' } })
  t.equal(out.status, 204)
  const after = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: refresh } })
  t.equal(after.status, 401, 'the family named by the cookie ended')
})

t.test('users file reloaded: a refresh mints the current claims, and a removed user can no longer refresh (audit)', async (t) => {
  const { gw } = await setup(t)
  const tokenLogin = async (username: string) =>
    (await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username, password: `${username}-pw` } })).json
  const alice = await tokenLogin('alice')
  const bob = await tokenLogin('bob')
  t.same(alice.claims.roles, ['admin'])
  await writeUsers(gw.dir, [{ username: 'alice', password: 'alice-pw', sub: 'user-1', claims: { roles: ['user'] } }])
  await gw.gateway.reload(await loadConfig(gw.configFile, {}))
  const refreshed = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: alice.refreshToken } })
  t.equal(refreshed.status, 200)
  t.same(refreshed.json.claims, { roles: ['user'] }, "alice's refresh carries her claims as the file says now")
  const removed = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: bob.refreshToken } })
  t.equal(removed.status, 401, 'bob is no longer in the file: no refresh')
  t.equal(removed.json.error, 'session_expired')
  const bobApi = await send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${bob.accessToken}` } })
  t.equal(bobApi.status, 401, "and his session ended: his access token is refused at once")
})

t.test('a login whose claims would make an access token over 8 KiB is refused, not handed a session nothing accepts (audit)', async (t) => {
  const roles = Array.from({ length: 400 }, (_, i) => `role-number-${i}`)
  const gw = await startGateway({ users: [{ username: 'big', password: 'big-pw', claims: { roles } }, { username: 'alice', password: 'alice-pw' }] })
  t.teardown(() => gw.close())
  const res = await send(`${gw.url}/auth/login`, { body: { username: 'big', password: 'big-pw' } })
  t.equal(res.status, 500)
  t.equal(res.json.error, 'internal_error')
  t.match(res.json.message, /access token of \d+ bytes, over the 8192/)
  t.same(res.setCookies, [], 'no cookies')
  t.equal((await send(`${gw.url}/auth/login`, { body: { username: 'alice', password: 'alice-pw' } })).status, 200, 'other users log in')
})

t.test('a cookie-mode login whose access cookie would pass the 4,096 bytes browsers keep is refused with the way out; token mode serves it', async (t) => {
  const roles = Array.from({ length: 160 }, (_, i) => `role-number-${i}`) // a ~5 KB token: under 8 KiB, over a cookie
  const gw = await startGateway({ users: [{ username: 'wide', password: 'wide-pw', claims: { roles } }] })
  t.teardown(() => gw.close())
  const res = await send(`${gw.url}/auth/login`, { body: { username: 'wide', password: 'wide-pw' } })
  t.equal(res.status, 500)
  t.equal(res.json.error, 'internal_error')
  t.match(res.json.message, /an access cookie of \d+ bytes, over the 4096 browsers keep: .*X-Session-Mode: token/)
  t.same(res.setCookies, [], 'no cookie a browser would drop')
  const asTokens = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'wide', password: 'wide-pw' } })
  t.equal(asTokens.status, 200, 'token mode: no cookie, no limit but the token one')
  t.ok((asTokens.json.accessToken as string).length > 4096)
  const metrics = (await send(`${gw.url}/metrics`)).text
  t.match(metrics, /sessiongate_logins_total\{result="error"\} 1/, 'counted as an error, not a success')
})

t.test('a refresh whose reloaded claims would make an access token over 8 KiB ends the session with a clear answer (review)', async (t) => {
  const { gw } = await setup(t)
  const login = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  const roles = Array.from({ length: 400 }, (_, i) => `role-number-${i}`)
  await writeUsers(gw.dir, [{ username: 'alice', password: 'alice-pw', sub: 'user-1', claims: { roles } }])
  await gw.gateway.reload(await loadConfig(gw.configFile, {}))
  const refreshed = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: login.json.refreshToken } })
  t.equal(refreshed.status, 401)
  t.equal(refreshed.json.error, 'session_expired')
  t.match(refreshed.json.message, /over the 8192/)
  const api = await send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${login.json.accessToken}` } })
  t.equal(api.status, 401, 'the session ended')
})

t.test('a cookie-mode refresh whose reloaded claims would make an access cookie browsers drop ends the session and says why; token mode refreshes', async (t) => {
  const { up, gw } = await setup(t)
  const viaEndpoint = new CookieClient(gw.url)
  const viaProxy = new CookieClient(gw.url)
  const early = new CookieClient(gw.url)
  t.equal((await early.login('alice', 'alice-pw')).status, 200)
  t.equal((await viaEndpoint.login('alice', 'alice-pw')).status, 200)
  t.equal((await viaProxy.login('alice', 'alice-pw')).status, 200)
  const asTokens = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  const endpointAccess = viaEndpoint.jar.get('sg_access') as string
  const proxyAccess = viaProxy.jar.get('sg_access') as string
  const roles = Array.from({ length: 160 }, (_, i) => `role-number-${i}`) // a ~5 KB token: under 8 KiB, over a cookie
  await writeUsers(gw.dir, [{ username: 'alice', password: 'alice-pw', sub: 'user-1', claims: { roles } }])
  await gw.gateway.reload(await loadConfig(gw.configFile, {}))

  const refreshed = await viaEndpoint.send('/auth/refresh', { method: 'POST', headers: { 'x-csrf': '1' } })
  t.equal(refreshed.status, 401, 'POST /auth/refresh with the refresh cookie')
  t.equal(refreshed.json.error, 'session_expired')
  t.match(refreshed.json.message, /an access cookie of \d+ bytes, over the 4096 browsers keep.*X-Session-Mode: token/)
  t.ok(refreshed.setCookies.length === 2 && refreshed.setCookies.every((c) => /max-age=0/i.test(c)), 'both cookies cleared, none too large set')
  const endedEndpoint = await send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${endpointAccess}` } })
  t.equal(endedEndpoint.status, 401, 'the session ended: its access token is refused at once')

  viaProxy.jar.delete('sg_access') // as after the access cookie's Max-Age: the next request refreshes on its way
  const before = up.requests.length
  const proxied = await viaProxy.send('/api/items')
  t.equal(proxied.status, 401, 'a transparent refresh meets the same limit')
  t.equal(proxied.json.error, 'unauthenticated')
  t.match(proxied.json.message, /an access cookie of \d+ bytes, over the 4096 browsers keep/, 'with the reason')
  t.equal(up.requests.length, before, 'the upstream saw nothing')
  t.notOk(proxied.setCookies.some((c) => !/max-age=0/i.test(c)), 'no cookie a browser would drop')
  const endedProxy = await send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${proxyAccess}` } })
  t.equal(endedProxy.status, 401, 'that session ended too')

  await sleep(1100) // the early client's access token is now within refreshAhead: still valid, refreshed early
  const earlyAnswer = await early.send('/api/items')
  t.equal(earlyAnswer.status, 401, 'an early refresh that ends the session does not let the still-valid token through')
  t.match(earlyAnswer.json.message, /over the 4096 browsers keep/)

  const tokenRefresh = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: asTokens.json.refreshToken } })
  t.equal(tokenRefresh.status, 200, 'token mode has no cookie limit: the same claims refresh')
  t.ok((tokenRefresh.json.accessToken as string).length > 4096)
  t.same(tokenRefresh.setCookies, [], 'and sets no cookie')
})
