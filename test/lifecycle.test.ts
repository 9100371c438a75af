import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { ServerResponse } from 'node:http'
import t from 'tap'
import { stringify } from 'yaml'
import { send } from './helpers/client.js'
import { startGateway, writeKeys, writeUsers } from './helpers/gateway.js'
import { generatePrivateJwk } from '../src/tokens/keys.js'
import { freePort, startRedis } from './helpers/redis-server.js'
import { startUpstream, type TestUpstream } from './helpers/upstream.js'

const root = resolve(import.meta.dirname, '..')
const bin = join(root, 'bin', 'sessiongate.js')

/** Polls `check` (bounded: about `tries` × 50 ms); true once it holds. No assertion on how long it took. */
async function eventually(check: () => boolean | Promise<boolean>, tries = 300): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    try {
      if (await check()) return true
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return false
}

t.test('/healthz and /readyz with the in-process store', async (t) => {
  const gw = await startGateway()
  t.teardown(() => gw.close())
  const health = await send(`${gw.url}/healthz`)
  t.equal(health.status, 200)
  const ready = await send(`${gw.url}/readyz`)
  t.equal(ready.status, 200)
  t.equal(ready.json?.status, 'ready')
  for (const path of ['/healthz', '/readyz', '/metrics', '/.well-known/jwks.json']) {
    const post = await send(`${gw.url}${path}`, { method: 'POST', body: {} })
    t.equal(post.status, 405, `POST ${path}: 405, not the proxy's 404`)
    t.equal(post.json?.error, 'method_not_allowed')
    t.equal(post.headers.allow, 'GET, HEAD', 'a GET endpoint answers HEAD too, and says so')
    t.equal((await send(`${gw.url}${path}`, { method: 'HEAD' })).status, 200, `HEAD ${path}`)
  }
})

t.test('/readyz follows a real Redis going away and coming back', async (t) => {
  const redis = await startRedis()
  const gw = await startGateway({ redisUrl: redis.url })
  t.teardown(async () => {
    await gw.close()
    await redis.stop()
  })
  t.equal((await send(`${gw.url}/readyz`)).status, 200, 'ready while Redis answers')

  await redis.pause()
  t.ok(await eventually(async () => (await send(`${gw.url}/readyz`)).status === 503), '503 once Redis is gone')
  const down = await send(`${gw.url}/readyz`)
  t.equal(down.status, 503)
  t.equal(down.json?.error, 'session_store_unavailable')
  t.ok(down.headers['retry-after'], 'with Retry-After')
  t.equal((await send(`${gw.url}/healthz`)).status, 200, '/healthz stays 200: the process runs')

  await redis.resume()
  t.ok(await eventually(async () => (await send(`${gw.url}/readyz`)).status === 200), '200 again once Redis is back, without a restart')
})

interface Spawned {
  child: ChildProcess
  url: string
  port: number
  configFile: string
  /** Everything the gateway wrote to stdout so far. */
  stdout(): string
  stderr(): string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Waits (bounded) until stdout has `count` lines matching `pattern`. */
  waitForLog(pattern: RegExp, count?: number): Promise<boolean>
}

/** Starts `node bin/sessiongate.js --config FILE` with LOG_LEVEL=info and waits until /healthz answers. */
async function spawnGateway(t: { teardown: (fn: () => unknown) => void }, dir: string, config: (port: number) => object): Promise<Spawned> {
  const port = await freePort()
  const configFile = join(dir, 'gateway.yaml')
  writeFileSync(configFile, stringify(config(port)))
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'info' }
  for (const name of ['SESSIONGATE_CONFIG', 'REDIS_URL', 'HOST', 'PORT']) delete env[name]
  const child = spawn(process.execPath, [bin, '--config', configFile], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolveExit) =>
    child.once('exit', (code, signal) => resolveExit({ code, signal })),
  )
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const url = `http://127.0.0.1:${port}`
  const up = await eventually(async () => (await send(`${url}/healthz`)).status === 200, 400)
  if (!up) throw new Error(`the gateway did not start:\n${out}\n${err}`)
  return {
    child,
    url,
    port,
    configFile,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForLog: (pattern, count = 1) =>
      eventually(() => out.split('\n').filter((line) => pattern.test(line)).length >= count),
  }
}

/** An upstream that holds every request until `release()`: requests stay in flight as long as a test wants. */
async function startHoldingUpstream(): Promise<TestUpstream & { held: ServerResponse[]; release(): void }> {
  const held: ServerResponse[] = []
  const up = await startUpstream((_req, res, recorded) => {
    held.push(res)
    res.setHeader('content-type', 'application/json')
    ;(res as ServerResponse & { recorded?: unknown }).recorded = recorded
  })
  return {
    ...up,
    held,
    release() {
      for (const res of held.splice(0)) res.end(JSON.stringify((res as ServerResponse & { recorded?: unknown }).recorded))
    },
  }
}

