import type {} from '@fastify/reply-from'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { finished } from 'node:stream'
import Negotiator from 'negotiator'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { meetsRequirements, identityHeaders } from '../auth/claim-rules.js'
import { carriesSessionCookies, clearedCookies, sessionCookies, setCookiesWithout, type CookieNames } from '../auth/cookies.js'
import { passesCsrf } from '../auth/csrf.js'
import { authenticate, credentialsOf, unauthenticated, type Authenticated } from '../auth/request-auth.js'
import { GatewayError, type ErrorCode } from '../errors.js'
import { sendError } from '../http/send-error.js'
import { normalisePath, splitUrl } from '../routing/normalise-path.js'
import type { RouteMatch } from '../routing/route-table.js'
import type { Metrics } from '../server/metrics.js'
import type { Runtime } from '../server/runtime.js'
import type { SessionTokens } from '../sessions/sessions.js'
import { dispatchingAs, UpstreamCall } from './upstream-agent.js'
import { upstreamHeaders, withoutGatewayCookies, withoutHopByHop, type UpstreamIdentity } from './upstream-headers.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The matched route's name, for metrics and logs. */
    routeName?: string
  }
}

type FromOptions = NonNullable<Parameters<FastifyReply['from']>[1]>

interface Deps {
  current: () => Runtime
  metrics: Metrics
  trustsPeer: (address: string | undefined) => boolean
}

/** Matches the decoded, normalised path of an origin-form target against the route table (longest prefix). */
export function matchRoute(rt: Runtime, url: string): RouteMatch {
  const { path, query } = splitUrl(url)
  const normalised = normalisePath(path)
  if (!normalised.ok) throw new GatewayError('invalid_path', `The request path is not acceptable: ${normalised.reason}.`)
  const match = rt.routes.match(normalised, query)
  if (!match) throw new GatewayError('not_found')
  return match
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
  const credentials = credentialsOf(request, rt.cookies)
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
  const e = error as { statusCode?: number; code?: string; cause?: { code?: string } }
  const timedOut =
    e.statusCode === 504 || e.code === 'FST_REPLY_FROM_GATEWAY_TIMEOUT' || e.code === 'FST_REPLY_FROM_CONNECT_TIMEOUT' ||
    e.cause?.code === 'UND_ERR_HEADERS_TIMEOUT' || e.cause?.code === 'UND_ERR_CONNECT_TIMEOUT' || e.cause?.code === 'UND_ERR_BODY_TIMEOUT'
  return new GatewayError(timedOut ? 'gateway_timeout' : 'bad_gateway')
}

/** Removes the gateway's own cookies from the Set-Cookie lines of a reply (the upstream's stay). */
function withoutOwnCookies(reply: FastifyReply, names: CookieNames): void {
  const kept = setCookiesWithout(reply.getHeader('set-cookie'), names)
  reply.removeHeader('set-cookie')
  if (kept.length > 0) reply.header('set-cookie', kept)
}

/** What one proxied request carries from the auth step to reply-from's hooks. */
interface Forwarding {
  rt: Runtime
  routeName: string
  identity: UpstreamIdentity | 'public'
  rotated: SessionTokens | undefined
  trusted: boolean
  query: string
  started: number
  /** Ends the hold on the grace of `rotated` (its cookies are about to go out). */
  release: (() => void) | undefined
}

declare module 'fastify' {
  interface FastifyRequest {
    forwarding?: Forwarding
  }
}

/**
 * reply-from's options, made once per timeout rather than per request: the hooks read what they need from
 * `request.forwarding` (no closures allocated on the hot path).
 */
