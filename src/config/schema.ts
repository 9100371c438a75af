import { isIP } from 'node:net'
import { z } from 'zod'
import { cookieNames } from '../auth/cookies.js'
import { normalisePath } from '../routing/normalise-path.js'
import { DURATION_HINT, parseDuration } from './duration.js'
import type { SigningAlgorithm } from '../tokens/keys.js'
import { REGISTERED_CLAIMS_REFUSED, setsRegisteredClaim } from '../tokens/registered-claims.js'

/**
 * A duration field: accepts `30s`-style strings or integer seconds, yields milliseconds. `positive` refuses 0 with
 * that explanation (for settings where 0 would silently turn something off).
 */
function duration(defaultValue: string, positive?: string) {
  return z
    .union([z.string(), z.number()], { error: DURATION_HINT })
    .default(defaultValue)
    .transform((value, ctx) => {
      const ms = parseDuration(value)
      if (ms === undefined) {
        ctx.issues.push({ code: 'custom', message: DURATION_HINT, input: value })
        return z.NEVER
      }
      if (positive !== undefined && ms < 1) {
        ctx.issues.push({ code: 'custom', message: `must be at least 1ms (${positive})`, input: value })
        return z.NEVER
      }
      return ms
    })
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== ''
  } catch {
    return false
  }
}

const httpUrl = z.string({ error: 'must be an http(s) URL' }).refine(isHttpUrl, 'must be an http(s) URL')

