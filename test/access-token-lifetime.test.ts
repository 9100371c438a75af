/**
 * The access token's exp: iat + accessTtl exactly (as a verifier reads the lifetime), except that a lifetime of a
 * second or two is never minted (almost) expired because iat is floored to the second; and a verified token is held
 * in the verifier's cache until its expiry at most.
 */
import { decodeJwt } from 'jose'
import t from 'tap'
import type { GatewayConfig } from '../src/config/schema.js'
import { AccessTokenIssuer } from '../src/tokens/access-token.js'
import { AccessTokenVerifier, TokenRefusedError } from '../src/tokens/access-token-verifier.js'
import { ephemeralKeyRing } from '../src/tokens/keys.js'

const keys = await ephemeralKeyRing('EdDSA')
/** Only what the issuer reads. */
const tokensOf = (accessTtlMs: number) => ({ issuer: 'https://gw', audience: 'api', accessTtl: accessTtlMs }) as GatewayConfig['tokens']
const issuerWith = (accessTtlMs: number) => new AccessTokenIssuer(keys, tokensOf(accessTtlMs))
const subject = { sub: 'u', sid: 's'.repeat(22), claims: {} }
const second = 1_800_000_000_000 // a whole second, epoch ms

t.test('exp - iat is accessTtl, wherever in its second the token is issued', async (t) => {
  for (const ttl of [900_000, 60_000, 2000]) {
    const seconds = ttl / 1000
    for (const offset of [0, 1, 500, 999]) {
      const issued = await issuerWith(ttl).issue(subject, second + offset)
      const claims = decodeJwt(issued.token)
      t.equal(claims.iat, second / 1000, `${ttl} ms +${offset} ms: iat is the second`)
      t.equal((claims.exp as number) - (claims.iat as number), seconds, `${ttl} ms +${offset} ms: exp - iat`)
      t.equal(issued.expiresAt, (claims.exp as number) * 1000)
    }
  }
})

t.test('a lifetime of a second or less is never minted almost expired', async (t) => {
  for (const ms of [1000, 500]) {
    for (const offset of [0, 400, 800, 999]) {
      const issuedAt = second + offset
      const issued = await issuerWith(ms).issue(subject, issuedAt)
      t.ok(issued.expiresAt - issuedAt >= ms / 2, `${ms} ms +${offset} ms: lives ${issued.expiresAt - issuedAt} ms, at least half of ${ms}`)
      t.ok(issued.expiresAt - issuedAt < ms + 1000, `${ms} ms +${offset} ms: and less than a second over`)
    }
  }
})

t.test('the verified-token cache holds a token until its expiry at most', async (t) => {
  const tokens = { ...tokensOf(60_000), clockTolerance: 0, algorithm: 'EdDSA', refreshAhead: 1000 } as GatewayConfig['tokens']
  const verifier = new AccessTokenVerifier(keys, tokens)
  const remembered = async (lifetimeMs: number, at?: number) => {
    const issued = await issuerWith(60_000).issue(subject)
    const now = at ?? Date.now() // after the signature: the lifetime starts when the entry is written
    const verified = { token: issued.token, sub: 'u', sid: subject.sid, jti: issued.jti, expiresAt: now + lifetimeMs, payload: issued.payload }
    verifier.remember(verified, now)
    return verified
  }
  const longLived = await remembered(60_000)
  const shortLived = await remembered(400)
  t.ok(verifier.cached(shortLived.token), 'served while it lives')
  t.equal(verifier.size, 2)
  await new Promise((resolve) => setTimeout(resolve, 450))
  t.equal(verifier.cached(shortLived.token), undefined, 'not served once expired')
  await remembered(-1)
  t.equal(verifier.size, 1, 'an already expired token is not kept at all')
  await remembered(50)
  t.equal(verifier.size, 2)
  await new Promise((resolve) => setTimeout(resolve, 120))
  await remembered(60_000, Date.now() + 10_000) // a write 10 s after the last sweep sweeps
  t.equal(verifier.size, 2, 'the expired one swept out: the long-lived and the new one stay')
  t.ok(verifier.cached(longLived.token))
})

t.test('expiry boundary: verify() (signature checked or not) and cached() agree to the millisecond', async (t) => {
  for (const toleranceMs of [0, 5000]) {
    const tokens = { ...tokensOf(60_000), clockTolerance: toleranceMs, algorithm: 'EdDSA' } as GatewayConfig['tokens']
    const issued = await issuerWith(60_000).issue(subject, second)
    const lastGood = issued.expiresAt + toleranceMs - 1
    // Uncached: a fresh verifier each time, so the answer comes from the checks, not from the cache.
    const fresh = () => new AccessTokenVerifier(keys, tokens)
    t.equal((await fresh().verify(issued.token, lastGood)).jti, issued.jti, `tolerance ${toleranceMs}: accepted 1 ms before exp + tolerance`)
    await t.rejects(fresh().verify(issued.token, lastGood + 1), new TokenRefusedError('expired'), `tolerance ${toleranceMs}: refused at exp + tolerance`)
    // Cached: verified once, then asked again on either side of the boundary.
    const verifier = fresh()
    await verifier.verify(issued.token, second)
    t.ok(verifier.cached(issued.token, lastGood), `tolerance ${toleranceMs}: cached() serves it 1 ms before`)
    t.equal(verifier.cached(issued.token, lastGood + 1), undefined, `tolerance ${toleranceMs}: and not at exp + tolerance`)
    t.equal((await verifier.verify(issued.token, lastGood)).jti, issued.jti)
    await t.rejects(verifier.verify(issued.token, lastGood + 1), new TokenRefusedError('expired'))
  }
})

t.test('a token does not outlive its session: exp is capped at the second the session ends (notAfter)', async (t) => {
  const issuer = issuerWith(900_000)
  const capped = await issuer.issue(subject, second, undefined, second + 120_500)
  t.equal(decodeJwt(capped.token).exp, second / 1000 + 121, 'the second in which the session ends')
  t.equal(capped.expiresAt, second + 121_000)
  const free = await issuer.issue(subject, second, undefined, second + 3_600_000)
  t.equal((decodeJwt(free.token).exp as number) - second / 1000, 900, 'an end further off changes nothing')
})
