// An https upstream is verified before it gets a request (and with it a token): @fastify/reply-from turns undici's
// certificate checks off unless told otherwise. The certificate is made here with openssl (none is committed).
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { send } from './helpers/client.js'
import { startGateway, writeUsers } from './helpers/gateway.js'
import { freePort } from './helpers/redis-server.js'

const dir = mkdtempSync(join(tmpdir(), 'sg-tls-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

function selfSignedCertificate(): { key: Buffer; cert: Buffer } | undefined {
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    ], { stdio: 'ignore' })
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }
  } catch {
    return undefined
  }
}

const certificate = selfSignedCertificate()

t.test('an https upstream whose certificate does not verify gets nothing: 502, and no token left the gateway', { skip: certificate ? false : 'openssl is not installed' }, async (t) => {
  const seen: (string | undefined)[] = []
  const upstream = createServer(certificate!, (req, res) => {
    seen.push(req.headers.authorization)
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  const { port } = upstream.address() as { port: number }
  const gw = await startGateway({
    config: {
      routes: [
        { name: 'api', prefix: '/api', upstream: `https://127.0.0.1:${port}` },
        { name: 'open', prefix: '/open', upstream: `https://127.0.0.1:${port}`, auth: 'public' },
      ],
    },
  })
  t.teardown(async () => {
    await gw.close()
    upstream.closeAllConnections()
    await new Promise((resolve) => upstream.close(resolve))
  })
  const login = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  const accessToken = login.json.accessToken as string
  const res = await send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${accessToken}` } })
  t.equal(res.status, 502)
  t.equal(res.json.error, 'bad_gateway')
  const open = await send(`${gw.url}/open/x`)
  t.equal(open.status, 502, 'a public route too')
  t.same(seen, [], 'the upstream received no request, so no token')
})

t.test('an https upstream signed by a CA named in NODE_EXTRA_CA_CERTS is trusted (the way to a private CA)', { skip: certificate ? false : 'openssl is not installed' }, async (t) => {
  const seen: string[] = []
  const upstream = createServer(certificate!, (req, res) => {
    seen.push(req.url ?? '')
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    upstream.closeAllConnections()
    upstream.close()
  })
  const port = await freePort()
  const configFile = join(dir, 'gateway.yaml')
  writeFileSync(configFile, stringify({
    server: { host: '127.0.0.1', port },
    tokens: { issuer: 'https://gateway.test', audience: 'test-api' },
    cookies: { secure: false },
    login: { users: await writeUsers(dir) },
    routes: [{ name: 'open', prefix: '/open', upstream: `https://127.0.0.1:${(upstream.address() as { port: number }).port}`, auth: 'public' }],
  }))
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem'), LOG_LEVEL: 'warn' }
  for (const name of ['SESSIONGATE_CONFIG', 'REDIS_URL', 'HOST', 'PORT']) delete env[name]
  const child = spawn(process.execPath, [join(import.meta.dirname, '..', 'bin', 'sessiongate.js'), '--config', configFile], { env, stdio: 'ignore' })
  t.teardown(() => void child.kill('SIGKILL'))
  const url = `http://127.0.0.1:${port}`
  let up = false
  for (let i = 0; i < 100 && !up; i++) {
    up = await send(`${url}/healthz`).then((r) => r.status === 200, () => false)
    if (!up) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.ok(up, 'the gateway started')
  const res = await send(`${url}/open/x`)
  t.equal(res.status, 200, 'proxied')
  t.same(seen, ['/open/x'], 'the upstream was reached')
})
