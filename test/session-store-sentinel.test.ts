/**
 * The Redis store behind a sentinel (a master and one sentinel, quorum 1): ioredis asks the sentinel for the
 * master, and the store's shared suite and a gateway's session life run on it as on a plain Redis URL.
 */
import t from 'tap'
import { connectedStore, startRedisSentinel } from './helpers/redis-topologies.js'
import { gatewaySessionLife } from './session-life.shared.js'
import { storeSuite } from './session-store.shared.js'

const sentinel = await startRedisSentinel()
t.teardown(() => sentinel.stop())

let stores = 0
storeSuite(t, () => connectedStore({ sentinel: { name: sentinel.name, nodes: [sentinel.node] } }, `se${++stores}:`))

t.test('a gateway behind a sentinel: login, proxying, rotation, reuse detection, logout, logout-all', (t) =>
  gatewaySessionLife(t, { url: undefined, sentinel: { name: sentinel.name, nodes: [sentinel.node] } }),
)
