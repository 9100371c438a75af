/**
 * Request paths are matched on decoded, normalised segments, so that `/api/orders/../admin`, `%2e%2e`, `//`
 * and encoded slashes can neither escape a route nor reach one they should not.
 *
 * - empty segments (`//`) and `.` are dropped, `..` removes the previous segment (never above the root);
 * - a segment that decodes to something holding `/`, `\` or a control character is refused (encoded slashes
 *   would mean different things to the gateway and to the upstream);
 * - malformed percent-encoding is refused;
 * - a segment that begins with `..` (`...`, `..a`), or ends with `..` before another segment (`a../b`), is refused:
 *   path filters and upstream servers read text holding `/..` or `../` as traversal in different ways
 *   (@fastify/reply-from, which the gateway forwarded with before, refused it outright), so the gateway refuses
 *   it with its own reason rather than forward what the upstream may resolve differently.
 *
 * - a raw `;` starts a segment's path parameters (RFC 3986 §3.3), which servers such as Tomcat, Jetty and Spring
 *   drop before they route (`/admin;x/users` is `/admin/users` to them), where others (Express, Go, nginx) read
 *   `admin;x` as one name. A path with parameters is therefore read both ways: `segments` without them,
 *   `literal` with them, and the route table refuses it when the two readings fall under different routes
 *   (RouteTable.match). It is forwarded with its parameters (a `;jsessionid=` link on a page keeps working). A dot
 *   segment with parameters (`..;x`, which the first kind resolve as `..`) is refused, and so is a segment whose
 *   text with its parameters holds what the dot-segment rule above refuses (`x;../`). An encoded `%3B` is part of
 *   the segment's name, for both kinds of server.
 *
 * The upstream receives the normalised path, so it sees exactly what was matched, with each kept segment as the
 * client encoded it: a percent-encoded reserved character stays encoded (`a%3Bb` is the name `a;b`, where a raw
 * `;` starts a path parameter for many servers; `C%2B%2B` is not `C++`), an encoded unreserved one is decoded
 * (RFC 3986 §6.2.2.2), and what is not allowed raw is encoded.
 */
export type NormalisedPath =
  | {
      ok: true
      /** Decoded segments without their path parameters: what routes are matched on. */
      segments: string[]
      path: string
      forwarded: string[]
      /** Only when some segment has path parameters: the decoded segments with them (see above). */
      literal?: string[]
    }
  | { ok: false; reason: string }

const DOTTED_SEGMENT = "a path segment that begins with '..', or ends with '..' before another segment, cannot be forwarded"

const DOTTED_PARAMETERS = "a '.' or '..' path segment with path parameters (';') cannot be forwarded"

// eslint-disable-next-line no-control-regex
const FORBIDDEN_IN_SEGMENT = /[/\\\u0000-\u001f\u007f]/

/** Segments of unreserved and sub-delim characters only (no `;`: no path parameters), none empty and none starting with a dot. */
const CLEAN_PATH = /^(?:\/[A-Za-z0-9\-_~!$&'()*+,=:@][A-Za-z0-9\-._~!$&'()*+,=:@]*)*\/?$/

export function normalisePath(rawPath: string): NormalisedPath {
  // Fast path, most requests: nothing to decode, drop or resolve, and every character is already a pchar, so
  // the path is its own normal form.
  if (rawPath.charCodeAt(0) === 47 && CLEAN_PATH.test(rawPath)) {
    // No segment starts with a dot here, so only `a../b` can hold what the proxy refuses.
    if (rawPath.includes('../')) return { ok: false, reason: DOTTED_SEGMENT }
    const segments = rawPath.split('/')
    segments.shift()
    if (segments[segments.length - 1] === '') segments.pop()
    return { ok: true, segments, path: rawPath, forwarded: segments }
  }
  if (!rawPath.startsWith('/')) return { ok: false, reason: 'the path must start with /' }
  const segments: string[] = []
  const forwarded: string[] = []
  const literal: string[] = []
  let withParameters = false
  for (const raw of rawPath.split('/')) {
    let whole = raw
    if (raw.includes('%')) {
      try {
        whole = decodeURIComponent(raw)
      } catch {
        return { ok: false, reason: 'the path has malformed percent-encoding' }
      }
    }
    if (FORBIDDEN_IN_SEGMENT.test(whole)) {
      return { ok: false, reason: 'the path has an encoded slash, backslash or control character' }
    }
    // The segment's name, before its path parameters (a raw `;`), is what is matched.
    const parameters = raw.indexOf(';')
    const name = parameters < 0 ? raw : raw.slice(0, parameters)
    const segment = parameters < 0 ? whole : decodeURIComponent(name)
    if (parameters >= 0 && (segment === '.' || segment.startsWith('..'))) return { ok: false, reason: DOTTED_PARAMETERS }
    if (segment === '' || segment === '.') continue
    if (segment === '..') {
      segments.pop()
      forwarded.pop()
      literal.pop()
      continue
    }
    if (parameters >= 0) withParameters = true
    segments.push(segment)
    forwarded.push(raw === whole ? encodeSegment(raw) : asEncodedByClient(raw))
    literal.push(whole)
  }
  const trailingSlash = rawPath.length > 1 && rawPath.endsWith('/') && segments.length > 0
  if (dotted(segments, trailingSlash) || (withParameters && dotted(literal, trailingSlash))) return { ok: false, reason: DOTTED_SEGMENT }
  const path = `/${forwarded.join('/')}${trailingSlash ? '/' : ''}`
  return withParameters ? { ok: true, segments, path, forwarded, literal } : { ok: true, segments, path, forwarded }
}

