import { splitTemplate } from '../auth/claim-rules.js'
import type { UserRecord } from '../auth/users-file.js'
import type { ConfigProblem } from '../errors.js'
import { REGISTERED_CLAIMS } from '../tokens/registered-claims.js'
import type { GatewayConfig } from './schema.js'

/**
 * What a configuration may say but almost certainly does not mean: valid, so not problems (`check` still says ok),
 * but printed by `check` on stderr and logged by the gateway at start and at every reload.
 */
export function configWarnings(config: GatewayConfig, users: Map<string, UserRecord> | undefined): ConfigProblem[] {
  return [
    ...unusedLoginWarnings(config.login), ...templateWarnings(config), ...unknownClaimWarnings(config, users),
    ...lifetimeWarnings(config.tokens), ...sharedStoreKeyWarnings(config), ...insecureCookieWarnings(config),
  ]
}

/** Addresses only this machine can reach. */
const LOOPBACK_HOST = /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\])$/i

/**
 * Cookies without `Secure` on a gateway that listens beyond this machine: browsers send the session cookies over
 * plain http too, where anyone on the path can read and replay them. Meant for local development on a loopback
 * address (the demo); behind a TLS-terminating proxy the cookies still need it (the browser's side is https).
 */
function insecureCookieWarnings(config: GatewayConfig): ConfigProblem[] {
  if (config.cookies.secure || LOOPBACK_HOST.test(config.server.host)) return []
  return [{
    path: 'cookies.secure',
    message: `is false while the gateway listens on ${config.server.host}: browsers send the session cookies over plain http too, where they can be read and replayed (false is for local development on 127.0.0.1; behind a TLS-terminating proxy keep it true)`,
  }]
}

/**
 * A Redis store (several instances, restarts that keep sessions) with no key file: every instance signs with a key
 * of its own, made at start, so one instance refuses another's tokens and a restart invalidates every access token.
 * With the in-process store that is the demo setup, said at start.
 */
function sharedStoreKeyWarnings(config: GatewayConfig): ConfigProblem[] {
  const redis = config.redis
  const shared = redis.cluster !== undefined || redis.sentinel !== undefined || (redis.url !== undefined && redis.url !== 'memory://')
  if (!shared || config.tokens.keys !== 'ephemeral') return []
  return [{
    path: 'tokens.keys',
    message: 'is not set, with a Redis store: each instance signs with a key of its own made at start, so one instance refuses the tokens of another and a restart invalidates every access token (write a key set with `sessiongate keygen` and name it here)',
  }]
}

/** The login block of the provider not chosen: nothing reads it, so a provider that was meant is not in force. */
function unusedLoginWarnings(login: GatewayConfig['login']): ConfigProblem[] {
  if (login.provider === 'users' && login.upstream !== undefined) {
    return [{ path: 'login.upstream', message: 'is not used: login.provider is users, so logins are checked against login.users (set provider: upstream to use it)' }]
  }
  if (login.provider === 'upstream' && login.users !== undefined) {
    return [{ path: 'login.users', message: 'is not used: login.provider is upstream, so logins are checked by login.upstream.url (the users file is not read)' }]
  }
  return []
}

/** A claim name between braces with spaces (`{ sub }`), or an opening brace and a name not closed (`{sub`, `{sub!}`). */
const MISTYPED_PLACEHOLDER = /\{\s*[A-Za-z0-9_.:-]+\s*\}|\{[A-Za-z0-9_.:-]+(?![A-Za-z0-9_.:}-])/

/**
 * What looks like a mistyped `{claim}` placeholder in a header template: `"{ sub }"`, `"{sub"`, `"{sub!}"`, or
 * doubled braces (`"{{sub}}"`, which sends `{user-1}`). It is sent literally on every request. Other braces, such as
 * a JSON-shaped value (`'{"user":"{sub}"}'`), are fine. Public routes inject nothing.
 */