/** `http://user:pass@host`, also an empty `http://@host`: userinfo in the authority of an http(s) URL. */
function hasUserinfo(value: string): boolean {
  const url = new URL(value)
  return url.username !== '' || url.password !== '' || /^[A-Za-z][A-Za-z0-9+.-]*:[\\/]*[^/\\?#]*@/.test(value)
}

/** An http(s) URL without userinfo (fetch refuses URLs with credentials: every call would fail). */
const httpUrlWithoutUserinfo = httpUrl.refine(
  (value) => !isHttpUrl(value) || !hasUserinfo(value),
  'must not contain credentials (user:password@)',
)

/**
 * A route's upstream: the proxy uses only its origin and path, so userinfo, a query string or a fragment would be
 * dropped silently. One problem per value.
 */
const upstreamUrl = z.string({ error: 'must be an http(s) URL' }).superRefine((value, ctx) => {
  let message: string | undefined
  if (!isHttpUrl(value)) message = 'must be an http(s) URL'
  else if (hasUserinfo(value)) message = 'must not contain credentials (user:password@): the proxy uses only origin and path'
  else if (/[?#]/.test(value)) message = 'must not have a query string or fragment: the proxy uses only origin and path'
  if (message !== undefined) ctx.issues.push({ code: 'custom', message, input: value })
})

/**
 * What is wrong with a Redis URL, or undefined. ioredis would read a host-less `redis://` as localhost, a path that
 * is not a number as database NaN (the start crashes): refused here. A cluster has database 0 only.
 */
function redisUrlProblem(value: string, { cluster = false } = {}): string | undefined {
  if (value === 'memory://') return cluster ? 'must be a redis:// or rediss:// URL (memory:// is not a cluster node)' : undefined
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return 'must be a redis://, rediss:// or memory:// URL'
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') return 'must be a redis://, rediss:// or memory:// URL'
  if (url.hostname === '') return 'must name a host, like redis://127.0.0.1:6379/0'
  if (url.hash !== '' || value.includes('#')) return 'must not have a fragment'
  // ioredis reads options from the query string, as strings, over the gateway's own (`enableOfflineQueue=false`
  // would turn queueing on: a non-empty string is true): only the address family is let through.
  for (const [name, option] of url.searchParams) {
    if (name !== 'family') return `the query string may only set family (0, 4 or 6), not ${name}`
    if (!['0', '4', '6'].includes(option)) return 'family must be 0, 4 or 6'
  }
  const db = databasePath(url)
  if (db !== '' && !/^\d{1,9}$/.test(db)) return `the path must be a database number, like /0 (got /${db})`
  if (cluster && db !== '' && db !== '0') return 'a cluster node has database 0 only'
  return undefined
}

/** The database part of a redis:// URL's path (`/3` -> `3`; empty when it names none, i.e. database 0). */
export function databasePath(url: URL): string {
  return url.pathname.replace(/^\//, '')
}

const redisUrlOf = (cluster: boolean) =>
  z.string({ error: 'must be a redis://, rediss:// or memory:// URL' }).superRefine((value, ctx) => {
    const message = redisUrlProblem(value, { cluster })
    if (message !== undefined) ctx.issues.push({ code: 'custom', message, input: value })
  })

/**
 * A sentinel node as src/session-store/redis-connection.ts reads it: `host`, `host:port` or `redis://host[:port]`
 * (port 26379 when left out). Anything else would be dropped there (userinfo, a path, a `rediss:` scheme), crash
 * the start with `Invalid URL`, or never connect (a bracketed IPv6 literal reaches ioredis with its brackets).
 */
function isSentinelNode(value: string): boolean {
  const text = value.includes('://') ? value : `redis://${value}`
  if (!text.startsWith('redis://') || /[?#@[]|:$/.test(text)) return false
  try {
    const url = new URL(text)
    return url.hostname !== '' && (url.pathname === '' || url.pathname === '/') && url.port !== '0'
  } catch {
    return false
  }
}

/** What `server.host` may be: an IP address, or a host name (labels of letters, digits, `-` and `_`, as Docker's service names have). */
function isListenHost(value: string): boolean {
  return isIP(value) !== 0 || /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/.test(value)
}

/** `10.0.0.1` or `10.0.0.0/8` (IPv4 or IPv6). */
function isIpOrCidr(value: string): boolean {
  const [address, bits, ...rest] = value.split('/')
  if (rest.length > 0 || address === undefined) return false
  const family = isIP(address)
  if (family === 0) return false
  if (bits === undefined) return true
  if (!/^\d{1,3}$/.test(bits)) return false
  return Number(bits) <= (family === 4 ? 32 : 128)
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** Headers a route may not inject: the gateway owns them, or they are hop-by-hop. */
const RESERVED_HEADERS = new Set([
  'authorization', 'cookie', 'host', 'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
  'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'content-length',
  // Where the request came from and how: set by the gateway, or passed on from a trusted proxy only (trustProxy).
  // (X-Forwarded-User, -Email and -Groups, oauth2-proxy's identity headers, are the operator's to inject.)
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-prefix',
  'x-forwarded-ssl', 'x-forwarded-scheme', 'x-forwarded-server', 'forwarded', 'x-real-ip',
])

/** A header name the gateway manages itself (injecting a claim into it would forge what the upstream trusts). */
const isReservedHeader = (name: string): boolean => RESERVED_HEADERS.has(name.toLowerCase())

const PREFIX = /^(?:\/[A-Za-z0-9._~!$&'()*+,;=:@-]+)*\/?$/

/** The gateway's own endpoints (src/server/build-gateway.ts), exact paths: a route prefix equal to one would be shadowed. */
const GATEWAY_PATHS = ['/healthz', '/readyz', '/metrics', '/.well-known/jwks.json']

/** Claims the gateway sets itself; as src/auth/users-file.ts refuses them in the users file. */

const routeSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'must be letters, digits, ".", "_" or "-"'),
  prefix: z
    .string()
    .regex(PREFIX, 'must be an absolute path like /api/orders (no "..", "//", "%" or query)')
    .refine((p) => p !== '', 'must be an absolute path like /api/orders (/ for every path)')
    .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), 'must not contain "." or ".." segments')
    .refine((p) => !p.includes(';'), 'must not contain ";": a path parameter (";...") never decides which route a request falls under'),
  upstream: upstreamUrl,
  rewritePrefix: z
    .string()
    .regex(/^(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*$/, 'must be empty or an absolute path like /orders')
    .superRefine((value, ctx) => {
      // Every forwarded path starts with it (and usually goes on): what the gateway refuses in request paths
      // would fail every request. Compared on decoded segments, as the route table re-encodes it anyway.
      if (value === '' || !value.startsWith('/')) return
      if (value.includes(';')) {
        ctx.issues.push({ code: 'custom', message: 'must not contain ";" (path parameters)', input: value })
        return
      }
      const normal = normalisePath(`${value}/x`)
      const written = value.split('/').slice(1)
      let message: string | undefined
      if (!normal.ok) message = `cannot be forwarded: ${normal.reason}`
      else {
        const decoded = written.map((s) => decodeURIComponent(s))
        if (decoded.at(-1) === '') decoded.pop()
        const same = normal.segments.length - 1 === decoded.length && decoded.every((s, i) => s === normal.segments[i])
        if (!same) message = `must be in normal form (no ".", ".." or empty segments): ${normal.path.slice(0, -2) || '/'}`
      }
      if (message !== undefined) ctx.issues.push({ code: 'custom', message, input: value })
    })
    .optional(),
  auth: z.enum(['required', 'optional', 'public'], { error: 'must be required, optional or public' }).default('required'),
  require: z
    .record(
      z.string(),
      z.array(z.union([z.string(), z.number(), z.boolean()], { error: 'must be a string, a number or true/false' }), { error: 'must be a list of accepted values' })
        .min(1, 'must list at least one accepted value'),
    )
    .optional(),
  headers: z
    .record(
      z
        .string()
        .regex(HEADER_NAME, 'must be a valid header name')
        .refine((h) => !isReservedHeader(h), 'is a header the gateway manages itself'),
      z.string(),
    )
    .default({}),
  websocket: z.boolean().default(false),
  /**
   * A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method, which browsers send without cookies or
   * Authorization) is forwarded without the auth step, for the upstream to answer.
   */
  corsPreflight: z.boolean().default(false),
  /** 0: no timeout (server-sent events, long polls). */
  timeout: duration('30s'),
})

/** The algorithms `tokens.algorithm` accepts (the key loader knows each). */
export const SIGNING_ALGORITHMS = ['EdDSA', 'ES256', 'RS256'] as const satisfies readonly SigningAlgorithm[]

const tokensSchema = z.strictObject({
  issuer: z.string().min(1).default('sessiongate'),
  audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)], { error: 'must be a string or a non-empty list of strings' }).default('sessiongate'),
  algorithm: z.enum(SIGNING_ALGORITHMS, { error: 'must be EdDSA, ES256 or RS256' }).default('EdDSA'),
  /** Path to a private JWK Set; `ephemeral` (or omitted) generates a key in memory at start (demo use only). */
  keys: z.string().min(1).default('ephemeral'),
  accessTtl: duration('15m'),
  refreshIdleTtl: duration('7d'),
  refreshAbsoluteTtl: duration('30d'),
  refreshAhead: duration('60s'),
  reuseGrace: duration('10s'),
  clockTolerance: duration('5s'),
})

const jsonPointer = z.string().regex(/^(\/([^~/]|~[01])*)*$/, 'must be a JSON pointer like /user/id')

const loginSchema = z.strictObject({
  path: z
    .string()
    .regex(/^(\/[A-Za-z0-9._~-]+)+$/, 'must be an absolute path like /auth')
    .default('/auth'),
  provider: z.enum(['users', 'upstream'], { error: 'must be users or upstream' }).default('users'),
  users: z.string().min(1).optional(),
  upstream: z
    .strictObject({
      url: httpUrlWithoutUserinfo,
      subject: jsonPointer,
      claims: z
        .record(z.string(), jsonPointer)
        // Also when a value failed (a claim mapped to a number): the reserved names are reported in the same run.
        .refine((c) => typeof c !== 'object' || c === null || !setsRegisteredClaim(c), { error: REGISTERED_CLAIMS_REFUSED, when: () => true })
        .default({}),
      timeout: duration('10s', '0 would fail every login'),
    })
    .optional(),
  rateLimit: z
    .strictObject({
      max: z.number().int('must be an integer').min(1, 'must be at least 1 (0 would refuse every login)').default(10),
      window: duration('1m', '0 would turn the limit off'),
    })
    .prefault({}),
  /** Optional login page: browser navigations (Accept: text/html) to a protected route are redirected here. */
  page: z
    .string()
    .refine((p) => p.startsWith('/') && !p.startsWith('//') && !p.includes('\\'), 'must be a path on this gateway, like /login')
    .optional(),
})

const baseConfigSchema = z
  .strictObject({
    server: z
      .strictObject({
        host: z.string().min(1).refine(isListenHost, 'must be an IP address or a host name, like 0.0.0.0 or 127.0.0.1').default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(8080),
        trustProxy: z
          .union([
            z.literal(false),
            z.array(z.string().refine(isIpOrCidr, 'must be an IP address or CIDR range')),
          ], { error: 'must be false or a list of IP addresses / CIDR ranges (never a hop count)' })
          .default(false),
        bodyLimit: z.number().int().min(1).default(1_048_576),
      })
      .prefault({}),
    redis: z
      .strictObject({
        url: redisUrlOf(false).optional(),
        cluster: z.array(redisUrlOf(true)).min(1).optional(),
        sentinel: z
          .strictObject({
            name: z.string().min(1),
            nodes: z.array(z.string().refine(isSentinelNode, 'must be host:port or redis://host:port')).min(1),
          })
          .optional(),
        keyPrefix: z.string().regex(/^[A-Za-z0-9_:.-]*$/, 'must be letters, digits, ":", ".", "_" or "-"').default('sg:'),
        onOutage: z
          .enum(['fail-closed', 'verify-only'], { error: 'must be fail-closed or verify-only' })
          .default('fail-closed'),
        /** Local revocation cache fed by pub/sub: no store round trip per request (see README). */
        revocationCache: z.boolean().default(false),
      })
      .prefault({}),
    tokens: tokensSchema.prefault({}),
    cookies: z
      .strictObject({
        access: z.string().regex(HEADER_NAME, 'must be a valid cookie name').optional(),
        refresh: z.string().regex(HEADER_NAME, 'must be a valid cookie name').optional(),
        secure: z.boolean().default(true),
        sameSite: z.enum(['strict', 'lax'], { error: 'must be strict or lax' }).default('lax'),
      })
      .prefault({}),
    csrf: z
      .strictObject({
        mode: z.enum(['header'], { error: 'must be header' }).default('header'),
        allowedOrigins: z
          .array(z.string().refine((o) => isHttpUrl(o) && new URL(o).origin === o, 'must be an origin like https://app.example'))
          .default([]),
      })
      .prefault({}),
    login: loginSchema.prefault({}),
    routes: z.array(routeSchema).default([]),
    watch: z.boolean().default(false),
  })

export const configSchema = baseConfigSchema
  // Also run when a field already failed (zod skips an object's refinements then), so that one `check` reports the
  // duplicates and the settings that contradict each other along with the bad values. Over a config that failed,
  // a value may still be raw input of any shape: a check that cannot read it is skipped (its field was reported).
  .superRefine((config, ctx) => {
    // Each group on its own: one that cannot read a raw value (its field was reported) does not hide the others.
    for (const group of [routeProblems, loginProblems, storeAndCookieProblems, tokenProblems]) {
      try {
        group(config, ctx)
      } catch {
        // only reachable over a config whose own fields failed
      }
    }
  }, { when: () => true })

type ParsedConfig = z.output<typeof baseConfigSchema>
type Ctx = z.RefinementCtx<ParsedConfig>

function routeProblems(config: ParsedConfig, ctx: Ctx): void {
  const names = new Map<string, number>()
  const prefixes = new Map<string, number>()
  if (!Array.isArray(config.routes)) return
  config.routes.forEach((route, i) => {
    // A route whose own fields failed may hold raw input: it is compared with nothing (no false duplicates).
    if (typeof route !== 'object' || route === null || typeof route.name !== 'string' || typeof route.prefix !== 'string') return
    const prefix = normalisePrefix(route.prefix)
    if (names.has(route.name)) {
      ctx.issues.push({ code: 'custom', path: ['routes', i, 'name'], message: `duplicates routes[${names.get(route.name)}].name`, input: route.name })
    } else names.set(route.name, i)
    if (prefixes.has(prefix)) {
      ctx.issues.push({ code: 'custom', path: ['routes', i, 'prefix'], message: `duplicates routes[${prefixes.get(prefix)}].prefix`, input: route.prefix })
    } else prefixes.set(prefix, i)
    if (prefix === config.login.path || prefix.startsWith(`${config.login.path}/`)) {
      ctx.issues.push({ code: 'custom', path: ['routes', i, 'prefix'], message: `overlaps the auth endpoints at ${config.login.path}`, input: route.prefix })
    }
    // The gateway's endpoints are exact paths: `/metrics/dashboard` reaches a route, `/metrics` never would.
    const own = GATEWAY_PATHS.find((p) => prefix === p)
    if (own !== undefined) {
      ctx.issues.push({ code: 'custom', path: ['routes', i, 'prefix'], message: `is the gateway's own endpoint ${own}`, input: route.prefix })
    }
    if (route.auth === 'public' && route.require !== undefined) {
      ctx.issues.push({ code: 'custom', path: ['routes', i, 'require'], message: 'has no effect on a public route', input: route.require })
    }
    if (route.auth === 'public' && route.corsPreflight) {
      ctx.issues.push({ code: 'custom', path: ['routes', i, 'corsPreflight'], message: 'has no effect on a public route (every request passes without auth)', input: true })
    }
    const headers = new Map<string, string>()
    for (const name of Object.keys(route.headers ?? {})) {
      const first = headers.get(name.toLowerCase())
      if (first !== undefined) {
        ctx.issues.push({ code: 'custom', path: ['routes', i, 'headers', name], message: `duplicates routes[${i}].headers.${first} (header names ignore case)`, input: name })
      } else headers.set(name.toLowerCase(), name)
    }
  })
}

function loginProblems(config: ParsedConfig, ctx: Ctx): void {
  if (config.login.provider === 'users' && config.login.users === undefined) {
    ctx.issues.push({ code: 'custom', path: ['login', 'users'], message: 'is required when login.provider is users', input: undefined })
  }
  if (config.login.provider === 'upstream' && config.login.upstream === undefined) {
    ctx.issues.push({ code: 'custom', path: ['login', 'upstream'], message: 'is required when login.provider is upstream', input: undefined })
  }
  const page = config.login.page
  if (page !== undefined) {
    const problem = loginPageProblem(page, config.routes, config.login.path)
    if (problem !== undefined) ctx.issues.push({ code: 'custom', path: ['login', 'page'], message: problem, input: page })
  }
}

function storeAndCookieProblems(config: ParsedConfig, ctx: Ctx): void {
  const backends = [config.redis.url, config.redis.cluster, config.redis.sentinel].filter((b) => b !== undefined)
  if (backends.length > 1) {
    ctx.issues.push({ code: 'custom', path: ['redis'], message: 'give only one of url, cluster or sentinel', input: config.redis })
  }
  if (config.redis.revocationCache && config.redis.cluster !== undefined) {
    ctx.issues.push({ code: 'custom', path: ['redis', 'revocationCache'], message: 'needs redis.url or redis.sentinel, not redis.cluster', input: true })
  }
  const cookies = config.cookies
  const cookie = cookieNames(cookies)
  if (cookie.access === cookie.refresh) {
    const [path, other] = cookies.refresh !== undefined ? (['refresh', 'access'] as const) : (['access', 'refresh'] as const)
    const defaulted = cookies[other] === undefined ? ` (its default, ${cookie[other]})` : ''
    ctx.issues.push({ code: 'custom', path: ['cookies', path], message: `must differ from cookies.${other}${defaulted}`, input: cookie[path] })
  }
  for (const key of ['access', 'refresh'] as const) {
    const secured = /^(__Host-|__Secure-)/i.exec(cookies[key] ?? '')?.[1]
    if (secured !== undefined && !cookies.secure) {
      ctx.issues.push({ code: 'custom', path: ['cookies', key], message: `a ${secured} name needs cookies.secure: true (browsers reject it otherwise)`, input: cookies[key] })
    }
  }
}

/** The lifetimes against each other: each comparison whose two values could be read (an unreadable one was reported). */
function tokenProblems(config: ParsedConfig, ctx: Ctx): void {
  const t = config.tokens
  const read = (d: unknown): d is number => typeof d === 'number'
  if (read(t.accessTtl) && t.accessTtl < 1000) ctx.issues.push({ code: 'custom', path: ['tokens', 'accessTtl'], message: 'must be at least 1s', input: t.accessTtl })
  if (read(t.refreshIdleTtl) && read(t.accessTtl) && t.refreshIdleTtl < t.accessTtl) {
    ctx.issues.push({ code: 'custom', path: ['tokens', 'refreshIdleTtl'], message: 'must not be shorter than tokens.accessTtl', input: t.refreshIdleTtl })
  }
  if (read(t.refreshAbsoluteTtl) && read(t.refreshIdleTtl) && t.refreshAbsoluteTtl < t.refreshIdleTtl) {
    ctx.issues.push({ code: 'custom', path: ['tokens', 'refreshAbsoluteTtl'], message: 'must not be shorter than tokens.refreshIdleTtl', input: t.refreshAbsoluteTtl })
  }
  if (read(t.refreshAhead) && read(t.accessTtl) && t.refreshAhead >= t.accessTtl) {
    ctx.issues.push({ code: 'custom', path: ['tokens', 'refreshAhead'], message: 'must be shorter than tokens.accessTtl', input: t.refreshAhead })
  }
}

/**
 * Why browsers cannot be sent to `page`, or undefined: it must be served by a public route (the longest prefix
 * matching it, by whole segments, as requests are matched). Under a protected route the redirect would loop; with
 * no route, or on the auth endpoints, it would end in 404 or 405.
 */
function loginPageProblem(page: string, routes: { name: string; prefix: string; auth: string }[], loginPath: string): string | undefined {
  // Matched as requests are: on decoded, normalised segments (route prefixes are already in that form).
  const normal = normalisePath(page.split(/[?#]/, 1)[0] as string)
  if (!normal.ok) return `is not a path the gateway would route: ${normal.reason}`
  const segments = normal.segments
  const under = (prefix: string) => {
    const wanted = prefix.split('/').filter((s) => s !== '')
    return wanted.length <= segments.length && wanted.every((s, i) => s === segments[i])
  }
  if (under(loginPath)) return `is under the auth endpoints (${loginPath}): a page must be served by a route`
  if (GATEWAY_PATHS.includes(normal.path)) return `is the gateway's own endpoint ${normal.path}: a page must be served by a route`
  const route = routes.filter((r) => under(r.prefix)).sort((a, b) => normalisePrefix(b.prefix).length - normalisePrefix(a.prefix).length)[0]
  if (route === undefined) return `no route serves ${normal.path}: browsers sent there would get 404 (add a public route for the page)`
  if (route.auth === 'required') {
    return `is served by route ${route.name} (auth: required): browsers sent there would be redirected again, in a loop (make the page's route public or optional)`
  }
  return undefined
}

/** `/api/orders/` and `/api/orders` are the same prefix. */
export function normalisePrefix(prefix: string): string {
  return prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
}

export type GatewayConfig = z.output<typeof configSchema>
export type RouteConfig = GatewayConfig['routes'][number]
