/**
 * The SessionStore contract, as one suite run against every implementation
 * (test/session-store-memory.test.ts, test/session-store-redis.test.ts).
 *
 * Everything here talks to the store directly, with made-up hashes: the refresh-token MAC is checked by
 * Sessions, not by the store (see "an older generation with a wrong hash" below).
 */
import { randomBytes } from 'node:crypto'
import type { Test } from 'tap'
import type { NewSession, RevocationEvent, RotateRequest, SessionStore } from '../src/session-store/session-store.js'

/** Makes a fresh, empty store (its own key prefix for Redis); the suite closes it. */
export type MakeStore = () => Promise<SessionStore>

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const id = () => randomBytes(16).toString('base64url')
const hash = () => randomBytes(16).toString('base64url')

function newSession(overrides: Partial<NewSession> = {}): NewSession {
  return {
    sid: id(),
    sub: 'user-1',
    claims: { roles: ['admin'], email: 'alice@example.com' },
    refreshHash: hash(),
    idleTtlMs: 60_000,
    absoluteTtlMs: 600_000,
    ...overrides,
  }
}

function rotation(sid: string, presentedHash: string, presentedGen: number, overrides: Partial<RotateRequest> = {}): RotateRequest {
  return {
    sid,
    presentedHash,
    presentedGen,
    nextHash: hash(),
    sealedSuccessor: `sealed-${randomBytes(24).toString('base64url')}`,
    idleTtlMs: 60_000,
    graceMs: 10_000,
    ...overrides,
  }
}

/** Polls `probe` until it returns true or `ms` pass (for expiries that depend on a clock we do not own). */
async function eventually(probe: () => Promise<boolean>, ms = 1500, every = 50): Promise<boolean> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await probe()) return true
    if (Date.now() > deadline) return false
    await sleep(every)
  }
}

/**
 * `subscribes: false`: a store whose connection cannot carry the revocation subscription (Redis Cluster: the gateway
 * refuses the revocation cache there, and strict mode asks the store per session); it must say so when asked.
 */
