import { boundedCache } from '../bounded-cache.js'
import type { AccessState, AnnouncementState, SessionStore } from '../session-store/session-store.js'

/**
 * What an instance knows of revocations, fed by Redis pub/sub. Two modes:
 *
 * - strict (the default with one Redis, not Cluster or sentinel): before a request is answered from memory, a
 *   revocation barrier (one PING on the subscription's connection, sent after every request of the event-loop turn
 *   has arrived and shared by them) makes sure that every revocation published before it has arrived; a session
 *   seen for the first time is asked of the store. As strict as a store check per request (an ended family's
 *   denied jti included: logout ends the family before it denies the jti), for one round trip per turn instead
 *   of one per session. An access token never outlives its session (its exp is capped), so a session that merely
 *   expires in the store needs no announcement.
 * - the optional local revocation cache (`redis.revocationCache: true`), described below: no round trip at all.
 *
 * The first time an instance sees a session it asks the store, as the strict mode does on every request;
 * after that it answers from memory, and every revocation (logout, logout-all, reuse detection, jti denial)
 * published by any instance reaches it through Redis pub/sub. While the subscription is down (or Redis stops
 * answering its heartbeat, a frozen server) the cache is emptied and not filled, so every request goes back to
 * the store: it never answers from stale knowledge for longer than the heartbeat's bound.
 *
 * Trade-off: a revocation reaches other instances after the pub/sub delivery delay (measured in
 * test/revocation-cache.test.ts) instead of at once. A session that merely expires in the store (idle or
 * absolute expiry) needs no announcement in either mode: its access tokens expire with it (their exp is capped at
 * the second the session ends), give or take clockTolerance.
 */
const NOT_KNOWN: Promise<undefined> = Promise.resolve(undefined)

/**
 * How long a passed barrier covers later requests (strict mode). A request checked at most this long after a barrier
 * PING was *sent* is answered from memory with no round trip of its own. A revocation it may miss was applied in
 * Redis less than this long before: every instance refuses a revoked token within this span. And no client has been
 * told of it yet: the answers that tell of a revocation (logout, logout-all, reuse, a 401 from the session's state)
 * are held REVOCATION_HOLD_MS on every instance with a Redis store, measured by monotonic clocks. (A client timing
 * answers can guess a refusal from a fast answer that does not come: that window is the price, README.) While
 * requests keep coming, a new barrier goes out every quarter of the span, so the cover lapses only when a PING takes
 * longer than three quarters of it; requests then wait for a barrier of their own, as before. Between requests a
 * timer sends one 35 ms after the latest, for KEEP_COVER_MS after the last request.
 */
export const REVOCATION_COVER_MS = 50
/**
 * The hold: the cover and 2 ms more (a timer may fire up to 1 ms early by the finer clock covered() reads, and
 * monotonic clocks that NTP slews may run apart by a fraction of that).
 */
export const REVOCATION_HOLD_MS = REVOCATION_COVER_MS + 2

/**
 * Waits at least `ms` by performance.now(), the clock the covers are measured with (a timer may fire a little early
 * by it): the hold of an answer that tells of a revocation, and the wait for one made behind an instance's back.
 */
export async function waitMonotonic(ms: number): Promise<void> {
  const until = performance.now() + ms
  for (let left = ms; left > 0; left = until - performance.now()) {
    await new Promise((resolve) => setTimeout(resolve, Math.ceil(left)))
  }
}

/**
 * How long the cover is kept up after the last request that used it (strict mode): a barrier 35 ms after the latest
 * by a timer while no request comes to send one, so that requests after a quiet spell of up to this long (a page's
 * burst after its user read for a while, a client's next poll) wait for no round trip either. Then it lapses, and
 * an idle instance sends no cover PINGs.
 */
const KEEP_COVER_MS = 10_000
/** How long after a barrier was sent the timer sends the next (7/10 of the span: a PING has 15 ms to come back). */
const KEEP_COVER_RENEW_MS = (REVOCATION_COVER_MS * 7) / 10

