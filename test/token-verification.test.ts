/**
 * Access-token verification (CONTRACT §4): through GET /auth/session with `Authorization: Bearer`, and against
 * the gateway's AccessTokenVerifier directly. Every token below differs from an accepted control token in one
 * property only. Then key rotation by reload, and ES256 / RS256 gateways.
 */
import { createHmac, createPrivateKey, createPublicKey, randomBytes, sign as cryptoSign, type KeyObject } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { decodeJwt, decodeProtectedHeader, type JWTPayload } from 'jose'
import t, { type Test } from 'tap'
import { loadConfig } from '../src/config/load.js'
import { MAX_TOKEN_LENGTH, TokenRefusedError } from '../src/tokens/access-token-verifier.js'
import { generatePrivateJwk, type SigningAlgorithm } from '../src/tokens/keys.js'
import { send } from './helpers/client.js'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis-server.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

const b64url = (value: object | string | Buffer): string =>
  (Buffer.isBuffer(value) ? value : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))).toString('base64url')

type Signer = (input: Buffer) => Buffer
const signerFor = (alg: SigningAlgorithm, key: KeyObject): Signer => {
  if (alg === 'EdDSA') return (input) => cryptoSign(null, input, key)
  if (alg === 'ES256') return (input) => cryptoSign('sha256', input, { key, dsaEncoding: 'ieee-p1363' })
  return (input) => cryptoSign('sha256', input, key)
}

/** A compact JWS made by hand, so that headers jose refuses to produce (none, crit, jku ...) can be made. */
function jws(header: object, payload: object, signer: Signer): string {
  const input = `${b64url(header)}.${b64url(payload)}`
  return `${input}.${signer(Buffer.from(input)).toString('base64url')}`
}

/** Signs an arbitrary `header.payload` text. */
const signedRaw = (input: string, signer: Signer) => `${input}.${signer(Buffer.from(input)).toString('base64url')}`

interface Setup {
  gw: StartedGateway
  alg: SigningAlgorithm
  kid: string
  privateJwk: Record<string, string>
  sign: Signer
  accessToken: string
  refreshToken: string
  sid: string
}

