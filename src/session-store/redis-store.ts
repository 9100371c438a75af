import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import { RevocationUnannouncedError, StoreUnavailableError } from '../errors.js'
import { StoreKeys } from './keys.js'
import { defineScripts, type ScriptedClient } from './lua-scripts.js'
import type { RedisClient } from './redis-connection.js'
import type {
  AccessState,
  AnnouncementState,
  NewSession,
  RateLimitHit,
  RateLimitState,
  RevocationEvent,
  RotateRequest,
  RotateResult,
  SessionRecord,
  SessionStore,
} from './session-store.js'

const ACCESS_STATES: AccessState[] = ['ok', 'denied', 'revoked', 'missing']

/** How often the revocation subscription's connection is asked whether Redis still answers. */
const HEARTBEAT_MS = 1000
const HEARTBEAT_MISSES_BEFORE_RECONNECT = 3

/** At most one log line per this long about failing commands (a frozen Redis closes no connection: no error event). */
const FAILURE_LOG_EVERY_MS = 10_000

function parseClaims(text: unknown): Record<string, unknown> {
  return typeof text === 'string' ? (JSON.parse(text) as Record<string, unknown>) : {}
}

export class RedisSessionStore implements SessionStore {
  readonly kind = 'redis'
  private readonly redis: ScriptedClient
  private readonly keys: StoreKeys
  private subscriber: Redis | undefined
  /** Whether the revocation subscription is up, and how many times it has dropped (revocationBarrier). */
  private subscribed = false
  private subscriptionDrops = 0
  private heartbeat: NodeJS.Timeout | undefined
  private lastFailureLog = 0

  constructor(client: RedisClient, keyPrefix: string, private readonly log?: FastifyBaseLogger) {
    this.redis = defineScripts(client)
    this.keys = new StoreKeys(keyPrefix)
  }

  /** Any failure to talk to Redis becomes StoreUnavailableError: callers fail closed (or verify-only). */
  private async guarded<T>(work: Promise<T>): Promise<T> {
    try {
      return await work
    } catch (err) {
      const now = Date.now()
      // Only while the connection counts as up (a frozen or overloaded Redis: no error event tells of it). While
      // it is connecting or reconnecting, connectRedis already logs the outage once; at start that is no error.
      if (this.redis.status === 'ready' && now - this.lastFailureLog >= FAILURE_LOG_EVERY_MS) {
        this.lastFailureLog = now
        this.log?.error({ err: { message: (err as Error).message } }, 'session store command failed (unreachable or not answering): redis.onOutage applies')
      }
      throw new StoreUnavailableError(err)
    }
  }

  get client(): RedisClient {
    return this.redis
  }

