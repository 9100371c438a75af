import type { FastifyServerOptions } from 'fastify'

/** Pino options: JSON lines, and never a credential (cookies, Authorization, Set-Cookie) in a log. */
export function loggerOptions(level = process.env.LOG_LEVEL ?? 'info'): FastifyServerOptions['logger'] {
  return {
    level,
    redact: {
      paths: [
        'req.headers.authorization', 'req.headers.cookie', 'req.headers["proxy-authorization"]',
        'res.headers["set-cookie"]', 'headers.authorization', 'headers.cookie', 'password', '*.password',
        'refreshToken', '*.refreshToken', 'accessToken', '*.accessToken',
      ],
      censor: '[redacted]',
    },
  }
}
