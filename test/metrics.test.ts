/**
 * GET /metrics (CONTRACT §3): requests by route and status, and the upstream latency histogram, which are
 * counted in plain numbers on the request path and handed to prom-client at scrape time.
 */
import t from 'tap'
import { send } from './helpers/client.js'
import { startGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis-server.js'
import { startUpstream } from './helpers/upstream.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

/** Metric lines as name{labels} -> value. */
async function scrape(url: string): Promise<Map<string, number>> {
  const res = await send(`${url}/metrics`)
  t.equal(res.status, 200)
  const lines = new Map<string, number>()
  for (const line of res.text.split('\n')) {
    if (line.startsWith('#') || line === '') continue
    const at = line.lastIndexOf(' ')
    lines.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return lines
}

t.test('requests by route and status, and upstream latency by route, as Prometheus text', async (t) => {
  const slow = await startUpstream((_req, res) => setTimeout(() => res.end('{}'), 30))
  const fast = await startUpstream()
  t.teardown(() => Promise.all([slow.close(), fast.close()]).then(() => undefined))
  const gw = await startGateway({
    redisUrl: redis.url,
    config: { routes: [
      { name: 'slow', prefix: '/slow', upstream: slow.url, auth: 'public' },
      { name: 'fast', prefix: '/fast', upstream: fast.url, auth: 'public' },
      { name: 'closed', prefix: '/closed', upstream: fast.url },
    ] },
  })
  t.teardown(() => gw.close())

  for (let i = 0; i < 3; i++) t.equal((await send(`${gw.url}/slow/x`)).status, 200)
  for (let i = 0; i < 5; i++) t.equal((await send(`${gw.url}/fast/x`)).status, 200)
  t.equal((await send(`${gw.url}/closed/x`)).status, 401)
  t.equal((await send(`${gw.url}/nowhere`)).status, 404)

  const m = await scrape(gw.url)
  t.equal(m.get('sessiongate_requests_total{route="slow",status="200"}'), 3)
  t.equal(m.get('sessiongate_requests_total{route="fast",status="200"}'), 5)
  t.equal(m.get('sessiongate_requests_total{route="closed",status="401"}'), 1)
  t.equal(m.get('sessiongate_requests_total{route="gateway",status="404"}'), 1)

  t.equal(m.get('sessiongate_upstream_duration_seconds_count{route="slow"}'), 3)
  t.equal(m.get('sessiongate_upstream_duration_seconds_count{route="fast"}'), 5)
  t.notOk(m.has('sessiongate_upstream_duration_seconds_count{route="closed"}'), 'a refused request never reached an upstream')
  t.ok((m.get('sessiongate_upstream_duration_seconds_sum{route="slow"}') ?? 0) >= 0.09, 'three 30 ms answers: at least 90 ms in all')
  // Buckets are cumulative, never decrease, and end at the count; the slow answers are not under 25 ms (a lower
  // bound only: how far above 30 ms they land depends on the machine's load).
  t.equal(m.get('sessiongate_upstream_duration_seconds_bucket{le="0.025",route="slow"}'), 0)
  for (const route of ['slow', 'fast']) {
    const buckets = [...m].filter(([k]) => k.startsWith('sessiongate_upstream_duration_seconds_bucket') && k.includes(`route="${route}"`))
    t.equal(buckets.length, 14, `${route}: 13 bounds and +Inf`)
    t.same(buckets.map(([, v]) => v), [...buckets.map(([, v]) => v)].sort((a, b) => a - b), `${route}: cumulative`)
    t.equal(buckets.at(-1)?.[0], `sessiongate_upstream_duration_seconds_bucket{le="+Inf",route="${route}"}`)
    t.equal(buckets.at(-1)?.[1], m.get(`sessiongate_upstream_duration_seconds_count{route="${route}"}`))
  }

  // A second scrape reports the same totals (reading does not reset or double them).
  t.equal((await scrape(gw.url)).get('sessiongate_requests_total{route="fast",status="200"}'), 5)
})
