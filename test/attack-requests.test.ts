/**
 * Attacks on the HTTP layer: request smuggling on raw sockets, traversal out of a public route, spoofed
 * forwarding and identity headers, `Connection`-header stripping of gateway-added headers (GHSA-gwhp-pf74-vj37),
 * oversized header blocks and bodies, slow-loris connections, and a client Authorization header riding along
 * with the session cookies. A real gateway on a real redis-server, recording upstreams.
 */
import { connect, type Socket } from 'node:net'
import { decodeJwt } from 'jose'
import t, { type Test } from 'tap'
import { CookieClient, rawRequest, send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis-server.js'
import { startUpstream } from './helpers/upstream.js'

const redis = await startRedis()
const upstream = await startUpstream()
const admin = await startUpstream()
const gw = await startGateway({
  redisUrl: redis.url,
  config: {
    server: { bodyLimit: 1024 },
    redis: { keyPrefix: 'areq:' },
    tokens: { accessTtl: '2s', refreshAhead: '1s', clockTolerance: 0 },
    routes: [
      { name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public' },
      { name: 'api', prefix: '/api', upstream: upstream.url, headers: { 'X-User-Id': '{sub}', 'X-User-Roles': '{roles}' } },
      { name: 'opt', prefix: '/opt', upstream: upstream.url, auth: 'optional', headers: { 'X-User-Id': '{sub}' } },
      { name: 'admin', prefix: '/admin', upstream: admin.url },
      // One upstream, a public prefix and a protected one under it (as a legacy Java app is often fronted).
      { name: 'shop', prefix: '/shop', upstream: upstream.url, auth: 'public' },
      { name: 'shop-admin', prefix: '/shop/admin', upstream: upstream.url, require: { roles: ['admin'] } },
    ],
  },
})
t.teardown(async () => {
  await gw.close()
  await upstream.close()
  await admin.close()
  await redis.stop()
})

const login = async (username: string) => {
  const res = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username, password: `${username}-pw` } })
  if (res.status !== 200) throw new Error(`login failed: ${res.status}`)
  return res.json.accessToken as string
}

/** Sends bytes exactly as given on one socket and collects everything until the server closes it. */
function exchange(bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(gw.port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
    socket.on('error', (err) => (chunks.length > 0 ? undefined : reject(err)))
    socket.setTimeout(5000, () => socket.destroy())
    // Not end(): a half-closed socket would make the server drop the answers to pipelined requests.
    socket.write(bytes)
  })
}

/** The status codes of every response in a raw exchange (a body need not end with a newline). */
const statusLines = (raw: string) => [...raw.matchAll(/HTTP\/1\.1 (\d{3}) [A-Z]/g)].map((m) => Number(m[1]))

// Slow-loris connections are opened now and checked by the last test, so their wait overlaps the other tests.
function slowLoris(trickle: boolean): { closed: Promise<string>; socket: Socket } {
  const socket = connect(gw.port, '127.0.0.1')
  const chunks: Buffer[] = []
  let timer: NodeJS.Timeout | undefined
  const closed = new Promise<string>((resolve) => {
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => {})
    socket.on('close', () => {
      clearInterval(timer)
      resolve(Buffer.concat(chunks).toString('latin1'))
    })
  })
  socket.write(`GET /pub/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Partial: `)
  if (trickle) timer = setInterval(() => socket.writable && socket.write('a'), 300)
  return { closed, socket }
}
const silentLoris = slowLoris(false)
const tricklingLoris = slowLoris(true)

