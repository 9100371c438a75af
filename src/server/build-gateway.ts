import { fastifyCookie } from '@fastify/cookie'
import { METHODS, STATUS_CODES, type IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Agent } from 'undici'
import Fastify, { type FastifyBaseLogger, type FastifyBodyParser, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { LoadedConfig } from '../config/load.js'
import { databasePath } from '../config/schema.js'
import { mayBeCrossSiteBrowser } from '../auth/csrf.js'
import { ConfigError, GatewayError, StoreUnavailableError } from '../errors.js'
import { oneMethodRoute } from '../http/one-method-route.js'
import { authEndpoints } from '../http/auth-endpoints.js'
import { sendError } from '../http/send-error.js'
import { proxyHandler } from '../proxy/proxy-handler.js'
import { trustedProxies } from '../proxy/trusted-proxies.js'
import { originForm } from '../routing/normalise-path.js'
import { websocketUpgradeHandler } from '../proxy/websocket-proxy.js'
import { createSessionStore } from '../session-store/create-store.js'
import { RedisSessionStore } from '../session-store/redis-store.js'
import type { SessionStore } from '../session-store/session-store.js'
import { RevocationCache } from '../sessions/revocation-cache.js'
import { lazyChildLogger, loggerOptions } from './logger.js'
import { Metrics } from './metrics.js'
import { buildRuntime, logReloadIgnored, restartOnlyChanges, type Runtime } from './runtime.js'

export interface Gateway {
  app: FastifyInstance
  store: SessionStore
  metrics: Metrics
  /** The configuration in force. */
  current(): Runtime
  /** Swaps in a new configuration (routes, keys, users, rules) without dropping connections. */
  reload(loaded: LoadedConfig): Promise<void>
}

export interface GatewayOptions {
  logger?: FastifyServerOptions['logger']
  /** Use this store instead of the configured one (tests). The gateway then does not close it. */
  store?: SessionStore
}

/**
 * Errors Node's HTTP parser raises before there is a request (malformed or smuggling-shaped framing, an
 * oversized header block, headers too slow to arrive): answered in the contract's JSON, then the socket closes.
 */
function clientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  answerAndClose(
    socket,
    new GatewayError(
      err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request_timeout' : 'invalid_request',
    ),
  )
  socket.destroy(err)
}

/** The headers and body of a JSON error answered outside Fastify (then the connection closes). */
function closingErrorResponse(error: GatewayError, extra: Record<string, string> = {}): { headers: Record<string, string>; body: string } {
  const body = JSON.stringify(error.toJSON())
  const headers = {
    'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store', ...extra, connection: 'close',
  }
  return { headers, body }
}

/** Writes a JSON error on a socket that no Fastify reply owns, closing the connection after it. */
function answerAndClose(socket: Duplex, error: GatewayError, extra: Record<string, string> = {}): void {
  if (!socket.writable) return
  const { headers, body } = closingErrorResponse(error, extra)
  const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  socket.end(`HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\n${head}\r\n${body}`)
}

/**
 * A header a request may carry once only, carried twice: `Host` (RFC 9112 §3.2), or `Authorization` (not a list: Node
 * keeps the first and drops the other, so which token the client meant is a guess). Undefined when neither.
 */
function repeatedSingleHeader(raw: string[]): 'Host' | 'Authorization' | undefined {
  let hosts = 0
  let authorizations = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    if (name.length === 4 && name.toLowerCase() === 'host' && ++hosts > 1) return 'Host'
    if (name.length === 13 && name.toLowerCase() === 'authorization' && ++authorizations > 1) return 'Authorization'
  }
  return undefined
}

/** A `redis.url` database the server refused (ioredis would use database 0 instead) stops the start. */
async function checkDatabase(store: SessionStore, url: string | undefined): Promise<void> {
  if (!(store instanceof RedisSessionStore) || url === undefined) return
  const wanted = Number(databasePath(new URL(url)) || '0')
  const selected = await store.selectedDatabase()
  if (selected === undefined || selected === wanted) return
  await store.close()
  throw new ConfigError([{ path: 'redis.url', message: `database ${wanted} does not exist on this Redis server (SELECT ${wanted} refused): the store would use database ${selected}` }])
}

/** How long /readyz waits for the store. */
const READY_TIMEOUT_MS = 1000

/** How long a start waits for the store's first connection before serving anyway (failing closed until it comes). */
const STARTUP_STORE_WAIT_MS = 3000

