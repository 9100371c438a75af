import { MAX_COOKIE_BYTES, accessCookieBytes } from '../auth/cookies.js'
import type { GatewayConfig } from '../config/schema.js'
import { GatewayError, RevocationUnannouncedError, StoreUnavailableError } from '../errors.js'
import type { AccessState, SessionRecord, SessionStore } from '../session-store/session-store.js'
import { AccessTokenIssuer, jtiForRefreshToken } from '../tokens/access-token.js'
import { AccessTokenVerifier, MAX_TOKEN_LENGTH, TokenRefusedError, type VerifiedAccessToken } from '../tokens/access-token-verifier.js'
import type { KeyRing } from '../tokens/keys.js'
import {
  hashRefreshToken,
  newSessionId,
  openSuccessor,
  RefreshTokens,
  sealSuccessor,
} from '../tokens/refresh-token.js'
import { REVOCATION_HOLD_MS, waitMonotonic, type RevocationCache } from './revocation-cache.js'

/**
 * An access token refused by its session's state (its jti denied, its family revoked or gone), not by the token itself:
 * such a refusal may tell of a revocation, so its answer is held (see Sessions.revealingRevocation).
 */
export class SessionStateRefusedError extends TokenRefusedError {
  constructor(readonly state: Exclude<AccessState, 'ok'>) {
    super(state)
    this.name = 'SessionStateRefusedError'
  }
}

/** The shortest interval between two extensions of a held grace. */
const HOLD_MIN_INTERVAL_MS = 100

/** What a login or a refresh hands to the client. */
export interface SessionTokens {
  sid: string
  sub: string
  claims: Record<string, unknown>
  accessToken: string
  /** Epoch ms. */
  accessExpiresAt: number
  refreshToken: string
  /** The refresh token's generation in its family. */
  gen: number
  /** When the refresh token dies if unused (idle expiry, capped by the absolute one), epoch ms. */
  sessionExpiresAt: number
}

export interface SessionEvents {
  onRefresh?(outcome: 'rotated' | 'grace' | 'reused' | 'revoked' | 'expired' | 'invalid'): void
  /** A replay just detected: the family `sid` is now revoked (not called for a family revoked before). */
  onReuseDetected?(sid: string): void
  onDenied?(reason: string): void
  /** A refresh met claims too large for what carries its access token: the session `sid` was ended. */
  onOversized?(sid: string, what: 'access token' | 'access cookie', bytes: number): void
}

/** The session's claims make an access token over MAX_TOKEN_LENGTH: the session was ended. */
export class OversizedAccessTokenError extends Error {
  readonly code = 'ACCESS_TOKEN_TOO_LARGE'
  constructor(readonly bytes: number) {
    super(`The account's claims make an access token of ${bytes} bytes, over the ${MAX_TOKEN_LENGTH} the gateway accepts.`)
  }
}

/**
 * A refresh that ended its session instead of rotating it: the account is gone from the users file, or its claims
 * now make an access token too large for what carries it. Refused like an expired session, with the reason.
 */
export class SessionEndedError extends GatewayError {
  constructor(message: string) {
    super('session_expired', message)
    this.name = 'SessionEndedError'
  }
}

/** How a refreshed pair goes out: in cookies (`cookies: true`), whose size browsers limit, or in a JSON body. */
export interface RefreshOptions {
  cookies?: boolean
}

/**
 * Sessions: logins, one-time-use refresh rotation (single flight per process, reuse grace across
 * instances), reuse detection, access-token checks and logout. The only code that both mints tokens and
 * talks to the store.
 */
export class Sessions {
  readonly verifier: AccessTokenVerifier
  private readonly issuer: AccessTokenIssuer
  private readonly refreshTokens: RefreshTokens
  private readonly inFlight = new Map<string, { early: boolean; rotation: Promise<SessionTokens | undefined> }>()
  private readonly checksInFlight = new Map<string, Promise<AccessState>>()
  /**
   * How long an answer that may tell of a revocation waits before it goes out: REVOCATION_HOLD_MS with a Redis store
   * (another instance may answer from a barrier's cover, whatever this instance's own mode or connection), so that a
   * client acting on the answer finds what was revoked refused by every instance; 0 with the in-process store.
   */
  readonly revocationHoldMs: number

