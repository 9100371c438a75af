import { hashPassword, MAX_PASSWORD_LENGTH } from '../auth/password.js'
import { HELP, parse, UsageError } from './usage.js'

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

export async function hashPasswordCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { cost: { type: 'string' } })
  if (values.help) {
    process.stdout.write(HELP.hashPassword)
    return 0
  }
  const cost = values.cost === undefined ? 15 : Number(values.cost)
  if (!Number.isInteger(cost) || cost < 14 || cost > 20) throw new UsageError('--cost must be an integer from 14 to 20')
  if (process.stdin.isTTY) process.stderr.write('Password (then Enter, Ctrl-D): ')
  const password = (await readStdin()).split(/\r?\n/)[0] ?? ''
  if (password === '') throw new UsageError('no password on stdin')
  if (password.length > MAX_PASSWORD_LENGTH) throw new UsageError(`the password is over ${MAX_PASSWORD_LENGTH} characters: login refuses such a password`)
  process.stdout.write(`${await hashPassword(password, cost)}\n`)
  return 0
}
