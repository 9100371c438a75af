import { once } from 'node:events'
import { createServer, type IncomingMessage } from 'node:http'
import t from 'tap'
import { WebSocket, WebSocketServer, type RawData } from 'ws'
import { CookieClient } from './helpers/client.js'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { freePort } from './helpers/redis-server.js'
import { MemorySessionStore } from '../src/session-store/memory-store.js'

interface EchoUpstream {
  url: string
  /** The upgrade requests it accepted. */
  upgrades: IncomingMessage[]
  /** Close codes and reasons it saw from its clients. */
  closes: { code: number; reason: string }[]
  sockets: Set<WebSocket>
  close(): Promise<void>
}

/** A WebSocket echo server: greets on connect, echoes every message (text stays text, binary stays binary). */
async function startEchoUpstream(options: { protocol?: (offered: Set<string>) => string | false } = {}): Promise<EchoUpstream> {
  const server = createServer((_req, res) => res.writeHead(426).end('upgrade required'))
  const upgrades: IncomingMessage[] = []
  const closes: { code: number; reason: string }[] = []
  const sockets = new Set<WebSocket>()
  const wss = new WebSocketServer({ server, ...(options.protocol ? { handleProtocols: options.protocol } : {}) })
  wss.on('connection', (socket, req) => {
    upgrades.push(req)
    sockets.add(socket)
    socket.send(`hello ${req.url}`)
    socket.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === 'close-please') socket.close(4002, 'upstream says bye')
      else socket.send(data, { binary: isBinary })
    })
    socket.on('close', (code, reason) => {
      closes.push({ code, reason: reason.toString() })
      sockets.delete(socket)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}`,
    upgrades,
    closes,
    sockets,
    async close() {
      for (const s of wss.clients) s.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    },
  }
}

type Connected = { ok: true; ws: WebSocket; greeting: string } | { ok: false; status: number; body: string }

/** Opens a WebSocket; resolves with the socket and its first message, or with the refusal's status and body. */
function connect(url: string, options: { protocols?: string[]; headers?: Record<string, string> } = {}): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options.protocols ?? [], { headers: options.headers ?? {} })
    ws.once('message', (data) => resolve({ ok: true, ws, greeting: data.toString() }))
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ ok: false, status: res.statusCode ?? 0, body }))
    })
    ws.once('error', reject)
  })
}

function nextMessage(ws: WebSocket): Promise<{ data: RawData; isBinary: boolean }> {
  return new Promise((resolve) => ws.once('message', (data, isBinary) => resolve({ data, isBinary })))
}

t.test('a public websocket route relays frames both ways', async (t) => {
  const up = await startEchoUpstream()
  const gw = await startGateway({
    config: { routes: [{ name: 'chat', prefix: '/ws', upstream: up.url, websocket: true, auth: 'public', rewritePrefix: '/live', headers: { 'X-User-Id': '{sub}' } }] },
  })
  t.teardown(async () => {
    await gw.close()
    await up.close()
  })
  const wsBase = gw.url.replace('http', 'ws')

  const conn = await connect(`${wsBase}/ws/room/1?token=abc`, { headers: { 'x-user-id': 'spoofed', cookie: 'sg_access=x; theme=dark' } })
  if (!conn.ok) throw new Error(`upgrade refused: ${conn.status} ${conn.body}`)
  const { ws } = conn
  t.equal(conn.greeting, 'hello /live/room/1?token=abc', 'upstream -> client: the upstream greets on the rewritten path, query kept')
  const seen = up.upgrades[0]!
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.1', 'the upstream receives X-Forwarded-For')
  t.notOk('x-user-id' in seen.headers, 'a client copy of an injected header is removed')
  t.equal(seen.headers.cookie, 'theme=dark', 'the gateway cookie is removed, others pass')

  ws.send('ping 1')
  const text = await nextMessage(ws)
  t.equal(text.data.toString(), 'ping 1', 'client -> upstream -> client: text')
  t.equal(text.isBinary, false)

  const bytes = Buffer.from([0, 1, 2, 253, 254, 255])
  ws.send(bytes)
  const binary = await nextMessage(ws)
  t.equal(binary.isBinary, true, 'binary stays binary')
  t.same(Buffer.from(binary.data as Buffer), bytes)

  const big = 'x'.repeat(1024 * 1024)
  ws.send(big)
  t.equal((await nextMessage(ws)).data.toString().length, big.length, 'a 1 MB message')

  const many = Array.from({ length: 50 }, (_, i) => `m${i}`)
  const received: string[] = []
  const all = new Promise<void>((resolve) => {
    const onMessage = (data: RawData) => {
      received.push(data.toString())
      if (received.length === many.length) {
        ws.off('message', onMessage)
        resolve()
      }
    }
    ws.on('message', onMessage)
  })
  for (const m of many) ws.send(m)
  await all
  t.same(received, many, 'order is kept')

  const closed = once(ws, 'close')
  ws.close(4001, 'client done')
  await closed
  while (up.closes.length === 0) await new Promise((r) => setTimeout(r, 10))
  t.same(up.closes[0], { code: 4001, reason: 'client done' }, 'the close code and reason reach the upstream')

  // Upstream-initiated close reaches the client.
  const second = await connect(`${wsBase}/ws/x`)
  if (!second.ok) throw new Error('upgrade refused')
  const clientClosed = once(second.ws, 'close') as Promise<[number, Buffer]>
  second.ws.send('close-please')
  const [code, reason] = await clientClosed
  t.equal(code, 4002, "the upstream's close code reaches the client")
  t.equal(reason.toString(), 'upstream says bye')
})

t.test('subprotocols: the client is told the one the upstream chose', async (t) => {
  const up = await startEchoUpstream({ protocol: (offered) => (offered.has('chat.v2') ? 'chat.v2' : false) })
  const gw = await startGateway({ config: { routes: [{ name: 'chat', prefix: '/ws', upstream: up.url, websocket: true, auth: 'public' }] } })
  t.teardown(async () => {
    await gw.close()
    await up.close()
  })
  const conn = await connect(`${gw.url.replace('http', 'ws')}/ws`, { protocols: ['chat.v1', 'chat.v2'] })
  if (!conn.ok) throw new Error(`upgrade refused: ${conn.status}`)
  t.same(
    up.upgrades[0]!.headers['sec-websocket-protocol']?.split(',').map((p) => p.trim()),
    ['chat.v1', 'chat.v2'],
    'the upstream is offered what the client offered',
  )
  t.equal(conn.ws.protocol, 'chat.v2', "the client gets the upstream's choice")
  conn.ws.close()
})

t.test('upgrades are refused where they do not belong', async (t) => {
  const up = await startEchoUpstream()
  const closedPort = await freePort()
  let gw: StartedGateway | undefined = await startGateway({
    config: {
      routes: [
        { name: 'plain', prefix: '/plain', upstream: up.url, websocket: false, auth: 'public' },
        { name: 'private', prefix: '/private', upstream: up.url, websocket: true, auth: 'required' },
        { name: 'gone', prefix: '/gone', upstream: `http://127.0.0.1:${closedPort}`, websocket: true, auth: 'public' },
      ],
    },
  })
  t.teardown(async () => {
    await gw?.close()
    await up.close()
  })
  const wsBase = gw.url.replace('http', 'ws')

  const plain = await connect(`${wsBase}/plain/x`)
  t.equal(plain.ok, false, 'websocket: false refuses the upgrade')
  if (!plain.ok) {
    t.equal(plain.status, 404)
    t.equal(JSON.parse(plain.body).error, 'not_found')
  }

  const anonymous = await connect(`${wsBase}/private/x`)
  t.equal(anonymous.ok, false, 'a protected websocket route refuses an anonymous upgrade')
  if (!anonymous.ok) {
    t.equal(anonymous.status, 401)
    t.equal(JSON.parse(anonymous.body).error, 'unauthenticated')
  }

  const badToken = await connect(`${wsBase}/private/x`, { headers: { authorization: 'Bearer not-a-token' } })
  t.equal(!badToken.ok && badToken.status, 401, 'a bad bearer token is refused')

  const unmatched = await connect(`${wsBase}/nowhere`)
  t.equal(!unmatched.ok && unmatched.status, 404)

  const encoded = await connect(`${wsBase}/plain%2F..%2Fprivate`)
  t.equal(!encoded.ok && encoded.status, 400, 'an encoded slash is refused on upgrades too')

  const gone = await connect(`${wsBase}/gone/x`)
  t.equal(gone.ok, false)
  if (!gone.ok) {
    t.equal(gone.status, 502, 'an unreachable upstream: 502')
    t.equal(JSON.parse(gone.body).error, 'bad_gateway')
  }
  t.equal(up.upgrades.length, 0, 'the upstream accepted no upgrade')
})

