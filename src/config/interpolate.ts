import { parse as parseYamlScalar } from 'yaml'
import type { ConfigProblem } from '../errors.js'
import { formatPath } from './path.js'

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g
const WHOLE_REFERENCE = /^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$/

/**
 * Replaces `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document.
 * A string that is one whole reference takes the YAML type of its value (`port: ${PORT:-8080}` is a number).
 * Substitution happens after parsing, so a variable's value can never inject YAML structure.
 */
export function interpolateEnv(
  node: unknown,
  env: NodeJS.ProcessEnv,
  problems: ConfigProblem[],
  path: (string | number)[] = [],
): unknown {
  if (typeof node === 'string') return interpolateString(node, env, problems, path)
  if (Array.isArray(node)) return node.map((item, i) => interpolateEnv(item, env, problems, [...path, i]))
  if (node !== null && typeof node === 'object') {
    const out: Record<string, unknown> = {}
    // defineProperty, not assignment: a YAML key `__proto__` must stay an (unknown, reported) key, not become the
    // object's prototype whose members the schema would then read as if they had been written there.
    for (const [key, value] of Object.entries(node)) {
      Object.defineProperty(out, key, { value: interpolateEnv(value, env, problems, [...path, key]), enumerable: true, writable: true, configurable: true })
    }
    return out
  }
  return node
}

function interpolateString(
  text: string,
  env: NodeJS.ProcessEnv,
  problems: ConfigProblem[],
  path: (string | number)[],
): unknown {
  if (!text.includes('${')) return text
  const replaced = text.replace(REFERENCE, (_all, name: string, fallback: string | undefined) => {
    const value = env[name]
    if (value !== undefined && value !== '') return value
    if (fallback !== undefined) return fallback
    problems.push({ path: formatPath(path), message: `environment variable ${name} is not set and has no default` })
    return ''
  })
  if (!WHOLE_REFERENCE.test(text)) return replaced
  try {
    const typed: unknown = parseYamlScalar(replaced)
    return typeof typed === 'number' || typeof typed === 'boolean' ? typed : replaced
  } catch {
    return replaced
  }
}
