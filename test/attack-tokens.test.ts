/**
 * Attacks on access tokens through a protected route (`Authorization: Bearer`), after the OWASP JWT cheat sheet
 * and RFC 8725: every forged, confused, stale, malformed or replayed token gets 401 and the recording upstream
 * is never called. A control token that the test signs itself with the real key is accepted, so each refusal
 * is due to the one property the attack changes, not to the harness.
 */
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { decodeJwt } from 'jose'
import t, { type Test } from 'tap'
import { send, type Reply } from './helpers/client.js'
import { afterOutsideRevocation, startGateway, type StartedGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis-server.js'
import { startUpstream, type TestUpstream } from './helpers/upstream.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

// ---------------------------------------------------------------------------------------------------------------
// JWS by hand (node:crypto), so that headers jose would refuse to produce (alg none, crit, jku ...) can be made.

const b64url = (value: object | string | Buffer): string =>
  (Buffer.isBuffer(value) ? value : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))).toString('base64url')

type Signer = (input: Buffer) => Buffer

function jws(header: object | string, payload: object | string, signer: Signer): string {
  const input = `${b64url(header)}.${b64url(payload)}`
  return `${input}.${signer(Buffer.from(input)).toString('base64url')}`
}

const eddsa = (key: KeyObject): Signer => (input) => cryptoSign(null, input, key)
const es256 = (key: KeyObject): Signer => (input) => cryptoSign('sha256', input, { key, dsaEncoding: 'ieee-p1363' })
const rs256 = (key: KeyObject): Signer => (input) => cryptoSign('sha256', input, key)
const hs256 = (secret: Buffer | string): Signer => (input) => createHmac('sha256', secret).update(input).digest()

interface Setup {
  gw: StartedGateway
  upstream: TestUpstream
  /** The gateway's real signing key (read from its key file) and its public JWK. */
  privateKey: KeyObject
  publicJwk: Record<string, string>
  kid: string
  signer: Signer
  /** A genuine login in token mode. */
  accessToken: string
  refreshToken: string
  claims: Record<string, unknown>
  /** The Redis key prefix of this gateway. */
  prefix: string
}

let prefixes = 0
async function setup(t: Test, alg: 'EdDSA' | 'ES256' = 'EdDSA'): Promise<Setup> {
  const upstream = await startUpstream()
  const prefix = `atk${++prefixes}:`
  const gw = await startGateway({
    redisUrl: redis.url,
    alg,
    config: { redis: { keyPrefix: prefix }, routes: [{ name: 'api', prefix: '/api', upstream: upstream.url }] },
  })
  t.teardown(async () => {
    await gw.close()
    await upstream.close()
  })
  const jwk = (JSON.parse(readFileSync(gw.keysFile, 'utf8')) as { keys: Record<string, string>[] }).keys[0]!
  const privateKey = createPrivateKey({ key: jwk, format: 'jwk' })
  const { d: _d, ...publicJwk } = jwk
  const login = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  if (login.status !== 200) throw new Error(`login failed: ${login.status} ${login.text}`)
  return {
    gw, upstream, privateKey, publicJwk, kid: jwk.kid as string, prefix,
    signer: alg === 'EdDSA' ? eddsa(privateKey) : es256(privateKey),
    accessToken: login.json.accessToken, refreshToken: login.json.refreshToken,
    claims: decodeJwt(login.json.accessToken) as Record<string, unknown>,
  }
}

const now = () => Math.floor(Date.now() / 1000)

/** The genuine token's header and claims, with a fresh jti and times: what a forgery starts from. */
function baseHeader(s: Setup, alg = 'EdDSA'): Record<string, unknown> {
  return { alg, kid: s.kid, typ: 'at+jwt' }
}
function baseClaims(s: Setup): Record<string, unknown> {
  return { ...s.claims, iat: now(), nbf: now(), exp: now() + 600, jti: randomBytes(16).toString('base64url') }
}

function bearer(gw: StartedGateway, authorization: string): Promise<Reply> {
  return send(`${gw.url}/api/orders`, { headers: { authorization } })
}

