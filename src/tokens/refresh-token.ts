import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import type { KeyRing } from './keys.js'
import { randomBase64url, randomBuffer } from './random.js'

/**
 * Refresh tokens: opaque to clients, `<sid>.<generation>.<256 random bits>.<MAC>`.
 *
 * - The sid tells which family (and Redis hash tag) the token belongs to.
 * - The MAC, keyed by a secret derived from the signing keys, proves the gateway issued the token, so that a
 *   forged token naming a real family is refused without revoking it, while a genuine rotated token is a replay.
 * - The store only ever sees `hash()` of a token; the grace-window successor is kept `seal()`ed with a key
 *   derived from the token it succeeds, so Redis never holds a usable token.
 */
const FORMAT = /^([A-Za-z0-9_-]{22})\.(\d{1,9})\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{22})$/
const MAX_LENGTH = 128

export interface RefreshTokenClaims {
  sid: string
  gen: number
}

export function newSessionId(): string {
  return randomBase64url(16)
}

export class RefreshTokens {
  constructor(private readonly keys: KeyRing) {}

  mint(sid: string, gen: number): string {
    const body = `${sid}.${gen}.${randomBase64url(32)}`
    return `${body}.${mac(this.keys.signing.macKey, body)}`
  }

  /** The token's family and generation when it is well formed and was issued by this gateway's keys. */
  parse(token: unknown): RefreshTokenClaims | undefined {
    if (typeof token !== 'string' || token.length > MAX_LENGTH) return undefined
    const m = FORMAT.exec(token)
    if (!m) return undefined
    const body = token.slice(0, token.lastIndexOf('.'))
    const given = Buffer.from(m[4] as string, 'base64url')
    for (const key of this.keys.byKid.values()) {
      const expected = Buffer.from(mac(key.macKey, body), 'base64url')
      if (expected.length === given.length && timingSafeEqual(expected, given)) {
        return { sid: m[1] as string, gen: Number(m[2]) }
      }
    }
    return undefined
  }
}

function mac(key: Buffer, body: string): string {
  return createHmac('sha256', key).update(body).digest().subarray(0, 16).toString('base64url')
}

/** What the store keeps in place of a refresh token. */
export function hashRefreshToken(token: string): string {
  return createHash('sha256').update(token).digest().subarray(0, 16).toString('base64url')
}

function sealKey(token: string): Buffer {
  return Buffer.from(hkdfSync('sha256', token, 'sessiongate', 'successor-seal', 32))
}

/** Encrypts `successor` (AES-256-GCM) with a key derived from `token`. */
export function sealSuccessor(successor: string, token: string): string {
  const iv = randomBuffer(12)
  const cipher = createCipheriv('aes-256-gcm', sealKey(token), iv)
  const body = Buffer.concat([cipher.update(successor, 'utf8'), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')
}

export function openSuccessor(sealed: string, token: string): string | undefined {
  try {
    const raw = Buffer.from(sealed, 'base64url')
    const decipher = createDecipheriv('aes-256-gcm', sealKey(token), raw.subarray(0, 12))
    decipher.setAuthTag(raw.subarray(12, 28))
    return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')
  } catch {
    return undefined
  }
}