function forwardingOptions(metrics: Metrics) {
  const byTimeout = new Map<number, FromOptions>()
  const state = (request: FastifyRequest): Forwarding => request.forwarding as Forwarding
  const hooks: FromOptions = {
    // The query travels separately: reply-from refuses a source whose decoded text holds `../` (and fails on
    // malformed percent-encoding), which is only meant for the path; the path here is already normalised.
    queryString: (_search, _url, request) => state(request as FastifyRequest).query,
    // An upstream's 503 is the client's to see (reply-from would silently retry a GET up to 10 times).
    retryDelay: () => null,
    rewriteRequestHeaders: (request, headers) => {
      const f = state(request as FastifyRequest)
      return upstreamHeaders(request as FastifyRequest, headers, f.rt.cookies, f.rt.routes.injectedHeaders, f.identity, f.trusted)
    },
    rewriteHeaders: (headers, request) => {
      const f = state(request as FastifyRequest)
      metrics.observeUpstream(f.routeName, (performance.now() - f.started) / 1000)
      return withoutGatewayCookies(withoutHopByHop(headers), f.rt.cookies)
    },
    // A rotation's cookies go out with the upstream's answer, which may come long after faster responses
    // carried newer ones: checked just before sending, so a slow response never sets an older pair.
    onResponse: (request, reply, res) => {
      const f = state(request as FastifyRequest)
      reply.raw.once('pipe', flushHeadersIfBodyWaits)
      if (!f.rotated) return void reply.send(res.stream)
      f.release?.()
      void f.rt.sessions.superseded(f.rotated.refreshToken).then((stale) => {
        if (stale) withoutOwnCookies(reply as FastifyReply, f.rt.cookies)
        reply.send(res.stream)
      })
    },
    onError: (errorReply, { error }) => {
      ;(errorReply.request as FastifyRequest).forwarding?.release?.()
      // The client went away (its upstream request was cancelled): nobody to answer, nothing gone wrong.
      if (errorReply.raw.destroyed) return
      errorReply.request.log.warn({ err: error, route: errorReply.request.routeName }, 'upstream failed')
      sendError(errorReply as FastifyReply, upstreamError(error))
    },
  }
  return (timeout: number): FromOptions => {
    let options = byTimeout.get(timeout)
    if (!options) byTimeout.set(timeout, (options = { ...hooks, timeout }))
    return options
  }
}

/**
 * Fastify streams a body by piping it, and Node sends the headers with the first chunk: an upstream that answers
 * its headers at once and its body later (an event stream, a long poll) would keep the client waiting for them,
 * and a route's timeout would then replace its answer with a 504. Once the pipe is set up, the headers go out
 * unless the body has begun by the next turn of the event loop (the usual case costs no extra write).
 */
function flushHeadersIfBodyWaits(this: ServerResponse): void {
  setImmediate(flushHeaders, this)
}

function flushHeaders(res: ServerResponse): void {
  if (!res.headersSent && !res.destroyed && !res.writableEnded) res.flushHeaders()
}

const kCalls = Symbol('upstream calls')
type WithCalls = Socket & { [kCalls]?: Set<UpstreamCall> }

/** The upstream calls of a client connection's requests in flight; all cancelled when the connection closes. */
function callsOn(socket: WithCalls): Set<UpstreamCall> {
  let calls = socket[kCalls]
  if (calls === undefined) {
    calls = socket[kCalls] = new Set()
    socket.once('close', cancelAll)
  }
  return calls
}

function cancelAll(this: WithCalls): void {
  for (const call of this[kCalls] ?? []) call.cancel()
}

/** The catch-all handler: route match -> auth -> proxy, one way. */
export function proxyHandler({ current, metrics, trustsPeer }: Deps) {
  const optionsFor = forwardingOptions(metrics)
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
      // The grace stays open until the headers carrying the new cookies go out (onResponse, onError) or the request
      // ends otherwise (finished() also answers for a response already closed); at most the route's timeout (a stream
      // without one: five minutes) plus the grace.
      const ceiling = (route.timeout > 0 ? route.timeout : 300_000) + rt.config.tokens.reuseGrace
      release = rt.sessions.holdGrace(rotated, ceiling).release
      finished(reply.raw, release)
    }
    const upstream = splitUrl(match.upstreamPath)
    request.forwarding = {
      rt, routeName: route.name, identity: authorised.identity, rotated,
      trusted: trustsPeer(request.socket.remoteAddress), query: upstream.query.slice(1), started: performance.now(), release,
    }
    // The client may have gone while the auth step waited for the store: nothing to forward, nobody to answer.
    if (request.socket.destroyed || reply.raw.destroyed) {
      release?.()
      return reply
    }
    // A close of the response before it finished is the client gone, and so is the socket's close for a request
    // pipelined behind another (whose response never gets a close of its own): the upstream request is cancelled.
    const call = new UpstreamCall()
    const calls = callsOn(request.socket)
    calls.add(call)
    reply.raw.once('close', () => {
      calls.delete(call)
      if (!reply.raw.writableFinished) call.cancel()
    })
    return dispatchingAs(call, () => reply.from(match.route.upstreamOrigin + upstream.path, optionsFor(route.timeout)))
  }
}
