import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, isAbsolute, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import { ConfigError, type ConfigProblem } from '../errors.js'
import { loadUsers, type UserRecord } from '../auth/users-file.js'
import { ephemeralKeyRing, loadKeyRing, type KeyRing } from '../tokens/keys.js'
import { hideReferences, interpolateEnv } from './interpolate.js'
import { describeIssue } from './describe-issue.js'
import { configSchema, type GatewayConfig } from './schema.js'

/** A configuration with the files it names read and checked: what the gateway runs on. */
export interface LoadedConfig {
  file: string
  config: GatewayConfig
  keys: KeyRing
  users: Map<string, UserRecord> | undefined
}

export const DEFAULT_CONFIG_FILE = 'config/gateway.yaml'

/** `--config`, else SESSIONGATE_CONFIG, else config/gateway.yaml. */
export function configFileFrom(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag ?? env.SESSIONGATE_CONFIG ?? DEFAULT_CONFIG_FILE
}

/** Environment overrides of CONTRACT §1: REDIS_URL, HOST, PORT win over the file. */
function applyEnvOverrides(doc: Record<string, unknown>, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): void {
  const section = (name: string): Record<string, unknown> => {
    const current = doc[name]
    if (current === undefined || current === null) doc[name] = {}
    return doc[name] as Record<string, unknown>
  }
  if (env.REDIS_URL) {
    const redis = section('redis')
    delete redis.cluster
    delete redis.sentinel
    redis.url = env.REDIS_URL
  }
  if (env.HOST) section('server').host = env.HOST
  if (env.PORT) {
    const port = Number(env.PORT)
    if (!/^\d+$/.test(env.PORT)) problems.push({ path: 'PORT (environment)', message: 'must be an integer' })
    else section('server').port = port
  }
}

/** Relative file names: against the working directory, then against the config file's folder. */
export function resolveConfigRelative(name: string, configFile: string): string {
  if (isAbsolute(name)) return name
  const fromCwd = resolve(name)
  if (existsSync(fromCwd)) return fromCwd
  const fromConfig = resolve(dirname(configFile), name)
  return existsSync(fromConfig) ? fromConfig : fromCwd
}

/** Parses, interpolates, validates and loads a configuration; throws ConfigError listing every problem. */
export async function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message
    throw new ConfigError([{ path: file, message: `cannot read the configuration: ${reason}` }])
  }
  const options = { uniqueKeys: true, prettyErrors: true } as const
  let yaml = parseDocument(text, options)
  let restore = (node: unknown) => node
  // Not valid YAML as written: perhaps because of `${...}` in flow style. Then the text with its references hidden
  // (if that still fails, its errors are the ones the references did not cause).
  const hidden = yaml.errors.length > 0 ? hideReferences(text) : undefined
  if (hidden) {
    yaml = parseDocument(hidden.text, options)
    restore = hidden.restore
  }
  if (yaml.errors.length > 0) {
    // The first few: later ones are mostly the parser losing its way after the first.
    throw new ConfigError(
      yaml.errors.slice(0, 3).map((e) => ({
        path: `${file}:${e.linePos?.[0]?.line ?? '?'}`,
        message: `YAML syntax error: ${e.message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '')}`,
      })),
    )
  }
  let raw: unknown
  try {
    // Throws on an alias without its anchor (`*x`) and on alias expansion bombs (maxAliasCount).
    raw = restore(yaml.toJS({ maxAliasCount: 100 }) ?? {})
  } catch (err) {
    throw new ConfigError([{ path: file, message: `YAML error: ${(err as Error).message.split('\n')[0]}` }])
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError([{ path: '(root)', message: 'must be a mapping of sections (server, redis, tokens, ...)' }])
  }
  const problems: ConfigProblem[] = []
  const doc = interpolateEnv(raw, env, problems) as Record<string, unknown>
  // A section written with nothing under it (`redis:`) is an omitted one: its defaults apply.
  for (const section of ['server', 'redis', 'tokens', 'cookies', 'csrf', 'login', 'routes']) if (doc[section] === null) delete doc[section]
  applyEnvOverrides(doc, env, problems)
  // reportInput: issues keep the offending value, so that a value of the wrong type is not reported as missing.
  const parsed = configSchema.safeParse(doc, { reportInput: true })
  if (!parsed.success) {
    // A value that is wrong only because its variable is missing is reported once, as the missing variable.
    const unset = new Set(problems.map((p) => p.path))
    problems.push(...parsed.error.issues.flatMap(describeIssue).filter((p) => !unset.has(p.path)))
  }
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems)
  const config = parsed.data

  let keys: KeyRing | undefined
  if (config.tokens.keys === 'ephemeral') keys = await ephemeralKeyRing(config.tokens.algorithm)
  else keys = await loadKeyRing(resolveConfigRelative(config.tokens.keys, file), config.tokens.algorithm, 'tokens.keys', problems)

  let users: Map<string, UserRecord> | undefined
  if (config.login.provider === 'users' && config.login.users !== undefined) {
    users = await loadUsers(resolveConfigRelative(config.login.users, file), 'login.users', problems)
  }
  if (problems.length > 0 || keys === undefined) throw new ConfigError(problems)
  return { file, config, keys, users }
}
