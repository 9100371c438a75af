/**
 * Properties (fast-check, bounded runs): configuration parsing only ever fails with ConfigError problems that
 * name a path; route matching never throws and never matches a route whose prefix is not a prefix of the
 * normalised path (and always the longest); cookieHeaderWithout never lets a gateway cookie through and keeps
 * the others; random garbage as credentials to a running gateway is a JSON 401, never a 500.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseCookie } from 'cookie'
import fc from 'fast-check'
import t from 'tap'
import { stringify } from 'yaml'
import { cookieHeaderWithout, type CookieNames } from '../src/auth/cookies.js'
import { loadConfig } from '../src/config/load.js'
import { configSchema } from '../src/config/schema.js'
import { ConfigError } from '../src/errors.js'
import { normalisePath } from '../src/routing/normalise-path.js'
import { RouteTable } from '../src/routing/route-table.js'
import { send } from './helpers/client.js'
import { writeUsers } from './helpers/gateway.js'
import { startStack } from './helpers/stack.js'

const dir = mkdtempSync(join(tmpdir(), 'sg-prop-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

// ---------------------------------------------------------------------------------------------------------------
// Configuration

const scalar = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom('30s', '15m', '7d', '500ms', '-1s', '1e3', 'redis://127.0.0.1:6379', 'memory://', 'http://127.0.0.1:1', '/api', '${HOME}', '${NOPE:-5}', '${NOPE}', '10.0.0.0/8', '::1', 'EdDSA', 'ES256', 'none', 'ephemeral', '__proto__', 'constructor'),
)
const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  any: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, tie('list'), tie('map')),
  list: fc.array(tie('any'), { maxLength: 4 }),
  // Plain objects only, as YAML produces them (zod's own message formatting can throw on null-prototype objects).
  map: fc.dictionary(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('port', 'host', 'url', 'name', 'prefix', 'upstream', 'auth', 'require', 'headers', 'timeout', 'keys', 'accessTtl', '__proto__', 'constructor', 'toString')), tie('any'), { maxKeys: 4, noNullPrototype: true }),
})).any

const KNOWN = {
  server: ['host', 'port', 'trustProxy', 'bodyLimit'],
  redis: ['url', 'cluster', 'sentinel', 'keyPrefix', 'onOutage', 'revocationCache'],
  tokens: ['issuer', 'audience', 'algorithm', 'keys', 'accessTtl', 'refreshIdleTtl', 'refreshAbsoluteTtl', 'refreshAhead', 'reuseGrace', 'clockTolerance'],
  cookies: ['access', 'refresh', 'secure', 'sameSite'],
  csrf: ['mode', 'allowedOrigins'],
  login: ['path', 'provider', 'users', 'upstream', 'rateLimit', 'page'],
} as const

/** Config-shaped documents: the real sections and keys, each with a random (sometimes valid) value. */
const section = (keys: readonly string[]) => fc.dictionary(fc.oneof(fc.constantFrom(...keys), fc.string({ maxLength: 6 })), value, { maxKeys: 4, noNullPrototype: true })
const route = fc.record(
  { name: fc.oneof(fc.constantFrom('a', 'b', 'api'), fc.string({ maxLength: 6 })), prefix: fc.oneof(fc.constantFrom('/api', '/a/b', '/', '/x/../y', 'api'), fc.string({ maxLength: 8 })), upstream: fc.oneof(fc.constant('http://127.0.0.1:4001'), scalar), auth: fc.oneof(fc.constantFrom('required', 'public', 'optional'), scalar), headers: value, require: value, timeout: scalar },
  { requiredKeys: [] },
)
const configDocument = fc.record(
  {
    server: section(KNOWN.server), redis: section(KNOWN.redis), tokens: section(KNOWN.tokens), cookies: section(KNOWN.cookies),
    csrf: section(KNOWN.csrf), login: section(KNOWN.login), routes: fc.oneof(fc.array(route, { maxLength: 3 }), value), watch: value, extra: value,
  },
  { requiredKeys: [] },
)

function wellFormedProblems(err: unknown): boolean {
  if (!(err instanceof ConfigError)) return false
  return err.problems.length > 0 && err.problems.every((p) => typeof p.path === 'string' && p.path !== '' && typeof p.message === 'string' && p.message !== '')
}