t.test('a protected websocket route: bearer and cookie sessions, cross-site upgrades refused', async (t) => {
  const up = await startEchoUpstream()
  const gw = await startGateway({
    config: { routes: [{ name: 'private', prefix: '/private', upstream: up.url, websocket: true, auth: 'required', headers: { 'X-User-Id': '{sub}' } }] },
  })
  t.teardown(async () => {
    await gw.close()
    await up.close()
  })
  const wsBase = gw.url.replace('http', 'ws')
  const browser = new CookieClient(gw.url)
  t.equal((await browser.login('alice', 'alice-pw')).status, 200)

  const crossSite = await connect(`${wsBase}/private/x`, { headers: { cookie: browser.cookieHeader(), origin: 'http://evil.example' } })
  t.equal(crossSite.ok, false, 'cookie mode: an upgrade from another origin is refused')
  if (!crossSite.ok) t.equal(crossSite.status, 403)
  t.equal(up.upgrades.length, 0)

  const sameSite = await connect(`${wsBase}/private/x`, { headers: { cookie: browser.cookieHeader(), origin: gw.url } })
  if (!sameSite.ok) throw new Error(`upgrade refused: ${sameSite.status} ${sameSite.body}`)
  const seen = up.upgrades[0]!
  t.match(seen.headers.authorization, /^Bearer ey/, 'the upstream receives the access token as a Bearer')
  t.notOk(seen.headers.cookie, 'and not the gateway cookies')
  t.equal(seen.headers['x-user-id'], 'user-1')
  sameSite.ws.send('hi')
  t.equal((await nextMessage(sameSite.ws)).data.toString(), 'hi')
  sameSite.ws.close()
})

