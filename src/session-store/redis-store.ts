import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import { StoreUnavailableError } from '../errors.js'
import { StoreKeys } from './keys.js'
import { defineScripts, type ScriptedClient } from './lua-scripts.js'
import type { RedisClient } from './redis-connection.js'
import type {
  AccessState,
  NewSession,
  RateLimitState,
  RevocationEvent,
  RotateRequest,
  RotateResult,
  SessionRecord,
  SessionStore,
} from './session-store.js'

const ACCESS_STATES: AccessState[] = ['ok', 'denied', 'revoked', 'missing']

/** Any failure to talk to Redis becomes StoreUnavailableError: callers fail closed. */
async function guarded<T>(work: Promise<T>): Promise<T> {
  try {
    return await work
  } catch (err) {
    throw new StoreUnavailableError(err)
  }
}

function parseClaims(text: unknown): Record<string, unknown> {
  return typeof text === 'string' ? (JSON.parse(text) as Record<string, unknown>) : {}
}

export class RedisSessionStore implements SessionStore {
  readonly kind = 'redis'
  private readonly redis: ScriptedClient
  private readonly keys: StoreKeys
  private subscriber: Redis | undefined

  constructor(client: RedisClient, keyPrefix: string, private readonly log?: FastifyBaseLogger) {
    this.redis = defineScripts(client)
    this.keys = new StoreKeys(keyPrefix)
  }

  get client(): RedisClient {
    return this.redis
  }

  async createSession(s: NewSession): Promise<SessionRecord> {
    const claims = JSON.stringify(s.claims)
    const [gen, created, rot, abs, idle] = (await guarded(
      this.redis.createSession(this.keys.session(s.sid), s.sub, claims, s.refreshHash, s.idleTtlMs, s.absoluteTtlMs),
    )) as number[]
    // The subject index only serves logout-all; it is pruned of dead families as it goes.
    const index = this.keys.subjectSessions(s.sub)
    await guarded(
      Promise.all([
        this.redis.zadd(index, abs as number, s.sid),
        this.redis.zremrangebyscore(index, '-inf', Date.now()),
        // GT alone never sets a TTL on a key that has none (Redis treats it as infinite): NX first, then GT.
        this.redis
          .pexpireat(index, abs as number, 'NX')
          .then(() => this.redis.pexpireat(index, abs as number, 'GT'))
          .catch(() => this.redis.pexpireat(index, abs as number)),
      ]),
    )
    return {
      sid: s.sid, sub: s.sub, claims: s.claims, gen: Number(gen), createdAt: Number(created),
      rotatedAt: Number(rot), absoluteExpiresAt: Number(abs), idleExpiresAt: Number(idle),
    }
  }

  async rotate(r: RotateRequest): Promise<RotateResult> {
    const reply = (await guarded(
      this.redis.rotateRefresh(this.keys.session(r.sid), this.keys.successor(r.sid), r.presentedHash, r.presentedGen, r.nextHash, r.sealedSuccessor, r.idleTtlMs, r.graceMs, r.unlessSuperseded ? '1' : '0'),
    )) as (string | number)[]
    const status = reply[0]
    if (status === 'rotated' || status === 'grace') {
      const [, gen, created, rot, abs, idle, sub, claims, sealed] = reply
      const session: SessionRecord = {
        sid: r.sid, sub: String(sub), claims: parseClaims(claims), gen: Number(gen), createdAt: Number(created),
        rotatedAt: Number(rot), absoluteExpiresAt: Number(abs), idleExpiresAt: Number(idle),
      }
      if (status === 'rotated') return { kind: 'rotated', session }
      return { kind: 'grace', session, sealedSuccessor: String(sealed) }
    }
    if (status === 'reused') {
      void this.publish({ type: 'session', sid: r.sid })
      return { kind: 'reused' }
    }
    if (status === 'superseded' || status === 'revoked' || status === 'expired' || status === 'invalid') return { kind: status }
    throw new StoreUnavailableError(new Error(`unexpected rotate reply ${String(status)}`))
  }

  async checkAccess(sid: string, jti: string): Promise<AccessState> {
    const code = (await guarded(this.redis.checkAccess(this.keys.session(sid), this.keys.deniedJti(sid, jti)))) as number
    return ACCESS_STATES[code] ?? 'missing'
  }

