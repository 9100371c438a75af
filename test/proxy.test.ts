import { createHash, randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { request } from 'undici'
import { rawRequest, send } from './helpers/client.js'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { freePort } from './helpers/redis-server.js'
import { startUpstream, type TestUpstream } from './helpers/upstream.js'

const MB = 1024 * 1024

async function gatewayFor(t: { teardown: (fn: () => unknown) => void }, routes: object[], server: object = {}): Promise<StartedGateway> {
  const gw = await startGateway({ config: { server, routes } })
  t.teardown(() => gw.close())
  return gw
}

function rawSocket(port: number): Promise<import('node:net').Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket))
    socket.on('error', reject)
  })
}

/** Polls `check` every 20 ms for up to 5 s (a bound, not a measurement). */
async function eventuallyTrue(check: () => boolean): Promise<boolean> {
  for (let i = 0; i < 250; i++) {
    if (check()) return true
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return check()
}

async function upstreamFor(t: { teardown: (fn: () => unknown) => void }, ...args: Parameters<typeof startUpstream>): Promise<TestUpstream> {
  const up = await startUpstream(...args)
  t.teardown(() => up.close())
  return up
}

const pub = (name: string, prefix: string, upstream: string, extra: object = {}) => ({ name, prefix, upstream, auth: 'public', ...extra })

t.test('the query string is kept, method and body pass, status and headers come back', async (t) => {
  const up = await upstreamFor(t, (_req, res, recorded) => {
    res.statusCode = recorded.method === 'POST' ? 201 : 200
    res.setHeader('location', '/orders/42')
    res.setHeader('x-upstream', 'yes')
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(recorded))
  })
  const gw = await gatewayFor(t, [pub('orders', '/api/orders', up.url, { rewritePrefix: '/orders' })])
  const res = await send(`${gw.url}/api/orders/7?a=1&b=two&a=3&c=%20x&empty=`)
  t.equal(res.status, 200)
  t.equal(up.last()?.url, '/orders/7?a=1&b=two&a=3&c=%20x&empty=', 'the query reaches the upstream as sent')
  t.equal(res.headers['x-upstream'], 'yes')

  const post = await send(`${gw.url}/api/orders?x=1`, { method: 'POST', body: { item: 'book', qty: 2 } })
  t.equal(post.status, 201, 'the upstream status comes back')
  t.equal(post.headers.location, '/orders/42')
  t.equal(up.last()?.method, 'POST')
  t.equal(up.last()?.body, JSON.stringify({ item: 'book', qty: 2 }), 'the body arrives as sent')
  t.equal(up.last()?.headers['content-type'], 'application/json')

  const big = 'x'.repeat(2 * MB)
  const put = await send(`${gw.url}/api/orders/7`, { method: 'PUT', body: big, headers: { 'content-type': 'text/plain' } })
  t.equal(put.status, 200, 'a proxied body larger than server.bodyLimit is not refused')
  t.equal(up.last()?.body.length, big.length)
})

