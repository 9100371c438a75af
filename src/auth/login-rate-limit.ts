import type { GatewayConfig } from '../config/schema.js'
import { GatewayError } from '../errors.js'
import type { SessionStore } from '../session-store/session-store.js'

/**
 * Failed logins are counted per client IP and per username in the session store, so that every instance
 * sharing a Redis shares the limit. A client at the limit gets 429 with Retry-After until the window ends.
 *
 * An attempt is counted before its password is checked and taken back if it succeeds: checking first and
 * counting after would let many attempts sent at once all pass the check before any of them is counted.
 */
export class LoginRateLimit {
  constructor(
    private readonly store: SessionStore,
    private readonly limit: GatewayConfig['login']['rateLimit'],
  ) {}

  private keys(ip: string, username: string): [string, string] {
    return [`login:ip:${ip}`, `login:user:${username.normalize('NFC').toLowerCase()}`]
  }

  /**
   * Counts an attempt; throws 429 when it is over the limit of the IP or of the username. A refused attempt is taken
   * back from both counts: its password was never checked, so it is no failed login. (Counted, a client blocked by
   * its IP would go on adding to the counts of the usernames it tries, and lock them out for everyone else.)
   */
  async attempt(ip: string, username: string): Promise<void> {
    const keys = this.keys(ip, username)
    const states = await this.store.rateLimitHit(keys, this.limit.window)
    const blocked = states.filter((s) => s.count > this.limit.max)
    if (blocked.length > 0) {
      await Promise.all(keys.map((k) => this.store.rateLimitUndo(k))).catch(() => {}) // still 429 if the store failed
      const waitMs = Math.max(...blocked.map((s) => s.retryAfterMs))
      throw new GatewayError('rate_limited', undefined, { 'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))) })
    }
  }

  /** A good login clears the username's count and takes its attempt back from the IP's. */
  async succeeded(ip: string, username: string): Promise<void> {
    const [ipKey, userKey] = this.keys(ip, username)
    await Promise.all([this.store.rateLimitReset(userKey), this.store.rateLimitUndo(ipKey)])
  }

  /** The credentials could not be checked (the login service failed): the attempt was not a failure. */
  async undecided(ip: string, username: string): Promise<void> {
    await Promise.all(this.keys(ip, username).map((k) => this.store.rateLimitUndo(k)))
  }
}
