import type { FastifyRequest } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])

/**
 * Cookie-mode CSRF defence: an unsafe method must carry `X-CSRF: 1` (a header no cross-site form can set and
 * no cross-origin fetch can send without a CORS preflight) or an `Origin` listed in `csrf.allowedOrigins`.
 */
export function passesCsrf(request: FastifyRequest, csrf: GatewayConfig['csrf']): boolean {
  if (SAFE_METHODS.has(request.method)) return true
  if (request.headers['x-csrf'] === '1') return true
  const origin = request.headers.origin
  return typeof origin === 'string' && csrf.allowedOrigins.includes(origin)
}
