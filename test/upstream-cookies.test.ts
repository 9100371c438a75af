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
