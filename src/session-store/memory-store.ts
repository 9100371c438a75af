import type {
  AccessState,
  NewSession,
  RateLimitHit,
  RateLimitState,
  RevocationEvent,
  RotateRequest,
  RotateResult,
  SessionRecord,
  SessionStore,
} from './session-store.js'

/** How many of the last rotated generations keep a grace record (as in rotate_refresh.lua). */
const GRACE_RECORDS = 4

/** What a rotated generation leaves for its reuse grace: its hash, its sealed successor, when the grace ends. */
interface GraceRecord {
  hash: string
  sealedSuccessor: string
  endsAt: number
}

interface StoredSession extends SessionRecord {
  current: string | undefined
  /** By rotated generation, while its grace lasts. */
  graces: Map<number, GraceRecord>
  revoked: boolean
}

/**
 * The in-process store: the same contract as Redis, for one instance (demo, tests, small deployments).
 * Everything lives in this process and dies with it.
 */
export class MemorySessionStore implements SessionStore {
  readonly kind = 'memory'
  private readonly sessions = new Map<string, StoredSession>()
  private readonly denied = new Map<string, number>()
  private readonly bySubject = new Map<string, Set<string>>()
  private readonly counters = new Map<string, { count: number; resetAt: number }>()
  private readonly listeners: ((event: RevocationEvent) => void)[] = []
  private readonly sweeper: NodeJS.Timeout

  constructor(private readonly clock: () => number = Date.now) {
    this.sweeper = setInterval(() => this.sweep(), 60_000)
    this.sweeper.unref()
  }

  private live(sid: string): StoredSession | undefined {
    const s = this.sessions.get(sid)
    if (s && this.clock() >= s.idleExpiresAt) {
      this.sessions.delete(sid)
      return undefined
    }
    return s
  }

  async createSession(n: NewSession): Promise<SessionRecord> {
    const now = this.clock()
    const absoluteExpiresAt = now + n.absoluteTtlMs
    const s: StoredSession = {
      sid: n.sid, sub: n.sub, claims: structuredClone(n.claims), gen: 0, createdAt: now, rotatedAt: now,
      absoluteExpiresAt, idleExpiresAt: Math.min(now + n.idleTtlMs, absoluteExpiresAt),
      current: n.refreshHash, graces: new Map(), revoked: false,
    }
    this.sessions.set(n.sid, s)
    let sids = this.bySubject.get(n.sub)
    if (!sids) this.bySubject.set(n.sub, (sids = new Set()))
    sids.add(n.sid)
    return publicRecord(s)
  }

  async rotate(r: RotateRequest): Promise<RotateResult> {
    const s = this.live(r.sid)
    if (!s) return { kind: 'expired' }
    if (s.revoked) return { kind: 'revoked' }
    const now = this.clock()
    if (now >= s.absoluteExpiresAt) {
      this.sessions.delete(r.sid)
      return { kind: 'expired' }
    }
    if (r.presentedGen === s.gen && r.presentedHash === s.current) {
      if (r.graceMs > 0) {
        s.graces.set(s.gen, { hash: r.presentedHash, sealedSuccessor: r.sealedSuccessor, endsAt: now + r.graceMs })
        s.graces.delete(s.gen - GRACE_RECORDS)
      }
      s.current = r.nextHash
      s.gen += 1
      s.rotatedAt = now
      s.idleExpiresAt = Math.min(now + r.idleTtlMs, s.absoluteExpiresAt)
      return { kind: 'rotated', session: publicRecord(s) }
    }
    // A token rotated less than the grace ago, whichever generation: the successor it got then.
    const grace = r.presentedGen < s.gen ? s.graces.get(r.presentedGen) : undefined
    if (grace && grace.hash === r.presentedHash && now < grace.endsAt) {
      return { kind: 'grace', session: { ...publicRecord(s), gen: r.presentedGen + 1 }, sealedSuccessor: grace.sealedSuccessor }
    }
    if (r.unlessSuperseded && r.presentedGen < s.gen) return { kind: 'superseded' }
    if (r.presentedGen < s.gen) {
      s.revoked = true
      s.current = undefined
      s.graces.clear()
      this.emit({ type: 'session', sid: r.sid })
      return { kind: 'reused' }
    }
    return { kind: 'invalid' }
  }

