import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** The Prometheus metrics of one gateway (its own registry, so several gateways can live in one process). */
export class Metrics {
  readonly registry = new Registry()
  readonly requests = new Counter({
    name: 'sessiongate_requests_total',
    help: 'Requests answered, by route (or gateway endpoint) and status code.',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  })
  readonly upstreamLatency = new Histogram({
    name: 'sessiongate_upstream_duration_seconds',
    help: 'Time from forwarding a request to the upstream answering its headers.',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  })
  readonly logins = new Counter({
    name: 'sessiongate_logins_total',
    help: 'Login attempts by result (success, invalid_credentials, rate_limited, invalid_request, error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly refreshes = new Counter({
    name: 'sessiongate_refreshes_total',
    help: 'Refresh-token presentations by outcome (rotated, grace, reused, expired, invalid).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly reuseDetections = new Counter({
    name: 'sessiongate_refresh_reuse_detections_total',
    help: 'Refresh tokens replayed after the grace window: each revoked a whole session.',
    registers: [this.registry],
  })
  readonly denials = new Counter({
    name: 'sessiongate_denials_total',
    help: 'Requests refused by auth, by reason (unauthenticated, forbidden, csrf, denied, revoked, missing).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly storeErrors = new Counter({
    name: 'sessiongate_store_errors_total',
    help: 'Requests that found the session store unreachable.',
    registers: [this.registry],
  })

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'sessiongate_' })
  }

  private readonly requestCounters = new Map<string, { inc(): void }>()
  private readonly latencyHistograms = new Map<string, { observe(value: number): void }>()

  /** Counts one answered request (labelled children are made once per route and status, then reused). */
  countRequest(route: string, status: number): void {
    const key = `${route} ${status}`
    let counter = this.requestCounters.get(key)
    if (!counter) this.requestCounters.set(key, (counter = this.requests.labels({ route, status: String(status) })))
    counter.inc()
  }

  observeUpstream(route: string, seconds: number): void {
    let histogram = this.latencyHistograms.get(route)
    if (!histogram) this.latencyHistograms.set(route, (histogram = this.upstreamLatency.labels({ route })))
    histogram.observe(seconds)
  }
}
