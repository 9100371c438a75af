import { generatePrivateJwk, type SigningAlgorithm } from '../tokens/keys.js'
import { HELP, parse, UsageError } from './usage.js'

const ALGORITHMS: SigningAlgorithm[] = ['EdDSA', 'ES256', 'RS256']

export async function keygenCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { alg: { type: 'string' }, keys: { type: 'string' } })
  if (values.help) {
    process.stdout.write(HELP.keygen)
    return 0
  }
  const alg = (values.alg ?? 'EdDSA') as SigningAlgorithm
  if (!ALGORITHMS.includes(alg)) throw new UsageError(`--alg must be one of ${ALGORITHMS.join(', ')}`)
  const count = values.keys === undefined ? 1 : Number(values.keys)
  if (!Number.isInteger(count) || count < 1 || count > 10) throw new UsageError('--keys must be an integer from 1 to 10')
  const keys = []
  for (let i = 0; i < count; i++) keys.push(await generatePrivateJwk(alg))
  process.stdout.write(`${JSON.stringify({ keys }, null, 2)}\n`)
  return 0
}
