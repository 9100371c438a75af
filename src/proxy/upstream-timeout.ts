import { Agent, errors, type Dispatcher } from 'undici'

/** The handler interface undici's core calls (the one @fastify/reply-from's `request()` handlers implement). */
interface CoreHandler {
  onConnect(abort: (reason?: Error) => void, context?: unknown): void
  onHeaders(statusCode: number, headers: unknown, resume: () => void, statusText: string): boolean
  onData(chunk: Buffer): boolean
  onComplete(trailers: unknown): void
  onError(error: Error): void
  onUpgrade?(statusCode: number, headers: unknown, socket: unknown): void
  onResponseStarted?(): void
  onBodySent?(chunk: unknown): void
  onRequestSent?(): void
}

/**
 * An undici Agent whose requests get their response headers within `headersTimeout` of the request being sent, to
 * the millisecond. undici checks that timeout with coarse timers (a tick every ~500 ms), so a route's `timeout: 500ms`
 * answered 504 after about a second and `2s` after 2.5 s. Here a plain timer, started once the request (body
 * included: a slow upload is the client's time, not the upstream's) is sent, aborts it with undici's own
 * HeadersTimeoutError (@fastify/reply-from's 504). undici's timer stays as a backstop, and still times a stalled
 * upload and the body. One small forwarding object and one timer per request (~1 µs; undici's interceptors, which
 * wrap a handler three times, cost ~3 µs a request here).
 */
export class PreciseHeadersTimeoutAgent extends Agent {
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const ms = options.headersTimeout
    // A handler of undici's newer interface (onRequestStart...) is passed on as it is: reply-from's are of the core one.
    if (typeof ms !== 'number' || ms <= 0 || typeof (handler as CoreHandler).onConnect !== 'function') return super.dispatch(options, handler)
    return super.dispatch(options, new HeadersDeadline(handler as unknown as CoreHandler, ms) as unknown as Dispatcher.DispatchHandler)
  }
}

/** The error is made only when it is needed: an Error's stack trace costs ~15 µs, every request. */
function timedOut(abort: (reason?: Error) => void): void {
  abort(new errors.HeadersTimeoutError())
}

class HeadersDeadline implements CoreHandler {
  private timer: NodeJS.Timeout | undefined
  private abort: ((reason?: Error) => void) | undefined
  private answered = false

  constructor(
    private readonly handler: CoreHandler,
    private readonly ms: number,
  ) {}

  onConnect(abort: (reason?: Error) => void, context?: unknown): void {
    this.abort = abort
    return this.handler.onConnect(abort, context)
  }

  /** The request and its body are out: the upstream's time starts (undici calls this at once for a bodyless one). */
  onRequestSent(): void {
    clearTimeout(this.timer)
    // An upstream may answer before the body is done; its final headers came, so nothing is waited for any more.
    if (!this.answered && this.abort !== undefined) this.timer = setTimeout(timedOut, this.ms, this.abort)
    return this.handler.onRequestSent?.()
  }

  onHeaders(statusCode: number, headers: unknown, resume: () => void, statusText: string): boolean {
    // A 1xx (103 Early Hints, 102) is not the answer: the wait goes on, counted afresh as undici does.
    if (statusCode < 200) this.timer?.refresh()
    else {
      this.answered = true
      clearTimeout(this.timer)
    }
    return this.handler.onHeaders(statusCode, headers, resume, statusText)
  }

  onData(chunk: Buffer): boolean {
    return this.handler.onData(chunk)
  }

  onComplete(trailers: unknown): void {
    clearTimeout(this.timer)
    return this.handler.onComplete(trailers)
  }

  onError(error: Error): void {
    clearTimeout(this.timer)
    return this.handler.onError(error)
  }

  onUpgrade(statusCode: number, headers: unknown, socket: unknown): void {
    clearTimeout(this.timer)
    return this.handler.onUpgrade?.(statusCode, headers, socket)
  }

  onResponseStarted(): void {
    return this.handler.onResponseStarted?.()
  }

  onBodySent(chunk: unknown): void {
    return this.handler.onBodySent?.(chunk)
  }
}
