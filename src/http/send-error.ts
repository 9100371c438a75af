import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError, StoreUnavailableError, type ErrorCode } from '../errors.js'

/** Seconds a client should wait before retrying while the session store is away. */
export const STORE_RETRY_AFTER_SECONDS = 2

/** Any thrown error, as the JSON error a client sees. Unknown errors are logged and become 500. */
export function toGatewayError(err: unknown, request?: FastifyRequest): GatewayError {
  if (err instanceof GatewayError) return err
  if (err instanceof StoreUnavailableError) {
    return new GatewayError('session_store_unavailable', undefined, { 'retry-after': String(STORE_RETRY_AFTER_SECONDS) })
  }
  // An upstream that fails after its headers, before the first body byte went out (the body stream breaks).
  const undiciCode = (err as { code?: unknown } | undefined)?.code
  if (typeof undiciCode === 'string' && undiciCode.startsWith('UND_ERR_')) {
    request?.log.warn({ err }, 'upstream failed')
    return new GatewayError(undiciCode === 'UND_ERR_BODY_TIMEOUT' ? 'gateway_timeout' : 'bad_gateway')
  }
  const fastifyError = err as Partial<FastifyError>
  const byStatus: Record<number, ErrorCode> = {
    400: 'invalid_request', 404: 'not_found', 405: 'method_not_allowed', 413: 'payload_too_large',
    415: 'invalid_request', 431: 'headers_too_large',
  }
  const code = fastifyError.statusCode === undefined ? undefined : byStatus[fastifyError.statusCode]
  if (code) {
    const message =
      fastifyError.statusCode === 415
        ? 'The request body must be JSON (Content-Type: application/json).'
        : fastifyError.code === 'FST_ERR_CTP_INVALID_JSON_BODY'
          // Also what secure-json-parse answers for a __proto__ or constructor.prototype key (a pollution attempt).
          ? 'The request body is not valid JSON, or it holds a __proto__ or constructor.prototype key.'
          : code === 'invalid_request'
          ? `The request is malformed: ${String(fastifyError.message)}`
          : undefined
    return new GatewayError(code, message)
  }
  request?.log.error({ err }, 'unexpected error')
  return new GatewayError('internal_error')
}

export function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  const error = toGatewayError(err, reply.request)
  reply.code(error.statusCode).headers(error.headers).header('cache-control', 'no-store')
  return reply.type('application/json; charset=utf-8').send(error.toJSON())
}
