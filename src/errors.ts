/**
 * Every error the gateway answers with, in one place (after fastify's lib/errors.js).
 * A client sees `{"error": code, "message": message}` with `statusCode`.
 */
export const ERRORS = {
  invalid_request: { status: 400, message: 'The request is malformed.' },
  invalid_path: { status: 400, message: 'The request path is not acceptable.' },
  invalid_credentials: { status: 401, message: 'The username or password is wrong.' },
  unauthenticated: { status: 401, message: 'Authentication is required.' },
  session_expired: { status: 401, message: 'The session has expired; log in again.' },
  refresh_token_reused: {
    status: 401,
    message: 'A refresh token was used twice; the session was revoked. Log in again.',
  },
  forbidden: { status: 403, message: 'You are not allowed to use this route.' },
  csrf: {
    status: 403,
    message: 'Unsafe request without the X-CSRF: 1 header or an allowed Origin.',
  },
  not_found: { status: 404, message: 'No route matches this path.' },
  method_not_allowed: { status: 405, message: 'This method is not allowed here.' },
  payload_too_large: { status: 413, message: 'The request body is too large.' },
  expectation_failed: { status: 417, message: 'The Expect header asks for something the gateway does not do.' },
  headers_too_large: { status: 431, message: 'The request headers are too large.' },
  request_timeout: { status: 408, message: 'The request headers were not received in time.' },
  rate_limited: { status: 429, message: 'Too many failed logins; try again later.' },
  internal_error: { status: 500, message: 'The gateway failed to handle the request.' },
  bad_gateway: { status: 502, message: 'The upstream could not be reached.' },
  session_store_unavailable: {
    status: 503,
    message: 'The session store is unavailable; try again shortly.',
  },
  shutting_down: { status: 503, message: 'The gateway is shutting down; try again.' },
  gateway_timeout: { status: 504, message: 'The upstream did not answer in time.' },
} as const satisfies Record<string, { status: number; message: string }>

export type ErrorCode = keyof typeof ERRORS

/** An error meant for the client: a status, a snake_case code and a sentence. */
export class GatewayError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number
  /** Extra response headers, e.g. Retry-After or WWW-Authenticate. */
  readonly headers: Record<string, string>

  constructor(code: ErrorCode, message?: string, headers: Record<string, string> = {}) {
    super(message ?? ERRORS[code].message)
    this.name = 'GatewayError'
    this.code = code
    this.statusCode = ERRORS[code].status
    this.headers = headers
  }

  toJSON(): { error: ErrorCode; message: string } {
    return { error: this.code, message: this.message }
  }
}

/** Thrown by a session store when its backend cannot be reached; callers fail closed. */
export class StoreUnavailableError extends Error {
  readonly code = 'session_store_unavailable'
  constructor(cause?: unknown) {
    super('session store unavailable', { cause })
    this.name = 'StoreUnavailableError'
  }
}

/**
 * A revocation the store applied but could neither announce to the other instances nor count (Redis refused both
 * the PUBLISH and the INCR: ACL rights). Answered like an unavailable store (503: a retry announces it again); the
 * instance that made it refuses `sids` from its own memory at once.
 */
export class RevocationUnannouncedError extends StoreUnavailableError {
  constructor(
    readonly sids: string[],
    cause?: unknown,
  ) {
    super(cause)
    this.name = 'RevocationUnannouncedError'
  }
}

/** One problem found in a configuration, named by its YAML path. */
export interface ConfigProblem {
  path: string
  message: string
}

/** A configuration that cannot be used: every problem, each with its YAML path. */
export class ConfigError extends Error {
  readonly code = 'config_invalid'
  readonly problems: ConfigProblem[]
  constructor(problems: ConfigProblem[]) {
    super(problems.map((p) => `${p.path}: ${p.message}`).join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
  }
}
