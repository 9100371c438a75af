import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import closeWithGrace from 'close-with-grace'
import { configFileFrom, loadConfig, resolveConfigRelative, type LoadedConfig } from '../config/load.js'
import { ConfigError } from '../errors.js'
import type { Gateway } from '../server/build-gateway.js'
import { HELP, parse } from './usage.js'

/** Starts the gateway; resolves once it listens (the process then lives until a signal). */
export async function runCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { config: { type: 'string', short: 'c' } })
  if (values.help) {
    process.stdout.write(HELP.run)
    return 0
  }
  const file = configFileFrom(values.config, process.env)
  let loaded: LoadedConfig
  try {
    loaded = await loadConfig(file)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`sessiongate: the configuration ${file} has problems:\n`)
    for (const p of err.problems) process.stderr.write(`${p.path}: ${p.message}\n`)
    return 1
  }
  // Loaded here, not at the top: `--help` and usage errors answer without loading fastify, ioredis and the rest.
  const { buildGateway } = await import('../server/build-gateway.js')
  let gateway: Gateway
  try {
    gateway = await buildGateway(loaded)
  } catch (err) {
    // What only the running system can tell (a Redis database that does not exist): problem lines, as above.
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`sessiongate: the configuration ${file} does not work with this system:\n`)
    for (const p of err.problems) process.stderr.write(`${p.path}: ${p.message}\n`)
    return 1
  }
  const { app } = gateway
  if (loaded.keys.ephemeral) app.log.warn('tokens.keys is ephemeral (or not set): signing with a key made in memory; tokens die with this process (demo only)')
  try {
    await app.listen({ host: loaded.config.server.host, port: loaded.config.server.port })
  } catch (err) {
    // A system error (port in use or not allowed, an address not on this host, a host name that does not
    // resolve: EADDRINUSE, EACCES, EADDRNOTAVAIL, ENOTFOUND, EAI_AGAIN...): one line, not a stack trace.
    if (typeof (err as NodeJS.ErrnoException).code !== 'string' || !(err as NodeJS.ErrnoException).syscall) throw err
    process.stderr.write(`sessiongate: cannot listen on ${loaded.config.server.host}:${loaded.config.server.port}: ${(err as Error).message}\n`)
    await app.close() // closes the store too (onClose)
    return 1
  }

  let reloading = Promise.resolve()
  const reload = (why: string) => {
    reloading = reloading.then(() => reloadFrom(gateway, file, why))
  }
  process.on('SIGHUP', () => reload('SIGHUP'))
  const watchers = loaded.config.watch ? watchFiles(loaded, file, () => reload('file change')) : []

  // SIGHUP reloads (above); close-with-grace would otherwise treat it as a signal to stop.
  closeWithGrace({ delay: shutdownDeadline(loaded), skip: ['SIGHUP'] }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'fatal error; shutting down')
    else app.log.info({ signal }, 'shutting down: finishing in-flight requests')
    for (const w of watchers) w.close()
    // server.close() only closes the keep-alive connections idle at that moment: close the others as soon as
    // their in-flight request is done, or the drain would wait for the clients' keep-alive timeouts.
    const sweep = setInterval(() => app.server.closeIdleConnections(), 100)
    try {
      await app.close()
    } finally {
      clearInterval(sweep)
    }
  })
  return 0
}

/**
 * How long a stop waits for in-flight requests before it gives up (and exits 1): the slowest route's timeout (or
 * the login upstream's), after which that request has its answer or its 504, and 5 s more for the reply to go out.
 * Routes without a timeout (0: event streams, long polls) do not count: their connections end at the deadline.
 */
function shutdownDeadline(loaded: LoadedConfig): number {
  const { routes, login } = loaded.config
  return Math.max(10_000, ...routes.map((r) => r.timeout), login.upstream?.timeout ?? 0) + 5000
}

async function reloadFrom(gateway: Gateway, file: string, why: string): Promise<void> {
  try {
    await gateway.reload(await loadConfig(file))
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems.map((p) => `${p.path}: ${p.message}`) : [(err as Error).message]
    gateway.app.log.error({ problems, trigger: why }, 'reload refused: the new configuration has problems; the old one stays in force')
  }
}

/** `watch: true`: the config file and the key and users files it names. */
function watchFiles(loaded: LoadedConfig, file: string, onChange: () => void): FSWatcher[] {
  const files = [file]
  const { tokens, login } = loaded.config
  if (tokens.keys !== 'ephemeral') files.push(resolveConfigRelative(tokens.keys, file))
  if (login.users) files.push(resolveConfigRelative(login.users, file))
  let timer: NodeJS.Timeout | undefined
  const debounced = () => {
    clearTimeout(timer)
    timer = setTimeout(onChange, 200)
  }
  // Folders are watched, not the files: editors, `mv` and Kubernetes ConfigMaps replace a file by renaming a new
  // one over it, and a watch on the old file would never fire again.
  const byFolder = new Map<string, Set<string>>()
  for (const f of files.map((name) => resolve(name))) {
    const names = byFolder.get(dirname(f)) ?? new Set<string>()
    names.add(basename(f))
    byFolder.set(dirname(f), names)
  }
  return [...byFolder].map(([folder, names]) =>
    watch(folder, (_event, name) => {
      // ConfigMaps swap a `..data` symlink: any change in the folder may change the files, so a nameless or
      // unknown event reloads too; a reload of an unchanged config is harmless.
      if (name === null || names.has(String(name)) || String(name).startsWith('..')) debounced()
    }),
  )
}
