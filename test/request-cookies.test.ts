import t from 'tap'
import Fastify from 'fastify'
import { fastifyCookie } from '@fastify/cookie'
import { requestCookies } from '../src/auth/cookies.js'

t.test('cookies are parsed where they are read, once, and only then', async (t) => {
  const app = Fastify()
  await app.register(fastifyCookie, { hook: false })
  app.get('/', async (request) => {
    const before = request.cookies
    const first = requestCookies(request)
    return { before, first, same: requestCookies(request) === first }
  })
  t.teardown(() => app.close())
  const withCookies = await app.inject({ url: '/', headers: { cookie: 'sg_access=a.b.c; other=x%20y; sg_refresh=r' } })
  t.same(withCookies.json(), { before: null, first: { sg_access: 'a.b.c', other: 'x y', sg_refresh: 'r' }, same: true })
  const none = await app.inject({ url: '/' })
  t.same(none.json(), { before: null, first: {}, same: true }, 'no Cookie header: an empty object')
  const empty = await app.inject({ url: '/', headers: { cookie: '' } })
  t.same(empty.json().first, {}, 'an empty Cookie header: an empty object')
})

t.test('a cookie named like an Object method is just a cookie', async (t) => {
  const cookies = requestCookies({ cookies: null as never, headers: { cookie: 'a=1' } })
  t.equal(cookies.constructor, undefined, 'no inherited constructor')
  t.equal(cookies.toString, undefined, 'no inherited toString')
  t.equal(requestCookies({ cookies: null as never, headers: { cookie: 'constructor=x' } }).constructor, 'x')
})

t.test('a request-like object (the WebSocket path) keeps the cookies it was given', async (t) => {
  const given = { sg_access: 'tok' }
  t.equal(requestCookies({ cookies: given, headers: { cookie: 'sg_access=other' } }), given)
})
