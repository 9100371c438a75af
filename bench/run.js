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
const benchStarted = performance.now()
// Many short slices, the systems alternating (the order reversed every other round), so that the drift of a shared
// VM hits every system alike; each ratio is taken within a round, between slices a few seconds apart.
const DURATION = Number(process.env.BENCH_SECONDS ?? 1)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6)
const GAP_MS = 1000 * Number(process.env.BENCH_GAP ?? 0)
const CONNECTIONS = 32
// The latency table: every system at the same fixed, moderate load (closed loop with a think time, far below any
// system's capacity), where latency is the cost of a request rather than queueing behind 31 others.
const PACED_CONNECTIONS = 16
const PACED_DELAY_MS = 5
const PACED_ROUNDS = Number(process.env.BENCH_PACED_ROUNDS ?? 5)

if (!existsSync(join(ROOT, 'dist/cli/main.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' })
const { hashPassword } = await import('../dist/auth/password.js')
const { generatePrivateJwk } = await import('../dist/tokens/keys.js')
const { loadConfig } = await import('../dist/config/load.js')
const { RedisSessionStore } = await import('../dist/session-store/redis-store.js')
const { AccessTokenIssuer } = await import('../dist/tokens/access-token.js')
const { newSessionId } = await import('../dist/tokens/refresh-token.js')
const { StoreKeys } = await import('../dist/session-store/keys.js')

const children = []
const profiled = []
/** Profiled gateways are stopped gracefully, so that they write their profile. */
async function stopProfiled() {
  await Promise.all(profiled.map(stopped))
}
/** Stops a child gracefully (a profiled gateway writes its profile) and waits for it to be gone. */
function stopped(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once('exit', resolve)
    child.kill('SIGTERM')
  })
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
// reuseGrace covers the gap between two slices of the same system: a slice that ends while a rotation's response is
// in flight leaves that session's older pair in the client's pool, presented again when its next slice starts. A
// browser never drops responses by the dozen like that; here it would be taken for replays and end those sessions.
const EXPIRING_TOKENS = { accessTtl: '2s', refreshAhead: '1s', reuseGrace: '2m' }
// Started side by side (a Node process takes a second or two to start on this VM).
const [strict, cached, expiring, expiringCached] = await Promise.all([
  startGateway('strict', {}),
  startGateway('cache', { redis: { revocationCache: true } }),
  startGateway('expiring', { tokens: EXPIRING_TOKENS }),
  startGateway('expiring-cache', { tokens: EXPIRING_TOKENS, redis: { revocationCache: true } }),
])

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
/**
 * wrk with a Lua script: fixed headers, or a list of Authorization values taken in turn, or (s3) a pool of cookie
 * sessions that keeps each session's rotated pair; `paced` adds a think time per connection. done() prints JSON.
 */
function runWrk({ url, headers = {}, bearers, sessions, bareControl, duration = DURATION, paced = false }) {
  const file = join(tmp, `wrk-${wrkScripts++}.lua`)
  writeFileSync(file, sessions ? cookieSessionsLua(sessions, bareControl) : `
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
${paced ? `function delay() return ${PACED_DELAY_MS} end` : ''}
${wrkDone()}
`)
  const connections = paced ? PACED_CONNECTIONS : CONNECTIONS
  return new Promise((resolve, reject) => {
    execFile(PIN ? 'taskset' : WRK, [...(PIN ? ['-c', '0', WRK] : []), '-t1', `-c${connections}`, `-d${duration}s`, '--timeout', '5s', '-s', file, url], { maxBuffer: 64 << 20 }, (err, out) => {
      if (err) return reject(err)
      if (!out.includes('@@')) return reject(new Error(`wrk printed no summary:\n${out}`))
      const r = JSON.parse(out.split('@@')[1])
      const pool = out.split('@@S\n')[1]
      resolve({
        sessions: pool?.trim().split('\n').map((line) => {
          const [access, refresh] = line.split(' ')
          return { access, refresh }
        }),
        requests: { average: r.total / r.seconds, total: r.total },
        latency: { p50: r.p50, p99: r.p99, tail: r.tail.map((us) => us / 1000) },
        non2xx: r.non2xx, errors: r.errors, timeouts: r.timeouts, refreshed: r.refreshed ?? 0,
      })
    })
  })
}
/** The tail wrk reports per slice: percentiles TAIL_FROM, TAIL_FROM + TAIL_STEP, ... up to (not including) 100, then the maximum. */
const TAIL_FROM = 75
const TAIL_STEP = 0.025
const TAIL_POINTS = Math.round((100 - TAIL_FROM) / TAIL_STEP)
const wrkDone = (more = '') => `
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(s, latency, requests)
  local e = s.errors
  local refreshed = 0
  for _, t in ipairs(threads) do refreshed = refreshed + (t:get("refreshed") or 0) end
  -- the upper quarter of the latency distribution (µs at every 0.025 percentile from p75 to the maximum), so that
  -- the rounds' slices can be pooled into the p99 of all their requests
  local tail = {}
  for k = 0, ${TAIL_POINTS - 1} do tail[#tail + 1] = latency:percentile(${TAIL_FROM} + k * ${TAIL_STEP}) end
  tail[#tail + 1] = latency.max
  io.write(string.format('\\n@@{"total":%d,"seconds":%f,"errors":%d,"non2xx":%d,"timeouts":%d,"p50":%f,"p99":%f,"refreshed":%d,"tail":[%s]}\\n',
    s.requests, s.duration / 1e6, e.connect + e.read + e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, refreshed, table.concat(tail, ",")))
  ${more}
end
`
/**
 * s3's client in wrk: each request takes the next session of the pool; a response that rotates the session carries
 * its new refresh cookie (the last Set-Cookie line, all that wrk keeps of repeated headers) and, echoed by the
 * bench upstream in `x-bench-authorization`, the new access token that was forwarded. The pair goes back into the
 * pool under the session's id (the refresh token starts with it), so later requests present the new cookies.
 * Against the bare proxy the same script runs with cookies that never rotate: the same client work per response.
 */
