import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { hashPassword } from '../../src/auth/password.js'
import { loadConfig } from '../../src/config/load.js'
import { buildGateway, type Gateway } from '../../src/server/build-gateway.js'
import { REVOCATION_HOLD_MS, waitMonotonic } from '../../src/sessions/revocation-cache.js'
import type { SessionStore } from '../../src/session-store/session-store.js'
import { generatePrivateJwk, type SigningAlgorithm } from '../../src/tokens/keys.js'

export interface TestUser {
  username: string
  password: string
  sub?: string
  claims?: Record<string, unknown>
}

export const DEFAULT_USERS: TestUser[] = [
  { username: 'alice', password: 'alice-pw', sub: 'user-1', claims: { roles: ['admin'], email: 'alice@example.com' } },
  { username: 'bob', password: 'bob-pw', sub: 'user-2', claims: { roles: ['user'] } },
]

/** A private JWK Set written to a temp folder (tests generate their keys; none is committed). */
export async function writeKeys(dir: string, alg: SigningAlgorithm = 'EdDSA', count = 1): Promise<{ file: string; keys: object[] }> {
  const keys = []
  for (let i = 0; i < count; i++) keys.push(await generatePrivateJwk(alg))
  const file = join(dir, 'keys.jwks.json')
  writeFileSync(file, JSON.stringify({ keys }))
  return { file, keys }
}

export async function writeUsers(dir: string, users: TestUser[] = DEFAULT_USERS): Promise<string> {
  const file = join(dir, 'users.yaml')
  const entries = await Promise.all(
    users.map(async (u) => ({ username: u.username, password: await hashPassword(u.password, 10), sub: u.sub, claims: u.claims ?? {} })),
  )
  writeFileSync(file, stringify({ users: entries }))
  return file
}

export interface StartedGateway {
  url: string
  port: number
  gateway: Gateway
  dir: string
  configFile: string
  keysFile: string
  close(): Promise<void>
}

export interface GatewayOptions {
  /** Merged over the defaults (section by section). */
  config?: Record<string, unknown>
  redisUrl?: string
  users?: TestUser[]
  alg?: SigningAlgorithm
  /** Reuse the key file (and so the signing keys) of another test gateway. */
  keysFile?: string
  store?: SessionStore
  /** Fastify's logger option (default: off). */
  logger?: NonNullable<Parameters<typeof buildGateway>[1]>['logger']
}

/** Writes a config (temp folder, fresh keys, hashed users) and starts a real gateway on a free port. */
export async function startGateway(options: GatewayOptions = {}): Promise<StartedGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'sg-gw-'))
  const keysFile = options.keysFile ?? (await writeKeys(dir, options.alg ?? 'EdDSA')).file
  const usersFile = await writeUsers(dir, options.users)
  const extra = options.config ?? {}
  const section = (name: string) => (extra[name] ?? {}) as Record<string, unknown>
  const config = {
    ...extra,
    server: { host: '127.0.0.1', port: 0, ...section('server') },
    redis: { url: options.redisUrl ?? 'memory://', ...section('redis') },
    tokens: { issuer: 'https://gateway.test', audience: 'test-api', algorithm: options.alg ?? 'EdDSA', keys: keysFile, ...section('tokens') },
    cookies: { secure: false, ...section('cookies') },
    login: { users: usersFile, ...section('login') },
    routes: extra.routes ?? [],
  }
  const configFile = join(dir, 'gateway.yaml')
  writeFileSync(configFile, stringify(config))
  const loaded = await loadConfig(configFile, {})
  const gateway = await buildGateway(loaded, { logger: options.logger ?? false, ...(options.store ? { store: options.store } : {}) })
  await gateway.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = gateway.app.server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    gateway,
    dir,
    configFile,
    keysFile,
    async close() {
      await gateway.app.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * Waits out the window in which a revocation written to the store behind the gateway's back (by another instance, an
 * operator, or a test calling the store directly) may still go unseen: every instance is promised to refuse it within
 * REVOCATION_COVER_MS of the write (strict mode's barrier cover). Waited as the gateway holds its own answers that
 * tell of a revocation: REVOCATION_HOLD_MS by performance.now() (a timer may fire a millisecond early by it).
 */
export async function afterOutsideRevocation(): Promise<void> {
  await waitMonotonic(REVOCATION_HOLD_MS)
}
