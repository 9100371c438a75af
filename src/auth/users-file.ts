import { readFile } from 'node:fs/promises'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import type { ConfigProblem } from '../errors.js'
import { describeIssue } from '../config/describe-issue.js'
import { yamlErrorReason } from '../config/yaml-errors.js'
import { REGISTERED_CLAIMS_REFUSED, setsRegisteredClaim } from '../tokens/registered-claims.js'
import { parsePasswordHash } from './password.js'

export interface UserRecord {
  username: string
  sub: string
  claims: Record<string, unknown>
  passwordHash: NonNullable<ReturnType<typeof parsePasswordHash>>
}

const PLAIN_TEXT = 'plain-text passwords are refused: store a hash from `sessiongate hash-password`'
const UNSUPPORTED_HASH = 'is a password hash of a kind this gateway does not read: store a hash from `sessiongate hash-password` (scrypt)'
/** `$argon2id$...`, `$2b$...` (bcrypt), `md5$...`: meant as a hash, not a password. */
const LOOKS_HASHED = /^\$[a-z0-9-]+\$|^[a-z0-9-]+\$/i

const usersFileSchema = z.strictObject({
  users: z.array(
    z.strictObject({
      username: z.string().min(1).max(256),
      password: z.string().superRefine((p, ctx) => {
        if (parsePasswordHash(p) === undefined) ctx.addIssue({ code: 'custom', message: LOOKS_HASHED.test(p) ? UNSUPPORTED_HASH : PLAIN_TEXT })
      }),
      sub: z.string().min(1).max(256).optional(),
      claims: z
        .record(z.string(), z.unknown())
        .refine((c) => !setsRegisteredClaim(c), REGISTERED_CLAIMS_REFUSED)
        .default({}),
    }),
  ).superRefine(duplicateIdentities, { when: () => true }), // also beside other problems: one run reports them all
})

/**
 * A subject is one identity: two users with one `sub` (explicit, or a username equal to another's `sub`) would share
 * sessions' logout-all, and a refresh, which reads the user by subject, could mint the other's claims. Read from
 * the raw entries, so that a bad password elsewhere does not hide a duplicate (an unreadable name is reported).
 */
function duplicateIdentities(entries: unknown[], ctx: z.RefinementCtx<unknown[]>): void {
  const usernames = new Set<string>()
  const subjects = new Map<string, number>()
  for (const [i, entry] of entries.entries()) {
    const { username, sub } = (typeof entry === 'object' && entry !== null ? entry : {}) as { username?: unknown; sub?: unknown }
    if (typeof username !== 'string' || (sub !== undefined && typeof sub !== 'string')) continue
    if (usernames.has(username)) {
      ctx.addIssue({ code: 'custom', path: [i, 'username'], message: `duplicate username ${username}`, input: username })
      continue
    }
    usernames.add(username)
    const subject = sub ?? username
    const first = subjects.get(subject)
    if (first !== undefined) {
      ctx.addIssue({ code: 'custom', path: [i, sub === undefined ? 'username' : 'sub'], message: `duplicate subject ${subject} (users[${first}] has it): each user needs a sub of its own`, input: subject })
      continue
    }
    subjects.set(subject, i)
  }
}

/** Reads the users file; problems are named `<file>: users[i].field`. */
export async function loadUsers(file: string, configPath: string, problems: ConfigProblem[]): Promise<Map<string, UserRecord> | undefined> {
  let doc: unknown
  try {
    doc = parseYaml(await readFile(file, 'utf8'))
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : yamlErrorReason(err as Error)
    problems.push({ path: configPath, message: `cannot read users file ${file}: ${reason}` })
    return undefined
  }
  if (doc === null || doc === undefined) {
    problems.push({ path: `${file}: (root)`, message: 'is empty: expected a `users:` list' })
    return undefined
  }
  const result = usersFileSchema.safeParse(doc)
  if (!result.success) {
    for (const p of result.error.issues.flatMap(describeIssue)) problems.push({ path: `${file}: ${p.path}`, message: p.message })
    return undefined
  }
  const users = new Map<string, UserRecord>()
  // Usernames and subjects are unique here (duplicateIdentities).
  for (const u of result.data.users) {
    users.set(u.username, {
      username: u.username,
      sub: u.sub ?? u.username,
      claims: u.claims,
      passwordHash: parsePasswordHash(u.password) as UserRecord['passwordHash'],
    })
  }
  return users
}