t.test('config: the schema never throws; every issue has a path and a message', async (t) => {
  for (const arbitrary of [configDocument, value]) {
    fc.assert(
      fc.property(arbitrary, (doc) => {
        const parsed = configSchema.safeParse(doc)
        if (parsed.success) return true
        return parsed.error.issues.every((issue) => Array.isArray(issue.path) && typeof issue.message === 'string' && issue.message !== '')
      }),
      { numRuns: 500 },
    )
  }
  t.pass('500 runs each of config-shaped and arbitrary documents')
})

t.test('config: loadConfig resolves or throws a ConfigError whose every problem names a path', async (t) => {
  const users = await writeUsers(dir)
  let n = 0
  const check = async (text: string) => {
    const file = join(dir, `c${n++}.yaml`)
    writeFileSync(file, text)
    try {
      await loadConfig(file, {})
      return true
    } catch (err) {
      return wellFormedProblems(err)
    } finally {
      rmSync(file, { force: true })
    }
  }
  // Config-shaped documents, half of them with a valid users file so that they get past the first checks.
  await fc.assert(
    fc.asyncProperty(configDocument, fc.boolean(), async (doc, withUsers) => {
      const document = withUsers ? { ...doc, login: { ...(doc.login ?? {}), users } } : doc
      return check(stringify(document))
    }),
    { numRuns: 200 },
  )
  await fc.assert(fc.asyncProperty(fc.string({ maxLength: 200 }), (text) => check(text)), { numRuns: 200 })
  t.ok(await check(stringify({ login: { users } })), 'control: a minimal valid configuration loads')
  await t.rejects(loadConfig(join(dir, 'missing.yaml'), {}), ConfigError)
  // YAML that parses but cannot be turned into data: an alias without its anchor, an alias expansion bomb.
  const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(', ')}]`)].join('\n')
  for (const [what, text] of [['an unknown alias', '*x'], ['an alias bomb', bomb]]) {
    const file = join(dir, 'alias.yaml')
    writeFileSync(file, text as string)
    await t.rejects(loadConfig(file, {}), { name: 'ConfigError', problems: [{ path: file, message: /^YAML error: / }] }, `${what}: a ConfigError, not a crash`)
  }
  const problemsOf = async (text: string) => {
    const file = join(dir, 'one.yaml')
    writeFileSync(file, `${text}login:\n  users: ${users}\n`)
    try {
      await loadConfig(file, {})
      return []
    } catch (err) {
      return (err as ConfigError).problems.map((p) => `${p.path}: ${p.message}`)
    }
  }
  // Prototype keys are just unknown keys: reported, never silently turned into the section's prototype.
  t.same(await problemsOf('server:\n  __proto__:\n    port: 1\n'), ['server.__proto__: unknown key'])
  t.same(await problemsOf('__proto__:\n  watch: true\n'), ['__proto__: unknown key'])
  t.same(await problemsOf('server:\n  constructor: 1\n'), ['server.constructor: unknown key'])
  // A value of the wrong type is reported as such, not as missing.
  t.same(await problemsOf('server:\n  port: abc\n'), ['server.port: must be a number, not a string'])
  t.same(await problemsOf('cookies:\n  secure: [1]\n'), ['cookies.secure: must be true or false, not a list'])
  t.same(await problemsOf('tokens:\n  issuer:\n    constructor:\n      name:\n        toString: 1\n'), ['tokens.issuer: must be a string, not a mapping'])
  t.same(await problemsOf('routes:\n  - name: a\n    prefix: /a\n'), ['routes[0].upstream: is required'], 'a missing value is still "is required"')
})

// ---------------------------------------------------------------------------------------------------------------
// Route matching

const SEGMENTS = ['api', 'orders', 'a', 'b', 'x.y', '~u', 'A']
const prefixArb = fc.array(fc.constantFrom(...SEGMENTS), { minLength: 0, maxLength: 3 }).map((s) => `/${s.join('/')}`)
const pathArb = fc
  .array(fc.constantFrom(...SEGMENTS, '..', '.', '', '%2e%2e', '%2E', '%61pi', 'ord%65rs', '%2F', '%5C', '%', '%zz', '%00', 'é', '%C3%A9', ';x', 'api;x', 'orders;', 'a;..', '%3B', 'api%3B', 'api?q=1', '#f'), { maxLength: 8 })
  .map((s) => `/${s.join('/')}`)

t.test('routes: matching never throws and only ever picks the longest prefix of the normalised segments', async (t) => {
  const users = join(dir, 'users-for-routes.yaml')
  const tables = fc.uniqueArray(prefixArb, { minLength: 1, maxLength: 5, selector: (p) => p.replace(/\/$/, '') || '/' }).map((prefixes) => {
    const parsed = configSchema.parse({ login: { users }, routes: prefixes.map((prefix, i) => ({ name: `r${i}`, prefix, upstream: `http://127.0.0.1:${4000 + i}/base` })) })
    return new RouteTable(parsed.routes)
  })
  const isPrefix = (prefix: readonly string[], of: readonly string[]) => prefix.length <= of.length && prefix.every((s, i) => of[i] === s)
  fc.assert(
    fc.property(tables, fc.oneof(pathArb, fc.string().map((s) => `/${s}`), fc.string()), (table, path) => {
      const result = table.matchUrl(path)
      const normalised = normalisePath(path)
      if (result === 'invalid') return !normalised.ok
      if (!normalised.ok) return false
      const longest = (segments: readonly string[]) => table.all().filter((r) => isPrefix(r.segments, segments)).sort((a, b) => b.segments.length - a.segments.length)[0]
      // Path parameters: refused exactly when the readings without and with them fall under different routes.
      if (result === 'ambiguous') return normalised.literal !== undefined && longest(normalised.literal) !== longest(normalised.segments)
      if (normalised.literal !== undefined && longest(normalised.literal) !== longest(normalised.segments)) return false
      const candidates = table.all().filter((r) => isPrefix(r.segments, normalised.segments))
      if (result === undefined) return candidates.length === 0
      if (!isPrefix(result.route.segments, normalised.segments)) return false
      if (candidates.some((r) => r.segments.length > result.route.segments.length)) return false
      // The upstream gets the base path and the matched segments, never a dot segment.
      return result.upstreamPath.startsWith('/base') && !result.upstreamPath.split('/').some((s) => s === '..' || s === '.')
    }),
    { numRuns: 3000 },
  )
  t.pass('3,000 runs')
})

