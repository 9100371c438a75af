import type { FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import { cookieHeaderWithout, setCookiesWithout, type CookieNames } from '../auth/cookies.js'
import { absoluteFormAuthority } from '../routing/normalise-path.js'

/** Hop-by-hop headers (RFC 9110 §7.6.1) and proxy credentials: never forwarded. */
const HOP_BY_HOP_NAMES = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate']

const HOP_BY_HOP_SET = new Set(HOP_BY_HOP_NAMES)

/**
 * Request headers the gateway answers itself: `Expect: 100-continue` was answered by the gateway's own HTTP server
 * (the body is already on its way); forwarded, undici refuses the request (a 502 for every upload with it).
 */
const ANSWERED_HERE = new Set([...HOP_BY_HOP_NAMES, 'expect'])

export interface UpstreamIdentity {
  /** The access token to forward as `Authorization: Bearer`, or undefined for anonymous requests. */
  token: string | undefined
  /** Identity headers filled from the claims (lower-case names); shared between requests, never changed. */
  headers: Readonly<Record<string, string>>
}

/**
 * The headers the upstream receives, built in one pass over the request's headers. Host is the upstream's. Left out:
 * hop-by-hop headers (and those the request's Connection header names), client copies of every route's
 * injected headers (and `_` look-alikes), Forwarded/X-Real-IP unless the peer is a trusted proxy, the gateway's
 * cookies and, on authenticated routes, the client's Authorization. Added: the verified Bearer, the identity
 * headers and X-Forwarded-For/-Proto/-Host.
 */
export function upstreamHeaders(
  request: FastifyRequest,
  /** The upstream's `host[:port]`. */
  host: string,
  names: CookieNames,
  /** Lower-case names of every header any route injects. */
  injectedNames: ReadonlySet<string>,
  identity: UpstreamIdentity | 'public',
  trustedPeer: boolean,
): IncomingHttpHeaders {
  const headers = request.headers
  const named = connectionNamed(headers.connection)
  const out: IncomingHttpHeaders = { host }
  for (const name in headers) {
    if (ANSWERED_HERE.has(name) || injectedNames.has(name) || name === 'cookie' || name === 'host') continue
    // `X_User_Id` reads as `X-User-Id` to CGI, WSGI, Rack and PHP upstreams: look-alikes of injected names go too.
    if (name.includes('_') && injectedNames.has(name.replace(/_/g, '-'))) continue
    if (!trustedPeer && (name === 'forwarded' || name === 'x-real-ip')) continue
    if (named.includes(name)) continue
    out[name] = headers[name]
  }
  const cookie = request.headers.cookie === undefined ? undefined : cookieHeaderWithout(request.headers.cookie, names)
  if (cookie !== undefined) out.cookie = cookie
  if (identity !== 'public') {
    if (identity.token === undefined) delete out.authorization
    else out.authorization = `Bearer ${identity.token}`
    for (const name in identity.headers) out[name] = identity.headers[name]
  }
  const peer = request.socket.remoteAddress ?? ''
  const prior = (name: string): string | undefined => {
    const value = trustedPeer ? request.headers[name] : undefined
    return typeof value === 'string' && value !== '' ? value : undefined
  }
  const priorFor = prior('x-forwarded-for')
  out['x-forwarded-for'] = priorFor === undefined ? peer : `${priorFor}, ${peer}`
  out['x-forwarded-proto'] = prior('x-forwarded-proto') ?? ((request.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http')
  // An HTTP/1.0 request may come without Host: then there is no host to tell (an empty header would be a lie). An
  // absolute-form target's authority stands for the host instead of the Host header (RFC 9112 §3.2.2).
  const forwardedHost = prior('x-forwarded-host') ?? absoluteFormAuthority(request.originalUrl) ?? request.headers.host
  if (forwardedHost) out['x-forwarded-host'] = forwardedHost
  return out
}

/**
 * The lower-case header names a Connection header lists (RFC 9110 §7.6.1), which are hop-by-hop too. Repeated
 * Connection lines (an array, as undici parses a response) each name some.
 */
function connectionNamed(connection: unknown): string[] {
  const value = Array.isArray(connection) ? connection.join(',') : connection
  return typeof value === 'string' ? value.split(',').map((n) => n.trim().toLowerCase()) : []
}

/** Response headers from the upstream, less its hop-by-hop ones (and those its Connection header names). */
export function withoutHopByHop<T extends Record<string, unknown>>(headers: T): T {
  const named = connectionNamed(headers.connection)
  // A new object with the kept headers: deleting from the upstream's object would make it slow to copy.
  const out: Record<string, unknown> = {}
  for (const name in headers) if (!HOP_BY_HOP_SET.has(name) && !named.includes(name)) out[name] = headers[name]
  return out as T
}

/**
 * An upstream may set cookies of its own, never the gateway's session cookies; nor may it clear them with
 * `Clear-Site-Data: "cookies"` (or `"*"`), which would wipe them in the browser while the session lives on in the
 * store. Its other directives (`"cache"`, `"storage"`...) pass.
 */
export function withoutGatewayCookies<T extends Record<string, unknown>>(headers: T, names: CookieNames): T {
  if (headers['set-cookie'] === undefined && headers['clear-site-data'] === undefined) return headers
  const out: Record<string, unknown> = { ...headers }
  if (headers['set-cookie'] !== undefined) {
    const kept = setCookiesWithout(headers['set-cookie'], names)
    if (kept.length === 0) delete out['set-cookie']
    else out['set-cookie'] = kept
  }
  if (headers['clear-site-data'] !== undefined) {
    const kept = clearSiteDataWithoutCookies(headers['clear-site-data'])
    if (kept === undefined) delete out['clear-site-data']
    else out['clear-site-data'] = kept
  }
  return out as T
}

const CLEARS_COOKIES = new Set(['"cookies"', '"*"'])

/** The directives of a Clear-Site-Data value (one header or several) less those that clear cookies. */
function clearSiteDataWithoutCookies(value: unknown): string | undefined {
  const lines = Array.isArray(value) ? value.map(String) : [String(value)]
  const kept = lines.flatMap((line) => line.split(',')).map((d) => d.trim()).filter((d) => d !== '' && !CLEARS_COOKIES.has(d.toLowerCase()))
  return kept.length > 0 ? kept.join(', ') : undefined
}
