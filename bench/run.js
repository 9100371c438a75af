#!/usr/bin/env node
// `npm run bench`: sessiongate against a bare @fastify/http-proxy and the direct upstream, in one run, on 127.0.0.1.
// Bounded in time (about 2-3 minutes). Writes bench/results.md. Everything it starts, it stops.
import { execFile, execFileSync, fork, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import os from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { Redis } from 'ioredis'
import { stringify } from 'yaml'

const ROOT = new URL('..', import.meta.url).pathname
const DURATION = Number(process.env.BENCH_SECONDS ?? 3)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const CONNECTIONS = 32

if (!existsSync(join(ROOT, 'dist/cli/main.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' })
const { hashPassword } = await import('../dist/auth/password.js')
const { generatePrivateJwk } = await import('../dist/tokens/keys.js')
const { loadConfig } = await import('../dist/config/load.js')
const { RedisSessionStore } = await import('../dist/session-store/redis-store.js')
const { AccessTokenIssuer } = await import('../dist/tokens/access-token.js')
const { newSessionId } = await import('../dist/tokens/refresh-token.js')

const children = []
const profiled = []
/** Profiled gateways are stopped gracefully, so that they write their profile. */
async function stopProfiled() {
  await Promise.all(profiled.map((child) => new Promise((resolve) => {
    child.once('exit', resolve)
    child.kill('SIGTERM')
  })))
}
const tmp = mkdtempSync(join(os.tmpdir(), 'sg-bench-'))
const cleanup = () => {
  for (const c of children) c.kill('SIGKILL')
  if (!process.env.BENCH_KEEP) rmSync(tmp, { recursive: true, force: true })
}
process.on('exit', cleanup)
process.on('SIGINT', () => process.exit(130))
setTimeout(() => {
  console.error('bench: over its time bound (6 min); stopping')
  process.exit(1)
}, 6 * 60_000).unref()

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

async function waitHttp(url) {
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(url)
      return
    } catch {
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  throw new Error(`${url} did not start`)
}

function forkReady(script, args, env = {}) {
  const child = fork(join(ROOT, script), args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env: { ...process.env, ...env } })
  children.push(child)
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child))
    child.once('exit', (code) => reject(new Error(`${script} exited ${code}`)))
  })
}

// --- Redis -------------------------------------------------------------------------------------------------
const redisPort = await freePort()
const redisProc = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
children.push(redisProc)
const redisUrl = `redis://127.0.0.1:${redisPort}/0`
for (let i = 0; ; i++) {
  const probe = new Redis(redisUrl, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
  probe.on('error', () => {})
  try {
    await probe.connect()
    probe.disconnect()
    break
  } catch {
    probe.disconnect()
    if (i > 200) throw new Error('redis-server did not start')
    await new Promise((r) => setTimeout(r, 50))
  }
}
const redis = new Redis(redisUrl)
const redisVersion = (await redis.info('server')).match(/redis_version:(\S+)/)?.[1]

// --- upstream, bare proxy, gateways --------------------------------------------------------------------------
const upstreamPort = await freePort()
const upstreamPid = (await forkReady('bench/upstream.js', [String(upstreamPort)])).pid
const upstream = `http://127.0.0.1:${upstreamPort}`
const barePort = await freePort()
const barePid = (await forkReady('bench/bare-proxy.js', [String(barePort), upstream])).pid

// nginx proxy_pass, one worker process, keep-alive to the upstream: when nginx is installed.
const NGINX = whichSync('nginx') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : null)
let nginx
if (NGINX && !process.env.BENCH_NO_NGINX) {
  const port = await freePort()
  const dir = join(tmp, 'nginx')
  mkdirSync(dir)
  writeFileSync(join(dir, 'nginx.conf'), `
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream backend { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`)
  const child = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'inherit'] })
  children.push(child)
  await waitHttp(`http://127.0.0.1:${port}/api/items`)
  nginx = { url: `http://127.0.0.1:${port}`, pid: child.pid }
}

const keysFile = join(tmp, 'keys.json')
writeFileSync(keysFile, JSON.stringify({ keys: [await generatePrivateJwk('EdDSA')] }))
const usersFile = join(tmp, 'users.yaml')
// `bench` has the default scrypt cost (scenario 5 measures it); `pool` a cheap one, to build session pools quickly.
writeFileSync(usersFile, stringify({ users: [
  { username: 'bench', password: await hashPassword('bench-pw'), claims: { roles: ['user'] } },
  { username: 'pool', password: await hashPassword('pool-pw', 10), claims: { roles: ['user'] } },
] }))