// ---------------------------------------------------------------------------------------------------------------
// Cookies

t.test('cookies: cookieHeaderWithout never lets a gateway cookie through and keeps the others', async (t) => {
  const namesArb = fc.constantFrom<CookieNames>({ access: 'sg_access', refresh: 'sg_refresh' }, { access: '__Host-sg_access', refresh: '__Host-sg_refresh' }, { access: 'a', refresh: 'r' })
  const cookieValue = fc.string({ unit: fc.constantFrom(...'abcXYZ019=_-."% \t\\,/'.split('')), maxLength: 10 })
  const pairsFor = (names: CookieNames) =>
    fc.array(
      fc.tuple(
        fc.oneof(fc.constantFrom(names.access, names.refresh, ` ${names.access}`, `${names.access} `, `\t${names.refresh}`, names.access.toUpperCase(), 'theme', 'sid', `${names.access}x`, `x${names.refresh}`, '', '=', 'a b'), fc.string({ unit: fc.constantFrom(...'abc_-$'.split('')), minLength: 1, maxLength: 6 })),
        cookieValue,
        fc.boolean(),
      ),
      { maxLength: 8 },
    )
  const separators = fc.constantFrom('; ', ';', ' ; ', ';;', '; ;')
  fc.assert(
    fc.property(
      namesArb.chain((names) => fc.tuple(fc.constant(names), pairsFor(names), separators)),
      ([names, pairs, separator]) => {
        const header = pairs.map(([name, value, bare]) => (bare && value === '' ? name : `${name}=${value}`)).join(separator)
        const out = cookieHeaderWithout(header, names)
        const nameOf = (pair: string) => (pair.includes('=') ? pair.slice(0, pair.indexOf('=')) : pair).trim()
        const others = header.split(';').map((p) => p.trim()).filter((p) => p !== '' && nameOf(p) !== names.access && nameOf(p) !== names.refresh)
        if (out === undefined) return others.length === 0
        // What an upstream parsing the header (with the same cookie library as the gateway) would see.
        const seen = parseCookie(out)
        if (names.access in seen || names.refresh in seen) return false
        const kept = out.split('; ')
        for (const [name, value, bare] of pairs) {
          const trimmed = name.trim()
          if (trimmed === '' || trimmed === names.access || trimmed === names.refresh || value.includes(';')) continue
          const pair = (bare && value === '' ? name : `${name}=${value}`).trim()
          if (pair !== '' && !kept.includes(pair)) return false
        }
        return true
      },
    ),
    { numRuns: 3000 },
  )
  fc.assert(
    fc.property(fc.string({ maxLength: 60 }), namesArb, (header, names) => {
      const out = cookieHeaderWithout(header, names)
      if (out === undefined) return true
      const seen = parseCookie(out)
      return !(names.access in seen) && !(names.refresh in seen)
    }),
    { numRuns: 3000 },
  )
  t.equal(cookieHeaderWithout('theme=dark; sg_access=x; sg_refresh=y; lang=en', { access: 'sg_access', refresh: 'sg_refresh' }), 'theme=dark; lang=en', 'control')
  t.equal(cookieHeaderWithout('sg_access=x', { access: 'sg_access', refresh: 'sg_refresh' }), undefined, 'nothing left: no header')
})

