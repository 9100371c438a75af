import type { Test } from 'tap'
import { startGateway, type StartedGateway } from './gateway.js'
import { startRedis, type TestRedis } from './redis-server.js'
import { startUpstream, type TestUpstream } from './upstream.js'

export interface Stack {
  redis: TestRedis
  upstream: TestUpstream
  gw: StartedGateway
}

/**
 * The whole thing in miniature: a throwaway redis-server, a recording echo upstream and a gateway with one
 * protected route (`/api`) to it, all stopped when the test ends.
 */
export async function startStack(t: Test, options: { redisDown?: boolean } = {}): Promise<Stack> {
  const redis = await startRedis()
  // `redisDown`: the gateway starts while Redis is stopped (redis.resume() brings it back).
  if (options.redisDown) await redis.pause()
  const upstream = await startUpstream()
  const gw = await startGateway({ redisUrl: redis.url, config: { routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] } })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
    await redis.stop()
  })
  return { redis, upstream, gw }
}
