import type { FastifyContextConfig, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { decodeJwt } from 'jose'
import { authenticate, credentialsOf, headerCredentials, unauthenticated, type Authenticated } from '../auth/request-auth.js'
import { fromForeignPage } from '../auth/csrf.js'
import { MAX_PASSWORD_LENGTH } from '../auth/password.js'
import type { LoginAttempt } from '../auth/login-rate-limit.js'
import { MAX_COOKIE_BYTES, accessCookieBytes, carriesSessionCookies, clearedCookies, requestCookies, sessionCookies } from '../auth/cookies.js'
import { GatewayError } from '../errors.js'
import type { Metrics } from '../server/metrics.js'
import type { Runtime } from '../server/runtime.js'
import { OversizedAccessTokenError, type SessionTokens } from '../sessions/sessions.js'
import { MAX_TOKEN_LENGTH, TokenRefusedError, type VerifiedAccessToken } from '../tokens/access-token-verifier.js'
import { REGISTERED_CLAIMS } from '../tokens/registered-claims.js'
import { oneMethodRoute } from './one-method-route.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A JSON body that does not parse is taken as no body instead of a 400 (server/build-gateway.ts). */
    unreadableBodyIsNone?: boolean
    /**
     * The body can only carry a token its sender holds (refresh, logout): JSON sent as text/plain or with no
     * Content-Type is read from any origin (server/build-gateway.ts).
     */
    tokenInBody?: boolean
  }
}

const MAX_USERNAME = 256

interface Deps {
  current: () => Runtime
  metrics: Metrics
}

