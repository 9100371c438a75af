// Regressions found by review: each test fails on the code before its fix.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { WebSocket, WebSocketServer } from 'ws'
import { stringify } from 'yaml'
import { loadConfig } from '../src/config/load.js'
import { ConfigError } from '../src/errors.js'
import { CookieClient, send } from './helpers/client.js'
import { freePort } from './helpers/redis-server.js'
import { startGateway, writeUsers } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** An echo upstream behind a gateway with one public route, /open; both closed when the test ends. */
/**
 * A recording upstream and a gateway in front of it, both closed when the test ends: by default one public route,
 * `/open`; `configFor` gives the gateway's config for the upstream's URL instead.
 */
async function openGateway(
  t: Test,
  configFor: (upstream: string) => Record<string, unknown> = (url) => ({ routes: [{ name: 'open', prefix: '/open', upstream: url, auth: 'public' }] }),
) {
  const up = await startUpstream()
  const gw = await startGateway({ config: configFor(up.url) })
  t.teardown(async () => {
    await gw.close()
    await up.close()
  })
  return { up, gw }
}

async function echoWebSocketServer() {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(wss, 'listening')
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })))
  return { wss, url: `http://127.0.0.1:${(wss.address() as { port: number }).port}` }
}

t.test('a WebSocket upgrade that refreshes the session hands the new cookies to the client', async (t) => {
  const upstream = await echoWebSocketServer()
  const gw = await startGateway({
    config: { tokens: { accessTtl: '1s', refreshAhead: '500ms', reuseGrace: '300ms' }, routes: [{ name: 'ws', prefix: '/ws', upstream: upstream.url, websocket: true }] },
  })
  t.teardown(async () => {
    await gw.close()
    upstream.wss.close()
  })
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  // exp is rounded up to the second, so the token lives 1 to 2 s: after 1.6 s it is within refreshAhead (or past).
  await sleep(1600)
  const setCookies: string[] = []
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, { headers: { cookie: client.cookieHeader() } })
  ws.on('upgrade', (res) => setCookies.push(...((res.headers['set-cookie'] as string[] | undefined) ?? [])))
  await once(ws, 'open')
  ws.send('ping')
  const [echoed] = await once(ws, 'message')
  t.equal(String(echoed), 'ping', 'frames are relayed')
  ws.close()
  t.equal(setCookies.length, 2, 'the 101 answer carries the rotated access and refresh cookies')
  client.absorb(setCookies)
  await sleep(500)
  const session = await client.send('/auth/session')
  t.equal(session.status, 200, 'after the grace, the session still works with the cookies of the upgrade')
})

