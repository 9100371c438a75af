import { LRUCache } from 'lru-cache'
import type { AccessState, SessionStore } from '../session-store/session-store.js'

/**
 * The optional local revocation cache (`redis.revocationCache: true`).
 *
 * The first time an instance sees a session it asks the store, as the strict mode does on every request;
 * after that it answers from memory, and every revocation (logout, logout-all, reuse detection, jti denial)
 * published by any instance reaches it through Redis pub/sub. While the subscription is down the cache is
 * emptied and not filled, so every request goes back to the store: it never answers from stale knowledge.
 */
export class RevocationCache {
  private readonly known = new LRUCache<string, AccessState>({ max: 200_000 })
  private readonly deniedJtis = new LRUCache<string, true>({ max: 200_000, ttlAutopurge: false })
  private subscribed = false

  constructor(private readonly store: SessionStore) {}

  async start(): Promise<void> {
    if (!this.store.onRevocation) throw new Error('this session store cannot publish revocations')
    await this.store.onRevocation((event) => {
      if (event.type === 'session') this.revokeSession(event.sid)
      else this.denyJti(event.sid, event.jti, event.expiresAt)
    })
    this.subscribed = true
  }

  /** Call when the subscription is lost: forget everything, and ask the store until it is back. */
  setSubscribed(up: boolean): void {
    if (!up) {
      this.known.clear()
      this.deniedJtis.clear()
    }
    this.subscribed = up
  }

  revokeSession(sid: string): void {
    this.known.set(sid, 'revoked')
  }

  denyJti(sid: string, jti: string, expiresAt: number): void {
    const ttl = expiresAt - Date.now()
    if (ttl > 0) this.deniedJtis.set(`${sid}:${jti}`, true, { ttl })
  }

  async state(sid: string, jti: string, expiresAt: number): Promise<AccessState> {
    if (this.deniedJtis.has(`${sid}:${jti}`)) return 'denied'
    const known = this.subscribed ? this.known.get(sid) : undefined
    if (known === 'revoked' || known === 'missing') return known
    if (known === 'ok') return 'ok'
    const fresh = await this.store.checkAccess(sid, jti)
    if (this.subscribed) {
      if (fresh === 'denied') this.denyJti(sid, jti, expiresAt)
      else this.known.set(sid, fresh)
    }
    return fresh
  }
}
