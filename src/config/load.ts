import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, isAbsolute, resolve } from 'node:path'
import { parseDocument, type YAMLError } from 'yaml'
import type { z } from 'zod'
import { ConfigError, type ConfigProblem } from '../errors.js'
import { loadUsers, type UserRecord } from '../auth/users-file.js'
import { ephemeralKeyRing, loadKeyRing, type KeyRing, type SigningAlgorithm } from '../tokens/keys.js'
import { hideReferences, interpolateDocument } from './interpolate.js'
import { configWarnings } from './warnings.js'
import { describeIssue } from './describe-issue.js'
import { formatPath } from './path.js'
import { configSchema, SIGNING_ALGORITHMS, type GatewayConfig } from './schema.js'

/** A configuration with the files it names read and checked: what the gateway runs on. */
export interface LoadedConfig {
  file: string
  config: GatewayConfig
  keys: KeyRing
  users: Map<string, UserRecord> | undefined
  /** What is valid but almost certainly a mistake (config/warnings.ts): `check` prints them, the gateway logs them. */
  warnings: ConfigProblem[]
}

export const DEFAULT_CONFIG_FILE = 'config/gateway.yaml'

/** `--config`, else SESSIONGATE_CONFIG, else config/gateway.yaml. An empty SESSIONGATE_CONFIG is unset, as PORT= is. */
export function configFileFrom(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag ?? (env.SESSIONGATE_CONFIG || DEFAULT_CONFIG_FILE)
}

/**
 * Environment overrides of CONTRACT §1: REDIS_URL, HOST, PORT win over the file. Returns the YAML paths whose file
 * value they replaced, each with its variable (a problem there is the override's, not the file's).
 */
function applyEnvOverrides(doc: Record<string, unknown>, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): Map<string, string> {
  const replaced = new Map<string, string>()
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
    replaced.set('redis.url', 'REDIS_URL')
  }
  if (env.HOST) {
    section('server').host = env.HOST
    replaced.set('server.host', 'HOST')
  }
  if (env.PORT) {
    const port = Number(env.PORT)
    if (!/^\d+$/.test(env.PORT)) problems.push({ path: 'PORT (environment)', message: 'must be an integer' })
    else {
      section('server').port = port
      replaced.set('server.port', 'PORT')
    }
  }
  return replaced
}

/** Relative file names: against the working directory, then against the config file's folder. */
export function resolveConfigRelative(name: string, configFile: string): string {
  if (isAbsolute(name)) return name
  const fromCwd = resolve(name)
  if (existsSync(fromCwd)) return fromCwd
  const fromConfig = resolve(dirname(configFile), name)
  return existsSync(fromConfig) ? fromConfig : fromCwd
}

/** The files a configuration names: a key set (undefined: an in-memory key) and a users file (undefined: none). */
interface NamedFiles {
  keys: string | undefined
  algorithm: SigningAlgorithm
  users: string | undefined
}

function namedFiles(config: GatewayConfig): NamedFiles {
  return {
    keys: config.tokens.keys === 'ephemeral' ? undefined : config.tokens.keys,
    algorithm: config.tokens.algorithm,
    users: config.login.provider === 'users' ? config.login.users : undefined,
  }
}

/**
 * The same, read from a document the schema refused, so that one `check` also reports the problems of those files:
 * each one whose name is a usable string, with the algorithm written (if valid, else the default one).
 */
function namedFilesInRaw(doc: Record<string, unknown>): NamedFiles {
  const section = (name: string): Record<string, unknown> => {
    const value = doc[name]
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {}
  }
  const fileName = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined)
  const { keys, algorithm } = section('tokens')
  const { provider, users } = section('login')
  return {
    keys: keys === 'ephemeral' ? undefined : fileName(keys),
    algorithm: typeof algorithm === 'string' && (SIGNING_ALGORITHMS as readonly string[]).includes(algorithm) ? (algorithm as SigningAlgorithm) : 'EdDSA',
    users: provider === undefined || provider === 'users' ? fileName(users) : undefined,
  }
}

/** A YAML syntax error as a problem line; a `\$` gets the reason, as it is what a shell habit writes before `${`. */
function syntaxProblem(error: YAMLError, file: string): ConfigProblem {
  const message = error.message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '') ?? ''
  const hint = message.startsWith('Invalid escape sequence \\$')
    ? ' (a backslash does not escape ${...}: write $${ for a literal ${)'
    : ''
  return { path: `${file}:${error.linePos?.[0]?.line ?? '?'}`, message: `YAML syntax error: ${message}${hint}` }
}

/**
 * Problems with the schema's wording; a value made from variables says which, as the file does not show it, and so
 * does a value an environment override put in place of the file's.
 */
function schemaProblems(issues: z.core.$ZodIssue[], variablesByPath: Map<string, string[]>, overridden: Map<string, string>): ConfigProblem[] {
  return issues.flatMap(describeIssue).map((problem) => {
    const override = overridden.get(problem.path)
    if (override !== undefined) return { ...problem, message: `${problem.message} (from the environment's ${override}, which overrides the file)` }
    const variables = variablesByPath.get(problem.path)
    if (variables === undefined) return problem
    return { ...problem, message: `${problem.message} (from ${variables.map((name) => `\${${name}}`).join(', ')})` }
  })
}