  constructor(
    readonly store: SessionStore,
    keys: KeyRing,
    private readonly config: GatewayConfig,
    private readonly events: SessionEvents = {},
    private readonly revocationCache?: RevocationCache,
    /**
     * With `login.provider: users`: the users file as it is now, by subject. A refresh then mints the user's
     * current claims, and a subject no longer in the file ends its session instead of refreshing it.
     */
    private readonly accounts?: ReadonlyMap<string, { claims: Record<string, unknown> }>,
  ) {
    this.verifier = new AccessTokenVerifier(keys, config.tokens)
    this.revocationHoldMs = store.kind === 'redis' ? REVOCATION_HOLD_MS : 0
    this.issuer = new AccessTokenIssuer(keys, config.tokens)
    this.refreshTokens = new RefreshTokens(keys)
  }

  /** A new family, whatever the client held before (no session fixation). */
  async start(sub: string, claims: Record<string, unknown>): Promise<SessionTokens> {
    const sid = newSessionId()
    const refreshToken = this.refreshTokens.mint(sid, 0)
    const t = this.config.tokens
    const session = await this.store.createSession({
      sid, sub, claims, refreshHash: hashRefreshToken(refreshToken), idleTtlMs: t.refreshIdleTtl, absoluteTtlMs: t.refreshAbsoluteTtl,
    })
    return this.withinLimits(await this.tokensFor(session, refreshToken))
  }

  /** A refresh that meets OversizedAccessTokenError: the session is over, the client is told why, the operator too. */
  private refusedAsExpired(sid: string): (error: unknown) => never {
    return (error) => {
      if (!(error instanceof OversizedAccessTokenError)) throw error
      this.events.onOversized?.(sid, 'access token', error.bytes)
      throw new SessionEndedError(`${error.message} Log in again once they are fewer.`)
    }
  }

  /** Rotates a refresh token. Concurrent calls with the same token in this process share one rotation (shared()). */
  async refresh(refreshToken: string, options: RefreshOptions = {}): Promise<SessionTokens> {
    // Only an early refresh (refreshUnlessSuperseded) can be answered with undefined.
    return this.fitFor(options, (await this.shared(refreshToken, false)) as SessionTokens)
  }

  /**
   * The early refresh of a client whose access token is still valid: rotates as refresh() does (within the grace,
   * the same successor pair), unless the family has already rotated past `refreshToken` beyond the grace
   * (undefined then, and nothing changes). A newer pair then exists, typically on its way to the client in a slow
   * response: cookies carrying an older one would overwrite it in the browser, and presenting the token again
   * could only be taken for a replay. Checked in the rotation's own round trip, so no rotation slips in between.
   */
  async refreshUnlessSuperseded(refreshToken: string, options: RefreshOptions = {}): Promise<SessionTokens | undefined> {
    const tokens = await this.shared(refreshToken, true)
    return tokens === undefined ? undefined : this.fitFor(options, tokens)
  }

  /**
   * A pair bound for cookies whose access cookie a browser would drop (claims grown in a reloaded users file): the
   * session ends, and the client is told why and what to do, as a cookie-mode login with such claims is. Without
   * this the browser would keep only the refresh cookie and every request would rotate the family.
   */
  private async fitFor(options: RefreshOptions, tokens: SessionTokens): Promise<SessionTokens> {
    if (!options.cookies) return tokens
    const bytes = accessCookieBytes(this.config, tokens)
    if (bytes <= MAX_COOKIE_BYTES) return tokens
    await this.endedHere(tokens.sid)
    this.events.onOversized?.(tokens.sid, 'access cookie', bytes)
    throw new SessionEndedError(
      `The account's claims now make an access cookie of ${bytes} bytes, over the ${MAX_COOKIE_BYTES} browsers keep, so the session was ended. Log in again once they are fewer, or log in with X-Session-Mode: token.`,
    )
  }

  /**
   * One rotation per token in this process at a time. An early caller takes any running rotation's answer; a plain
   * caller takes a plain one's, or an early one's unless that was "superseded" (then it rotates itself, which is
   * what it would have done alone). So parallel requests never race each other into a reuse, even with reuseGrace 0.
   */
  private shared(refreshToken: string, early: boolean): Promise<SessionTokens | undefined> {
    const running = this.inFlight.get(refreshToken)
    if (running && (early || !running.early)) return running.rotation
    const rotation = running
      ? running.rotation.then((answer) => answer ?? this.rotate(refreshToken, false))
      : this.rotate(refreshToken, early)
    const entry = { early: running ? false : early, rotation }
    this.inFlight.set(refreshToken, entry)
    void rotation.catch(() => {}).finally(() => {
      if (this.inFlight.get(refreshToken) === entry) this.inFlight.delete(refreshToken)
    })
    return rotation
  }

