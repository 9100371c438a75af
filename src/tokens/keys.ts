import { readFile } from 'node:fs/promises'
import { hkdfSync } from 'node:crypto'
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose'
import type { ConfigProblem } from '../errors.js'

export type SigningAlgorithm = 'EdDSA' | 'ES256' | 'RS256'

export interface SigningKey {
  kid: string
  alg: SigningAlgorithm
  privateKey: CryptoKey
  publicKey: CryptoKey
  publicJwk: JWK
  /** A secret derived from the private key, for MACs on refresh tokens (never leaves the process). */
  macKey: Buffer
}

/** The key ring: the first key signs, every key verifies. */
export interface KeyRing {
  signing: SigningKey
  byKid: Map<string, SigningKey>
  /** What `/.well-known/jwks.json` publishes: public parts only. */
  publicJwks: { keys: JWK[] }
  ephemeral: boolean
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const
const KTY_FOR_ALG: Record<SigningAlgorithm, string> = { EdDSA: 'OKP', ES256: 'EC', RS256: 'RSA' }

/** A new private JWK (with `kid`, `alg`, `use`) for `sessiongate keygen`. */
export async function generatePrivateJwk(alg: SigningAlgorithm): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) })
  const jwk = await exportJWK(privateKey)
  const kid = await calculateJwkThumbprint(jwk)
  return { kid, alg, use: 'sig', ...jwk }
}

async function toSigningKey(jwk: JWK, alg: SigningAlgorithm): Promise<SigningKey> {
  const privateKey = (await importJWK({ ...jwk, ext: false }, alg)) as CryptoKey
  const publicJwk: JWK = { ...jwk, kid: jwk.kid, alg, use: 'sig' }
  for (const member of PRIVATE_MEMBERS) delete publicJwk[member]
  delete publicJwk.key_ops
  delete publicJwk.ext
  const publicKey = (await importJWK(publicJwk, alg)) as CryptoKey
  const macKey = Buffer.from(hkdfSync('sha256', Buffer.from(jwk.d as string, 'base64url'), 'sessiongate', `refresh-token-mac:${jwk.kid}`, 32))
  return { kid: jwk.kid as string, alg, privateKey, publicKey, publicJwk, macKey }
}

function ring(keys: SigningKey[], ephemeral: boolean): KeyRing {
  return {
    signing: keys[0] as SigningKey,
    byKid: new Map(keys.map((k) => [k.kid, k])),
    publicJwks: { keys: keys.map((k) => k.publicJwk) },
    ephemeral,
  }
}

/** A key ring with one key made in memory: tokens die with the process (demo and tests only). */
export async function ephemeralKeyRing(alg: SigningAlgorithm): Promise<KeyRing> {
  const jwk = await generatePrivateJwk(alg)
  return ring([await toSigningKey(jwk, alg)], true)
}

/** Reads and checks a private JWK Set; every problem is reported against `configPath`. */
export async function loadKeyRing(
  file: string,
  alg: SigningAlgorithm,
  configPath: string,
  problems: ConfigProblem[],
): Promise<KeyRing | undefined> {
  let parsed: unknown
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message
    problems.push({ path: configPath, message: `cannot read key set ${file}: ${reason}` })
    return undefined
  }
  const list = (parsed as { keys?: unknown })?.keys
  if (!Array.isArray(list) || list.length === 0) {
    problems.push({ path: configPath, message: `${file} must be a JWK Set: {"keys": [ ... ]} with at least one key` })
    return undefined
  }
  const keys: SigningKey[] = []
  const seen = new Set<string>()
  for (const [i, raw] of list.entries()) {
    // One line per problem, named by the config key as every other problem is: `tokens.keys: <file> keys[0]: ...`.
    const problem = (message: string) => problems.push({ path: configPath, message: `${file} keys[${i}]: ${message}` })
    const jwk = raw as JWK
    if (typeof jwk !== 'object' || jwk === null) {
      problem('must be a JWK object')
      continue
    }
    if (typeof jwk.kid !== 'string' || jwk.kid === '') {
      problem('must have a "kid"')
      continue
    }
    if (seen.has(jwk.kid)) {
      problem(`duplicate kid ${jwk.kid}`)
      continue
    }
    seen.add(jwk.kid)
    if (jwk.kty !== KTY_FOR_ALG[alg] || (jwk.alg !== undefined && jwk.alg !== alg)) {
      problem(`is not a ${alg} key (tokens.algorithm is ${alg})`)
      continue
    }
    // RFC 7517 §4.2: a key marked for encryption is not a signing key, whatever its type.
    if (jwk.use !== undefined && jwk.use !== 'sig') {
      problem(`has "use": ${JSON.stringify(jwk.use)}; a signing key has "use": "sig" or no "use"`)
      continue
    }
    if (typeof jwk.d !== 'string') {
      problem('is a public key; a private key is needed to sign')
      continue
    }
    // jose refuses to sign with a shorter RSA key: found now, not at the first login.
    const modulusBits = alg === 'RS256' && typeof jwk.n === 'string' ? Buffer.from(jwk.n, 'base64url').length * 8 : undefined
    if (modulusBits !== undefined && modulusBits < 2048) {
      problem(`is a ${modulusBits}-bit RSA key; RS256 needs at least 2048 bits`)
      continue
    }
    try {
      keys.push(await toSigningKey(jwk, alg))
    } catch (err) {
      problem(`cannot be imported: ${(err as Error).message}`)
    }
  }
  return keys.length === list.length ? ring(keys, false) : undefined
}
