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
  const message = issue.message.replace(/^Invalid input: /, 'must be ').replace(/^Invalid option: expected one of /, 'must be one of ')
  return [{ path, message }]
}

const TYPE_NAMES: Record<string, string> = { object: 'a mapping', record: 'a mapping', array: 'a list', string: 'a string', number: 'a number', int: 'an integer', boolean: 'true or false', null: 'empty', undefined: 'missing' }
const typeName = (zodType: string): string => TYPE_NAMES[zodType] ?? zodType
