import { createHash } from 'node:crypto'

/**
 * Redis key names. Every key of one session shares the hash tag `{sid}`, so the Lua scripts that touch a
 * session and its denylist entries run on one Redis Cluster slot.
 */
export class StoreKeys {
  constructor(private readonly prefix: string) {}

  session(sid: string): string {
    return `${this.prefix}{${sid}}:s`
  }

  /** The grace records of the generations rotated less than the reuse grace ago (a hash by generation). */
  successor(sid: string): string {
    return `${this.prefix}{${sid}}:g`
  }

  deniedJti(sid: string, jti: string): string {
    return `${this.prefix}{${sid}}:d:${jti}`
  }

  /** The families of one subject, scored by their absolute expiry (for logout-all). */
  subjectSessions(sub: string): string {
    return `${this.prefix}{u:${digest(sub)}}:sids`
  }

  rateLimit(key: string): string {
    return `${this.prefix}{rl:${digest(key)}}`
  }

  revocationChannel(): string {
    return `${this.prefix}revocations`
  }

  /** How many revocations were applied but not announced (a PUBLISH the server refused), by any instance. */
  unannouncedRevocations(): string {
    return `${this.prefix}revocations:unannounced`
  }
}

/** A short, brace-free stand-in for user-chosen text inside a key name. */
function digest(text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 22)
}
