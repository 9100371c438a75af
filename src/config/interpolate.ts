import { parse as parseYamlScalar } from 'yaml'
import type { ConfigProblem } from '../errors.js'
import { formatPath } from './path.js'

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g
const WHOLE_REFERENCE = /^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$/

/** A reference on one line, as hideReferences looks for it in the raw text (a default never spans lines). */
const REFERENCE_ON_ONE_LINE = /\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}\r\n]*)?\}/g
const PLACEHOLDER = /__SESSIONGATE_REF_(\d+)__/g

/**
 * `${...}` references hidden from the YAML parser, for a text that does not parse with them: `{` and `}` are flow
 * indicators, so `server: { port: ${PORT} }` is a syntax error. Each distinct reference becomes one plain placeholder
 * word; `restore` puts the reference text back into the parsed strings (and keys), where interpolateEnv then
 * resolves it as usual. Only for that fallback (load.ts): a text that parses as written keeps its exact meaning.
 */
export function hideReferences(text: string): { text: string; restore: (node: unknown) => unknown } | undefined {
  if (text.includes('__SESSIONGATE_REF_')) return undefined
  const references: string[] = []
  const hidden = text.replace(REFERENCE_ON_ONE_LINE, (reference) => {
    const known = references.indexOf(reference)
    return `__SESSIONGATE_REF_${known === -1 ? references.push(reference) - 1 : known}__`
  })
  if (references.length === 0) return undefined
  const back = (value: string) => value.replace(PLACEHOLDER, (_all, i: string) => references[Number(i)] as string)
  return { text: hidden, restore: (node) => mapTree(node, back, back) }
}

/**
 * A parsed YAML tree rebuilt with every string (given its path) through `text` and every key through `key`.
 * defineProperty, not assignment: a YAML key `__proto__` must stay an (unknown, reported) key, not become the
 * object's prototype whose members the schema would then read as if they had been written there.
 */
function mapTree(
  node: unknown,
  text: (value: string, path: (string | number)[]) => unknown,
  key: (name: string) => string = (name) => name,
  path: (string | number)[] = [],
): unknown {
  if (typeof node === 'string') return text(node, path)
  if (Array.isArray(node)) return node.map((item, i) => mapTree(item, text, key, [...path, i]))
  if (node !== null && typeof node === 'object') {
    const out: Record<string, unknown> = {}
    for (const [name, value] of Object.entries(node)) {
      Object.defineProperty(out, key(name), { value: mapTree(value, text, key, [...path, name]), enumerable: true, writable: true, configurable: true })
    }
    return out
  }
  return node
}

/**
 * Replaces `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document.
 * A string that is one whole reference takes the YAML type of its value (`port: ${PORT:-8080}` is a number).
 * Substitution happens after parsing, so a variable's value can never inject YAML structure.
 */
export function interpolateEnv(node: unknown, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): unknown {
  return mapTree(node, (text, path) => interpolateString(text, env, problems, path))
}

function interpolateString(
  text: string,
  env: NodeJS.ProcessEnv,
  problems: ConfigProblem[],
  path: (string | number)[],
): unknown {
  if (!text.includes('${')) return text
  const replaced = text.replace(REFERENCE, (_all, name: string, fallback: string | undefined) => {
    // As in the shell: `${VAR}` is the value even when empty; `${VAR:-default}` takes the default for empty too.
    const value = env[name]
    if (value !== undefined && (value !== '' || fallback === undefined)) return value
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