/** Whether a segment begins with `..`, or ends with `..` before another segment (or a trailing slash). */
function dotted(segments: readonly string[], trailingSlash: boolean): boolean {
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as string
    if (segment.startsWith('..') || (segment.endsWith('..') && (i < segments.length - 1 || trailingSlash))) return true
  }
  return false
}

const UNRESERVED = /^[A-Za-z0-9\-._~]$/
const PCHAR = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]$/

/** A segment holding percent-encoding (already checked to decode), as forwarded: see NormalisedPath. */
function asEncodedByClient(raw: string): string {
  let out = ''
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i] as string
    if (c === '%') {
      const hex = raw.slice(i + 1, i + 3).toUpperCase()
      const byte = String.fromCharCode(parseInt(hex, 16))
      out += UNRESERVED.test(byte) ? byte : `%${hex}`
      i += 2
    } else out += PCHAR.test(c) ? c : encodeURIComponent(c)
  }
  return out
}

const PCHARS_ONLY = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]*$/

/** Percent-encodes what RFC 3986 does not allow raw in a path segment (pchar). */
export function encodeSegment(segment: string): string {
  if (PCHARS_ONLY.test(segment)) return segment
  return encodeURIComponent(segment).replace(/%(2[146789ABC]|3[ABD]|40)/gi, (m) => decodeURIComponent(m))
}

/** `http://` or `https://` and the authority after it (captured). */
const ABSOLUTE_FORM = /^https?:\/\/([^/?#]*)/i

/**
 * The origin-form of a request target: `http://host/a?b` (the absolute-form, which RFC 9112 §3.2.2 says a server
 * must accept) becomes `/a?b`; anything else is returned as it is (and refused later if it is not a path).
 */
export function originForm(target: string): string {
  if (target.charCodeAt(0) === 47) return target
  const authority = ABSOLUTE_FORM.exec(target)
  if (!authority) return target
  const rest = target.slice(authority[0].length)
  return rest.startsWith('/') ? rest : `/${rest}`
}

/**
 * The authority of an absolute-form target (`http://api.example:8080/a` -> `api.example:8080`), which RFC 9112
 * §3.2.2 says stands for the request's host in place of its Host header; undefined for any other form (or none).
 */
export function absoluteFormAuthority(target: string | undefined): string | undefined {
  if (target === undefined || target.charCodeAt(0) === 47) return undefined
  const authority = ABSOLUTE_FORM.exec(target)?.[1]
  if (authority === undefined) return undefined
  // The host without userinfo (`user:pw@host`: never passed on), and only a plain host[:port]; else none.
  const host = authority.slice(authority.lastIndexOf('@') + 1)
  return HOST_AND_PORT.test(host) ? host : undefined
}

/** A registered name or IPv4 address, or a bracketed IPv6 address, with an optional port. */
const HOST_AND_PORT = /^(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/

/** Splits `/a/b?x=1` into the path and the query string (with its `?`, or empty). */
export function splitUrl(url: string): { path: string; query: string } {
  const q = url.indexOf('?')
  return q === -1 ? { path: url, query: '' } : { path: url.slice(0, q), query: url.slice(q) }
}
