import { HELP, UsageError } from './usage.js'

type Command = (args: string[]) => Promise<number>

/** Each command's module is loaded when it runs: `--help`, `keygen` or a usage error never load the gateway. */
const COMMANDS: Record<string, () => Promise<Command>> = {
  check: async () => (await import('./check.js')).checkCommand,
  keygen: async () => (await import('./keygen.js')).keygenCommand,
  'hash-password': async () => (await import('./hash-password.js')).hashPasswordCommand,
  run: async () => (await import('./run.js')).runCommand,
}

/**
 * A reader that stops early (`sessiongate check | head -1`) closes the pipe: the commands that print and end stop
 * there too, as Unix tools do, instead of dying on an unhandled EPIPE with a stack trace. (The gateway itself, whose
 * stdout is its log, is left to fail loudly.)
 */
function quietOnClosedStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err
    process.exit(process.exitCode ?? 0)
  })
}

/** The `sessiongate` command line; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv
  if (first !== undefined && !first.startsWith('-') && first !== 'run') quietOnClosedStdout()
  try {
    if (first === '--help' || first === '-h' || first === 'help') {
      process.stdout.write(HELP.main)
      return 0
    }
    if (first !== undefined && !first.startsWith('-')) {
      const load = Object.hasOwn(COMMANDS, first) ? COMMANDS[first] : undefined // not `constructor` and the like
      if (!load) throw new UsageError(`unknown command "${first}" (try: check, keygen, hash-password, or --help)`)
      return await (await load())(rest)
    }
    return await (await (COMMANDS.run as () => Promise<Command>)())(argv)
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`sessiongate: ${err.message}\n`)
      return 2
    }
    throw err
  }
}
