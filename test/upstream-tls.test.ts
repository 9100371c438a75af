// An https upstream is verified before it gets a request (and with it a token): @fastify/reply-from turns undici's
// certificate checks off unless told otherwise. The certificate is made here with openssl (none is committed).
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'

function selfSignedCertificate(): { key: Buffer; cert: Buffer } | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'sg-tls-'))
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    ], { stdio: 'ignore' })
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }
  } catch {
    return undefined
  } finally {
    rmSync(dir, { recursive: true, force: true })
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
