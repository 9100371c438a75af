import { checkCommand } from './check.js'
import { hashPasswordCommand } from './hash-password.js'
import { keygenCommand } from './keygen.js'
import { runCommand } from './run.js'
import { HELP, UsageError } from './usage.js'

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  check: checkCommand,
  keygen: keygenCommand,
  'hash-password': hashPasswordCommand,
  run: runCommand,
}

/** The `sessiongate` command line; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv
  try {
    if (first === '--help' || first === '-h' || first === 'help') {
      process.stdout.write(HELP.main)
      return 0
    }
    if (first !== undefined && !first.startsWith('-')) {
      const command = COMMANDS[first]
      if (!command) throw new UsageError(`unknown command "${first}" (try: check, keygen, hash-password, or --help)`)
      return await command(rest)
    }
    return await runCommand(argv)
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`sessiongate: ${err.message}\n`)
      return 2
    }
    throw err
  }
}
