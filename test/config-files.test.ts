/**
 * Problems in the files the config names (the key set, the users file): one line each, named by the config key,
 * worded like the config's own problems, and found by `check`, not at the first login.
 */
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { loadUsers } from '../src/auth/users-file.js'
import type { ConfigProblem } from '../src/errors.js'
import { generatePrivateJwk, loadKeyRing } from '../src/tokens/keys.js'

const dir = mkdtempSync(join(tmpdir(), 'sg-config-files-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
let counter = 0
const fileWith = (text: string) => {
  const file = join(dir, `f${++counter}`)
  writeFileSync(file, text)
  return file
}
const lines = (problems: ConfigProblem[]) => problems.map((p) => `${p.path}: ${p.message}`)

t.test('key set problems are `tokens.keys: <file> keys[i]: ...`', async (t) => {
  const good = await generatePrivateJwk('EdDSA')
  const { d: _private, ...publicOnly } = good
  const file = fileWith(JSON.stringify({ keys: [good, publicOnly, { ...good, kid: undefined }] }))
  const problems: ConfigProblem[] = []
  t.equal(await loadKeyRing(file, 'EdDSA', 'tokens.keys', problems), undefined)
  t.same(lines(problems), [
    `tokens.keys: ${file} keys[1]: duplicate kid ${good.kid as string}`,
    `tokens.keys: ${file} keys[2]: must have a "kid"`,
  ])
  const pub = fileWith(JSON.stringify({ keys: [publicOnly] }))
  const pubProblems: ConfigProblem[] = []
  await loadKeyRing(pub, 'EdDSA', 'tokens.keys', pubProblems)
  t.same(lines(pubProblems), [`tokens.keys: ${pub} keys[0]: is a public key; a private key is needed to sign`])
})

t.test('a key marked "use": "enc" is not a signing key; "sig" or no "use" is', async (t) => {
  const good = await generatePrivateJwk('EdDSA')
  const enc = fileWith(JSON.stringify({ keys: [{ ...good, use: 'enc' }] }))
  const problems: ConfigProblem[] = []
  t.equal(await loadKeyRing(enc, 'EdDSA', 'tokens.keys', problems), undefined)
  t.same(lines(problems), [`tokens.keys: ${enc} keys[0]: has "use": "enc"; a signing key has "use": "sig" or no "use"`])
  const { use: _use, ...unmarked } = good
  for (const key of [good, unmarked]) {
    const fine: ConfigProblem[] = []
    t.ok(await loadKeyRing(fileWith(JSON.stringify({ keys: [key] })), 'EdDSA', 'tokens.keys', fine), `use: ${String((key as { use?: string }).use)}`)
    t.same(fine, [])
  }
})

t.test('an RSA key under 2048 bits is refused when loaded, not at the first login', async (t) => {
  for (const [bits, refused] of [[1024, true], [2048, false]] as const) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: bits })
    const file = fileWith(JSON.stringify({ keys: [{ ...privateKey.export({ format: 'jwk' }), kid: `k${bits}`, alg: 'RS256' }] }))
    const problems: ConfigProblem[] = []
    const ring = await loadKeyRing(file, 'RS256', 'tokens.keys', problems)
    if (refused) {
      t.equal(ring, undefined, `${bits} bits: refused`)
      t.same(lines(problems), [`tokens.keys: ${file} keys[0]: is a 1024-bit RSA key; RS256 needs at least 2048 bits`])
    } else {
      t.same(problems, [], `${bits} bits: accepted`)
      t.ok(ring)
    }
  }
})

t.test('users file problems are worded as the config problems are', async (t) => {
  const problemsOf = async (text: string) => {
    const file = fileWith(text)
    const problems: ConfigProblem[] = []
    await loadUsers(file, 'login.users', problems)
    return { file, lines: lines(problems) }
  }
  const argon = await problemsOf('users:\n  - username: a\n    password: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"\n')
  t.same(argon.lines, [`${argon.file}: users[0].password: is a password hash of a kind this gateway does not read: store a hash from \`sessiongate hash-password\` (scrypt)`])
  const plain = await problemsOf('users:\n  - username: a\n    password: hunter2\n')
  t.match(plain.lines, [/users\[0\]\.password: plain-text passwords are refused/])
  const unknown = await problemsOf('users:\n  - username: a\n    password: hunter2\n    role: admin\n')
  t.ok(unknown.lines.includes(`${unknown.file}: users[0].role: unknown key`), unknown.lines.join('; '))
  const empty = await problemsOf('')
  t.same(empty.lines, [`${empty.file}: (root): is empty: expected a \`users:\` list`])
})