  async extendGrace(sid: string, gen: number, graceMs: number): Promise<boolean> {
    const s = this.live(sid)
    const now = this.clock()
    const grace = s?.graces.get(gen - 1)
    if (!s || s.revoked || s.gen !== gen || !grace || now >= grace.endsAt) return false
    grace.endsAt = Math.max(grace.endsAt, now + graceMs)
    return true
  }

  async checkAccess(sid: string, jti: string): Promise<AccessState> {
    const deniedUntil = this.denied.get(`${sid}:${jti}`)
    if (deniedUntil !== undefined && deniedUntil > this.clock()) return 'denied'
    const s = this.live(sid)
    if (!s) return 'missing'
    return s.revoked ? 'revoked' : 'ok'
  }

  async getSession(sid: string): Promise<SessionRecord | undefined> {
    const s = this.live(sid)
    return s && !s.revoked && s.absoluteExpiresAt > this.clock() ? publicRecord(s) : undefined
  }

  async denyAccessToken(sid: string, jti: string, expiresAt: number): Promise<void> {
    if (expiresAt <= this.clock()) return
    this.denied.set(`${sid}:${jti}`, expiresAt)
    this.emit({ type: 'jti', sid, jti, expiresAt })
  }

  async deleteSession(sid: string): Promise<boolean> {
    const existed = this.live(sid) !== undefined
    this.sessions.delete(sid)
    this.emit({ type: 'session', sid })
    return existed
  }

  async deleteSessionsOf(sub: string): Promise<string[]> {
    const ended: string[] = []
    for (const sid of this.bySubject.get(sub) ?? []) if (await this.deleteSession(sid)) ended.push(sid)
    this.bySubject.delete(sub)
    return ended
  }

  async rateLimitPeek(keys: string[]): Promise<RateLimitState[]> {
    const now = this.clock()
    return keys.map((k) => {
      const c = this.counters.get(k)
      return c && c.resetAt > now ? { count: c.count, retryAfterMs: c.resetAt - now } : { count: 0, retryAfterMs: 0 }
    })
  }

  async rateLimitHit(keys: string[], windowMs: number): Promise<RateLimitHit[]> {
    const now = this.clock()
    return keys.map((k) => {
      let c = this.counters.get(k)
      if (c && c.resetAt > now) c.count++
      else this.counters.set(k, (c = { count: 1, resetAt: now + windowMs }))
      return { count: c.count, retryAfterMs: c.resetAt - now, window: c.resetAt }
    })
  }

  async rateLimitUndo(key: string, window: number): Promise<void> {
    const c = this.counters.get(key)
    if (c && c.resetAt === window && c.resetAt > this.clock() && c.count > 0) c.count--
  }

  async rateLimitReset(key: string): Promise<void> {
    this.counters.delete(key)
  }

  async ping(): Promise<void> {}

  async onRevocation(listener: (event: RevocationEvent) => void, onStatus?: (subscribed: boolean) => void): Promise<void> {
    this.listeners.push(listener)
    onStatus?.(true)
  }

  private emit(event: RevocationEvent): void {
    for (const l of this.listeners) l(event)
  }

  private sweep(): void {
    const now = this.clock()
    for (const [sid, s] of this.sessions) if (now >= s.idleExpiresAt) this.sessions.delete(sid)
    for (const [k, until] of this.denied) if (until <= now) this.denied.delete(k)
    for (const [k, c] of this.counters) if (c.resetAt <= now) this.counters.delete(k)
    for (const [sub, sids] of this.bySubject) {
      for (const sid of sids) if (!this.sessions.has(sid)) sids.delete(sid)
      if (sids.size === 0) this.bySubject.delete(sub)
    }
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper)
  }
}

function publicRecord(s: StoredSession): SessionRecord {
  return {
    sid: s.sid, sub: s.sub, claims: s.claims, gen: s.gen, createdAt: s.createdAt, rotatedAt: s.rotatedAt,
    absoluteExpiresAt: s.absoluteExpiresAt, idleExpiresAt: s.idleExpiresAt,
  }
}