  async createSession(s: NewSession): Promise<SessionRecord> {
    const claims = JSON.stringify(s.claims)
    const [gen, created, rot, abs, idle] = (await this.guarded(
      this.redis.createSession(this.keys.session(s.sid), s.sub, claims, s.refreshHash, s.idleTtlMs, s.absoluteTtlMs),
    )) as number[]
    // The subject index only serves logout-all; it is pruned of dead families as it goes.
    const index = this.keys.subjectSessions(s.sub)
    await this.guarded(
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
    const reply = (await this.guarded(
      this.redis.rotateRefresh(
        this.keys.session(r.sid), this.keys.successor(r.sid),
        r.presentedHash, r.presentedGen, r.nextHash, r.sealedSuccessor, r.idleTtlMs, r.graceMs, r.unlessSuperseded ? '1' : '0',
        ...this.announcement({ type: 'session', sid: r.sid }),
      ),
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
    if (status === 'reused') await this.announced(reply[1], r.sid)
    if (status === 'reused' || status === 'superseded' || status === 'revoked' || status === 'expired' || status === 'invalid') return { kind: status }
    throw new StoreUnavailableError(new Error(`unexpected rotate reply ${String(status)}`))
  }

  async extendGrace(sid: string, gen: number, graceMs: number): Promise<boolean> {
    return (await this.guarded(this.redis.extendGrace(this.keys.session(sid), this.keys.successor(sid), gen, graceMs))) === 1
  }

  async checkAccess(sid: string, jti: string): Promise<AccessState> {
    const code = (await this.guarded(this.redis.checkAccess(this.keys.session(sid), this.keys.deniedJti(sid, jti)))) as number
    return ACCESS_STATES[code] ?? 'missing'
  }

  async getSession(sid: string): Promise<SessionRecord | undefined> {
    const f = await this.guarded(this.redis.hmget(this.keys.session(sid), 'sub', 'claims', 'gen', 'created', 'rot', 'abs', 'idle', 'rev'))
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
    const published = await this.guarded(this.redis.denyJti(this.keys.deniedJti(sid, jti), expiresAt, ...this.announcement({ type: 'jti', sid, jti, expiresAt })))
    await this.announced(published, sid)
  }

  async deleteSession(sid: string): Promise<boolean> {
    return (await this.revokeSession(sid)) > 0
  }

  async deleteSessionsOf(sub: string): Promise<string[]> {
    const index = this.keys.subjectSessions(sub)
    const sids = await this.guarded(this.redis.zrange(index, 0, -1))
    // One script per family (each has its own hash tag, so its own Cluster slot), all in one auto-pipelined write.
    const settled = await Promise.allSettled(sids.map((sid) => this.revokeSession(sid)))
    const ended = sids.filter((_sid, i) => {
      const result = settled[i]
      return result?.status === 'fulfilled' && result.value > 0
    })
    const failures = settled.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []))
    const other = failures.find((err) => !(err instanceof RevocationUnannouncedError))
    if (other !== undefined) throw other
    // Every family applied, some unannounced: all of them are this instance's to refuse from memory (the index stays
    // for the retry, which announces them again).
    if (failures.length > 0) throw new RevocationUnannouncedError([...ended, ...failures.flatMap((err) => (err as RevocationUnannouncedError).sids)])
    await this.guarded(this.redis.del(index))
    return ended
  }

  private async revokeSession(sid: string): Promise<number> {
    const [removed, published] = (await this.guarded(
      this.redis.revokeSession(this.keys.session(sid), this.keys.successor(sid), ...this.announcement({ type: 'session', sid })),
    )) as number[]
    await this.announced(published, sid)
    return Number(removed)
  }

  async rateLimitPeek(keys: string[]): Promise<RateLimitState[]> {
    const replies = (await this.guarded(Promise.all(keys.map((k) => this.redis.rateLimitPeek(this.keys.rateLimit(k)))))) as number[][]
    return replies.map(([count, pttl]) => ({ count: Number(count), retryAfterMs: Math.max(0, Number(pttl)) }))
  }

  async rateLimitHit(keys: string[], windowMs: number): Promise<RateLimitHit[]> {
    const replies = (await this.guarded(Promise.all(keys.map((k) => this.redis.rateLimitHit(this.keys.rateLimit(k), windowMs))))) as number[][]
    return replies.map(([count, pttl, window]) => ({ count: Number(count), retryAfterMs: Math.max(0, Number(pttl)), window: Number(window) }))
  }

  async rateLimitUndo(key: string, window: number): Promise<void> {
    await this.guarded(this.redis.rateLimitUndo(this.keys.rateLimit(key), window))
  }

  async rateLimitReset(key: string): Promise<void> {
    await this.guarded(this.redis.del(this.keys.rateLimit(key)))
  }

  async ping(): Promise<void> {
    await this.guarded(this.redis.ping())
  }

  /**
   * The database the connection actually uses (CLIENT INFO, Redis 6.2+), or undefined when it cannot tell (a
   * cluster, an older Redis). ioredis carries on in database 0 when its SELECT is refused (`/99` on a server with
   * 16 databases): the start compares this with the configured one.
   */
  async selectedDatabase(): Promise<number | undefined> {
    if (!(this.redis instanceof Redis)) return undefined
    try {
      const info = String(await this.redis.call('CLIENT', 'INFO'))
      const db = / db=(\d+)/.exec(info)?.[1]
      return db === undefined ? undefined : Number(db)
    } catch {
      return undefined
    }
  }

  /**
   * The channel and message of a revocation, for the script that applies it: the scripts publish in the same step
   * as the change, so no revocation is ever made without its announcement to the instances' revocation caches.
   */
  private announcement(event: RevocationEvent): [string, string] {
    return [this.keys.revocationChannel(), JSON.stringify(event)]
  }

  /**
   * A revocation applied but not announced (the server refused the PUBLISH: ACL rights) is logged and counted in
   * the store, before the revocation is acknowledged: strict-mode instances read the count with their next
   * announcement probe and forget what they knew from memory when it moved (announcements()).
   */
  private async announced(published: unknown, sid: string): Promise<void> {
    if (Number(published) === 1) return
    const counted = await this.redis.incr(this.keys.unannouncedRevocations()).then(() => true, (err: unknown) => err)
    this.log?.warn(
      { sid, channel: this.keys.revocationChannel(), counted: counted === true },
      'revocation applied but not announced: Redis refused the PUBLISH (ACL rights?); other instances forget what they knew from memory at their next probe',
    )
    // Neither announced nor counted: the client is told to retry (the revocation is idempotent and announces again).
    if (counted !== true) throw new RevocationUnannouncedError([sid], counted)
  }

  /**
   * Subscribes (now, and again after every reconnection) and reports the subscription's state. Never throws: with
   * Redis away at start the subscription simply comes up later. A subscription whose connection stays open while
   * Redis does not answer (a frozen or partitioned server) is reported down by a heartbeat: no answer to a PING
   * within the command timeout, one a second.
   */
  async onRevocation(listener: (event: RevocationEvent) => void, onStatus?: (subscribed: boolean) => void): Promise<void> {
    if (!(this.redis instanceof Redis)) throw new Error('the local revocation cache needs a single Redis or sentinel connection')
    const channel = this.keys.revocationChannel()
    // No auto-pipelining (the main client's option): a barrier's PING is sent at once, its timeout running.
    const subscriber = this.redis.duplicate({ enableOfflineQueue: true, autoResubscribe: false, enableAutoPipelining: false })
    this.subscriber = subscriber
    subscriber.on('error', () => {})
    subscriber.on('message', (_channel: string, message: string) => {
      let event: RevocationEvent
      try {
        event = JSON.parse(message) as RevocationEvent
      } catch {
        return // not ours
      }
      if (event?.type === 'session' || event?.type === 'jti') listener(event)
    })
    const report = (up: boolean) => {
      if (this.subscribed && !up) this.subscriptionDrops++
      this.subscribed = up
      onStatus?.(up)
    }
    // While the subscription is down, revocations may be missed: say so, and say when it is back.
    subscriber.on('close', () => report(false))
    subscriber.on('ready', () => {
      subscriber.subscribe(channel).then(() => report(true), () => report(false))
    })
    let missed = 0
    this.heartbeat = setInterval(() => {
      if (subscriber.status !== 'ready') return
      subscriber.ping().then(
        () => {
          missed = 0
          if (!this.subscribed) subscriber.subscribe(channel).then(() => report(true), () => {})
        },
        () => {
          if (this.subscribed) report(false)
          // A connection that stays open without answers (half-open after a partition, a demoted sentinel master)
          // is never replaced by ioredis on its own: reconnect (and ask the sentinels again).
          if (++missed >= HEARTBEAT_MISSES_BEFORE_RECONNECT) {
            missed = 0
            subscriber.disconnect(true)
          }
        },
      )
    }, HEARTBEAT_MS)
    this.heartbeat.unref()
  }

  /**
   * Redis writes a published message into every subscriber's connection when the PUBLISH runs, so its answer to a
   * PING sent on that connection comes after every message published before the PING ran, and ioredis hands them
   * to the listener, in order, before it resolves the PING. False (never an error) when the subscription is not
   * up, dropped during the PING (messages may have been lost) or the PING fails: the caller asks checkAccess.
   */
  async revocationBarrier(): Promise<boolean> {
    const subscriber = this.subscriber
    if (subscriber === undefined || !this.subscribed || subscriber.status !== 'ready') return false
    const drops = this.subscriptionDrops
    try {
      await subscriber.ping()
    } catch {
      return false
    }
    return this.subscribed && drops === this.subscriptionDrops
  }

  async announcements(): Promise<AnnouncementState | undefined> {
    // One round trip (auto-pipelined): the probe PUBLISH and the count of revocations nobody could announce.
    const [published, unannounced] = await Promise.allSettled([
      this.redis.publish(this.keys.revocationChannel(), '{"type":"probe"}'),
      this.redis.get(this.keys.unannouncedRevocations()),
    ])
    // A counter this user may not read: never equal to itself (NaN), so what was known is forgotten at every probe,
    // and no barrier (strict mode).
    if (unannounced.status === 'rejected') {
      return /NOPERM/i.test((unannounced.reason as Error).message) ? { allowed: false, unannounced: Number.NaN } : undefined
    }
    const count = Number(unannounced.value ?? 0)
    if (published.status === 'fulfilled') return { allowed: true, unannounced: count }
    // Refused (NOPERM: the user has no right on the channel or the command), or no answer at all: ask again later.
    return /NOPERM/i.test((published.reason as Error).message) ? { allowed: false, unannounced: count } : undefined
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat)
    this.subscriber?.disconnect()
    await this.redis.quit().catch(() => this.redis.disconnect())
  }
}