function cookieSessionsLua(sessions, bareControl) {
  // Two flat tables (wrk copies a thread's globals to done() one level deep only).
  return `
pa = { ${sessions.map((s) => luaString(s.access)).join(',\n')} }
pr = { ${sessions.map((s) => luaString(s.refresh)).join(',\n')} }
local slotOf = {}
for i, r in ipairs(pr) do slotOf[r:match("^([^.]+)%.") or i] = i end
local i = 0
refreshed = 0
function request()
  i = i % #pr + 1
  return wrk.format("GET", nil, { Cookie = "sg_access=" .. pa[i] .. "; sg_refresh=" .. pr[i], ["x-bench-echo"] = "1"${bareControl ? ', Authorization = "Bearer " .. pa[i]' : ''} })
end
function response(status, headers, body)
  local cookie = headers["set-cookie"] or headers["Set-Cookie"]
  if not cookie then return end
  local r = cookie:match("^sg_refresh=([^;]+)")
  local a = headers["x-bench-authorization"]
  if r and a then
    local slot = slotOf[r:match("^([^.]+)%.")]
    if slot then
      pa[slot] = a:match("^Bearer (.+)$")
      pr[slot] = r
      refreshed = refreshed + 1
    end
  end
end
${wrkDone(`
  -- the pool as the slice left it (one thread), one "access refresh" line per session, for the next slice
  io.write("@@S\\n")
  local a, r = threads[1]:get("pa"), threads[1]:get("pr")
  for k = 1, #r do io.write(a[k], " ", r[k], "\\n") end`)}
`
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
const median = (xs) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}
/**
 * The p99 of all the requests of the rounds taken together, as one run as long as all the slices would report it
 * (undefined without wrk's tails). Each slice's tail holds the latency at every TAIL_STEP percentile from TAIL_FROM:
 * the requests between two of those points (TAIL_STEP % of the slice's count) are counted at the upper one. The
 * median of the per-slice p99s, the other figure, is decided by the worst stall of the median slice.
 */
function pooledP99(results) {
  if (!results.every((r) => Array.isArray(r.latency.tail) && r.latency.tail.length === TAIL_POINTS + 1)) return undefined
  const total = results.reduce((n, r) => n + r.requests.total, 0)
  const points = results.flatMap((r) => r.latency.tail.slice(1).map((ms) => ({ ms, weight: (r.requests.total * TAIL_STEP) / 100 })))
  points.sort((a, b) => b.ms - a.ms)
  let above = 0
  for (const { ms, weight } of points) {
    above += weight
    if (above >= total / 100) return ms
  }
  return undefined
}
/** Redis calls per request by command, medians of the rounds. */
function medianCommands(results) {
  const names = new Set(results.flatMap((r) => Object.keys(r.redisCommands ?? {})))
  const perCommand = [...names].map((name) => [name, median(results.map((r) => r.redisCommands?.[name] ?? 0))])
  return Object.fromEntries(perCommand.filter(([name, n]) => n >= 0.001 && name !== 'info').sort((a, b) => b[1] - a[1]))
}
const commandsText = (commands) => Object.entries(commands ?? {}).map(([c, n]) => `${c} ${n.toFixed(3)}`).join(', ') || 'none'
/** Medians of the rounds (ratios are taken per round: `ratio` below). */
function summary(results) {
  return {
    rps: median(results.map((r) => r.requests.average)),
    p50: median(results.map((r) => r.latency.p50)),
    p99: median(results.map((r) => r.latency.p99)),
    p99All: pooledP99(results),
    non2xx: results.reduce((n, r) => n + r.non2xx + r.errors + r.timeouts, 0),
    total: results.reduce((n, r) => n + r.requests.total, 0),
    refreshed: results.reduce((n, r) => n + (r.refreshed ?? 0), 0),
    cpuUs: results[0]?.cpuUs === undefined ? undefined : median(results.map((r) => r.cpuUs)),
    redisCpuUs: results[0]?.redisCpuUs === undefined ? undefined : median(results.map((r) => r.redisCpuUs)),
    syscalls: results[0]?.syscalls === undefined ? undefined : median(results.map((r) => r.syscalls)),
    redisCommands: medianCommands(results),
  }
}

/** A session in cookie mode: its two cookie values. */
async function cookieSession(gateway) {
  const { cookies } = await login(gateway, 'cookie')
  const value = (name) => cookies.split('; ').find((c) => c.startsWith(`${name}=`)).slice(name.length + 1)
  return { access: value('sg_access'), refresh: value('sg_refresh') }
}
/** autocannon's s3 client (when wrk is not installed): each request takes the next session and keeps its new cookies. */
function cookieSessionRequests(pool, counter) {
  let next = 0
  return [{
    method: 'GET',
    path: '/api/items',
    setupRequest(req, context) {
      context.slot = next++ % pool.length
      const s = pool[context.slot]
      return { ...req, headers: { ...req.headers, cookie: `sg_access=${s.access}; sg_refresh=${s.refresh}` } }
    },
    onResponse(_status, _body, context, headers) {
      const set = headers['set-cookie']
      if (!set) return
      const pairs = Object.fromEntries((Array.isArray(set) ? set : [set]).map((c) => c.split(';')[0].split('=')))
      if (pairs.sg_access && pairs.sg_refresh) {
        pool[context.slot] = { access: pairs.sg_access, refresh: pairs.sg_refresh }
        counter.refreshed++
      }
    },
  }]
}

// 100 sessions' tokens, taken in turn: no two concurrent requests share a token, so no check is shared.
const manyBearers = []
for (let i = 0; i < 100; i++) manyBearers.push((await login(strict, 'token')).body.accessToken)

/**
 * One slice of load on one system: wrk when it is installed, autocannon otherwise. Also the CPU time its own
 * process (`pid`) and redis-server spent per request: unlike req/s on a shared 2-core machine, it does not depend
 * on what else the scheduler ran at the time.
 */
async function measure(system, duration = DURATION, paced = false) {
  // This process's garbage is collected before the slice, not during it, on the core the load generator uses
  // (`npm run bench` runs it with --expose-gc): once it held the s6 sessions, a collection in a slice took up to
  // ~180 ms of that core, a stall in the measured latency of whatever system was on.
  globalThis.gc?.()
  const commandsBefore = await redisCommands()
  const before = [cpuSeconds(system.pid), cpuSeconds(redisProc.pid), syscalls(system.pid)]
  const result = await generate(system, duration, paced)
  const after = [cpuSeconds(system.pid), cpuSeconds(redisProc.pid), syscalls(system.pid)]
  {
    const commandsAfter = await redisCommands()
    result.redisCommands = Object.fromEntries(
      Object.entries(commandsAfter).map(([name, calls]) => [name, (calls - (commandsBefore[name] ?? 0)) / result.requests.total]).filter(([, perRequest]) => perRequest > 0.001),
    )
  }
  if (before[0] !== null && after[0] !== null) {
    result.cpuUs = (1e6 * (after[0] - before[0])) / result.requests.total
    result.redisCpuUs = (1e6 * (after[1] - before[1])) / result.requests.total
  }
  if (before[2] !== null && after[2] !== null) result.syscalls = (after[2] - before[2]) / result.requests.total
  return result
}
/** Redis calls by command so far (INFO commandstats; the commands a script runs count too, under their own names). */
async function redisCommands() {
  const stats = await redis.info('commandstats')
  return Object.fromEntries([...stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1], Number(m[2])]))
}
/** Read and write system calls a process has made so far (/proc/<pid>/io: syscr + syscw); null elsewhere. */
function syscalls(pid) {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8')
    return Number(/syscr: (\d+)/.exec(io)[1]) + Number(/syscw: (\d+)/.exec(io)[1])
  } catch {
    return null
  }
}
async function generate(system, duration, paced) {
  const { url, headers, bearers, bareControl } = system
  // s3: the first `active` sessions of the system's reserve serve this slice (see S3_SHARE).
  const sessions = system.sessions?.slice(0, system.active ?? system.sessions.length)
  const result = await generateWith({ url, headers, bearers, sessions, bareControl }, duration, paced)
  if (sessions) {
    // The pool lives in wrk's Lua state: its rotated pairs come back from done() and serve the next slices.
    system.sessions.splice(0, sessions.length, ...(result.sessions ?? sessions))
    // Steered towards S3_SHARE by the share the slice actually had (the bare control has none: it keeps its size).
    if (system.active !== undefined && result.refreshed > 0) {
      const share = result.refreshed / result.requests.total
      system.active = Math.min(system.sessions.length, Math.max(20, Math.round((system.active * S3_SHARE) / share)))
    }
  }
  return result
}
async function generateWith({ url, headers, bearers, sessions, bareControl }, duration, paced) {
  if (WRK) return runWrk({ url, headers, bearers, sessions, bareControl, duration, paced })
  let requests
  // autocannon resets a request's context between requests and copies the request objects: the count lives here.
  const counter = { refreshed: 0 }
  if (sessions) requests = cookieSessionRequests(sessions, counter)
  else if (bearers) {
    let i = 0
    requests = [{ method: 'GET', path: new URL(url).pathname, setupRequest: (req) => ({ ...req, headers: { authorization: `Bearer ${bearers[i++ % bearers.length]}` } }) }]
  }
  const opts = { url, headers, requests, duration }
  if (paced) Object.assign(opts, { connections: PACED_CONNECTIONS, connectionRate: Math.round(1000 / PACED_DELAY_MS) })
  const result = await run(opts)
  result.refreshed = counter.refreshed
  return result
}

/** Runs every system for one slice per round, the order reversed every other round; returns the results by name. */
async function rounds(systems, count, { paced = false, onSlice = () => {} } = {}) {
  const names = Object.keys(systems)
  const results = Object.fromEntries(names.map((n) => [n, []]))
  for (let round = 0; round < count; round++) {
    for (const name of round % 2 === 0 ? names : [...names].reverse()) {
      results[name].push(await measure(systems[name], DURATION, paced))
      onSlice()
      // BENCH_GAP=<seconds>: an idle pause after every slice (to reproduce, with BENCH_ONLY, the idle time between
      // a system's slices in a full run).
      if (GAP_MS > 0) await new Promise((resolve) => setTimeout(resolve, GAP_MS))
    }
  }
  return results
}

// s3: about 5 % of requests should carry a refresh. Every session's access token (2 s) expires during the gap between
// two slices of its system, so each session in use refreshes at the start of a slice, and again once its new token is
// within refreshAhead. Each slice uses the first `active` sessions of a reserve, `active` steered after every slice by
// the share of refreshes that slice had (the request rate moves with the VM's phases).
const S3_SHARE = 0.05
const probe = await measure({ url: `${strict.url}/api/items`, headers: { cookie } }, 2)
const reserveSize = Math.max(100, Math.round(probe.requests.average * DURATION * S3_SHARE * 3))
const expiringPool = []
const expiringCachedPool = []
// Logins 8 at a time (the gateways are not pinned yet: both cores serve them).
for (let done = 0; done < reserveSize; done += 8) {
  const n = Math.min(8, reserveSize - done)
  expiringPool.push(...(await Promise.all(Array.from({ length: n }, () => cookieSession(expiring)))))
  expiringCachedPool.push(...(await Promise.all(Array.from({ length: n }, () => cookieSession(expiringCached)))))
}
const firstActive = Math.round(reserveSize / 4)
// The bare control of s3: the same client work, cookies shaped like the gateway's (they never rotate there).
const barePool = expiringPool.map((s) => ({ ...s }))

const S3 = 's3 cookie, ~5% refresh'
const S3C = 's3 cookie, ~5% refresh, revocation cache'
const S3BARE = 'bare, with the s3 client'
// Every system of the s1 comparison gets the same request: s1's `Authorization: Bearer`, which the others forward
// untouched (a public route keeps it too), so that the ratios measure the auth step and not the token's bytes, which
// a client sends whatever stands in front of the API (~4 µs of parsing and forwarding per request, measured in one
// process). s2 and s3 send their cookies instead.
const sameRequest = { authorization: `Bearer ${bearer}` }
const SYSTEMS = {
  direct: { url: `${upstream}/api/items`, pid: upstreamPid, headers: sameRequest },
  ...(nginx ? { 'nginx proxy_pass': { url: `${nginx.url}/api/items`, pid: nginx.pid, headers: sameRequest } } : {}),
  bare: { url: `http://127.0.0.1:${barePort}/api/items`, pid: barePid, headers: sameRequest },
  'sessiongate, public route': { url: `${strict.url}/open/items`, pid: strict.pid, headers: sameRequest },
  // The same route on the revocation-cache gateway: it also gives that process two slices per round, like the bare
  // proxy. Served in one slice per round in the full rotation, that process measured 65-84 % of the bare proxy with
  // more CPU per request than the strict gateway; see the README's performance section.
  'sessiongate, public route, revocation-cache gateway': { url: `${cached.url}/open/items`, pid: cached.pid, headers: sameRequest },
  's1 bearer, strict': { url: `${strict.url}/api/items`, pid: strict.pid, headers: sameRequest },
  's1 bearer, strict, 100 tokens in turn': { url: `${strict.url}/api/items`, pid: strict.pid, bearers: manyBearers },
  's1 bearer, revocation cache': { url: `${cached.url}/api/items`, pid: cached.pid, headers: sameRequest },
  's2 cookie': { url: `${strict.url}/api/items`, pid: strict.pid, headers: { cookie } },
  // bareControl: it also sends an Authorization as long as the gateway's, so that the upstream's echo weighs the same.
  [S3BARE]: { url: `http://127.0.0.1:${barePort}/api/items`, pid: barePid, sessions: barePool, bareControl: true, active: firstActive },
  [S3]: { url: `${expiring.url}/api/items`, pid: expiring.pid, sessions: expiringPool, active: firstActive },
  [S3C]: { url: `${expiringCached.url}/api/items`, pid: expiringCached.pid, sessions: expiringCachedPool, active: firstActive },
}
if (process.env.BENCH_ONLY) for (const k of Object.keys(SYSTEMS)) if (k !== 'bare' && !new RegExp(process.env.BENCH_ONLY).test(k)) delete SYSTEMS[k]

