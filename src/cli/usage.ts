import { parseArgs, type ParseArgsConfig } from 'node:util'

/** A wrong argument: one line on stderr, exit 2. */
export class UsageError extends Error {
  readonly code = 'usage'
}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T) {
  let parsed
  try {
    parsed = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false, tokens: true })
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0])
  }
  // parseArgs keeps the last of a repeated option: `--config a --config b` would silently ignore `a`.
  const seen = new Set<string>()
  for (const token of parsed.tokens) {
    if (token.kind !== 'option') continue
    if (seen.has(token.name)) throw new UsageError(`option --${token.name} given more than once`)
    seen.add(token.name)
  }
  return parsed
}

export const HELP = {
  main: `Usage: sessiongate [command] [options]

Commands:
  (none)            start the gateway            sessiongate --config FILE
  check             validate a configuration     sessiongate check --config FILE
  keygen            print a private JWK Set      sessiongate keygen [--alg EdDSA|ES256|RS256]
  hash-password     hash a password from stdin   echo -n secret | sessiongate hash-password

Options:
  --config FILE     configuration file (default: $SESSIONGATE_CONFIG or config/gateway.yaml)
  -h, --help        show help for a command
`,
  run: `Usage: sessiongate [--config FILE]

Starts the gateway. Environment: SESSIONGATE_CONFIG, REDIS_URL, HOST, PORT override the file; LOG_LEVEL sets
the log level. SIGTERM/SIGINT stop gracefully; SIGHUP reloads routes, keys and users.
`,
  check: `Usage: sessiongate check [--config FILE]

Validates the configuration and the files it names (keys, users). Prints "ok" and exits 0, or prints one line
per problem, each naming its YAML path, and exits 1.
`,
  keygen: `Usage: sessiongate keygen [--alg EdDSA|ES256|RS256] [--keys N]

Prints a private JWK Set (each key with kid, alg, use) to stdout. Keep it secret; point tokens.keys at it.
To rotate: put a new key first in the set, keep the old ones until their tokens expire.
`,
  hashPassword: `Usage: sessiongate hash-password [--cost N]

Reads a password on stdin (the first line), prints a scrypt hash for the users file. --cost is log2(N), 14-20
(default 15).
`,
} as const