function tempDir(t: { teardown: (fn: () => unknown) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'sg-life-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.before(() => {
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does)')
})

t.test('SIGTERM: stop accepting, finish in-flight requests, exit 0', async (t) => {
  const dir = tempDir(t)
  const slow = await startHoldingUpstream()
  t.teardown(() => slow.close())
  const users = await writeUsers(dir)
  const gw = await spawnGateway(t, dir, (port) => ({
    server: { host: '127.0.0.1', port },
    cookies: { secure: false },
    login: { users },
    routes: [{ name: 'slow', prefix: '/slow', upstream: slow.url, auth: 'public' }],
  }))

  const inFlight = send(`${gw.url}/slow/report?id=7`)
  const failing = send(`${gw.url}/slow/broken`)
  t.ok(await eventually(() => slow.held.length === 2), 'the requests reached the upstream')
  gw.child.kill('SIGTERM')
  t.ok(await gw.waitForLog(/shutting down/), 'the gateway logs the shutdown')
  const refused = await eventually(
    () =>
      new Promise<boolean>((resolveRefused) => {
        const probe = connect(gw.port, '127.0.0.1')
        probe.once('connect', () => {
          probe.destroy()
          resolveRefused(false)
        })
        probe.once('error', (err: NodeJS.ErrnoException) => resolveRefused(err.code === 'ECONNREFUSED'))
      }),
  )
  t.ok(refused, 'new connections are refused while the in-flight request is still running')
  t.equal(gw.child.exitCode, null, 'the process waits for the in-flight request')

  slow.held.find((r) => r.req.url === '/slow/broken')?.socket?.destroy() // this one's upstream fails: a 502 of the gateway's own
  slow.release()
  const res = await inFlight
  t.equal(res.status, 200, 'the in-flight request completes')
  t.equal(res.json?.url, '/slow/report?id=7', "with the upstream's answer")
  t.equal(res.headers.connection, 'close', 'and closes its connection: no next request is sent on a connection the drain closes')
  const failed = await failing
  t.equal(failed.status, 502, 'an in-flight request whose upstream fails gets its 502')
  t.equal(failed.headers.connection, 'close', 'which closes its connection too')
  const { code, signal } = await gw.exited
  t.equal(code, 0, 'exit code 0')
  t.equal(signal, null)
})

t.test('SIGHUP reloads routes; a broken configuration is refused and the old one stays', async (t) => {
  const dir = tempDir(t)
  const first = await startUpstream()
  const second = await startUpstream()
  const slow = await startHoldingUpstream()
  t.teardown(async () => {
    await first.close()
    await second.close()
    await slow.close()
  })
  const users = await writeUsers(dir)
  const base = (port: number) => ({
    server: { host: '127.0.0.1', port },
    cookies: { secure: false },
    login: { users },
  })
  let port = 0
  const gw = await spawnGateway(t, dir, (p) => {
    port = p
    return {
      ...base(p),
      routes: [
        { name: 'a', prefix: '/a', upstream: first.url, auth: 'public' },
        { name: 'slow', prefix: '/slow', upstream: slow.url, auth: 'public' },
      ],
    }
  })
  t.equal((await send(`${gw.url}/a/1`)).status, 200)
  t.equal((await send(`${gw.url}/b/1`)).status, 404, 'no route b yet')

  const inFlight = send(`${gw.url}/slow/x`)
  t.ok(await eventually(() => slow.held.length === 1))

  writeFileSync(
    gw.configFile,
    stringify({
      ...base(port),
      routes: [
        { name: 'a', prefix: '/a', upstream: first.url, auth: 'public' },
        { name: 'slow', prefix: '/slow', upstream: slow.url, auth: 'public' },
        { name: 'b', prefix: '/b', upstream: second.url, auth: 'public', rewritePrefix: '/bee' },
      ],
    }),
  )
  gw.child.kill('SIGHUP')
  t.ok(await gw.waitForLog(/configuration reloaded/), 'the reload is logged')
  const b = await send(`${gw.url}/b/1`)
  t.equal(b.status, 200, 'the new route answers')
  t.equal(second.last()?.url, '/bee/1')
  t.equal((await send(`${gw.url}/a/2`)).status, 200, 'the old route still answers')
  t.equal(gw.child.exitCode, null, 'the process is still running')

  slow.release()
  t.equal((await inFlight).status, 200, 'a request in flight during the reload completes')

  writeFileSync(gw.configFile, 'routes:\n  - name: broken\n    prefix: [/x\n')
  gw.child.kill('SIGHUP')
  t.ok(await gw.waitForLog(/reload refused/), 'a YAML syntax error: the reload is refused with a logged error')
  t.equal((await send(`${gw.url}/b/2`)).status, 200, 'the old routes stay in force')
  t.equal(gw.child.exitCode, null, 'the process stays up')

  writeFileSync(
    gw.configFile,
    stringify({ ...base(port), routes: [{ name: 'c', prefix: '/c', upstream: 'ftp://nowhere', auth: 'public' }] }),
  )
  gw.child.kill('SIGHUP')
  t.ok(await gw.waitForLog(/reload refused/, 2), 'an invalid configuration is refused too')
  const refusal = gw.stdout().split('\n').filter((l) => /reload refused/.test(l)).pop() ?? ''
  t.match(refusal, /routes\[0\]\.upstream: must be an http\(s\) URL/, 'the log names the problem')
  t.equal((await send(`${gw.url}/b/3`)).status, 200)
  t.equal((await send(`${gw.url}/c/1`)).status, 404)

  writeFileSync(gw.configFile, stringify({ ...base(port), routes: [{ name: 'a', prefix: '/a', upstream: first.url, auth: 'public' }] }))
  gw.child.kill('SIGHUP')
  t.ok(await gw.waitForLog(/configuration reloaded/, 2))
  t.equal((await send(`${gw.url}/b/4`)).status, 404, 'a route removed by a reload is gone')
  t.equal((await send(`${gw.url}/a/3`)).status, 200)

  gw.child.kill('SIGTERM')
  t.equal((await gw.exited).code, 0)
})

