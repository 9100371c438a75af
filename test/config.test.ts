import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import t, { type Test } from 'tap'
import type { ErrorMatch } from '@tapjs/asserts'
import { hashPassword } from '../src/auth/password.js'
import { parseDuration } from '../src/config/duration.js'
import { configFileFrom, loadConfig, type LoadedConfig } from '../src/config/load.js'
import { normalisePath } from '../src/routing/normalise-path.js'
import { ConfigError, type ConfigProblem } from '../src/errors.js'
import { generatePrivateJwk } from '../src/tokens/keys.js'

const dir = mkdtempSync(join(tmpdir(), 'sg-config-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

let counter = 0
let usersFile = ''
let keysFile = ''

t.before(async () => {
  usersFile = join(dir, 'users.yaml')
  const hash = await hashPassword('pw', 10)
  writeFileSync(usersFile, `users:\n  - username: alice\n    password: "${hash}"\n`)
  keysFile = join(dir, 'keys.jwks.json')
  writeFileSync(keysFile, JSON.stringify({ keys: [await generatePrivateJwk('EdDSA')] }))
})

/** Writes a YAML file whose text is given as-is; `login.users` is added unless the text has a `login:` section. */
function yamlFile(text: string, options: { withUsers?: boolean } = {}): string {
  const file = join(dir, `config-${++counter}.yaml`)
  const users = options.withUsers === false || /^login:/m.test(text) ? '' : `\nlogin:\n  users: ${usersFile}\n`
  writeFileSync(file, `${text}\n${users}`)
  return file
}

async function load(text: string, env: NodeJS.ProcessEnv = {}): Promise<LoadedConfig> {
  return loadConfig(yamlFile(text), env)
}

/**
 * A `t.rejects` pattern on a ConfigError's `problems`. tap compares the rejection with `t.match`, so any object pattern
 * works at runtime; its ErrorMatch type only names the usual Error fields (message, name, code, cause, errors).
 */
const problemsPattern = (pattern: { problems: { [K in keyof ConfigProblem]?: string | RegExp }[] }): ErrorMatch =>
  pattern as unknown as ErrorMatch

/** The problems loading this YAML reports (fails the test if it loads). */
async function problemsOf(t: Test, text: string, env: NodeJS.ProcessEnv = {}): Promise<ConfigProblem[]> {
  try {
    await load(text, env)
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  t.fail('the configuration was accepted')
  return []
}

const lines = (problems: ConfigProblem[]) => problems.map((p) => `${p.path}: ${p.message}`)

t.test('defaults', async (t) => {
  const { config, keys, users } = await load(`routes:\n  - name: api\n    prefix: /api\n    upstream: http://127.0.0.1:4001`)
  t.same(config.server, { host: '0.0.0.0', port: 8080, trustProxy: false, bodyLimit: 1_048_576 })
  t.equal(config.redis.url, undefined, 'no redis url: the in-process store')
  t.equal(config.redis.keyPrefix, 'sg:')
  t.equal(config.redis.onOutage, 'fail-closed')
  t.equal(config.tokens.algorithm, 'EdDSA')
  t.equal(config.tokens.keys, 'ephemeral')
  t.equal(config.tokens.accessTtl, 15 * 60_000)
  t.equal(config.tokens.refreshIdleTtl, 7 * 86_400_000)
  t.equal(config.tokens.refreshAbsoluteTtl, 30 * 86_400_000)
  t.equal(config.tokens.refreshAhead, 60_000)
  t.equal(config.tokens.reuseGrace, 10_000)
  t.equal(config.tokens.clockTolerance, 5_000)
  t.equal(config.cookies.secure, true)
  t.equal(config.cookies.sameSite, 'lax')
  t.same(config.csrf, { mode: 'header', allowedOrigins: [] })
  t.equal(config.login.path, '/auth')
  t.equal(config.login.provider, 'users')
  t.same(config.login.rateLimit, { max: 10, window: 60_000 })
  t.equal(config.watch, false)
  const route = config.routes[0]!
  t.equal(route.auth, 'required', 'routes are protected unless they say otherwise')
  t.equal(route.websocket, false)
  t.equal(route.corsPreflight, false, 'a preflight needs credentials unless a route says otherwise')
  t.equal(route.timeout, 30_000)
  t.same(route.headers, {})
  t.equal(keys.ephemeral, true, 'no key file: an in-memory key')
  t.ok(users?.has('alice'), 'the users file was read')
})

t.test('a key file written by keygen is loaded', async (t) => {
  const { keys } = await load(`tokens:\n  keys: ${keysFile}`)
  t.equal(keys.ephemeral, false)
  t.equal(keys.publicJwks.keys.length, 1)
  t.notOk('d' in keys.publicJwks.keys[0]!, 'the published set has no private part')
})

t.test('durations', async (t) => {
  const { config } = await load(
    [
      'tokens:',
      '  accessTtl: 15m',
      '  refreshIdleTtl: 7d',
      '  refreshAhead: 30s',
      '  reuseGrace: 20',
      '  clockTolerance: "3"',
      'routes:',
      '  - name: a',
      '    prefix: /a',
      '    upstream: http://127.0.0.1:1',
      '    timeout: 500ms',
    ].join('\n'),
  )
  t.equal(config.tokens.accessTtl, 900_000, '15m')
  t.equal(config.tokens.refreshIdleTtl, 604_800_000, '7d')
  t.equal(config.tokens.refreshAhead, 30_000, '30s')
  t.equal(config.tokens.reuseGrace, 20_000, 'an integer is seconds')
  t.equal(config.tokens.clockTolerance, 3_000, 'a string of digits is seconds')
  t.equal(config.routes[0]!.timeout, 500, '500ms')

  for (const bad of ['10x', '1.5s', '-5s', '5 s', 's', '""', '1.5', '-3', 'true', '[1]', '99999999999999999999d']) {
    const problems = await problemsOf(t, `routes:\n  - name: a\n    prefix: /a\n    upstream: http://127.0.0.1:1\n    timeout: ${bad}`)
    t.match(lines(problems), [/^routes\[0\]\.timeout: must be a duration/], `timeout: ${bad} is refused with its path`)
  }
  const problems = await problemsOf(t, 'tokens:\n  accessTtl: 10 minutes\n  reuseGrace: 1w')
  t.same(
    problems.map((p) => p.path).sort(),
    ['tokens.accessTtl', 'tokens.reuseGrace'],
    'every malformed duration is reported, each with its own path',
  )
})

t.test('parseDuration', async (t) => {
  t.equal(parseDuration('500ms'), 500)
  t.equal(parseDuration('30s'), 30_000)
  t.equal(parseDuration('15m'), 900_000)
  t.equal(parseDuration('2h'), 7_200_000)
  t.equal(parseDuration('7d'), 604_800_000)
  t.equal(parseDuration(45), 45_000)
  t.equal(parseDuration('45'), 45_000)
  t.equal(parseDuration(0), 0)
  t.equal(parseDuration(9_007_199_254_741), undefined, 'seconds whose milliseconds are not a safe integer are refused')
  t.equal(parseDuration('9007199254741'), undefined)
  for (const bad of ['', '1.5s', '-1s', '1S', '1 s', 'ms', '1sec', '0x10', '1e3', 1.5, -1, NaN, Infinity, null, undefined, {}, [], true]) {
    t.equal(parseDuration(bad), undefined, `${JSON.stringify(bad)} is not a duration`)
  }
})

t.test('parseDuration properties', async (t) => {
  fc.assert(
    fc.property(fc.anything(), (value) => {
      const ms = parseDuration(value)
      return ms === undefined || (Number.isSafeInteger(ms) && ms >= 0)
    }),
    { numRuns: 2000 },
  )
  fc.assert(
    fc.property(fc.string(), (value) => {
      const ms = parseDuration(value)
      return ms === undefined || (Number.isSafeInteger(ms) && ms >= 0)
    }),
    { numRuns: 2000 },
  )
  const units = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
  fc.assert(
    fc.property(fc.nat({ max: 1_000_000 }), fc.constantFrom(...(Object.keys(units) as (keyof typeof units)[])), (n, unit) => {
      return parseDuration(`${n}${unit}`) === n * units[unit]
    }),
  )
  fc.assert(fc.property(fc.nat({ max: 1_000_000_000 }), (n) => parseDuration(n) === n * 1000 && parseDuration(String(n)) === n * 1000))
  t.pass('properties hold')
})

t.test('${VAR} and ${VAR:-default} interpolation', async (t) => {
  const yaml = [
    'server:',
    '  port: ${SG_TEST_PORT:-8081}',
    '  host: ${SG_TEST_HOST}',
    'tokens:',
    '  issuer: https://${SG_TEST_DOMAIN:-fallback.example}/id',
    '  audience: ${SG_TEST_AUD}',
    'watch: ${SG_TEST_WATCH:-false}',
  ].join('\n')
  const a = await load(yaml, { SG_TEST_HOST: '127.0.0.9', SG_TEST_AUD: 'a: {b: c}' })
  t.equal(a.config.server.port, 8081, 'a whole reference with a numeric default becomes a number')
  t.equal(a.config.server.host, '127.0.0.9')
  t.equal(a.config.tokens.issuer, 'https://fallback.example/id', 'the default inside a longer string')
  t.equal(a.config.tokens.audience, 'a: {b: c}', 'a value can never inject YAML structure')
  t.equal(a.config.watch, false, 'a whole reference to a boolean becomes a boolean')

  const b = await load(yaml, { SG_TEST_PORT: '9001', SG_TEST_HOST: 'h', SG_TEST_DOMAIN: 'gw.example', SG_TEST_AUD: 'api', SG_TEST_WATCH: 'true' })
  t.equal(b.config.server.port, 9001, 'the variable wins over its default')
  t.equal(b.config.tokens.issuer, 'https://gw.example/id')
  t.equal(b.config.watch, true)

  const c = await load(yaml, { SG_TEST_PORT: '', SG_TEST_HOST: 'h', SG_TEST_AUD: 'api' })
  t.equal(c.config.server.port, 8081, 'an empty variable takes the default (:- semantics)')

  const problems = await problemsOf(t, yaml, { SG_TEST_AUD: 'api' })
  t.match(lines(problems), [/^server\.host: environment variable SG_TEST_HOST is not set/], 'a missing variable names its YAML path')
  t.equal(problems.filter((p) => p.message.includes('SG_TEST_HOST')).length, 1)

  const inList = await problemsOf(t, 'routes:\n  - name: a\n    prefix: /a\n    upstream: ${SG_TEST_MISSING_UPSTREAM}')
  t.ok(
    inList.some((p) => p.path === 'routes[0].upstream' && p.message.includes('SG_TEST_MISSING_UPSTREAM')),
    'the path of a missing variable inside a list',
  )
})

t.test('environment overrides: REDIS_URL, HOST, PORT', async (t) => {
  const yaml = 'server:\n  host: 10.1.1.1\n  port: 7000\nredis:\n  cluster: [redis://h1:7000, redis://h2:7000]\n  keyPrefix: "x:"'
  const { config } = await load(yaml, { REDIS_URL: 'redis://127.0.0.1:6390/2', HOST: '127.0.0.3', PORT: '9123' })
  t.equal(config.redis.url, 'redis://127.0.0.1:6390/2')
  t.equal(config.redis.cluster, undefined, 'REDIS_URL replaces a cluster given in the file')
  t.equal(config.redis.keyPrefix, 'x:', 'other redis settings stay')
  t.equal(config.server.host, '127.0.0.3')
  t.equal(config.server.port, 9123)

  const untouched = await load(yaml)
  t.equal(untouched.config.server.port, 7000, 'without the variables the file wins')
  t.equal(untouched.config.server.host, '10.1.1.1')

  const noSection = await load('watch: false', { REDIS_URL: 'memory://', PORT: '0' })
  t.equal(noSection.config.redis.url, 'memory://', 'overrides work when the section is absent')
  t.equal(noSection.config.server.port, 0)

  t.match(lines(await problemsOf(t, 'watch: false', { PORT: 'eighty' })), [/^PORT \(environment\): must be an integer/])
  t.match(lines(await problemsOf(t, 'watch: false', { REDIS_URL: 'http://x' })), [/^redis\.url: must be a redis:\/\//])

  t.equal(configFileFrom(undefined, { SESSIONGATE_CONFIG: '/etc/sg.yaml' }), '/etc/sg.yaml', 'SESSIONGATE_CONFIG names the file')
  t.equal(configFileFrom('/x.yaml', { SESSIONGATE_CONFIG: '/etc/sg.yaml' }), '/x.yaml', '--config wins')
  t.equal(configFileFrom(undefined, {}), 'config/gateway.yaml')
})

t.test('unknown keys are errors, named by their path', async (t) => {
  const problems = await problemsOf(
    t,
    [
      'colour: blue',
      'server:\n  hots: 127.0.0.1',
      'tokens:\n  accesTtl: 5m',
      'routes:',
      '  - name: a\n    prefix: /a\n    upstream: http://127.0.0.1:1\n    foo: 1',
      '  - name: b\n    prefix: /b\n    upstream: http://127.0.0.1:1\n    require: { roles: [x] }\n    header: { X-A: b }',
    ].join('\n'),
  )
  t.same(
    lines(problems).sort(),
    [
      'colour: unknown key',
      'routes[0].foo: unknown key',
      'routes[1].header: unknown key',
      'server.hots: unknown key',
      'tokens.accesTtl: unknown key',
    ],
  )
})

t.test('routes: upstream URL, duplicates, prefixes', async (t) => {
  const route = (name: string, prefix: string, upstream: string) => `  - name: ${name}\n    prefix: ${prefix}\n    upstream: ${upstream}`
  for (const bad of ['ftp://127.0.0.1/', 'not a url', '127.0.0.1:4001', 'http://', 'file:///etc/passwd', '""']) {
    const problems = await problemsOf(
      t,
      ['routes:', route('a', '/a', 'http://127.0.0.1:1'), route('b', '/b', 'https://example.com/base'), route('c', '/c', bad)].join('\n'),
    )
    t.same(lines(problems), ['routes[2].upstream: must be an http(s) URL'], `upstream ${bad}`)
  }
  const missing = await problemsOf(t, 'routes:\n  - name: a\n    prefix: /a')
  t.same(lines(missing), ['routes[0].upstream: is required'])

  const dup = await problemsOf(
    t,
    ['routes:', route('a', '/a', 'http://127.0.0.1:1'), route('a', '/b', 'http://127.0.0.1:1'), route('c', '/a/', 'http://127.0.0.1:1')].join('\n'),
  )
  t.same(lines(dup).sort(), ['routes[1].name: duplicates routes[0].name', 'routes[2].prefix: duplicates routes[0].prefix'])

  // With a bad value elsewhere too: one run reports everything (zod skipped the cross-field checks then; audit).
  const together = await problemsOf(
    t,
    ['tokens: { accessTtl: 15x, refreshIdleTtl: 1m, refreshAhead: 2m }', 'routes:', route('a', '/a', 'ftp://127.0.0.1:1'), route('a', '/a', 'http://127.0.0.1:1')].join('\n'),
  )
  t.same(lines(together).sort(), [
    'routes[0].upstream: must be an http(s) URL',
    'routes[1].name: duplicates routes[0].name',
    'routes[1].prefix: duplicates routes[0].prefix',
    'tokens.accessTtl: must be a duration like 500ms, 30s, 15m, 2h, 7d or an integer number of seconds',
  ], 'the duplicates along with the bad values; no comparison with the unreadable accessTtl')
  const ordered = await problemsOf(t, ['tokens: { accessTtl: 1m, refreshAhead: 2m }', 'routes:', route('a', '/a', 'ftp://127.0.0.1:1')].join('\n'))
  t.same(lines(ordered).sort(), ['routes[0].upstream: must be an http(s) URL', 'tokens.refreshAhead: must be shorter than tokens.accessTtl'])
  // Raw values of fields that failed are compared with nothing, and one that cannot be read hides no other check (review).
  const nameless = await problemsOf(t, ['routes:', '  - { prefix: /a, upstream: "http://127.0.0.1:1" }', '  - { prefix: /b, upstream: "http://127.0.0.1:1" }'].join('\n'))
  t.notOk(lines(nameless).some((l) => l.includes('duplicates')), `two routes without a name are not duplicates: ${lines(nameless).join(' | ')}`)
  const unreadable = await problemsOf(
    t,
    ['tokens: { accessTtl: 1m, refreshAhead: 2m }', 'routes:', '  - { name: a, prefix: 5, upstream: "http://127.0.0.1:1" }', '  - { name: b, prefix: /b, upstream: "http://127.0.0.1:1", headers: null }'].join('\n'),
  )
  t.ok(lines(unreadable).includes('tokens.refreshAhead: must be shorter than tokens.accessTtl'), `the token check still runs: ${lines(unreadable).join(' | ')}`)

  for (const bad of ['api', '/api/../admin', '/api//x', '/api?x=1', '/api/%2e%2e', '/a/./b']) {
    const problems = await problemsOf(t, ['routes:', route('a', bad, 'http://127.0.0.1:1')].join('\n'))
    t.equal(problems[0]?.path, 'routes[0].prefix', `prefix ${bad} is refused`)
  }
  const auth = await problemsOf(t, ['routes:', route('a', '/auth/x', 'http://127.0.0.1:1')].join('\n'))
  t.same(lines(auth), ['routes[0].prefix: overlaps the auth endpoints at /auth'])

  const reserved = await problemsOf(t, ['routes:', route('a', '/a', 'http://127.0.0.1:1'), '    headers: { Authorization: "{sub}" }'].join('\n'))
  t.equal(reserved[0]?.path, 'routes[0].headers.Authorization', 'a route may not inject Authorization')
  // Who the client is and how it came: the gateway sets these, or passes them on from a trusted proxy only (audit).
  for (const name of ['X-Forwarded-Port', 'X-Forwarded-Prefix', 'x-forwarded-for', 'Forwarded', 'X-Real-IP', 'Content-Length']) {
    const problems = await problemsOf(t, ['routes:', route('a', '/a', 'http://127.0.0.1:1'), `    headers: { ${name}: "{sub}" }`].join('\n'))
    t.same(lines(problems), [`routes[0].headers.${name}: is a header the gateway manages itself`], `a route may not inject ${name}`)
  }
  await t.resolves(load(['routes:', route('a', '/a', 'http://127.0.0.1:1'), '    headers: { X-Forwarded-User: "{sub}", X-Forwarded-Email: "{email}" }'].join('\n')), "oauth2-proxy's identity headers are the operator's to inject")
})

t.test('injected header names: a refused name says why', async (t) => {
  const problems = await problemsOf(
    t,
    'routes:\n  - name: a\n    prefix: /a\n    upstream: http://127.0.0.1:1\n    headers: { Authorization: "{sub}", "X Bad": "{sub}", X-Ok: "{sub}" }',
  )
  t.same(problems, [
    { path: 'routes[0].headers.Authorization', message: 'is a header the gateway manages itself' },
    { path: 'routes[0].headers.X Bad', message: 'must be a valid header name' },
  ])
})

t.test('trustProxy: false or a list, never a hop count', async (t) => {
  t.equal((await load('server:\n  trustProxy: false')).config.server.trustProxy, false)
  t.same((await load('server:\n  trustProxy: [127.0.0.1, 10.0.0.0/8, "::1", "fd00::/8"]')).config.server.trustProxy, [
    '127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8',
  ])
  for (const bad of ['1', '2', 'true', '"loopback"']) {
    const problems = await problemsOf(t, `server:\n  trustProxy: ${bad}`)
    t.match(lines(problems), [/^server\.trustProxy: must be false or a list/], `trustProxy: ${bad} is refused`)
  }
  const entry = await problemsOf(t, 'server:\n  trustProxy: [127.0.0.1, 10.0.0.0/33, example.com]')
  t.same(problems2paths(entry), ['server.trustProxy[1]', 'server.trustProxy[2]'])
})

function problems2paths(problems: ConfigProblem[]): string[] {
  return problems.map((p) => p.path).sort()
}

t.test('users file: plain-text passwords are refused', async (t) => {
  const file = join(dir, 'plain-users.yaml')
  writeFileSync(file, 'users:\n  - username: bob\n    password: hunter2\n')
  const problems = await problemsOf(t, `login:\n  users: ${file}`)
  t.equal(problems.length, 1)
  t.ok(problems[0]!.path.includes(file), 'the problem names the users file')
  t.ok(problems[0]!.path.endsWith('users[0].password'), 'and users[0].password')
  t.match(problems[0]!.message, /plain-text/)

  const missing = await problemsOf(t, `login:\n  users: ${join(dir, 'nope.yaml')}`)
  t.match(lines(missing), [/^login\.users: cannot read users file .*nope\.yaml: file not found/])

  const none = await problemsOf(t, 'login:\n  provider: users')
  t.same(lines(none), ['login.users: is required when login.provider is users'])
})

t.test('key file problems', async (t) => {
  const missing = await problemsOf(t, `tokens:\n  keys: ${join(dir, 'missing.jwks.json')}`)
  t.match(lines(missing), [/^tokens\.keys: cannot read key set .*missing\.jwks\.json: file not found/])

  const jwk = await generatePrivateJwk('EdDSA')
  const { d: _d, ...publicOnly } = jwk
  const publicFile = join(dir, 'public.jwks.json')
  writeFileSync(publicFile, JSON.stringify({ keys: [publicOnly] }))
  const pub = await problemsOf(t, `tokens:\n  keys: ${publicFile}`)
  t.equal(pub.length, 1)
  t.match(pub[0], { path: /^tokens\.keys/, message: /public key/ })

  const wrongAlg = await problemsOf(t, `tokens:\n  algorithm: ES256\n  keys: ${keysFile}`)
  t.equal(wrongAlg.length, 1)
  t.match(wrongAlg[0], { path: /^tokens\.keys/, message: /not a ES256 key/ })

  const notJson = join(dir, 'garbage.json')
  writeFileSync(notJson, 'not json')
  t.match(lines(await problemsOf(t, `tokens:\n  keys: ${notJson}`)), [/^tokens\.keys: cannot read key set/])

  const empty = join(dir, 'empty.json')
  writeFileSync(empty, JSON.stringify({ keys: [] }))
  t.match(lines(await problemsOf(t, `tokens:\n  keys: ${empty}`)), [/^tokens\.keys: .* must be a JWK Set/])
})

t.test('file problems: missing file, YAML syntax, not a mapping', async (t) => {
  await t.rejects(loadConfig(join(dir, 'absent.yaml'), {}), problemsPattern({ problems: [{ message: /file not found/ }] }))
  const broken = yamlFile('server:\n  port: [1, 2\n', { withUsers: false })
  await t.rejects(loadConfig(broken, {}), problemsPattern({ problems: [{ message: /YAML syntax error/ }] }))
  const dupKey = yamlFile('server:\n  port: 1\n  port: 2\n', { withUsers: false })
  await t.rejects(loadConfig(dupKey, {}), ConfigError, 'a duplicated YAML key is refused')
  const list = yamlFile('- a\n- b\n', { withUsers: false })
  await t.rejects(loadConfig(list, {}), problemsPattern({ problems: [{ path: '(root)' }] }))
})

t.test('normalisePath properties', async (t) => {
  const pathChars = fc.constantFrom('/', '.', '..', '%2e', '%2E', '%2f', '%5c', '%', '%zz', 'a', 'b', '~', '%20', '\\', '?', '#', 'é', '%00', '//')
  const pathLike = fc.array(pathChars, { maxLength: 12 }).map((parts) => `/${parts.join('')}`)
  const check = (raw: string) => {
    const result = normalisePath(raw)
    if (!result.ok) return typeof result.reason === 'string'
    const { path, segments } = result
    if (!path.startsWith('/')) return false
    if (path.includes('//')) return false
    if (path.split('/').some((s) => s === '..' || s === '.')) return false
    if (segments.some((s) => s === '..' || s === '.' || s === '' || s.includes('/'))) return false
    // Decoding what the upstream receives gives the matched segments back, and normalising it changes nothing.
    const again = normalisePath(path)
    return again.ok && again.path === path && again.segments.join('\u0001') === segments.join('\u0001')
  }
  fc.assert(fc.property(fc.string(), (s) => { normalisePath(s); return true }), { numRuns: 2000 })
  fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => { normalisePath(s); return true }), { numRuns: 1000 })
  fc.assert(fc.property(fc.string().map((s) => `/${s}`), check), { numRuns: 2000 })
  fc.assert(fc.property(pathLike, check), { numRuns: 3000 })
  fc.assert(fc.property(fc.webPath(), (p) => check(p.startsWith('/') ? p : `/${p}`)), { numRuns: 1000 })

  t.same(normalisePath('/api/orders/../admin'), { ok: true, segments: ['api', 'admin'], path: '/api/admin', forwarded: ['api', 'admin'] })
  t.same(normalisePath('/../../etc/passwd'), { ok: true, segments: ['etc', 'passwd'], path: '/etc/passwd', forwarded: ['etc', 'passwd'] })
  t.same(normalisePath('//api//orders/'), { ok: true, segments: ['api', 'orders'], path: '/api/orders/', forwarded: ['api', 'orders'] })
  t.equal(normalisePath('/api/%2e%2e/admin').ok && (normalisePath('/api/%2e%2e/admin') as { path: string }).path, '/admin')
  t.equal(normalisePath('/a%2Fb').ok, false, 'an encoded slash is refused')
  t.equal(normalisePath('/a%5Cb').ok, false, 'an encoded backslash is refused')
  t.equal(normalisePath('/a\\b').ok, false, 'a raw backslash is refused')
  t.equal(normalisePath('/a%zz').ok, false, 'malformed percent-encoding is refused')
  t.equal(normalisePath('api').ok, false, 'a relative path is refused')
})

t.test('the CONTRACT §2 example passes', async (t) => {
  const yaml = `
server:   { host: 0.0.0.0, port: 8080, trustProxy: false, bodyLimit: 1048576 }
redis:
  url: redis://127.0.0.1:6379/0
  keyPrefix: "sg:"
  onOutage: fail-closed
tokens:
  issuer: https://gateway.example
  audience: legacy-api
  algorithm: EdDSA
  keys: ${keysFile}
  accessTtl: 15m
  refreshIdleTtl: 7d
  refreshAbsoluteTtl: 30d
  refreshAhead: 60s
  reuseGrace: 10s
  clockTolerance: 5s
cookies:
  access: sg_access
  refresh: sg_refresh
  secure: true
  sameSite: lax
csrf: { mode: header, allowedOrigins: [] }
login:
  path: /auth
  provider: users
  users: ${usersFile}
  upstream:
    url: http://127.0.0.1:4001/login
    subject: /user/id
    claims: { roles: /user/roles }
  rateLimit: { max: 10, window: 1m }
routes:
  - name: orders
    prefix: /api/orders
    upstream: http://127.0.0.1:4001
    rewritePrefix: /orders
    auth: required
    require: { roles: [admin] }
    headers: { X-User-Id: "{sub}", X-User-Roles: "{roles}" }
    websocket: false
    timeout: 30s
`
  const { config } = await load(yaml)
  t.equal(config.routes[0]!.timeout, 30_000)
  t.same(config.login.rateLimit, { max: 10, window: 60_000 })
})

/** A route for the rules below: `extra` lines are added under it, indented. */
const routeYaml = (name: string, prefix: string, extra: string[] = [], upstream = 'http://127.0.0.1:4001') =>
  [`  - name: ${name}`, `    prefix: ${prefix}`, `    upstream: ${upstream}`, ...extra.map((l) => `    ${l}`)].join('\n')

t.test('mistakes that would be ignored or fail only at request time are refused', async (t) => {
  const check = async (yaml: string) => lines(await problemsOf(t, yaml))

  t.same(
    await check(['routes:', routeYaml('a', '/a', ['auth: public', 'require: { roles: [admin] }'])].join('\n')),
    ['routes[0].require: has no effect on a public route'],
    'require on a public route',
  )
  t.same(
    await check(['routes:', routeYaml('a', '/a', ['auth: public', 'corsPreflight: true'])].join('\n')),
    ['routes[0].corsPreflight: has no effect on a public route (every request passes without auth)'],
    'corsPreflight on a public route',
  )
  const onOptional = await load(['routes:', routeYaml('a', '/a', ['auth: optional', 'corsPreflight: true'])].join('\n'))
  t.equal(onOptional.config.routes[0]?.corsPreflight, true, 'on a protected route it is fine')
  t.same(await check(['routes:', routeYaml('a', '/a', ['corsPreflight: "yes"'])].join('\n')).then((l) => l.length), 1, 'a boolean only')

  for (const upstream of ['http://user:pw@127.0.0.1:4001', 'http://@127.0.0.1:4001', 'https://token@api.example/base']) {
    t.same(
      await check(['routes:', routeYaml('a', '/a', [], upstream)].join('\n')),
      ['routes[0].upstream: must not contain credentials (user:password@): the proxy uses only origin and path'],
      `upstream ${upstream}`,
    )
  }
  for (const upstream of ['http://127.0.0.1:4001/base?tenant=1', 'http://127.0.0.1:4001/?', 'http://127.0.0.1:4001/base#top']) {
    t.same(
      await check(['routes:', routeYaml('a', '/a', [], upstream)].join('\n')),
      ['routes[0].upstream: must not have a query string or fragment: the proxy uses only origin and path'],
      `upstream ${upstream}`,
    )
  }
  t.same(
    await check(`login:\n  provider: upstream\n  upstream:\n    url: http://u:p@127.0.0.1:4001/login\n    subject: /id`),
    ['login.upstream.url: must not contain credentials (user:password@)'],
    'fetch refuses a login URL with credentials: every login would fail',
  )

  for (const window of ['0', '0s', '0ms']) {
    t.same(
      await check(`login:\n  users: ${usersFile}\n  rateLimit: { max: 10, window: ${window} }`),
      ['login.rateLimit.window: must be at least 1ms (0 would turn the limit off)'],
      `rateLimit.window ${window}`,
    )
  }
  t.same(
    await check(`login:\n  users: ${usersFile}\n  rateLimit: { max: 0 }`),
    ['login.rateLimit.max: must be at least 1 (0 would refuse every login)'],
  )
  t.same(await check(`login:\n  users: ${usersFile}\n  rateLimit: { max: 2.5 }`), ['login.rateLimit.max: must be an integer'])
  t.same(
    await check(`server: { port: 99999, bodyLimit: -1 }\nlogin:\n  users: ${usersFile}`),
    ['server.port: must be at most 65535', 'server.bodyLimit: must be at least 1'],
    "bounds in words, not zod's `Too big: expected number to be <=65535`",
  )

  for (const timeout of ['0', '0s', '0ms']) {
    const { config } = await load(['routes:', routeYaml('a', '/a', [`timeout: ${timeout}`])].join('\n'))
    t.equal(config.routes[0]!.timeout, 0, `routes[].timeout ${timeout}: no timeout (long polls, server-sent events)`)
  }
  t.same(
    await check(`login:\n  provider: upstream\n  upstream:\n    url: http://127.0.0.1:4001/login\n    subject: /id\n    timeout: 0`),
    ['login.upstream.timeout: must be at least 1ms (0 would fail every login)'],
  )

  t.same(await check('cookies:\n  access: sid\n  refresh: sid'), ['cookies.refresh: must differ from cookies.access'], 'two equal names')
  t.same(
    await check('cookies:\n  access: __Host-sg_refresh'),
    ['cookies.access: must differ from cookies.refresh (its default, __Host-sg_refresh)'],
    'equal to the other default (secure: true)',
  )
  t.same(
    await check('cookies:\n  secure: false\n  refresh: sg_access'),
    ['cookies.refresh: must differ from cookies.access (its default, sg_access)'],
    'equal to the other default (secure: false)',
  )

  t.same(
    await check('cookies:\n  secure: false\n  access: __Host-a\n  refresh: __Secure-r'),
    [
      'cookies.access: a __Host- name needs cookies.secure: true (browsers reject it otherwise)',
      'cookies.refresh: a __Secure- name needs cookies.secure: true (browsers reject it otherwise)',
    ],
    'a prefixed name on insecure cookies',
  )

  t.same(
    await check(['routes:', routeYaml('a', '/a', ['headers: { X-User-Id: "{sub}", x-user-id: "{sub}" }'])].join('\n')),
    ['routes[0].headers.x-user-id: duplicates routes[0].headers.X-User-Id (header names ignore case)'],
  )

  t.same(
    await check(
      [
        'routes:',
        routeYaml('a', '/healthz'),
        routeYaml('b', '/readyz/'),
        routeYaml('c', '/metrics'),
        routeYaml('d', '/.well-known/jwks.json'),
      ].join('\n'),
    ),
    [
      "routes[0].prefix: is the gateway's own endpoint /healthz",
      "routes[1].prefix: is the gateway's own endpoint /readyz",
      "routes[2].prefix: is the gateway's own endpoint /metrics",
      "routes[3].prefix: is the gateway's own endpoint /.well-known/jwks.json",
    ],
  )

  t.same(
    await check('redis:\n  sentinel:\n    name: mymaster\n    nodes: [10.0.0.1:26379, "http://10.0.0.2:26379", "10.0.0.3:26379/0", "redis://u:p@10.0.0.4", "[::1]:26379", "h:99999", "h 1"]'),
    [1, 2, 3, 4, 5, 6].map((i) => `redis.sentinel.nodes[${i}]: must be host:port or redis://host:port`),
    'sentinel nodes that would crash the start (Invalid URL) or be misread',
  )

  t.same(
    await check('redis:\n  cluster: [redis://127.0.0.1:7000]\n  revocationCache: true'),
    ['redis.revocationCache: needs redis.url or redis.sentinel, not redis.cluster'],
  )

  t.same(
    await check(`login:\n  provider: upstream\n  upstream:\n    url: http://127.0.0.1:4001/login\n    subject: /id\n    claims: { roles: /roles, sub: /id }`),
    ['login.upstream.claims: must not set iss, aud, sub, iat, nbf, exp, jti, sid'],
    'a registered claim, as in the users file',
  )
})

t.test('near misses of those rules still load', async (t) => {
  const yaml = [
    'redis:',
    '  sentinel: { name: mymaster, nodes: [10.0.0.1:26379, sentinel-2, "redis://sentinel-3:26379", "redis://sentinel-4:26380/"] }',
    '  revocationCache: true',
    'cookies:',
    '  access: __Host-app_access',
    '  refresh: __Secure-app_refresh',
    '  secure: true',
    'login:',
    `  users: ${usersFile}`,
    '  rateLimit: { max: 1, window: 1ms }',
    'routes:',
    routeYaml('health', '/api/health', ['auth: public'], 'http://127.0.0.1:4001/base/'),
    routeYaml('admin', '/api/admin', ['require: { roles: [admin] }', 'timeout: 1ms', 'headers: { X-User-Id: "{sub}", X-User-Roles: "{roles}" }'], 'https://api.example/a@b'),
    routeYaml('optional', '/api/optional', ['auth: optional', 'require: { roles: [user] }']),
    routeYaml('metricsish', '/healthzz'),
    routeYaml('dashboard', '/metrics/dashboard'),
    routeYaml('wellknown', '/.well-known/openid-configuration'),
    routeYaml('app', '/', ['auth: public']),
  ].join('\n')
  const { config } = await load(yaml)
  t.equal(config.routes.length, 7)
  t.equal(config.routes[1]!.timeout, 1)
  t.same(config.login.rateLimit, { max: 1, window: 1 })

  const upstream = await load(
    `login:\n  provider: upstream\n  upstream:\n    url: http://127.0.0.1:4001/login?source=gateway\n    subject: /user/id\n    claims: { roles: /user/roles, email: /user/email }`,
  )
  t.same(upstream.config.login.upstream?.claims, { roles: '/user/roles', email: '/user/email' })
  const insecure = await load('cookies:\n  secure: false\n  access: a\n  refresh: b')
  t.equal(insecure.config.cookies.access, 'a')
})

t.test('settings check accepted but that would crash the start, fail every request or be ignored are refused (audit)', async (t) => {
  const up = 'http://127.0.0.1:4001'
  const cases: [string, string, RegExp][] = [
    ['redis:\n  url: redis://127.0.0.1:6379/abc', 'redis.url', /database number/],
    ['redis:\n  url: "redis://"', 'redis.url', /must name a host/],
    ['redis:\n  url: "redis://127.0.0.1:6379/0#x"', 'redis.url', /fragment/],
    ['redis:\n  url: "redis://127.0.0.1:6379/0?enableOfflineQueue=false"', 'redis.url', /may only set family/],
    ['redis:\n  url: "redis://127.0.0.1:6379?db=3"', 'redis.url', /may only set family/],
    ['redis:\n  url: "redis://127.0.0.1:6379?family=5"', 'redis.url', /family must be 0, 4 or 6/],
    [`login:\n  users: USERS\n  page: /healthz\nroutes:\n  - { name: all, prefix: /, upstream: ${up}, auth: public }`, 'login.page', /gateway's own endpoint/],
    [`routes:\n  - { name: a, prefix: /a, upstream: ${up}, rewritePrefix: /foo.. }`, 'routes[0].rewritePrefix', /cannot be forwarded/],
    ['redis:\n  cluster: [redis://127.0.0.1:7000/2]', 'redis.cluster[0]', /database 0 only/],
    ['redis:\n  cluster: [memory://]', 'redis.cluster[0]', /not a cluster node/],
    [`routes:\n  - { name: a, prefix: /a, upstream: ${up}, rewritePrefix: /x/../admin }`, 'routes[0].rewritePrefix', /normal form/],
    [`routes:\n  - { name: a, prefix: /a, upstream: ${up}, rewritePrefix: /x%2F..%2Fadmin }`, 'routes[0].rewritePrefix', /cannot be forwarded/],
    [`routes:\n  - { name: a, prefix: /a, upstream: ${up}, rewritePrefix: /..x }`, 'routes[0].rewritePrefix', /cannot be forwarded/],
    [`routes:\n  - { name: a, prefix: "", upstream: ${up} }`, 'routes[0].prefix', /absolute path/],
    [`routes:\n  - { name: a, prefix: "/a;v=1", upstream: ${up} }`, 'routes[0].prefix', /must not contain ";".*never decides which route/],
    [`routes:\n  - { name: a, prefix: /a, upstream: ${up}, rewritePrefix: "/x;v=1" }`, 'routes[0].rewritePrefix', /must not contain ";"/],
    [`routes:\n  - { name: a, prefix: /a, upstream: ${up}, require: { roles: [[x]] } }`, 'routes[0].require.roles[0]', /string, a number or true\/false/],
    [`login:\n  users: USERS\n  page: /api/login\nroutes:\n  - { name: api, prefix: /api, upstream: ${up} }`, 'login.page', /redirected again, in a loop/],
    [`login:\n  users: USERS\n  page: /auth/login`, 'login.page', /auth endpoints/],
    [`login:\n  users: USERS\n  page: /nowhere\nroutes:\n  - { name: api, prefix: /api, upstream: ${up} }`, 'login.page', /no route serves \/nowhere/],
  ]
  for (const [yaml, path, message] of cases) {
    const problems = await problemsOf(t, yaml.replace('USERS', usersFile))
    const found = problems.find((p) => p.path === path)
    t.ok(found, `${path} reported for ${JSON.stringify(yaml)} (${lines(problems).join('; ')})`)
    t.match(found?.message ?? '', message, `${path}: ${found?.message}`)
  }
  // The same settings, written so that they work, pass.
  await t.resolves(load('redis:\n  url: redis://127.0.0.1:6379/3'))
  await t.resolves(load(`routes:\n  - { name: a, prefix: /a, upstream: ${up}, rewritePrefix: /x/a..b }`))
  await t.resolves(load('redis:\n  url: redis://127.0.0.1:6379/0?family=6'), 'ioredis options in the query string')
  await t.resolves(load('redis:\n  url: memory://\n  revocationCache: true\n  onOutage: verify-only'), 'no effect in-process: a warning at start, not a refusal')
  for (const rewritePrefix of ['/caf%c3%a9', '/a%2b', '/x/', '/']) {
    await t.resolves(load(`routes:\n  - { name: a, prefix: /a, upstream: ${up}, rewritePrefix: "${rewritePrefix}" }`), `rewritePrefix ${rewritePrefix}`)
  }
  await t.resolves(load(`login:\n  users: ${usersFile}\n  page: /app/login\nroutes:\n  - { name: app, prefix: /app, upstream: ${up}, auth: optional }`), 'a page on an optional route')
  await t.resolves(load(`login:\n  users: ${usersFile}\n  page: /log%69n\nroutes:\n  - { name: api, prefix: /api, upstream: ${up} }\n  - { name: page, prefix: /login, upstream: ${up}, auth: public }`), 'matched on decoded segments')
  await t.resolves(load(`login:\n  users: ${usersFile}\n  page: /login?next=1\nroutes:\n  - { name: api, prefix: /api, upstream: ${up} }\n  - { name: page, prefix: /login, upstream: ${up}, auth: public }`))
  await t.resolves(load(`login:\n  users: ${usersFile}\n  page: /app/login\nroutes:\n  - { name: api, prefix: /, upstream: ${up} }\n  - { name: page, prefix: /app/login, upstream: ${up}, auth: public }`))
})

t.test('users file: wrong types are named as wrong types, not as missing (audit)', async (t) => {
  const { loadUsers } = await import('../src/auth/users-file.js')
  const file = join(dir, 'typed-users.yaml')
  const problemsFor = async (text: string) => {
    writeFileSync(file, text)
    const problems: ConfigProblem[] = []
    await loadUsers(file, 'login.users', problems)
    return lines(problems)
  }
  t.match(await problemsFor('users:\n  - username: 123\n    password: x\n'), [/users\[0\]\.username: must be a string, not a number/])
  t.ok((await problemsFor('users:\n  - username: a\n    password: "scrypt$x"\n    claims: [roles]\n')).some((l) => /users\[0\]\.claims: must be a mapping, not a list/.test(l)))
  t.match(await problemsFor('- username: a\n'), [/\(root\): must be a mapping, not a list/])
  t.match(await problemsFor('users:\n  - username: ""\n    password: x\n'), [/users\[0\]\.username: must not be empty/])
  t.match(await problemsFor('users:\n  - password: x\n'), [/users\[0\]\.username: is required/])
})

t.test('a reload that turns watch on or off is a restart-only change (the watchers are set up at start) (audit)', async (t) => {
  const { restartOnlyChanges } = await import('../src/server/runtime.js')
  const before = (await load('watch: false')).config
  const after = (await load('watch: true')).config
  t.same(restartOnlyChanges(before, after), ['watch'])
  t.same(restartOnlyChanges(before, before), [])
})
