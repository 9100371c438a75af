/**
 * The YAML around the schema: `${VAR}` references where YAML syntax gets in the way (flow mappings and sequences,
 * whose `{`/`}` are indicators), shell semantics for an empty variable, syntax errors reported with their line,
 * sections written with nothing under them. (The schema's own rules are in config.test.ts.)
 */
import t from 'tap'
import { configFiles, LOGIN } from './helpers/config-files.js'
import { loadConfig } from '../src/config/load.js'
import { ConfigError } from '../src/errors.js'

const { fileWith } = configFiles((fn) => t.teardown(fn), 'sg-config-refs-')
const problemLines = async (text: string, env: NodeJS.ProcessEnv = {}) => {
  try {
    await loadConfig(fileWith(text), env)
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`)
    throw err
  }
  return []
}

t.test('references inside flow mappings and sequences, as in the contract example', async (t) => {
  const text = [
    'server: { host: ${SG_HOST:-127.0.0.1}, port: ${SG_PORT} }',
    'tokens: { issuer: "https://${SG_DOMAIN}/id", audience: [${SG_AUD:-api}, other], keys: ephemeral }',
    LOGIN,
    'routes: [{ name: a, prefix: /a, upstream: "http://${SG_UPSTREAM:-127.0.0.1:4001}" }]',
  ].join('\n')
  const { config } = await loadConfig(fileWith(text), { SG_PORT: '9123', SG_DOMAIN: 'gw.example' })
  t.equal(config.server.port, 9123, 'a whole reference in a flow mapping takes its YAML type')
  t.equal(config.server.host, '127.0.0.1', 'its default')
  t.equal(config.tokens.issuer, 'https://gw.example/id')
  t.same(config.tokens.audience, ['api', 'other'], 'inside a flow sequence')
  t.equal(config.routes[0]?.upstream, 'http://127.0.0.1:4001')
  t.same(await problemLines(text, { SG_DOMAIN: 'x' }), ['server.port: environment variable SG_PORT is not set and has no default'],
    'a missing variable in a flow mapping is one line with its path')
})

t.test('a text that parses as written keeps its meaning; an unterminated reference never swallows lines', async (t) => {
  const unterminated = [
    'tokens:',
    '  issuer: ${SG_ISSUER:-https://gw.example',
    '  audience: api',
    '  keys: ephemeral',
    'cookies: { secure: false }',
    LOGIN,
  ].join('\n')
  const reported = 'tokens.issuer: malformed ${...} reference `${SG_ISSUER:-https://gw.example`: write ${NAME} or ${NAME:-default} (or $${ for a literal ${)'
  t.same(await problemLines(unterminated, { SG_ISSUER: 'https://set.example' }), [reported], 'the unterminated reference is reported, not kept as text')
  t.same(await problemLines(unterminated.replace('secure: false', 'secure: maybe'), { SG_ISSUER: 'https://set.example' }),
    [reported, 'cookies.secure: must be true or false, not a string'], 'the lines after it are still read, the flow mapping too')
  const quoted = ['tokens: { issuer: "https://gw.example/${SG_X:-a\\"b}", audience: api, keys: ephemeral }', LOGIN].join('\n')
  t.equal((await loadConfig(fileWith(quoted), {})).config.tokens.issuer, 'https://gw.example/a"b', 'escapes in a quoted default keep their YAML meaning')
  const commented = ['# set ${SG_Y:-x to change', 'tokens: { issuer: https://gw.example, audience: api, keys: ephemeral }', LOGIN].join('\n')
  t.equal((await loadConfig(fileWith(commented), {})).config.tokens.audience, 'api', 'an unterminated reference in a comment is a comment')
})

t.test('a repeated reference as a key is still a duplicate key', async (t) => {
  const lines = await problemLines(['server: { ${SG_K}: 1, ${SG_K}: 2 }', LOGIN].join('\n'), { SG_K: 'port' })
  t.equal(lines.length, 1)
  t.match(lines[0], /YAML syntax error: Map keys must be unique/)
})

t.test('an empty variable: ${VAR} is empty, ${VAR:-default} takes the default', async (t) => {
  const text = ['tokens: { issuer: "https://gw${SG_SUFFIX}.example", audience: "${SG_AUD:-api}", keys: ephemeral }', LOGIN].join('\n')
  const { config } = await loadConfig(fileWith(text), { SG_SUFFIX: '', SG_AUD: '' })
  t.equal(config.tokens.issuer, 'https://gw.example', 'set but empty is the empty string, as in the shell')
  t.equal(config.tokens.audience, 'api')
})

t.test('YAML syntax errors name their line, a few at most', async (t) => {
  const lines = await problemLines(['server:', '  port: 8080', '  port: 8081', LOGIN].join('\n'))
  t.equal(lines.length, 1)
  t.match(lines[0], /c\d+\.yaml:3: YAML syntax error: Map keys must be unique$/)
  const broken = await problemLines('server: { port: 1\nrouteS: [ { a: ]\n' + 'x: {\n'.repeat(30))
  t.ok(broken.length >= 1 && broken.length <= 3, `at most three lines (${broken.length})`)
  t.ok(broken.every((l) => /\.yaml:\d+: YAML syntax error: /.test(l)), 'each with its line number')
})

t.test('a section with nothing under it is an omitted one', async (t) => {
  const { config } = await loadConfig(fileWith(['server:', 'redis:', 'cookies:', 'csrf:', LOGIN].join('\n')), {})
  t.equal(config.redis.url, undefined, 'redis: empty -> the in-process store')
  t.equal(config.server.port, 8080)
  t.equal(config.cookies.secure, true)
  t.same(await problemLines(['server: 5', LOGIN].join('\n')), ['server: must be a mapping, not a number'], 'a section of the wrong type is still refused')
  t.same(await problemLines(['redis: { cluster: ["memory://", "redis://h:7000"] }', LOGIN].join('\n')),
    ['redis.cluster[0]: must be a redis:// or rediss:// URL (memory:// is not a cluster node)'], 'memory:// is no cluster node')
})
