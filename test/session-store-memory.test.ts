import t from 'tap'
import { MemorySessionStore } from '../src/session-store/memory-store.js'
import { storeSuite } from './session-store.shared.js'

storeSuite(t, async () => new MemorySessionStore())
