import type { FastifyRequest } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'
import { GatewayError, RevocationUnannouncedError, StoreUnavailableError } from '../errors.js'
import { SessionEndedError, SessionStateRefusedError, type SessionTokens, type Sessions } from '../sessions/sessions.js'
import { TokenRefusedError, type VerifiedAccessToken } from '../tokens/access-token-verifier.js'
import { cookieValues, type CookieNames } from './cookies.js'

/** How a request presents itself: the gateway's cookies (browser), a Bearer token (API client) or nothing. */
export type Credentials =
  | {
      mode: 'cookie'
      access: string | undefined
      /** Further access cookies of the same name (a planted one beside ours), tried in turn after `access`. */
      otherAccess?: string[]
      refresh: string | undefined
    }
  | { mode: 'bearer'; token: string; otherScheme?: true }
  | { mode: 'none' }

export interface Authenticated {
  mode: 'cookie' | 'bearer'
  token: VerifiedAccessToken
  /** Set when the gateway rotated the session on the way: the client must receive new cookies. */
  rotated: SessionTokens | undefined
}

const BEARER = /^Bearer +([^ ]+) *$/i
/** An Authorization header of another scheme (Basic, Digest...): no bearer token at all. */
const OTHER_SCHEME = /^(?!bearer(?: |$))[!#$%&'*+.^_`|~0-9A-Za-z-]+(?: |$)/i

/**
 * The gateway's cookies win over a client Authorization header: the upstream only ever sees our token. Where a
 * cookie name comes twice (one planted from a sibling subdomain beside ours), the refresh token is the first this
 * gateway issued (its MAC checks out: no store call), and every access token is tried in turn, so that a planted
 * cookie can neither end a session's cookies nor make each request refresh.
 */
export function credentialsOf(
  request: Pick<FastifyRequest, 'cookies' | 'headers'>,
  names: CookieNames,
  sessions: Pick<Sessions, 'sidOfRefreshToken'>,
): Credentials {
  const [access, ...otherAccess] = cookieValues(request, names.access).filter((value) => value !== '')
  const refreshes = cookieValues(request, names.refresh).filter((value) => value !== '')
  const refresh = refreshes.length > 1 ? (refreshes.find((token) => sessions.sidOfRefreshToken(token) !== undefined) ?? refreshes[0]) : refreshes[0]
  if (access !== undefined || refresh !== undefined) {
    return otherAccess.length > 0 ? { mode: 'cookie', access, otherAccess, refresh } : { mode: 'cookie', access, refresh }
  }
  return headerCredentials(request)
}

/**
 * The Authorization header alone, cookies left aside: what a request from a page of another origin may be acted on
 * with at logout, since a browser adds cookies to a forged request by itself but never an Authorization header.
 */
export function headerCredentials(request: Pick<FastifyRequest, 'headers'>): Credentials {
  const header = request.headers.authorization
  if (typeof header === 'string') {
    const m = BEARER.exec(header)
    if (m) return { mode: 'bearer', token: m[1] as string }
    return OTHER_SCHEME.test(header) ? { mode: 'bearer', token: '', otherScheme: true } : { mode: 'bearer', token: '' }
  }
  return { mode: 'none' }
}

export function unauthenticated(mode: Credentials['mode'], message?: string): GatewayError {
  if (mode === 'bearer') {
    return new GatewayError('unauthenticated', message ?? 'The access token is not valid.', {
      'www-authenticate': 'Bearer error="invalid_token"',
    })
  }
  return new GatewayError('unauthenticated', message, mode === 'none' ? { 'www-authenticate': 'Bearer' } : {})
}

/**
 * Authenticates a request. Cookie mode refreshes transparently when the access token is missing, expired or
 * within `refreshAhead` of its expiry and the refresh cookie is good. Throws GatewayError (401) or
 * StoreUnavailableError; returns undefined only when there are no credentials at all.
 */
export async function authenticate(
  credentials: Credentials,
  sessions: Sessions,
  tokens: GatewayConfig['tokens'],
  now = Date.now(),
): Promise<Authenticated | undefined> {
  if (credentials.mode === 'none') return undefined
  if (credentials.mode === 'bearer') {
    // Another scheme (Basic...): the same refusal as any bad Bearer (the contract's challenge), saying what to send.
    if (credentials.otherScheme) throw unauthenticated('bearer', 'Send the access token as Authorization: Bearer <token>.')
    try {
      return { mode: 'bearer', token: await sessions.authenticate(credentials.token), rotated: undefined }
    } catch (err) {
      throw asAuthFailure(err, 'bearer')
    }
  }
  let current: VerifiedAccessToken | undefined
  if (credentials.access !== undefined) {
    // Each copy of the cookie in turn (one planted beside ours, say), refused without a hold each. The request's
    // answer is held once, and the refusals counted after it, if any told of a revocation: whatever comes next (a
    // later copy accepted, a refresh, a 503) would tell of it as well.
    const refusals: SessionStateRefusedError['state'][] = []
    try {
      for (const candidate of [credentials.access, ...(credentials.otherAccess ?? [])]) {
        try {
          current = await sessions.authenticate(candidate, { holdRefusal: false })
          break
        } catch (err) {
          if (!(err instanceof TokenRefusedError)) throw err
          if (err instanceof SessionStateRefusedError) refusals.push(err.state)
        }
      }
    } finally {
      if (refusals.length > 0) await sessions.refusedByState(refusals)
    }
  }
  // A refused access token (expired, revoked, of another key...) leaves the refresh cookie to decide: of the same
  // ended family it fails like the token; of a live session (cookies of two sessions, the access one logged out)
  // it refreshes instead of clearing a good session's cookies.
  // A token cut short at its session's absolute end is not refreshed early: no refresh could outlive it, and near
  // that end every request would rotate the family. Once expired it is refreshed like any other.
  const fresh = current !== undefined && (current.expiresAt - now > tokens.refreshAhead || (current.endsWithSession === true && current.expiresAt > now))
  if (fresh || credentials.refresh === undefined) {
    if (current) return { mode: 'cookie', token: current, rotated: undefined }
    throw unauthenticated('cookie')
  }
  const early = current !== undefined && current.sid === sessions.sidOfRefreshToken(credentials.refresh)
  try {
    // With a still-valid access token of the same session the refresh is early: when the refresh cookie is already
    // behind its family beyond the grace (a rotation was made for another request, typically a slow one whose
    // response with the new cookies has not reached the client yet), the access token serves until the new cookies
    // arrive. Only for the same session: a valid access token never lets another session's rotated refresh token
    // pass without the reuse check.
    const rotated = early
      ? await sessions.refreshUnlessSuperseded(credentials.refresh, { cookies: true })
      : await sessions.refresh(credentials.refresh, { cookies: true })
    if (!rotated) return { mode: 'cookie', token: current as VerifiedAccessToken, rotated: undefined }
    return { mode: 'cookie', token: await sessions.verifier.verify(rotated.accessToken), rotated }
  } catch (err) {
    // A still-valid token stays usable when only the refresh failed: for a store outage (it passed its access check,
    // or verify-only let it through, just now), and, when the refresh cookie is another session's, for any failure of
    // that other session's but a reuse. An early refresh of the token's own session that failed otherwise says the
    // family is over (revoked as a reuse, ended by this refresh, or gone since the check: a logout elsewhere), and
    // the token with it; a reuse detected but not announced (a 503) is no mere outage either.
    const outage = err instanceof StoreUnavailableError && !(err instanceof RevocationUnannouncedError)
    const otherSessionFailed = !early && !(err instanceof GatewayError && err.code === 'refresh_token_reused')
    if (current && (outage || otherSessionFailed)) {
      return { mode: 'cookie', token: current, rotated: undefined }
    }
    throw asAuthFailure(err, 'cookie')
  }
}

function asAuthFailure(err: unknown, mode: 'cookie' | 'bearer'): unknown {
  if (err instanceof StoreUnavailableError) return err
  // Why the session ended (the users file changed under it): said, as the refresh endpoint says it.
  if (err instanceof SessionEndedError) return unauthenticated(mode, err.message)
  if (err instanceof GatewayError && err.code === 'refresh_token_reused') {
    return new GatewayError('unauthenticated', 'The session was revoked because a refresh token was reused; log in again.')
  }
  if (err instanceof TokenRefusedError || err instanceof GatewayError) return unauthenticated(mode)
  return err
}
