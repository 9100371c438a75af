/**
 * Loading a configuration (audit findings): `${...}` references are resolved correctly or reported, never kept as
 * text nor leaked as placeholders; a whole reference takes the type its setting needs; one run reports the problems of every file.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { configFiles, LOGIN } from './helpers/config-files.js'
import { hashPassword } from '../src/auth/password.js'
import { configFileFrom, DEFAULT_CONFIG_FILE, loadConfig, type LoadedConfig } from '../src/config/load.js'
import { ConfigError } from '../src/errors.js'
import { generatePrivateJwk } from '../src/tokens/keys.js'

const { dir, fileWith } = configFiles((fn) => t.teardown(fn), 'sg-config-loading-')

/** A configuration with the given `tokens:` lines (indented by the caller) and nothing else to get wrong. */
const withTokens = (...lines: string[]) => ['tokens:', ...lines, LOGIN].join('\n')

const load = (text: string, env: NodeJS.ProcessEnv = {}): Promise<LoadedConfig> => loadConfig(fileWith(text), env)

/** The `check` lines for this YAML (fails the test if it loads). */
async function problemLines(t: Test, text: string, env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  try {
    const { config } = await load(text, env)
    t.fail(`the configuration was accepted (issuer ${JSON.stringify(config.tokens.issuer)})`)
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`)
    throw err
  }
  return []
}

t.test('a backslash before ${VAR} in a double-quoted string is refused, never a leaked placeholder', async (t) => {
  const BACKSLASH_HINT = /:\d+: YAML syntax error: Invalid escape sequence \\\$ \(a backslash does not escape \$\{\.\.\.\}: write \$\$\{ for a literal \$\{\)$/
  const lines = await problemLines(t, withTokens('  issuer: "\\${NOPE}"'))
  t.equal(lines.length, 1, lines.join('; '))
  t.match(lines[0], BACKSLASH_HINT, 'YAML has no `\\$` escape: said so, with the way to write a literal ${')
  // The same with the flow-style fallback in play (another reference needs hiding).
  const flow = await problemLines(t, ['tokens: { issuer: "\\${NOPE}", audience: ${AUD} }', LOGIN].join('\n'), { AUD: 'api' })
  t.equal(flow.length, 1, flow.join('; '))
  t.match(flow[0], BACKSLASH_HINT, 'in flow style too')
  t.notMatch(flow.join('\n'), /SESSIONGATE_REF/, 'no placeholder text in the problems')

  const escaped = await load(['tokens: { issuer: "a\\\\${SG_X}", audience: ${AUD} }', LOGIN].join('\n'), { SG_X: 'x', AUD: 'api' })
  t.equal(escaped.config.tokens.issuer, 'a\\x', 'an escaped backslash (`\\\\`) before a reference: a backslash, then the value')
  t.equal(escaped.config.tokens.audience, 'api')

  // Placeholder text spelled by an escape (the file never holds it as written): an error, not a value.
  const spelled = await problemLines(t, ['tokens: { issuer: "__\\x53ESSIONGATE_REF_7__", audience: ${AUD} }', LOGIN].join('\n'), { AUD: 'api' })
  t.same(spelled, ['tokens.issuer: cannot be read: it spells the internal placeholder SESSIONGATE_REF_'])
})

t.test('every ${ that is not a well-formed reference is a problem at its path', async (t) => {
  const SYNTAX = 'write ${NAME} or ${NAME:-default} (or $${ for a literal ${)'
  for (const reference of ['${A-default}', '${A:default}', '${A', '${}', '${1A}', '${A B}', 'x${A:+y}z']) {
    for (const written of [`"${reference}"`, reference]) {
      const shown = reference.replace(/^x|z$/g, '')
      t.same(await problemLines(t, withTokens(`  issuer: ${written}`), { A: 'a' }), [`tokens.issuer: malformed \${...} reference \`${shown}\`: ${SYNTAX}`], `issuer: ${written}`)
    }
  }
  t.same(await problemLines(t, withTokens('  issuer: "${A:-${B:-x}}"')), ['tokens.issuer: nested ${...} reference `${A:-${B:-x}`: a default is plain text (write $${ for a literal ${)'])
  t.same(await problemLines(t, ['tokens: { issuer: ${A:x}, audience: ${AUD} }', LOGIN].join('\n'), { AUD: 'api' }),
    ['tokens.issuer: malformed ${...} reference `${A:x}`: ' + SYNTAX], 'in flow style: the reference, not a syntax error')
  t.same(await problemLines(t, withTokens('  audience: [api, "${A"]')), ['tokens.audience[1]: malformed ${...} reference `${A`: ' + SYNTAX], 'inside a list')
  t.same(await problemLines(t, ['server:', '  ${SG_K}: 1', LOGIN].join('\n'), { SG_K: 'port' }),
    ['server.${SG_K}: a key cannot use ${SG_K}: references are read in values only'], 'a key takes no reference: said so, once')
})

