// The SPA flow of the demo in a real headless Chromium (Debian's, driven by playwright-core).
import { existsSync, mkdirSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { chromium, type Browser } from 'playwright-core'
import { createLegacyApi } from '../examples/legacy-api/server.js'
import { loadConfig } from '../src/config/load.js'
import { buildGateway } from '../src/server/build-gateway.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

if (!existsSync(CHROMIUM)) {
  t.comment(`skipped: no chromium at ${CHROMIUM} (apt-get install -y chromium)`)
  t.pass(`browser test skipped: no chromium at ${CHROMIUM}`)
} else {
  t.test('demo page: login, API call, transparent refresh, HttpOnly cookies, logout', async (t) => {
    const api = createLegacyApi()
    await new Promise<void>((r) => api.listen(0, '127.0.0.1', r))
    const apiPort = (api.address() as AddressInfo).port
    const loaded = await loadConfig('config/gateway.yaml', {
      DEMO_API_PORT: String(apiPort), PORT: '0', DEMO_ACCESS_TTL: '2s', DEMO_REFRESH_AHEAD: '500ms',
    })
    const gateway = await buildGateway(loaded, { logger: false })
    await gateway.app.listen({ host: '127.0.0.1', port: 0 })
    const base = `http://127.0.0.1:${(gateway.app.server.address() as AddressInfo).port}`
    let browser: Browser | undefined
    t.teardown(async () => {
      await browser?.close()
      await gateway.app.close()
      api.closeAllConnections()
      await new Promise((r) => api.close(r))
    })
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    })
    const context = await browser.newContext()
    const page = await context.newPage()
    await page.goto(`${base}/`)
    t.match(await page.title(), /sessiongate demo/)

    await page.click('#login')
    await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('Logged in'))
    mkdirSync('artifacts', { recursive: true })
    await page.screenshot({ path: 'artifacts/demo-after-login.png', fullPage: true })

    await page.click('#call-api')
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'API answered 200')
    const first = JSON.parse((await page.textContent('#output')) ?? '{}')
    t.match(first.receivedAuthorization, /^Bearer ey/, 'the legacy API received a Bearer token')
    t.equal(first.receivedCookie, null, 'the legacy API never sees the session cookies')
    const accessBefore = (await context.cookies()).find((c) => c.name === 'sg_access')?.value
    t.ok(accessBefore, 'an access cookie is set')

    t.equal(await page.evaluate(() => document.cookie), '', 'document.cookie cannot read either token')
    const cookies = await context.cookies()
    for (const name of ['sg_access', 'sg_refresh']) {
      const cookie = cookies.find((c) => c.name === name)
      t.equal(cookie?.httpOnly, true, `${name} is HttpOnly`)
      t.equal(cookie?.sameSite, 'Lax', `${name} is SameSite=Lax`)
    }

    // Past the access lifetime: the next call is refreshed transparently, with no login prompt.
    await page.waitForTimeout(2500)
    await page.evaluate(() => {
      document.getElementById('status')!.textContent = ''
    })
    await page.click('#call-api')
    await page.waitForFunction(() => /^API answered/.test(document.getElementById('status')?.textContent ?? ''))
    t.equal(await page.textContent('#status'), 'API answered 200', 'the API call after expiry succeeds')
    const second = JSON.parse((await page.textContent('#output')) ?? '{}')
    t.not(second.receivedAuthorization, first.receivedAuthorization, 'the upstream received a new access token')
    const accessAfter = (await context.cookies()).find((c) => c.name === 'sg_access')?.value
    t.ok(accessAfter && accessAfter !== accessBefore, 'the browser holds a new access cookie')

    await page.click('#logout')
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'Logged out (204)')
    await page.click('#call-api')
    await page.waitForFunction(() => /^API answered/.test(document.getElementById('status')?.textContent ?? ''))
    t.equal(await page.textContent('#status'), 'API answered 401', 'after logout the API answers 401')
  })
}
