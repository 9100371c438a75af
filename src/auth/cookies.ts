import { fastifyCookie } from '@fastify/cookie'
import type { FastifyRequest } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'
import type { SessionTokens } from '../sessions/sessions.js'

export interface CookieNames {
  access: string
  refresh: string
}

/** Configured names, else `sg_access`/`sg_refresh`, with the `__Host-` prefix when cookies are Secure. */
export function cookieNames(cookies: GatewayConfig['cookies']): CookieNames {
  const prefix = cookies.secure ? '__Host-' : ''
  return { access: cookies.access ?? `${prefix}sg_access`, refresh: cookies.refresh ?? `${prefix}sg_refresh` }
}

function attributes(cookies: GatewayConfig['cookies'], maxAgeSeconds: number) {
  return {
    httpOnly: true,
    path: '/',
    sameSite: cookies.sameSite,
    secure: cookies.secure,
    maxAge: Math.max(0, maxAgeSeconds),
  } as const
}

/**
 * The request's cookies, parsed on first use. @fastify/cookie is registered without its parsing hook: a request that
 * never asks (a public route, a Bearer request) costs neither the hook nor the parse. Read cookies through this,
 * never `request.cookies` directly: that stays null until this is called. The object has no prototype (as the
 * `cookie` package returns it), so a cookie named like an Object method is just a cookie.
 */
export function requestCookies(request: Pick<FastifyRequest, 'cookies' | 'headers'>): FastifyRequest['cookies'] {
  if (request.cookies) return request.cookies
  request.cookies = fastifyCookie.parse(request.headers.cookie ?? '')
  return request.cookies
}

/**
 * Every value the Cookie header holds for `name`, in order: usually one or none, but a browser sends two cookies of
 * one name when a sibling subdomain, or another path, set one too ("cookie tossing"; `__Host-` names, the default
 * with `secure: true`, rule it out). The first one is what `requestCookies` gives; the rest only cost a look when
 * the name occurs twice.
 */
export function cookieValues(request: Pick<FastifyRequest, 'cookies' | 'headers'>, name: string): string[] {
  const first = requestCookies(request)[name]
  if (first === undefined) return []
  const header = request.headers.cookie ?? ''
  if (header.indexOf(`${name}=`) === header.lastIndexOf(`${name}=`)) return [first]
  const values: string[] = []
  for (const pair of header.split(';')) {
    // Each pair decoded by the cookie parser on its own (a name that merely ends with ours is not ours).
    const value = pair.includes(`${name}=`) ? fastifyCookie.parse(pair)[name] : undefined
    if (value !== undefined) values.push(value)
  }
  return values
}

/** Whether the request carries either of the gateway's cookies (a 401 then clears them). */
export function carriesSessionCookies(request: Pick<FastifyRequest, 'cookies' | 'headers'>, names: CookieNames): boolean {
  const cookies = requestCookies(request)
  return cookies[names.access] !== undefined || cookies[names.refresh] !== undefined
}

/** Set-Cookie values for a new or rotated pair: Max-Age is the access and refresh lifetimes. */
export function sessionCookies(config: GatewayConfig, tokens: SessionTokens, now = Date.now()): string[] {
  const names = cookieNames(config.cookies)
  const accessAge = Math.floor(config.tokens.accessTtl / 1000)
  const refreshAge = Math.min(Math.floor(config.tokens.refreshIdleTtl / 1000), Math.ceil((tokens.sessionExpiresAt - now) / 1000))
  return [
    fastifyCookie.serialize(names.access, tokens.accessToken, attributes(config.cookies, Math.min(accessAge, refreshAge))),
    fastifyCookie.serialize(names.refresh, tokens.refreshToken, attributes(config.cookies, refreshAge)),
  ]
}

/** The longest cookie (name=value) browsers keep (RFC 6265 §6.1's minimum, and what Chrome and Firefox allow). */
export const MAX_COOKIE_BYTES = 4096

/**
 * The bytes of the access cookie's name=value for these tokens. Over MAX_COOKIE_BYTES a browser drops it silently:
 * the session would live on its refresh cookie alone, rotating on every request.
 */
export function accessCookieBytes(config: GatewayConfig, tokens: SessionTokens): number {
  return Buffer.byteLength((sessionCookies(config, tokens)[0] as string).split(';', 1)[0] as string)
}

/** Set-Cookie values that remove both gateway cookies. */
export function clearedCookies(config: GatewayConfig): string[] {
  const names = cookieNames(config.cookies)
  return [names.access, names.refresh].map((name) =>
    fastifyCookie.serialize(name, '', { ...attributes(config.cookies, 0), expires: new Date(0) }),
  )
}

/**
 * The Cookie header without the gateway's own cookies (other cookies pass to the upstream untouched).
 * Returns undefined when nothing is left.
 */
export function cookieHeaderWithout(header: string | undefined, names: CookieNames): string | undefined {
  if (header === undefined) return undefined
  const kept = header
    .split(';')
    .map((pair) => pair.trim())
    .filter((pair) => {
      if (pair === '') return false
      const eq = pair.indexOf('=')
      const name = (eq === -1 ? pair : pair.slice(0, eq)).trim()
      return name !== names.access && name !== names.refresh
    })
  return kept.length > 0 ? kept.join('; ') : undefined
}

/** Set-Cookie lines that do not set one of the gateway's cookies (the gateway alone sets those). */
export function setCookiesWithout(value: unknown, names: CookieNames): string[] {
  const lines = value === undefined ? [] : Array.isArray(value) ? value.map(String) : [String(value)]
  return lines.filter((line) => {
    const name = line.split('=', 1)[0]?.trim()
    return name !== names.access && name !== names.refresh
  })
}
