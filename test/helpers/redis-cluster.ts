import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { freePort } from './redis-server.js'

/** A throwaway Redis Cluster of three masters on 127.0.0.1 (no replicas, nothing saved). */
export interface TestRedisCluster {
  /** `redis://127.0.0.1:<port>` of every node, as `redis.cluster` lists them. */
  urls: string[]
  stop(): Promise<void>
}

const run = promisify(execFile)

/**
 * Starts three cluster-enabled redis-servers (each with its bus port chosen free too: port + 10000, the default,
 * may be taken or past 65535) and joins them with `redis-cli --cluster create`; resolves once every node says
 * `cluster_state:ok`, i.e. every slot is served.
 */
export async function startRedisCluster(): Promise<TestRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'sg-cluster-'))
  const nodes: { port: number; child: ChildProcess }[] = []
  const stop = async () => {
    await Promise.all(
      nodes.map(({ child }) => {
        if (child.exitCode !== null) return undefined
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        return exited
      }),
    )
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      const busPort = await freePort()
      const child = spawn(
        'redis-server',
        ['--port', String(port), '--cluster-port', String(busPort), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
          '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--dir', dir, '--save', '', '--appendonly', 'no'],
        { stdio: 'ignore' },
      )
      nodes.push({ port, child })
    }
    for (const { port } of nodes) await until(port, async (client) => (await client.ping()) === 'PONG')
    const addresses = nodes.map(({ port }) => `127.0.0.1:${port}`)
    await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'])
    for (const { port } of nodes) await until(port, async (client) => /cluster_state:ok/.test(String(await client.call('CLUSTER', 'INFO'))))
  } catch (err) {
    await stop()
    throw err
  }
  return { urls: nodes.map(({ port }) => `redis://127.0.0.1:${port}`), stop }
}

/** Polls one node with a plain client until `ready` holds (10 s at most). */
async function until(port: number, ready: (client: Redis) => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    client.on('error', () => {})
    try {
      await client.connect()
      if (await ready(client)) return
    } catch {
      // not up yet
    } finally {
      client.disconnect()
    }
    if (Date.now() > deadline) throw new Error(`redis cluster node on ${port} is not ready`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