t.test('SIGTERM with an open WebSocket: the gateway closes it (1001) and exits 0', async (t) => {
  const upstream = await echoWebSocketServer()
  const dir = mkdtempSync(join(tmpdir(), 'sg-ws-term-'))
  const port = await freePort()
  const configFile = join(dir, 'gateway.yaml')
  writeFileSync(configFile, stringify({
    server: { host: '127.0.0.1', port }, cookies: { secure: false }, login: { users: await writeUsers(dir) },
    routes: [{ name: 'ws', prefix: '/ws', upstream: upstream.url, auth: 'public', websocket: true }],
  }))
  const child = spawn(process.execPath, ['bin/sessiongate.js', '--config', configFile], { stdio: 'ignore', env: { ...process.env, LOG_LEVEL: 'warn' } })
  t.teardown(() => {
    child.kill('SIGKILL')
    upstream.wss.close()
  })
  let up = false
  for (let i = 0; i < 400 && !up; i++) {
    up = (await send(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status === 200
    if (!up) await sleep(50)
  }
  t.ok(up, 'the gateway started (within 20 s)')
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`)
  await once(ws, 'open')
  const closed = once(ws, 'close')
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const [code] = await closed
  t.equal(code, 1001, 'the client is told the gateway is going away')
  const [exitCode] = await exited
  t.equal(exitCode, 0, 'and the process exits 0')
})

t.test('a reload keeps a key made in memory: the demo sessions survive SIGHUP', async (t) => {
  const { up: upstream, gw } = await openGateway(t, (url) => ({ routes: [{ name: 'api', prefix: '/api', upstream: url }] }))
  // Same gateway, but with `keys: ephemeral` from the start.
  const dir = mkdtempSync(join(tmpdir(), 'sg-eph-'))
  const file = join(dir, 'gateway.yaml')
  writeFileSync(file, stringify({ server: { host: '127.0.0.1', port: 0 }, cookies: { secure: false }, login: { users: await writeUsers(dir) }, routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] }))
  const { buildGateway } = await import('../src/server/build-gateway.js')
  const eph = await buildGateway(await loadConfig(file, {}), { logger: false })
  await eph.app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => eph.app.close())
  const base = `http://127.0.0.1:${(eph.app.server.address() as { port: number }).port}`
  const client = new CookieClient(base)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  await eph.reload(await loadConfig(file, {}))
  t.equal((await client.send('/api/x')).status, 200, 'the access token still verifies after the reload')
  const refreshed = await client.send('/auth/refresh', { method: 'POST' })
  t.equal(refreshed.status, 200, 'and the refresh token still passes its MAC check')
})

t.test('a refresh from the cookie is answered with cookies, never with raw tokens', async (t) => {
  const gw = await startGateway()
  t.teardown(() => gw.close())
  const client = new CookieClient(gw.url)
  await client.login('alice', 'alice-pw')
  const res = await client.send('/auth/refresh', { method: 'POST', headers: { 'x-session-mode': 'token' } })
  t.equal(res.status, 200)
  t.equal(res.json.refreshToken, undefined, 'no refresh token in the body')
  t.equal(res.json.accessToken, undefined, 'no access token in the body')
  t.equal(res.setCookies.length, 2, 'the new pair is set as cookies')
})

t.test('logout with a form body still logs out', async (t) => {
  const gw = await startGateway()
  t.teardown(() => gw.close())
  const client = new CookieClient(gw.url)
  await client.login('alice', 'alice-pw')
  const cookies = client.cookieHeader()
  const out = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { cookie: cookies, 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' })
  t.equal(out.status, 204)
  const after = await send(`${gw.url}/auth/session`, { headers: { cookie: cookies } })
  t.equal(after.status, 401, 'the session is gone')
  const formLogin = await send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'username=alice&password=alice-pw' })
  t.equal(formLogin.status, 400, 'a login needs JSON')
  t.equal(formLogin.json.error, 'invalid_request')
})

t.test('a pathological route prefix is refused at once (no catastrophic backtracking)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-redos-'))
  const file = join(dir, 'gateway.yaml')
  writeFileSync(file, stringify({ login: { users: await writeUsers(dir) }, routes: [{ name: 'x', prefix: `/${'a'.repeat(60)}%`, upstream: 'http://127.0.0.1:1' }] }))
  const error = await loadConfig(file, {}).catch((err: unknown) => err)
  t.ok(error instanceof ConfigError)
  t.match((error as ConfigError).problems, [{ path: 'routes[0].prefix' }])
})

t.test('Expect: 100-continue is answered by the gateway, not forwarded: the upload reaches the upstream (audit)', async (t) => {
  const { up, gw } = await openGateway(t, (url) => ({ routes: [{ name: 'open', prefix: '/open', upstream: url, auth: 'public' }, { name: 'api', prefix: '/api', upstream: url }] }))
  const { request } = await import('node:http')
  // As curl does for large bodies: headers first, the body only once the server says 100 Continue.
  const upload = (path: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: string; continued: boolean }>((resolve, reject) => {
      let continued = false
      const req = request(`${gw.url}${path}`, { method: 'POST', headers: { expect: '100-continue', 'content-type': 'text/plain', 'content-length': '5', ...headers } }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), continued }))
      })
      req.on('continue', () => {
        continued = true
        req.end('hello')
      })
      req.on('error', reject)
    })
  const open = await upload('/open/x')
  t.equal(open.status, 200, `public route: ${open.body}`)
  t.ok(open.continued, 'the client was told to continue')
  t.equal(up.last()?.body, 'hello', 'the body reached the upstream')
  t.equal(up.last()?.headers.expect, undefined, 'without the Expect header')
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const api = await upload('/api/y', { cookie: client.cookieHeader(), 'x-csrf': '1' })
  t.equal(api.status, 200, `protected route: ${api.body}`)
  t.equal(up.last()?.url, '/api/y')
  t.equal(up.last()?.body, 'hello')
})

t.test('a malformed percent-encoding in the path gets invalid_path in our words, not the router\'s (audit)', async (t) => {
  const { up, gw } = await openGateway(t)
  const { rawRequest } = await import('./helpers/client.js')
  for (const path of ['/auth/sess%ZZion', '/open/a%2', '/api/%G0', '/open/%FF', '/open/%C3%28']) {
    const res = await rawRequest(gw.port, { path })
    t.equal(res.status, 400, `${path} -> 400`)
    t.equal(res.json?.error, 'invalid_path')
    t.equal(res.json?.message, 'The request path is not acceptable: a %-escape in it is not two hex digits, or does not decode to UTF-8.', path)
  }
  t.equal(up.requests.length, 0, 'nothing was forwarded')
})

