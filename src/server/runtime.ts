import type { FastifyBaseLogger } from 'fastify'
import type { LoadedConfig } from '../config/load.js'
import type { GatewayConfig } from '../config/schema.js'
import { cookieNames, type CookieNames } from '../auth/cookies.js'
import { LoginRateLimit } from '../auth/login-rate-limit.js'
import { createLoginProvider, type LoginProvider } from '../auth/login-providers.js'
import { RouteTable } from '../routing/route-table.js'
import type { SessionStore } from '../session-store/session-store.js'
import { RevocationCache } from '../sessions/revocation-cache.js'
import { Sessions } from '../sessions/sessions.js'
import type { Metrics } from './metrics.js'

/**
 * Everything a request needs, built from one configuration. A reload builds a new one and swaps it in
 * whole; a request in flight keeps the one it started with.
 */
export interface Runtime {
  config: GatewayConfig
  loaded: LoadedConfig
  routes: RouteTable
  sessions: Sessions
  cookies: CookieNames
  login: LoginProvider
  rateLimit: LoginRateLimit
}

export async function buildRuntime(
  loaded: LoadedConfig,
  store: SessionStore,
  metrics: Metrics,
  revocationCache: RevocationCache | undefined,
  log?: FastifyBaseLogger,
): Promise<Runtime> {
  const { config } = loaded
  // With the users file, refreshes follow it: current claims, and no refresh for a user no longer in it.
  const accounts = config.login.provider === 'users' && loaded.users ? new Map([...loaded.users.values()].map((u) => [u.sub, u])) : undefined
  const sessions = new Sessions(
    store,
    loaded.keys,
    config,
    {
      onRefresh: (outcome) => {
        metrics.refreshes.inc({ result: outcome })
        if (outcome === 'reused') metrics.reuseDetections.inc()
      },
      onReuseDetected: (sid) =>
        log?.warn({ sid }, 'refresh token reuse: a rotated refresh token was presented again after the grace; the whole session is revoked'),
      onDenied: (reason) => metrics.denials.inc({ reason }),
      onOversized: (sid, what, bytes) =>
        log?.error({ sid, bytes }, `refresh refused: the user's claims (users file) now make an ${what} too large; the session was ended`),
    },
    revocationCache,
    accounts,
  )
  const runtime: Runtime = {
    config,
    loaded,
    routes: new RouteTable(config.routes),
    sessions,
    cookies: cookieNames(config.cookies),
    login: await createLoginProvider(config, loaded.users),
    rateLimit: new LoginRateLimit(store, config.login.rateLimit),
  }
  // At start and at every reload, once the configuration is built: what it probably got wrong.
  for (const w of loaded.warnings) log?.warn({ path: w.path }, `configuration: ${w.path} ${w.message}`)
  return runtime
}

/** Settings that a reload cannot change in a running process (they need a restart). */
export function restartOnlyChanges(before: GatewayConfig, after: GatewayConfig): string[] {
  const changed: string[] = []
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
  if (!same(before.server, after.server)) changed.push('server')
  if (!same(before.redis, after.redis)) changed.push('redis')
  if (before.login.path !== after.login.path) changed.push('login.path')
  // The file watchers are set up at start (cli/run.ts): turning `watch` on or off takes a restart too.
  if (before.watch !== after.watch) changed.push('watch')
  return changed
}

export function logReloadIgnored(log: FastifyBaseLogger, fields: string[]): void {
  if (fields.length > 0) log.warn({ fields }, 'reload: these settings only take effect after a restart')
}