t.test('logs never contain an Authorization or Cookie value, a password or a token', async (t) => {
  const dir = tempDir(t)
  const up = await startUpstream()
  t.teardown(() => up.close())
  const closedPort = await freePort()
  const users = await writeUsers(dir)
  const gw = await spawnGateway(t, dir, (port) => ({
    server: { host: '127.0.0.1', port },
    cookies: { secure: false },
    login: { users },
    routes: [
      { name: 'pub', prefix: '/pub', upstream: up.url, auth: 'public' },
      { name: 'prot', prefix: '/prot', upstream: up.url, auth: 'required' },
      { name: 'gone', prefix: '/gone', upstream: `http://127.0.0.1:${closedPort}`, auth: 'public' },
    ],
  }))
  const bearer = `sgtestbearer${randomBytes(12).toString('hex')}`
  const cookieValue = `sgtestcookie${randomBytes(12).toString('hex')}`
  const otherCookie = `sgtestother${randomBytes(12).toString('hex')}`
  const wrongPassword = `sgtestwrong${randomBytes(8).toString('hex')}`

  await send(`${gw.url}/pub/x`, { headers: { authorization: `Bearer ${bearer}`, cookie: `sg_access=${cookieValue}; other=${otherCookie}` } })
  await send(`${gw.url}/prot/x`, { headers: { authorization: `Bearer ${bearer}` } })
  await send(`${gw.url}/prot/x`, { headers: { cookie: `sg_access=${cookieValue}; sg_refresh=${cookieValue}` } })
  await send(`${gw.url}/gone/x`, { headers: { authorization: `Bearer ${bearer}`, cookie: `other=${otherCookie}` } })
  await send(`${gw.url}/auth/session`, { headers: { authorization: `Bearer ${bearer}` } })
  await send(`${gw.url}/auth/login`, { method: 'POST', body: { username: 'alice', password: wrongPassword } })
  const login = await send(`${gw.url}/auth/login`, {
    method: 'POST',
    headers: { 'x-session-mode': 'token' },
    body: { username: 'alice', password: 'alice-pw' },
  })
  t.equal(login.status, 200)
  const { accessToken, refreshToken } = login.json as { accessToken: string; refreshToken: string }
  t.equal((await send(`${gw.url}/prot/y`, { headers: { authorization: `Bearer ${accessToken}` } })).status, 200)
  const refreshed = await send(`${gw.url}/auth/refresh`, { method: 'POST', headers: { 'x-session-mode': 'token' }, body: { refreshToken } })
  t.equal(refreshed.status, 200)
  await send(`${gw.url}/auth/refresh`, { method: 'POST', body: { refreshToken } })
  const cookieLogin = await send(`${gw.url}/auth/login`, { method: 'POST', body: { username: 'alice', password: 'alice-pw' } })
  const cookies = cookieLogin.setCookies.map((c) => c.split(';')[0]).join('; ')
  await send(`${gw.url}/prot/z`, { headers: { cookie: cookies } })
  await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { cookie: cookies, 'x-csrf': '1' } })

  const marker = `/pub/log-marker-${randomBytes(4).toString('hex')}`
  await send(`${gw.url}${marker}`)
  t.ok(await gw.waitForLog(new RegExp(marker)), 'requests are logged at info (so the search below means something)')
  gw.child.kill('SIGTERM')
  await gw.exited
  const logs = gw.stdout() + gw.stderr()
  t.ok(logs.includes('"level":'), 'JSON log lines')

  const secrets: Record<string, string> = {
    'a client bearer': bearer,
    'a cookie value': cookieValue,
    'another cookie': otherCookie,
    'a wrong password': wrongPassword,
    'the right password': 'alice-pw',
    'an access token': accessToken,
    'an access token signature': accessToken.split('.')[2]!,
    'a refresh token': refreshToken,
    'a rotated access token': (refreshed.json as { accessToken: string }).accessToken,
    'a rotated refresh token': (refreshed.json as { refreshToken: string }).refreshToken,
  }
  for (const [i, pair] of cookies.split('; ').entries()) secrets[`session cookie ${i}`] = pair.slice(pair.indexOf('=') + 1)
  for (const [what, secret] of Object.entries(secrets)) {
    t.notOk(logs.includes(secret), `the logs do not contain ${what}`)
  }
})

