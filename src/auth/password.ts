import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/** Password hashes: `scrypt$ln=15,r=8,p=1$<salt base64>$<hash base64>` (parameters travel with the hash). */
const FORMAT = /^scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/
const DEFAULT = { ln: 15, r: 8, p: 1 }
/** The longest password a login takes (characters); `hash-password` refuses a longer one. */
export const MAX_PASSWORD_LENGTH = 1024
const KEY_LENGTH = 32

interface ParsedHash {
  options: ScryptOptions
  salt: Buffer
  hash: Buffer
}

function scrypt(password: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCallback(password.normalize('NFC'), salt, length, options, (err, key) => (err ? reject(err) : resolve(key)))
  })
}

function scryptOptions(ln: number, r: number, p: number): ScryptOptions {
  const N = 2 ** ln
  return { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }
}

export function parsePasswordHash(text: string): ParsedHash | undefined {
  const m = FORMAT.exec(text)
  if (!m) return undefined
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])]
  if (ln < 10 || ln > 20 || r < 1 || p < 1) return undefined
  const salt = Buffer.from(m[4] as string, 'base64')
  const hash = Buffer.from(m[5] as string, 'base64')
  if (salt.length < 16 || hash.length < 16) return undefined
  return { options: scryptOptions(ln, r, p), salt, hash }
}

export async function hashPassword(password: string, cost = DEFAULT.ln): Promise<string> {
  const salt = randomBytes(16)
  const hash = await scrypt(password, salt, KEY_LENGTH, scryptOptions(cost, DEFAULT.r, DEFAULT.p))
  return `scrypt$ln=${cost},r=${DEFAULT.r},p=${DEFAULT.p}$${salt.toString('base64')}$${hash.toString('base64')}`
}

/** Constant-time check of a password against a parsed hash. */
export async function verifyPassword(password: string, stored: ParsedHash): Promise<boolean> {
  const candidate = await scrypt(password, stored.salt, stored.hash.length, stored.options)
  return timingSafeEqual(candidate, stored.hash)
}
