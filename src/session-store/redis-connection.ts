import { Cluster, Redis, type RedisOptions } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'

export type RedisClient = Redis | Cluster

/** Commands fail at once while Redis is away (no offline queue): the gateway answers 503, it never queues. */
const COMMON: RedisOptions = {
  enableOfflineQueue: false,
  enableAutoPipelining: true,
  maxRetriesPerRequest: 0,
  commandTimeout: 1000,
  connectTimeout: 2000,
  retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
}

/** Connects to Redis as configured (url, cluster or sentinel) and logs one line per outage, not per request. */
export function connectRedis(config: GatewayConfig['redis'], log: FastifyBaseLogger): RedisClient {
  let client: RedisClient
  if (config.cluster) {
    client = new Cluster(
      config.cluster.map((u) => {
        const url = new URL(u)
        return { host: url.hostname, port: Number(url.port || 6379) }
      }),
      { enableOfflineQueue: false, enableAutoPipelining: true, redisOptions: { ...COMMON, ...credentials(config.cluster[0] as string) } },
    )
  } else if (config.sentinel) {
    client = new Redis({
      ...COMMON,
      name: config.sentinel.name,
      sentinels: config.sentinel.nodes.map((n) => {
        const url = new URL(n.includes('://') ? n : `redis://${n}`)
        return { host: url.hostname, port: Number(url.port || 26379) }
      }),
    })
  } else {
    client = new Redis(config.url as string, COMMON)
  }
  watchHealth(client, log, config.onOutage)
  return client
}

function credentials(url: string): RedisOptions {
  const u = new URL(url)
  return {
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  }
}

function watchHealth(client: RedisClient, log: FastifyBaseLogger, onOutage: GatewayConfig['redis']['onOutage']): void {
  const consequence =
    onOutage === 'verify-only'
      ? 'verify-only: accepting valid signatures WITHOUT the denylist and revocation checks until it returns'
      : 'failing closed (503 on protected routes) until it returns'
  let down = false
  client.on('error', (err: Error) => {
    if (down) return
    down = true
    log.error({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, `session store unreachable; ${consequence}`)
  })
  client.on('ready', () => {
    if (down) log.warn('session store reachable again')
    down = false
  })
}