async function startGateway(name, overrides) {
  const port = await freePort()
  const config = {
    server: { host: '127.0.0.1', port },
    redis: { url: redisUrl, ...(overrides.redis ?? {}) },
    tokens: { issuer: 'https://bench', audience: 'bench', keys: keysFile, ...(overrides.tokens ?? {}) },
    cookies: { secure: false },
    login: { users: usersFile, rateLimit: { max: 1_000_000, window: '1m' } },
    routes: [
      { name: 'api', prefix: '/api', upstream, headers: { 'X-User-Id': '{sub}' } },
      // A public route: what the proxy path costs without the auth step.
      { name: 'open', prefix: '/open', upstream, auth: 'public' },
    ],
  }
  const file = join(tmp, `${name}.yaml`)
  writeFileSync(file, stringify(config))
  // BENCH_PROF=<gateway name>: that gateway runs with --cpu-prof; the profile is written when the bench ends.
  const prof = process.env.BENCH_PROF === name ? ['--cpu-prof', `--cpu-prof-dir=${join(ROOT, 'bench/profiles')}`] : []
  const child = spawn(process.execPath, [...prof, join(ROOT, 'bin/sessiongate.js'), '--config', file], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, LOG_LEVEL: 'warn' },
  })
  children.push(child)
  await waitHttp(`http://127.0.0.1:${port}/healthz`)
  if (prof.length > 0) profiled.push(child)
  return { name, url: `http://127.0.0.1:${port}`, file, pid: child.pid }
}
const strict = await startGateway('strict', {})
const cached = await startGateway('cache', { redis: { revocationCache: true } })
const expiring = await startGateway('expiring', { tokens: { accessTtl: '2s', refreshAhead: '1s', reuseGrace: '10s' } })
const expiringCached = await startGateway('expiring-cache', { tokens: { accessTtl: '2s', refreshAhead: '1s', reuseGrace: '10s' }, redis: { revocationCache: true } })