export function storeSuite(t: Test, makeStore: MakeStore, { subscribes = true }: { subscribes?: boolean } = {}): void {
  /** A store for one subtest, closed when it ends. */
  const storeFor = async (t: Test): Promise<SessionStore> => {
    const store = await makeStore()
    t.teardown(() => store.close())
    return store
  }
  /** The same, with one new session in it. */
  const storeWithSession = async (t: Test): Promise<{ store: SessionStore; n: NewSession }> => {
    const store = await storeFor(t)
    const n = newSession()
    await store.createSession(n)
    return { store, n }
  }

  t.test('ping answers', async (t) => {
    const store = await storeFor(t)
    await t.resolves(store.ping())
  })

  t.test('createSession returns the record and getSession reads it back', async (t) => {
    const store = await storeFor(t)
    const before = Date.now()
    const n = newSession({ claims: { roles: ['admin', 'ops'], nested: { a: [1, 2, { b: null }] }, name: 'Zoë ✓' } })
    const created = await store.createSession(n)
    const after = Date.now()
    t.equal(created.sid, n.sid)
    t.equal(created.sub, n.sub)
    t.same(created.claims, n.claims)
    t.equal(created.gen, 0)
    t.ok(created.createdAt >= before - 50 && created.createdAt <= after + 50, 'createdAt is now')
    t.equal(created.rotatedAt, created.createdAt, 'generation 0 was issued at creation')
    t.equal(created.absoluteExpiresAt, created.createdAt + n.absoluteTtlMs)
    t.equal(created.idleExpiresAt, created.createdAt + n.idleTtlMs)
    const read = await store.getSession(n.sid)
    t.same(read, created, 'getSession returns the same record')
    t.equal(await store.getSession(id()), undefined, 'an unknown sid has no session')
    t.equal(await store.checkAccess(n.sid, id()), 'ok')
  })

  t.test('the idle expiry never passes the absolute one', async (t) => {
    const store = await storeFor(t)
    const created = await store.createSession(newSession({ idleTtlMs: 60_000, absoluteTtlMs: 30_000 }))
    t.equal(created.idleExpiresAt, created.absoluteExpiresAt)
  })

  t.test('a subject with braces and spaces in it works (keys stay well formed)', async (t) => {
    const store = await storeFor(t)
    const sub = 'we{ir}d sub:{x}'
    const a = await store.createSession(newSession({ sub }))
    t.equal((await store.getSession(a.sid))?.sub, sub)
    t.same(await store.deleteSessionsOf(sub), [a.sid])
    t.equal(await store.checkAccess(a.sid, id()), 'missing')
  })

  t.test('rotate: the current token moves the family one generation on', async (t) => {
    const store = await storeFor(t)
    const n = newSession()
    const created = await store.createSession(n)
    await sleep(5)
    const r1 = rotation(n.sid, n.refreshHash, 0)
    const first = await store.rotate(r1)
    t.equal(first.kind, 'rotated')
    if (first.kind !== 'rotated') return
    t.equal(first.session.gen, 1)
    t.equal(first.session.sub, n.sub)
    t.same(first.session.claims, n.claims)
    t.equal(first.session.createdAt, created.createdAt)
    t.equal(first.session.absoluteExpiresAt, created.absoluteExpiresAt, 'the absolute expiry never moves')
    t.ok(first.session.rotatedAt > created.rotatedAt, 'rotatedAt moves on')
    t.equal(first.session.idleExpiresAt, first.session.rotatedAt + r1.idleTtlMs, 'the idle expiry restarts')
    const second = await store.rotate(rotation(n.sid, r1.nextHash, 1))
    t.equal(second.kind, 'rotated')
    if (second.kind === 'rotated') t.equal(second.session.gen, 2)
    t.equal((await store.getSession(n.sid))?.gen, 2)
  })

  t.test('rotate: within the grace the rotated token gets the same sealed successor, and nothing changes', async (t) => {
    const { store, n } = await storeWithSession(t)
    const r1 = rotation(n.sid, n.refreshHash, 0)
    const first = await store.rotate(r1)
    t.equal(first.kind, 'rotated')
    for (let i = 0; i < 3; i++) {
      // Another instance prepared its own successor: it must be ignored, the first one wins.
      const again = await store.rotate(rotation(n.sid, n.refreshHash, 0))
      t.equal(again.kind, 'grace')
      if (again.kind !== 'grace' || first.kind !== 'rotated') return
      t.equal(again.sealedSuccessor, r1.sealedSuccessor, 'the same successor, not a new branch')
      t.same(again.session, first.session, 'the same generation and times as the rotation')
    }
    const next = await store.rotate(rotation(n.sid, r1.nextHash, 1))
    t.equal(next.kind, 'rotated', 'the successor is still the current token (no revocation)')
  })

  t.test('rotate: 20 concurrent rotations of one token -> one rotation, 19 grace answers', async (t) => {
    const { store, n } = await storeWithSession(t)
    const requests = Array.from({ length: 20 }, () => rotation(n.sid, n.refreshHash, 0))
    const results = await Promise.all(requests.map((r) => store.rotate(r)))
    const rotated = results.flatMap((r, i) => (r.kind === 'rotated' ? [i] : []))
    t.equal(rotated.length, 1, 'exactly one rotation')
    const winner = requests[rotated[0] as number] as RotateRequest
    const graces = results.filter((r) => r.kind === 'grace')
    t.equal(graces.length, 19)
    t.ok(graces.every((g) => g.kind === 'grace' && g.sealedSuccessor === winner.sealedSuccessor), 'every grace answer carries the winner')
    t.equal((await store.rotate(rotation(n.sid, winner.nextHash, 1))).kind, 'rotated', 'the winner successor works')
  })

  t.test('rotate: a token rotated less than the grace ago gets its own successor, even after the family moved on again', async (t) => {
    const { store, n } = await storeWithSession(t)
    const r1 = rotation(n.sid, n.refreshHash, 0)
    t.equal((await store.rotate(r1)).kind, 'rotated')
    const r2 = rotation(n.sid, r1.nextHash, 1)
    t.equal((await store.rotate(r2)).kind, 'rotated', 'the successor rotated at once (a fast response delivered it)')
    // A slow request sent with the first token arrives now: rotated twice, but less than the grace ago.
    const late0 = await store.rotate(rotation(n.sid, n.refreshHash, 0))
    t.equal(late0.kind, 'grace', 'the first token: a grace answer, not a reuse alarm')
    if (late0.kind === 'grace') {
      t.equal(late0.sealedSuccessor, r1.sealedSuccessor, 'with the successor it got then')
      t.equal(late0.session.gen, 1, 'whose generation is 1')
    }
    const late1 = await store.rotate(rotation(n.sid, r1.nextHash, 1))
    t.equal(late1.kind, 'grace', 'its successor too')
    if (late1.kind === 'grace') t.equal(late1.sealedSuccessor, r2.sealedSuccessor)
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0, { unlessSuperseded: true }))).kind, 'grace', 'early refreshes alike')
    t.equal((await store.rotate(rotation(n.sid, r2.nextHash, 2))).kind, 'rotated', 'the family goes on')
    t.equal((await store.getSession(n.sid))?.gen, 3, 'three rotations, no branch')

    // Each generation's grace runs from its own rotation.
    const m = newSession()
    await store.createSession(m)
    const m1 = rotation(m.sid, m.refreshHash, 0, { graceMs: 300 })
    t.equal((await store.rotate(m1)).kind, 'rotated')
    await sleep(700)
    const m2 = rotation(m.sid, m1.nextHash, 1, { graceMs: 10_000 })
    t.equal((await store.rotate(m2)).kind, 'rotated')
    t.equal((await store.rotate(rotation(m.sid, m1.nextHash, 1))).kind, 'grace', 'the last rotated token: within its grace')
    t.equal((await store.rotate(rotation(m.sid, m.refreshHash, 0))).kind, 'reused', 'the first one: past its own grace, a replay')
    t.equal((await store.rotate(rotation(m.sid, m2.nextHash, 2))).kind, 'revoked', 'and the family is revoked')
  })

  t.test('rotate: the last four rotated tokens keep their grace; an older one is a replay', async (t) => {
    const { store, n } = await storeWithSession(t)
    const hashes = [n.refreshHash]
    for (let gen = 0; gen < 6; gen++) {
      const r = rotation(n.sid, hashes[gen] as string, gen)
      t.equal((await store.rotate(r)).kind, 'rotated')
      hashes.push(r.nextHash)
    }
    for (const gen of [5, 4, 3, 2]) {
      t.equal((await store.rotate(rotation(n.sid, hashes[gen] as string, gen))).kind, 'grace', `generation ${gen}: one of the last four`)
    }
    t.equal((await store.rotate(rotation(n.sid, hashes[1] as string, 1))).kind, 'reused', 'generation 1: beyond them, a replay')
  })

  t.test('rotate: the rotated token after the grace is a reuse; then the whole family is revoked', async (t) => {
    const { store, n } = await storeWithSession(t)
    const r1 = rotation(n.sid, n.refreshHash, 0, { graceMs: 100 })
    t.equal((await store.rotate(r1)).kind, 'rotated')
    await sleep(250)
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0, { graceMs: 100 }))).kind, 'reused')
    t.equal((await store.rotate(rotation(n.sid, r1.nextHash, 1))).kind, 'revoked', 'the successor dies with the family')
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0))).kind, 'revoked', 'the reused token again: revoked')
    t.equal((await store.rotate(rotation(n.sid, hash(), 7))).kind, 'revoked', 'anything else: revoked')
    t.equal(await store.checkAccess(n.sid, id()), 'revoked', 'access tokens of the family are refused at once')
    t.equal(await store.getSession(n.sid), undefined, 'a revoked family is not a session')
  })

  t.test('extendGrace keeps the grace open (the successor still on its way), only for the current generation', async (t) => {
    const { store, n } = await storeWithSession(t)
    // Margins of 300+ ms on every side, so that a loaded machine's late timers cannot decide the outcome.
    const r1 = rotation(n.sid, n.refreshHash, 0, { graceMs: 600 })
    t.equal((await store.rotate(r1)).kind, 'rotated')
    await sleep(300)
    await store.extendGrace(n.sid, 1, 1200)
    await sleep(600) // past the first 600 ms, within the extension (until ~1,500 ms)
    const late = await store.rotate(rotation(n.sid, n.refreshHash, 0))
    t.equal(late.kind, 'grace', 'the older token presented late gets the successor, not a reuse alarm')
    await store.extendGrace(n.sid, 0, 10_000)
    await sleep(1000)
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0))).kind, 'reused', 'an extension for another generation does nothing; the grace ends')
    await store.extendGrace(n.sid, 1, 10_000)
    t.equal((await store.rotate(rotation(n.sid, r1.nextHash, 1))).kind, 'revoked', 'a revoked family stays revoked')

    const m = newSession()
    await store.createSession(m)
    t.equal((await store.rotate(rotation(m.sid, m.refreshHash, 0, { graceMs: 50 }))).kind, 'rotated')
    await sleep(120)
    await store.extendGrace(m.sid, 1, 10_000)
    t.equal((await store.rotate(rotation(m.sid, m.refreshHash, 0))).kind, 'reused', 'a grace already over is not revived')
  })

  t.test('rotate: with reuseGrace 0 there is no grace at all, not even in the same millisecond', async (t) => {
    const { store, n } = await storeWithSession(t)
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0, { graceMs: 0 }))).kind, 'rotated')
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0, { graceMs: 0 }))).kind, 'reused', 'the rotated token at once: a reuse')
  })

  t.test('rotate unlessSuperseded: the grace as usual; past it an older generation is superseded and changes nothing', async (t) => {
    const { store, n } = await storeWithSession(t)
    const r1 = rotation(n.sid, n.refreshHash, 0, { graceMs: 100 })
    const first = await store.rotate(r1)
    t.equal(first.kind, 'rotated')
    const early = { unlessSuperseded: true, graceMs: 100 }
    const inGrace = await store.rotate(rotation(n.sid, n.refreshHash, 0, early))
    t.equal(inGrace.kind, 'grace', 'within the grace: the same successor, as without the option')
    if (inGrace.kind === 'grace') t.equal(inGrace.sealedSuccessor, r1.sealedSuccessor)
    await sleep(250)
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0, early))).kind, 'superseded', 'after the grace: superseded, not a reuse')
    t.equal(await store.checkAccess(n.sid, id()), 'ok', 'the family is not revoked')
    t.same(await store.getSession(n.sid), first.kind === 'rotated' ? first.session : undefined, 'nothing changed')
    const next = await store.rotate(rotation(n.sid, r1.nextHash, 1, early))
    t.equal(next.kind, 'rotated', 'the current token rotates as without the option')
    if (next.kind === 'rotated') t.equal(next.session.gen, 2)
    t.equal((await store.rotate(rotation(n.sid, hash(), 2, early))).kind, 'invalid', 'a wrong hash of the current generation is still invalid')
    t.equal((await store.rotate(rotation(hash(), hash(), 0, early))).kind, 'expired', 'an unknown family is still expired')
  })

  t.test('rotate: an older generation presented with a wrong hash', async (t) => {
    // At store level every older generation is treated as a genuine rotated token: 'reused', the family is
    // revoked. The store cannot tell a forgery from a replay; Sessions refuses tokens whose MAC is wrong before
    // they reach the store (tested in test/sessions.test.ts: a forged token naming a family does not revoke it).
    const { store, n } = await storeWithSession(t)
    const r1 = rotation(n.sid, n.refreshHash, 0)
    t.equal((await store.rotate(r1)).kind, 'rotated')
    const forged = await store.rotate(rotation(n.sid, hash(), 0))
    t.equal(forged.kind, 'reused', 'even within the grace: the hash is not the rotated one, so no grace answer')
    t.equal(await store.checkAccess(n.sid, id()), 'revoked')
  })

  t.test('rotate: a wrong hash of the current or a future generation is invalid and changes nothing', async (t) => {
    const { store, n } = await storeWithSession(t)
    t.equal((await store.rotate(rotation(n.sid, hash(), 0))).kind, 'invalid', 'current generation, wrong hash')
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 1))).kind, 'invalid', 'right hash, future generation')
    t.equal((await store.rotate(rotation(n.sid, hash(), 5))).kind, 'invalid', 'future generation')
    t.equal(await store.checkAccess(n.sid, id()), 'ok', 'the family is untouched')
    const ok = await store.rotate(rotation(n.sid, n.refreshHash, 0))
    t.equal(ok.kind, 'rotated', 'the genuine token still rotates')
  })

  t.test('rotate: an unknown family is expired', async (t) => {
    const store = await storeFor(t)
    t.equal((await store.rotate(rotation(id(), hash(), 0))).kind, 'expired')
  })

  t.test('idle expiry: an unused family dies after idleTtl, a rotation restarts the clock', async (t) => {
    const store = await storeFor(t)
    const idle = newSession({ idleTtlMs: 500 })
    const kept = newSession({ idleTtlMs: 500 })
    await store.createSession(idle)
    await store.createSession(kept)
    await sleep(300)
    const r1 = rotation(kept.sid, kept.refreshHash, 0, { idleTtlMs: 500 })
    t.equal((await store.rotate(r1)).kind, 'rotated', 'used within the idle window')
    await sleep(300)
    // ~600 ms after creation: `idle` is past its 500 ms, `kept` was rotated ~300 ms ago.
    t.equal(await store.checkAccess(kept.sid, id()), 'ok', 'the rotated family lives on')
    t.ok(await eventually(async () => (await store.checkAccess(idle.sid, id())) === 'missing'), 'idle family: access refused')
    t.equal(await store.getSession(idle.sid), undefined)
    t.equal((await store.rotate(rotation(idle.sid, idle.refreshHash, 0))).kind, 'expired')
    t.ok(await eventually(async () => (await store.checkAccess(kept.sid, id())) === 'missing'), 'then the other one idles out too')
    t.equal((await store.rotate(rotation(kept.sid, r1.nextHash, 1))).kind, 'expired')
  })

  t.test('absolute expiry: rotations cannot keep a family alive past absoluteTtl', async (t) => {
    const store = await storeFor(t)
    const n = newSession({ idleTtlMs: 400, absoluteTtlMs: 1000 })
    const created = await store.createSession(n)
    let hashNow = n.refreshHash
    let gen = 0
    let last: number | undefined
    for (let i = 0; i < 3; i++) {
      await sleep(250)
      const r = rotation(n.sid, hashNow, gen, { idleTtlMs: 400 })
      const result = await store.rotate(r)
      t.equal(result.kind, 'rotated', `rotation ${i + 1} within the absolute lifetime`)
      if (result.kind !== 'rotated') return
      t.ok(result.session.idleExpiresAt <= created.absoluteExpiresAt, 'idle expiry capped by the absolute one')
      last = result.session.idleExpiresAt
      hashNow = r.nextHash
      gen++
    }
    t.equal(last, created.absoluteExpiresAt, 'the last rotation got the absolute expiry as its idle expiry')
    await sleep(Math.max(0, created.absoluteExpiresAt - Date.now()) + 80)
    t.equal((await store.rotate(rotation(n.sid, hashNow, gen))).kind, 'expired')
    t.equal(await store.checkAccess(n.sid, id()), 'missing')
    t.equal(await store.getSession(n.sid), undefined)
  })

  t.test('checkAccess: ok, denied, revoked, missing', async (t) => {
    const { store, n } = await storeWithSession(t)
    const jti = id()
    t.equal(await store.checkAccess(n.sid, jti), 'ok')
    await store.denyAccessToken(n.sid, jti, Date.now() + 60_000)
    t.equal(await store.checkAccess(n.sid, jti), 'denied')
    t.equal(await store.checkAccess(n.sid, id()), 'ok', 'other tokens of the family are not denied')
    t.equal(await store.checkAccess(id(), id()), 'missing', 'unknown family')
    const other = newSession()
    await store.createSession(other)
    t.equal(await store.checkAccess(other.sid, jti), 'ok', 'a denial names its family')
    await store.deleteSession(n.sid)
    const state = await store.checkAccess(n.sid, id())
    t.equal(state, 'missing', 'logged out family')
    t.not(await store.checkAccess(n.sid, jti), 'ok', 'a denied token of a deleted family is still refused')
  })

  t.test('denyAccessToken: the entry expires with the token; a past expiry is a no-op', async (t) => {
    const { store, n } = await storeWithSession(t)
    const jti = id()
    await store.denyAccessToken(n.sid, jti, Date.now() + 300)
    t.equal(await store.checkAccess(n.sid, jti), 'denied')
    t.ok(await eventually(async () => (await store.checkAccess(n.sid, jti)) === 'ok', 1000), 'the denial ends at the given time')
    const past = id()
    await store.denyAccessToken(n.sid, past, Date.now() - 1000)
    t.equal(await store.checkAccess(n.sid, past), 'ok', 'an already expired token needs no denial')
  })

  t.test('deleteSession ends a family and reports whether it existed', async (t) => {
    const { store, n } = await storeWithSession(t)
    t.equal(await store.deleteSession(n.sid), true)
    t.equal(await store.deleteSession(n.sid), false, 'idempotent')
    t.equal(await store.deleteSession(id()), false)
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0))).kind, 'expired', 'its refresh token fails')
    t.equal(await store.checkAccess(n.sid, id()), 'missing', 'its access tokens fail')
    t.equal(await store.getSession(n.sid), undefined)
  })

  t.test('deleteSessionsOf ends every family of one subject and no other', async (t) => {
    const store = await storeFor(t)
    const mine = [newSession({ sub: 'alice' }), newSession({ sub: 'alice' }), newSession({ sub: 'alice' })]
    const hers = newSession({ sub: 'bob' })
    for (const s of [...mine, hers]) await store.createSession(s)
    await store.deleteSession((mine[2] as NewSession).sid)
    t.same((await store.deleteSessionsOf('alice')).sort(), [mine[0]?.sid, mine[1]?.sid].sort(), 'the two still alive')
    for (const s of mine) {
      t.equal(await store.checkAccess(s.sid, id()), 'missing')
      t.equal((await store.rotate(rotation(s.sid, s.refreshHash, 0))).kind, 'expired')
    }
    t.equal(await store.checkAccess(hers.sid, id()), 'ok', 'another subject is untouched')
    t.same(await store.deleteSessionsOf('alice'), [], 'idempotent')
    t.same(await store.deleteSessionsOf('nobody'), [])
    const later = newSession({ sub: 'alice' })
    await store.createSession(later)
    t.equal(await store.checkAccess(later.sid, id()), 'ok', 'a new login after logout-all works')
    t.same(await store.deleteSessionsOf('alice'), [later.sid])
  })

  t.test('deleteSessionsOf also ends a family revoked by reuse (counted or not, it stays refused)', async (t) => {
    const store = await storeFor(t)
    const n = newSession({ sub: 'carol' })
    await store.createSession(n)
    const r1 = rotation(n.sid, n.refreshHash, 0, { graceMs: 0 })
    await store.rotate(r1)
    await sleep(20)
    t.equal((await store.rotate(rotation(n.sid, n.refreshHash, 0, { graceMs: 0 }))).kind, 'reused')
    await store.deleteSessionsOf('carol')
    t.not(await store.checkAccess(n.sid, id()), 'ok')
  })

  t.test('rate limit: peek, hit, reset, fixed windows', async (t) => {
    const store = await storeFor(t)
    t.same(await store.rateLimitPeek(['ip:1', 'user:a']), [{ count: 0, retryAfterMs: 0 }, { count: 0, retryAfterMs: 0 }])
    await store.rateLimitHit(['ip:1', 'user:a'], 2000)
    await store.rateLimitHit(['ip:1', 'user:a'], 2000)
    await store.rateLimitHit(['ip:1'], 2000)
    const [ip, user] = await store.rateLimitPeek(['ip:1', 'user:a'])
    t.equal(ip?.count, 3)
    t.equal(user?.count, 2)
    t.ok((ip?.retryAfterMs ?? 0) > 0 && (ip?.retryAfterMs ?? 0) <= 2000, `retryAfterMs within the window (${ip?.retryAfterMs})`)
    t.same(await store.rateLimitPeek(['ip:2']), [{ count: 0, retryAfterMs: 0 }], 'keys are independent')
    await store.rateLimitReset('user:a')
    t.same(await store.rateLimitPeek(['user:a']), [{ count: 0, retryAfterMs: 0 }], 'reset clears one key')
    t.equal((await store.rateLimitPeek(['ip:1']))[0]?.count, 3, 'and only that key')
    await store.rateLimitReset('never-hit')
    // A fixed window: later hits do not extend it.
    await sleep(1000)
    await store.rateLimitHit(['ip:1'], 2000)
    t.equal((await store.rateLimitPeek(['ip:1']))[0]?.count, 4)
    t.ok(await eventually(async () => (await store.rateLimitPeek(['ip:1']))[0]?.count === 0, 1500), 'the window ends 2 s after the first hit (a window restarted by the last hit would run about 1 s more)')
    await store.rateLimitHit(['ip:1'], 2000)
    t.equal((await store.rateLimitPeek(['ip:1']))[0]?.count, 1, 'a new window starts at 1')
  })

  t.test('rate limit: a hit returns the counts after it; concurrent hits are all counted; undo takes one back', async (t) => {
    const store = await storeFor(t)
    const first = await store.rateLimitHit(['a', 'b'], 5000)
    t.equal(first.length, 2)
    t.same(first.map((s) => s.count), [1, 1])
    t.ok(first.every((s) => s.retryAfterMs > 4000 && s.retryAfterMs <= 5000), 'retryAfterMs: the window')
    const concurrent = await Promise.all(Array.from({ length: 20 }, () => store.rateLimitHit(['a'], 5000)))
    t.same(concurrent.map((s) => s[0]?.count).sort((x, y) => (x ?? 0) - (y ?? 0)), Array.from({ length: 20 }, (_, i) => i + 2), 'every hit sees its own count')
    t.ok(concurrent.every((s) => Math.abs((s[0]?.window ?? 0) - first[0]!.window) <= 2), 'every hit of one window names the same window')
    await store.rateLimitUndo('a', concurrent[19]![0]!.window)
    t.equal((await store.rateLimitPeek(['a']))[0]?.count, 20)
    await store.rateLimitUndo('b', first[1]!.window)
    t.equal((await store.rateLimitPeek(['b']))[0]?.count, 0, 'an undo of the only hit leaves 0')
    await store.rateLimitUndo('b', first[1]!.window)
    t.equal((await store.rateLimitPeek(['b']))[0]?.count, 0, 'never below 0')
    await store.rateLimitUndo('never-hit', first[0]!.window)
    t.same(await store.rateLimitPeek(['never-hit']), [{ count: 0, retryAfterMs: 0 }], 'undo never creates a counter')
    await sleep(30)
    const later = await store.rateLimitHit(['b'], 5000)
    t.equal(later[0]?.count, 1)
    t.ok((later[0]?.retryAfterMs ?? 0) <= first[1]!.retryAfterMs - 25, `an undo does not restart the window (${later[0]?.retryAfterMs} after ${first[1]!.retryAfterMs})`)
  })

  t.test('rate limit: an undo that arrives after its window ended leaves the next window alone (review)', async (t) => {
    const store = await storeFor(t)
    const [old] = await store.rateLimitHit(['late'], 300)
    t.ok(await eventually(async () => (await store.rateLimitPeek(['late']))[0]?.count === 0, 2000), 'the first window ends')
    const [next] = await store.rateLimitHit(['late'], 300)
    t.equal(next?.count, 1, 'a new window')
    t.ok((next?.window ?? 0) - (old?.window ?? 0) >= 300, 'which names itself apart from the first')
    await store.rateLimitUndo('late', old!.window)
    t.equal((await store.rateLimitPeek(['late']))[0]?.count, 1, "the first window's late undo takes nothing from the second")
    await store.rateLimitUndo('late', next!.window)
    t.equal((await store.rateLimitPeek(['late']))[0]?.count, 0, "the second's own undo does")
  })

  t.test('revocation events (when the store publishes them)', async (t) => {
    const store = await storeFor(t)
    if (!store.onRevocation) {
      t.pass('this store does not publish revocations')
      return
    }
    if (!subscribes) {
      await t.rejects(store.onRevocation(() => {}), /needs a single Redis or sentinel connection/, 'it says it cannot subscribe')
      return
    }
    const events: RevocationEvent[] = []
    // Published events before the subscription is up are not delivered: wait until it says it is.
    await new Promise<void>((resolve) => void store.onRevocation!((e) => events.push(e), (up) => up && resolve()))
    const a = newSession()
    const b = newSession()
    await store.createSession(a)
    await store.createSession(b)
    await store.deleteSession(a.sid)
    const expiresAt = Date.now() + 60_000
    await store.denyAccessToken(b.sid, 'jti-1', expiresAt)
    await store.rotate(rotation(b.sid, b.refreshHash, 0, { graceMs: 0 }))
    await sleep(10)
    await store.rotate(rotation(b.sid, b.refreshHash, 0, { graceMs: 0 }))
    t.ok(await eventually(async () => events.length >= 3), 'events arrive')
    t.same(events.slice(0, 3), [
      { type: 'session', sid: a.sid },
      { type: 'jti', sid: b.sid, jti: 'jti-1', expiresAt },
      { type: 'session', sid: b.sid },
    ])
  })
}
