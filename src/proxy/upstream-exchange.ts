import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { errors, util, type Dispatcher } from 'undici'

/** undici's core handler interface: what its dispatcher calls for every request (its newer one is adapted to it). */
interface CoreHandler {
  onConnect(abort: (reason?: Error) => void): void
  onRequestSent(): void
  onHeaders(statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean
  onData(chunk: Buffer): boolean
  onComplete(trailers: unknown): void
  onError(error: Error): void
}

/** What the request to the upstream is. */
export interface UpstreamRequest {
  origin: string
  /** Path and query, as the upstream receives them. */
  path: string
  headers: IncomingHttpHeaders
  /** Milliseconds for the response headers, and between body chunks; 0 for none. */
  timeout: number
}

/** Response headers: lower-case names, repeated ones as arrays. */
export type Headers = Record<string, string | string[]>

/**
 * Turns the upstream's response headers into those the client gets: may be asynchronous (a rotation's cookies
 * are checked against the store just before they go out).
 */
export type HeadRewrite = (headers: Headers) => Headers | Promise<Headers>

/** The upstream's response status is not one an HTTP response may carry. */
export class InvalidUpstreamStatus extends Error {
  readonly code = 'INVALID_UPSTREAM_STATUS'
}

/** The error is made only when it is needed: an Error's stack trace costs ~15 µs, every request. */
function timedOut(abort: (reason?: Error) => void): void {
  abort(new errors.HeadersTimeoutError())
}

/**
 * The head went out corked, so that it and a body that came in the same read leave in one write. Node sends a head
 * with the first body chunk: an upstream that answers its head at once and its body later (an event stream, a long
 * poll) must not keep the client waiting for the head, nor have a route's timeout replace its answer, so the head
 * goes out by itself unless the body has begun by the next turn of the event loop.
 */
function uncorkAndFlushLater(exchange: UpstreamExchange): void {
  exchange.res.uncork()
  if (!exchange.bodyBegun) setImmediate(flushHeadAlone, exchange)
}

function flushHeadAlone(exchange: UpstreamExchange): void {
  const res = exchange.res
  if (!exchange.bodyBegun && !res.destroyed && !res.writableEnded) res.flushHeaders()
}

const kExchanges = Symbol('upstream exchanges')
type WithExchanges = Socket & { [kExchanges]?: Set<UpstreamExchange> }

function cancelAll(this: WithExchanges): void {
  for (const exchange of this[kExchanges] ?? []) exchange.cancel()
}

/**
 * One proxied exchange: the request to the upstream on undici's dispatcher, its response streamed straight onto
 * the client's response. About a quarter less CPU per request than @fastify/reply-from's path (undici's request()
 * API, a Readable per response, Fastify's send and pipe), measured in `npm run bench`.
 *
 * - The response head is awaited: until it comes, the Fastify reply is untouched, so an upstream failure is
 *   answered through the gateway's error handler (502/504 in the contract's JSON). Once it comes, the reply is
 *   hijacked and the head and body are written to the Node response, with backpressure both ways.
 * - The wait for the head is timed to the millisecond (undici checks `headersTimeout` with a coarse timer, a tick
 *   every ~500 ms: a route's `timeout: 500ms` answered 504 after about a second). The timer starts once the
 *   request, body included, is sent: a slow upload is the client's time, not the upstream's. undici's own timer
 *   stays as a backstop, and times a stalled upload and the body.
 * - The client going away (its response closed before it finished, or its connection closed behind a pipelined
 *   request) aborts the upstream request, before or during the response, so that an abandoned long poll or event
 *   stream does not hold an upstream request, and a socket, open for ever.
 * - An upstream failure once the head went out cuts the client's response short (a truncated body, never a
 *   silently shortened one).
 */
export class UpstreamExchange implements CoreHandler {
  private abortRequest: ((reason?: Error) => void) | undefined
  private timer: NodeJS.Timeout | undefined
  private resume: (() => void) | undefined
  /** Body chunks that came while an asynchronous head rewrite ran (undici is paused then, so rarely any). */
  private pending: Buffer[] | undefined
  private completed = false
  /** The final response head has come from the upstream. */
  private answered = false
  /** The head went to the client: from here on the Node response is ours. */
  private responding = false
  private cancelled = false
  /** The exchange failed before its head went out (the Fastify reply answers the error). */
  private failed = false
  private settle!: { resolve: () => void; reject: (error: Error) => void }
  readonly res: ServerResponse
  /** A body chunk or the end went to the client's response. */
  bodyBegun = false
  /** The headers timeout, 0 for none. */
  private ms = 0
  /** Settles once the head went to the client, or fails with what went wrong before it did. */
  readonly head: Promise<void>