/** 401 unauthenticated (JSON, WWW-Authenticate invalid_token) and the upstream never called. */
async function refused(t: Test, s: Setup, token: string, what: string, scheme = 'Bearer '): Promise<void> {
  const before = s.upstream.requests.length
  const res = await bearer(s.gw, `${scheme}${token}`)
  t.equal(res.status, 401, `${what}: 401`)
  t.equal(res.json?.error, 'unauthenticated', `${what}: unauthenticated`)
  t.equal(s.upstream.requests.length, before, `${what}: the upstream is not called`)
}

async function accepted(t: Test, s: Setup, token: string, what: string): Promise<void> {
  const before = s.upstream.requests.length
  const res = await bearer(s.gw, `Bearer ${token}`)
  t.equal(res.status, 200, `${what}: 200`)
  t.equal(s.upstream.requests.length, before + 1, `${what}: forwarded`)
}

t.test('EdDSA gateway', async (t) => {
  const s = await setup(t)

  t.test('control: the genuine token, and a token the test signs with the real key, are accepted', async (t) => {
    await accepted(t, s, s.accessToken, 'the genuine token')
    await accepted(t, s, jws(baseHeader(s), baseClaims(s), s.signer), 'a hand-made token with the real key')
    t.equal(s.upstream.last()?.headers.authorization?.startsWith('Bearer ey'), true)
  })

  t.test('alg none and algorithm confusion', async (t) => {
    const claims = baseClaims(s)
    for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
      const header = { ...baseHeader(s), alg }
      await refused(t, s, `${b64url(header)}.${b64url(claims)}.`, `alg ${alg}, empty signature`)
      await refused(t, s, jws(header, claims, s.signer), `alg ${alg} with a real signature`)
    }
    // HS256 keyed with the public key, in every encoding a confused verifier might use as the secret.
    const publicKey = createPublicKey(s.privateKey)
    const secrets: [string, Buffer | string][] = [
      ['PEM (SPKI)', publicKey.export({ type: 'spki', format: 'pem' })],
      ['DER (SPKI)', publicKey.export({ type: 'spki', format: 'der' })],
      ['raw public key bytes', Buffer.from(s.publicJwk.x as string, 'base64url')],
      ['the public JWK as JSON', JSON.stringify(s.publicJwk)],
      ['the JWKS document', JSON.stringify({ keys: [s.publicJwk] })],
    ]
    for (const [what, secret] of secrets) {
      await refused(t, s, jws({ ...baseHeader(s), alg: 'HS256' }, claims, hs256(secret)), `HS256 with the ${what} as secret`)
    }
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    await refused(t, s, jws({ ...baseHeader(s), alg: 'ES256' }, claims, es256(ec.privateKey)), 'ES256 (not the configured algorithm)')
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
    await refused(t, s, jws({ ...baseHeader(s), alg: 'RS256' }, claims, rs256(rsa.privateKey)), 'RS256 (not the configured algorithm)')
    const other = generateKeyPairSync('ed25519')
    await refused(t, s, jws(baseHeader(s), claims, eddsa(other.privateKey)), "the real kid, signed by the attacker's own Ed25519 key")
    await refused(t, s, jws({ ...baseHeader(s), alg: 'Ed25519' }, claims, s.signer), 'alg Ed25519 (a name the gateway is not configured with)')
  })

  t.test('kid: unknown, path-like, injected, missing, not a string', async (t) => {
    const claims = baseClaims(s)
    const kids: [string, unknown][] = [
      ['unknown kid', 'no-such-key'],
      ['path-like kid', '../../etc/passwd'],
      ['path-like kid to /dev/null', '../../../../../../dev/null'],
      ['SQL-injected kid', "x' OR 1=1 --"],
      ['kid with a NUL byte', `${s.kid}\u0000`],
      ['kid as a number', 1],
      ['kid as an object', { $ne: null }],
      ['the real kid in another case', s.kid.toUpperCase() === s.kid ? s.kid.toLowerCase() : s.kid.toUpperCase()],
    ]
    for (const [what, kid] of kids) await refused(t, s, jws({ ...baseHeader(s), kid }, claims, s.signer), what)
    const { kid: _kid, ...noKid } = baseHeader(s)
    await refused(t, s, jws(noKid, claims, s.signer), 'no kid at all (even with the real signature)')
  })

  t.test('1,000 different unknown kids: all 401, no signature verification attempted, the process stays healthy', async (t) => {
    const verifier = s.gw.gateway.current().sessions.verifier
    const ring = s.gw.gateway.current().loaded.keys
    const cacheSize = () => (verifier as unknown as { cache: { size: number } }).cache.size
    const sizeBefore = cacheSize()
    // A key is only ever looked up to verify a signature with it: count the lookups that find one.
    const lookup = ring.byKid.get.bind(ring.byKid)
    let keysFound = 0
    let lookups = 0
    ring.byKid.get = (kid: string) => {
      lookups++
      const key = lookup(kid)
      if (key) keysFound++
      return key
    }
    t.teardown(() => {
      ring.byKid.get = lookup
    })
    const before = s.upstream.requests.length
    const statuses = new Map<number, number>()
    const claims = baseClaims(s)
    for (let batch = 0; batch < 20; batch++) {
      const replies = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          bearer(s.gw, `Bearer ${jws({ ...baseHeader(s), kid: `kid-${batch}-${i}-${randomBytes(6).toString('hex')}` }, claims, s.signer)}`),
        ),
      )
      for (const r of replies) statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)
    }
    t.same(Object.fromEntries(statuses), { 401: 1000 }, 'all 1,000 answered 401')
    t.equal(lookups, 1000, 'each kid was looked up once')
    t.equal(keysFound, 0, 'no key found, so no signature was verified')
    t.equal(cacheSize(), sizeBefore, 'refused tokens are not cached (no memory growth per attempt)')
    t.equal(s.upstream.requests.length, before, 'the upstream was never called')
    t.equal((await send(`${s.gw.url}/healthz`)).status, 200, 'healthz still 200')
    ring.byKid.get = lookup
    await accepted(t, s, s.accessToken, 'the genuine token afterwards')
  })

  t.test('jku, x5u, jwk, x5c: key-carrying headers are refused and never fetched', async (t) => {
    const attacker = generateKeyPairSync('ed25519')
    const attackerJwk = { ...attacker.publicKey.export({ format: 'jwk' }), kid: 'attacker', alg: 'EdDSA', use: 'sig' }
    // The attacker's key server: it must never be asked.
    const keyServer = await startUpstream((_req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ keys: [attackerJwk] }))
    })
    t.teardown(() => keyServer.close())
    const claims = baseClaims(s)
    const jwksUrl = `${keyServer.url}/jwks.json`
    const cases: [string, Record<string, unknown>, Signer][] = [
      ['jku to the attacker, attacker kid, attacker signature', { ...baseHeader(s), kid: 'attacker', jku: jwksUrl }, eddsa(attacker.privateKey)],
      ['jku to the attacker, real kid, attacker signature', { ...baseHeader(s), jku: jwksUrl }, eddsa(attacker.privateKey)],
      ['jku with the real signature', { ...baseHeader(s), jku: jwksUrl }, s.signer],
      ['x5u to the attacker', { ...baseHeader(s), x5u: `${keyServer.url}/cert.pem` }, eddsa(attacker.privateKey)],
      ['x5u with the real signature', { ...baseHeader(s), x5u: `${keyServer.url}/cert.pem` }, s.signer],
      ['embedded jwk, attacker signature', { ...baseHeader(s), kid: 'attacker', jwk: attackerJwk }, eddsa(attacker.privateKey)],
      ['embedded jwk with the real kid, attacker signature', { ...baseHeader(s), jwk: attackerJwk }, eddsa(attacker.privateKey)],
      ['embedded jwk (the real public key) with the real signature', { ...baseHeader(s), jwk: s.publicJwk }, s.signer],
      ['x5c with the real signature', { ...baseHeader(s), x5c: ['MIIB'] }, s.signer],
    ]
    for (const [what, header, signer] of cases) await refused(t, s, jws(header, claims, signer), what)
    t.equal(keyServer.requests.length, 0, 'the jku/x5u server was never contacted')
  })

  t.test('crit and other extension headers', async (t) => {
    const claims = baseClaims(s)
    await refused(t, s, jws({ ...baseHeader(s), crit: ['exp'] }, claims, s.signer), 'crit naming a registered claim')
    await refused(t, s, jws({ ...baseHeader(s), crit: ['x-ext'], 'x-ext': true }, claims, s.signer), 'crit naming an extension')
    await refused(t, s, jws({ ...baseHeader(s), crit: [] }, claims, s.signer), 'an empty crit')
    await refused(t, s, jws({ ...baseHeader(s), b64: false, crit: ['b64'] }, claims, s.signer), 'b64: false (unencoded payload)')
    await refused(t, s, jws({ ...baseHeader(s), zip: 'DEF' }, claims, s.signer), 'zip')
  })

  t.test('claims: another audience or issuer, expired, not yet valid, missing, tampered', async (t) => {
    const header = baseHeader(s)
    const claims = baseClaims(s)
    const without = (name: string) => Object.fromEntries(Object.entries(claims).filter(([k]) => k !== name))
    const cases: [string, Record<string, unknown>][] = [
      ['another audience', { ...claims, aud: 'other-api' }],
      ['an audience list without ours', { ...claims, aud: ['other-api', 'third-api'] }],
      ['another issuer', { ...claims, iss: 'https://evil.example' }],
      ['an issuer differing by a trailing slash', { ...claims, iss: 'https://gateway.test/' }],
      ['expired (beyond the 5 s tolerance)', { ...claims, iat: now() - 600, nbf: now() - 600, exp: now() - 60 }],
      ['nbf 60 s in the future (beyond the 5 s tolerance)', { ...claims, nbf: now() + 60 }],
      ['no exp', without('exp')],
      ['no jti', without('jti')],
      ['an empty jti (no logout could deny it; audit)', { ...claims, jti: '' }],
      ['an empty sid', { ...claims, sid: '' }],
      ['an empty sub', { ...claims, sub: '' }],
      ['no sid', without('sid')],
      ['no sub', without('sub')],
      ['no iat', without('iat')],
      ['exp as a string', { ...claims, exp: String(now() + 600) }],
      ['sid of a session that does not exist', { ...claims, sid: randomBytes(16).toString('base64url') }],
    ]
    for (const [what, payload] of cases) await refused(t, s, jws(header, payload, s.signer), what)

    // The genuine token with its payload changed and its signature kept.
    const [h, , sig] = s.accessToken.split('.') as [string, string, string]
    const tampered: [string, Record<string, unknown>][] = [
      ['tampered payload: another sub', { ...s.claims, sub: 'user-2' }],
      ['tampered payload: roles escalated', { ...s.claims, roles: ['admin', 'root'] }],
      ['tampered payload: exp extended', { ...s.claims, exp: (s.claims.exp as number) + 86_400 }],
    ]
    for (const [what, payload] of tampered) await refused(t, s, `${h}.${b64url(payload)}.${sig}`, what)
  })

  t.test('typ: an ID-token-like JWT (typ JWT) or no typ, signed with the real key', async (t) => {
    const claims = baseClaims(s)
    await refused(t, s, jws({ ...baseHeader(s), typ: 'JWT' }, { ...claims, nonce: 'n', auth_time: now() }, s.signer), 'typ JWT (an ID token)')
    await refused(t, s, jws({ ...baseHeader(s), typ: 'JWT' }, claims, s.signer), 'typ JWT with access-token claims')
    const { typ: _typ, ...untyped } = baseHeader(s)
    await refused(t, s, jws(untyped, claims, s.signer), 'no typ')
    await refused(t, s, jws({ ...baseHeader(s), typ: 'dpop+jwt' }, claims, s.signer), 'typ dpop+jwt')
    await refused(t, s, jws({ ...baseHeader(s), typ: 'logout+jwt' }, claims, s.signer), 'typ logout+jwt')
  })

  t.test('malformed tokens of every shape', async (t) => {
    const [h, p, sig] = s.accessToken.split('.') as [string, string, string]
    const shapes: [string, string][] = [
      ['one segment', h],
      ['two segments', `${h}.${p}`],
      ['two segments and a dot', `${h}.${p}.`],
      ['four segments', `${h}.${p}.${sig}.${sig}`],
      ['bad base64 in the header', `${h}!.${p}.${sig}`],
      ['bad base64 in the signature', `${h}.${p}.${sig.slice(0, -2)}*~`],
      ['standard base64 (+ and /)', `${h}.${p}.${Buffer.from(sig, 'base64url').toString('base64')}`],
      ['non-JSON header', `${b64url('not json')}.${p}.${sig}`],
      ['a JSON array as header', `${b64url('[1,2]')}.${p}.${sig}`],
      ['a JSON null header', `${b64url('null')}.${p}.${sig}`],
      ['non-JSON payload (real signature)', jws(baseHeader(s), 'not json', s.signer)],
      ['a JSON array as payload (real signature)', jws(baseHeader(s), '[]', s.signer)],
      ['a JWE-shaped five-segment token', `${b64url({ alg: 'dir', enc: 'A256GCM', kid: s.kid, typ: 'at+jwt' })}..${b64url(randomBytes(12))}.${b64url(randomBytes(64))}.${b64url(randomBytes(16))}`],
      ['a five-segment token made of the real parts', `${h}.${p}.${sig}.${p}.${sig}`],
      ['whitespace inside', `${h}. ${p}.${sig}`],
      ['padding', `${h}.${p}.${sig}==`],
    ]
    for (const [what, token] of shapes) await refused(t, s, token, what)

    const big = jws(baseHeader(s), { ...baseClaims(s), pad: 'x'.repeat(7_000) }, s.signer)
    await refused(t, s, big, 'a 10 KB token, validly signed (over the 8 KiB token limit, under the header limit)')

    const before = s.upstream.requests.length
    const huge = jws(baseHeader(s), { ...baseClaims(s), pad: 'x'.repeat(100_000) }, s.signer)
    const res = await bearer(s.gw, `Bearer ${huge}`)
    t.equal(res.status, 431, 'a 100 KB token: 431 (over the 16 KiB header limit, refused by the HTTP parser)')
    t.equal(s.upstream.requests.length, before, 'a 100 KB token: the upstream is not called')

    const headers: [string, string][] = [
      ['an empty Authorization header', ''],
      ['Bearer with no token', 'Bearer'],
      ['Bearer and a space', 'Bearer '],
      ['lowercase bearer with a garbage token', 'bearer not-a-jwt'],
      ['Bearer with two tokens', `Bearer ${s.accessToken} ${s.accessToken}`],
      ['Basic scheme', `Basic ${Buffer.from('alice:alice-pw').toString('base64')}`],
      ['the token with no scheme', s.accessToken],
      ['a Token scheme', `Token ${s.accessToken}`],
      ['Bearer glued to the token', `Bearer${s.accessToken}`],
    ]
    for (const [what, value] of headers) await refused(t, s, value, what, '')
  })

  t.test('a refresh token presented as an access token, and an access token as a refresh token', async (t) => {
    await refused(t, s, s.refreshToken, 'the refresh token as a Bearer')
    const before = s.upstream.requests.length
    const asCookie = await send(`${s.gw.url}/api/orders`, { headers: { cookie: `sg_access=${s.refreshToken}` } })
    t.equal(asCookie.status, 401, 'the refresh token as the access cookie: 401')
    t.equal(s.upstream.requests.length, before, 'the upstream is not called')

    const asRefresh = await send(`${s.gw.url}/auth/refresh`, { body: { refreshToken: s.accessToken } })
    t.equal(asRefresh.status, 401, 'the access token as a refresh token: 401')
    t.equal(asRefresh.json.error, 'session_expired', 'session_expired, not a reuse alarm')
    const asRefreshCookie = await send(`${s.gw.url}/auth/refresh`, { method: 'POST', headers: { cookie: `sg_refresh=${s.accessToken}` } })
    t.equal(asRefreshCookie.status, 401)
    t.equal(asRefreshCookie.json.error, 'session_expired')
    const sid = s.claims.sid as string
    t.equal(await redis.client.hget(`${s.prefix}{${sid}}:s`, 'rev'), '0', 'the family is not revoked')
    await accepted(t, s, s.accessToken, 'the access token still works')
    const next = await send(`${s.gw.url}/auth/refresh`, { body: { refreshToken: s.refreshToken } })
    t.equal(next.status, 200, 'the genuine refresh token still rotates')
  })
})

