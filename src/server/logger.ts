import type { FastifyBaseLogger, FastifyServerOptions } from 'fastify'
import type { Bindings, ChildLoggerOptions } from 'fastify/types/logger.js'

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

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'
type LogFn = (...args: unknown[]) => void
/** The part of pino (Fastify's logger) this uses. */
type Logger = { level: string; isLevelEnabled(level: string): boolean; child(bindings: Bindings, options?: ChildLoggerOptions): Logger } & Record<Level, LogFn>

/**
 * Fastify makes a child logger for every request; pino's child() serialises its bindings and prepares
 * redaction at once, over a microsecond on every proxied request. This factory hands out a stand-in that makes
 * the real child the first time something is logged at an enabled level, which at `warn` is almost never.
 */
export function lazyChildLogger(logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  // Without a logger (logger: false) Fastify's stand-in has no levels: its own child() is already free.
  if (typeof (logger as unknown as Partial<Logger>).isLevelEnabled !== 'function') return logger.child(bindings, options)
  // A route's own logLevel decides which lines are written: that child is made at once.
  if (options.level !== undefined) return logger.child(bindings, options)
  return new LazyChildLogger(logger as unknown as Logger, bindings, options) as unknown as FastifyBaseLogger
}

class LazyChildLogger {
  private made: Logger | undefined
  constructor(
    private readonly parent: Logger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  get level(): string {
    return this.made?.level ?? this.parent.level
  }

  set level(level: string) {
    this.real().level = level
  }

  private real(): Logger {
    return (this.made ??= this.parent.child(this.bindings, this.options))
  }

  private write(level: Level, args: unknown[]): void {
    const logger = this.made ?? this.parent
    if (!logger.isLevelEnabled(level)) return
    this.real()[level](...args)
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.real().child(bindings, options) as unknown as FastifyBaseLogger
  }

  fatal(...args: unknown[]): void {
    this.write('fatal', args)
  }
  error(...args: unknown[]): void {
    this.write('error', args)
  }
  warn(...args: unknown[]): void {
    this.write('warn', args)
  }
  info(...args: unknown[]): void {
    this.write('info', args)
  }
  debug(...args: unknown[]): void {
    this.write('debug', args)
  }
  trace(...args: unknown[]): void {
    this.write('trace', args)
  }
  silent(): void {}
}