t.test('X-Forwarded-*: a spoofed chain is replaced unless the peer is a trusted proxy', async (t) => {
  const up = await upstreamFor(t)
  const spoof: [string, string][] = [
    ['X-Forwarded-For', '6.6.6.6'],
    ['X-Forwarded-Proto', 'https'],
    ['X-Forwarded-Host', 'evil.example'],
  ]
  const untrusted = await gatewayFor(t, [pub('p', '/p', up.url)])
  const plain = await rawRequest(untrusted.port, { path: '/p', headers: [['Host', 'gw.example:8080']] })
  t.equal(plain.status, 200)
  t.equal(plain.json.headers['x-forwarded-for'], '127.0.0.1', 'the peer address')
  t.equal(plain.json.headers['x-forwarded-proto'], 'http')
  t.equal(plain.json.headers['x-forwarded-host'], 'gw.example:8080', 'the Host the client asked for')

  const spoofed = await rawRequest(untrusted.port, { path: '/p', headers: [['Host', 'gw.example'], ...spoof] })
  t.equal(spoofed.json.headers['x-forwarded-for'], '127.0.0.1', 'trustProxy: false -> a client X-Forwarded-For is replaced')
  t.equal(spoofed.json.headers['x-forwarded-proto'], 'http', 'and X-Forwarded-Proto')
  t.equal(spoofed.json.headers['x-forwarded-host'], 'gw.example', 'and X-Forwarded-Host')

  const twice = await rawRequest(untrusted.port, { path: '/p', headers: [['X-Forwarded-For', '6.6.6.6'], ['X-Forwarded-For', '7.7.7.7']] })
  t.equal(twice.json.headers['x-forwarded-for'], '127.0.0.1', 'repeated headers are replaced too')

  const trusted = await gatewayFor(t, [pub('p', '/p', up.url)], { trustProxy: ['127.0.0.1'] })
  const viaProxy = await rawRequest(trusted.port, { path: '/p', headers: [['Host', 'gw.example'], ...spoof] })
  t.equal(viaProxy.json.headers['x-forwarded-for'], '6.6.6.6, 127.0.0.1', 'a trusted peer: the chain is appended to')
  t.equal(viaProxy.json.headers['x-forwarded-proto'], 'https', "a trusted peer's X-Forwarded-Proto is kept")
  t.equal(viaProxy.json.headers['x-forwarded-host'], 'evil.example', "a trusted peer's X-Forwarded-Host is kept")
  const direct = await rawRequest(trusted.port, { path: '/p', headers: [['Host', 'gw.example']] })
  t.equal(direct.json.headers['x-forwarded-for'], '127.0.0.1', 'a trusted peer without a chain: just the peer')

  const otherNet = await gatewayFor(t, [pub('p', '/p', up.url)], { trustProxy: ['10.0.0.0/8'] })
  const notListed = await rawRequest(otherNet.port, { path: '/p', headers: spoof })
  t.equal(notListed.json.headers['x-forwarded-for'], '127.0.0.1', 'a peer outside the trusted ranges is not trusted')
})

t.test('hop-by-hop headers are dropped both ways', async (t) => {
  const up = await upstreamFor(t, (_req, res, recorded) => {
    res.setHeader('connection', 'x-bar')
    res.setHeader('x-bar', 'hop-only')
    res.setHeader('keep-alive', 'timeout=99')
    res.setHeader('proxy-authenticate', 'Basic realm="upstream"')
    res.setHeader('upgrade', 'foo/1')
    res.setHeader('x-end-to-end', 'kept')
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(recorded))
  })
  const gw = await gatewayFor(t, [pub('p', '/p', up.url)])
  const res = await rawRequest(gw.port, {
    path: '/p',
    headers: [
      ['Connection', 'keep-alive, x-foo'],
      ['Connection', 'close'],
      ['X-Foo', 'hop-only'],
      ['Keep-Alive', 'timeout=5, max=100'],
      ['TE', 'trailers'],
      ['Upgrade', 'h2c'],
      ['Proxy-Authorization', 'Basic c2VjcmV0'],
      ['Proxy-Connection', 'keep-alive'],
      ['Trailer', 'x-checksum'],
      ['X-Kept', 'end-to-end'],
    ],
  })
  t.equal(res.status, 200)
  const received = res.json.headers as Record<string, string>
  for (const name of ['x-foo', 'keep-alive', 'te', 'upgrade', 'proxy-authorization', 'proxy-connection', 'trailer']) {
    t.notOk(name in received, `the upstream does not receive ${name}`)
  }
  t.notMatch(received.connection ?? '', /x-foo|close/, "the client's Connection header is not forwarded")
  t.equal(received['x-kept'], 'end-to-end', 'end-to-end headers are forwarded')

  for (const name of ['x-bar', 'keep-alive', 'proxy-authenticate', 'upgrade']) {
    t.notOk(name in res.headers, `the client does not receive the upstream's ${name}`)
  }
  t.notMatch(String(res.headers.connection ?? ''), /x-bar/, "the upstream's Connection header is not passed back")
  t.equal(res.headers['x-end-to-end'], 'kept')
})

