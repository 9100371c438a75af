import t from 'tap'
import { CookieClient, send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis-server.js'
import { startUpstream } from './helpers/upstream.js'

t.test('login through a Redis-backed gateway and call a protected route', async (t) => {
  const redis = await startRedis()
  const upstream = await startUpstream()
  const gw = await startGateway({ redisUrl: redis.url, config: { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] } })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
    await redis.stop()
  })
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
