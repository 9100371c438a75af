import { readFileSync } from 'node:fs'
import type { RedisClient } from './redis-connection.js'

/** The Lua scripts in ./lua, loaded by name with ioredis `defineCommand` (after bullmq's layout). */
export const SCRIPTS = {
  createSession: { file: 'create_session.lua', keys: 1, uses: ['clock.lua'] },
  rotateRefresh: { file: 'rotate_refresh.lua', keys: 2, uses: ['clock.lua', 'grace_record.lua', 'announce.lua'] },
  extendGrace: { file: 'extend_grace.lua', keys: 2, uses: ['clock.lua', 'grace_record.lua'] },
  checkAccess: { file: 'check_access.lua', keys: 2 },
  revokeSession: { file: 'revoke_session.lua', keys: 2, uses: ['announce.lua'] },
  denyJti: { file: 'deny_jti.lua', keys: 1, uses: ['announce.lua'] },
  rateLimitHit: { file: 'rate_limit_hit.lua', keys: 1, uses: ['clock.lua'] },
  rateLimitPeek: { file: 'rate_limit_peek.lua', keys: 1 },
  rateLimitUndo: { file: 'rate_limit_undo.lua', keys: 1, uses: ['clock.lua'] },
} as const

export type ScriptName = keyof typeof SCRIPTS
type ScriptCommand = (...args: (string | number)[]) => Promise<unknown>
export type ScriptedClient = RedisClient & Record<ScriptName, ScriptCommand>

const LUA_DIR = new URL('./lua/', import.meta.url)

const readLua = (file: string) => readFileSync(new URL(file, LUA_DIR), 'utf8')

export function defineScripts(client: RedisClient): ScriptedClient {
  for (const [name, script] of Object.entries(SCRIPTS)) {
    // Shared functions (`uses`) go in front of the script that calls them: one script body per command.
    const lua = [...('uses' in script ? script.uses : []), script.file].map(readLua).join('\n')
    client.defineCommand(name, { numberOfKeys: script.keys, lua })
  }
  return client as ScriptedClient
}