  private async rotate(refreshToken: string, unlessSuperseded: boolean): Promise<SessionTokens | undefined> {
    const parsed = this.refreshTokens.parse(refreshToken)
    if (!parsed) {
      this.events.onRefresh?.('invalid')
      throw new GatewayError('session_expired', 'The refresh token is not valid; log in again.')
    }
    const successor = this.refreshTokens.mint(parsed.sid, parsed.gen + 1)
    // A reuse the store detected but could not announce (RevocationUnannouncedError, a 503): this instance refuses
    // the family from memory at once all the same, as after a logout that could not be announced.
    const result = await this.store.rotate({
      sid: parsed.sid,
      presentedHash: hashRefreshToken(refreshToken),
      presentedGen: parsed.gen,
      nextHash: hashRefreshToken(successor),
      sealedSuccessor: sealSuccessor(successor, refreshToken),
      idleTtlMs: this.config.tokens.refreshIdleTtl,
      graceMs: this.config.tokens.reuseGrace,
      unlessSuperseded,
    }).catch((err: unknown) => {
      if (err instanceof RevocationUnannouncedError) this.revocationCache?.revokeSession(parsed.sid)
      throw err
    })
    if (result.kind === 'superseded') return undefined
    // This instance refuses the family's access tokens at once; its answer waits for the others (the hold).
    if (result.kind === 'reused' || result.kind === 'revoked') this.revocationCache?.revokeSession(parsed.sid)
    // Every other answer but a rotation may tell of a revocation (reused, revoked, a family ended by a logout).
    if (result.kind !== 'rotated' && result.kind !== 'grace') await this.revealingRevocation()
    // `revoked`: a token of a family ended by an earlier detection, refused again; not a new detection.
    this.events.onRefresh?.(result.kind)
    if (result.kind === 'reused') this.events.onReuseDetected?.(parsed.sid)
    switch (result.kind) {
      case 'rotated':
        return this.withinLimits(await this.tokensFor(await this.asTheUserIsNow(result.session), successor)).catch(this.refusedAsExpired(parsed.sid))
      case 'grace': {
        const earlier = openSuccessor(result.sealedSuccessor, refreshToken)
        if (earlier === undefined) throw new GatewayError('session_expired')
        return this.withinLimits(await this.tokensFor(await this.asTheUserIsNow(result.session), earlier, true)).catch(this.refusedAsExpired(parsed.sid))
      }
      case 'reused':
      case 'revoked':
        throw new GatewayError('refresh_token_reused')
      default:
        throw new GatewayError('session_expired')
    }
  }

  /**
   * The session with its user's claims as the users file says now; a user removed from the file ends the session
   * here (every instance refuses its access tokens at once, as after logout).
   */
  private async asTheUserIsNow(session: SessionRecord): Promise<SessionRecord> {
    if (!this.accounts) return session
    const account = this.accounts.get(session.sub)
    if (account) return { ...session, claims: structuredClone(account.claims) }
    await this.endedHere(session.sid)
    throw new SessionEndedError('The account is no longer known; log in again.')
  }

  /**
   * Claims that make an access token every instance refuses (a user with many roles, or grown in a reloaded users
   * file) end the session, rather than hand out a token no request can use. The one check for a login and a refresh;
   * each caller says it its own way.
   */
  private async withinLimits(tokens: SessionTokens): Promise<SessionTokens> {
    if (tokens.accessToken.length <= MAX_TOKEN_LENGTH) return tokens
    await this.endedHere(tokens.sid)
    throw new OversizedAccessTokenError(tokens.accessToken.length)
  }

  /**
   * Keeps the reuse grace of `rotated` open while the response carrying it to the client is still on its way (a
   * slow upstream, a long poll): every reuseGrace/2 until `release()` is called (when the response headers, which
   * carry the cookies, go out, or the request ends), the store keeps the successor for another reuseGrace, and once
   * more at the release, so that a full reuseGrace follows the delivery. A response released before the first tick
   * (the usual case) costs no store call. Without it, a client whose only request in flight is that slow one would
   * present its older refresh token after the grace, before the new cookies reached it, and be taken for a replay.
   * A hold never outlasts `ceilingMs` and ends when the family has moved on; if this instance dies, the grace ends
   * reuseGrace after the last extension. The timer holds nothing of the request.
   */
  holdGrace(rotated: SessionTokens, ceilingMs: number): { release(): void } {
    const grace = this.config.tokens.reuseGrace
    if (grace <= 0) return { release: () => {} }
    const { sid, gen } = rotated
    const until = Date.now() + ceilingMs
    let held = false
    let done = false
    const extend = () =>
      this.store.extendGrace(sid, gen, grace).then(
        (open) => open || stop(),
        () => {},
      )
    const stop = () => {
      done = true
      clearInterval(timer)
    }
    const timer = setInterval(() => {
      if (Date.now() >= until) return stop()
      held = true
      void extend()
    }, Math.max(HOLD_MIN_INTERVAL_MS, Math.floor(grace / 2)))
    timer.unref()
    return {
      release: () => {
        if (done) return
        stop()
        if (held) void extend()
      },
    }
  }

