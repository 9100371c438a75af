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
 * One proxied request's hold on its upstream request: cancelled when the client goes away before the upstream has
 * answered, so that an abandoned long poll or event stream (`timeout: 0`) does not keep an upstream request, and
 * a socket, open for ever (after the answer has started, Node's pipe tears the stream down by itself).
 */
export class UpstreamCall {
  private abortRequest: ((reason?: Error) => void) | undefined
  private cancelled = false
  answered = false

  /** The client went away: the upstream request is aborted now, or as soon as undici starts it. */
  cancel(): void {
    if (this.answered || this.cancelled) return
    this.cancelled = true
    this.abortRequest?.(new errors.RequestAbortedError())
  }

  /** undici started the request; `abort` ends it. */
  started(abort: (reason?: Error) => void): void {
    this.abortRequest = abort
    if (this.cancelled) abort(new errors.RequestAbortedError())
  }
}

/** Handed from dispatchingAs() to the dispatch it makes: reply-from dispatches synchronously inside reply.from(). */
let nextCall: UpstreamCall | undefined

/** Runs `send` (a reply.from call) with `call` attached to the upstream request it dispatches. */
export function dispatchingAs<T>(call: UpstreamCall, send: () => T): T {
  nextCall = call
  try {
    return send()
  } finally {
    nextCall = undefined
  }
}

/**
 * The gateway's undici Agent for upstreams: each request gets one small forwarding handler (~1 µs; undici's
 * interceptors, which wrap a handler three times, cost ~3 µs a request here) that
 * - times the wait for the response headers to the millisecond: undici checks `headersTimeout` with coarse timers
 *   (a tick every ~500 ms), so a route's `timeout: 500ms` answered 504 after about a second and `2s` after 2.5 s.
 *   The timer starts once the request, body included, is sent (a slow upload is the client's time, not the
 *   upstream's) and aborts with undici's own HeadersTimeoutError (@fastify/reply-from's 504); undici's timer stays
 *   as a backstop, and still times a stalled upload and the body;
 * - lets the proxied request cancel its upstream request (UpstreamCall, dispatchingAs).
 */
export class UpstreamAgent extends Agent {
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const call = nextCall
    nextCall = undefined
    const ms = typeof options.headersTimeout === 'number' && options.headersTimeout > 0 ? options.headersTimeout : 0
    // A handler of undici's newer interface (onRequestStart...) is passed on as it is: reply-from's are of the core one.
    if ((ms === 0 && call === undefined) || typeof (handler as CoreHandler).onConnect !== 'function') return super.dispatch(options, handler)
    return super.dispatch(options, new ForwardingHandler(handler as unknown as CoreHandler, ms, call) as unknown as Dispatcher.DispatchHandler)
  }
}

/** The error is made only when it is needed: an Error's stack trace costs ~15 µs, every request. */
function timedOut(abort: (reason?: Error) => void): void {
  abort(new errors.HeadersTimeoutError())
}

class ForwardingHandler implements CoreHandler {
  private timer: NodeJS.Timeout | undefined
  private abort: ((reason?: Error) => void) | undefined
  private answered = false

  constructor(
    private readonly handler: CoreHandler,
    /** The headers timeout, 0 for none. */
    private readonly ms: number,
    private readonly call: UpstreamCall | undefined,
  ) {}

  onConnect(abort: (reason?: Error) => void, context?: unknown): void {
    this.abort = abort
    const result = this.handler.onConnect(abort, context)
    this.call?.started(abort)
    return result
  }

  /** The request and its body are out: the upstream's time starts (undici calls this at once for a bodyless one). */
  onRequestSent(): void {
    clearTimeout(this.timer)
    // An upstream may answer before the body is done; its final headers came, so nothing is waited for any more.
    if (this.ms > 0 && !this.answered && this.abort !== undefined) this.timer = setTimeout(timedOut, this.ms, this.abort)
    return this.handler.onRequestSent?.()
  }

  onHeaders(statusCode: number, headers: unknown, resume: () => void, statusText: string): boolean {
    // A 1xx (103 Early Hints, 102) is not the answer: the wait goes on, counted afresh as undici does.
    if (statusCode < 200) this.timer?.refresh()
    else {
      this.answered = true
      if (this.call) this.call.answered = true
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
