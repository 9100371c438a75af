import type { GatewayConfig } from '../config/schema.js'
import { GatewayError } from '../errors.js'
import type { SessionStore } from '../session-store/session-store.js'

/**
 * Failed logins are counted per client IP and per username in the session store, so that every instance
 * sharing a Redis shares the limit. A client at the limit gets 429 with Retry-After until the window ends.
 */
export class LoginRateLimit {
  constructor(
    private readonly store: SessionStore,
    private readonly limit: GatewayConfig['login']['rateLimit'],
  ) {}

  private keys(ip: string, username: string): [string, string] {
    return [`login:ip:${ip}`, `login:user:${username.normalize('NFC').toLowerCase()}`]
  }

  /** Throws 429 when the IP or the username is at its limit. */
  async check(ip: string, username: string): Promise<void> {
    const states = await this.store.rateLimitPeek(this.keys(ip, username))
    const blocked = states.filter((s) => s.count >= this.limit.max)
    if (blocked.length > 0) {
      const waitMs = Math.max(...blocked.map((s) => s.retryAfterMs))
      throw new GatewayError('rate_limited', undefined, { 'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))) })
    }
  }

  async failed(ip: string, username: string): Promise<void> {
    await this.store.rateLimitHit(this.keys(ip, username), this.limit.window)
  }

  /** A good login clears the username's count (not the IP's). */
  async succeeded(ip: string, username: string): Promise<void> {
    await this.store.rateLimitReset(this.keys(ip, username)[1])
  }
}