async function login(gateway, mode) {
  const res = await fetch(`${gateway.url}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(mode === 'token' ? { 'x-session-mode': 'token' } : {}) },
    body: JSON.stringify({ username: 'pool', password: 'pool-pw' }),
  })
  if (res.status !== 200) throw new Error(`login ${res.status}`)
  const cookies = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ')
  return { body: await res.json(), cookies }
}
const bearer = (await login(strict, 'token')).body.accessToken
const cookie = (await login(strict, 'cookie')).cookies

// --- measuring ---------------------------------------------------------------------------------------------------
// wrk (C, epoll) when installed: it costs the shared 2 cores far less than autocannon, so more of the machine goes to
// the systems measured. autocannon for the scenarios whose client must read each response (s3 cookies, s4, s5).
const WRK = process.env.BENCH_NO_WRK ? null : whichSync('wrk')
function whichSync(cmd) {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || null
  } catch {
    return null
  }
}
let wrkScripts = 0
/** wrk with a Lua script: fixed headers, or a list of Authorization values taken in turn; its done() prints JSON. */
function runWrk({ url, headers = {}, bearers, duration = DURATION }) {
  const lua = `
local headers = ${luaTable(headers)}
local bearers = ${bearers ? luaList(bearers) : 'nil'}
local i = 0
function request()
  if bearers then
    i = i + 1
    headers["Authorization"] = "Bearer " .. bearers[(i % #bearers) + 1]
  end
  return wrk.format("GET", nil, headers)
end
function done(s, latency, requests)
  local e = s.errors
  io.write(string.format('\\n@@{"total":%d,"seconds":%f,"errors":%d,"non2xx":%d,"timeouts":%d,"p50":%f,"p99":%f}\\n',
    s.requests, s.duration / 1e6, e.connect + e.read + e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
`
  const file = join(tmp, `wrk-${wrkScripts++}.lua`)
  writeFileSync(file, lua)
  return new Promise((resolve, reject) => {
    execFile(PIN ? 'taskset' : WRK, [...(PIN ? ['-c', '0', WRK] : []), '-t1', `-c${CONNECTIONS}`, `-d${duration}s`, '--timeout', '5s', '-s', file, url], { maxBuffer: 1 << 20 }, (err, out) => {
      if (err) return reject(err)
      if (!out.includes('@@')) return reject(new Error(`wrk printed no summary:\n${out}`))
      const r = JSON.parse(out.split('@@')[1])
      resolve({
        requests: { average: r.total / r.seconds, total: r.total },
        latency: { p50: r.p50, p99: r.p99 },
        non2xx: r.non2xx, errors: r.errors, timeouts: r.timeouts,
      })
    })
  })
}
// Pinning (on when taskset is installed and there are 2+ cores; BENCH_PIN=0 turns it off): each measured proxy alone on core 1; the load generator, the
// upstream and Redis on core 0. The systems then no longer compete with their own load for a core.
const PIN = process.env.BENCH_PIN !== '0' && os.cpus().length >= 2 && whichSync('taskset') !== null
function pin(pid, core) {
  if (PIN) execFileSync('taskset', ['-a', '-pc', String(core), String(pid)], { stdio: 'ignore' })
}
const luaString = (s) => JSON.stringify(String(s))
const luaTable = (o) => `{${Object.entries(o).map(([k, v]) => `[${luaString(k)}] = ${luaString(v)}`).join(', ')}}`
const luaList = (xs) => `{${xs.map(luaString).join(', ')}}`

function run(opts) {
  return new Promise((resolve, reject) => {
    autocannon({ connections: CONNECTIONS, pipelining: 1, duration: DURATION, ...opts }, (err, result) => (err ? reject(err) : resolve(result)))
  })
}
/** CPU seconds (user + system) a process has used so far, from /proc (Linux); null elsewhere. */
const TICK = 100
function cpuSeconds(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) / TICK
  } catch {
    return null
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
function summary(results) {
  return {
    rps: median(results.map((r) => r.requests.average)),
    p50: median(results.map((r) => r.latency.p50)),
    p99: median(results.map((r) => r.latency.p99)),
    non2xx: results.reduce((n, r) => n + r.non2xx + r.errors + r.timeouts, 0),
    total: results.reduce((n, r) => n + r.requests.total, 0),
    cpuUs: results[0]?.cpuUs === undefined ? undefined : median(results.map((r) => r.cpuUs)),
    redisCpuUs: results[0]?.redisCpuUs === undefined ? undefined : median(results.map((r) => r.redisCpuUs)),
  }
}

/** A pool of cookie sessions on an expiring gateway: each request takes the next one, and keeps its new cookies. */
async function cookiePool(size, gateway) {
  const pool = []
  for (let i = 0; i < size; i++) pool.push((await login(gateway, 'cookie')).cookies)
  return pool
}
const refreshes = { count: 0 }
function expiringRequests(pool) {
  let next = 0
  return [{
    method: 'GET',
    path: '/api/items',
    setupRequest(req, context) {
      context.slot = next++ % pool.length
      return { ...req, headers: { ...req.headers, cookie: pool[context.slot] } }
    },
    onResponse(_status, _body, context, headers) {
      const set = headers['set-cookie']
      if (!set) return
      refreshes.count++
      pool[context.slot] = (Array.isArray(set) ? set : [set]).map((c) => c.split(';')[0]).join('; ')
    },
  }]
}

// 100 sessions' tokens, taken in turn: no two concurrent requests share a token, so no check is shared.
const manyBearers = []
for (let i = 0; i < 100; i++) manyBearers.push((await login(strict, 'token')).body.accessToken)

/**
 * Every main-table system: wrk when it is installed and the client need not read responses, autocannon otherwise.
 * Also the CPU time its own process (`pid`) and redis-server spent per request: unlike req/s on a shared 2-core
 * machine, it does not depend on what else the scheduler ran at the time.
 */
async function measure(system, duration = DURATION) {
  const before = [cpuSeconds(system.pid), cpuSeconds(redisProc.pid)]
  const result = await generate(system, duration)
  const after = [cpuSeconds(system.pid), cpuSeconds(redisProc.pid)]
  if (before[0] !== null && after[0] !== null) {
    result.cpuUs = (1e6 * (after[0] - before[0])) / result.requests.total
    result.redisCpuUs = (1e6 * (after[1] - before[1])) / result.requests.total
  }
  return result
}
function generate({ url, headers, bearers, requests }, duration) {
  if (WRK && !requests) return runWrk({ url, headers, bearers, duration })
  if (bearers) {
    let i = 0
    requests = [{ method: 'GET', path: new URL(url).pathname, setupRequest: (req) => ({ ...req, headers: { authorization: `Bearer ${bearers[i++ % bearers.length]}` } }) }]
  }
  return run({ url, headers, requests, duration })
}

const SYSTEMS = {
  direct: { url: `${upstream}/api/items`, pid: upstreamPid },
  ...(nginx ? { 'nginx proxy_pass': { url: `${nginx.url}/api/items`, pid: nginx.pid } } : {}),
  bare: { url: `http://127.0.0.1:${barePort}/api/items`, pid: barePid },
  'sessiongate, public route': { url: `${strict.url}/open/items`, pid: strict.pid },
  's1 bearer, strict': { url: `${strict.url}/api/items`, pid: strict.pid, headers: { authorization: `Bearer ${bearer}` } },
  's1 bearer, strict, 100 tokens in turn': { url: `${strict.url}/api/items`, pid: strict.pid, bearers: manyBearers },
  's1 bearer, revocation cache': { url: `${cached.url}/api/items`, pid: cached.pid, headers: { authorization: `Bearer ${bearer}` } },
  's2 cookie': { url: `${strict.url}/api/items`, pid: strict.pid, headers: { cookie } },
  // The same per-request client work as s3 (a cookie chosen per request, Set-Cookie read back), against the bare proxy.
  'bare, with the s3 client hooks': { url: `http://127.0.0.1:${barePort}/api/items`, pid: barePid, requests: expiringRequests(Array.from({ length: 200 }, (_, i) => `c=${i}`)) },
}
if (process.env.BENCH_ONLY) for (const k of Object.keys(SYSTEMS)) if (!new RegExp(process.env.BENCH_ONLY).test(k)) delete SYSTEMS[k]

for (const pid of [process.pid, redisProc.pid, upstreamPid]) pin(pid, 0)
for (const pid of [barePid, strict.pid, cached.pid, expiring.pid, expiringCached.pid, ...(nginx ? [nginx.pid] : [])]) pin(pid, 1)
console.log(`bench: ${os.cpus().length} cores, Node ${process.version}, Redis ${redisVersion}; ${ROUNDS} rounds x ${DURATION}s per system, ${CONNECTIONS} connections`)
// ~5 % of requests should carry a refresh: each session refreshes about once per second (accessTtl 2s,
// refreshAhead 1s), so the pool is sized at 5 % of the cookie-mode request rate, measured first.
const probe = await run({ url: `${strict.url}/api/items`, headers: { cookie }, duration: 2 })
const poolSize = Math.max(50, Math.round(probe.requests.average * 0.08))
const expiringPool = await cookiePool(poolSize, expiring)
const expiringCachedPool = await cookiePool(poolSize, expiringCached)
const S3 = 's3 cookie, ~5% refresh'
const S3C = 's3 cookie, ~5% refresh, revocation cache'
const raw = Object.fromEntries([...Object.keys(SYSTEMS), S3, S3C].map((k) => [k, []]))
// warm-up
for (const s of Object.values(SYSTEMS)) await measure(s, Number(process.env.BENCH_WARMUP ?? 1))
const refreshCounts = []
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, s] of Object.entries(SYSTEMS)) {
    raw[name].push(await measure(s))
    process.stdout.write('.')
  }
  if (process.env.BENCH_QUICK && !process.env.BENCH_S3) continue
  refreshes.count = 0
  const r = await measure({ url: `${expiring.url}/api/items`, requests: expiringRequests(expiringPool), pid: expiring.pid })
  refreshCounts.push(refreshes.count / Math.max(1, r.requests.total))
  raw[S3].push(r)
  raw[S3C].push(await measure({ url: `${expiringCached.url}/api/items`, requests: expiringRequests(expiringCachedPool), pid: expiringCached.pid }))
  process.stdout.write('..')
}
console.log()
const rows = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, summary(v)]))
if (process.env.BENCH_QUICK) {
  await stopProfiled()
  for (const [k, r] of Object.entries(rows)) if (r.rps) console.log(k.padEnd(40), r.rps.toFixed(0).padStart(6), 'p50', r.p50.toFixed(2), 'p99', r.p99.toFixed(2), rows.bare ? `${((100 * r.rps) / rows.bare.rps).toFixed(0)} %` : '', r.non2xx, 'cpu µs/req', r.cpuUs?.toFixed(1), 'redis', r.redisCpuUs?.toFixed(1))
  process.exit(0)
}

