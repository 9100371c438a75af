// A small "legacy" JSON API for the demo. It knows nothing about tokens or sessions: it reads the
// Authorization header and the X-User-Id header the gateway injects, and echoes what it received.
// It also has its own login endpoint (POST /login) for `login.provider: upstream`, and serves the demo page.
import { createServer } from 'node:http'
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

const PAGE = readFileSync(new URL('./public/index.html', import.meta.url))

// The legacy system's own user table (for login.provider: upstream). Plain text because it is a toy.
const LEGACY_USERS = {
  demo: { password: 'demo', id: 'user-demo', roles: ['user'], name: 'Demo User' },
  admin: { password: 'admin', id: 'user-admin', roles: ['admin', 'user'], name: 'Admin User' },
}

const ORDERS = [
  { id: 1001, item: 'Blue widget', quantity: 3 },
  { id: 1002, item: 'Red gadget', quantity: 1 },
]

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' })
  res.end(JSON.stringify(body))
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
  })
}

export function createLegacyApi() {
  return createServer(async (req, res) => {
    const url = new URL(req.url, 'http://legacy')
    const body = await readBody(req)
    // The page lives under /public: the gateway's public catch-all route points there, so it can never reach
    // the API's own paths (/orders, /admin, /login) without going through their protected routes.
    if (req.method === 'GET' && ['/', '/public', '/public/', '/public/index.html'].includes(url.pathname)) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' })
      return res.end(PAGE)
    }
    if (req.method === 'POST' && url.pathname === '/login') {
      let credentials = {}
      try { credentials = JSON.parse(body) } catch { return json(res, 400, { error: 'bad json' }) }
      const user = LEGACY_USERS[credentials.username]
      if (!user || user.password !== credentials.password) return json(res, 401, { error: 'wrong username or password' })
      return json(res, 200, { user: { id: user.id, roles: user.roles, name: user.name } })
    }
    if (url.pathname === '/health') return json(res, 200, { status: 'ok' })
    if (url.pathname.startsWith('/orders') || url.pathname.startsWith('/admin') || url.pathname.startsWith('/echo')) {
      const auth = req.headers.authorization
      return json(res, 200, {
        message: 'Hello from the legacy API. It never saw a cookie or a login: the gateway did that.',
        user: req.headers['x-user-id'] ?? null,
        roles: req.headers['x-user-roles'] ?? null,
        receivedAuthorization: auth ?? null,
        receivedCookie: req.headers.cookie ?? null,
        method: req.method,
        path: url.pathname,
        body: body || null,
        orders: url.pathname.startsWith('/orders') ? ORDERS : undefined,
      })
    }
    return json(res, 404, { error: 'not found in the legacy API' })
  })
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href
if (isMain) {
  const port = Number(process.env.DEMO_API_PORT ?? 4001)
  const host = process.env.DEMO_API_HOST ?? '127.0.0.1'
  createLegacyApi().listen(port, host, () => console.log(`legacy API on http://${host}:${port}`))
}