t.test('request smuggling on a raw socket: 400 from the parser, nothing smuggled reaches the upstream', async (t) => {
  const smuggled = 'GET /pub/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
  const cases: [string, string][] = [
    ['Content-Length and Transfer-Encoding (CL.TE)', `POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ['Transfer-Encoding and Content-Length (TE.CL)', `POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n${smuggled}\r\n0\r\n\r\n`],
    ['an obfuscated Transfer-Encoding with Content-Length', `POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${smuggled}`],
    ['Transfer-Encoding with a space before the colon', `POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ['obs-fold: a header continued on the next line', `GET /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Folded: a\r\n b\r\n\r\n${smuggled}`],
    ['obs-fold hiding Transfer-Encoding', `POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ['two different Content-Lengths', `POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`],
    ['a Content-Length list with different values', `POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0, ${smuggled.length}\r\n\r\n${smuggled}`],
    ['a bare LF inside a header line', `GET /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${smuggled}`],
    ['no Host header (HTTP/1.1)', `GET /pub/a HTTP/1.1\r\nX-A: 1\r\n\r\n`],
    ['a chunk size with junk', `POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5;\u0000x\r\nhello\r\n0\r\n\r\n${smuggled}`],
  ]
  for (const [what, bytes] of cases) {
    const before = upstream.requests.length
    const reply = await exchange(bytes)
    t.same(statusLines(reply), [400], `${what}: one response, 400`)
    t.match(reply, /\r\n\r\n\{"error":"invalid_request","message":"[^"]+"\}$/, `${what}: the contract's JSON error`)
    t.equal(upstream.requests.length, before, `${what}: the upstream sees nothing`)
  }
  t.notOk(upstream.requests.some((r) => r.url.includes('smuggled')), 'no smuggled request ever reached the upstream')

  // Control: two well-formed pipelined requests on one socket are both answered and both forwarded.
  const before = upstream.requests.length
  const pipelined = await exchange(`GET /pub/one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /pub/two HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
  t.same(statusLines(pipelined), [200, 200], 'control: two pipelined requests, two answers')
  t.same(upstream.requests.slice(before).map((r) => r.url), ['/pub/one', '/pub/two'], 'control: the upstream sees both')
  t.equal((await send(`${gw.url}/healthz`)).status, 200, 'the gateway still serves')
})

t.test('traversal and encoded slashes cannot leave a public route for a protected one', async (t) => {
  const paths: [string, number][] = [
    ['/pub/../admin/users', 401],
    ['/pub/%2e%2e/admin/users', 401],
    ['/pub/%2E%2E/%2e%2e/admin/users', 401],
    ['/pub/./../admin/users', 401],
    ['/pub/..%2fadmin/users', 400],
    ['/pub/%2f..%2fadmin/users', 400],
    ['/pub/..%5cadmin/users', 400],
    ['/pub/..\\admin/users', 400],
    ['/pub/%252e%252e/admin/users', 200],
  ]
  for (const [path, status] of paths) {
    const res = await rawRequest(gw.port, { path })
    t.equal(res.status, status, `${path}: ${status}`)
  }
  t.equal(admin.requests.length, 0, 'the protected upstream was never reached without credentials')
  t.equal(upstream.last()?.url, '/pub/%252e%252e/admin/users', 'a double-encoded dot-dot stays a literal segment under /pub')
})

t.test("path parameters (';') never decide a route: Tomcat, Jetty and Spring drop them before routing, Express, Go and nginx do not", async (t) => {
  const bob = await login('bob')
  const alice = await login('alice')
  const before = upstream.requests.length
  const anonymous: [string, number][] = [
    ['/shop/admin;x/users', 400], // shop-admin without the parameters, shop with them
    ['/shop/admin;/users', 400],
    ['/shop/admin;jsessionid=0A1B/users', 400],
    ['/shop;x/admin/users', 400],
    ['/shop/;x/admin/users', 401], // an empty name with parameters is dropped for both readings (and not forwarded)
    ['/shop/admin/users;jsessionid=0A1B', 401], // past the prefix: the admin route either way
    ['/shop/..;/shop/admin/users', 400],
    ['/shop/x/..;x/admin/users', 400],
    ['/shop/.;x/admin/users', 400],
    ['/shop/x;../admin/users', 400], // with its parameters the segment ends with '..' before another
    ['/shop/x;%2e%2e/admin/users', 400],
  ]
  for (const [path, status] of anonymous) {
    const res = await rawRequest(gw.port, { path })
    t.equal(res.status, status, `anonymous ${path}: ${status}`)
  }
  t.equal(upstream.requests.length, before, 'none of them was forwarded')
  const asBob = await send(`${gw.url}/shop/admin;x/users`, { headers: { authorization: `Bearer ${bob}` } })
  t.equal(asBob.status, 400, 'bob is refused too, before any route is chosen')
  t.equal(asBob.json.error, 'invalid_path')
  t.match(asBob.json.message, /path parameters/, 'the message names the parameters')
  const bobPast = await send(`${gw.url}/shop/admin/users;jsessionid=0A1B`, { headers: { authorization: `Bearer ${bob}` } })
  t.equal(bobPast.status, 403, "parameters past the prefix: the admin route's rules")
  t.equal(upstream.requests.length, before, 'and nothing was forwarded')
  const asAlice = await send(`${gw.url}/shop/admin/users;jsessionid=0A1B?q=1`, { headers: { authorization: `Bearer ${alice}` } })
  t.equal(asAlice.status, 200, 'an admin passes')
  t.equal(upstream.last()?.url, '/shop/admin/users;jsessionid=0A1B?q=1', 'and the parameters are forwarded as sent (a jsessionid link keeps working)')
  const onPublic = await rawRequest(gw.port, { path: '/shop/cart;jsessionid=0A1B/items' })
  t.equal(onPublic.status, 200, 'parameters that decide no route pass on a public route')
  t.equal(upstream.last()?.url, '/shop/cart;jsessionid=0A1B/items')
  const encoded = await rawRequest(gw.port, { path: '/shop/admin%3B/users' })
  t.equal(encoded.status, 200, 'an encoded %3B is part of the name for every server (admin; is not admin): the public route')
  t.equal(upstream.last()?.url, '/shop/admin%3B/users', 'forwarded still encoded')
})

t.test('spoofed X-Forwarded-For and identity headers are replaced or removed', async (t) => {
  const token = await login('alice')
  const spoofed: [string, string][] = [
    ['Authorization', `Bearer ${token}`],
    ['X-Forwarded-For', '10.0.0.1'],
    ['X-Forwarded-Host', 'evil.example'],
    ['X-Forwarded-Proto', 'https'],
    ['X-User-Id', 'admin'],
    ['x-user-id', 'root'],
    ['X-USER-ROLES', 'admin,superuser'],
  ]
  const res = await rawRequest(gw.port, { path: '/api/me', headers: spoofed })
  t.equal(res.status, 200)
  const seen = upstream.last()!.headers
  t.equal(seen['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For is the peer (trustProxy off)')
  t.equal(seen['x-forwarded-host'], '127.0.0.1:' + gw.port)
  t.equal(seen['x-forwarded-proto'], 'http')
  t.equal(seen['x-user-id'], 'user-1', 'X-User-Id from the token, not the client')
  t.equal(seen['x-user-roles'], 'admin', 'X-User-Roles from the token')

  const anonymous = await rawRequest(gw.port, { path: '/opt/me', headers: [['X-User-Id', 'admin']] })
  t.equal(anonymous.status, 200)
  t.notOk('x-user-id' in upstream.last()!.headers, 'an anonymous request on an optional route carries no client X-User-Id')
  const noAuth = await rawRequest(gw.port, { path: '/api/me', headers: [['X-User-Id', 'admin']] })
  t.equal(noAuth.status, 401, 'and a spoofed identity header alone authenticates nothing')
})

t.test('Connection: authorization, x-user-id cannot strip the headers the gateway adds (GHSA-gwhp-pf74-vj37)', async (t) => {
  // The gateway builds the upstream's headers itself, in one pass: a header named by the client's Connection header
  // is dropped before the gateway's own are added, so it can never remove them.
  const token = await login('alice')
  const connections = [
    'authorization, x-user-id',
    'keep-alive, Authorization, X-User-Id, X-User-Roles',
    'x-forwarded-for, x-forwarded-host, x-forwarded-proto',
    'cookie',
  ]
  for (const connection of connections) {
    const res = await rawRequest(gw.port, {
      path: '/api/me',
      headers: [['Authorization', `Bearer ${token}`], ['Connection', connection], ['Connection', 'close'], ['Cookie', 'theme=dark']],
    })
    t.equal(res.status, 200, `Connection: ${connection}: 200`)
    const seen = upstream.last()!.headers
    t.equal(seen.authorization, `Bearer ${token}`, `Connection: ${connection}: the Bearer arrives`)
    t.equal(seen['x-user-id'], 'user-1', `Connection: ${connection}: X-User-Id arrives`)
    t.equal(seen['x-user-roles'], 'admin', `Connection: ${connection}: X-User-Roles arrives`)
    t.equal(seen['x-forwarded-for'], '127.0.0.1', `Connection: ${connection}: X-Forwarded-For arrives`)
    t.ok(seen['x-forwarded-host'] && seen['x-forwarded-proto'], `Connection: ${connection}: X-Forwarded-Host/-Proto arrive`)
  }
})

t.test('a header block over 16 KiB is 431; a body over bodyLimit on /auth/login is 413', async (t) => {
  const before = upstream.requests.length
  const big = await rawRequest(gw.port, { path: '/pub/x', headers: [['X-Big', 'a'.repeat(20_000)]] })
  t.equal(big.status, 431, 'one 20 KB header: 431')
  t.equal(big.json?.error, 'headers_too_large', 'the documented error code')
  const many = await rawRequest(gw.port, { path: '/pub/x', headers: Array.from({ length: 1500 }, (_, i) => [`X-H${i}`, 'abcdefgh'] as [string, string]) })
  t.equal(many.status, 431, '1,500 small headers (over 16 KiB together): 431')
  t.equal(upstream.requests.length, before, 'neither reached the upstream')

  const body = JSON.stringify({ username: 'alice', password: 'x'.repeat(2000) })
  const tooLarge = await send(`${gw.url}/auth/login`, { body, headers: { 'content-type': 'application/json' } })
  t.equal(tooLarge.status, 413)
  t.equal(tooLarge.json?.error, 'payload_too_large')
  const chunked = await rawRequest(gw.port, {
    method: 'POST',
    path: '/auth/login',
    headers: [['Content-Type', 'application/json'], ['Transfer-Encoding', 'chunked']],
    body: `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
  })
  t.equal(chunked.status, 413, 'the same body sent chunked (no Content-Length): 413')
  t.equal(chunked.json?.error, 'payload_too_large')
})

t.test('cookie mode: a client Authorization header never reaches the upstream', async (t) => {
  const bobToken = await login('bob')
  const alice = new CookieClient(gw.url)
  t.equal((await alice.login('alice', 'alice-pw')).status, 200)
  const res = await alice.send('/api/me', { headers: { authorization: `Bearer ${bobToken}` } })
  t.equal(res.status, 200)
  const seen = upstream.last()!.headers
  t.equal(seen.authorization, `Bearer ${alice.jar.get('sg_access')}`, "alice's cookie token is forwarded, not the header")
  t.equal(seen['x-user-id'], 'user-1')

  // With the access cookie gone the gateway rotates; the client's header still does not win.
  alice.jar.delete('sg_access')
  const rotated = await alice.send('/api/me', { headers: { authorization: `Bearer ${bobToken}` } })
  t.equal(rotated.status, 200)
  const forwarded = (upstream.last()!.headers.authorization ?? '').replace(/^Bearer /, '')
  t.not(forwarded, bobToken, 'not the client header')
  t.equal(decodeJwt(forwarded).sub, 'user-1', 'the rotated token of the cookie session')
  t.equal(forwarded, alice.jar.get('sg_access'), 'the same token the client receives as its new cookie')

  // An invalid cookie session with a valid client header: refused, not "rescued" by the header.
  const before = upstream.requests.length
  const refused = await send(`${gw.url}/api/me`, { headers: { cookie: 'sg_access=garbage', authorization: `Bearer ${bobToken}` } })
  t.equal(refused.status, 401, 'an invalid cookie with a valid Authorization header: 401')
  t.equal(upstream.requests.length, before, 'the upstream is not called')
})

t.test('slow-loris: partial header blocks are closed by the server (headersTimeout)', async (t) => {
  t.setTimeout(30_000)
  const before = upstream.requests.length
  const silent = await silentLoris.closed
  t.pass('a connection that sent part of its headers and then nothing was closed by the server')
  t.match(silent, /^HTTP\/1\.1 408 .*"error":"request_timeout"/s, 'with 408 request_timeout')
  const trickled = await tricklingLoris.closed
  t.pass('a connection trickling one header byte every 300 ms was closed too')
  t.match(trickled, /^HTTP\/1\.1 408 .*"error":"request_timeout"/s)
  t.equal(upstream.requests.length, before, 'neither reached the upstream')
  t.equal((await send(`${gw.url}/healthz`)).status, 200, 'the gateway served others all along')
})
