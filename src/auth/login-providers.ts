import type { GatewayConfig } from '../config/schema.js'
import { GatewayError } from '../errors.js'
import { hashPassword, parsePasswordHash, verifyPassword } from './password.js'
import type { UserRecord } from './users-file.js'

export interface LoginIdentity {
  sub: string
  claims: Record<string, unknown>
}

/** Checks credentials: an identity, or undefined for wrong ones. Infrastructure failures throw GatewayError. */
export interface LoginProvider {
  authenticate(username: string, password: string): Promise<LoginIdentity | undefined>
}

/** The users file: scrypt hashes, the same work for unknown users as for wrong passwords. */
export class UsersFileProvider implements LoginProvider {
  private constructor(
    private readonly users: Map<string, UserRecord>,
    private readonly decoy: NonNullable<ReturnType<typeof parsePasswordHash>>,
  ) {}

  static async create(users: Map<string, UserRecord>): Promise<UsersFileProvider> {
    const sample = users.values().next().value as UserRecord | undefined
    const cost = sample ? Math.log2(sample.passwordHash.options.N ?? 2 ** 15) : 15
    const decoy = parsePasswordHash(await hashPassword('decoy password for unknown users', cost))
    return new UsersFileProvider(users, decoy as NonNullable<typeof decoy>)
  }

  async authenticate(username: string, password: string): Promise<LoginIdentity | undefined> {
    const user = this.users.get(username)
    const ok = await verifyPassword(password, user?.passwordHash ?? this.decoy)
    return ok && user ? { sub: user.sub, claims: structuredClone(user.claims) } : undefined
  }
}

/** RFC 6901: the value at `pointer` in `doc`, or undefined. */
export function resolvePointer(doc: unknown, pointer: string): unknown {
  if (pointer === '') return doc
  let node = doc
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) return undefined
    node = (node as Record<string, unknown>)[key]
  }
  return node
}

/**
 * `login.provider: upstream`: the legacy API's own login endpoint checks the credentials. A 2xx JSON answer
 * gives the subject and claims by JSON pointer; any other status is a wrong password; no answer is a 502/504.
 */
export class UpstreamLoginProvider implements LoginProvider {
  constructor(private readonly upstream: NonNullable<GatewayConfig['login']['upstream']>) {}

  async authenticate(username: string, password: string): Promise<LoginIdentity | undefined> {
    let response: Response
    try {
      response = await fetch(this.upstream.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ username, password }),
        signal: AbortSignal.timeout(this.upstream.timeout),
        redirect: 'manual',
      })
    } catch (err) {
      const timedOut = (err as Error).name === 'TimeoutError'
      throw new GatewayError(timedOut ? 'gateway_timeout' : 'bad_gateway', timedOut ? 'The login service did not answer in time.' : 'The login service could not be reached.')
    }
    if (response.status < 200 || response.status > 299) {
      await response.body?.cancel()
      return undefined
    }
    let body: unknown
    try {
      body = await response.json()
    } catch {
      throw new GatewayError('bad_gateway', 'The login service answered with something other than JSON.')
    }
    const sub = resolvePointer(body, this.upstream.subject)
    if ((typeof sub !== 'string' || sub === '') && typeof sub !== 'number') {
      throw new GatewayError('bad_gateway', `The login service's answer has no subject at ${this.upstream.subject}.`)
    }
    const claims: Record<string, unknown> = {}
    for (const [name, pointer] of Object.entries(this.upstream.claims)) {
      const value = resolvePointer(body, pointer)
      if (value !== undefined) claims[name] = value
    }
    return { sub: String(sub), claims }
  }
}

export async function createLoginProvider(config: GatewayConfig, users: Map<string, UserRecord> | undefined): Promise<LoginProvider> {
  if (config.login.provider === 'upstream') {
    return new UpstreamLoginProvider(config.login.upstream as NonNullable<GatewayConfig['login']['upstream']>)
  }
  return UsersFileProvider.create(users ?? new Map())
}
