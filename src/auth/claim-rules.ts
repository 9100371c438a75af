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
export function identityHeaders(templates: Record<string, string>, payload: JWTPayload | undefined): Readonly<Record<string, string>> {
  if (!payload) return {}
  const filled = FILLED.get(payload)
  if (filled?.templates === templates) return filled.headers
  const out: Record<string, string> = {}
  for (const header of compiled(templates)) {
    let found = header.claims.length === 0
    let value = header.parts[0] as string
    for (let i = 0; i < header.claims.length; i++) {
      const text = claimText(payload[header.claims[i] as string])
      if (text !== undefined) found = true
      value += (text ?? '') + (header.parts[i + 1] as string)
    }
    if (found) out[header.name] = headerSafe(value)
  }
  FILLED.set(payload, { templates, headers: out })
  return out
}

/**
 * The headers last filled from a verified token's claims, with the route templates they were filled for: a token's
 * claims never change, and a client sends the same token many times, usually to one route. Read-only.
 */
const FILLED = new WeakMap<JWTPayload, { templates: Record<string, string>; headers: Readonly<Record<string, string>> }>()

const NON_ASCII = /[\u0080-\uffff]+/g

/**
 * A header value undici will send: control characters removed, non-ASCII text percent-encoded as UTF-8
 * (`山田` -> `%E5%B1%B1%E7%94%B0`), since header values are Latin-1 on the wire and anything above 0xFF is refused.
 */
function headerSafe(value: string): string {
  return value.replace(NOT_IN_HEADER_VALUE, '').replace(NON_ASCII, (text) => {
    try {
      return encodeURIComponent(text)
    } catch {
      return ''
    }
  })
}

interface CompiledHeader {
  name: string
  /** Literal text around the placeholders: parts.length === claims.length + 1. */
  parts: string[]
  claims: string[]
}

/** Templates are split into literals and claim names once per route, not on every request. */
const COMPILED = new WeakMap<Record<string, string>, CompiledHeader[]>()

/** A template split into its literal text and the claim names between (`"{sub}/{roles}"`: sub, roles). */
export function splitTemplate(template: string): { parts: string[]; claims: string[] } {
  const parts: string[] = []
  const claims: string[] = []
  let last = 0
  for (const m of template.matchAll(PLACEHOLDER)) {
    parts.push(template.slice(last, m.index))
    claims.push(m[1] as string)
    last = (m.index ?? 0) + m[0].length
  }
  parts.push(template.slice(last))
  return { parts, claims }
}

function compiled(templates: Record<string, string>): CompiledHeader[] {
  let headers = COMPILED.get(templates)
  if (headers) return headers
  headers = Object.entries(templates).map(([name, template]) => ({ name: name.toLowerCase(), ...splitTemplate(template) }))
  COMPILED.set(templates, headers)
  return headers
}
