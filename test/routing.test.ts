import t from 'tap'
import type { RouteConfig } from '../src/config/schema.js'
import { RouteTable } from '../src/routing/route-table.js'
import { normalisePath } from '../src/routing/normalise-path.js'
import { rawRequest, send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

function route(name: string, prefix: string, upstream: string, extra: Partial<RouteConfig> = {}): RouteConfig {
  return { name, prefix, upstream, auth: 'public', headers: {}, websocket: false, corsPreflight: false, timeout: 30_000, ...extra }
}

const norm = (path: string) => {
  const normalised = normalisePath(path)
  if (!normalised.ok) throw new Error(`not a normal path: ${path}`)
  return normalised
}

t.test('RouteTable: longest prefix wins, on whole segments', async (t) => {
  // Configured shortest first: the order in the file must not matter.
  const table = new RouteTable([
    route('root', '/', 'http://root:1'),
    route('api', '/api', 'http://api:1'),
    route('orders', '/api/orders', 'http://orders:1'),
    route('order-items', '/api/orders/items/', 'http://items:1'),
  ])
  const name = (path: string) => {
    const m = table.match(norm(path), '')
    return m === 'ambiguous' ? m : m?.route.config.name
  }
  t.equal(name('/api/orders/1'), 'orders')
  t.equal(name('/api/orders'), 'orders', 'the prefix itself')
  t.equal(name('/api/orders/items'), 'order-items', 'a trailing slash in the prefix changes nothing')
  t.equal(name('/api/orders/items/9'), 'order-items')
  t.equal(name('/api/ordersX'), 'api', '/api/orders does not match /api/ordersX')
  t.equal(name('/api/orders.json'), 'api')
  t.equal(name('/api'), 'api')
  t.equal(name('/apix'), 'root', '/api does not match /apix')
  t.equal(name('/'), 'root')
  t.equal(name('/API/orders'), 'root', 'matching is case-sensitive')

  // Path parameters: matched without them (Tomcat, Jetty, Spring) and with them (Express, Go, nginx); refused when
  // the two readings fall under different routes, whatever route either is (review).
  t.equal(name('/api/orders;v=2/1'), 'ambiguous', 'orders without the parameters, api with them')
  t.equal(name('/api;x/orders'), 'ambiguous', 'orders without, root with')
  t.equal(name('/api/orders/1;jsessionid=0A1B'), 'orders', 'parameters past the prefix change nothing: matched and forwarded')
  t.equal(name('/api/list;page=2'), 'api', 'nor on a segment no longer prefix decides')
  t.equal(name('/api/orders/items;x/9'), 'ambiguous')
  t.equal(name('/api/orders%3Bv=2/1'), 'api', 'an encoded %3B is part of the name for both readings')

  const noRoot = new RouteTable([route('orders', '/api/orders', 'http://orders:1')])
  t.equal(noRoot.match(norm('/api/ordersX'), ''), undefined)
  t.equal(noRoot.match(norm('/api'), ''), undefined, 'a shorter path does not match a longer prefix')
  t.equal(noRoot.match(norm('/'), ''), undefined)
})

t.test('RouteTable: upstream path (rewritePrefix, base path, query, trailing slash)', async (t) => {
  const table = new RouteTable([
    route('orders', '/api/orders', 'http://127.0.0.1:4001', { rewritePrefix: '/orders' }),
    route('users', '/api/users', 'http://127.0.0.1:4002/legacy/v1/'),
    route('strip', '/strip', 'http://127.0.0.1:4003/base', { rewritePrefix: '' }),
    route('keep', '/keep', 'http://127.0.0.1:4004'),
  ])
  const up = (path: string, query = '', slash = false) => {
    const m = table.match(norm(slash ? `${path}/` : path), query)
    if (m === 'ambiguous') return m
    return m && `${m.route.upstreamOrigin}${m.upstreamPath}`
  }
  t.equal(up('/api/orders/1'), 'http://127.0.0.1:4001/orders/1', 'rewritePrefix replaces the prefix')
  t.equal(up('/api/orders'), 'http://127.0.0.1:4001/orders')
  t.equal(up('/api/orders/1', '?a=1&b=%2F&c=/../x'), 'http://127.0.0.1:4001/orders/1?a=1&b=%2F&c=/../x', 'the query is kept verbatim')
  t.equal(up('/api/orders/1', '', true), 'http://127.0.0.1:4001/orders/1/', 'a trailing slash is kept')
  t.equal(up('/api/users/7'), 'http://127.0.0.1:4002/legacy/v1/api/users/7', "the upstream URL's path is prepended")
  t.equal(up('/strip/a/b', '?q'), 'http://127.0.0.1:4003/base/a/b?q', 'an empty rewritePrefix strips the prefix')
  t.equal(up('/keep/x'), 'http://127.0.0.1:4004/keep/x', 'no rewritePrefix keeps the path')
  const encoded = table.matchUrl('/keep/a b/%C3%BC/%252e%252e/x%3Fy%23z') as { upstreamPath: string }
  t.equal(encoded.upstreamPath, '/keep/a%20b/%C3%BC/%252e%252e/x%3Fy%23z', 'segments are re-encoded for the upstream')
  // An encoded reserved character is not the raw one (RFC 3986 §2.2): `a%3Bb` names `a;b`, where a raw `;` starts a
  // path parameter for many servers, and `C%2B%2B` is not `C++`. Encoded unreserved characters are decoded (audit).
  const reserved = table.matchUrl('/keep/a%3Bb/C%2B%2B/x%3Dy%26z/%7Euser/%61dmin') as { upstreamPath: string }
  t.equal(reserved.upstreamPath, '/keep/a%3Bb/C%2B%2B/x%3Dy%26z/~user/admin', 'reserved characters stay encoded as the client sent them')
  const rewritten = table.matchUrl('/api/orders/a%3bb') as { upstreamPath: string }
  t.equal(rewritten.upstreamPath, '/orders/a%3Bb', 'also under a rewritten prefix')
  t.equal((table.matchUrl('/keep/a;b') as { upstreamPath: string }).upstreamPath, '/keep/a;b', 'and a raw one stays raw')

  t.equal(table.matchUrl('/api/orders/%2F'), 'invalid', 'an encoded slash is refused')
  t.equal(table.matchUrl('/api/orders/a%5Cb'), 'invalid', 'an encoded backslash is refused')
  t.equal((table.matchUrl('/api/orders/../users/1') as { route: { config: RouteConfig } }).route.config.name, 'users')
  t.equal((table.matchUrl('/api/orders/../users/1') as { upstreamPath: string }).upstreamPath, '/legacy/v1/api/users/1')
  t.equal(table.matchUrl('/api/orders/../../etc/passwd'), undefined)
})

t.test('HTTP: normalised paths can neither escape a route nor reach another', async (t) => {
  const orders = await startUpstream()
  const admin = await startUpstream()
  const gw = await startGateway({
    config: {
      routes: [
        { name: 'orders', prefix: '/api/orders', upstream: orders.url, rewritePrefix: '/orders', auth: 'public' },
        { name: 'admin', prefix: '/admin', upstream: admin.url, auth: 'required' },
      ],
    },
  })
  t.teardown(async () => {
    await gw.close()
    await orders.close()
    await admin.close()
  })

  /** One raw request; returns what the client got and what each upstream received (by URL). */
  async function probe(path: string) {
    const before = { orders: orders.requests.length, admin: admin.requests.length }
    const res = await rawRequest(gw.port, { path })
    return {
      status: res.status,
      error: res.json?.error as string | undefined,
      json: res.json,
      orders: orders.requests.slice(before.orders).map((r) => r.url),
      admin: admin.requests.slice(before.admin).map((r) => r.url),
    }
  }

  const cases: { path: string; status: number; error?: string; orders?: string[] }[] = [
    // The control: a plain request reaches the orders upstream under its rewritten prefix.
    { path: '/api/orders/1', status: 200, orders: ['/orders/1'] },
    // Dot segments are resolved before matching; what is left is matched (and forwarded) as a whole.
    { path: '/api/orders/../admin', status: 404, error: 'not_found' },
    { path: '/api/orders/%2e%2e/admin', status: 404, error: 'not_found' },
    { path: '/api/orders/%2E%2E/admin', status: 404, error: 'not_found' },
    { path: '/api/orders/.%2e/admin', status: 404, error: 'not_found' },
    { path: '/api/orders/../../admin', status: 401, error: 'unauthenticated' },
    { path: '/api/orders/%2e%2e/%2e%2e/admin/users', status: 401, error: 'unauthenticated' },
    { path: '/api/orders/../../../../admin', status: 401, error: 'unauthenticated' },
    { path: '/api/orders/items/../1', status: 200, orders: ['/orders/1'] },
    { path: '/api/orders/./1/.', status: 200, orders: ['/orders/1'] },
    { path: '//api//orders', status: 200, orders: ['/orders'] },
    { path: '//api//orders//7//', status: 200, orders: ['/orders/7/'] },
    { path: '/api/orders/%252e%252e/admin', status: 200, orders: ['/orders/%252e%252e/admin'] },
    { path: '/api/orders/%61bc?x=/../admin&y=%2F', status: 200, orders: ['/orders/abc?x=/../admin&y=%2F'] },
    { path: '/api/orders/a%20b', status: 200, orders: ['/orders/a%20b'] },
    { path: '/api/orders?discount=100%&q=%zz', status: 200, orders: ['/orders?discount=100%&q=%zz'] },
    { path: '/api/orders/compare/main...dev', status: 200, orders: ['/orders/compare/main...dev'] },
    // Encoded slashes and backslashes would mean one thing to the gateway and another to the upstream.
    { path: '/api/orders/..%2F..%2Fadmin', status: 400, error: 'invalid_path' },
    { path: '/api/orders%2F..%2F..%2Fadmin', status: 400, error: 'invalid_path' },
    { path: '/api/orders/%2f', status: 400, error: 'invalid_path' },
    { path: '/api%2Forders/1', status: 400, error: 'invalid_path' },
    { path: '/api/orders/..%5C..%5Cadmin', status: 400, error: 'invalid_path' },
    { path: '/api/orders/%5c', status: 400, error: 'invalid_path' },
    { path: '/api/orders/a%00b', status: 400, error: 'invalid_path' },
    { path: '/api/orders/%zz', status: 400, error: 'invalid_path' },
    { path: '/api/orders/%E0%A4%A', status: 400, error: 'invalid_path' },
    // Unmatched.
    { path: '/api/ordersX', status: 404, error: 'not_found' },
    { path: '/api/orders.json', status: 404, error: 'not_found' },
    { path: '/API/orders', status: 404, error: 'not_found' },
    { path: '/', status: 404, error: 'not_found' },
    { path: '/../api/orders', status: 200, orders: ['/orders'] },
  ]
  for (const c of cases) {
    const got = await probe(c.path)
    t.equal(got.status, c.status, `${c.path} -> ${c.status}`)
    if (c.error) {
      t.equal(got.error, c.error, `${c.path}: error ${c.error}`)
      t.type(got.json?.message, 'string', `${c.path}: a message`)
    }
    t.same(got.orders, c.orders ?? [], `${c.path}: the orders upstream received ${JSON.stringify(c.orders ?? [])}`)
    t.same(got.admin, [], `${c.path}: the admin upstream received nothing`)
  }

  // A path whose text holds `/..` or `../`, even inside a segment (`a..`), is refused with the gateway's own reason
  // and never forwarded: upstreams and path filters read it as traversal in different ways.
  const dots = await probe('/api/orders/a../b')
  t.equal(dots.status, 400, 'a segment ending in ".." before another is refused')
  t.equal(dots.error, 'invalid_path')
  t.same(dots.orders, [])
  t.same(dots.admin, [])

  // A raw backslash: whatever the HTTP parser makes of it, it reaches no upstream as a path separator.
  const backslash = await probe('/api/orders/..\\..\\admin')
  t.ok(backslash.status === 400, `raw backslash -> ${backslash.status}`)
  t.same(backslash.orders, [])
  t.same(backslash.admin, [])

  // Request targets that are not origin-form.
  for (const target of ['*', 'http://127.0.0.1/admin', 'admin']) {
    const got = await probe(target)
    t.ok(got.status >= 400 && got.status < 500, `${target} -> ${got.status}`)
    t.same(got.admin, [], `${target}: the admin upstream received nothing`)
  }

  // undici sends what it is given too: the same through an ordinary client.
  const viaClient = await send(`${gw.url}/api/orders/%2e%2e/%2e%2e/admin`)
  t.equal(viaClient.status, 401)
  t.equal(admin.requests.length, 0, 'the protected upstream was never reached')
})
