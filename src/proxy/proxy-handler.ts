import { performance } from 'node:perf_hooks'
import { finished } from 'node:stream'
import Negotiator from 'negotiator'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import { meetsRequirements, identityHeaders } from '../auth/claim-rules.js'
import { carriesSessionCookies, clearedCookies, sessionCookies, setCookiesWithout, type CookieNames } from '../auth/cookies.js'
import { passesCsrf } from '../auth/csrf.js'
import { authenticate, credentialsOf, unauthenticated, type Authenticated } from '../auth/request-auth.js'
import { GatewayError, type ErrorCode } from '../errors.js'
import { normalisePath, splitUrl } from '../routing/normalise-path.js'
import type { RouteMatch } from '../routing/route-table.js'
import type { Metrics } from '../server/metrics.js'
import type { Runtime } from '../server/runtime.js'
import type { SessionTokens } from '../sessions/sessions.js'
import { UpstreamExchange, type HeadRewrite, type Headers } from './upstream-exchange.js'
import { upstreamHeaders, withoutGatewayCookies, withoutHopByHop, type UpstreamIdentity } from './upstream-headers.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The matched route's name, for metrics and logs. */
    routeName?: string
  }
}

interface Deps {
  current: () => Runtime
  metrics: Metrics
  /** undici's keep-alive pools to the upstreams. */
  agent: Dispatcher
  trustsPeer: (address: string | undefined) => boolean
  /** True once the gateway is stopping: answers then close their connections. */
  draining: () => boolean
}

/** Matches the decoded, normalised path of an origin-form target against the route table (longest prefix). */
export function matchRoute(rt: Runtime, url: string): RouteMatch {
  const { path, query } = splitUrl(url)
  const normalised = normalisePath(path)
  if (!normalised.ok) throw new GatewayError('invalid_path', `The request path is not acceptable: ${normalised.reason}.`)
  const match = rt.routes.match(normalised, query)
  if (match === 'ambiguous') {
    throw new GatewayError('invalid_path', "The request path is not acceptable: its path parameters (';') decide which route it falls under, and servers read them in different ways.")
  }
  if (!match) throw new GatewayError('not_found')
  return match
}

/**
 * An answer that carries a new session's cookies: no cache may keep it (and hand them to someone else), whatever
 * the upstream said of its body. Its caching headers go, those CDNs read in place of Cache-Control (RFC 9213's
 * CDN-Cache-Control, Surrogate-Control) included.
 */
function uncacheable(headers: Headers): void {
  for (const name of ['expires', 'pragma', 'cdn-cache-control', 'surrogate-control']) delete headers[name]
  headers['cache-control'] = 'no-store'
}

/**
 * A refusal that comes after the session was rotated on the way in (a `require` rule not met): the answer still
 * carries the new cookies. Without them the browser keeps its spent refresh token, which, presented again once the
 * grace has passed, ends the session as a replay.
 */
export class RefusedAfterRotation extends GatewayError {
  constructor(
    code: ErrorCode,
    readonly rotated: SessionTokens,
  ) {
    super(code)
  }
}

/**
 * The auth step of a route: public routes pass; otherwise CSRF (cookie mode), the access token (refreshed
 * transparently in cookie mode) and the route's `require` rules. Returns who the upstream should see.
 */
export async function authorise(request: FastifyRequest, rt: Runtime, match: RouteMatch): Promise<{ identity: UpstreamIdentity | 'public'; auth: Authenticated | undefined }> {
  const route = match.route.config
  if (route.auth === 'public') return { identity: 'public', auth: undefined }
  // Anonymous, as on an optional route: a client's Authorization is removed, not passed on unchecked.
  if (route.corsPreflight && isCorsPreflight(request)) return { identity: { token: undefined, headers: {} }, auth: undefined }
  const credentials = credentialsOf(request, rt.cookies, rt.sessions)
  if (credentials.mode === 'cookie' && !passesCsrf(request, rt.config.csrf)) throw new GatewayError('csrf')
  const auth = await authenticate(credentials, rt.sessions, rt.config.tokens)
  if (!auth) {
    if (route.auth === 'required') throw unauthenticated('none')
    return { identity: { token: undefined, headers: {} }, auth: undefined }
  }
  if (!meetsRequirements(auth.token.payload, route.require)) {
    throw auth.rotated ? new RefusedAfterRotation('forbidden', auth.rotated) : new GatewayError('forbidden')
  }
  return { identity: { token: auth.token.token, headers: identityHeaders(route.headers, auth.token.payload) }, auth }
}

/**
 * What a browser sends before a cross-origin request it may not send plainly: OPTIONS with Origin and
 * Access-Control-Request-Method, no credentials (Fetch standard) and no body. A request with a body is none.
 */
function isCorsPreflight(request: FastifyRequest): boolean {
  const h = request.headers
  return (
    request.method === 'OPTIONS' && h.origin !== undefined && h['access-control-request-method'] !== undefined &&
    h['transfer-encoding'] === undefined && (h['content-length'] === undefined || h['content-length'] === '0')
  )
}

const HTML_FIRST = /^\s*text\/html\s*(?:[,;]|$)/i

/**
 * A browser navigation to a protected route goes to the configured login page (never a target from the request).
 * Only a navigation: a GET whose Accept puts HTML first (as browsers do for pages) and does not rank JSON above it
 * by q-value, with no Authorization header
 * (an API client), no X-Requested-With (XHR libraries) and, when the browser says, Sec-Fetch-Mode `navigate`.
 * Everything else, fetch() and XHR above all, gets the JSON 401.
 */