/**
 * Whether the schema refused the type of the value at `path` (a wrong type there, or a union of types at it or at
 * its parent, as for a list that may also be a string): a value out of range, say, is no reason to read it otherwise.
 */
function wrongTypeAt(issues: z.core.$ZodIssue[], path: (string | number)[]): boolean {
  const here = formatPath(path)
  const parent = formatPath(path.slice(0, -1))
  return issues.some((i) => {
    const at = formatPath(i.path)
    return (i.code === 'invalid_type' && at === here) || (i.code === 'invalid_union' && (at === here || at === parent))
  })
}

/** The value at a YAML path of a parsed document (undefined when an override replaced what held it). */
function valueAt(doc: Record<string, unknown>, path: (string | number)[]): unknown {
  let node: unknown = doc
  for (const key of path) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) return undefined
    node = (node as Record<string | number, unknown>)[key]
  }
  return node
}

/** Sets the value at a YAML path of a parsed document (the path exists: it came from the same document). */
function setAt(doc: Record<string, unknown>, path: (string | number)[], value: unknown): void {
  if (path.some((key) => key === '__proto__' || key === 'constructor' || key === 'prototype')) return
  const parent = valueAt(doc, path.slice(0, -1))
  if (parent !== null && typeof parent === 'object') (parent as Record<string | number, unknown>)[path[path.length - 1] as string | number] = value
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
  // Not valid YAML as written: perhaps because of `${...}` in flow style. Then the text with its references hidden
  // (if that still fails, its errors are the ones the references did not cause).
  const hidden = yaml.errors.length > 0 ? hideReferences(text) : undefined
  if (hidden) yaml = parseDocument(hidden.text, options)
  // The first few: later ones are mostly the parser losing its way after the first.
  if (yaml.errors.length > 0) throw new ConfigError(yaml.errors.slice(0, 3).map((e) => syntaxProblem(e, file)))
  const problems: ConfigProblem[] = []
  hidden?.restore(yaml, problems)
  const { variablesByPath, twoWayReferences } = interpolateDocument(yaml, env, problems)
  let raw: unknown
  try {
    // Throws on an alias without its anchor (`*x`) and on alias expansion bombs (maxAliasCount).
    raw = yaml.toJS({ maxAliasCount: 100 }) ?? {}
    // Said first, so that the problems that follow (the settings it lacks) are read as what they are.
    if (yaml.contents === null) problems.push({ path: '(root)', message: 'is empty: the file has no settings (config/gateway.yaml is a start)' })
  } catch (err) {
    throw new ConfigError([{ path: file, message: `YAML error: ${(err as Error).message.split('\n')[0]}` }])
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError([{ path: '(root)', message: 'must be a mapping of sections (server, redis, tokens, ...)' }])
  }
  const doc = raw as Record<string, unknown>
  // A section written with nothing under it (`redis:`) is an omitted one: its defaults apply.
  for (const section of ['server', 'redis', 'tokens', 'cookies', 'csrf', 'login', 'routes']) if (doc[section] === null) delete doc[section]
  const overridden = applyEnvOverrides(doc, env, problems)
  for (const path of overridden.keys()) variablesByPath.delete(path)
  // reportInput: issues keep the offending value, so that a value of the wrong type is not reported as missing.
  let parsed = configSchema.safeParse(doc, { reportInput: true })
  // A whole reference read one way (`12345` the number, `"${PORT}"` the text) where the setting's type wants the other.
  const otherWay = parsed.success ? [] : twoWayReferences.filter((ref) => wrongTypeAt(parsed.error?.issues ?? [], ref.path) && valueAt(doc, ref.path) === ref.value)
  if (otherWay.length > 0) {
    for (const { path, other } of otherWay) setAt(doc, path, other)
    parsed = configSchema.safeParse(doc, { reportInput: true })
  }
  if (!parsed.success) {
    // A value that is wrong only because of its reference (a missing variable, a malformed `${`) is reported once.
    const reported = new Set(problems.map((p) => p.path))
    problems.push(...schemaProblems(parsed.error.issues, variablesByPath, overridden).filter((p) => !reported.has(p.path)))
  }

  // Read even when the schema failed, so that one run reports the problems of every file.
  const named = parsed.success ? namedFiles(parsed.data) : namedFilesInRaw(doc)
  const fileKeys = named.keys === undefined ? undefined : await loadKeyRing(resolveConfigRelative(named.keys, file), named.algorithm, 'tokens.keys', problems)
  const users = named.users === undefined ? undefined : await loadUsers(resolveConfigRelative(named.users, file), 'login.users', problems)
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems)
  const keys = named.keys === undefined ? await ephemeralKeyRing(named.algorithm) : fileKeys
  if (keys === undefined) throw new ConfigError(problems)
  return { file, config: parsed.data, keys, users, warnings: configWarnings(parsed.data, users) }
}