t.test('$${ is a literal ${', async (t) => {
  const { config } = await load(withTokens('  issuer: "$${HOME} costs $$5"', '  audience: ${NOPE:-a$${b}'), { HOME: '/root' })
  t.equal(config.tokens.issuer, '${HOME} costs $$5', '$${ is ${; $$ elsewhere stays as written')
  t.equal(config.tokens.audience, 'a${b', 'in a default too')
  const flow = await load(['tokens: { issuer: $${X}, audience: ${AUD} }', LOGIN].join('\n'), { AUD: 'api', X: 'x' })
  t.equal(flow.config.tokens.issuer, '${X}', 'in flow style too')
})

t.test('a whole reference takes the type its setting needs: a number for a port, the text for an audience (review)', async (t) => {
  const env = { AUD: '12345', SG_PORT: '9001', SG_WATCH: 'true' }
  for (const written of ['${AUD}', '"${AUD}"', "'${AUD}'", '!!str ${AUD}', '|-\n    ${AUD}', '>-\n    ${AUD}']) {
    t.equal((await load(withTokens(`  audience: ${written}`), env)).config.tokens.audience, '12345', `audience: ${written}`)
  }
  for (const written of ['${SG_PORT}', '"${SG_PORT}"', "'${SG_PORT}'"]) {
    t.equal((await load(['server:', `  port: ${written}`, LOGIN].join('\n'), env)).config.server.port, 9001, `port: ${written}`)
  }
  t.equal((await load(['watch: "${SG_WATCH}"', LOGIN].join('\n'), env)).config.watch, true, 'a quoted boolean')
  const flow = await load(['server: { port: ${SG_PORT} }', 'tokens: { audience: "${AUD}" }', 'watch: ${SG_WATCH}', LOGIN].join('\n'), env)
  t.equal(flow.config.server.port, 9001, 'plain in a flow mapping (the fallback path): typed')
  t.equal(flow.config.tokens.audience, '12345', 'quoted in a flow mapping: a string')
  t.equal(flow.config.watch, true)
  const fallback = await load(['server: { port: ${SG_PORT} }', 'tokens: { audience: "${AUD}", issuer: "${AUD}x" }', LOGIN].join('\n'), env)
  t.equal(fallback.config.tokens.audience, '12345', 'quoted next to a reference that needs the fallback: still a string')

  t.same(await problemLines(t, ['server:', '  port: "${SG_PORT}"', LOGIN].join('\n'), { SG_PORT: 'eighty' }),
    ['server.port: must be a number, not a string (from ${SG_PORT})'], 'a value no type fits: the problem names its variable')
  t.same(await problemLines(t, ['server:', '  port: !!str ${SG_PORT}', LOGIN].join('\n'), env),
    ['server.port: must be a number, not a string (from ${SG_PORT})'], '!!str forces the text')
})