  /**
   * The access token of a generation is fixed (jti from the refresh token, iat from the rotation time), so a
   * reuse-grace answer repeats the same pair.
   */
  private async tokensFor(session: SessionRecord, refreshToken: string, repeat = false): Promise<SessionTokens> {
    const subject = { sub: session.sub, sid: session.sid, claims: session.claims }
    // A grace answer can come late: the request holding the rotated token may have been sent while the only
    // response carrying the successor was still on its way (a slow upstream). The rotation's access token may
    // then be (nearly) spent; the client gets a fresh one of the same session instead of an expired one,
    // which would be refused on the spot and log it out.
    const t = this.config.tokens
    const spent = repeat && session.rotatedAt + t.accessTtl - Date.now() <= t.refreshAhead
    // Not past the session's end (its second): an access token does not outlive its session (the store forgets a
    // session at its idle or absolute expiry, and a strict check answered from memory relies on the token's exp).
    const end = Math.min(session.idleExpiresAt, session.absoluteExpiresAt)
    const access = spent
      ? await this.issuer.issue(subject, undefined, undefined, end)
      : await this.issuer.issue(subject, session.rotatedAt, jtiForRefreshToken(refreshToken), end)
    // Cut short by the absolute end (not the idle end, which the next rotation moves on): it ends with the session.
    const endsWithSession = access.capped && session.absoluteExpiresAt <= session.idleExpiresAt ? { endsWithSession: true as const } : {}
    this.verifier.remember({ token: access.token, sub: session.sub, sid: session.sid, jti: access.jti, expiresAt: access.expiresAt, payload: access.payload, ...endsWithSession })
    return {
      sid: session.sid, sub: session.sub, claims: session.claims,
      accessToken: access.token, accessExpiresAt: Math.min(access.expiresAt, session.absoluteExpiresAt),
      refreshToken, gen: session.gen, sessionExpiresAt: Math.min(session.idleExpiresAt, session.absoluteExpiresAt),
    }
  }

  /**
   * A verified, not denied, not revoked access token; TokenRefusedError otherwise (SessionStateRefusedError when the
   * session's state refused it).
   * StoreUnavailableError when the store cannot say (unless onOutage is verify-only).
   */
  async authenticate(token: string, { holdRefusal = true }: { holdRefusal?: boolean } = {}): Promise<VerifiedAccessToken> {
    // Answers known in memory (a token verified before, a session the revocation cache knows) skip the awaits.
    const verified = this.verifier.cached(token) ?? (await this.verifier.verify(token))
    const state = this.revocationCache?.immediate(verified.sid, verified.jti) ?? (await this.accessState(verified))
    if (state !== 'ok') {
      // Denied, revoked, or a session gone: tells of a revocation (or of an expiry, which is no secret).
      // `holdRefusal: false`: neither held nor counted here; the caller passes the reason to refusedByState().
      if (holdRefusal) await this.refusedByState([state])
      throw new SessionStateRefusedError(state)
    }
    return verified
  }

  /**
   * Refusals by the session's state (denied, revoked, gone): one hold (revealingRevocation), then each counted
   * (`onDenied`: /metrics would tell of them too, so not before the hold).
   */
  async refusedByState(states: readonly Exclude<AccessState, 'ok'>[]): Promise<void> {
    await this.revealingRevocation()
    for (const state of states) this.events.onDenied?.(state)
  }

  private async accessState(token: VerifiedAccessToken): Promise<AccessState> {
    try {
      if (this.revocationCache) {
        const known = await this.revocationCache.check(token.sid, token.jti, token.expiresAt + this.config.tokens.clockTolerance)
        if (known !== undefined) return known
      }
      return await this.sharedCheck(token.sid, token.jti)
    } catch (err) {
      if (err instanceof StoreUnavailableError && this.config.redis.onOutage === 'verify-only') return 'ok'
      throw err
    }
  }