for (const pid of [process.pid, redisProc.pid, upstreamPid]) pin(pid, 0)
for (const pid of [barePid, strict.pid, cached.pid, expiring.pid, expiringCached.pid, ...(nginx ? [nginx.pid] : [])]) pin(pid, 1)
const phase = (name) => console.error(`bench: ${name} done at ${((performance.now() - benchStarted) / 1000).toFixed(0)} s`)
phase('set-up')
// The VM's stalls, with every process idle: a busy loop on each core at once (bench/vm-stalls.js). They are what
// decides the p99 of a 1-second slice at the fixed load (see the latency table).
const STALL_PROBE_MS = 3000
const vmStalls = await Promise.all([0, 1].map((core) => new Promise((resolve) => {
  const args = [process.execPath, join(ROOT, 'bench/vm-stalls.js'), String(STALL_PROBE_MS)]
  execFile(PIN ? 'taskset' : args[0], PIN ? ['-c', String(core), ...args] : args.slice(1), (err, out) => resolve(err ? null : { core, ...JSON.parse(out) }))
})))
const stallText = vmStalls.every(Boolean)
  ? vmStalls.map((v) => `core ${v.core} ${(v.stalls / v.seconds).toFixed(1)} stalls per second (${(v.stalledMs / v.seconds).toFixed(1)} ms per second lost, longest ${v.longestMs.toFixed(1)} ms)`).join('; ')
  : 'not measured (the probe failed)'
