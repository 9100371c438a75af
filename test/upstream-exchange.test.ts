// The forwarder's own edges (src/proxy/upstream-exchange.ts), found by an independent review: what a 204 carries,
// an upstream's repeated Connection lines, and a HEAD whose head rewrite fails after a rotation.
import { createServer, type Server, type Socket } from 'node:net'
import t from 'tap'
import { CookieClient, rawRequest } from './helpers/client.js'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'
import { Sessions } from '../src/sessions/sessions.js'

/** An upstream that answers every request with the same raw bytes (what node:http would not write). */
async function rawUpstream(t: { teardown: (fn: () => unknown) => void }, answer: string): Promise<string> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on('data', () => socket.write(answer))
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    sockets.forEach((s) => s.destroy())
    return new Promise((resolve) => server.close(resolve))
  })
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

async function gatewayFor(t: { teardown: (fn: () => unknown) => void }, config: Record<string, unknown>): Promise<StartedGateway> {
  const gw = await startGateway({ config })
  t.teardown(() => gw.close())
  return gw
}

t.test('a 204 goes out without Content-Length and Content-Type, whatever the upstream sent (RFC 9110 §8.6)', async (t) => {
  const upstream = await rawUpstream(t, 'HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n')
  const gw = await gatewayFor(t, { routes: [{ name: 'x', prefix: '/x', upstream, auth: 'public' }] })
  for (const method of ['GET', 'HEAD']) {
    const res = await rawRequest(gw.port, { method, path: '/x/a' })
    t.equal(res.status, 204, `${method}: 204`)
    t.equal(res.headers['x-a'], '1', `${method}: the upstream's other headers pass`)
    t.notOk('content-length' in res.headers, `${method}: no Content-Length`)
    t.notOk('content-type' in res.headers, `${method}: no Content-Type`)
  }
})

t.test("headers named by an upstream's repeated Connection lines are dropped, not only a single line's", async (t) => {
  const upstream = await rawUpstream(t, 'HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: X-Secret\r\nX-Secret: s\r\nX-Kept: k\r\nContent-Length: 2\r\n\r\nok')
  const gw = await gatewayFor(t, { routes: [{ name: 'x', prefix: '/x', upstream, auth: 'public' }] })
  const res = await rawRequest(gw.port, { path: '/x/a' })
  t.equal(res.status, 200)
  t.equal(res.text, 'ok')
  t.notOk('x-secret' in res.headers, 'X-Secret, named by the second Connection line, is dropped')
  t.equal(res.headers['x-kept'], 'k', 'the others pass')
})

t.test('a HEAD whose head rewrite fails after a rotation is answered 502, not left hanging (review)', async (t) => {
  // The rewrite checks the rotation against the store before the cookies go out; made to fail here. undici ends a
  // HEAD at its head, so the exchange itself must fail the head (an abort then does nothing).
  const superseded = Object.getOwnPropertyDescriptor(Sessions.prototype, 'superseded')!
  Sessions.prototype.superseded = async () => {
    throw new Error('the store check failed (test)')
  }
  t.teardown(() => Object.defineProperty(Sessions.prototype, 'superseded', superseded))
  const up = await startUpstream((req, res) => {
    res.writeHead(200, { 'content-length': '5' })
    res.end(req.method === 'HEAD' ? undefined : 'hello')
  })
  t.teardown(() => up.close())
  const gw = await gatewayFor(t, {
    tokens: { accessTtl: '2s', refreshAhead: '1900ms', reuseGrace: '300ms', clockTolerance: 0 },
    routes: [{ name: 'api', prefix: '/api', upstream: up.url, timeout: '2s' }],
  })
  for (const method of ['GET', 'HEAD']) {
    const browser = new CookieClient(gw.url)
    t.equal((await browser.login('alice', 'alice-pw')).status, 200, `${method}: logged in`)
    // Within refreshAhead of expiry: the next request rotates the session on its way through.
    await new Promise((resolve) => setTimeout(resolve, 150))
    // Bounded: the failure this guards against is no answer at all (the route's timeout does not end it).
    const res = await Promise.race([
      rawRequest(gw.port, { method, path: '/api/x', headers: [['Cookie', browser.cookieHeader()]] }),
      new Promise<{ status: number }>((resolve) => setTimeout(resolve, 5000, { status: 0 })),
    ])
    t.equal(res.status, 502, `${method}: 502 (0: no answer within 5 s)`)
  }
})