  /**
   * The store check of a (sid, jti), shared by the requests that need it while it is in flight: a burst of
   * parallel requests carrying one token costs one round trip. A request may share the answer of a check that
   * was sent at most one round trip before it arrived; a revocation applied before that is always seen.
   */
  private sharedCheck(sid: string, jti: string): Promise<AccessState> {
    const key = `${sid} ${jti}`
    const running = this.checksInFlight.get(key)
    if (running) return running
    const check = this.store.checkAccess(sid, jti).finally(() => this.checksInFlight.delete(key))
    this.checksInFlight.set(key, check)
    return check
  }

  /**
   * Whether the family has already rotated past `refreshToken` (one read, no change). A newer pair then exists:
   * cookies carrying the older one, sent now, would overwrite newer ones in the browser (a slow response arriving
   * after faster ones that rotated again), and presenting it again would only be refused or, after the grace,
   * taken for a replay. False when the store cannot say.
   */
  async superseded(refreshToken: string): Promise<boolean> {
    const parsed = this.refreshTokens.parse(refreshToken)
    if (!parsed) return false
    try {
      const session = await this.store.getSession(parsed.sid)
      return session !== undefined && session.gen > parsed.gen
    } catch {
      return false
    }
  }

  async session(sid: string): Promise<SessionRecord | undefined> {
    return this.store.getSession(sid)
  }

  /** The sid a refresh token names, when the gateway issued it. */
  sidOfRefreshToken(token: string): string | undefined {
    return this.refreshTokens.parse(token)?.sid
  }

  /**
   * Waits revocationHoldMs: called before every answer that may tell of a revocation (a token refused as denied,
   * revoked or of a session gone; a refresh refused as reused, revoked or of an ended family; the endpoints' logout
   * and logout-all), so that it never reaches a client while an instance could still accept what was revoked from
   * a barrier's cover. A signature, an expiry or a malformed token tells of none and is refused at once.
   */
  async revealingRevocation(): Promise<void> {
    if (this.revocationHoldMs > 0) await waitMonotonic(this.revocationHoldMs)
  }

  /** Logout: the family ends and the presented access token's jti is denied until its exp. */
  async logout(access: VerifiedAccessToken | undefined, refreshToken: string | undefined): Promise<void> {
    const sids = new Set<string>()
    if (access) sids.add(access.sid)
    const refreshSid = refreshToken === undefined ? undefined : this.sidOfRefreshToken(refreshToken)
    if (refreshSid) sids.add(refreshSid)
    // The families end first, then the jti is denied: a denied jti then always belongs to an ended family, which
    // a strict check answered from memory (per session) relies on. A failure in between leaves the token refused.
    for (const sid of sids) await this.endSession(sid)
    if (access) {
      const until = access.expiresAt + this.config.tokens.clockTolerance
      await this.revoking(this.store.denyAccessToken(access.sid, access.jti, until), () => this.revocationCache?.denyJti(access.sid, access.jti, until))
    }
  }

  /** Logout-all: every family of the subject ends (refused from this instance's memory at once, as logout's). */
  async logoutAll(sub: string): Promise<number> {
    const refuse = (sids: string[]) => sids.forEach((sid) => this.revocationCache?.revokeSession(sid))
    try {
      const ended = await this.store.deleteSessionsOf(sub)
      refuse(ended)
      return ended.length
    } catch (err) {
      if (err instanceof RevocationUnannouncedError) refuse(err.sids)
      throw err
    }
  }

  /** A session the gateway ends itself on a refresh or a login: ended, then its answer held like any revocation's. */
  private async endedHere(sid: string): Promise<void> {
    await this.endSession(sid)
    await this.revealingRevocation()
  }

  /** Ends the family `sid` in the store, refused by this instance's memory at once (see revoking()). */
  private endSession(sid: string): Promise<boolean> {
    return this.revoking(this.store.deleteSession(sid), () => this.revocationCache?.revokeSession(sid))
  }

  /**
   * Runs a revocation, then makes this instance's memory refuse what it revoked (`refuse`) without waiting for the
   * echo of its announcement: when it succeeded, and when the store applied it but could neither announce nor count
   * it (RevocationUnannouncedError: a 503, and no other instance hears of it until the retry). Any other failure
   * refuses nothing here: the revocation may not have happened, and the client is asked to retry.
   */
  private async revoking<T>(revocation: Promise<T>, refuse: () => void): Promise<T> {
    try {
      const result = await revocation
      refuse()
      return result
    } catch (err) {
      if (err instanceof RevocationUnannouncedError) refuse()
      throw err
    }
  }
}
