import t from 'tap'
import { CookieClient, send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

t.test('an upstream cannot set or clear the gateway session cookies', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.setHeader('set-cookie', ['sg_access=forged; Path=/', 'theme=dark; Path=/', 'sg_refresh=; Max-Age=0; Path=/'])
    res.setHeader('content-type', 'application/json')
    res.end('{}')
  })
  const gw = await startGateway({
    config: {
      login: { page: '/login' },
      routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }, { name: 'page', prefix: '/login', upstream: upstream.url, auth: 'public' }],
    },
  })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
  })
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const before = new Map(client.jar)
  const res = await client.send('/api/x')
  t.equal(res.status, 200)
  t.same(res.setCookies, ['theme=dark; Path=/'], "only the upstream's own cookies pass")
  t.equal(client.jar.get('sg_access'), before.get('sg_access'), 'the access cookie is untouched')
  t.equal(client.jar.get('sg_refresh'), before.get('sg_refresh'), 'the refresh cookie is untouched')

  const stale = await send(`${gw.url}/api/x`, { headers: { cookie: 'sg_access=garbage', accept: 'text/html' } })
  t.equal(stale.status, 302, 'a browser navigation with a dead session goes to the login page')
  t.equal(stale.headers.location, '/login')
  t.ok(stale.setCookies.some((c) => c.startsWith('sg_access=;')), 'and its stale cookies are cleared')
})

t.test("a transparent refresh's answer carries the new cookies: no cache may keep it, whatever the upstream said (audit, review)", async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.setHeader('cache-control', 'public, max-age=3600')
    res.setHeader('expires', new Date(Date.now() + 3_600_000).toUTCString())
    res.setHeader('cdn-cache-control', 'max-age=3600')
    res.setHeader('surrogate-control', 'max-age=3600')
    res.setHeader('pragma', 'public')
    res.setHeader('content-type', 'application/json')
    res.end('{}')
  })
  const gw = await startGateway({
    config: { tokens: { accessTtl: '3s', refreshAhead: '2s', clockTolerance: 0 }, routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] },
  })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
  })
  const client = new CookieClient(gw.url)
  t.equal((await client.login('alice', 'alice-pw')).status, 200)
  const plain = await client.send('/api/x')
  t.equal(plain.status, 200)
  t.equal(plain.headers['cache-control'], 'public, max-age=3600', "without a refresh the upstream's caching stands")
  t.ok(plain.headers.expires, 'its Expires too')
  const before = client.jar.get('sg_refresh')
  await new Promise((resolve) => setTimeout(resolve, 1200)) // within refreshAhead of the access token's end
  const refreshed = await client.send('/api/x')
  t.equal(refreshed.status, 200)
  t.not(client.jar.get('sg_refresh'), before, 'the session was refreshed on the way')
  t.equal(refreshed.headers['cache-control'], 'no-store', 'the answer that sets the new cookies is no-store')
  t.equal(refreshed.headers.expires, undefined, "and the upstream's Expires is gone with its Cache-Control")
  for (const name of ['cdn-cache-control', 'surrogate-control', 'pragma']) {
    t.equal(plain.headers[name] === undefined, false, `${name} passes without a refresh`)
    t.equal(refreshed.headers[name], undefined, `${name} (which a CDN may read in place of Cache-Control) is gone too`)
  }
})