t.test("a path segment the proxy cannot forward ('...', 'a../b') gets invalid_path with its reason, not the library's (audit)", async (t) => {
  const { up, gw } = await openGateway(t)
  const { rawRequest } = await import('./helpers/client.js')
  for (const path of ['/open/...', '/open/..a/b', '/open/a../b', '/open/%2e%2e%2e', '/open/x/..../y', '/open/a../']) {
    const res = await rawRequest(gw.port, { path })
    t.equal(res.status, 400, `${path} -> 400`)
    t.equal(res.json?.error, 'invalid_path', `${path}: invalid_path`)
    t.match(res.json?.message, /begins with '\.\.'/, `${path}: says why (${res.json?.message})`)
  }
  t.equal(up.requests.length, 0, 'nothing was forwarded')
  for (const path of ['/open/a..', '/open/a.b', '/open/[...slug]', '/open/a...b/c', '/open/x/../y']) {
    const res = await rawRequest(gw.port, { path })
    t.equal(res.status, 200, `${path} is forwarded`)
  }
  t.same(up.requests.map((r) => r.url), ['/open/a..', '/open/a.b', '/open/%5B...slug%5D', '/open/a...b/c', '/open/y'])
})

t.test('WebDAV and other methods Node reads are proxied (CSRF applies), and refused with 405 on the gateway endpoints (audit)', async (t) => {
  const { up, gw } = await openGateway(t, (url) => ({ routes: [{ name: 'dav', prefix: '/dav', upstream: url }] }))
  const { rawRequest } = await import('./helpers/client.js')
  const login = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  const bearer = `Bearer ${login.json.accessToken}`
  for (const method of ['PROPFIND', 'MKCOL', 'LOCK', 'REPORT', 'PURGE', 'SEARCH']) {
    const res = await rawRequest(gw.port, { method, path: '/dav/folder/', headers: [['Authorization', bearer], ['Content-Type', 'application/xml']], body: '<propfind/>' })
    t.equal(res.status, 200, `${method} is proxied (${res.text.slice(0, 80)})`)
    t.equal(up.last()?.method, method)
    t.equal(up.last()?.body, '<propfind/>', `${method}: the body passes`)
  }
  const anonymous = await rawRequest(gw.port, { method: 'PROPFIND', path: '/dav/folder/' })
  t.equal(anonymous.status, 401, 'and authenticated like any other method')
  const cookie = new CookieClient(gw.url)
  t.equal((await cookie.login('alice', 'alice-pw')).status, 200)
  const forged = await rawRequest(gw.port, { method: 'PROPPATCH', path: '/dav/x', headers: [['Cookie', cookie.cookieHeader()]], body: '<x/>' })
  t.equal(forged.status, 403, 'an unsafe method in cookie mode needs X-CSRF')
  t.equal(forged.json?.error, 'csrf')
  const own = await rawRequest(gw.port, { method: 'PROPFIND', path: '/auth/login' })
  t.equal(own.status, 405, 'a gateway endpoint answers 405')
  t.equal(own.headers.allow, 'POST')
  const probe = await rawRequest(gw.port, { method: 'MKCOL', path: '/healthz' })
  t.equal(probe.status, 405)
})

t.test('login refusals say what is wrong: length limits, JSON that does not parse or pollutes a prototype (audit)', async (t) => {
  const gw = await startGateway()
  t.teardown(() => gw.close())
  const long = await send(`${gw.url}/auth/login`, { body: { username: 'a'.repeat(257), password: 'pw' } })
  t.equal(long.status, 400)
  t.equal(long.json.error, 'invalid_request')
  t.match(long.json.message, /at most 256 characters/)
  const raw = (payload: string) => send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: payload })
  for (const payload of ['{"__proto__": {"admin": true}, "username": "alice", "password": "alice-pw"}', '{"constructor": {"prototype": {"admin": true}}}', '{bad']) {
    const res = await raw(payload)
    t.equal(res.status, 400, payload)
    t.equal(res.json.error, 'invalid_request')
    t.match(res.json.message, /not valid JSON, or it holds a __proto__/, `${payload}: ${res.json.message}`)
    t.notMatch(res.json.message, /content-type is set/, 'not the framework wording')
  }
})