console.log(`bench: the VM's stalls, every process idle: ${stallText}`)
phase('VM stall probe')
console.log(`bench: ${os.cpus().length} cores, Node ${process.version}, Redis ${redisVersion}; ${ROUNDS} rounds x ${DURATION}s per system, ${CONNECTIONS} connections`)
// Warm-up, not counted: two passes over the systems. A Node process needs several seconds under load before its code
// is fully optimised (measured: the slices right after a 3-second warm-up still cost 10-60 % more CPU per request).
// (nginx needs no JIT.)
for (let pass = 0; pass < 2; pass++) {
  for (const [name, s] of Object.entries(SYSTEMS)) {
    if (pass === 1 && name === 'nginx proxy_pass') continue
    await measure(s, Number(process.env.BENCH_WARMUP ?? 1))
  }
}
phase('warm-up')
const raw = await rounds(SYSTEMS, ROUNDS, { onSlice: () => process.stdout.write('.') })
console.log()
phase('full-load rounds')
// The processes no later phase measures stop here (the s3 gateways, nginx): idle, their timers and collections still
// ran on the measured core, ~10 % of it together, and stalled requests of the fixed-load table.
const retired = new Set([expiring.pid, expiringCached.pid, nginx?.pid])
if (!process.env.BENCH_QUICK && !process.env.BENCH_ONLY) await Promise.all(children.filter((c) => retired.has(c.pid)).map(stopped))
const rows = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, summary(v)]))
/** The median of the per-round ratios of a row's req/s to another row's in the same round; undefined if either is absent. */
const ratio = (name, ref) =>
  raw[name] && raw[ref] ? median(raw[name].map((r, i) => r.requests.average / raw[ref][i].requests.average)) : undefined
const refOf = (name) => (name.startsWith('s3') ? S3BARE : 'bare')
const quickLine = (k, r, ref) => `${k.padEnd(42)} ${r.rps.toFixed(0).padStart(6)} p50 ${r.p50.toFixed(2)} p99 ${r.p99.toFixed(2)} ${ref === undefined ? '' : `${(100 * ref).toFixed(0)} %`} err ${r.non2xx} cpu µs/req ${r.cpuUs?.toFixed(1)} redis ${r.redisCpuUs?.toFixed(1)} syscalls/req ${r.syscalls?.toFixed(2)}${r.refreshed ? ` refreshed ${((100 * r.refreshed) / r.total).toFixed(1)} %` : ''}`
// BENCH_ONLY removes rows that the latency table and the targets need: it implies BENCH_QUICK.
if (process.env.BENCH_QUICK || process.env.BENCH_ONLY) {
  await stopProfiled()
  for (const [k, r] of Object.entries(rows)) {
    console.log(quickLine(k, r, ratio(k, refOf(k))))
    console.log(`${''.padEnd(42)} Redis calls per request: ${commandsText(r.redisCommands)}`)
  }
  // BENCH_PACED_ROUNDS given as well: the latency table's fixed load on the same systems, with as many rounds as asked
  // (the full run's 5 do not fit more in its 3 minutes; see the latency table's note on the VM's stalls).
  if (process.env.BENCH_PACED_ROUNDS) {
    const pacedOnly = await rounds(SYSTEMS, PACED_ROUNDS, { paced: true, onSlice: () => process.stdout.write(':') })
    console.log()
    const bareP99s = pacedOnly.bare.map((r) => r.latency.p99)
    for (const [k, results] of Object.entries(pacedOnly)) {
      const r = summary(results)
      const p99s = results.map((x) => x.latency.p99)
      console.log(`fixed load: ${k.padEnd(42)} p50 ${r.p50.toFixed(2)} p99 ${r.p99.toFixed(2)} (median of ${results.length} slices; pooled ${r.p99All?.toFixed(2)}) median of per-round p99 − bare p99 ${median(p99s.map((x, i) => x - bareP99s[i])).toFixed(2)} ms; slices ${p99s.map((x) => x.toFixed(1)).join(' ')}`)
    }
  }
  process.exit(0)
}