// S4: refresh throughput — chains of token-mode refreshes, each connection presenting its latest token.
const chains = []
for (let i = 0; i < CONNECTIONS + 8; i++) chains.push((await login(strict, 'token')).body.refreshToken)
const s4 = await run({
  url: `${strict.url}/auth/refresh`,
  requests: [{
    method: 'POST',
    path: '/auth/refresh',
    setupRequest(req) {
      const token = chains.shift()
      return { ...req, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refreshToken: token }) }
    },
    onResponse(status, body) {
      if (status === 200) chains.push(JSON.parse(body).refreshToken)
    },
  }],
})

// S5: login throughput (bounded by scrypt, by design).
const s5 = await run({
  url: `${strict.url}/auth/login`,
  method: 'POST',
  headers: { 'content-type': 'application/json', 'x-session-mode': 'token' },
  body: JSON.stringify({ username: 'bench', password: 'bench-pw' }),
  connections: 8,
})

// S6 and S7: sessions made directly in the store, tokens signed with the same keys.
const loaded = await loadConfig(strict.file, {})
const logSink = { warn() {}, error() {}, info() {}, debug() {}, child() { return this } }
const issuer = new AccessTokenIssuer(loaded.keys, loaded.config.tokens)
const dbUrl = (db) => redisUrl.replace(/\/0$/, `/${db}`)
const storeClients = []
function storeOn(db) {
  const client = new Redis(dbUrl(db), { enableAutoPipelining: true })
  storeClients.push(client)
  return new RedisSessionStore(client, 'sg:', logSink)
}
async function createSessions(store, n) {
  const sids = []
  for (let done = 0; done < n; done += 2000) {
    const batch = Array.from({ length: Math.min(2000, n - done) }, () => newSessionId())
    await Promise.all(batch.map((sid) => store.createSession({
      sid, sub: `user-${sid.slice(0, 6)}`, claims: { roles: ['user'], email: 'someone@example.com' },
      refreshHash: 'x'.repeat(22), idleTtlMs: 3_600_000, absoluteTtlMs: 7_200_000,
    })))
    sids.push(...batch)
  }
  return sids
}
// S6: one redis-server, two databases (100 sessions in one, 100,000 in the other), a gateway on each; the two
// alternate over the rounds like the main table, each driven with 100 of its sessions' tokens in turn.
const s6 = []
for (const [db, n] of [[1, 100], [2, 100_000]]) {
  const sids = await createSessions(storeOn(db), n)
  const gw = await startGateway(`s6-${n}`, { redis: { url: dbUrl(db) } })
  pin(gw.pid, 1)
  const bearers = await Promise.all(sids.slice(-100).map(async (sid) => (await issuer.issue({ sub: 'u', sid, claims: {} })).token))
  s6.push({ url: `${gw.url}/api/items`, pid: gw.pid, bearers, results: [] })
}
for (const s of s6) await measure(s, 1)
for (let round = 0; round < ROUNDS; round++) for (const s of s6) s.results.push(await measure(s))
const [s6small, s6large] = s6.map((s) => summary(s.results))
const store = storeOn(0)
await redis.flushdb()
const sample = await createSessions(store, 10_000)
let bytes = 0
for (let i = 0; i < sample.length; i += 500) {
  const chunk = sample.slice(i, i + 500)
  const pipeline = redis.pipeline()
  for (const sid of chunk) pipeline.memory('USAGE', `sg:{${sid}}:s`)
  for (const [, n] of await pipeline.exec()) bytes += Number(n)
}
const subjectIndexBytes = []
for (const key of (await redis.keys('sg:{u:*')).slice(0, 200)) subjectIndexBytes.push(Number(await redis.memory('USAGE', key)))
const perSession = bytes / sample.length
const perIndex = subjectIndexBytes.reduce((a, b) => a + b, 0) / Math.max(1, subjectIndexBytes.length)
for (const client of storeClients) await client.quit()

