/** Throwaway Redis topologies beyond one server (./redis-server.ts): a cluster, and a master behind a sentinel. */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { FastifyBaseLogger } from 'fastify'
import { Redis } from 'ioredis'
import { configSchema } from '../../src/config/schema.js'
import { connectRedis } from '../../src/session-store/redis-connection.js'
import { RedisSessionStore } from '../../src/session-store/redis-store.js'
import { freePort, untilRedis } from './redis-server.js'

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
    for (const { port } of nodes) await untilRedis(port, async (client) => (await client.ping()) === 'PONG')
    const addresses = nodes.map(({ port }) => `127.0.0.1:${port}`)
    await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'])
    for (const { port } of nodes) await untilRedis(port, async (client) => /cluster_state:ok/.test(String(await client.call('CLUSTER', 'INFO'))))
  } catch (err) {
    await stop()
    throw err
  }
  return { urls: nodes.map(({ port }) => `redis://127.0.0.1:${port}`), stop }
}

/** A throwaway Redis master watched by one sentinel (quorum 1), both on 127.0.0.1. */
export interface TestRedisSentinel {
  /** The sentinel's `host:port`, as `redis.sentinel.nodes` lists it. */
  node: string
  /** The master's name, as `redis.sentinel.name` gives it. */
  name: string
  stop(): Promise<void>
}

/** Starts a redis-server and a sentinel monitoring it; resolves once the sentinel names the master. */
export async function startRedisSentinel(): Promise<TestRedisSentinel> {
  const dir = mkdtempSync(join(tmpdir(), 'sg-sentinel-'))
  const children: ChildProcess[] = []
  const stop = async () => {
    await Promise.all(
      children.map((child) => {
        if (child.exitCode !== null) return undefined
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        return exited
      }),
    )
    rmSync(dir, { recursive: true, force: true })
  }
  const name = 'sgmaster'
  try {
    const masterPort = await freePort()
    children.push(spawn('redis-server', ['--port', String(masterPort), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' }))
    await untilRedis(masterPort, async (client) => (await client.ping()) === 'PONG')
    const sentinelPort = await freePort()
    // A sentinel rewrites its configuration file: it gets one of its own.
    const conf = join(dir, 'sentinel.conf')
    writeFileSync(conf, [`port ${sentinelPort}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor ${name} 127.0.0.1 ${masterPort} 1`, ''].join('\n'))
    children.push(spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' }))
    await untilRedis(sentinelPort, async (client) => {
      const address = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as string[] | null
      return address?.[1] === String(masterPort)
    })
    return { node: `127.0.0.1:${sentinelPort}`, name, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

const silent = { warn: () => {}, error: () => {}, info: () => {}, debug: () => {} } as unknown as FastifyBaseLogger

/**
 * A Redis store connected as the gateway connects (connectRedis, from a `redis` config section), once ready: like the
 * gateway at start (waitForStore), with no offline queue the first command must wait for the connection.
 */
export async function connectedStore(redis: Record<string, unknown>, keyPrefix: string): Promise<RedisSessionStore> {
  const client = connectRedis(configSchema.shape.redis.parse(redis), silent)
  await new Promise<void>((resolve) => client.once('ready', () => resolve()))
  return new RedisSessionStore(client, keyPrefix)
}
