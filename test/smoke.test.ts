import t from 'tap'
import { CookieClient, send } from './helpers/client.js'
import { startStack } from './helpers/stack.js'

t.test('login through a Redis-backed gateway and call a protected route', async (t) => {
  const { upstream, gw } = await startStack(t)
  const client = new CookieClient(gw.url)
  const login = await client.login('alice', 'alice-pw')
  t.equal(login.status, 200)
  const res = await client.send('/api/orders?x=1')
  t.equal(res.status, 200)
  t.equal(res.json.url, '/api/orders?x=1')
  t.match(res.json.headers.authorization, /^Bearer ey/)
  t.notOk(res.json.headers.cookie, 'gateway cookies never reach the upstream')
  const anonymous = await send(`${gw.url}/api/orders`)
  t.equal(anonymous.status, 401)
  t.equal(anonymous.json.error, 'unauthenticated')
})