t.test('a client that leaves while the upstream handshake is pending leaves no upstream socket behind', async (t) => {
  const server = createServer()
  const pending: ((ok: boolean) => void)[] = []
  const upstreamCloses: number[] = []
  let opened = 0
  const wss = new WebSocketServer({ server, verifyClient: (_info, cb) => void pending.push(cb) })
  wss.on('connection', (socket) => {
    opened++
    socket.on('close', (code) => upstreamCloses.push(code))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  const gw = await startGateway({ config: { routes: [{ name: 'slow', prefix: '/slow', upstream: `http://127.0.0.1:${port}`, websocket: true, auth: 'public' }] } })
  t.teardown(async () => {
    await gw.close()
    for (const s of wss.clients) s.terminate()
    wss.close()
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  })
  const until = async (what: string, condition: () => boolean | Promise<boolean>) => {
    for (let i = 0; i < 500; i++) {
      if (await condition()) return true
      await new Promise((r) => setTimeout(r, 10))
    }
    t.fail(`never happened: ${what}`)
    return false
  }
  const { connect: tcp } = await import('node:net')
  const client = tcp(gw.port, '127.0.0.1')
  client.on('error', () => {})
  await once(client, 'connect')
  client.write(
    'GET /slow HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  )
  await until('the upstream handshake starts', () => pending.length === 1)
  client.resetAndDestroy()
  const connections = () => new Promise<number>((r) => gw.gateway.app.server.getConnections((_e, n) => r(n)))
  await until('the gateway sees the client gone', async () => (await connections()) === 0)
  pending[0]!(true)
  const upstreamConnections = () => new Promise<number>((r) => server.getConnections((_e, n) => r(n)))
  t.ok(
    await until('the upstream connection is closed', async () => (await upstreamConnections()) === 0 && wss.clients.size === 0),
    'no orphaned upstream socket',
  )
  t.equal(opened, upstreamCloses.length, 'any upstream WebSocket that opened was closed')
})

t.test('an upgrade still in its auth step when the gateway begins to stop is refused 503 and opens no upstream connection (review)', async (t) => {
  const up = await startEchoUpstream()
  // An in-process store whose access check waits until the test lets it go: the upgrade stays in its auth step.
  const store = new MemorySessionStore()
  const checkAccess = store.checkAccess.bind(store)
  let checking: (() => void) | undefined
  const reachedCheck = new Promise<void>((resolve) => (checking = resolve))
  let release: () => void = () => {}
  const released = new Promise<void>((resolve) => (release = resolve))
  store.checkAccess = async (sid: string, jti: string) => {
    checking?.()
    await released
    return checkAccess(sid, jti)
  }
  const gw = await startGateway({ store, config: { routes: [{ name: 'live', prefix: '/ws', upstream: up.url, websocket: true }] } })
  t.teardown(async () => {
    release()
    await gw.close().catch(() => {})
    await up.close()
  })
  const login = await fetch(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-session-mode': 'token' }, body: JSON.stringify({ username: 'alice', password: 'alice-pw' }) })
  const { accessToken } = (await login.json()) as { accessToken: string }
  const answer = connect(`${gw.url.replace('http', 'ws')}/ws/room`, { headers: { authorization: `Bearer ${accessToken}` } })
  await reachedCheck
  const closing = gw.gateway.app.close()
  await new Promise((resolve) => setTimeout(resolve, 50)) // the preClose hooks have run
  release()
  const refused = await answer
  t.equal(refused.ok, false, 'no WebSocket')
  if (!refused.ok) {
    t.equal(refused.status, 503)
    t.equal(JSON.parse(refused.body).error, 'shutting_down')
  }
  await closing
  t.equal(up.upgrades.length, 0, 'the upstream was never asked for a WebSocket')
})