/** The endpoints under `login.path` (CONTRACT §3): login, refresh, logout, logout-all, session. */
export async function authEndpoints(app: FastifyInstance, { current, metrics }: Deps): Promise<void> {
  app.addHook('onSend', async (_request, reply) => {
    reply.header('cache-control', 'no-store')
  })
  const route = (
    path: string, method: 'GET' | 'POST', handler: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>, config: FastifyContextConfig = {},
  ) => oneMethodRoute(app, method, path, handler, config)

  route('/login', 'POST', async (request, reply) => {
    const rt = current()
    const body = request.body as { username?: unknown; password?: unknown } | undefined
    const { username, password } = body ?? {}
    let mode: SessionMode
    try {
      mode = sessionMode(request)
    } catch (err) {
      metrics.logins.inc({ result: 'invalid_request' })
      throw err
    }
    if (
      typeof username !== 'string' || typeof password !== 'string' || username === '' || password === '' ||
      username.length > MAX_USERNAME || password.length > MAX_PASSWORD_LENGTH
    ) {
      metrics.logins.inc({ result: 'invalid_request' })
      throw new GatewayError(
        'invalid_request',
        `Send JSON {"username": "...", "password": "..."} with Content-Type: application/json: non-empty strings, the username at most ${MAX_USERNAME} characters and the password at most ${MAX_PASSWORD_LENGTH}.`,
      )
    }
    let attempt: LoginAttempt
    try {
      attempt = await rt.rateLimit.attempt(request.ip, username)
    } catch (err) {
      metrics.logins.inc({ result: 'rate_limited' })
      throw err
    }
    let identity: Awaited<ReturnType<typeof rt.login.authenticate>>
    try {
      identity = await rt.login.authenticate(username, password, request.ip)
    } catch (err) {
      metrics.logins.inc({ result: 'error' })
      await rt.rateLimit.undecided(attempt).catch(() => {})
      throw err
    }
    if (!identity) {
      metrics.logins.inc({ result: 'invalid_credentials' })
      throw new GatewayError('invalid_credentials')
    }
    await rt.rateLimit.succeeded(attempt)
    /** A login whose claims make a session no client could use (its session ended): said, logged and counted. */
    const tooLarge = (what: string, bytes: number, message: string): GatewayError => {
      metrics.logins.inc({ result: 'error' })
      request.log.error({ sub: identity.sub, bytes }, `login refused: ${what}`)
      return new GatewayError(rt.config.login.provider === 'upstream' ? 'bad_gateway' : 'internal_error', `The login succeeded, but its claims make ${message}`)
    }
    let tokens: SessionTokens
    try {
      tokens = await rt.sessions.start(identity.sub, identity.claims)
    } catch (err) {
      if (!(err instanceof OversizedAccessTokenError)) throw err
      // Every instance refuses a token this large: the session it could never use was ended, not handed out.
      throw tooLarge('access token too large', err.bytes, `an access token of ${err.bytes} bytes, over the ${MAX_TOKEN_LENGTH} the gateway accepts: the user needs fewer or shorter claims.`)
    }
    if (mode === 'cookie') {
      // Browsers drop a cookie whose name and value pass 4,096 bytes, silently: the session would live on its
      // refresh cookie alone, rotating on every request. Said now, with the way out, and the session ended.
      const bytes = accessCookieBytes(rt.config, tokens)
      if (bytes > MAX_COOKIE_BYTES) {
        await rt.sessions.logout(undefined, tokens.refreshToken)
        throw tooLarge('access cookie too large for browsers', bytes, `an access cookie of ${bytes} bytes, over the ${MAX_COOKIE_BYTES} browsers keep: the user needs fewer or shorter claims, or the client can log in with X-Session-Mode: token.`)
      }
    }
    metrics.logins.inc({ result: 'success' })
    return sendTokens(reply, rt, tokens, mode === 'token')
  })

  route('/refresh', 'POST', async (request, reply) => {
    const rt = current()
    const body = request.body as { refreshToken?: unknown } | undefined
    // An empty one is none: the refresh cookie, if any, is used.
    const fromBody = body?.refreshToken === '' ? undefined : body?.refreshToken
    if (fromBody !== undefined && typeof fromBody !== 'string') {
      throw new GatewayError('invalid_request', 'refreshToken must be a string.')
    }
    const cookies = credentialsOf(request, rt.cookies, rt.sessions)
    const fromCookie = cookies.mode === 'cookie' ? cookies.refresh : undefined
    const token = fromBody ?? fromCookie
    const viaCookie = fromBody === undefined
    if (token === undefined || token === '') {
      throw new GatewayError('session_expired', 'No refresh token was presented; log in again.')
    }
    try {
      const tokens = await rt.sessions.refresh(token, { cookies: viaCookie })
      // A session held in HttpOnly cookies is never turned into tokens a script could read.
      return sendTokens(reply, rt, tokens, !viaCookie)
    } catch (err) {
      // A detected reuse ends the family however the token came: the cookies of that family, if the request
      // carried them, are dead too (cookies of another session are left alone).
      const reused = err instanceof GatewayError && err.code === 'refresh_token_reused'
      const cookiesOfIt = fromCookie === undefined || rt.sessions.sidOfRefreshToken(fromCookie) === rt.sessions.sidOfRefreshToken(token)
      if ((reused && cookiesOfIt) || (viaCookie && err instanceof GatewayError)) reply.header('set-cookie', clearedCookies(rt.config))
      throw err
    }
  }, { tokenInBody: true })

  route('/logout', 'POST', async (request, reply) => {
    const rt = current()
    // Sent by a page of another origin: the browser's cookies, which it adds to a forged form by itself, are neither
    // acted on nor cleared. What such a page could only hold itself (a Bearer token, a refresh token in the body: a
    // token-mode client on another origin) is logged out as from anywhere.
    const foreign = fromForeignPage(request.headers, rt.config.csrf)
    const credentials = foreign ? headerCredentials(request) : credentialsOf(request, rt.cookies, rt.sessions)
    const accessTexts =
      credentials.mode === 'cookie' ? [credentials.access, ...(credentials.otherAccess ?? [])] : credentials.mode === 'bearer' ? [credentials.token] : []
    const body = request.body as { refreshToken?: unknown } | undefined
    const refreshToken =
      typeof body?.refreshToken === 'string' && body.refreshToken !== '' ? body.refreshToken : credentials.mode === 'cookie' ? credentials.refresh : undefined
    let access: VerifiedAccessToken | undefined
    for (const text of accessTexts) if (access === undefined && text) access = await verifiedForLogout(rt, text)
    try {
      await rt.sessions.logout(access, refreshToken)
    } finally {
      // Held even when the store failed half-way (a 503): the part that was revoked may not show before the others know.
      if (access !== undefined || refreshToken !== undefined) await rt.sessions.revealingRevocation()
    }
    return foreign ? reply.code(204).send() : sendLoggedOut(reply, rt)
  }, { unreadableBodyIsNone: true, tokenInBody: true }) // logout is always 204: a body that is not JSON still leaves the cookies or the Bearer token

  route('/logout-all', 'POST', async (request, reply) => {
    const rt = current()
    // A page of another origin: only with a Bearer token (cookies, or Basic credentials a browser caches, could come
    // with a forged form: 403 csrf).
    const foreign = fromForeignPage(request.headers, rt.config.csrf)
    const bearer = headerCredentials(request)
    if (foreign && (bearer.mode !== 'bearer' || bearer.otherScheme || bearer.token === '')) throw new GatewayError('csrf')
    const auth = await authenticateOrThrow(request, reply, rt, foreign ? bearer : undefined)
    try {
      await rt.sessions.logoutAll(auth.token.sub)
      await rt.sessions.logout(auth.token, undefined)
    } finally {
      await rt.sessions.revealingRevocation() // as logout's: a 503 half-way is held too
    }
    return foreign ? reply.code(204).send() : sendLoggedOut(reply, rt)
  })

  route('/session', 'GET', async (request, reply) => {
    const rt = current()
    const auth = await authenticateOrThrow(request, reply, rt)
    // Set before the store is read again: a rotation's cookies must reach the browser whatever the answer (a 503 if
    // the store went away in between), or it keeps a spent refresh token.
    if (auth.rotated) reply.header('set-cookie', sessionCookies(rt.config, auth.rotated))
    const session = await rt.sessions.session(auth.token.sid)
    if (!session) {
      // Gone since the token's check (a logout in between): tells of a revocation, so held like any such answer.
      await rt.sessions.revealingRevocation()
      if (carriesSessionCookies(request, rt.cookies)) reply.header('set-cookie', clearedCookies(rt.config))
      throw unauthenticated(auth.mode)
    }
    return reply.send({
      sub: auth.token.sub,
      claims: userClaims(auth.token.payload),
      sid: auth.token.sid,
      accessExpiresAt: new Date(auth.token.expiresAt).toISOString(),
      sessionExpiresAt: new Date(Math.min(session.idleExpiresAt, session.absoluteExpiresAt)).toISOString(),
    })
  })
}