// ---------------------------------------------------------------------------------------------------------------
// Garbage at a running gateway

t.test('a running gateway: garbage credentials are a JSON 401, garbage auth bodies never a 5xx', async (t) => {
  const { upstream, gw } = await startStack(t)
  const visible = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 120 })
  const b64 = fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b).toString('base64url'))
  const jwtLike = fc
    .tuple(fc.oneof(value.map((v) => Buffer.from(JSON.stringify(v) ?? 'null').toString('base64url')), b64), b64, b64)
    .map((parts) => parts.join('.'))
  const refreshLike = fc.tuple(b64, fc.nat(), b64, b64).map(([sid, gen, secret, mac]) => `${sid}.${gen}.${secret}.${mac}`)
  const garbage = fc.oneof(visible, jwtLike, refreshLike)
  const headers = fc.oneof(
    garbage.map((g) => ({ authorization: `Bearer ${g}` })),
    garbage.map((g) => ({ authorization: g })),
    garbage.map((g) => ({ cookie: `sg_access=${g}` })),
    garbage.map((g) => ({ cookie: `sg_refresh=${g}` })),
    fc.tuple(garbage, garbage).map(([a, r]) => ({ cookie: `sg_access=${a}; sg_refresh=${r}` })),
    garbage.map((g) => ({ cookie: g })),
    fc.tuple(garbage, garbage).map(([g, c]) => ({ authorization: `Bearer ${g}`, cookie: `sg_refresh=${c}` })),
  )
  const statuses = new Map<number, number>()
  await fc.assert(
    fc.asyncProperty(headers, async (h) => {
      const clean = Object.fromEntries(Object.entries(h).map(([k, v]) => [k, v.trim()]))
      const res = await send(`${gw.url}/api/orders`, { headers: clean })
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      return res.status === 401 && res.json?.error === 'unauthenticated' && typeof res.json?.message === 'string' && /^application\/json/.test(String(res.headers['content-type']))
    }),
    { numRuns: 200 },
  )
  t.same([...statuses.keys()], [401], '200 garbage credentials: all 401')
  t.equal(upstream.requests.length, 0, 'the upstream was never called')

  const bodies = fc.oneof(
    fc.json({ maxDepth: 2 }),
    fc.record({ refreshToken: fc.oneof(garbage, value) }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
    fc.record({ username: fc.oneof(visible, value), password: fc.oneof(visible, value) }, { requiredKeys: [] }).map((o) => JSON.stringify(o)),
    visible,
  )
  const endpoints = fc.constantFrom('/auth/refresh', '/auth/logout', '/auth/login', '/auth/logout-all', '/auth/session')
  await fc.assert(
    fc.asyncProperty(endpoints, bodies, fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'), async (path, body, type) => {
      const res = await send(`${gw.url}${path}`, { method: path === '/auth/session' ? 'GET' : 'POST', headers: path === '/auth/session' ? {} : { 'content-type': type }, ...(path === '/auth/session' ? {} : { body }) })
      return res.status < 500 && (res.status === 204 || typeof res.json?.error === 'string' || res.status === 200)
    }),
    { numRuns: 200 },
  )
  t.pass('200 garbage bodies to the auth endpoints: never a 5xx')
  t.equal((await send(`${gw.url}/healthz`)).status, 200)
})
