import { configFileFrom, loadConfig } from '../config/load.js'
import { ConfigError } from '../errors.js'
import { HELP, parse } from './usage.js'

export async function checkCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { config: { type: 'string', short: 'c' } })
  if (values.help) {
    process.stdout.write(HELP.check)
    return 0
  }
  try {
    const loaded = await loadConfig(configFileFrom(values.config, process.env))
    // Valid, so `ok` (exit 0); what is probably a mistake goes to stderr.
    for (const w of loaded.warnings) process.stderr.write(`warning: ${w.path}: ${w.message}\n`)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    for (const p of err.problems) process.stdout.write(`${p.path}: ${p.message}\n`)
    return 1
  }
  process.stdout.write('ok\n')
  return 0
}
