// Identity headers cannot be forged through any route, and survive any claim value.
import t from 'tap'
import { CookieClient, send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

t.test('no route forwards a client copy of an injected header, or a look-alike of one', async (t) => {
  const upstream = await startUpstream()
  const routes = [
    { name: 'admin', prefix: '/api/admin', upstream: upstream.url, require: { roles: ['admin'] }, headers: { 'X-User-Id': '{sub}', 'X-User-Roles': '{roles}' } },
    { name: 'page', prefix: '/', upstream: upstream.url, auth: 'public' },
  ]
  const gw = await startGateway({ config: { routes } })
  const trusting = await startGateway({ config: { routes, server: { trustProxy: ['127.0.0.1'] } } })
  t.teardown(async () => {
    await gw.close()
    await trusting.close()
    await upstream.close()
  })
  const forged = { 'x-user-id': 'user-admin', 'x-user-roles': 'admin', x_user_id: 'user-admin', 'X_User_Roles': 'admin', forwarded: 'for=1.2.3.4;host=evil', 'x-real-ip': '1.2.3.4' }
  const pub = await send(`${gw.url}/admin`, { headers: forged })
  t.equal(pub.status, 200, 'the public route answers')
  const seen = upstream.last()!.headers
  for (const name of ['x-user-id', 'x-user-roles', 'x_user_id', 'x_user_roles', 'forwarded', 'x-real-ip']) {
    t.equal(seen[name], undefined, `${name} from the client never reaches the upstream through the public route`)
  }
  const client = new CookieClient(gw.url)
  await client.login('alice', 'alice-pw')
  const prot = await client.send('/api/admin/x', { headers: forged })
  t.equal(prot.status, 200)
  t.equal(upstream.last()!.headers['x-user-id'], 'user-1', 'the protected route sends the real subject')
  t.equal(upstream.last()!.headers.x_user_id, undefined, 'and no look-alike')
  await send(`${trusting.url}/x`, { headers: { forwarded: 'for=10.0.0.1', 'x-real-ip': '10.0.0.1' } })
  t.equal(upstream.last()!.headers.forwarded, 'for=10.0.0.1', 'Forwarded from a trusted proxy is kept')
  t.equal(upstream.last()!.headers['x-real-ip'], '10.0.0.1', 'X-Real-IP from a trusted proxy is kept')
})

t.test('a claim outside Latin-1 is percent-encoded, not a 502', async (t) => {
  const upstream = await startUpstream()
  const gw = await startGateway({
    users: [{ username: 'taro', password: 'taro-pw', sub: 'user-jp', claims: { name: '山田 太郎' } }],
    config: { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url, headers: { 'X-User-Name': '{name}' } }] },
  })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
  })
  const client = new CookieClient(gw.url)
  t.equal((await client.login('taro', 'taro-pw')).status, 200)
  const res = await client.send('/api/x')
  t.equal(res.status, 200)
  t.equal(upstream.last()!.headers['x-user-name'], encodeURIComponent('山田') + ' ' + encodeURIComponent('太郎'))
})

t.test('identity headers filled once per token and route: the same answer again, and another route gets its own', async (t) => {
  const { identityHeaders } = await import('../src/auth/claim-rules.js')
  const payload = { sub: 'user-1', roles: ['admin', 'ops'] }
  const a = { 'x-user-id': '{sub}' }
  const b = { 'x-user-id': 'u:{sub}', 'x-roles': '{roles}' }
  t.same(identityHeaders(a, payload), { 'x-user-id': 'user-1' })
  t.equal(identityHeaders(a, payload), identityHeaders(a, payload), 'again, for the same templates: the headers filled before')
  t.same(identityHeaders(b, payload), { 'x-user-id': 'u:user-1', 'x-roles': 'admin,ops' }, "another route's templates are filled for it")
  t.same(identityHeaders(a, payload), { 'x-user-id': 'user-1' }, 'and back')
  t.same(identityHeaders(a, { sub: 'user-2' }), { 'x-user-id': 'user-2' }, "another token's claims")
  t.same(identityHeaders(a, undefined), {}, 'no token: no headers')
})
