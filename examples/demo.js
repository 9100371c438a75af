#!/usr/bin/env node
// `npm start`: the out-of-the-box demo. Starts the legacy API from examples/legacy-api on 127.0.0.1:4001
// (DEMO_API_PORT) and the gateway in front of it with config/gateway.yaml (SESSIONGATE_CONFIG).
import { existsSync } from 'node:fs'
import { createLegacyApi } from './legacy-api/server.js'

const entry = new URL('../dist/cli/main.js', import.meta.url)
if (!existsSync(entry)) {
  console.error('demo: dist/ is missing; run `npm ci` (or `npm run build`) first')
  process.exit(2)
}
const apiPort = Number(process.env.DEMO_API_PORT ?? 4001)
process.env.DEMO_API_PORT = String(apiPort)
const api = createLegacyApi()
await new Promise((resolve, reject) => {
  api.once('error', reject)
  api.listen(apiPort, '127.0.0.1', resolve)
})
api.unref()

const { main } = await import(entry.href)
const config = process.env.SESSIONGATE_CONFIG ?? 'config/gateway.yaml'
const code = await main(['--config', config])
if (code !== 0) process.exit(code)
const host = process.env.HOST ?? '127.0.0.1'
const port = process.env.PORT ?? '8080'
process.stderr.write(`
  sessiongate DEMO configuration (${config}) - not for production.
  Open   http://${host}:${port}/          the demo page (user demo / password demo)
  API    http://${host}:${port}/api/orders  proxied to the legacy API on 127.0.0.1:${apiPort}
  Store  ${process.env.REDIS_URL ? process.env.REDIS_URL.replace(/\/\/[^@]*@/, '//***@') : 'in-process (set REDIS_URL to use Redis)'}
  Also   /auth/session, /.well-known/jwks.json, /healthz, /readyz, /metrics

`)
