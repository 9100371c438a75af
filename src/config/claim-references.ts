import { templateClaims } from '../auth/claim-rules.js'
import type { UserRecord } from '../auth/users-file.js'
import type { ConfigProblem } from '../errors.js'
import { REGISTERED_CLAIMS } from '../tokens/registered-claims.js'
import type { GatewayConfig } from './schema.js'

/**
 * Claims a route reads (`headers` templates, `require`) that no login can put in a token: the gateway's own
 * claims, the users file's claims (any user's) or `login.upstream.claims`. Such a header is never sent and such a
 * requirement refuses every request with 403: almost certainly a misspelt claim. Warnings, not errors: a users file
 * may gain the claim later, and the configuration stays valid.
 */
export function unknownClaimWarnings(config: GatewayConfig, users: Map<string, UserRecord> | undefined): ConfigProblem[] {
  const known = new Set<string>(REGISTERED_CLAIMS)
  if (config.login.provider === 'users') for (const user of users?.values() ?? []) for (const name of Object.keys(user.claims)) known.add(name)
  else for (const name of Object.keys(config.login.upstream?.claims ?? {})) known.add(name)
  const source = config.login.provider === 'users' ? 'no user of the users file has it' : 'login.upstream.claims does not map it'
  const warnings: ConfigProblem[] = []
  config.routes.forEach((route, i) => {
    if (route.auth === 'public') return
    for (const [header, template] of Object.entries(route.headers)) {
      const unknown = templateClaims(template).filter((name) => !known.has(name))
      if (unknown.length > 0) {
        warnings.push({
          path: `routes[${i}].headers.${header}`,
          message: `reads ${unknown.map((name) => `{${name}}`).join(', ')}, a claim no login sets (${source}): the upstream gets ${unknown.length === templateClaims(template).length ? 'no such header' : 'an empty value there'}`,
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
