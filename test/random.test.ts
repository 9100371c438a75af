// Random material for tokens, drawn from nanoid's pool of CSPRNG bytes (pure logic, no Redis).
import t from 'tap'
import { randomBase64url, randomBuffer } from '../src/tokens/random.js'

t.test('draws are the asked size, base64url, and never repeat', async (t) => {
  const seen = new Set<string>()
  const malformed: string[] = []
  // More draws than one pool holds (128 per size), with sizes mixed, as a rotation and a login mix them.
  for (let i = 0; i < 2000; i++) {
    const token = randomBase64url(32)
    const sid = randomBase64url(16)
    if (!/^[A-Za-z0-9_-]{43}$/.test(token) || !/^[A-Za-z0-9_-]{22}$/.test(sid)) malformed.push(token, sid)
    seen.add(token).add(sid)
    randomBuffer(12)
  }
  t.same(malformed, [], '256-bit draws are 43 base64url characters, 128-bit ones 22')
  t.equal(seen.size, 4000, 'no draw repeats another')
})

t.test('a buffer drawn is its own: later draws do not change it', async (t) => {
  const iv = randomBuffer(12)
  const copy = Buffer.from(iv)
  for (let i = 0; i < 300; i++) randomBuffer(12)
  t.same(iv, copy)
  t.equal(iv.length, 12)
})

t.test('the bytes look random: every value of a byte appears over 64 KiB of draws', async (t) => {
  const counts = new Array<number>(256).fill(0)
  for (let i = 0; i < 2048; i++) for (const b of randomBuffer(32)) counts[b] = (counts[b] as number) + 1
  t.equal(counts.filter((c) => c === 0).length, 0, 'no byte value missing')
  t.ok(Math.max(...counts) < 2 * (65536 / 256), 'none appears twice as often as it should')
})
