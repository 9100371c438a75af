import type { FastifyBaseLogger } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'
import { MemorySessionStore } from './memory-store.js'
import { connectRedis } from './redis-connection.js'
import { RedisSessionStore } from './redis-store.js'
import type { SessionStore } from './session-store.js'

/** `redis` omitted or `memory://` -> in-process store (one instance only); otherwise Redis. */
export function createSessionStore(config: GatewayConfig['redis'], log: FastifyBaseLogger): SessionStore {
  const inProcess = !config.cluster && !config.sentinel && (config.url === undefined || config.url === 'memory://')
  if (inProcess) {
    log.warn('using the in-process session store: sessions live in this process only; do not run more than one instance')
    return new MemorySessionStore()
  }
  return new RedisSessionStore(connectRedis(config, log), config.keyPrefix, log)
}