t.test('a value is read the other way only for a wrong type, never over an out-of-range value or an override (review)', async (t) => {
  const port = (written: string) => ['server:', `  port: ${written}`, LOGIN].join('\n')
  const tooBig = await problemLines(t, port('${P}'), { P: '99999' })
  t.equal(tooBig.length, 1, tooBig.join('; '))
  t.match(tooBig[0], /^server\.port: .*65535.* \(from \$\{P\}\)$/, 'the range, not "must be a number, not a string"')
  const overridden = await problemLines(t, port('"${P}"'), { P: '8080', PORT: '99999' })
  t.notMatch(overridden.join('\n'), /from \$\{P\}/, `the file's variable is not blamed for PORT (${overridden.join('; ')})`)
  t.match(overridden.join('\n'), /server\.port: .*65535/)
  const env = { T: '42', A: '123' }
  const routes = (require: string) => [`routes:\n  - { name: r, prefix: /r, upstream: "http://127.0.0.1:1", require: { tenant: [${require}] } }`, LOGIN].join('\n')
  t.same((await load(routes('"${T}"'), env)).config.routes[0]?.require, { tenant: ['42'] }, 'a quoted reference stays text where either type fits')
  t.same((await load(routes('${T}'), env)).config.routes[0]?.require, { tenant: [42] }, 'a plain one the number, as 42 written plain')
  t.same((await load(withTokens('  audience: [${A}, x]'), env)).config.tokens.audience, ['123', 'x'], 'inside a list a union refuses at its parent')
})

t.test('one run reports the schema problems and those of the key and users files', async (t) => {
  const good = await generatePrivateJwk('EdDSA')
  const { d: _private, ...publicOnly } = good
  const publicKeys = join(dir, 'public.jwks.json')
  writeFileSync(publicKeys, JSON.stringify({ keys: [publicOnly] }))
  const plainUsers = join(dir, 'plain-users.yaml')
  writeFileSync(plainUsers, 'users:\n  - username: a\n    password: hunter2\n')
  const text = ['server:', '  port: x', 'tokens:', `  keys: ${publicKeys}`, 'login:', `  users: ${plainUsers}`].join('\n')
  const lines = await problemLines(t, text)
  t.equal(lines.length, 3, lines.join('\n'))
  t.match(lines, [
    /^server\.port: must be a number/,
    `tokens.keys: ${publicKeys} keys[0]: is a public key; a private key is needed to sign`,
    /users\[0\]\.password: plain-text passwords are refused/,
  ])

  // The algorithm as written when it is valid, else the default one.
  const edKeys = join(dir, 'ed.jwks.json')
  writeFileSync(edKeys, JSON.stringify({ keys: [good] }))
  const users = join(dir, 'users.yaml')
  writeFileSync(users, `users:\n  - username: a\n    password: "${await hashPassword('pw', 10)}"\n`)
  const es256 = await problemLines(t, ['server: { port: x }', `tokens: { algorithm: ES256, keys: ${edKeys} }`, `login: { users: ${users} }`].join('\n'))
  t.equal(es256.length, 2, es256.join('\n'))
  t.match(es256[1], /^tokens\.keys: .*ES256/, 'the key file is checked against the algorithm written')
  t.same(await problemLines(t, [`tokens: { algorithm: ED25519, keys: ${edKeys} }`, `login: { users: ${users} }`].join('\n')),
    ['tokens.algorithm: must be EdDSA, ES256 or RS256'], 'an invalid algorithm: the key file checked against the default one')
  const unread = await problemLines(t, ['server: { port: x }', 'tokens: { keys: [a] }', `login: { provider: upstream, users: ${plainUsers} }`].join('\n'))
  t.notMatch(unread.join('\n'), /plain-text|cannot read/, `a key file name that is no string, a users file the provider does not read: not read (${unread.join('; ')})`)
})

t.test('SESSIONGATE_CONFIG set but empty is unset', async (t) => {
  t.equal(configFileFrom(undefined, { SESSIONGATE_CONFIG: '' }), DEFAULT_CONFIG_FILE)
})