function templateWarnings(config: GatewayConfig): ConfigProblem[] {
  const warnings: ConfigProblem[] = []
  config.routes.forEach((route, i) => {
    if (route.auth === 'public') return
    for (const [header, template] of Object.entries(route.headers)) {
      const { parts } = splitTemplate(template)
      const doubled = parts.some((literal, k) => k < parts.length - 1 && literal.endsWith('{') && (parts[k + 1] as string).startsWith('}'))
      if (doubled || parts.some((literal) => MISTYPED_PLACEHOLDER.test(literal))) {
        warnings.push({
          path: `routes[${i}].headers.${header}`,
          message: `${JSON.stringify(template)} looks like a mistyped placeholder, sent to the upstream as written: a placeholder is {claim}, in single braces without spaces (letters, digits and _ . : -)`,
        })
      }
    }
  })
  return warnings
}

/**
 * Claims a route reads (`headers` templates, `require`) that no login can put in a token: the gateway's own
 * claims, the users file's claims (any user's) or `login.upstream.claims`. Such a header is never sent and such a
 * requirement refuses every request with 403: almost certainly a misspelt claim. Warnings, not errors: a users file
 * may gain the claim later, and the configuration stays valid.
 */
function unknownClaimWarnings(config: GatewayConfig, users: Map<string, UserRecord> | undefined): ConfigProblem[] {
  const known = new Set<string>(REGISTERED_CLAIMS)
  if (config.login.provider === 'users') for (const user of users?.values() ?? []) for (const name of Object.keys(user.claims)) known.add(name)
  else for (const name of Object.keys(config.login.upstream?.claims ?? {})) known.add(name)
  const source = config.login.provider === 'users' ? 'no user of the users file has it' : 'login.upstream.claims does not map it'
  const warnings: ConfigProblem[] = []
  config.routes.forEach((route, i) => {
    if (route.auth === 'public') return
    for (const [header, template] of Object.entries(route.headers)) {
      const claims = new Set(splitTemplate(template).claims)
      const unknown = [...claims].filter((name) => !known.has(name))
      if (unknown.length > 0) {
        warnings.push({
          path: `routes[${i}].headers.${header}`,
          message: `reads ${unknown.map((name) => `{${name}}`).join(', ')}, a claim no login sets (${source}): the upstream gets ${unknown.length === claims.size ? 'no such header' : 'an empty value there'}`,
        })
      }
    }
    for (const name of Object.keys(route.require ?? {})) {
      if (!known.has(name)) {
        warnings.push({ path: `routes[${i}].require.${name}`, message: `is a claim no login sets (${source}): every request to this route is refused with 403` })
      }
    }
  })
  return warnings
}

/** The longest reuse grace that is not a warning: parallel requests and retries land within seconds. */
const LONGEST_USUAL_GRACE_MS = 60_000

/**
 * A clock tolerance as long as the access token's life accepts an expired token for longer than it was valid; a
 * reuse grace of minutes hands a replayed refresh token the live pair, instead of revoking the family, for that long.
 */
function lifetimeWarnings(tokens: GatewayConfig['tokens']): ConfigProblem[] {
  const warnings: ConfigProblem[] = []
  if (tokens.clockTolerance >= tokens.accessTtl) {
    warnings.push({
      path: 'tokens.clockTolerance',
      message: `is not shorter than tokens.accessTtl: an access token is still accepted ${tokens.clockTolerance / 1000}s after its expiry, at least as long again as it was valid (the tolerance is meant for clock skew, a few seconds)`,
    })
  }
  if (tokens.reuseGrace > LONGEST_USUAL_GRACE_MS) {
    warnings.push({
      path: 'tokens.reuseGrace',
      message: `is over ${LONGEST_USUAL_GRACE_MS / 1000}s: for ${tokens.reuseGrace / 1000}s after a rotation, a replayed refresh token gets the live pair instead of revoking the session (parallel requests need seconds; a slow response holds the grace open by itself)`,
    })
  }
  return warnings
}
