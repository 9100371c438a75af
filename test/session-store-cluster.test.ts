/**
 * The Redis store on a real Redis Cluster (three masters): every script's keys share one hash tag, so each runs on
 * one node, and a gateway on a cluster logs in, rotates, detects reuse and revokes as on one Redis.
 */
import { execFileSync } from 'node:child_process'
import t from 'tap'
import { connectedStore, startRedisCluster } from './helpers/redis-topologies.js'
import { gatewaySessionLife } from './session-life.shared.js'
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

let stores = 0
storeSuite(t, () => connectedStore({ cluster: cluster.urls }, `cl${++stores}:`), { subscribes: false })

t.test('a gateway on a Redis Cluster: login, proxying, rotation, reuse detection, logout, logout-all', (t) =>
  gatewaySessionLife(t, { url: undefined, cluster: cluster.urls }),
)