// n of P-256: s and n - s are both valid ECDSA signatures of the same message.
const P256_N = BigInt('0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551')

function malleate(token: string): string {
  const [h, p, sig] = token.split('.') as [string, string, string]
  const raw = Buffer.from(sig, 'base64url')
  const s = BigInt(`0x${raw.subarray(32).toString('hex')}`)
  const flipped = Buffer.from((P256_N - s).toString(16).padStart(64, '0'), 'hex')
  return `${h}.${p}.${Buffer.concat([raw.subarray(0, 32), flipped]).toString('base64url')}`
}

/** The same signature bytes, spelled differently: the unused low bits of the last base64url character set. */
function nonCanonical(token: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const last = token.at(-1) as string
  // 64 bytes = 86 characters: the last one carries 2 bits of data and 4 unused ones.
  const spelled = alphabet[alphabet.indexOf(last) | 0b0101] as string
  return token.slice(0, -1) + spelled
}

t.test('ES256: malleated and re-encoded copies of a denied token are still refused', async (t) => {
  const s = await setup(t, 'ES256')
  const publicKey = createPublicKey(s.privateKey)
  const signatureValid = (token: string) => {
    const [h, p, sig] = token.split('.') as [string, string, string]
    return cryptoVerify('sha256', Buffer.from(`${h}.${p}`), { key: publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url'))
  }
  const variants = (token: string): [string, string][] => [
    ['the token itself', token],
    ['s -> n - s', malleate(token)],
    ['a non-canonical last base64url character', nonCanonical(token)],
    ['s -> n - s, non-canonical', nonCanonical(malleate(token))],
    ['with = padding', `${token}=`],
    ['with == padding', `${token}==`],
    ['with trailing garbage in the signature', `${token}AA`],
    ['with a trailing dot', `${token}.`],
    ['with trailing whitespace', `${token} `],
  ]

  t.test('preconditions: the variants carry signatures that verify', async (t) => {
    t.ok(signatureValid(s.accessToken))
    t.ok(signatureValid(malleate(s.accessToken)), 'n - s verifies: ECDSA signatures are malleable')
    t.not(malleate(s.accessToken), s.accessToken)
    t.ok(Buffer.from(nonCanonical(s.accessToken).split('.')[2] as string, 'base64url').equals(Buffer.from(s.accessToken.split('.')[2] as string, 'base64url')), 'the non-canonical spelling decodes to the same bytes')
    t.not(nonCanonical(s.accessToken), s.accessToken)
  })

  t.test('after logout (jti denied, family ended)', async (t) => {
    const login = await send(`${s.gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
    const token = login.json.accessToken as string
    await accepted(t, s, token, 'before logout')
    const logout = await send(`${s.gw.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
    t.equal(logout.status, 204)
    for (const [what, variant] of variants(token)) await refused(t, s, variant, what)
  })

  t.test('jti denied while the family lives on: the denylist alone refuses every spelling', async (t) => {
    const login = await send(`${s.gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
    const token = login.json.accessToken as string
    await accepted(t, s, token, 'before the denial')
    const verified = await s.gw.gateway.current().sessions.verifier.verify(token)
    await s.gw.gateway.store.denyAccessToken(verified.sid, verified.jti, verified.expiresAt)
    await afterOutsideRevocation() // written behind the gateway's back, as another instance would: refused within the cover
    for (const [what, variant] of variants(token)) await refused(t, s, variant, what)
    const rotated = await send(`${s.gw.url}/auth/refresh`, { body: { refreshToken: login.json.refreshToken } })
    t.equal(rotated.status, 200, 'the family itself still works (the refusals came from the denylist)')
    await accepted(t, s, rotated.json.accessToken, 'its next access token')
  })
})
