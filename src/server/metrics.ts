import { Counter, Registry, collectDefaultMetrics, type Metric, type MetricValueWithName } from 'prom-client'

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * The upstream latency histogram, by route. prom-client's Histogram costs over a microsecond per observation
 * (label hashing, float-keyed buckets), on every proxied request; here an observation is a few array
 * increments, and prom-client still formats the exposition: this object is registered as a metric whose
 * `get()` returns the histogram's values at scrape time.
 */
class LatencyByRoute {
  readonly name = 'sessiongate_upstream_duration_seconds'
  readonly help = 'Time from forwarding a request to the upstream answering its headers.'
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly routes = new Map<string, { buckets: Float64Array; sum: number; count: number }>()

  observe(route: string, seconds: number): void {
    let r = this.routes.get(route)
    if (!r) this.routes.set(route, (r = { buckets: new Float64Array(LATENCY_BUCKETS.length), sum: 0, count: 0 }))
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      if (seconds <= (LATENCY_BUCKETS[i] as number)) {
        ;(r.buckets[i] as number)++
        break
      }
    }
    r.sum += seconds
    r.count++
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValueWithName<string>[] }> {
    const values: MetricValueWithName<string>[] = []
    for (const [route, r] of this.routes) {
      let cumulative = 0
      LATENCY_BUCKETS.forEach((le, i) => {
        cumulative += r.buckets[i] as number
        values.push({ metricName: `${this.name}_bucket`, labels: { le, route }, value: cumulative })
      })
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', route }, value: r.count })
      values.push({ metricName: `${this.name}_sum`, labels: { route }, value: r.sum })
      values.push({ metricName: `${this.name}_count`, labels: { route }, value: r.count })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }
}

/** The Prometheus metrics of one gateway (its own registry, so several gateways can live in one process). */
export class Metrics {
  readonly registry = new Registry()
  /** Answered requests by route and status, counted in a plain map on the request path and read at scrape time. */
  private readonly requestCounts = new Map<string, { route: string; status: string; count: number }>()
  readonly requests = new Counter({
    name: 'sessiongate_requests_total',
    help: 'Requests answered, by route (or gateway endpoint) and status code.',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
    collect: () => {
      this.requests.reset()
      for (const { route, status, count } of this.requestCounts.values()) this.requests.inc({ route, status }, count)
    },
  })
  readonly upstreamLatency = new LatencyByRoute()
  readonly logins = new Counter({
    name: 'sessiongate_logins_total',
    help: 'Login attempts by result (success, invalid_credentials, rate_limited, invalid_request, error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly refreshes = new Counter({
    name: 'sessiongate_refreshes_total',
    help: 'Refresh-token presentations by outcome (rotated, grace, reused, revoked: of a family already revoked, expired, invalid).',
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
    this.registry.registerMetric(this.upstreamLatency as unknown as Metric)
  }

  /** Counts one answered request. */
  countRequest(route: string, status: number): void {
    const key = `${route} ${status}`
    const entry = this.requestCounts.get(key)
    if (entry) entry.count++
    else this.requestCounts.set(key, { route, status: String(status), count: 1 })
  }

  observeUpstream(route: string, seconds: number): void {
    this.upstreamLatency.observe(route, seconds)
  }
}
