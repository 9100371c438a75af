import { normalisePrefix, type RouteConfig } from '../config/schema.js'
import { encodeSegment, normalisePath } from './normalise-path.js'

/** A configured route, ready for matching and proxying. */
export interface Route {
  config: RouteConfig
  /** Decoded prefix segments: `/api/orders` -> ['api', 'orders']. */
  segments: string[]
  upstreamOrigin: string
  /** The Host header the upstream is sent (`host[:port]` of its URL). */
  upstreamHost: string
  /** The upstream URL's own path, prepended to what is forwarded (no trailing slash). */
  upstreamBasePath: string
  /** What replaces the matched prefix (no trailing slash), or undefined to keep it. */
  rewriteSegments: string[] | undefined
}

export interface RouteMatch {
  route: Route
  /** Path and query to request from the upstream origin. */
  upstreamPath: string
}

/** Longest-prefix matching on whole segments: `/api/orders` matches `/api/orders/1`, not `/api/ordersX`. */
export class RouteTable {
  private readonly routes: Route[]
  /**
   * Every header name any route injects (lower case). Inbound copies of all of them are removed on every route,
   * public ones included, so that no route can be used to reach an upstream with a forged identity.
   */
  readonly injectedHeaders: ReadonlySet<string>

  constructor(routes: readonly RouteConfig[]) {
    this.routes = routes
      .map((config) => {
        const upstream = new URL(config.upstream)
        const base = upstream.pathname.replace(/\/+$/, '')
        const prefixSegments = normalisePrefix(config.prefix).split('/').filter(Boolean).map((s) => decodeURIComponent(s))
        const rewrite =
          config.rewritePrefix === undefined
            ? undefined
            : config.rewritePrefix.split('/').filter(Boolean).map((s) => decodeURIComponent(s))
        return { config, segments: prefixSegments, upstreamOrigin: upstream.origin, upstreamHost: upstream.host, upstreamBasePath: base, rewriteSegments: rewrite }
      })
      .sort((a, b) => b.segments.length - a.segments.length)
    this.injectedHeaders = new Set(routes.flatMap((r) => Object.keys(r.headers).map((h) => h.toLowerCase())))
  }

  get size(): number {
    return this.routes.length
  }

  all(): readonly Route[] {
    return this.routes
  }

  /**
   * The route for an already-normalised path, or undefined; 'ambiguous' when its path parameters decide the route:
   * read without them (as Tomcat, Jetty and Spring route) and with them (as Express, Go or nginx do), the path falls
   * under two different routes (or under one and none), so whichever the upstream is, one reading would escape the
   * rules of the route the other was matched by.
   */
  match(
    normalised: { segments: readonly string[]; path: string; forwarded: readonly string[]; literal?: readonly string[] },
    query: string,
  ): RouteMatch | undefined | 'ambiguous' {
    const { segments } = normalised
    const route = this.longestPrefixOf(segments)
    if (normalised.literal !== undefined && this.longestPrefixOf(normalised.literal) !== route) return 'ambiguous'
    if (route === undefined) return undefined
    // The normalised path is already the encoded segments: kept as it is unless the prefix is rewritten.
    if (route.rewriteSegments === undefined) return { route, upstreamPath: route.upstreamBasePath + normalised.path + query }
    const all = [...route.rewriteSegments.map(encodeSegment), ...normalised.forwarded.slice(route.segments.length)]
    let path = `${route.upstreamBasePath}/${all.join('/')}`
    if (normalised.path.length > 1 && normalised.path.endsWith('/') && all.length > 0) path += '/'
    return { route, upstreamPath: path + query }
  }

  /** Normalises a raw request path and matches it in one step (tests use this). */
  matchUrl(rawPath: string, query = ''): RouteMatch | undefined | 'invalid' | 'ambiguous' {
    const normalised = normalisePath(rawPath)
    if (!normalised.ok) return 'invalid'
    return this.match(normalised, query)
  }

  /** The route with the longest prefix of `segments` (routes are sorted longest first), or undefined. */
  private longestPrefixOf(segments: readonly string[]): Route | undefined {
    for (const route of this.routes) if (startsWith(segments, route.segments)) return route
    return undefined
  }
}

function startsWith(segments: readonly string[], prefix: readonly string[]): boolean {
  if (prefix.length > segments.length) return false
  for (let i = 0; i < prefix.length; i++) if (segments[i] !== prefix[i]) return false
  return true
}
