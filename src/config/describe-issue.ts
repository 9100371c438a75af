import type { z } from 'zod'
import type { ConfigProblem } from '../errors.js'
import { formatPath } from './path.js'

/** A zod issue as the problem lines of `sessiongate check` say it: `unknown key`, `is required`, `must be a list, not a string`. */
export function describeIssue(issue: z.core.$ZodIssue): ConfigProblem[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: formatPath([...issue.path, key]), message: 'unknown key' }))
  }
  const path = formatPath(issue.path)
  // A refused key of a mapping (a header name, say): zod says "Invalid key in record"; its own check says why.
  if (issue.code === 'invalid_key' && issue.issues[0]) return [{ path, message: issue.issues[0].message }]
  // zod says what it received in the message (issue.input is only there when the parse was asked to report it).
  const wrongType = /^Invalid input: expected (\w+), received (\w+)$/.exec(issue.message)
  if (wrongType?.[2] === 'undefined' || (issue.code === 'invalid_type' && !wrongType && issue.input === undefined)) return [{ path, message: 'is required' }]
  if (wrongType) return [{ path, message: `must be ${typeName(wrongType[1] as string)}, not ${typeName(wrongType[2] as string)}` }]
  if (issue.code === 'too_small' && Number(issue.minimum) === 1 && (issue.origin === 'string' || issue.origin === 'array')) {
    return [{ path, message: 'must not be empty' }]
  }
  // Only zod's own wording: a schema's message of its own says why (`must be at least 1 (0 would refuse every login)`).
  if ((issue.code === 'too_big' || issue.code === 'too_small') && /^Too (big|small): /.test(issue.message)) {
    const bound = describeBound(issue)
    if (bound) return [{ path, message: bound }]
  }
  const message = issue.message.replace(/^Invalid input: /, 'must be ').replace(/^Invalid option: expected one of /, 'must be one of ')
  return [{ path, message }]
}

/** A bound in words (`must be at most 65535`, `must have at least 2 items`); zod says `Too big: expected number to be <=65535`. */
function describeBound(issue: z.core.$ZodIssueTooBig | z.core.$ZodIssueTooSmall): string | undefined {
  const bound = Number(issue.code === 'too_big' ? issue.maximum : issue.minimum)
  const unit = issue.origin === 'string' ? ' characters' : issue.origin === 'array' ? ' items' : ''
  if (unit === '' && issue.origin !== 'number' && issue.origin !== 'int') return undefined
  const below = unit === '' ? 'less than' : 'fewer than'
  const word = issue.inclusive === false ? (issue.code === 'too_big' ? below : 'more than') : issue.code === 'too_big' ? 'at most' : 'at least'
  return `must ${unit === '' ? 'be' : 'have'} ${word} ${bound}${unit}`
}

const TYPE_NAMES: Record<string, string> = { object: 'a mapping', record: 'a mapping', array: 'a list', string: 'a string', number: 'a number', int: 'an integer', boolean: 'true or false', null: 'empty', undefined: 'missing' }
const typeName = (zodType: string): string => TYPE_NAMES[zodType] ?? zodType
