import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyRequest } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])

/**
 * Cookie-mode CSRF defence: an unsafe method must carry `X-CSRF: 1` (a header no cross-site form can set and
 * no cross-origin fetch can send without a CORS preflight) or an `Origin` listed in `csrf.allowedOrigins`.
 */
export function passesCsrf(request: FastifyRequest, csrf: GatewayConfig['csrf']): boolean {
  return SAFE_METHODS.has(request.method) || vouchedFor(request.headers, csrf)
}

/** `X-CSRF: 1` or an `Origin` listed in `csrf.allowedOrigins`. */
function vouchedFor(headers: IncomingHttpHeaders, csrf: GatewayConfig['csrf']): boolean {
  if (headers['x-csrf'] === '1') return true
  return typeof headers.origin === 'string' && csrf.allowedOrigins.includes(headers.origin)
}

/** No `Origin` (not a cross-origin browser request), this gateway's own origin, or an allowed one. */
export function fromOwnOrAllowedOrigin(headers: IncomingHttpHeaders, allowed: readonly string[]): boolean {
  const origin = headers.origin
  if (origin === undefined) return true
  if (allowed.includes(origin)) return true
  try {
    return new URL(origin).host === headers.host
  } catch {
    return false
  }
}

/**
 * Whether a browser says the request was made by a page of another origin that is not allowed, without
 * `X-CSRF: 1`: `Sec-Fetch-Site` other than same-origin/none, else an `Origin` that is not ours or allowed. A form
 * on another site must not end a session (nor clear a browser's cookies) with a POST to the auth endpoints.
 * Clients that send neither header (servers, curl) are not pages of another origin.
 */
export function fromForeignPage(headers: IncomingHttpHeaders, csrf: GatewayConfig['csrf']): boolean {
  if (vouchedFor(headers, csrf)) return false
  const site = headers['sec-fetch-site']
  // The browser's own word (no page can set it): same-origin even when a reverse proxy rewrote Host.
  if (site === 'same-origin' || site === 'none') return false
  if (site !== undefined) return true
  return !fromOwnOrAllowedOrigin(headers, csrf.allowedOrigins)
}

/**
 * Whether a browser may have sent this request from a page of another origin without a CORS preflight: what a JSON
 * body that does not say it is JSON (text/plain, no Content-Type) must not be read from at login (login CSRF: a
 * cross-site form with enctype="text/plain" sends exactly that). No when the browser says same-origin, or the Origin
 * is ours or allowed; else, with neither header (a browser too old to send them, or a tool that strips them), yes
 * for anything that calls itself a browser: every browser's User-Agent starts with `Mozilla/`, and a page cannot
 * change it. Servers, curl, fetch() in Node and undici do not.
 */
export function mayBeCrossSiteBrowser(headers: IncomingHttpHeaders, csrf: GatewayConfig['csrf']): boolean {
  if (fromForeignPage(headers, csrf)) return true
  if (vouchedFor(headers, csrf) || headers['sec-fetch-site'] !== undefined || headers.origin !== undefined) return false
  return /^Mozilla\//.test(headers['user-agent'] ?? '')
}
