import type { GatewayConfig } from '../config/schema.js'
import { GatewayError } from '../errors.js'
import type { RateLimitHit, SessionStore } from '../session-store/session-store.js'

/** An attempt the limit let through: what succeeded() and undecided() take back, from the windows that counted it. */
export interface LoginAttempt {
  ip: { key: string; window: number }
  user: { key: string; window: number }
}

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
  async attempt(ip: string, username: string): Promise<LoginAttempt> {
    const keys = this.keys(ip, username)
    const hits = await this.store.rateLimitHit(keys, this.limit.window)
    const blocked = hits.filter((s) => s.count > this.limit.max)
    if (blocked.length > 0) {
      // Each from the window that counted it: still 429 if the store failed.
      await Promise.all(keys.map((k, i) => this.store.rateLimitUndo(k, (hits[i] as RateLimitHit).window))).catch(() => {})
      const waitMs = Math.max(...blocked.map((s) => s.retryAfterMs))
      throw new GatewayError('rate_limited', undefined, { 'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))) })
    }
    const [ipHit, userHit] = hits as [RateLimitHit, RateLimitHit]
    return { ip: { key: keys[0], window: ipHit.window }, user: { key: keys[1], window: userHit.window } }
  }

  /** A good login clears the username's count and takes its attempt back from the IP's. */
  async succeeded(attempt: LoginAttempt): Promise<void> {
    await Promise.all([this.store.rateLimitReset(attempt.user.key), this.store.rateLimitUndo(attempt.ip.key, attempt.ip.window)])
  }

  /** The credentials could not be checked (the login service failed): the attempt was not a failure. */
  async undecided(attempt: LoginAttempt): Promise<void> {
    await Promise.all([attempt.ip, attempt.user].map(({ key, window }) => this.store.rateLimitUndo(key, window)))
  }
}
