import { execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CookieClient, send } from './helpers/client.js'
import { freePort } from './helpers/redis-server.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

t.test('login.provider: upstream — the legacy API checks the credentials', async (t) => {
  let delayMs = 0
  const legacy = await startUpstream((_req, res, recorded) => {
    const answer = () => {
      const { username, password } = JSON.parse(recorded.body || '{}')
      if (username === 'carol' && password === 'carol-pw') {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ user: { id: 42, roles: ['admin', 'user'], profile: { email: 'carol@example.com' } } }))
      } else if (username === 'nosub') {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ user: {} }))
      } else {
        res.writeHead(403, { 'content-type': 'application/json' })
        res.end('{"error":"nope"}')
      }
    }
    if (delayMs > 0) setTimeout(answer, delayMs)
    else answer()
  })
  const api = await startUpstream()
  const login = (url: string) => ({
    provider: 'upstream',
    upstream: { url, subject: '/user/id', claims: { roles: '/user/roles', email: '/user/profile/email', missing: '/nope' }, timeout: '2s' },
  })
  const gw = await startGateway({
    config: { login: login(`${legacy.url}/login`), routes: [{ name: 'api', prefix: '/api', upstream: api.url, headers: { 'X-User-Id': '{sub}' } }] },
  })
  const deadPort = await freePort()
  const gwDown = await startGateway({ config: { login: login(`http://127.0.0.1:${deadPort}/login`) } })
  t.teardown(async () => {
    await gw.close()
    await gwDown.close()
    await legacy.close()
    await api.close()
  })

  const client = new CookieClient(gw.url)
  const ok = await client.login('carol', 'carol-pw')
  t.equal(ok.status, 200, 'a 2xx answer logs in')
  t.equal(ok.json.sub, '42', 'the subject comes from /user/id (numbers become strings)')
  t.same(ok.json.claims, { roles: ['admin', 'user'], email: 'carol@example.com' }, 'claims mapped by JSON pointer; missing ones left out')
  t.same(JSON.parse(legacy.last()!.body), { username: 'carol', password: 'carol-pw' }, 'the credentials were posted as JSON')
  const proxied = await client.send('/api/x')
  t.equal(proxied.json.headers['x-user-id'], '42')

  const wrong = await send(`${gw.url}/auth/login`, { body: { username: 'carol', password: 'bad' } })
  t.equal(wrong.status, 401)
  t.equal(wrong.json.error, 'invalid_credentials', 'a non-2xx answer is a wrong password')
  t.same(wrong.setCookies, [], 'no cookies on a failed login')

  const noSub = await send(`${gw.url}/auth/login`, { body: { username: 'nosub', password: 'x' } })
  t.equal(noSub.status, 502, 'a 2xx answer without a subject is not a login')
  t.equal(noSub.json.error, 'bad_gateway')

  const down = await send(`${gwDown.url}/auth/login`, { body: { username: 'carol', password: 'carol-pw' } })
  t.equal(down.status, 502, 'the login service unreachable: 502, never a login')
  t.equal(down.json.error, 'bad_gateway')
  t.same(down.setCookies, [])

  delayMs = 4000
  const slow = await send(`${gw.url}/auth/login`, { body: { username: 'carol', password: 'carol-pw' } })
  t.equal(slow.status, 504, 'a login service slower than its timeout: 504')
  t.equal(slow.json.error, 'gateway_timeout')
  t.same(slow.setCookies, [])
})

t.test('a failing login service (5xx, an answer over 1 MiB) is a 502 that counts as no failed login; the client address goes along (audit)', async (t) => {
  let mode: 'down' | 'limited' | 'huge' | 'ok' = 'down'
  const legacy = await startUpstream((_req, res) => {
    if (mode === 'down') return void res.writeHead(503, { 'retry-after': '5', 'content-type': 'application/json' }).end('{"error":"maintenance"}')
    if (mode === 'limited') return void res.writeHead(429, { 'retry-after': '600' }).end()
    res.writeHead(200, { 'content-type': 'application/json' })
    if (mode === 'huge') return void res.end(JSON.stringify({ user: { id: 7, pad: 'x'.repeat(2 << 20) } }))
    res.end(JSON.stringify({ user: { id: 7 } }))
  })
  const gw = await startGateway({
    config: { login: { provider: 'upstream', upstream: { url: `${legacy.url}/login`, subject: '/user/id' }, rateLimit: { max: 2, window: '1m' } } },
  })
  t.teardown(async () => {
    await gw.close()
    await legacy.close()
  })
  const login = () => send(`${gw.url}/auth/login`, { body: { username: 'dave', password: 'dave-pw' } })
  for (let i = 0; i < 3; i++) {
    const down = await login()
    t.equal(down.status, 502, `attempt ${i + 1}: the service failing is not a wrong password`)
    t.equal(down.json.error, 'bad_gateway')
  }
  mode = 'limited'
  const limited = await login()
  t.equal(limited.status, 502, "the service's own 429 is not a wrong password either")
  mode = 'huge'
  const huge = await login()
  t.equal(huge.status, 502, 'an answer over 1 MiB is not read')
  t.match(huge.json.message, /over 1048576 bytes/)
  mode = 'ok'
  const back = await login()
  t.equal(back.status, 200, 'once the service is back, the right password logs in: no attempt above counted as failed')
  t.equal(legacy.last()!.headers['x-forwarded-for'], '127.0.0.1', "the login service sees the client's address")
  const metrics = (await send(`${gw.url}/metrics`)).text
  t.match(metrics, /sessiongate_logins_total\{result="error"\} 5/, 'counted as errors')
})

t.test('the example configurations pass `sessiongate check`', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-examples-'))
  const keys = join(dir, 'keys.json')
  writeFileSync(keys, execFileSync('node', ['bin/sessiongate.js', 'keygen']))
  for (const file of ['config/gateway.yaml', 'config/production.yaml', 'config/upstream-login.yaml']) {
    const out = execFileSync('node', ['bin/sessiongate.js', 'check', '--config', file], {
      env: { ...process.env, SIGNING_KEYS_FILE: keys, REDIS_URL: '' },
    }).toString()
    t.equal(out, 'ok\n', `${file} is valid`)
  }
})