let prefixes = 0
async function setup(t: Test, alg: SigningAlgorithm = 'EdDSA'): Promise<Setup> {
  const gw = await startGateway({ redisUrl: redis.url, alg, config: { redis: { keyPrefix: `tv${++prefixes}:` } } })
  t.teardown(() => gw.close())
  const privateJwk = (JSON.parse(readFileSync(gw.keysFile, 'utf8')) as { keys: Record<string, string>[] }).keys[0]!
  const login = await send(`${gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'alice', password: 'alice-pw' } })
  t.equal(login.status, 200, `${alg} login`)
  return {
    gw,
    alg,
    kid: privateJwk.kid!,
    privateJwk,
    sign: signerFor(alg, createPrivateKey({ key: privateJwk, format: 'jwk' })),
    accessToken: login.json.accessToken,
    refreshToken: login.json.refreshToken,
    sid: decodeJwt(login.json.accessToken).sid as string,
  }
}

const bearer = async (gw: StartedGateway, token: string) =>
  send(`${gw.url}/auth/session`, { headers: { authorization: `Bearer ${token}` } })

t.test('EdDSA: forged, confused, stale and malformed tokens are all refused', async (t) => {
  const s = await setup(t)
  const verifier = s.gw.gateway.current().sessions.verifier
  const now = Math.floor(Date.now() / 1000)
  const header = { alg: 'EdDSA', kid: s.kid, typ: 'at+jwt' }
  const claims = {
    iss: 'https://gateway.test', aud: 'test-api', sub: 'user-1', iat: now, nbf: now, exp: now + 600,
    jti: randomBytes(16).toString('base64url'), sid: s.sid, roles: ['admin'],
  }
  const without = (name: string) => Object.fromEntries(Object.entries(claims).filter(([k]) => k !== name))

  // Controls: the genuine token and one the test signs with the real key (same family) are accepted, so each
  // refusal below is due to the one property it changes.
  t.equal((await bearer(s.gw, s.accessToken)).status, 200, 'control: the genuine token')
  t.equal((await bearer(s.gw, jws(header, claims, s.sign))).status, 200, 'control: a token signed here with the real key')
  t.equal((await bearer(s.gw, jws(header, { ...claims, exp: now - 2 }, s.sign))).status, 200, 'control: expired 2 s ago, within the 5 s clockTolerance')
  t.equal((await bearer(s.gw, jws(header, { ...claims, nbf: now + 2 }, s.sign))).status, 200, 'control: nbf 2 s ahead, within the clockTolerance')
  t.equal((await bearer(s.gw, jws({ ...header, typ: 'application/at+jwt' }, claims, s.sign))).status, 200, 'control: typ application/at+jwt (RFC 9068)')

  const otherJwk = await generatePrivateJwk('EdDSA')
  const otherKey = signerFor('EdDSA', createPrivateKey({ key: otherJwk as Record<string, string>, format: 'jwk' }))
  const publicPem = createPublicKey({ key: s.privateJwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' }) as string
  const publicJwkText = JSON.stringify({ kty: s.privateJwk.kty, crv: s.privateJwk.crv, x: s.privateJwk.x })
  const hs256 = (secret: string | Buffer): Signer => (input) => createHmac('sha256', secret).update(input).digest()
  const genuineParts = s.accessToken.split('.')
  const tamperedPayload = `${genuineParts[0]}.${b64url({ ...decodeJwt<JWTPayload>(s.accessToken), sub: 'user-2', roles: ['admin', 'root'] })}.${genuineParts[2]}`
  const unsigned = (h: object) => `${b64url(h)}.${b64url(claims)}.`

  const cases: [string, string][] = [
    ['signed by another key with the same kid', jws(header, claims, otherKey)],
    ['signed by another key with its own (unknown) kid', jws({ ...header, kid: otherJwk.kid }, claims, otherKey)],
    ['no kid', jws({ alg: 'EdDSA', typ: 'at+jwt' }, claims, s.sign)],
    ['kid not a string', jws({ ...header, kid: 1 }, claims, s.sign)],
    ['alg none, empty signature', unsigned({ ...header, alg: 'none' })],
    ['alg none with a signature', jws({ ...header, alg: 'none' }, claims, s.sign)],
    ['alg None', unsigned({ ...header, alg: 'None' })],
    ['alg NONE, signature of another token', `${b64url({ ...header, alg: 'NONE' })}.${b64url(claims)}.${genuineParts[2]}`],
    ['HS256 with the public key PEM as secret', jws({ ...header, alg: 'HS256' }, claims, hs256(publicPem))],
    ['HS256 with the public JWK as secret', jws({ ...header, alg: 'HS256' }, claims, hs256(publicJwkText))],
    ['HS256 with the raw public key as secret', jws({ ...header, alg: 'HS256' }, claims, hs256(Buffer.from(s.privateJwk.x!, 'base64url')))],
    ['alg ES256 on an EdDSA key', jws({ ...header, alg: 'ES256' }, claims, s.sign)],
    ['expired beyond the clockTolerance', jws(header, { ...claims, iat: now - 700, nbf: now - 700, exp: now - 60 }, s.sign)],
    ['nbf beyond the clockTolerance', jws(header, { ...claims, nbf: now + 60 }, s.sign)],
    ['wrong iss', jws(header, { ...claims, iss: 'https://evil.test' }, s.sign)],
    ['iss with a trailing slash', jws(header, { ...claims, iss: 'https://gateway.test/' }, s.sign)],
    ['missing iss', jws(header, without('iss'), s.sign)],
    ['wrong aud', jws(header, { ...claims, aud: 'other-api' }, s.sign)],
    ['aud list without ours', jws(header, { ...claims, aud: ['other-api', 'third-api'] }, s.sign)],
    ['missing aud', jws(header, without('aud'), s.sign)],
    ['tampered payload (sub and roles changed)', tamperedPayload],
    ['signature of another token', `${b64url(header)}.${b64url(claims)}.${genuineParts[2]}`],
    ['missing typ', jws({ alg: 'EdDSA', kid: s.kid }, claims, s.sign)],
    ['typ JWT (an ID-token-like JWT)', jws({ ...header, typ: 'JWT' }, claims, s.sign)],
    ['typ at+jwt with junk', jws({ ...header, typ: 'at+jwt; x' }, claims, s.sign)],
    ['missing exp', jws(header, without('exp'), s.sign)],
    ['exp as a string', jws(header, { ...claims, exp: String(now + 600) }, s.sign)],
    ['missing jti', jws(header, without('jti'), s.sign)],
    ['jti not a string', jws(header, { ...claims, jti: 42 }, s.sign)],
    ['missing sid', jws(header, without('sid'), s.sign)],
    ['sid of no session', jws(header, { ...claims, sid: randomBytes(16).toString('base64url') }, s.sign)],
    ['missing sub', jws(header, without('sub'), s.sign)],
    ['missing iat', jws(header, without('iat'), s.sign)],
    ['jku header', jws({ ...header, jku: 'https://evil.test/jwks.json' }, claims, s.sign)],
    ['x5u header', jws({ ...header, x5u: 'https://evil.test/cert.pem' }, claims, s.sign)],
    ['jwk header (its own key)', jws({ ...header, jwk: JSON.parse(publicJwkText) }, claims, s.sign)],
    ['x5c header', jws({ ...header, x5c: ['MIIB'] }, claims, s.sign)],
    ['crit header', jws({ ...header, crit: ['exp'] }, claims, s.sign)],
    ['crit header naming an extension', jws({ ...header, crit: ['http://example.com/ext'], 'http://example.com/ext': true }, claims, s.sign)],
    ['b64 false', jws({ ...header, b64: false, crit: ['b64'] }, claims, s.sign)],
    ['JWE-shaped, five segments', `${b64url({ alg: 'dir', enc: 'A256GCM', kid: s.kid, typ: 'at+jwt' })}..${b64url(randomBytes(12))}.${b64url(JSON.stringify(claims))}.${b64url(randomBytes(16))}`],
    ['four segments', `${s.accessToken}.${genuineParts[2]}`],
    ['two segments', `${genuineParts[0]}.${genuineParts[1]}`],
    ['padding characters', `${s.accessToken}==`],
    ['standard base64 characters', s.accessToken.replace(/-/g, '+').replace(/_/g, '/') + (s.accessToken.includes('-') || s.accessToken.includes('_') ? '' : '+')],
    ['header not JSON', `${b64url('not json')}.${genuineParts[1]}.${genuineParts[2]}`],
    ['payload not JSON (signed)', signedRaw(`${b64url(header)}.${b64url('not json')}`, s.sign)],
    ['payload a JSON array (signed)', signedRaw(`${b64url(header)}.${b64url('[1,2]')}`, s.sign)],
    ['a token of 10 KB', jws(header, { ...claims, pad: 'x'.repeat(10_000) }, s.sign)],
    ['the refresh token', s.refreshToken],
  ]
  for (const [what, token] of cases) {
    const res = await bearer(s.gw, token)
    t.equal(res.status, 401, `${what}: 401`)
    t.equal(res.json?.error, 'unauthenticated', `${what}: unauthenticated`)
    t.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"', `${what}: WWW-Authenticate`)
  }
  // The same through the verifier itself (the store is not consulted there: 'sid of no session' is a valid token).
  for (const [what, token] of cases.filter(([w]) => w !== 'sid of no session')) {
    await t.rejects(verifier.verify(token), TokenRefusedError, `verifier refuses: ${what}`)
  }

  // The verified-token cache is looked up by the signature's last characters: a token that reuses the genuine one's
  // signature (so its lookup lands on the genuine entry) is not answered from it, and the genuine one still is.
  t.ok(verifier.cached(s.accessToken), 'the genuine token is cached')
  t.equal(verifier.cached(tamperedPayload), undefined, "a tampered payload with the genuine signature is not the genuine token's entry")
  await t.rejects(verifier.verify(tamperedPayload), new TokenRefusedError('ERR_JWS_SIGNATURE_VERIFICATION_FAILED'), 'it is checked, and refused by its signature')
  t.equal(verifier.cached(s.accessToken)?.token, s.accessToken, 'the genuine entry is untouched by the refusal')

  // An expired token is refused on its `exp` alone, before any signature check (it costs ~150 µs and could not
  // change the answer); one that has not expired is refused by its signature.
  const expiredClaims = { ...claims, iat: now - 700, nbf: now - 700, exp: now - 60 }
  await t.rejects(verifier.verify(jws(header, expiredClaims, otherKey)), new TokenRefusedError('expired'), 'expired and forged: refused as expired')
  await t.rejects(verifier.verify(jws(header, claims, otherKey)), new TokenRefusedError('ERR_JWS_SIGNATURE_VERIFICATION_FAILED'), 'forged, not expired: refused by its signature')
  await t.rejects(verifier.verify(jws(header, { ...claims, exp: now - 2 }, otherKey)), new TokenRefusedError('ERR_JWS_SIGNATURE_VERIFICATION_FAILED'), 'forged, expired within the clockTolerance: refused by its signature')

  // 100 KB: Node refuses the header block before the gateway sees it (431); the verifier refuses it too.
  const huge = jws(header, { ...claims, pad: 'x'.repeat(100_000) }, s.sign)
  t.ok(huge.length > 100_000)
  const hugeReply = await bearer(s.gw, huge)
  t.ok(hugeReply.status === 431 || hugeReply.status === 401, `a 100 KB Bearer token is refused (${hugeReply.status})`)
  t.not(hugeReply.status, 200)
  await t.rejects(verifier.verify(huge), new TokenRefusedError('too large'), 'the verifier refuses it before parsing')
  const justOver = jws(header, { ...claims, pad: 'x'.repeat(MAX_TOKEN_LENGTH) }, s.sign)
  t.equal((await bearer(s.gw, justOver)).status, 401, 'just over the verifier limit, within the header limit: 401')

  t.equal((await bearer(s.gw, s.accessToken)).status, 200, 'the genuine token still works after all that')
})

t.test('key rotation: reload with [B, A]; old tokens verify, new ones are signed with B; then A retired', async (t) => {
  const s = await setup(t)
  const kidA = s.kid
  const jwkA = s.privateJwk
  const jwkB = await generatePrivateJwk('EdDSA')
  t.equal(decodeProtectedHeader(s.accessToken).kid, kidA)

  writeFileSync(s.gw.keysFile, JSON.stringify({ keys: [jwkB, jwkA] }))
  await s.gw.gateway.reload(await loadConfig(s.gw.configFile, {}))
  t.equal((await bearer(s.gw, s.accessToken)).status, 200, 'a token signed with A still verifies')
  const jwks = await send(`${s.gw.url}/.well-known/jwks.json`)
  t.same(jwks.json.keys.map((k: { kid: string }) => k.kid), [jwkB.kid, kidA], 'JWKS lists B then A')
  for (const key of jwks.json.keys) t.notOk('d' in key, 'public keys only')

  const fresh = await send(`${s.gw.url}/auth/login`, { headers: { 'x-session-mode': 'token' }, body: { username: 'bob', password: 'bob-pw' } })
  t.equal(fresh.status, 200)
  t.equal(decodeProtectedHeader(fresh.json.accessToken).kid, jwkB.kid, 'a new login is signed with B')
  t.equal((await bearer(s.gw, fresh.json.accessToken)).status, 200)
  const rotated = await send(`${s.gw.url}/auth/refresh`, { body: { refreshToken: s.refreshToken } })
  t.equal(rotated.status, 200, 'a refresh token issued under A still rotates')
  t.equal(decodeProtectedHeader(rotated.json.accessToken).kid, jwkB.kid, 'and gets a token signed with B')

  writeFileSync(s.gw.keysFile, JSON.stringify({ keys: [jwkB] }))
  await s.gw.gateway.reload(await loadConfig(s.gw.configFile, {}))
  t.equal((await bearer(s.gw, s.accessToken)).status, 401, 'A retired: its tokens are refused')
  t.equal((await bearer(s.gw, rotated.json.accessToken)).status, 200, 'B tokens still verify')
  const after = await send(`${s.gw.url}/.well-known/jwks.json`)
  t.same(after.json.keys.map((k: { kid: string }) => k.kid), [jwkB.kid])
  const next = await send(`${s.gw.url}/auth/refresh`, { body: { refreshToken: rotated.json.refreshToken } })
  t.equal(next.status, 200, 'a refresh token issued under B rotates')
})

for (const alg of ['ES256', 'RS256'] as const) {
  t.test(`${alg} gateway: login, verify, refresh, JWKS, forgeries`, async (t) => {
    const s = await setup(t, alg)
    const header = decodeProtectedHeader(s.accessToken)
    t.same(header, { alg, kid: s.kid, typ: 'at+jwt' })
    const me = await bearer(s.gw, s.accessToken)
    t.equal(me.status, 200)
    t.equal(me.json.sub, 'user-1')
    const rotated = await send(`${s.gw.url}/auth/refresh`, { body: { refreshToken: s.refreshToken } })
    t.equal(rotated.status, 200)
    t.equal((await bearer(s.gw, rotated.json.accessToken)).status, 200)

    const jwks = await send(`${s.gw.url}/.well-known/jwks.json`)
    const key = jwks.json.keys[0] as Record<string, unknown>
    t.equal(key.kid, s.kid)
    t.equal(key.kty, alg === 'ES256' ? 'EC' : 'RSA')
    if (alg === 'ES256') t.ok(key.crv === 'P-256' && key.x && key.y, 'EC public key')
    else t.ok(key.n && key.e, 'RSA public key')
    for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth']) t.notOk(member in key, `no ${member}`)

    const now = Math.floor(Date.now() / 1000)
    const claims = { ...decodeJwt(s.accessToken), iat: now, nbf: now, exp: now + 600 }
    t.equal((await bearer(s.gw, jws({ alg, kid: s.kid, typ: 'at+jwt' }, claims, s.sign))).status, 200, 'control: signed here with the real key')
    const otherJwk = await generatePrivateJwk(alg)
    const other = signerFor(alg, createPrivateKey({ key: otherJwk as Record<string, string>, format: 'jwk' }))
    const publicPem = createPublicKey({ key: s.privateJwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' }) as string
    const refused: [string, string][] = [
      ['another key, same kid', jws({ alg, kid: s.kid, typ: 'at+jwt' }, claims, other)],
      ['HS256 with the public key PEM', jws({ alg: 'HS256', kid: s.kid, typ: 'at+jwt' }, claims, (i) => createHmac('sha256', publicPem).update(i).digest())],
      ['alg none', `${b64url({ alg: 'none', kid: s.kid, typ: 'at+jwt' })}.${b64url(claims)}.`],
      ['the other asymmetric algorithm', jws({ alg: alg === 'ES256' ? 'RS256' : 'ES256', kid: s.kid, typ: 'at+jwt' }, claims, s.sign)],
      ['EdDSA', jws({ alg: 'EdDSA', kid: s.kid, typ: 'at+jwt' }, claims, s.sign)],
    ]
    for (const [what, token] of refused) t.equal((await bearer(s.gw, token)).status, 401, `${alg}: ${what}`)

    const out = await send(`${s.gw.url}/auth/logout`, { headers: { authorization: `Bearer ${rotated.json.accessToken}` }, body: { refreshToken: rotated.json.refreshToken } })
    t.equal(out.status, 204)
    t.equal((await bearer(s.gw, rotated.json.accessToken)).status, 401, 'logged out')
  })
}
