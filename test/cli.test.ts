import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import t from 'tap'
import { parsePasswordHash, verifyPassword } from '../src/auth/password.js'

const root = resolve(import.meta.dirname, '..')
const bin = join(root, 'bin', 'sessiongate.js')
const dir = mkdtempSync(join(tmpdir(), 'sg-cli-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

t.before(() => {
  // `npm test` builds first; a lone `npx tap test/cli.test.ts` on a fresh clone builds here.
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore' })
})

interface Result {
  code: number | null
  stdout: string
  stderr: string
}

/** Environment without the variables that override a configuration. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env }
  for (const name of ['SESSIONGATE_CONFIG', 'REDIS_URL', 'HOST', 'PORT']) delete env[name]
  return { ...env, ...extra }
}

function cli(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Result> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: options.cwd ?? root, env: cleanEnv(options.env), stdio: 'pipe' })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }))
    child.stdin.end(options.input ?? '')
  })
}

const nonEmptyLines = (text: string) => text.split('\n').filter((l) => l !== '')

t.test('keygen prints a private JWK Set with kid and d', async (t) => {
  const expected = {
    EdDSA: { kty: 'OKP', crv: 'Ed25519' },
    ES256: { kty: 'EC', crv: 'P-256' },
    RS256: { kty: 'RSA' },
  } as const
  for (const alg of ['default', 'EdDSA', 'ES256', 'RS256'] as const) {
    const res = await cli(alg === 'default' ? ['keygen'] : ['keygen', '--alg', alg])
    t.equal(res.code, 0, `keygen ${alg} exits 0`)
    t.equal(res.stderr, '')
    const set = JSON.parse(res.stdout) as { keys: Record<string, unknown>[] }
    t.equal(set.keys.length, 1)
    const key = set.keys[0]!
    const name = alg === 'default' ? 'EdDSA' : alg
    t.match(key, { ...expected[name], alg: name, use: 'sig', kid: /^[A-Za-z0-9_-]{20,}$/, d: /^[A-Za-z0-9_-]+$/ }, `${alg}: a private ${name} key`)
  }
  const two = await cli(['keygen', '--keys', '2'])
  const set = JSON.parse(two.stdout) as { keys: { kid: string }[] }
  t.equal(set.keys.length, 2)
  t.not(set.keys[0]!.kid, set.keys[1]!.kid, 'each key has its own kid')
})

t.test('usage errors: exit 2 with one line on stderr', async (t) => {
  const cases = [
    ['keygen', '--alg', 'HS256'],
    ['keygen', '--alg'],
    ['keygen', '--bogus'],
    ['frobnicate'],
    ['constructor'],
    ['__proto__'],
    ['toString'],
    ['--bogus'],
    ['check', '--nope'],
    ['check', 'extra-positional'],
    ['hash-password', '--cost', '3'],
    ['check', '--config', 'a.yaml', '--config', 'b.yaml'],
  ]
  for (const args of cases) {
    const res = await cli(args)
    t.equal(res.code, 2, `${args.join(' ')}: exit 2`)
    t.equal(res.stdout, '', `${args.join(' ')}: nothing on stdout`)
    t.equal(nonEmptyLines(res.stderr).length, 1, `${args.join(' ')}: one line on stderr`)
    t.match(res.stderr, /^sessiongate: /)
    t.notMatch(res.stderr, /\n\s+at /, 'no stack trace')
  }
  t.match((await cli(['keygen', '--alg', 'HS256'])).stderr, /EdDSA, ES256, RS256/, 'the message lists the algorithms')
  const noPassword = await cli(['hash-password'], { input: '' })
  t.equal(noPassword.code, 2, 'an empty stdin is a usage error')
  t.equal(nonEmptyLines(noPassword.stderr).length, 1)
  const tooLong = await cli(['hash-password'], { input: `${'a'.repeat(1025)}\n` })
  t.equal(tooLong.code, 2, 'a password login would refuse (over 1,024 characters) is a usage error (audit)')
  t.same(nonEmptyLines(tooLong.stderr), ['sessiongate: the password is over 1024 characters: login refuses such a password'])
  t.equal(tooLong.stdout, '', 'no hash')
})

t.test('--help on each command exits 0', async (t) => {
  for (const args of [['--help'], ['-h'], ['help'], ['check', '--help'], ['keygen', '--help'], ['hash-password', '--help'], ['run', '--help'], ['--config', 'x.yaml', '--help']]) {
    const res = await cli(args)
    t.equal(res.code, 0, `${args.join(' ')} exits 0`)
    t.match(res.stdout, /^Usage: sessiongate/, `${args.join(' ')} prints usage`)
    t.equal(res.stderr, '')
  }
  t.match((await cli(['keygen', '--help'])).stdout, /--alg/)
})

t.test('hash-password reads stdin and prints a scrypt hash', async (t) => {
  const res = await cli(['hash-password', '--cost', '14'], { input: 'correct horse\n' })
  t.equal(res.code, 0)
  const lines = nonEmptyLines(res.stdout)
  t.equal(lines.length, 1)
  t.match(lines[0], /^scrypt\$/)
  const parsed = parsePasswordHash(lines[0]!)
  t.ok(parsed, 'the hash is in the users-file format')
  t.equal(await verifyPassword('correct horse', parsed!), true, 'it verifies the password (without the newline)')
  t.equal(await verifyPassword('correct horse\n', parsed!), false)
  t.equal(await verifyPassword('wrong', parsed!), false)
  const again = await cli(['hash-password', '--cost', '14'], { input: 'correct horse' })
  t.not(nonEmptyLines(again.stdout)[0], lines[0], 'a fresh salt each time')
})

/** A config file in `dir` using the ES256 keys and the users file the next test writes there, with these routes. */
function configWithKeys(name: string, routeLines: string[]): string {
  const file = join(dir, name)
  const lines = ['server: { host: 127.0.0.1, port: 0 }', 'tokens:', '  algorithm: ES256', `  keys: ${join(dir, 'signing.jwks.json')}`]
  writeFileSync(file, [...lines, 'login:', `  users: ${join(dir, 'users.yaml')}`, 'routes:', ...routeLines].join('\n'))
  return file
}

t.test('check: ok for keys from keygen and a hash from hash-password', async (t) => {
  const keys = await cli(['keygen', '--alg', 'ES256'])
  writeFileSync(join(dir, 'signing.jwks.json'), keys.stdout)
  const hash = nonEmptyLines((await cli(['hash-password'], { input: 's3cret' })).stdout)[0]!
  writeFileSync(join(dir, 'users.yaml'), `users:\n  - username: alice\n    password: "${hash}"\n    claims: { roles: [admin] }\n`)
  const config = configWithKeys('good.yaml', [
    '  - name: orders',
    '    prefix: /api/orders',
    '    upstream: http://127.0.0.1:4001',
    '    rewritePrefix: /orders',
    '    timeout: 30s',
  ])
  const res = await cli(['check', '--config', config])
  t.equal(res.code, 0, res.stdout + res.stderr)
  t.equal(res.stdout, 'ok\n')

  const viaEnv = await cli(['check'], { env: { SESSIONGATE_CONFIG: config } })
  t.equal(viaEnv.stdout, 'ok\n', 'SESSIONGATE_CONFIG names the file')
  t.equal(viaEnv.code, 0)

  const relative = await cli(['check', '-c', 'good.yaml'], { cwd: dir })
  t.equal(relative.stdout, 'ok\n', '-c works with a relative file name')
})

t.test('check: a route reading a claim no login sets is a warning on stderr; still ok and exit 0', async (t) => {
  const config = configWithKeys('warn.yaml', ['  - { name: orders, prefix: /api/orders, upstream: "http://127.0.0.1:4001", headers: { X-Roles: "{role}" } }'])
  const res = await cli(['check', '--config', config])
  t.equal(res.code, 0)
  t.equal(res.stdout, 'ok\n', 'the configuration is valid')
  t.equal(
    res.stderr,
    'warning: routes[0].headers.X-Roles: reads {role}, a claim no login sets (no user of the users file has it): the upstream gets no such header\n',
  )
})

t.test('check: one line per problem, each naming its YAML path, exit 1', async (t) => {
  const config = join(dir, 'bad.yaml')
  writeFileSync(
    config,
    [
      'login:',
      `  users: ${join(dir, 'users.yaml')}`,
      'routes:',
      '  - name: a',
      '    prefix: /a',
      '    upstream: http://127.0.0.1:4001',
      '  - name: b',
      '    prefix: /b',
      '    upstream: http://127.0.0.1:4001',
      '    timeout: 30 seconds',
      '  - name: c',
      '    prefix: /c',
      '    upstream: ftp://127.0.0.1/',
      '    rewrite: /x',
    ].join('\n'),
  )
  const res = await cli(['check', '--config', config])
  t.equal(res.code, 1)
  t.equal(res.stderr, '')
  const lines = nonEmptyLines(res.stdout)
  t.equal(lines.length, 3, res.stdout)
  t.same(
    lines.map((l) => l.slice(0, l.indexOf(':'))).sort(),
    ['routes[1].timeout', 'routes[2].rewrite', 'routes[2].upstream'],
  )
  t.ok(lines.includes('routes[2].upstream: must be an http(s) URL'))
  t.ok(lines.includes('routes[2].rewrite: unknown key'))
  t.ok(lines.some((l) => /^routes\[1\]\.timeout: must be a duration/.test(l)))

  const missing = await cli(['check', '--config', join(dir, 'absent.yaml')])
  t.equal(missing.code, 1)
  t.equal(nonEmptyLines(missing.stdout).length, 1)
  t.match(missing.stdout, /file not found/)
})

t.test('check --config config/gateway.yaml', async (t) => {
  if (!existsSync(join(root, 'config', 'gateway.yaml'))) {
    t.skip('config/gateway.yaml does not exist yet (the out-of-the-box configuration is written elsewhere)', () => {})
    return
  }
  const res = await cli(['check', '--config', 'config/gateway.yaml'])
  t.equal(res.stdout, 'ok\n', res.stdout + res.stderr)
  t.equal(res.code, 0)
})

t.test('a port already in use: one line on stderr, exit 1, no stack trace', async (t) => {
  const blocker = createServer()
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
  t.teardown(() => blocker.close())
  const port = (blocker.address() as AddressInfo).port
  const res = await cli(['--config', 'config/gateway.yaml'], { env: { PORT: String(port) } })
  t.equal(res.code, 1)
  t.match(res.stderr, new RegExp(`^sessiongate: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`, 'm'))
  t.notMatch(res.stderr, /\n\s+at /, 'no stack trace')
})

t.test('check: a value of the wrong shape says what is expected', async (t) => {
  const file = join(dir, 'audience.yaml')
  writeFileSync(file, 'tokens: { audience: 5 }\n')
  const res = await cli(['check', '--config', file])
  t.equal(res.code, 1)
  t.equal(res.stdout.trim(), 'tokens.audience: must be a string or a non-empty list of strings\nlogin.users: is required when login.provider is users', 'and the other problem of the file')
})

t.test('a host that does not resolve, or a Redis database the server does not have: problem lines, exit 1, no stack trace (audit)', async (t) => {
  const host = await cli(['--config', 'config/gateway.yaml'], { env: { HOST: 'no-such-host.invalid', PORT: '0' } })
  t.equal(host.code, 1)
  t.match(host.stderr, /^sessiongate: cannot listen on no-such-host\.invalid:0: .*ENOTFOUND/m)
  t.notMatch(host.stderr, /\n\s+at /, 'no stack trace')

  const { startRedis } = await import('./helpers/redis-server.js')
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const file = join(dir, 'db99.yaml')
  writeFileSync(file, `server: { host: 127.0.0.1, port: 0 }\nredis: { url: "${redis.url.replace(/\/\d+$/, '')}/99" }\nlogin: { users: ${join(root, 'config/users.yaml')} }\n`)
  const db = await cli(['--config', file])
  t.equal(db.code, 1, db.stderr)
  t.match(db.stderr, /^redis\.url: database 99 does not exist on this Redis server/m)
  t.notMatch(db.stderr, /\n\s+at /, 'no stack trace')
})

t.test('check whose reader stops early (`check | head -1`) ends quietly, without an EPIPE stack trace (audit)', async (t) => {
  const file = join(dir, 'many-problems.yaml')
  writeFileSync(file, ['routes:', ...Array.from({ length: 3000 }, (_, i) => `  - { name: r${i}, prefix: /p${i}, upstream: ftp://x${i} }`)].join('\n'))
  const result = await new Promise<{ code: number | null; stderr: string; first: string }>((resolvePromise, reject) => {
    const child = spawn(process.execPath, [bin, 'check', '--config', file], { cwd: root, env: cleanEnv(), stdio: 'pipe' })
    let stderr = ''
    let first = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    // The reader takes the first chunk and goes away, as `head -1` does.
    child.stdout.setEncoding('utf8').once('data', (d: string) => {
      first = d
      child.stdout.destroy()
    })
    child.on('error', reject)
    child.on('close', (code) => resolvePromise({ code, stderr, first }))
  })
  t.match(result.first, /^routes\[0\]\.upstream: must be an http\(s\) URL\n/, 'the first line came')
  t.equal(result.stderr, '', 'nothing on stderr: no EPIPE, no stack trace')
  t.equal(result.code, 1, 'still the exit code of a configuration with problems')
})
