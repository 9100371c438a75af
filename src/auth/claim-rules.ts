import type { JWTPayload } from 'jose'
import type { RouteConfig } from '../config/schema.js'

/** `require: { roles: [admin] }`: every listed claim must contain (or equal) one of the listed values. */
export function meetsRequirements(payload: JWTPayload, require: RouteConfig['require']): boolean {
  if (!require) return true
  for (const [claim, allowed] of Object.entries(require)) {
    const value = payload[claim]
    const values = Array.isArray(value) ? value : [value]
    if (!values.some((v) => allowed.some((a) => a === v))) return false
  }
  return true
}

const PLACEHOLDER = /\{([A-Za-z0-9_.:-]+)\}/g
// eslint-disable-next-line no-control-regex
const NOT_IN_HEADER_VALUE = /[\u0000-\u0008\u000a-\u001f\u007f]/g

function claimText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(',')
  if (typeof value === 'object') return JSON.stringify(value)
  return String(value)
}

/**
 * The identity headers of a route, filled from the token's claims: `"{sub}"`, `"{roles}"` (arrays joined with
 * commas). A header whose claims are all missing is not sent.
 */
export function identityHeaders(templates: Record<string, string>, payload: JWTPayload | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  if (!payload) return out
  for (const [name, template] of Object.entries(templates)) {
    let found = false
    const value = template.replace(PLACEHOLDER, (_m, claim: string) => {
      const text = claimText(payload[claim])
      if (text !== undefined) found = true
      return text ?? ''
    })
    if (found || !template.includes('{')) out[name.toLowerCase()] = value.replace(NOT_IN_HEADER_VALUE, '')
  }
  return out
}
