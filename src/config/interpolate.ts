import { isMap, isScalar, isSeq, parse as parseYaml, type Document, type Scalar } from 'yaml'
import type { ConfigProblem } from '../errors.js'
import { formatPath } from './path.js'

/*
 * The reference syntax, as in the shell and docker-compose:
 *   ${NAME}            the variable's value (an error when it is unset; set but empty is the empty string)
 *   ${NAME:-default}   the value, or `default` when the variable is unset or empty
 *   $${                a literal `${` (anywhere, defaults included), the way to write `${` that is no reference
 * NAME is a letter or `_`, then letters, digits and `_`. A default is plain text up to the first `}`: it cannot hold
 * another reference. Any other `${` is a mistake, reported with its YAML path rather than kept as text.
 */
const NAME = '[A-Za-z_][A-Za-z0-9_]*'
/** A default: any text but `}` and `${`, where `$${` is a literal `${`. */
const DEFAULT = '(?:\\$\\$\\{|\\$(?!\\{)|[^$}])*'
/** `$${`, a well-formed reference (name, default), or any other `${` up to the next `}` (malformed). */
const DOLLAR_BRACE = new RegExp(`\\$\\$\\{|\\$\\{(${NAME})(?::-(${DEFAULT}))?\\}|\\$\\{[^}]*\\}?`, 'g')
const WHOLE_REFERENCE = new RegExp(`^\\$\\{${NAME}(?::-${DEFAULT})?\\}$`)

type Path = (string | number)[]
type Report = (message: string) => void

/**
 * Every scalar of a parsed document with its YAML path, keys included (a key's path is the one it names). Aliases
 * are not followed: the node they point to is visited once, where its anchor is written.
 */
function forEachScalar(node: unknown, visit: (scalar: Scalar, path: Path, isKey: boolean) => void, path: Path = []): void {
  if (isScalar(node)) visit(node, path, false)
  else if (isSeq(node)) node.items.forEach((item, i) => forEachScalar(item, visit, [...path, i]))
  else if (isMap(node)) {
    for (const pair of node.items) {
      // The key first: its text (restored, unescaped) names the path of its value.
      if (isScalar(pair.key)) visit(pair.key, [...path, String(pair.key.value)], true)
      forEachScalar(pair.value, visit, [...path, String(isScalar(pair.key) ? pair.key.value : pair.key)])
    }
  }
}

const PLACEHOLDER_MARK = 'SESSIONGATE_REF_'
const PLACEHOLDER = new RegExp(`__${PLACEHOLDER_MARK}(\\d+)__`, 'g')
/**
 * A `${...}` on one line, with the backslashes just before it. A default never spans lines, so an unterminated
 * reference never swallows the lines after it. Malformed ones too, so that they are reported as such, not as syntax.
 */
const REFERENCE_ON_ONE_LINE = /(\\*)(\$\{[^}\r\n]*\})/g

/**
 * `${...}` references hidden from the YAML parser, for a text that does not parse with them: `{` and `}` are flow
 * indicators, so `server: { port: ${PORT} }` is a syntax error. Each distinct reference becomes one placeholder word,
 * written where the reference was, so its scalar keeps its style (a placeholder in quotes was a quoted reference);
 * `restore` puts the reference text back into the parsed scalars, where interpolateDocument then resolves it as
 * usual. Only for that fallback (load.ts): a text that parses as written keeps its exact meaning.
 */
export function hideReferences(text: string): { text: string; restore: (doc: Document, problems: ConfigProblem[]) => void } | undefined {
  if (text.includes(PLACEHOLDER_MARK)) return undefined
  const references: string[] = []
  const hidden = text.replace(REFERENCE_ON_ONE_LINE, (all, backslashes: string, reference: string) => {
    // After an odd number of backslashes the `$` is escaped in a double-quoted string (`\$`, which YAML refuses:
    // load.ts says why), and a placeholder there would be read as an escape (`\_` is a no-break space): left as written.
    if (backslashes.length % 2 === 1) return all
    const known = references.indexOf(reference)
    return `${backslashes}__${PLACEHOLDER_MARK}${known === -1 ? references.push(reference) - 1 : known}__`
  })
  if (references.length === 0) return undefined
  const restore = (doc: Document, problems: ConfigProblem[]) =>
    forEachScalar(doc.contents, (scalar, path) => {
      if (typeof scalar.value !== 'string' || !scalar.value.includes(PLACEHOLDER_MARK)) return
      const restored = scalar.value.replace(PLACEHOLDER, (all, i: string) => references[Number(i)] ?? all)
      scalar.value = restored
      // Nothing written in the file can leave one (a text holding the mark never takes this path), but an escape
      // could spell one: then an error, never placeholder text in a value.
      if (restored.includes(PLACEHOLDER_MARK)) {
        problems.push({ path: formatPath(path), message: `cannot be read: it spells the internal placeholder ${PLACEHOLDER_MARK}` })
      }
    })
  return { text: hidden, restore }
}

