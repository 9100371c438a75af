import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'

/** A throwaway redis-server on a free port of 127.0.0.1; nothing saved unless `appendonly` is asked for. */
export interface TestRedis {
  port: number
  url: string
  /** A plain client for assertions (MEMORY USAGE, KEYS ...). */
  client: Redis
  stop(): Promise<void>
  /** Stops the server (SIGKILL-free: SHUTDOWN NOSAVE, or with appendonly the AOF is kept) and keeps the port. */
  pause(): Promise<void>
  resume(): Promise<void>
  /** SIGSTOP: connections stay open and nothing answers (a frozen or partitioned server); thaw() is SIGCONT. */
  freeze(): void
  thaw(): void
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

async function waitForRedis(port: number): Promise<void> {
  await untilRedis(port, async (client) => (await client.ping()) === 'PONG')
}

/** Polls the redis-server on `port` with a fresh plain client until `ready` holds (10 s at most). */
export async function untilRedis(port: number, ready: (client: Redis) => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    probe.on('error', () => {})
    try {
      await probe.connect()
      if (await ready(probe)) return
    } catch {
      // not up yet
    } finally {
      probe.disconnect()
    }
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} is not ready`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

export async function startRedis(options: { appendonly?: boolean } = {}): Promise<TestRedis> {
  // appendonly: sessions survive pause()/resume(); a SIGTERM shutdown writes the file out, so no fsync per command
  // (which could stall every command past the gateway's 1 s commandTimeout on a slow disk).
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'sg-redis-'))
  let child: ChildProcess | undefined
  const launch = async () => {
    child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir,
        '--appendonly', options.appendonly ? 'yes' : 'no', '--appendfsync', 'everysec', '--protected-mode', 'yes'],
      { stdio: 'ignore' },
    )
    await waitForRedis(port)
  }
  await launch()
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: false })
  client.on('error', () => {})
  const halt = async () => {
    const proc = child
    if (!proc || proc.exitCode !== null) return
    const exited = new Promise((r) => proc.once('exit', r))
    proc.kill('SIGTERM')
    await exited
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    client,
    async stop() {
      client.disconnect()
      await halt()
      rmSync(dir, { recursive: true, force: true })
    },
    pause: halt,
    async resume() {
      await launch()
    },
    freeze: () => void child?.kill('SIGSTOP'),
    thaw: () => void child?.kill('SIGCONT'),
  }
}

/** Creates (or resets) the ACL user `name` with password `pw` and the given rules; returns a URL that logs in as it. */
export async function aclUserUrl(redis: TestRedis, name: string, ...rules: string[]): Promise<string> {
  await redis.client.call('ACL', 'SETUSER', name, 'reset', 'on', '>pw', ...rules)
  const url = new URL(redis.url)
  url.username = name
  url.password = 'pw'
  return url.toString()
}