t.test('a route reading a claim no login sets is a warning (valid config), naming the route setting and the claim', async (t) => {
  const routes = [
    'routes:',
    '  - { name: a, prefix: /a, upstream: "http://127.0.0.1:1", headers: { X-Id: "{sub}", X-Roles: "{roles}", X-Team: "{team}", X-Both: "{sub}:{tema}" } }',
    '  - { name: b, prefix: /b, upstream: "http://127.0.0.1:1", require: { roles: [admin], group: [ops] } }',
    '  - { name: c, prefix: /c, upstream: "http://127.0.0.1:1", auth: optional, headers: { X-Sid: "{sid}" } }',
  ]
  const upstream = await load([
    'login: { provider: upstream, upstream: { url: "http://127.0.0.1:1/login", subject: /id, claims: { roles: /roles } } }',
    ...routes,
  ].join('\n'))
  t.same(upstream.warnings.map((w) => w.path), ['routes[0].headers.X-Team', 'routes[0].headers.X-Both', 'routes[1].require.group'])
  const [team, both, group] = upstream.warnings.map((w) => w.message)
  t.match(team, /reads \{team\}, a claim no login sets \(login\.upstream\.claims does not map it\): the upstream gets no such header/)
  t.match(both, /reads \{tema\}.*an empty value there/, 'a template with a known claim too is still sent')
  t.match(group, /every request to this route is refused with 403/)

  const hash = await hashPassword('pw')
  const usersFile = join(dir, 'claims-users.yaml')
  writeFileSync(usersFile, `users:\n  - { username: a, password: "${hash}", claims: { team: [x] } }\n  - { username: b, password: "${hash}", claims: { group: ops } }\n`)
  const users = await load([`login: { users: ${usersFile} }`, ...routes].join('\n'))
  t.same(users.warnings.map((w) => `${w.path}: ${w.message}`), [
    'routes[0].headers.X-Roles: reads {roles}, a claim no login sets (no user of the users file has it): the upstream gets no such header',
    'routes[0].headers.X-Both: reads {tema}, a claim no login sets (no user of the users file has it): the upstream gets an empty value there',
    'routes[1].require.roles: is a claim no login sets (no user of the users file has it): every request to this route is refused with 403',
  ], "any user's claims count; the gateway's own (sub, sid) always do")
})

t.test('a clockTolerance not shorter than accessTtl, or a reuseGrace over a minute, is a warning; the defaults warn of nothing', async (t) => {
  const long = await load(withTokens('  accessTtl: 5s', '  refreshAhead: 1s', '  clockTolerance: 5s'))
  t.same(long.warnings.map((w) => w.path), ['tokens.clockTolerance'])
  t.match(long.warnings[0]?.message, /is not shorter than tokens\.accessTtl: an access token is still accepted 5s after its expiry/)
  const grace = await load(withTokens('  reuseGrace: 2m'))
  t.same(grace.warnings.map((w) => w.path), ['tokens.reuseGrace'])
  t.match(grace.warnings[0]?.message, /^is over 60s: for 120s after a rotation, a replayed refresh token gets the live pair instead of revoking the session/)
  t.same((await load(withTokens('  reuseGrace: 60s'))).warnings, [], 'a minute is not a warning')
  t.same((await load(LOGIN)).warnings, [], 'no warning for the defaults')
})

t.test('a problem with a value from REDIS_URL, HOST or PORT names the variable, not only the file setting it replaced (audit)', async (t) => {
  t.same(await problemLines(t, LOGIN, { REDIS_URL: 'http://x' }), ["redis.url: must be a redis://, rediss:// or memory:// URL (from the environment's REDIS_URL, which overrides the file)"])
  t.same(await problemLines(t, LOGIN, { PORT: '70000' }), ["server.port: must be at most 65535 (from the environment's PORT, which overrides the file)"])
  t.same(await problemLines(t, LOGIN, { HOST: 'not a host!' }), ["server.host: must be an IP address or a host name, like 0.0.0.0 or 127.0.0.1 (from the environment's HOST, which overrides the file)"])
  t.same(await problemLines(t, LOGIN, { PORT: 'abc' }), ['PORT (environment): must be an integer'], 'as before')
  t.same(await problemLines(t, ['server: { port: 70000 }', LOGIN].join('\n')), ['server.port: must be at most 65535'], "the file's own value: no variable named")
})

