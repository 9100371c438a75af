/** Durations in the YAML: `500ms`, `30s`, `15m`, `2h`, `7d`, or an integer number of seconds. */
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
const DURATION = /^(\d+)(ms|s|m|h|d)$/

/** Milliseconds for a duration, or undefined when it is not one. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') {
    return Number.isSafeInteger(value) && value >= 0 && Number.isSafeInteger(value * 1000) ? value * 1000 : undefined
  }
  if (typeof value !== 'string') return undefined
  const text = value.trim()
  if (/^\d+$/.test(text)) return parseDuration(Number(text))
  const match = DURATION.exec(text)
  if (!match) return undefined
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS]
  return Number.isSafeInteger(ms) ? ms : undefined
}

export const DURATION_HINT = 'must be a duration like 500ms, 30s, 15m, 2h, 7d or an integer number of seconds'