t.test('watch: true reloads on a file change (routes and keys); SIGINT stops gracefully', async (t) => {
  const dir = tempDir(t)
  const up = await startUpstream()
  t.teardown(() => up.close())
  const users = await writeUsers(dir)
  const { file: keys, keys: [firstKey] } = await writeKeys(dir)
  const config = (port: number, routes: object[]) => ({
    server: { host: '127.0.0.1', port },
    tokens: { keys },
    cookies: { secure: false },
    login: { users },
    watch: true,
    routes,
  })
  let port = 0
  const gw = await spawnGateway(t, dir, (p) => {
    port = p
    return config(p, [{ name: 'a', prefix: '/a', upstream: up.url, auth: 'public' }])
  })
  const jwks = async () => ((await send(`${gw.url}/.well-known/jwks.json`)).json as { keys: { kid: string }[] }).keys.map((k) => k.kid)
  t.same(await jwks(), [(firstKey as { kid: string }).kid])
  t.equal((await send(`${gw.url}/w/1`)).status, 404)

  writeFileSync(gw.configFile, stringify(config(port, [
    { name: 'a', prefix: '/a', upstream: up.url, auth: 'public' },
    { name: 'w', prefix: '/w', upstream: up.url, auth: 'public' },
  ])))
  t.ok(await gw.waitForLog(/configuration reloaded/), 'a change of the configuration file reloads it')
  t.equal((await send(`${gw.url}/w/1`)).status, 200, 'the new route answers')

  const secondKey = await generatePrivateJwk('EdDSA')
  writeFileSync(keys, JSON.stringify({ keys: [secondKey, firstKey] }))
  t.ok(await eventually(async () => (await jwks()).length === 2), 'a change of the key file reloads it')
  t.same(await jwks(), [secondKey.kid, (firstKey as { kid: string }).kid], 'the new key is published first, the old one kept')

  // Editors, `mv` and ConfigMaps replace a file by renaming a new one over it, again and again.
  for (const [i, prefix] of ['/r1', '/r2'].entries()) {
    const next = `${gw.configFile}.new${i}`
    writeFileSync(next, stringify(config(port, [{ name: 'a', prefix: '/a', upstream: up.url, auth: 'public' }, { name: `r${i}`, prefix, upstream: up.url, auth: 'public' }])))
    renameSync(next, gw.configFile)
    t.ok(await eventually(async () => (await send(`${gw.url}${prefix}/x`)).status === 200), `replacement ${i + 1} by rename is picked up`)
  }

  gw.child.kill('SIGINT')
  const { code } = await gw.exited
  t.equal(code, 0, 'SIGINT: exit 0')
})

t.test('`npm start`: a SIGTERM or SIGINT sent to npm reaches the gateway, which stops (the port is free again)', async (t) => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const [port, apiPort] = [await freePort(), await freePort()]
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), DEMO_API_PORT: String(apiPort) }
    for (const name of ['SESSIONGATE_CONFIG', 'REDIS_URL', 'HOST']) delete env[name]
    const npm = spawn('npm', ['start'], { cwd: root, env, stdio: 'ignore' })
    t.teardown(() => void npm.kill('SIGKILL'))
    const up = await eventually(async () => (await send(`http://127.0.0.1:${port}/healthz`)).status === 200, 400)
    t.ok(up, `${signal}: the demo answers`)
    const exited = new Promise<number | null>((r) => npm.once('exit', (code) => r(code)))
    npm.kill(signal)
    t.equal(await exited, 0, `${signal}: npm exits 0 (the gateway stopped cleanly)`)
    const down = await eventually(async () => (await send(`http://127.0.0.1:${port}/healthz`).catch(() => undefined)) === undefined, 100)
    t.ok(down, `${signal}: nothing listens on the port any more`)
  }
})
