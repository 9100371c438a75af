/**
 * The Redis store on a real Redis Cluster (three masters): every script's keys share one hash tag, so each runs on
 * one node, and a gateway on a cluster logs in, rotates, detects reuse and revokes as on one Redis.
 */
import { execFileSync } from 'node:child_process'
import t from 'tap'
import type { FastifyBaseLogger } from 'fastify'
import { configSchema } from '../src/config/schema.js'
import { connectRedis } from '../src/session-store/redis-connection.js'
import { RedisSessionStore } from '../src/session-store/redis-store.js'
import { send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'
import { startRedisCluster } from './helpers/redis-cluster.js'
import { startUpstream } from './helpers/upstream.js'
import { storeSuite } from './session-store.shared.js'

// --cluster-port (a bus port of its own) came with Redis 7; redis-cli joins the nodes.
const version = /v=(\d+)/.exec(execFileSync('redis-server', ['--version'], { encoding: 'utf8' }))
const withoutCli = (() => {
  try {
    execFileSync('redis-cli', ['--version'], { stdio: 'ignore' })
    return false
  } catch {
    return true
  }
})()
if (Number(version?.[1] ?? 0) < 7 || withoutCli) {
  t.plan(0, withoutCli ? 'no redis-cli here to join a cluster' : `Redis ${version?.[1] ?? '?'}: a throwaway cluster needs redis-server 7 or later`)
  process.exit(0)
}
const cluster = await startRedisCluster()
t.teardown(() => cluster.stop())

const silent = { warn: () => {}, error: () => {}, info: () => {}, debug: () => {} } as unknown as FastifyBaseLogger
let stores = 0
storeSuite(t, async () => {
  const redis = configSchema.shape.redis.parse({ cluster: cluster.urls })
  const client = connectRedis(redis, silent)
  // As the gateway does at start (waitForStore): no offline queue, so the first command waits for the cluster's slots.
  await new Promise<void>((resolve) => client.once('ready', () => resolve()))
  return new RedisSessionStore(client, `cl${++stores}:`)
}, { subscribes: false })

t.test('a gateway on a Redis Cluster: login, proxying, rotation, reuse detection, logout, logout-all', async (t) => {
  const upstream = await startUpstream()
  const gw = await startGateway({
    config: { redis: { url: undefined, cluster: cluster.urls }, tokens: { reuseGrace: '200ms' }, routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] },
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
})
