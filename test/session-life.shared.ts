/**
 * A gateway's whole session life on a given Redis topology (the cluster and sentinel tests): login, a proxied request,
 * a rotation, the grace, reuse detection, logout and logout-all, each checked by real requests.
 */
import type { Test } from 'tap'
import { send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

export async function gatewaySessionLife(t: Test, redis: Record<string, unknown>): Promise<void> {
  const upstream = await startUpstream()
  const gw = await startGateway({
    config: { redis, tokens: { reuseGrace: '200ms' }, routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] },
  })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
  })
  const login = () => send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  const call = (token: string) => send(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${token}` } })
  const first = await login()
  t.equal(first.status, 200, 'login')
  t.equal((await call(first.json.accessToken)).status, 200, 'a proxied request')
  const rotated = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: first.json.refreshToken } })
  t.equal(rotated.status, 200, 'a rotation')
  const again = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: first.json.refreshToken } })
  t.equal(again.json.refreshToken, rotated.json.refreshToken, 'within the grace: the same successor')
  await new Promise((resolve) => setTimeout(resolve, 300))
  const replay = await send(`${gw.url}/auth/refresh`, { body: { refreshToken: first.json.refreshToken } })
  t.equal(replay.json.error, 'refresh_token_reused', 'after it: a replay')
  t.equal((await call(rotated.json.accessToken)).status, 401, "the family's access token is refused at once")

  const second = await login()
  const logout = await send(`${gw.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${second.json.accessToken}` } })
  t.equal(logout.status, 204, 'logout')
  t.equal((await call(second.json.accessToken)).status, 401, 'its token refused')

  const [a, b] = [await login(), await login()]
  const all = await send(`${gw.url}/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${a.json.accessToken}` } })
  t.equal(all.status, 204, 'logout-all')
  t.same([(await call(a.json.accessToken)).status, (await call(b.json.accessToken)).status], [401, 401], 'every family of the subject ended')
  t.equal((await send(`${gw.url}/auth/refresh`, { body: { refreshToken: b.json.refreshToken } })).status, 401, 'and its refresh tokens with it')
}
