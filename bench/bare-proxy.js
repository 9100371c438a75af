// The baseline: a bare Fastify with @fastify/http-proxy in front of the same upstream, no auth.
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'

const [port, upstream] = [Number(process.argv[2]), process.argv[3]]
const app = Fastify({ logger: false })
await app.register(proxy, { upstream, prefix: '/api', rewritePrefix: '/api' })
await app.listen({ host: '127.0.0.1', port })
process.send?.('ready')
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => app.close().then(() => process.exit(0)))