// S4: refresh throughput — chains of token-mode refreshes, each connection presenting its latest token. The refresh
// path has not run on this gateway before: an unmeasured pass first, as for every other row, of 4 s (measured apart,
// in successive 3-s windows of rotations a fresh gateway spent 375, 255, then 232-238 µs of CPU per rotation). A run ends
// with up to one request per connection in flight, whose rotated token never comes back, so each pass starts new chains.
// s4 and s5 run on a gateway of their own, with the strict gateway's configuration, started here and stopped after
// them: the strict gateway measured at the fixed load below then carries nothing of theirs (tens of thousands of
// rotations' tokens in its caches and heap, scrypt's threads and memory).
const rotator = await startGateway('rotations', {})
pin(rotator.pid, 1)
const chains = []
/** New chains: a login each (scrypt: done before the slice, and before its CPU is sampled). */
const newChains = async () => {
  chains.length = 0
  for (let i = 0; i < CONNECTIONS + 8; i++) chains.push((await login(rotator, 'token')).body.refreshToken)
}
const refreshChains = (duration) =>
  run({
    url: `${rotator.url}/auth/refresh`,
    duration,
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
await newChains()
await refreshChains(4)
await newChains()
const s4Cpu = [cpuSeconds(rotator.pid), cpuSeconds(redisProc.pid)]
const s4 = await refreshChains(3)
// CPU per rotation (gateway, Redis), sampled after the chains' logins.
s4.cpuUs = s4Cpu.map((before, i) => {
  const after = cpuSeconds(i === 0 ? rotator.pid : redisProc.pid)
  return before === null || after === null ? undefined : (1e6 * (after - before)) / s4.requests.total
})

phase('s4')
// S5: login throughput (bounded by scrypt, by design).
const s5 = await run({
  url: `${rotator.url}/auth/login`,
  method: 'POST',
  duration: 2,
  headers: { 'content-type': 'application/json', 'x-session-mode': 'token' },
  body: JSON.stringify({ username: 'bench', password: 'bench-pw' }),
  connections: 8,
})

await stopped(children.find((c) => c.pid === rotator.pid))
phase('s5')
// S6 and S7: sessions made directly in the store, tokens signed with the same keys.
const loaded = await loadConfig(strict.file, {})
const logSink = { warn() {}, error() {}, info() {}, debug() {}, child() { return this } }
const issuer = new AccessTokenIssuer(loaded.keys, loaded.config.tokens)
const dbUrl = (db) => redisUrl.replace(/\/0$/, `/${db}`)
const storeClients = []
/** A session store on database `db`, and its Redis client. */
function storeOn(db) {
  const client = new Redis(dbUrl(db), { enableAutoPipelining: true })
  storeClients.push(client)
  return { store: new RedisSessionStore(client, 'sg:', logSink), client }
}
async function createSessions(store, n) {
  const sids = []
  // Batches of 1,000: 10,000 promises at once took ~40 % longer here (the client's GC), and this is all client CPU.
  for (let done = 0; done < n; done += 1_000) {
    const batch = Array.from({ length: Math.min(1_000, n - done) }, () => newSessionId())
    await Promise.all(batch.map((sid) => store.createSession({
      sid, sub: `user-${sid.slice(0, 6)}`, claims: { roles: ['user'], email: 'someone@example.com' },
      refreshHash: 'x'.repeat(22), idleTtlMs: 3_600_000, absoluteTtlMs: 7_200_000,
    })))
    sids.push(...batch)
  }
  return sids
}
/**
 * `n` more sessions in `client`'s database, copies of the session `sid` of subject `sub` made by the store (its hash
 * and its subject index, DUMP and RESTORE in a script, in Redis) under new ids, their key names from StoreKeys as
 * the store's: the keys, sizes and expiries of real sessions in a second or so, where the store's own calls took
 * ~15 s of the bench's 3 minutes on this VM. Only the 100 real sessions are ever requested; the copies make the
 * keyspace the gateway's lookups run in.
 */
async function copySessions(client, sid, sub, n) {
  const keys = new StoreKeys('sg:')
  const script = `
local session = redis.call('DUMP', ARGV[1])
local subject = redis.call('DUMP', ARGV[2])
local sessionTtl = math.max(redis.call('PTTL', ARGV[1]), 0)
local subjectTtl = math.max(redis.call('PTTL', ARGV[2]), 0)
for i = 3, #ARGV, 2 do
  redis.call('RESTORE', ARGV[i], sessionTtl, session)
  redis.call('RESTORE', ARGV[i + 1], subjectTtl, subject)
end`
  for (let done = 0; done < n; done += 10_000) {
    const copies = Array.from({ length: Math.min(10_000, n - done) }, () => newSessionId())
    const names = copies.flatMap((copy) => [keys.session(copy), keys.subjectSessions(`user-${copy}`)])
    await client.eval(script, 0, keys.session(sid), keys.subjectSessions(sub), ...names)
  }
}
// S6: one redis-server, two databases (100 sessions in one, 100,000 in the other: 100 made by the store and 99,900
// copies of them), a gateway on each, driven with the 100 real sessions' tokens in turn.
// Nothing is measured while they are made: this process moves to core 1, idle meanwhile, so that its client work and
// Redis's run side by side, and the two gateways start at the same time.
const S6 = {}
pin(process.pid, 1)
const made = await Promise.all([[1, 100], [2, 100_000]].map(async ([db, n]) => {
  const { store, client } = storeOn(db)
  const [sids, gw] = await Promise.all([createSessions(store, 100), startGateway(`s6-${n}`, { redis: { url: dbUrl(db) } })])
  if (n > 100) await copySessions(client, sids[0], `user-${sids[0].slice(0, 6)}`, n - 100)
  return { n, sids, gw, keys: await client.dbsize() }
}))
pin(process.pid, 0)
const s6Keys = {}
for (const { n, sids, gw, keys } of made) {
  pin(gw.pid, 1)
  const bearers = await Promise.all(sids.slice(-100).map(async (sid) => (await issuer.issue({ sub: 'u', sid, claims: {} })).token))
  S6[`s6 ${n.toLocaleString('en')} sessions in Redis`] = { url: `${gw.url}/api/items`, pid: gw.pid, bearers }
  s6Keys[n] = keys
}
phase('100,000 sessions made')
// The latency table: the same moderate load on every system (PACED_CONNECTIONS connections, each waiting
// PACED_DELAY_MS between a response and its next request), alternated over the rounds like the main table.
const PACED = {
  bare: SYSTEMS.bare,
  's1 bearer, strict': SYSTEMS['s1 bearer, strict'],
  's1 bearer, revocation cache': SYSTEMS['s1 bearer, revocation cache'],
  ...S6,
}
// The s6 gateways are new processes: warmed like every other system (two passes at full load), then at the fixed load.
// With a 1-second warm-up at the fixed load alone their code was not yet optimised nor their heaps grown (V8's
// young generation starts small: more, shorter collections), one more thing that moved their p99s apart.
for (let pass = 0; pass < 2; pass++) for (const s of Object.values(S6)) await measure(s, 1)
for (const s of Object.values(S6)) await measure(s, 1, true)
phase('fixed-load warm-up')
const pacedRaw = await rounds(PACED, PACED_ROUNDS, { paced: true, onSlice: () => process.stdout.write(':') })
console.log()
phase('fixed-load rounds')
const paced = Object.fromEntries(Object.entries(pacedRaw).map(([k, v]) => [k, summary(v)]))
const [s6small, s6large] = Object.keys(S6).map((k) => paced[k])

// S7: Redis memory per session.
const { store } = storeOn(0)
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
const ngxName = 'nginx proxy_pass'
const pct = (x) => (x === undefined ? '' : `${(100 * x).toFixed(0)} %`)
const us = (x) => (Number.isFinite(x) ? `${x.toFixed(1)} µs` : 'n/a')
const ms = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(2))
const lines = []
lines.push(`| system | req/s | p50 ms | p99 ms | vs bare proxy | vs direct |${rows[ngxName] ? ' vs nginx |' : ''} CPU µs/req (its process) | Redis CPU µs/req | errors / non-2xx |`)
lines.push(`| --- | ---: | ---: | ---: | ---: | ---: |${rows[ngxName] ? ' ---: |' : ''} ---: | ---: | ---: |`)
for (const [name, r] of Object.entries(rows)) {
  const cpu = r.cpuUs === undefined ? '' : r.cpuUs.toFixed(1)
  const redisCpu = r.redisCpuUs === undefined ? '' : r.redisCpuUs.toFixed(1)
  lines.push(`| ${name} | ${r.rps.toFixed(0)} | ${ms(r.p50)} | ${ms(r.p99)} | ${pct(ratio(name, 'bare'))} | ${pct(ratio(name, 'direct'))} |${rows[ngxName] ? ` ${pct(ratio(name, ngxName))} |` : ''} ${cpu} | ${redisCpu} | ${r.non2xx} of ${r.total} |`)
}
/** The latency table's p99, which the targets read: the median of the rounds' p99s, like every figure of the tables. */
const p99Of = (r) => r.p99
const pacedLines = [
  `| system | req/s | p50 ms | p99 ms | p99 − bare p99 |${WRK ? ' p99 ms, all requests |' : ''} errors / non-2xx |`,
  `| --- | ---: | ---: | ---: | ---: |${WRK ? ' ---: |' : ''} ---: |`,
  ...Object.entries(paced).map(([name, r]) => `| ${name} | ${r.rps.toFixed(0)} | ${ms(r.p50)} | ${ms(p99Of(r))} | ${name === 'bare' ? '' : `${(p99Of(r) - p99Of(paced.bare)).toFixed(2)} ms`} |${WRK ? ` ${r.p99All === undefined ? '' : ms(r.p99All)} |` : ''} ${r.non2xx} of ${r.total} |`),
]
const S1 = 's1 bearer, strict'
const S1C = 's1 bearer, revocation cache'
const s6diff = Math.abs(p99Of(s6large) - p99Of(s6small)) / p99Of(s6small)
/** The issue's targets, by name: the table's rows and the missed-target notes use the same labels. */
const TARGET = {
  s1strict: `s1 strict ≥ 80 % of the bare proxy's req/s`,
  s1cache: `s1 revocation cache ≥ 95 %`,
  s1p99: `s1 p99 ≤ bare p99 + 1 ms (fixed load)`,
  s2: `s2 cookie ≥ 75 %`,
  s3: `s3 ≥ 65 % (strict, against the bare proxy driven by the same client)`,
  s4: `s4 ≥ 3,000 rotations/s`,
  s6: `s6 p99 differs < 10 % (fixed load)`,
  s7: `s7 ≤ 1 KB per session`,
}
const targets = [
  [TARGET.s1strict, ratio(S1, 'bare') >= 0.8, pct(ratio(S1, 'bare'))],
  [TARGET.s1cache, ratio(S1C, 'bare') >= 0.95, pct(ratio(S1C, 'bare'))],
  [TARGET.s1p99, Math.max(p99Of(paced[S1]), p99Of(paced[S1C])) <= p99Of(paced.bare) + 1,
    `strict ${ms(p99Of(paced[S1]))} ms, cache ${ms(p99Of(paced[S1C]))} ms, bare ${ms(p99Of(paced.bare))} ms`],
  [TARGET.s2, ratio('s2 cookie', 'bare') >= 0.75, pct(ratio('s2 cookie', 'bare'))],
  // Read against the bare proxy driven by the same client (the same requests: cookies, and the wrk script's work per
  // request on the load generator's core), as s1's ratios are read with the same request on both sides.
  [TARGET.s3, ratio(S3, S3BARE) >= 0.65, `${pct(ratio(S3, S3BARE))} of the bare proxy driven by the same client (${pct(ratio(S3, 'bare'))} of the bare row); revocation cache ${pct(ratio(S3C, S3BARE))} (${pct(ratio(S3C, 'bare'))})`],
  [TARGET.s4, s4.requests.average >= 3000, `${s4.requests.average.toFixed(0)} rotations/s`],
  [TARGET.s6, s6diff < 0.1, `${ms(p99Of(s6small))} vs ${ms(p99Of(s6large))} ms (${(100 * s6diff).toFixed(0)} %)`],
  [TARGET.s7, perSession + perIndex <= 1024, `${(perSession + perIndex).toFixed(0)} B`],
]
const extra = [
  `- s1 p99 at full load (the main table): strict ${ms(rows[S1].p99)} ms, revocation cache ${ms(rows[S1C].p99)} ms, bare ${ms(bare.p99)} ms.`,
  `- s3: ${((100 * rows[S3].refreshed) / rows[S3].total).toFixed(1)} % of requests carried a transparent refresh in strict mode, ${((100 * rows[S3C].refreshed) / rows[S3C].total).toFixed(1)} % with the revocation cache (sessions in use steered towards 5 % refreshes slice by slice, from reserves of ${reserveSize}; accessTtl 2s, refreshAhead 1s, reuseGrace 2m); against the bare proxy driven by the same client script: ${pct(ratio(S3, S3BARE))}, with the revocation cache ${pct(ratio(S3C, S3BARE))}.`,
  `- s4 refresh throughput: ${s4.requests.average.toFixed(0)} rotations/s (POST /auth/refresh in token mode, on a gateway of their own with the strict configuration, as s5, ${CONNECTIONS} connections, 3 s; p50 ${s4.latency.p50} ms, p99 ${s4.latency.p99} ms; ${s4.non2xx + s4.errors} failed of ${s4.requests.total}; CPU per rotation: gateway ${us(s4.cpuUs?.[0])}, Redis ${us(s4.cpuUs?.[1])}).`,
  `- s5 login throughput: ${s5.requests.average.toFixed(1)} logins/s with 8 connections (p50 ${s5.latency.p50} ms) — bounded by scrypt (N=2^15, r=8, p=1: ~160 ms of CPU per hash here) ${PIN ? `on the one core the gateway is pinned to (libuv's 4 threads share it)` : `on libuv's 4 threads`}, by design.`,
  `- s6 per-request latency at the fixed load of the latency table, strict mode, 100 tokens in turn (from memory within the barrier cover once seen; a script each the first time): with 100 sessions in Redis p50 ${ms(s6small.p50)} ms, p99 ${ms(p99Of(s6small))} ms; with 100,000 p50 ${ms(s6large.p50)} ms, p99 ${ms(p99Of(s6large))} ms (p99 difference ${(100 * s6diff).toFixed(0)} %). Keys in the two databases: ${s6Keys[100]?.toLocaleString('en')} and ${s6Keys[100_000]?.toLocaleString('en')} (a session hash and a subject index each; of the 100,000, 99,900 are copies of one real session made in Redis).`,
  `- s7 Redis memory per session: ${perSession.toFixed(0)} bytes for the session hash (MEMORY USAGE summed over 10,000 sessions) + ${perIndex.toFixed(0)} bytes for a one-session subject index = ${(perSession + perIndex).toFixed(0)} bytes.`,
]
// Missed targets: what this run's own figures say about why (CPU per request, the spread between rounds). The
// profiles behind them, and what was already cut, are in the README's performance section.
const spread = (xs) => `${ms(Math.min(...xs))}–${ms(Math.max(...xs))}`
const perRound = (table, name, pick) => (table[name] ?? []).map(pick)
const cpuOf = (name) => rows[name]?.cpuUs ?? NaN
const roundRatios = (name, ref) => (raw[name] && raw[ref] ? raw[name].map((r, i) => r.requests.average / raw[ref][i].requests.average) : [])
const pctSpread = (xs) => (xs.length ? `${(100 * Math.min(...xs)).toFixed(0)}–${(100 * Math.max(...xs)).toFixed(0)} %` : 'n/a')
const PUB = 'sessiongate, public route'
const PUBC = 'sessiongate, public route, revocation-cache gateway'
const S1MANY = 's1 bearer, strict, 100 tokens in turn'
const why = {
  [TARGET.s1strict]: `CPU per request: s1 strict ${us(cpuOf(S1))}, the same gateway's public route ${us(cpuOf(PUB))} (the auth step: ${us(cpuOf(S1) - cpuOf(PUB))}), bare ${us(cpuOf('bare'))}; per-round ratios ${pctSpread(roundRatios(S1, 'bare'))}.`,
  [TARGET.s1cache]: `The revocation-cache gateway's public route, which has no auth step at all, measured ${pct(ratio(PUBC, 'bare'))} of the bare proxy in this run (per round ${pctSpread(roundRatios(PUBC, 'bare'))}), and s1 with the cache ${pctSpread(roundRatios(S1C, 'bare'))} per round. CPU per request: s1 with the cache ${us(cpuOf(S1C))}, the same gateway's public route ${us(cpuOf(PUBC))} (the auth step: ${us(cpuOf(S1C) - cpuOf(PUBC))} in this run; 4.5 µs measured in one process, README), bare ${us(cpuOf('bare'))}. Where the same gateway's public route, with no auth step, also falls short of 95 %, the gap is the spread between two processes doing the same proxy work on this VM. Needed: a quieter machine, or slices long enough to average the VM's phases out (not within the 3-minute bound).`,
  [TARGET.s1p99]: `Per-round p99 at the fixed load: bare ${spread(perRound(pacedRaw, 'bare', (r) => r.latency.p99))} ms, strict ${spread(perRound(pacedRaw, S1, (r) => r.latency.p99))} ms, revocation cache ${spread(perRound(pacedRaw, S1C, (r) => r.latency.p99))} ms; p50 bare ${ms(paced.bare.p50)}, strict ${ms(paced[S1].p50)}, cache ${ms(paced[S1C].p50)} ms. A 1-second slice at this rate has ~25 requests above its p99, so the VM's stalls decide it. With every process idle (measured at set-up, see the latency table), the VM took each core away from a busy loop: ${stallText}; each stall holds every request in flight on that core. strict waits for a Redis round trip (the revocation barrier's PING, two more hops between the cores, each a chance to meet a stall) only when no barrier has passed in the last 50 ms (the barrier cover: PINGs per request at full load ${commandsText({ ping: rows[S1]?.redisCommands?.ping ?? 0 })}); the revocation cache, with none at all, moves with the stalls as much. Needed: a machine without such stalls (dedicated cores), or many more slices than the 3-minute bound leaves (\`BENCH_ONLY='^s1 bearer, (strict|revocation cache)$' BENCH_PACED_ROUNDS=24 npm run bench\` runs the fixed load alone with 24 rounds; the README has its figures); the p50 difference is what the auth step costs in latency.`,
  [TARGET.s2]: `CPU per request: s2 ${us(cpuOf('s2 cookie'))}, s1 strict ${us(cpuOf(S1))} (the same gateway; cookie mode parses the Cookie header and strips the gateway's cookies before forwarding), bare ${us(cpuOf('bare'))}; per-round ratios ${pctSpread(roundRatios('s2 cookie', 'bare'))}.`,
  [TARGET.s3]: `CPU per request: s3 strict ${us(cpuOf(S3))}, s3 with the revocation cache ${us(cpuOf(S3C))}, the bare proxy driven by the same client ${us(cpuOf(S3BARE))}. In strict mode a session the gateway has seen is answered from memory past the shared revocation barrier, as in "${S1MANY}" (${us(cpuOf(S1MANY) - cpuOf(S1))} more per request than one token in this run); Redis calls per request: ${commandsText(rows[S3].redisCommands)} (the PINGs are the barriers, shared by the requests of an event-loop turn; the script calls are the rotations). What separates s3 from its bare control is the refreshes (${((100 * rows[S3].refreshed) / rows[S3].total).toFixed(1)} % of requests, ~0.5–0.7 ms of gateway CPU each: the rotation script, an EdDSA signature (jose over WebCrypto: a thread-pool hop on the same core), sealing the successor, the new cookies) and the grace answers to requests that carried the old cookies while a rotation's answer was on its way; that cost per request is higher in the full runs than in runs of the s3 rows alone (BENCH_ONLY=s3: 65–77 % against the same client), where s3's gateways serve one slice in four instead of one in twelve, each slice starting with the refreshes of every session whose token expired in between. Redis CPU per request: strict ${us(rows[S3].redisCpuUs)}, cache ${us(rows[S3C].redisCpuUs)}. A cookie-mode refresh costs ~370–420 µs of gateway CPU once its code is warm, but 900–1,000 µs in the first seconds of a process's refreshes (measured apart, chains of refreshes back to back: it takes ~20 s of them to settle), and s3's gateways refresh only in bursts of a few hundred at the start of their slices; an unmeasured pass of refresh chains before the rounds (tried in this session's runs: 6-10 s, ~3,000-5,000 refreshes per gateway at ~1,000 µs each, still the cold phase) made no difference visible through the VM's noise, and 20 s per gateway does not fit the 3-minute bound. Needed: a cheaper refresh (signature and seal are most of its own CPU) and, to settle the full-run gap, a profile per slice.`,
  [TARGET.s4]: `CPU per rotation: gateway ${us(s4.cpuUs?.[0])}, Redis ${us(s4.cpuUs?.[1])}; p50 ${s4.latency.p50} ms. A rotation is a Lua script, an EdDSA signature and sealing the successor; the throughput moves with the VM's speed (scrypt logins in this run: ${s5.requests.average.toFixed(1)}/s).`,
  [TARGET.s6]: `Per-round p99: 100 sessions ${spread(perRound(pacedRaw, Object.keys(S6)[0], (r) => r.latency.p99))} ms, 100,000 sessions ${spread(perRound(pacedRaw, Object.keys(S6)[1], (r) => r.latency.p99))} ms; p50 ${ms(s6small.p50)} vs ${ms(s6large.p50)} ms; Redis CPU per request ${us(s6small.redisCpuUs)} vs ${us(s6large.redisCpuUs)}. The store's size does not change the work per request (in strict mode a session seen before is answered from memory within a barrier's 50 ms cover, and asked of the store, two hash lookups, the first time); the p99s of 1-second slices are decided by the VM's stalls (${stallText}, with every process idle). Needed: a machine without them.`,
  [TARGET.s7]: `Session hash ${perSession.toFixed(0)} B, subject index ${perIndex.toFixed(0)} B.`,
}
const missed = targets.filter(([, ok]) => !ok).map(([what]) => `- **${what}**: ${why[what]}`)
const generator = WRK ? `wrk (1 thread; ${CONNECTIONS} connections at full load)` : `autocannon (${CONNECTIONS} connections at full load, pipelining 1)`
const report = `# Benchmark results

Machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown'}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, Redis ${redisVersion}${rows[ngxName] ? ', nginx' : ''}, ${new Date().toISOString()}.

Command: \`npm run bench\` (BENCH_SECONDS=${DURATION}, BENCH_ROUNDS=${ROUNDS}, BENCH_PACED_ROUNDS=${PACED_ROUNDS}). Load: ${generator}; s4 and s5 with autocannon.
${PIN ? 'Pinned with taskset: each measured proxy alone on core 1; the load generator, the upstream and Redis on core 0.' : 'Not pinned.'}
Every system runs in its own process on 127.0.0.1. The systems take turns in slices of ${DURATION} s, the order reversed every
other round; figures are medians of the rounds, and every ratio is the median of the ratios taken within a round
(slices seconds apart), so that the drift of a shared VM hits both sides of a ratio alike. The bench's own process
collects its garbage before each slice, not during one, and the processes no later phase measures (the s3 gateways,
nginx) are stopped after the full-load rounds.
"CPU µs/req" is the user + system time the measured process (and redis-server) spent per answered request, read from /proc.
Upstream: node:http answering ~100 bytes of JSON. Bare proxy: Fastify + @fastify/http-proxy, logger off. sessiongate forwards
with undici's dispatcher, writing the upstream's response straight onto the client's (src/proxy/upstream-exchange.ts). Every row but s2, s3 and
"100 tokens in turn" sends s1's request (\`Authorization: Bearer\` with a ~250-byte token, forwarded untouched by the bare proxy, nginx and
the public routes), so that the ratios measure the auth step, not the token's bytes. sessiongate: LOG_LEVEL=warn,
Redis store, EdDSA tokens; "strict" (the default) answers a session the instance has seen from memory past a revocation barrier
(one PING on the pub/sub connection, shared by the requests of an event-loop turn, and covering the next 50 ms of requests once it has passed) and asks Redis (one script, auto-pipelined)
for a session it sees for the first time; "revocation cache" is \`redis.revocationCache: true\`;
the public route is the same gateway without the auth step. s3's client is a wrk script that keeps every session's rotated
cookies; its bare control runs the same script.

## Targets (issue 7)

| target | met | measured |
| --- | :---: | --- |
${targets.map(([what, ok, how]) => `| ${what} | ${ok ? 'yes' : '**no**'} | ${how} |`).join('\n')}

## Throughput at full load (${CONNECTIONS} connections)

${lines.join('\n')}

Redis calls per request (INFO commandstats, medians of the rounds; \`evalsha\` is a script call, one round trip, and the
commands it runs are counted under their own names as well; the rest are plain commands, a round trip each unless
auto-pipelined together):

${Object.entries(rows).filter(([, r]) => Object.keys(r.redisCommands ?? {}).length > 0).map(([name, r]) => `- ${name}: ${commandsText(r.redisCommands)}`).join('\n')}

## Latency at a fixed moderate load

${PACED_CONNECTIONS} connections, each waiting ${PACED_DELAY_MS} ms between a response and its next request: every system serves the same rate,
far below its capacity, so latency is what a request costs rather than time queued behind 31 others (at full load
p99 is decided by queueing and by scheduler stalls of the VM, as the first table shows). ${PACED_ROUNDS} rounds of ${DURATION} s.${WRK ? `
"p99" is the median of the slices' own p99s, as everywhere, and is what the targets read; "p99, all requests" is the
p99 of every request of the ${PACED_ROUNDS} slices taken together (what one run of ${PACED_ROUNDS * DURATION} s would report; pooled from the upper
quarter of each slice's latency distribution, which wrk prints). Where the second is far above the first, the VM's
stalls hit most slices, not one.` : ''}
The VM's own stalls, measured at set-up with every process idle (a busy loop pinned to each core for ${STALL_PROBE_MS / 1000} s, counting
every gap over 0.5 ms between two of its clock readings): ${stallText}. Requests in flight during a stall wait it out,
whatever the system, and at this rate a slice's p99 lies among them.${WRK ? '' : `
Without wrk this table uses autocannon's per-connection rate, which sends each second's allowance in a burst: it is not a
fixed load, and its p99 says little. Install wrk for this table.`}

${pacedLines.join('\n')}

${extra.join('\n')}
${missed.length ? `
## Missed targets: why, and what would be needed

From this run's own figures; the CPU profiles behind them, and what was already cut, are in the README's
performance section (\`BENCH_PROF=<gateway name>\` writes a profile of one gateway into bench/profiles/).

${missed.join('\n')}
` : ''}`
writeFileSync(join(ROOT, 'bench/results.md'), report)
console.log(report)
await redis.quit()
await stopProfiled()
process.exit(0)
