/**
 * The claims the gateway sets in every access token itself (CONTRACT §4). A login provider's claims may not set
 * them (users file, `login.upstream.claims`), and `/auth/session` leaves them out of `claims`.
 */
export const REGISTERED_CLAIMS: readonly string[] = ['iss', 'aud', 'sub', 'iat', 'nbf', 'exp', 'jti', 'sid']

/** The message of a refusal, one wording wherever claims are configured. */
export const REGISTERED_CLAIMS_REFUSED = `must not set ${REGISTERED_CLAIMS.join(', ')}`

/** Whether a claims mapping sets one of them (own keys only). */
export function setsRegisteredClaim(claims: object): boolean {
  return REGISTERED_CLAIMS.some((name) => Object.hasOwn(claims, name))
}
