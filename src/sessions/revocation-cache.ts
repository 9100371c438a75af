import { boundedCache } from '../bounded-cache.js'
import type { AccessState, SessionStore } from '../session-store/session-store.js'

/**
 * The optional local revocation cache (`redis.revocationCache: true`).
 *
 * The first time an instance sees a session it asks the store, as the strict mode does on every request;
 * after that it answers from memory, and every revocation (logout, logout-all, reuse detection, jti denial)
 * published by any instance reaches it through Redis pub/sub. While the subscription is down (or Redis stops
 * answering its heartbeat, a frozen server) the cache is emptied and not filled, so every request goes back to
 * the store: it never answers from stale knowledge for longer than the heartbeat's bound.
 *
 * Trade-off: a revocation reaches other instances after the pub/sub delivery delay (measured in
 * test/revocation-cache.test.ts) instead of at once; a session that merely expires in the store (idle or
 * absolute expiry) keeps being accepted here until its access token expires (at most accessTtl).
 */
export class RevocationCache {
  private readonly knownSessions = boundedCache<string, AccessState>(200_000)
  private readonly deniedJtis = boundedCache<string, true>(200_000)
  private subscribed = false
  /** Bumped whenever the subscription drops, so that answers fetched before a drop are not cached after it. */
  private epoch = 0
  private onFirstSubscription: (() => void) | undefined

  constructor(private readonly store: SessionStore) {}

  /**
   * Subscribes, waiting up to `waitMs` for the subscription: until it is up (Redis away at start, say) every request
   * asks the store, as in strict mode; it never fails the start.
   */
  async start(waitMs = 3000): Promise<void> {
    if (!this.store.onRevocation) throw new Error('this session store cannot publish revocations')
    const up = new Promise<void>((resolve) => (this.onFirstSubscription = resolve))
    await this.store.onRevocation(
      (event) => {
        if (event.type === 'session') this.revokeSession(event.sid)
        else this.denyJti(event.sid, event.jti, event.expiresAt)
      },
      (up) => this.setSubscribed(up),
    )
    let timer: NodeJS.Timeout | undefined
    await Promise.race([up, new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))])
    clearTimeout(timer)
    this.onFirstSubscription = undefined
  }

  /** Down: forget everything and ask the store until the subscription is back. */
  setSubscribed(up: boolean): void {
    if (!up) {
      this.epoch++
      this.knownSessions.clear()
      this.deniedJtis.clear()
    }
    this.subscribed = up
    if (up) this.onFirstSubscription?.()
  }

  get isSubscribed(): boolean {
    return this.subscribed
  }

  revokeSession(sid: string): void {
    this.knownSessions.set(sid, 'revoked')
  }

  denyJti(sid: string, jti: string, expiresAt: number): void {
    const ttl = expiresAt - Date.now()
    if (ttl > 0) this.deniedJtis.set(`${sid}:${jti}`, true, { ttl })
  }

  /** What is known without asking the store; undefined when the store must be asked (state()). */
  known(sid: string, jti: string): AccessState | undefined {
    if (this.deniedJtis.size > 0 && this.deniedJtis.has(`${sid}:${jti}`)) return 'denied'
    return this.subscribed ? this.knownSessions.get(sid) : undefined
  }

  async state(sid: string, jti: string, expiresAt: number): Promise<AccessState> {
    const known = this.known(sid, jti)
    if (known !== undefined) return known
    const epoch = this.epoch
    const fresh = await this.store.checkAccess(sid, jti)
    // Cache only what is still true: not across a subscription drop, and never over a revocation that
    // arrived while the store was being asked.
    if (this.subscribed && epoch === this.epoch) {
      if (fresh === 'denied') this.denyJti(sid, jti, expiresAt)
      else if (!this.knownSessions.has(sid)) this.knownSessions.set(sid, fresh)
    }
    return fresh
  }
}
