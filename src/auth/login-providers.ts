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
  /** `clientIp`: the address the login came from (the upstream provider passes it on as X-Forwarded-For). */
  authenticate(username: string, password: string, clientIp?: string): Promise<LoginIdentity | undefined>
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

const WRONG_CREDENTIALS = new Set([400, 401, 403, 404, 422])

/** The most of a login service's answer that is read: a subject and a few claims, far below this. */
export const MAX_LOGIN_ANSWER_BYTES = 1 << 20

/**
 * `login.provider: upstream`: the legacy API's own login endpoint checks the credentials. A 2xx JSON answer
 * gives the subject and claims by JSON pointer; 400, 401, 403, 404 or 422 is a wrong password; another status, no
 * answer, an answer over 1 MiB or not JSON is the login service failing (502, 504 when it is too slow), never
 * counted as a failed login.
 */
export class UpstreamLoginProvider implements LoginProvider {
  constructor(private readonly upstream: NonNullable<GatewayConfig['login']['upstream']>) {}

  async authenticate(username: string, password: string, clientIp?: string): Promise<LoginIdentity | undefined> {
    const signal = AbortSignal.timeout(this.upstream.timeout)
    const timedOut = () => new GatewayError('gateway_timeout', 'The login service did not answer in time.')
    let response: Response
    try {
      response = await fetch(this.upstream.url, {
        method: 'POST',
        // X-Forwarded-For: a legacy endpoint that locks out by address sees the client's, not the gateway's.
        headers: { 'content-type': 'application/json', accept: 'application/json', ...(clientIp ? { 'x-forwarded-for': clientIp } : {}) },
        body: JSON.stringify({ username, password }),
        signal,
        redirect: 'manual',
      })
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') throw timedOut()
      throw new GatewayError('bad_gateway', 'The login service could not be reached.')
    }
    if (response.status < 200 || response.status > 299) {
      await response.body?.cancel()
      // What a login endpoint says of wrong credentials; anything else (5xx, 429, 408, a redirect) is the service
      // failing, which must not count against the user's rate limit.
      if (WRONG_CREDENTIALS.has(response.status)) return undefined
      throw new GatewayError('bad_gateway', `The login service failed (${response.status}).`)
    }
    let text: string
    try {
      text = await boundedText(response, MAX_LOGIN_ANSWER_BYTES)
    } catch (err) {
      if (signal.aborted) throw timedOut()
      throw err instanceof GatewayError ? err : new GatewayError('bad_gateway', 'The login service\'s answer broke off.')
    }
    let body: unknown
    try {
      body = JSON.parse(text)
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

/** The body as text, refused (502) past `limit` bytes without reading the rest. */
async function boundedText(response: Response, limit: number): Promise<string> {
  const tooLarge = () => new GatewayError('bad_gateway', `The login service's answer is over ${limit} bytes.`)
  if (Number(response.headers.get('content-length') ?? 0) > limit) {
    await response.body?.cancel()
    throw tooLarge()
  }
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of response.body ?? []) {
    size += chunk.byteLength
    if (size > limit) {
      await response.body?.cancel().catch(() => {})
      throw tooLarge()
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

export async function createLoginProvider(config: GatewayConfig, users: Map<string, UserRecord> | undefined): Promise<LoginProvider> {
  if (config.login.provider === 'upstream') {
    return new UpstreamLoginProvider(config.login.upstream as NonNullable<GatewayConfig['login']['upstream']>)
  }
  return UsersFileProvider.create(users ?? new Map())
}