function wantsLoginPage(request: FastifyRequest, rt: Runtime): string | undefined {
  const page = rt.config.login.page
  if (page === undefined || request.method !== 'GET') return undefined
  const h = request.headers
  if (h.authorization !== undefined || h['x-requested-with'] !== undefined) return undefined
  if (h['sec-fetch-mode'] !== undefined && h['sec-fetch-mode'] !== 'navigate') return undefined
  return typeof h.accept === 'string' && HTML_FIRST.test(h.accept) && prefersHtml(h.accept) ? page : undefined
}

/** HTML over JSON by the Accept header's q-values (`text/html;q=0.1, application/json` wants JSON). */
function prefersHtml(accept: string): boolean {
  return new Negotiator({ headers: { accept } }).mediaType(['application/json', 'text/html']) === 'text/html'
}

function upstreamError(error: unknown): GatewayError {
  const code = (error as { code?: string }).code
  const timedOut = code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
  return new GatewayError(timedOut ? 'gateway_timeout' : 'bad_gateway')
}

/** Removes the gateway's own cookies from the Set-Cookie lines of a reply (the upstream's stay). */
function withoutOwnCookies(reply: FastifyReply, names: CookieNames): void {
  const kept = setCookiesWithout(reply.getHeader('set-cookie'), names)
  reply.removeHeader('set-cookie')
  if (kept.length > 0) reply.header('set-cookie', kept)
}

/** An empty query (`/a?`) is none. */
function withoutEmptyQuery(path: string): string {
  return path.endsWith('?') && path.indexOf('?') === path.length - 1 ? path.slice(0, -1) : path
}

/** The catch-all handler: route match -> auth -> proxy, one way. */
export function proxyHandler({ current, metrics, agent, trustsPeer, draining }: Deps) {
  /** Stopping (read as the head goes out): the connection closes after this answer. */
  const closingIfDraining = (headers: Headers): Headers => {
    if (draining()) headers.connection = 'close'
    return headers
  }
  return async function proxy(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const rt = current()
    const match = matchRoute(rt, request.url)
    const route = match.route.config
    request.routeName = route.name
    let authorised: Awaited<ReturnType<typeof authorise>>
    try {
      authorised = await authorise(request, rt, match)
    } catch (err) {
      if (err instanceof GatewayError) {
        metrics.denials.inc({ reason: err.code })
        if (err instanceof RefusedAfterRotation) reply.header('set-cookie', sessionCookies(rt.config, err.rotated))
        if (err.statusCode === 401) {
          if (carriesSessionCookies(request, rt.cookies)) reply.header('set-cookie', clearedCookies(rt.config))
          const page = wantsLoginPage(request, rt)
          // no-store: the redirect may carry cleared cookies, and it answers for this request only.
          if (page) return reply.header('cache-control', 'no-store').redirect(page, 302)
        }
      }
      throw err
    }
    const rotated = authorised.auth?.rotated
    let release: (() => void) | undefined
    if (rotated) {
      reply.header('set-cookie', sessionCookies(rt.config, rotated))
      // The grace stays open until the headers carrying the new cookies go out (the head's rewrite, or a failure
      // before it) or the request ends otherwise (finished() also answers for a response already closed); at most the
      // route's timeout (a stream without one: five minutes) plus the grace.
      const ceiling = (route.timeout > 0 ? route.timeout : 300_000) + rt.config.tokens.reuseGrace
      release = rt.sessions.holdGrace(rotated, ceiling).release
      finished(reply.raw, release)
    }
    const started = performance.now()
    // The upstream's head, on its way to the client: timed, hop-by-hop headers and the gateway's cookies dropped,
    // and a rotation's cookies checked just before they go out, so that a slow response never sets an older pair
    // than faster ones already carried.
    const rewriteHead: HeadRewrite = (headers) => {
      metrics.observeUpstream(route.name, (performance.now() - started) / 1000)
      const kept = withoutGatewayCookies(withoutHopByHop(headers), rt.cookies)
      if (!rotated) return closingIfDraining(kept)
      release?.()
      return rt.sessions.superseded(rotated.refreshToken).then((stale) => {
        if (stale) withoutOwnCookies(reply, rt.cookies)
        else uncacheable(kept) // the answer carries a new session's cookies
        return closingIfDraining(kept)
      })
    }
    // The client may have gone while the auth step waited for the store: nothing to forward, nobody to answer.
    if (request.socket.destroyed || reply.raw.destroyed) {
      release?.()
      return reply.hijack()
    }
    const headers = upstreamHeaders(request, match.route.upstreamHost, rt.cookies, rt.routes.injectedHeaders, authorised.identity, trustsPeer(request.socket.remoteAddress))
    const exchange = new UpstreamExchange(request, reply, rewriteHead)
    try {
      await exchange.start(agent, { origin: match.route.upstreamOrigin, path: withoutEmptyQuery(match.upstreamPath), headers, timeout: route.timeout })
    } catch (error) {
      release?.()
      // The client went away (its upstream request was cancelled, and logged): nobody to answer, nothing gone wrong.
      if (reply.raw.destroyed) return reply.hijack()
      request.log.warn({ err: error, route: route.name }, 'upstream failed')
      throw upstreamError(error)
    }
    return reply
  }
}