  constructor(
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly rewriteHead: HeadRewrite,
  ) {
    this.res = reply.raw
    this.head = new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject }
    })
  }

  /** Sends the request; `head` tells when the response has begun. */
  start(agent: Dispatcher, upstream: UpstreamRequest): Promise<void> {
    this.ms = upstream.timeout
    const socket = this.request.socket as WithExchanges
    let exchanges = socket[kExchanges]
    if (exchanges === undefined) {
      exchanges = socket[kExchanges] = new Set()
      socket.once('close', cancelAll)
    }
    exchanges.add(this)
    this.res.once('close', () => {
      exchanges.delete(this)
      if (!this.res.writableFinished) this.cancel()
    })
    const body = this.request.body instanceof Readable ? this.request.body : null
    agent.dispatch(
      {
        origin: upstream.origin, path: upstream.path, method: this.request.method as Dispatcher.HttpMethod, headers: upstream.headers as Record<string, string>,
        body, headersTimeout: upstream.timeout, bodyTimeout: upstream.timeout,
      },
      this as unknown as Dispatcher.DispatchHandler,
    )
    return this.head
  }

  /** The client went away: the upstream request is aborted now, or as soon as undici starts it. Logged (info). */
  cancel(): void {
    if (this.cancelled || this.completed) return
    this.cancelled = true
    this.request.log.info({ route: this.request.routeName, responding: this.responding }, 'client left before the response ended: upstream request cancelled')
    this.abortRequest?.(new errors.RequestAbortedError())
  }

  onConnect(abort: (reason?: Error) => void): void {
    this.abortRequest = abort
    if (this.cancelled) abort(new errors.RequestAbortedError())
  }

  /** The request and its body are out: the upstream's time starts (undici calls this at once for a bodyless one). */
  onRequestSent(): void {
    clearTimeout(this.timer)
    // An upstream may answer before the body is done; its final headers came, so nothing is waited for any more.
    if (this.ms > 0 && !this.answered && this.abortRequest !== undefined) this.timer = setTimeout(timedOut, this.ms, this.abortRequest)
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    // A 1xx (103 Early Hints, 102) is not the answer: the wait goes on, counted afresh as undici does.
    if (statusCode < 200) {
      this.timer?.refresh()
      return true
    }
    this.answered = true
    clearTimeout(this.timer)
    if (statusCode > 599) {
      this.fail(new InvalidUpstreamStatus(`The upstream answered status ${statusCode}.`))
      return false
    }
    this.resume = resume
    const rewritten = this.rewriteHead(util.parseHeaders(rawHeaders) as Headers)
    if (!(rewritten instanceof Promise)) return this.respond(statusCode, rewritten)
    rewritten.then(
      (headers) => {
        if (this.respond(statusCode, headers)) this.drained()
      },
      (error: Error) => this.fail(error),
    )
    return false
  }

  /**
   * Ends the exchange with `error` before its head went out. The upstream request is aborted, and the head fails here
   * too: undici may have completed the request already (a HEAD's response ends at its head, whatever the handler
   * answered), and then its abort does nothing and onError never comes.
   */
  private fail(error: Error): void {
    this.abortRequest?.(error)
    if (!this.responding) this.failHead(error)
  }

  /** The head will not go out: the Fastify reply answers `error` (once). */
  private failHead(error: Error): void {
    if (this.failed) return
    clearTimeout(this.timer)
    this.failed = true
    this.settle.reject(error)
  }

  /** Writes the head to the client. False when the body must wait (the head did not go out, or may not yet). */
  private respond(statusCode: number, upstreamHeaders: Headers): boolean {
    if (this.cancelled || this.failed) return false
    const headers = this.reply.getHeaders() as OutgoingHttpHeaders
    for (const name in upstreamHeaders) {
      const value = upstreamHeaders[name]
      const mine = name === 'set-cookie' ? headers[name] : undefined
      headers[name] = mine === undefined ? value : ([] as string[]).concat(mine as string | string[], value as string | string[])
    }
    // A 204 has no body: it carries neither Content-Length nor Content-Type (RFC 9110 §8.6, §15.3.5).
    if (statusCode === 204) {
      delete headers['content-length']
      delete headers['content-type']
    }
    // An HTTP/1 connection is not reused before the request's body has been read: the upstream answered first.
    if (!this.request.raw.complete) headers.connection = 'close'
    try {
      this.res.writeHead(statusCode, headers)
    } catch (error) {
      // A header Node will not send (a character it refuses): nothing went out, the gateway answers 502.
      this.fail(error as Error)
      return false
    }
    this.reply.hijack()
    this.responding = true
    this.res.cork()
    process.nextTick(uncorkAndFlushLater, this)
    this.settle.resolve()
    return true
  }

  onData(chunk: Buffer): boolean {
    if (!this.responding) {
      ;(this.pending ??= []).push(chunk)
      return false
    }
    this.bodyBegun = true
    if (this.res.write(chunk)) return true
    this.res.once('drain', () => this.drained())
    return false
  }

  /** Writes what waited, then lets undici read on. */
  private drained(): void {
    const pending = this.pending
    this.pending = undefined
    let flowing = true
    for (const chunk of pending ?? []) {
      this.bodyBegun = true
      flowing = this.res.write(chunk)
    }
    if (this.completed) return this.end()
    if (!flowing) return void this.res.once('drain', () => this.drained())
    this.resume?.()
  }

  onComplete(): void {
    this.completed = true
    clearTimeout(this.timer)
    if (this.responding && this.pending === undefined) this.end()
  }

  private end(): void {
    this.bodyBegun = true
    this.res.end()
  }

  onError(error: Error): void {
    clearTimeout(this.timer)
    this.completed = true
    if (!this.responding) return this.failHead(error)
    // The body broke off: the client must see a cut response, not a complete-looking short one.
    if (!this.cancelled) this.request.log.warn({ err: error, route: this.request.routeName }, 'upstream failed during the response body')
    this.res.destroy()
  }
}
