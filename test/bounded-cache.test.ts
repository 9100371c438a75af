import t from 'tap'
import { LRUCache } from 'lru-cache'
import { boundedCache } from '../src/bounded-cache.js'

t.test('holds at most its limit, evicting the least recently used', async (t) => {
  const cache = boundedCache<string, number>(3)
  for (const [i, k] of ['a', 'b', 'c', 'd'].entries()) cache.set(k, i)
  t.same([...cache.keys()].sort(), ['b', 'c', 'd'], 'the oldest went first')
  t.equal(cache.get('b'), 1)
  cache.set('e', 4)
  t.equal(cache.size, 3)
  t.notOk(cache.has('c'), 'c was the least recently used (b was read)')
  t.ok(cache.has('b'))
})

t.test('per-entry ttl still expires entries', async (t) => {
  const cache = boundedCache<string, true>(10)
  cache.set('x', true, { ttl: 20 })
  t.ok(cache.has('x'))
  await new Promise((resolve) => setTimeout(resolve, 40))
  t.notOk(cache.has('x'), 'gone after its ttl')
})

t.test('allocates nothing up front (lru-cache `max` allocates its whole storage)', async (t) => {
  const before = process.memoryUsage().heapUsed
  const kept = Array.from({ length: 20 }, () => boundedCache<string, number>(200_000))
  const grown = process.memoryUsage().heapUsed - before
  t.ok(grown < 4 * 2 ** 20, `20 empty caches of 200,000 grew the heap by ${(grown / 2 ** 20).toFixed(2)} MiB`)
  const preBefore = process.memoryUsage().heapUsed
  const preallocated = [new LRUCache<string, number>({ max: 200_000 })]
  t.ok(process.memoryUsage().heapUsed - preBefore > 2 * 2 ** 20, 'the `max` form allocates megabytes (what this avoids)')
  t.equal(kept.length + preallocated.length, 21)
})
