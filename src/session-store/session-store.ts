/**
 * The session store: one contract, two implementations (Redis for many instances, in-process for one).
 * Both are checked by the same suite in test/session-store.shared.ts.
 *
 * A session is a refresh-token family. It holds hashes of tokens only, never a raw token.
 */
export interface NewSession {
  sid: string
  sub: string
  claims: Record<string, unknown>
  /** Hash of the first refresh token (generation 0). */
  refreshHash: string
  /** Lifetimes in milliseconds from now. */
  idleTtlMs: number
  absoluteTtlMs: number
}

export interface SessionRecord {
  sid: string
  sub: string
  claims: Record<string, unknown>
  gen: number
  createdAt: number
  /** When the family dies whatever happens (epoch ms). */
  absoluteExpiresAt: number
  /** When the current refresh token dies if unused (epoch ms, never past absoluteExpiresAt). */
  idleExpiresAt: number
  /** When the current generation was issued (epoch ms). */
  rotatedAt: number
}

export interface RotateRequest {
  sid: string
  presentedHash: string
  presentedGen: number
  /** Hash and generation of the successor the caller prepared. */
  nextHash: string
  /** The successor refresh token, encrypted with a key only the presented token yields. */
  sealedSuccessor: string
  idleTtlMs: number
  graceMs: number
  /**
   * When the family has already moved past the presented generation and no grace answer applies, answer
   * `superseded` and change nothing instead of taking it for a reuse: the caller still holds a valid access token
   * and only wanted to refresh early, while a newer pair is on its way to the client.
   */
  unlessSuperseded?: boolean
}

export type RotateResult =
  | { kind: 'rotated'; session: SessionRecord }
  | { kind: 'grace'; session: SessionRecord; sealedSuccessor: string }
  /** Only with `unlessSuperseded`: a newer generation exists and the grace does not apply; nothing changed. */
  | { kind: 'superseded' }
  /** A rotated token was presented after the grace window: the family is now revoked. */
  | { kind: 'reused' }
  /** The family was revoked earlier (by a detected reuse). */
  | { kind: 'revoked' }
  | { kind: 'expired' }
  /** Not a token of this family's chain (forged or mismatched): nothing changes. */
  | { kind: 'invalid' }

/** What a verified access token's `sid` and `jti` are worth right now. */
export type AccessState = 'ok' | 'denied' | 'revoked' | 'missing'

export interface RateLimitState {
  count: number
  retryAfterMs: number
}

/** An attempt counted on one key: the key's state after it, and the window that counted it (for rateLimitUndo). */
export interface RateLimitHit extends RateLimitState {
  /** The window's end by the store's clock (epoch ms): names the window, not a time to compare with this host's. */
  window: number
}

export interface AnnouncementState {
  allowed: boolean
  /** A counter: when it moves, a revocation was applied that no subscriber heard of. */
  unannounced: number
}

export interface SessionStore {
  readonly kind: 'redis' | 'memory'
  createSession(session: NewSession): Promise<SessionRecord>
  rotate(request: RotateRequest): Promise<RotateResult>
  /**
   * Keeps the reuse grace of the rotation to generation `gen` open for at least `graceMs` more, unless the family
   * has moved on or the grace is already over (false then): the response carrying that successor is still on its
   * way to the client.
   */
  extendGrace(sid: string, gen: number, graceMs: number): Promise<boolean>
  /** The jti denylist and the family's revocation, in one round trip. */
  checkAccess(sid: string, jti: string): Promise<AccessState>
  getSession(sid: string): Promise<SessionRecord | undefined>
  /** Denies an access token until `expiresAt` (epoch ms). */
  denyAccessToken(sid: string, jti: string, expiresAt: number): Promise<void>
  /** Ends a family (logout): its refresh tokens and access tokens are refused from now on. */
  deleteSession(sid: string): Promise<boolean>
  /** Ends every family of a subject; returns the sids of those it ended (the ones still alive). */
  deleteSessionsOf(sub: string): Promise<string[]>
  rateLimitPeek(keys: string[]): Promise<RateLimitState[]>
  /** Counts one attempt on each key (a fixed window from its first hit); returns each key's state after it. */
  rateLimitHit(keys: string[], windowMs: number): Promise<RateLimitHit[]>
  /**
   * Takes back one hit (an attempt that turned out not to be a failure) from the window that counted it; nothing
   * once that window has ended, so that a late undo never gives the next window an attempt more than its limit.
   */
  rateLimitUndo(key: string, window: number): Promise<void>
  rateLimitReset(key: string): Promise<void>
  /** Resolves when the store answers; throws StoreUnavailableError otherwise. */
  ping(): Promise<void>
  /**
   * Revocations published by any instance (logout, reuse detection): `sid` or `sid:jti`.
   * Used by the optional local revocation cache.
   */
  onRevocation?(listener: (event: RevocationEvent) => void, onStatus?: (subscribed: boolean) => void): Promise<void>
  /**
   * Resolves true once every revocation published before the call has reached the onRevocation listener; false
   * when that cannot be told (no subscription, or it dropped meanwhile: ask checkAccess then). Never throws.
   */
  revocationBarrier?(): Promise<boolean>
  /**
   * Whether this client may announce revocations (a PUBLISH the server accepts, or refuses: ACL rights), and how
   * many revocations any instance applied without being able to announce them so far; undefined when there was no
   * answer (ask again later). Never throws.
   */
  announcements?(): Promise<AnnouncementState | undefined>
  close(): Promise<void>
}

export type RevocationEvent = { type: 'session'; sid: string } | { type: 'jti'; sid: string; jti: string; expiresAt: number }
