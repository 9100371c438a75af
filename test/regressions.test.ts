// Regressions found by review: each test fails on the code before its fix.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { WebSocket, WebSocketServer } from 'ws'
import { stringify } from 'yaml'
import { loadConfig } from '../src/config/load.js'
import { ConfigError } from '../src/errors.js'
import { CookieClient, send } from './helpers/client.js'
import { freePort } from './helpers/redis-server.js'
import { startGateway, writeUsers } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

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
  const upstream = await startUpstream()
  const gw = await startGateway({ config: { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] } })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
  })
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