/**
 * Commands are never queued while Redis is away, so requests that arrive before the first connection is made
 * would fail with 503 although the store is up: wait (bounded) for the store to answer before serving.
 */
async function waitForStore(store: SessionStore, log: FastifyBaseLogger): Promise<void> {
  const deadline = Date.now() + STARTUP_STORE_WAIT_MS
  for (;;) {
    try {
      await store.ping()
      return
    } catch {
      if (Date.now() >= deadline) {
        log.error('the session store does not answer at start; protected routes answer 503 until it does')
        return
      }
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  }
}

/** Builds the gateway: config -> route match -> auth -> proxy, plus the auth endpoints and probes. */
export async function buildGateway(loaded: LoadedConfig, options: GatewayOptions = {}): Promise<Gateway> {
  const { config } = loaded
  const app = Fastify({
    logger: options.logger ?? loggerOptions(),
    bodyLimit: config.server.bodyLimit,
    trustProxy: config.server.trustProxy === false ? false : config.server.trustProxy,
    return503OnClosing: true,
    requestTimeout: 120_000,
    // requireHostHeader: false, so that a Host-less HTTP/1.1 request gets the JSON 400 below, not Node's bare one.
    http: { headersTimeout: 10_000, connectionsCheckingInterval: 1000, maxHeaderSize: 16_384, requireHostHeader: false },
    routerOptions: { maxParamLength: 8192 },
    clientErrorHandler: clientError,
    // An absolute-form target (`GET http://host/path`) is routed by its path, gateway endpoints included.
    rewriteUrl: (req: { url?: string }) => originForm(req.url ?? '/'),
    childLoggerFactory: lazyChildLogger,
    frameworkErrors: (error, _request, reply) => {
      // The router's own wording quotes the path back ("'/a%ZZ' is not a valid url component"): said in ours.
      const reason = (error as { code?: string }).code === 'FST_ERR_BAD_URL' ? 'a %-escape in it is not two hex digits, or does not decode to UTF-8' : error.message
      sendError(reply, new GatewayError('invalid_path', `The request path is not acceptable: ${reason}.`))
    },
  } as FastifyServerOptions)

  // Every method Node's HTTP parser reads (WebDAV's PROPFIND, MKCOL, LOCK..., PURGE, REPORT...) reaches the routes:
  // proxied like any other (unsafe ones pass the CSRF check in cookie mode), 405 on the gateway's own endpoints.
  // Fastify alone would answer them "no route matches this path". CONNECT is a tunnel, not a request to proxy.
  for (const method of METHODS) {
    if (method !== 'CONNECT' && !app.supportedMethods.includes(method)) app.addHttpMethod(method, { hasBody: true })
  }

  const metrics = new Metrics()
  const store = options.store ?? createSessionStore(config.redis, app.log)
  if (!options.store) {
    await waitForStore(store, app.log)
    await checkDatabase(store, config.redis.url)
  }
  let revocationCache: RevocationCache | undefined
  if (config.redis.revocationCache) {
    revocationCache = new RevocationCache(store, {
      onAnnouncementsRefused: () =>
        app.log.warn('local revocation cache: this Redis user may not PUBLISH on the revocation channel, so its revocations reach the other instances through the store count at their next probe (1-3 s) instead of at once, or are answered 503 when the count is refused too (grant the channel and the key: see the README)'),
    })
    await revocationCache.start()
    // With the in-process store there is nothing to say (its own warning at start says the setting has no effect).
    if (store.kind === 'redis') app.log.warn('local revocation cache on: revocations reach this instance by pub/sub, not by a store round trip per request')
  } else if (store.revocationBarrier !== undefined && config.redis.cluster === undefined && config.redis.sentinel === undefined) {
    // Strict mode on one Redis: one shared barrier per moment instead of one check per session. Not with a
    // sentinel set: after a failover nothing ties the subscription to the master the scripts run on.
    revocationCache = new RevocationCache(store, {
      strict: true,
      onAnnouncementsRefused: () =>
        app.log.warn('strict revocation check: this Redis user may not PUBLISH on the revocation channel, so every request asks the store for its own session (grant the channel: see the README)'),
    })
    await revocationCache.start()
  }
  if (store.kind !== 'redis' && (config.redis.revocationCache || config.redis.onOutage !== 'fail-closed')) {
    // Not refused at load: one file may serve both (`url: ${REDIS_URL:-memory://}`).
    app.log.warn('redis.revocationCache and redis.onOutage have no effect with the in-process store')
  }
  if (config.redis.onOutage === 'verify-only' && store.kind === 'redis') {
    app.log.warn('redis.onOutage is verify-only: while the store is unreachable, valid signatures are accepted without the revocation check')
  }
  let runtime = await buildRuntime(loaded, store, metrics, revocationCache, app.log)
  const current = () => runtime
  const trustsPeer = trustedProxies(config.server.trustProxy)

  app.setErrorHandler((error, _request, reply) => {
    // Every request answered 503 because the store was away: proxied ones and the auth endpoints alike.
    if (error instanceof StoreUnavailableError) metrics.storeErrors.inc()
    sendError(reply, error)
  })
  app.setNotFoundHandler((_request, reply) => {
    sendError(reply, new GatewayError('not_found'))
  })
  app.addHook('onRequest', (request, reply, done) => {
    if (request.headers.host === undefined) {
      if (request.raw.httpVersion !== '1.1') return done()
      return sendError(reply.header('connection', 'close'), new GatewayError('invalid_request', 'An HTTP/1.1 request must carry a Host header.'))
    }
    // Node keeps the first of two Host headers; RFC 9112 §3.2 says such a request is answered 400, whichever the
    // upstream or a proxy in front would have read. Two Authorization headers likewise.
    const repeated = repeatedSingleHeader(request.raw.rawHeaders)
    if (repeated !== undefined) {
      return sendError(reply.header('connection', 'close'), new GatewayError('invalid_request', `The request carries more than one ${repeated} header.`))
    }
    done()
  })
  // Declared up front, so that every request object has the same shape (set later, they would change it).
  app.decorateRequest('routeName', undefined)
  app.addHook('onResponse', (request, reply, done) => {
    metrics.countRequest(request.routeName ?? 'gateway', reply.statusCode)
    done()
  })
  // A client that left before its response ended has no onResponse: counted as 499, nginx's "client closed request".
  app.addHook('onRequestAbort', (request, done) => {
    metrics.countRequest(request.routeName ?? 'gateway', 499)
    done()
  })

  // No parsing hook: cookies are parsed where they are read (requestCookies), so that Bearer and public requests
  // do not pay for it. The gateway sets its cookies as headers, never through reply.setCookie.
  await app.register(fastifyCookie, { hook: false })
  // Keep-alive pools to the upstreams. An https upstream is verified against the system CAs (plus
  // NODE_EXTRA_CA_CERTS) before it is sent a token (said outright: @fastify/reply-from, used before, turned it off).
  const upstreamAgent = new Agent({
    connections: 256, pipelining: 1, keepAliveTimeout: 30_000, connectTimeout: 5000, connect: { rejectUnauthorized: true },
  })

  // Gateway endpoints parse JSON bodies (bounded by server.bodyLimit); an empty body is no body, and so is one that
  // does not parse on a route that says so (logout).
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') return done(null, undefined)
    // The body is read as it came: a compressed one would only fail as "not valid JSON", which hides the cause.
    if (compressed(request.headers)) {
      if (request.routeOptions.config.unreadableBodyIsNone) return done(null, undefined)
      return done(new GatewayError('invalid_request', 'The request body must not be compressed (Content-Encoding): send the JSON uncompressed.'))
    }
    parseJson(request, body as string, (err, value) => {
      if (err && request.routeOptions.config.unreadableBodyIsNone) done(null, undefined)
      else done(err, value)
    })
  })
  // Any other body (a form POST to /auth/logout, say) is read within bodyLimit and ignored: logout still happens,
  // and a login without a JSON body is answered 400 invalid_request by the endpoint itself. One exception: JSON sent
  // as text/plain or with no Content-Type (what fetch() and undici send for a string body) is read as JSON. On refresh
  // and logout always: such a body only carries a token its sender holds (a token-mode page of another origin logs
  // out with it, no preflight needed). At login only when no browser could have sent it from a page of another
  // origin: those two are exactly what a cross-site form (enctype="text/plain") can send (no login CSRF).
  const otherBody: FastifyBodyParser<string> = (request, body, done) => {
    if (!plainJson(request.headers)) return done(null, undefined)
    if (!request.routeOptions.config.tokenInBody && mayBeCrossSiteBrowser(request.headers, current().config.csrf)) return done(null, undefined)
    parseJson(request, body, (err, value) => done(null, err ? undefined : value))
  }
  app.addContentTypeParser('text/plain', { parseAs: 'string' }, otherBody) // in place of Fastify's own
  app.addContentTypeParser('*', { parseAs: 'string' }, otherBody)
  await app.register(authEndpoints, { prefix: config.login.path, current, metrics })

  oneMethodRoute(app, 'GET', '/.well-known/jwks.json', async (_request, reply) =>
    reply.header('cache-control', 'public, max-age=300').send(runtime.loaded.keys.publicJwks),
  )
  oneMethodRoute(app, 'GET', '/healthz', async () => ({ status: 'ok' }))
  oneMethodRoute(app, 'GET', '/readyz', async (_request, reply) => {
    try {
      await Promise.race([
        store.ping(),
        new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), READY_TIMEOUT_MS).unref()),
      ])
      return { status: 'ready', store: store.kind }
    } catch {
      return reply.code(503).header('retry-after', '2').send({ error: 'session_store_unavailable', message: 'The session store does not answer.' })
    }
  })
  oneMethodRoute(app, 'GET', '/metrics', async (_request, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  )

  // Stopping (set in preClose, with the WebSocket relays' close below): the answers still going out close their
  // connections (`Connection: close`), so that no client sends its next request on a keep-alive connection the drain
  // is about to close under it (a POST would be lost); an upgrade still in its auth step opens no upstream socket.
  let draining = false
  const isDraining = () => draining
  app.addHook('onSend', async (_request, reply) => {
    if (draining) reply.header('connection', 'close')
  })

  // Proxied traffic: bodies stream through untouched (no parsing, no bodyLimit), in both directions.
  await app.register(async (proxied) => {
    proxied.removeAllContentTypeParsers()
    // The body is handed on as the raw stream, piped to the upstream by undici (done(null) would send none).
    proxied.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
    proxied.all('/*', proxyHandler({ current, metrics, agent: upstreamAgent, trustsPeer, draining: isDraining }))
  })

  // CONNECT (a tunnel request) and an Expect other than 100-continue: Node would close the socket without a word,
  // or answer a bare 417; the client gets the contract's JSON instead.
  app.server.on('connect', (_req, socket: Duplex) => {
    const allow = app.supportedMethods.filter((m) => m !== 'CONNECT').join(', ')
    answerAndClose(socket, new GatewayError('method_not_allowed', 'CONNECT is not proxied.'), { allow })
  })
  app.server.on('checkExpectation', (req, res) => {
    const error = new GatewayError('expectation_failed', `Expect: ${String(req.headers.expect)} is not supported (only 100-continue).`)
    const { headers, body } = closingErrorResponse(error)
    res.writeHead(error.statusCode, headers).end(body)
  })

  const websockets = websocketUpgradeHandler(current, app.log, trustsPeer, metrics, isDraining)
  app.server.on('upgrade', (req, socket, head) => void websockets.onUpgrade(req, socket, head))
  app.addHook('preClose', async () => {
    draining = true
    websockets.close()
  })

  app.addHook('onClose', async () => {
    revocationCache?.stop()
    await upstreamAgent.close()
    if (!options.store) await store.close()
  })

  return {
    app,
    store,
    metrics,
    current,
    async reload(next: LoadedConfig) {
      logReloadIgnored(app.log, restartOnlyChanges(runtime.config, next.config))
      // A key made in memory stays the key: a reload must not log everyone out of the demo.
      const previous = runtime.loaded.keys
      if (next.keys.ephemeral && previous.ephemeral && previous.signing.alg === next.keys.signing.alg) next = { ...next, keys: previous }
      // The restart-only settings (restartOnlyChanges) stay as they were at start, so later reloads compare with them.
      const kept = { server: config.server, redis: config.redis, watch: config.watch, login: { ...next.config.login, path: config.login.path } }
      runtime = await buildRuntime({ ...next, config: { ...next.config, ...kept } }, store, metrics, revocationCache, app.log)
      app.log.info({ routes: runtime.routes.size }, 'configuration reloaded')
    },
  }
}

/** A body sent with a Content-Encoding other than identity (the gateway reads bodies as they came). */
function compressed(headers: IncomingHttpHeaders): boolean {
  const encoding = headers['content-encoding']?.trim().toLowerCase()
  return encoding !== undefined && encoding !== '' && encoding !== 'identity'
}

/** A body that may be JSON sent without saying so: `text/plain` or no Content-Type, and not compressed. */
function plainJson(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type']
  return (type === undefined || /^text\/plain\s*(?:;|$)/i.test(type)) && !compressed(headers)
}