  async getSession(sid: string): Promise<SessionRecord | undefined> {
    const f = await guarded(this.redis.hmget(this.keys.session(sid), 'sub', 'claims', 'gen', 'created', 'rot', 'abs', 'idle', 'rev'))
    const sub = f[0]
    if (sub === null || sub === undefined || f[7] !== '0') return undefined
    const session: SessionRecord = {
      sid, sub, claims: parseClaims(f[1]), gen: Number(f[2]), createdAt: Number(f[3]),
      rotatedAt: Number(f[4]), absoluteExpiresAt: Number(f[5]), idleExpiresAt: Number(f[6]),
    }
    return session.absoluteExpiresAt > Date.now() ? session : undefined
  }

  async denyAccessToken(sid: string, jti: string, expiresAt: number): Promise<void> {
    if (expiresAt <= Date.now()) return
    await guarded(this.redis.set(this.keys.deniedJti(sid, jti), '1', 'PXAT', expiresAt))
    void this.publish({ type: 'jti', sid, jti, expiresAt })
  }

  async deleteSession(sid: string): Promise<boolean> {
    const [removed] = await guarded(Promise.all([this.redis.del(this.keys.session(sid)), this.redis.del(this.keys.successor(sid))]))
    void this.publish({ type: 'session', sid })
    return removed > 0
  }

  async deleteSessionsOf(sub: string): Promise<number> {
    const index = this.keys.subjectSessions(sub)
    const sids = await guarded(this.redis.zrange(index, 0, -1))
    const removed = await guarded(
      Promise.all(sids.map(async (sid) => (await Promise.all([this.redis.del(this.keys.session(sid)), this.redis.del(this.keys.successor(sid))]))[0])),
    )
    await guarded(this.redis.del(index))
    for (const sid of sids) void this.publish({ type: 'session', sid })
    return removed.reduce((n, r) => n + r, 0)
  }

  async rateLimitPeek(keys: string[]): Promise<RateLimitState[]> {
    const replies = (await guarded(Promise.all(keys.map((k) => this.redis.rateLimitPeek(this.keys.rateLimit(k)))))) as number[][]
    return replies.map(([count, pttl]) => ({ count: Number(count), retryAfterMs: Math.max(0, Number(pttl)) }))
  }

  async rateLimitHit(keys: string[], windowMs: number): Promise<RateLimitState[]> {
    const replies = (await guarded(Promise.all(keys.map((k) => this.redis.rateLimitHit(this.keys.rateLimit(k), windowMs))))) as number[][]
    return replies.map(([count, pttl]) => ({ count: Number(count), retryAfterMs: Math.max(0, Number(pttl)) }))
  }

  async rateLimitUndo(key: string): Promise<void> {
    await guarded(this.redis.rateLimitUndo(this.keys.rateLimit(key)))
  }

  async rateLimitReset(key: string): Promise<void> {
    await guarded(this.redis.del(this.keys.rateLimit(key)))
  }

  async ping(): Promise<void> {
    await guarded(this.redis.ping())
  }

  private async publish(event: RevocationEvent): Promise<void> {
    try {
      await this.redis.publish(this.keys.revocationChannel(), JSON.stringify(event))
    } catch (err) {
      this.log?.warn({ err: { message: (err as Error).message } }, 'could not publish a revocation')
    }
  }

  async onRevocation(listener: (event: RevocationEvent) => void, onStatus?: (subscribed: boolean) => void): Promise<void> {
    if (!(this.redis instanceof Redis)) throw new Error('the local revocation cache needs a single Redis or sentinel connection')
    const channel = this.keys.revocationChannel()
    const subscriber = this.redis.duplicate({ enableOfflineQueue: true, autoResubscribe: false })
    this.subscriber = subscriber
    subscriber.on('error', () => {})
    subscriber.on('message', (_channel: string, message: string) => {
      try {
        listener(JSON.parse(message) as RevocationEvent)
      } catch {
        /* not ours */
      }
    })
    // While the subscription is down, revocations may be missed: say so, and say when it is back.
    subscriber.on('close', () => onStatus?.(false))
    subscriber.on('ready', () => {
      subscriber.subscribe(channel).then(
        () => onStatus?.(true),
        () => onStatus?.(false),
      )
    })
    await subscriber.subscribe(channel)
    onStatus?.(true)
  }

  async close(): Promise<void> {
    this.subscriber?.disconnect()
    await this.redis.quit().catch(() => this.redis.disconnect())
  }
}