t.test('one problem does not hide another: lifetimes against each other, reserved claims, duplicate users (audit)', async (t) => {
  t.same(await problemLines(t, withTokens('  accessTtl: 0', '  refreshIdleTtl: 1.5')), [
    'tokens.refreshIdleTtl: must be a duration like 500ms, 30s, 15m, 2h, 7d or an integer number of seconds',
    'tokens.accessTtl: must be at least 1s',
    'tokens.refreshAhead: must be shorter than tokens.accessTtl',
  ], 'a bad refreshIdleTtl hides no comparison of the others')
  t.same(await problemLines(t, withTokens('  refreshAbsoluteTtl: xx', '  refreshAhead: 1h')), [
    'tokens.refreshAbsoluteTtl: must be a duration like 500ms, 30s, 15m, 2h, 7d or an integer number of seconds',
    'tokens.refreshAhead: must be shorter than tokens.accessTtl',
  ], 'nor does a bad refreshAbsoluteTtl')
  t.same(await problemLines(t, 'login: { provider: upstream, upstream: { url: "http://127.0.0.1:1/login", subject: /id, claims: { sub: /a, roles: 5 } } }'), [
    'login.upstream.claims.roles: must be a string, not a number',
    'login.upstream.claims: must not set iss, aud, sub, iat, nbf, exp, jti, sid',
  ], 'a claim of the wrong type hides no reserved claim')
  const hash = await hashPassword('pw', 10)
  const usersFile = join(dir, 'duplicate-users.yaml')
  writeFileSync(usersFile, `users:\n  - { username: a, password: "${hash}" }\n  - { username: a, password: "scrypt$bad" }\n  - { username: b, sub: a, password: "${hash}" }\n`)
  t.same(await problemLines(t, `login: { users: ${usersFile} }`), [
    `${usersFile}: users[1].password: is a password hash of a kind this gateway does not read: store a hash from \`sessiongate hash-password\` (scrypt)`,
    `${usersFile}: users[1].username: duplicate username a`,
    `${usersFile}: users[2].sub: duplicate subject a (users[0] has it): each user needs a sub of its own`,
  ], 'a bad password hides no duplicate username or subject')
})

t.test('a users file that is not valid YAML: one line with the position, not cut off at its colon (audit)', async (t) => {
  const usersFile = join(dir, 'broken-users.yaml')
  writeFileSync(usersFile, 'users:\n  - username: a\n  password: [\n')
  t.same(await problemLines(t, `login: { users: ${usersFile} }`), [
    `login.users: cannot read users file ${usersFile}: All mapping items must start at the same column (line 3, column 1)`,
  ])
})

t.test('server.host is an IP address or a host name (audit)', async (t) => {
  for (const host of ['0.0.0.0', '127.0.0.1', '::', '::1', 'localhost', 'gateway.internal', 'my_gateway', 'api-1.example.com.']) {
    t.equal((await load([`server: { host: "${host}" }`, LOGIN].join('\n'))).config.server.host, host, host)
  }
  for (const host of ['not a host!', 'http://x', '-x', 'a..b', '[::1]', '1.2.3.4:80']) {
    t.same(await problemLines(t, [`server: { host: "${host}" }`, LOGIN].join('\n')), ['server.host: must be an IP address or a host name, like 0.0.0.0 or 127.0.0.1'], host)
  }
})

t.test('cookies.secure: false is a warning unless the gateway listens on a loopback address only', async (t) => {
  const open = await load(['cookies: { secure: false }', LOGIN].join('\n'))
  t.same(open.warnings.map((w) => `${w.path}: ${w.message}`), [
    'cookies.secure: is false while the gateway listens on 0.0.0.0: browsers send the session cookies over plain http too, where they can be read and replayed (false is for local development on 127.0.0.1; behind a TLS-terminating proxy keep it true)',
  ], 'the default host, 0.0.0.0')
  t.same((await load(['cookies: { secure: false }', LOGIN].join('\n'), { HOST: '10.0.0.5' })).warnings.map((w) => w.path), ['cookies.secure'], 'HOST counts too')
  for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1']) {
    t.same((await load([`server: { host: "${host}" }`, 'cookies: { secure: false }', LOGIN].join('\n'))).warnings, [], `${host}: only this machine can reach it`)
  }
  t.same((await load(['cookies: { secure: true }', LOGIN].join('\n'))).warnings, [], 'secure: true, the default')
})

