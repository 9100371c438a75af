/**
 * Sessions.holdGrace: the reuse grace of a rotation is kept open only until it is released (the response carrying
 * it goes out), with one last extension then, never outlasts its ceiling, and stops when the family moves on.
 * Run against the in-process store, counting its extendGrace calls.
 */
import t, { type Test } from 'tap'
import { MemorySessionStore } from '../src/session-store/memory-store.js'
import { Sessions } from '../src/sessions/sessions.js'
import { startGateway } from './helpers/gateway.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

class CountingStore extends MemorySessionStore {
  extensions = 0
  override async extendGrace(sid: string, gen: number, graceMs: number): Promise<boolean> {
    this.extensions++
    return super.extendGrace(sid, gen, graceMs)
  }
}

const gw = await startGateway()
t.teardown(() => gw.close())
const { config, loaded } = gw.gateway.current()

async function setup(t: Test) {
  // The store's clock stands still, so no grace ends there however late a timer fires on a loaded machine: these
  // tests count extensions, they do not time them.
  const frozen = Date.now()
  const store = new CountingStore(() => frozen)
  t.teardown(() => store.close())
  const sessions = new Sessions(store, loaded.keys, { ...config, tokens: { ...config.tokens, reuseGrace: 200 } })
  const started = await sessions.start('u', {})
  const rotated = await sessions.refresh(started.refreshToken)
  return { store, sessions, rotated }
}

t.test('released before the first tick (the usual fast response): no extension at all', async (t) => {
  const { store, sessions, rotated } = await setup(t)
  const hold = sessions.holdGrace(rotated, 60_000)
  hold.release()
  hold.release()
  await sleep(350)
  t.equal(store.extensions, 0)
})

t.test('pending: extended every reuseGrace/2, then once more after delivery, then never again', async (t) => {
  const { store, sessions, rotated } = await setup(t)
  const hold = sessions.holdGrace(rotated, 60_000)
  await sleep(650)
  const whilePending = store.extensions
  t.ok(whilePending >= 2, `extended while pending (${whilePending})`)
  hold.release()
  await sleep(250)
  t.equal(store.extensions, whilePending + 1, 'one last extension at the release')
  await sleep(300)
  t.equal(store.extensions, whilePending + 1, 'and none after')
})

t.test('a hold never outlasts its ceiling', async (t) => {
  const { store, sessions, rotated } = await setup(t)
  sessions.holdGrace(rotated, 250)
  await sleep(700)
  const count = store.extensions
  await sleep(300)
  t.equal(store.extensions, count, `stopped (${count} extensions)`)
  t.ok(count <= 3)
})

t.test('a hold stops when the family has moved on', async (t) => {
  const { store, sessions, rotated } = await setup(t)
  sessions.holdGrace(rotated, 60_000)
  await sessions.refresh(rotated.refreshToken) // the family moves on to the next generation
  await sleep(350)
  const count = store.extensions
  await sleep(300)
  t.equal(store.extensions, count, `stopped after the store said no (${count})`)
})