t.test('route headers: same-named inbound headers are removed, claims injected', async (t) => {
  const up = await upstreamFor(t)
  const headers = { 'X-User-Id': '{sub}', 'X-User-Roles': '{roles}', 'X-Gateway': 'sessiongate' }
  const gw = await startGateway({
    config: {
      routes: [
        pub('pub', '/pub', up.url, { headers }),
        { name: 'opt', prefix: '/opt', upstream: up.url, auth: 'optional', headers },
        { name: 'prot', prefix: '/prot', upstream: up.url, auth: 'required', headers },
      ],
    },
  })
  t.teardown(() => gw.close())
  const spoof: [string, string][] = [
    ['X-User-Id', 'admin'],
    ['x-user-roles', 'admin,root'],
    ['X-USER-ID', 'root'],
    ['X-Gateway', 'spoofed'],
  ]
  for (const prefix of ['/pub', '/opt']) {
    const res = await rawRequest(gw.port, { path: `${prefix}/x`, headers: spoof })
    t.equal(res.status, 200)
    const received = res.json.headers as Record<string, string>
    t.notOk('x-user-id' in received, `${prefix}: a client X-User-Id never reaches the upstream`)
    t.notOk('x-user-roles' in received, `${prefix}: nor X-User-Roles`)
    t.notOk('x-gateway' in received, `${prefix}: an anonymous request gets no identity headers at all`)
  }

  const login = await send(`${gw.url}/auth/login`, {
    method: 'POST',
    headers: { 'x-session-mode': 'token' },
    body: { username: 'alice', password: 'alice-pw' },
  })
  t.equal(login.status, 200)
  const res = await rawRequest(gw.port, { path: '/prot/x', headers: [['Authorization', `Bearer ${login.json.accessToken}`], ...spoof] })
  t.equal(res.status, 200)
  t.equal(res.json.headers['x-user-id'], 'user-1', 'the verified sub, not the client copies')
  t.equal(res.json.headers['x-user-roles'], 'admin')
  t.equal(res.json.headers['x-gateway'], 'sessiongate')
})

t.test('cookies: the gateway cookies are removed, others pass; upstream Set-Cookie comes back', async (t) => {
  const up = await upstreamFor(t, (_req, res, recorded) => {
    res.setHeader('set-cookie', ['legacy_session=abc; Path=/; HttpOnly', 'pref=dark; Path=/'])
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(recorded))
  })
  const gw = await gatewayFor(t, [pub('p', '/p', up.url)])
  const res = await send(`${gw.url}/p`, { headers: { cookie: 'sg_access=tok; theme=light; sg_refresh=ref; lang=en' } })
  t.equal(res.status, 200)
  t.equal(res.json.headers.cookie, 'theme=light; lang=en', 'other cookies pass, the gateway ones do not')
  t.same(res.setCookies, ['legacy_session=abc; Path=/; HttpOnly', 'pref=dark; Path=/'], 'both Set-Cookie lines come back')
  const only = await send(`${gw.url}/p`, { headers: { cookie: 'sg_access=tok' } })
  t.notOk('cookie' in only.json.headers, 'no Cookie header at all when only gateway cookies were sent')
})

t.test('a route timeout holds to the millisecond, not to undici\'s half-second ticks: 500ms against a 900 ms upstream is a 504 (audit)', async (t) => {
  const timers = new Set<NodeJS.Timeout>()
  t.teardown(() => timers.forEach(clearTimeout))
  const slowish = await upstreamFor(t, (_req, res) => {
    timers.add(setTimeout(() => res.end('{"late":true}'), 900))
  })
  const gw = await gatewayFor(t, [pub('slowish', '/slowish', slowish.url, { timeout: '500ms' }), pub('patient', '/patient', slowish.url, { timeout: '2s' })])
  const late = await send(`${gw.url}/slowish/x`)
  t.equal(late.status, 504, 'undici alone answered 200 here (its timer fires up to ~500 ms after the deadline)')
  t.equal(late.json.error, 'gateway_timeout')
  const inTime = await send(`${gw.url}/patient/x`)
  t.equal(inTime.status, 200, 'an upstream within its timeout is answered')
})

