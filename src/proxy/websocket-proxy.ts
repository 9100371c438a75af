import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import { WebSocket, WebSocketServer } from 'ws'
import { GatewayError, StoreUnavailableError } from '../errors.js'
import type { Metrics } from '../server/metrics.js'
import type { Runtime } from '../server/runtime.js'
import { toGatewayError } from '../http/send-error.js'
import { originForm } from '../routing/normalise-path.js'
import { authorise, matchRoute, RefusedAfterRotation } from './proxy-handler.js'
import { upstreamHeaders } from './upstream-headers.js'
import { sessionCookies } from '../auth/cookies.js'
import { fromOwnOrAllowedOrigin } from '../auth/csrf.js'
import { credentialsOf } from '../auth/request-auth.js'

const WS_HANDSHAKE_HEADERS = ['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-accept', 'host', 'content-length']

/** The JSON error as the upgrade's answer; `cookies`: a session rotated on the way in, whose new cookies must go out. */
function refuse(socket: Duplex, error: GatewayError, cookies: string[] = []): void {
  const body = JSON.stringify(error.toJSON())
  const extra = [...Object.entries(error.headers), ...cookies.map((c) => ['set-cookie', c])].map(([k, v]) => `${k}: ${v}\r\n`).join('')
  socket.end(
    `HTTP/1.1 ${error.statusCode} ${error.code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\n${extra}connection: close\r\n\r\n${body}`,
  )
}

/**
 * WebSocket upgrades on routes with `websocket: true`: the same route match and auth as HTTP requests
 * (plus an Origin check in cookie mode, against cross-site WebSocket hijacking), then frames are relayed
 * both ways with the `ws` library.
 */
export function websocketUpgradeHandler(
  current: () => Runtime,
  log: FastifyBaseLogger,
  trustsPeer: (a: string | undefined) => boolean,
  metrics: Metrics,
  /** True once the gateway is stopping: an upgrade still in its auth step then opens no upstream connection. */
  draining: () => boolean,
) {
  // The client is told the subprotocol the upstream chose (ws would otherwise pick the client's first offer).
  const chosenProtocol = new WeakMap<IncomingMessage, string>()
  // A session rotated on the way in: the 101 answer carries the new cookies, like any proxied answer.
  const rotatedCookies = new WeakMap<IncomingMessage, string[]>()
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (_offered, req) => chosenProtocol.get(req) ?? false })
  wss.on('headers', (headers, req) => {
    for (const cookie of rotatedCookies.get(req) ?? []) headers.push(`Set-Cookie: ${cookie}`)
  })
  const relayed = new Set<WebSocket>()
  const shuttingDown = () => new GatewayError('shutting_down', undefined, { 'retry-after': '1' })

  async function onUpgrade(raw: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy())
    const rt = current()
    try {
      // An upgrade bypasses fastify, and with it the rewriteUrl that makes HTTP requests origin-form.
      const match = matchRoute(rt, originForm(raw.url ?? '/'))
      if (!match.route.config.websocket) throw new GatewayError('not_found', 'This route does not accept WebSocket upgrades.')
      const request = {
        headers: raw.headers,
        cookies: null, // parsed by requestCookies when authorise reads them
        method: 'GET',
        url: raw.url,
        originalUrl: raw.url,
        socket: raw.socket,
      } as unknown as FastifyRequest
      // Before the auth step, which may rotate the session: a cross-origin page must not spend a refresh token. A
      // public route authenticates nobody (and the upstream never sees the gateway's cookies): nothing to protect.
      const crossOrigin = match.route.config.auth !== 'public' && credentialsOf(request, rt.cookies, rt.sessions).mode === 'cookie' && !fromOwnOrAllowedOrigin(raw.headers, rt.config.csrf.allowedOrigins)
      if (crossOrigin) throw new GatewayError('csrf', 'WebSocket upgrade from another origin.')
      const { identity, auth } = await authorise(request, rt, match)
      if (auth?.rotated) rotatedCookies.set(raw, sessionCookies(rt.config, auth.rotated))
      if (draining()) throw shuttingDown()
      const headers = upstreamHeaders(request, match.route.upstreamHost, rt.cookies, rt.routes.injectedHeaders, identity, trustsPeer(raw.socket.remoteAddress))
      for (const name of WS_HANDSHAKE_HEADERS) delete headers[name]
      const target = match.route.upstreamOrigin.replace(/^http/, 'ws') + match.upstreamPath
      const protocols = raw.headers['sec-websocket-protocol']?.split(',').map((p) => p.trim())
      delete headers['sec-websocket-protocol']
      const upstream = new WebSocket(target, protocols, { headers: headers as Record<string, string>, handshakeTimeout: match.route.config.timeout })
      upstream.once('error', (err) => {
        log.warn({ err: { message: err.message }, route: match.route.config.name }, 'websocket upstream failed')
        if (socket.writable && !socket.destroyed) refuse(socket, new GatewayError('bad_gateway'), rotatedCookies.get(raw))
      })
      // A client that leaves during the upstream handshake must not leave an upstream socket behind.
      const onClientGone = () => {
        if (upstream.readyState === WebSocket.CONNECTING) upstream.terminate()
      }
      socket.once('close', onClientGone)
      upstream.once('open', () => {
        socket.off('close', onClientGone)
        if (!socket.readable || !socket.writable || draining()) {
          upstream.terminate()
          if (draining() && socket.writable) refuse(socket, shuttingDown(), rotatedCookies.get(raw))
          return
        }
        if (upstream.protocol) chosenProtocol.set(raw, upstream.protocol)
        wss.handleUpgrade(raw, socket, head, (client) => {
          relayed.add(client)
          client.once('close', () => relayed.delete(client))
          relay(client, upstream)
        })
      })
    } catch (err) {
      if (err instanceof StoreUnavailableError) metrics.storeErrors.inc()
      else if (!(err instanceof GatewayError)) log.error({ err }, 'websocket upgrade failed')
      refuse(socket, toGatewayError(err), err instanceof RefusedAfterRotation ? sessionCookies(rt.config, err.rotated) : rotatedCookies.get(raw))
    }
  }

  /** Shutdown: every relayed connection is closed with 1001 (going away), so the server can finish. */
  function close(): void {
    for (const client of relayed) client.close(1001, 'gateway shutting down')
    wss.close()
  }

  return { onUpgrade, close }
}

function relay(client: WebSocket, upstream: WebSocket): void {
  client.on('message', (data, isBinary) => upstream.readyState === WebSocket.OPEN && upstream.send(data, { binary: isBinary }))
  upstream.on('message', (data, isBinary) => client.readyState === WebSocket.OPEN && client.send(data, { binary: isBinary }))
  const closeCode = (code: number) => (code >= 1000 && code <= 4999 && code !== 1005 && code !== 1006 ? code : 1011)
  client.on('close', (code, reason) => upstream.close(closeCode(code), reason))
  upstream.on('close', (code, reason) => client.close(closeCode(code), reason))
  client.on('error', () => upstream.terminate())
  upstream.on('error', () => client.terminate())
}