t.test('an empty file, or one of comments only, says so before what it lacks (audit)', async (t) => {
  for (const text of ['', '# only a comment\n']) {
    const lines = await problemLines(t, text)
    t.equal(lines[0], '(root): is empty: the file has no settings (config/gateway.yaml is a start)', JSON.stringify(text))
    t.ok(lines.includes('login.users: is required when login.provider is users'), 'and what it lacks')
  }
})

t.test('a Redis store without a key file is a warning (each instance would sign with its own key); the in-process store is not (audit)', async (t) => {
  const redisNoKeys = await load(['redis: { url: "redis://127.0.0.1:6379/0" }', LOGIN].join('\n'))
  t.same(redisNoKeys.warnings.map((w) => w.path), ['tokens.keys'])
  t.match(redisNoKeys.warnings[0]?.message, /one instance refuses the tokens of another/)
  const fromEnv = await load(LOGIN, { REDIS_URL: 'redis://127.0.0.1:6379/0' })
  t.same(fromEnv.warnings.map((w) => w.path), ['tokens.keys'], 'REDIS_URL counts too')
  t.same((await load(['redis: { url: "memory://" }', LOGIN].join('\n'))).warnings, [], 'the in-process store: the demo setup, said at start')
})

t.test('the login block of the provider not chosen is a warning naming it; the chosen one alone is not', async (t) => {
  const usersFile = join(dir, 'unused-users.yaml')
  writeFileSync(usersFile, `users:\n  - { username: a, password: "${await hashPassword('pw', 10)}" }\n`)
  const upstreamBlock = 'upstream: { url: "http://127.0.0.1:1/login", subject: /id }'
  const both = await load(`login: { users: ${usersFile}, ${upstreamBlock} }`)
  t.same(both.warnings.map((w) => w.path), ['login.upstream'])
  t.match(both.warnings[0]?.message, /^is not used: login\.provider is users/)
  const viaUpstream = await load(`login: { provider: upstream, users: ${usersFile}, ${upstreamBlock} }`)
  t.same(viaUpstream.warnings.map((w) => w.path), ['login.users'])
  t.match(viaUpstream.warnings[0]?.message, /^is not used: login\.provider is upstream/)
  t.same((await load(`login: { provider: upstream, ${upstreamBlock} }`)).warnings, [], 'upstream alone: no warning')
})

t.test('a header template that looks like a mistyped placeholder is a warning; well-formed ones and other braces are not', async (t) => {
  const route = (headers: string, auth = 'required') => [`routes:\n  - { name: a, prefix: /a, upstream: "http://127.0.0.1:1", auth: ${auth}, headers: { ${headers} } }`, LOGIN].join('\n')
  const typos = await load(route('X-A: "{ sub }", X-B: "{sub", X-C: "{{sub}}", X-D: "{sub!}", X-E: "{sid} / {sub }", X-Ok: "user {sub} in {sid}"'))
  t.same(typos.warnings.map((w) => w.path), ['routes[0].headers.X-A', 'routes[0].headers.X-B', 'routes[0].headers.X-C', 'routes[0].headers.X-D', 'routes[0].headers.X-E'])
  t.match(typos.warnings[0]?.message, /^"\{ sub \}" looks like a mistyped placeholder, sent to the upstream as written: a placeholder is \{claim\}/)
  const fine = await load(route(`X-Id: "{sub}", X-Pair: "{sub}:{sid}", X-Plain: static, X-Json: '{"user":"{sub}","tags":{}}', X-Set: "{}"`))
  t.same(fine.warnings, [], 'JSON-shaped values and empty braces are not placeholders mistyped')
  t.same((await load(route('X-A: "{ sub }"', 'public'))).warnings, [], 'a public route injects nothing: no warning')
})