/**
 * How often an instance asks again whether it may announce revocations, and whether a revocation went unannounced:
 * a right taken away at runtime (ACL) ends answering from memory within this bound, and one given back restores it.
 */
const PROBE_INTERVAL_MS = 1000

export class RevocationCache {
  private readonly knownSessions = boundedCache<string, AccessState>(200_000)
  private readonly deniedJtis = boundedCache<string, true>(200_000)
  private subscribed = false
  /**
   * Bumped whenever the subscription goes down or up and whenever memory is forgotten, so that answers fetched
   * before are not cached after it.
   */
  private epoch = 0
  private onFirstSubscription: (() => void) | undefined
  /** The barrier the requests of the current event-loop turn wait for, not sent yet (strict mode). */
  private gathering: Promise<boolean> | undefined
  /** Strict mode, with a store that can tell its barrier and announce revocations (probed when subscribed). */
  private barrierUsable = false
  /** When (performance.now()) the latest barrier that passed in this epoch was sent; -Infinity: none. */
  private coveredSince = Number.NEGATIVE_INFINITY
  /** When the latest barrier was sent. */
  private lastBarrierSentAt = Number.NEGATIVE_INFINITY
  /** When a request last asked for the cover (strict mode); the timer that keeps the cover up meanwhile. */
  private lastCoverUse = Number.NEGATIVE_INFINITY
  private keepCoverTimer: NodeJS.Timeout | undefined
  private readonly keepCoverMs: number
  readonly strict: boolean
  private readonly onAnnouncementsRefused: (() => void) | undefined
  private readonly probeIntervalMs: number
  private probeTimer: NodeJS.Timeout | undefined
  /** An announcement probe in flight; a refusal already reported. */
  private probing = false
  private refusalReported = false
  /** The store's count of unannounced revocations at the last probe (undefined: none read since subscribing). */
  private unannouncedSeen: number | undefined

  /**
   * `strict`: answer from memory only past a revocation barrier (see above); otherwise the revocation cache.
   * `onAnnouncementsRefused`: the probe found that this client may not PUBLISH (strict mode then asks the store;
   * either way its revocations reach the other instances only through the store's count, at their next probe).
   */
  constructor(
    private readonly store: SessionStore,
    options: { strict?: boolean; onAnnouncementsRefused?: () => void; probeIntervalMs?: number; keepCoverMs?: number } = {},
  ) {
    this.strict = options.strict ?? false
    this.keepCoverMs = options.keepCoverMs ?? KEEP_COVER_MS
    this.onAnnouncementsRefused = options.onAnnouncementsRefused
    this.probeIntervalMs = options.probeIntervalMs ?? PROBE_INTERVAL_MS
  }