/**
 * Resolves the references in every scalar of a parsed document, in place (so before toJS: a variable's value can
 * never inject YAML structure). A plain scalar that is one whole reference takes the YAML type of its value
 * (`port: ${PORT:-8080}` is a number); a quoted one is text; a `!!str` or block scalar is always text. Keys take no
 * references. Returns the variables each value was made from, so that a problem with the value can name them, and
 * the whole references that read two ways, for a setting whose type wants the other reading.
 */
export interface Interpolated {
  /** By YAML path (formatPath), the variables each value was made from. */
  variablesByPath: Map<string, string[]>
  /**
   * Whole references whose value reads two ways (`12345`: the number or the text): the value given (`value`) and the
   * other reading (`other`), for a setting whose type refuses the first (load.ts).
   */
  twoWayReferences: { path: Path; value: unknown; other: unknown }[]
}

export function interpolateDocument(doc: Document, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): Interpolated {
  const variablesByPath = new Map<string, string[]>()
  const twoWayReferences: Interpolated['twoWayReferences'] = []
  forEachScalar(doc.contents, (scalar, path, isKey) => {
    if (typeof scalar.value !== 'string' || !scalar.value.includes('${')) return
    const report: Report = (message) => problems.push({ path: formatPath(path), message })
    if (isKey) {
      scalar.value = expand(scalar.value, report, (reference) => {
        report(`a key cannot use ${reference}: references are read in values only`)
        return reference
      })
      return
    }
    const variables: string[] = []
    const text = expand(scalar.value, report, (_reference, name, fallback) => {
      variables.push(name)
      return valueOf(name, fallback, env, report)
    })
    // A plain whole reference takes the YAML type of its value, as the value written plain would; a quoted one is
    // text, as the value written in quotes would. Where the setting's type refuses that reading and the value reads
    // the other way too, the other way is taken (load.ts): `port: "${PORT}"` is the number, `audience: ${AUD}` with
    // AUD=12345 the text. `!!str` and block scalars are always text.
    const whole = scalar.tag === undefined && (scalar.type === 'PLAIN' || scalar.type === 'QUOTE_DOUBLE' || scalar.type === 'QUOTE_SINGLE') && WHOLE_REFERENCE.test(scalar.value)
    const typed = whole ? yamlTyped(text) : text
    const value = scalar.type === 'PLAIN' ? typed : text
    scalar.value = value
    if (typed !== text) twoWayReferences.push({ path, value, other: value === text ? typed : text })
    if (variables.length > 0) variablesByPath.set(formatPath(path), variables)
  })
  return { variablesByPath, twoWayReferences }
}

/** `text` with `$${` made `${`, each well-formed reference replaced by `resolve`, and each malformed one reported. */
function expand(text: string, report: Report, resolve: (reference: string, name: string, fallback: string | undefined) => string): string {
  return text.replace(DOLLAR_BRACE, (match, name: string | undefined, fallback: string | undefined) => {
    if (match === '$${') return '${'
    if (name !== undefined) return resolve(match, name, fallback?.replaceAll('$${', '${'))
    report(malformedMessage(match))
    return match
  })
}

function malformedMessage(reference: string): string {
  const shown = reference.length > 40 ? `${reference.slice(0, 40)}…` : reference
  if (reference.indexOf('${', 2) !== -1) return `nested \${...} reference \`${shown}\`: a default is plain text (write $\${ for a literal \${)`
  return `malformed \${...} reference \`${shown}\`: write \${NAME} or \${NAME:-default} (or $\${ for a literal \${)`
}

/** As in the shell: `${VAR}` is the value even when empty; `${VAR:-default}` takes the default for empty too. */
function valueOf(name: string, fallback: string | undefined, env: NodeJS.ProcessEnv, report: Report): string {
  const value = env[name]
  if (value !== undefined && (value !== '' || fallback === undefined)) return value
  if (fallback !== undefined) return fallback
  report(`environment variable ${name} is not set and has no default`)
  return ''
}

/** A value as YAML would type it written plain: only numbers and booleans; anything else stays the string. */
function yamlTyped(value: string): unknown {
  try {
    const typed: unknown = parseYaml(value, { logLevel: 'silent' })
    return typeof typed === 'number' || typeof typed === 'boolean' ? typed : value
  } catch {
    return value
  }
}
