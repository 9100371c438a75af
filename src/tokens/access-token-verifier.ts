import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose'
import { boundedCache } from '../bounded-cache.js'
import type { GatewayConfig } from '../config/schema.js'
import { ACCESS_TOKEN_TYPE } from './access-token.js'
import type { KeyRing } from './keys.js'

export interface VerifiedAccessToken {
  token: string
  sub: string
  sid: string
  jti: string
  /** Epoch milliseconds. */
  expiresAt: number
  payload: JWTPayload
  /**
   * Set on a token this instance minted with its exp cut short at its session's absolute end: no refresh can give
   * a longer one, so it is not refreshed early (request-auth). Unknown (unset) for tokens verified from their text.
   */
  endsWithSession?: true
}

/** Why a token was refused; never shown to clients in detail (they get 401), logged at debug level. */
export class TokenRefusedError extends Error {
  readonly code = 'token_refused'
  constructor(readonly reason: string) {
    super(`access token refused: ${reason}`)
    this.name = 'TokenRefusedError'
  }
}

/** How often, at most, expired tokens are swept out of the cache. */
const PURGE_EVERY_MS = 10_000

/**
 * The verified-token cache is looked up by the last characters of the token (its signature's, 144 bits) and an
 * entry is returned only for the identical token string: a request's token is a new string every time, and hashing
 * the whole of it for the lookup (~250 characters with EdDSA, more with claims) cost ~0.5 µs per request.
 */
const KEY_CHARS = 24
function cacheKey(token: string): string {
  return token.slice(-KEY_CHARS)
}

/** Tokens are small; anything larger is refused before any parsing. */
export const MAX_TOKEN_LENGTH = 8192
const JWS_COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const FORBIDDEN_HEADERS = ['jku', 'x5u', 'jwk', 'x5c', 'crit', 'b64', 'zip', 'enc'] as const

/**
 * Verifies access tokens: the configured algorithm only, a known `kid`, `typ: at+jwt`, no key-carrying or
 * `crit` headers, then signature, `iss`, `aud`, `exp`, `nbf` (with clockTolerance) and the required claims.
 * A verified token is cached (answered only for the identical token string, never past its `exp`) so its
 * signature is checked once per instance; a new verifier, with an empty cache, is made on every key reload.
 */
export class AccessTokenVerifier {
  private readonly cache = boundedCache<string, VerifiedAccessToken>(50_000)
  private readonly toleranceMs: number
  private lastPurge = Date.now()

  constructor(
    private readonly keys: KeyRing,
    private readonly tokens: GatewayConfig['tokens'],
  ) {
    this.toleranceMs = tokens.clockTolerance
  }

  /** The token if it was verified before and has not expired since; undefined means: call verify(). */
  cached(token: string, now = Date.now()): VerifiedAccessToken | undefined {
    const cached = this.lookup(token)
    return cached !== undefined && cached.expiresAt + this.toleranceMs > now ? cached : undefined
  }

  /** Refuses or returns the token; `allowExpired` serves logout, which must deny a just-expired token too. */
  async verify(token: string, now = Date.now()): Promise<VerifiedAccessToken> {
    const cached = this.lookup(token)
    if (cached) {
      if (cached.expiresAt + this.toleranceMs <= now) {
        this.cache.delete(cacheKey(token))
        throw new TokenRefusedError('expired')
      }
      return cached
    }
    const verified = await this.verifyUncached(token, now)
    this.keep(verified, now)
    return verified
  }

  /** How many verified tokens are held (stale ones are dropped within PURGE_EVERY_MS of their expiry). */
  get size(): number {
    return this.cache.size
  }

  /**
   * Held until its expiry (+ clockTolerance) at most: an expired token is refused anyway, and a busy gateway would
   * otherwise fill the cache with them (every refresh adds one; ~1.2 KB each with a few claims, measured: 50,000
   * are ~60 MB). Stale entries are swept now and then, on a write, so there is no timer to stop.
   */
  private keep(verified: VerifiedAccessToken, now: number): void {
    const ttl = verified.expiresAt + this.toleranceMs - now
    if (ttl <= 0) return
    this.cache.set(cacheKey(verified.token), verified, { ttl })
    if (now - this.lastPurge >= PURGE_EVERY_MS) {
      this.lastPurge = now
      this.cache.purgeStale()
    }
  }

