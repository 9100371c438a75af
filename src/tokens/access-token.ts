import { createHash } from 'node:crypto'
import { SignJWT, type JWTPayload } from 'jose'
import type { GatewayConfig } from '../config/schema.js'
import type { KeyRing } from './keys.js'
import { randomBase64url } from './random.js'

export const ACCESS_TOKEN_TYPE = 'at+jwt'

export interface IssuedAccessToken {
  token: string
  jti: string
  /** Epoch milliseconds (whole seconds, as in the token). */
  expiresAt: number
  /** The claims set that was signed. */
  payload: JWTPayload
  /** Whether exp was cut short by `notAfter` (the session's end). */
  capped: boolean
}

export interface AccessTokenSubject {
  sub: string
  sid: string
  claims: Record<string, unknown>
}

/** Signs RFC 9068 access tokens with the first key of the ring. */
export class AccessTokenIssuer {
  constructor(
    private readonly keys: KeyRing,
    private readonly tokens: GatewayConfig['tokens'],
  ) {}

  /**
   * `issuedAt` and `jti` may be fixed by the caller so that the same rotation always yields the same token
   * (the reuse-grace answer repeats the successor pair).
   */
  async issue(
    subject: AccessTokenSubject,
    issuedAt = Date.now(),
    jti = randomBase64url(16),
    /** The session's end (epoch ms): the token does not outlive its second. */
    notAfter = Infinity,
  ): Promise<IssuedAccessToken> {
    const iat = Math.floor(issuedAt / 1000)
    const ttl = this.tokens.accessTtl
    // exp - iat is the configured lifetime, as any verifier reads it; iat is floored, so the token lives up to a second
    // less. Only a lifetime of a second or two could then leave a token (almost) expired at birth: that one is
    // rounded up from the real issue time instead.
    let exp = iat + Math.ceil(ttl / 1000)
    if (exp * 1000 - issuedAt < ttl / 2) exp = Math.ceil((issuedAt + ttl) / 1000)
    // A token of a session that ends sooner ends with it, in the second the session ends (rounded up, so that a token
    // is never minted with less than what is left of its session).
    const cappedAt = Math.ceil(notAfter / 1000)
    const capped = cappedAt < exp
    if (capped) exp = cappedAt
    const key = this.keys.signing
    const payload: JWTPayload = {
      ...subject.claims, sid: subject.sid,
      iss: this.tokens.issuer, aud: this.tokens.audience, sub: subject.sub, iat, nbf: iat, exp, jti,
    }
    const token = await new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: ACCESS_TOKEN_TYPE }).sign(key.privateKey)
    // The payload as it decodes from the token (JSON: no Infinity/NaN, no shared objects), as verify() would give it.
    return { token, jti, expiresAt: exp * 1000, payload: JSON.parse(JSON.stringify(payload)) as JWTPayload, capped }
  }
}

/** The jti of the access token that accompanies a refresh token: fixed, so grace answers repeat it. */
export function jtiForRefreshToken(refreshToken: string): string {
  return createHash('sha256').update(`jti:${refreshToken}`).digest().subarray(0, 16).toString('base64url')
}
