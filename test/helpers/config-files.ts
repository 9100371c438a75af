import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** `login.provider: upstream`, so that a configuration needs no users file. */
export const LOGIN = 'login: { provider: upstream, upstream: { url: "http://127.0.0.1:1/login", subject: /id } }'

/**
 * A temporary folder for configuration files, removed when the test file ends (`teardown`): `fileWith(text)` writes
 * one and returns its path.
 */
export function configFiles(teardown: (fn: () => void) => void, prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  teardown(() => rmSync(dir, { recursive: true, force: true }))
  let counter = 0
  const fileWith = (text: string): string => {
    const file = join(dir, `c${++counter}.yaml`)
    writeFileSync(file, text)
    return file
  }
  return { dir, fileWith }
}