t.test('the route timeout starts once the request is sent: a slow upload is not the upstream being slow; a 1xx does not end the wait (review)', async (t) => {
  const timers = new Set<NodeJS.Timeout>()
  t.teardown(() => timers.forEach(clearTimeout))
  // The echo upstream answers once the whole body is in.
  const up = await upstreamFor(t)
  const hinting = await upstreamFor(t, (_req, res) => {
    res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
    timers.add(setTimeout(() => res.end('{"late":true}'), 900))
  })
  const gw = await gatewayFor(t, [pub('upload', '/upload', up.url, { timeout: '500ms' }), pub('hints', '/hints', hinting.url, { timeout: '500ms' })])
  async function* slowBody() {
    for (let i = 0; i < 5; i++) {
      yield Buffer.from(`part ${i};`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
  const upload = await request(`${gw.url}/upload/x`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: Readable.from(slowBody()) })
  const echoed = (await upload.body.json()) as { body: string }
  t.equal(upload.statusCode, 200, 'a ~1 s upload through a 500ms route is answered')
  t.equal(echoed.body, 'part 0;part 1;part 2;part 3;part 4;', 'whole')
  const hinted = await send(`${gw.url}/hints/x`)
  t.equal(hinted.status, 504, 'an early hint does not stop the clock')
})

t.test('a client that leaves before the upstream answers cancels the upstream request, even on a route without timeout (audit)', async (t) => {
  let closed = 0
  const received: number[] = []
  const never = await upstreamFor(t, (req) => {
    received.push(1)
    req.socket.once('close', () => closed++)
  })
  const gw = await gatewayFor(t, [pub('poll', '/poll', never.url, { timeout: 0 })])
  for (let i = 0; i < 5; i++) {
    const socket = await rawSocket(gw.port)
    socket.write(`GET /poll/x${i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)
    await eventuallyTrue(() => received.length === i + 1)
    socket.destroy()
  }
  t.ok(await eventuallyTrue(() => closed === 5), `every upstream request was cancelled (${closed} of 5)`)
  // Pipelined: the second request's response never gets a close of its own; the connection's close cancels it (review).
  const socket = await rawSocket(gw.port)
  socket.write('GET /poll/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /poll/p2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  await eventuallyTrue(() => received.length === 7)
  socket.destroy()
  t.ok(await eventuallyTrue(() => closed === 7), `both pipelined upstream requests were cancelled (${closed - 5} of 2)`)
})

t.test('a client that leaves before the response ended is logged (info) and counted as 499, before the head or mid-body', async (t) => {
  const lines: Record<string, unknown>[] = []
  const stream = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }
  const received: string[] = []
  const up = await upstreamFor(t, (req, res) => {
    received.push(req.url ?? '')
    if (req.url?.startsWith('/slow/body')) {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first part')
    }
  })
  const gw = await startGateway({ config: { routes: [pub('slow', '/slow', up.url, { timeout: 0 })] }, logger: { level: 'info', stream } })
  t.teardown(() => gw.close())
  const left = (path: string) => lines.filter((l) => l.msg === 'client left before the response ended: upstream request cancelled' && String(l.reqId ?? '') !== '' && l.route === 'slow' && lines.some((m) => m.reqId === l.reqId && (m.req as { url?: string } | undefined)?.url === path))
  const before = await rawSocket(gw.port)
  before.write('GET /slow/head HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  await eventuallyTrue(() => received.length === 1)
  before.destroy()
  t.ok(await eventuallyTrue(() => left('/slow/head').length === 1), 'before the head: one info line')
  t.equal(left('/slow/head')[0]?.level, 30)
  t.equal(left('/slow/head')[0]?.responding, false)
  const midBody = await rawSocket(gw.port)
  let got = ''
  midBody.on('data', (chunk: Buffer) => { got += chunk.toString() })
  midBody.write('GET /slow/body HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  await eventuallyTrue(() => got.includes('first part'))
  midBody.destroy()
  t.ok(await eventuallyTrue(() => left('/slow/body').length === 1), 'mid-body: one info line')
  t.equal(left('/slow/body')[0]?.responding, true)
  const metrics = await (await request(`${gw.url}/metrics`)).body.text()
  t.match(metrics, /sessiongate_requests_total\{route="slow",status="499"\} 2\n/, 'both counted as 499, client closed request')
  t.notMatch(metrics, /route="slow",status="200"/, 'not as the status whose head went out')
})

t.test('response headers go out when the upstream sends them, before a body that comes later (audit)', async (t) => {
  let sendEvent: () => void = () => {}
  const stream = await upstreamFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.flushHeaders()
    sendEvent = () => res.end('data: hello\n\n')
  })
  const gw = await gatewayFor(t, [pub('events', '/events', stream.url, { timeout: 0 })])
  const pending = request(`${gw.url}/events/x`)
  const first = await Promise.race([pending.then(() => 'headers'), new Promise((resolve) => setTimeout(resolve, 3000, 'nothing'))])
  t.equal(first, 'headers', 'the headers arrived while the upstream had sent no body yet')
  sendEvent()
  const res = await pending
  t.equal(res.headers['content-type'], 'text/event-stream')
  t.equal(await res.body.text(), 'data: hello\n\n')
})

t.test('HEAD, 204 and 304 pass with their headers and no body; an empty query is none; repeated Set-Cookie lines stay apart', async (t) => {
  const up = await upstreamFor(t, (req, res) => {
    if (req.url?.startsWith('/x/none')) return void res.writeHead(204, { 'x-kind': 'none' }).end()
    if (req.url?.startsWith('/x/same')) return void res.writeHead(304, { etag: '"v1"' }).end()
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '11', 'set-cookie': ['a=1; Path=/', 'b=2; Path=/'], 'x-url': req.url ?? '' })
    res.end(req.method === 'HEAD' ? undefined : 'hello world')
  })
  const gw = await gatewayFor(t, [pub('x', '/x', up.url)])
  const head = await request(`${gw.url}/x/file?`, { method: 'HEAD' })
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-length'], '11', 'HEAD: the length of what GET would send')
  t.equal(await head.body.text(), '', 'HEAD: no body')
  t.equal(head.headers['x-url'], '/x/file', 'a lone "?" is not forwarded')
  t.same(head.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/'], 'two Set-Cookie lines, not one joined')
  const none = await request(`${gw.url}/x/none`)
  t.equal(none.statusCode, 204)
  t.equal(none.headers['x-kind'], 'none')
  t.equal(await none.body.text(), '')
  const same = await request(`${gw.url}/x/same`, { headers: { 'if-none-match': '"v1"' } })
  t.equal(same.statusCode, 304)
  t.equal(same.headers.etag, '"v1"')
  t.equal(await same.body.text(), '')
})

t.test('an upstream that breaks off mid-body cuts the client response short, and the next request is served (forwarder)', async (t) => {
  let broken = 0
  const up = await upstreamFor(t, (req, res) => {
    if (req.url?.startsWith('/x/ok')) return void res.end('fine')
    broken++
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '100000' })
    res.write(Buffer.alloc(1000, 1), () => setTimeout(() => req.socket.destroy(), 50))
  })
  const gw = await gatewayFor(t, [pub('x', '/x', up.url)])
  const res = await request(`${gw.url}/x/big`)
  t.equal(res.statusCode, 200, 'the head had gone out')
  await t.rejects(res.body.arrayBuffer(), 'the body ends in an error, not as a complete short body')
  t.equal(broken, 1)
  const next = await send(`${gw.url}/x/ok`)
  t.equal(next.status, 200)
  t.equal(next.text, 'fine')
})

t.test('a client that leaves mid-body stops the upstream response (forwarder)', async (t) => {
  let closed = 0
  const timers = new Set<NodeJS.Timeout>()
  t.teardown(() => timers.forEach(clearInterval))
  const up = await upstreamFor(t, (req, res) => {
    req.socket.once('close', () => closed++)
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    const timer = setInterval(() => res.write('data: tick\n\n'), 20)
    timers.add(timer)
    res.once('close', () => clearInterval(timer))
  })
  const gw = await gatewayFor(t, [pub('events', '/events', up.url, { timeout: 0 })])
  const socket = await rawSocket(gw.port)
  socket.write('GET /events/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  let received = ''
  socket.on('data', (c: Buffer) => (received += c.toString()))
  t.ok(await eventuallyTrue(() => received.includes('data: tick')), 'events flow')
  socket.destroy()
  t.ok(await eventuallyTrue(() => closed === 1), 'the upstream connection of the abandoned stream was closed')
})

t.test('an upstream status outside 100-599 is a 502, not a crash (forwarder)', async (t) => {
  const { createServer } = await import('node:net')
  const odd = createServer((socket) => socket.once('data', () => socket.end('HTTP/1.1 601 Odd\r\ncontent-length: 2\r\n\r\nhi')))
  await new Promise<void>((resolve) => odd.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => odd.close(resolve)))
  const gw = await gatewayFor(t, [pub('odd', '/odd', `http://127.0.0.1:${(odd.address() as { port: number }).port}`)])
  const res = await send(`${gw.url}/odd/x`)
  t.equal(res.status, 502)
  t.equal(res.json?.error, 'bad_gateway')
})

t.test('upstream failures: timeout 504, refused 502, reset 502, 503 passed through once', async (t) => {
  const timers = new Set<NodeJS.Timeout>()
  t.teardown(() => timers.forEach(clearTimeout))
  const slow = await upstreamFor(t, (_req, res) => {
    timers.add(setTimeout(() => res.end('too late'), 10_000))
  })
  const reset = await upstreamFor(t, (req) => req.socket.destroy())
  let unavailableHits = 0
  const unavailable = await upstreamFor(t, (_req, res) => {
    unavailableHits++
    res.writeHead(503, { 'retry-after': '1', 'content-type': 'text/plain' }).end('maintenance')
  })
  const closedPort = await freePort()
  const gw = await gatewayFor(t, [
    pub('slow', '/slow', slow.url, { timeout: '300ms' }),
    pub('closed', '/closed', `http://127.0.0.1:${closedPort}`),
    pub('reset', '/reset', reset.url),
    pub('unavailable', '/unavailable', unavailable.url),
  ])

  const timedOut = await send(`${gw.url}/slow/x`)
  t.equal(timedOut.status, 504)
  t.same(timedOut.json, { error: 'gateway_timeout', message: timedOut.json?.message })
  t.type(timedOut.json?.message, 'string')
  t.equal(slow.requests.length, 1, 'the slow upstream was asked once (no retry)')

  const refused = await send(`${gw.url}/closed/x`)
  t.equal(refused.status, 502)
  t.equal(refused.json?.error, 'bad_gateway')

  const wasReset = await send(`${gw.url}/reset/x`)
  t.equal(wasReset.status, 502)
  t.equal(wasReset.json?.error, 'bad_gateway')

  const down = await send(`${gw.url}/unavailable/x`)
  t.equal(down.status, 503, "the upstream's own 503 reaches the client")
  t.equal(down.text, 'maintenance')
  t.equal(down.headers['retry-after'], '1')
  t.equal(unavailableHits, 1, 'and the upstream was asked once, not retried')

  const missing = await send(`${gw.url}/nowhere`)
  t.equal(missing.status, 404)
  t.same(missing.json, { error: 'not_found', message: 'No route matches this path.' })
  t.match(missing.headers['content-type'], /^application\/json/)
  t.equal(missing.headers['cache-control'], 'no-store')
})

/**
 * The gateway runs in this process, so its memory is this process's memory. Garbage (every chunk read from a
 * socket is a new Buffer) is collected between samples, so the peak is what is *held*: a gateway that buffered
 * a body would hold all of it at once.
 */
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

async function peakGrowth<T>(work: () => Promise<T>): Promise<{ result: T; rss: number; arrayBuffers: number }> {
  gc()
  const start = process.memoryUsage()
  let rss = 0
  let arrayBuffers = 0
  const sample = () => {
    gc()
    const now = process.memoryUsage()
    rss = Math.max(rss, now.rss - start.rss)
    arrayBuffers = Math.max(arrayBuffers, now.arrayBuffers - start.arrayBuffers)
  }
  const timer = setInterval(sample, 10)
  try {
    const result = await work()
    sample()
    return { result, rss, arrayBuffers }
  } finally {
    clearInterval(timer)
  }
}

const mb = (n: number) => `${(n / MB).toFixed(1)} MB`

t.test('streaming: 50 MB up and 50 MB down pass through without being buffered', async (t) => {
  const SIZE = 50 * MB
  const CHUNK = 64 * 1024
  // A pool of random chunks, cycled: the sender makes no garbage of its own.
  const pool = Array.from({ length: 16 }, () => randomBytes(CHUNK))
  const poolHash = (size: number) => {
    const hash = createHash('sha256')
    for (let sent = 0, i = 0; sent < size; i++) {
      const chunk = pool[i % pool.length]!.subarray(0, Math.min(CHUNK, size - sent))
      hash.update(chunk)
      sent += chunk.length
    }
    return hash.digest('hex')
  }
  function* chunks(size: number) {
    for (let sent = 0, i = 0; sent < size; i++) {
      const chunk = pool[i % pool.length]!.subarray(0, Math.min(CHUNK, size - sent))
      sent += chunk.length
      yield chunk
    }
  }
  const expected = poolHash(SIZE)

  // Upload sink: hashes what arrives (or, at /hoard, keeps it all: the control for the measurement).
  // Download source: writes with backpressure.
  const up = await upstreamFor(
    t,
    (req, res) => {
      if (req.method === 'PUT') {
        const hash = createHash('sha256')
        const hoard: Buffer[] = []
        let bytes = 0
        req.on('data', (c: Buffer) => {
          bytes += c.length
          hash.update(c)
          if (req.url?.startsWith('/files/hoard')) hoard.push(c)
        })
        req.on('end', () => res.setHeader('content-type', 'application/json').end(JSON.stringify({ bytes, sha256: hash.digest('hex'), held: hoard.length })))
        return
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const source = chunks(SIZE)
      const pump = () => {
        for (let next = source.next(); !next.done; next = source.next()) {
          if (!res.write(next.value)) return void res.once('drain', pump)
        }
        res.end()
      }
      pump()
    },
    { recordBody: false },
  )
  const gw = await gatewayFor(t, [pub('files', '/files', up.url, { timeout: '60s' })])

  const upload = async (path: string) => {
    const res = await request(`${gw.url}${path}`, {
      method: 'PUT',
      body: Readable.from(chunks(SIZE)),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(SIZE) },
    })
    return { status: res.statusCode, json: (await res.body.json()) as { bytes: number; sha256: string } }
  }
  const download = async () => {
    const res = await request(`${gw.url}/files/download`)
    const hash = createHash('sha256')
    let bytes = 0
    for await (const chunk of res.body) {
      bytes += (chunk as Buffer).length
      hash.update(chunk as Buffer)
    }
    return { status: res.statusCode, bytes, sha256: hash.digest('hex') }
  }

  // Warm-up (connection pools, socket buffers, allocator arenas), not measured.
  t.equal((await upload('/files/warmup')).json.bytes, SIZE)
  t.equal((await download()).bytes, SIZE)

  const up1 = await peakGrowth(() => upload('/files/upload'))
  t.equal(up1.result.status, 200)
  t.equal(up1.result.json.bytes, SIZE, 'the upstream received every byte of the upload')
  t.equal(up1.result.json.sha256, expected, 'and the same bytes')
  t.ok(up1.arrayBuffers < 40 * MB, `buffer memory held during the upload grew by ${mb(up1.arrayBuffers)}`)
  t.ok(up1.rss < 40 * MB, `RSS grew by ${mb(up1.rss)} during the upload`)

  const down = await peakGrowth(download)
  t.equal(down.result.status, 200)
  t.equal(down.result.bytes, SIZE, 'the client received every byte of the download')
  t.equal(down.result.sha256, expected, 'and the same bytes')
  t.ok(down.arrayBuffers < 40 * MB, `buffer memory held during the download grew by ${mb(down.arrayBuffers)}`)
  t.ok(down.rss < 40 * MB, `RSS grew by ${mb(down.rss)} during the download`)

  // The control: an upstream that keeps the whole body (here the upstream, in this same process) shows up in the measurement.
  const hoarded = await peakGrowth(() => upload('/files/hoard'))
  t.ok(hoarded.arrayBuffers > 45 * MB, `the measurement sees a held body (${mb(hoarded.arrayBuffers)} held)`)
})
