import type { FastifyContextConfig, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError } from '../errors.js'
import { sendError } from './send-error.js'

/**
 * A gateway endpoint that answers one method (GET also answers HEAD); every other method gets 405
 * `method_not_allowed` with `Allow`, rather than falling through to the proxy's 404.
 */
export function oneMethodRoute(
  app: FastifyInstance,
  method: 'GET' | 'POST',
  url: string,
  handler: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>,
  config: FastifyContextConfig = {},
): void {
  app.route({ method, url, handler, config })
  const allow = method === 'GET' ? 'GET, HEAD' : method
  app.route({
    method: app.supportedMethods.filter((m) => m !== method && !(method === 'GET' && m === 'HEAD')),
    url,
    handler: async (_request, reply) => sendError(reply.header('allow', allow), new GatewayError('method_not_allowed')),
  })
}