  /**
   * Subscribes, waiting up to `waitMs` for the subscription: until it is up (Redis away at start, say) every request
   * asks the store, as in strict mode; it never fails the start.
   */
  async start(waitMs = this.strict ? 0 : 3000): Promise<void> {
    if (!this.store.onRevocation) throw new Error('this session store cannot publish revocations')
    const up = new Promise<void>((resolve) => (this.onFirstSubscription = resolve))
    await this.store.onRevocation(
      (event) => {
        if (event.type === 'session') this.revokeSession(event.sid)
        else this.denyJti(event.sid, event.jti, event.expiresAt)
      },
      (up) => this.setSubscribed(up),
    )
    this.probeTimer = setInterval(() => {
      if (this.subscribed) void this.probeAnnouncements()
    }, this.probeIntervalMs)
    this.probeTimer.unref()
    let timer: NodeJS.Timeout | undefined
    await Promise.race([up, new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))])
    clearTimeout(timer)
    this.onFirstSubscription = undefined
  }

  /**
   * Down: forget everything and ask the store until the subscription is back. Every change of state starts a new
   * epoch: a store answer is cached only if it was asked in the epoch it comes back in.
   */
  setSubscribed(up: boolean): void {
    this.epoch++
    this.coveredSince = Number.NEGATIVE_INFINITY
    if (!up) {
      this.knownSessions.clear()
      this.deniedJtis.clear()
      // Redis may come back without the counter (a restart without persistence): the next read starts afresh.
      this.unannouncedSeen = undefined
    }
    this.subscribed = up
    if (up) this.onFirstSubscription?.()
    if (up) void this.probeAnnouncements()
  }

  /**
   * Strict mode answers from memory only when revocations reach every instance: a client whose PUBLISH the server
   * refuses (ACL rights) keeps to a store check per request. Asked when the subscription comes up, then every
   * PROBE_INTERVAL_MS while it stays up (in both modes), with the store's count of revocations that some instance
   * applied but could not announce: when the right is taken away at runtime (even for less than the interval),
   * every instance forgets what it knew from memory within that bound. A probe that gets no answer (the main
   * connection down) changes nothing.
   */
  private async probeAnnouncements(): Promise<void> {
    if (this.probing) return
    this.probing = true
    let state: AnnouncementState | undefined
    try {
      state = this.strict && this.store.revocationBarrier === undefined ? { allowed: false, unannounced: 0 } : await this.store.announcements?.()
    } catch {
      state = undefined
    } finally {
      this.probing = false
    }
    if (state === undefined) return
    // The first count read has nothing to compare with: whatever was cached before it (the revocation cache fills
    // as soon as it is subscribed) is forgotten.
    const missed = this.unannouncedSeen === undefined ? this.knownSessions.size > 0 : state.unannounced !== this.unannouncedSeen
    this.unannouncedSeen = state.unannounced
    // What was learnt from memory is forgotten when a revocation nobody could announce may have come since, and when
    // the strict barrier switches (a check in flight when the right went away may have filled the cache after it).
    if (missed || (this.strict && state.allowed !== this.barrierUsable)) this.forget()
    if (this.strict) this.barrierUsable = state.allowed // the revocation cache has no barrier to switch
    if (state.allowed) this.refusalReported = false
    else this.reportRefusal()
  }

  /** Every session is asked of the store again; an answer fetched before is not cached after. Denials stay. */
  private forget(): void {
    this.epoch++
    this.coveredSince = Number.NEGATIVE_INFINITY
    this.knownSessions.clear()
  }

  /** Once per refusal (not again until announcements have worked in between). */
  private reportRefusal(): void {
    if (this.refusalReported) return
    this.refusalReported = true
    this.onAnnouncementsRefused?.()
  }

  /** Stops the periodic probe (the gateway is closing). */
  stop(): void {
    clearInterval(this.probeTimer)
    clearTimeout(this.keepCoverTimer)
    this.keepCoverTimer = undefined
    this.lastCoverUse = Number.NEGATIVE_INFINITY
  }

  get isSubscribed(): boolean {
    return this.subscribed
  }

  revokeSession(sid: string): void {
    this.knownSessions.set(sid, 'revoked')
  }

  denyJti(sid: string, jti: string, expiresAt: number): void {
    const ttl = expiresAt - Date.now()
    if (ttl > 0) this.deniedJtis.set(`${sid}:${jti}`, true, { ttl })
  }

  get usesBarrier(): boolean {
    return this.barrierUsable
  }

  /**
   * An answer that needs no wait: a denial or revocation known here (final whatever happens next), and in the
   * revocation-cache mode also a session known to be fine. Undefined: call check().
   */
  immediate(sid: string, jti: string): AccessState | undefined {
    const known = this.known(sid, jti)
    return this.strict && known === 'ok' && !this.covered() ? undefined : known
  }

  /**
   * The state of a verified token's session and jti. Strict mode: past a barrier, from memory or (a session seen
   * for the first time) the store; undefined when the barrier cannot be had (the caller checks the store itself).
   */
  check(sid: string, jti: string, expiresAt: number): Promise<AccessState | undefined> {
    if (!this.strict) return this.state(sid, jti, expiresAt)
    if (!this.barrierUsable || !this.subscribed) return NOT_KNOWN
    // Within a barrier's cover: from memory, or (first sight) the store, whose answer is read after the request came.
    if (this.covered()) return this.state(sid, jti, expiresAt)
    // One reaction per request on the shared barrier; a session known here needs no further await.
    return this.nextBarrier().then((passed) => (passed ? (this.known(sid, jti) ?? this.state(sid, jti, expiresAt)) : undefined))
  }

  /**
   * Whether a barrier sent at most REVOCATION_COVER_MS ago has passed (strict mode, barrier usable, subscribed, and
   * nothing forgotten since it was sent). Keeps the cover going while it is used: a new barrier every quarter span.
   */
  private covered(): boolean {
    if (!this.barrierUsable || !this.subscribed) return false
    const now = performance.now()
    this.lastCoverUse = now
    if (now - this.coveredSince > REVOCATION_COVER_MS) return false
    if (this.gathering === undefined && now - this.lastBarrierSentAt > REVOCATION_COVER_MS / 4) void this.nextBarrier()
    return true
  }

  /**
   * The barrier the requests of this event-loop turn share: sent once they have all arrived (setImmediate), so that
   * no request ever waits on a PING that Redis ran before the request arrived (a revocation made in between would
   * not be before it). Several may be in flight at once; they are pipelined on the connection.
   */
  private nextBarrier(): Promise<boolean> {
    if (this.gathering) return this.gathering
    const barrier = new Promise<boolean>((resolve) => {
      setImmediate(() => {
        this.gathering = undefined
        // Taken before the PING is written: the cover it gives is counted from no later than its sending.
        const sentAt = performance.now()
        const epoch = this.epoch
        this.lastBarrierSentAt = sentAt
        resolve((this.store.revocationBarrier as () => Promise<boolean>)().then(
          (passed) => {
            if (passed && epoch === this.epoch && this.subscribed) {
              this.coveredSince = Math.max(this.coveredSince, sentAt)
              this.keepCover()
            }
            return passed
          },
          () => false, // a store whose barrier fails rather than answering false: no cover, and no unhandled rejection
        ))
      })
    })
    this.gathering = barrier
    return barrier
  }

  /**
   * Arms the timer that keeps the cover up while requests have used it in the last keepCoverMs: a barrier 35 ms
   * after the latest one was sent, unless a request sent one meanwhile (under traffic the requests send them, and the
   * timer sends none). Re-armed by each barrier that passes; one that does not pass (Redis away, the subscription
   * down, an epoch ended by forget()) ends it, as does stop().
   */
  private keepCover(): void {
    if (this.keepCoverTimer !== undefined || performance.now() - this.lastCoverUse > this.keepCoverMs) return
    const due = Math.max(1, this.lastBarrierSentAt + KEEP_COVER_RENEW_MS - performance.now())
    this.keepCoverTimer = setTimeout(() => {
      this.keepCoverTimer = undefined
      if (!this.barrierUsable || !this.subscribed) return
      // A request sent one in the last quarter span (under traffic they do): none needed yet.
      if (this.gathering === undefined && performance.now() - this.lastBarrierSentAt > REVOCATION_COVER_MS / 4) void this.nextBarrier()
      else this.keepCover()
    }, due)
    this.keepCoverTimer.unref()
  }

  /** What is known without asking the store; undefined when the store must be asked (state()). */
  private known(sid: string, jti: string): AccessState | undefined {
    if (this.deniedJtis.size > 0 && this.deniedJtis.has(`${sid}:${jti}`)) return 'denied'
    return this.subscribed ? this.knownSessions.get(sid) : undefined
  }

  private async state(sid: string, jti: string, expiresAt: number): Promise<AccessState> {
    const known = this.known(sid, jti)
    if (known !== undefined) return known
    const epoch = this.epoch
    // Asked here, never shared with a check already in flight: that one may have been sent in an earlier epoch,
    // before a revocation this instance did not hear of.
    const fresh = await this.store.checkAccess(sid, jti)
    // Cache only what is still true: not across a change of the subscription, and never over a revocation that
    // arrived while the store was being asked.
    if (this.subscribed && epoch === this.epoch) {
      if (fresh === 'denied') this.denyJti(sid, jti, expiresAt)
      else if (!this.knownSessions.has(sid)) this.knownSessions.set(sid, fresh)
    }
    return fresh
  }
}