  /**
   * A token this instance has just signed (login, refresh) is known good: it goes into the cache as if verified,
   * so that neither the refresh that made it nor the client's next request pays for a signature check.
   */
  remember(verified: VerifiedAccessToken, now = Date.now()): void {
    // One that verify() would refuse (claims too large) is not remembered: every instance must refuse it alike.
    if (verified.token.length <= MAX_TOKEN_LENGTH) this.keep(verified, now)
  }

  /** The entry of exactly this token: one verified before whose key merely ends alike is not it. */
  private lookup(token: string): VerifiedAccessToken | undefined {
    const cached = this.cache.get(cacheKey(token))
    return cached !== undefined && cached.token === token ? cached : undefined
  }

  private async verifyUncached(token: string, now: number): Promise<VerifiedAccessToken> {
    if (token.length > MAX_TOKEN_LENGTH) throw new TokenRefusedError('too large')
    if (!JWS_COMPACT.test(token)) throw new TokenRefusedError('not a compact JWS (three base64url parts)')
    let header: ReturnType<typeof decodeProtectedHeader>
    try {
      header = decodeProtectedHeader(token)
    } catch {
      throw new TokenRefusedError('malformed header')
    }
    if (header.alg !== this.tokens.algorithm) throw new TokenRefusedError(`algorithm ${String(header.alg)} not allowed`)
    if (typeof header.typ !== 'string' || header.typ.toLowerCase().replace(/^application\//, '') !== ACCESS_TOKEN_TYPE) {
      throw new TokenRefusedError('not an access token (typ)')
    }
    for (const name of FORBIDDEN_HEADERS) if (name in header) throw new TokenRefusedError(`header ${name} not allowed`)
    const key = typeof header.kid === 'string' ? this.keys.byKid.get(header.kid) : undefined
    if (!key) throw new TokenRefusedError('unknown kid')
    // An expired token is refused whatever its signature says, so the signature is not checked (~150 µs with
    // jose's WebCrypto): every transparent refresh of a browser whose access token has expired presents one.
    if (expiredBefore(token, now - this.toleranceMs)) throw new TokenRefusedError('expired')
    let payload: JWTPayload
    try {
      ;({ payload } = await jwtVerify(token, key.publicKey, {
        algorithms: [this.tokens.algorithm],
        issuer: this.tokens.issuer,
        audience: this.tokens.audience,
        clockTolerance: this.toleranceMs / 1000,
        typ: ACCESS_TOKEN_TYPE,
        requiredClaims: ['iss', 'aud', 'sub', 'iat', 'exp', 'jti', 'sid'],
        currentDate: new Date(now),
      }))
    } catch (err) {
      if (err instanceof joseErrors.JOSEError) throw new TokenRefusedError(err.code)
      throw new TokenRefusedError('unverifiable')
    }
    const { sub, sid, jti, exp } = payload
    if (typeof sub !== 'string' || typeof sid !== 'string' || typeof jti !== 'string' || typeof exp !== 'number') {
      throw new TokenRefusedError('claims of the wrong type')
    }
    // An empty jti could be denied by no logout, an empty sid names no session: as good as missing.
    if (sub === '' || sid === '' || jti === '') throw new TokenRefusedError('empty claims')
    return { token, sub, sid, jti, expiresAt: exp * 1000, payload }
  }
}

/** Whether the token's `exp` (read without verifying it) is at or before `moment` (epoch ms). */
function expiredBefore(token: string, moment: number): boolean {
  try {
    const { exp } = decodeJwt(token)
    return typeof exp === 'number' && exp * 1000 <= moment
  } catch {
    return false // jwtVerify says what is wrong with it
  }
}