// --- report -----------------------------------------------------------------------------------------------------
const bare = rows.bare
const direct = rows.direct
const ngx = rows['nginx proxy_pass']
const pct = (x, y) => `${((100 * x) / y).toFixed(0)} %`
const ms = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(2))
const lines = []
lines.push(`| system | req/s | p50 ms | p99 ms | vs bare proxy | vs direct |${ngx ? ' vs nginx |' : ''} CPU µs/req (its process) | Redis CPU µs/req | errors / non-2xx |`)
lines.push(`| --- | ---: | ---: | ---: | ---: | ---: |${ngx ? ' ---: |' : ''} ---: | ---: | ---: |`)
for (const [name, r] of Object.entries(rows)) {
  const cpu = r.cpuUs === undefined ? '' : r.cpuUs.toFixed(1)
  const redisCpu = r.redisCpuUs === undefined ? '' : r.redisCpuUs.toFixed(1)
  lines.push(`| ${name} | ${r.rps.toFixed(0)} | ${ms(r.p50)} | ${ms(r.p99)} | ${pct(r.rps, bare.rps)} | ${pct(r.rps, direct.rps)} |${ngx ? ` ${pct(r.rps, ngx.rps)} |` : ''} ${cpu} | ${redisCpu} | ${r.non2xx} of ${r.total} |`)
}
const refreshShare = median(refreshCounts)
const hooked = rows['bare, with the s3 client hooks']
const s1 = rows['s1 bearer, strict']
const s1c = rows['s1 bearer, revocation cache']
const extra = [
  `- s1 p99 against the bare proxy's: strict ${ms(s1.p99)} ms, revocation cache ${ms(s1c.p99)} ms, bare ${ms(bare.p99)} ms (${(s1.p99 - bare.p99).toFixed(2)} / ${(s1c.p99 - bare.p99).toFixed(2)} ms above).`,
  `- s3 against the bare proxy driven by the same client hooks (autocannon, since the client must keep each session's new cookies): ${pct(rows[S3].rps, hooked.rps)}, with the revocation cache ${pct(rows[S3C].rps, hooked.rps)}.`,
  `- s3: ${(100 * refreshShare).toFixed(1)} % of requests carried a transparent refresh (${poolSize} sessions, accessTtl 2s, refreshAhead 1s).`,
  `- s4 refresh throughput: ${s4.requests.average.toFixed(0)} rotations/s (p50 ${s4.latency.p50} ms, p99 ${s4.latency.p99} ms; ${s4.non2xx + s4.errors} failed of ${s4.requests.total}).`,
  `- s5 login throughput: ${s5.requests.average.toFixed(1)} logins/s with 8 connections (p50 ${s5.latency.p50} ms) — bounded by scrypt (N=2^15, r=8, p=1) on libuv's 4 threads, by design.`,
  `- s6 bearer latency, 100 tokens in turn, two gateways alternated over the rounds, one on a Redis database with 100 sessions: p50 ${ms(s6small.p50)} ms, p99 ${ms(s6small.p99)} ms, ${s6small.rps.toFixed(0)} req/s; with 100,000: p50 ${ms(s6large.p50)} ms, p99 ${ms(s6large.p99)} ms, ${s6large.rps.toFixed(0)} req/s (p99 difference ${(100 * Math.abs(s6large.p99 - s6small.p99) / s6small.p99).toFixed(0)} %).`,
  `- s7 Redis memory per session: ${perSession.toFixed(0)} bytes for the session hash (MEMORY USAGE summed over 10,000 sessions) + ${perIndex.toFixed(0)} bytes for a one-session subject index = ${(perSession + perIndex).toFixed(0)} bytes.`,
]
const generator = WRK ? `wrk (${CONNECTIONS} connections, 1 thread) for every row that needs no per-response work, autocannon for the rows with client hooks (s3, its bare control, s4, s5)` : `autocannon, ${CONNECTIONS} connections, pipelining 1`
const report = `# Benchmark results

Machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown'}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, Redis ${redisVersion}${ngx ? ', nginx' : ''}, ${new Date().toISOString()}.

Command: \`npm run bench\` (BENCH_SECONDS=${DURATION}, BENCH_ROUNDS=${ROUNDS}). Load: ${generator}.
${PIN ? 'Pinned with taskset: each measured proxy alone on core 1; the load generator, the upstream and Redis on core 0.' : 'Not pinned.'}
Every system runs in its own process on 127.0.0.1 and the systems alternate round by round; the figures are medians of the rounds.
"CPU µs/req" is the user + system time the measured process (and redis-server) spent per answered request, read from /proc:
it does not depend on what else the scheduler ran at the time, so it is the steadier figure on a shared machine.
Upstream: node:http answering ~100 bytes of JSON. Bare proxy: Fastify + @fastify/http-proxy, logger off. sessiongate: LOG_LEVEL=warn,
Redis store, EdDSA tokens; "strict" checks the jti denylist and the session in Redis on every request (one round trip, auto-pipelined,
shared by concurrent requests with the same token); "revocation cache" is \`redis.revocationCache: true\`; the public route is
the same gateway without the auth step.

${lines.join('\n')}

${extra.join('\n')}
`
writeFileSync(join(ROOT, 'bench/results.md'), report)
console.log(report)
await redis.quit()
await stopProfiled()
process.exit(0)
