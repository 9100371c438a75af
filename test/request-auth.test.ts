// The decision a cookie-mode request makes when its refresh fails, as pure logic (the store's answers are given):
// which failures leave a still-valid access token usable. The races that lead there (a logout or an ended session on
// another instance between the access check and the refresh) are not reproducible on demand over HTTP.
import t from 'tap'
import { authenticate } from '../src/auth/request-auth.js'
import { GatewayError, RevocationUnannouncedError, StoreUnavailableError } from '../src/errors.js'
import { SessionEndedError, type Sessions } from '../src/sessions/sessions.js'
import type { VerifiedAccessToken } from '../src/tokens/access-token-verifier.js'

const NOW = 1_900_000_000_000
const TOKENS = { refreshAhead: 60_000 } as Parameters<typeof authenticate>[2]
const valid: VerifiedAccessToken = { token: 'access', sub: 'u', sid: 'own', jti: 'j', expiresAt: NOW + 30_000, payload: {} }

/** Sessions whose access check passes and whose refresh fails with `failure`; the refresh cookie names `refreshSid`. */
function sessionsFailing(failure: unknown, refreshSid: string): Sessions {
  const fail = async () => Promise.reject(failure)
  return {
    authenticate: async () => valid,
    sidOfRefreshToken: () => refreshSid,
    refresh: fail,
    refreshUnlessSuperseded: fail,
  } as unknown as Sessions
}

const cookies = { mode: 'cookie', access: 'access', refresh: 'refresh' } as const

t.test("an early refresh of the token's own session: only a store outage leaves the token usable", async (t) => {
  const outage = await authenticate(cookies, sessionsFailing(new StoreUnavailableError(), 'own'), TOKENS, NOW)
  t.equal(outage?.token, valid, 'a store outage: the token that passed its check just now serves')
  const over: [string, unknown][] = [
    ['the family gone since the check (a logout elsewhere)', new GatewayError('session_expired')],
    ['the session ended by this refresh (claims too large)', new SessionEndedError('too large')],
    ['a reuse', new GatewayError('refresh_token_reused')],
  ]
  for (const [what, failure] of over) {
    await t.rejects(authenticate(cookies, sessionsFailing(failure, 'own'), TOKENS, NOW), { code: 'unauthenticated' }, `${what}: 401`)
  }
  await t.rejects(
    authenticate(cookies, sessionsFailing(new RevocationUnannouncedError(['own']), 'own'), TOKENS, NOW),
    RevocationUnannouncedError,
    'a reuse detected but not announced: the 503, not the token',
  )
})

t.test("a refresh cookie of another session: its failures leave the token of this one usable, but a reuse", async (t) => {
  for (const failure of [new GatewayError('session_expired'), new SessionEndedError('too large'), new StoreUnavailableError()]) {
    const auth = await authenticate(cookies, sessionsFailing(failure, 'other'), TOKENS, NOW)
    t.equal(auth?.token, valid, `${(failure as Error).name}: served with the valid token`)
  }
  await t.rejects(authenticate(cookies, sessionsFailing(new GatewayError('refresh_token_reused'), 'other'), TOKENS, NOW), { code: 'unauthenticated' })
})