/** 204, both cookies cleared, and the browser told to drop this site's cookies. */
function sendLoggedOut(reply: FastifyReply, rt: Runtime): FastifyReply {
  return reply.code(204).header('set-cookie', clearedCookies(rt.config)).header('clear-site-data', '"cookies"').send()
}

/**
 * The presented access token for logout: verified as usual, or, when it has merely expired, verified as of its
 * expiry (signature, kid, typ, iss, aud all still checked) so that logout still ends its family.
 */
async function verifiedForLogout(rt: Runtime, token: string): Promise<VerifiedAccessToken | undefined> {
  try {
    return await rt.sessions.verifier.verify(token)
  } catch (err) {
    if (!(err instanceof TokenRefusedError) || (err.reason !== 'ERR_JWT_EXPIRED' && err.reason !== 'expired')) return undefined
  }
  let exp: unknown
  try {
    exp = decodeJwt(token).exp
  } catch {
    return undefined
  }
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return undefined
  return rt.sessions.verifier.verify(token, exp * 1000 - 1).catch(() => undefined)
}

/** The request's session; a 401 clears the gateway's cookies when it carried them (as on the proxy path). */
async function authenticateOrThrow(
  request: FastifyRequest, reply: FastifyReply, rt: Runtime, credentials = credentialsOf(request, rt.cookies, rt.sessions),
): Promise<Authenticated> {
  try {
    const auth = await authenticate(credentials, rt.sessions, rt.config.tokens)
    if (!auth) throw unauthenticated('none')
    return auth
  } catch (err) {
    // Cookies the request was not authenticated with (a page of another origin's, left aside) are not cleared either.
    if (err instanceof GatewayError && err.statusCode === 401 && credentials.mode === 'cookie' && carriesSessionCookies(request, rt.cookies)) {
      reply.header('set-cookie', clearedCookies(rt.config))
    }
    throw err
  }
}

type SessionMode = 'token' | 'cookie'

/**
 * What a login hands out: `X-Session-Mode: token` (the tokens in the body, no cookies) or `cookie` (the default).
 * Any other value is refused rather than taken for cookie mode: a client that misspells it would otherwise get
 * HttpOnly cookies it cannot read instead of the tokens it asked for.
 */
function sessionMode(request: FastifyRequest): SessionMode {
  const header = request.headers['x-session-mode']
  const value = typeof header === 'string' ? header.trim().toLowerCase() : undefined
  if (value === undefined || value === '') return 'cookie' // absent, or sent empty
  if (value === 'token' || value === 'cookie') return value
  throw new GatewayError('invalid_request', 'X-Session-Mode must be token (the tokens in the response body) or cookie (the default).')
}

function userClaims(payload: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(payload).filter(([k]) => !REGISTERED_CLAIMS.includes(k)))
}

function sendTokens(reply: FastifyReply, rt: Runtime, tokens: SessionTokens, asTokens: boolean): FastifyReply {
  const body: Record<string, unknown> = {
    sub: tokens.sub,
    claims: tokens.claims,
    accessExpiresAt: new Date(tokens.accessExpiresAt).toISOString(),
    sessionExpiresAt: new Date(tokens.sessionExpiresAt).toISOString(),
  }
  if (asTokens) {
    Object.assign(body, {
      accessToken: tokens.accessToken,
      refreshToken: tokens.refreshToken,
      tokenType: 'Bearer',
      expiresIn: Math.max(0, Math.ceil((tokens.accessExpiresAt - Date.now()) / 1000)),
    })
  } else {
    reply.header('set-cookie', sessionCookies(rt.config, tokens))
  }
  return reply.send(body)
}