t.test('a compressed JSON body is refused for what it is, on login and refresh; logout still happens (audit)', async (t) => {
  const gw = await startGateway()
  t.teardown(() => gw.close())
  const { gzipSync } = await import('node:zlib')
  const gzipped = gzipSync(JSON.stringify({ username: 'alice', password: 'alice-pw' }))
  for (const path of ['/auth/login', '/auth/refresh']) {
    const res = await send(`${gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipped })
    t.equal(res.status, 400, path)
    t.equal(res.json.error, 'invalid_request')
    t.match(res.json.message, /must not be compressed/, `${path}: ${res.json.message}`)
  }
  const plain = await send(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'identity' }, body: JSON.stringify({ username: 'alice', password: 'alice-pw' }) })
  t.equal(plain.status, 200, 'Content-Encoding: identity is no compression')
  const logout = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipSync('{}') })
  t.equal(logout.status, 204, 'logout is always 204')
})

t.test('X-Session-Mode: token or cookie (any case); another value is a 400 that names both, before any password check', async (t) => {
  const gw = await startGateway()
  t.teardown(() => gw.close())
  const login = (mode: string) => send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': mode }, body: { username: 'alice', password: 'alice-pw' } })
  const token = await login(' Token ')
  t.equal(token.status, 200)
  t.type(token.json.accessToken, 'string', 'token mode: the tokens in the body')
  t.notOk(token.headers['set-cookie'], 'and no cookies')
  const cookie = await login('cookie')
  t.equal(cookie.status, 200)
  t.notOk('accessToken' in cookie.json, 'cookie mode: no tokens in the body')
  t.ok(cookie.headers['set-cookie'], 'but cookies')
  const empty = await login('')
  t.equal(empty.status, 200, 'an empty header is no header: cookie mode')
  t.ok(empty.headers['set-cookie'])
  for (const mode of ['tokens', 'bearer', 'token, token']) {
    const res = await login(mode)
    t.equal(res.status, 400, JSON.stringify(mode))
    t.equal(res.json.error, 'invalid_request')
    t.match(res.json.message, /X-Session-Mode must be token .* or cookie/)
    t.notOk(res.headers['set-cookie'], 'no session was started')
  }
  const wrongPassword = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'tokens' }, body: { username: 'alice', password: 'nope' } })
  t.equal(wrongPassword.json.error, 'invalid_request', 'the header is checked first: no failed login is counted for it')
})

t.test('CONNECT, an unsupported Expect and two Host headers get the JSON error, not silence or a bare answer (audit)', async (t) => {
  const { up, gw } = await openGateway(t)
  const { rawRequest } = await import('./helpers/client.js')
  const connect = await rawRequest(gw.port, { method: 'CONNECT', path: 'example.com:443', headers: [['Host', 'example.com:443']] })
  t.equal(connect.status, 405, 'CONNECT')
  t.equal(connect.json?.error, 'method_not_allowed')
  t.equal(connect.headers['cache-control'], 'no-store')
  t.match(connect.headers.allow, /GET, .*POST/, 'a 405 says what is allowed')
  t.notMatch(connect.headers.allow, /CONNECT/)
  const expect = await rawRequest(gw.port, { path: '/open/x', headers: [['Expect', 'something-else']] })
  t.equal(expect.status, 417, 'Expect other than 100-continue')
  t.equal(expect.json?.error, 'expectation_failed')
  t.match(expect.json?.message, /something-else/)
  const twoHosts = await rawRequest(gw.port, { path: '/open/x', headers: [['Host', 'a.example'], ['Host', 'b.example']] })
  t.equal(twoHosts.status, 400, 'two Host headers')
  t.equal(twoHosts.json?.error, 'invalid_request')
  t.match(twoHosts.json?.message, /more than one Host/)
  // Node keeps the first Authorization and drops the second: which token was meant is a guess (audit).
  for (const path of ['/open/x', '/auth/session']) {
    const twoAuthorizations = await rawRequest(gw.port, { path, headers: [['Authorization', 'Bearer a'], ['authorization', 'Bearer b']] })
    t.equal(twoAuthorizations.status, 400, `${path}: two Authorization headers`)
    t.equal(twoAuthorizations.json?.error, 'invalid_request')
    t.match(twoAuthorizations.json?.message, /more than one Authorization header/)
  }
  t.equal(up.requests.length, 0, 'none of them was forwarded')
  const fine = await rawRequest(gw.port, { path: '/open/x' })
  t.equal(fine.status, 200, 'one Host header passes')
})

t.test('another Authorization scheme is told to send a Bearer token; the login-page redirect is not stored (audit)', async (t) => {
  const { up, gw } = await openGateway(t, (url) => ({
    login: { page: '/login.html' },
    routes: [{ name: 'api', prefix: '/api', upstream: url }, { name: 'page', prefix: '/login.html', upstream: url, auth: 'public' }],
  }))
  for (const header of ['Basic YWxpY2U6YWxpY2UtcHc=', 'Digest username="alice"']) {
    const res = await send(`${gw.url}/api/x`, { headers: { authorization: header } })
    t.equal(res.status, 401, header)
    t.equal(res.json.error, 'unauthenticated')
    t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"', `${header}: the bearer-mode challenge`)
    t.match(res.json.message, /Authorization: Bearer <token>/, `${header}: says what to send`)
  }
  for (const header of ['Bearer', 'Bearer not-a-token']) {
    const res = await send(`${gw.url}/api/x`, { headers: { authorization: header } })
    t.equal(res.status, 401, header)
    t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"', `${header}: invalid_token as before`)
  }
  t.equal(up.requests.length, 0)
  const page = await send(`${gw.url}/api/x`, { headers: { accept: 'text/html', cookie: 'sg_access=stale' } })
  t.equal(page.status, 302)
  t.equal(page.headers.location, '/login.html')
  t.equal(page.headers['cache-control'], 'no-store', 'the redirect is not cached')
})

t.test('an HTTP/1.0 request without Host reaches the upstream without an empty X-Forwarded-Host (audit)', async (t) => {
  const { up, gw } = await openGateway(t)
  const { connect } = await import('node:net')
  const { parseRawReply } = await import('./helpers/client.js')
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const socket = connect(gw.port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => resolve(Buffer.concat(chunks)))
    socket.on('error', reject)
    socket.write('GET /open/x HTTP/1.0\r\n\r\n')
  })
  t.equal(parseRawReply(raw).status, 200)
  t.equal(up.last()?.url, '/open/x')
  t.notOk('x-forwarded-host' in (up.last()?.headers ?? {}), 'no X-Forwarded-Host at all')
  t.equal(up.last()?.headers['x-forwarded-proto'], 'http', 'the others are still set')
})

t.test('a reload keeps the restart-only watch setting as it was at start, so later reloads still warn (review)', async (t) => {
  const gw = await startGateway()
  t.teardown(() => gw.close())
  const { loadConfig: load } = await import('../src/config/load.js')
  const { readFileSync } = await import('node:fs')
  writeFileSync(gw.configFile, `${readFileSync(gw.configFile, 'utf8')}\nwatch: true\n`)
  await gw.gateway.reload(await load(gw.configFile))
  t.equal(gw.gateway.current().config.watch, false, 'the setting in force is the one the watchers were set up with')
})

t.test('an absolute-form request target is routed by its path (RFC 9112 3.2.2), gateway endpoints included (audit)', async (t) => {
  const { up, gw } = await openGateway(t)
  const { rawRequest } = await import('./helpers/client.js')
  const proxied = await rawRequest(gw.port, { path: `http://127.0.0.1:${gw.port}/open/x?a=1` })
  t.equal(proxied.status, 200)
  t.equal(up.last()?.url, '/open/x?a=1', 'the upstream gets the origin-form path and query')
  const elsewhere = await rawRequest(gw.port, { path: 'http://api.example:8443/open/y', headers: [['Host', 'other.example']] })
  t.equal(elsewhere.status, 200)
  t.equal(up.last()?.headers['x-forwarded-host'], 'api.example:8443', "the target's authority is the host, not the Host header (RFC 9112 3.2.2)")
  t.equal(up.last()?.headers.host, '127.0.0.1:' + new URL(up.url).port, 'the upstream still gets its own Host')
  const withUser = await rawRequest(gw.port, { path: 'http://user:secret@api.example/open/z', headers: [['Host', 'other.example']] })
  t.equal(withUser.status, 200)
  t.equal(up.last()?.headers['x-forwarded-host'], 'api.example', 'userinfo is never passed on')
  const ipv6 = await rawRequest(gw.port, { path: 'HTTP://[::1]:8080/open/v6', headers: [['Host', 'other.example']] })
  t.equal(ipv6.status, 200)
  t.equal(up.last()?.headers['x-forwarded-host'], '[::1]:8080', 'a bracketed IPv6 authority, any case of scheme')
  const probe = await rawRequest(gw.port, { path: `http://127.0.0.1:${gw.port}/healthz` })
  t.equal(probe.status, 200, 'a gateway endpoint')
  const bare = await rawRequest(gw.port, { path: 'http://127.0.0.1' })
  t.equal(bare.status, 404, 'no path is /, which no route serves here')
  for (const target of ['*', 'open/x', 'ftp://127.0.0.1/open/x']) {
    const res = await rawRequest(gw.port, { path: target })
    t.equal(res.status, 400, `${target} is still refused`)
  }
  t.equal(up.requests.length, 4, 'only those four requests were forwarded')
})
